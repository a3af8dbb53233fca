//! The feed to the routers: a client of the WireGuard UAPI (wireguard.com/xplatform) on each
//! router's Unix socket. The control is the source of truth; `reconcile` makes a router match
//! it (interface key and port, one peer per active rental, nothing else) from whatever state the
//! router is in — fresh after a restart, or holding peers that expired while we were away.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("router {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("router {0} answered errno={1}")]
    Errno(String, i32),
    #[error("router {0} spoke something else than UAPI: {1}")]
    Protocol(String, String),
}

/// A router as the control drives it.
pub struct RouterLink {
    pub name: String,
    pub socket: PathBuf,
    pub listen_port: u16,
    pub private_key: [u8; 32],
    pub public_key: [u8; 32],
}

/// What a router reports on `get=1`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouterState {
    pub private_key: Option<String>,
    pub listen_port: u16,
    /// Hex public key -> allowed IPs.
    pub peers: HashMap<String, Vec<String>>,
    /// Hex public key -> the endpoint the router last saw.
    pub endpoints: HashMap<String, String>,
}

/// Where each customer was last seen (public key -> `host:port`). Handing it back with an
/// admission lets the router reach a returning customer at once for inbound traffic, instead
/// of waiting until the customer's side sends data and handshakes anew.
pub type Endpoints = HashMap<[u8; 32], String>;

/// Peers a router should have: public key -> the networks routed to it (its IPv4 prefix and
/// IPv6 prefix), sorted.
pub type Desired = BTreeMap<[u8; 32], Vec<IpNet>>;

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub interface: bool,
    pub admitted: usize,
    pub removed: usize,
}

/// A peer's `set` lines. `extra` holds the per-peer limit lines of the terms (empty when none
/// are configured).
fn admission(key: &[u8; 32], nets: &[IpNet], known: &Endpoints, extra: &str) -> String {
    let endpoint = known
        .get(key)
        .map(|e| format!("endpoint={e}\n"))
        .unwrap_or_default();
    let allowed: String = nets.iter().map(|n| format!("allowed_ip={n}\n")).collect();
    format!(
        "public_key={}\n{endpoint}replace_allowed_ips=true\n{allowed}{extra}",
        hex::encode(key)
    )
}

/// A router's allowed IPs of a peer as networks, sorted, for comparing with [`Desired`].
fn as_nets(allowed: &[String]) -> Option<Vec<IpNet>> {
    let mut nets = allowed
        .iter()
        .map(|a| a.parse::<IpNet>().ok())
        .collect::<Option<Vec<_>>>()?;
    nets.sort();
    Some(nets)
}

pub fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

impl RouterLink {
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.public_key)
    }

    async fn exchange(&self, request: &str) -> Result<Vec<String>, FeedError> {
        let unreachable =
            |e: std::io::Error| FeedError::Unreachable(self.name.clone(), e.to_string());
        let talk = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(unreachable)?;
            let (r, mut w) = stream.into_split();
            w.write_all(request.as_bytes()).await.map_err(unreachable)?;
            let mut lines = BufReader::new(r).lines();
            let mut out = Vec::new();
            while let Some(line) = lines.next_line().await.map_err(unreachable)? {
                if let Some(errno) = line.strip_prefix("errno=") {
                    let errno: i32 = errno
                        .parse()
                        .map_err(|_| FeedError::Protocol(self.name.clone(), line.clone()))?;
                    if errno != 0 {
                        return Err(FeedError::Errno(self.name.clone(), errno));
                    }
                    return Ok(out);
                }
                out.push(line);
            }
            Err(FeedError::Protocol(
                self.name.clone(),
                "closed before errno".into(),
            ))
        };
        tokio::time::timeout(Duration::from_secs(10), talk)
            .await
            .map_err(|_| FeedError::Unreachable(self.name.clone(), "timed out".into()))?
    }

    pub async fn get(&self) -> Result<RouterState, FeedError> {
        let lines = self.exchange("get=1\n\n").await?;
        let mut state = RouterState::default();
        let mut current: Option<String> = None;
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                return Err(FeedError::Protocol(self.name.clone(), line));
            };
            match k {
                "private_key" => state.private_key = Some(v.to_string()),
                "listen_port" => state.listen_port = v.parse().unwrap_or(0),
                "public_key" => {
                    state.peers.insert(v.to_string(), Vec::new());
                    current = Some(v.to_string());
                }
                "endpoint" => {
                    if let Some(c) = &current {
                        state.endpoints.insert(c.clone(), v.to_string());
                    }
                }
                "allowed_ip" => {
                    if let Some(peer) = current.as_ref().and_then(|c| state.peers.get_mut(c)) {
                        peer.push(v.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }

    pub async fn set(&self, body: &str) -> Result<(), FeedError> {
        self.exchange(&format!("set=1\n{body}\n")).await.map(|_| ())
    }

    /// Admits one peer at once (a payment just settled).
    pub async fn admit(
        &self,
        key: &[u8; 32],
        nets: &[IpNet],
        known: &Endpoints,
        extra: &str,
    ) -> Result<(), FeedError> {
        self.set(&admission(key, nets, known, extra)).await
    }

    /// Makes the router hold exactly `desired`, with our key and port; learns endpoints.
    pub async fn reconcile(
        &self,
        desired: &Desired,
        known: &mut Endpoints,
        extra: &str,
    ) -> Result<Changes, FeedError> {
        let state = self.get().await?;
        for (peer, ep) in &state.endpoints {
            if let Some(k) = hex::decode(peer)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
            {
                known.insert(k, ep.clone());
            }
        }
        let mut body = String::new();
        let mut changes = Changes::default();
        let key_hex = hex::encode(self.private_key);
        if state.private_key.as_deref() != Some(key_hex.as_str())
            || state.listen_port != self.listen_port
        {
            body.push_str(&format!(
                "private_key={key_hex}\nlisten_port={}\n",
                self.listen_port
            ));
            changes.interface = true;
        }
        for peer in state.peers.keys() {
            let wanted = hex::decode(peer)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .is_some_and(|k| desired.contains_key(&k));
            if !wanted {
                body.push_str(&format!("public_key={peer}\nremove=true\n"));
                changes.removed += 1;
            }
        }
        for (key, nets) in desired {
            let has = state.peers.get(&hex::encode(key)).and_then(|a| as_nets(a));
            if has.as_ref() != Some(nets) {
                body.push_str(&admission(key, nets, known, extra));
                changes.admitted += 1;
            }
        }
        if !body.is_empty() {
            self.set(&body).await?;
        }
        Ok(changes)
    }
}
