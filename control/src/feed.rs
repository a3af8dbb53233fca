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
    /// The socket is served by a process of another user than root, the control's own or the
    /// configured `socket_uid`: nothing is sent to it (not the router's private key, nor any
    /// customer's key).
    #[error("router {0}: its socket is served by uid {1}, which is not trusted; nothing was sent")]
    Untrusted(String, u32),
}

/// A router as the control drives it.
pub struct RouterLink {
    pub name: String,
    pub socket: PathBuf,
    pub listen_port: u16,
    pub private_key: [u8; 32],
    pub public_key: [u8; 32],
    /// A user besides root and the control's own that may serve the socket.
    pub socket_uid: Option<u32>,
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

    /// Whoever listens at the socket path gets the router's private key: it must be root,
    /// the control's own user or the configured router user (`SO_PEERCRED` of the connected
    /// socket, which is the listener's, fixed when it called `listen`).
    fn check_listener(&self, stream: &UnixStream) -> Result<(), FeedError> {
        let cred = stream
            .peer_cred()
            .map_err(|e| FeedError::Unreachable(self.name.clone(), e.to_string()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let uid = cred.uid();
        if uid == 0 || uid == me || Some(uid) == self.socket_uid {
            return Ok(());
        }
        tracing::error!(router = %self.name, socket = %self.socket.display(), uid, pid = ?cred.pid(), "ALERT: the router's socket is served by an untrusted user; nothing sent (set [[routers]] socket_uid if that is the router)");
        Err(FeedError::Untrusted(self.name.clone(), uid))
    }

    async fn exchange(&self, request: &str) -> Result<Vec<String>, FeedError> {
        let mut out = Vec::new();
        self.exchange_lines(request, |line| out.push(line.to_string()))
            .await?;
        Ok(out)
    }

    /// Sends `request` and hands each line of the answer to `on_line` as it arrives (a
    /// router with a million peers answers `get=1` with a few hundred megabytes: never held
    /// whole).
    async fn exchange_lines(
        &self,
        request: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), FeedError> {
        let unreachable =
            |e: std::io::Error| FeedError::Unreachable(self.name.clone(), e.to_string());
        let talk = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(unreachable)?;
            self.check_listener(&stream)?;
            let (r, mut w) = stream.into_split();
            w.write_all(request.as_bytes()).await.map_err(unreachable)?;
            let mut reader = BufReader::with_capacity(1 << 16, r);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await.map_err(unreachable)? == 0 {
                    break;
                }
                let l = line.trim_end_matches('\n');
                if let Some(errno) = l.strip_prefix("errno=") {
                    let errno: i32 = errno
                        .parse()
                        .map_err(|_| FeedError::Protocol(self.name.clone(), l.to_string()))?;
                    if errno != 0 {
                        return Err(FeedError::Errno(self.name.clone(), errno));
                    }
                    return Ok(());
                }
                on_line(l);
            }
            Err(FeedError::Protocol(
                self.name.clone(),
                "closed before errno".into(),
            ))
        };
        // Long enough for a full `get=1` of a million peers; a dead router fails at connect.
        tokio::time::timeout(Duration::from_secs(120), talk)
            .await
            .map_err(|_| FeedError::Unreachable(self.name.clone(), "timed out".into()))?
    }

    /// `get=1`, parsed as it arrives: each peer's record goes to `on_peer` once complete,
    /// interface lines to `on_interface`.
    async fn get_streamed(
        &self,
        mut on_peer: impl FnMut(PeerRecord),
        mut on_interface: impl FnMut(&str, &str),
    ) -> Result<(), FeedError> {
        let mut current: Option<PeerRecord> = None;
        let mut bad: Option<String> = None;
        self.exchange_lines("get=1\n\n", |line| {
            let Some((k, v)) = line.split_once('=') else {
                bad.get_or_insert_with(|| line.to_string());
                return;
            };
            match (k, current.as_mut()) {
                ("public_key", _) => {
                    if let Some(done) = current.replace(PeerRecord {
                        key: v.to_string(),
                        ..PeerRecord::default()
                    }) {
                        on_peer(done);
                    }
                }
                ("endpoint", Some(p)) => p.endpoint = Some(v.to_string()),
                ("allowed_ip", Some(p)) => p.allowed_ips.push(v.to_string()),
                (_, Some(_)) => {}
                (k, None) => on_interface(k, v),
            }
        })
        .await?;
        if let Some(line) = bad {
            return Err(FeedError::Protocol(self.name.clone(), line));
        }
        if let Some(done) = current {
            on_peer(done);
        }
        Ok(())
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

    /// Removes peers (their paid time ran out), in sets of at most [`CHUNK`] peers.
    pub async fn remove(&self, keys: &[[u8; 32]]) -> Result<(), FeedError> {
        for chunk in keys.chunks(CHUNK) {
            let mut body = String::with_capacity(chunk.len() * 90);
            for k in chunk {
                body.push_str(&removal(&hex::encode(k)));
            }
            self.set(&body).await?;
        }
        Ok(())
    }

    /// The full compare: makes the router hold exactly `desired`, with our key and port, and
    /// learns endpoints. The router's peers are read as a stream and compared one by one;
    /// only the differences are sent back, in sets of at most [`CHUNK`] peers. With
    /// `limits_changed` (the terms' per-peer limits differ from those last sent to this
    /// router, which `get` does not show), every desired peer is sent again with `extra`.
    pub async fn reconcile(
        &self,
        mut desired: Desired,
        known: &mut Endpoints,
        extra: &str,
        limits_changed: bool,
    ) -> Result<Changes, FeedError> {
        let mut changes = Changes::default();
        let mut remove = Vec::new();
        let (mut private_key, mut listen_port) = (None, 0u16);
        self.get_streamed(
            |peer| {
                let Some(k) = hex::decode(&peer.key)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                else {
                    remove.push(peer.key);
                    return;
                };
                // A peer the router holds with no endpoint while one was learned for it (it was
                // removed and admitted again without one: an operator's resume, a lapse) could
                // not be reached until its customer starts a handshake: sent again, with it.
                let lost_endpoint = peer.endpoint.is_none() && known.contains_key(&k);
                if let Some(ep) = peer.endpoint {
                    known.insert(k, ep);
                }
                match desired.get(&k) {
                    // Already right: nothing to send for it.
                    Some(nets)
                        if !limits_changed
                            && !lost_endpoint
                            && as_nets(&peer.allowed_ips).as_ref() == Some(nets) =>
                    {
                        desired.remove(&k);
                    }
                    // Wanted with other addresses: left in `desired`, admitted anew below.
                    Some(_) => {}
                    None => remove.push(peer.key),
                }
            },
            |k, v| match k {
                "private_key" => private_key = Some(v.to_string()),
                "listen_port" => listen_port = v.parse().unwrap_or(0),
                _ => {}
            },
        )
        .await?;
        let key_hex = hex::encode(self.private_key);
        let mut body = String::new();
        if private_key.as_deref() != Some(key_hex.as_str()) || listen_port != self.listen_port {
            body.push_str(&format!(
                "private_key={key_hex}\nlisten_port={}\n",
                self.listen_port
            ));
            changes.interface = true;
        }
        changes.removed = remove.len();
        changes.admitted = desired.len();
        let mut in_body = 0;
        let removals = remove.iter().map(|k| removal(k));
        let admissions = desired
            .iter()
            .map(|(key, nets)| admission(key, nets, known, extra));
        for item in removals.chain(admissions) {
            body.push_str(&item);
            in_body += 1;
            if in_body == CHUNK {
                self.set(&body).await?;
                body.clear();
                in_body = 0;
            }
        }
        if !body.is_empty() {
            self.set(&body).await?;
        }
        Ok(changes)
    }
}

/// Peers per `set` request: big enough that a million admissions take few round trips, small
/// enough that no request is a giant allocation on either side.
pub const CHUNK: usize = 10_000;

/// One peer of a `get=1` answer.
#[derive(Debug, Default)]
struct PeerRecord {
    key: String,
    endpoint: Option<String>,
    allowed_ips: Vec<String>,
}

fn removal(key_hex: &str) -> String {
    format!("public_key={key_hex}\nremove=true\n")
}

/// A socket file's identity: inode and change time (tmpfs reuses inode numbers).
pub type SocketId = (u64, i64, i64);

pub fn socket_id(path: &std::path::Path) -> Option<SocketId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}
