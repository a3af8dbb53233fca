//! staticwire-loadtest: `customers` WireGuard peers, each with its own key, UDP socket and real
//! handshake, against any WireGuard server (ours, wireguard-go, boringtun), so per-packet costs
//! are measured side by side on the same load. Every run is bounded in time and count.
//!
//! - `keys N` prints N private keys and their public keys (for configuring the server).
//! - `send`: handshakes, then sends IPv4/UDP packets from each customer's rented address to a
//!   target beyond the server, round robin, for `--seconds` or `--max-packets`.
//! - `replay`: handshakes, seals every packet in advance, then only sends them (`sendmmsg`):
//!   overload from one core ([`replay`]).
//! - `recv`: handshakes, then counts the packets the server sends each customer (traffic
//!   towards the rented addresses from a `blast` on the other side).
//! - `blast`: plain UDP to the rented addresses (the "internet" side of `recv`).
//! - `pubkeys`, `handshakes`, `flood`: handshake load from up to millions of distinct keys
//!   derived from a seed, and a flood of initiations from unknown keys ([`handshakes`]).

mod handshakes;
mod replay;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use clap::{Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
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
    /// Customer i's rented address is this plus i (IPv4, or IPv6 for more customers than a
    /// documentation /24 holds).
    #[arg(long, default_value = "203.0.113.10")]
    first_address: IpAddr,
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
    /// Seal PACKETS datagrams first (customers round robin, each in counter order), print
    /// `ready`, then only replay them with `sendmmsg`, BURST per customer in turn.
    Replay {
        #[command(flatten)]
        c: Customers,
        #[arg(long, default_value = "198.19.0.2:9")]
        target: SocketAddr,
        #[arg(long, default_value_t = 1420)]
        size: usize,
        /// Datagrams in all (fewer if they would take more than --max-mb).
        #[arg(long, default_value_t = 2_000_000)]
        packets: u64,
        /// Memory for the sealed datagrams, MiB.
        #[arg(long, default_value_t = 1024)]
        max_mb: u64,
        #[arg(long, default_value_t = 8)]
        burst: usize,
        /// Send each burst as one UDP GSO send (see `replay`).
        #[arg(long)]
        gso: bool,
        /// Offer at most this many datagrams a second (default: as fast as the socket takes them).
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Count what the server sends to the customers.
    Recv {
        #[command(flatten)]
        c: Customers,
    },
    /// Count plain UDP datagrams arriving at ADDR (the far side of `send`): coalesced GRO trains
    /// count as the datagrams they carry. Prints `received packets=N`.
    Sink {
        #[arg(long, default_value = "198.19.0.2:9")]
        bind: SocketAddr,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Print the hex public keys of seeded customers 0..COUNT, one per line (for a UAPI set).
    Pubkeys {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        count: u64,
    },
    /// One real initiation from each of seeded customers FIRST..FIRST+COUNT, at RATE a second;
    /// counts handshake responses and cookie replies.
    Handshakes {
        #[command(flatten)]
        h: HandshakeTarget,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
        #[arg(long)]
        count: u64,
    },
    /// Initiations from DISTINCT keys the server does not know, repeated, at RATE a second.
    Flood {
        #[command(flatten)]
        h: HandshakeTarget,
        #[arg(long, default_value_t = 256)]
        distinct: u64,
    },
    /// Plain UDP to the rented addresses, round robin.
    Blast {
        #[arg(long, default_value = "203.0.113.10")]
        first_address: IpAddr,
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

#[derive(clap::Args, Clone)]
struct HandshakeTarget {
    #[arg(long)]
    server: SocketAddr,
    /// The server's public key (base64).
    #[arg(long)]
    server_key: String,
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Initiations a second (0: as fast as the socket takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

impl HandshakeTarget {
    fn target(&self) -> handshakes::Target {
        handshakes::Target {
            server: self.server,
            server_key: PublicKey::from(key(&self.server_key)),
            bind: self.bind,
            rate: self.rate,
            seconds: self.seconds,
        }
    }
}

fn report_handshakes(t: handshakes::Tally) {
    println!(
        "sent={} responses={} cookies={} seconds={:.3} responses_per_s={:.0} sent_per_s={:.0}",
        t.sent,
        t.responses,
        t.cookies,
        t.seconds,
        t.responses as f64 / t.seconds,
        t.sent as f64 / t.seconds
    );
}

struct Customer {
    tunn: Tunn,
    sock: UdpSocket,
    address: IpAddr,
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
        let address = nth(c.first_address, i as u32);
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

/// `first` plus `i`.
fn nth(first: IpAddr, i: u32) -> IpAddr {
    match first {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(i))),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(i.into())).into()),
    }
}

/// An IPv4 or IPv6 UDP packet of `size` bytes from `src` to `dst`, as a real stack sends it: DF
/// set on IPv4, checksums filled in (GRO only merges checksummed datagrams).
fn ip_udp(src: IpAddr, dst: SocketAddr, size: usize) -> Vec<u8> {
    let v6 = src.is_ipv6();
    if v6 != dst.is_ipv6() {
        fail("the target and the rented addresses must be of one IP version");
    }
    let ip = if v6 { 40 } else { 20 };
    let size = size.clamp(ip + 8, 65_535);
    let mut p = vec![0u8; size];
    match (src, dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
            p[6] = 0x40; // DF, as Linux sets it on UDP with path MTU discovery
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            let c = fold(sum16(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((size - 40) as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
        }
        _ => unreachable!("versions checked above"),
    }
    p[ip..ip + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[ip + 2..ip + 4].copy_from_slice(&dst.port().to_be_bytes());
    p[ip + 4..ip + 6].copy_from_slice(&((size - ip) as u16).to_be_bytes());
    for (i, b) in p[ip + 8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    // Pseudo-header: both addresses, the protocol and the UDP length.
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    let pseudo = sum16(addrs, 17 + (size - ip) as u64);
    let c = match fold(sum16(&p[ip..], pseudo)) {
        0 => 0xffff,
        c => c,
    };
    p[ip + 6..ip + 8].copy_from_slice(&c.to_be_bytes());
    p
}

/// One's-complement sum of big-endian 16-bit words, unfolded.
fn sum16(data: &[u8], initial: u64) -> u64 {
    data.chunks(2).fold(initial, |s, w| {
        s + u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))
    })
}

/// The Internet checksum of a sum: folded to 16 bits and complemented.
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// One thread drains every customer's socket (epoll, then non-blocking receives until each is
/// empty), so the server's sends rarely have to wake a sleeping receiver: the figure measures
/// the server, not the cost of waking sixteen threads. Counts what authenticates.
fn recv_all(mut customers: Vec<Customer>, for_: Duration) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: plain epoll calls on descriptors we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        fail(std::io::Error::last_os_error());
    }
    for (i, k) in customers.iter().enumerate() {
        k.sock.set_nonblocking(true).unwrap_or_else(|e| fail(e));
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: registering our socket with our epoll instance.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, k.sock.as_raw_fd(), &mut ev) };
    }
    let deadline = Instant::now() + for_;
    let (mut rx, mut out) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut total = 0u64;
    while Instant::now() < deadline {
        // SAFETY: the events buffer is ours and sized as passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        for e in events.iter().take(n.max(0) as usize) {
            let k = &mut customers[e.u64 as usize];
            while let Ok(len) = k.sock.recv(&mut rx) {
                // Count only what authenticates: real traffic, not noise.
                if let TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) =
                    k.tunn.decapsulate(None, &rx[..len], &mut out)
                {
                    total += 1;
                }
            }
        }
    }
    // SAFETY: closing our epoll descriptor.
    unsafe { libc::close(ep) };
    total
}

/// Receives with UDP_GRO and `recvmmsg` so the sink stays cheap next to the load it counts.
fn sink(bind: SocketAddr, seconds: u64) -> (u64, Instant) {
    use std::os::fd::AsRawFd;
    const SLOTS: usize = 32;
    const SIZE: usize = 65_536;
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| fail(e));
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| fail(e));
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    let rcvbuf: libc::c_int = 32 << 20;
    // SAFETY: setsockopt with c_int values on our socket; failures only make the sink weaker.
    unsafe {
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            104,
            &on as *const _ as *const libc::c_void,
            len,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const _ as *const libc::c_void,
            len,
        );
    }
    let mut bufs = vec![0u8; SLOTS * SIZE];
    let mut cmsgs = vec![[0u64; 8]; SLOTS];
    // SAFETY: all-zero is valid for these C structs.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; SLOTS];
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; SLOTS];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut packets = 0u64;
    println!("ready");
    while Instant::now() < deadline {
        for i in 0..SLOTS {
            iov[i] = libc::iovec {
                iov_base: bufs[i * SIZE..].as_mut_ptr() as *mut libc::c_void,
                iov_len: SIZE,
            };
            let m = &mut hdrs[i].msg_hdr;
            m.msg_iov = &mut iov[i];
            m.msg_iovlen = 1;
            m.msg_control = cmsgs[i].as_mut_ptr() as *mut libc::c_void;
            m.msg_controllen = std::mem::size_of::<[u64; 8]>();
        }
        // SAFETY: the headers point into buffers that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                SLOTS as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        for h in hdrs.iter().take(n.max(0) as usize) {
            let len = h.msg_len as usize;
            let mut seg = len;
            // SAFETY: walking the control messages the kernel wrote into our buffer.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == 104 {
                        seg = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int)
                            .max(1) as usize;
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
            packets += len.div_ceil(seg.max(1)) as u64;
        }
    }
    (packets, started)
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
            // Handshakes done: what follows is the load (a caller may start measuring now).
            println!("ready");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let packets: Vec<Vec<u8>> = customers
                .iter()
                .map(|k| ip_udp(k.address, target, size))
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
        Cmd::Replay {
            c,
            target,
            size,
            packets,
            max_mb,
            burst,
            gso,
            rate,
        } => {
            let mut customers = connect(&c);
            let n = customers.len() as u64;
            // Every datagram of a run has one length (the packet's, padded, plus 32 bytes of
            // header and tag); the first one sealed says which.
            let mut buf = vec![0u8; size + 64];
            let stride = match customers[0].tunn.encapsulate(&[0x45; 28], &mut buf) {
                TunnResult::WriteToNetwork(d) if d.len() == 28 + 32 => size + 32,
                TunnResult::WriteToNetwork(_) => size.div_ceil(16) * 16 + 32,
                _ => fail("sealing failed"),
            };
            let per = (packets / n)
                .min((max_mb << 20) / (stride as u64 * n))
                .max(1) as usize;
            let sealed: Vec<replay::Sealed> = customers
                .into_iter()
                .map(|mut k| {
                    let p = ip_udp(k.address, target, size);
                    let mut data = Vec::with_capacity(per * stride);
                    for _ in 0..per {
                        match k.tunn.encapsulate(&p, &mut buf) {
                            TunnResult::WriteToNetwork(d) if d.len() == stride => {
                                data.extend_from_slice(d)
                            }
                            _ => fail("sealing: not a data message of the expected size"),
                        }
                    }
                    replay::Sealed { sock: k.sock, data }
                })
                .collect();
            println!("ready");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let t = replay::replay(
                &sealed,
                stride,
                burst,
                gso,
                rate,
                Duration::from_secs(c.seconds),
            );
            println!(
                "replayed packets={} seconds={:.3} pps={:.0}",
                t.sent,
                t.offered_seconds,
                t.sent as f64 / t.offered_seconds
            );
        }
        Cmd::Recv { c } => {
            let customers = connect(&c);
            let started = Instant::now();
            println!("ready");
            let total = recv_all(customers, Duration::from_secs(c.seconds));
            report("received", total, started);
        }
        Cmd::Sink { bind, seconds } => {
            let (packets, started) = sink(bind, seconds);
            report("received", packets, started);
        }
        Cmd::Pubkeys { seed, count } => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for k in handshakes::pubkeys(seed, count) {
                let _ = writeln!(out, "{k}");
            }
        }
        Cmd::Handshakes {
            h,
            seed,
            first,
            count,
        } => report_handshakes(handshakes::handshakes(&h.target(), seed, first, count)),
        Cmd::Flood { h, distinct } => report_handshakes(handshakes::flood(&h.target(), distinct)),
        Cmd::Blast {
            first_address,
            customers,
            size,
            seconds,
            max_packets,
        } => {
            let any: SocketAddr = match first_address {
                IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
            };
            let sock = UdpSocket::bind(any).unwrap_or_else(|e| fail(e));
            let header = if first_address.is_ipv6() { 48 } else { 28 };
            let payload = vec![0x5au8; size.saturating_sub(header).max(1)];
            let (started, deadline) = (
                Instant::now(),
                Instant::now() + Duration::from_secs(seconds),
            );
            let mut sent = 0u64;
            while sent < max_packets && Instant::now() < deadline {
                for i in 0..customers.max(1) {
                    let to = SocketAddr::from((nth(first_address, i), 9));
                    if sock.send_to(&payload, to).is_ok() {
                        sent += 1;
                    }
                }
            }
            report("blasted", sent, started);
        }
    }
}
