//! The loop layer: what runs on its own beside the faces, above the service — the deadline
//! loop with its socket watcher ([`deadlines`]) and this replica's router leases
//! ([`leases`]).

pub mod deadlines;
pub mod leases;

pub use deadlines::run;
