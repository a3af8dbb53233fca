//! Configuration: applying a parsed UAPI `set` whole or not at all (binding first, the one step
//! that can fail), publishing a request's key and route changes to readers at once, and reading
//! the configuration back out for `get` and metrics.

use super::state::{Config, Device, Identity, PeerConf};
use crate::key::Key;
use crate::limits::{LimitConf, Limits};
use crate::peer::{Peer, Session};
use crate::request::{AllowedIpChange, PeerChange, SetRequest, UapiError};
use crate::routes::PeerId;
use ipnet::IpNet;
use rustc_hash::FxHashSet;
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// boringtun packs the peer id into the top 24 bits of its session indexes.
pub const MAX_PEERS: usize = (1 << 24) - 1;

/// The socket side of configuration: binding a listen port can fail, so it happens before any
/// other change of a `set` is applied. Calls are serialized by the device's config lock.
pub trait NetControl {
    /// Binds the sockets to `port` (0 = any) with `fwmark`; returns the port actually bound.
    fn rebind(&self, port: u16, fwmark: u32) -> Result<u16, UapiError>;
}

/// A read-out of the configuration and counters, for `get=1` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceView {
    pub private_key: Option<Key>,
    pub public_key: Option<Key>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: (u64, u32),
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

impl Device {
    pub fn listen_port(&self) -> u16 {
        self.config.lock().listen_port
    }

    /// Records the port the I/O layer bound at start.
    pub fn set_bound_port(&self, port: u16) {
        self.config.lock().listen_port = port;
    }

    /// Applies a parsed `set=1` request at `now`: whole, or (on error) not at all. Readers see
    /// the request's changes of keys and routes all at once.
    pub fn apply(
        &self,
        now: Instant,
        req: &SetRequest,
        net: &dyn NetControl,
    ) -> Result<(), UapiError> {
        let mut cfg = self.config.lock();

        let kept = if req.replace_peers {
            0
        } else {
            self.peer_count.load(Relaxed)
        };
        let mut new_keys = FxHashSet::default();
        for p in &req.peers {
            if !p.remove && !p.update_only && self.keys.get(&p.public_key).is_none() {
                new_keys.insert(p.public_key);
                if kept + new_keys.len() > MAX_PEERS {
                    return Err(UapiError::TooManyPeers(MAX_PEERS));
                }
            }
        }

        // Binding is the one step that can fail, so it goes first.
        let port_changed = req.listen_port.is_some_and(|p| p != cfg.listen_port);
        let fwmark = req.fwmark.unwrap_or(cfg.fwmark);
        if port_changed || fwmark != cfg.fwmark {
            let port = req.listen_port.unwrap_or(cfg.listen_port);
            cfg.listen_port = net.rebind(port, fwmark)?;
            cfg.fwmark = fwmark;
        }

        // From here on nothing fails.
        let mut w = Writer {
            dev: self,
            now,
            cfg: &mut cfg,
            keys: self.keys.batch(),
            routes: self.routes.batch(),
            removed: Vec::new(),
        };
        if let Some(key) = req.private_key {
            w.set_identity(key);
        }
        if req.replace_peers {
            let ids: Vec<PeerId> = w.cfg.peers.iter().flatten().map(|c| c.peer.id).collect();
            for id in ids {
                w.remove_peer(id);
            }
        }
        for change in &req.peers {
            w.apply_peer(change);
        }
        // As in WireGuard, a peer cannot have the interface's own public key.
        let own = self.identity.load().as_ref().map(|i| i.public_key);
        if let Some(id) = own.and_then(|k| w.keys.get(&k)) {
            w.remove_peer(id);
        }
        w.publish();
        Ok(())
    }

    pub fn view(&self) -> DeviceView {
        let cfg = self.config.lock();
        let identity = self.identity.load();
        DeviceView {
            private_key: identity.as_ref().map(|i| i.private_key),
            public_key: identity.as_ref().map(|i| i.public_key),
            listen_port: cfg.listen_port,
            fwmark: cfg.fwmark,
            peers: cfg
                .peers
                .iter()
                .flatten()
                .map(|c| {
                    let s = c.peer.session.lock();
                    PeerView {
                        public_key: c.peer.public_key,
                        preshared_key: s.preshared_key.as_deref().copied(),
                        endpoint: s.endpoint,
                        last_handshake: c.peer.last_handshake(),
                        tx_bytes: c.peer.tx_bytes.get(),
                        rx_bytes: c.peer.rx_bytes.get(),
                        persistent_keepalive: s.keepalive,
                        allowed_ips: c.allowed_ips.clone(),
                    }
                })
                .collect(),
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peer_count.load(Relaxed)
    }
}

/// One `set` being applied: the config, and the batches readers will see at [`Writer::publish`].
struct Writer<'a> {
    dev: &'a Device,
    /// When the request is applied: the birth time of session state it makes.
    now: Instant,
    cfg: &'a mut Config,
    keys: crate::sharded::Batch<'a, Key, PeerId>,
    routes: crate::routes::RouteBatch<'a>,
    /// Ids freed by this request: reused only after it is published, so no reader ever sees a
    /// route of a removed peer lead to a new one.
    removed: Vec<PeerId>,
}

impl Writer<'_> {
    fn set_identity(&mut self, key: Option<Key>) {
        let current = self.dev.identity.load().as_ref().map(|i| i.private_key);
        if current == key {
            return;
        }
        let limit = self.dev.handshake_limit();
        let identity = key.map(|k| Arc::new(Identity::new(k, limit)));
        self.dev.identity.store(identity.clone());
        self.dev.has_identity.store(identity.is_some(), Relaxed);
        // Sessions and the cached static-static secrets belonged to the old key.
        for pc in self.cfg.peers.iter().flatten() {
            let mut s = pc.peer.session.lock();
            self.dev.deactivate(&mut s);
            s.static_shared = None;
            if let Some(i) = &identity {
                keep_alive(self.dev, i, &pc.peer, &mut s, self.now);
            }
        }
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(pc) = self.cfg.peers.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for net in &pc.allowed_ips {
            if self.routes.owner(*net) == Some(id) {
                self.routes.remove(*net);
            }
        }
        self.keys.remove(&pc.peer.public_key);
        self.dev.deactivate(&mut pc.peer.session.lock());
        self.dev.peer_count.fetch_sub(1, Relaxed);
        self.removed.push(id);
    }

    fn add_peer(&mut self, key: Key) -> PeerId {
        let cfg = &mut *self.cfg;
        let id = cfg
            .free
            .pop()
            .map_or(cfg.peers.len() as PeerId, |Reverse(id)| id);
        let peer = Arc::new(Peer::new(id, key));
        // Unreachable until the keys and routes that lead here are published.
        self.dev.peers.set(id, Some(peer.clone()));
        let pc = PeerConf {
            peer,
            allowed_ips: Vec::new(),
        };
        if id as usize == cfg.peers.len() {
            cfg.peers.push(Some(pc));
        } else {
            cfg.peers[id as usize] = Some(pc);
        }
        self.keys.insert(key, id);
        self.dev.peer_count.fetch_add(1, Relaxed);
        id
    }

    fn apply_peer(&mut self, change: &PeerChange) {
        let existing = self.keys.get(&change.public_key);
        if change.remove {
            if let Some(id) = existing {
                self.remove_peer(id);
            }
            return;
        }
        let id = match existing {
            Some(id) => id,
            None if change.update_only => return,
            None => self.add_peer(change.public_key),
        };
        let identity = self.dev.identity.load_full();
        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
        {
            let mut s = pc.peer.session.lock();
            let mut reset = false;
            if let Some(psk) = change.preshared_key {
                reset |= s.preshared_key.as_deref().copied() != psk;
                s.preshared_key = psk.map(Box::new);
            }
            if let Some(ka) = change.persistent_keepalive {
                reset |= s.keepalive != ka;
                s.keepalive = ka;
            }
            if let Some(ep) = change.endpoint {
                s.endpoint = Some(ep);
            }
            let old = s.limits.as_ref().map_or(LimitConf::default(), |l| l.conf);
            let conf = LimitConf {
                bits_per_second: change.rate_limit_bps.unwrap_or(old.bits_per_second),
                packets_per_second: change.rate_limit_pps.unwrap_or(old.packets_per_second),
                block_smtp: change.block_smtp.unwrap_or(old.block_smtp),
            };
            if conf != old {
                s.limits = (!conf.is_none()).then(|| Box::new(Limits::new(conf, self.now)));
            }
            // boringtun fixes the preshared key and keepalive at construction, so a change
            // means fresh state (and a new handshake), as a key change does in WireGuard.
            if reset {
                self.dev.deactivate(&mut s);
            }
            if let Some(i) = &identity {
                keep_alive(self.dev, i, &pc.peer, &mut s, self.now);
            }
        }
        if change.replace_allowed_ips {
            for net in std::mem::take(&mut pc.allowed_ips) {
                self.routes.remove(net);
            }
        }
        for c in &change.allowed_ips {
            match *c {
                AllowedIpChange::Add(net) => match self.routes.insert(net, id) {
                    Some(prev) if prev == id => {}
                    prev => {
                        if let Some(other) = prev.and_then(|p| self.cfg.peers[p as usize].as_mut())
                        {
                            other.allowed_ips.retain(|n| *n != net);
                        }
                        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
                        // Most peers have one or two prefixes: no spare capacity.
                        pc.allowed_ips.reserve_exact(1);
                        pc.allowed_ips.push(net);
                    }
                },
                AllowedIpChange::Remove(net) => {
                    if self.routes.owner(net) == Some(id) {
                        self.routes.remove(net);
                        let pc = self.cfg.peers[id as usize].as_mut().expect("live peer");
                        pc.allowed_ips.retain(|n| *n != net);
                    }
                }
            }
        }
    }

    fn publish(self) {
        self.keys.publish();
        self.routes.publish();
        for id in self.removed {
            // Reused ids were only ever freed here, so a slot still empty is really free.
            if self.cfg.peers.get(id as usize).is_some_and(Option::is_none) {
                self.dev.peers.set(id, None);
                self.cfg.free.push(Reverse(id));
            }
        }
    }
}

/// A peer with a persistent keepalive and an endpoint keeps session state from the start, as in
/// WireGuard, so its keepalives (and the handshake they need) go out without waiting for traffic.
fn keep_alive(dev: &Device, identity: &Identity, peer: &Peer, s: &mut Session, now: Instant) {
    if s.keepalive > 0 && s.endpoint.is_some() {
        dev.activate(identity, peer, s, now);
    }
}
