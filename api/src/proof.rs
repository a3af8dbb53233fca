//! Proof of key possession (PROTOCOL.md section 3.1, v1.1).
//!
//! A WireGuard key is X25519 and cannot sign, but a Diffie-Hellman with the server's published
//! proof key can only be computed by the holder of the private key (as in Noise's static-static
//! DH). Both sides derive a MAC key from it and the client MACs each request:
//!
//! ```text
//! shared = X25519(client_private, proof_key)          = X25519(proof_private, client_public)
//! K      = HKDF-SHA256(salt "StaticWire proof v1", ikm shared,
//!                      info client_public || proof_key), 32 bytes
//! msg    = METHOD "\n" request-target "\n" ts "\n" hex(nonce) "\n" hex(SHA-256(body))
//! mac    = HMAC-SHA256(K, msg)
//! Authorization: StaticWire-Proof key="<b64>", ts="<unix s>", nonce="<b64>", mac="<b64>"
//! ```
//!
//! The client side is [`Prover`]; the server side is [`Verifier`], which also keeps the
//! bounded replay cache and a bounded cache of derived keys (to save the DH per request).

use crate::{check_public_key, KeyProblem};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::{digest, hkdf, hmac};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The `Authorization` scheme.
pub const SCHEME: &str = "StaticWire-Proof";
/// HKDF salt: names the construction and its version.
pub const SALT: &[u8] = b"StaticWire proof v1";
/// A proof is fresh while `|server time - ts|` is at most this many seconds.
pub const WINDOW_SECONDS: u64 = 120;
/// Bytes of the client's random nonce.
pub const NONCE_LEN: usize = 16;

/// Why a request's proof is refused. Every variant but [`ProofError::CacheFull`] is answered
/// `401` with [`ProofError::code`] and a `WWW-Authenticate: StaticWire-Proof` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// No `Authorization: StaticWire-Proof` header.
    Required,
    /// The header is not the syntax of PROTOCOL.md (what is wrong, for the message).
    Malformed(&'static str),
    /// The `key` is not a usable WireGuard key.
    BadKey(KeyProblem),
    /// The Diffie-Hellman result is all zero (a low-order point slipped through).
    NonContributory,
    /// The MAC does not verify: another private key, or the method, target, body, time or
    /// nonce differ from what was MACed.
    BadMac,
    /// `ts` is more than [`WINDOW_SECONDS`] away from the server's clock.
    Expired { ts: u64, now: u64 },
    /// This exact proof was already accepted.
    Replayed,
    /// The proof is for another key than the one the request acts on.
    KeyMismatch,
    /// The replay cache is full of proofs that are still fresh: the server cannot remember one
    /// more, so it refuses rather than forget one (answered 429 `rate_limited`).
    CacheFull,
}

impl ProofError {
    /// The stable error code (`crate::codes`).
    pub fn code(&self) -> &'static str {
        use crate::codes;
        match self {
            ProofError::Required => codes::PROOF_REQUIRED,
            ProofError::Malformed(_)
            | ProofError::BadKey(_)
            | ProofError::NonContributory
            | ProofError::BadMac => codes::PROOF_INVALID,
            ProofError::Expired { .. } => codes::PROOF_EXPIRED,
            ProofError::Replayed => codes::PROOF_REPLAYED,
            ProofError::KeyMismatch => codes::PROOF_KEY_MISMATCH,
            ProofError::CacheFull => codes::RATE_LIMITED,
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ProofError::CacheFull => 429,
            _ => 401,
        }
    }
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::Required => write!(
                f,
                "this request needs a proof of key possession: Authorization: {SCHEME} (PROTOCOL.md)"
            ),
            ProofError::Malformed(what) => write!(f, "malformed {SCHEME} header: {what}"),
            ProofError::BadKey(p) => write!(f, "proof key: {p}"),
            ProofError::NonContributory => {
                write!(f, "the proof's Diffie-Hellman result is all zero")
            }
            ProofError::BadMac => write!(
                f,
                "the proof does not verify for this key, method, path, body and time"
            ),
            ProofError::Expired { ts, now } => write!(
                f,
                "the proof's time {ts} is more than {WINDOW_SECONDS} s from the server's {now}"
            ),
            ProofError::Replayed => write!(f, "this proof was already used"),
            ProofError::KeyMismatch => {
                write!(f, "the proof is for another key than this request names")
            }
            ProofError::CacheFull => write!(f, "too many proofs at once; retry shortly"),
        }
    }
}

impl std::error::Error for ProofError {}

/// The MAC key `K` of one (client key, proof key) pair.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl MacKey {
    /// `K` from the DH result and both public keys.
    fn derive(
        shared: &x25519_dalek::SharedSecret,
        client_public: &[u8; 32],
        proof_key: &[u8; 32],
    ) -> Result<MacKey, ProofError> {
        if !shared.was_contributory() {
            return Err(ProofError::NonContributory);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(shared.as_bytes());
        let info = [&client_public[..], &proof_key[..]];
        let mut k = [0u8; 32];
        prk.expand(&info, Len32)
            .and_then(|okm| okm.fill(&mut k))
            .map_err(|_| ProofError::Malformed("hkdf"))?;
        Ok(MacKey(k))
    }

    /// The client's `K`: its private key and the server's published proof key.
    pub fn for_client(
        client_private: &[u8; 32],
        proof_key: &[u8; 32],
    ) -> Result<MacKey, ProofError> {
        check_public_key(proof_key).map_err(ProofError::BadKey)?;
        let secret = x25519_dalek::StaticSecret::from(*client_private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*proof_key));
        MacKey::derive(&shared, &public, proof_key)
    }

    /// The server's `K`: its proof private key and the client's public key.
    pub fn for_server(
        proof_private: &[u8; 32],
        client_public: &[u8; 32],
    ) -> Result<MacKey, ProofError> {
        check_public_key(client_public).map_err(ProofError::BadKey)?;
        let secret = x25519_dalek::StaticSecret::from(*proof_private);
        let proof_key = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*client_public));
        MacKey::derive(&shared, client_public, &proof_key)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.hmac_key(), msg);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time comparison.
    pub fn verify(&self, msg: &[u8], mac: &[u8; 32]) -> bool {
        hmac::verify(&self.hmac_key(), msg, mac).is_ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The MACed text: `METHOD "\n" target "\n" ts "\n" hex(nonce) "\n" hex(SHA-256(body))`.
/// `target` is the request-target exactly as sent: the path, and `?query` when there is one.
pub fn message(
    method: &str,
    target: &str,
    ts: u64,
    nonce: &[u8; NONCE_LEN],
    body: &[u8],
) -> String {
    let body_hash = digest::digest(&digest::SHA256, body);
    format!(
        "{}\n{target}\n{ts}\n{}\n{}",
        method.to_ascii_uppercase(),
        hex(nonce),
        hex(body_hash.as_ref())
    )
}

/// One request's proof, as carried in its `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// The client's WireGuard public key.
    pub key: [u8; 32],
    /// Unix seconds of the client's clock.
    pub ts: u64,
    pub nonce: [u8; NONCE_LEN],
    pub mac: [u8; 32],
}

fn b64_exact<const N: usize>(v: &str, what: &'static str) -> Result<[u8; N], ProofError> {
    let bytes = STANDARD
        .decode(v)
        .map_err(|_| ProofError::Malformed(what))?;
    bytes.try_into().map_err(|_| ProofError::Malformed(what))
}

impl Proof {
    /// The `Authorization` header value, as a client MUST send it.
    pub fn header_value(&self) -> String {
        format!(
            "{SCHEME} key=\"{}\", ts=\"{}\", nonce=\"{}\", mac=\"{}\"",
            STANDARD.encode(self.key),
            self.ts,
            STANDARD.encode(self.nonce),
            STANDARD.encode(self.mac)
        )
    }

    /// The key in standard base64, as in JSON bodies.
    pub fn key_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    /// Parses an `Authorization` header value. The scheme and parameter names are
    /// case-insensitive, parameters may come in any order, values quoted or not; each of `key`,
    /// `ts`, `nonce` and `mac` exactly once; other parameters are ignored (later versions).
    pub fn parse(value: &str) -> Result<Proof, ProofError> {
        if value.len() > 1024 {
            return Err(ProofError::Malformed("header too long"));
        }
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(ProofError::Required);
        }
        let (mut key, mut ts, mut nonce, mut mac) = (None, None, None, None);
        for part in params.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, v) = part
                .split_once('=')
                .ok_or(ProofError::Malformed("a parameter without '='"))?;
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(rest) => rest
                    .strip_suffix('"')
                    .filter(|inner| !inner.contains(['"', '\\']))
                    .ok_or(ProofError::Malformed("a badly quoted value"))?,
                None => v,
            };
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "key" => &mut key,
                "ts" => &mut ts,
                "nonce" => &mut nonce,
                "mac" => &mut mac,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(ProofError::Malformed("a parameter given twice"));
            }
        }
        let key: [u8; 32] = b64_exact(
            key.ok_or(ProofError::Malformed("no key"))?,
            "key is not 32 bytes of base64",
        )?;
        let ts = ts.ok_or(ProofError::Malformed("no ts"))?;
        if ts.is_empty() || ts.len() > 19 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProofError::Malformed("ts is not Unix seconds"));
        }
        let ts = ts
            .parse::<u64>()
            .map_err(|_| ProofError::Malformed("ts is not Unix seconds"))?;
        let nonce = b64_exact(
            nonce.ok_or(ProofError::Malformed("no nonce"))?,
            "nonce is not 16 bytes of base64",
        )?;
        let mac = b64_exact(
            mac.ok_or(ProofError::Malformed("no mac"))?,
            "mac is not 32 bytes of base64",
        )?;
        Ok(Proof {
            key,
            ts,
            nonce,
            mac,
        })
    }
}

/// The client side: proves possession of one private key to one server.
#[derive(Clone)]
pub struct Prover {
    public: [u8; 32],
    key: MacKey,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prover({})", STANDARD.encode(self.public))
    }
}

impl Prover {
    /// `client_private`: the WireGuard private key; `proof_key`: the terms' `proof_key`.
    pub fn new(client_private: &[u8; 32], proof_key: &[u8; 32]) -> Result<Prover, ProofError> {
        let secret = x25519_dalek::StaticSecret::from(*client_private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Prover {
            public,
            key: MacKey::for_client(client_private, proof_key)?,
        })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The proof of one request at `ts` with `nonce` (deterministic: the test vector).
    pub fn prove_at(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        ts: u64,
        nonce: [u8; NONCE_LEN],
    ) -> Proof {
        let msg = message(method, target, ts, &nonce, body);
        Proof {
            key: self.public,
            ts,
            nonce,
            mac: self.key.mac(msg.as_bytes()),
        }
    }

    /// The proof of one request now, with a fresh random nonce.
    pub fn prove(&self, method: &str, target: &str, body: &[u8]) -> Proof {
        self.prove_at(method, target, body, unix_now(), fresh_nonce())
    }
}

/// The system clock in Unix seconds (0 before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 16 bytes from the operating system's random source.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    // The OS source failing is not a state a process can go on from securely.
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .expect("the operating system's random source failed");
    n
}

/// A new X25519 private key from the operating system's random source (a server's proof key).
pub fn fresh_key() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .expect("the operating system's random source failed");
    k
}

/// Proof keys: the server's X25519 key pair that clients DH with.
pub fn proof_public_key(proof_private: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*proof_private)).to_bytes()
}

/// The server side: checks proofs against its proof key, remembers every accepted proof until
/// it could no longer be fresh (so a replay fails inside the window as well as outside), and
/// caches `K` per client key.
pub struct Verifier {
    private: [u8; 32],
    public: [u8; 32],
    /// Derived `K` per client key; cleared when it reaches `MAX_KEYS` (a DH is cheap enough
    /// that a flood of keys only costs one per request, as without the cache).
    keys: Mutex<HashMap<[u8; 32], MacKey>>,
    /// Accepted proofs by (ts, mac), pruned by ts.
    seen: Mutex<BTreeSet<(u64, [u8; 32])>>,
    max_seen: usize,
}

const MAX_KEYS: usize = 16_384;

/// Default bound of the replay cache: at 48 bytes an entry, about 10 MB.
pub const DEFAULT_MAX_SEEN: usize = 200_000;

impl Verifier {
    pub fn new(proof_private: [u8; 32], max_seen: usize) -> Verifier {
        Verifier {
            public: proof_public_key(&proof_private),
            private: proof_private,
            keys: Mutex::new(HashMap::new()),
            seen: Mutex::new(BTreeSet::new()),
            max_seen: max_seen.max(1),
        }
    }

    /// The proof key to publish in the terms.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.public)
    }

    fn mac_key(&self, client: &[u8; 32]) -> Result<MacKey, ProofError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(client) {
            return Ok(k.clone());
        }
        let k = MacKey::for_server(&self.private, client)?;
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(*client, k.clone());
        Ok(k)
    }

    /// Checks a request's proof. `header` is its `Authorization` value (None: absent);
    /// `expected` the key the request acts on when the route names one (path or body);
    /// `now` the server's real clock (never a test hook's shifted one). On success the proof
    /// is remembered and the proven key returned. Order: syntax, key, time, MAC, replay; a
    /// proof is remembered only once its MAC verified, so forgeries cannot fill the cache.
    pub fn verify(
        &self,
        header: Option<&str>,
        expected: Option<&[u8; 32]>,
        method: &str,
        target: &str,
        body: &[u8],
        now: u64,
    ) -> Result<[u8; 32], ProofError> {
        self.check(header, expected, method, target, body, now)
            .map(|p| p.key)
    }

    /// As [`Verifier::verify`], returning the accepted proof (its `ts` and `mac` identify it
    /// in a replay cache shared by replicas).
    pub fn check(
        &self,
        header: Option<&str>,
        expected: Option<&[u8; 32]>,
        method: &str,
        target: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Proof, ProofError> {
        let proof = Proof::parse(header.ok_or(ProofError::Required)?)?;
        check_public_key(&proof.key).map_err(ProofError::BadKey)?;
        if expected.is_some_and(|k| *k != proof.key) {
            return Err(ProofError::KeyMismatch);
        }
        if proof.ts.abs_diff(now) > WINDOW_SECONDS {
            return Err(ProofError::Expired { ts: proof.ts, now });
        }
        let msg = message(method, target, proof.ts, &proof.nonce, body);
        if !self.mac_key(&proof.key)?.verify(msg.as_bytes(), &proof.mac) {
            return Err(ProofError::BadMac);
        }
        self.remember(proof.ts, proof.mac, now)?;
        Ok(proof)
    }

    fn remember(&self, ts: u64, mac: [u8; 32], now: u64) -> Result<(), ProofError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Drop what could no longer be fresh: ts < now - WINDOW.
        let oldest = now.saturating_sub(WINDOW_SECONDS);
        let keep = seen.split_off(&(oldest, [0u8; 32]));
        *seen = keep;
        if seen.contains(&(ts, mac)) {
            return Err(ProofError::Replayed);
        }
        if seen.len() >= self.max_seen {
            return Err(ProofError::CacheFull);
        }
        seen.insert((ts, mac));
        Ok(())
    }

    /// Proofs remembered now (metrics, tests).
    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

pub mod keyring;

#[cfg(test)]
mod tests;
