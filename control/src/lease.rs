//! Leases in the database: among control replicas sharing one PostgreSQL, exactly one runs a
//! router's expiries and reconciliation at a time. A holder renews its lease every round; when
//! it dies, the lease runs out and another replica takes it over. These are the queries; the
//! loop takes and gives up a replica's leases (`crate::run::leases`).

use crate::sql::{params, Connection, OptionalExtension};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a lease lasts without renewal: a dead holder's routers wait at most this long.
pub const TTL_MS: i64 = 3_000;

/// Wall-clock milliseconds (not the dev clock, which tests move by months).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A name for this replica: host and process, plus randomness for restarts in one process id.
pub fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`; true if `holder`
/// has it now. One statement, so two replicas racing for a free lease cannot both win.
pub fn acquire(
    db: &Connection,
    name: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> crate::sql::Result<bool> {
    db.execute(
        "INSERT INTO leases(name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at < ?4",
        params![name, holder, now_ms + ttl_ms, now_ms],
    )?;
    Ok(holder_of(db, name)?.as_deref() == Some(holder))
}

/// Gives a lease up (a clean shutdown), so another replica need not wait for it to run out.
pub fn release(db: &Connection, name: &str, holder: &str) -> crate::sql::Result<()> {
    db.execute(
        "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
        params![name, holder],
    )?;
    Ok(())
}

pub fn holder_of(db: &Connection, name: &str) -> crate::sql::Result<Option<String>> {
    db.query_row("SELECT holder FROM leases WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

/// The lease name of a router.
pub fn router_lease(router: &str) -> String {
    format!("router:{router}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(db: &Connection) {
        assert!(acquire(db, "router:a", "r1", 1_000, 3_000).unwrap());
        assert!(
            !acquire(db, "router:a", "r2", 2_000, 3_000).unwrap(),
            "held"
        );
        assert!(
            acquire(db, "router:a", "r1", 3_500, 3_000).unwrap(),
            "renewed"
        );
        assert!(
            !acquire(db, "router:a", "r2", 6_000, 3_000).unwrap(),
            "renewal counts"
        );
        assert!(
            acquire(db, "router:a", "r2", 6_501, 3_000).unwrap(),
            "ran out: taken over"
        );
        assert!(
            !acquire(db, "router:a", "r1", 6_600, 3_000).unwrap(),
            "the old holder lost it"
        );
        assert!(
            acquire(db, "router:b", "r1", 6_600, 3_000).unwrap(),
            "one lease per router"
        );
        release(db, "router:a", "r1").unwrap();
        assert_eq!(
            holder_of(db, "router:a").unwrap().as_deref(),
            Some("r2"),
            "not r1's"
        );
        release(db, "router:a", "r2").unwrap();
        assert!(
            acquire(db, "router:a", "r1", 6_700, 3_000).unwrap(),
            "given up: free"
        );
    }

    #[test]
    fn one_holder_renewals_and_takeover() {
        let dir = tempfile::tempdir().unwrap();
        check(&crate::db::open_store(&dir.path().join("db")).unwrap());
    }
}
