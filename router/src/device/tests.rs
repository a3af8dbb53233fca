//! Tests of the packet core against a real WireGuard peer (boringtun's `Tunn` as the customer),
//! entirely in memory.

use super::*;
use crate::key::Key;
use crate::request::UapiError;
use crate::routes::PeerId;
use crate::stats::DropReason;
use crate::uapi::format::format_get;
use crate::uapi::parse::parse_set;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

struct FixedNet;
impl NetControl for FixedNet {
    fn rebind(&self, port: u16, _fwmark: u32) -> Result<u16, UapiError> {
        Ok(if port == 0 { 40000 } else { port })
    }
}

struct BusyNet;
impl NetControl for BusyNet {
    fn rebind(&self, port: u16, _fwmark: u32) -> Result<u16, UapiError> {
        Err(UapiError::PortInUse(port))
    }
}

#[derive(Default)]
struct Capture {
    udp: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl Io for Capture {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) -> bool {
        self.udp.push((to, packet.to_vec()));
        true
    }
    fn write_tun(&mut self, _peer: PeerId, packet: &[u8]) -> bool {
        self.tun.push(packet.to_vec());
        true
    }
}

fn secret(n: u8) -> StaticSecret {
    StaticSecret::from([n; 32])
}

fn public(n: u8) -> Key {
    Key(PublicKey::from(&secret(n)).to_bytes())
}

fn set(dev: &Device, text: &str) -> Result<(), UapiError> {
    dev.apply(Instant::now(), &parse_set(text.lines())?, &FixedNet)
}

/// An IPv4/UDP packet with a valid header length field.
fn ipv4(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().unwrap();
    let dst: Ipv4Addr = dst.parse().unwrap();
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

const SERVER: u8 = 1;
const CUSTOMER: u8 = 2;
const RENTED: &str = "203.0.113.10";
const INTERNET: &str = "198.19.0.2";

fn customer_addr() -> SocketAddr {
    "198.18.0.2:40001".parse().unwrap()
}

/// The customer's WireGuard, as a real client: boringtun's `Tunn` with the customer's key.
fn customer_tunn() -> Tunn {
    Tunn::new(
        secret(CUSTOMER),
        PublicKey::from(public(SERVER).0),
        None,
        None,
        9,
        None,
    )
    .unwrap()
}

/// A router with one rented /32 and a customer Tunn that has completed its handshake.
fn connected() -> (Device, Tunn, Capture) {
    let dev = Device::new();
    set(
        &dev,
        &format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\nallowed_ip={RENTED}/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let mut customer = customer_tunn();
    let mut io = Capture::default();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let init = match customer.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no initiation: {other:?}"),
    };
    dev.handle_udp(Instant::now(), customer_addr(), &init, &mut out, &mut io);
    assert_eq!(io.udp.len(), 1, "handshake response expected");
    let (to, response) = io.udp.pop().unwrap();
    assert_eq!(to, customer_addr());
    let keepalive = match customer.decapsulate(None, &response, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("customer did not accept the response: {other:?}"),
    };
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &keepalive,
        &mut out,
        &mut io,
    );
    assert!(io.tun.is_empty() && io.udp.is_empty());
    (dev, customer, io)
}

fn seal(customer: &mut Tunn, packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match customer.encapsulate(packet, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("cannot encapsulate: {other:?}"),
    }
}

#[test]
fn handshake_then_traffic_both_ways() {
    let (dev, mut customer, mut io) = connected();
    let mut out = vec![0u8; 2048];

    // Upload: customer -> internet, source is the rented address.
    let up = ipv4(RENTED, INTERNET, b"hello");
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &up),
        &mut out,
        &mut io,
    );
    assert_eq!(io.tun, vec![up]);
    assert_eq!(dev.stats.udp_to_tun.get(), 1);

    // Inbound: internet -> rented address, encrypted to the customer's endpoint.
    let down = ipv4(INTERNET, RENTED, b"welcome");
    dev.handle_tun(Instant::now(), &down, &mut out, &mut io);
    let (to, sealed) = io.udp.pop().expect("encrypted packet");
    assert_eq!(to, customer_addr());
    let mut buf = vec![0u8; 2048];
    match customer.decapsulate(None, &sealed, &mut buf) {
        TunnResult::WriteToTunnelV4(p, src) => {
            assert_eq!(p, &down[..]);
            assert_eq!(src, INTERNET.parse::<Ipv4Addr>().unwrap());
        }
        other => panic!("customer could not open it: {other:?}"),
    }

    let view = dev.view();
    let p = &view.peers[0];
    assert!(p.last_handshake.0 > 1_700_000_000);
    assert!(p.rx_bytes > 0 && p.tx_bytes > 0);
    assert_eq!(p.endpoint, Some(customer_addr()));
    assert_eq!(dev.stats.handshakes.get(), 1);
}

#[test]
fn spoofed_source_is_dropped_and_counted() {
    let (dev, mut customer, mut io) = connected();
    let mut out = vec![0u8; 2048];
    let spoof = ipv4("203.0.113.99", INTERNET, b"spoof");
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &spoof),
        &mut out,
        &mut io,
    );
    assert!(io.tun.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::SpoofedSource), 1);
}

#[test]
fn source_owned_by_another_peer_is_spoofed() {
    let (dev, mut customer, mut io) = connected();
    set(
        &dev,
        &format!(
            "public_key={}\nallowed_ip=203.0.113.11/32",
            public(3).to_hex()
        ),
    )
    .unwrap();
    let mut out = vec![0u8; 2048];
    let spoof = ipv4("203.0.113.11", INTERNET, b"x");
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &spoof),
        &mut out,
        &mut io,
    );
    assert!(io.tun.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::SpoofedSource), 1);
}

#[test]
fn destination_without_peer_is_dropped_and_counted() {
    let (dev, _customer, mut io) = connected();
    let mut out = vec![0u8; 2048];
    dev.handle_tun(
        Instant::now(),
        &ipv4(INTERNET, "203.0.113.50", b"x"),
        &mut out,
        &mut io,
    );
    assert!(io.udp.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::NoRoute), 1);
    dev.handle_tun(Instant::now(), &[0x45, 0, 0], &mut out, &mut io);
    dev.handle_tun(Instant::now(), &[], &mut out, &mut io);
    assert_eq!(dev.stats.dropped(DropReason::InvalidPacket), 2);
}

#[test]
fn endpoint_roams_to_newest_authenticated_packet() {
    let (dev, mut customer, mut io) = connected();
    let mut out = vec![0u8; 2048];
    let moved: SocketAddr = "198.18.0.77:5555".parse().unwrap();
    let up = ipv4(RENTED, INTERNET, b"from new place");
    dev.handle_udp(
        Instant::now(),
        moved,
        &seal(&mut customer, &up),
        &mut out,
        &mut io,
    );
    assert_eq!(dev.view().peers[0].endpoint, Some(moved));
    // An unauthenticated packet from elsewhere does not move it.
    let mut forged = seal(&mut customer, &up);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    dev.handle_udp(Instant::now(), customer_addr(), &forged, &mut out, &mut io);
    assert_eq!(dev.view().peers[0].endpoint, Some(moved));
    assert_eq!(dev.stats.dropped(DropReason::AuthFailed), 1);
}

#[test]
fn replayed_packet_is_dropped() {
    let (dev, mut customer, mut io) = connected();
    let mut out = vec![0u8; 2048];
    let sealed = seal(&mut customer, &ipv4(RENTED, INTERNET, b"once"));
    dev.handle_udp(Instant::now(), customer_addr(), &sealed, &mut out, &mut io);
    dev.handle_udp(Instant::now(), customer_addr(), &sealed, &mut out, &mut io);
    assert_eq!(io.tun.len(), 1);
    assert_eq!(dev.stats.dropped(DropReason::Replay), 1);
}

#[test]
fn removed_peer_stops_at_once() {
    let (dev, mut customer, mut io) = connected();
    set(
        &dev,
        &format!("public_key={}\nremove=true", public(CUSTOMER).to_hex()),
    )
    .unwrap();
    let mut out = vec![0u8; 2048];
    dev.handle_tun(
        Instant::now(),
        &ipv4(INTERNET, RENTED, b"x"),
        &mut out,
        &mut io,
    );
    assert!(io.udp.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::NoRoute), 1);
    let sealed = seal(&mut customer, &ipv4(RENTED, INTERNET, b"x"));
    dev.handle_udp(Instant::now(), customer_addr(), &sealed, &mut out, &mut io);
    assert!(io.tun.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::UnknownPeer), 1);
}

#[test]
fn unknown_customer_gets_no_answer() {
    let dev = Device::new();
    set(
        &dev,
        &format!("private_key={}", Key(secret(SERVER).to_bytes()).to_hex()),
    )
    .unwrap();
    let mut stranger = Tunn::new(
        secret(5),
        PublicKey::from(public(SERVER).0),
        None,
        None,
        1,
        None,
    )
    .unwrap();
    let mut buf = vec![0u8; 2048];
    let init = match stranger.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{other:?}"),
    };
    let mut io = Capture::default();
    let mut out = vec![0u8; 2048];
    dev.handle_udp(Instant::now(), customer_addr(), &init, &mut out, &mut io);
    assert!(io.udp.is_empty());
    assert_eq!(dev.stats.dropped(DropReason::UnknownPeer), 1);
}

#[test]
fn garbage_datagrams_never_panic_and_change_nothing() {
    let (dev, _customer, mut io) = connected();
    let before = dev.view();
    let mut out = vec![0u8; 2048];
    let mut seed = 0x1234_5678_u64;
    for len in 0..400usize {
        let mut d = vec![0u8; len];
        for b in d.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if len >= 4 {
            // Exercise every message type, with and without plausible lengths.
            d[0] = (len % 5) as u8;
            d[1..4].fill(0);
        }
        dev.handle_udp(Instant::now(), customer_addr(), &d, &mut out, &mut io);
        dev.handle_tun(Instant::now(), &d, &mut out, &mut io);
    }
    assert!(io.tun.is_empty());
    let after = dev.view();
    assert_eq!(before.peers[0].endpoint, after.peers[0].endpoint);
    assert_eq!(before.peers[0].allowed_ips, after.peers[0].allowed_ips);
}

#[test]
fn no_private_key_means_no_traffic() {
    let dev = Device::new();
    set(
        &dev,
        &format!(
            "public_key={}\nallowed_ip={RENTED}/32",
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let mut io = Capture::default();
    let mut out = vec![0u8; 2048];
    dev.handle_tun(
        Instant::now(),
        &ipv4(INTERNET, RENTED, b"x"),
        &mut out,
        &mut io,
    );
    assert_eq!(dev.stats.dropped(DropReason::NoKey), 1);
}

#[test]
fn every_set_key_takes_effect() {
    let dev = Device::new();
    let psk = Key([9; 32]);
    set(
        &dev,
        &format!(
            "private_key={}\nlisten_port=51999\nfwmark=7\npublic_key={}\npreshared_key={}\n\
             endpoint=198.18.0.2:1234\npersistent_keepalive_interval=25\nallowed_ip=203.0.113.10/32\n\
             allowed_ip=10.9.0.0/16\nallowed_ip=2001:db8::/64\nprotocol_version=1",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex(),
            psk.to_hex()
        ),
    )
    .unwrap();
    let v = dev.view();
    assert_eq!(v.private_key, Some(Key(secret(SERVER).to_bytes())));
    assert_eq!(v.public_key, Some(public(SERVER)));
    assert_eq!((v.listen_port, v.fwmark), (51999, 7));
    let p = &v.peers[0];
    assert_eq!(p.preshared_key, Some(psk));
    assert_eq!(p.endpoint, Some("198.18.0.2:1234".parse().unwrap()));
    assert_eq!(p.persistent_keepalive, 25);
    assert_eq!(p.allowed_ips.len(), 3);

    // Removal forms: zero keys, fwmark 0, allowed_ip=-, replace_allowed_ips.
    let pk = public(CUSTOMER).to_hex();
    set(
        &dev,
        &format!(
            "fwmark=0\npublic_key={pk}\npreshared_key={}\nallowed_ip=-10.9.0.0/16\n\
             persistent_keepalive_interval=0",
            Key::default().to_hex()
        ),
    )
    .unwrap();
    let v = dev.view();
    assert_eq!(v.fwmark, 0);
    assert_eq!(v.peers[0].preshared_key, None);
    assert_eq!(v.peers[0].persistent_keepalive, 0);
    assert_eq!(
        v.peers[0].allowed_ips,
        vec![
            "203.0.113.10/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap()
        ]
    );
    set(
        &dev,
        &format!("public_key={pk}\nreplace_allowed_ips=true\nallowed_ip=203.0.113.20/32"),
    )
    .unwrap();
    assert_eq!(
        dev.view().peers[0].allowed_ips,
        vec!["203.0.113.20/32".parse().unwrap()]
    );
    assert_eq!(dev.routes().len(), 1);

    // update_only skips unknown peers; replace_peers empties; zero private key removes it.
    set(
        &dev,
        &format!(
            "public_key={}\nupdate_only=true\nallowed_ip=10.0.0.1/32",
            public(4).to_hex()
        ),
    )
    .unwrap();
    assert_eq!(dev.view().peers.len(), 1);
    set(
        &dev,
        &format!(
            "replace_peers=true\nprivate_key={}",
            Key::default().to_hex()
        ),
    )
    .unwrap();
    let v = dev.view();
    assert!(v.peers.is_empty() && v.private_key.is_none());
    assert!(dev.routes().is_empty());
}

#[test]
fn allowed_ip_moves_to_its_newest_owner() {
    let dev = Device::new();
    let (a, b) = (public(3).to_hex(), public(4).to_hex());
    set(
        &dev,
        &format!("public_key={a}\nallowed_ip=203.0.113.10/32\nallowed_ip=203.0.113.11/32"),
    )
    .unwrap();
    set(&dev, &format!("public_key={b}\nallowed_ip=203.0.113.10/32")).unwrap();
    let v = dev.view();
    assert_eq!(
        v.peers[0].allowed_ips,
        vec!["203.0.113.11/32".parse().unwrap()]
    );
    assert_eq!(
        v.peers[1].allowed_ips,
        vec!["203.0.113.10/32".parse().unwrap()]
    );
    let snap = dev.routes();
    assert_eq!(snap.lookup("203.0.113.10".parse().unwrap()), Some(1));
}

#[test]
fn own_public_key_is_never_a_peer() {
    let dev = Device::new();
    set(
        &dev,
        &format!(
            "private_key={}\npublic_key={}\nallowed_ip=10.0.0.1/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(SERVER).to_hex()
        ),
    )
    .unwrap();
    assert!(dev.view().peers.is_empty());
}

#[test]
fn failed_bind_changes_nothing() {
    let dev = Device::new();
    set(
        &dev,
        &format!("public_key={}\nallowed_ip=10.0.0.1/32", public(3).to_hex()),
    )
    .unwrap();
    let before = dev.view();
    let req = parse_set(
        format!(
            "listen_port=5353\nreplace_peers=true\npublic_key={}\nallowed_ip=10.0.0.2/32",
            public(4).to_hex()
        )
        .lines(),
    )
    .unwrap();
    let err = dev.apply(Instant::now(), &req, &BusyNet).unwrap_err();
    assert_eq!(err.errno(), libc::EADDRINUSE);
    assert_eq!(dev.view(), before);
}

/// Parses a `get=1` answer back into (public key hex -> its lines), the way `wg` reads it.
fn peers_of(get: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut current = None;
    for line in get.lines() {
        if let Some(k) = line.strip_prefix("public_key=") {
            current = Some(k.to_string());
            out.insert(k.to_string(), Vec::new());
        } else if let Some(k) = &current {
            if line.starts_with("allowed_ip=") || line.starts_with("endpoint=") {
                out.get_mut(k).unwrap().push(line.to_string());
            }
        }
    }
    out
}

#[test]
fn thousand_peers_set_get_round_trip() {
    let dev = Device::new();
    let mut req = format!(
        "private_key={}\nreplace_peers=true\n",
        Key(secret(SERVER).to_bytes()).to_hex()
    );
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..1000u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 0x42;
        let key = Key(k).to_hex();
        let addr = format!("203.0.{}.{}/32", 100 + i / 250, i % 250 + 1);
        let ep = format!("198.18.{}.{}:{}", i / 250, i % 250 + 1, 10000 + i);
        req.push_str(&format!(
            "public_key={key}\nendpoint={ep}\nreplace_allowed_ips=true\nallowed_ip={addr}\n"
        ));
        expected.insert(
            key,
            vec![format!("endpoint={ep}"), format!("allowed_ip={addr}")],
        );
    }
    set(&dev, &req).unwrap();
    let get = format_get(&dev.view());
    assert_eq!(peers_of(&get), expected);
    assert_eq!(dev.routes().len(), 1000);

    // Feeding the answer back as a set (what `wg syncconf` amounts to) changes nothing.
    let body: String = get
        .lines()
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("errno")
                && !l.starts_with("last_handshake")
                && !l.starts_with("tx_bytes")
                && !l.starts_with("rx_bytes")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    set(&dev, &format!("replace_peers=true\n{body}")).unwrap();
    assert_eq!(format_get(&dev.view()), get);
}

#[test]
fn a_flood_of_initiations_gets_cookie_replies() {
    let dev = Device::new();
    dev.set_handshake_limit(2_000);
    set(
        &dev,
        &format!(
            "private_key={}\npublic_key={}\nallowed_ip={RENTED}/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let mut io = Capture::default();
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut cookies = 0;
    // Each accepted initiation counts twice against the limit of 2,000 a second, so the
    // 1,001st within one window is answered with a cookie reply instead of a handshake.
    for _ in 0..1_100 {
        let mut customer = customer_tunn();
        let init = match customer.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        dev.handle_udp(Instant::now(), customer_addr(), &init, &mut out, &mut io);
        let (_, reply) = io.udp.pop().expect("an answer");
        if reply[0] == 3 && reply.len() == 64 {
            cookies += 1;
        }
    }
    assert!(cookies >= 90, "cookie replies: {cookies}");
    assert_eq!(dev.stats.dropped(DropReason::UnderLoad), cookies);
    assert_eq!(dev.stats.cookie_replies.get(), cookies);
    assert!(dev.stats.handshake_initiations.get() > cookies);
    // A new second: handshakes are answered again.
    dev.reset_rate_limiter(Instant::now());
    let mut customer = customer_tunn();
    let TunnResult::WriteToNetwork(init) = customer.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no initiation")
    };
    dev.handle_udp(Instant::now(), customer_addr(), init, &mut out, &mut io);
    assert_eq!(
        io.udp.pop().expect("an answer").1[0],
        2,
        "a handshake response"
    );
}

fn initiation_from(customer: &mut Tunn) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match customer.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no initiation: {other:?}"),
    }
}

#[test]
fn session_state_is_made_on_demand_and_dropped_when_idle() {
    // A thousand configured peers hold no session state until one of them handshakes.
    let dev = Device::new();
    let mut body = format!(
        "private_key={}\npublic_key={}\nallowed_ip={RENTED}/32\n",
        Key(secret(SERVER).to_bytes()).to_hex(),
        public(CUSTOMER).to_hex()
    );
    for i in 0..1000u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 0x40;
        body.push_str(&format!("public_key={}\n", Key(k).to_hex()));
    }
    set(&dev, &body).unwrap();
    assert_eq!(dev.peer_count(), 1001);
    assert_eq!(dev.active_sessions(), 0);

    let mut customer = customer_tunn();
    let (mut io, mut out, mut buf) = (Capture::default(), vec![0u8; 2048], vec![0u8; 2048]);
    let first = initiation_from(&mut customer);
    dev.handle_udp(Instant::now(), customer_addr(), &first, &mut out, &mut io);
    let (_, response) = io.udp.pop().expect("response");
    let TunnResult::WriteToNetwork(keepalive) = customer.decapsulate(None, &response, &mut buf)
    else {
        panic!("response refused")
    };
    let keepalive = keepalive.to_vec();
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &keepalive,
        &mut out,
        &mut io,
    );
    assert_eq!(dev.active_sessions(), 1);
    assert_eq!(dev.sessions_made.get(), 1);

    // The timers keep it while young, then drop it once RejectAfterTime has passed.
    let start = Instant::now();
    dev.tick(start + Duration::from_secs(60), &mut buf, &mut io);
    assert_eq!(dev.active_sessions(), 1);
    dev.tick(
        start + IDLE_AFTER + Duration::from_secs(1),
        &mut buf,
        &mut io,
    );
    assert_eq!(dev.active_sessions(), 0);
    assert_eq!(dev.sessions_dropped.get(), 1);

    // Dropping the state does not forget the newest initiation: a replay is refused.
    io.udp.clear();
    dev.handle_udp(Instant::now(), customer_addr(), &first, &mut out, &mut io);
    assert!(io.udp.is_empty(), "no answer to a replayed initiation");
    assert_eq!(dev.stats.dropped(DropReason::Replay), 1);
    assert_eq!(dev.active_sessions(), 0);
    // Nor once traffic from TUN has made new state (which has seen no initiation yet).
    set(
        &dev,
        &format!(
            "public_key={}\nendpoint={}",
            public(CUSTOMER).to_hex(),
            customer_addr()
        ),
    )
    .unwrap();
    dev.handle_tun(
        Instant::now(),
        &ipv4(INTERNET, RENTED, b"wake"),
        &mut out,
        &mut io,
    );
    assert_eq!(dev.active_sessions(), 1);
    io.udp.clear();
    dev.handle_udp(
        Instant::now(),
        "198.51.100.9:666".parse().unwrap(),
        &first,
        &mut out,
        &mut io,
    );
    assert!(io.udp.is_empty(), "no answer to a replayed initiation");
    assert_eq!(dev.stats.dropped(DropReason::Replay), 2);
    assert_eq!(dev.view().peers[0].endpoint, Some(customer_addr()));
    dev.tick(start + IDLE_AFTER * 2, &mut buf, &mut io);
    assert_eq!(dev.active_sessions(), 0);
    // Data for the dropped session finds nothing.
    let up = ipv4(RENTED, INTERNET, b"late");
    let stale = match customer.encapsulate(&up, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{other:?}"),
    };
    dev.handle_udp(Instant::now(), customer_addr(), &stale, &mut out, &mut io);
    assert_eq!(dev.stats.dropped(DropReason::NoSession), 1);

    // A new handshake makes new state, and traffic flows again.
    std::thread::sleep(Duration::from_millis(20));
    let mut customer = customer_tunn();
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &initiation_from(&mut customer),
        &mut out,
        &mut io,
    );
    let (_, response) = io.udp.pop().expect("a handshake response");
    let TunnResult::WriteToNetwork(keepalive) = customer.decapsulate(None, &response, &mut buf)
    else {
        panic!("response refused")
    };
    let keepalive = keepalive.to_vec();
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &keepalive,
        &mut out,
        &mut io,
    );
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &up),
        &mut out,
        &mut io,
    );
    assert_eq!(io.tun.pop(), Some(up));
    assert_eq!(dev.active_sessions(), 1);
    assert_eq!(dev.sessions_made.get(), 3);
}

#[test]
fn traffic_from_tun_wakes_an_idle_peer_with_a_handshake() {
    let dev = Device::new();
    set(
        &dev,
        &format!(
            "private_key={}\npublic_key={}\nendpoint={}\nallowed_ip={RENTED}/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex(),
            customer_addr()
        ),
    )
    .unwrap();
    assert_eq!(dev.active_sessions(), 0);
    let (mut io, mut out) = (Capture::default(), vec![0u8; 2048]);
    dev.handle_tun(
        Instant::now(),
        &ipv4(INTERNET, RENTED, b"hi"),
        &mut out,
        &mut io,
    );
    assert_eq!(dev.active_sessions(), 1);
    let (to, init) = io.udp.pop().expect("an initiation to the endpoint");
    assert_eq!((to, init[0], init.len()), (customer_addr(), 1, 148));

    // The customer answers; the queued packet follows the handshake.
    let mut customer = customer_tunn();
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(resp) = customer.decapsulate(None, &init, &mut buf) else {
        panic!("initiation refused")
    };
    let resp = resp.to_vec();
    dev.handle_udp(Instant::now(), customer_addr(), &resp, &mut out, &mut io);
    let (_, sealed) = io.udp.pop().expect("the queued packet");
    match customer.decapsulate(None, &sealed, &mut buf) {
        TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p, &ipv4(INTERNET, RENTED, b"hi")[..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn under_load_each_source_gets_only_a_share_of_handshakes() {
    let dev = Device::new();
    dev.set_handshake_limit(20);
    set(
        &dev,
        &format!(
            "private_key={}\npublic_key={}\nallowed_ip={RENTED}/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let (mut io, mut out, mut buf) = (Capture::default(), vec![0u8; 2048], vec![0u8; 2048]);
    let mut customer = customer_tunn();
    let (mut responses, mut cookies) = (0, 0);
    // One instant for the whole flood: the per-source bucket gets no refill however slowly a
    // loaded machine runs the test.
    let now = Instant::now();
    for _ in 0..100 {
        let init = initiation_from(&mut customer);
        dev.handle_udp(now, customer_addr(), &init, &mut out, &mut io);
        match io.udp.pop() {
            Some((_, r)) if r[0] == 2 => responses += 1,
            Some((_, r)) if r[0] == 3 => {
                cookies += 1;
                // The customer takes the cookie: its next initiations carry a valid MAC2.
                let _ = customer.decapsulate(None, &r, &mut buf);
            }
            _ => {}
        }
    }
    assert!(cookies >= 1, "cookie replies: {cookies}");
    // 10 answered before the limit, then the cookie-proven source gets its burst of 5 (and no
    // refill at one instant): far fewer than the 100 it asked for.
    assert!(responses < 30, "responses: {responses}");
    assert!(dev.stats.dropped(DropReason::UnderLoad) > 50);
}

/// An IPv4/TCP segment header to `port` (enough for the SMTP check).
fn tcp_to(port: u16) -> Vec<u8> {
    let mut p = ipv4(RENTED, INTERNET, &[0u8; 20]);
    p[9] = 6;
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p
}

#[test]
fn rental_limits_cap_uploads_and_downloads_and_block_smtp() {
    let (dev, mut customer, mut io) = connected();
    let mut out = vec![0u8; 2048];
    set(
        &dev,
        &format!(
            "public_key={}\nrate_limit_pps=10\nblock_smtp=true",
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    // SMTP out is refused whatever the rate; submission (587) is not SMTP.
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &tcp_to(25)),
        &mut out,
        &mut io,
    );
    assert_eq!(dev.stats.dropped(DropReason::SmtpBlocked), 1);
    assert!(io.tun.is_empty());
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &tcp_to(587)),
        &mut out,
        &mut io,
    );
    assert_eq!(io.tun.len(), 1);

    // 10 packets a second: a burst of a few passes, a hundred at once do not.
    for _ in 0..100 {
        let up = ipv4(RENTED, INTERNET, b"u");
        dev.handle_udp(
            Instant::now(),
            customer_addr(),
            &seal(&mut customer, &up),
            &mut out,
            &mut io,
        );
        dev.handle_tun(
            Instant::now(),
            &ipv4(INTERNET, RENTED, b"d"),
            &mut out,
            &mut io,
        );
    }
    let (up, down) = (io.tun.len() - 1, io.udp.len());
    assert!(
        (1..50).contains(&up) && (1..50).contains(&down),
        "{up} {down}"
    );
    assert!(dev.stats.dropped(DropReason::RateLimited) >= 100);

    // Caps set to 0 and the block lifted: everything passes again.
    set(
        &dev,
        &format!(
            "public_key={}\nrate_limit_pps=0\nblock_smtp=false",
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let before = io.tun.len();
    for _ in 0..100 {
        let up = ipv4(RENTED, INTERNET, b"u");
        dev.handle_udp(
            Instant::now(),
            customer_addr(),
            &seal(&mut customer, &up),
            &mut out,
            &mut io,
        );
    }
    dev.handle_udp(
        Instant::now(),
        customer_addr(),
        &seal(&mut customer, &tcp_to(25)),
        &mut out,
        &mut io,
    );
    assert_eq!(io.tun.len(), before + 101);
    // Bad values are refused and change nothing.
    for bad in ["rate_limit_bps=-1", "rate_limit_pps=x", "block_smtp=yes"] {
        assert!(set(
            &dev,
            &format!("public_key={}\n{bad}", public(CUSTOMER).to_hex())
        )
        .is_err());
    }
}

#[test]
fn a_forged_initiation_for_a_known_key_leaves_no_state() {
    let dev = Device::new();
    set(
        &dev,
        &format!(
            "private_key={}\npublic_key={}\nallowed_ip={RENTED}/32",
            Key(secret(SERVER).to_bytes()).to_hex(),
            public(CUSTOMER).to_hex()
        ),
    )
    .unwrap();
    let (mut io, mut out) = (Capture::default(), vec![0u8; 2048]);
    let server = PublicKey::from(public(SERVER).0);
    for _ in 0..10 {
        let forged = crate::initiation::forge(&server, &public(CUSTOMER).0);
        dev.handle_udp(Instant::now(), customer_addr(), &forged, &mut out, &mut io);
    }
    assert!(io.udp.is_empty(), "no answer to a forgery");
    assert_eq!(dev.stats.dropped(DropReason::AuthFailed), 10);
    assert_eq!(
        dev.active_sessions(),
        0,
        "no session state kept for forgeries"
    );
    assert_eq!(dev.sessions_made.get(), dev.sessions_dropped.get());
    assert_eq!(
        dev.view().peers[0].endpoint,
        None,
        "the endpoint did not move"
    );
}

#[test]
fn traffic_to_idle_customers_makes_a_bounded_number_of_states() {
    // The internet sends to every rented address of idle customers that have endpoints: the
    // router starts handshakes for at most MAX_UNANSWERED of them and gives those up later.
    let dev = Device::new();
    let cap = 100;
    dev.set_max_unanswered(cap);
    let n = cap as u32 + 50;
    let mut body = format!("private_key={}\n", Key(secret(SERVER).to_bytes()).to_hex());
    for i in 0..n {
        let mut k = [7u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        let k = Key(k);
        body.push_str(&format!(
            "public_key={}\nendpoint=198.18.0.2:{}\nallowed_ip=2001:db8:5::{:x}/128\n",
            k.to_hex(),
            1000 + i % 50_000,
            i
        ));
    }
    set(&dev, &body).unwrap();
    let (mut io, mut out) = (Capture::default(), vec![0u8; 2048]);
    for i in 0..n {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[6] = 17;
        let dst: Ipv6Addr = format!("2001:db8:5::{i:x}").parse().unwrap();
        p[24..40].copy_from_slice(&dst.octets());
        dev.handle_tun(Instant::now(), &p, &mut out, &mut io);
    }
    assert_eq!(dev.active_sessions(), cap);
    assert_eq!(dev.stats.dropped(DropReason::UnderLoad), 50);
    // Nobody answers: after RekeyAttemptTime the states are gone and new traffic may start some.
    let mut buf = vec![0u8; 2048];
    dev.tick(Instant::now() + Duration::from_secs(91), &mut buf, &mut io);
    assert_eq!(dev.active_sessions(), 0);
}
