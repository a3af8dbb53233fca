//! The client-side mode: a local server that answers a client with the replies recorded from a
//! real server (an exchange file, e.g. `exchanges/rent.json`), records what the client asks,
//! and can tamper with the invoices to check that the client refuses them.
//!
//! In an exchange, `$KEY` stands for the client's public key (standard base64) and `$URLKEY`
//! for the same in the URL-safe alphabet; the key is learnt from the client's first
//! `POST /v1/rentals`. Recorded BOLT11 strings have expired by the time of a replay, so every
//! invoice object (one with `bolt11`, `payment_hash` and `amount_sat`) gets a fresh one, signed
//! by this server's node key (published as the terms' `payee`), for the recorded amount and
//! payment hash. The terms publish this server's own proof key (`proof_key`, replacing the
//! recorded one), and every request on the rental must carry a valid proof of the client's key
//! (PROTOCOL.md 3.1): one without is answered 401 as a server would, and marked refused.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use serde::Deserialize;
use serde_json::{json, Value};
use staticwire_api::proof::keyring::{decode_key, subject, Subject};
use staticwire_api::proof::{fresh_key, unix_now, ProofError, Verifier, DEFAULT_MAX_SEEN};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Deserialize)]
pub struct Exchange {
    pub description: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub request: RecordedRequest,
    pub response: RecordedResponse,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    pub body: Value,
}

impl Exchange {
    pub fn parse(text: &str) -> Result<Exchange, String> {
        serde_json::from_str(text).map_err(|e| format!("exchange file: {e}"))
    }
}

/// How the replayed invoices lie, for the refusal checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Honest: what the server recorded.
    None,
    /// One sat more than the server says and the terms charge.
    Amount,
    /// Signed by another node than the terms' payee.
    Payee,
    /// On mainnet instead of the terms' network.
    Network,
    /// Another payment hash than the server says.
    Hash,
}

/// One request the client made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// With the query.
    pub path: String,
    pub body: Option<Value>,
    /// The recorded step it matched, if any.
    pub step: Option<usize>,
    /// Why its proof of key possession was refused (it was answered 401), if it was.
    pub refused: Option<String>,
}

struct State {
    exchange: Exchange,
    tamper: Tamper,
    node: SecretKey,
    key: Mutex<Option<String>>,
    seen: Mutex<Vec<Seen>>,
    /// Checks the client's proofs; its public key is the terms' `proof_key`.
    proof: Verifier,
}

pub struct Replay {
    pub url: String,
    state: Arc<State>,
}

impl Replay {
    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The client's public key, once it rented.
    pub fn client_key(&self) -> Option<String> {
        self.state.key.lock().ok().and_then(|k| k.clone())
    }

    /// The node key the replayed invoices are signed with (hex), the terms' payee.
    pub fn payee(&self) -> String {
        PublicKey::from_secret_key(&Secp256k1::new(), &self.state.node).to_string()
    }
}

/// The client's verdict after a replay: every request matched a recorded step and carried a
/// valid proof where one is needed, and (honest invoices) every step was asked. The lines say
/// what was seen: MATCH, EXTRA (not recorded), REFUSED (no or a bad proof), UNASKED.
pub fn verdict(steps: &[Step], seen: &[Seen], tamper: Tamper) -> (bool, Vec<String>) {
    let mut ok = true;
    let mut lines = Vec::new();
    for s in seen {
        let tag = match (&s.refused, s.step) {
            (Some(why), _) => format!("REFUSED ({why})"),
            (None, Some(_)) => "MATCH".into(),
            (None, None) => "EXTRA".into(),
        };
        ok &= s.step.is_some() && s.refused.is_none();
        lines.push(format!("{tag}  {} {}", s.method, s.path));
    }
    for (i, step) in steps.iter().enumerate() {
        if !seen
            .iter()
            .any(|s| s.step == Some(i) && s.refused.is_none())
        {
            lines.push(format!(
                "UNASKED  {} {}",
                step.request.method, step.request.path
            ));
            ok &= tamper != Tamper::None;
        }
    }
    (ok, lines)
}

/// Serves `exchange` on a free loopback port until the runtime ends.
pub async fn serve(exchange: Exchange, tamper: Tamper) -> std::io::Result<Replay> {
    let mut k = [0u8; 32];
    loop {
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut k);
        if let Ok(node) = SecretKey::from_slice(&k) {
            let state = Arc::new(State {
                exchange,
                tamper,
                node,
                key: Mutex::new(None),
                seen: Mutex::new(Vec::new()),
                proof: Verifier::new(fresh_key(), DEFAULT_MAX_SEEN),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let st = state.clone();
            let app = Router::new().fallback(move |m: Method, u: Uri, h: HeaderMap, b: Bytes| {
                let st = st.clone();
                async move { answer(&st, m, u, h, b) }
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            return Ok(Replay { url, state });
        }
    }
}

fn substitute(v: &Value, key: &str) -> Value {
    let url = STANDARD
        .decode(key)
        .map(|b| URL_SAFE.encode(b))
        .unwrap_or_default();
    match v {
        Value::String(s) => Value::String(s.replace("$URLKEY", &url).replace("$KEY", key)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, key)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, key)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Checks the proof of a request that needs one (PROTOCOL.md 3.1): the key it acts on, or
/// for an invoice the client's. Err: why it is refused (answered 401).
fn check_proof(
    st: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    client: &str,
) -> Result<(), ProofError> {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let expected = match subject(method.as_str(), target, body) {
        Subject::Key(k) => Some(k),
        Subject::Invoice(_) => decode_key(client),
        Subject::Nothing if uri.path().starts_with("/v1/rentals") => None,
        Subject::Nothing => return Ok(()),
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or("\u{0}"));
    st.proof
        .check(
            header,
            expected.as_ref(),
            method.as_str(),
            target,
            body,
            unix_now(),
        )
        .map(|_| ())
}

/// A 401 for a refused proof, as a server answers it.
fn unauthorized(e: ProofError) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, e.code(), e.to_string());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(staticwire_api::proof::SCHEME),
    );
    r
}

fn answer(st: &State, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    if method == Method::POST && uri.path() == "/v1/rentals" {
        if let (Some(k), Ok(mut bound)) = (
            json_body.as_ref().and_then(|b| b["public_key"].as_str()),
            st.key.lock(),
        ) {
            bound.get_or_insert_with(|| k.to_string());
        }
    }
    let key = st
        .key
        .lock()
        .ok()
        .and_then(|k| k.clone())
        .unwrap_or_default();
    let step = st.exchange.steps.iter().position(|s| {
        s.request.method.eq_ignore_ascii_case(method.as_str())
            && substitute(&Value::String(s.request.path.clone()), &key) == uri.path()
    });
    let path = uri
        .path_and_query()
        .map_or(uri.path().to_string(), |p| p.to_string());
    let proof = check_proof(st, &method, &uri, &headers, &body, &key);
    if let Ok(mut seen) = st.seen.lock() {
        seen.push(Seen {
            method: method.to_string(),
            path,
            body: json_body.clone(),
            step,
            refused: proof.as_ref().err().map(|e| {
                format!(
                    "{} {}",
                    e.code(),
                    headers
                        .get(header::AUTHORIZATION)
                        .map_or("without a proof", |_| "with a proof that does not verify")
                )
            }),
        });
    }
    if let Err(e) = proof {
        return unauthorized(e);
    }
    let Some(i) = step else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{method} {} is not in the recorded exchange", uri.path()),
        );
    };
    let s = &st.exchange.steps[i];
    if let Some(expected) = &s.request.body {
        if Some(substitute(expected, &key)) != json_body {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body differs from the recording: expected {expected}"),
            );
        }
    }
    let mut reply = substitute(&s.response.body, &key);
    let network = st
        .exchange
        .steps
        .iter()
        .find_map(|s| s.response.body["network"].as_str())
        .unwrap_or("regtest")
        .to_string();
    refresh(st, &mut reply, &network);
    let status = StatusCode::from_u16(s.response.status).unwrap_or(StatusCode::OK);
    (status, axum::Json(reply)).into_response()
}

/// Publishes this server's node as the payee and re-signs every invoice.
fn refresh(st: &State, v: &mut Value, network: &str) {
    match v {
        Value::Object(o) => {
            if o.contains_key("first_payment_sat") {
                let payee = PublicKey::from_secret_key(&Secp256k1::new(), &st.node);
                o.insert("payee".into(), Value::String(payee.to_string()));
                o.insert(
                    "proof_key".into(),
                    Value::String(st.proof.public_key_base64()),
                );
            }
            let hash = o
                .get("payment_hash")
                .and_then(Value::as_str)
                .map(str::to_string);
            let amount = o.get("amount_sat").and_then(Value::as_u64);
            if let (Some(hash), Some(amount), true) = (hash, amount, o.contains_key("bolt11")) {
                if let Some(b) = invoice(st, &hash, amount, network) {
                    o.insert("bolt11".into(), Value::String(b));
                }
            }
            for x in o.values_mut() {
                refresh(st, x, network);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| refresh(st, x, network)),
        _ => {}
    }
}

fn invoice(st: &State, hash_hex: &str, amount_sat: u64, network: &str) -> Option<String> {
    use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
    let mut hash: [u8; 32] = hex::decode(hash_hex).ok()?.try_into().ok()?;
    let mut currency = match network {
        "bitcoin" => Currency::Bitcoin,
        "testnet" => Currency::BitcoinTestnet,
        "signet" => Currency::Signet,
        _ => Currency::Regtest,
    };
    let mut msat = amount_sat * 1000;
    let mut node = st.node;
    match st.tamper {
        Tamper::None => {}
        Tamper::Amount => msat += 1000,
        Tamper::Payee => node = SecretKey::from_slice(&[7; 32]).ok()?,
        Tamper::Network => {
            currency = if currency == Currency::Bitcoin {
                Currency::Regtest
            } else {
                Currency::Bitcoin
            }
        }
        Tamper::Hash => hash[0] ^= 1,
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let secp = Secp256k1::new();
    InvoiceBuilder::new(currency)
        .description("StaticWire replay".into())
        .payment_hash(sha256::Hash::from_byte_array(hash))
        .payment_secret(PaymentSecret([1; 32]))
        .duration_since_epoch(now)
        .min_final_cltv_expiry_delta(18)
        .amount_milli_satoshis(msat)
        .expiry_time(Duration::from_secs(3600))
        .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &node))
        .ok()
        .map(|i| i.to_string())
}
