//! LND over its REST gateway: `POST /v1/invoices`, `GET /v1/invoice/{r_hash}`, macaroon in the
//! `Grpc-Metadata-macaroon` header, TLS pinned to the node's tls.cert.
//!
//! Wire facts that matter: int64 fields are JSON strings, bytes are base64, macaroon problems come
//! back as HTTP 500 `{"code":2,...}`, and `r_preimage` is filled at creation — only
//! `state == "SETTLED"` means paid.

use super::{LnError, NewInvoice, Status};
use base64::Engine;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

pub struct Lnd {
    base: String,
    macaroon_hex: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct AddInvoiceResponse {
    r_hash: String,
    payment_request: String,
}

#[derive(Deserialize)]
struct LookupResponse {
    state: String,
    #[serde(default)]
    settle_date: Option<String>,
}

#[derive(Deserialize)]
struct RestError {
    #[serde(default)]
    message: String,
}

impl Lnd {
    pub fn new(url: &str, macaroon: &Path, tls_cert: &Path) -> Result<Self, LnError> {
        let mac = std::fs::read(macaroon)
            .map_err(|e| LnError::Unreachable(format!("macaroon {}: {e}", macaroon.display())))?;
        let pem = std::fs::read_to_string(tls_cert)
            .map_err(|e| LnError::Unreachable(format!("tls cert {}: {e}", tls_cert.display())))?;
        let der = staticwire_tls::first_cert_der(&pem)
            .map_err(|e| LnError::Unreachable(format!("tls cert {}: {e}", tls_cert.display())))?;
        let tls = staticwire_tls::pinned_client_config(der)
            .map_err(|e| LnError::Unreachable(format!("tls: {e}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        Ok(Lnd {
            base: url.trim_end_matches('/').to_string(),
            macaroon_hex: hex::encode(mac),
            http,
        })
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, LnError> {
        let resp = req
            .header("Grpc-Metadata-macaroon", &self.macaroon_hex)
            .send()
            .await
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<RestError>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(LnError::Refused(format!("HTTP {status}: {msg}")));
        }
        serde_json::from_slice(&body).map_err(|e| LnError::Protocol(e.to_string()))
    }

    pub async fn create_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry: Duration,
    ) -> Result<NewInvoice, LnError> {
        let body = serde_json::json!({
            "value_msat": amount_msat.to_string(),
            "memo": description,
            "expiry": expiry.as_secs().to_string(),
        });
        let r: AddInvoiceResponse = self
            .send(
                self.http
                    .post(format!("{}/v1/invoices", self.base))
                    .json(&body),
            )
            .await?;
        let hash = base64::engine::general_purpose::STANDARD
            .decode(&r.r_hash)
            .map_err(|e| LnError::Protocol(format!("r_hash: {e}")))?;
        if hash.len() != 32 {
            return Err(LnError::Protocol("r_hash is not 32 bytes".into()));
        }
        let invoice: lightning_invoice::Bolt11Invoice = r
            .payment_request
            .parse()
            .map_err(|e| LnError::Protocol(format!("payment_request: {e}")))?;
        if invoice.amount_milli_satoshis() != Some(amount_msat) {
            return Err(LnError::Protocol(
                "invoice amount differs from the request".into(),
            ));
        }
        let expires_at = (invoice.duration_since_epoch() + invoice.expiry_time()).as_secs() as i64;
        Ok(NewInvoice {
            bolt11: r.payment_request,
            payment_hash: hex::encode(hash),
            expires_at,
        })
    }

    pub async fn status(&self, payment_hash: &str) -> Result<Status, LnError> {
        let r: LookupResponse = self
            .send(
                self.http
                    .get(format!("{}/v1/invoice/{payment_hash}", self.base)),
            )
            .await?;
        Ok(match r.state.as_str() {
            "SETTLED" => Status::Settled {
                at: r
                    .settle_date
                    .and_then(|d| d.parse().ok())
                    .unwrap_or_default(),
            },
            "CANCELED" => Status::Gone,
            "OPEN" | "ACCEPTED" => Status::Open,
            other => return Err(LnError::Protocol(format!("unknown invoice state {other}"))),
        })
    }

    /// Follows `GET /v1/invoices/subscribe` (one JSON object per line, `{"result": invoice}`),
    /// forwarding settled invoices. Returns when the stream ends.
    pub async fn subscribe(
        &self,
        tx: &tokio::sync::mpsc::Sender<(String, i64)>,
    ) -> Result<(), LnError> {
        use futures_util::StreamExt;
        let resp = self
            .http
            .get(format!("{}/v1/invoices/subscribe", self.base))
            .header("Grpc-Metadata-macaroon", &self.macaroon_hex)
            // The stream is long-lived; reconnect now and then rather than never.
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(LnError::Refused(format!(
                "subscribe: HTTP {}",
                resp.status()
            )));
        }
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| LnError::Unreachable(e.to_string()))?);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                let inv = v.get("result").unwrap_or(&v);
                if inv.get("state").and_then(|s| s.as_str()) != Some("SETTLED") {
                    continue;
                }
                let hash = inv
                    .get("r_hash")
                    .and_then(|h| h.as_str())
                    .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok());
                let at = inv
                    .get("settle_date")
                    .and_then(|d| d.as_str())
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                if let Some(hash) = hash {
                    if tx.send((hex::encode(hash), at)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), LnError> {
        self.send::<serde_json::Value>(self.http.get(format!("{}/v1/getinfo", self.base)))
            .await
            .map(|_| ())
    }
}
