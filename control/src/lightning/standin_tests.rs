//! The LND and Core Lightning clients against local stand-in nodes that speak exactly the
//! documented wire formats (LND REST over TLS with a CA:TRUE self-signed certificate and a
//! macaroon header; CLN JSON-RPC 2.0 on a Unix socket, replies ending in a blank line). The
//! stand-ins sign real BOLT11 invoices and behave as the nodes do where it matters: 404
//! "unable to locate invoice" (LND) or an empty `listinvoices` (CLN) for an invoice they do not
//! know, permissions per macaroon (admin, invoice, readonly), `chains` in getinfo, and
//! settlement streams that resume after a `settle_index` / `pay_index`.

use super::cln::Cln;
use super::lnd::Lnd;
use super::{Backend, LnError, Settlement, Status};
use crate::service::Service;
use crate::testkit::{Builder, Control};
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

/// (preimage, bolt11, amount_msat, settled_at, expires_at)
type StoredInvoice = ([u8; 32], String, u64, Option<i64>, i64);

struct Node {
    currency: Currency,
    /// payment hash hex -> invoice
    invoices: Mutex<HashMap<String, StoredInvoice>>,
    /// Payment hashes in the order they were made (LND's add_index - 1).
    added: Mutex<Vec<String>>,
    labels: Mutex<Vec<String>>,
    /// Payment hashes in the order they were paid (LND's settle_index - 1, CLN's pay_index - 1).
    paid: Mutex<Vec<String>>,
    /// Every request, "METHOD path?query" (LND) or "method params" (CLN).
    requests: Mutex<Vec<String>>,
    /// Bumped on every settlement and on `drop_streams`.
    changed: tokio::sync::watch::Sender<u64>,
    /// Open streams end when this moves.
    stream_generation: Mutex<u64>,
}

impl Node {
    fn new(currency: Currency) -> Arc<Self> {
        Arc::new(Node {
            currency,
            invoices: Mutex::new(HashMap::new()),
            added: Mutex::new(Vec::new()),
            labels: Mutex::new(Vec::new()),
            paid: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            changed: tokio::sync::watch::channel(0).0,
            stream_generation: Mutex::new(0),
        })
    }

    fn sign(&self, amount_msat: u64, memo: &str, expiry: u64) -> (String, [u8; 32], [u8; 32]) {
        let preimage: [u8; 32] = rand::random();
        let secret: [u8; 32] = rand::random();
        let hash = sha256::Hash::hash(&preimage);
        let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let secp = Secp256k1::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let inv = InvoiceBuilder::new(self.currency.clone())
            .description(memo.to_string())
            .payment_hash(hash)
            .payment_secret(PaymentSecret(secret))
            .duration_since_epoch(now)
            .min_final_cltv_expiry_delta(80)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(Duration::from_secs(expiry))
            .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &key))
            .unwrap();
        let h = hash.to_byte_array();
        let expires_at = (now.as_secs() + expiry) as i64;
        self.invoices.lock().unwrap().insert(
            hex::encode(h),
            (preimage, inv.to_string(), amount_msat, None, expires_at),
        );
        self.added.lock().unwrap().push(hex::encode(h));
        (inv.to_string(), h, secret)
    }

    fn settle(&self, hash: &str, at: i64) {
        self.invoices.lock().unwrap().get_mut(hash).unwrap().3 = Some(at);
        self.paid.lock().unwrap().push(hash.to_string());
        self.changed.send_modify(|v| *v += 1);
    }

    /// What a node that was replaced or restored from an old backup knows: nothing.
    fn forget_everything(&self) {
        self.invoices.lock().unwrap().clear();
        self.added.lock().unwrap().clear();
        self.paid.lock().unwrap().clear();
    }

    /// Ends every open stream (a restart of the node, a dropped connection).
    fn drop_streams(&self) {
        *self.stream_generation.lock().unwrap() += 1;
        self.changed.send_modify(|v| *v += 1);
    }

    fn requested(&self, prefix: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// One invoice as LND's REST gateway renders it.
    fn lnd_invoice(&self, hash: &str) -> Option<Value> {
        let invoices = self.invoices.lock().unwrap();
        let (preimage, bolt11, msat, settled, _) = invoices.get(hash)?;
        let add_index = self.added.lock().unwrap().iter().position(|h| h == hash)? + 1;
        let settle_index = self
            .paid
            .lock()
            .unwrap()
            .iter()
            .position(|h| h == hash)
            .map_or(0, |i| i + 1);
        Some(json!({
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
            "add_index": add_index.to_string(),
            "settle_index": settle_index.to_string(),
        }))
    }
}

// ---- LND stand-in --------------------------------------------------------------------------

const ADMIN: &[u8] = b"\x02\x01\x03lnd admin macaroon bytes";
const INVOICE: &[u8] = b"\x02\x01\x03lnd invoice macaroon bytes";
const READONLY: &[u8] = b"\x02\x01\x03lnd readonly macaroon bytes";

/// What each of lnd's default macaroons may do (entity:action).
fn permits(macaroon_hex: &str, op: &str) -> Option<bool> {
    let m = hex::decode(macaroon_hex).ok()?;
    if m == ADMIN {
        Some(true)
    } else if m == INVOICE {
        Some(matches!(
            op,
            "invoices:read" | "invoices:write" | "address:read" | "address:write" | "onchain:read"
        ))
    } else if m == READONLY {
        Some(op.ends_with(":read"))
    } else {
        None
    }
}

/// The permission lnd requires for a route, None for routes it does not have.
fn required(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("GET", "/v1/getinfo") => "info:read",
        ("POST", "/v1/invoices") => "invoices:write",
        ("GET", "/v1/invoices") | ("GET", "/v1/invoices/subscribe") => "invoices:read",
        ("GET", p) if p.starts_with("/v1/invoice/") => "invoices:read",
        ("POST", "/v2/invoices/cancel") => "invoices:write",
        _ => return None,
    })
}

struct LndStandIn {
    url: String,
    cert_path: std::path::PathBuf,
    macaroon_path: std::path::PathBuf,
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

impl LndStandIn {
    fn client(&self) -> Lnd {
        Lnd::new(&self.url, &self.macaroon_path, &self.cert_path).unwrap()
    }

    fn with_macaroon(&self, mac: &[u8]) -> Lnd {
        std::fs::write(&self.macaroon_path, mac).unwrap();
        self.client()
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

fn lnd_answer(
    node: &Node,
    method: &str,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    let mac = headers
        .get("grpc-metadata-macaroon")
        .map(String::as_str)
        .unwrap_or("");
    let Some(op) = required(method, path) else {
        return (
            404,
            json!({"code": 5, "message": "Not Found", "details": []}),
        );
    };
    match permits(mac, op) {
        // What lnd's REST gateway really answers for a bad macaroon, and for a missing
        // permission.
        None => {
            return (
                500,
                json!({"code": 2, "message": "verification failed: signature mismatch after caveat verification", "details": []}),
            )
        }
        Some(false) => {
            return (
                500,
                json!({"code": 2, "message": "permission denied", "details": []}),
            )
        }
        Some(true) => {}
    }
    let not_found = || {
        (
            404,
            json!({"code": 5, "message": "unable to locate invoice", "details": []}),
        )
    };
    match (method, path) {
        ("GET", "/v1/getinfo") => {
            let network = match node.currency {
                Currency::Bitcoin => "mainnet",
                Currency::BitcoinTestnet => "testnet",
                Currency::Regtest => "regtest",
                Currency::Signet => "signet",
                Currency::Simnet => "simnet",
            };
            (
                200,
                json!({"identity_pubkey": standin_node_id(), "alias": "stand-in",
                       "chains": [{"chain": "bitcoin", "network": network}], "synced_to_chain": true}),
            )
        }
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
            let add_index = node.added.lock().unwrap().len();
            (
                200,
                json!({
                    "r_hash": STANDARD.encode(hash),
                    "payment_request": bolt11,
                    "add_index": add_index.to_string(),
                    "payment_addr": STANDARD.encode(secret),
                }),
            )
        }
        ("GET", "/v1/invoices") => {
            let max: usize = query_param(query, "num_max_invoices")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            let mut hashes = node.added.lock().unwrap().clone();
            if query_param(query, "reversed") == Some("true") {
                hashes.reverse();
            }
            let list: Vec<Value> = hashes
                .iter()
                .take(max)
                .filter_map(|h| node.lnd_invoice(h))
                .collect();
            (
                200,
                json!({"invoices": list, "last_index_offset": "0", "first_index_offset": "0"}),
            )
        }
        ("POST", "/v2/invoices/cancel") => {
            let hash = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["payment_hash"].as_str().map(String::from))
                .and_then(|h| STANDARD.decode(h).ok())
                .map(hex::encode)
                .unwrap_or_default();
            if !node.invoices.lock().unwrap().contains_key(&hash) {
                return not_found();
            }
            (200, json!({}))
        }
        // Streamed by `lnd_subscription` once the macaroon passed.
        ("GET", "/v1/invoices/subscribe") => (200, Value::Null),
        ("GET", p) => match p
            .strip_prefix("/v1/invoice/")
            .and_then(|h| node.lnd_invoice(h))
        {
            Some(v) => (200, v),
            None => not_found(),
        },
        _ => (404, json!({"code": 5, "message": "Not Found"})),
    }
}

/// `GET /v1/invoices/subscribe`: no headers until the first event, then one JSON object a
/// line; with `settle_index` the settlements after it are replayed first, without it only new
/// ones are sent (as lnd does). Ends when the node drops its streams.
async fn lnd_subscription<S: tokio::io::AsyncWrite + Unpin>(node: &Node, tls: &mut S, query: &str) {
    let from: usize = query_param(query, "settle_index")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut sent = if from > 0 {
        from
    } else {
        node.paid.lock().unwrap().len()
    };
    let generation = *node.stream_generation.lock().unwrap();
    let mut changed = node.changed.subscribe();
    let mut started = false;
    loop {
        if *node.stream_generation.lock().unwrap() != generation {
            return;
        }
        let paid = node.paid.lock().unwrap().clone();
        for hash in paid.iter().skip(sent) {
            if !started {
                if tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                started = true;
            }
            let Some(inv) = node.lnd_invoice(hash) else {
                continue;
            };
            let line = json!({ "result": inv });
            if tls.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                return;
            }
            let _ = tls.flush().await;
        }
        sent = sent.max(paid.len());
        if changed.changed().await.is_err() {
            return;
        }
    }
}

async fn lnd_standin(currency: Currency) -> LndStandIn {
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
    std::fs::write(&macaroon_path, ADMIN).unwrap();

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
    let node = Node::new(currency);
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
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let (path, query) = (path.to_string(), query.to_string());
                node.requests
                    .lock()
                    .unwrap()
                    .push(format!("{method} {target}"));
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
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body).await;
                let (status, v) = lnd_answer(&node, &method, &path, &query, &headers, &body);
                let mut tls = r.into_inner();
                if status == 200 && path == "/v1/invoices/subscribe" {
                    lnd_subscription(&node, &mut tls, &query).await;
                    let _ = tls.shutdown().await;
                    return;
                }
                let text = v.to_string();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
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
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.client();
    lnd.ready().await.unwrap();
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
}

#[tokio::test]
async fn lnd_unknown_invoice_is_unknown_not_an_error() {
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.client();
    assert_eq!(lnd.status(&"00".repeat(32)).await.unwrap(), Status::Unknown);
}

#[tokio::test]
async fn lnd_wrong_macaroon_is_refused() {
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.with_macaroon(b"wrong");
    match lnd.ready().await {
        Err(LnError::Refused(m)) => assert!(m.contains("verification failed"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn lnd_another_certificate_is_named_as_such() {
    let s = lnd_standin(Currency::Bitcoin).await;
    // A different certificate (another node, a regenerated tls.cert, a man in the middle).
    let other = lnd_standin(Currency::Bitcoin).await;
    let lnd = Lnd::new(&s.url, &s.macaroon_path, &other.cert_path).unwrap();
    let e = lnd.ready().await.unwrap_err();
    assert!(matches!(e, LnError::Certificate(_)), "{e:?}");
    assert!(e.to_string().contains("does not match the pinned"), "{e}");
    assert!(e.is_unavailable());
    // A node that is down still reads as unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Lnd::new(
        &format!("https://127.0.0.1:{port}"),
        &s.macaroon_path,
        &s.cert_path,
    )
    .unwrap();
    assert!(matches!(down.ready().await, Err(LnError::Unreachable(_))));
}

#[tokio::test]
async fn lnd_readiness_checks_what_renting_needs_per_macaroon() {
    let s = lnd_standin(Currency::Regtest).await;
    s.with_macaroon(ADMIN).ready().await.unwrap();
    // The least-privilege invoice.macaroon has no info:read, and renting works with it.
    let invoice = s.with_macaroon(INVOICE);
    invoice.ready().await.unwrap();
    invoice
        .create_invoice(1_000, "x", Duration::from_secs(60))
        .await
        .unwrap();
    // readonly.macaroon can read everything but cannot make an invoice.
    let readonly = s.with_macaroon(READONLY);
    match readonly.ready().await {
        Err(e @ LnError::Permission(_)) => {
            assert!(e.to_string().contains("invoices:write"), "{e}");
            assert!(!e.is_unavailable());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        readonly
            .create_invoice(1_000, "x", Duration::from_secs(60))
            .await,
        Err(LnError::Permission(_))
    ));
    // Probing changed nothing on the node: one invoice, the one made above.
    assert_eq!(s.node.added.lock().unwrap().len(), 1);
}

/// The stand-ins' node key: the one their invoices are signed with.
fn standin_node_id() -> String {
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    bitcoin::secp256k1::PublicKey::from_secret_key(&Secp256k1::new(), &key).to_string()
}

#[tokio::test]
async fn the_node_id_is_the_key_that_signs_the_invoices() {
    let s = lnd_standin(Currency::Regtest).await;
    let id = s.client().node_id().await.unwrap();
    assert_eq!(id, standin_node_id());
    let inv = s
        .client()
        .create_invoice(1_000, "x", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(crate::lightning::invoice_payee(&inv.bolt11), Some(id));
    // Without info:read the node cannot say: no payee is published.
    assert_eq!(s.with_macaroon(INVOICE).node_id().await, None);

    let (_dir, path, _node) = cln_standin(Currency::Regtest);
    let b = Backend::Cln(Cln::new(&path));
    let id = b.node_id().await.unwrap();
    let inv = b
        .create_invoice(1_000, "x", Duration::from_secs(60), 0)
        .await
        .unwrap();
    assert_eq!(crate::lightning::invoice_payee(&inv.bolt11), Some(id));
    assert_eq!(crate::lightning::node_key("02"), None);
    assert_eq!(
        crate::lightning::node_key(&("04".to_string() + &"11".repeat(32))),
        None
    );
}

#[tokio::test]
async fn lnd_network_from_getinfo_or_from_an_invoice() {
    let s = lnd_standin(Currency::Regtest).await;
    assert_eq!(s.client().network().await.unwrap(), Some("regtest"));
    let main = lnd_standin(Currency::Bitcoin).await;
    assert_eq!(main.client().network().await.unwrap(), Some("bitcoin"));
    // Without info:read, from the newest invoice; with none, the node cannot say.
    let invoice = s.with_macaroon(INVOICE);
    assert_eq!(invoice.network().await.unwrap(), None);
    invoice
        .create_invoice(1_000, "x", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(invoice.network().await.unwrap(), Some("regtest"));
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
        Some("getinfo") => {
            let network = match node.currency {
                Currency::Bitcoin => "bitcoin",
                Currency::BitcoinTestnet => "testnet",
                Currency::Regtest => "regtest",
                Currency::Signet => "signet",
                Currency::Simnet => "simnet",
            };
            json!({"id": standin_node_id(), "alias": "stand-in", "network": network})
        }
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
            let expires_at = node.invoices.lock().unwrap()[&hex::encode(hash)].4;
            json!({"payment_hash": hex::encode(hash), "expires_at": expires_at, "bolt11": bolt11,
                   "payment_secret": hex::encode(secret), "created_index": 1})
        }
        Some("listinvoices") => {
            let hash = p["payment_hash"].as_str().unwrap_or("");
            let invoices = node.invoices.lock().unwrap();
            // A hash the node does not know: an empty list, not an error.
            let list: Vec<Value> = invoices
                .get(hash)
                .map(|(_, b, msat, settled, expires_at)| {
                    let mut v = json!({"payment_hash": hash, "bolt11": b, "amount_msat": msat,
                                       "status": if settled.is_some() { "paid" } else { "unpaid" }, "expires_at": expires_at});
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

fn cln_standin(currency: Currency) -> (tempfile::TempDir, std::path::PathBuf, Arc<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lightning-rpc");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let node = Node::new(currency);
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
                node.requests.lock().unwrap().push(format!(
                    "{} {}",
                    req["method"].as_str().unwrap_or(""),
                    req["params"]
                ));
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
    let (_dir, path, node) = cln_standin(Currency::Bitcoin);
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
    assert!(a.expires_at > 1_700_000_000);
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
}

#[tokio::test]
async fn cln_unknown_invoice_is_unknown_not_an_error() {
    let (_dir, path, _node) = cln_standin(Currency::Bitcoin);
    let cln = Cln::new(&path);
    assert_eq!(cln.status(&"00".repeat(32)).await.unwrap(), Status::Unknown);
}

#[tokio::test]
async fn cln_network_from_getinfo() {
    let (_dir, path, _node) = cln_standin(Currency::Regtest);
    let b = Backend::Cln(Cln::new(&path));
    assert_eq!(b.network().await.unwrap(), Some("regtest"));
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
async fn next(rx: &mut tokio::sync::mpsc::Receiver<Settlement>) -> (String, i64, u64) {
    let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a settlement was streamed")
        .unwrap();
    (s.payment_hash, s.settled_at, s.index)
}

/// Waits (bounded, real time) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lnd_settlements_stream_and_resume_after_the_last_settle_index() {
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.client();
    let mut hashes = Vec::new();
    for _ in 0..3 {
        hashes.push(
            lnd.create_invoice(1_000, "x", Duration::from_secs(60))
                .await
                .unwrap()
                .payment_hash,
        );
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let backend = Arc::new(Backend::Lnd(lnd));
    let b = backend.clone();
    tokio::spawn(async move {
        let live = std::sync::atomic::AtomicBool::new(false);
        b.stream_settlements(0, tx, std::time::Duration::from_millis(50), &live)
            .await
    });
    let node = s.node.clone();
    until("subscribed", || {
        node.requested("GET /v1/invoices/subscribe").len() == 1
    })
    .await;
    s.node.settle(&hashes[0], 1_800_000_001);
    assert_eq!(next(&mut rx).await, (hashes[0].clone(), 1_800_000_001, 1));
    // The node drops the stream; one more settles before the client is back.
    s.node.drop_streams();
    s.node.settle(&hashes[1], 1_800_000_002);
    assert_eq!(next(&mut rx).await, (hashes[1].clone(), 1_800_000_002, 2));
    s.node.settle(&hashes[2], 1_800_000_003);
    assert_eq!(next(&mut rx).await, (hashes[2].clone(), 1_800_000_003, 3));
    let subs = s.node.requested("GET /v1/invoices/subscribe");
    assert_eq!(
        subs,
        [
            "GET /v1/invoices/subscribe",
            "GET /v1/invoices/subscribe?settle_index=1"
        ]
    );
    assert!(rx.try_recv().is_err(), "nothing was repeated");
}

#[tokio::test]
async fn lnd_settlement_stream_resumes_from_a_given_index() {
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.client();
    let a = lnd
        .create_invoice(1_000, "a", Duration::from_secs(60))
        .await
        .unwrap();
    let b = lnd
        .create_invoice(1_000, "b", Duration::from_secs(60))
        .await
        .unwrap();
    s.node.settle(&a.payment_hash, 1_800_000_001);
    s.node.settle(&b.payment_hash, 1_800_000_002);
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let live = std::sync::atomic::AtomicBool::new(false);
        Backend::Lnd(lnd)
            .stream_settlements(1, tx, std::time::Duration::from_millis(50), &live)
            .await
    });
    assert_eq!(next(&mut rx).await, (b.payment_hash, 1_800_000_002, 2));
}

/// The subscription stays open as long as the node keeps it: no whole-request timeout cuts
/// a quiet stream (time runs paused, so hours pass at once).
#[tokio::test(start_paused = true)]
async fn lnd_quiet_subscription_is_not_cut_by_a_timeout() {
    let s = lnd_standin(Currency::Bitcoin).await;
    let lnd = s.client();
    let inv = lnd
        .create_invoice(1_000, "x", Duration::from_secs(60))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let live = std::sync::atomic::AtomicBool::new(false);
        Backend::Lnd(lnd)
            .stream_settlements(0, tx, std::time::Duration::from_millis(50), &live)
            .await
    });
    for _ in 0..1000 {
        if !s.node.requested("GET /v1/invoices/subscribe").is_empty() {
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.node.requested("GET /v1/invoices/subscribe").len(), 1);
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    s.node.settle(&inv.payment_hash, 1_800_000_001);
    // Waiting in real time: a timer would fire at once while time is paused.
    let mut got = None;
    for _ in 0..1000 {
        if let Ok(s) = rx.try_recv() {
            got = Some(s.payment_hash);
            break;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got.as_deref(), Some(inv.payment_hash.as_str()));
    assert_eq!(
        s.node.requested("GET /v1/invoices/subscribe").len(),
        1,
        "the quiet stream was cut and reopened"
    );
}

#[tokio::test]
async fn cln_settlements_stream_through_waitanyinvoice() {
    let (_dir, path, node) = cln_standin(Currency::Bitcoin);
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
    tokio::spawn(async move {
        let live = std::sync::atomic::AtomicBool::new(false);
        Backend::Cln(cln)
            .stream_settlements(0, tx, std::time::Duration::from_millis(50), &live)
            .await
    });
    node.settle(&b.payment_hash, 1_800_000_002);
    assert_eq!(next(&mut rx).await, (b.payment_hash, 1_800_000_002, 1));
    node.settle(&a.payment_hash, 1_800_000_003);
    assert_eq!(next(&mut rx).await, (a.payment_hash, 1_800_000_003, 2));
}

// ---- The service over these nodes ----------------------------------------------------------

struct Svc {
    _ctl: Control,
    svc: Arc<Service>,
    base: String,
    http: crate::proving::Client,
}

async fn service(ln: Backend, network: &'static str, pool: &str) -> Svc {
    let ctl = Builder::new(pool)
        .lightning(ln)
        .network(network)
        .serve()
        .await;
    Svc {
        svc: ctl.svc.clone(),
        base: ctl.base(),
        http: crate::proving::Client::new(),
        _ctl: ctl,
    }
}

/// The public key of the private key `[i; 32]`, held by the test client.
fn key(i: u8) -> String {
    crate::proving::hold([i; 32])
}

impl Svc {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn rent(&self, key: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/rentals", self.base))
            .json(&json!({ "public_key": key }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
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

fn url_key(k: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(STANDARD.decode(k).unwrap())
}

#[tokio::test]
async fn invoices_the_node_forgot_expire_and_free_their_addresses() {
    for lnd in [true, false] {
        let (_keep, node, backend): (Box<dyn std::any::Any>, Arc<Node>, Backend) = if lnd {
            let s = lnd_standin(Currency::Regtest).await;
            let b = Backend::Lnd(s.client());
            (Box::new(s._dir), s.node, b)
        } else {
            let (dir, path, node) = cln_standin(Currency::Regtest);
            (Box::new(dir), node, Backend::Cln(Cln::new(&path)))
        };
        let h = service(backend, "regtest", "203.0.113.0/30").await;
        let (s1, first) = h.rent(&key(1)).await;
        let (s2, _) = h.rent(&key(2)).await;
        assert_eq!((s1, s2), (201, 201));
        // The node is replaced: it knows none of the invoices.
        node.forget_everything();
        h.svc.check_invoices().await.unwrap();
        assert_eq!(h.rent(&key(3)).await.0, 503, "still held before expiry");
        h.svc.clock().advance(3601);
        h.svc.check_invoices().await.unwrap();
        let (s, v) = h.rent(&key(3)).await;
        assert_eq!(s, 201, "lnd={lnd}: {v}");
        let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key(1)))).await;
        assert_eq!(st["state"], "released");
        // A payment reported later is still credited.
        let hash = first["invoice"]["payment_hash"].as_str().unwrap();
        assert!(h.svc.settle(hash, h.svc.clock().now()).await.unwrap());
    }
}

#[tokio::test]
async fn readyz_per_macaroon_names_the_missing_permission() {
    let s = lnd_standin(Currency::Regtest).await;
    for (mac, ready) in [(ADMIN, true), (INVOICE, true), (READONLY, false)] {
        let h = service(
            Backend::Lnd(s.with_macaroon(mac)),
            "regtest",
            "203.0.113.0/30",
        )
        .await;
        let (status, body) = h.get("/readyz").await;
        if ready {
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(status, 502, "{body}");
            assert_eq!(body["error"]["code"], "lightning_error");
            let msg = body["error"]["message"].as_str().unwrap();
            assert!(msg.contains("invoices:write"), "{msg}");
        }
    }
    assert!(
        s.node.added.lock().unwrap().is_empty(),
        "probing made invoices"
    );
}

#[tokio::test]
async fn a_rejected_rent_leaves_nothing_and_codes_say_why() {
    let s = lnd_standin(Currency::Regtest).await;
    // Refused by the node (readonly.macaroon): 502 lightning_error.
    let h = service(
        Backend::Lnd(s.with_macaroon(READONLY)),
        "regtest",
        "203.0.113.0/30",
    )
    .await;
    let (status, v) = h.rent(&key(1)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("lightning_error")),
        "{v}"
    );
    assert_eq!(h.counts(), (0, 0, 0), "the rejected rent left rows behind");
    let (status, _) = h.get(&format!("/v1/rentals/{}", url_key(&key(1)))).await;
    assert_eq!(status, 404);

    // An invoice of another network than the terms: 502, nothing held.
    let h = service(
        Backend::Lnd(s.with_macaroon(ADMIN)),
        "bitcoin",
        "203.0.113.0/30",
    )
    .await;
    let (status, v) = h.rent(&key(1)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("lightning_error")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("regtest"),
        "{v}"
    );
    assert_eq!(h.counts(), (0, 0, 0));

    // The node cannot be reached: 503 lightning_unavailable, nothing held.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Lnd::new(
        &format!("https://127.0.0.1:{port}"),
        &s.macaroon_path,
        &s.cert_path,
    )
    .unwrap();
    let h = service(Backend::Lnd(down), "regtest", "203.0.113.0/30").await;
    let (status, v) = h.rent(&key(1)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("lightning_unavailable")),
        "{v}"
    );
    assert_eq!(h.counts(), (0, 0, 0));
    // And the key can rent as soon as the node works.
    let h = service(
        Backend::Lnd(s.with_macaroon(INVOICE)),
        "regtest",
        "203.0.113.0/30",
    )
    .await;
    assert_eq!(h.rent(&key(1)).await.0, 201);
}

#[tokio::test]
async fn cln_stream_resumes_from_the_stored_pay_index() {
    let (_dir, path, node) = cln_standin(Currency::Regtest);
    let h = service(Backend::Cln(Cln::new(&path)), "regtest", "203.0.113.0/30").await;
    let (_, a) = h.rent(&key(1)).await;
    let (_, b) = h.rent(&key(2)).await;
    let hash = |v: &Value| v["invoice"]["payment_hash"].as_str().unwrap().to_string();
    let (a, b) = (hash(&a), hash(&b));
    // Paid and credited before the last restart: the stored position is after it.
    node.settle(&a, 1_800_000_001);
    h.svc.settle(&a, 1_800_000_001).await.unwrap();
    crate::db::meta_set(&h.svc.db().unwrap(), "cln_pay_index", "1").unwrap();
    node.settle(&b, 1_800_000_002);
    tokio::spawn(h.svc.clone().follow_settlements());
    let svc = h.svc.clone();
    let b2 = b.clone();
    // The position is stored after the credit's commit, so wait for both (a timeout fails).
    until("b credited and its position stored", move || {
        let db = svc.db().unwrap();
        crate::store::payment_exists(&db, &b2).unwrap()
            && crate::db::meta_get(&db, "cln_pay_index")
                .unwrap()
                .as_deref()
                == Some("2")
    })
    .await;
    let waits = node.requested("waitanyinvoice");
    assert!(
        waits[0].contains("\"lastpay_index\":1"),
        "the stream replayed from the start: {waits:?}"
    );
}

#[test]
fn repeated_warnings_are_rate_limited() {
    let w = crate::service::WarnLimiter::new(Duration::from_secs(60));
    assert!(w.allow("a"));
    assert!(!w.allow("a"));
    assert!(w.allow("b"));
    let w = crate::service::WarnLimiter::new(Duration::ZERO);
    assert!(w.allow("a") && w.allow("a"));
}

/// A TCP relay to the stand-in that can be cut: the node "goes down" and "comes back" while
/// the control keeps running.
async fn relay(to: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let up = Arc::new(AtomicBool::new(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let target = to.trim_start_matches("https://").to_string();
    let flag = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !flag.load(Ordering::SeqCst) {
                continue; // dropped: connection reset
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (url, up)
}

#[tokio::test]
async fn node_down_refuses_rent_with_503_and_payments_made_meanwhile_are_credited_on_return() {
    use std::sync::atomic::Ordering;
    let s = lnd_standin(Currency::Regtest).await;
    let (url, up) = relay(s.url.clone()).await;
    let lnd = Lnd::new(&url, &s.macaroon_path, &s.cert_path).unwrap();
    let h = service(Backend::Lnd(lnd), "regtest", "203.0.113.0/29").await;
    let (status, r) = h.rent(&key(1)).await;
    assert_eq!(status, 201, "{r}");
    let hash = r["invoice"]["payment_hash"].as_str().unwrap().to_string();

    // The node goes down: renting is refused, clearly, and holds nothing.
    up.store(false, Ordering::SeqCst);
    let (status, v) = h.rent(&key(2)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("lightning_unavailable")),
        "{v}"
    );
    let (rentals, _, _) = h.counts();
    assert_eq!(rentals, 1, "the refused rent held an address");

    // The customer pays while the node cannot be reached by the control.
    s.node.settle(&hash, 1_700_000_000);
    h.svc.check_invoices().await.unwrap();
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key(1)))).await;
    assert_eq!(st["state"], "pending", "{st}");

    // The node comes back: the payment is picked up, once.
    up.store(true, Ordering::SeqCst);
    h.svc.check_invoices().await.unwrap();
    h.svc.check_invoices().await.unwrap();
    let (_, st) = h.get(&format!("/v1/rentals/{}", url_key(&key(1)))).await;
    assert_eq!(st["state"], "active", "{st}");
    let payments: i64 = h
        .svc
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(payments, 1);
    // And renting works again.
    let (status, v) = h.rent(&key(2)).await;
    assert_eq!(status, 201, "{v}");
}
