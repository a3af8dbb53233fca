//! Each listener's share of unpaid holds is its own (issue 20): a flood of unproven clients on
//! the original client's listener (compat, `[compat] accept_unproven`) stops at
//! `compat_unpaid_share` of the host with a clear error and cannot take a proven `/v1`
//! customer's hold, and a `/v1` flood cannot take a compat customer's. Through the real binary
//! (`testkit::Process`): `/v1` over HTTP, compat over its HTTPS listener; each client a
//! 127.A.B.C its sockets are bound to (loopback has a whole /8).

use crate::proving::client_from as v1_from;
use crate::testkit::Process;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Rate limits out of the way: the caps on unpaid holds are what the tests are about.
const FAST: &str = crate::testkit::NO_RATE_LIMITS;

/// A /26: 62 rentable addresses, none paid. `/v1` may hold floor(0.5 × 62) = 31 unpaid, the
/// compat listener floor(0.25 × 62) = 15 (the defaults of `[limits]`).
const POOL: &str = "pools = [\"203.0.113.0/26\"]\n";
const V1_SHARE: usize = 31;
const COMPAT_SHARE: usize = 15;

/// The compat listener's refusal when its share is spent (`ServiceError::UnpaidShareFull`).
const SHARE_FULL: &str = "unpaid share";
/// ... and when the client prefix's own cap is (`ServiceError::TooManyUnpaid`).
const PREFIX_CAP: &str = "unpaid address(es)";

fn start() -> Arc<Process> {
    Arc::new(Process::start_with(FAST, POOL))
}

/// An original client from `ip`, on the compat HTTPS listener: it cannot prove its key. The
/// listener's certificate is the control's own self-signed one (the original client pins it
/// by fingerprint); loopback only, so it is not checked here.
fn compat_from(ip: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn compat_url(p: &Process, path: &str) -> String {
    format!(
        "https://127.0.0.1:{}{path}",
        p.https_port.expect("the compat listener")
    )
}

/// A compat call with the key in its form body; the JSON it answers (always 200).
async fn compat_call(p: &Process, c: &reqwest::Client, path: &str, key: &str) -> Value {
    let r = c
        .post(compat_url(p, path))
        .form(&[("WireGuardPubKey", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn v1_rent(p: &Process, c: &crate::proving::Client, key: &str) -> (u16, Value) {
    let r = c
        .post(format!("{}/v1/rentals", p.url()))
        .json(&json!({ "public_key": key }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The `/v1` status of `key`'s rental, proven.
async fn v1_status(p: &Process, key: &str) -> Value {
    let key = URL_SAFE.encode(STANDARD.decode(key).unwrap());
    v1_from("127.0.0.1")
        .get(format!("{}/v1/rentals/{key}", p.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Pays an invoice with the dev node.
async fn pay(p: &Process, bolt11: &str) {
    let r = v1_from("127.0.0.1")
        .post(format!("{}/v1/dev/pay", p.url()))
        .json(&json!({ "bolt11": bolt11 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// `keys` compat rents from each of `prefixes` client /24s (`127.<net>.<i>.1`), all at once.
/// Returns the keys that got an invoice and the refusals by kind.
async fn compat_flood(
    p: &Arc<Process>,
    net: u8,
    prefixes: u8,
    keys: usize,
) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let mut flood = Vec::new();
    for i in 0..prefixes {
        for _ in 0..keys {
            let p = p.clone();
            flood.push(tokio::spawn(async move {
                let key = crate::proving::new_key();
                let c = compat_from(&format!("127.{net}.{i}.1"));
                let v = compat_call(&p, &c, "/api/rent/", &key).await;
                (key, v)
            }));
        }
    }
    let (mut won, mut refused) = (Vec::new(), BTreeMap::new());
    for t in flood {
        let (key, v) = t.await.unwrap();
        if v["Invoice"].is_string() {
            won.push(key);
            continue;
        }
        let e = v["Error"].as_str().unwrap_or_default();
        let kind = if e.contains(SHARE_FULL) {
            "share full"
        } else if e.contains(PREFIX_CAP) {
            "prefix cap"
        } else {
            panic!("a compat rent answered neither an invoice nor a hold limit: {v}")
        };
        *refused.entry(kind).or_default() += 1;
    }
    (won, refused)
}

/// `keys` proven `/v1` rents from each of `prefixes` client /24s (`127.<net>.<i>.1`), all at
/// once. Returns the keys that got a hold and the answers by status.
async fn v1_flood(
    p: &Arc<Process>,
    net: u8,
    prefixes: u8,
    keys: usize,
) -> (Vec<String>, BTreeMap<u16, usize>) {
    let mut flood = Vec::new();
    for i in 0..prefixes {
        for _ in 0..keys {
            let p = p.clone();
            flood.push(tokio::spawn(async move {
                let key = crate::proving::new_key();
                let (st, v) = v1_rent(&p, &v1_from(&format!("127.{net}.{i}.1")), &key).await;
                (key, st, v)
            }));
        }
    }
    let (mut won, mut statuses) = (Vec::new(), BTreeMap::new());
    for t in flood {
        let (key, st, v) = t.await.unwrap();
        *statuses.entry(st).or_default() += 1;
        match st {
            201 => won.push(key),
            429 => assert_eq!(v["error"]["code"], "too_many_unpaid", "{v}"),
            503 => assert_eq!(v["error"]["code"], "pool_exhausted", "{v}"),
            _ => panic!("{st}: {v}"),
        }
    }
    (won, statuses)
}

/// How many of the compat `keys` still hold an address unpaid (taken-over holds read
/// `released`).
async fn compat_pending(p: &Process, keys: &[String]) -> usize {
    let c = compat_from("127.0.0.1");
    let mut n = 0;
    for key in keys {
        let s = compat_call(p, &c, "/api/getstatus/", key).await;
        match s["state"].as_str() {
            Some("pending") => n += 1,
            Some("released") => {}
            _ => panic!("a flood rental reads {s}"),
        }
    }
    n
}

/// How many of the `/v1` `keys` still hold an address unpaid.
async fn v1_pending(p: &Process, keys: &[String]) -> usize {
    let mut n = 0;
    for key in keys {
        let s = v1_status(p, key).await;
        match s["state"].as_str() {
            Some("pending") => n += 1,
            Some("released") => {}
            _ => panic!("a flood rental reads {s}"),
        }
    }
    n
}

/// Forty client /24s of original clients, two keys each, all at once, then a second wave from
/// forty more: compat holds stay within `compat_unpaid_share` of the host, the rest are told
/// the share is spent (or their prefix's cap is). A proven `/v1` customer from a /24 of its
/// own, arriving between the waves, gets a hold that the second wave cannot take, pays, and
/// keeps the address it was shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compat_flood_stops_at_its_share_and_cannot_take_a_v1_customers_hold() {
    let p = start();
    let (won, refused) = compat_flood(&p, 10, 40, 2).await;
    assert!(
        refused.get("share full").copied().unwrap_or(0) > 0,
        "the compat share never refused the flood: {refused:?}"
    );
    let held = compat_pending(&p, &won).await;
    eprintln!(
        "compat wave 1: {} invoices, refused {refused:?}, {held} held now",
        won.len()
    );
    assert!(
        held <= COMPAT_SHARE,
        "the compat flood holds {held} addresses unpaid, beyond its share of {COMPAT_SHARE}"
    );

    // The /v1 customer, from elsewhere: a /32 hold, as every /v1 customer may while /v1's own
    // share has room.
    let key = crate::proving::new_key();
    let (st, v) = v1_rent(&p, &v1_from("127.200.0.1"), &key).await;
    assert_eq!(st, 201, "the /v1 customer was refused: {v}");
    let address = v["rental"]["address"].as_str().unwrap().to_string();
    let bolt11 = v["invoice"]["bolt11"].as_str().unwrap().to_string();

    // A second wave from new prefixes: its holds can take over only compat holds.
    let (won2, refused2) = compat_flood(&p, 11, 40, 2).await;
    let all: Vec<String> = won.iter().chain(&won2).cloned().collect();
    let held = compat_pending(&p, &all).await;
    eprintln!(
        "compat wave 2: {} invoices, refused {refused2:?}, {held} held now",
        won2.len()
    );
    assert!(
        held <= COMPAT_SHARE,
        "the compat floods hold {held} addresses unpaid, beyond their share of {COMPAT_SHARE}"
    );
    let s = v1_status(&p, &key).await;
    assert_eq!(s["state"], "pending", "the /v1 hold was taken: {s}");
    assert_eq!(s["address"], address.as_str(), "{s}");

    pay(&p, &bolt11).await;
    let s = v1_status(&p, &key).await;
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(
        s["address"],
        address.as_str(),
        "paid, on another address: {s}"
    );
}

/// A compat flood leaves `/v1` its whole share: after it, `/v1` customers from as many /24s
/// as `/v1`'s share all get holds, and none of them is taken over by a compat wave after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compat_flood_leaves_v1_its_whole_share() {
    let p = start();
    let (won, _) = compat_flood(&p, 10, 40, 2).await;
    let compat_held = compat_pending(&p, &won).await;
    assert!(compat_held <= COMPAT_SHARE, "{compat_held}");
    // One /v1 customer per /24, as many as /v1's share: each asks from a prefix holding
    // nothing, so no /v1 hold is taken over by another, and compat holds cannot be.
    let (v1_won, statuses) = v1_flood(&p, 20, V1_SHARE as u8, 1).await;
    assert_eq!(
        v1_won.len(),
        V1_SHARE,
        "/v1 customers refused beside the compat flood: {statuses:?}"
    );
    compat_flood(&p, 11, 40, 2).await;
    let v1_held = v1_pending(&p, &v1_won).await;
    assert_eq!(
        v1_held, V1_SHARE,
        "the compat flood took /v1 holds over ({v1_held} of {V1_SHARE} left)"
    );
}

/// The reverse (holds.rs: "each listener takes over only its own holds, so neither can starve
/// the other"): a proven `/v1` flood from forty /24s, two keys each, then a second wave; an
/// original client from a /24 of its own, arriving between the waves, gets a hold that the
/// `/v1` wave cannot take, pays, and keeps its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_flood_cannot_take_a_compat_customers_hold() {
    let p = start();
    let (won, statuses) = v1_flood(&p, 30, 40, 2).await;
    let held = v1_pending(&p, &won).await;
    eprintln!("/v1 wave 1: {statuses:?}, {held} held now");
    assert!(
        held <= V1_SHARE,
        "/v1 holds {held} unpaid, beyond its share"
    );

    let key = crate::proving::new_key();
    let c = compat_from("127.201.0.1");
    let v = compat_call(&p, &c, "/api/rent/", &key).await;
    let bolt11 = v["Invoice"]
        .as_str()
        .unwrap_or_else(|| panic!("the compat customer was refused: {v}"))
        .to_string();
    let address = v["Address"].as_str().unwrap().to_string();

    let (won2, statuses2) = v1_flood(&p, 31, 40, 2).await;
    let all: Vec<String> = won.iter().chain(&won2).cloned().collect();
    let held = v1_pending(&p, &all).await;
    eprintln!("/v1 wave 2: {statuses2:?}, {held} held now");
    assert!(
        held <= V1_SHARE,
        "/v1 holds {held} unpaid, beyond its share"
    );
    let s = compat_call(&p, &c, "/api/getstatus/", &key).await;
    assert_eq!(s["state"], "pending", "the compat hold was taken: {s}");
    assert_eq!(s["address"], address.as_str(), "{s}");

    pay(&p, &bolt11).await;
    let s = compat_call(&p, &c, "/api/getstatus/", &key).await;
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(
        s["address"],
        address.as_str(),
        "paid, on another address: {s}"
    );
}

/// An original client's hold taken over by later compat clients (its listener's share spent,
/// every holder holding one address, its hold the oldest) is still an invoice it can pay, and
/// the payment wins (PROTOCOL.md [rent.takeover]): placed again, active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compat_customers_taken_over_hold_that_is_paid_is_placed_again() {
    let p = start();
    let key = crate::proving::new_key();
    let c = compat_from("127.202.0.1");
    let v = compat_call(&p, &c, "/api/rent/", &key).await;
    let bolt11 = v["Invoice"]
        .as_str()
        .unwrap_or_else(|| panic!("the compat customer was refused: {v}"))
        .to_string();
    // One key from each of forty /24s, one after another: the sixteenth finds the share
    // spent and takes over the oldest hold, the customer's.
    for i in 0..40u8 {
        let v = compat_call(
            &p,
            &compat_from(&format!("127.12.{i}.1")),
            "/api/rent/",
            &crate::proving::new_key(),
        )
        .await;
        assert!(v["Invoice"].is_string(), "{v}");
    }
    let s = compat_call(&p, &c, "/api/getstatus/", &key).await;
    assert_eq!(
        s["state"], "released",
        "the oldest hold was not taken over: {s}"
    );
    pay(&p, &bolt11).await;
    let s = compat_call(&p, &c, "/api/getstatus/", &key).await;
    assert_eq!(s["state"], "active", "{s}");
    assert!(
        s["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("203.0.113.")),
        "{s}"
    );
}
