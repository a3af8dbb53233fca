//! What a UAPI `set=1` request asks of the device, as typed changes, and why a request is
//! refused. Below both the device (which applies a [`SetRequest`]) and the UAPI text protocol
//! (which parses one), so neither imports the other for them.

use crate::key::Key;
use ipnet::IpNet;
use std::net::SocketAddr;

pub const EINVAL: i32 = libc::EINVAL;
pub const EADDRINUSE: i32 = libc::EADDRINUSE;
pub const ENOSPC: i32 = libc::ENOSPC;
pub const EIO: i32 = libc::EIO;

/// Why a request was refused; `errno` is what goes back on the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    #[error("line is not key=value: {0:?}")]
    Malformed(String),
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("invalid value for {key}: {value:?}")]
    InvalidValue { key: &'static str, value: String },
    #[error("{0} given before any public_key")]
    PeerKeyOutsidePeer(&'static str),
    #[error("interface key {0} after a peer section")]
    InterfaceKeyInPeer(&'static str),
    #[error("listen port {0} is in use")]
    PortInUse(u16),
    #[error("too many peers: the limit is {0}")]
    TooManyPeers(usize),
    #[error("socket error: {0}")]
    Io(String),
}

impl UapiError {
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::PortInUse(_) => EADDRINUSE,
            UapiError::TooManyPeers(_) => ENOSPC,
            UapiError::Io(_) => EIO,
            _ => EINVAL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    Add(IpNet),
    Remove(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerChange {
    pub public_key: Key,
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)` removes the preshared key.
    pub preshared_key: Option<Option<Key>>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<AllowedIpChange>,
    /// StaticWire's per-rental limits (set only; 0 = no cap).
    pub rate_limit_bps: Option<u64>,
    pub rate_limit_pps: Option<u64>,
    pub block_smtp: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetRequest {
    /// `Some(None)` removes the private key.
    pub private_key: Option<Option<Key>>,
    pub listen_port: Option<u16>,
    /// 0 removes the mark.
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}
