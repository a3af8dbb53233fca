//! The service loop: sleeps until the earliest deadline (read from the indexes through
//! `crate::deadlines`), a wake-up on change ([`Service::wake`]) or the next (rare) full compare
//! with the routers, then does what is due: takes lapsed peers off their routers, releases and
//! drops what ended, checks the invoices whose check is due, compares the routers marked
//! dirty. Beside it, a watcher marks a router whose socket appears anew.

use super::leases::Heartbeat;
use crate::deadlines::{next_deadlines, ORPHAN_HOLD_SECS};
use crate::feed::socket_id;
use crate::service::{Service, ServiceError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two rounds of the loop when a change wakes it (its deadlines wake
/// it on time).
const WOKEN_GAP: Duration = Duration::from_millis(100);

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

/// The service loop: deadlines, invoice checks, full compares. Runs until [`Service::stop`];
/// the start (crash recovery, first full compare) is done by the caller.
pub async fn run(s: Arc<Service>, beat: Arc<Heartbeat>) {
    tokio::spawn(watch_sockets(s.clone()));
    let retry = Duration::from_millis(s.cfg().invoice_poll_millis.max(50));
    let full_every = Duration::from_secs(s.cfg().reconcile_interval_secs.max(1));
    let mut last_full = Instant::now();
    let mut cursor = s.compared_at().unwrap_or_else(|| s.clock().now());
    while !s.is_stopping() {
        let round_start = tokio::time::Instant::now();
        beat.busy();
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
            beat.idle();
            let deadline = tokio::time::Instant::now() + wait;
            if s.sleep_unless_woken(wait).await && !s.is_stopping() {
                // Woken by a change: a burst of them (a rent each) is taken together, one
                // round per WOKEN_GAP at most, never past the deadline it slept for.
                tokio::time::sleep_until((round_start + WOKEN_GAP).min(deadline)).await;
            }
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
