//! The sans-IO packet core: peers, routing, anti-spoofing, and applying UAPI configuration.
//!
//! Readers (the packet path) see an immutable [`Snapshot`] through `arc_swap` and never take a
//! device-wide lock; the only lock they take is the per-peer session lock around boringtun's
//! `Tunn`. Writers (UAPI `set`) serialize on the config mutex, change the authoritative
//! [`Config`], and publish a new snapshot.

use crate::key::Key;
use crate::peer::{Peer, Session};
use crate::routes::{PeerId, RouteTable};
use crate::stats::{DropReason, Stats};
use crate::uapi::{AllowedIpChange, PeerChange, SetRequest, UapiError};
use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// boringtun packs the peer id into the top 24 bits of its session indexes.
pub const MAX_PEERS: usize = (1 << 24) - 1;

/// Handshake messages per second before the router answers with cookies (MAC2) instead of doing
/// Diffie-Hellman. Initiations are counted twice (device-level MAC check, then the peer's), so
/// this allows about 1,000 initiations a second; one core does about 7,000.
const HANDSHAKE_RATE_LIMIT: u64 = 2_000;

/// Where the packet core sends its output. The I/O layer implements it over real sockets and
/// TUN queues; tests collect into vectors.
pub trait Io {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) -> bool;
    /// A decrypted packet from `peer` whose source passed anti-spoofing. Batching layers may
    /// coalesce packets of one flow, never packets of two peers.
    fn write_tun(&mut self, peer: PeerId, packet: &[u8]) -> bool;
}

/// The socket side of configuration: binding a listen port can fail, so it happens before any
/// other change of a `set` is applied. Calls are serialized by the device's config lock.
pub trait NetControl {
    /// Binds the sockets to `port` (0 = any) with `fwmark`; returns the port actually bound.
    fn rebind(&self, port: u16, fwmark: u32) -> Result<u16, UapiError>;
}

/// The interface's own key pair, with the cookie/MAC state derived from it.
pub struct Identity {
    pub private_key: Key,
    pub public_key: Key,
    secret: StaticSecret,
    public: PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

impl Identity {
    fn new(private_key: Key) -> Self {
        let secret = StaticSecret::from(private_key.0);
        let public = PublicKey::from(&secret);
        Identity {
            private_key,
            public_key: Key(public.to_bytes()),
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
        }
    }
}

/// What the packet path reads. Immutable once published.
#[derive(Default)]
pub struct Snapshot {
    pub identity: Option<Arc<Identity>>,
    pub routes: RouteTable,
    pub peers: Vec<Option<Arc<Peer>>>,
    pub by_key: FxHashMap<Key, PeerId>,
}

impl Snapshot {
    #[inline]
    pub fn peer(&self, id: PeerId) -> Option<&Arc<Peer>> {
        self.peers.get(id as usize).and_then(Option::as_ref)
    }
}

struct PeerConf {
    peer: Arc<Peer>,
    allowed_ips: Vec<IpNet>,
    preshared_key: Option<Key>,
    keepalive: u16,
}

/// The authoritative configuration, changed only by UAPI `set`.
#[derive(Default)]
struct Config {
    identity: Option<Arc<Identity>>,
    listen_port: u16,
    fwmark: u32,
    peers: Vec<Option<PeerConf>>,
    /// Freed ids, lowest first, so a rebuilt configuration keeps its order.
    free: BinaryHeap<Reverse<PeerId>>,
    by_key: FxHashMap<Key, PeerId>,
    routes: RouteTable,
}

/// A read-out of the configuration and counters, for `get=1` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceView {
    pub private_key: Option<Key>,
    pub public_key: Option<Key>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: (u64, u32),
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Default)]
pub struct Device {
    snapshot: ArcSwap<Snapshot>,
    config: Mutex<Config>,
    pub stats: Stats,
}

fn make_tunn(identity: &Identity, pc: &PeerConf) -> Option<Box<Tunn>> {
    let keepalive = (pc.keepalive > 0).then_some(pc.keepalive);
    match Tunn::new(
        identity.secret.clone(),
        PublicKey::from(pc.peer.public_key.0),
        pc.preshared_key.map(|k| k.0),
        keepalive,
        pc.peer.id,
        Some(identity.rate_limiter.clone()),
    ) {
        Ok(t) => Some(Box::new(t)),
        Err(e) => {
            tracing::warn!(peer = %pc.peer.public_key, "unusable peer key: {e}");
            None
        }
    }
}

fn drop_reason(e: &WireGuardError) -> DropReason {
    use WireGuardError::*;
    match e {
        DuplicateCounter | InvalidCounter => DropReason::Replay,
        NoCurrentSession | ConnectionExpired => DropReason::NoSession,
        UnderLoad => DropReason::UnderLoad,
        WrongIndex => DropReason::UnknownPeer,
        InvalidMac
        | InvalidAeadTag
        | WrongKey
        | InvalidTai64nTimestamp
        | WrongTai64nTimestamp
        | UnexpectedPacket => DropReason::AuthFailed,
        _ => DropReason::InvalidPacket,
    }
}

/// Destination address of an IP packet read from TUN.
#[inline]
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let b: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 if packet.len() >= 40 => {
            let b: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

impl Device {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    // ---- packet path -------------------------------------------------------------------------

    /// A packet read from TUN: route it by destination and send it encrypted to its peer.
    pub fn handle_tun(&self, packet: &[u8], buf: &mut [u8], io: &mut impl Io) {
        let snap = self.snapshot.load();
        let Some(dst) = destination(packet) else {
            return self.stats.drop(DropReason::InvalidPacket);
        };
        let Some(peer) = snap.routes.lookup(dst).and_then(|id| snap.peer(id)) else {
            return self.stats.drop(DropReason::NoRoute);
        };
        let (res, endpoint) = {
            let mut s = peer.session.lock();
            let endpoint = s.endpoint;
            let Some(tunn) = s.tunn.as_mut() else {
                return self.stats.drop(DropReason::NoKey);
            };
            (tunn.encapsulate(packet, buf), endpoint)
        };
        match res {
            TunnResult::WriteToNetwork(out) => match endpoint {
                Some(ep) => {
                    if io.send_udp(ep, out) {
                        peer.tx_bytes.add(out.len() as u64);
                        self.stats.tun_to_udp.add(1);
                    } else {
                        self.stats.drop(DropReason::IoError);
                    }
                }
                None => self.stats.drop(DropReason::NoEndpoint),
            },
            TunnResult::Err(e) => self.stats.drop(drop_reason(&e)),
            _ => {}
        }
    }

    /// A datagram from the network: authenticate, decrypt, check its source against the
    /// sender's allowed IPs, and write it to TUN (or answer a handshake).
    pub fn handle_udp(&self, src: SocketAddr, datagram: &[u8], buf: &mut [u8], io: &mut impl Io) {
        let snap = self.snapshot.load();
        let Some(identity) = snap.identity.as_ref() else {
            return self.stats.drop(DropReason::NoKey);
        };
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(p) => p,
            Err(_) => return self.stats.drop(DropReason::InvalidPacket),
        };
        let (id, is_handshake, is_cookie) = match packet {
            Packet::HandshakeInit(ref init) => {
                // MAC1 and load check are cheap; only then spend a Diffie-Hellman on the sender.
                match identity
                    .rate_limiter
                    .verify_packet(Some(src.ip()), datagram, buf)
                {
                    Ok(_) => self.stats.handshake_initiations.add(1),
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.stats.handshake_initiations.add(1);
                        self.stats.cookie_replies.add(1);
                        io.send_udp(src, cookie);
                        return self.stats.drop(DropReason::UnderLoad);
                    }
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                }
                let half = match parse_handshake_anon(&identity.secret, &identity.public, init) {
                    Ok(h) => h,
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                };
                match snap.by_key.get(&Key(half.peer_static_public)) {
                    Some(&id) => (id, true, false),
                    None => return self.stats.drop(DropReason::UnknownPeer),
                }
            }
            Packet::HandshakeResponse(ref p) => (p.receiver_idx >> 8, true, false),
            Packet::PacketCookieReply(ref p) => (p.receiver_idx >> 8, false, true),
            Packet::PacketData(ref p) => (p.receiver_idx >> 8, false, false),
        };
        let Some(peer) = snap.peer(id) else {
            return self.stats.drop(DropReason::UnknownPeer);
        };

        let mut session = peer.session.lock();
        let Session { tunn, endpoint } = &mut *session;
        let Some(tunn) = tunn.as_mut() else {
            return self.stats.drop(DropReason::NoKey);
        };
        let res = tunn.decapsulate(Some(src.ip()), datagram, buf);
        if let TunnResult::Err(e) = &res {
            return self.stats.drop(drop_reason(e));
        }
        // Authenticated: the endpoint follows the newest packet (roaming).
        if !is_cookie {
            *endpoint = Some(src);
        }
        peer.rx_bytes.add(datagram.len() as u64);
        match res {
            TunnResult::WriteToNetwork(out) => {
                if is_handshake {
                    peer.mark_handshake();
                    self.stats.handshakes.add(1);
                }
                let mut sent = out.len() as u64;
                io.send_udp(src, out);
                // A new session releases the packets queued while it was negotiated.
                while let TunnResult::WriteToNetwork(out) = tunn.decapsulate(None, &[], buf) {
                    sent += out.len() as u64;
                    io.send_udp(src, out);
                }
                peer.tx_bytes.add(sent);
            }
            TunnResult::WriteToTunnelV4(inner, from) => {
                drop(session);
                self.deliver(&snap, peer.id, IpAddr::V4(from), inner, io)
            }
            TunnResult::WriteToTunnelV6(inner, from) => {
                drop(session);
                self.deliver(&snap, peer.id, IpAddr::V6(from), inner, io)
            }
            _ => {}
        }
    }

    #[inline]
    fn deliver(&self, snap: &Snapshot, id: PeerId, from: IpAddr, inner: &[u8], io: &mut impl Io) {
        if snap.routes.lookup(from) != Some(id) {
            return self.stats.drop(DropReason::SpoofedSource);
        }
        if io.write_tun(id, inner) {
            self.stats.udp_to_tun.add(1);
        } else {
            self.stats.drop(DropReason::IoError);
        }
    }

    /// Drives WireGuard's timers (rekey, keepalive, expiry); call every 100–250 ms.
    pub fn tick(&self, buf: &mut [u8], io: &mut impl Io) {
        let snap = self.snapshot.load();
        for peer in snap.peers.iter().flatten() {
            let (res, endpoint) = {
                let mut s = peer.session.lock();
                let endpoint = s.endpoint;
                let Some(tunn) = s.tunn.as_mut() else {
                    continue;
                };
                (tunn.update_timers(buf), endpoint)
            };
            if let (TunnResult::WriteToNetwork(out), Some(ep)) = (res, endpoint) {
                if io.send_udp(ep, out) {
                    peer.tx_bytes.add(out.len() as u64);
                }
            }
        }
    }

    /// Starts a new one-second window of the handshake rate limiter.
    pub fn reset_rate_limiter(&self) {
        if let Some(identity) = self.snapshot.load().identity.as_ref() {
            identity.rate_limiter.reset_count();
        }
    }

    // ---- configuration -----------------------------------------------------------------------

    pub fn listen_port(&self) -> u16 {
        self.config.lock().listen_port
    }

    /// Records the port the I/O layer bound at start.
    pub fn set_bound_port(&self, port: u16) {
        self.config.lock().listen_port = port;
    }

    /// Applies a parsed `set=1` request: whole, or (on error) not at all.
    pub fn apply(&self, req: &SetRequest, net: &dyn NetControl) -> Result<(), UapiError> {
        let mut cfg = self.config.lock();

        let new_keys: FxHashSet<Key> = req
            .peers
            .iter()
            .filter(|p| !p.remove && !p.update_only && !cfg.by_key.contains_key(&p.public_key))
            .map(|p| p.public_key)
            .collect();
        let kept = if req.replace_peers {
            0
        } else {
            cfg.by_key.len()
        };
        if kept + new_keys.len() > MAX_PEERS {
            return Err(UapiError::TooManyPeers(MAX_PEERS));
        }

        // Binding is the one step that can fail, so it goes first.
        let port_changed = req.listen_port.is_some_and(|p| p != cfg.listen_port);
        let fwmark = req.fwmark.unwrap_or(cfg.fwmark);
        if port_changed || fwmark != cfg.fwmark {
            let port = req.listen_port.unwrap_or(cfg.listen_port);
            cfg.listen_port = net.rebind(port, fwmark)?;
            cfg.fwmark = fwmark;
        }

        // From here on nothing fails.
        if let Some(key) = req.private_key {
            set_identity(&mut cfg, key);
        }
        if req.replace_peers {
            let ids: Vec<PeerId> = cfg.by_key.values().copied().collect();
            for id in ids {
                remove_peer(&mut cfg, id);
            }
        }
        for change in &req.peers {
            apply_peer(&mut cfg, change);
        }
        // As in WireGuard, a peer cannot have the interface's own public key.
        let own = cfg.identity.as_ref().map(|i| i.public_key);
        if let Some(id) = own.and_then(|k| cfg.by_key.get(&k).copied()) {
            remove_peer(&mut cfg, id);
        }
        self.publish(&cfg);
        Ok(())
    }

    fn publish(&self, cfg: &Config) {
        self.snapshot.store(Arc::new(Snapshot {
            identity: cfg.identity.clone(),
            routes: cfg.routes.clone(),
            peers: cfg
                .peers
                .iter()
                .map(|p| p.as_ref().map(|c| c.peer.clone()))
                .collect(),
            by_key: cfg.by_key.clone(),
        }));
    }

    pub fn view(&self) -> DeviceView {
        let cfg = self.config.lock();
        DeviceView {
            private_key: cfg.identity.as_ref().map(|i| i.private_key),
            public_key: cfg.identity.as_ref().map(|i| i.public_key),
            listen_port: cfg.listen_port,
            fwmark: cfg.fwmark,
            peers: cfg
                .peers
                .iter()
                .flatten()
                .map(|c| PeerView {
                    public_key: c.peer.public_key,
                    preshared_key: c.preshared_key,
                    endpoint: c.peer.endpoint(),
                    last_handshake: c.peer.last_handshake(),
                    tx_bytes: c.peer.tx_bytes.get(),
                    rx_bytes: c.peer.rx_bytes.get(),
                    persistent_keepalive: c.keepalive,
                    allowed_ips: c.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    pub fn peer_count(&self) -> usize {
        self.snapshot.load().by_key.len()
    }
}

fn set_identity(cfg: &mut Config, key: Option<Key>) {
    if cfg.identity.as_ref().map(|i| i.private_key) == key {
        return;
    }
    cfg.identity = key.map(|k| Arc::new(Identity::new(k)));
    let identity = cfg.identity.clone();
    for pc in cfg.peers.iter().flatten() {
        let tunn = identity.as_ref().and_then(|i| make_tunn(i, pc));
        pc.peer.session.lock().tunn = tunn;
    }
}

fn remove_peer(cfg: &mut Config, id: PeerId) {
    let Some(pc) = cfg.peers.get_mut(id as usize).and_then(Option::take) else {
        return;
    };
    for net in &pc.allowed_ips {
        if cfg.routes.owner(*net) == Some(id) {
            cfg.routes.remove(*net);
        }
    }
    cfg.by_key.remove(&pc.peer.public_key);
    cfg.free.push(Reverse(id));
}

fn add_peer(cfg: &mut Config, key: Key) -> PeerId {
    let id = cfg
        .free
        .pop()
        .map_or(cfg.peers.len() as PeerId, |Reverse(id)| id);
    let pc = PeerConf {
        peer: Arc::new(Peer::new(id, key, None)),
        allowed_ips: Vec::new(),
        preshared_key: None,
        keepalive: 0,
    };
    if id as usize == cfg.peers.len() {
        cfg.peers.push(Some(pc));
    } else {
        cfg.peers[id as usize] = Some(pc);
    }
    cfg.by_key.insert(key, id);
    id
}

fn apply_peer(cfg: &mut Config, change: &PeerChange) {
    let existing = cfg.by_key.get(&change.public_key).copied();
    if change.remove {
        if let Some(id) = existing {
            remove_peer(cfg, id);
        }
        return;
    }
    let (id, mut rebuild) = match existing {
        Some(id) => (id, false),
        None if change.update_only => return,
        None => (add_peer(cfg, change.public_key), true),
    };
    let identity = cfg.identity.clone();
    let pc = cfg.peers[id as usize].as_mut().expect("live peer");
    if let Some(psk) = change.preshared_key {
        rebuild |= pc.preshared_key != psk;
        pc.preshared_key = psk;
    }
    if let Some(ka) = change.persistent_keepalive {
        rebuild |= pc.keepalive != ka;
        pc.keepalive = ka;
    }
    {
        // boringtun fixes the preshared key and keepalive at construction, so a change means
        // a fresh Tunn (and a new handshake), as a key change does in WireGuard.
        let mut s = pc.peer.session.lock();
        if rebuild {
            s.tunn = identity.as_ref().and_then(|i| make_tunn(i, pc));
        }
        if let Some(ep) = change.endpoint {
            s.endpoint = Some(ep);
        }
    }
    if change.replace_allowed_ips {
        for net in std::mem::take(&mut pc.allowed_ips) {
            cfg.routes.remove(net);
        }
    }
    for c in &change.allowed_ips {
        match *c {
            AllowedIpChange::Add(net) => match cfg.routes.insert(net, id) {
                Some(prev) if prev == id => {}
                prev => {
                    if let Some(other) = prev.and_then(|p| cfg.peers[p as usize].as_mut()) {
                        other.allowed_ips.retain(|n| *n != net);
                    }
                    let pc = cfg.peers[id as usize].as_mut().expect("live peer");
                    pc.allowed_ips.push(net);
                }
            },
            AllowedIpChange::Remove(net) => {
                if cfg.routes.owner(net) == Some(id) {
                    cfg.routes.remove(net);
                    let pc = cfg.peers[id as usize].as_mut().expect("live peer");
                    pc.allowed_ips.retain(|n| *n != net);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
