//! A configured peer: its identity, its WireGuard session state and its counters.

use crate::key::Key;
use crate::routes::PeerId;
use crate::stats::Counter;
use boringtun::noise::Tunn;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// The part of a peer that the packet path changes under its lock.
pub struct Session {
    /// `None` while the interface has no private key (or the peer's key is unusable).
    pub tunn: Option<Box<Tunn>>,
    /// Where to send: set by UAPI, then follows the newest authenticated packet (roaming).
    pub endpoint: Option<SocketAddr>,
}

pub struct Peer {
    pub id: PeerId,
    pub public_key: Key,
    pub session: Mutex<Session>,
    /// Bytes of UDP payload sent to this peer (wire bytes, as wireguard-go counts them).
    pub tx_bytes: Counter,
    /// Bytes of UDP payload received from this peer that authenticated.
    pub rx_bytes: Counter,
    /// Unix time of the last completed handshake in nanoseconds; 0 = never.
    last_handshake_ns: AtomicU64,
}

impl Peer {
    pub fn new(id: PeerId, public_key: Key, tunn: Option<Box<Tunn>>) -> Self {
        Peer {
            id,
            public_key,
            session: Mutex::new(Session {
                tunn,
                endpoint: None,
            }),
            tx_bytes: Counter::default(),
            rx_bytes: Counter::default(),
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
}
