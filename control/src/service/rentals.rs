//! Rentals: holding an address for a key (placed under a lock, so replicas never hand one out
//! twice, and capped per client), renting, renewing, and the operator's actions.

use super::{parse_public_key, Service, ServiceError};
use crate::alloc::{AllocError, Want};
use crate::ledger::{self, RenewError};
use crate::limits::ClientId;
use crate::sql::Connection;
use crate::store::{self, RentalRow};
use crate::writer::Ticket;
use staticwire_api as api;
use staticwire_api::{InvoicePurpose, RentalState};

/// The advisory lock key under which rentals are placed (PostgreSQL).
const ALLOCATION_LOCK: i64 = 0x5357_414c; // "SWAL"

/// The outcome of asking for an address.
pub enum Hold {
    /// The key already has a pending rental with an open invoice: the same answer again.
    Existing(Box<api::InvoiceResponse>),
    /// A new pending rental holding an address; its first invoice is still to be made.
    New(RentalRow),
}

impl Service {
    /// Holds a free address for `key` (or finds its pending rental). A new hold asked for by
    /// `client` counts against its cap of unpaid holds.
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

    /// [`Service::hold_with`], staged in the group commit: durable once its ticket is.
    fn hold_staged(
        &self,
        key: &str,
        now: i64,
        client: Option<ClientId>,
        want: &Want,
    ) -> Result<(Hold, Ticket), ServiceError> {
        let staged = self.stage(|tx| self.hold_in(tx, key, now, client, want))?;
        self.wake();
        Ok(staged)
    }

    fn hold_in(
        &self,
        tx: &Connection,
        key: &str,
        now: i64,
        client: Option<ClientId>,
        want: &Want,
    ) -> Result<Hold, ServiceError> {
        // Replicas on one PostgreSQL place rentals one at a time: no block goes out twice.
        tx.lock_for_transaction(ALLOCATION_LOCK)?;
        if let Some(r) = store::live_rental(tx, key)? {
            match r.account().state(&self.terms, now) {
                RentalState::Pending => {
                    if let Some(inv) = store::open_invoice(tx, r.id, now)? {
                        // Asking again returns the same invoice instead of a second address.
                        let view = self.rental_view(tx, &r, now)?;
                        return Ok(Hold::Existing(Box::new(api::InvoiceResponse {
                            rental: view,
                            invoice: inv.to_api(),
                        })));
                    }
                    if now - r.created_at < 60 {
                        return Err(ServiceError::Conflict(
                            "this rental's invoice is being created; retry".into(),
                        ));
                    }
                    store::drop_hold(tx, r.id, now, "unpaid")?;
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
        if let Some(client) = client {
            self.check_unpaid_cap(tx, client)?;
        }
        let mut space = self.space(tx, self.writer.failures())?;
        let place = match crate::alloc::place(tx, &mut space, &self.cfg, want, now)? {
            Ok(p) => p,
            Err(AllocError::Exhausted) => return Err(ServiceError::PoolExhausted),
            Err(e) => return Err(ServiceError::BadRequest(e.to_string())),
        };
        // The "rented" event is written with the first invoice: a hold whose invoice cannot be
        // made is deleted without a trace.
        let id = match store::insert_rental_with(
            tx,
            key,
            &place.address.map(|a| a.to_string()).unwrap_or_default(),
            place.prefix_len,
            place.ipv6.map(|n| n.to_string()).as_deref(),
            &place.router,
            now,
        ) {
            Ok(id) => id,
            Err(e) => {
                crate::alloc::unplace(&mut space, &place);
                return Err(e.into());
            }
        };
        drop(space);
        if let Some(client) = client {
            crate::deadlines::set_client(tx, id, &client.to_string())?;
        }
        Ok(Hold::New(store::rental_by_id(tx, id)?))
    }

    /// Refuses a new hold when `client` already has `max_unpaid_per_client` rentals that are
    /// live and unpaid. Counted from the database (the hold's `client` column), so a restart
    /// does not reset the cap.
    fn check_unpaid_cap(&self, db: &Connection, client: ClientId) -> Result<(), ServiceError> {
        let max = self.limits.cfg.max_unpaid_per_client;
        if crate::deadlines::unpaid_holds_of(db, &client.to_string())? >= u64::from(max) {
            return Err(ServiceError::TooManyUnpaid { client, max });
        }
        Ok(())
    }

    /// Gives a hold back when its first invoice could not be made: the rejected request
    /// leaves nothing behind (no rental, so `GET /v1/rentals/{key}` stays 404).
    pub fn unhold(&self, rental: &RentalRow, now: i64) -> Result<(), ServiceError> {
        let db = self.db()?;
        if store::live_rental(&db, &rental.public_key)?.map(|r| r.id) != Some(rental.id) {
            // The hold's own commit failed: there is nothing to give back.
            return Ok(());
        }
        store::drop_hold(&db, rental.id, now, "invoice_failed")?;
        self.space_released(&db, rental, now)?;
        Ok(())
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
                self.writer.durable(ticket).await?;
                return Ok(*resp);
            }
            (Hold::New(r), ticket) => (r, ticket),
        };
        let (rental, held) = rental;
        let quote = ledger::activation_quote(&self.terms_of(&rental));
        match self
            .invoice_for(&rental, quote, InvoicePurpose::Activation, now)
            .await
        {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // A hold whose commit failed: that failure is the answer.
                self.writer.durable(held).await?;
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
        store::release(&db, r.id, now, "operator", now + self.terms.cooldown_secs)?;
        self.space_released(&db, &r, now)?;
        let r = store::rental_by_id(&db, r.id)?;
        self.rental_view(&db, &r, now)
    }
}
