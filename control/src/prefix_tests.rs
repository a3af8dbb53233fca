//! IPv4 prefixes and IPv6 prefixes through the real HTTP API: prices per address, buddy
//! placement, whole-prefix cool-down, lapse and back payments, and the peer's allowed IPs.

use crate::config::Config;
use crate::lightning::{dev, Backend};
use crate::service::Service;
use crate::testkit::{Builder, Control};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

const DAY: i64 = 86_400;

struct H {
    _ctl: Control,
    svc: Arc<Service>,
    base: String,
    http: crate::proving::Client,
}

/// A server with one host: IPv4 pool `pool`, IPv6 pool `v6` (if any), terms edited by `f`.
async fn server(pool: &str, v6: Option<&str>, f: impl FnOnce(&mut Config) + 'static) -> H {
    let ctl = Builder::new(pool).ipv6_pool(v6).config(f).serve().await;
    H {
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

impl H {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn rent(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/v1/rentals", Some(body))
            .await
    }

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

    /// Rents and pays; returns the rental view.
    async fn rent_paid(&self, body: Value) -> Value {
        let (s, v) = self.rent(body).await;
        assert_eq!(s, 201, "{v}");
        self.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;
        let key = v["rental"]["public_key"].as_str().unwrap();
        let (s, r) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/rentals/{}", url_key(key)),
                None,
            )
            .await;
        assert_eq!(s, 200);
        r
    }
}

#[tokio::test]
async fn a_30_with_ipv6_is_priced_per_address_routed_whole_and_renews_after_lapse() {
    let h = server("203.0.113.0/27", Some("2001:db8:100::/48"), |c| {
        c.terms.address_monthly_sat = Some(10_000);
    })
    .await;
    let (_, t) = h.call(reqwest::Method::GET, "/v1/terms", None).await;
    assert_eq!(t["ipv4_prefix_lengths"], json!([32, 31, 30, 29]));
    assert_eq!(t["address_monthly_sat"], 10_000);
    assert_eq!(t["ipv6_monthly_sat"], 0);
    assert_eq!(t["servers"][0]["ipv6_prefix_len"], 64);
    assert_eq!(t["servers"][0]["name"], "t");
    assert_eq!(t["servers"][0]["free_ipv4"], 30);

    let single = h.rent_paid(json!({"public_key": new_key()})).await;
    assert_eq!(
        single["address"], "203.0.113.1",
        "the lone address next to .0"
    );
    assert_eq!(single["ipv6"], "2001:db8:100::/64", "IPv6 comes free");
    assert!(single.get("prefix_len").is_none(), "a /32 reads as before");

    let key = new_key();
    let (s, v) = h.rent(json!({"public_key": key, "prefix_len": 30})).await;
    assert_eq!(s, 201, "{v}");
    // Activation once, then 24,000 for the first address and 3 × 10,000 for the others.
    assert_eq!(v["invoice"]["amount_sat"], 48_000 + 24_000 + 30_000);
    assert_eq!(
        v["rental"]["address"], "203.0.113.4",
        "the /30 next to the taken .0/30"
    );
    assert_eq!(v["rental"]["prefix_len"], 30);
    assert_eq!(v["rental"]["ipv6"], "2001:db8:100:1::/64");
    h.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;

    // The router is told to route the whole /30 and the /64 to the peer.
    let desired = h.svc.sweep().unwrap();
    let peer: [u8; 32] = STANDARD.decode(&key).unwrap().try_into().unwrap();
    let nets: Vec<String> = desired["t"][&peer].iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["203.0.113.4/30", "2001:db8:100:1::/64"]);

    let (s, c) = h
        .call(
            reqwest::Method::GET,
            &format!("/v1/rentals/{}/config", url_key(&key)),
            None,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        c["networks"],
        json!(["203.0.113.4/30", "2001:db8:100:1::/64"])
    );
    assert_eq!(c["allowed_ips"], json!(["0.0.0.0/0", "::/0"]));
    let wg = c["wg_quick"].as_str().unwrap();
    assert!(
        wg.contains("Address = 203.0.113.4/32, 2001:db8:100:1::1/128"),
        "{wg}"
    );
    assert!(wg.contains("AllowedIPs = 0.0.0.0/0, ::/0"), "{wg}");

    // A /32 never lands inside the /30; it fills the lone .30 before splitting a block.
    let other = h.rent_paid(json!({"public_key": new_key()})).await;
    assert_eq!(other["address"], "203.0.113.30");

    // Lapse: a month and a day later the peer is gone and back payments are due at the
    // rental's own rate.
    h.svc.clock().advance(31 * DAY);
    assert!(!h.svc.sweep().unwrap()["t"].contains_key(&peer));
    let (_, st) = h
        .call(
            reqwest::Method::GET,
            &format!("/v1/rentals/{}", url_key(&key)),
            None,
        )
        .await;
    assert_eq!(st["state"], "lapsed");
    assert_eq!(st["amount_due_sat"], 2 * 54_000);
    let (s, r) = h
        .call(
            reqwest::Method::POST,
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            Some(json!({"months": 1})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["invoice"]["amount_sat"], 2 * 54_000);
    h.pay(r["invoice"]["bolt11"].as_str().unwrap()).await;
    let nets: Vec<String> = h.svc.sweep().unwrap()["t"][&peer]
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        nets,
        ["203.0.113.4/30", "2001:db8:100:1::/64"],
        "same prefixes back"
    );
}

#[tokio::test]
async fn bad_prefix_requests_are_refused_and_change_nothing() {
    let h = server("203.0.113.0/27", None, |c| {
        c.terms.prefix_lengths = vec![30]
    })
    .await;
    for (body, why) in [
        (
            json!({"public_key": new_key(), "prefix_len": 29}),
            "/29 not on sale",
        ),
        (json!({"public_key": new_key(), "prefix_len": 24}), "/24"),
        (json!({"public_key": new_key(), "prefix_len": 33}), "/33"),
        (
            json!({"public_key": new_key(), "prefix_len": -1}),
            "negative",
        ),
        (
            json!({"public_key": new_key(), "ipv6": true}),
            "no IPv6 pool",
        ),
        (
            json!({"public_key": new_key(), "host": "nope"}),
            "unknown host",
        ),
        (
            json!({"public_key": new_key(), "prefix_len": "30"}),
            "a string",
        ),
    ] {
        let (s, v) = h.rent(body).await;
        assert_eq!(s, 400, "{why}: {v}");
        assert!(v["error"]["message"].is_string(), "{why}: {v}");
    }
    let db = h.svc.db().unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_released_prefix_rests_whole_and_blocks_run_out_cleanly() {
    // /27 hosts .1-.30: whole /29s at .8 and .16 only (.0 and .31 are never handed out).
    let h = server("203.0.113.0/27", None, |_| {}).await;
    let a = h
        .rent_paid(json!({"public_key": new_key(), "prefix_len": 29}))
        .await;
    let b = h
        .rent_paid(json!({"public_key": new_key(), "prefix_len": 29}))
        .await;
    let mut got = [a["address"].clone(), b["address"].clone()];
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("203.0.113.16"), json!("203.0.113.8")]);
    assert!(a.get("ipv6").is_none(), "no IPv6 pool, no IPv6");
    let (s, v) = h
        .rent(json!({"public_key": new_key(), "prefix_len": 29}))
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "pool_exhausted");

    // The operator ends the first /29: all eight addresses rest, none is rented meanwhile.
    h.svc.release(a["public_key"].as_str().unwrap()).unwrap();
    let mut singles = Vec::new();
    loop {
        match h.svc.rent(&new_key(), None).await {
            Ok(v) => singles.push(v.rental.address),
            Err(crate::service::ServiceError::PoolExhausted) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(singles.len(), 30 - 16, "{singles:?}");
    let released = a["address"].as_str().unwrap();
    let base: u32 = released.rsplit('.').next().unwrap().parse().unwrap();
    for s in &singles {
        let last: u32 = s.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            !(base..base + 8).contains(&last),
            "{s} inside the resting {released}/29"
        );
    }
}

#[tokio::test]
async fn ipv6_only_rentals_where_sold() {
    // Not sold: refused, nothing held.
    let h = server("203.0.113.0/27", Some("2001:db8:100::/48"), |_| {}).await;
    let (s, v) = h
        .rent(json!({"public_key": new_key(), "ipv4": false}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("IPv6-only"));
    let (_, t) = h.call(reqwest::Method::GET, "/v1/terms", None).await;
    assert!(t.get("ipv6_only_monthly_sat").is_none());

    let h = server("203.0.113.0/27", Some("2001:db8:100::/48"), |c| {
        c.terms.ipv6_only_monthly_sat = Some(10_000);
    })
    .await;
    let (_, t) = h.call(reqwest::Method::GET, "/v1/terms", None).await;
    assert_eq!(t["ipv6_only_monthly_sat"], 10_000);
    for (body, why) in [
        (
            json!({"public_key": new_key(), "ipv4": false, "prefix_len": 30}),
            "with a prefix",
        ),
        (
            json!({"public_key": new_key(), "ipv4": false, "ipv6": false}),
            "without IPv6",
        ),
    ] {
        let (s, v) = h.rent(body).await;
        assert_eq!(s, 400, "{why}: {v}");
    }
    let key = new_key();
    let (s, v) = h.rent(json!({"public_key": key, "ipv4": false})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["rental"]["address"], "");
    assert_eq!(v["rental"]["ipv6"], "2001:db8:100::/64");
    assert_eq!(v["invoice"]["amount_sat"], 48_000 + 10_000);
    h.pay(v["invoice"]["bolt11"].as_str().unwrap()).await;
    let peer: [u8; 32] = STANDARD.decode(&key).unwrap().try_into().unwrap();
    let nets: Vec<String> = h.svc.sweep().unwrap()["t"][&peer]
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["2001:db8:100::/64"]);
    let (s, c) = h
        .call(
            reqwest::Method::GET,
            &format!("/v1/rentals/{}/config", url_key(&key)),
            None,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["allowed_ips"], json!(["::/0"]));
    let wg = c["wg_quick"].as_str().unwrap();
    assert!(wg.contains("Address = 2001:db8:100::1/128\n"), "{wg}");
    // The IPv4 pool is untouched: every address still free.
    let (_, t) = h.call(reqwest::Method::GET, "/v1/terms", None).await;
    assert_eq!(t["servers"][0]["free_ipv4"], 30);
    // Renewal at the IPv6-only rate; release and cool-down work without an address.
    let (s, r) = h
        .call(
            reqwest::Method::POST,
            &format!("/v1/rentals/{}/renewals", url_key(&key)),
            Some(json!({"months": 2})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["invoice"]["amount_sat"], 20_000);
    h.svc.release(&key).unwrap();
    let (s, v) = h
        .rent(json!({"public_key": new_key(), "ipv4": false}))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["rental"]["ipv6"], "2001:db8:100:1::/64",
        "the released /64 rests"
    );
    crate::metrics::scrape::refresh(&h.svc).unwrap();
}
