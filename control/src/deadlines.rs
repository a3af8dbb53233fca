//! The deadline queue's queries. Everything the control must do at a time — take a peer whose
//! paid time ran out off its router, release a rental at the end of its reservation, drop a
//! hold a crash left without an invoice, ask the Lightning node about an open invoice — is
//! found through an index on that time (migration 4), so the work of one round is
//! proportional to what is due, never to the number of rentals. The service acts on what these
//! find (`crate::service`); the loop (`crate::run`) sleeps until the earliest of them.

use crate::feed::decode_key;
use crate::sql::{params, Connection, Value};
use crate::store::{self, InvoiceRow};

/// How long an address may be held by a rental that has no invoice at all.
pub const ORPHAN_HOLD_SECS: i64 = 120;

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
     WHERE state = 'open' AND next_check_ms <= ?1 {OF} ORDER BY next_check_ms LIMIT ?2";

/// The invoices a replica checks: those of the rentals on `routers` (None: every one), as
/// a condition with its parameters (numbered from `first`). Replicas on one PostgreSQL split
/// the checks by the routers they hold leases on, so each invoice is asked about by one of
/// them, not by all.
pub(crate) fn of_routers(routers: Option<&[String]>, first: usize) -> (String, Vec<Value>) {
    match routers {
        None => (String::new(), Vec::new()),
        Some(names) => {
            let list: Vec<String> = (0..names.len())
                .map(|i| format!("?{}", first + i))
                .collect();
            let sql = format!(
                "AND EXISTS (SELECT 1 FROM rentals r WHERE r.id = invoices.rental_id
                             AND r.router IN ({}))",
                list.join(", ")
            );
            (sql, names.iter().map(|r| Value::Text(r.clone())).collect())
        }
    }
}

/// Open invoices (of the rentals on `routers`, None: all) whose next check is due at
/// `now_ms`, earliest first.
pub fn due_invoices(
    db: &Connection,
    now_ms: i64,
    limit: usize,
    routers: Option<&[String]>,
) -> crate::sql::Result<Vec<InvoiceRow>> {
    if routers.is_some_and(|r| r.is_empty()) {
        return Ok(Vec::new());
    }
    let (of, names) = of_routers(routers, 3);
    let sql = DUE_INVOICES_SQL
        .replace("{COLS}", store::INVOICE_COLS)
        .replace("{OF}", &of);
    let mut values = vec![Value::Int(now_ms), Value::Int(limit as i64)];
    values.extend(names);
    let mut stmt = db.prepare_cached(&sql)?;
    stmt.query_map(values, store::invoice)?.collect()
}

/// Rows per statement of [`set_next_checks`].
const NEXT_CHECKS_PER_STATEMENT: usize = 64;

/// Sets when each invoice (payment hash, time in milliseconds) is next asked about, up to
/// [`NEXT_CHECKS_PER_STATEMENT`] in a statement (on PostgreSQL each is a round trip).
pub fn set_next_checks(db: &Connection, next: &[(String, i64)]) -> crate::sql::Result<()> {
    for chunk in next.chunks(NEXT_CHECKS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(?{}, CAST(?{} AS BIGINT))", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = if db.is_postgres() {
            // Another replica checks the same invoices: a row it is updating (its batch not
            // committed yet) is left to it rather than waited for, and the other replica's
            // next check stands.
            format!(
                "WITH v AS (VALUES {}),
                      mine AS (SELECT payment_hash FROM invoices
                               WHERE payment_hash IN (SELECT column1 FROM v)
                               FOR UPDATE SKIP LOCKED)
                 UPDATE invoices SET next_check_ms = v.column2 FROM v, mine
                 WHERE invoices.payment_hash = v.column1 AND mine.payment_hash = v.column1",
                rows.join(", ")
            )
        } else {
            format!(
                "UPDATE invoices SET next_check_ms = v.column2 FROM (VALUES {}) AS v
                 WHERE invoices.payment_hash = v.column1",
                rows.join(", ")
            )
        };
        let values: Vec<crate::sql::Value> = chunk
            .iter()
            .flat_map(|(hash, at)| {
                [
                    crate::sql::Value::Text(hash.clone()),
                    crate::sql::Value::Int(*at),
                ]
            })
            .collect();
        db.execute(&sql, values)?;
    }
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
    "SELECT MIN(next_check_ms) FROM invoices WHERE state = 'open' {OF}";

/// The earliest deadlines; the invoice checks' of the rentals on `routers` (None: all).
pub fn next_deadlines(
    db: &Connection,
    now: i64,
    routers: Option<&[String]>,
) -> crate::sql::Result<Next> {
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
        invoice_check_ms: match routers {
            Some([]) => None,
            _ => {
                let (of, names) = of_routers(routers, 1);
                let sql = NEXT_CHECK_SQL.replace("{OF}", &of);
                db.query_row(&sql, names, |r| r.get::<_, Option<i64>>(0))?
            }
        },
    })
}

pub(crate) const ACTIVE_SQL: &str = "SELECT {COLS} FROM rentals
     WHERE released_at IS NULL AND started_at IS NOT NULL
       AND started_at + credited_secs > ?1 AND suspended = 0 {OF}";

/// Calls `f(router, key, networks)` for every active rental (started, paid-until after `now`,
/// not suspended) on `routers` (None: all), read from the paid-until index, row by row where
/// the database allows.
pub fn for_each_active(
    db: &Connection,
    now: i64,
    routers: Option<&[String]>,
    mut f: impl FnMut(&str, [u8; 32], Vec<ipnet::IpNet>),
) -> crate::sql::Result<()> {
    let of = routers.map_or(String::new(), |names| {
        let list: Vec<String> = (0..names.len()).map(|i| format!("?{}", i + 2)).collect();
        format!("AND router IN ({})", list.join(", "))
    });
    let sql = ACTIVE_SQL
        .replace("{COLS}", store::RENTAL_COLS)
        .replace("{OF}", &of);
    let mut params = vec![Value::Int(now)];
    params.extend(
        routers
            .unwrap_or(&[])
            .iter()
            .map(|r| Value::Text(r.clone())),
    );
    db.query_each(&sql, params, |row| {
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
