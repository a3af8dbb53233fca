//! The proof of key possession as `staticip` sends it: a plain TCP server records each request
//! as it arrives on the wire and checks its proof with the server-side verifier of
//! `staticwire-api`, so the MAC covers exactly what was sent (URL-safe key paths, the query).

use crate::api::{pin_proof_key, Api, ApiError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use staticwire_api::proof::{unix_now, ProofError, Verifier};
use staticwire_api::RentRequest;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn terms_json(proof_key: Option<&str>) -> String {
    let mut t = serde_json::json!({
        "activation_sat": 48000, "monthly_sat": 24000, "first_payment_sat": 72000,
        "month_seconds": 2592000, "reservation_seconds": 5184000,
        "invoice_expiry_seconds": 3600, "max_months": 12, "network": "regtest",
        "servers": [{"endpoint": "198.18.0.1:51820",
                     "public_key": "wXi9G7I2O2CVwl7iid6aDuoKayzsfp4LaTINu+hX/nk="}],
    });
    if let Some(k) = proof_key {
        t["proof_key"] = k.into();
    }
    t.to_string()
}

/// An answer to a request other than the terms: status line, extra header lines, body.
type Answer = (String, String, String);

/// Serves the terms on `GET /v1/terms` and a 404 error body on anything else, one request per
/// connection, recording every request.
async fn recorder(terms: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
    recorder_with(terms, |_| {
        (
            "404 Not Found".into(),
            String::new(),
            r#"{"error":{"code":"not_found","message":"recorded"}}"#.into(),
        )
    })
    .await
}

/// As [`recorder`], answering the other requests with `answer`.
async fn recorder_with(
    terms: String,
    answer: impl Fn(&Seen) -> Answer + Send + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
            let mut lines = head.lines();
            let mut request_line = lines.next().unwrap().split(' ');
            let method = request_line.next().unwrap().to_string();
            let target = request_line.next().unwrap().to_string();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
            };
            let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let request = Seen {
                method: method.clone(),
                target: target.clone(),
                authorization: header("authorization"),
                body: buf[head_end..head_end + len].to_vec(),
            };
            log.lock().unwrap().push(request.clone());
            let (status, extra, body) = if target == "/v1/terms" {
                ("200 OK".to_string(), String::new(), terms.clone())
            } else {
                answer(&request)
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

#[tokio::test]
async fn every_request_on_the_rental_carries_a_proof_the_server_verifies() {
    let verifier = Verifier::new([7u8; 32], 100);
    let proof_key = verifier.public_key_base64();
    let (url, seen) = recorder(terms_json(Some(&proof_key))).await;
    let private = [0x42u8; 32];
    let public = STANDARD.encode(staticwire_api::proof::proof_public_key(&private));
    let public_bytes: [u8; 32] = STANDARD.decode(&public).unwrap().try_into().unwrap();

    let mut api = Api::new(&url, None).unwrap();
    let (_, offered) = api.terms_and_proof_key().await.unwrap();
    assert_eq!(offered.as_deref(), Some(proof_key.as_str()));
    api.prove_with(&private, &proof_key).unwrap();
    // The key has '/' or '+' in standard base64 for a good test of the URL-safe path.
    let hash = "ab".repeat(32);
    let _ = api.rent_with(&RentRequest::new(&public)).await;
    let _ = api.status(&public).await;
    let _ = api.status(&public).await;
    let _ = api.config(&public).await;
    let _ = api.renew(&public, 2).await;
    let _ = api.invoice(&hash, 5).await;
    // Cached: a second look at the terms asks nothing.
    api.terms().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let asked: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    let k = crate::api::url_key(&public);
    assert_eq!(
        asked,
        [
            "GET /v1/terms".to_string(),
            "POST /v1/rentals".into(),
            format!("GET /v1/rentals/{k}"),
            format!("GET /v1/rentals/{k}"),
            format!("GET /v1/rentals/{k}/config"),
            format!("POST /v1/rentals/{k}/renewals"),
            format!("GET /v1/invoices/{hash}?wait=5"),
        ]
    );
    assert!(seen[0].authorization.is_none(), "the terms need no proof");
    for s in &seen[1..] {
        let expected = (!s.target.starts_with("/v1/invoices")).then_some(&public_bytes);
        let got = verifier.verify(
            s.authorization.as_deref(),
            expected,
            &s.method,
            &s.target,
            &s.body,
            unix_now(),
        );
        assert_eq!(got, Ok(public_bytes), "{} {}", s.method, s.target);
    }
    // Two statuses in the same second were two proofs; sent again, each is a replay.
    assert_ne!(seen[2].authorization, seen[3].authorization);
    let again = verifier.verify(
        seen[2].authorization.as_deref(),
        Some(&public_bytes),
        "GET",
        &seen[2].target,
        b"",
        unix_now(),
    );
    assert_eq!(again, Err(ProofError::Replayed));
    // The body MACed is the body sent: the rent's names our key.
    let body: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(body["public_key"], public.as_str());
}

/// A server whose clock is an hour ahead of ours: it checks proofs against its own clock and
/// says its time in `Date`.
#[tokio::test]
async fn after_proof_expired_the_client_retries_once_on_the_servers_clock() {
    const AHEAD: u64 = 3600;
    let verifier = Verifier::new([7u8; 32], 100);
    let proof_key = verifier.public_key_base64();
    let (url, seen) = recorder_with(terms_json(Some(&proof_key)), move |r| {
        let now = unix_now() + AHEAD;
        let date =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now));
        let (status, code) = match verifier.verify(
            r.authorization.as_deref(),
            None,
            &r.method,
            &r.target,
            &r.body,
            now,
        ) {
            Ok(_) => ("404 Not Found", "not_found"),
            Err(e) => ("401 Unauthorized", e.code()),
        };
        (
            status.into(),
            format!("date: {date}\r\n"),
            format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#),
        )
    })
    .await;
    let private = [0x42u8; 32];
    let public = STANDARD.encode(staticwire_api::proof::proof_public_key(&private));
    let mut api = Api::new(&url, None).unwrap();
    api.terms_and_proof_key().await.unwrap();
    api.prove_with(&private, &proof_key).unwrap();

    // Refused as expired, then proven at the server's time: its answer (404) comes through.
    let first = api.status(&public).await.unwrap_err();
    assert!(
        matches!(&first, ApiError::Refused { code, .. } if code == "not_found"),
        "{first}"
    );
    // The offset is kept: the next request is proven on the server's clock at once.
    let second = api.status(&public).await.unwrap_err();
    assert!(
        matches!(&second, ApiError::Refused { code, .. } if code == "not_found"),
        "{second}"
    );
    let seen = seen.lock().unwrap().clone();
    let ts = |s: &Seen| {
        staticwire_api::proof::Proof::parse(s.authorization.as_deref().unwrap())
            .unwrap()
            .ts
    };
    assert_eq!(
        seen.len(),
        4,
        "terms, the expired try, its retry, the next: {seen:#?}"
    );
    // The first on our clock, the retry and the next on the server's.
    assert!(ts(&seen[1]).abs_diff(unix_now()) <= 5);
    assert!(ts(&seen[2]).abs_diff(unix_now() + AHEAD) <= 5);
    assert!(ts(&seen[3]).abs_diff(unix_now() + AHEAD) <= 5);
}

/// Only once: a server that keeps saying `proof_expired` gets one retry, not a loop.
#[tokio::test]
async fn a_second_proof_expired_is_the_answer() {
    let (url, seen) = recorder_with(
        terms_json(Some(&Verifier::new([7u8; 32], 1).public_key_base64())),
        |_| {
            (
                "401 Unauthorized".into(),
                "date: Thu, 01 Jan 2099 00:00:00 GMT\r\n".into(),
                r#"{"error":{"code":"proof_expired","message":"m"}}"#.into(),
            )
        },
    )
    .await;
    let mut api = Api::new(&url, None).unwrap();
    let (_, k) = api.terms_and_proof_key().await.unwrap();
    api.prove_with(&[0x42u8; 32], &k.unwrap()).unwrap();
    let e = api
        .status("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::Refused { code, .. } if code == "proof_expired"),
        "{e}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_server_without_a_proof_key_gets_no_proofs() {
    let (url, seen) = recorder(terms_json(None)).await;
    let api = Api::new(&url, None).unwrap();
    let (_, offered) = api.terms_and_proof_key().await.unwrap();
    assert_eq!(offered, None);
    let _ = api
        .status("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")
        .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].authorization.is_none());
}

#[test]
fn the_proof_key_is_pinned_per_rental() {
    let (a, b) = (
        "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=",
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",
    );
    assert_eq!(pin_proof_key(None, None).unwrap(), None);
    assert_eq!(pin_proof_key(None, Some(a)).unwrap().as_deref(), Some(a));
    assert_eq!(pin_proof_key(Some(a), Some(a)).unwrap().as_deref(), Some(a));
    let changed = pin_proof_key(Some(a), Some(b)).unwrap_err();
    assert!(matches!(changed, ApiError::ProofKey(_)));
    assert!(changed.to_string().contains("another server"), "{changed}");
    let gone = pin_proof_key(Some(a), None).unwrap_err();
    assert!(gone.to_string().contains("no longer publishes"), "{gone}");
}

#[test]
fn unusable_proof_keys_are_refused() {
    let mut api = Api::new("http://127.0.0.1:9", None).unwrap();
    let private = [0x42u8; 32];
    assert!(api.prove_with(&private, "AAAA").is_err());
    let zero = STANDARD.encode([0u8; 32]);
    let e = api.prove_with(&private, &zero).unwrap_err();
    assert!(e.to_string().contains("proof key"), "{e}");
    assert!(api.proof_key.is_none());
}
