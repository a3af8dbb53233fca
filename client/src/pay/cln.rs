//! Paying with Core Lightning: JSON-RPC 2.0 `pay` on the node's Unix socket; `listpays` for
//! where an earlier payment stands.

use super::{NodeView, PayError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClnConfig {
    /// The node's `lightning-rpc` socket.
    pub socket: PathBuf,
}

/// How a call ended: whether the request left this machine matters for a payment.
enum Reply {
    Result(Value),
    Error { code: i64, message: String },
}

/// One JSON-RPC exchange. Errors before the request was written are `Unreachable` (nothing
/// was sent); after it, `InFlight` (the node may be acting on it).
async fn call(
    socket: &Path,
    method: &str,
    params: Value,
    limit: Duration,
) -> Result<Reply, PayError> {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::UnixStream::connect(socket),
    )
    .await
    .map_err(|_| PayError::Unreachable(format!("{}: connect timed out", socket.display())))?
    .map_err(|e| PayError::Unreachable(format!("{}: {e}", socket.display())))?;
    s.write_all(&serde_json::to_vec(&request).expect("json"))
        .await
        .map_err(|e| PayError::Unreachable(e.to_string()))?;
    let exchange = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while !buf.ends_with(b"\n\n") {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| PayError::InFlight(e.to_string()))?;
            if n == 0 || buf.len() > 1 << 20 {
                return Err(PayError::InFlight("reply cut short".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice::<Value>(&buf)
            .map_err(|e| PayError::InFlight(format!("bad reply: {e}")))
    };
    let reply = tokio::time::timeout(limit, exchange).await.map_err(|_| {
        PayError::InFlight(format!(
            "no answer to {method} within {} s",
            limit.as_secs()
        ))
    })??;
    if let Some(e) = reply.get("error") {
        return Ok(Reply::Error {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
        });
    }
    Ok(Reply::Result(reply["result"].clone()))
}

/// CLN's PAY_IN_PROGRESS: an earlier `pay` of this invoice has not finished.
const PAY_IN_PROGRESS: i64 = 200;

pub async fn pay(socket: &Path, bolt11: &str, max_fee_sat: u64) -> Result<String, PayError> {
    // `pay` can take a while: routes are tried until it succeeds or gives up.
    let params = json!({"bolt11": bolt11, "maxfee": max_fee_sat * 1000});
    let r = match call(socket, "pay", params, Duration::from_secs(120)).await? {
        Reply::Error { code, message } if code == PAY_IN_PROGRESS => {
            return Err(PayError::InFlight(message))
        }
        Reply::Error { code, message } if code < 0 => {
            return Err(PayError::Config(format!(
                "the node refused the request: {message}"
            )))
        }
        Reply::Error { message, .. } => return Err(PayError::Failed(message)),
        Reply::Result(r) => r,
    };
    match r["status"].as_str() {
        Some("complete") => r["payment_preimage"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| PayError::InFlight("complete without preimage".into())),
        Some("pending") => Err(PayError::InFlight("pay answered pending".into())),
        other => Err(PayError::Failed(format!("status {other:?}"))),
    }
}

/// `listpays` of a payment hash: complete if any attempt completed, in flight if any is
/// pending, failed if all failed, not found if there is none.
pub async fn lookup(socket: &Path, payment_hash: &str) -> Result<NodeView, PayError> {
    let r = match call(
        socket,
        "listpays",
        json!({"payment_hash": payment_hash}),
        Duration::from_secs(15),
    )
    .await
    {
        Ok(Reply::Result(r)) => r,
        Ok(Reply::Error { message, .. }) => return Err(PayError::Unreachable(message)),
        Err(PayError::InFlight(m)) => return Err(PayError::Unreachable(m)),
        Err(e) => return Err(e),
    };
    let pays = r["pays"].as_array().cloned().unwrap_or_default();
    if let Some(done) = pays.iter().find(|p| p["status"] == "complete") {
        return Ok(NodeView::Succeeded {
            preimage: done["preimage"].as_str().unwrap_or_default().to_string(),
        });
    }
    if pays.iter().any(|p| p["status"] == "pending") {
        return Ok(NodeView::InFlight);
    }
    Ok(match pays.first() {
        Some(_) => NodeView::Failed("every attempt failed".into()),
        None => NodeView::NotFound,
    })
}
