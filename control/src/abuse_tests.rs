//! Abuse of the public listeners, end to end through the real listener (`limits::serve`) with
//! both APIs on it: floods of unpaid rentals from many keys and several client addresses,
//! request bursts, oversized bodies, slow-loris clients. Loopback has a whole /8, so each
//! "client address" is a distinct 127.0.0.x the test binds its sockets to.

use crate::config::LimitsConfig;
use crate::lightning::{dev, Backend};
use crate::service::Service;
use crate::testkit::{Builder, Control};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Server {
    ctl: Control,
    pub svc: Arc<Service>,
    addr: SocketAddr,
}

pub async fn server(pool: &str, limits: LimitsConfig) -> Server {
    wrap(
        Builder::new(pool)
            .limits(limits)
            .compat()
            .limited()
            .serve()
            .await,
    )
}

/// A server whose data (database, keys) lives in `dir`.
pub async fn server_in(dir: &std::path::Path, pool: &str, limits: LimitsConfig) -> Server {
    // Both APIs on one listener, as the HTTPS listener serves them (TLS aside).
    let ctl = Builder::new(pool)
        .limits(limits)
        .in_dir(dir)
        .compat()
        .limited()
        .serve()
        .await;
    wrap(ctl)
}

fn wrap(ctl: Control) -> Server {
    Server {
        svc: ctl.svc.clone(),
        addr: ctl.addr,
        ctl,
    }
}

pub use crate::proving::client_from as from;

/// A key pair whose private half the test client holds.
pub fn new_key() -> String {
    crate::proving::new_key()
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        self.ctl.url(path)
    }

    pub async fn rent(&self, c: &crate::proving::Client, key: &str) -> (u16, Value) {
        let r = c
            .post(self.url("/v1/rentals"))
            .json(&json!({ "public_key": key }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn add_credit(&self, c: &crate::proving::Client, key: &str) -> (u16, Value) {
        let r = c
            .post(self.url("/api/AddCredit/"))
            .form(&[("WireGuardPubKey", key), ("amount", "5000")])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn live_unpaid(&self) -> i64 {
        self.svc
            .db()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM rentals WHERE released_at IS NULL AND started_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_flood_from_many_keys_and_addresses_cannot_stop_a_paying_customer() {
    // 30 rentable addresses; four attacking client prefixes (/24s) at 5 unpaid addresses each
    // can hold 20 at a time, /v1's holds at most 15 of them and AddCredit's 7 (their shares).
    // Request rates high enough that the caps on unpaid holds are what stop the flood.
    let limits = LimitsConfig {
        max_unpaid_per_client: 5,
        invoice_burst: 1000,
        ..LimitsConfig::default()
    };
    let s = Arc::new(server("203.0.113.0/27", limits).await);
    let attackers = ["127.1.0.2", "127.2.0.3", "127.3.0.4", "127.4.0.5"];
    let mut flood = Vec::new();
    for (i, ip) in attackers.iter().enumerate() {
        for n in 0..40 {
            let (s, c) = (s.clone(), from(ip));
            flood.push(tokio::spawn(async move {
                // Both APIs: /v1 rentals and the original client's AddCredit.
                if (n + i) % 3 == 0 {
                    let (st, v) = s.add_credit(&c, &new_key()).await;
                    (st == 200 && v.get("Error").is_none(), st)
                } else {
                    let (st, _) = s.rent(&c, &new_key()).await;
                    (st == 201, st)
                }
            }));
        }
    }
    // The paying customer arrives in the middle of the flood.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let customer = from("127.9.0.9");
    let key = new_key();
    let (st, r) = s.rent(&customer, &key).await;
    assert_eq!(st, 201, "the paying customer was refused: {r}");
    let mut won = 0;
    let mut statuses = std::collections::BTreeMap::new();
    for t in flood {
        let (ok, st) = t.await.unwrap();
        won += usize::from(ok);
        *statuses.entry(st).or_insert(0) += 1;
    }
    assert!(won >= 4, "each attacker gets its share: {statuses:?}");
    assert!(statuses.contains_key(&429), "{statuses:?}");
    // Holds taken over (by a prefix holding less, once a listener's share is spent) are
    // released: what is held is within the caps, whatever was answered.
    let live = s.live_unpaid() as usize;
    assert!(live <= won + 1, "{live} held, {won} answered");
    assert!(live <= 20 + 1, "attackers hold {live} unpaid: {statuses:?}");

    // It pays and is active; a second flood round changes nothing for it.
    let Backend::Dev(node) = &s.svc.ln() else {
        unreachable!()
    };
    {
        let db = s.svc.db().unwrap();
        let bolt11 = r["invoice"]["bolt11"].as_str().unwrap();
        dev::pay(&db, &node.node_id, bolt11, s.svc.clock().now()).unwrap();
    }
    s.svc.check_invoices().await.unwrap();
    let st: Value = customer
        .get(s.url(&format!(
            "/v1/rentals/{}",
            key.replace('+', "-").replace('/', "_")
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["state"], "active", "{st}");

    // Another customer from yet another address still finds a free address, and so does a
    // customer sharing an attacker's address once that attacker's holds expire.
    let (st, v) = s.rent(&from("127.10.0.10"), &new_key()).await;
    assert_eq!(st, 201, "{v}");
    // The attacker's prefix (some of its holds may have been taken over) is soon at its cap.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (st, v) = s.rent(&from("127.1.0.2"), &new_key()).await;
        answers.push(st);
        if st == 429 {
            assert_eq!(v["error"]["code"], "too_many_unpaid");
            break;
        }
    }
    assert_eq!(answers.last(), Some(&429), "{answers:?}");
    s.svc.clock().advance(3601);
    s.svc.check_invoices().await.unwrap();
    let (st, v) = s.rent(&from("127.1.0.2"), &new_key()).await;
    assert_eq!(st, 201, "holds that expired no longer count: {v}");
}

#[tokio::test]
async fn bursts_get_429_with_retry_after_per_client_on_both_apis() {
    let limits = LimitsConfig {
        burst: 10,
        per_second: 2.0,
        ..LimitsConfig::default()
    };
    let s = server("203.0.113.0/28", limits).await;
    let c = from("127.0.0.2");
    for path in ["/v1/terms", "/api/GetSellOfferTerms/"] {
        let mut codes = Vec::new();
        let mut retry_after = None;
        for _ in 0..15 {
            let r = if path.starts_with("/api") {
                c.post(s.url(path)).send().await.unwrap()
            } else {
                c.get(s.url(path)).send().await.unwrap()
            };
            codes.push(r.status().as_u16());
            if r.status() == 429 {
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "rate_limited");
            }
        }
        assert!(codes.contains(&429), "{path}: {codes:?}");
        assert!(
            codes.iter().filter(|&&c| c == 200).count() <= 11,
            "{codes:?}"
        );
        let ra = retry_after.expect("Retry-After on 429");
        assert!((1..=2).contains(&ra), "Retry-After {ra}");
        // Another address is not affected.
        let r = from("127.0.0.3")
            .get(s.url("/v1/terms"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // After Retry-After, it is served again.
        tokio::time::sleep(Duration::from_secs(ra)).await;
        let r = c.get(s.url("/v1/terms")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    // Invoice-making routes have their own, tighter budget.
    let limits = LimitsConfig {
        invoice_burst: 3,
        invoices_per_minute: 1.0,
        ..LimitsConfig::default()
    };
    let s = server("203.0.113.0/28", limits).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(s.rent(&c, &new_key()).await.0);
    }
    assert_eq!(codes, [201, 201, 201, 429, 429]);
    let r = c.get(s.url("/v1/terms")).send().await.unwrap();
    assert_eq!(r.status(), 200, "reading is still allowed");
}

#[tokio::test]
async fn oversized_bodies_get_413_on_both_apis() {
    let s = server("203.0.113.0/28", LimitsConfig::default()).await;
    let c = from("127.0.0.2");
    let big = "x".repeat(200 * 1024);
    // Declared length too large.
    let r = c
        .post(s.url("/v1/rentals"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    let r = c
        .post(s.url("/api/rent/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("WireGuardPubKey={big}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked, no length: cut off at the limit all the same.
    let chunks =
        futures_util::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 4096])));
    let r = c
        .post(s.url("/v1/rentals"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Nothing was held.
    assert_eq!(s.live_unpaid(), 0);
}

/// A client that shuts its sending side once its request is out (as `nc -N`, some HTTP/1.0
/// tools and proxies do) still gets the answer: hyper's default closes the connection when the
/// read side ends, which answered such a client nothing at all.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let s = server("203.0.113.0/28", LimitsConfig::default()).await;
    let (st, v) = s.rent(&from("127.0.0.9"), &new_key()).await;
    assert_eq!(st, 201, "{v}");
    let hash = v["invoice"]["payment_hash"].as_str().unwrap();
    // The long-poll of an open invoice is still waiting when the client's EOF arrives.
    let target = format!("/v1/invoices/{hash}?wait=1");
    let terms = serde_json::to_value(s.svc.api_terms()).unwrap();
    let proof = crate::proving::authorization(&terms, "GET", &target, b"").expect("a proof");
    let wait = format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {proof}\r\n\r\n");
    let asks: [(&[u8], &str); 3] = [
        (b"GET /v1/terms HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200"),
        (
            b"POST /v1/rentals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{]",
            "HTTP/1.1 400",
        ),
        (wait.as_bytes(), "HTTP/1.1 200"),
    ];
    for (ask, want) in asks {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(ask).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("the answer, then the close")
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with(want), "{want} expected, got {got:?}");
    }
}

/// Opens a connection from `ip` and sends `head` a few bytes at a time, forever.
async fn slow_client(server: SocketAddr, ip: &str, head: &'static [u8]) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
    let mut s = sock.connect(server).await.unwrap();
    s.write_all(&head[..5]).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_cannot_exhaust_the_listener() {
    let limits = LimitsConfig {
        max_connections_per_client: 16,
        max_connections: 256,
        header_timeout_secs: 2,
        body_timeout_secs: 2,
        ..LimitsConfig::default()
    };
    let s = server("203.0.113.0/28", limits).await;
    const HEAD: &[u8] = b"GET /v1/terms HTTP/1.1\r\nHost: x\r\n";
    // Three attacking addresses open 100 connections each and dribble their request heads.
    let mut held = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        for _ in 0..100 {
            held.push(slow_client(s.addr, ip, HEAD).await);
        }
    }
    let dribble = tokio::spawn(async move {
        let start = Instant::now();
        let mut open_after = Vec::new();
        for round in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut open = 0;
            for c in held.iter_mut() {
                if c.write_all(b"X").await.is_ok() {
                    let mut b = [0u8; 1];
                    // A closed connection reads EOF (or errors) at once.
                    let read = tokio::time::timeout(Duration::from_millis(1), c.read(&mut b));
                    if read.await.is_err() {
                        open += 1;
                    }
                }
            }
            open_after.push((round, start.elapsed().as_millis(), open));
        }
        open_after
    });
    // Meanwhile a customer is answered at once, again and again.
    let customer = from("127.9.0.9");
    for _ in 0..20 {
        let t = Instant::now();
        let r = customer.get(s.url("/v1/terms")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let rounds = dribble.await.unwrap();
    // At most 16 per attacking address were ever admitted, and the header timeout (2 s) closed
    // even those although they kept sending.
    let first = rounds[0].2;
    assert!(first <= 48, "{rounds:?}");
    assert_eq!(rounds.last().unwrap().2, 0, "{rounds:?}");

    // A slow body is cut off too: 408.
    let mut c = slow_client(
        s.addr,
        "127.0.0.5",
        b"POST /v1/rentals HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    c.write_all(b"/v1/rentals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(6), c.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn bad_keys_are_refused_with_a_clear_error_on_both_apis() {
    let limits = LimitsConfig {
        burst: 1000,
        invoice_burst: 1000,
        ..LimitsConfig::default()
    };
    let s = server("203.0.113.0/28", limits).await;
    let c = from("127.0.0.2");
    let mut order8 = [0u8; 32];
    order8.copy_from_slice(
        &hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap(),
    );
    let mut p_plus_1 = [0xffu8; 32];
    p_plus_1[0] = 0xee;
    p_plus_1[31] = 0x7f;
    let mut one_high = [0u8; 32];
    one_high[0] = 1;
    one_high[31] = 0x80;
    let cases: Vec<(String, &str)> = vec![
        (STANDARD.encode([0u8; 32]), "all-zero"),
        (STANDARD.encode(order8), "low-order"),
        (STANDARD.encode(p_plus_1), "low-order"),
        (STANDARD.encode(one_high), "low-order"),
        (STANDARD.encode([5u8; 31]), "32 bytes"),
        (STANDARD.encode([5u8; 33]), "32 bytes"),
        (
            "not base64 at all, but 44 characters long!!".into(),
            "44 characters",
        ),
    ];
    for (key, why) in &cases {
        let (st, v) = s.rent(&c, key).await;
        assert_eq!(st, 400, "{key}: {v}");
        assert_eq!(v["error"]["code"], "bad_public_key");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(why), "{key}: {msg}");
        let url_key = key.replace('+', "-").replace('/', "_");
        let r = c
            .get(s.url(&format!("/v1/rentals/{url_key}")))
            .send()
            .await
            .unwrap();
        assert!(r.status() == 400 || r.status() == 404, "{key}");
        let (st, v) = s.add_credit(&c, key).await;
        assert_eq!(st, 200);
        let err = v["Error"].as_str().unwrap_or_default();
        assert!(err.contains(why), "{key}: {v}");
        for path in [
            "/api/rent/",
            "/api/getstatus/",
            "/api/getconf/",
            "/api/renew/",
        ] {
            let v: Value = c
                .post(s.url(path))
                .form(&[("WireGuardPubKey", key.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(
                v["Error"].as_str().is_some_and(|e| e.contains(why)),
                "{path} {key}: {v}"
            );
        }
    }
    assert_eq!(s.live_unpaid(), 0, "nothing was held");
}
