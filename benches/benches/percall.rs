//! Instructions per packet through the packet core, for `valgrind --tool=callgrind`: a
//! deterministic count where wall-clock figures are noise (a busy machine). N customers, each
//! with its own key and a completed handshake, send (or receive) packets round robin, so a
//! packet's session is rarely the one before it, as with many customers on a real server.
//!
//! Only `measured` is counted when run as:
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*percall*measured*' \
//!     target/release/deps/percall-<hash> [in|out|tunn-in|tunn-out] [customers] [size] [packets]
//! ```
//! Instructions / packets = the cost per packet. `tunn-in`/`tunn-out` run boringtun's bare
//! `Tunn` over the same packets: the crypto and protocol floor the core adds to.
//! Without valgrind it prints ns per packet (noisy on a busy machine).

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use staticwire_router::device::{Device, Io, NetControl};
use staticwire_router::key::Key;
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

/// Counts output, and keeps the last datagram sent (the handshake response).
#[derive(Default)]
struct Sink {
    udp: usize,
    tun: usize,
    last: Vec<u8>,
}

impl Io for Sink {
    fn send_udp(&mut self, _: SocketAddr, p: &[u8]) -> bool {
        self.udp += 1;
        if p.len() < 200 {
            self.last.clear();
            self.last.extend_from_slice(p);
        }
        true
    }
    fn write_tun(&mut self, _: u32, _: &[u8]) -> bool {
        self.tun += 1;
        true
    }
}

fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

const INTERNET: [u8; 4] = [198, 19, 0, 2];

/// Customer `i`'s rented address: 100.64.0.0/10, one /32 each.
fn rented(i: u32) -> [u8; 4] {
    [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

struct Customer {
    tunn: Tunn,
    from: SocketAddr,
}

/// A router with `n` customers, every one connected (handshake done).
fn connected(n: u32) -> (Device, Vec<Customer>) {
    let server = StaticSecret::from([1u8; 32]);
    let dev = Device::new();
    dev.set_handshake_limit(u64::MAX / 4);
    let mut req = format!("private_key={}\n", Key(server.to_bytes()).to_hex());
    let mut secrets = Vec::new();
    for i in 0..n {
        let mut k = [7u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        let secret = StaticSecret::from(k);
        let a = rented(i);
        req.push_str(&format!(
            "public_key={}\nallowed_ip={}.{}.{}.{}/32\n",
            Key(PublicKey::from(&secret).to_bytes()).to_hex(),
            a[0],
            a[1],
            a[2],
            a[3]
        ));
        secrets.push(secret);
    }
    dev.apply(Instant::now(), &parse_set(req.lines()).unwrap(), &NoNet)
        .unwrap();
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut sink = Sink::default();
    let customers = secrets
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let mut tunn =
                Tunn::new(secret, PublicKey::from(&server), None, None, i as u32, None).unwrap();
            let from: SocketAddr = format!("198.18.{}.{}:{}", i >> 8, i & 255, 40000 + i % 1000)
                .parse()
                .unwrap();
            let TunnResult::WriteToNetwork(init) =
                tunn.format_handshake_initiation(&mut buf, false)
            else {
                panic!("no initiation")
            };
            dev.handle_udp(Instant::now(), from, init, &mut out, &mut sink);
            let response = sink.last.clone();
            let TunnResult::WriteToNetwork(ka) = tunn.decapsulate(None, &response, &mut buf) else {
                panic!("no keepalive")
            };
            dev.handle_udp(Instant::now(), from, ka, &mut out, &mut sink);
            Customer { tunn, from }
        })
        .collect();
    (dev, customers)
}

/// The counted part: every packet once through `step`, in batches of 64 under one epoch pin,
/// as the batched I/O drivers hand them over.
#[inline(never)]
fn measured<T>(items: &mut [T], mut step: impl FnMut(&mut T)) {
    for batch in items.chunks_mut(64) {
        let _pin = staticwire_router::epoch::pin();
        for it in batch {
            step(it);
        }
    }
}

fn main() {
    // `cargo bench` passes its own flags (`--bench`, `--quick`, ...): not ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("in", String::as_str).to_string();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let size: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1420);
    let packets: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let (dev, mut customers) = connected(n);
    let mut out = vec![0u8; 2048];
    let mut sink = Sink::default();
    let now = Instant::now();
    let start;
    match mode.as_str() {
        // Customers' packets, sealed in counter order before the clock starts.
        "in" | "tunn-in" => {
            let mut sealed: SealedFor = (0..packets)
                .map(|k| {
                    let i = k % customers.len();
                    let c = &mut customers[i];
                    let p = ipv4(rented(i as u32), INTERNET, size);
                    match c.tunn.encapsulate(&p, &mut out) {
                        TunnResult::WriteToNetwork(d) => (i, d.to_vec()),
                        _ => panic!("encapsulate"),
                    }
                })
                .collect();
            if mode == "in" {
                start = Instant::now();
                measured(&mut sealed, |(i, d)| {
                    dev.handle_udp(now, customers[*i].from, d, &mut out, &mut sink)
                });
                assert_eq!(sink.tun, packets, "every packet reaches TUN");
            } else {
                // The customers' own tunnels cannot open what they sealed: bare pairs instead.
                let (mut pairs, mut d2) = tunn_pairs(customers.len().min(64), size, packets);
                start = Instant::now();
                measured(&mut d2, |(i, d)| {
                    let ok = matches!(
                        pairs[*i].1.decapsulate(None, d, &mut out),
                        TunnResult::WriteToTunnelV4(..)
                    );
                    black_box(ok);
                });
                pairs.clear();
            }
        }
        "out" => {
            let mut inbound: Vec<Vec<u8>> = (0..packets)
                .map(|k| ipv4(INTERNET, rented((k % customers.len()) as u32), size))
                .collect();
            let before = sink.udp;
            start = Instant::now();
            measured(&mut inbound, |p| {
                dev.handle_tun(now, p, &mut out, &mut sink)
            });
            assert_eq!(sink.udp - before, packets, "every packet sent");
        }
        "tunn-out" => {
            let mut inbound: Vec<(usize, Vec<u8>)> = (0..packets)
                .map(|k| {
                    let i = k % customers.len();
                    (i, ipv4(INTERNET, rented(i as u32), size))
                })
                .collect();
            start = Instant::now();
            measured(&mut inbound, |(i, p)| {
                let ok = matches!(
                    customers[*i].tunn.encapsulate(p, &mut out),
                    TunnResult::WriteToNetwork(_)
                );
                black_box(ok);
            });
        }
        m => panic!("unknown mode {m}: in, out, tunn-in, tunn-out"),
    }
    let ns = start.elapsed().as_nanos() as f64 / packets as f64;
    println!("{mode} customers={n} size={size} packets={packets}: {ns:.0} ns/packet");
}

/// Datagrams sealed for the tunnel at an index.
type SealedFor = Vec<(usize, Vec<u8>)>;

/// `k` pairs of connected bare `Tunn`s and `packets` datagrams sealed round robin by the first
/// of each pair, for the second to open.
fn tunn_pairs(k: usize, size: usize, packets: usize) -> (Vec<(Tunn, Tunn)>, SealedFor) {
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut pairs: Vec<(Tunn, Tunn)> = (0..k)
        .map(|i| {
            let a = StaticSecret::from([3u8 ^ i as u8; 32]);
            let b = StaticSecret::from([5u8; 32]);
            let mut ta = Tunn::new(a.clone(), PublicKey::from(&b), None, None, 1, None).unwrap();
            let mut tb = Tunn::new(b, PublicKey::from(&a), None, None, 2, None).unwrap();
            let TunnResult::WriteToNetwork(init) = ta.format_handshake_initiation(&mut buf, false)
            else {
                panic!("no initiation")
            };
            let TunnResult::WriteToNetwork(resp) = tb.decapsulate(None, init, &mut out) else {
                panic!("no response")
            };
            let TunnResult::WriteToNetwork(ka) = ta.decapsulate(None, resp, &mut buf) else {
                panic!("no keepalive")
            };
            let _ = tb.decapsulate(None, ka, &mut out);
            (ta, tb)
        })
        .collect();
    let sealed = (0..packets)
        .map(|j| {
            let i = j % k;
            let p = ipv4(rented(i as u32), INTERNET, size);
            match pairs[i].0.encapsulate(&p, &mut out) {
                TunnResult::WriteToNetwork(d) => (i, d.to_vec()),
                _ => panic!("encapsulate"),
            }
        })
        .collect();
    (pairs, sealed)
}
