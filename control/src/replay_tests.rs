//! A proof of key possession is good once across replicas (PROTOCOL.md 3.1, "Freshness and
//! replay"): two controls on one database (a shared SQLite file here; PostgreSQL in
//! `tests/replicas.rs`) and one proof key; a rent proven at one is a replay at the other, and
//! the replay changes nothing.

use crate::testkit::Builder;
use serde_json::{json, Value};

async fn send(base: &str, body: &str, auth: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/rentals"))
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_rent_proven_at_one_replica_is_a_replay_at_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = Builder::new("203.0.113.0/28")
        .sqlite_only()
        .in_dir(dir.path())
        .serve()
        .await;
    let b = Builder::new("203.0.113.0/28")
        .sqlite_only()
        .in_dir(dir.path())
        .serve()
        .await;
    let server = a.svc.proof().unwrap().public_key();
    assert_eq!(b.svc.proof().unwrap().public_key(), server, "one proof key");
    let key = crate::proving::new_key();
    let body = json!({ "public_key": key }).to_string();
    let auth = crate::proving::keyring()
        .authorization(&server, "POST", "/v1/rentals", body.as_bytes())
        .unwrap();

    let (st, v) = send(&b.base(), &body, &auth).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = send(&a.base(), &body, &auth).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("proof_replayed")),
        "{v}"
    );
    // At the replica that accepted it, too (its memory and the database agree).
    let (st, v) = send(&b.base(), &body, &auth).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("proof_replayed"))
    );
    // One rental, one invoice: the replays changed nothing.
    let n: i64 = a
        .svc
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM invoices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    // A fresh proof of the same request is a new request: it answers with the same hold.
    let (st, v) = send(
        &a.base(),
        &body,
        &crate::proving::keyring()
            .authorization(&server, "POST", "/v1/rentals", body.as_bytes())
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{v}");
}
