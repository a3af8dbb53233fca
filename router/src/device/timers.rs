//! The timers: WireGuard's own (rekey, keepalive, expiry) for the peers with session state,
//! dropping the state of those idle too long, and the one-second windows of the handshake rate
//! limiters. The I/O layer calls them every 250 ms and every second, with its clock's `now`.

use super::state::{remember_timestamp, Device, Io};
use boringtun::noise::TunnResult;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// WireGuard's RejectAfterTime: 180 s after its handshake a session can carry nothing, so state
/// idle that long is dropped (peers with a persistent keepalive keep theirs).
pub const IDLE_AFTER: Duration = Duration::from_secs(180);

/// WireGuard's RekeyAttemptTime: a handshake we started is retried this long, then given up.
const UNANSWERED_AFTER: Duration = Duration::from_secs(90);

impl Device {
    /// Drives WireGuard's timers (rekey, keepalive, expiry) of the active peers and drops the
    /// state of those idle past [`IDLE_AFTER`] at `now`; call every 100–250 ms.
    pub fn tick(&self, now: Instant, buf: &mut [u8], io: &mut impl Io) {
        let identity = self.identity.load_full();
        let mut list = std::mem::take(&mut *self.timed.lock());
        // A removed peer's id can come back for a new peer: never walk one twice.
        list.sort_unstable();
        list.dedup();
        list.retain(|&id| {
            let Some(peer) = self.peers.get(id) else {
                return false;
            };
            let peer = &*peer;
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

    /// Starts a new one-second window of the handshake rate limiter at `now`.
    pub fn reset_rate_limiter(&self, now: Instant) {
        if let Some(identity) = self.identity.load().as_ref() {
            identity.rate_limiter.reset_count();
        }
        self.window_initiations.store(0, Relaxed);
        self.sources.prune(now);
    }
}
