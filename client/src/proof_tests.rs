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

/// Serves the terms on `GET /v1/terms` and a 404 error body on anything else, one request per
/// connection, recording every request.
async fn recorder(terms: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
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
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                target: target.clone(),
                authorization: header("authorization"),
                body: buf[head_end..head_end + len].to_vec(),
            });
            let (status, body) = if target == "/v1/terms" {
                ("200 OK", terms.clone())
            } else {
                (
                    "404 Not Found",
                    r#"{"error":{"code":"not_found","message":"recorded"}}"#.to_string(),
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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
