//! The deadline queue. Everything the control must do at a time — take a peer whose paid time
//! ran out off its router, release a rental at the end of its reservation, drop a hold a crash
//! left without an invoice, ask the Lightning node about an open invoice — is found through an
//! index on that time (migration 4), so the work of one round is proportional to what is due,
//! never to the number of rentals. The service loop sleeps until the earliest deadline, a
//! wake-up on change ([`Service::wake`]) or the next (rare) full compare with the routers.

use crate::feed::{decode_key, Desired};
use crate::service::{Service, ServiceError};
use crate::sql::{params, Connection};
use crate::store::{self, InvoiceRow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an address may be held by a rental that has no invoice at all.
pub const ORPHAN_HOLD_SECS: i64 = 120;

/// Open invoices asked about per round; the rest wait for the next round (at once).
const INVOICE_BATCH: usize = 512;

/// The longest wait between two checks of one open invoice with the node.
const MAX_CHECK_INTERVAL_MS: i64 = 30_000;

/// Records which client asked for a hold (for the per-client cap of unpaid holds).
pub fn set_client(db: &Connection, rental_id: i64, client: &str) -> crate::sql::Result<()> {
    db.prepare_cached("UPDATE rentals SET client = ?1 WHERE id = ?2")?
        .execute(params![client, rental_id])?;
    Ok(())
}

pub(crate) const UNPAID_OF_SQL: &str = "SELECT COUNT(*) FROM rentals
     WHERE client = ?1 AND started_at IS NULL AND released_at IS NULL";

/// Live unpaid holds `client` asked for.
pub fn unpaid_holds_of(db: &Connection, client: &str) -> crate::sql::Result<u64> {
    db.query_row(UNPAID_OF_SQL, [client], |r| r.get(0))
}

/// A started rental whose paid time ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapsed {
    pub id: i64,
    pub public_key: String,
    pub router: String,
    pub suspended: bool,
}

pub(crate) const LAPSED_SQL: &str = "SELECT id, public_key, router, suspended FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL
       AND started_at + credited_secs > ?1 AND started_at + credited_secs <= ?2";

/// Live started rentals whose paid-until lies in `(after, upto]`.
pub fn lapsed_between(db: &Connection, after: i64, upto: i64) -> crate::sql::Result<Vec<Lapsed>> {
    let mut stmt = db.prepare_cached(LAPSED_SQL)?;
    stmt.query_map(params![after, upto], |r| {
        Ok(Lapsed {
            id: r.get(0)?,
            public_key: r.get(1)?,
            router: r.get(2)?,
            suspended: r.get::<_, i64>(3)? != 0,
        })
    })?
    .collect()
}

pub(crate) const RESERVATION_ENDED_SQL: &str =
    "SELECT id, started_at + credited_secs, router FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL
       AND started_at + credited_secs <= ?1";

/// Live rentals paid until `paid_until_upto` or earlier: (id, paid-until, router).
pub fn paid_until_by(
    db: &Connection,
    paid_until_upto: i64,
) -> crate::sql::Result<Vec<(i64, i64, String)>> {
    let mut stmt = db.prepare_cached(RESERVATION_ENDED_SQL)?;
    stmt.query_map([paid_until_upto], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

pub(crate) const ORPHANS_SQL: &str = "SELECT r.id, r.router FROM rentals r
     WHERE r.started_at IS NULL AND r.released_at IS NULL
       AND r.created_at > ?1 AND r.created_at <= ?2
       AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.rental_id = r.id)";

/// Unpaid holds created in `(after, upto]` that have no invoice: (id, router).
pub fn orphan_holds(
    db: &Connection,
    after: i64,
    upto: i64,
) -> crate::sql::Result<Vec<(i64, String)>> {
    let mut stmt = db.prepare_cached(ORPHANS_SQL)?;
    stmt.query_map(params![after, upto], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub(crate) const DUE_INVOICES_SQL: &str = "SELECT {COLS} FROM invoices
     WHERE state = 'open' AND next_check_ms <= ?1 ORDER BY next_check_ms LIMIT ?2";

/// Open invoices whose next check is due at `now_ms`, earliest first.
pub fn due_invoices(
    db: &Connection,
    now_ms: i64,
    limit: usize,
) -> crate::sql::Result<Vec<InvoiceRow>> {
    let sql = DUE_INVOICES_SQL.replace("{COLS}", store::INVOICE_COLS);
    let mut stmt = db.prepare_cached(&sql)?;
    stmt.query_map(params![now_ms, limit as i64], store::invoice)?
        .collect()
}

pub fn set_next_check(db: &Connection, hash: &str, at_ms: i64) -> crate::sql::Result<()> {
    db.prepare_cached("UPDATE invoices SET next_check_ms = ?1 WHERE payment_hash = ?2")?
        .execute(params![at_ms, hash])?;
    Ok(())
}

/// The earliest deadlines, each read from the front of its index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// The next paid-until after `now` (a peer leaves its router then).
    pub lapse: Option<i64>,
    /// The earliest paid-until of all live rentals (its reservation ends a reservation later).
    pub oldest_paid_until: Option<i64>,
    /// The earliest creation time of an unpaid hold younger than the orphan limit (it becomes
    /// an orphan `ORPHAN_HOLD_SECS` later, if still without an invoice).
    pub young_hold: Option<i64>,
    /// The earliest next check of an open invoice, milliseconds.
    pub invoice_check_ms: Option<i64>,
}

pub(crate) const NEXT_LAPSE_SQL: &str = "SELECT MIN(started_at + credited_secs) FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL AND started_at + credited_secs > ?1";
pub(crate) const OLDEST_PAID_UNTIL_SQL: &str = "SELECT MIN(started_at + credited_secs) FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL";
pub(crate) const YOUNG_HOLD_SQL: &str = "SELECT MIN(created_at) FROM rentals
     WHERE started_at IS NULL AND released_at IS NULL AND created_at > ?1";
pub(crate) const NEXT_CHECK_SQL: &str =
    "SELECT MIN(next_check_ms) FROM invoices WHERE state = 'open'";

pub fn next_deadlines(db: &Connection, now: i64) -> crate::sql::Result<Next> {
    let one = |sql: &str, p: Vec<i64>| -> crate::sql::Result<Option<i64>> {
        let values = p
            .iter()
            .map(crate::sql::ToSql::to_value)
            .collect::<Vec<_>>();
        db.query_row(sql, values, |r| r.get::<_, Option<i64>>(0))
    };
    Ok(Next {
        lapse: one(NEXT_LAPSE_SQL, vec![now])?,
        oldest_paid_until: one(OLDEST_PAID_UNTIL_SQL, vec![])?,
        young_hold: one(YOUNG_HOLD_SQL, vec![now - ORPHAN_HOLD_SECS])?,
        invoice_check_ms: one(NEXT_CHECK_SQL, vec![])?,
    })
}

pub(crate) const ACTIVE_SQL: &str = "SELECT {COLS} FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL
       AND started_at + credited_secs > ?1 AND suspended = 0";

/// Calls `f(router, key, networks)` for every active rental (started, paid-until after `now`,
/// not suspended), read from the paid-until index, row by row where the database allows.
pub fn for_each_active(
    db: &Connection,
    now: i64,
    mut f: impl FnMut(&str, [u8; 32], Vec<ipnet::IpNet>),
) -> crate::sql::Result<()> {
    let sql = ACTIVE_SQL.replace("{COLS}", store::RENTAL_COLS);
    db.query_each(&sql, [now], |row| {
        let r = store::rental(row)?;
        if let (Some(key), Some(nets)) = (decode_key(&r.public_key), r.networks()) {
            f(&r.router, key, nets);
        }
        Ok(())
    })
}

/// How long to wait before asking the node about an open invoice again: often while it is
/// young (a customer is paying it now), then less and less, never past its expiry.
pub fn next_check_ms(inv: &InvoiceRow, now_ms: i64, poll_ms: i64) -> i64 {
    let age = (now_ms - inv.created_at * 1000).max(0);
    let interval = (age / 20).clamp(poll_ms, MAX_CHECK_INTERVAL_MS.max(poll_ms));
    let mut at = now_ms + interval;
    // Checked at its expiry, and once more when the node's grace after it is over.
    for edge in [inv.expires_at * 1000, (inv.expires_at + 600) * 1000 + 1] {
        if now_ms < edge {
            at = at.min(edge);
        }
    }
    at
}

/// Peers to take off each router.
pub type Removals = HashMap<String, Vec<[u8; 32]>>;

impl Service {
    /// Works through the deadlines due at `now`: releases rentals whose reservation ended,
    /// drops holds left without an invoice, and returns the peers whose paid-until lies in
    /// `(after, now]` (to be taken off their routers). With `after = None` (the start, or a
    /// full compare) every due release and orphan is handled and no peer is returned.
    pub fn take_due(&self, after: Option<i64>, now: i64) -> Result<Removals, ServiceError> {
        let mut db = self.db()?;
        let tx = db.transaction()?;
        let mut out = Removals::new();
        if let Some(after) = after {
            for l in lapsed_between(&tx, after, now)? {
                if !self.owns(&l.router) {
                    // Another replica holds this router's lease: its expiries are its own.
                    continue;
                }
                if let Some(key) = decode_key(&l.public_key).filter(|_| !l.suspended) {
                    out.entry(l.router).or_default().push(key);
                }
            }
        }
        for (id, paid_until, router) in paid_until_by(&tx, now - self.terms.reservation_secs)? {
            if !self.owns(&router) {
                continue;
            }
            let end = paid_until + self.terms.reservation_secs;
            store::release(
                &tx,
                id,
                end,
                "reservation_ended",
                end + self.terms.cooldown_secs,
            )?;
        }
        let after_hold = after.map_or(i64::MIN, |a| a - ORPHAN_HOLD_SECS);
        // A hold whose invoice never came (a crash between the two steps of `rent`).
        for (id, router) in orphan_holds(&tx, after_hold, now - ORPHAN_HOLD_SECS)? {
            if !self.owns(&router) {
                continue;
            }
            store::drop_hold(&tx, id, now, "no_invoice")?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The peers each router should hold now (the released and orphaned are dealt with
    /// first). Used by the full compare and by tests.
    #[cfg(test)]
    pub fn sweep(&self) -> Result<HashMap<String, Desired>, ServiceError> {
        self.sweep_at(self.clock.now())
    }

    pub(crate) fn sweep_at(&self, now: i64) -> Result<HashMap<String, Desired>, ServiceError> {
        self.take_due(None, now)?;
        let mut desired: HashMap<String, Desired> = self
            .routers
            .iter()
            .map(|r| (r.name.clone(), Desired::new()))
            .collect();
        let db = self.db()?;
        for_each_active(&db, now, |router, key, nets| {
            if let Some(d) = desired.get_mut(router) {
                d.insert(key, nets);
            }
        })?;
        Ok(desired)
    }

    /// Asks the node about the open invoices whose check is due, and schedules each one's
    /// next check.
    pub async fn check_due_invoices(&self) -> Result<(), ServiceError> {
        let poll_ms = self.cfg.invoice_poll_millis.max(50) as i64;
        let now_ms = self.clock.now_ms();
        // One batch per round: the loop comes back at once if more are due, and expiries
        // (checked first in each round) are not starved by a flood of new invoices.
        let due = due_invoices(&*self.db()?, now_ms, INVOICE_BATCH)?;
        let mut next = Vec::with_capacity(due.len());
        for inv in due {
            self.check_invoice(&inv).await?;
            next.push((
                inv.payment_hash.clone(),
                next_check_ms(&inv, now_ms, poll_ms),
            ));
        }
        // The batch's next checks in one commit (one fsync), not one each.
        let db = self.db()?;
        let tx = db.unchecked_transaction()?;
        for (hash, at) in next {
            set_next_check(&tx, &hash, at)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// When the loop must next run, as a wait from now; `None` when nothing is queued.
    fn next_wake(&self) -> Result<Option<Duration>, ServiceError> {
        let now = self.clock.now();
        let n = next_deadlines(&*self.db()?, now)?;
        let at_ms = [
            n.lapse.map(|t| t * 1000),
            n.oldest_paid_until
                .map(|t| (t + self.terms.reservation_secs).max(now + 1) * 1000),
            n.young_hold.map(|t| (t + ORPHAN_HOLD_SECS + 1) * 1000),
            n.invoice_check_ms,
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(at_ms.map(|ms| self.clock.until_ms(ms)))
    }

    /// Takes peers whose time ran out off their routers. A router that cannot be told is
    /// marked for a full compare (retried until it answers).
    async fn remove_peers(&self, removals: Removals) {
        for (router, keys) in removals {
            let Some(link) = self.routers.iter().find(|r| r.name == router) else {
                continue;
            };
            let _feed = self.feed_lock.lock().await;
            match link.remove(&keys).await {
                Ok(()) => {
                    tracing::info!(router = %router, peers = keys.len(), "paid time ran out: peers removed");
                    crate::metrics::reconciled(&router, Ok((0, keys.len(), false)));
                }
                Err(e) => {
                    tracing::debug!("removal deferred to the full compare: {e}");
                    self.mark_dirty(&router);
                }
            }
        }
    }

    /// The service loop: deadlines, invoice checks, full compares. Runs until the process
    /// ends; the start (crash recovery, first full compare) is done by the caller.
    pub async fn run(self: Arc<Self>, replica: String) {
        tokio::spawn(self.clone().watch_sockets());
        let lease_every = Duration::from_millis(crate::lease::TTL_MS as u64 / 3);
        let mut last_lease = Instant::now();
        let retry = Duration::from_millis(self.cfg.invoice_poll_millis.max(50));
        let full_every = Duration::from_secs(self.cfg.reconcile_interval_secs.max(1));
        let mut last_full = Instant::now();
        let mut cursor = match self.compared_at.load(std::sync::atomic::Ordering::SeqCst) {
            i64::MIN => self.clock.now(),
            t => t,
        };
        loop {
            // With PostgreSQL, leases are renewed three times per lifetime; a router newly
            // held is compared at once.
            if self.cfg.is_postgres() && last_lease.elapsed() >= lease_every {
                last_lease = Instant::now();
                if crate::lease::refresh(&self, &replica) {
                    for r in self.routers.iter().filter(|r| self.owns(&r.name)) {
                        self.mark_dirty(&r.name);
                    }
                }
            }
            let now = self.clock.now();
            match self.take_due(Some(cursor), now) {
                Ok(removals) => {
                    cursor = cursor.max(now);
                    self.remove_peers(removals).await;
                }
                Err(e) => tracing::warn!("deadlines: {e}"),
            }
            if let Err(e) = self.check_due_invoices().await {
                tracing::warn!("{e}");
            }
            let dirty = self.take_dirty();
            if !dirty.is_empty() || last_full.elapsed() >= full_every {
                let all = last_full.elapsed() >= full_every;
                if all {
                    last_full = Instant::now();
                }
                if let Err(e) = self
                    .reconcile_only(if all { None } else { Some(&dirty) })
                    .await
                {
                    tracing::warn!("{e}");
                }
            }
            let mut wait = full_every.saturating_sub(last_full.elapsed());
            if self.has_dirty() {
                wait = wait.min(retry);
            }
            if self.cfg.is_postgres() {
                wait = wait.min(lease_every.saturating_sub(last_lease.elapsed()));
            }
            match self.next_wake() {
                Ok(Some(w)) => wait = wait.min(w),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("deadlines: {e}");
                    wait = wait.min(retry);
                }
            }
            if wait > Duration::ZERO {
                let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            }
        }
    }

    /// Marks a router whose socket appears anew (a restarted router) for a full compare at
    /// once. Watching is a `stat` per router and tick: nothing scales with rentals. A socket
    /// is new when it differs from the one last seen or compared against, so a router that
    /// restarts between the start's full compare and this watcher's first look is caught.
    async fn watch_sockets(self: Arc<Self>) {
        let tick = Duration::from_millis(self.cfg.invoice_poll_millis.clamp(20, 200));
        loop {
            for link in &self.routers {
                let Some(now) = socket_id(&link.socket) else {
                    continue;
                };
                let seen = self
                    .sockets
                    .lock()
                    .map(|mut ids| ids.insert(link.name.clone(), now))
                    .ok()
                    .flatten();
                if seen != Some(now) {
                    self.mark_dirty(&link.name);
                }
            }
            tokio::time::sleep(tick).await;
        }
    }
}

/// A socket file's identity: inode and change time (tmpfs reuses inode numbers).
pub type SocketId = (u64, i64, i64);

pub fn socket_id(path: &std::path::Path) -> Option<SocketId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}
