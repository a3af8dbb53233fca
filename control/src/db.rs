//! SQLite: WAL, foreign keys, versioned migrations. The database is the source of truth; every
//! state change is one transaction, so `kill -9` at any point loses nothing.

use crate::sql::{Connection, OptionalExtension};
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
    // 5: leases: which control replica runs a router's expiries and reconciliation.
    r#"
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    "#,
    // 6: IPv6-only rentals have no IPv4 address. SQLite cannot drop a NOT NULL, so the table
    //    is rebuilt (SQLite's own procedure: foreign keys off, then checked before commit).
    r#"
    -- foreign keys off
    CREATE TABLE rentals_new (
        id             INTEGER PRIMARY KEY,
        public_key     TEXT NOT NULL,
        address        TEXT REFERENCES addresses(address),
        router         TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        started_at     INTEGER,
        credited_secs  INTEGER NOT NULL DEFAULT 0,
        suspended      INTEGER NOT NULL DEFAULT 0,
        released_at    INTEGER,
        release_reason TEXT,
        prefix_len     INTEGER NOT NULL DEFAULT 32,
        ipv6           TEXT
    );
    INSERT INTO rentals_new SELECT id, public_key, address, router, created_at, started_at,
        credited_secs, suspended, released_at, release_reason, prefix_len, ipv6 FROM rentals;
    DROP TABLE rentals;
    ALTER TABLE rentals_new RENAME TO rentals;
    CREATE UNIQUE INDEX rentals_live_key ON rentals(public_key) WHERE released_at IS NULL;
    CREATE UNIQUE INDEX rentals_live_address ON rentals(address) WHERE released_at IS NULL;
    CREATE UNIQUE INDEX rentals_live_ipv6 ON rentals(ipv6)
        WHERE released_at IS NULL AND ipv6 IS NOT NULL;
    "#,
    // 7: a million rentals: the deadline queue and every per-request query through an index.
    r#"
    -- The status of a key's latest rental, live or not.
    CREATE INDEX rentals_key ON rentals(public_key, id);
    -- The deadline queue: when each started live rental's paid time runs out (its peer
    -- leaves the router then; the rental is released a reservation later).
    CREATE INDEX rentals_paid_until ON rentals(started_at + credited_secs)
        WHERE released_at IS NULL AND started_at IS NOT NULL;
    -- Unpaid holds: by age (holds a crash left without an invoice) and by the client that
    -- asked (the per-client cap, kept across restarts).
    ALTER TABLE rentals ADD COLUMN client TEXT;
    CREATE INDEX rentals_unpaid_age ON rentals(created_at)
        WHERE started_at IS NULL AND released_at IS NULL;
    CREATE INDEX rentals_unpaid_client ON rentals(client)
        WHERE started_at IS NULL AND released_at IS NULL;
    -- When each open invoice is next asked about at the Lightning node (milliseconds).
    ALTER TABLE invoices ADD COLUMN next_check_ms BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX invoices_due ON invoices(next_check_ms) WHERE state = 'open';
    -- The same rows as invoices_due: left, a planner may take it and sort every open invoice.
    DROP INDEX invoices_open;
    CREATE INDEX events_rental ON events(rental_id);
    CREATE INDEX payments_rental ON payments(rental_id);
    "#,
    // 8: placement reads a router's free addresses in order and its live prefixes.
    r#"
    CREATE INDEX addresses_router_num ON addresses(router, num);
    CREATE INDEX rentals_live_prefixes ON rentals(router)
        WHERE released_at IS NULL AND prefix_len < 32;
    "#,
];

/// The same schema for PostgreSQL, version for version (integers as BIGINT; `invoices.rowid`
/// stands in for SQLite's implicit one, which the queries order by).
const PG_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE addresses (
        address        TEXT PRIMARY KEY,
        num            BIGINT NOT NULL,
        router         TEXT NOT NULL,
        cooldown_until BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE rentals (
        id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        public_key     TEXT NOT NULL,
        address        TEXT NOT NULL REFERENCES addresses(address),
        router         TEXT NOT NULL,
        created_at     BIGINT NOT NULL,
        started_at     BIGINT,
        credited_secs  BIGINT NOT NULL DEFAULT 0,
        suspended      BIGINT NOT NULL DEFAULT 0,
        released_at    BIGINT,
        release_reason TEXT
    );
    CREATE UNIQUE INDEX rentals_live_key ON rentals(public_key) WHERE released_at IS NULL;
    CREATE UNIQUE INDEX rentals_live_address ON rentals(address) WHERE released_at IS NULL;
    CREATE TABLE invoices (
        payment_hash TEXT PRIMARY KEY,
        rowid        BIGSERIAL,
        rental_id    BIGINT NOT NULL REFERENCES rentals(id),
        bolt11       TEXT NOT NULL,
        amount_msat  BIGINT NOT NULL,
        purpose      TEXT NOT NULL CHECK (purpose IN ('activation', 'renewal')),
        months       BIGINT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('open', 'settled', 'expired')),
        created_at   BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL,
        settled_at   BIGINT
    );
    CREATE INDEX invoices_open ON invoices(state) WHERE state = 'open';
    CREATE INDEX invoices_rental ON invoices(rental_id);
    CREATE TABLE payments (
        payment_hash  TEXT PRIMARY KEY REFERENCES invoices(payment_hash),
        rental_id     BIGINT NOT NULL REFERENCES rentals(id),
        amount_msat   BIGINT NOT NULL,
        credited_secs BIGINT NOT NULL,
        settled_at    BIGINT NOT NULL
    );
    CREATE TABLE events (
        id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at        BIGINT NOT NULL,
        rental_id BIGINT REFERENCES rentals(id),
        kind      TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
    CREATE TRIGGER events_append_only_u BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_append_only();
    CREATE TABLE dev_invoices (
        payment_hash TEXT PRIMARY KEY,
        preimage     TEXT NOT NULL,
        bolt11       TEXT NOT NULL,
        amount_msat  BIGINT NOT NULL,
        expires_at   BIGINT NOT NULL,
        settled_at   BIGINT
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    r#"
    ALTER TABLE invoices ADD COLUMN credit_secs BIGINT;
    ALTER TABLE invoices ADD COLUMN ledger_from_creation BIGINT NOT NULL DEFAULT 0;
    "#,
    r#"
    ALTER TABLE invoices ADD COLUMN api TEXT NOT NULL DEFAULT 'v1';
    "#,
    r#"
    ALTER TABLE rentals ADD COLUMN prefix_len BIGINT NOT NULL DEFAULT 32;
    ALTER TABLE rentals ADD COLUMN ipv6 TEXT;
    CREATE UNIQUE INDEX rentals_live_ipv6 ON rentals(ipv6)
        WHERE released_at IS NULL AND ipv6 IS NOT NULL;
    "#,
    // 5: leases: which control replica runs a router's expiries and reconciliation.
    r#"
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    "#,
    r#"
    ALTER TABLE rentals ALTER COLUMN address DROP NOT NULL;
    "#,
    // 7: as SQLite's 7 (an expression index needs its own parentheses here).
    r#"
    -- The status of a key's latest rental, live or not.
    CREATE INDEX rentals_key ON rentals(public_key, id);
    -- The deadline queue: when each started live rental's paid time runs out (its peer
    -- leaves the router then; the rental is released a reservation later).
    CREATE INDEX rentals_paid_until ON rentals((started_at + credited_secs))
        WHERE released_at IS NULL AND started_at IS NOT NULL;
    -- Unpaid holds: by age (holds a crash left without an invoice) and by the client that
    -- asked (the per-client cap, kept across restarts).
    ALTER TABLE rentals ADD COLUMN client TEXT;
    CREATE INDEX rentals_unpaid_age ON rentals(created_at)
        WHERE started_at IS NULL AND released_at IS NULL;
    CREATE INDEX rentals_unpaid_client ON rentals(client)
        WHERE started_at IS NULL AND released_at IS NULL;
    -- When each open invoice is next asked about at the Lightning node (milliseconds).
    ALTER TABLE invoices ADD COLUMN next_check_ms BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX invoices_due ON invoices(next_check_ms) WHERE state = 'open';
    -- The same rows as invoices_due: left, a planner may take it and sort every open invoice.
    DROP INDEX invoices_open;
    CREATE INDEX events_rental ON events(rental_id);
    CREATE INDEX payments_rental ON payments(rental_id);
    "#,
    r#"
    CREATE INDEX addresses_router_num ON addresses(router, num);
    CREATE INDEX rentals_live_prefixes ON rentals(router)
        WHERE released_at IS NULL AND prefix_len < 32;
    "#,
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Sql(#[from] crate::sql::Error),
    #[error("database schema version {found} is newer than this program ({known})")]
    TooNew { found: i64, known: i64 },
}

/// Opens (creating and migrating) the SQLite database at `path`.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    Ok(Connection::Sqlite(open_sqlite(path)?))
}

/// Opens the database a URL names: `postgres://...` or `postgresql://...` for PostgreSQL,
/// anything else is a SQLite file path (an optional `sqlite://` prefix is dropped).
pub fn open_url(url: &str) -> Result<Connection, DbError> {
    if is_postgres_url(url) {
        let conn = Connection::Postgres(crate::sql::Pg::connect(url, None)?);
        migrate(&conn)?;
        Ok(conn)
    } else {
        open(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The store of an in-process test: SQLite at `path`, or, when STATICWIRE_TEST_PG names a
/// PostgreSQL server, a fresh schema of its own there (the suite runs against both).
#[cfg(test)]
pub fn open_store(path: &Path) -> Result<Connection, DbError> {
    if let Ok(url) = std::env::var("STATICWIRE_TEST_PG") {
        if !url.is_empty() {
            return open_test_schema(&url);
        }
    }
    open(path)
}

/// Whether this test run puts the store on PostgreSQL (STATICWIRE_TEST_PG).
#[cfg(test)]
pub fn testing_postgres() -> bool {
    std::env::var("STATICWIRE_TEST_PG").is_ok_and(|u| !u.is_empty())
}

/// A new, empty schema on the PostgreSQL server at `url`, migrated, for one test.
#[cfg(test)]
pub fn open_test_schema(url: &str) -> Result<Connection, DbError> {
    use rand::RngCore;
    let schema = format!("t{:016x}", rand::thread_rng().next_u64());
    let setup = Connection::Postgres(crate::sql::Pg::connect(url, None)?);
    setup.execute_batch(&format!("CREATE SCHEMA {schema}"))?;
    drop(setup);
    let conn = Connection::Postgres(crate::sql::Pg::connect(
        url,
        Some(format!("SET search_path TO {schema}")),
    )?);
    migrate(&conn)?;
    Ok(conn)
}

/// The raw SQLite connection, migrated (backups and restores work on it).
pub fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
    )?;
    migrate_sqlite(&conn)?;
    Ok(conn)
}

/// The schema version this program writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn migrate(conn: &Connection) -> Result<(), DbError> {
    match conn {
        Connection::Sqlite(c) => migrate_sqlite(c),
        Connection::Postgres(_) => migrate_postgres(conn),
    }
}

pub fn migrate_sqlite(conn: &rusqlite::Connection) -> Result<(), DbError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        // A table rebuild drops a table others refer to: foreign keys are switched off around
        // it (they cannot be inside a transaction) and every reference is checked before the
        // commit.
        let rebuild = sql.contains("-- foreign keys off");
        if rebuild {
            conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        }
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        if rebuild {
            let broken: i64 =
                tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
            if broken > 0 {
                drop(tx);
                conn.execute_batch("PRAGMA foreign_keys = ON")?;
                return Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                    Some(format!("migration {}: {broken} broken references", i + 1)),
                )));
            }
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        if rebuild {
            conn.execute_batch("PRAGMA foreign_keys = ON")?;
        }
    }
    Ok(())
}

/// PostgreSQL keeps the version in a table; replicas starting together take turns through
/// an advisory lock, so each migration runs once.
fn migrate_postgres(conn: &Connection) -> Result<(), DbError> {
    const MIGRATION_LOCK: i64 = 0x5357_4d49; // "SWMI"
    let tx = conn.unchecked_transaction()?;
    tx.lock_for_transaction(MIGRATION_LOCK)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let known = PG_MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version(version) VALUES (?1)",
            [i as i64 + 1],
        )?;
    }
    tx.commit()?;
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
    fn the_rentals_rebuild_keeps_rows_references_and_constraints() {
        // A version 5 database with a rental, its invoice and events.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        for sql in &MIGRATIONS[..5] {
            c.execute_batch(sql).unwrap();
        }
        c.execute_batch(
            "PRAGMA user_version = 5;
             INSERT INTO addresses(address, num, router) VALUES ('203.0.113.1', 1, 'wg0');
             INSERT INTO rentals(id, public_key, address, router, created_at, prefix_len)
                 VALUES (7, 'k', '203.0.113.1', 'wg0', 1, 32);
             INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at)
                 VALUES ('h', 7, 'b', 1, 'activation', 1, 'open', 1, 2);
             INSERT INTO events(at, rental_id, kind) VALUES (1, 7, 'rented');",
        )
        .unwrap();
        drop(c);
        let c = open(&path).unwrap();
        let r = crate::store::rental_by_id(&c, 7).unwrap();
        assert_eq!(
            (r.public_key.as_str(), r.address.as_str()),
            ("k", "203.0.113.1")
        );
        assert_eq!(crate::store::invoices_of(&c, 7).unwrap().len(), 1);
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys back on");
        // Still one live rental per key, references still checked, and no address needed.
        assert!(crate::store::insert_rental(&c, "k", "203.0.113.1", "wg0", 2).is_err());
        assert!(c
            .execute("INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at) VALUES ('x', 99, 'b', 1, 'renewal', 1, 'open', 1, 2)", [])
            .is_err());
        crate::store::insert_rental_with(&c, "v6", "", 32, Some("2001:db8::/64"), "wg0", 3)
            .unwrap();
        assert_eq!(
            crate::store::live_rental(&c, "v6")
                .unwrap()
                .unwrap()
                .address,
            ""
        );
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

    /// Tables and their columns, as the database reports them.
    fn shape(c: &Connection) -> std::collections::BTreeMap<String, Vec<String>> {
        let tables: Vec<String> = if c.is_postgres() {
            c.prepare("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> 'schema_version'")
        } else {
            c.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<crate::sql::Result<_>>()
        .unwrap();
        tables
            .into_iter()
            .map(|t| {
                let mut cols: Vec<String> = if c.is_postgres() {
                    c.prepare("SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?1 AND column_name <> 'rowid'")
                        .unwrap()
                        .query_map([t.as_str()], |r| r.get(0))
                } else {
                    c.prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
                        .unwrap()
                        .query_map([], |r| r.get(0))
                }
                .unwrap()
                .collect::<crate::sql::Result<_>>()
                .unwrap();
                cols.sort();
                (t, cols)
            })
            .collect()
    }

    #[test]
    fn postgres_has_the_same_schema_and_refuses_what_sqlite_refuses() {
        let Ok(url) = std::env::var("STATICWIRE_TEST_PG") else {
            eprintln!("SKIPPED: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
            return;
        };
        assert_eq!(
            PG_MIGRATIONS.len(),
            MIGRATIONS.len(),
            "one PostgreSQL migration per SQLite one"
        );
        let dir = tempfile::tempdir().unwrap();
        let lite = open(&dir.path().join("db.sqlite")).unwrap();
        let pg = open_test_schema(&url).unwrap();
        assert_eq!(shape(&pg), shape(&lite));
        // Migrating again is a no-op.
        migrate(&pg).unwrap();
        for c in [&lite, &pg] {
            c.execute("INSERT INTO events(at, kind) VALUES (1, 'x')", [])
                .unwrap();
            assert!(c.execute("UPDATE events SET kind = 'y'", []).is_err());
            assert!(c.execute("DELETE FROM events", []).is_err());
            assert!(
                c.execute("INSERT INTO payments(payment_hash, rental_id, amount_msat, credited_secs, settled_at) VALUES ('x', 1, 1, 1, 1)", [])
                    .is_err(),
                "foreign keys hold"
            );
        }
        pg.execute("DELETE FROM schema_version", []).unwrap();
        pg.execute("INSERT INTO schema_version(version) VALUES (99)", [])
            .unwrap();
        assert!(matches!(migrate(&pg), Err(DbError::TooNew { .. })));
    }
}
