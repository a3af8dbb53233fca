//! Moving from one host on SQLite to PostgreSQL with the real binary: rentals made and paid on
//! SQLite, `migrate --to postgres://...` (refused while serving, refused into a database in
//! use), then the control on PostgreSQL answers the same rentals with the same ledger. Needs
//! STATICWIRE_TEST_PG (ops/test.sh starts a server); says SKIPPED without it.

use serde_json::{json, Value};
use staticwire_control::testkit::{ProcessBuilder, ProcessConfig};
use std::process::Output;

fn migrate(cfg: &ProcessConfig, to: &str) -> Output {
    cfg.command(&["migrate", "--to", to]).output().unwrap()
}

fn key(i: u8) -> String {
    staticwire_control::proving::hold([i + 9; 32])
}

#[test]
fn a_sqlite_host_moves_to_postgres_with_its_ledger() {
    let Ok(server) = std::env::var("STATICWIRE_TEST_PG") else {
        eprintln!("SKIPPED a_sqlite_host_moves_to_postgres_with_its_ledger: STATICWIRE_TEST_PG is not set");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db_name = format!("swt_migrate_{}", std::process::id());
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .unwrap();
    let url = format!("{}/{db_name}", server.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let routers = format!(
        "[[routers]]\nname = \"wg0\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\n\
         pools = [\"203.0.113.0/27\"]\nipv6_pool = \"2001:db8:100::/48\"\n",
        dir.path().join("none.sock").display()
    );
    // Both on one data dir (the keys); each start listens on a port of its own.
    let config = |file: &str, text: String| {
        ProcessBuilder::new(dir.path(), &text)
            .file(file)
            .listen_flag()
            .arg("--dev-hooks")
            .write()
    };
    let head = "invoice_poll_millis = 50\n";
    let sqlite_cfg = config("sqlite.toml", format!("{head}{routers}"));
    let pg_cfg = config("pg.toml", format!("{head}database = \"{url}\"\n{routers}"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = staticwire_control::proving::Client::new();
    let call = |base: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        rt.block_on(async {
            let r = match body {
                Some(b) => http.post(format!("{base}{path}")).json(&b).send().await,
                None => http.get(format!("{base}{path}")).send().await,
            }
            .unwrap();
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        })
    };

    // One host on SQLite: three rentals (one a /30), paid, one renewed, one left unpaid.
    let sqlite = sqlite_cfg.start();
    let base = sqlite.url();
    for (i, prefix) in [(0u8, 32), (1, 30), (2, 32)] {
        let (s, v) = call(
            &base,
            "/v1/rentals",
            Some(json!({"public_key": key(i), "prefix_len": prefix})),
        );
        assert_eq!(s, 201, "{v}");
        if i < 2 {
            let (s, v) = call(
                &base,
                "/v1/dev/pay",
                Some(json!({"bolt11": v["invoice"]["bolt11"]})),
            );
            assert_eq!(s, 200, "{v}");
        }
    }
    let url_key = |i: u8| key(i).replace('+', "-").replace('/', "_");
    let (s, v) = call(
        &base,
        &format!("/v1/rentals/{}/renewals", url_key(1)),
        Some(json!({"months": 2})),
    );
    assert_eq!(s, 201, "{v}");
    call(
        &base,
        "/v1/dev/pay",
        Some(json!({"bolt11": v["invoice"]["bolt11"]})),
    );
    let before: Vec<Value> = (0..3)
        .map(|i| call(&base, &format!("/v1/rentals/{}", url_key(i)), None).1)
        .collect();
    assert_eq!(before[1]["state"], "active");

    // Not while it serves.
    let out = migrate(&sqlite_cfg, &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));
    drop(sqlite);

    let out = migrate(&sqlite_cfg, &url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tables"]["rentals"], 3);
    assert_eq!(report["tables"]["payments"], 3);
    // 72,000 + (48,000 + 4 × 24,000) + 2 months of the /30 (4 × 24,000 each).
    assert_eq!(
        report["totals"]["payments_msat"],
        (72_000 + 144_000 + 2 * 96_000) * 1000
    );
    // Again: the destination is in use now, and nothing changes.
    let out = migrate(&sqlite_cfg, &url);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty database"));
    let out = migrate(&sqlite_cfg, "mysql://x");
    assert_eq!(out.status.code(), Some(1));

    // The control on PostgreSQL answers the same rentals; the unpaid one can still be paid.
    let pg = pg_cfg.start();
    let base = pg.url();
    for (i, b) in before.iter().enumerate() {
        let (s, now) = call(&base, &format!("/v1/rentals/{}", url_key(i as u8)), None);
        assert_eq!(s, 200);
        for f in [
            "state",
            "address",
            "prefix_len",
            "ipv6",
            "paid_until",
            "started_at",
        ] {
            assert_eq!(now[f], b[f], "rental {i}: {f}");
        }
    }
    let bolt11 = before[2]["open_invoice"]["bolt11"].clone();
    let (s, v) = call(&base, "/v1/dev/pay", Some(json!({ "bolt11": bolt11 })));
    assert_eq!(s, 200, "{v}");
    let (_, now) = call(&base, &format!("/v1/rentals/{}", url_key(2)), None);
    assert_eq!(now["state"], "active");
    let (s, v) = call(&base, "/v1/rentals", Some(json!({"public_key": key(7)})));
    assert_eq!(s, 201, "a new rental after the move: {v}");
    drop(pg);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"));
}
