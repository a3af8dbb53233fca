//! This replica's router leases (PostgreSQL): taken and renewed by the loop, given up at a
//! clean shutdown. On SQLite (one control) every router is its own.

use crate::lease::{acquire, now_ms, release, router_lease, TTL_MS};
use crate::service::Service;

/// Takes or renews this replica's leases of the routers whose sockets it sees (a lease it
/// cannot renew runs out and goes to a replica that sees it) and records which routers it now
/// runs;
/// returns whether that set changed. On SQLite (one control) every router is its own.
pub fn refresh(s: &Service, replica: &str) -> bool {
    if !s.cfg().is_postgres() {
        return false;
    }
    let now = now_ms();
    let mut held = std::collections::HashSet::new();
    if let Ok(db) = s.plain() {
        // Only routers this host can reach: a replica on each router host runs its own.
        for r in s.routers().iter().filter(|r| r.socket.exists()) {
            match acquire(&db, &router_lease(&r.name), replica, now, TTL_MS) {
                Ok(true) => {
                    held.insert(r.name.clone());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(router = %r.name, "lease: {e}"),
            }
        }
    }
    let shown = format!("{held:?}");
    let changed = s.set_owned(held);
    if changed {
        tracing::info!(replica, routers = %shown, "router leases held");
    }
    changed
}

/// Gives up this replica's leases (clean shutdown).
pub fn release_all(s: &Service, replica: &str) {
    if !s.cfg().is_postgres() {
        return;
    }
    if let Ok(db) = s.plain() {
        for r in s.routers() {
            let _ = release(&db, &router_lease(&r.name), replica);
        }
    }
}
