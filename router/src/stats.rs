//! Router-wide packet counters. Each counter sits on its own cache line because different worker
//! threads bump different counters on every packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Packet from TUN to an address no peer owns.
    NoRoute,
    /// Decrypted packet whose source is outside the sending peer's allowed IPs.
    SpoofedSource,
    /// Unparseable IP packet or WireGuard message.
    InvalidPacket,
    /// WireGuard message for a receiver index or public key we do not know.
    UnknownPeer,
    /// Authentication failed: bad MAC, bad AEAD tag, failed handshake.
    AuthFailed,
    /// Replayed or too old counter.
    Replay,
    /// Handshake refused because the router is under load (cookie sent instead).
    UnderLoad,
    /// The peer has no known endpoint yet.
    NoEndpoint,
    /// The interface has no private key.
    NoKey,
    /// Data for a peer without a current session.
    NoSession,
    /// The kernel refused to send or write.
    IoError,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::NoRoute,
        DropReason::SpoofedSource,
        DropReason::InvalidPacket,
        DropReason::UnknownPeer,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::UnderLoad,
        DropReason::NoEndpoint,
        DropReason::NoKey,
        DropReason::NoSession,
        DropReason::IoError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no_route",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::InvalidPacket => "invalid_packet",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::UnderLoad => "under_load",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::NoKey => "no_key",
            DropReason::NoSession => "no_session",
            DropReason::IoError => "io_error",
        }
    }
}

#[derive(Default, Debug)]
#[repr(align(64))]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Stats {
    /// Packets read from TUN and sent encrypted.
    pub tun_to_udp: Counter,
    /// Datagrams decrypted and written to TUN.
    pub udp_to_tun: Counter,
    /// Handshakes completed (as initiator or responder).
    pub handshakes: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl Stats {
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }
}
