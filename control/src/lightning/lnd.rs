//! LND over its REST gateway: `POST /v1/invoices`, `GET /v1/invoice/{r_hash}`, macaroon in the
//! `Grpc-Metadata-macaroon` header, TLS pinned to the node's tls.cert.
//!
//! Wire facts that matter: int64 fields are JSON strings, bytes are base64, macaroon problems come
//! back as HTTP 500 `{"code":2,...}` ("permission denied" when the macaroon lacks an
//! operation), an unknown invoice as 404 "unable to locate invoice" (HTTP 500 in older lnd),
//! and `r_preimage` is filled at creation — only `state == "SETTLED"` means paid.

use super::{LnError, NewInvoice, Settlement, Status};
use crate::network::normalize_network;
use base64::Engine;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

pub struct Lnd {
    base: String,
    macaroon_hex: String,
    http: reqwest::Client,
    /// For the settlement subscription: no whole-request timeout (it is meant to stay open),
    /// TCP keepalive to notice a dead peer.
    stream_http: reqwest::Client,
}

/// Maps a transport error, naming a pinned-certificate mismatch for what it is.
fn transport(e: reqwest::Error) -> LnError {
    if staticwire_tls::is_pin_mismatch(&e) {
        LnError::Certificate(
            "the node presented another certificate (was lnd's tls.cert regenerated?)".into(),
        )
    } else {
        LnError::Unreachable(e.to_string())
    }
}

/// Classifies an error answer of the REST gateway.
fn refusal(status: reqwest::StatusCode, msg: String) -> LnError {
    if msg.contains("permission denied") {
        LnError::Permission(msg)
    } else if status == reqwest::StatusCode::NOT_FOUND || msg.contains("unable to locate invoice") {
        LnError::NotFound(msg)
    } else {
        LnError::Refused(format!("HTTP {status}: {msg}"))
    }
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
            .use_preconfigured_tls(tls.clone())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        let stream_http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(15))
            .tcp_keepalive(Duration::from_secs(60))
            .build()
            .map_err(|e| LnError::Unreachable(e.to_string()))?;
        Ok(Lnd {
            base: url.trim_end_matches('/').to_string(),
            macaroon_hex: hex::encode(mac),
            http,
            stream_http,
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
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<RestError>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(refusal(status, msg));
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
        let r: LookupResponse = match self
            .send(
                self.http
                    .get(format!("{}/v1/invoice/{payment_hash}", self.base)),
            )
            .await
        {
            Err(LnError::NotFound(_)) => return Ok(Status::Unknown),
            other => other?,
        };
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
    /// forwarding settled invoices. With `settle_index` set lnd first replays the settlements
    /// after it, so a reconnect misses nothing and repeats nothing; `index` follows the stream.
    /// Returns when the stream ends.
    pub async fn subscribe(
        &self,
        index: &mut u64,
        tx: &tokio::sync::mpsc::Sender<Settlement>,
    ) -> Result<(), LnError> {
        use futures_util::StreamExt;
        let mut url = format!("{}/v1/invoices/subscribe", self.base);
        if *index > 0 {
            url.push_str(&format!("?settle_index={index}"));
        }
        // lnd sends no headers until the first event, so this waits as long as it takes.
        let resp = self
            .stream_http
            .get(url)
            .header("Grpc-Metadata-macaroon", &self.macaroon_hex)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            let msg = serde_json::from_slice::<RestError>(&body)
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(refusal(status, format!("subscribe: {msg}")));
        }
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.map_err(transport)?);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(e) = v.get("error") {
                    let msg = e.get("message").and_then(|m| m.as_str()).unwrap_or("error");
                    return Err(LnError::Refused(format!("subscribe: {msg}")));
                }
                let inv = v.get("result").unwrap_or(&v);
                if inv.get("state").and_then(|s| s.as_str()) != Some("SETTLED") {
                    continue;
                }
                let int = |k: &str| {
                    inv.get(k)
                        .and_then(|d| d.as_str())
                        .and_then(|d| d.parse::<u64>().ok())
                };
                let hash = inv
                    .get("r_hash")
                    .and_then(|h| h.as_str())
                    .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok());
                let settle_index = int("settle_index").unwrap_or(0);
                let Some(hash) = hash.filter(|h| h.len() == 32) else {
                    continue;
                };
                let s = Settlement {
                    payment_hash: hex::encode(hash),
                    settled_at: int("settle_date").unwrap_or(0) as i64,
                    index: settle_index,
                };
                if tx.send(s).await.is_err() {
                    return Ok(());
                }
                *index = (*index).max(settle_index);
            }
        }
        Ok(())
    }

    /// What renting needs: `invoices:read` (look-ups, the subscription) and `invoices:write`
    /// (new invoices). Write is probed by cancelling the all-zero payment hash, which no
    /// invoice can have: lnd checks the macaroon first, then answers "unable to locate
    /// invoice", so nothing changes on the node.
    pub async fn ready(&self) -> Result<(), LnError> {
        let lacks = |what: &str| {
            LnError::Permission(format!(
                "the macaroon lacks {what}; renting needs invoices:read and invoices:write \
                 (invoice.macaroon or admin.macaroon)"
            ))
        };
        match self
            .send::<serde_json::Value>(
                self.http
                    .get(format!("{}/v1/invoices?num_max_invoices=1", self.base)),
            )
            .await
        {
            Err(LnError::Permission(_)) => return Err(lacks("invoices:read")),
            other => other.map(|_| ())?,
        }
        let zero = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        match self
            .send::<serde_json::Value>(
                self.http
                    .post(format!("{}/v2/invoices/cancel", self.base))
                    .json(&serde_json::json!({ "payment_hash": zero })),
            )
            .await
        {
            Err(LnError::Permission(_)) => Err(lacks("invoices:write")),
            Ok(_) | Err(LnError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `getinfo`'s `identity_pubkey` (needs `info:read`).
    pub async fn node_id(&self) -> Option<String> {
        let info = self
            .send::<serde_json::Value>(self.http.get(format!("{}/v1/getinfo", self.base)))
            .await
            .ok()?;
        super::node_key(info.get("identity_pubkey")?.as_str()?)
    }

    /// `getinfo`'s `chains[0].network` (needs `info:read`); without that permission, the
    /// prefix of the node's newest invoice (`invoices:read`), if it has one.
    pub async fn network(&self) -> Result<Option<&'static str>, LnError> {
        match self
            .send::<serde_json::Value>(self.http.get(format!("{}/v1/getinfo", self.base)))
            .await
        {
            Ok(info) => {
                let name = info
                    .pointer("/chains/0/network")
                    .and_then(|n| n.as_str())
                    .ok_or_else(|| LnError::Protocol("getinfo without chains[].network".into()))?;
                normalize_network(name)
                    .map(Some)
                    .ok_or_else(|| LnError::Protocol(format!("unknown network {name:?}")))
            }
            Err(LnError::Permission(_)) => {
                let list: serde_json::Value = self
                    .send(self.http.get(format!(
                        "{}/v1/invoices?num_max_invoices=1&reversed=true",
                        self.base
                    )))
                    .await?;
                Ok(list
                    .pointer("/invoices/0/payment_request")
                    .and_then(|p| p.as_str())
                    .and_then(crate::network::invoice_network))
            }
            Err(e) => Err(e),
        }
    }
}
