//! staticwire-loadtest: `customers` WireGuard peers, each with its own key, UDP socket and real
//! handshake, against any WireGuard server (ours, wireguard-go, boringtun), so per-packet costs
//! are measured side by side on the same load. Every run is bounded in time and count.
//!
//! - `keys N` prints N private keys and their public keys (for configuring the server).
//! - `send`: handshakes, then sends IPv4/UDP packets from each customer's rented address to a
//!   target beyond the server, round robin, for `--seconds` or `--max-packets`.
//! - `recv`: handshakes, then counts the packets the server sends each customer (traffic
//!   towards the rented addresses from a `blast` on the other side).
//! - `blast`: plain UDP to the rented addresses (the "internet" side of `recv`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use clap::{Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "WireGuard load generator with real handshakes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Customers {
    /// The server's endpoint.
    #[arg(long)]
    server: SocketAddr,
    /// The server's public key (base64).
    #[arg(long)]
    server_key: String,
    /// File of customers' private keys, one base64 key per line (from `keys`).
    #[arg(long)]
    keys: std::path::PathBuf,
    /// Local address to bind the customers' sockets to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: Ipv4Addr,
    /// Customer i's rented address is this plus i.
    #[arg(long, default_value = "203.0.113.10")]
    first_address: Ipv4Addr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print N key pairs: private and public, base64, tab-separated.
    Keys { n: usize },
    /// Send through the tunnels.
    Send {
        #[command(flatten)]
        c: Customers,
        /// Destination beyond the server (inner packets).
        #[arg(long, default_value = "198.19.0.2:9")]
        target: SocketAddr,
        /// Inner IP packet size in bytes.
        #[arg(long, default_value_t = 1420)]
        size: usize,
        /// Stop after this many packets in all.
        #[arg(long, default_value_t = 50_000_000)]
        max_packets: u64,
    },
    /// Count what the server sends to the customers.
    Recv {
        #[command(flatten)]
        c: Customers,
    },
    /// Plain UDP to the rented addresses, round robin.
    Blast {
        #[arg(long, default_value = "203.0.113.10")]
        first_address: Ipv4Addr,
        #[arg(long)]
        customers: u32,
        #[arg(long, default_value_t = 1420)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 50_000_000)]
        max_packets: u64,
    },
}

struct Customer {
    tunn: Tunn,
    sock: UdpSocket,
    address: Ipv4Addr,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("staticwire-loadtest: {msg}");
    std::process::exit(1)
}

fn key(b64: &str) -> [u8; 32] {
    STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| fail(format!("not a 32-byte base64 key: {b64:?}")))
}

/// Opens every customer's socket and completes its handshake with the server.
fn connect(c: &Customers) -> Vec<Customer> {
    let server = PublicKey::from(key(&c.server_key));
    let text = std::fs::read_to_string(&c.keys)
        .unwrap_or_else(|e| fail(format!("{}: {e}", c.keys.display())));
    let mut out = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let secret = StaticSecret::from(key(line.split('\t').next().unwrap_or("")));
        let mut tunn =
            Tunn::new(secret, server, None, None, i as u32 + 1, None).unwrap_or_else(|e| fail(e));
        let sock = UdpSocket::bind((c.bind, 0)).unwrap_or_else(|e| fail(e));
        sock.connect(c.server).unwrap_or_else(|e| fail(e));
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap_or_else(|e| fail(e));
        let (mut buf, mut rx) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut done = false;
        for _attempt in 0..10 {
            if let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(&mut buf, true)
            {
                let _ = sock.send(p);
            }
            let Ok(n) = sock.recv(&mut rx) else { continue };
            if let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &rx[..n], &mut buf) {
                let _ = sock.send(p);
                done = true;
                break;
            }
        }
        if !done {
            fail(format!("customer {i}: no handshake with {}", c.server));
        }
        let address = Ipv4Addr::from(u32::from(c.first_address) + i as u32);
        out.push(Customer {
            tunn,
            sock,
            address,
        });
    }
    if out.is_empty() {
        fail("no keys");
    }
    out
}

fn ipv4_udp(src: Ipv4Addr, dst: SocketAddr, size: usize) -> Vec<u8> {
    let size = size.clamp(28, 65_535);
    let SocketAddr::V4(dst) = dst else {
        fail("IPv4 targets only")
    };
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let sum = {
        let mut s = 0u32;
        for w in p[..20].chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    p
}

fn report(what: &str, packets: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what} packets={packets} seconds={secs:.3} pps={:.0}",
        packets as f64 / secs
    );
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Keys { n } => {
            for _ in 0..n {
                let s = StaticSecret::random_from_rng(rand_core::OsRng);
                println!(
                    "{}\t{}",
                    STANDARD.encode(s.to_bytes()),
                    STANDARD.encode(PublicKey::from(&s).as_bytes())
                );
            }
        }
        Cmd::Send {
            c,
            target,
            size,
            max_packets,
        } => {
            let mut customers = connect(&c);
            let packets: Vec<Vec<u8>> = customers
                .iter()
                .map(|k| ipv4_udp(k.address, target, size))
                .collect();
            let mut buf = vec![0u8; size + 64];
            let (started, deadline) = (
                Instant::now(),
                Instant::now() + Duration::from_secs(c.seconds),
            );
            let mut sent = 0u64;
            'outer: while sent < max_packets {
                for (k, p) in customers.iter_mut().zip(&packets) {
                    if let TunnResult::WriteToNetwork(out) = k.tunn.encapsulate(p, &mut buf) {
                        if k.sock.send(out).is_ok() {
                            sent += 1;
                        }
                    }
                }
                if sent % 1024 < customers.len() as u64 && Instant::now() >= deadline {
                    break 'outer;
                }
            }
            report("sent", sent, started);
        }
        Cmd::Recv { c } => {
            let customers = connect(&c);
            let total = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let threads: Vec<_> = customers
                .into_iter()
                .map(|mut k| {
                    let (total, stop) = (total.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let (mut rx, mut out) = (vec![0u8; 65_536], vec![0u8; 65_536]);
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(n) = k.sock.recv(&mut rx) else {
                                continue;
                            };
                            // Count only what authenticates: real traffic, not noise.
                            if let TunnResult::WriteToTunnelV4(..) =
                                k.tunn.decapsulate(None, &rx[..n], &mut out)
                            {
                                total.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            println!("ready");
            std::thread::sleep(Duration::from_secs(c.seconds));
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
            report("received", total.load(Ordering::Relaxed), started);
        }
        Cmd::Blast {
            first_address,
            customers,
            size,
            seconds,
            max_packets,
        } => {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| fail(e));
            let payload = vec![0x5au8; size.saturating_sub(28).max(1)];
            let (started, deadline) = (
                Instant::now(),
                Instant::now() + Duration::from_secs(seconds),
            );
            let mut sent = 0u64;
            while sent < max_packets && Instant::now() < deadline {
                for i in 0..customers.max(1) {
                    let to = SocketAddr::from((Ipv4Addr::from(u32::from(first_address) + i), 9));
                    if sock.send_to(&payload, to).is_ok() {
                        sent += 1;
                    }
                }
            }
            report("blasted", sent, started);
        }
    }
}
