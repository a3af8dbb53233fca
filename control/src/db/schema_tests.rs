//! The schema written once holds its promises: released migrations never change, SQLite and
//! PostgreSQL end with the same schema column for column, and a database migrated from any
//! earlier version ends where a new one starts.

use super::*;
use std::collections::BTreeSet;

/// SHA-256 of each released migration's rendering (SQLite, PostgreSQL), in order. Before the
/// schema was written once the two were separate lists (`git show 256b086:control/src/db.rs`):
/// every SQLite rendering is byte for byte the released `MIGRATIONS` text, and the PostgreSQL
/// ones the released `PG_MIGRATIONS` text except for comments and blank space in 1 and 6
/// (`pg_dump --schema-only` of a database made by each: identical).
const RELEASED: &[(&str, &str)] = &[
    (
        "311b09f67266fe3396c751c18debefeea38c20729334e74d7db054374c893274",
        "c1a417139e985b63ea3b8b1b14acb40ff30a70526c44e0fe42582185fe79840d",
    ),
    (
        "15a91e2244d41c3c0a957ec0f13ee06588b437c571b23a4795122f50e08d57ed",
        "fe7ed5505340815bc512d0cb64a3f145982891cab5db0a67cab1d2803dc89eaf",
    ),
    (
        "67feb3399f6e92df25cb0a40c0742560ea67787c0f37453dd12f70870932df60",
        "67feb3399f6e92df25cb0a40c0742560ea67787c0f37453dd12f70870932df60",
    ),
    (
        "c6732041402cb97cd82f236abfb70a307005dc84b394e5174d6906c4aca30097",
        "c416a75718a3f41020eedefb425bfb4e7308cee708fdf66021fddab804c49318",
    ),
    (
        "dbfc37b4fe56b2af49726e93a0eb41be7427f4da4644652f35fe156cd5b3a298",
        "dbfc37b4fe56b2af49726e93a0eb41be7427f4da4644652f35fe156cd5b3a298",
    ),
    (
        "9ccef2a51aed3c23bffc1346b1d86d377a4d1ae281666d5942d92d96172fbee0",
        "a37e12a98decaf0335d78bee0c22d9d4cccad77906a7e75769eb939e8edd0443",
    ),
    (
        "bba0bcf86563e081f59380e36c0feaa2739696794e6c9a62cdcdbce6790b8fc4",
        "c16ca6a356c5c27f0a3af7b6bd1f05d4f90bf9c6ac79557590bf18ad43b02904",
    ),
    (
        "00e85252e1b4b49148d860a655d83166a021857aa2be8799db9774c4e7958151",
        "00e85252e1b4b49148d860a655d83166a021857aa2be8799db9774c4e7958151",
    ),
    (
        "a077919a63d8abf9b28e9d8394c287796df5c8be708db4aa5605b4d0f8e3c381",
        "f8d9a06fb253cb43bca361ce901ddae816fd3723f770781043ef1a7d15bec5fd",
    ),
    (
        "89ba753ceb5ee679b521aa81d6e6a72315b00c457c4dc7a690d2e99675b1103b",
        "3f99dba8d506c0617fd6c23ef1a43b94195166a06527b549885425c9d5f36f68",
    ),
    (
        "2def4b50dc4a58a0b8f3f08f3ee9cffbb32401049bd9ac49ece908f53bc5053c",
        "7fb2580a226d4b794c147d63cef932e25afcbe544d4e0329a07f22ee3315f9f5",
    ),
];

fn fingerprint(text: &str) -> String {
    use bitcoin::hashes::{sha256, Hash};
    sha256::Hash::hash(text.as_bytes()).to_string()
}

#[test]
fn released_migrations_never_change() {
    assert!(RELEASED.len() <= MIGRATIONS.len());
    for (i, (sqlite, postgres)) in RELEASED.iter().enumerate() {
        assert_eq!(
            fingerprint(&migration(i, Dialect::Sqlite)),
            *sqlite,
            "SQLite's migration {} changed: databases have already run it; add a new one",
            i + 1
        );
        assert_eq!(
            fingerprint(&migration(i, Dialect::Postgres)),
            *postgres,
            "PostgreSQL's migration {} changed: databases have already run it; add a new one",
            i + 1
        );
    }
}

/// A column type as a kind both databases share (SQLite's integers are 64-bit).
fn kind(table: &str, column: &str, ty: &str) -> &'static str {
    match ty.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer",
        "text" => "text",
        _ => panic!("{table}.{column}: type {ty} has no counterpart here yet; map it"),
    }
}

fn column_line(
    table: &str,
    column: &str,
    kind: &str,
    not_null: bool,
    default: Option<&str>,
    key: &str,
) -> String {
    let null = if not_null { " not null" } else { "" };
    let default = default.map(|d| format!(" default {d}")).unwrap_or_default();
    format!("{table}.{column}: {kind}{null}{default}{key}")
}

/// An index definition in words both databases' spellings reduce to: PostgreSQL's casts,
/// access method, schema and extra parentheses dropped.
fn index_words(def: &str, schema: &str) -> String {
    def.replace(&format!("{schema}."), "")
        .replace(" USING btree", "")
        .replace("::text", "")
        .replace("::bigint", "")
        .replace(['(', ')'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

fn strings(c: &Connection, sql: &str) -> Vec<Vec<Option<String>>> {
    c.query_all(sql, [])
        .unwrap()
        .iter()
        .map(|r| {
            (0..)
                .map_while(|i| match r.get::<_, crate::sql::Value>(i) {
                    Ok(crate::sql::Value::Null) => Some(None),
                    Ok(crate::sql::Value::Text(s)) => Some(Some(s)),
                    Ok(crate::sql::Value::Int(n)) => Some(Some(n.to_string())),
                    Ok(v) => panic!("{sql}: unexpected {v:?}"),
                    Err(_) => None,
                })
                .collect()
        })
        .collect()
}

/// The schema as lines to compare: every column (kind, nullability, default, key), index
/// and foreign key. Check constraints and the append-only trigger are compared by what they
/// refuse (`postgres_has_the_same_schema_and_refuses_what_sqlite_refuses`).
fn describe(c: &Connection) -> BTreeSet<String> {
    if c.is_postgres() {
        describe_postgres(c)
    } else {
        describe_sqlite(c)
    }
}

fn describe_sqlite(c: &Connection) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let tables = strings(
        c,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    );
    for t in tables.iter().map(|r| r[0].clone().unwrap()) {
        let sql = format!(
            r#"SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info('{t}')"#
        );
        for r in strings(c, &sql) {
            let (name, ty) = (r[0].clone().unwrap(), r[1].clone().unwrap());
            let pk = r[4].as_deref() != Some("0");
            // `INTEGER PRIMARY KEY` is the rowid: assigned when none is given, as an identity.
            let key = match (pk, ty.as_str()) {
                (true, "INTEGER") => " primary key generated",
                (true, _) => " primary key",
                _ => "",
            };
            // A key is never null (SQLite would allow a null TEXT key; the control never
            // writes one).
            let not_null = r[2].as_deref() == Some("1") || pk;
            out.insert(column_line(
                &t,
                &name,
                kind(&t, &name, &ty),
                not_null,
                r[3].as_deref(),
                key,
            ));
        }
        let sql = format!(r#"SELECT "from", "table", "to" FROM pragma_foreign_key_list('{t}')"#);
        for r in strings(c, &sql) {
            let [from, table, to] = [0, 1, 2].map(|i| r[i].clone().unwrap());
            out.insert(format!(
                "{t}: FOREIGN KEY ({from}) REFERENCES {table}({to})"
            ));
        }
    }
    let indexes = strings(
        c,
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    );
    for r in indexes {
        let (name, sql) = (r[0].clone().unwrap(), r[1].clone().unwrap());
        out.insert(format!("index {name}: {}", index_words(&sql, "main")));
    }
    out
}

fn describe_postgres(c: &Connection) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let schema: String = c
        .query_row("SELECT current_schema()::text", [], |r| r.get(0))
        .unwrap();
    // `schema_version` is PostgreSQL's PRAGMA user_version; `invoices.rowid` its stand-in
    // for SQLite's implicit rowid.
    let columns = strings(
        c,
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text,
                c.column_default::text, c.is_identity::text,
                EXISTS (SELECT 1 FROM information_schema.table_constraints k
                        JOIN information_schema.key_column_usage u
                          ON u.constraint_schema = k.constraint_schema
                         AND u.constraint_name = k.constraint_name
                        WHERE k.constraint_type = 'PRIMARY KEY'
                          AND k.table_schema = c.table_schema AND k.table_name = c.table_name
                          AND u.column_name = c.column_name)
         FROM information_schema.columns c
         WHERE c.table_schema = current_schema() AND c.table_name <> 'schema_version'
           AND NOT (c.table_name = 'invoices' AND c.column_name = 'rowid')",
    );
    for r in columns {
        let [t, name, ty, nullable, default, identity, pk] =
            [0, 1, 2, 3, 4, 5, 6].map(|i| r[i].clone());
        let (t, name) = (t.unwrap(), name.unwrap());
        let key = match (pk.as_deref(), identity.as_deref()) {
            (Some("1"), Some("YES")) => " primary key generated",
            (Some("1"), _) => " primary key",
            _ => "",
        };
        let default = default.map(|d| d.replace("::text", "").replace("::bigint", ""));
        out.insert(column_line(
            &t,
            &name,
            kind(&t, &name, &ty.unwrap()),
            nullable.as_deref() == Some("NO"),
            default.as_deref(),
            key,
        ));
    }
    let foreign_keys = strings(
        c,
        "SELECT t.relname::text, pg_get_constraintdef(k.oid)
         FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE k.contype = 'f' AND n.nspname = current_schema()",
    );
    for r in foreign_keys {
        let (t, def) = (r[0].clone().unwrap(), r[1].clone().unwrap());
        out.insert(format!("{t}: {}", def.replace(&format!("{schema}."), "")));
    }
    let indexes = strings(
        c,
        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid)
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema() AND NOT x.indisprimary",
    );
    for r in indexes {
        let (name, def) = (r[0].clone().unwrap(), r[1].clone().unwrap());
        out.insert(format!("index {name}: {}", index_words(&def, &schema)));
    }
    out
}

fn assert_same(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: only here {extra:#?}, missing {missing:#?}"
    );
}

fn test_pg() -> Option<String> {
    std::env::var("STATICWIRE_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A SQLite database that stopped at `version`, then opened by this program.
fn sqlite_from_version(dir: &Path, version: usize) -> Connection {
    let path = dir.join(format!("v{version}.sqlite"));
    let raw = rusqlite::Connection::open(&path).unwrap();
    for i in 0..version {
        raw.execute_batch(&migration(i, Dialect::Sqlite)).unwrap();
    }
    raw.execute_batch(&format!("PRAGMA user_version = {version}"))
        .unwrap();
    drop(raw);
    open(&path).unwrap()
}

/// A PostgreSQL schema that stopped at `version`, then migrated by this program.
fn postgres_from_version(url: &str, version: usize) -> Connection {
    let c = empty_test_schema(url).unwrap();
    c.execute_batch("CREATE TABLE schema_version (version BIGINT NOT NULL)")
        .unwrap();
    for i in 0..version {
        c.execute_batch(&migration(i, Dialect::Postgres)).unwrap();
    }
    c.execute("INSERT INTO schema_version(version) VALUES (?1)", [version])
        .unwrap();
    migrate(&c).unwrap();
    c
}

fn sqlite_master(c: &Connection) -> Vec<Vec<Option<String>>> {
    strings(
        c,
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    )
}

#[test]
fn both_databases_have_the_same_schema_from_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let lite = open(&dir.path().join("db.sqlite")).unwrap();
    let want = describe(&lite);
    for table in [
        "addresses",
        "rentals",
        "invoices",
        "payments",
        "events",
        "dev_invoices",
        "meta",
        "leases",
    ] {
        assert!(
            want.iter().any(|l| l.starts_with(&format!("{table}."))),
            "{table} described: {want:#?}"
        );
    }
    assert!(want.contains("rentals.id: integer not null primary key generated"));
    assert!(want.contains("rentals.address: text"), "nullable since 6");
    assert!(want.contains("invoices.api: text not null default 'v1'"));
    assert!(want.contains("events.detail: text not null default '{}'"));
    assert!(want.contains("meta.key: text not null primary key"));
    assert!(want.contains("invoices: FOREIGN KEY (rental_id) REFERENCES rentals(id)"));
    assert!(want.contains(
        "index rentals_paid_until: create index rentals_paid_until on rentals \
         started_at + credited_secs where released_at is null and started_at is not null"
    ));
    // Every earlier version migrates to the same database, to the byte on SQLite.
    for version in 0..MIGRATIONS.len() {
        let old = sqlite_from_version(dir.path(), version);
        assert_same(
            &format!("SQLite from version {version}"),
            &describe(&old),
            &want,
        );
        assert_eq!(
            sqlite_master(&old),
            sqlite_master(&lite),
            "from version {version}"
        );
    }
    let Some(url) = test_pg() else {
        eprintln!("SKIPPED (PostgreSQL half): STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
        return;
    };
    for version in 0..=MIGRATIONS.len() {
        let pg = postgres_from_version(&url, version);
        assert_same(
            &format!("PostgreSQL from version {version}"),
            &describe(&pg),
            &want,
        );
    }
}

#[test]
fn postgres_has_the_same_schema_and_refuses_what_sqlite_refuses() {
    let Some(url) = test_pg() else {
        eprintln!("SKIPPED: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = open(&dir.path().join("db.sqlite")).unwrap();
    let pg = open_test_schema(&url).unwrap();
    assert_same("PostgreSQL", &describe(&pg), &describe(&lite));
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
        c.execute(
            "INSERT INTO addresses(address, num, router) VALUES ('203.0.113.1', 1, 'wg0')",
            [],
        )
        .unwrap();
        c.execute("INSERT INTO rentals(id, public_key, address, router, created_at) VALUES (1, 'k', '203.0.113.1', 'wg0', 1)", [])
            .unwrap();
        for (purpose, state) in [("gift", "open"), ("renewal", "lost")] {
            assert!(
                c.execute("INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at) VALUES ('h', 1, 'b', 1, ?1, 1, ?2, 1, 2)", [purpose, state])
                    .is_err(),
                "check constraints hold: {purpose} {state}"
            );
        }
        c.execute("INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at) VALUES ('h', 1, 'b', 1, 'renewal', 1, 'open', 1, 2)", [])
            .unwrap();
    }
    pg.execute("DELETE FROM schema_version", []).unwrap();
    pg.execute("INSERT INTO schema_version(version) VALUES (99)", [])
        .unwrap();
    assert!(matches!(migrate(&pg), Err(DbError::TooNew { .. })));
}
