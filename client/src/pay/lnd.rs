//! Paying with LND: `POST /v2/router/send` answers with a stream of payment updates (one JSON
//! object per line, hashes and preimages in hex there), until SUCCEEDED or FAILED;
//! `GET /v2/router/track/{hash}` streams the same for an earlier payment, its current state
//! first. TLS is pinned to the node's certificate (or, for a CA-signed one, validated against
//! the system's CAs); the macaroon goes in `Grpc-Metadata-macaroon`.

use super::{NodeView, PayError};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LndConfig {
    /// `lndconnect://host:port?cert=...&macaroon=...` with lnd's REST port (8080 by default;
    /// lndconnect's own default is the gRPC port 10009); `cert` may be left out for a
    /// CA-signed certificate. Or the three fields below.
    pub lndconnect: Option<String>,
    pub url: Option<String>,
    pub macaroon: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
}

pub struct Lnd {
    base: String,
    macaroon_hex: String,
    http: reqwest::Client,
}

/// https base URL, macaroon bytes, certificate DER if pinned.
type NodeAccess = (String, Vec<u8>, Option<Vec<u8>>);

/// The node's address and credentials from an lndconnect URI.
pub fn parse_lndconnect(uri: &str) -> Result<NodeAccess, PayError> {
    let bad = |m: &str| PayError::Config(format!("lndconnect URI: {m}"));
    let u = url::Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    if u.scheme() != "lndconnect" {
        return Err(bad("scheme must be lndconnect"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?;
    // Without a port lndconnect means gRPC's 10009; staticip speaks REST.
    let port = u.port().ok_or_else(|| {
        bad("give lnd's REST port (host:8080 by default); lndconnect's default is the gRPC port 10009")
    })?;
    let (mut cert, mut mac) = (None, None);
    for (k, v) in u.query_pairs() {
        let decoded = URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('=').as_bytes())
            .map_err(|_| bad(&format!("{k} is not base64url")))?;
        match k.as_ref() {
            "cert" => cert = Some(decoded),
            "macaroon" => mac = Some(decoded),
            _ => {}
        }
    }
    Ok((
        format!("https://{host}:{port}"),
        mac.ok_or_else(|| bad("no macaroon"))?,
        cert,
    ))
}

/// Maps a transport error of a request that never reached lnd.
fn not_sent(e: reqwest::Error) -> PayError {
    if staticwire_tls::is_pin_mismatch(&e) {
        PayError::Config(
            "the node's TLS certificate does not match the pinned one (tls_cert or the lndconnect cert)"
                .into(),
        )
    } else {
        PayError::Unreachable(e.to_string())
    }
}

/// An error answer of lnd: macaroon problems are configuration, the rest a refusal.
fn refused(http_status: u16, msg: &str) -> PayError {
    if msg.contains("verification failed") || msg.contains("permission denied") {
        PayError::Config(format!(
            "the node refused the macaroon (HTTP {http_status}: {msg}); paying needs offchain:read and offchain:write (admin.macaroon)"
        ))
    } else if msg.contains("in transition") || msg.contains("in flight") {
        PayError::InFlight(msg.to_string())
    } else {
        PayError::Failed(format!("HTTP {http_status}: {msg}"))
    }
}

impl Lnd {
    pub fn new(cfg: &LndConfig) -> Result<Self, PayError> {
        let (base, mac, der) = match (&cfg.lndconnect, &cfg.url, &cfg.macaroon, &cfg.tls_cert) {
            (Some(uri), _, _, _) => parse_lndconnect(uri)?,
            (None, Some(url), Some(mac), None) => {
                let mac = std::fs::read(mac)
                    .map_err(|e| PayError::Config(format!("{}: {e}", mac.display())))?;
                (url.trim_end_matches('/').to_string(), mac, None)
            }
            (None, Some(url), Some(mac), Some(cert)) => {
                let mac = std::fs::read(mac)
                    .map_err(|e| PayError::Config(format!("{}: {e}", mac.display())))?;
                let pem = std::fs::read_to_string(cert)
                    .map_err(|e| PayError::Config(format!("{}: {e}", cert.display())))?;
                let der = staticwire_tls::first_cert_der(&pem)
                    .map_err(|e| PayError::Config(e.to_string()))?;
                (url.trim_end_matches('/').to_string(), mac, Some(der))
            }
            _ => {
                return Err(PayError::Config(
                    "[lnd] needs lndconnect, or url + macaroon (+ tls_cert unless CA-signed)"
                        .into(),
                ))
            }
        };
        let tls = match der {
            Some(der) => staticwire_tls::pinned_client_config(der)
                .map_err(|e| PayError::Config(e.to_string()))?,
            None => staticwire_tls::system_roots_client_config()
                .map_err(|e| PayError::Config(e.to_string()))?,
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PayError::Config(e.to_string()))?;
        Ok(Lnd {
            base,
            macaroon_hex: hex::encode(mac),
            http,
        })
    }

    pub async fn pay(&self, bolt11: &str, max_fee_sat: u64) -> Result<String, PayError> {
        let body = serde_json::json!({
            "payment_request": bolt11,
            "timeout_seconds": 60,
            "fee_limit_sat": max_fee_sat.to_string(),
            "no_inflight_updates": false,
        });
        let resp = self
            .http
            .post(format!("{}/v2/router/send", self.base))
            .header("Grpc-Metadata-macaroon", &self.macaroon_hex)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                // lnd sends no headers until the first update: only a failed connection
                // proves the request never arrived.
                if e.is_connect() {
                    not_sent(e)
                } else {
                    PayError::InFlight(e.to_string())
                }
            })?;
        match self.follow(resp, Duration::from_secs(120)).await? {
            NodeView::Succeeded { preimage } => Ok(preimage),
            NodeView::Failed(reason) => Err(PayError::Failed(reason)),
            NodeView::InFlight => Err(PayError::InFlight(
                "no final payment status within 120 s".into(),
            )),
            NodeView::NotFound => Err(PayError::InFlight("lnd lost track of it".into())),
        }
    }

    /// Where an earlier payment stands: the first update of `GET /v2/router/track/{hash}`
    /// is its current state.
    pub async fn track(&self, payment_hash: &str) -> Result<NodeView, PayError> {
        let hash = hex::decode(payment_hash)
            .map_err(|_| PayError::Failed(format!("bad payment hash {payment_hash}")))?;
        let resp = self
            .http
            .get(format!(
                "{}/v2/router/track/{}",
                self.base,
                URL_SAFE.encode(hash)
            ))
            .header("Grpc-Metadata-macaroon", &self.macaroon_hex)
            .send()
            .await
            .map_err(not_sent)?;
        match self.first_update(resp, Duration::from_secs(15)).await {
            Err(PayError::Failed(m))
                if m.contains("isn't initiated") || m.contains("not found") =>
            {
                Ok(NodeView::NotFound)
            }
            Err(PayError::Failed(m)) => Err(PayError::Unreachable(m)),
            other => other,
        }
    }

    /// Reads updates until a final one, or `limit`, or the end of the stream.
    async fn follow(&self, resp: reqwest::Response, limit: Duration) -> Result<NodeView, PayError> {
        self.read_updates(resp, limit, true).await
    }

    async fn first_update(
        &self,
        resp: reqwest::Response,
        limit: Duration,
    ) -> Result<NodeView, PayError> {
        self.read_updates(resp, limit, false).await
    }

    async fn read_updates(
        &self,
        resp: reqwest::Response,
        limit: Duration,
        until_final: bool,
    ) -> Result<NodeView, PayError> {
        let status = resp.status();
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Each complete line is one update.
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                match update(&line, status.as_u16())? {
                    Some(NodeView::InFlight) if until_final => {}
                    Some(view) => return Ok(view),
                    None => {}
                }
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(NodeView::InFlight),
                Ok(None) => {
                    return Ok(update(&buf, status.as_u16())?.unwrap_or(NodeView::InFlight));
                }
                Ok(Some(Err(_))) => return Ok(NodeView::InFlight),
                Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            }
        }
    }
}

/// One streamed update: the payment's state, or None for a line without one.
pub(crate) fn update(line: &[u8], http_status: u16) -> Result<Option<NodeView>, PayError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| PayError::InFlight(format!("bad update ({e}): {text}")))?;
    if let Some(e) = v.get("error") {
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
        return Err(refused(http_status, msg));
    }
    if http_status >= 400 {
        let msg = v.get("message").and_then(Value::as_str).unwrap_or("error");
        return Err(refused(http_status, msg));
    }
    let r = v.get("result").unwrap_or(&v);
    Ok(match r.get("status").and_then(Value::as_str) {
        Some("SUCCEEDED") => Some(NodeView::Succeeded {
            preimage: r
                .get("payment_preimage")
                .and_then(Value::as_str)
                .ok_or_else(|| PayError::InFlight("SUCCEEDED without preimage".into()))?
                .to_string(),
        }),
        Some("FAILED") => Some(NodeView::Failed(
            r.get("failure_reason")
                .and_then(Value::as_str)
                .unwrap_or("FAILED")
                .to_string(),
        )),
        Some(_) => Some(NodeView::InFlight),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lndconnect_uri() {
        let uri = format!(
            "lndconnect://node.example:10009?cert={}&macaroon={}",
            URL_SAFE_NO_PAD.encode([1u8, 2, 3]),
            URL_SAFE_NO_PAD.encode(b"mac")
        );
        let (base, mac, cert) = parse_lndconnect(&uri).unwrap();
        assert_eq!(base, "https://node.example:10009");
        assert_eq!(mac, b"mac");
        assert_eq!(cert, Some(vec![1, 2, 3]));
        assert!(parse_lndconnect("https://x").is_err());
        // No cert: a CA-signed node certificate, validated against the system's CAs.
        let (_, _, cert) = parse_lndconnect("lndconnect://x:8080?macaroon=AA").unwrap();
        assert_eq!(cert, None);
        // No port would mean gRPC's 10009: refused, with the reason.
        match parse_lndconnect("lndconnect://x?macaroon=AA") {
            Err(e) => assert!(e.to_string().contains("REST port"), "{e}"),
            Ok(_) => panic!("a URI without port was accepted"),
        }
        assert!(parse_lndconnect("lndconnect://x:8080?cert=AA").is_err());
    }

    #[test]
    fn stream_updates() {
        assert_eq!(
            update(br#"{"result":{"status":"IN_FLIGHT"}}"#, 200).unwrap(),
            Some(NodeView::InFlight)
        );
        assert_eq!(
            update(
                br#"{"result":{"status":"SUCCEEDED","payment_preimage":"ab"}}"#,
                200
            )
            .unwrap(),
            Some(NodeView::Succeeded {
                preimage: "ab".into()
            })
        );
        assert_eq!(
            update(
                br#"{"result":{"status":"FAILED","failure_reason":"FAILURE_REASON_NO_ROUTE"}}"#,
                200
            )
            .unwrap(),
            Some(NodeView::Failed("FAILURE_REASON_NO_ROUTE".into()))
        );
        // A macaroon lnd refuses is a configuration problem, not a failed payment.
        assert!(matches!(
            update(br#"{"code":2,"message":"verification failed"}"#, 500),
            Err(PayError::Config(_))
        ));
        assert!(matches!(
            update(br#"{"code":2,"message":"payment is in transition"}"#, 500),
            Err(PayError::InFlight(_))
        ));
    }
}
