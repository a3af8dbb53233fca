//! HTTP to the server under test: plain, or HTTPS pinned by the certificate's SHA-256; every
//! problem is an error string for the report, never a panic. Requests on a rental whose key
//! the suite made ([`keyring`]) carry their proof of key possession (PROTOCOL.md 3.1) once the
//! server's proof key is known ([`Http::set_proof_key`]).

use staticwire_api::proof::keyring::Keyring;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The keys the suite made (their private halves), and the invoices seen for each.
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(Keyring::new)
}

/// Proves look-ups of the invoice `hash` with `key`, as a client does that believes the
/// invoice is its rental's (the server decides whether it is).
pub fn claim_invoice(hash: &str, key: &[u8; 32]) {
    let answer = serde_json::json!({ "payment_hash": hash }).to_string();
    keyring().learn(key, answer.as_bytes());
}

pub struct Http {
    pub base: String,
    client: reqwest::Client,
    /// The server's proof key, from its terms.
    proof_key: Mutex<Option<[u8; 32]>>,
}

/// A reply, read whole (bounded).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Largest reply read; StaticWire replies are a few kilobytes.
const MAX_REPLY: usize = 1 << 20;

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }
}

impl Http {
    pub fn new(base: &str, fingerprint: Option<&str>) -> Result<Http, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A connection per request: a server may close one after an error (e.g. a 413 sent
        // before the body was read), and a reused connection would fail the next check.
        let mut b = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10));
        if let Some(f) = fingerprint {
            let sha = staticwire_tls::parse_fingerprint(f).map_err(|e| e.to_string())?;
            let tls = staticwire_tls::fingerprint_client_config(sha).map_err(|e| e.to_string())?;
            b = b.use_preconfigured_tls(tls);
        } else if base.starts_with("https://") {
            return Err(
                "an https server is trusted by its certificate's SHA-256: give --fingerprint"
                    .into(),
            );
        }
        let client = b.build().map_err(|e| e.to_string())?;
        Ok(Http {
            base: base.trim_end_matches('/').to_string(),
            client,
            proof_key: Mutex::new(None),
        })
    }

    /// The proof key the server's terms publish: from now on requests on the suite's keys'
    /// rentals are proven with it.
    pub fn set_proof_key(&self, key: Option<[u8; 32]>) {
        *self.proof_key.lock().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// The server's proof key, once set.
    pub fn proof_key(&self) -> Option<[u8; 32]> {
        *self.proof_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` proving `method path body` with the key it acts on, when that key
    /// is the suite's and the server has a proof key; the key.
    fn proof(&self, method: &str, path: &str, body: &[u8]) -> Option<(String, [u8; 32])> {
        let server = (*self.proof_key.lock().unwrap_or_else(|e| e.into_inner()))?;
        let key = keyring().key_of(method, path, body)?;
        Some((keyring().authorization(&server, method, path, body)?, key))
    }

    /// Sends a request; a 429 `rate_limited` with a `Retry-After` of at most a minute is
    /// waited out and retried (twice at most), as a client should.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let mut attempt = 0;
        loop {
            let reply = self
                .send_once(method, path, content_type, body.clone())
                .await?;
            let wait = reply
                .retry_after
                .as_deref()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|w| *w <= 60);
            match wait {
                Some(w) if reply.status == 429 && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(w)).await;
                }
                _ => return Ok(reply),
            }
        }
    }

    /// One request, a 429 answered as it came (for the rules about rate limits themselves).
    pub async fn send_once(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.request(m, format!("{}{path}", self.base));
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        // A fresh proof for every attempt: a retry is a new request (PROTOCOL.md 3.1).
        let proof = self.proof(method, path, body.as_deref().unwrap_or_default());
        if let Some((auth, _)) = &proof {
            req = req.header("authorization", auth);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let mut resp = req.send().await.map_err(|e| {
            if staticwire_tls::is_pin_mismatch(&e) {
                format!("{method} {path}: the server's certificate does not match the pinned fingerprint")
            } else {
                format!("{method} {path}: {e}")
            }
        })?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{method} {path}: reading the reply: {e}"))?
        {
            if body.len() + chunk.len() > MAX_REPLY {
                return Err(format!("{method} {path}: reply over {MAX_REPLY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if let Some((_, key)) = proof {
            keyring().learn(&key, &body);
        }
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body,
        })
    }

    /// One request with an `Authorization` header (a proof of key possession), not retried:
    /// a retry would replay the proof.
    pub async fn send_authorized(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        authorization: &str,
    ) -> Result<Reply, String> {
        let mut req = self
            .client
            .request(
                method.parse().map_err(|e| format!("{e}"))?,
                format!("{}{path}", self.base),
            )
            .header("authorization", authorization);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (content_type, retry_after) = (
            header("content-type").unwrap_or_default(),
            header("retry-after"),
        );
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_REPLY {
            return Err(format!("reply larger than {MAX_REPLY} bytes"));
        }
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body: body.to_vec(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, None, None).await
    }

    pub async fn post_json(&self, path: &str, v: &serde_json::Value) -> Result<Reply, String> {
        self.send(
            "POST",
            path,
            Some("application/json"),
            Some(v.to_string().into_bytes()),
        )
        .await
    }
}
