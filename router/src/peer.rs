//! A configured peer: a compact record (identity, endpoint, counters, replay guard) that every
//! configured customer has, and the full WireGuard state (boringtun's `Tunn`, ~11 KB) that only
//! an active one has.

use crate::initiation::{Timestamp, INITIATION_LEN};
use crate::key::Key;
use crate::limits::Limits;
use crate::routes::PeerId;
use boringtun::noise::Tunn;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Handshake and session state, made on a valid initiation or on traffic to the peer and
/// dropped by the timers once its sessions have expired.
pub struct Active {
    pub tunn: Tunn,
    /// When this state was made or last completed a handshake: the idle clock starts here.
    pub since: Instant,
    /// The newest initiation this state accepted: its timestamp is read when the state is
    /// dropped, so the handshake path spends no Diffie-Hellman on it.
    pub last_initiation: Option<[u8; INITIATION_LEN]>,
    /// Made for traffic from TUN, and no handshake has completed since.
    pub unanswered: bool,
}

/// The part of a peer that the packet path changes under its lock.
#[derive(Default)]
pub struct Session {
    pub active: Option<Box<Active>>,
    /// Where to send: set by UAPI, then follows the newest authenticated packet (roaming).
    pub endpoint: Option<SocketAddr>,
    /// Boxed: rare, and a configured-but-idle peer should stay small.
    pub preshared_key: Option<Box<Key>>,
    pub keepalive: u16,
    /// DH(our static, peer static), kept once computed: it decrypts initiation timestamps.
    pub static_shared: Option<[u8; 32]>,
    /// The newest initiation timestamp accepted: outlives `active`, so a replayed initiation
    /// cannot start a session after the state was dropped.
    pub last_initiation: Timestamp,
    /// Whether the timer thread has this peer on its list of active peers.
    pub timed: bool,
    /// The rental's caps and SMTP block, if it has any.
    pub limits: Option<Box<Limits>>,
}

/// A per-peer byte count. Not padded to a cache line like the device's counters: a million
/// peers would pay 128 bytes each for it, and a peer's counters change under its own lock anyway.
#[derive(Default, Debug)]
pub struct ByteCounter(AtomicU64);

impl ByteCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

pub struct Peer {
    pub id: PeerId,
    pub public_key: Key,
    pub session: Mutex<Session>,
    /// Bytes of UDP payload sent to this peer (wire bytes, as wireguard-go counts them).
    pub tx_bytes: ByteCounter,
    /// Bytes of UDP payload received from this peer that authenticated.
    pub rx_bytes: ByteCounter,
    /// Unix time of the last completed handshake in nanoseconds; 0 = never.
    last_handshake_ns: AtomicU64,
}

impl Peer {
    pub fn new(id: PeerId, public_key: Key) -> Self {
        Peer {
            id,
            public_key,
            session: Mutex::new(Session::default()),
            tx_bytes: ByteCounter::default(),
            rx_bytes: ByteCounter::default(),
            last_handshake_ns: AtomicU64::new(0),
        }
    }

    pub fn mark_handshake(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.last_handshake_ns.store(now, Relaxed);
    }

    /// (seconds, nanoseconds) of the last handshake, (0, 0) if never.
    pub fn last_handshake(&self) -> (u64, u32) {
        let ns = self.last_handshake_ns.load(Relaxed);
        (ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.session.lock().endpoint
    }

    pub fn is_active(&self) -> bool {
        self.session.lock().active.is_some()
    }
}
