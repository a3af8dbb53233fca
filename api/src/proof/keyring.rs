//! A client's private keys and the invoices of their rentals: proves any `/v1` request it can.
//!
//! Shared by the test clients (the control's tests, the conformance suite, benches) so a
//! request made with a plain HTTP client carries its proof without each caller working out
//! which key it acts on. What a request acts on is decided by [`subject`], the same rule a
//! server applies (PROTOCOL.md 3.1 "Which requests"): the body's `public_key` for a rent, the
//! path's key under `/v1/rentals/{key}`, and for `/v1/invoices/{hash}` the key of the rental
//! the invoice was seen for ([`Keyring::learn`] records hashes from the answers).

use super::{proof_public_key, Prover};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a `/v1` request acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A rental, named by its key (32 bytes).
    Key([u8; 32]),
    /// An invoice, by payment hash (as in the path).
    Invoice(String),
    /// Nothing that needs a proof (terms, health, hooks), or a key that does not decode.
    Nothing,
}

/// Decodes `%XX` escapes; None for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A key as a path segment or body member: standard or URL-safe base64, percent-encoded or not.
pub fn decode_key(s: &str) -> Option<[u8; 32]> {
    let s = percent_decode(s)?;
    STANDARD
        .decode(&s)
        .or_else(|_| URL_SAFE.decode(&s))
        .ok()?
        .try_into()
        .ok()
}

/// What the request `method target` with `body` acts on (see the module doc).
pub fn subject(method: &str, target: &str, body: &[u8]) -> Subject {
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "rentals"] if method.eq_ignore_ascii_case("POST") => {
            body_key(body).map_or(Subject::Nothing, Subject::Key)
        }
        ["v1", "rentals", key, ..] => decode_key(key).map_or(Subject::Nothing, Subject::Key),
        ["v1", "invoices", hash] => Subject::Invoice((*hash).to_string()),
        _ => Subject::Nothing,
    }
}

/// The `public_key` member of a JSON body, if it has one that decodes.
fn body_key(body: &[u8]) -> Option<[u8; 32]> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    decode_key(v.get("public_key")?.as_str()?)
}

/// Every `payment_hash` string anywhere in a JSON document.
fn payment_hashes(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("payment_hash", serde_json::Value::String(h)) => out.push(h.clone()),
                    _ => payment_hashes(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| payment_hashes(v, out)),
        _ => {}
    }
}

/// Private keys by public key, and the key each known invoice belongs to.
#[derive(Default)]
pub struct Keyring {
    keys: Mutex<HashMap<[u8; 32], [u8; 32]>>,
    invoices: Mutex<HashMap<String, [u8; 32]>>,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A new key pair, kept; its public key in standard base64.
    pub fn new_key(&self) -> String {
        let private = super::fresh_key();
        STANDARD.encode(self.insert(private))
    }

    /// Keeps a private key; returns its public key.
    pub fn insert(&self, private: [u8; 32]) -> [u8; 32] {
        let public = proof_public_key(&private);
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(public, private);
        public
    }

    /// The private key of `public`, if kept.
    pub fn private(&self, public: &[u8; 32]) -> Option<[u8; 32]> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(public)
            .copied()
    }

    /// The key a request acts on, when it is one of ours (an invoice: one we learned).
    pub fn key_of(&self, method: &str, target: &str, body: &[u8]) -> Option<[u8; 32]> {
        let key = match subject(method, target, body) {
            Subject::Key(k) => k,
            Subject::Invoice(h) => *self
                .invoices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&h)?,
            Subject::Nothing => return None,
        };
        self.private(&key).map(|_| key)
    }

    /// Records the invoices in an answer to a request on `key`'s rental (JSON; anything else
    /// is ignored), so later look-ups of them are proven with `key`.
    pub fn learn(&self, key: &[u8; 32], answer: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(answer) else {
            return;
        };
        let mut hashes = Vec::new();
        payment_hashes(&v, &mut hashes);
        let mut invoices = self.invoices.lock().unwrap_or_else(|e| e.into_inner());
        for h in hashes {
            invoices.insert(h, *key);
        }
    }

    /// The `Authorization` value proving `method target body` to the server whose proof key
    /// is `proof_key`, with the key it acts on; None when it needs none or the key is not ours.
    pub fn authorization(
        &self,
        proof_key: &[u8; 32],
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Option<String> {
        self.authorization_at(proof_key, method, target, body, super::unix_now())
    }

    /// As [`Keyring::authorization`] with the client's clock at `ts` (a retry after
    /// `proof_expired` with the server's `Date`).
    pub fn authorization_at(
        &self,
        proof_key: &[u8; 32],
        method: &str,
        target: &str,
        body: &[u8],
        ts: u64,
    ) -> Option<String> {
        let key = self.key_of(method, target, body)?;
        let private = self.private(&key)?;
        let prover = Prover::new(&private, proof_key).ok()?;
        Some(
            prover
                .prove_at(method, target, body, ts, super::fresh_nonce())
                .header_value(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::Verifier;

    #[test]
    fn subjects_of_each_route() {
        let k = [9u8; 32];
        let std = STANDARD.encode(k);
        let url = URL_SAFE.encode(k);
        let body = format!("{{\"public_key\":\"{std}\"}}");
        assert_eq!(
            subject("POST", "/v1/rentals", body.as_bytes()),
            Subject::Key(k)
        );
        assert_eq!(
            subject("GET", &format!("/v1/rentals/{url}/config"), b""),
            Subject::Key(k)
        );
        let pct = std
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            subject("POST", &format!("/v1/rentals/{pct}/renewals"), b"{}"),
            Subject::Key(k)
        );
        assert_eq!(
            subject("GET", "/v1/invoices/ab?wait=3", b""),
            Subject::Invoice("ab".into())
        );
        assert_eq!(subject("GET", "/v1/terms", b""), Subject::Nothing);
        assert_eq!(subject("GET", "/v1/rentals/nope", b""), Subject::Nothing);
        assert_eq!(subject("POST", "/v1/rentals", b"{"), Subject::Nothing);
    }

    #[test]
    fn proves_its_keys_and_learned_invoices_and_nothing_else() {
        let server = Verifier::new(crate::proof::fresh_key(), 100);
        let s = server.public_key();
        let ring = Keyring::new();
        let public = ring.new_key();
        let k = decode_key(&public).unwrap();
        let body = format!("{{\"public_key\":\"{public}\"}}");
        let auth = ring
            .authorization(&s, "POST", "/v1/rentals", body.as_bytes())
            .unwrap();
        let now = crate::proof::unix_now();
        assert_eq!(
            server.verify(
                Some(&auth),
                Some(&k),
                "POST",
                "/v1/rentals",
                body.as_bytes(),
                now
            ),
            Ok(k)
        );
        // An invoice is proven only once an answer on the key's rental named it.
        let hash = "aa".repeat(32);
        let target = format!("/v1/invoices/{hash}?wait=1");
        assert!(ring.authorization(&s, "GET", &target, b"").is_none());
        ring.learn(
            &k,
            format!("{{\"open_invoice\":{{\"payment_hash\":\"{hash}\"}}}}").as_bytes(),
        );
        let auth = ring.authorization(&s, "GET", &target, b"").unwrap();
        assert_eq!(
            server.verify(Some(&auth), None, "GET", &target, b"", now),
            Ok(k)
        );
        // A stranger's key is not ours to prove.
        let other = format!("{{\"public_key\":\"{}\"}}", STANDARD.encode([7u8; 32]));
        assert!(ring
            .authorization(&s, "POST", "/v1/rentals", other.as_bytes())
            .is_none());
    }
}
