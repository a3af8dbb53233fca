//! WireGuard messages from the internet (`Device::handle_udp`) and IP packets from TUN
//! (`Device::handle_tun`) into a router with a configured peer whose handshake is done, so
//! data messages reach the decrypt and anti-spoofing paths too. The first byte picks the
//! path and, for UDP, forces a message type and a length that passes the size checks.
#![no_main]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::fuzz_target;
use staticwire_router::device::{Device, Io, NetControl};
use staticwire_router::key::Key;
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

#[derive(Default)]
struct Sink {
    last: Vec<u8>,
}

impl Io for Sink {
    fn send_udp(&mut self, _: SocketAddr, p: &[u8]) -> bool {
        self.last.clear();
        self.last.extend_from_slice(p);
        true
    }
    fn write_tun(&mut self, _: u32, _: &[u8]) -> bool {
        true
    }
}

struct Lab {
    dev: Device,
    customer: Mutex<Tunn>,
    from: SocketAddr,
}

fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let server = StaticSecret::from([1u8; 32]);
        let customer = StaticSecret::from([2u8; 32]);
        let dev = Device::new();
        let req = format!(
            "private_key={}\npublic_key={}\nallowed_ip=203.0.113.10/32\n",
            Key(server.to_bytes()).to_hex(),
            Key(PublicKey::from(&customer).to_bytes()).to_hex()
        );
        dev.apply(Instant::now(), &parse_set(req.lines()).expect("set"), &NoNet)
            .expect("apply");
        let mut tunn =
            Tunn::new(customer, PublicKey::from(&server), None, None, 9, None).expect("tunn");
        let from: SocketAddr = "198.18.0.2:40001".parse().expect("addr");
        let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut sink = Sink::default();
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false)
        {
            dev.handle_udp(Instant::now(), from, init, &mut out, &mut sink);
            let response = sink.last.clone();
            if let TunnResult::WriteToNetwork(ka) = tunn.decapsulate(None, &response, &mut buf) {
                dev.handle_udp(Instant::now(), from, ka, &mut out, &mut sink);
            }
        }
        Lab {
            dev,
            customer: Mutex::new(tunn),
            from,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let lab = lab();
    let mut out = vec![0u8; 2048];
    let mut sink = Sink::default();
    match mode % 6 {
        // Raw datagram.
        0 => lab.dev.handle_udp(Instant::now(), lab.from, rest, &mut out, &mut sink),
        // Forced type and a plausible length: initiation 148, response 92, cookie 64, data.
        m @ 1..=4 => {
            let len = match m {
                1 => 148,
                2 => 92,
                3 => 64,
                _ => 32 + rest.len().min(1500),
            };
            let mut d = vec![0u8; len];
            d[0] = m;
            let n = rest.len().min(len - 4);
            d[4..4 + n].copy_from_slice(&rest[..n]);
            lab.dev.handle_udp(Instant::now(), lab.from, &d, &mut out, &mut sink);
        }
        // A well-sealed data message carrying the input as its IP packet (anti-spoofing,
        // IP header parsing after decryption).
        _ => {
            let mut sealed = vec![0u8; 2048];
            let packet = &rest[..rest.len().min(1400)];
            let msg = {
                let Ok(mut c) = lab.customer.lock() else {
                    return;
                };
                match c.encapsulate(packet, &mut sealed) {
                    TunnResult::WriteToNetwork(p) => p.to_vec(),
                    _ => return,
                }
            };
            lab.dev.handle_udp(Instant::now(), lab.from, &msg, &mut out, &mut sink);
            // And the same bytes as a packet from TUN.
            lab.dev.handle_tun(Instant::now(), packet, &mut out, &mut sink);
        }
    }
});
