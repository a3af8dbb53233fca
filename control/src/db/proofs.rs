//! The replay cache the replicas share (PROTOCOL.md 3.1, "Freshness and replay"): proofs
//! accepted for requests that change state, by MAC, kept while their time could still be
//! fresh. Each replica also remembers every proof it accepts in memory
//! (`staticwire_api::proof::Verifier`); this table is what makes a proof one replica accepted
//! a replay at another.

use crate::sql::{params, Connection};

/// Records an accepted proof (`mac` as lowercase hex, `ts` its Unix seconds) unless it was
/// recorded before, and deletes proofs whose time is older than `oldest`. True when it is
/// new; false when another request (on any replica) already used it. Inside a transaction the
/// caller commits (the service stages it in the group commit); another replica inserting the
/// same MAC meanwhile waits for that commit (a unique index), then finds it: a replay is still
/// refused.
pub fn remember_proof(
    tx: &Connection,
    mac: &str,
    ts: u64,
    oldest: u64,
) -> Result<bool, crate::sql::Error> {
    tx.execute(
        "DELETE FROM proofs_seen WHERE ts < ?1",
        [i64::try_from(oldest).unwrap_or(i64::MAX)],
    )?;
    let added = tx.execute(
        "INSERT INTO proofs_seen(mac, ts) VALUES (?1, ?2) ON CONFLICT(mac) DO NOTHING",
        params![mac, i64::try_from(ts).unwrap_or(i64::MAX)],
    )?;
    Ok(added == 1)
}

/// [`remember_proof`] as one statement committed on its own, for a PostgreSQL
/// connection kept for the cache (`Service`'s, its session set to `synchronous_commit = off`):
/// one round trip instead of five. Prunes only when `prune_before` is given (the caller does
/// so once a second: the insert alone runs on a generic plan, `crate::sql::GENERIC_PLAN`).
pub fn remember_proof_alone(
    conn: &Connection,
    mac: &str,
    ts: u64,
    prune_before: Option<u64>,
) -> Result<bool, crate::sql::Error> {
    let ts = i64::try_from(ts).unwrap_or(i64::MAX);
    let added = match prune_before {
        Some(oldest) => conn.execute(
            "WITH gone AS (DELETE FROM proofs_seen WHERE ts < ?1)
             INSERT INTO proofs_seen(mac, ts) VALUES (?2, ?3) ON CONFLICT(mac) DO NOTHING",
            params![i64::try_from(oldest).unwrap_or(i64::MAX), mac, ts],
        )?,
        None => conn.execute(
            "/* generic plan */
             INSERT INTO proofs_seen(mac, ts) VALUES (?1, ?2) ON CONFLICT(mac) DO NOTHING",
            params![mac, ts],
        )?,
    };
    Ok(added == 1)
}

#[cfg(test)]
mod tests {
    /// Each call its own committed transaction, as a replica's batch would be.
    fn remember(c: &crate::sql::Connection, mac: &str, ts: u64, oldest: u64) -> bool {
        let tx = c.unchecked_transaction().unwrap();
        let added = super::remember_proof(&tx, mac, ts, oldest).unwrap();
        tx.commit().unwrap();
        added
    }

    #[test]
    fn a_proof_is_new_once_and_forgotten_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // Two connections to one file: two replicas.
        let (a, b) = (
            super::super::open(&path).unwrap(),
            super::super::open(&path).unwrap(),
        );
        let mac = "ab".repeat(32);
        assert!(remember(&a, &mac, 1000, 880));
        assert!(!remember(&b, &mac, 1000, 880));
        assert!(!remember(&a, &mac, 1000, 1000));
        // Pruned once outside the window (by then the time check refuses it anyway).
        assert!(remember(&b, &"cd".repeat(32), 1200, 1001));
        assert!(remember(&a, &mac, 1000, 1001));
    }
}
