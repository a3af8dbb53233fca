//! `kill -9` during settlement: 30 invoices paid while the control is down are settled at its
//! start; it is killed at a different moment of that settlement run, several times, then left
//! to finish. Every payment is credited exactly once.

use serde_json::{json, Value};
use staticwire_control::testkit::{ProcessBuilder, ProcessConfig};
use std::path::Path;
use std::time::{Duration, Instant};

fn config(dir: &Path) -> ProcessConfig {
    ProcessBuilder::new(
        dir,
        &format!(
            "invoice_poll_millis = 50\n\
             [limits]\nburst = 100000\ninvoice_burst = 100000\nmax_unpaid_per_client = 100000\n\
             [[routers]]\nname = \"crash\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/26\"]\n",
            dir.join("no-router.sock").display()
        ),
    )
    .write()
}

fn key(i: u32) -> String {
    let mut k = [9u8; 32];
    // Not in byte 0, whose low three bits X25519 clears: the keys would collide.
    k[1..5].copy_from_slice(&i.to_le_bytes());
    staticwire_control::proving::hold(k)
}

fn credited(db: &Path) -> (i64, i64, i64) {
    let db = rusqlite::Connection::open(db).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let payments: i64 = db
        .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
        .unwrap();
    let started: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM rentals WHERE started_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Rentals credited more (or less) than one month.
    let wrong: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM rentals WHERE started_at IS NOT NULL AND credited_secs != 30 * 86400",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (payments, started, wrong)
}

#[tokio::test]
async fn kill_dash_nine_during_settlement_credits_each_payment_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let n = 30;
    let c = cfg.start();
    let http = staticwire_control::proving::Client::new();
    let mut invoices = Vec::new();
    for i in 0..n {
        let r: Value = http
            .post(format!("{}/v1/rentals", c.url()))
            .json(&json!({ "public_key": key(i) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        invoices.push(r["invoice"]["bolt11"].as_str().unwrap().to_string());
    }
    drop(c);
    for b in &invoices {
        let out = cfg.command(&["dev-pay", b]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = dir.path().join("staticwire.sqlite");
    // Killed during the settlement run at start, at a different moment each time.
    let mut seen = Vec::new();
    for delay in [3u64, 6, 10, 15, 20, 30, 60] {
        let c = cfg.spawn();
        std::thread::sleep(Duration::from_millis(delay));
        drop(c); // SIGKILL
        let (payments, started, wrong) = credited(&db);
        assert_eq!(wrong, 0, "a rental was credited twice (or partly)");
        assert_eq!(
            payments, started,
            "a payment without its rental's credit, or the reverse"
        );
        seen.push(payments);
    }
    // Then left to finish: all credited, once.
    let _c = cfg.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (payments, started, wrong) = credited(&db);
        assert_eq!(wrong, 0);
        assert_eq!(payments, started);
        if payments == n as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {payments} of {n} credited");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("payments credited when each kill landed: {seen:?}");
}
