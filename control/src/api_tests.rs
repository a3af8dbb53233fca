//! The HTTP API end to end in process: a real server on loopback, the real dev Lightning
//! backend, SQLite in a temp dir, time moved by the injectable clock.

use crate::lightning::{dev, Backend};
use crate::service::Service;
use crate::testkit::{Builder, Control};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

struct Harness {
    _ctl: Control,
    svc: Arc<Service>,
    base: String,
    http: crate::proving::Client,
}

const DAY: i64 = 86_400;

async fn harness(pool: &str) -> Harness {
    let ctl = Builder::new(pool).serve().await;
    Harness {
        svc: ctl.svc.clone(),
        base: ctl.base(),
        http: crate::proving::Client::new(),
        _ctl: ctl,
    }
}

/// A key pair whose private half the test client holds (it proves its requests).
fn new_key() -> String {
    crate::proving::new_key()
}

fn url_key(k: &str) -> String {
    URL_SAFE.encode(STANDARD.decode(k).unwrap())
}

impl Harness {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn rent(&self, key: &str) -> Value {
        let (s, v) = self.post("/v1/rentals", json!({ "public_key": key })).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Pays like a customer's node, then lets the server notice as its poll loop would.
    async fn pay(&self, bolt11: &str) {
        let Backend::Dev(node) = &self.svc.ln() else {
            unreachable!()
        };
        {
            let db = self.svc.db().unwrap();
            dev::pay(&db, &node.node_id, bolt11, self.svc.clock().now()).unwrap();
        }
        self.svc.check_invoices().await.unwrap();
    }

    fn counts(&self) -> (i64, i64, i64) {
        let db = self.svc.db().unwrap();
        let c = |t: &str| {
            db.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        (c("rentals"), c("invoices"), c("events"))
    }
}

#[tokio::test]
async fn terms_are_published() {
    let h = harness("203.0.113.0/24").await;
    let (s, t) = h.get("/v1/terms").await;
    assert_eq!(s, 200);
    assert_eq!(t["activation_sat"], 48_000);
    assert_eq!(t["monthly_sat"], 24_000);
    assert_eq!(t["first_payment_sat"], 72_000);
    assert_eq!(t["month_seconds"], 30 * DAY);
    assert_eq!(t["reservation_seconds"], 60 * DAY);
    assert_eq!(t["network"], "regtest");
    assert_eq!(t["servers"][0]["endpoint"], "198.18.0.1:51820");
    assert_eq!(t["servers"][0]["public_key"], STANDARD.encode([2u8; 32]));
}

#[tokio::test]
async fn rent_pay_status_conf_renew() {
    let h = harness("203.0.113.0/24").await;
    let key = new_key();
    let r = h.rent(&key).await;
    assert_eq!(r["rental"]["state"], "pending");
    assert_eq!(r["rental"]["address"], "203.0.113.1");
    assert_eq!(r["invoice"]["amount_sat"], 72_000);
    assert_eq!(r["invoice"]["purpose"], "activation");
    let bolt11 = r["invoice"]["bolt11"].as_str().unwrap().to_string();
    assert!(bolt11.starts_with("lnbcrt720u1"));
    let parsed: lightning_invoice::Bolt11Invoice = bolt11.parse().unwrap();
    assert_eq!(parsed.amount_milli_satoshis(), Some(72_000_000));

    // Asking again gives the same invoice, not a second address.
    let again = h.rent(&key).await;
    assert_eq!(
        again["invoice"]["payment_hash"],
        r["invoice"]["payment_hash"]
    );
    let (s, st) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(s, 200);
    assert_eq!(st["amount_due_sat"], 72_000);
    assert_eq!(st["open_invoice"]["bolt11"], bolt11.as_str());

    // Renewing before the first payment is a conflict.
    let (s, _) = h
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            json!({"months": 1}),
        )
        .await;
    assert_eq!(s, 409);

    let hash = r["invoice"]["payment_hash"].as_str().unwrap().to_string();
    h.pay(&bolt11).await;
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st["state"], "active");
    let started = st["started_at"].as_i64().unwrap();
    assert_eq!(st["paid_until"].as_i64().unwrap(), started + 30 * DAY);
    assert!(st["open_invoice"].is_null());
    let (_, inv) = h.get(&format!("/v1/invoices/{hash}")).await;
    assert_eq!(inv["state"], "settled");

    // Settling again credits nothing.
    assert!(!h.svc.settle(&hash, started).await.unwrap());
    let (_, st2) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st2["paid_until"], st["paid_until"]);

    let (s, conf) = h
        .get(&format!("/v1/rentals/{}/config", url_key(&key)))
        .await;
    assert_eq!(s, 200);
    let text = conf["wg_quick"].as_str().unwrap();
    assert!(text.contains("Address = 203.0.113.1/32"));
    assert!(text.contains("Endpoint = 198.18.0.1:51820"));
    assert!(text.contains(&format!("PublicKey = {}", STANDARD.encode([2u8; 32]))));
    assert!(!text.contains("\nPrivateKey"), "{text}");

    for months in 1..=12u64 {
        let (s, v) = h
            .post(
                &format!("/v1/rentals/{}/renewals", url_key(&key)),
                json!({ "months": months }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["invoice"]["amount_sat"], 24_000 * months);
        assert_eq!(v["invoice"]["months"], months);
    }
    let (s, v) = h
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            json!({"months": 3}),
        )
        .await;
    assert_eq!(s, 201);
    h.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;
    let (_, st3) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st3["paid_until"].as_i64().unwrap(), started + 4 * 30 * DAY);
}

#[tokio::test]
async fn lapse_back_payments_release_and_rerent() {
    let h = harness("203.0.113.0/30").await;
    let key = new_key();
    let r = h.rent(&key).await;
    h.pay(r["invoice"]["bolt11"].as_str().unwrap()).await;
    h.svc.clock().advance(40 * DAY);
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st["state"], "lapsed");
    assert_eq!(st["months_owed"], 1);
    assert_eq!(st["amount_due_sat"], 48_000);
    assert!(
        h.svc.sweep().unwrap()["t"].is_empty(),
        "a lapsed peer must not be admitted"
    );

    let (s, v) = h
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            json!({"months": 1}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["invoice"]["amount_sat"], 48_000);
    assert_eq!(v["invoice"]["months"], 2);
    h.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st["state"], "active");
    assert!(st["paid_until"].as_i64().unwrap() > h.svc.clock().now());
    assert_eq!(h.svc.sweep().unwrap()["t"].len(), 1);

    // Let it lapse past the reservation: released, and the key must rent anew.
    // Paid until day 90; the reservation ends at day 150.
    h.svc.clock().advance(111 * DAY);
    h.svc.sweep().unwrap();
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key))).await;
    assert_eq!(st["state"], "released");
    let (s, _) = h
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            json!({"months": 1}),
        )
        .await;
    // Released, swept or not: 409 (a rent is the way on), not 404.
    assert_eq!(s, 409);
    let r2 = h.rent(&key).await;
    assert_eq!(r2["rental"]["state"], "pending");
    // The old address rests (cool-down); the pool's other one is handed out.
    assert_ne!(r2["rental"]["address"], st["address"]);
}

#[tokio::test]
async fn unpaid_invoice_expiry_frees_the_address() {
    let h = harness("203.0.113.0/30").await;
    h.rent(&new_key()).await;
    h.rent(&new_key()).await;
    let (s, e) = h
        .post("/v1/rentals", json!({"public_key": new_key()}))
        .await;
    assert_eq!(s, 503);
    assert_eq!(e["error"]["code"], "pool_exhausted");
    h.svc.clock().advance(3601);
    h.svc.check_invoices().await.unwrap();
    let r = h.rent(&new_key()).await;
    assert_eq!(r["rental"]["address"], "203.0.113.1");
}

#[tokio::test]
async fn thousand_concurrent_rentals_never_share_an_address() {
    let h = Arc::new(harness("203.0.112.0/22").await);
    // 1,000 rentals racing, at most 100 requests in flight: enough to race the allocator
    // without a thousand sockets at once (the kernel reset some on a loaded 2-core machine).
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (h, gate) = (h.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let (s, v) = h
                .post("/v1/rentals", json!({"public_key": new_key()}))
                .await;
            assert_eq!(s, 201, "{v}");
            v["rental"]["address"].as_str().unwrap().to_string()
        }));
    }
    let mut addrs = std::collections::HashSet::new();
    for t in tasks {
        assert!(
            addrs.insert(t.await.unwrap()),
            "an address was handed out twice"
        );
    }
    assert_eq!(addrs.len(), 1000);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let h = harness("203.0.113.0/24").await;
    let key = new_key();
    h.rent(&key).await;
    let before = h.counts();

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"public_key": "AAAA"}), 400, "bad_public_key"),
        (json!({"public_key": "!".repeat(44)}), 400, "bad_public_key"),
        (
            json!({"public_key": STANDARD.encode([1u8; 31]) + "AA"}),
            400,
            "bad_public_key",
        ),
        (
            json!({"public_key": STANDARD.encode([1u8; 33])}),
            400,
            "bad_public_key",
        ),
        (json!({"public_key": 5}), 400, "bad_request"),
        (json!({}), 400, "bad_request"),
        (json!({"public_key": key}), 201, ""),
    ];
    for (body, status, code) in cases {
        let (s, v) = h.post("/v1/rentals", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{body}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
    }
    for months in [0, 13, 1000] {
        let (s, v) = h
            .post(
                &format!("/v1/rentals/{}/renewals", url_key(&key)),
                json!({ "months": months }),
            )
            .await;
        // Not paid yet, so any renewal is a conflict; the months are checked first.
        assert_eq!(s, 400, "{months}: {v}");
        assert_eq!(v["error"]["code"], "bad_months");
    }
    let (s, v) = h
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            json!({"months": -1}),
        )
        .await;
    // A number out of range, negative too, is bad_months (PROTOCOL.md, Renew).
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_months")));

    let (s, v) = h.get(&format!("/v1/rentals/{}", new_key())).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = h.get("/v1/rentals/not-a-key").await;
    assert_eq!(s, 400);
    // A look-up proven with a key of one's own: an unknown hash is not found.
    let asker = new_key();
    crate::proving::claim_invoice(&"ab".repeat(32), &asker);
    crate::proving::claim_invoice("zz", &asker);
    let (s, _) = h.get(&format!("/v1/invoices/{}", "ab".repeat(32))).await;
    assert_eq!(s, 404);
    let (s, _) = h.get("/v1/invoices/zz").await;
    assert_eq!(s, 404);
    let (s, v) = h.get("/v1/nothing-here").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));

    let url = format!("{}/v1/rentals", h.base);
    let r = h
        .http
        .post(&url)
        .body(vec![b'a'; 10 << 20])
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    let r = h
        .http
        .post(&url)
        .body(format!("{{\"public_key\":\"{key}\"}}"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = h
        .http
        .post(&url)
        .body(format!("{{\"public_key\":\"{key}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = h
        .http
        .post(&url)
        .body("{\"public_key\":")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    assert_eq!(
        h.counts(),
        before,
        "a rejected request changed the database"
    );
}

#[tokio::test]
async fn long_poll_answers_on_settlement() {
    let h = Arc::new(harness("203.0.113.0/24").await);
    let r = h.rent(&new_key()).await;
    let hash = r["invoice"]["payment_hash"].as_str().unwrap().to_string();
    let bolt11 = r["invoice"]["bolt11"].as_str().unwrap().to_string();
    let (s, v) = h.get(&format!("/v1/invoices/{hash}?wait=0")).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("open")));
    let waiter = {
        let h = h.clone();
        let hash = hash.clone();
        tokio::spawn(async move { h.get(&format!("/v1/invoices/{hash}?wait=30")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    h.pay(&bolt11).await;
    let (s, v) = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s, v["state"].as_str()), (200, Some("settled")));
    let (s, _) = h.get(&format!("/v1/invoices/{hash}?wait=x")).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn operator_suspend_resume_release() {
    let h = harness("203.0.113.0/24").await;
    let key = new_key();
    let r = h.rent(&key).await;
    h.pay(r["invoice"]["bolt11"].as_str().unwrap()).await;
    assert_eq!(
        h.svc.set_suspended(&key, true).unwrap().state,
        staticwire_api::RentalState::Suspended
    );
    assert!(h.svc.sweep().unwrap()["t"].is_empty());
    assert_eq!(
        h.svc.set_suspended(&key, false).unwrap().state,
        staticwire_api::RentalState::Active
    );
    assert_eq!(h.svc.sweep().unwrap()["t"].len(), 1);
    assert_eq!(
        h.svc.release(&key).unwrap().state,
        staticwire_api::RentalState::Released
    );
    assert!(h.svc.sweep().unwrap()["t"].is_empty());
    let shown = h.svc.show(&key).unwrap();
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "rented",
            "invoice",
            "payment",
            "suspended",
            "resumed",
            "released"
        ]
    );
}

#[tokio::test]
async fn a_hold_without_invoice_is_released() {
    let h = harness("203.0.113.0/30").await;
    {
        // What a crash between allocating and invoicing leaves behind.
        let db = h.svc.db().unwrap();
        crate::store::insert_rental(&db, &new_key(), "203.0.113.1", "t", h.svc.clock().now())
            .unwrap();
    }
    h.svc.sweep().unwrap();
    let r = h.rent(&new_key()).await;
    assert_eq!(
        r["rental"]["address"], "203.0.113.2",
        "the fresh hold is kept for now"
    );
    h.svc.clock().advance(121);
    h.svc.sweep().unwrap();
    let r = h.rent(&new_key()).await;
    assert_eq!(r["rental"]["address"], "203.0.113.1");
}

#[tokio::test]
async fn garbage_requests_never_cause_a_server_error() {
    let h = harness("203.0.113.0/24").await;
    let key = new_key();
    h.rent(&key).await;
    let before = h.counts();
    let bodies: [&[u8]; 8] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"{\"public_key\":null}",
        b"{\"months\":1e9}",
        b"\xff\xfe\x00",
        b"{\"public_key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\",\"x\":[]}",
    ];
    let paths = [
        "/v1/rentals".to_string(),
        format!("/v1/rentals/{}/renewals", url_key(&key)),
        "/v1/rentals/%00/renewals".into(),
        "/v1/rentals/..%2F..%2Fetc/config".into(),
        "/v1/invoices/%ff".into(),
    ];
    for p in &paths {
        for b in bodies {
            let r = h
                .http
                .post(format!("{}{p}", h.base))
                .body(b.to_vec())
                .header("content-type", "application/json")
                .send()
                .await
                .unwrap();
            assert!(r.status().as_u16() < 500, "{p} {b:?}: {}", r.status());
            let r = h.http.get(format!("{}{p}", h.base)).send().await.unwrap();
            assert!(r.status().as_u16() < 500, "GET {p}: {}", r.status());
        }
    }
    // The long valid key in the last body is a new rental; everything else changed nothing.
    let after = h.counts();
    assert!(after.0 <= before.0 + 1 && after.1 <= before.1 + 1);
}
