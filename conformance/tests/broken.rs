//! The suite against servers that break the rules: it must report the broken rules as
//! failures (and exit 1), never crash.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use staticwire_conformance::{run, Options, Outcome, Report};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn opts(base: &str) -> Options {
    Options {
        base: base.to_string(),
        fingerprint: None,
        pay_command: None,
        use_hooks: true,
    }
}

fn failed(report: &Report, id: &str) -> bool {
    matches!(report.outcome(id), Some(Outcome::Fail(_)))
}

fn passed(report: &Report, id: &str) -> bool {
    report.outcome(id) == Some(&Outcome::Pass)
}

/// A regtest invoice signed by some node, for `msat`, with payment hash SHA-256([9; 32]).
fn bolt11(msat: u64) -> (String, String) {
    use bitcoin::hashes::{sha256, Hash};
    use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
    let hash = sha256::Hash::hash(&[9u8; 32]);
    let key = SecretKey::from_slice(&[5; 32]).unwrap();
    let secp = Secp256k1::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let inv = lightning_invoice::InvoiceBuilder::new(lightning_invoice::Currency::Regtest)
        .description("StaticWire".into())
        .payment_hash(hash)
        .payment_secret(lightning_invoice::PaymentSecret([1; 32]))
        .duration_since_epoch(now)
        .min_final_cltv_expiry_delta(18)
        .amount_milli_satoshis(msat)
        .expiry_time(Duration::from_secs(3600))
        .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &key))
        .unwrap();
    (inv.to_string(), hex::encode(hash.to_byte_array()))
}

const SERVER_KEY: &str = "CQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn rental(key: &str, state: &str) -> Value {
    json!({"public_key": key, "state": state, "address": "203.0.113.5", "created_at": 1,
        "started_at": null, "paid_until": null, "months_owed": 0, "amount_due_sat": 72000,
        "reserved_until": null, "open_invoice": null,
        "server": {"endpoint": "198.18.0.1:51820", "public_key": SERVER_KEY}})
}

/// Terms with wrong arithmetic and no servers; errors as plain text; an invoice whose BOLT11
/// asks less than the server says (and the terms charge); a pending rental reported active.
fn liar() -> Router {
    let terms = json!({"activation_sat": 48000, "monthly_sat": 24000, "first_payment_sat": 72001,
        "month_seconds": 2592000, "reservation_seconds": 5184000, "invoice_expiry_seconds": 3600,
        "max_months": 12, "network": "regtest", "servers": []});
    Router::new()
        .route("/v1/terms", get(move || async move { Json(terms.clone()) }))
        .route(
            "/v1/rentals",
            post(|body: String| async move {
                let key = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["public_key"].as_str().map(str::to_string));
                let Some(key) = key.filter(|k| k.len() == 44) else {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
                };
                let (b, hash) = bolt11(72_000_000);
                let inv = json!({"payment_hash": hash, "bolt11": b, "amount_sat": 72001,
                    "purpose": "activation", "months": 1, "state": "open", "created_at": 1,
                    "expires_at": 3601, "settled_at": null});
                (
                    StatusCode::CREATED,
                    Json(json!({"rental": rental(&key, "pending"), "invoice": inv})),
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/rentals/{key}",
            get(|Path(key): Path<String>| async move { Json(rental(&key, "active")) }),
        )
        .fallback(|| async { "ok" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_server_fails_the_rules_it_breaks() {
    let url = serve(liar()).await;
    let report = run(&opts(&url)).await;
    let text = report.render();
    for id in [
        "terms.first-payment",
        "terms.servers",
        "error.unknown-route",
        "error.media-type",
        "error.bad-key",
        "error.unknown-invoice",
        "rent.rental",
        "rent.bolt11",
        "status.pending",
        "renew.pending",
        "invoice.get",
    ] {
        assert!(failed(&report, id), "{id} should fail:\n{text}");
    }
    for id in [
        "terms.schema",
        "rent.created",
        "rent.invoice",
        "terms.durations",
    ] {
        assert!(passed(&report, id), "{id} should pass:\n{text}");
    }
    assert!(
        text.contains("invoice of 72000000 msat, expected 72001 sat"),
        "{text}"
    );
    // No way to pay: the paid rules are skipped, not failed.
    assert!(matches!(
        report.outcome("pay.long-poll"),
        Some(Outcome::Skip(_))
    ));

    // The binary says so with its exit code.
    let out = Command::new(env!("CARGO_BIN_EXE_staticwire-conformance"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL  rent.bolt11"), "{stdout}");
    assert!(stdout.contains(" failed,"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_hang_ups_are_reported_not_crashed_on() {
    let garbage = Router::new().fallback(|| async {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            "<html>\u{0}\u{7f}",
        )
    });
    let url = serve(garbage).await;
    let report = run(&opts(&url)).await;
    assert!(failed(&report, "terms.schema"), "{}", report.render());
    assert!(failed(&report, "error.unknown-route"));
    assert!(matches!(report.outcome("rent"), Some(Outcome::Skip(_))));

    // Terms of a network that does not exist.
    let terms = json!({"activation_sat": 1, "monthly_sat": 1, "first_payment_sat": 2,
        "month_seconds": 1, "reservation_seconds": 1, "invoice_expiry_seconds": 1,
        "max_months": 1, "network": "mainnet", "servers": []});
    let url =
        serve(Router::new().route("/v1/terms", get(move || async move { Json(terms) }))).await;
    let report = run(&opts(&url)).await;
    assert!(failed(&report, "terms.network"), "{}", report.render());

    // Accepts and hangs up at once.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let report = run(&opts(&url)).await;
    assert!(failed(&report, "transport"), "{}", report.render());
    assert!(report.failed() >= 1);
    let out = Command::new(env!("CARGO_BIN_EXE_staticwire-conformance"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // Not a URL: usage.
    let out = Command::new(env!("CARGO_BIN_EXE_staticwire-conformance"))
        .arg("example.net")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A server that publishes a proof key but believes whoever names a key: no proof, a forged
/// one, another key's, a stale one and a replayed one are all served as the holder's.
fn credulous() -> Router {
    let proof_key = staticwire_api::proof::Verifier::new([3; 32], 10).public_key_base64();
    let terms = json!({"activation_sat": 48000, "monthly_sat": 24000, "first_payment_sat": 72000,
        "month_seconds": 2592000, "reservation_seconds": 5184000, "invoice_expiry_seconds": 3600,
        "max_months": 12, "network": "regtest", "proof_key": proof_key,
        "servers": [{"endpoint": "198.18.0.1:51820", "public_key": SERVER_KEY}]});
    let not_found = || async {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no rental for this key"}})),
        )
    };
    Router::new()
        .route("/v1/terms", get(move || async move { Json(terms.clone()) }))
        .route(
            "/v1/rentals",
            post(|body: String| async move {
                let key = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["public_key"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let (bolt11, hash) = bolt11(72_000_000);
                (
                    StatusCode::CREATED,
                    Json(json!({"rental": rental(&key, "pending"), "invoice": {
                        "payment_hash": hash, "bolt11": bolt11, "amount_sat": 72000,
                        "months": 1, "state": "open", "expires_at": 4_000_000_000u64}})),
                )
                    .into_response()
            }),
        )
        .route("/v1/rentals/{key}", get(not_found))
        .route("/v1/rentals/{key}/config", get(not_found))
        .route("/v1/rentals/{key}/renewals", post(not_found))
        .route("/v1/invoices/{hash}", get(not_found))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_believes_any_proof_fails_the_proof_rules() {
    let url = serve(credulous()).await;
    let report = run(&opts(&url)).await;
    let text = report.render();
    for id in [
        "proof.required",
        "proof.forged",
        "proof.other-key",
        "proof.expired",
        "proof.replayed",
    ] {
        assert!(failed(&report, id), "{id} should fail:\n{text}");
    }
    for id in ["terms.proof-key", "proof.accepted"] {
        assert!(passed(&report, id), "{id} should pass:\n{text}");
    }
}
