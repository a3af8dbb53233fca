//! The packet core per packet, without sockets: a 1420-byte and a 64-byte packet through
//! `Device::handle_tun` (route + encrypt) and `Device::handle_udp` (authenticate + decrypt +
//! anti-spoof), beside boringtun's bare `Tunn` to show what the core adds to the crypto.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use staticwire_router::device::{Device, Io, NetControl};
use staticwire_router::key::Key;
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::net::SocketAddr;
use std::time::Instant;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

/// Counts output instead of doing I/O.
#[derive(Default)]
struct Sink {
    udp: usize,
    tun: usize,
    last: Vec<u8>,
}

impl Io for Sink {
    fn send_udp(&mut self, _: SocketAddr, p: &[u8]) -> bool {
        self.udp += 1;
        self.last.clear();
        self.last.extend_from_slice(p);
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

const RENTED: [u8; 4] = [203, 0, 113, 10];
const INTERNET: [u8; 4] = [198, 19, 0, 2];

/// A router with `peers` customers (one /32 each) and one customer's Tunn, handshake done.
fn connected(peers: u32) -> (Device, Tunn, SocketAddr) {
    let server = StaticSecret::from([1u8; 32]);
    let customer = StaticSecret::from([2u8; 32]);
    let dev = Device::new();
    let mut req = format!(
        "private_key={}\npublic_key={}\nallowed_ip=203.0.113.10/32\n",
        Key(server.to_bytes()).to_hex(),
        Key(PublicKey::from(&customer).to_bytes()).to_hex()
    );
    for i in 0..peers.saturating_sub(1) {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 0x42;
        req.push_str(&format!(
            "public_key={}\nallowed_ip=100.{}.{}.{}/32\n",
            Key(k).to_hex(),
            64 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        ));
    }
    dev.apply(Instant::now(), &parse_set(req.lines()).unwrap(), &NoNet)
        .unwrap();
    let mut tunn = Tunn::new(customer, PublicKey::from(&server), None, None, 9, None).unwrap();
    let from: SocketAddr = "198.18.0.2:40001".parse().unwrap();
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut sink = Sink::default();
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false) else {
        panic!("no initiation")
    };
    dev.handle_udp(Instant::now(), from, init, &mut out, &mut sink);
    let response = sink.last.clone();
    let TunnResult::WriteToNetwork(ka) = tunn.decapsulate(None, &response, &mut buf) else {
        panic!("no keepalive")
    };
    dev.handle_udp(Instant::now(), from, ka, &mut out, &mut sink);
    (dev, tunn, from)
}

fn bench(c: &mut Criterion) {
    let (dev, mut customer, from) = connected(10_000);
    for size in [1420usize, 64] {
        let mut g = c.benchmark_group(format!("packet_{size}B"));
        g.throughput(Throughput::Elements(1));
        let mut out = vec![0u8; 2048];
        let mut sink = Sink::default();

        let inbound = ipv4(INTERNET, RENTED, size);
        // The drivers read the clock once per batch, so a packet's share of it is ~0.
        let now = Instant::now();
        g.bench_function("router_tun_to_udp_10k_peers", |b| {
            b.iter(|| dev.handle_tun(now, black_box(&inbound), &mut out, &mut sink))
        });

        // Fresh ciphertexts (replays would be dropped), sealed outside the timed part.
        let upload = ipv4(RENTED, INTERNET, size);
        let mut sealed = vec![0u8; 2048];
        g.bench_function("router_udp_to_tun_10k_peers", |b| {
            b.iter_batched_ref(
                || match customer.encapsulate(&upload, &mut sealed) {
                    TunnResult::WriteToNetwork(p) => p.to_vec(),
                    _ => panic!("encapsulate"),
                },
                |d| dev.handle_udp(now, from, d, &mut out, &mut sink),
                criterion::BatchSize::SmallInput,
            )
        });

        let mut raw_out = vec![0u8; 2048];
        g.bench_function("boringtun_tunn_encapsulate_only", |b| {
            b.iter(|| {
                black_box(matches!(
                    customer.encapsulate(black_box(&upload), &mut raw_out),
                    TunnResult::WriteToNetwork(_)
                ))
            })
        });
        g.finish();
        assert!(
            sink.tun > 0 && sink.udp > 0,
            "the benchmark moved no packets"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
