//! Unpaid holds cannot starve the pool (issue 20, case 1), through the real binary
//! (`testkit::Process`): floods of unpaid holds of every size from many keys and client
//! prefixes, and a customer from elsewhere who still gets an address and, paying, keeps it.
//! Loopback has a whole /8: each client is a 127.A.B.C its sockets are bound to.

use crate::proving::{client_from as from, new_key};
use crate::testkit::Process;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};

/// Rate limits out of the way: the caps on unpaid holds are what the tests are about.
const FAST: &str = crate::testkit::NO_RATE_LIMITS;

async fn rent(p: &Process, c: &crate::proving::Client, body: Value) -> (u16, Value) {
    let r = c
        .post(format!("{}/v1/rentals", p.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Pays an invoice with the dev node and answers the rental's status afterwards.
async fn pay_and_status(p: &Process, key: &str, bolt11: &str) -> Value {
    let c = from("127.0.0.1");
    let r = c
        .post(format!("{}/v1/dev/pay", p.url()))
        .json(&json!({ "bolt11": bolt11 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let key = URL_SAFE.encode(STANDARD.decode(key).unwrap());
    c.get(format!("{}/v1/rentals/{key}", p.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Case 1 of issue 20 as it was reproduced: seven client addresses ask for five unpaid /29
/// holds each on a /24 (253 rentable addresses, the default terms). Before, that held every
/// whole /29 (240 addresses; 13 singles left at the edges) and a customer from elsewhere
/// asking for a /29 got `503 pool_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_addresses_of_unpaid_29s_leave_a_customer_served() {
    let p = Process::start_with(
        FAST,
        "pools = [\"203.0.113.0/24\"]\nreserved = [\"203.0.113.1\"]\n",
    );
    let mut held = 0u32;
    let mut statuses = std::collections::BTreeMap::new();
    for s in 10..=16 {
        let c = from(&format!("127.0.0.{s}"));
        for _ in 0..5 {
            let (st, _) = rent(&p, &c, json!({"public_key": new_key(), "prefix_len": 29})).await;
            held += if st == 201 { 8 } else { 0 };
            *statuses.entry(st).or_insert(0) += 1;
        }
    }
    let key = new_key();
    // A customer from elsewhere asks for what the flood asked for: a /29.
    let (st, v) = rent(
        &p,
        &from("127.0.1.20"),
        json!({"public_key": key, "prefix_len": 29}),
    )
    .await;
    assert_eq!(
        st, 201,
        "the customer was refused: {v} (the flood: {statuses:?})"
    );
    // The seven addresses are one client prefix (127.0.0.0/24): the default cap of unpaid
    // addresses per client prefix, not 7 × 5 × 8.
    assert!(held <= 8, "the flood holds {held} addresses unpaid");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [201, 429]);
    let status = pay_and_status(&p, &key, v["invoice"]["bolt11"].as_str().unwrap()).await;
    assert_eq!(status["state"], "active", "{status}");
}

/// The status of `key`'s rental (404 answers `null`).
async fn status(p: &Process, key: &str) -> Value {
    let key = URL_SAFE.encode(STANDARD.decode(key).unwrap());
    let r = from("127.0.0.1")
        .get(format!("{}/v1/rentals/{key}", p.url()))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap_or(Value::Null)
}

/// A flood of every size of hold (/29, /30, /31, /32, IPv6 only) from many keys and twelve
/// client /24s, three addresses each, all at once, on a /27 with a /60 of IPv6 (16 prefixes):
/// each prefix stays within its cap, `/v1`'s holds within half of what is not paid for, and
/// a customer from elsewhere gets a /32 and an IPv6-only rental and, paying, keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_flood_from_many_prefixes_leaves_a_paying_customer_served() {
    let p = std::sync::Arc::new(Process::start_with(
        &format!("{FAST}[terms]\nipv6_monthly_sat = 1000\nipv6_only_monthly_sat = 10000\n"),
        "pools = [\"203.0.113.0/27\"]\nipv6_pool = \"2001:db8:100::/60\"\n",
    ));
    let bodies = [
        json!({"prefix_len": 29}),
        json!({"prefix_len": 30}),
        json!({"prefix_len": 31}),
        json!({}),
        json!({"ipv4": false}),
    ];
    let mut flood = Vec::new();
    for net in 0..12u8 {
        for host in 1..=3u8 {
            for n in 0..6usize {
                let (p, mut body) = (p.clone(), bodies[(n + usize::from(host)) % 5].clone());
                let prefix = format!("127.{}.{net}.0/24", 10 + net);
                let c = from(&format!("127.{}.{net}.{host}", 10 + net));
                flood.push(tokio::spawn(async move {
                    let key = new_key();
                    body["public_key"] = json!(key);
                    let (st, v) = rent(&p, &c, body).await;
                    (prefix, key, st, v)
                }));
            }
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut won = Vec::new();
    for t in flood {
        let (prefix, key, st, v) = t.await.unwrap();
        *statuses.entry(st).or_insert(0) += 1;
        match st {
            201 => won.push((prefix, key)),
            429 => assert_eq!(v["error"]["code"], "too_many_unpaid", "{v}"),
            503 => assert_eq!(v["error"]["code"], "pool_exhausted", "{v}"),
            _ => panic!("{st}: {v}"),
        }
    }
    assert!(statuses.contains_key(&429), "{statuses:?}");
    // What each prefix holds now (holds taken over are released).
    let mut held: std::collections::HashMap<String, u64> = Default::default();
    let (mut v4, mut v6) = (0u64, 0u64);
    for (prefix, key) in &won {
        let s = status(&p, key).await;
        if s["state"] != "pending" {
            assert_eq!(s["state"], "released", "{s}");
            continue;
        }
        let addresses = match s["address"].as_str() {
            Some(a) if !a.is_empty() => 1u64 << (32 - s["prefix_len"].as_u64().unwrap_or(32)),
            _ => 0,
        };
        v4 += addresses;
        v6 += u64::from(s["ipv6"].is_string());
        *held.entry(prefix.clone()).or_default() += addresses.max(1);
    }
    for (prefix, units) in &held {
        assert!(*units <= 8, "{prefix} holds {units} unpaid");
    }
    eprintln!("flood answers {statuses:?}; held unpaid: {v4} addresses, {v6} IPv6 prefixes, by prefix {held:?}");
    // 30 addresses, none paid: at most 15 held unpaid by /v1; 16 IPv6 prefixes: at most 8.
    assert!(v4 <= 15, "{v4} addresses held unpaid");
    assert!(v6 <= 8, "{v6} IPv6 prefixes held unpaid");

    // The customer, from a /24 of its own: a /32, and an IPv6-only rental from another.
    for (ip, body) in [
        ("127.200.0.1", json!({})),
        ("127.201.0.1", json!({"ipv4": false})),
    ] {
        let key = new_key();
        let mut body = body;
        body["public_key"] = json!(key);
        let (st, v) = rent(&p, &from(ip), body).await;
        assert_eq!(
            st, 201,
            "the customer was refused: {v} (the flood: {statuses:?})"
        );
        let s = pay_and_status(&p, &key, v["invoice"]["bolt11"].as_str().unwrap()).await;
        assert_eq!(s["state"], "active", "{s}");
    }
}

/// A hold taken over when its listener's share was spent is still an invoice its customer
/// can pay, and the payment wins: the rental is placed again, taking over an unpaid hold if
/// it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_hold_that_is_paid_is_placed_again() {
    // A /29: six rentable addresses, /v1 may hold three unpaid.
    let p = Process::start_with(FAST, "pools = [\"203.0.113.0/29\"]\n");
    let mut keys = Vec::new();
    for net in 1..=3 {
        let key = new_key();
        let (st, v) = rent(
            &p,
            &from(&format!("127.{net}.0.1")),
            json!({"public_key": key}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        keys.push((key, v["invoice"]["bolt11"].as_str().unwrap().to_string()));
    }
    // A fourth prefix: the share is spent, and every holder holds one address, as it will:
    // the oldest hold is taken over.
    let (st, v) = rent(&p, &from("127.4.0.1"), json!({"public_key": new_key()})).await;
    assert_eq!(st, 201, "{v}");
    let (first, bolt11) = &keys[0];
    let s = status(&p, first).await;
    assert_eq!(
        s["state"], "released",
        "the oldest hold was not taken over: {s}"
    );
    // Its customer pays anyway: placed again, active.
    let s = pay_and_status(&p, first, bolt11).await;
    assert_eq!(s["state"], "active", "{s}");
    assert!(
        s["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("203.0.113.")),
        "{s}"
    );
    // The others are still held.
    for (key, _) in &keys[1..] {
        assert_eq!(status(&p, key).await["state"], "pending");
    }
}

/// A key's new rent with other options replaces its own unpaid hold in the same transaction:
/// the client's cap counts only the new one, and the old one's address is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_new_rent_replaces_its_unpaid_hold() {
    let p = Process::start_with(FAST, "pools = [\"203.0.113.0/27\"]\n");
    let c = from("127.5.0.1");
    let key = new_key();
    let (st, first) = rent(&p, &c, json!({"public_key": key, "prefix_len": 29})).await;
    assert_eq!(st, 201, "{first}");
    // The same options: the same invoice.
    let (st, again) = rent(&p, &c, json!({"public_key": key, "prefix_len": 29})).await;
    assert_eq!(st, 201, "{again}");
    assert_eq!(
        again["invoice"]["payment_hash"],
        first["invoice"]["payment_hash"]
    );
    // Other options: a new hold and invoice, within the cap of 8 only because the /29 went.
    let (st, v) = rent(&p, &c, json!({"public_key": key, "prefix_len": 30})).await;
    assert_eq!(st, 201, "{v}");
    assert_ne!(
        v["invoice"]["payment_hash"],
        first["invoice"]["payment_hash"]
    );
    assert_eq!(v["rental"]["prefix_len"], 30, "{v}");
    let (st, v) = rent(&p, &c, json!({"public_key": new_key(), "prefix_len": 30})).await;
    assert_eq!(st, 201, "the replaced /29 still counts: {v}");
}

/// An IPv6 prefix of a hold never paid for does not rest when the hold goes (taken over,
/// replaced, expired), as its IPv4 addresses do not: else unpaid IPv6 holds would keep a small
/// IPv6 pool out of use for the whole cool-down (the mixed flood found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_ipv6_prefix_is_free_again_at_once() {
    let p = Process::start_with(
        // IPv6 at a price: the IPv4 rental below takes none.
        &format!("{FAST}[terms]\nipv6_monthly_sat = 1000\nipv6_only_monthly_sat = 10000\n"),
        "pools = [\"203.0.113.0/28\"]\nipv6_pool = \"2001:db8:100::/60\"\n",
    );
    let c = from("127.6.0.1");
    let key = new_key();
    let (st, v) = rent(&p, &c, json!({"public_key": key, "ipv4": false})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["rental"]["ipv6"], "2001:db8:100::/64");
    // The key takes an IPv4 address instead: its IPv6-only hold is replaced.
    let (st, v) = rent(&p, &c, json!({"public_key": key})).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = rent(
        &p,
        &from("127.7.0.1"),
        json!({"public_key": new_key(), "ipv4": false}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["rental"]["ipv6"], "2001:db8:100::/64",
        "the unpaid /64 rests"
    );
}
