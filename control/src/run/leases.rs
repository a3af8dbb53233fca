//! This replica's router leases (PostgreSQL): taken and renewed by the loop, given up at a
//! clean shutdown. On SQLite (one control) every router is its own.

use crate::lease::{acquire, now_ms, release, router_lease, TTL_MS};
use crate::service::Service;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the service loop may be busy in one round (a full compare of a million rentals
/// takes seconds) before its replica stops renewing its leases, so that a replica whose loop
/// hangs hands its routers on.
const LOOP_STALL: Duration = Duration::from_secs(120);

/// Whether the service loop is busy, and since when (the lease keeper's view of it).
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    /// Milliseconds after `started` the current round began; 0 while the loop sleeps.
    busy_since: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            started: Instant::now(),
            busy_since: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    fn now_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    /// A round of work begins.
    pub fn busy(&self) {
        self.busy_since.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The loop goes to sleep.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    fn stalled(&self) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        since > 0 && self.now_ms() > since + LOOP_STALL.as_millis() as u64
    }
}

/// With PostgreSQL: renews the router leases three times per lifetime, beside the service
/// loop (a full compare longer than a lease's lifetime let it run out, the other replica took
/// the router and compared it in turn, and so on, each compare holding up its replica's
/// work); a router newly held is marked for a full compare at once. Stops renewing while the
/// loop is stalled ([`LOOP_STALL`]).
pub async fn keep(s: Arc<Service>, replica: String, beat: Arc<Heartbeat>) {
    if !s.cfg().is_postgres() {
        return;
    }
    let every = Duration::from_millis(TTL_MS as u64 / 3);
    let mut warned = false;
    loop {
        tokio::time::sleep(every).await;
        if beat.stalled() {
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(
                    "the service loop has been busy for over {} s: router leases left to run out",
                    LOOP_STALL.as_secs()
                );
            }
            continue;
        }
        warned = false;
        if refresh(&s, &replica) {
            for r in s.routers().iter().filter(|r| s.owns(&r.name)) {
                s.mark_dirty(&r.name);
            }
            s.wake();
        }
    }
}

/// Takes or renews this replica's leases of the routers whose sockets it sees (a lease it
/// cannot renew runs out and goes to a replica that sees it) and records which routers it now
/// runs;
/// returns whether that set changed. On SQLite (one control) every router is its own.
pub fn refresh(s: &Service, replica: &str) -> bool {
    if !s.cfg().is_postgres() {
        return false;
    }
    let now = now_ms();
    let mut held = std::collections::HashSet::new();
    if let Ok(db) = s.plain() {
        // Only routers this host can reach: a replica on each router host runs its own.
        for r in s.routers().iter().filter(|r| r.socket.exists()) {
            match acquire(&db, &router_lease(&r.name), replica, now, TTL_MS) {
                Ok(true) => {
                    held.insert(r.name.clone());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(router = %r.name, "lease: {e}"),
            }
        }
    }
    let shown = format!("{held:?}");
    let changed = s.set_owned(held);
    if changed {
        tracing::info!(replica, routers = %shown, "router leases held");
    }
    changed
}

/// Gives up this replica's leases (clean shutdown).
pub fn release_all(s: &Service, replica: &str) {
    if !s.cfg().is_postgres() {
        return;
    }
    if let Ok(db) = s.plain() {
        for r in s.routers() {
            let _ = release(&db, &router_lease(&r.name), replica);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keeper renews while the loop sleeps or works a round shorter than the stall
    /// bound, and not once a round has lasted longer.
    #[test]
    fn a_stalled_loop_is_told_from_a_busy_one() {
        let Some(started) = Instant::now().checked_sub(LOOP_STALL * 2) else {
            return; // a machine up for less than that: no clock to go back on
        };
        let beat = Heartbeat {
            started,
            busy_since: AtomicU64::new(0),
        };
        assert!(!beat.stalled(), "asleep");
        beat.busy();
        assert!(!beat.stalled(), "a round just begun");
        beat.busy_since.store(1, Ordering::Relaxed);
        assert!(beat.stalled(), "a round begun twice the bound ago");
        beat.idle();
        assert!(!beat.stalled(), "asleep again");
    }
}
