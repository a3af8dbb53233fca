//! Paying with LND: `POST /v2/router/send` answers with a stream of payment updates (one JSON
//! object per line, hashes and preimages in hex there), until SUCCEEDED or FAILED. TLS is pinned
//! to the node's certificate; the macaroon goes in `Grpc-Metadata-macaroon`.

use super::PayError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LndConfig {
    /// `lndconnect://host:port?cert=...&macaroon=...`; or the three fields below.
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

/// (https base URL, macaroon bytes, certificate DER) from an lndconnect URI.
pub fn parse_lndconnect(uri: &str) -> Result<(String, Vec<u8>, Vec<u8>), PayError> {
    let bad = |m: &str| PayError::Config(format!("lndconnect URI: {m}"));
    let u = url::Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    if u.scheme() != "lndconnect" {
        return Err(bad("scheme must be lndconnect"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?;
    let port = u.port().unwrap_or(8080);
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
        cert.ok_or_else(|| bad("no cert (a pinned certificate is required)"))?,
    ))
}

impl Lnd {
    pub fn new(cfg: &LndConfig) -> Result<Self, PayError> {
        let (base, mac, der) = match (&cfg.lndconnect, &cfg.url, &cfg.macaroon, &cfg.tls_cert) {
            (Some(uri), _, _, _) => parse_lndconnect(uri)?,
            (None, Some(url), Some(mac), Some(cert)) => {
                let mac = std::fs::read(mac)
                    .map_err(|e| PayError::Config(format!("{}: {e}", mac.display())))?;
                let pem = std::fs::read_to_string(cert)
                    .map_err(|e| PayError::Config(format!("{}: {e}", cert.display())))?;
                let der = staticwire_tls::first_cert_der(&pem)
                    .map_err(|e| PayError::Config(e.to_string()))?;
                (url.trim_end_matches('/').to_string(), mac, der)
            }
            _ => {
                return Err(PayError::Config(
                    "[lnd] needs lndconnect, or url + macaroon + tls_cert".into(),
                ))
            }
        };
        let tls = staticwire_tls::pinned_client_config(der)
            .map_err(|e| PayError::Config(e.to_string()))?;
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
            .map_err(|e| PayError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            // Each complete line is one update.
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Some(done) = update(&line, status.as_u16())? {
                    return Ok(done);
                }
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(PayError::Failed(
                        "no final payment status within 120 s".into(),
                    ))
                }
                Ok(None) => {
                    if let Some(done) = update(&buf, status.as_u16())? {
                        return Ok(done);
                    }
                    return Err(PayError::Failed(
                        "stream ended without a final status".into(),
                    ));
                }
                Ok(Some(Err(e))) => return Err(PayError::Unreachable(e.to_string())),
                Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            }
        }
    }
}

/// One streamed update: `Some(preimage)` when SUCCEEDED, an error when FAILED, None otherwise.
fn update(line: &[u8], http_status: u16) -> Result<Option<String>, PayError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| PayError::Failed(format!("bad update ({e}): {text}")))?;
    if let Some(e) = v.get("error") {
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
        return Err(PayError::Failed(format!("HTTP {http_status}: {msg}")));
    }
    if http_status >= 400 {
        let msg = v.get("message").and_then(Value::as_str).unwrap_or("error");
        return Err(PayError::Failed(format!("HTTP {http_status}: {msg}")));
    }
    let r = v.get("result").unwrap_or(&v);
    match r.get("status").and_then(Value::as_str) {
        Some("SUCCEEDED") => r
            .get("payment_preimage")
            .and_then(Value::as_str)
            .map(|p| Some(p.to_string()))
            .ok_or_else(|| PayError::Failed("SUCCEEDED without preimage".into())),
        Some("FAILED") => Err(PayError::Failed(
            r.get("failure_reason")
                .and_then(Value::as_str)
                .unwrap_or("FAILED")
                .to_string(),
        )),
        _ => Ok(None),
    }
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
        assert_eq!(cert, [1, 2, 3]);
        assert!(parse_lndconnect("https://x").is_err());
        assert!(parse_lndconnect("lndconnect://x:1?macaroon=AA").is_err());
    }

    #[test]
    fn stream_updates() {
        assert_eq!(
            update(br#"{"result":{"status":"IN_FLIGHT"}}"#, 200).unwrap(),
            None
        );
        assert_eq!(
            update(
                br#"{"result":{"status":"SUCCEEDED","payment_preimage":"ab"}}"#,
                200
            )
            .unwrap(),
            Some("ab".into())
        );
        assert!(update(
            br#"{"result":{"status":"FAILED","failure_reason":"FAILURE_REASON_NO_ROUTE"}}"#,
            200
        )
        .is_err());
        assert!(update(br#"{"code":2,"message":"verification failed"}"#, 500).is_err());
    }
}
