//! The loop layer: what runs on its own beside the faces, above the service — the deadline
//! loop with its socket watcher ([`deadlines`]), this replica's router leases ([`leases`]) and
//! the reverse-DNS compare ([`rdns`]).

pub mod deadlines;
pub mod leases;
pub mod rdns;

pub use deadlines::run;
