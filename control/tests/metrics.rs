//! The control's `/metrics` (`[metrics] listen`) and `backup`/`restore`, on the real binary: a
//! rental is made and paid, the series move as it did; a backup taken while serving restores
//! the rental into a fresh server.

use serde_json::{json, Value};
use staticwire_control::testkit::{Process, ProcessBuilder, ProcessConfig};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn config(dir: &Path, metrics: bool) -> ProcessConfig {
    // No router listens on this socket: reconciliation fails, and the metrics say so.
    let cfg = ProcessBuilder::new(
        dir,
        &format!(
            "invoice_poll_millis = 50\nreconcile_interval_secs = 1\n\
             [[routers]]\nname = \"wgm\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/29\"]\nreserved = [\"203.0.113.1\"]\n",
            dir.join("no-router.sock").display()
        ),
    )
    .data_dir(&dir.join("data"));
    if metrics {
        cfg.metrics().write()
    } else {
        cfg.write()
    }
}

/// A client that proves the requests on its keys' rentals.
fn client() -> staticwire_control::proving::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    staticwire_control::proving::Client::with(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

fn run(cfg: &ProcessConfig, args: &[&str]) -> Output {
    cfg.command(args).output().unwrap()
}

fn key(i: u8) -> String {
    staticwire_control::proving::hold([i; 32])
}

async fn rent_and_pay(c: &Process, cfg: &ProcessConfig, k: &str) -> Value {
    let resp = client()
        .post(format!("{}/v1/rentals", c.url()))
        .json(&json!({ "public_key": k }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let r: Value = resp.json().await.unwrap();
    let bolt11 = r["invoice"]["bolt11"].as_str().unwrap();
    let out = run(cfg, &["dev-pay", bolt11]);
    assert!(out.status.success(), "{out:?}");
    let url = format!(
        "{}/v1/rentals/{}",
        c.url(),
        k.replace('+', "-").replace('/', "_")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Value = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if st["state"] == "active" {
            return st;
        }
        assert!(Instant::now() < deadline, "never active: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series, found by its exact name and label set as rendered.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(c: &Process) -> String {
    let resp = client().get(c.metrics_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_follow_a_rental_from_invoice_to_payment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let c = cfg.start();
    let pool = "router=\"wgm\",pool=\"203.0.113.0/29\"";

    let before = scrape(&c).await;
    assert_eq!(
        value(
            &before,
            &format!("staticwire_control_addresses{{{pool},status=\"free\"}}")
        ),
        Some(5.0),
        "{before}"
    );
    assert_eq!(
        value(&before, "staticwire_control_received_sat_total{api=\"v1\"}"),
        Some(0.0)
    );
    assert!(before.contains("# TYPE staticwire_control_received_sat_total counter"));

    let k = key(9);
    rent_and_pay(&c, &cfg, &k).await;
    // One unpaid rental beside it, holding an address.
    let resp = client()
        .post(format!("{}/v1/rentals", c.url()))
        .json(&json!({ "public_key": key(10) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // And requests that fail, by route pattern.
    let resp = client()
        .get(format!(
            "{}/v1/rentals/{}",
            c.url(),
            key(13).replace('+', "-").replace('/', "_")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Reconciliation runs against the missing router at least once a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let text = scrape(&c).await;
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(v("staticwire_control_rentals{state=\"active\"}"), 1.0);
    assert_eq!(v("staticwire_control_rentals{state=\"pending\"}"), 1.0);
    assert_eq!(
        v(&format!(
            "staticwire_control_addresses{{{pool},status=\"used\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "staticwire_control_addresses{{{pool},status=\"held\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "staticwire_control_addresses{{{pool},status=\"free\"}}"
        )),
        3.0
    );
    assert_eq!(
        v("staticwire_control_invoices_created_total{purpose=\"activation\"}"),
        2.0
    );
    assert_eq!(
        v("staticwire_control_invoices_settled_total{purpose=\"activation\"}"),
        1.0
    );
    assert_eq!(v("staticwire_control_invoices_open"), 1.0);
    assert_eq!(
        v("staticwire_control_received_sat_total{api=\"v1\"}"),
        72_000.0
    );
    assert_eq!(v("staticwire_control_payments_total{api=\"v1\"}"), 1.0);
    assert_eq!(
        v("staticwire_control_received_sat_total{api=\"2023\"}"),
        0.0
    );
    assert_eq!(
        v("staticwire_control_http_requests_total{route=\"/v1/rentals\",method=\"POST\",status=\"201\"}"),
        2.0
    );
    assert!(
        v("staticwire_control_http_requests_total{route=\"/v1/rentals/{public_key}\",method=\"GET\",status=\"404\"}")
            >= 1.0
    );
    assert!(
        !text.contains(&k) && !text.contains(&key(13)),
        "keys never become labels"
    );
    assert!(
        v("staticwire_control_lightning_requests_total{backend=\"dev\",op=\"create_invoice\",result=\"ok\"}")
            >= 2.0
    );
    assert!(text.contains("staticwire_control_lightning_request_duration_seconds_bucket{backend=\"dev\",op=\"create_invoice\",le=\"0.005\"}"));
    assert!(text.contains("staticwire_control_http_request_duration_seconds_bucket{route=\"/v1/rentals\",le=\"+Inf\"} 2"));
    // The router is missing: reconciliations fail and the router is down.
    assert!(v("staticwire_control_reconcile_errors_total{router=\"wgm\"}") >= 1.0);
    assert_eq!(v("staticwire_control_router_up{router=\"wgm\"}"), 0.0);
    // Error counters start at zero, so alerts and rate() see the first error.
    assert_eq!(
        v("staticwire_control_lightning_errors_total{backend=\"dev\",op=\"create_invoice\",kind=\"unavailable\"}"),
        0.0
    );
    assert_eq!(
        v("staticwire_control_settlement_stream_up{backend=\"dev\"}"),
        1.0
    );
    assert!(v("staticwire_control_data_dir_free_bytes") > 0.0);
    assert!(v("staticwire_control_database_bytes") > 0.0);
    assert_eq!(v("staticwire_control_build_info{version=\"0.1.0\"}"), 1.0);

    // Totals come from the ledger: they survive a restart.
    drop(c);
    let c = cfg.start();
    let text = scrape(&c).await;
    assert_eq!(
        value(&text, "staticwire_control_received_sat_total{api=\"v1\"}"),
        Some(72_000.0)
    );
    let resp = client()
        .get(c.metrics_url().replace("/metrics", "/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn backup_while_serving_restores_into_a_fresh_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false);
    let c = cfg.start();
    let k = key(11);
    let paid = rent_and_pay(&c, &cfg, &k).await;

    let file = dir.path().join("backup.sqlite");
    let out = run(&cfg, &["backup", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["rentals"], 1);
    // Restoring under a running server is refused and changes nothing.
    let out = run(&cfg, &["restore", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it first"),
        "{out:?}"
    );
    // A second rental after the backup...
    rent_and_pay(&c, &cfg, &key(12)).await;
    drop(c);
    // ...is gone after the restore; the first is as it was.
    let out = run(&cfg, &["restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let c = cfg.start();
    let url = |k: &str| {
        format!(
            "{}/v1/rentals/{}",
            c.url(),
            k.replace('+', "-").replace('/', "_")
        )
    };
    let st: Value = client()
        .get(url(&k))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["state"], "active");
    assert_eq!(st["paid_until"], paid["paid_until"]);
    assert_eq!(st["address"], paid["address"]);
    let resp = client().get(url(&key(12))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}
