//! The service loop: sleeps until the earliest deadline (read from the indexes through
//! `crate::deadlines`), a wake-up on change ([`Service::wake`]) or the next (rare) full compare
//! with the routers, then does what is due: takes lapsed peers off their routers, releases and
//! drops what ended, checks the invoices whose check is due, compares the routers marked
//! dirty. Beside it, a watcher marks a router whose socket appears anew.

use super::leases;
use crate::deadlines::{next_deadlines, ORPHAN_HOLD_SECS};
use crate::feed::socket_id;
use crate::service::{Service, ServiceError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When the loop must next run, as a wait from now; `None` when nothing is queued.
fn next_wake(s: &Service) -> Result<Option<Duration>, ServiceError> {
    let now = s.clock().now();
    let n = next_deadlines(&*s.peek()?, now, s.checked_routers().as_deref())?;
    let reservation_secs = s.terms().reservation_secs;
    let at_ms = [
        n.lapse.map(|t| t * 1000),
        n.oldest_paid_until
            .map(|t| (t + reservation_secs).max(now + 1) * 1000),
        n.young_hold.map(|t| (t + ORPHAN_HOLD_SECS + 1) * 1000),
        n.invoice_check_ms,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(at_ms.map(|ms| s.clock().until_ms(ms)))
}

/// The service loop: deadlines, invoice checks, full compares. Runs until the process ends;
/// the start (crash recovery, first full compare) is done by the caller.
pub async fn run(s: Arc<Service>, replica: String) {
    tokio::spawn(watch_sockets(s.clone()));
    // Busy since (ms after `started`; 0: asleep), for the lease keeper.
    let busy = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    if s.cfg().is_postgres() {
        tokio::spawn(keep_leases(s.clone(), replica, busy.clone(), started));
    }
    let retry = Duration::from_millis(s.cfg().invoice_poll_millis.max(50));
    let full_every = Duration::from_secs(s.cfg().reconcile_interval_secs.max(1));
    let mut last_full = Instant::now();
    let mut cursor = s.compared_at().unwrap_or_else(|| s.clock().now());
    loop {
        busy.store(
            started.elapsed().as_millis().max(1) as u64,
            Ordering::Relaxed,
        );
        let now = s.clock().now();
        match s.take_due(Some(cursor), now) {
            Ok(removals) => {
                cursor = cursor.max(now);
                s.remove_peers(removals).await;
            }
            Err(e) => tracing::warn!("deadlines: {e}"),
        }
        if let Err(e) = s.check_due_invoices().await {
            tracing::warn!("{e}");
        }
        let dirty = s.take_dirty();
        if !dirty.is_empty() || last_full.elapsed() >= full_every {
            let all = last_full.elapsed() >= full_every;
            if all {
                last_full = Instant::now();
            }
            if let Err(e) = s
                .reconcile_only(if all { None } else { Some(&dirty) })
                .await
            {
                tracing::warn!("{e}");
            }
        }
        let mut wait = full_every.saturating_sub(last_full.elapsed());
        if s.has_dirty() {
            wait = wait.min(retry);
        }
        match next_wake(&s) {
            Ok(Some(w)) => wait = wait.min(w),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("deadlines: {e}");
                wait = wait.min(retry);
            }
        }
        if wait > Duration::ZERO {
            busy.store(0, Ordering::Relaxed);
            s.sleep_unless_woken(wait).await;
        }
    }
}

/// How long the loop may be busy in one round (a full compare of a million rentals takes
/// seconds) before its replica stops renewing its leases, so that a replica whose loop hangs
/// hands its routers on.
const LOOP_STALL: Duration = Duration::from_secs(120);

/// With PostgreSQL: renews the router leases three times per lifetime, beside the loop (a
/// full compare longer than a lease's lifetime otherwise let it run out, the other replica
/// took the router and compared it in turn, and so on, each compare holding up its
/// replica's placements); a router newly held is marked for a full compare at once.
async fn keep_leases(s: Arc<Service>, replica: String, busy: Arc<AtomicU64>, started: Instant) {
    let every = Duration::from_millis(crate::lease::TTL_MS as u64 / 3);
    let mut warned = false;
    loop {
        tokio::time::sleep(every).await;
        let since = busy.load(Ordering::Relaxed);
        let stalled = since > 0
            && started.elapsed().as_millis() as u64 > since + LOOP_STALL.as_millis() as u64;
        if stalled {
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(
                    "the service loop has been busy for over {} s: router leases left to run out",
                    LOOP_STALL.as_secs()
                );
            }
            continue;
        }
        warned = false;
        if leases::refresh(&s, &replica) {
            for r in s.routers().iter().filter(|r| s.owns(&r.name)) {
                s.mark_dirty(&r.name);
            }
            s.wake();
        }
    }
}

/// Marks a router whose socket appears anew (a restarted router) for a full compare at
/// once. Watching is a `stat` per router and tick: nothing scales with rentals. A socket
/// is new when it differs from the one last seen or compared against, so a router that
/// restarts between the start's full compare and this watcher's first look is caught.
async fn watch_sockets(s: Arc<Service>) {
    let tick = Duration::from_millis(s.cfg().invoice_poll_millis.clamp(20, 200));
    loop {
        for link in s.routers() {
            let Some(now) = socket_id(&link.socket) else {
                continue;
            };
            if s.note_socket(&link.name, now) {
                s.mark_dirty(&link.name);
            }
        }
        tokio::time::sleep(tick).await;
    }
}
