//! The schema, version by version, written once for both databases: `sql::render_schema`
//! spells each migration for SQLite or PostgreSQL.
//!
//! The text is SQLite's spelling (its rendering is what is written here, less the other
//! database's lines); a line marked `--sqlite: ` or `--postgres: ` is that database's alone.
//! The marked places:
//! - version 1: PostgreSQL's `invoices.rowid` stands in for SQLite's implicit one, which the
//!   queries order by; `events` is append-only through a trigger whose body is SQL on SQLite
//!   and a function on PostgreSQL;
//! - version 6: SQLite cannot drop a NOT NULL, so it rebuilds the table; PostgreSQL drops it;
//! - version 7: PostgreSQL wants an index expression in parentheses of its own.
//!
//! A released migration never changes: databases on providers' disks have run it. Each one's
//! rendering is fingerprinted in `schema_tests`, and both databases' resulting schemas are
//! compared there column for column.

use crate::sql::{render_schema, Dialect};

/// Each entry upgrades the schema by one version (SQLite: `PRAGMA user_version`; PostgreSQL:
/// the `schema_version` table).
pub(super) const MIGRATIONS: &[&str] = &[
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
        --postgres: rowid        BIGSERIAL,
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
    --sqlite: CREATE TRIGGER events_append_only_u BEFORE UPDATE ON events
    --sqlite:     BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    --sqlite: CREATE TRIGGER events_append_only_d BEFORE DELETE ON events
    --sqlite:     BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    --postgres: CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS
    --postgres:     $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
    --postgres: CREATE TRIGGER events_append_only_u BEFORE UPDATE OR DELETE ON events
    --postgres:     FOR EACH ROW EXECUTE FUNCTION events_append_only();
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
    --sqlite: CREATE TABLE rentals_new (
    --sqlite:     id             INTEGER PRIMARY KEY,
    --sqlite:     public_key     TEXT NOT NULL,
    --sqlite:     address        TEXT REFERENCES addresses(address),
    --sqlite:     router         TEXT NOT NULL,
    --sqlite:     created_at     INTEGER NOT NULL,
    --sqlite:     started_at     INTEGER,
    --sqlite:     credited_secs  INTEGER NOT NULL DEFAULT 0,
    --sqlite:     suspended      INTEGER NOT NULL DEFAULT 0,
    --sqlite:     released_at    INTEGER,
    --sqlite:     release_reason TEXT,
    --sqlite:     prefix_len     INTEGER NOT NULL DEFAULT 32,
    --sqlite:     ipv6           TEXT
    --sqlite: );
    --sqlite: INSERT INTO rentals_new SELECT id, public_key, address, router, created_at, started_at,
    --sqlite:     credited_secs, suspended, released_at, release_reason, prefix_len, ipv6 FROM rentals;
    --sqlite: DROP TABLE rentals;
    --sqlite: ALTER TABLE rentals_new RENAME TO rentals;
    --sqlite: CREATE UNIQUE INDEX rentals_live_key ON rentals(public_key) WHERE released_at IS NULL;
    --sqlite: CREATE UNIQUE INDEX rentals_live_address ON rentals(address) WHERE released_at IS NULL;
    --sqlite: CREATE UNIQUE INDEX rentals_live_ipv6 ON rentals(ipv6)
    --sqlite:     WHERE released_at IS NULL AND ipv6 IS NOT NULL;
    --postgres: ALTER TABLE rentals ALTER COLUMN address DROP NOT NULL;
    "#,
    // 7: a million rentals: the deadline queue and every per-request query through an index.
    r#"
    -- The status of a key's latest rental, live or not.
    CREATE INDEX rentals_key ON rentals(public_key, id);
    -- The deadline queue: when each started live rental's paid time runs out (its peer
    -- leaves the router then; the rental is released a reservation later).
    --sqlite: CREATE INDEX rentals_paid_until ON rentals(started_at + credited_secs)
    --postgres: CREATE INDEX rentals_paid_until ON rentals((started_at + credited_secs))
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
    // 9: proofs of key possession accepted for requests that change state (PROTOCOL.md 3.1),
    //    shared by the replicas so a proof one accepted is a replay at every other; rows are
    //    deleted once their time is outside the freshness window.
    r#"
    CREATE TABLE proofs_seen (
        mac TEXT PRIMARY KEY,
        ts  INTEGER NOT NULL
    );
    CREATE INDEX proofs_seen_ts ON proofs_seen(ts);
    "#,
    // 10: the changes to unpaid holds in the order they were made (each under the allocation
    //     lock), so a replica on PostgreSQL reads what the others changed instead of every
    //     unpaid hold before it places one (`crate::unpaid`). Unused on SQLite.
    r#"
    CREATE TABLE unpaid_changes (
        seq       INTEGER PRIMARY KEY,
        rental_id INTEGER NOT NULL
    );
    "#,
    // 11: reverse DNS: the name each customer asked for per address (control/src/rdns), from
    //     which the full compare rebuilds the reverse zones on the provider's DNS server.
    r#"
    CREATE TABLE ptr_records (
        address   TEXT PRIMARY KEY,
        rental_id INTEGER NOT NULL REFERENCES rentals(id),
        name      TEXT NOT NULL,
        set_at    INTEGER NOT NULL,
        published INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX ptr_records_rental ON ptr_records(rental_id);
    "#,
    // 12: the dev node numbers its settlements, as LND's settle index does, so the control
    //     follows them as a stream (`lightning::dev`) instead of asking about each invoice.
    r#"
    ALTER TABLE dev_invoices ADD COLUMN settle_index INTEGER;
    CREATE UNIQUE INDEX dev_invoices_settle_index ON dev_invoices(settle_index)
        WHERE settle_index IS NOT NULL;
    "#,
];

/// Migration `index` (0-based: it makes version `index + 1`), spelled for `dialect`.
pub(super) fn migration(index: usize, dialect: Dialect) -> String {
    render_schema(MIGRATIONS[index], dialect)
}
