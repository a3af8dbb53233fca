//! Paying with Core Lightning: JSON-RPC 2.0 `pay` on the node's Unix socket.

use super::PayError;
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

pub async fn pay(socket: &Path, bolt11: &str, max_fee_sat: u64) -> Result<String, PayError> {
    let request = json!({
        "jsonrpc": "2.0", "id": 1, "method": "pay",
        "params": {"bolt11": bolt11, "maxfee": max_fee_sat * 1000},
    });
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| PayError::Unreachable(format!("{}: {e}", socket.display())))?;
        s.write_all(&serde_json::to_vec(&request).expect("json"))
            .await
            .map_err(|e| PayError::Unreachable(e.to_string()))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while !buf.ends_with(b"\n\n") {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| PayError::Unreachable(e.to_string()))?;
            if n == 0 || buf.len() > 1 << 20 {
                return Err(PayError::Unreachable("reply cut short".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice::<Value>(&buf)
            .map_err(|e| PayError::Failed(format!("bad reply: {e}")))
    };
    // `pay` can take a while: routes are tried until it succeeds or gives up.
    let reply = tokio::time::timeout(Duration::from_secs(120), exchange)
        .await
        .map_err(|_| PayError::Unreachable("pay timed out".into()))??;
    if let Some(e) = reply.get("error") {
        return Err(PayError::Failed(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .into(),
        ));
    }
    let r = &reply["result"];
    if r["status"] != "complete" {
        return Err(PayError::Failed(format!("status {}", r["status"])));
    }
    r["payment_preimage"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| PayError::Failed("no preimage in reply".into()))
}
