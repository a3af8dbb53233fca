//! Where the server and PROTOCOL.md disagreed (issue 27), each point through the real routers
//! on loopback: months checked before the state, a `wait` of any size, query parameters on
//! every route, keys in bodies standard base64 and hashes lowercase, the 404 of an unknown
//! invoice, and refused requests free of the invoice-making limit.

use crate::lightning::{dev, Backend};
use crate::testkit::{Builder, Control};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};

struct Client {
    ctl: Control,
    http: crate::proving::Client,
}

/// A key pair whose public key's standard base64 has a `+` or `/`, so its URL-safe form
/// differs; the test client holds its private half (it proves its requests).
fn new_key() -> String {
    loop {
        let s = crate::proving::new_key();
        if s.contains(['+', '/']) {
            return s;
        }
    }
}

fn url_key(k: &str) -> String {
    URL_SAFE.encode(STANDARD.decode(k).unwrap())
}

async fn client(b: Builder) -> Client {
    Client {
        ctl: b.serve().await,
        http: crate::proving::Client::new(),
    }
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.ctl.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `body` sent as is, as JSON.
    async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.ctl.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string()).await
    }

    async fn rent(&self, key: &str) -> Value {
        let (s, v) = self.post("/v1/rentals", json!({ "public_key": key })).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn pay(&self, bolt11: &str) {
        let svc = &self.ctl.svc;
        let Backend::Dev(node) = &svc.ln() else {
            unreachable!()
        };
        {
            let db = svc.db().unwrap();
            dev::pay(&db, &node.node_id, bolt11, svc.clock().now()).unwrap();
        }
        svc.check_invoices().await.unwrap();
    }

    fn rentals(&self) -> i64 {
        let db = self.ctl.svc.db().unwrap();
        db.query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get(0))
            .unwrap()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// PROTOCOL.md, Renew: `months` out of range is 400 `bad_months` before the state — for a key
/// that never rented (was 404), a released rental (was 409), a pending one; negative,
/// fractional and huge numbers too (were 400 `bad_request`); a non-number is `bad_request`.
#[tokio::test]
async fn months_out_of_range_is_bad_months_before_the_state() {
    let c = client(Builder::new("203.0.113.0/29")).await;
    let never = new_key();
    let released = new_key();
    c.rent(&released).await;
    c.ctl.svc.release(&released).unwrap();
    let pending = new_key();
    c.rent(&pending).await;
    let before = c.rentals();
    for key in [&never, &released, &pending] {
        let path = format!("/v1/rentals/{}/renewals", url_key(key));
        for m in ["0", "13", "-1", "1.5", "1.0", "1e3", "18446744073709551616"] {
            let (s, v) = c.post_raw(&path, &format!(r#"{{"months":{m}}}"#)).await;
            assert_eq!((s, code(&v)), (400, "bad_months"), "months {m}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().contains("12"));
        }
        for body in [r#"{"months":"1"}"#, r#"{"months":null}"#, "{}"] {
            let (s, v) = c.post_raw(&path, body).await;
            assert_eq!((s, code(&v)), (400, "bad_request"), "{body}: {v}");
        }
    }
    // In range, the state decides again.
    let (s, v) = c
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&never)),
            json!({"months": 1}),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = c
        .post(
            &format!("/v1/rentals/{}/renewals", url_key(&released)),
            json!({"months": 12}),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"));
    assert_eq!(c.rentals(), before, "nothing was made");
}

/// PROTOCOL.md, invoices: `wait` of any size is capped, never an error; given twice, empty,
/// signed or fractional it is 400; an invoice hash is lowercase hex, and an unknown one says so.
#[tokio::test]
async fn wait_of_any_size_is_capped_and_hashes_are_lowercase() {
    let c = client(Builder::new("203.0.113.0/29")).await;
    let key = new_key();
    let v = c.rent(&key).await;
    let hash = v["invoice"]["payment_hash"].as_str().unwrap().to_string();
    c.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;
    for wait in [
        "60",
        "99999999999",
        "18446744073709551615",
        "18446744073709551616",
        "100000000000000000000000000000000000000",
    ] {
        let (s, v) = c.get(&format!("/v1/invoices/{hash}?wait={wait}")).await;
        assert_eq!(
            (s, v["state"].as_str()),
            (200, Some("settled")),
            "{wait}: {v}"
        );
    }
    for q in [
        "wait=",
        "wait=-1",
        "wait=%2B1",
        "wait=+1",
        "wait=1.5",
        "wait=1&wait=1",
        "wait",
    ] {
        let (s, v) = c.get(&format!("/v1/invoices/{hash}?{q}")).await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "?{q}: {v}");
    }
    let (s, v) = c.get(&format!("/v1/invoices/{hash}?")).await;
    assert_eq!(s, 200, "an empty query is no parameter: {v}");

    // Asked with a proof of the rental's own key (PROTOCOL.md 3.1): the hashes are unknown.
    crate::proving::claim_invoice(&hash.to_uppercase(), &key);
    crate::proving::claim_invoice(&"ab".repeat(32), &key);
    let (s, v) = c
        .get(&format!("/v1/invoices/{}", hash.to_uppercase()))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = c.get(&format!("/v1/invoices/{}", "ab".repeat(32))).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    assert_eq!(v["error"]["message"], "no such invoice");
}

/// PROTOCOL.md section 4: every `/v1` route refuses a query parameter it does not define,
/// before the state, and changes nothing.
#[tokio::test]
async fn unknown_query_parameters_are_refused_on_every_route() {
    let c = client(Builder::new("203.0.113.0/29").dev_hooks()).await;
    let key = new_key();
    let rented = c.rent(&key).await;
    let hash = rented["invoice"]["payment_hash"].as_str().unwrap();
    let k = url_key(&key);
    let fresh = url_key(&new_key());
    let before = c.rentals();
    let gets = [
        "/v1/terms?x=1".to_string(),
        "/v1/openapi.json?x=1".into(),
        format!("/v1/rentals/{k}?x=1"),
        format!("/v1/rentals/{fresh}?x=1"),
        format!("/v1/rentals/{k}/config?x"),
        format!("/v1/invoices/{hash}?x=1"),
        format!("/v1/invoices/{}?wait=1", "cd".repeat(32)) + "&x=1",
    ];
    for path in gets {
        let (s, v) = c.get(&path).await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "GET {path}: {v}");
    }
    let posts = [
        (
            "/v1/rentals?x=1".to_string(),
            json!({"public_key": new_key()}),
        ),
        (
            format!("/v1/rentals/{k}/renewals?x=1"),
            json!({"months": 1}),
        ),
        ("/v1/dev/clock?x=1".into(), json!({"seconds": 0})),
        (
            "/v1/dev/pay?x=1".into(),
            json!({"bolt11": rented["invoice"]["bolt11"]}),
        ),
    ];
    for (path, body) in posts {
        let (s, v) = c.post(&path, body).await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "POST {path}: {v}");
    }
    assert_eq!(c.rentals(), before, "nothing was held");
    let (_, v) = c.get(&format!("/v1/rentals/{k}")).await;
    assert_eq!(v["state"], "pending", "the refused dev/pay paid nothing");
    // Without parameters (or with an empty query) the routes answer as before.
    for path in ["/v1/terms", "/v1/terms?", "/v1/openapi.json"] {
        assert_eq!(c.get(path).await.0, 200, "{path}");
    }
}

/// PROTOCOL.md section 4: a key in a JSON body is standard base64 — the URL-safe alphabet is
/// refused and nothing is held; in a path both alphabets name the same rental.
#[tokio::test]
async fn keys_in_bodies_are_standard_base64() {
    let c = client(Builder::new("203.0.113.0/29")).await;
    let key = new_key();
    let (s, v) = c
        .post("/v1/rentals", json!({"public_key": url_key(&key)}))
        .await;
    assert_eq!((s, code(&v)), (400, "bad_public_key"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("URL-safe"));
    assert_eq!(c.rentals(), 0);
    c.rent(&key).await;
    let pct = key
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for path in [url_key(&key), pct] {
        let (s, v) = c.get(&format!("/v1/rentals/{path}")).await;
        assert_eq!((s, v["public_key"].as_str()), (200, Some(key.as_str())));
    }
}

/// PROTOCOL.md section 4: requests refused with a 4xx do not count against the invoice-making
/// limit (20 at once by default); answered ones still do.
#[tokio::test]
async fn refused_requests_do_not_count_against_the_invoice_limit() {
    let c = client(Builder::new("203.0.113.0/29").limited()).await;
    for i in 0..25 {
        let (s, v) = c.post("/v1/rentals", json!({"public_key": "AAAA"})).await;
        assert_eq!((s, code(&v)), (400, "bad_public_key"), "request {i}: {v}");
        let (s, v) = c.post_raw("/v1/rentals", "{").await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "request {i}: {v}");
    }
    let key = new_key();
    let k = url_key(&key);
    c.rent(&key).await;
    for i in 0..25 {
        let (s, v) = c
            .post(&format!("/v1/rentals/{k}/renewals"), json!({"months": 1}))
            .await;
        assert_eq!((s, code(&v)), (409, "conflict"), "renewal {i}: {v}");
    }
    // An answered rent (the same hold again) still takes a token: at most the burst of 20
    // (less the one above, plus what refilled meanwhile at 20 a minute) before a 429.
    let mut answered = 0;
    loop {
        let (s, v) = c.post("/v1/rentals", json!({ "public_key": key })).await;
        if s == 429 {
            assert_eq!(code(&v), "rate_limited");
            break;
        }
        assert_eq!(s, 201, "{v}");
        answered += 1;
        assert!(answered < 40, "no limit on answered rents");
    }
    assert!(answered >= 19, "only {answered} rents before the limit");
}
