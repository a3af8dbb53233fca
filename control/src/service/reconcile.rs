//! What the routers should hold, and telling them: the deadlines due now (lapsed peers,
//! ended reservations, orphaned holds), the full compare with a router, one admission or
//! removal at a time under the feed lock.

use super::{parse_public_key, Service, ServiceError};
use crate::deadlines::{
    for_each_active, lapsed_between, orphan_holds, paid_until_by, ORPHAN_HOLD_SECS,
};
use crate::feed::{decode_key, socket_id, Desired, Endpoints};
use crate::metrics::events::{self, ReconcileFailed, Reconciled};
use crate::sql::Connection;
use crate::store;
use staticwire_api::RentalState;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Peers to take off each router.
pub type Removals = HashMap<String, Vec<[u8; 32]>>;

/// Whether the router may still hold the peer an admission is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readmit {
    /// It may (a renewal before the lapse, an operator's resume): send no endpoint.
    Held,
    /// Its paid time ran out and its router removed it: send the endpoint last learned.
    AfterLapse,
}

impl Service {
    /// Works through the deadlines due at `now`: releases rentals whose reservation ended,
    /// drops holds left without an invoice, and returns the peers whose paid-until lies in
    /// `(after, now]` (to be taken off their routers). With `after = None` (the start, or a
    /// full compare) every due release and orphan is handled and no peer is returned.
    pub fn take_due(&self, after: Option<i64>, now: i64) -> Result<Removals, ServiceError> {
        let mut db = self.db()?;
        let mut dropped = Vec::new();
        let out = self.take_due_in(&mut db, after, now, &mut dropped);
        if out.is_err() {
            // Rolled back: the holds it dropped are counted as the database has them again.
            for id in dropped {
                self.unpaid_reread(&db, id)?;
            }
        }
        out
    }

    fn take_due_in(
        &self,
        db: &mut Connection,
        after: Option<i64>,
        now: i64,
        dropped: &mut Vec<i64>,
    ) -> Result<Removals, ServiceError> {
        let tx = db.transaction()?;
        // It may drop unpaid holds: their changes are logged in order (`crate::unpaid`).
        tx.lock_for_transaction(crate::holds::ALLOCATION_LOCK)?;
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
            let row = store::rental_by_id(&tx, id)?;
            store::release(
                &tx,
                id,
                end,
                "reservation_ended",
                end + self.terms.cooldown_secs,
            )?;
            self.space_released(&tx, &row, end)?;
        }
        let after_hold = after.map_or(i64::MIN, |a| a - ORPHAN_HOLD_SECS);
        // A hold whose invoice never came (a crash between the two steps of `rent`).
        for (id, router) in orphan_holds(&tx, after_hold, now - ORPHAN_HOLD_SECS)? {
            if !self.owns(&router) {
                continue;
            }
            let row = store::rental_by_id(&tx, id)?;
            dropped.push(id);
            store::drop_hold(&tx, id, now, "no_invoice")?;
            self.space_released(&tx, &row, now)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The peers each router should hold now (the released and orphaned are dealt with
    /// first). Used by the full compare and by tests.
    #[cfg(test)]
    pub fn sweep(&self) -> Result<HashMap<String, Desired>, ServiceError> {
        self.sweep_at(self.clock.now(), None)
    }

    /// The peers each router this replica runs (of `only`, when given) should hold now.
    /// A replica that runs none of them reads nothing: the read is seconds at a million
    /// rentals, and the replica without the lease was making it for nothing whenever its
    /// socket watcher first saw the router's socket.
    pub(crate) fn sweep_at(
        &self,
        now: i64,
        only: Option<&HashSet<String>>,
    ) -> Result<HashMap<String, Desired>, ServiceError> {
        self.take_due(None, now)?;
        let compared: Vec<String> = self
            .routers
            .iter()
            .map(|r| r.name.clone())
            .filter(|n| self.owns(n) && only.is_none_or(|o| o.contains(n)))
            .collect();
        let mut desired: HashMap<String, Desired> = compared
            .iter()
            .map(|n| (n.clone(), Desired::new()))
            .collect();
        if compared.is_empty() {
            return Ok(desired);
        }
        // Every active rental of those routers: seconds at a million rentals, which no
        // placement, invoice or lookup waits for.
        let of = (compared.len() < self.routers.len()).then_some(&compared[..]);
        self.long_read(|db| {
            for_each_active(db, now, of, |router, key, nets| {
                if let Some(d) = desired.get_mut(router) {
                    d.insert(key, nets);
                }
            })
            .map_err(ServiceError::from)
        })?;
        Ok(desired)
    }

    /// Admits a rental's peer if it is active, deciding under the feed lock from the database
    /// as it is then. A router that cannot be told now is marked for a full compare.
    pub async fn admit_if_active(
        &self,
        id: i64,
        seen: Instant,
        readmit: Readmit,
    ) -> Result<(), ServiceError> {
        let _feed = self.feed_lock.lock().await;
        let now = self.clock.now();
        // Its own change (a settlement) is durable already: no need to commit the others'.
        let rental = store::rental_by_id(&*self.peek()?, id)?;
        if rental.account().state(&self.terms, now) != RentalState::Active {
            return Ok(());
        }
        // A renewal brings the customer's reverse DNS back (a lapse had the default).
        self.rdns_wake();
        let (Some(link), Some(key)) = (self.router(&rental.router), decode_key(&rental.public_key))
        else {
            return Ok(());
        };
        let Some(nets) = rental.networks() else {
            tracing::error!(address = %rental.address, "bad address in database");
            return Ok(());
        };
        // A router that may hold this peer already (a renewal before the lapse) gets no
        // endpoint: it may know a newer one than the last full compare learned, and sending
        // the learned one would move the customer's traffic back to a port it left (a reboot,
        // a roam) until its next keepalive. After a lapse the router removed the peer, and the
        // full compare finds it present again and adds nothing: without the learned endpoint
        // it could not send to the customer (inbound traffic to the rented address) until the
        // customer happened to start a handshake.
        let mut endpoint = Endpoints::new();
        if readmit == Readmit::AfterLapse {
            if let Some(e) = self
                .endpoints
                .lock()
                .ok()
                .and_then(|e| e.get(&key).cloned())
            {
                endpoint.insert(key, e);
            }
        }
        match link.admit(&key, &nets, &endpoint, &self.peer_extra).await {
            Ok(()) => {
                events::admitted(&link.name, seen);
                tracing::info!(address = %rental.address, "peer admitted")
            }
            Err(e) => {
                tracing::warn!("admission deferred to a full compare: {e}");
                self.mark_dirty(&link.name);
            }
        }
        Ok(())
    }

    /// Takes peers whose time ran out off their routers. A router that cannot be told is
    /// marked for a full compare (retried until it answers).
    pub async fn remove_peers(&self, removals: Removals) {
        if !removals.is_empty() {
            // Lapsed: the provider's default reverse DNS comes back.
            self.rdns_wake();
        }
        for (router, keys) in removals {
            let Some(link) = self.routers.iter().find(|r| r.name == router) else {
                continue;
            };
            let _feed = self.feed_lock.lock().await;
            match link.remove(&keys).await {
                Ok(()) => {
                    tracing::info!(router = %router, peers = keys.len(), "paid time ran out: peers removed");
                    events::reconciled(
                        &router,
                        Ok(Reconciled {
                            removed: keys.len(),
                            ..Reconciled::default()
                        }),
                    );
                }
                Err(e) => {
                    tracing::debug!("removal deferred to the full compare: {e}");
                    self.mark_dirty(&router);
                }
            }
        }
    }

    /// The full compare with every router this replica runs (at start, rarely, after a dev
    /// clock jump).
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        self.reconcile_only(None).await
    }

    /// The full compare with the routers named in `only` (all this replica runs when `None`).
    /// A router that is down is skipped and marked for another try; it never stops the control.
    pub async fn reconcile_only(&self, only: Option<&HashSet<String>>) -> Result<(), ServiceError> {
        let _feed = self.feed_lock.lock().await;
        let now = self.clock.now();
        // Seconds at a million rentals: the worker hands its other tasks on first, so a
        // request arriving meanwhile (the terms) is not held up behind the read.
        let mut desired = crate::writer::blocking(|| self.sweep_at(now, only))?;
        if only.is_none() {
            self.compared_at
                .store(now, std::sync::atomic::Ordering::SeqCst);
        }
        for link in self.routers.iter().filter(|l| self.owns(&l.name)) {
            if only.is_some_and(|o| !o.contains(&link.name)) {
                continue;
            }
            let want = desired.remove(&link.name).unwrap_or_default();
            if let (Some(id), Ok(mut ids)) = (socket_id(&link.socket), self.sockets.lock()) {
                ids.insert(link.name.clone(), id);
            }
            let mut known = self.known_endpoints();
            // The limits last sent to this router: `get` does not show them, so a change of the
            // terms' limits (a restart with new terms) is found here and sent to every peer.
            let limits_key = format!("peer_limits:{}", link.name);
            let sent =
                crate::db::meta_get(&*self.db()?, &limits_key).map_err(ServiceError::internal)?;
            let limits_changed = sent.as_deref().unwrap_or("") != self.peer_extra;
            let extra = if limits_changed {
                self.cfg.terms.peer_limit_lines_all()
            } else {
                self.peer_extra.clone()
            };
            let result = link
                .reconcile(want, &mut known, &extra, limits_changed)
                .await;
            if result.is_ok() && limits_changed {
                crate::db::meta_set(&*self.db()?, &limits_key, &self.peer_extra)
                    .map_err(ServiceError::internal)?;
            }
            if let Ok(mut e) = self.endpoints.lock() {
                *e = known;
            }
            events::reconciled(
                &link.name,
                result
                    .as_ref()
                    .map(|c| Reconciled {
                        admitted: c.admitted,
                        removed: c.removed,
                        interface: c.interface,
                    })
                    .map_err(|_| ReconcileFailed),
            );
            match result {
                Ok(c) if c != Default::default() => {
                    self.rdns_wake();
                    tracing::info!(router = %link.name, admitted = c.admitted, removed = c.removed, interface = c.interface, "router reconciled");
                    let db = self.db()?;
                    store::event(
                        &db,
                        self.clock.now(),
                        None,
                        "reconciled",
                        &serde_json::json!({
                            "router": link.name, "admitted": c.admitted, "removed": c.removed, "interface": c.interface
                        }),
                    )?;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("{e}");
                    self.mark_dirty(&link.name);
                }
            }
        }
        Ok(())
    }

    /// Tells a key's router what an operator command just changed (admit if active, else
    /// remove): one peer, not a full compare.
    pub async fn push_one(&self, key: &str) -> Result<(), ServiceError> {
        let key = parse_public_key(key)?;
        let r = store::latest_rental(&*self.db()?, &key)?.ok_or(ServiceError::NotFound)?;
        if r.account().state(&self.terms, self.clock.now()) == RentalState::Active {
            return self
                .admit_if_active(r.id, Instant::now(), Readmit::Held)
                .await;
        }
        let (Some(link), Some(k)) = (self.router(&r.router), decode_key(&r.public_key)) else {
            return Ok(());
        };
        let _feed = self.feed_lock.lock().await;
        link.remove(&[k]).await.map_err(ServiceError::internal)
    }
}
