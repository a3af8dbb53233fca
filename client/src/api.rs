//! The provider's HTTP API (`/v1`), with the shared `staticwire-api` types. Every request
//! that acts on or reveals our rental carries the proof of key possession (PROTOCOL.md 3.1),
//! MACed over exactly what goes on the wire.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::de::DeserializeOwned;
use staticwire_api as api;
use staticwire_api::proof::Prover;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("server refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("server answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    ProofKey(String),
}

pub struct Api {
    pub base: String,
    /// The pinned certificate fingerprint (lowercase hex), for https servers.
    pub fingerprint: Option<String>,
    /// The server's proof key (base64) once [`Api::prove_with`] set it: pinned per rental.
    pub proof_key: Option<String>,
    http: reqwest::Client,
    prover: Option<Prover>,
    /// The terms and their `proof_key`, fetched once per run.
    terms: Mutex<Option<(api::Terms, Option<String>)>>,
    /// Seconds to add to our clock for a proof's time: the server's `Date` minus our clock,
    /// learnt from a `proof_expired` (PROTOCOL.md 3.1); 0 until then.
    clock_offset: Mutex<i64>,
}

/// The proof key to prove with: the one the terms offer, which must be the one pinned for this
/// rental when there is a pin (another proof key is another server, and a server without one
/// where we had pinned one is a downgrade). None: a v1.0 server, no proofs.
pub fn pin_proof_key(
    pinned: Option<&str>,
    offered: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match (pinned, offered) {
        (Some(p), Some(o)) if p == o => Ok(Some(o.to_string())),
        (Some(p), Some(o)) => Err(ApiError::ProofKey(format!(
            "the server's proof key is now {o}, not the {p} pinned for this rental: another server answers; refusing (as for a changed certificate)"
        ))),
        (Some(p), None) => Err(ApiError::ProofKey(format!(
            "the server no longer publishes a proof key (pinned: {p}): refusing to send unproven requests for this rental"
        ))),
        (None, o) => Ok(o.map(str::to_string)),
    }
}

/// `https://host[:port]` from a URL or a bare domain. For a domain the SRV record
/// `_staticwire._tcp.<domain>` names host and port; without one, `https://<domain>`.
pub async fn resolve_server(server: &str) -> Result<String, ApiError> {
    if server.starts_with("http://") || server.starts_with("https://") {
        let u = url::Url::parse(server)
            .map_err(|e| ApiError::Unreachable(format!("bad URL {server}: {e}")))?;
        return Ok(u.as_str().trim_end_matches('/').to_string());
    }
    if server.is_empty() || server.contains('/') {
        return Err(ApiError::Unreachable(format!(
            "bad server {server:?}: give a URL or a domain"
        )));
    }
    if let Ok(resolver) = resolver() {
        let name = format!("_staticwire._tcp.{}.", server.trim_end_matches('.'));
        if let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_secs(5), resolver.srv_lookup(name)).await
        {
            // Lowest priority first, then highest weight.
            if let Some(srv) = found
                .iter()
                .min_by_key(|s| (s.priority(), u16::MAX - s.weight()))
            {
                let host = srv.target().to_utf8();
                return Ok(format!(
                    "https://{}:{}",
                    host.trim_end_matches('.'),
                    srv.port()
                ));
            }
        }
    }
    Ok(format!("https://{server}"))
}

/// The system's resolver, or the one name server STATICIP_NAMESERVER (`ip:port`) names, for
/// hermetic setups and tests.
fn resolver() -> Result<hickory_resolver::TokioAsyncResolver, ApiError> {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
    match std::env::var("STATICIP_NAMESERVER") {
        Ok(ns) => {
            let addr: std::net::SocketAddr = ns.parse().map_err(|_| {
                ApiError::Unreachable(format!("STATICIP_NAMESERVER {ns:?} is not ip:port"))
            })?;
            let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            Ok(hickory_resolver::TokioAsyncResolver::tokio(
                ResolverConfig::from_parts(None, vec![], group),
                ResolverOpts::default(),
            ))
        }
        Err(_) => hickory_resolver::TokioAsyncResolver::tokio_from_system_conf()
            .map_err(|e| ApiError::Unreachable(format!("resolver: {e}"))),
    }
}

pub fn url_key(public_key: &str) -> String {
    STANDARD
        .decode(public_key)
        .map(|k| URL_SAFE.encode(k))
        .unwrap_or_else(|_| public_key.to_string())
}

impl Api {
    /// With a fingerprint, an https server is trusted by that pin alone (no CA, no hostname),
    /// as StaticWire providers use self-signed certificates. Without one, the platform's usual
    /// CA validation is not available in this build, so https needs the pin.
    pub fn new(base: &str, fingerprint: Option<&str>) -> Result<Self, ApiError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(90));
        let mut pinned = None;
        if let Some(f) = fingerprint {
            let sha = staticwire_tls::parse_fingerprint(f)
                .map_err(|e| ApiError::Unreachable(e.to_string()))?;
            let tls = staticwire_tls::fingerprint_client_config(sha)
                .map_err(|e| ApiError::Unreachable(e.to_string()))?;
            builder = builder.use_preconfigured_tls(tls);
            pinned = Some(hex::encode(sha));
        } else if base.starts_with("https://") {
            return Err(ApiError::Unreachable(
                "https servers are trusted by pinning: give --fingerprint (staticwire-control fingerprint prints it)".into(),
            ));
        }
        let http = builder
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            fingerprint: pinned,
            proof_key: None,
            http,
            prover: None,
            terms: Mutex::new(None),
            clock_offset: Mutex::new(0),
        })
    }

    /// From now on, prove possession of `private` (32 bytes) to this server, whose terms'
    /// proof key is `proof_key` (base64).
    pub fn prove_with(&mut self, private: &[u8; 32], proof_key: &str) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::ProofKey(format!("the server's proof key {m}"));
        let key: [u8; 32] = STANDARD
            .decode(proof_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad(format!("{proof_key:?} is not 32 bytes of base64")))?;
        let prover = Prover::new(private, &key).map_err(|e| bad(e.to_string()))?;
        self.prover = Some(prover);
        self.proof_key = Some(proof_key.to_string());
        Ok(())
    }

    /// Adds the proof over the request's method, request-target (path and query as sent) and
    /// body, made at `ts`, when we have a proof key.
    fn prove(&self, req: &mut reqwest::Request, ts: u64) -> Result<(), ApiError> {
        let Some(prover) = &self.prover else {
            return Ok(());
        };
        let url = req.url();
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let body = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        let proof = prover.prove_at(
            req.method().as_str(),
            &target,
            body,
            ts,
            staticwire_api::proof::fresh_nonce(),
        );
        let value = reqwest::header::HeaderValue::from_str(&proof.header_value())
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        req.headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
        Ok(())
    }

    /// Sends one request: its status, the server's clock from `Date` (Unix seconds) and body.
    async fn execute(
        &self,
        req: reqwest::Request,
    ) -> Result<(u16, Option<u64>, Vec<u8>), ApiError> {
        let resp = self.http.execute(req).await.map_err(|e| {
            if staticwire_tls::is_pin_mismatch(&e) {
                ApiError::Unreachable(format!(
                    "{}: the server's TLS certificate does not match the pinned fingerprint {}",
                    self.base,
                    self.fingerprint.as_deref().unwrap_or("")
                ))
            } else {
                ApiError::Unreachable(e.to_string())
            }
        })?;
        let status = resp.status().as_u16();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Ok((status, date, read_bounded(resp).await?))
    }

    /// Sends a request, proven when `proven` (PROTOCOL.md 3.1). A proof refused as
    /// `proof_expired` (our clock too far from the server's) is made again once with the time
    /// of the answer's `Date`, and that offset is kept for the rest of the run.
    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        proven: bool,
    ) -> Result<T, ApiError> {
        let base = req
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let proven = proven && self.prover.is_some();
        let copy = |r: &reqwest::Request| {
            r.try_clone()
                .ok_or_else(|| ApiError::Protocol("a request that cannot be sent twice".into()))
        };
        let mut req = copy(&base)?;
        if proven {
            let offset = *self.clock_offset.lock().unwrap_or_else(|e| e.into_inner());
            let now = staticwire_api::proof::unix_now();
            self.prove(&mut req, now.saturating_add_signed(offset))?;
        }
        let (status, date, body) = self.execute(req).await?;
        let reply = parse_reply(status, &body);
        match (&reply, date) {
            (Err(ApiError::Refused { code, .. }), Some(server_now))
                if proven && code == api::codes::PROOF_EXPIRED =>
            {
                let now = staticwire_api::proof::unix_now();
                *self.clock_offset.lock().unwrap_or_else(|e| e.into_inner()) =
                    server_now as i64 - now as i64;
                let mut req = copy(&base)?;
                self.prove(&mut req, server_now)?;
                let (status, _, body) = self.execute(req).await?;
                parse_reply(status, &body)
            }
            _ => reply,
        }
    }

    /// The same server's tunnel listener at `base` (plain HTTP inside the WireGuard tunnel,
    /// which authenticates it), proving with this rental's pinned proof key.
    pub fn via_tunnel(&self, base: &str) -> Result<Api, ApiError> {
        if !base.starts_with("http://") {
            return Err(ApiError::Protocol(format!(
                "the tunnel listener {base:?} is not an http:// URL"
            )));
        }
        let mut t = Api::new(base, None)?;
        t.prover = self.prover.clone();
        t.proof_key = self.proof_key.clone();
        Ok(t)
    }

    fn ptr_url(&self, public_key: &str) -> String {
        format!("{}/v1/rentals/{}/ptr", self.base, url_key(public_key))
    }

    /// The reverse DNS of the rental's addresses.
    pub async fn ptr(&self, public_key: &str) -> Result<api::PtrList, ApiError> {
        self.send(self.http.get(self.ptr_url(public_key)), true)
            .await
    }

    /// Sets the PTR of `address` (default: the rental's IPv4 address) to `name`.
    pub async fn set_ptr(
        &self,
        public_key: &str,
        address: Option<String>,
        name: &str,
    ) -> Result<api::PtrList, ApiError> {
        let body = api::PtrRequest {
            address,
            name: name.to_string(),
        };
        self.send(self.http.put(self.ptr_url(public_key)).json(&body), true)
            .await
    }

    /// Back to the provider's default for `address`, or every address.
    pub async fn clear_ptr(
        &self,
        public_key: &str,
        address: Option<String>,
    ) -> Result<api::PtrList, ApiError> {
        let body = api::PtrClearRequest { address };
        self.send(self.http.delete(self.ptr_url(public_key)).json(&body), true)
            .await
    }

    pub async fn terms(&self) -> Result<api::Terms, ApiError> {
        Ok(self.terms_and_proof_key().await?.0)
    }

    /// The terms and their `proof_key` (v1.1), fetched once and kept for this run.
    pub async fn terms_and_proof_key(&self) -> Result<(api::Terms, Option<String>), ApiError> {
        if let Some(t) = self.terms.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(t);
        }
        let terms: api::Terms = self
            .send(self.http.get(format!("{}/v1/terms", self.base)), false)
            .await?;
        let got = (terms.clone(), terms.proof_key);
        *self.terms.lock().unwrap_or_else(|e| e.into_inner()) = Some(got.clone());
        Ok(got)
    }

    pub async fn rent_with(
        &self,
        body: &api::RentRequest,
    ) -> Result<api::InvoiceResponse, ApiError> {
        self.send(
            self.http
                .post(format!("{}/v1/rentals", self.base))
                .json(body),
            true,
        )
        .await
    }

    pub async fn status(&self, public_key: &str) -> Result<api::Rental, ApiError> {
        self.send(
            self.http
                .get(format!("{}/v1/rentals/{}", self.base, url_key(public_key))),
            true,
        )
        .await
    }

    pub async fn config(&self, public_key: &str) -> Result<api::ConfigResponse, ApiError> {
        let conf: api::ConfigResponse = self
            .send(
                self.http.get(format!(
                    "{}/v1/rentals/{}/config",
                    self.base,
                    url_key(public_key)
                )),
                true,
            )
            .await?;
        check_config(&conf)?;
        Ok(conf)
    }

    pub async fn renew(
        &self,
        public_key: &str,
        months: u32,
    ) -> Result<api::InvoiceResponse, ApiError> {
        let body = api::RenewRequest { months };
        self.send(
            self.http
                .post(format!(
                    "{}/v1/rentals/{}/renewals",
                    self.base,
                    url_key(public_key)
                ))
                .json(&body),
            true,
        )
        .await
    }

    /// Long-polls an invoice for up to `wait` seconds.
    pub async fn invoice(&self, payment_hash: &str, wait: u64) -> Result<api::Invoice, ApiError> {
        self.send(
            self.http.get(format!(
                "{}/v1/invoices/{payment_hash}?wait={wait}",
                self.base
            )),
            true,
        )
        .await
    }
}

/// Largest server reply read; real ones are a few kilobytes.
pub const MAX_REPLY: usize = 1 << 20;

/// Reads a reply body, refusing one larger than [`MAX_REPLY`] instead of buffering it.
async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ApiError::Unreachable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_REPLY {
            return Err(ApiError::Protocol(format!(
                "reply larger than {MAX_REPLY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A server reply: the value on 2xx, the server's `{"error"}` (or the start of whatever it
/// sent) otherwise.
pub fn parse_reply<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ApiError> {
    if !(200..300).contains(&status) {
        let (code, message) = match serde_json::from_slice::<api::ErrorBody>(body) {
            Ok(e) => (e.error.code, e.error.message.chars().take(500).collect()),
            Err(_) => (
                "http".into(),
                String::from_utf8_lossy(body).chars().take(200).collect(),
            ),
        };
        return Err(ApiError::Refused {
            status,
            code,
            message,
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Protocol(e.to_string()))
}

/// Keys a wg-quick file from the server may use. Anything else is refused: `PostUp`, `PreUp`,
/// `PostDown`, `PreDown` run commands as root, and `Table`, `SaveConfig`, `FwMark` change the
/// host's routing; a server has no business there.
const WG_QUICK_KEYS: &[&str] = &[
    "privatekey",
    "address",
    "dns",
    "mtu",
    "listenport",
    "publickey",
    "presharedkey",
    "endpoint",
    "allowedips",
    "persistentkeepalive",
];

/// Checks GetConf's answer before anything of it is written: the server's key is a usable
/// WireGuard key, the address an IPv4 address, the endpoint `host:port` without anything
/// that could end a line, and the wg-quick text only sections and keys wg-quick uses for an
/// interface and its peer (no hooks that run commands).
pub fn check_config(c: &api::ConfigResponse) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::Protocol(format!("configuration refused: {m}")));
    let key = STANDARD.decode(c.server_public_key.trim()).map_err(|_| {
        ApiError::Protocol("configuration refused: server key is not base64".into())
    })?;
    if let Err(e) = api::check_public_key(&key) {
        return bad(format!("server public key: {e}"));
    }
    // Empty for an IPv6-only rental, which then has its prefix in `networks`.
    let v6_only = c.address.is_empty() && !c.networks.is_empty();
    if !v6_only && c.address.parse::<std::net::Ipv4Addr>().is_err() {
        return bad(format!("address {:?} is not an IPv4 address", c.address));
    }
    let printable =
        |v: &str| !v.is_empty() && v.len() <= 300 && v.chars().all(|ch| !ch.is_control());
    match c.endpoint.rsplit_once(':') {
        Some((host, port))
            if printable(host)
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => return bad(format!("endpoint {:?} is not host:port", c.endpoint)),
    }
    for a in &c.allowed_ips {
        let ok = a.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
        });
        if !ok {
            return bad(format!("allowed IP {a:?} is not a network"));
        }
    }
    if c.wg_quick.len() > 64 * 1024 {
        return bad("wg-quick text too long".into());
    }
    for line in c.wg_quick.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.eq_ignore_ascii_case("[interface]") || t.eq_ignore_ascii_case("[peer]") {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return bad(format!("wg-quick line {t:?}"));
        };
        let k = k.trim().to_ascii_lowercase();
        if !WG_QUICK_KEYS.contains(&k.as_str()) {
            return bad(format!("wg-quick key {k:?} is not allowed from a server"));
        }
        if v.chars().any(|ch| ch.is_control()) {
            return bad(format!("wg-quick value of {k:?}"));
        }
    }
    Ok(())
}
