//! Rows and queries. Functions take a `Connection` (inside the caller's transaction where it
//! matters) and know nothing about HTTP or Lightning.

use crate::freespace::FreeBlock;
use crate::ledger::Account;
use crate::sql::{params, Connection, OptionalExtension, Row, ToSql, Value};
use staticwire_api::{Invoice, InvoicePurpose, InvoiceState};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RentalRow {
    pub id: i64,
    pub public_key: String,
    pub address: String,
    pub router: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub credited_secs: i64,
    pub suspended: bool,
    pub released_at: Option<i64>,
    pub release_reason: Option<String>,
    /// Length of the IPv4 prefix that starts at `address` (32: one address).
    pub prefix_len: u8,
    /// The IPv6 prefix routed to the rental, e.g. `2001:db8:0:5::/64`.
    pub ipv6: Option<String>,
}

impl RentalRow {
    pub fn account(&self) -> Account {
        Account {
            started_at: self.started_at,
            credited_secs: self.credited_secs,
            suspended: self.suspended,
            released: self.released_at.is_some(),
        }
    }
}

pub(crate) const RENTAL_COLS: &str = "id, public_key, address, router, created_at, started_at, \
     credited_secs, suspended, released_at, release_reason, prefix_len, ipv6";

pub(crate) fn rental(r: &Row) -> crate::sql::Result<RentalRow> {
    Ok(RentalRow {
        id: r.get(0)?,
        public_key: r.get(1)?,
        // NULL for an IPv6-only rental.
        address: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        router: r.get(3)?,
        created_at: r.get(4)?,
        started_at: r.get(5)?,
        credited_secs: r.get(6)?,
        suspended: r.get::<_, i64>(7)? != 0,
        released_at: r.get(8)?,
        release_reason: r.get(9)?,
        prefix_len: r.get(10)?,
        ipv6: r.get(11)?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRow {
    pub payment_hash: String,
    pub rental_id: i64,
    pub bolt11: String,
    pub amount_msat: i64,
    pub purpose: InvoicePurpose,
    pub months: u32,
    pub state: InvoiceState,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
    /// Seconds this invoice credits, when not whole months (credit top-ups).
    pub credit_secs: Option<i64>,
    /// The ledger of a new rental starts when this invoice was made, not when it was paid.
    pub ledger_from_creation: bool,
}

impl InvoiceRow {
    pub fn to_api(&self) -> Invoice {
        Invoice {
            payment_hash: self.payment_hash.clone(),
            bolt11: self.bolt11.clone(),
            amount_sat: (self.amount_msat / 1000) as u64,
            purpose: self.purpose,
            months: self.months,
            state: self.state,
            created_at: self.created_at,
            expires_at: self.expires_at,
            settled_at: self.settled_at,
        }
    }
}

pub(crate) const INVOICE_COLS: &str =
    "payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, \
     created_at, expires_at, settled_at, credit_secs, ledger_from_creation";

fn purpose_str(p: InvoicePurpose) -> &'static str {
    match p {
        InvoicePurpose::Activation => "activation",
        InvoicePurpose::Renewal => "renewal",
    }
}

pub(crate) fn invoice(r: &Row) -> crate::sql::Result<InvoiceRow> {
    let purpose: String = r.get(4)?;
    let state: String = r.get(6)?;
    Ok(InvoiceRow {
        payment_hash: r.get(0)?,
        rental_id: r.get(1)?,
        bolt11: r.get(2)?,
        amount_msat: r.get(3)?,
        purpose: if purpose == "activation" {
            InvoicePurpose::Activation
        } else {
            InvoicePurpose::Renewal
        },
        months: r.get(5)?,
        state: match state.as_str() {
            "settled" => InvoiceState::Settled,
            "expired" => InvoiceState::Expired,
            _ => InvoiceState::Open,
        },
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        settled_at: r.get(9)?,
        credit_secs: r.get(10)?,
        ledger_from_creation: r.get::<_, i64>(11)? != 0,
    })
}

/// How an invoice credits the ledger when paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credit {
    Months(u32),
    /// Seconds bought by a credit top-up; `from_creation` starts a new ledger at quote time.
    Seconds {
        secs: i64,
        from_creation: bool,
    },
}

/// Makes sure every configured address exists; existing rows (and their cool-downs) stay.
pub fn seed_addresses(db: &Connection, router: &str, addrs: &[Ipv4Addr]) -> crate::sql::Result<()> {
    if db.is_postgres() {
        return seed_addresses_pg(db, router, addrs);
    }
    let mut stmt = db.prepare(
        "INSERT INTO addresses(address, num, router) VALUES (?1, ?2, ?3)
         ON CONFLICT(address) DO UPDATE SET router = excluded.router",
    )?;
    for a in addrs {
        stmt.execute(params![a.to_string(), u32::from(*a), router])?;
    }
    Ok(())
}

/// Addresses per statement of [`seed_addresses_pg`].
const SEED_ROWS: usize = 512;

/// [`seed_addresses`] on PostgreSQL, where a statement is a round trip: many addresses per
/// statement, and a row rewritten only when its router changed (a replica's start over a /12
/// otherwise took a million round trips and rewrote every row).
fn seed_addresses_pg(db: &Connection, router: &str, addrs: &[Ipv4Addr]) -> crate::sql::Result<()> {
    for chunk in addrs.chunks(SEED_ROWS) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(?{}, CAST(?{} AS BIGINT), ?1)", 2 * i + 2, 2 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO addresses(address, num, router) VALUES {}
             ON CONFLICT(address) DO UPDATE SET router = excluded.router
             WHERE addresses.router <> excluded.router",
            rows.join(", ")
        );
        let mut values = vec![crate::sql::Value::Text(router.to_string())];
        for a in chunk {
            values.push(crate::sql::Value::Text(a.to_string()));
            values.push(crate::sql::Value::Int(i64::from(u32::from(*a))));
        }
        db.execute(&sql, values)?;
    }
    Ok(())
}

pub fn live_rental(db: &Connection, public_key: &str) -> crate::sql::Result<Option<RentalRow>> {
    db.query_row(
        &format!("SELECT {RENTAL_COLS} FROM rentals WHERE public_key = ?1 AND released_at IS NULL"),
        [public_key],
        rental,
    )
    .optional()
}

/// The live rental of a key, or else its most recent one.
pub fn latest_rental(db: &Connection, public_key: &str) -> crate::sql::Result<Option<RentalRow>> {
    db.query_row(
        &format!(
            "SELECT {RENTAL_COLS} FROM rentals WHERE public_key = ?1
             ORDER BY (released_at IS NULL) DESC, id DESC LIMIT 1"
        ),
        [public_key],
        rental,
    )
    .optional()
}

pub fn rental_by_id(db: &Connection, id: i64) -> crate::sql::Result<RentalRow> {
    db.query_row(
        &format!("SELECT {RENTAL_COLS} FROM rentals WHERE id = ?1"),
        [id],
        rental,
    )
}

pub fn all_rentals(db: &Connection) -> crate::sql::Result<Vec<RentalRow>> {
    let mut stmt = db.prepare(&format!("SELECT {RENTAL_COLS} FROM rentals ORDER BY id"))?;
    stmt.query_map([], rental)?.collect()
}

#[cfg(test)]
pub fn insert_rental(
    db: &Connection,
    public_key: &str,
    address: &str,
    router: &str,
    now: i64,
) -> crate::sql::Result<i64> {
    insert_rental_with(db, public_key, address, 32, None, router, now)
}

/// A rental of the IPv4 prefix `address/prefix_len` (none when `address` is empty: IPv6
/// only) and, if given, an IPv6 prefix.
pub fn insert_rental_with(
    db: &Connection,
    public_key: &str,
    address: &str,
    prefix_len: u8,
    ipv6: Option<&str>,
    router: &str,
    now: i64,
) -> crate::sql::Result<i64> {
    // None: the key rents already (no row is made).
    insert_hold(
        db, public_key, address, prefix_len, ipv6, router, now, None, None,
    )?
    .map(|r| r.id)
    .ok_or(crate::sql::Error::NoRows)
}

/// [`insert_rental_with`] of a new hold asked for by `client` (the rentals' `client`
/// column, or None), returning the row, or None when the key has a live rental already (the
/// database's one live rental per key) or `free` says the block is not free after all: one
/// statement, one round trip on PostgreSQL.
///
/// `free`: the IPv4 block is confirmed free in the same statement, by the rule of
/// `crate::freespace::block_is_free` (the index's offer, not read before).
#[allow(clippy::too_many_arguments)]
pub fn insert_hold(
    db: &Connection,
    public_key: &str,
    address: &str,
    prefix_len: u8,
    ipv6: Option<&str>,
    router: &str,
    now: i64,
    client: Option<&str>,
    free: Option<FreeBlock>,
) -> crate::sql::Result<Option<RentalRow>> {
    let mut values = params![
        public_key,
        (!address.is_empty()).then_some(address),
        router,
        now,
        prefix_len,
        ipv6,
        client
    ]
    .iter()
    .map(|v| v.to_value())
    .collect::<Vec<Value>>();
    let guard = match free {
        None => "",
        Some(b) => {
            values.extend([
                Value::Int(i64::from(b.from)),
                Value::Int(i64::from(b.base)),
                Value::Int(b.end as i64),
                Value::Int((b.end - u64::from(b.base)) as i64),
            ]);
            // Every address of the block in the pool and rested; no live rental on one of
            // them, nor on a block before it that reaches into it (each rental's address
            // through the live-address index).
            "WHERE (SELECT COUNT(*) FROM addresses a
                     WHERE a.router = ?3 AND a.num >= ?9 AND a.num < ?10
                       AND a.cooldown_until <= ?4) = ?11
               AND NOT EXISTS (SELECT 1 FROM addresses a
                     WHERE a.router = ?3 AND a.num >= ?8 AND a.num < ?10
                       AND EXISTS (SELECT 1 FROM rentals r
                             WHERE r.address = a.address AND r.released_at IS NULL
                               AND (a.num >= ?9
                                    OR a.num + (CAST(1 AS BIGINT) << CAST(32 - r.prefix_len AS INTEGER)) > ?9)
                             LIMIT 1 OFFSET 0))"
        }
    };
    db.query_row(
        &format!(
            "/* generic plan */
             INSERT INTO rentals(public_key, address, router, created_at, prefix_len, ipv6, client)
             SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS BIGINT),
                    CAST(?5 AS INTEGER), CAST(?6 AS TEXT), CAST(?7 AS TEXT)
             {}
             ON CONFLICT (public_key) WHERE released_at IS NULL DO NOTHING
             RETURNING {RENTAL_COLS}",
            if guard.is_empty() {
                "WHERE 1 = 1"
            } else {
                guard
            }
        ),
        values,
        rental,
    )
    .optional()
}

/// Deletes a hold that never got an invoice nor an event, as if it had never been asked for.
/// Returns whether it did.
pub fn forget_hold(db: &Connection, id: i64) -> crate::sql::Result<bool> {
    let n = db.execute(
        "DELETE FROM rentals WHERE id = ?1 AND started_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM invoices WHERE rental_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM events WHERE rental_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM payments WHERE rental_id = ?1)",
        [id],
    )?;
    Ok(n > 0)
}

/// Gives back a hold that has no invoice: deleted when nothing refers to it, else released
/// (no cool-down: it never was rented).
pub fn drop_hold(db: &Connection, id: i64, at: i64, reason: &str) -> crate::sql::Result<()> {
    if forget_hold(db, id)? {
        return Ok(());
    }
    release(db, id, at, reason, 0)
}

/// Ends a rental. `cooldown_until` keeps the address out of the pool for a while.
pub fn release(
    db: &Connection,
    id: i64,
    at: i64,
    reason: &str,
    cooldown_until: i64,
) -> crate::sql::Result<()> {
    db.execute(
        "UPDATE rentals SET released_at = ?1, release_reason = ?2 WHERE id = ?3 AND released_at IS NULL",
        params![at, reason, id],
    )?;
    // Every address of the prefix rests, not only its first (through the `(router, num)`
    // index: a release reads the block's rows, not the pool).
    let span: Option<(i64, i64, String)> = db
        .query_row(
            "SELECT a.num, r.prefix_len, a.router FROM rentals r
               JOIN addresses a ON a.address = r.address
             WHERE r.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((base, len, router)) = span {
        let size = 1i64 << (32 - len.clamp(0, 32));
        db.execute(
            "UPDATE addresses SET cooldown_until = MAX(cooldown_until, ?1)
             WHERE router = ?4 AND num >= ?2 AND num < ?3",
            params![cooldown_until, base, base + size, router],
        )?;
    }
    event(
        db,
        at,
        Some(id),
        "released",
        &serde_json::json!({ "reason": reason }),
    )
}

pub fn set_suspended(
    db: &Connection,
    id: i64,
    suspended: bool,
    now: i64,
) -> crate::sql::Result<()> {
    db.execute(
        "UPDATE rentals SET suspended = ?1 WHERE id = ?2",
        params![suspended as i64, id],
    )?;
    let kind = if suspended { "suspended" } else { "resumed" };
    event(db, now, Some(id), kind, &serde_json::json!({}))
}

/// An invoice's credit as its columns: months, seconds, whether counted from its creation.
fn credit_columns(credit: Credit) -> (u32, Option<i64>, bool) {
    match credit {
        Credit::Months(m) => (m, None, false),
        Credit::Seconds {
            secs,
            from_creation,
        } => (0, Some(secs), from_creation),
    }
}

/// The detail of a new invoice's "invoice" event.
fn invoice_event(
    payment_hash: &str,
    amount_msat: u64,
    months: u32,
    purpose: InvoicePurpose,
) -> serde_json::Value {
    serde_json::json!({"payment_hash": payment_hash, "amount_msat": amount_msat, "months": months, "purpose": purpose_str(purpose)})
}

/// Inserts a new open invoice with its "invoice" event: `api` is the API that sold it (`v1`,
/// `2023`, `credit`: the revenue figures') and `first_check_ms` when it is first asked about
/// at the node. Returns the row as inserted (no read back). On PostgreSQL one statement, sent
/// without waiting (it goes with the batch's next statement or its commit; a failure fails the
/// batch: `crate::sql::pg`).
#[allow(clippy::too_many_arguments)]
pub fn insert_invoice(
    db: &Connection,
    payment_hash: &str,
    rental_id: i64,
    bolt11: &str,
    amount_msat: u64,
    purpose: InvoicePurpose,
    credit: Credit,
    created_at: i64,
    expires_at: i64,
    api: &str,
    first_check_ms: i64,
) -> crate::sql::Result<InvoiceRow> {
    let (months, credit_secs, from_creation) = credit_columns(credit);
    let detail = invoice_event(payment_hash, amount_msat, months, purpose);
    let row = params![
        payment_hash,
        rental_id,
        bolt11,
        amount_msat as i64,
        purpose_str(purpose),
        months,
        created_at,
        expires_at,
        credit_secs,
        from_creation as i64,
        api,
        first_check_ms
    ];
    const INSERT: &str = "INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at, credit_secs, ledger_from_creation, api, next_check_ms)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7, ?8, ?9, ?10, ?11, ?12)";
    if db.is_postgres() {
        let mut values = row.iter().map(|v| v.to_value()).collect::<Vec<_>>();
        values.push(Value::Text(detail.to_string()));
        db.send(
            &format!(
                "/* generic plan */ WITH i AS ({INSERT})
                 INSERT INTO events(at, rental_id, kind, detail) VALUES (?7, ?2, 'invoice', ?13)"
            ),
            values,
        )?;
    } else {
        db.execute(INSERT, row)?;
        event(db, created_at, Some(rental_id), "invoice", &detail)?;
    }
    Ok(InvoiceRow {
        payment_hash: payment_hash.to_string(),
        rental_id,
        bolt11: bolt11.to_string(),
        amount_msat: amount_msat as i64,
        purpose,
        months,
        state: InvoiceState::Open,
        created_at,
        expires_at,
        settled_at: None,
        credit_secs,
        ledger_from_creation: from_creation,
    })
}

pub fn invoice_by_hash(db: &Connection, hash: &str) -> crate::sql::Result<Option<InvoiceRow>> {
    db.query_row(
        &format!("SELECT {INVOICE_COLS} FROM invoices WHERE payment_hash = ?1"),
        [hash],
        invoice,
    )
    .optional()
}

/// The newest open invoice of a rental that can still be paid.
pub fn open_invoice(
    db: &Connection,
    rental_id: i64,
    now: i64,
) -> crate::sql::Result<Option<InvoiceRow>> {
    db.query_row(
        &format!(
            "SELECT {INVOICE_COLS} FROM invoices WHERE rental_id = ?1 AND state = 'open' AND expires_at > ?2
             ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ),
        params![rental_id, now],
        invoice,
    )
    .optional()
}

pub fn open_invoices(db: &Connection) -> crate::sql::Result<Vec<InvoiceRow>> {
    let mut stmt = db.prepare(&format!(
        "SELECT {INVOICE_COLS} FROM invoices WHERE state = 'open' ORDER BY created_at"
    ))?;
    stmt.query_map([], invoice)?.collect()
}

pub fn invoices_of(db: &Connection, rental_id: i64) -> crate::sql::Result<Vec<InvoiceRow>> {
    let mut stmt = db.prepare(&format!(
        "SELECT {INVOICE_COLS} FROM invoices WHERE rental_id = ?1 ORDER BY created_at, rowid"
    ))?;
    stmt.query_map([rental_id], invoice)?.collect()
}

pub fn expire_invoice(db: &Connection, hash: &str, now: i64) -> crate::sql::Result<bool> {
    let n = db.execute(
        "UPDATE invoices SET state = 'expired' WHERE payment_hash = ?1 AND state = 'open'",
        [hash],
    )?;
    if n > 0 {
        let rid: i64 = db.query_row(
            "SELECT rental_id FROM invoices WHERE payment_hash = ?1",
            [hash],
            |r| r.get(0),
        )?;
        event(
            db,
            now,
            Some(rid),
            "invoice_expired",
            &serde_json::json!({"payment_hash": hash}),
        )?;
    }
    Ok(n > 0)
}

/// Locks an invoice's row until the transaction ends (PostgreSQL; SQLite has one writer).
pub fn lock_invoice(db: &Connection, hash: &str) -> crate::sql::Result<()> {
    if db.is_postgres() {
        db.query_all(
            "SELECT payment_hash FROM invoices WHERE payment_hash = ?1 FOR UPDATE",
            [hash],
        )?;
    }
    Ok(())
}

pub fn payment_exists(db: &Connection, hash: &str) -> crate::sql::Result<bool> {
    Ok(db
        .query_row(
            "SELECT 1 FROM payments WHERE payment_hash = ?1",
            [hash],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Records a settled invoice and credits its rental: the one place money turns into time.
pub fn credit(
    db: &Connection,
    inv: &InvoiceRow,
    settled_at: i64,
    month_secs: i64,
) -> crate::sql::Result<()> {
    let credited = inv
        .credit_secs
        .unwrap_or(i64::from(inv.months) * month_secs);
    // A /v1 rental starts when paid (never before its invoice existed); an AddCredit rental
    // when quoted, as the original client computes its credit.
    let start = if inv.ledger_from_creation {
        inv.created_at
    } else {
        settled_at.max(inv.created_at)
    };
    db.execute(
        "INSERT INTO payments(payment_hash, rental_id, amount_msat, credited_secs, settled_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            inv.payment_hash,
            inv.rental_id,
            inv.amount_msat,
            credited,
            settled_at
        ],
    )?;
    db.execute(
        "UPDATE invoices SET state = 'settled', settled_at = ?1 WHERE payment_hash = ?2",
        params![settled_at, inv.payment_hash],
    )?;
    // The ledger starts at the first payment, never before the invoice existed.
    db.execute(
        "UPDATE rentals SET started_at = COALESCE(started_at, ?1),
                credited_secs = credited_secs + ?2 WHERE id = ?3",
        params![start, credited, inv.rental_id],
    )?;
    event(
        db,
        settled_at,
        Some(inv.rental_id),
        "payment",
        &serde_json::json!({"payment_hash": inv.payment_hash, "amount_msat": inv.amount_msat, "credited_secs": credited}),
    )
}

/// (total paid in sat, number of payments) of a rental.
pub fn paid_totals(db: &Connection, rental_id: i64) -> crate::sql::Result<(i64, i64)> {
    db.query_row(
        "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) / 1000, COUNT(*) FROM payments WHERE rental_id = ?1",
        [rental_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

const EVENT_SQL: &str =
    "/* generic plan */ INSERT INTO events(at, rental_id, kind, detail) VALUES (?1, ?2, ?3, ?4)";

pub fn event(
    db: &Connection,
    at: i64,
    rental_id: Option<i64>,
    kind: &str,
    detail: &serde_json::Value,
) -> crate::sql::Result<()> {
    db.execute(EVENT_SQL, params![at, rental_id, kind, detail.to_string()])?;
    Ok(())
}

/// [`event`] of rental `rental_id`, sent without waiting on PostgreSQL (it goes with the
/// invoice's insert that follows): the "rented" event of a hold just placed, written with its
/// first invoice.
pub fn event_sent(
    db: &Connection,
    at: i64,
    rental_id: i64,
    kind: &str,
    detail: &serde_json::Value,
) -> crate::sql::Result<()> {
    db.send(EVENT_SQL, params![at, rental_id, kind, detail.to_string()])
}

pub fn events_of(
    db: &Connection,
    rental_id: i64,
) -> crate::sql::Result<Vec<(i64, String, String)>> {
    let mut stmt =
        db.prepare("SELECT at, kind, detail FROM events WHERE rental_id = ?1 ORDER BY id")?;
    stmt.query_map([rental_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}
