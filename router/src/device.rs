//! The sans-IO packet core: peers, routing, anti-spoofing, and applying UAPI configuration.
//!
//! Readers (the packet path) never take a device-wide lock: peers sit in lock-free slots
//! ([`PeerSlots`]), and keys and routes in sharded maps published through `arc_swap`
//! ([`crate::sharded`]). The only lock a packet takes is its peer's session lock. Writers (UAPI
//! `set`) serialize on the config mutex and publish what they changed once per request.
//!
//! A configured peer is a compact record; boringtun's `Tunn` exists only while the peer is active
//! (a valid initiation arrived, or traffic for it came from TUN) and is dropped by the timers once
//! its sessions have expired. The timers walk active peers only.

use crate::initiation;
use crate::key::Key;
use crate::limits::{is_smtp, LimitConf, Limits, Way};
use crate::peer::{Active, Peer, Session};
use crate::routes::{PeerId, RouteTable};
use crate::sharded::Sharded;
use crate::slots::PeerSlots;
use crate::source_limit::SourceLimit;
use crate::stats::{Counter, DropReason, Stats};
use crate::request::{AllowedIpChange, PeerChange, SetRequest, UapiError};
use arc_swap::ArcSwapOption;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use parking_lot::Mutex;
use rustc_hash::FxHashSet;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// boringtun packs the peer id into the top 24 bits of its session indexes.
pub const MAX_PEERS: usize = (1 << 24) - 1;

/// Handshake messages per second before the router answers with cookies (MAC2) instead of doing
/// Diffie-Hellman. Initiations are counted twice (device-level MAC check, then the peer's), so
/// this allows about 4,000 initiations a second, what a core completes.
pub const HANDSHAKE_RATE_LIMIT: u64 = 8_000;

/// WireGuard's RejectAfterTime: 180 s after its handshake a session can carry nothing, so state
/// idle that long is dropped (peers with a persistent keepalive keep theirs).
pub const IDLE_AFTER: Duration = Duration::from_secs(180);

/// WireGuard's RekeyAttemptTime: a handshake we started is retried this long, then given up.
const UNANSWERED_AFTER: Duration = Duration::from_secs(90);

/// Session states made for traffic from TUN whose customer has not answered yet, at most: each
/// holds 11 KB, and traffic to idle customers is rare (their clients keep sessions alive).
pub const MAX_UNANSWERED: usize = 10_000;

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
    rate_limiter: Arc<RateLimiter>,
    /// The start of every initiation transcript addressed to us.
    responder_hash: [u8; 32],
}

impl Identity {
    fn new(private_key: Key, handshake_limit: u64) -> Self {
        let secret = StaticSecret::from(private_key.0);
        let public = PublicKey::from(&secret);
        Identity {
            private_key,
            public_key: Key(public.to_bytes()),
            rate_limiter: Arc::new(RateLimiter::new(&public, handshake_limit)),
            responder_hash: initiation::responder_hash(&public),
            secret,
        }
    }
}

struct PeerConf {
    peer: Arc<Peer>,
    allowed_ips: Vec<IpNet>,
}

/// The authoritative configuration, changed only by UAPI `set`.
#[derive(Default)]
struct Config {
    listen_port: u16,
    fwmark: u32,
    peers: Vec<Option<PeerConf>>,
    /// Freed ids, lowest first, so a rebuilt configuration keeps its order.
    free: BinaryHeap<Reverse<PeerId>>,
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
    identity: ArcSwapOption<Identity>,
    peers: PeerSlots,
    keys: Sharded<Key, PeerId>,
    routes: RouteTable,
    /// Peers with session state: all the timers walk.
    timed: Mutex<Vec<PeerId>>,
    peer_count: AtomicUsize,
    active_count: AtomicUsize,
    /// States made for TUN traffic whose handshake nobody has answered yet.
    unanswered: AtomicUsize,
    /// Cap on `unanswered`; 0 = [`MAX_UNANSWERED`].
    max_unanswered: AtomicUsize,
    /// Initiations that passed the MAC checks in the current one-second window.
    window_initiations: AtomicU64,
    /// Handshake messages a second before cookies; 0 = [`HANDSHAKE_RATE_LIMIT`].
    handshake_limit: AtomicU64,
    sources: SourceLimit,
    config: Mutex<Config>,
    pub stats: Stats,
    /// Session states made and dropped (lazily, on demand / by the idle timer).
    pub sessions_made: Counter,
    pub sessions_dropped: Counter,
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

/// What kind of message a datagram is, and for initiations what opening it learned.
enum Kind {
    Initiation(initiation::Opened),
    Response,
    Cookie,
    Data,
}

impl Device {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the handshake messages a second answered before cookies (MAC2) are required.
    /// Takes effect with the next private key.
    pub fn set_handshake_limit(&self, per_second: u64) {
        self.handshake_limit.store(per_second, Relaxed);
    }

    /// Caps the session states made for TUN traffic before the customer answered.
    pub fn set_max_unanswered(&self, n: usize) {
        self.max_unanswered.store(n, Relaxed);
    }

    fn max_unanswered(&self) -> usize {
        match self.max_unanswered.load(Relaxed) {
            0 => MAX_UNANSWERED,
            n => n,
        }
    }

    fn handshake_limit(&self) -> u64 {
        match self.handshake_limit.load(Relaxed) {
            0 => HANDSHAKE_RATE_LIMIT,
            n => n,
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Peers that hold session state now.
    pub fn active_sessions(&self) -> usize {
        self.active_count.load(Relaxed)
    }

    /// Makes the session state of `peer` (lock held by the caller) and puts it on the timers'
    /// list. `None` without an interface key or with an unusable peer key.
    fn activate<'s>(
        &self,
        identity: &Identity,
        peer: &Peer,
        s: &'s mut Session,
        now: Instant,
    ) -> Option<&'s mut Active> {
        if s.active.is_none() {
            let keepalive = (s.keepalive > 0).then_some(s.keepalive);
            let tunn = Tunn::new(
                identity.secret.clone(),
                PublicKey::from(peer.public_key.0),
                s.preshared_key.as_ref().map(|k| k.0),
                keepalive,
                peer.id,
                Some(identity.rate_limiter.clone()),
            );
            let tunn = match tunn {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(peer = %peer.public_key, "unusable peer key: {e}");
                    return None;
                }
            };
            s.active = Some(Box::new(Active {
                tunn,
                since: now,
                last_initiation: None,
                unanswered: false,
            }));
            self.sessions_made.add(1);
            self.active_count.fetch_add(1, Relaxed);
            if !s.timed {
                s.timed = true;
                self.timed.lock().push(peer.id);
            }
        }
        s.active.as_deref_mut()
    }

    fn deactivate(&self, s: &mut Session) {
        if let Some(a) = s.active.take() {
            if a.unanswered {
                self.unanswered.fetch_sub(1, Relaxed);
            }
            self.sessions_dropped.add(1);
            self.active_count.fetch_sub(1, Relaxed);
        }
    }

    // ---- packet path -------------------------------------------------------------------------

    /// A packet read from TUN: route it by destination and send it encrypted to its peer.
    pub fn handle_tun(&self, packet: &[u8], buf: &mut [u8], io: &mut impl Io) {
        let Some(dst) = destination(packet) else {
            return self.stats.drop(DropReason::InvalidPacket);
        };
        let Some(slot) = self.routes.lookup(dst).and_then(|id| self.peers.get(id)) else {
            return self.stats.drop(DropReason::NoRoute);
        };
        let peer = slot.as_ref().expect("occupied slot");
        let (res, endpoint) = {
            let mut s = peer.session.lock();
            if let Some(l) = s.limits.as_deref_mut() {
                if !l.admit(Way::Down, packet.len()) {
                    return self.stats.drop(DropReason::RateLimited);
                }
            }
            let active = match s.active {
                Some(ref mut a) => a,
                None => {
                    // An idle peer with traffic waiting: make its state, which queues the
                    // packet and starts a handshake.
                    let Some(identity) = self.identity.load_full() else {
                        return self.stats.drop(DropReason::NoKey);
                    };
                    if s.endpoint.is_none() {
                        return self.stats.drop(DropReason::NoEndpoint);
                    }
                    // Anyone on the internet can send to every rented address: the states
                    // such traffic makes before the customer answers are capped.
                    if self.unanswered.load(Relaxed) >= self.max_unanswered() {
                        return self.stats.drop(DropReason::UnderLoad);
                    }
                    match self.activate(&identity, peer, &mut s, Instant::now()) {
                        Some(a) => {
                            a.unanswered = true;
                            self.unanswered.fetch_add(1, Relaxed);
                            a
                        }
                        None => return self.stats.drop(DropReason::NoKey),
                    }
                }
            };
            let res = active.tunn.encapsulate(packet, buf);
            (res, s.endpoint)
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
        let identity = self.identity.load();
        let Some(identity) = identity.as_ref() else {
            return self.stats.drop(DropReason::NoKey);
        };
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(p) => p,
            Err(_) => return self.stats.drop(DropReason::InvalidPacket),
        };
        let (id, kind) = match packet {
            Packet::HandshakeInit(_) => {
                // MAC1 and load check are cheap; only then spend a Diffie-Hellman on the sender.
                match identity
                    .rate_limiter
                    .verify_packet(Some(src.ip()), datagram, buf)
                {
                    Ok(_) => {
                        self.stats.handshake_initiations.add(1);
                        // Past the limit only cookie-proven sources get here; each gets a share.
                        let n = self.window_initiations.fetch_add(1, Relaxed);
                        if n >= self.handshake_limit() / 2
                            && !self.sources.allow(src.ip(), Instant::now())
                        {
                            return self.stats.drop(DropReason::UnderLoad);
                        }
                    }
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.stats.handshake_initiations.add(1);
                        self.stats.cookie_replies.add(1);
                        io.send_udp(src, cookie);
                        return self.stats.drop(DropReason::UnderLoad);
                    }
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                }
                let opened = match initiation::open_static(
                    &identity.secret,
                    &identity.responder_hash,
                    datagram,
                ) {
                    Ok(o) => o,
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                };
                match self.keys.get(&Key(opened.peer)) {
                    Some(id) => (id, Kind::Initiation(opened)),
                    None => return self.stats.drop(DropReason::UnknownPeer),
                }
            }
            Packet::HandshakeResponse(ref p) => (p.receiver_idx >> 8, Kind::Response),
            Packet::PacketCookieReply(ref p) => (p.receiver_idx >> 8, Kind::Cookie),
            Packet::PacketData(ref p) => (p.receiver_idx >> 8, Kind::Data),
        };
        let Some(slot) = self.peers.get(id) else {
            return self.stats.drop(DropReason::UnknownPeer);
        };
        let peer = slot.as_ref().expect("occupied slot");

        let mut session = peer.session.lock();
        let now = Instant::now();
        // Anyone can encrypt a known customer's public key to us; only its owner can encrypt
        // the timestamp, which the new state checks. State made for a forgery goes at once.
        let mut fresh = false;
        if let Kind::Initiation(opened) = &kind {
            // State that has accepted an initiation checks replays itself; new state (none, or
            // made for traffic from TUN) knows nothing, so the timestamp remembered when the
            // last state was dropped does (none yet: nothing to replay against).
            let unchecked = !matches!(&session.active, Some(a) if a.last_initiation.is_some());
            if unchecked && session.last_initiation != ZERO_TIMESTAMP {
                let ss = static_shared(identity, peer, &mut session);
                match opened.timestamp(&ss) {
                    Ok(ts) if ts > session.last_initiation => {}
                    Ok(_) => return self.stats.drop(DropReason::Replay),
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                }
            }
            fresh = session.active.is_none();
            if self.activate(identity, peer, &mut session, now).is_none() {
                return self.stats.drop(DropReason::NoKey);
            }
        }
        let Session {
            active,
            endpoint,
            limits,
            ..
        } = &mut *session;
        let Some(active) = active.as_deref_mut() else {
            return self.stats.drop(DropReason::NoSession);
        };
        let res = active.tunn.decapsulate(Some(src.ip()), datagram, buf);
        if let TunnResult::Err(e) = &res {
            let reason = drop_reason(e);
            if fresh {
                self.deactivate(&mut session);
            }
            return self.stats.drop(reason);
        }
        if matches!(kind, Kind::Initiation(_)) {
            // Read its timestamp only if the state is dropped (off the handshake path).
            active.last_initiation = datagram.try_into().ok();
        }
        // Authenticated: the endpoint follows the newest packet (roaming).
        if !matches!(kind, Kind::Cookie) {
            *endpoint = Some(src);
        }
        peer.rx_bytes.add(datagram.len() as u64);
        match res {
            TunnResult::WriteToNetwork(out) => {
                if matches!(kind, Kind::Initiation(_) | Kind::Response) {
                    peer.mark_handshake();
                    active.since = now;
                    if std::mem::take(&mut active.unanswered) {
                        self.unanswered.fetch_sub(1, Relaxed);
                    }
                    self.stats.handshakes.add(1);
                }
                let mut sent = out.len() as u64;
                io.send_udp(src, out);
                // A new session releases the packets queued while it was negotiated.
                while let TunnResult::WriteToNetwork(out) = active.tunn.decapsulate(None, &[], buf)
                {
                    sent += out.len() as u64;
                    io.send_udp(src, out);
                }
                peer.tx_bytes.add(sent);
            }
            TunnResult::WriteToTunnelV4(inner, from) => {
                if let Some(reason) = limits.as_deref_mut().and_then(|l| refuse_up(l, inner)) {
                    return self.stats.drop(reason);
                }
                drop(session);
                self.deliver(peer.id, IpAddr::V4(from), inner, io)
            }
            TunnResult::WriteToTunnelV6(inner, from) => {
                if let Some(reason) = limits.as_deref_mut().and_then(|l| refuse_up(l, inner)) {
                    return self.stats.drop(reason);
                }
                drop(session);
                self.deliver(peer.id, IpAddr::V6(from), inner, io)
            }
            _ => {}
        }
    }

    #[inline]
    fn deliver(&self, id: PeerId, from: IpAddr, inner: &[u8], io: &mut impl Io) {
        if self.routes.lookup(from) != Some(id) {
            return self.stats.drop(DropReason::SpoofedSource);
        }
        if io.write_tun(id, inner) {
            self.stats.udp_to_tun.add(1);
        } else {
            self.stats.drop(DropReason::IoError);
        }
    }

    /// Drives WireGuard's timers (rekey, keepalive, expiry) of the active peers and drops the
    /// state of those idle past [`IDLE_AFTER`]; call every 100–250 ms.
    pub fn tick(&self, buf: &mut [u8], io: &mut impl Io) {
        self.tick_at(Instant::now(), buf, io)
    }

    /// [`Device::tick`] with the idle clock read as `now` (tests move it forward).
    pub fn tick_at(&self, now: Instant, buf: &mut [u8], io: &mut impl Io) {
        let identity = self.identity.load_full();
        let mut list = std::mem::take(&mut *self.timed.lock());
        // A removed peer's id can come back for a new peer: never walk one twice.
        list.sort_unstable();
        list.dedup();
        list.retain(|&id| {
            let Some(slot) = self.peers.get(id) else {
                return false;
            };
            let peer = slot.as_ref().expect("occupied slot");
            let mut s = peer.session.lock();
            let Some(active) = s.active.as_deref_mut() else {
                s.timed = false;
                return false;
            };
            let res = active.tunn.update_timers(buf);
            // A handshake we started and nobody answered is given up after RekeyAttemptTime.
            let limit = if active.unanswered {
                UNANSWERED_AFTER
            } else {
                IDLE_AFTER
            };
            let idle = now.saturating_duration_since(active.since) >= limit;
            let last_initiation = active.last_initiation;
            let endpoint = s.endpoint;
            if let (TunnResult::WriteToNetwork(out), Some(ep)) = (res, endpoint) {
                if io.send_udp(ep, out) {
                    peer.tx_bytes.add(out.len() as u64);
                }
            }
            if idle && s.keepalive == 0 {
                if let (Some(msg), Some(identity)) = (last_initiation, identity.as_ref()) {
                    remember_timestamp(identity, peer, &mut s, &msg);
                }
                self.deactivate(&mut s);
                s.timed = false;
                return false;
            }
            true
        });
        self.timed.lock().extend(list);
    }

    /// Starts a new one-second window of the handshake rate limiter.
    pub fn reset_rate_limiter(&self) {
        if let Some(identity) = self.identity.load().as_ref() {
            identity.rate_limiter.reset_count();
        }
        self.window_initiations.store(0, Relaxed);
        self.sources.prune(Instant::now());
    }

    // ---- configuration -----------------------------------------------------------------------

    pub fn listen_port(&self) -> u16 {
        self.config.lock().listen_port
    }

    /// Records the port the I/O layer bound at start.
    pub fn set_bound_port(&self, port: u16) {
        self.config.lock().listen_port = port;
    }

    /// Applies a parsed `set=1` request: whole, or (on error) not at all. Readers see the
    /// request's changes of keys and routes all at once.
    pub fn apply(&self, req: &SetRequest, net: &dyn NetControl) -> Result<(), UapiError> {
        let mut cfg = self.config.lock();

        let kept = if req.replace_peers {
            0
        } else {
            self.peer_count.load(Relaxed)
        };
        let mut new_keys = FxHashSet::default();
        for p in &req.peers {
            if !p.remove && !p.update_only && self.keys.get(&p.public_key).is_none() {
                new_keys.insert(p.public_key);
                if kept + new_keys.len() > MAX_PEERS {
                    return Err(UapiError::TooManyPeers(MAX_PEERS));
                }
            }
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
        let mut w = Writer {
            dev: self,
            cfg: &mut cfg,
            keys: self.keys.batch(),
            routes: self.routes.batch(),
            removed: Vec::new(),
        };
        if let Some(key) = req.private_key {
            w.set_identity(key);
        }
        if req.replace_peers {
            let ids: Vec<PeerId> = w.cfg.peers.iter().flatten().map(|c| c.peer.id).collect();
            for id in ids {
                w.remove_peer(id);
            }
        }
        for change in &req.peers {
            w.apply_peer(change);
        }
        // As in WireGuard, a peer cannot have the interface's own public key.
        let own = self.identity.load().as_ref().map(|i| i.public_key);
        if let Some(id) = own.and_then(|k| w.keys.get(&k)) {
            w.remove_peer(id);
        }
        w.publish();
        Ok(())
    }

    pub fn view(&self) -> DeviceView {
        let cfg = self.config.lock();
        let identity = self.identity.load();
        DeviceView {
            private_key: identity.as_ref().map(|i| i.private_key),
            public_key: identity.as_ref().map(|i| i.public_key),
            listen_port: cfg.listen_port,
            fwmark: cfg.fwmark,
            peers: cfg
                .peers
                .iter()
                .flatten()
                .map(|c| {
                    let s = c.peer.session.lock();
                    PeerView {
                        public_key: c.peer.public_key,
                        preshared_key: s.preshared_key.as_deref().copied(),
                        endpoint: s.endpoint,
                        last_handshake: c.peer.last_handshake(),
                        tx_bytes: c.peer.tx_bytes.get(),
                        rx_bytes: c.peer.rx_bytes.get(),
                        persistent_keepalive: s.keepalive,
                        allowed_ips: c.allowed_ips.clone(),
                    }
                })
                .collect(),
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peer_count.load(Relaxed)
    }
}

/// One `set` being applied: the config, and the batches readers will see at [`Writer::publish`].
struct Writer<'a> {
    dev: &'a Device,
    cfg: &'a mut Config,
    keys: crate::sharded::Batch<'a, Key, PeerId>,
    routes: crate::routes::RouteBatch<'a>,
    /// Ids freed by this request: reused only after it is published, so no reader ever sees a
    /// route of a removed peer lead to a new one.
    removed: Vec<PeerId>,
}

impl Writer<'_> {
    fn set_identity(&mut self, key: Option<Key>) {
        let current = self.dev.identity.load().as_ref().map(|i| i.private_key);
        if current == key {
            return;
        }
        let limit = self.dev.handshake_limit();
        let identity = key.map(|k| Arc::new(Identity::new(k, limit)));
        self.dev.identity.store(identity.clone());
        // Sessions and the cached static-static secrets belonged to the old key.
        for pc in self.cfg.peers.iter().flatten() {
            let mut s = pc.peer.session.lock();
            self.dev.deactivate(&mut s);
            s.static_shared = None;
            if let Some(i) = &identity {
                keep_alive(self.dev, i, &pc.peer, &mut s);
            }
        }
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(pc) = self.cfg.peers.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for net in &pc.allowed_ips {
            if self.routes.owner(*net) == Some(id) {
                self.routes.remove(*net);
            }
        }
        self.keys.remove(&pc.peer.public_key);
        self.dev.deactivate(&mut pc.peer.session.lock());
        self.dev.peer_count.fetch_sub(1, Relaxed);
        self.removed.push(id);
    }

    fn add_peer(&mut self, key: Key) -> PeerId {
        let cfg = &mut *self.cfg;
        let id = cfg
            .free
            .pop()
            .map_or(cfg.peers.len() as PeerId, |Reverse(id)| id);
        let peer = Arc::new(Peer::new(id, key));
        // Unreachable until the keys and routes that lead here are published.
        self.dev.peers.set(id, Some(peer.clone()));
        let pc = PeerConf {
            peer,
            allowed_ips: Vec::new(),
        };
        if id as usize == cfg.peers.len() {
            cfg.peers.push(Some(pc));
        } else {
            cfg.peers[id as usize] = Some(pc);
        }
        self.keys.insert(key, id);
        self.dev.peer_count.fetch_add(1, Relaxed);
        id
    }

    fn apply_peer(&mut self, change: &PeerChange) {
        let existing = self.keys.get(&change.public_key);
        if change.remove {
            if let Some(id) = existing {
                self.remove_peer(id);
            }
            return;
        }
        let id = match existing {
            Some(id) => id,
            None if change.update_only => return,
            None => self.add_peer(change.public_key),
        };
        let identity = self.dev.identity.load_full();
        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
        {
            let mut s = pc.peer.session.lock();
            let mut reset = false;
            if let Some(psk) = change.preshared_key {
                reset |= s.preshared_key.as_deref().copied() != psk;
                s.preshared_key = psk.map(Box::new);
            }
            if let Some(ka) = change.persistent_keepalive {
                reset |= s.keepalive != ka;
                s.keepalive = ka;
            }
            if let Some(ep) = change.endpoint {
                s.endpoint = Some(ep);
            }
            let old = s.limits.as_ref().map_or(LimitConf::default(), |l| l.conf);
            let conf = LimitConf {
                bits_per_second: change.rate_limit_bps.unwrap_or(old.bits_per_second),
                packets_per_second: change.rate_limit_pps.unwrap_or(old.packets_per_second),
                block_smtp: change.block_smtp.unwrap_or(old.block_smtp),
            };
            if conf != old {
                s.limits = (!conf.is_none()).then(|| Box::new(Limits::new(conf)));
            }
            // boringtun fixes the preshared key and keepalive at construction, so a change
            // means fresh state (and a new handshake), as a key change does in WireGuard.
            if reset {
                self.dev.deactivate(&mut s);
            }
            if let Some(i) = &identity {
                keep_alive(self.dev, i, &pc.peer, &mut s);
            }
        }
        if change.replace_allowed_ips {
            for net in std::mem::take(&mut pc.allowed_ips) {
                self.routes.remove(net);
            }
        }
        for c in &change.allowed_ips {
            match *c {
                AllowedIpChange::Add(net) => match self.routes.insert(net, id) {
                    Some(prev) if prev == id => {}
                    prev => {
                        if let Some(other) = prev.and_then(|p| self.cfg.peers[p as usize].as_mut())
                        {
                            other.allowed_ips.retain(|n| *n != net);
                        }
                        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
                        // Most peers have one or two prefixes: no spare capacity.
                        pc.allowed_ips.reserve_exact(1);
                        pc.allowed_ips.push(net);
                    }
                },
                AllowedIpChange::Remove(net) => {
                    if self.routes.owner(net) == Some(id) {
                        self.routes.remove(net);
                        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
                        pc.allowed_ips.retain(|n| *n != net);
                    }
                }
            }
        }
    }

    fn publish(self) {
        self.keys.publish();
        self.routes.publish();
        for id in self.removed {
            // Reused ids were only ever freed here, so a slot still empty is really free.
            if self.cfg.peers.get(id as usize).is_some_and(Option::is_none) {
                self.dev.peers.set(id, None);
                self.cfg.free.push(Reverse(id));
            }
        }
    }
}

const ZERO_TIMESTAMP: initiation::Timestamp = [0; 12];

/// Why an upload (a packet the customer sent) breaks the rental's limits, if it does.
fn refuse_up(l: &mut Limits, packet: &[u8]) -> Option<DropReason> {
    if l.conf.block_smtp && is_smtp(packet) {
        return Some(DropReason::SmtpBlocked);
    }
    (!l.admit(Way::Up, packet.len())).then_some(DropReason::RateLimited)
}

/// DH(our static, peer static), computed once per peer and key.
fn static_shared(identity: &Identity, peer: &Peer, s: &mut Session) -> [u8; 32] {
    *s.static_shared.get_or_insert_with(|| {
        let peer_key = PublicKey::from(peer.public_key.0);
        identity.secret.diffie_hellman(&peer_key).to_bytes()
    })
}

/// Keeps the timestamp of the newest initiation a session accepted, as its state is dropped.
fn remember_timestamp(identity: &Identity, peer: &Peer, s: &mut Session, msg: &[u8]) {
    let Ok(opened) = initiation::open_static(&identity.secret, &identity.responder_hash, msg)
    else {
        return;
    };
    let ss = static_shared(identity, peer, s);
    if let Ok(ts) = opened.timestamp(&ss) {
        s.last_initiation = s.last_initiation.max(ts);
    }
}

/// A peer with a persistent keepalive and an endpoint keeps session state from the start, as in
/// WireGuard, so its keepalives (and the handshake they need) go out without waiting for traffic.
fn keep_alive(dev: &Device, identity: &Identity, peer: &Peer, s: &mut Session) {
    if s.keepalive > 0 && s.endpoint.is_some() {
        dev.activate(identity, peer, s, Instant::now());
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
