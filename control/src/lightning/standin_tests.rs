//! The LND and Core Lightning clients against local stand-in nodes that speak exactly the
//! documented wire formats (LND REST over TLS with a CA:TRUE self-signed certificate and a
//! macaroon header; CLN JSON-RPC 2.0 on a Unix socket, replies ending in a blank line). The
//! stand-ins sign real BOLT11 invoices, as the nodes do.

use super::cln::Cln;
use super::lnd::Lnd;
use super::{Backend, LnError, Status};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// (preimage, bolt11, amount_msat, settled_at)
type StoredInvoice = ([u8; 32], String, u64, Option<i64>);

struct Node {
    /// payment hash hex -> invoice
    invoices: Mutex<HashMap<String, StoredInvoice>>,
    labels: Mutex<Vec<String>>,
    /// Payment hashes in the order they were paid (CLN's pay_index - 1).
    paid: Mutex<Vec<String>>,
}

impl Node {
    fn new() -> Arc<Self> {
        Arc::new(Node {
            invoices: Mutex::new(HashMap::new()),
            labels: Mutex::new(Vec::new()),
            paid: Mutex::new(Vec::new()),
        })
    }

    fn sign(&self, amount_msat: u64, memo: &str, expiry: u64) -> (String, [u8; 32], [u8; 32]) {
        let preimage: [u8; 32] = rand::random();
        let secret: [u8; 32] = rand::random();
        let hash = sha256::Hash::hash(&preimage);
        let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let secp = Secp256k1::new();
        let inv = InvoiceBuilder::new(Currency::Bitcoin)
            .description(memo.to_string())
            .payment_hash(hash)
            .payment_secret(PaymentSecret(secret))
            .duration_since_epoch(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap(),
            )
            .min_final_cltv_expiry_delta(80)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &key))
            .unwrap();
        let h = hash.to_byte_array();
        self.invoices.lock().unwrap().insert(
            hex::encode(h),
            (preimage, inv.to_string(), amount_msat, None),
        );
        (inv.to_string(), h, secret)
    }

    fn settle(&self, hash: &str, at: i64) {
        self.invoices.lock().unwrap().get_mut(hash).unwrap().3 = Some(at);
        self.paid.lock().unwrap().push(hash.to_string());
    }
}

// ---- LND stand-in --------------------------------------------------------------------------

const MACAROON: &[u8] = b"\x02\x01\x03lnd admin macaroon bytes";

struct LndStandIn {
    url: String,
    cert_path: std::path::PathBuf,
    macaroon_path: std::path::PathBuf,
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

async fn lnd_answer(
    node: &Node,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    if headers.get("grpc-metadata-macaroon") != Some(&hex::encode(MACAROON)) {
        // What lnd's REST gateway really answers for a bad macaroon.
        return (
            500,
            json!({"code": 2, "message": "verification failed: signature mismatch after caveat verification", "details": []}),
        );
    }
    match (method, path) {
        ("GET", "/v1/getinfo") => (
            200,
            json!({"identity_pubkey": "02".to_string() + &"42".repeat(32), "alias": "stand-in"}),
        ),
        ("POST", "/v1/invoices") => {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return (400, json!({"code": 3, "message": "bad json"}));
            };
            // int64 fields arrive as strings.
            let msat: u64 = req["value_msat"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let expiry: u64 = req["expiry"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(86_400);
            let (bolt11, hash, secret) =
                node.sign(msat, req["memo"].as_str().unwrap_or(""), expiry);
            (
                200,
                json!({
                    "r_hash": STANDARD.encode(hash),
                    "payment_request": bolt11,
                    "add_index": "7",
                    "payment_addr": STANDARD.encode(secret),
                }),
            )
        }
        ("GET", p) if p.starts_with("/v1/invoice/") => {
            let hash = &p["/v1/invoice/".len()..];
            let invoices = node.invoices.lock().unwrap();
            let Some((preimage, bolt11, msat, settled)) = invoices.get(hash) else {
                return (
                    404,
                    json!({"code": 5, "message": "unable to locate invoice", "details": []}),
                );
            };
            (
                200,
                json!({
                    "memo": "",
                    // lnd fills the preimage at creation: presence is not payment.
                    "r_preimage": STANDARD.encode(preimage),
                    "r_hash": STANDARD.encode(hex::decode(hash).unwrap()),
                    "value_msat": msat.to_string(),
                    "settled": settled.is_some(),
                    "settle_date": settled.unwrap_or(0).to_string(),
                    "payment_request": bolt11,
                    "state": if settled.is_some() { "SETTLED" } else { "OPEN" },
                    "amt_paid_msat": if settled.is_some() { msat.to_string() } else { "0".into() },
                }),
            )
        }
        _ => (404, json!({"code": 5, "message": "Not Found"})),
    }
}

async fn lnd_standin() -> LndStandIn {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    // lnd's certificate is its own CA, which webpki refuses as a server certificate.
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("tls.cert");
    let macaroon_path = dir.path().join("admin.macaroon");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&macaroon_path, MACAROON).unwrap();

    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let node = Node::new();
    let n = node.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, node) = (acceptor.clone(), n.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut r = BufReader::new(tls);
                let mut line = String::new();
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                    }
                }
                if method == "GET"
                    && path == "/v1/invoices/subscribe"
                    && headers.get("grpc-metadata-macaroon") == Some(&hex::encode(MACAROON))
                {
                    // A stream: no headers until the first event, then one JSON object a line.
                    let mut tls = r.into_inner();
                    let mut sent = 0;
                    let mut started = false;
                    for _ in 0..500 {
                        let paid = node.paid.lock().unwrap().clone();
                        for hash in &paid[sent..] {
                            if !started {
                                let _ = tls
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                                    .await;
                                started = true;
                            }
                            let at = node.invoices.lock().unwrap()[hash].3.unwrap_or(0);
                            let line = json!({"result": {"r_hash": STANDARD.encode(hex::decode(hash).unwrap()), "state": "SETTLED", "settle_date": at.to_string()}});
                            let _ = tls.write_all(format!("{line}\n").as_bytes()).await;
                            let _ = tls.flush().await;
                        }
                        sent = paid.len();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return;
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body).await;
                let (status, v) = lnd_answer(&node, &method, &path, &headers, &body).await;
                let text = v.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let mut tls = r.into_inner();
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    LndStandIn {
        url,
        cert_path,
        macaroon_path,
        node,
        _dir: dir,
    }
}

#[tokio::test]
async fn lnd_invoice_lifecycle_over_pinned_tls() {
    let s = lnd_standin().await;
    let lnd = Lnd::new(&s.url, &s.macaroon_path, &s.cert_path).unwrap();
    lnd.ping().await.unwrap();
    let inv = lnd
        .create_invoice(72_000_000, "StaticWire", Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(inv.bolt11.starts_with("lnbc720u1"));
    assert_eq!(inv.payment_hash.len(), 64);
    assert!(inv.expires_at > 1_700_000_000);
    // r_preimage is present from the start; it must not count as payment.
    assert_eq!(lnd.status(&inv.payment_hash).await.unwrap(), Status::Open);
    s.node.settle(&inv.payment_hash, 1_800_000_000);
    assert_eq!(
        lnd.status(&inv.payment_hash).await.unwrap(),
        Status::Settled { at: 1_800_000_000 }
    );
    assert!(matches!(
        lnd.status(&"00".repeat(32)).await,
        Err(LnError::Refused(_))
    ));
}

#[tokio::test]
async fn lnd_wrong_macaroon_and_wrong_certificate_are_refused() {
    let s = lnd_standin().await;
    std::fs::write(&s.macaroon_path, b"wrong").unwrap();
    let lnd = Lnd::new(&s.url, &s.macaroon_path, &s.cert_path).unwrap();
    match lnd.ping().await {
        Err(LnError::Refused(m)) => assert!(m.contains("verification failed"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A different certificate (another node, or a man in the middle) is not trusted.
    let other = lnd_standin().await;
    std::fs::write(&s.macaroon_path, MACAROON).unwrap();
    let lnd = Lnd::new(&s.url, &s.macaroon_path, &other.cert_path).unwrap();
    assert!(matches!(lnd.ping().await, Err(LnError::Unreachable(_))));
}

// ---- Core Lightning stand-in ---------------------------------------------------------------

fn cln_answer(node: &Node, req: &Value) -> Value {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let err = |code: i64, msg: &str| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}});
    if req.get("jsonrpc") != Some(&json!("2.0"))
        || !req.get("params").is_some_and(Value::is_object)
        || id.is_null()
    {
        return err(
            -32600,
            "Invalid request: jsonrpc 2.0, id and params are required",
        );
    }
    let p = &req["params"];
    let result = match req["method"].as_str() {
        Some("getinfo") => json!({"id": "02".to_string() + &"42".repeat(32), "alias": "stand-in"}),
        Some("invoice") => {
            let (Some(msat), Some(label), Some(desc)) = (
                p["amount_msat"].as_u64(),
                p["label"].as_str(),
                p["description"].as_str(),
            ) else {
                return err(-32602, "amount_msat, label and description are required");
            };
            let mut labels = node.labels.lock().unwrap();
            if labels.iter().any(|l| l == label) {
                return err(900, "Duplicate label");
            }
            labels.push(label.to_string());
            let expiry = p["expiry"].as_u64().unwrap_or(604_800);
            let (bolt11, hash, secret) = node.sign(msat, desc, expiry);
            json!({"payment_hash": hex::encode(hash), "expires_at": 1_900_000_000u64, "bolt11": bolt11,
                   "payment_secret": hex::encode(secret), "created_index": 1})
        }
        Some("listinvoices") => {
            let hash = p["payment_hash"].as_str().unwrap_or("");
            let invoices = node.invoices.lock().unwrap();
            let list: Vec<Value> = invoices
                .get(hash)
                .map(|(_, b, msat, settled)| {
                    let mut v = json!({"payment_hash": hash, "bolt11": b, "amount_msat": msat,
                                       "status": if settled.is_some() { "paid" } else { "unpaid" }, "expires_at": 1_900_000_000u64});
                    if let Some(at) = settled {
                        v["paid_at"] = json!(at);
                    }
                    v
                })
                .into_iter()
                .collect();
            json!({"invoices": list})
        }
        _ => return err(-32601, "Unknown command"),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn cln_standin() -> (tempfile::TempDir, std::path::PathBuf, Arc<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lightning-rpc");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let node = Node::new();
    let n = node.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let node = n.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read until one complete JSON request has arrived.
                let req = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        break v;
                    }
                };
                let answer = if req["method"] == "waitanyinvoice" {
                    let last = req["params"]["lastpay_index"].as_u64().unwrap_or(0) as usize;
                    let mut found = None;
                    for _ in 0..250 {
                        if let Some(hash) = node.paid.lock().unwrap().get(last).cloned() {
                            found = Some(hash);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    match found {
                        Some(hash) => {
                            let at = node.invoices.lock().unwrap()[&hash].3.unwrap_or(0);
                            json!({"jsonrpc": "2.0", "id": req["id"], "result": {"payment_hash": hash, "pay_index": last + 1, "paid_at": at, "status": "paid"}})
                        }
                        None => {
                            json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 904, "message": "Timed out"}})
                        }
                    }
                } else {
                    cln_answer(&node, &req)
                };
                let mut reply = serde_json::to_vec(&answer).unwrap();
                reply.extend_from_slice(b"\n\n");
                let _ = s.write_all(&reply).await;
            });
        }
    });
    (dir, path, node)
}

#[tokio::test]
async fn cln_invoice_lifecycle_over_json_rpc() {
    let (_dir, path, node) = cln_standin();
    let cln = Cln::new(&path);
    cln.ping().await.unwrap();
    let a = cln
        .create_invoice(24_000_000, "StaticWire renewal", Duration::from_secs(3600))
        .await
        .unwrap();
    let b = cln
        .create_invoice(24_000_000, "StaticWire renewal", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_ne!(
        a.payment_hash, b.payment_hash,
        "labels must be unique per invoice"
    );
    assert!(a.bolt11.starts_with("lnbc240u1"));
    assert_eq!(a.expires_at, 1_900_000_000);
    assert_eq!(cln.status(&a.payment_hash).await.unwrap(), Status::Open);
    node.settle(&a.payment_hash, 1_800_000_123);
    assert_eq!(
        cln.status(&a.payment_hash).await.unwrap(),
        Status::Settled { at: 1_800_000_123 }
    );
    assert!(matches!(
        cln.call("bogus", json!({})).await,
        Err(LnError::Refused(_))
    ));
    assert!(matches!(
        cln.status(&"00".repeat(32)).await,
        Err(LnError::Protocol(_))
    ));
}

#[tokio::test]
async fn cln_unreachable_socket_is_an_error_not_a_panic() {
    let cln = Cln::new(std::path::Path::new("/nonexistent/lightning-rpc"));
    assert!(matches!(cln.ping().await, Err(LnError::Unreachable(_))));
    let b = Backend::Cln(cln);
    assert!(matches!(
        b.status(&"00".repeat(32), 0).await,
        Err(LnError::Unreachable(_))
    ));
}

/// Waits (bounded) for the next streamed settlement.
async fn next(rx: &mut tokio::sync::mpsc::Receiver<(String, i64)>) -> (String, i64) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a settlement was streamed")
        .unwrap()
}

#[tokio::test]
async fn lnd_settlements_stream_through_the_invoice_subscription() {
    let s = lnd_standin().await;
    let lnd = Lnd::new(&s.url, &s.macaroon_path, &s.cert_path).unwrap();
    let inv = lnd
        .create_invoice(1_000, "x", Duration::from_secs(60))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let backend = Arc::new(Backend::Lnd(lnd));
    let b = backend.clone();
    tokio::spawn(async move { b.stream_settlements(tx).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.node.settle(&inv.payment_hash, 1_800_000_001);
    assert_eq!(next(&mut rx).await, (inv.payment_hash, 1_800_000_001));
}

#[tokio::test]
async fn cln_settlements_stream_through_waitanyinvoice() {
    let (_dir, path, node) = cln_standin();
    let cln = Cln::new(&path);
    let a = cln
        .create_invoice(1_000, "a", Duration::from_secs(60))
        .await
        .unwrap();
    let b = cln
        .create_invoice(2_000, "b", Duration::from_secs(60))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move { Backend::Cln(cln).stream_settlements(tx).await });
    node.settle(&b.payment_hash, 1_800_000_002);
    assert_eq!(next(&mut rx).await, (b.payment_hash, 1_800_000_002));
    node.settle(&a.payment_hash, 1_800_000_003);
    assert_eq!(next(&mut rx).await, (a.payment_hash, 1_800_000_003));
}
