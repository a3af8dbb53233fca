//! `staticwire-control migrate --to postgres://...`: copies the SQLite database of a single
//! host into an empty PostgreSQL database, in one transaction, and commits only when every
//! table's row count and the ledger's totals agree on both sides.

use crate::sql::{Connection, Value};
use serde::Serialize;
use std::collections::BTreeMap;

/// Tables in an order that satisfies the foreign keys; `leases` is not copied (a lease
/// belongs to a running replica).
const TABLES: &[&str] = &[
    "addresses",
    "rentals",
    "invoices",
    "payments",
    "events",
    "dev_invoices",
    "meta",
];

/// Sums that must come out the same on both sides.
const TOTALS: &[(&str, &str)] = &[
    (
        "payments_msat",
        "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) FROM payments",
    ),
    (
        "payments_credited_secs",
        "SELECT CAST(COALESCE(SUM(credited_secs), 0) AS BIGINT) FROM payments",
    ),
    (
        "rentals_credited_secs",
        "SELECT CAST(COALESCE(SUM(credited_secs), 0) AS BIGINT) FROM rentals",
    ),
    (
        "live_rentals",
        "SELECT COUNT(*) FROM rentals WHERE released_at IS NULL",
    ),
    (
        "invoices_settled_msat",
        "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) FROM invoices WHERE state = 'settled'",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Db(#[from] crate::db::DbError),
    #[error("database: {0}")]
    Sql(#[from] crate::sql::Error),
    #[error("the destination must be PostgreSQL (postgres://...)")]
    NotPostgres,
    #[error("the destination already holds {0} rows in {1}: migrate into an empty database")]
    NotEmpty(i64, String),
    #[error("verification failed, nothing was committed: {0}")]
    Mismatch(String),
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Rows copied per table.
    pub tables: BTreeMap<String, i64>,
    /// The ledger's totals, equal on both sides.
    pub totals: BTreeMap<String, i64>,
}

fn count(db: &Connection, table: &str) -> crate::sql::Result<i64> {
    db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
}

fn totals(db: &Connection) -> crate::sql::Result<BTreeMap<String, i64>> {
    TOTALS
        .iter()
        .map(|(name, sql)| Ok((name.to_string(), db.query_row(sql, [], |r| r.get(0))?)))
        .collect()
}

/// Copies every table of `src` (SQLite) into `dst` (PostgreSQL, migrated, empty), verifies,
/// and commits; on any difference nothing is committed.
pub fn copy(src: &Connection, dst: &Connection) -> Result<Report, MigrateError> {
    if !dst.is_postgres() {
        return Err(MigrateError::NotPostgres);
    }
    let tx = dst.unchecked_transaction()?;
    for t in TABLES.iter().chain(["leases"].iter()) {
        let n = count(&tx, t)?;
        if n > 0 {
            return Err(MigrateError::NotEmpty(n, t.to_string()));
        }
    }
    let mut report = Report {
        tables: BTreeMap::new(),
        totals: BTreeMap::new(),
    };
    for table in TABLES {
        // SQLite's implicit rowid orders invoices; PostgreSQL has it as a column.
        let extra = if *table == "invoices" { ", rowid" } else { "" };
        let cols: Vec<String> = src
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |r| r.get(0))?
            .collect::<crate::sql::Result<_>>()?;
        let list = format!("{}{extra}", cols.join(", "));
        let marks: Vec<String> = (1..=cols.len() + usize::from(!extra.is_empty()))
            .map(|i| format!("?{i}"))
            .collect();
        let insert = format!("INSERT INTO {table} ({list}) VALUES ({})", marks.join(", "));
        let rows = src.query_all(&format!("SELECT {list} FROM {table}"), [])?;
        for row in &rows {
            let values: Vec<Value> = (0..marks.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<crate::sql::Result<_>>()?;
            tx.execute(&insert, values)?;
        }
        report.tables.insert(table.to_string(), rows.len() as i64);
    }
    // Identity columns continue after the copied ids.
    for (table, col) in [("rentals", "id"), ("events", "id"), ("invoices", "rowid")] {
        tx.query_all(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), COALESCE(MAX({col}), 0) + 1, false)::text FROM {table}"
            ),
            [],
        )?;
    }
    for (table, n) in &report.tables {
        let there = count(&tx, table)?;
        let here = count(src, table)?;
        if there != *n || here != *n {
            return Err(MigrateError::Mismatch(format!(
                "{table}: {here} rows in SQLite, {n} copied, {there} in PostgreSQL"
            )));
        }
    }
    let (a, b) = (totals(src)?, totals(&tx)?);
    if a != b {
        return Err(MigrateError::Mismatch(format!(
            "ledger totals differ: SQLite {a:?}, PostgreSQL {b:?}"
        )));
    }
    report.totals = a;
    tx.commit()?;
    Ok(report)
}

/// `postgres://user:secret@host/db` without the secret, for output and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;
    use staticwire_api::InvoicePurpose;

    /// A small history: two rentals (one a /30 with IPv6), invoices, payments, events, a
    /// released rental and the dev node's invoice.
    fn history(db: &Connection) {
        store::seed_addresses(
            db,
            "wg0",
            &(1..16)
                .map(|i| format!("203.0.113.{i}").parse().unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let a = store::insert_rental_with(
            db,
            "ka",
            "203.0.113.4",
            30,
            Some("2001:db8::/64"),
            "wg0",
            10,
        )
        .unwrap();
        let b = store::insert_rental(db, "kb", "203.0.113.1", "wg0", 11).unwrap();
        for (i, (rid, hash)) in [(a, "aa"), (b, "bb"), (a, "cc")].into_iter().enumerate() {
            let h = hash.repeat(32);
            store::insert_invoice(
                db,
                &h,
                rid,
                "lnbcrt1...",
                72_000_000,
                if i < 2 {
                    InvoicePurpose::Activation
                } else {
                    InvoicePurpose::Renewal
                },
                store::Credit::Months(1),
                20 + i as i64,
                4000,
                "v1",
                0,
            )
            .unwrap();
            let inv = store::invoice_by_hash(db, &h).unwrap().unwrap();
            store::credit(db, &inv, 30 + i as i64, 2_592_000).unwrap();
        }
        store::release(db, b, 50, "operator", 60).unwrap();
        db.execute(
            "INSERT INTO dev_invoices(payment_hash, preimage, bolt11, amount_msat, expires_at) VALUES ('dd', 'ee', 'x', 1, 2)",
            [],
        )
        .unwrap();
        crate::db::meta_set(db, "dev_clock_offset", "0").unwrap();
    }

    #[test]
    fn copies_everything_verifies_and_refuses_a_second_time() {
        let Ok(url) = std::env::var("STATICWIRE_TEST_PG") else {
            eprintln!("SKIPPED: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = crate::db::open(&dir.path().join("db.sqlite")).unwrap();
        history(&src);
        let dst = crate::db::open_test_schema(&url).unwrap();
        let report = copy(&src, &dst).unwrap();
        assert_eq!(report.tables["rentals"], 2);
        assert_eq!(report.tables["payments"], 3);
        assert_eq!(report.totals["payments_msat"], 3 * 72_000_000);
        assert_eq!(report.totals["live_rentals"], 1);
        // The same rows read back through the store.
        for key in ["ka", "kb"] {
            assert_eq!(
                store::latest_rental(&dst, key).unwrap(),
                store::latest_rental(&src, key).unwrap()
            );
        }
        let ra = store::latest_rental(&src, "ka").unwrap().unwrap();
        assert_eq!(
            store::invoices_of(&dst, ra.id).unwrap(),
            store::invoices_of(&src, ra.id).unwrap(),
            "same invoices, same order"
        );
        assert_eq!(
            store::events_of(&dst, ra.id).unwrap(),
            store::events_of(&src, ra.id).unwrap()
        );
        // New rows continue after the copied ids.
        let id = store::insert_rental(&dst, "kc", "203.0.113.2", "wg0", 99).unwrap();
        assert!(id > ra.id);
        // A second run finds the destination in use and changes nothing.
        assert!(matches!(copy(&src, &dst), Err(MigrateError::NotEmpty(..))));
        assert_eq!(count(&dst, "rentals").unwrap(), 3);
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://sw:hunter2@db.example:5432/sw"),
            "postgres://sw:***@db.example:5432/sw"
        );
        assert_eq!(redact("postgres://sw@db/sw"), "postgres://sw@db/sw");
    }
}
