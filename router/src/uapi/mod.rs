//! The WireGuard cross-platform userspace API (wireguard.com/xplatform): the text protocol the
//! stock `wg` tool, wg-quick and staticwire-control speak over `/var/run/wireguard/<iface>.sock`.
//!
//! `parse` and `format` are sans-IO; `server` is the thin socket layer.

pub mod format;
pub mod parse;
pub mod server;

pub use parse::{AllowedIpChange, PeerChange, SetRequest, UapiError};
