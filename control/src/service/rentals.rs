//! Rentals: holding an address for a key (placed under a lock, so replicas never hand one out
//! twice, and capped per client), renting, renewing, and the operator's actions.

use super::{parse_public_key, Service, ServiceError};
use crate::alloc::{AllocError, Want};
use crate::freespace::FreeBlock;
use crate::holds::{self, HoldError, Listener, Requester, ALLOCATION_LOCK};
use crate::ledger::{self, RenewError};
use crate::limits::ClientId;
use crate::sql::{Connection, OptionalExtension};
use crate::store::{self, Credit, RentalRow};
use crate::unpaid::Unpaid;
use crate::writer::Ticket;
use staticwire_api as api;
use staticwire_api::{InvoicePurpose, RentalState};

/// The outcome of asking for an address.
pub enum Hold {
    /// The key already has a pending rental with an open invoice: the same answer again.
    Existing(Box<api::InvoiceResponse>),
    /// A new pending rental holding an address; its first invoice is still to be made.
    New(RentalRow),
}

impl Service {
    /// Holds a free address for `key` (or finds its pending rental of the same options). A
    /// new hold asked for by `client` is bounded as `crate::holds` says.
    pub fn hold(
        &self,
        key: &str,
        now: i64,
        client: Option<ClientId>,
    ) -> Result<Hold, ServiceError> {
        self.hold_with(key, now, client, &Want::default())
    }

    /// [`Service::hold`] of what `want` asks for: an IPv4 prefix, IPv6, a host.
    pub fn hold_with(
        &self,
        key: &str,
        now: i64,
        client: Option<ClientId>,
        want: &Want,
    ) -> Result<Hold, ServiceError> {
        self.hold_staged(key, now, client, want).map(|(h, _)| h)
    }

    /// [`Service::hold`], answered once the hold is committed: an invoice made for it next
    /// (staged on another connection on PostgreSQL) finds it.
    pub async fn hold_committed(
        &self,
        key: &str,
        now: i64,
        client: Option<ClientId>,
    ) -> Result<Hold, ServiceError> {
        let (hold, ticket) = self.hold_staged(key, now, client, &Want::default())?;
        self.durable(ticket).await?;
        Ok(hold)
    }

    /// [`Service::hold_with`], staged in the group commit: durable once its ticket is.
    fn hold_staged(
        &self,
        key: &str,
        now: i64,
        client: Option<ClientId>,
        want: &Want,
    ) -> Result<(Hold, Ticket), ServiceError> {
        // Most keys have no live rental and the free-space index is right: placed at once,
        // without reading either first; the insert confirms both in one statement. When it
        // does not (the key has a live rental, the block is held after all), the stage is
        // rolled back and placed again, reading first.
        let mut unconfirmed = false;
        let fresh = self.stage_locking(|tx| {
            self.hold_in(tx, key, now, client, want, false)?
                .ok_or_else(|| {
                    unconfirmed = true;
                    ServiceError::Conflict("placed again, reading first".into())
                })
        });
        let staged = match fresh {
            Err(_) if unconfirmed => self.stage_locking(|tx| {
                self.hold_in(tx, key, now, client, want, true)?
                    .ok_or_else(|| {
                        ServiceError::Conflict("this key's rental changed; retry".into())
                    })
            })?,
            other => other?,
        };
        self.wake();
        Ok(staged)
    }

    /// Holds an address for `key` in the open transaction. `look`: read the key's live rental
    /// (and act on it) and the block before placing; without, None when the insert finds the
    /// key has one or the block is not free.
    fn hold_in(
        &self,
        tx: &Connection,
        key: &str,
        now: i64,
        client: Option<ClientId>,
        want: &Want,
        look: bool,
    ) -> Result<Option<Hold>, ServiceError> {
        // Replicas on one PostgreSQL place rentals one at a time: no block goes out twice.
        tx.lock_for_transaction(ALLOCATION_LOCK)?;
        let live = match look {
            true => store::live_rental(tx, key)?,
            false => None,
        };
        if let Some(r) = live {
            match r.account().state(&self.terms, now) {
                RentalState::Pending => {
                    let open = store::open_invoice(tx, r.id, now)?;
                    let same = same_options(&r, want);
                    if let Some(inv) = open.as_ref().filter(|_| same) {
                        // Asking again returns the same invoice instead of a second address.
                        let view = self.rental_view(tx, &r, now)?;
                        return Ok(Some(Hold::Existing(Box::new(api::InvoiceResponse {
                            rental: view,
                            invoice: inv.to_api(),
                        }))));
                    }
                    if open.is_none() && now - r.created_at < 60 {
                        return Err(ServiceError::Conflict(
                            "this rental's invoice is being created; retry".into(),
                        ));
                    }
                    // Other options: the key's new rent replaces its unpaid hold (its invoice,
                    // if paid after all, places it again: `holds::place_paid`).
                    let reason = if open.is_some() { "replaced" } else { "unpaid" };
                    store::drop_hold(tx, r.id, now, reason)?;
                    self.space_released(tx, &r, now)?;
                }
                RentalState::Released => {
                    let cool = r.account().reserved_until(&self.terms).unwrap_or(now)
                        + self.terms.cooldown_secs;
                    store::release(tx, r.id, now, "reservation_ended", cool)?;
                    self.space_released(tx, &r, now)?;
                }
                state => {
                    return Err(ServiceError::Conflict(format!(
                        "this key already rents {} ({state:?}); renew it instead",
                        r.address
                    )))
                }
            }
        }
        let who = client.map(|c| {
            let api = crate::metrics::events::request_api();
            Requester::new(c.ip(), &self.limits.cfg, Listener::of_api(api))
        });
        let mut space = self.space(tx, self.writer.failures())?;
        // Without looking, the block is the index's word, confirmed by the insert.
        space.unread = !look;
        let placed = match &who {
            Some(who) => holds::place_unpaid(
                tx,
                &mut space,
                &self.cfg,
                want,
                who,
                self.limits.cfg.max_unpaid_per_client,
                now,
            )
            .map(|placed| {
                placed.map(|(p, taken)| {
                    if !taken.is_empty() {
                        tracing::info!(client = %who.prefix, taken = taken.len(), "unpaid holds taken over");
                    }
                    p
                })
            }),
            None => crate::alloc::place(tx, &mut space, &self.cfg, want, now)
                .map(|placed| placed.map_err(HoldError::from)),
        };
        space.unread = false;
        let placed = placed?;
        // Refused: perhaps only because of the key's own live rental (a hold it replaces).
        if placed.is_err() && !look && store::live_rental(tx, key)?.is_some() {
            return Ok(None);
        }
        let place = placed.map_err(|e| match e {
            HoldError::Alloc(AllocError::Exhausted) => ServiceError::PoolExhausted,
            HoldError::Alloc(e) => ServiceError::BadRequest(e.to_string()),
            HoldError::PrefixCap { prefix, held, max } => ServiceError::TooManyUnpaid {
                client: prefix,
                held,
                max,
            },
            HoldError::ShareFull => ServiceError::UnpaidShareFull,
        })?;
        // The "rented" event is written with the first invoice: a hold whose invoice cannot be
        // made is deleted without a trace.
        let client = who.as_ref().map(|w| w.column());
        let held = match store::insert_hold(
            tx,
            key,
            &place.address.map(|a| a.to_string()).unwrap_or_default(),
            place.prefix_len,
            place.ipv6.map(|n| n.to_string()).as_deref(),
            &place.router,
            now,
            client.as_deref(),
            match (look, place.address) {
                (false, Some(a)) => Some(FreeBlock::of(u32::from(a), place.prefix_len)),
                _ => None,
            },
        ) {
            Ok(Some(row)) => row,
            Ok(None) => {
                crate::alloc::unplace(&mut space, &place);
                return Ok(None);
            }
            Err(e) => {
                crate::alloc::unplace(&mut space, &place);
                return Err(e.into());
            }
        };
        // Counted from now on (a rollback of this stage reads it back: `Service::stage`).
        let hold = Unpaid::of_hold(
            held.id,
            client.as_deref(),
            held.router.clone(),
            Some(held.address.as_str()),
            held.prefix_len,
            held.ipv6.is_some(),
            held.created_at,
        );
        space.unpaid.inserted(tx, hold)?;
        self.publish_free(&mut space, now);
        drop(space);
        Ok(Some(Hold::New(held)))
    }

    /// Gives a hold back when its first invoice could not be made: the rejected request
    /// leaves nothing behind (no rental, so `GET /v1/rentals/{key}` stays 404).
    pub fn unhold(&self, rental: &RentalRow, now: i64) -> Result<(), ServiceError> {
        let db = self.db()?;
        let held = store::rental_by_id(&db, rental.id).optional()?;
        if held.is_none_or(|h| h.public_key != rental.public_key) {
            // The hold's own commit failed: there is nothing to give back.
            return Ok(());
        }
        // One transaction, under the allocation lock: the change to the unpaid hold is
        // logged with it (`crate::unpaid`); committed or not, the index reads it back.
        let out = (|| -> Result<(), ServiceError> {
            let tx = db.unchecked_transaction()?;
            tx.lock_for_transaction(ALLOCATION_LOCK)?;
            store::drop_hold(&tx, rental.id, now, "invoice_failed")?;
            self.space_released(&tx, rental, now)?;
            Ok(tx.commit()?)
        })();
        self.unpaid_reread(&db, rental.id)?;
        out
    }

    /// RentNewIP: hold an address for `key` and return the first invoice. `client` is who
    /// asked (None for operator and test calls: no per-client cap).
    pub async fn rent(
        &self,
        key: &str,
        client: Option<ClientId>,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        self.rent_with(key, client, &Want::default()).await
    }

    /// [`Service::rent`] of an IPv4 prefix, with or without IPv6, on a given host.
    pub async fn rent_with(
        &self,
        key: &str,
        client: Option<ClientId>,
        want: &Want,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let rental = match self.hold_staged(&key, now, client, want)? {
            (Hold::Existing(resp), ticket) => {
                // Its invoice may still be in the open batch (asked for twice at once).
                self.durable(ticket).await?;
                return Ok(*resp);
            }
            (Hold::New(r), ticket) => (r, ticket),
        };
        let (rental, held) = rental;
        let quote = ledger::activation_quote(&self.terms_of(&rental));
        let what = super::invoices::quote_what(&quote, InvoicePurpose::Activation);
        let made = self.make_invoice(&rental, quote.amount_sat, &what, now);
        let made = if self.stages_share_a_batch() {
            made.await
        } else {
            // The invoice is staged on another connection, which sees the hold once committed;
            // the node makes it meanwhile (a Lightning node's answer is a round trip of its
            // own). Made for a hold whose commit then fails, it is shown to nobody.
            let (durable, made) = tokio::join!(self.durable(held), made);
            durable?;
            made
        };
        let recorded = match made {
            Ok(new) => {
                let credit = Credit::Months(quote.months);
                self.record(
                    &rental,
                    &new,
                    quote.amount_sat,
                    InvoicePurpose::Activation,
                    credit,
                    now,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match recorded {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // A hold whose commit failed: that failure is the answer.
                self.durable(held).await?;
                // No invoice, no hold: give the address back at once.
                self.unhold(&rental, now)?;
                Err(e)
            }
        }
    }

    /// Renew: an invoice for `months` more, plus any back payments owed.
    pub async fn renew(
        &self,
        key: &str,
        months: u32,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let key = parse_public_key(key)?;
        // The request's own form, before the state: every key answers it alike.
        if months == 0 || months > self.terms.max_months {
            return Err(ServiceError::BadMonths(
                RenewError::BadMonths(self.terms.max_months).to_string(),
            ));
        }
        let now = self.clock.now();
        let (rental, quote) = {
            let db = self.db()?;
            let Some(r) = store::live_rental(&db, &key)? else {
                // Released and swept answers what released and not yet swept does.
                return Err(match store::latest_rental(&db, &key)? {
                    Some(_) => ServiceError::Conflict(RenewError::Released.to_string()),
                    None => ServiceError::NotFound,
                });
            };
            let q = ledger::renewal_quote(&self.terms_of(&r), &r.account(), months, now).map_err(
                |e| match e {
                    RenewError::BadMonths(_) => ServiceError::BadMonths(e.to_string()),
                    RenewError::NotStarted | RenewError::Released => {
                        ServiceError::Conflict(e.to_string())
                    }
                },
            )?;
            (r, q)
        };
        self.invoice_for(&rental, quote, InvoicePurpose::Renewal, now)
            .await
    }

    /// Operator actions.
    pub fn set_suspended(&self, key: &str, suspended: bool) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::live_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        store::set_suspended(&db, r.id, suspended, now)?;
        let r = store::rental_by_id(&db, r.id)?;
        self.rental_view(&db, &r, now)
    }

    pub fn release(&self, key: &str) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::live_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        // As `Service::unhold`: one transaction under the allocation lock.
        let out = (|| -> Result<(), ServiceError> {
            let tx = db.unchecked_transaction()?;
            tx.lock_for_transaction(ALLOCATION_LOCK)?;
            store::release(&tx, r.id, now, "operator", now + self.terms.cooldown_secs)?;
            self.space_released(&tx, &r, now)?;
            Ok(tx.commit()?)
        })();
        self.unpaid_reread(&db, r.id)?;
        out?;
        let r = store::rental_by_id(&db, r.id)?;
        self.rental_view(&db, &r, now)
    }
}

/// Whether a pending rental is what `want` asks for: the same IPv4 prefix length (or none),
/// IPv6 if asked for or refused, the host if named.
fn same_options(r: &RentalRow, want: &Want) -> bool {
    let v4 = !r.address.is_empty();
    let family = if want.ipv4 == Some(false) {
        !v4
    } else {
        v4 && r.prefix_len == want.prefix_len.unwrap_or(32)
    };
    let v6 = want.ipv6.is_none_or(|w| w == r.ipv6.is_some());
    let host = want.host.as_ref().is_none_or(|h| *h == r.router);
    family && v6 && host
}
