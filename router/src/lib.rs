//! staticwire-router: a userspace WireGuard data plane for many peers.
//!
//! [`device`] is the sans-IO packet core (routing, anti-spoofing, peers, configuration), which
//! applies the typed changes of [`request`]; [`uapi`] speaks the standard configuration
//! protocol; [`io`] drives the core with a TUN device and UDP sockets; [`metrics`] exports
//! Prometheus series. ARCHITECTURE.md draws the layers.

pub mod device;
pub mod epoch;
pub mod initiation;
pub mod io;
pub mod key;
pub mod limits;
pub mod metrics;
pub mod offload;
pub mod peer;
pub mod request;
pub mod routes;
pub mod sharded;
pub mod slots;
pub mod source_limit;
pub mod stats;
pub mod uapi;
