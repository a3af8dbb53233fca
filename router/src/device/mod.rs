//! The sans-IO packet core: peers, routing, anti-spoofing, and applying UAPI configuration.
//!
//! Readers (the packet path) never take a device-wide lock: peers sit in lock-free slots
//! ([`PeerSlots`](crate::slots::PeerSlots)), and keys and routes in sharded maps
//! ([`crate::sharded`]), both reclaimed by epoch ([`crate::epoch`]). The only lock a packet takes is its peer's session
//! lock. Writers (UAPI `set`) serialize on the config mutex and publish what they changed once
//! per request.
//!
//! A configured peer is a compact record; boringtun's `Tunn` exists only while the peer is active
//! (a valid initiation arrived, or traffic for it came from TUN) and is dropped by the timers once
//! its sessions have expired. The timers walk active peers only.
//!
//! The core reads no clock: every entry point takes `now`, as quinn-proto's
//! `Endpoint::handle(now, ..)` does, and the I/O drivers read the clock once per batch.
//! (boringtun's `Tunn` keeps its own timers and reads the clock inside.)
//!
//! `state` holds what the core holds; `send` (TUN to network) and `receive` (network to TUN) are
//! the packet path; `timers` and `config` the rest. They use `state`, never each other.

mod config;
mod receive;
mod send;
mod state;
mod timers;

pub use config::{DeviceView, NetControl, PeerView, MAX_PEERS};
pub use state::{Device, Io, HANDSHAKE_RATE_LIMIT, MAX_UNANSWERED};
pub use timers::IDLE_AFTER;

#[cfg(test)]
mod tests;
