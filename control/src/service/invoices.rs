//! Invoices: making them (checked against the published payee and network), settling them
//! once, following the node's settlement stream, checking open ones when due and expiring the
//! dead.

use super::reconcile::Readmit;
use super::{Service, ServiceError, RECHECK};
use crate::deadlines::{due_invoices, next_check_ms, set_next_checks};
use crate::ledger;
use crate::lightning::{LnError, Settlement, Status};
use crate::metrics::events;
use crate::sql::{Connection, OptionalExtension};
use crate::store::{self, Credit, InvoiceRow, RentalRow};
use staticwire_api as api;
use staticwire_api::{InvoicePurpose, InvoiceState, RentalState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open invoices asked about per round; the rest wait for the next round (at once).
const INVOICE_BATCH: usize = 512;

/// Streamed settlements credited together at most (a replay after an outage comes in bursts).
const STREAM_BURST: usize = 512;

/// The least wait between two checks of an open invoice while the settlement stream is up.
const CHECK_BESIDE_STREAM_MS: i64 = 10_000;

/// The API an invoice is sold through, for the metrics: credit top-ups are the credit
/// protocol's; otherwise whatever the request came through.
pub fn api_of(credit: Credit) -> &'static str {
    match credit {
        Credit::Seconds { .. } => "credit",
        Credit::Months(_) => events::request_api(),
    }
}

/// What an invoice of `quote` is for, in its description.
pub(super) fn quote_what(quote: &ledger::Quote, purpose: InvoicePurpose) -> String {
    match purpose {
        InvoicePurpose::Activation => "activation and first month".to_string(),
        InvoicePurpose::Renewal => format!("{} month(s)", quote.months),
    }
}

impl Service {
    /// The invoice of `quote` (activation and first month, or a renewal), made and recorded.
    pub(super) async fn invoice_for(
        &self,
        r: &RentalRow,
        quote: ledger::Quote,
        purpose: InvoicePurpose,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let what = quote_what(&quote, purpose);
        let new = self.make_invoice(r, quote.amount_sat, &what, now).await?;
        let credit = Credit::Months(quote.months);
        self.record(r, &new, quote.amount_sat, purpose, credit, now)
            .await
    }

    /// Creates an invoice of `amount_sat` that credits `credit` when paid.
    pub async fn invoice_with(
        &self,
        r: &RentalRow,
        amount_sat: u64,
        what: &str,
        purpose: InvoicePurpose,
        credit: Credit,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let new = self.make_invoice(r, amount_sat, what, now).await?;
        self.record(r, &new, amount_sat, purpose, credit, now).await
    }

    /// Asks the node for an invoice of `amount_sat` for `r`, checked payable to the published
    /// payee on this network. Nothing is recorded: an invoice made and never recorded is
    /// shown to nobody and expires unpaid at the node.
    pub(super) async fn make_invoice(
        &self,
        r: &RentalRow,
        amount_sat: u64,
        what: &str,
        now: i64,
    ) -> Result<crate::lightning::NewInvoice, ServiceError> {
        let expiry = Duration::from_secs(self.cfg.terms.invoice_expiry_secs);
        let new = self
            .ln
            .create_invoice(amount_sat * 1000, &self.description(r, what), expiry, now)
            .await?;
        // Parsed once: the payee and the network both come from it.
        let parsed = crate::lightning::invoice_payee_network(&new.bolt11);
        // A customer's client refuses an invoice of another payee than the terms name.
        if let Some(payee) = &self.payee {
            let got = parsed.as_ref().map(|(p, _)| p.as_str());
            if got != Some(payee.as_str()) {
                return Err(LnError::Protocol(format!(
                    "the node made an invoice payable to {}, but the published payee is {payee}",
                    got.unwrap_or("nobody")
                ))
                .into());
            }
        }
        // A customer's client refuses an invoice of another network; refuse it first.
        match parsed.as_ref().map(|(_, n)| *n) {
            Some(n) if n == self.network => Ok(new),
            other => Err(LnError::Protocol(format!(
                "the node made an invoice for {}, but the network is {}",
                other.unwrap_or("an unknown network"),
                self.network
            ))
            .into()),
        }
    }

    /// Stages the row of an invoice [`Service::make_invoice`] made; answers once its commit
    /// is on disk.
    pub(super) async fn record(
        &self,
        r: &RentalRow,
        new: &crate::lightning::NewInvoice,
        amount_sat: u64,
        purpose: InvoicePurpose,
        credit: Credit,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let (resp, ticket) =
            self.stage(|tx| self.invoice_in(tx, r, new, amount_sat, purpose, credit, now))?;
        self.durable(ticket).await?;
        self.wake();
        Ok(resp)
    }

    /// Records a new invoice of `r` (staged in the group commit).
    #[allow(clippy::too_many_arguments)]
    fn invoice_in(
        &self,
        tx: &crate::sql::Connection,
        r: &RentalRow,
        new: &crate::lightning::NewInvoice,
        amount_sat: u64,
        purpose: InvoicePurpose,
        credit: Credit,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        // The hold was staged in an earlier batch: gone if that batch's commit failed (and
        // its id perhaps another key's since). On PostgreSQL it is committed before its
        // invoice is staged (`Service::stage`).
        // (Released since, by a takeover, it is still there: its invoice stays payable.)
        if self.stages_share_a_batch() {
            let held = store::rental_by_id(tx, r.id).optional()?;
            if held.is_none_or(|h| h.public_key != r.public_key || h.created_at != r.created_at) {
                return Err(ServiceError::DatabaseUnavailable(
                    "the hold of this rental was not committed; retry".into(),
                ));
            }
        }
        // An activation invoice is made only for a hold just placed (`Service::rent_with`,
        // compat's rent; a hold asked for again answers its open invoice): its first.
        if purpose == InvoicePurpose::Activation {
            store::event_sent(
                tx,
                now,
                r.id,
                "rented",
                &serde_json::json!({"address": r.address}),
            )?;
        }
        let inv = store::insert_invoice(
            tx,
            &new.payment_hash,
            r.id,
            &new.bolt11,
            amount_sat * 1000,
            purpose,
            credit,
            now,
            new.expires_at,
            api_of(credit),
            self.clock.now_ms() + self.check_interval_ms(),
        )?;
        // The new invoice is the rental's latest open one.
        let invoice = inv.to_api();
        Ok(api::InvoiceResponse {
            rental: self.rental_view_with(r, now, Some(inv)),
            invoice,
        })
    }

    pub fn invoice(&self, hash: &str) -> Result<api::Invoice, ServiceError> {
        if !is_payment_hash(hash) {
            return Err(ServiceError::NoInvoice);
        }
        let db = self.read()?;
        let inv = store::invoice_by_hash(&db, hash)?.ok_or(ServiceError::NoInvoice)?;
        Ok(inv.to_api())
    }

    /// The public key (standard base64) of the rental an invoice belongs to: whose proof may
    /// read it (PROTOCOL.md [proof.invoice-owner]).
    pub fn invoice_owner(&self, hash: &str) -> Result<String, ServiceError> {
        if !is_payment_hash(hash) {
            return Err(ServiceError::NoInvoice);
        }
        let db = self.read()?;
        let inv = store::invoice_by_hash(&db, hash)?.ok_or(ServiceError::NoInvoice)?;
        Ok(store::rental_by_id(&db, inv.rental_id)?.public_key)
    }

    /// Answers once the invoice is no longer open, or after `wait`.
    pub async fn wait_invoice(
        &self,
        hash: &str,
        wait: Duration,
    ) -> Result<api::Invoice, ServiceError> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let inv = self.invoice(hash)?;
            if inv.state != InvoiceState::Open {
                return Ok(inv);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(inv);
            }
            // Another replica may settle it (PostgreSQL): look again at least every second
            // rather than only when this one sees a change.
            let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), rx.changed()).await;
        }
    }

    /// Credits a settled invoice once, then admits the peer if the rental is active.
    pub async fn settle(&self, hash: &str, settled_at: i64) -> Result<bool, ServiceError> {
        let seen = Instant::now();
        let now = self.clock.now();
        // Staged in the group commit: a burst of settlements shares its commits.
        let (credited, ticket) = self.stage_locking(|tx| {
            // The allocation lock before the invoice's (PostgreSQL): the order placements
            // take them in, as a settlement changes an unpaid hold (`crate::unpaid`).
            tx.lock_for_transaction(crate::holds::ALLOCATION_LOCK)?;
            // Another replica settling the same invoice waits here, then finds it paid.
            store::lock_invoice(tx, hash)?;
            if store::payment_exists(tx, hash)? {
                return Ok(None);
            }
            let inv: InvoiceRow =
                store::invoice_by_hash(tx, hash)?.ok_or(ServiceError::NoInvoice)?;
            let before = store::rental_by_id(tx, inv.rental_id)?;
            // Lapsed: its router removed the peer, so the admission is a new one.
            let lapsed = before.account().state(&self.terms, now) == RentalState::Lapsed;
            store::credit(tx, &inv, settled_at, self.terms.month_secs)?;
            // Paid: no longer an unpaid hold.
            self.unpaid_touched(tx, inv.rental_id)?;
            // Paid after its hold was taken over or replaced: a payment wins over every
            // unpaid hold, so it is placed again (`crate::holds`).
            if crate::holds::placed_again_when_paid(&before) {
                let mut space = self.space(tx, self.writer.failures())?;
                match crate::holds::place_paid(tx, &mut space, &self.cfg, &before, now)? {
                    Ok(p) => {
                        tracing::info!(rental = before.id, router = %p.router, "a paid hold that was taken over is placed again")
                    }
                    Err(why) => {
                        tracing::error!(
                            rental = before.id,
                            "a payment for a hold that was taken over found no room: {why:?}"
                        )
                    }
                }
                self.publish_free(&mut space, now);
            }
            let r = store::rental_by_id(tx, inv.rental_id)?;
            if r.released_at.is_some() {
                store::event(
                    tx,
                    now,
                    Some(r.id),
                    "payment_after_release",
                    &serde_json::json!({"payment_hash": hash}),
                )?;
            }
            Ok::<_, ServiceError>(Some((r, lapsed)))
        })?;
        self.durable(ticket).await?;
        let Some((rental, lapsed)) = credited else {
            return Ok(false);
        };
        tracing::info!(rental = rental.id, address = %rental.address, payment_hash = hash, "payment settled");
        let readmit = if lapsed {
            Readmit::AfterLapse
        } else {
            Readmit::Held
        };
        self.admit_if_active(rental.id, seen, readmit).await?;
        self.changed.send_modify(|v| *v += 1);
        self.wake();
        Ok(true)
    }

    /// Follows the backend's settlement stream from the position stored in the database,
    /// crediting each settlement and then storing its position, so a restart resumes there
    /// instead of replaying the node's history. The poll remains the safety net.
    pub async fn follow_settlements(self: Arc<Self>) {
        let Some(key) = self.ln.stream_index_key() else {
            return;
        };
        let from = self
            .db()
            .ok()
            .and_then(|db| crate::db::meta_get(&db, key).ok().flatten())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Settlement>(STREAM_BURST);
        let streamer = self.clone();
        let poll = Duration::from_millis(self.cfg.invoice_poll_millis.max(50));
        tokio::spawn(async move {
            let s = &streamer;
            s.ln.stream_settlements(from, tx, poll, &s.stream_live)
                .await
        });
        while let Some(first) = rx.recv().await {
            // What the stream delivered meanwhile is settled together (a node back after an
            // outage replays every settlement since the stored position): the credits share
            // group commits, and the position is stored once for them.
            let mut burst = vec![first];
            while burst.len() < STREAM_BURST {
                match rx.try_recv() {
                    Ok(s) => burst.push(s),
                    Err(_) => break,
                }
            }
            let now = self.clock.now();
            let settled = futures_util::future::join_all(burst.iter().map(|s| {
                let at = if s.settled_at > 0 { s.settled_at } else { now };
                self.settle(&s.payment_hash, at)
            }))
            .await;
            // The position moves past the settlements credited (or not ours), in the stream's
            // order, up to the first that failed: the next start replays from there, and the
            // invoice checks may credit it first.
            let mut upto = None;
            for (s, r) in burst.iter().zip(settled) {
                match r {
                    Ok(_) | Err(ServiceError::NoInvoice) => {
                        upto = Some(s.index).filter(|&i| i > 0).or(upto);
                    }
                    Err(e) => {
                        tracing::warn!("streamed settlement {}: {e}", s.payment_hash);
                        break;
                    }
                }
            }
            if let Some(index) = upto {
                let stored = self.db().and_then(|db| {
                    crate::db::meta_set(&db, key, &index.to_string())
                        .map_err(ServiceError::internal)
                });
                if let Err(e) = stored {
                    tracing::warn!("storing the settlement stream position: {e}");
                }
            }
        }
    }

    /// Checks every open invoice with the backend: settles paid ones, expires dead ones (and
    /// with an unpaid first invoice, the rental and its hold on the address).
    pub async fn check_invoices(&self) -> Result<(), ServiceError> {
        let open = store::open_invoices(&*self.db()?)?;
        // Asked about a batch at a time: the settlements among them share commits.
        for batch in open.chunks(INVOICE_BATCH) {
            let checked =
                futures_util::future::join_all(batch.iter().map(|inv| self.check_invoice(inv)))
                    .await;
            checked.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        Ok(())
    }

    /// Asks the backend about one open invoice: settles it if paid, expires it if dead (and
    /// with an unpaid first invoice, the rental and its hold on the address).
    pub async fn check_invoice(&self, inv: &InvoiceRow) -> Result<(), ServiceError> {
        let now = self.clock.now();
        match self.ln.status(&inv.payment_hash, now).await {
            Ok(Status::Settled { at }) => {
                self.settle(&inv.payment_hash, if at > 0 { at } else { now })
                    .await?;
            }
            Ok(Status::Gone) => self.expire(inv, now)?,
            Ok(Status::Open) if now > inv.expires_at + 600 => self.expire(inv, now)?,
            Ok(Status::Open) => {}
            // Past its expiry nobody can pay it any more, whatever the node knows: expire
            // it like any other (a payment the node reports later is still credited).
            Ok(Status::Unknown) if now >= inv.expires_at => {
                tracing::warn!(payment_hash = %inv.payment_hash, "the Lightning node does not know this invoice; expired it at its expiry");
                self.expire(inv, now)?
            }
            Ok(Status::Unknown) => {
                if self.warnings.allow(&inv.payment_hash) {
                    tracing::warn!(payment_hash = %inv.payment_hash, expires_at = inv.expires_at, "the Lightning node does not know this invoice (replaced or restored node, or another node?)")
                }
            }
            Err(e) => {
                if self.warnings.allow(&inv.payment_hash) {
                    tracing::warn!(payment_hash = %inv.payment_hash, "invoice check failed: {e}")
                }
            }
        }
        Ok(())
    }

    /// Asks the node about the open invoices whose check is due, and schedules each one's
    /// next check.
    pub async fn check_due_invoices(&self) -> Result<(), ServiceError> {
        let poll_ms = self.check_interval_ms();
        let now_ms = self.clock.now_ms();
        // One batch per round: the loop comes back at once if more are due, and expiries
        // (checked first in each round) are not starved by a flood of new invoices.
        let routers = self.checked_routers();
        let due = due_invoices(&*self.peek()?, now_ms, INVOICE_BATCH, routers.as_deref())?;
        // Asked about together: the settlements among them share group commits (a burst of
        // payments after an outage is credited at the disk's pace of batches, not of fsyncs).
        let checked =
            futures_util::future::join_all(due.iter().map(|inv| self.check_invoice(inv))).await;
        checked.into_iter().collect::<Result<Vec<()>, _>>()?;
        let next: Vec<(String, i64)> = due
            .iter()
            .map(|inv| {
                (
                    inv.payment_hash.clone(),
                    next_check_ms(inv, now_ms, poll_ms),
                )
            })
            .collect();
        // The batch's next checks ride in the group commit (a lost one is checked again).
        self.stage(|tx| Ok(set_next_checks(tx, &next)?))?;
        Ok(())
    }

    /// The least wait between two checks of an open invoice with the node. With the
    /// settlement stream up, a check is its safety net (a settlement it missed, an expiry):
    /// far apart. Without, often while an invoice is young.
    fn check_interval_ms(&self) -> i64 {
        match self.stream_live.load(std::sync::atomic::Ordering::Relaxed) {
            true => CHECK_BESIDE_STREAM_MS,
            false => self.cfg.invoice_poll_millis.max(50) as i64,
        }
    }

    fn expire(&self, inv: &InvoiceRow, now: i64) -> Result<(), ServiceError> {
        let mut db = self.db()?;
        let out = self.expire_in(&mut db, inv, now);
        // Committed or rolled back: the unpaid hold is counted as the database has it now.
        self.unpaid_reread(&db, inv.rental_id)?;
        out?;
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    fn expire_in(
        &self,
        db: &mut Connection,
        inv: &InvoiceRow,
        now: i64,
    ) -> Result<(), ServiceError> {
        let tx = db.transaction()?;
        // Before the invoice's row lock, as everywhere (`Service::settle`).
        tx.lock_for_transaction(crate::holds::ALLOCATION_LOCK)?;
        if store::expire_invoice(&tx, &inv.payment_hash, now)?
            && inv.purpose == InvoicePurpose::Activation
        {
            let r = store::rental_by_id(&tx, inv.rental_id)?;
            let still_open = store::open_invoice(&tx, r.id, now)?.is_some();
            if r.started_at.is_none() && r.released_at.is_none() && !still_open {
                store::release(&tx, r.id, now, "unpaid", 0)?;
                self.space_released(&tx, &r, now)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A payment hash as this server issues them: 64 lowercase hex characters (PROTOCOL.md
/// section 4); anything else is not one it issued.
fn is_payment_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invoices_are_counted_under_the_api_that_sold_them() {
        assert_eq!(api_of(Credit::Months(1)), "v1");
        let in_compat = events::within_api("2023", async { api_of(Credit::Months(1)) }).await;
        assert_eq!(in_compat, "2023");
        let credit = events::within_api("2023", async {
            api_of(Credit::Seconds {
                secs: 60,
                from_creation: true,
            })
        })
        .await;
        assert_eq!(credit, "credit");
    }
}
