//! SQLite: WAL, foreign keys, versioned migrations. The database is the source of truth; every
//! state change is one transaction, so `kill -9` at any point loses nothing.

use rusqlite::{Connection, OptionalExtension};
use std::path::Path;

/// Each entry upgrades the schema by one version (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1: rentals, addresses, invoices, payments, events, and the dev Lightning node's invoices.
    r#"
    CREATE TABLE addresses (
        address        TEXT PRIMARY KEY,
        num            INTEGER NOT NULL,
        router         TEXT NOT NULL,
        cooldown_until INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE rentals (
        id             INTEGER PRIMARY KEY,
        public_key     TEXT NOT NULL,
        address        TEXT NOT NULL REFERENCES addresses(address),
        router         TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        started_at     INTEGER,
        credited_secs  INTEGER NOT NULL DEFAULT 0,
        suspended      INTEGER NOT NULL DEFAULT 0,
        released_at    INTEGER,
        release_reason TEXT
    );
    -- One live rental per key and per address: the database itself forbids double allocation.
    CREATE UNIQUE INDEX rentals_live_key ON rentals(public_key) WHERE released_at IS NULL;
    CREATE UNIQUE INDEX rentals_live_address ON rentals(address) WHERE released_at IS NULL;
    CREATE TABLE invoices (
        payment_hash TEXT PRIMARY KEY,
        rental_id    INTEGER NOT NULL REFERENCES rentals(id),
        bolt11       TEXT NOT NULL,
        amount_msat  INTEGER NOT NULL,
        purpose      TEXT NOT NULL CHECK (purpose IN ('activation', 'renewal')),
        months       INTEGER NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('open', 'settled', 'expired')),
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        settled_at   INTEGER
    );
    CREATE INDEX invoices_open ON invoices(state) WHERE state = 'open';
    CREATE INDEX invoices_rental ON invoices(rental_id);
    -- Credits exactly once per payment hash.
    CREATE TABLE payments (
        payment_hash  TEXT PRIMARY KEY REFERENCES invoices(payment_hash),
        rental_id     INTEGER NOT NULL REFERENCES rentals(id),
        amount_msat   INTEGER NOT NULL,
        credited_secs INTEGER NOT NULL,
        settled_at    INTEGER NOT NULL
    );
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        rental_id INTEGER REFERENCES rentals(id),
        kind      TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TRIGGER events_append_only_u BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_append_only_d BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TABLE dev_invoices (
        payment_hash TEXT PRIMARY KEY,
        preimage     TEXT NOT NULL,
        bolt11       TEXT NOT NULL,
        amount_msat  INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        settled_at   INTEGER
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: credit top-ups (the original client's AddCredit) carry their credited seconds, and an
    //    AddCredit rental's ledger runs from when it was quoted, as the original server's did.
    r#"
    ALTER TABLE invoices ADD COLUMN credit_secs INTEGER;
    ALTER TABLE invoices ADD COLUMN ledger_from_creation INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: the API that sold each invoice (v1, 2023, credit), for the revenue figures.
    r#"
    ALTER TABLE invoices ADD COLUMN api TEXT NOT NULL DEFAULT 'v1';
    "#,
    // 4: a rental holds an IPv4 prefix (`address` is its first address) and may hold an IPv6
    //    prefix; no two live rentals hold the same IPv6 prefix.
    r#"
    ALTER TABLE rentals ADD COLUMN prefix_len INTEGER NOT NULL DEFAULT 32;
    ALTER TABLE rentals ADD COLUMN ipv6 TEXT;
    CREATE UNIQUE INDEX rentals_live_ipv6 ON rentals(ipv6)
        WHERE released_at IS NULL AND ipv6 IS NOT NULL;
    "#,
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this program ({known})")]
    TooNew { found: i64, known: i64 },
}

pub fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
    )?;
    migrate(&conn)?;
    Ok(conn)
}

/// The schema version this program writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn migrate(conn: &Connection) -> Result<(), DbError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_events_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = open(&path).unwrap();
        drop(c);
        let c = open(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        c.execute("INSERT INTO events(at, kind) VALUES (1, 'x')", [])
            .unwrap();
        assert!(c.execute("UPDATE events SET kind = 'y'", []).is_err());
        assert!(c.execute("DELETE FROM events", []).is_err());
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(c);
        assert!(matches!(open(&path), Err(DbError::TooNew { .. })));
    }
}
