//! The store's database, SQLite or PostgreSQL: opened, migrated (the schema is in
//! `migrations`, written once for both), and the `meta` table. SQLite runs with WAL and
//! foreign keys. The database is the source of truth; every state change is one transaction,
//! so `kill -9` at any point loses nothing.

mod migrations;
mod proofs;
#[cfg(test)]
mod schema_tests;

use crate::sql::{Connection, Dialect, OptionalExtension};
use migrations::{migration, MIGRATIONS};
pub use proofs::{remember_proof, remember_proof_alone};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Sql(#[from] crate::sql::Error),
    #[error("database schema version {found} is newer than this program ({known})")]
    TooNew { found: i64, known: i64 },
    /// A table rebuild would leave rows pointing at nothing; it was rolled back.
    #[error("database: migration {version}: {broken} broken references")]
    BrokenReferences { version: i64, broken: i64 },
}

/// Opens (creating and migrating) the SQLite database at `path`.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    Ok(Connection::Sqlite(open_sqlite(path)?))
}

/// Read-only connections a control keeps for status lookups: one per core of the machine this
/// was measured on; more only queue on the same disk.
pub const READERS: usize = 2;

/// Read-only connections to the SQLite file a URL names, for reads that need only committed
/// state (WAL: a reader never waits for the writer's batch or its fsync, and sees nothing a
/// batch has not committed). None for PostgreSQL.
pub fn open_readers(url: &str, n: usize) -> Result<Vec<Connection>, DbError> {
    let file = url.strip_prefix("sqlite://").unwrap_or(url);
    // An in-memory database is the writer's alone: another connection would open an empty one.
    if crate::config::is_postgres_url(url) || file.is_empty() || file.contains(":memory:") {
        return Ok(Vec::new());
    }
    let path = Path::new(file);
    (0..n)
        .map(|_| {
            let conn = connect_sqlite(path)?;
            conn.execute_batch("PRAGMA query_only = ON;")?;
            Ok(Connection::Sqlite(conn))
        })
        .collect()
}

/// Opens the database a URL names: `postgres://...` or `postgresql://...` for PostgreSQL,
/// anything else is a SQLite file path (an optional `sqlite://` prefix is dropped).
pub fn open_url(url: &str) -> Result<Connection, DbError> {
    if crate::config::is_postgres_url(url) {
        let conn = Connection::Postgres(crate::sql::Pg::connect(url, None)?);
        migrate(&conn)?;
        Ok(conn)
    } else {
        open(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
    }
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
    let conn = empty_test_schema(url)?;
    migrate(&conn)?;
    Ok(conn)
}

/// A new schema on the PostgreSQL server at `url` with nothing in it, not even migrations.
#[cfg(test)]
fn empty_test_schema(url: &str) -> Result<Connection, DbError> {
    use rand::RngCore;
    let schema = format!("t{:016x}", rand::thread_rng().next_u64());
    let setup = Connection::Postgres(crate::sql::Pg::connect(url, None)?);
    setup.execute_batch(&format!("CREATE SCHEMA {schema}"))?;
    drop(setup);
    let conn = Connection::Postgres(crate::sql::Pg::connect(
        url,
        Some(format!("SET search_path TO {schema}")),
    )?);
    Ok(conn)
}

/// Prepared statements kept per SQLite connection (each a few KiB).
const STATEMENT_CACHE: usize = 512;

/// A connection to the SQLite file at `path` as every one of the control's is set up: it
/// waits for a busy database, and keeps its prepared statements (a rent alone runs some
/// twenty distinct statements, the service loop and the views dozens more: rusqlite's
/// default cache of 16 would prepare most of them again each time).
fn connect_sqlite(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The raw SQLite connection, migrated (backups and restores work on it).
pub fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, DbError> {
    let conn = connect_sqlite(path)?;
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
    for i in version as usize..MIGRATIONS.len() {
        let sql = migration(i, Dialect::Sqlite);
        // A table rebuild drops a table others refer to: foreign keys are switched off around
        // it (they cannot be inside a transaction) and every reference is checked before the
        // commit.
        let rebuild = sql.contains("-- foreign keys off");
        if rebuild {
            conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        }
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(&sql)?;
        if rebuild {
            let broken: i64 =
                tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
            if broken > 0 {
                drop(tx);
                conn.execute_batch("PRAGMA foreign_keys = ON")?;
                return Err(DbError::BrokenReferences {
                    version: i as i64 + 1,
                    broken,
                });
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
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    for i in version as usize..MIGRATIONS.len() {
        tx.execute_batch(&migration(i, Dialect::Postgres))?;
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
        for i in 0..5 {
            c.execute_batch(&migration(i, Dialect::Sqlite)).unwrap();
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
    fn a_rebuild_that_would_break_references_is_rolled_back() {
        // A version 5 database whose rental points at an address that is not there (written
        // with foreign keys off): the rebuild of 6 finds it and keeps version 5.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = rusqlite::Connection::open(&path).unwrap();
        for i in 0..5 {
            c.execute_batch(&migration(i, Dialect::Sqlite)).unwrap();
        }
        c.execute_batch(
            "PRAGMA user_version = 5;
             PRAGMA foreign_keys = OFF;
             INSERT INTO rentals(id, public_key, address, router, created_at)
                 VALUES (7, 'k', '203.0.113.9', 'wg0', 1);",
        )
        .unwrap();
        drop(c);
        assert!(matches!(
            open(&path),
            Err(DbError::BrokenReferences {
                version: 6,
                broken: 1
            })
        ));
        let c = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 5);
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
