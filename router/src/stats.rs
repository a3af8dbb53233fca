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
    /// Over the rental's bandwidth or packet-rate cap.
    RateLimited,
    /// Outbound SMTP from a rental that blocks it.
    SmtpBlocked,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
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
        DropReason::RateLimited,
        DropReason::SmtpBlocked,
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
            DropReason::RateLimited => "rate_limited",
            DropReason::SmtpBlocked => "smtp_blocked",
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

/// One I/O worker's figures, published once per batch (never per packet).
#[derive(Default, Debug)]
pub struct IoStats {
    /// The thread's name, e.g. `uring-0`.
    pub worker: String,
    /// Wake-ups that handled at least one completion or receive.
    pub wakeups: Counter,
    /// TUN reads (frames: with TSO, super-packets) and the packets they held.
    pub tun_frames_read: Counter,
    pub tun_packets_read: Counter,
    /// UDP receives (with GRO, trains of datagrams) and the datagrams they held.
    pub udp_receives: Counter,
    pub udp_datagrams_received: Counter,
    /// UDP sends (with GSO, runs of datagrams) and the datagrams they held.
    pub udp_sends: Counter,
    pub udp_datagrams_sent: Counter,
    /// TUN writes (with GRO, coalesced super-packets) and the packets they held.
    pub tun_frames_written: Counter,
    pub tun_packets_written: Counter,
}

/// A worker's running totals, kept in plain integers and added to its [`IoStats`] per batch.
#[derive(Default, Debug, Clone, Copy)]
pub struct IoTally {
    pub wakeups: u64,
    pub tun_frames_read: u64,
    pub tun_packets_read: u64,
    pub udp_receives: u64,
    pub udp_datagrams_received: u64,
    pub udp_sends: u64,
    pub udp_datagrams_sent: u64,
    pub tun_frames_written: u64,
    pub tun_packets_written: u64,
}

impl IoTally {
    pub fn publish(&mut self, to: &IoStats) {
        let t = std::mem::take(self);
        for (c, n) in [
            (&to.wakeups, t.wakeups),
            (&to.tun_frames_read, t.tun_frames_read),
            (&to.tun_packets_read, t.tun_packets_read),
            (&to.udp_receives, t.udp_receives),
            (&to.udp_datagrams_received, t.udp_datagrams_received),
            (&to.udp_sends, t.udp_sends),
            (&to.udp_datagrams_sent, t.udp_datagrams_sent),
            (&to.tun_frames_written, t.tun_frames_written),
            (&to.tun_packets_written, t.tun_packets_written),
        ] {
            if n > 0 {
                c.add(n);
            }
        }
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
    /// Handshake initiations received with a valid MAC1 (before the load check).
    pub handshake_initiations: Counter,
    /// Cookie replies sent instead of a handshake response (under load).
    pub cookie_replies: Counter,
    drops: [Counter; DropReason::ALL.len()],
    /// Per-worker I/O figures, registered by the workers as they start.
    io: parking_lot::Mutex<Vec<std::sync::Arc<IoStats>>>,
}

impl Stats {
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }

    /// Registers an I/O worker's figures under its thread name.
    pub fn io_worker(&self, worker: &str) -> std::sync::Arc<IoStats> {
        let s = std::sync::Arc::new(IoStats {
            worker: worker.to_string(),
            ..IoStats::default()
        });
        self.io.lock().push(s.clone());
        s
    }

    pub fn io_workers(&self) -> Vec<std::sync::Arc<IoStats>> {
        self.io.lock().clone()
    }
}
