//! A test HTTP client that proves key possession (PROTOCOL.md 3.1) on every `/v1` request on a
//! rental whose key it made: a thin wrapper of `reqwest` with the same calls (`get`, `post`,
//! `request`, `json`, `body`, `header`, `timeout`, `send`), so a test reads as before and its
//! requests carry their proof. Keys come from [`new_key`] (kept in one keyring per process);
//! a request on a key the keyring does not hold goes out unproven, as a stranger's would. The
//! server's proof key is read from `/v1/terms` once per origin.
//!
//! Compiled for the control's tests and, with the `testkit` feature, for other crates'.

use axum::http;
use reqwest::{IntoUrl, Method};
use staticwire_api::proof::keyring::Keyring;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The process's keyring: every key [`new_key`] made.
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(Keyring::new)
}

/// A new WireGuard key pair whose private half the test clients hold; the public key in
/// standard base64.
pub fn new_key() -> String {
    keyring().new_key()
}

/// A client from `ip` (a 127.A.B.C: loopback has a whole /8, so each is a client address of
/// its own) that proves its keys' requests (PROTOCOL.md 3.1).
pub fn client_from(ip: &str) -> Client {
    // reqwest is built without a default TLS provider; plain HTTP still needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::with(
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().expect("a client address"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client"),
    )
}

/// Keeps a private key made elsewhere (a fixed test key); its public key in standard base64.
/// X25519 clears the low three bits of byte 0 and the top bit of byte 31: keys that differ only
/// there are one key.
pub fn hold(private: [u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(keyring().insert(private))
}

/// Keeps a private key given in standard base64 (as `wg genkey` prints it); its public key.
pub fn hold_base64(private: &str) -> String {
    use base64::Engine;
    let k = base64::engine::general_purpose::STANDARD
        .decode(private.trim())
        .expect("a base64 private key");
    hold(k.try_into().expect("32 bytes"))
}

/// The `Authorization` value of a request on a rental of the keyring's, for the server whose
/// terms are `terms` (another HTTP client sends it: curl in a network namespace). None when
/// the request needs no proof or its key is not held.
pub fn authorization(
    terms: &serde_json::Value,
    method: &str,
    target: &str,
    body: &[u8],
) -> Option<String> {
    let server = staticwire_api::proof::keyring::decode_key(terms["proof_key"].as_str()?)?;
    keyring().authorization(&server, method, target, body)
}

/// Proof keys by origin (`scheme://host:port`).
fn proof_keys() -> &'static Mutex<HashMap<String, [u8; 32]>> {
    static KEYS: OnceLock<Mutex<HashMap<String, [u8; 32]>>> = OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// Tells the test clients the proof key of the server at `base` (`http://host:port`), so they
/// need not ask its terms (which would count against a test's request budget).
pub fn know_proof_key(base: &str, key: [u8; 32]) {
    let origin = reqwest::Url::parse(base)
        .expect("a base URL")
        .origin()
        .ascii_serialization();
    proof_keys().lock().unwrap().insert(origin, key);
}

/// Makes the keyring prove look-ups of the invoice `hash` with `key` (standard base64), as a
/// client would that believes the invoice is its rental's (the server decides whether it is).
pub fn claim_invoice(hash: &str, key: &str) {
    let k = staticwire_api::proof::keyring::decode_key(key).expect("a key");
    let answer = serde_json::json!({ "payment_hash": hash }).to_string();
    keyring().learn(&k, answer.as_bytes());
}

/// The proof key the server at `url`'s origin publishes (None: its terms carry none).
async fn proof_key(http: &reqwest::Client, url: &reqwest::Url) -> Option<[u8; 32]> {
    let origin = url.origin().ascii_serialization();
    if let Some(k) = proof_keys().lock().unwrap().get(&origin) {
        return Some(*k);
    }
    let terms: serde_json::Value = http
        .get(format!("{origin}/v1/terms"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let key = staticwire_api::proof::keyring::decode_key(terms["proof_key"].as_str()?)?;
    proof_keys().lock().unwrap().insert(origin, key);
    Some(key)
}

/// `reqwest::Client`, proving.
#[derive(Clone, Default)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    /// Over a configured `reqwest` client (timeouts, local address).
    pub fn with(http: reqwest::Client) -> Client {
        Client { http }
    }

    pub fn request<U: IntoUrl>(&self, method: Method, url: U) -> RequestBuilder {
        RequestBuilder {
            http: self.http.clone(),
            inner: self.http.request(method, url),
        }
    }

    pub fn get<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post<U: IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(Method::POST, url)
    }
}

/// `reqwest::RequestBuilder`, proving when sent.
pub struct RequestBuilder {
    http: reqwest::Client,
    inner: reqwest::RequestBuilder,
}

impl RequestBuilder {
    pub fn json<T: serde::Serialize + ?Sized>(mut self, v: &T) -> Self {
        self.inner = self.inner.json(v);
        self
    }

    pub fn form<T: serde::Serialize + ?Sized>(mut self, v: &T) -> Self {
        self.inner = self.inner.form(v);
        self
    }

    pub fn body<B: Into<reqwest::Body>>(mut self, b: B) -> Self {
        self.inner = self.inner.body(b);
        self
    }

    pub fn header<K, V>(mut self, k: K, v: V) -> Self
    where
        http::HeaderName: TryFrom<K>,
        <http::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.inner = self.inner.header(k, v);
        self
    }

    pub fn timeout(mut self, d: Duration) -> Self {
        self.inner = self.inner.timeout(d);
        self
    }

    /// Sends it, with the proof of the key it acts on when that key is ours (and no
    /// `Authorization` was set by the test); the invoices in the answer are learned for the key.
    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        let mut req = self.inner.build()?;
        let target = match req.url().query() {
            Some(q) => format!("{}?{q}", req.url().path()),
            None => req.url().path().to_string(),
        };
        let body = req
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        let method = req.method().as_str().to_string();
        let key = match keyring().key_of(&method, &target, &body) {
            Some(k) if !req.headers().contains_key(http::header::AUTHORIZATION) => {
                proof_key(&self.http, req.url()).await.map(|s| (k, s))
            }
            _ => None,
        };
        let Some((key, server)) = key else {
            return self.http.execute(req).await;
        };
        if let Some(auth) = keyring().authorization(&server, &method, &target, &body) {
            let value = http::HeaderValue::from_str(&auth).expect("header value");
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        let resp = self.http.execute(req).await?;
        let mut out = http::Response::builder()
            .status(resp.status())
            .version(resp.version());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let bytes = resp.bytes().await?;
        keyring().learn(&key, &bytes);
        Ok(reqwest::Response::from(
            out.body(bytes).expect("the answer as received"),
        ))
    }
}
