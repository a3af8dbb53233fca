//! Core Lightning over JSON-RPC on its Unix socket: `invoice`, `listinvoices`, `getinfo`.
//! Every request carries `"jsonrpc":"2.0"`, an id and `params`; replies end with a blank line;
//! amounts are msat integers.

use super::{LnError, NewInvoice, Settlement, Status};
use crate::network::normalize_network;
use rand::RngCore;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const MAX_REPLY: usize = 16 << 20;

pub struct Cln {
    socket: PathBuf,
    next_id: AtomicU64,
}

impl Cln {
    pub fn new(socket: &Path) -> Self {
        Cln {
            socket: socket.to_path_buf(),
            next_id: AtomicU64::new(1),
        }
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value, LnError> {
        self.call_within(method, params, Duration::from_secs(15))
            .await
    }

    /// Follows `waitanyinvoice` from the invoice paid after `index` on, forwarding each and
    /// moving `index` along, so a reconnect (and, stored, a restart) resumes where it was
    /// instead of replaying the node's whole history.
    pub async fn wait_any(
        &self,
        index: &mut u64,
        tx: &tokio::sync::mpsc::Sender<Settlement>,
    ) -> Result<(), LnError> {
        loop {
            let last = *index;
            let r = match self
                .call_within(
                    "waitanyinvoice",
                    json!({"lastpay_index": last, "timeout": 30}),
                    Duration::from_secs(45),
                )
                .await
            {
                Ok(r) => r,
                // Code 904: the timeout passed with nothing paid; ask again.
                Err(LnError::Refused(m)) if m.contains("Timed out") || m.contains("timeout") => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let next = r
                .get("pay_index")
                .and_then(Value::as_u64)
                .unwrap_or(last + 1);
            if let Some(hash) = r.get("payment_hash").and_then(Value::as_str) {
                let s = Settlement {
                    payment_hash: hash.to_lowercase(),
                    settled_at: r.get("paid_at").and_then(Value::as_i64).unwrap_or(0),
                    index: next,
                };
                if tx.send(s).await.is_err() {
                    return Ok(());
                }
            }
            *index = next;
        }
    }

    async fn call_within(
        &self,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, LnError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let exchange = async {
            let mut s = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| LnError::Unreachable(format!("{}: {e}", self.socket.display())))?;
            let mut bytes = serde_json::to_vec(&request).expect("json");
            bytes.extend_from_slice(b"\n");
            s.write_all(&bytes)
                .await
                .map_err(|e| LnError::Unreachable(e.to_string()))?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = s
                    .read(&mut chunk)
                    .await
                    .map_err(|e| LnError::Unreachable(e.to_string()))?;
                if n == 0 {
                    return Err(LnError::Protocol("connection closed mid-reply".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REPLY {
                    return Err(LnError::Protocol("reply too large".into()));
                }
                if buf.ends_with(b"\n\n") {
                    break;
                }
            }
            serde_json::from_slice::<Value>(&buf).map_err(|e| LnError::Protocol(e.to_string()))
        };
        let reply = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| LnError::Unreachable("timed out".into()))??;
        if reply.get("id") != Some(&json!(id)) {
            return Err(LnError::Protocol("reply id does not match".into()));
        }
        if let Some(err) = reply.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error");
            return Err(LnError::Refused(msg.to_string()));
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| LnError::Protocol("reply without result".into()))
    }

    pub async fn create_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry: Duration,
    ) -> Result<NewInvoice, LnError> {
        let mut tag = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut tag);
        let r = self
            .call(
                "invoice",
                json!({
                    "amount_msat": amount_msat,
                    "label": format!("staticwire-{}", hex::encode(tag)),
                    "description": description,
                    "expiry": expiry.as_secs(),
                }),
            )
            .await?;
        let field = |k: &str| {
            r.get(k)
                .cloned()
                .ok_or_else(|| LnError::Protocol(format!("invoice reply lacks {k}")))
        };
        let payment_hash = field("payment_hash")?
            .as_str()
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| LnError::Protocol("bad payment_hash".into()))?
            .to_lowercase();
        Ok(NewInvoice {
            bolt11: field("bolt11")?
                .as_str()
                .ok_or_else(|| LnError::Protocol("bad bolt11".into()))?
                .to_string(),
            payment_hash,
            expires_at: field("expires_at")?
                .as_i64()
                .ok_or_else(|| LnError::Protocol("bad expires_at".into()))?,
        })
    }

    pub async fn status(&self, payment_hash: &str) -> Result<Status, LnError> {
        let r = self
            .call("listinvoices", json!({"payment_hash": payment_hash}))
            .await?;
        let list = r
            .get("invoices")
            .and_then(Value::as_array)
            .ok_or_else(|| LnError::Protocol("listinvoices without invoices".into()))?;
        // An empty list: the node does not know this invoice.
        let Some(inv) = list.first() else {
            return Ok(Status::Unknown);
        };
        Ok(match inv.get("status").and_then(Value::as_str) {
            Some("paid") => Status::Settled {
                at: inv
                    .get("paid_at")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
            },
            Some("expired") => Status::Gone,
            Some("unpaid") => Status::Open,
            other => return Err(LnError::Protocol(format!("unknown status {other:?}"))),
        })
    }

    pub async fn ping(&self) -> Result<(), LnError> {
        self.call("getinfo", json!({})).await.map(|_| ())
    }

    /// `getinfo`'s `id`.
    pub async fn node_id(&self) -> Option<String> {
        let info = self.call("getinfo", json!({})).await.ok()?;
        super::node_key(info.get("id")?.as_str()?)
    }

    /// `getinfo`'s `network`.
    pub async fn network(&self) -> Result<&'static str, LnError> {
        let info = self.call("getinfo", json!({})).await?;
        let name = info
            .get("network")
            .and_then(Value::as_str)
            .ok_or_else(|| LnError::Protocol("getinfo without network".into()))?;
        normalize_network(name)
            .ok_or_else(|| LnError::Protocol(format!("unknown network {name:?}")))
    }
}
