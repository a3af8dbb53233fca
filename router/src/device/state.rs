//! What the packet core holds: the interface's identity, the peers (lock-free slots, sharded
//! key and route maps), the authoritative configuration behind the config mutex, and the
//! counters. Also making and dropping a peer's session state, which the packet path, the timers
//! and configuration all do.

use crate::initiation;
use crate::key::Key;
use crate::peer::{Active, Peer, Session};
use crate::routes::{PeerId, RouteTable};
use crate::sharded::Sharded;
use crate::slots::PeerSlots;
use crate::source_limit::SourceLimit;
use crate::stats::{Counter, DropReason, Stats};
use arc_swap::ArcSwapOption;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Handshake messages per second before the router answers with cookies (MAC2) instead of doing
/// Diffie-Hellman. Initiations are counted twice (device-level MAC check, then the peer's), so
/// this allows about 4,000 initiations a second, what a core completes.
pub const HANDSHAKE_RATE_LIMIT: u64 = 8_000;

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

/// The interface's own key pair, with the cookie/MAC state derived from it.
pub(super) struct Identity {
    pub(super) private_key: Key,
    pub(super) public_key: Key,
    pub(super) secret: StaticSecret,
    pub(super) rate_limiter: Arc<RateLimiter>,
    /// The start of every initiation transcript addressed to us.
    pub(super) responder_hash: [u8; 32],
}

impl Identity {
    pub(super) fn new(private_key: Key, handshake_limit: u64) -> Self {
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

pub(super) struct PeerConf {
    pub(super) peer: Arc<Peer>,
    pub(super) allowed_ips: Vec<IpNet>,
}

/// The authoritative configuration, changed only by UAPI `set`.
#[derive(Default)]
pub(super) struct Config {
    pub(super) listen_port: u16,
    pub(super) fwmark: u32,
    pub(super) peers: Vec<Option<PeerConf>>,
    /// Freed ids, lowest first, so a rebuilt configuration keeps its order.
    pub(super) free: BinaryHeap<Reverse<PeerId>>,
}

#[derive(Default)]
pub struct Device {
    pub(super) identity: ArcSwapOption<Identity>,
    /// Whether `identity` is set: what the packet path checks for all but initiations.
    pub(super) has_identity: AtomicBool,
    pub(super) peers: PeerSlots,
    pub(super) keys: Sharded<Key, PeerId>,
    pub(super) routes: RouteTable,
    /// Peers with session state: all the timers walk.
    pub(super) timed: Mutex<Vec<PeerId>>,
    pub(super) peer_count: AtomicUsize,
    active_count: AtomicUsize,
    /// States made for TUN traffic whose handshake nobody has answered yet.
    pub(super) unanswered: AtomicUsize,
    /// Cap on `unanswered`; 0 = [`MAX_UNANSWERED`].
    max_unanswered: AtomicUsize,
    /// Initiations that passed the MAC checks in the current one-second window.
    pub(super) window_initiations: AtomicU64,
    /// Handshake messages a second before cookies; 0 = [`HANDSHAKE_RATE_LIMIT`].
    handshake_limit: AtomicU64,
    pub(super) sources: SourceLimit,
    pub(super) config: Mutex<Config>,
    pub stats: Stats,
    /// Session states made and dropped (lazily, on demand / by the idle timer).
    pub sessions_made: Counter,
    pub sessions_dropped: Counter,
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

    pub(super) fn max_unanswered(&self) -> usize {
        match self.max_unanswered.load(Relaxed) {
            0 => MAX_UNANSWERED,
            n => n,
        }
    }

    pub(super) fn handshake_limit(&self) -> u64 {
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
    pub(super) fn activate<'s>(
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

    pub(super) fn deactivate(&self, s: &mut Session) {
        if let Some(a) = s.active.take() {
            if a.unanswered {
                self.unanswered.fetch_sub(1, Relaxed);
            }
            self.sessions_dropped.add(1);
            self.active_count.fetch_sub(1, Relaxed);
        }
    }
}

pub(super) fn drop_reason(e: &WireGuardError) -> DropReason {
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

/// DH(our static, peer static), computed once per peer and key.
pub(super) fn static_shared(identity: &Identity, peer: &Peer, s: &mut Session) -> [u8; 32] {
    *s.static_shared.get_or_insert_with(|| {
        let peer_key = PublicKey::from(peer.public_key.0);
        identity.secret.diffie_hellman(&peer_key).to_bytes()
    })
}

/// Keeps the timestamp of the newest initiation a session accepted, as its state is dropped.
pub(super) fn remember_timestamp(identity: &Identity, peer: &Peer, s: &mut Session, msg: &[u8]) {
    let Ok(opened) = initiation::open_static(&identity.secret, &identity.responder_hash, msg)
    else {
        return;
    };
    let ss = static_shared(identity, peer, s);
    if let Ok(ts) = opened.timestamp(&ss) {
        s.last_initiation = s.last_initiation.max(ts);
    }
}
