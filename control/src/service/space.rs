//! The service's free-space index (`crate::freespace`): built from the database, handed to the
//! placement, and told of every release, so no request reads the pool.

use super::{Service, ServiceError};
use crate::config::Config;
use crate::freespace::{FreeSpace, Pool, Released};
use crate::sql::Connection;
use crate::store::RentalRow;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

/// Reads every configured router's free space.
pub(super) fn build(
    db: &Connection,
    cfg: &Config,
    now: i64,
    failures: u64,
) -> crate::sql::Result<FreeSpace> {
    let pools: Vec<Pool<'_>> = cfg
        .routers
        .iter()
        .map(|r| Pool {
            router: &r.name,
            ipv6: r.ipv6_pool.map(|p| (p, r.ipv6_prefix_len)),
        })
        .collect();
    FreeSpace::build(
        db,
        &pools,
        now,
        cfg.terms.cooldown_days as i64 * 86_400,
        failures,
    )
}

impl Service {
    /// The free-space index, rebuilt first when a commit failed since it was built (the failed
    /// batch's placements are free again). Lock the database first when holding both.
    pub(super) fn space(
        &self,
        db: &Connection,
        failures: u64,
    ) -> Result<MutexGuard<'_, FreeSpace>, ServiceError> {
        let mut space = self
            .space
            .lock()
            .map_err(|_| ServiceError::Internal("free-space lock poisoned".into()))?;
        if space.stale(failures) {
            *space = build(db, &self.cfg, self.clock.now(), failures)?;
        }
        Ok(space)
    }

    /// Tells the index that `r` was released (or its hold dropped) at `at`: its space rests,
    /// then is free again.
    pub(super) fn space_released(
        &self,
        db: &Connection,
        r: &RentalRow,
        at: i64,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let mut space = self
            .space
            .lock()
            .map_err(|_| ServiceError::Internal("free-space lock poisoned".into()))?;
        let released = Released {
            router: &r.router,
            address: &r.address,
            prefix_len: r.prefix_len,
            ipv6: r.ipv6.as_deref(),
            // A prefix rests only after being paid for (an unpaid hold's is free at once).
            v6_rest_until: if r.started_at.is_some() {
                at + self.terms.cooldown_secs
            } else {
                at
            },
        };
        space.released(db, &released, now)?;
        // No longer an unpaid hold (read back: what the open transaction holds).
        space.unpaid.touch(db, r.id)?;
        self.publish_free(&mut space, now);
        Ok(())
    }

    /// Tells the index of unpaid holds that rental `id` changed (paid, released) in the open
    /// transaction: it reads the rental back (`crate::unpaid::UnpaidIndex::touch`).
    pub(super) fn unpaid_touched(&self, db: &Connection, id: i64) -> Result<(), ServiceError> {
        let mut space = self
            .space
            .lock()
            .map_err(|_| ServiceError::Internal("free-space lock poisoned".into()))?;
        space.unpaid.touch(db, id)?;
        Ok(())
    }

    /// Reads rental `id` back into the index of unpaid holds once the transaction that
    /// changed it ended (committed or rolled back).
    pub(super) fn unpaid_reread(&self, db: &Connection, id: i64) -> Result<(), ServiceError> {
        let mut space = self
            .space
            .lock()
            .map_err(|_| ServiceError::Internal("free-space lock poisoned".into()))?;
        space.unpaid.reread(db, id)?;
        Ok(())
    }

    /// Publishes each router's free IPv4 count for the terms (the caller holds the index).
    pub(super) fn publish_free(&self, space: &mut FreeSpace, now: i64) {
        for (name, n) in &self.free_published {
            if let Some(free) = space.free_v4(name, now) {
                n.store(free, Ordering::Relaxed);
            }
        }
    }

    /// Single IPv4 addresses free now on `router`, from the index: counted afresh when the
    /// index is not in use, else as last published (the terms never wait for a placement).
    pub(super) fn free_ipv4(&self, router: &str) -> Option<u64> {
        if let Ok(mut space) = self.space.try_lock() {
            self.publish_free(&mut space, self.clock.now());
        }
        self.free_published
            .get(router)
            .map(|n| n.load(Ordering::Relaxed))
    }

    /// Whether the index of unpaid holds, as the next placement reads it, is what the
    /// database holds (tests).
    #[cfg(test)]
    pub(crate) fn unpaid_index_matches(&self) -> Result<(), String> {
        let db = self.db().map_err(|e| e.to_string())?;
        let mut space = self
            .space(&db, self.writer.failures())
            .map_err(|e| e.to_string())?;
        // As a placement reads it: other replicas' changes read first, under the lock (the
        // transaction is rolled back: it only reads).
        let tx = db.unchecked_transaction().map_err(|e| e.to_string())?;
        tx.lock_for_transaction(crate::unpaid::ALLOCATION_LOCK)
            .map_err(|e| e.to_string())?;
        space.refresh_if_shared(&tx).map_err(|e| e.to_string())?;
        space.unpaid.matches(&tx).map_err(|e| e.to_string())?
    }

    /// The holds the index of unpaid holds counts (tests).
    #[cfg(test)]
    pub(crate) fn unpaid_index_len(&self) -> usize {
        self.space
            .lock()
            .map(|s| s.unpaid.holds().len())
            .unwrap_or(0)
    }
}
