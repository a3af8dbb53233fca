//! A UAPI endpoint for tests that keeps what a router keeps: the interface's private key and
//! port, each peer's allowed IPs and endpoint, answered to `get=1`; it reports every removal
//! on a channel and keeps every `set` it was sent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the fake router holds; see the module doc.
pub struct FakeRouter {
    /// Public key (hex) -> allowed IPs.
    pub peers: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Public key (hex) -> endpoint, for the peers that have one.
    pub endpoints: Arc<Mutex<HashMap<String, String>>>,
    pub removed: mpsc::UnboundedReceiver<String>,
    pub sets: Arc<Mutex<Vec<String>>>,
    /// The interface's `private_key` and `listen_port` lines, once set.
    interface: Arc<Mutex<Vec<String>>>,
}

impl FakeRouter {
    /// Holds a peer already, as a router restarted from its own configuration would.
    pub fn holding(&self, key_hex: &str, allowed: &[&str], endpoint: Option<&str>) {
        let allowed = allowed.iter().map(|a| a.to_string()).collect();
        self.peers.lock().unwrap().insert(key_hex.into(), allowed);
        if let Some(e) = endpoint {
            self.endpoints
                .lock()
                .unwrap()
                .insert(key_hex.into(), e.into());
        }
    }

    /// Has its interface configured already (`private_key` in hex).
    pub fn configured(&self, private_key_hex: &str, listen_port: u16) {
        *self.interface.lock().unwrap() = vec![
            format!("private_key={private_key_hex}"),
            format!("listen_port={listen_port}"),
        ];
    }
}

/// A fake router listening at `path`.
pub fn fake_router(path: &Path) -> FakeRouter {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let (tx, removed) = mpsc::unbounded_channel();
    let router = FakeRouter {
        peers: Arc::default(),
        endpoints: Arc::default(),
        removed,
        sets: Arc::default(),
        interface: Arc::default(),
    };
    let (peers, endpoints, sets, interface) = (
        router.peers.clone(),
        router.endpoints.clone(),
        router.sets.clone(),
        router.interface.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (peers, endpoints, sets, interface, tx) = (
                peers.clone(),
                endpoints.clone(),
                sets.clone(),
                interface.clone(),
                tx.clone(),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.ends_with(b"\n\n") {
                    let mut chunk = [0u8; 65536];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8(buf).unwrap();
                let mut out = String::new();
                if text.starts_with("get=1") {
                    for line in interface.lock().unwrap().iter() {
                        out.push_str(&format!("{line}\n"));
                    }
                    let endpoints = endpoints.lock().unwrap();
                    for (k, ips) in peers.lock().unwrap().iter() {
                        out.push_str(&format!("public_key={k}\n"));
                        if let Some(e) = endpoints.get(k) {
                            out.push_str(&format!("endpoint={e}\n"));
                        }
                        for ip in ips {
                            out.push_str(&format!("allowed_ip={ip}\n"));
                        }
                    }
                } else {
                    sets.lock().unwrap().push(text.clone());
                    let (mut peers, mut endpoints) =
                        (peers.lock().unwrap(), endpoints.lock().unwrap());
                    let mut iface = Vec::new();
                    let mut current: Option<String> = None;
                    for line in text.lines() {
                        match (line.split_once('='), &current) {
                            (Some(("private_key" | "listen_port", _)), None) => {
                                iface.push(line.to_string())
                            }
                            (Some(("public_key", k)), _) => {
                                current = Some(k.to_string());
                                peers.entry(k.to_string()).or_default();
                            }
                            (Some(("remove", "true")), Some(k)) => {
                                peers.remove(k);
                                endpoints.remove(k);
                                let _ = tx.send(k.clone());
                                current = None;
                            }
                            (Some(("replace_allowed_ips", "true")), Some(k)) => {
                                if let Some(p) = peers.get_mut(k) {
                                    p.clear();
                                }
                            }
                            (Some(("allowed_ip", ip)), Some(k)) => {
                                if let Some(p) = peers.get_mut(k) {
                                    p.push(ip.to_string());
                                }
                            }
                            (Some(("endpoint", e)), Some(k)) => {
                                endpoints.insert(k.clone(), e.to_string());
                            }
                            _ => {}
                        }
                    }
                    if !iface.is_empty() {
                        *interface.lock().unwrap() = iface;
                    }
                }
                out.push_str("errno=0\n\n");
                let _ = s.write_all(out.as_bytes()).await;
            });
        }
    });
    router
}
