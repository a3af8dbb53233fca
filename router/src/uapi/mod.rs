//! The WireGuard cross-platform userspace API (wireguard.com/xplatform): the text protocol the
//! stock `wg` tool, wg-quick and staticwire-control speak over `/var/run/wireguard/<iface>.sock`.
//!
//! `parse` and `format` are sans-IO; `server` is the thin socket layer.

pub mod format;
pub mod parse;
pub mod server;

// The request types live below the device (crate::request); re-exported for users of the protocol.
pub use crate::request::{AllowedIpChange, PeerChange, SetRequest, UapiError};
