//! Group commit (`crate::writer`) never answers before its commit: with every commit failing,
//! every waiting rent gets an error and nothing of it is in the database; once commits work
//! again, every answered rent's rental and invoice are there, read through a connection of
//! their own. (`tests/crash.rs` kills the real binary right after a 201.)

use crate::abuse_tests::new_key;
use crate::service::{Service, ServiceError};
use crate::testkit::Builder;
use futures_util::future::join_all;

/// Whether `key` has a rental with the invoice `hash`, as a fresh connection sees it (the
/// service's own on PostgreSQL, whose commits every connection sees alike).
fn stored(svc: &Service, dir: &std::path::Path, key: &str, hash: &str) -> bool {
    let sql = "SELECT COUNT(*) FROM invoices i JOIN rentals r ON r.id = i.rental_id
               WHERE r.public_key = ?1 AND i.payment_hash = ?2";
    if crate::db::testing_postgres() {
        let db = svc.db().unwrap();
        let n: i64 = db.query_row(sql, [key, hash], |r| r.get(0)).unwrap();
        return n == 1;
    }
    let db = rusqlite::Connection::open(dir.join("staticwire.sqlite")).unwrap();
    let n: i64 = db.query_row(sql, [key, hash], |r| r.get(0)).unwrap();
    n == 1
}

fn rentals_of(svc: &Service, keys: &[String]) -> usize {
    let db = svc.db().unwrap();
    keys.iter()
        .filter(|k| crate::store::latest_rental(&db, k).unwrap().is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_waiter_and_answers_none() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Builder::new("203.0.113.0/24").service(dir.path());
    svc.group_commit().fail_next_commits(u64::MAX);
    let keys: Vec<String> = (0..16).map(|_| new_key()).collect();
    let out = join_all(keys.iter().map(|k| svc.rent(k, None))).await;
    for (k, r) in keys.iter().zip(&out) {
        assert!(
            matches!(r, Err(ServiceError::DatabaseUnavailable(_))),
            "{k}: {:?}",
            r.as_ref().map(|r| &r.invoice.payment_hash)
        );
    }
    assert_eq!(
        rentals_of(&svc, &keys),
        0,
        "nothing of a failed batch is kept"
    );

    // Commits work again: every answer is in the database, and the index gave no address out
    // twice (the failed batches' placements are free again).
    svc.group_commit().fail_next_commits(0);
    let keys: Vec<String> = (0..32).map(|_| new_key()).collect();
    let out = join_all(keys.iter().map(|k| svc.rent(k, None))).await;
    let mut addresses = std::collections::HashSet::new();
    for (k, r) in keys.iter().zip(out) {
        let r = r.expect("rent");
        assert!(stored(&svc, dir.path(), k, &r.invoice.payment_hash), "{k}");
        assert!(
            addresses.insert(r.rental.address.clone()),
            "{}",
            r.rental.address
        );
    }
    assert!(svc.group_commit().failures() > 0);
}

/// Settlements are staged too: a burst settles each invoice exactly once, and a failed commit
/// credits nothing and answers an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_in_a_burst_are_credited_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Builder::new("203.0.113.0/24").service(dir.path());
    let keys: Vec<String> = (0..24).map(|_| new_key()).collect();
    let rents = join_all(keys.iter().map(|k| svc.rent(k, None))).await;
    let hashes: Vec<String> = rents
        .into_iter()
        .map(|r| r.unwrap().invoice.payment_hash)
        .collect();
    let now = svc.clock().now();
    svc.group_commit().fail_next_commits(u64::MAX);
    let failed = join_all(hashes.iter().map(|h| svc.settle(h, now))).await;
    assert!(failed.iter().all(|r| r.is_err()), "{failed:?}");
    svc.group_commit().fail_next_commits(0);
    // Each twice at once: credited once.
    let twice = hashes.iter().chain(hashes.iter());
    let settled = join_all(twice.map(|h| svc.settle(h, now))).await;
    let credited = settled.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(credited, hashes.len(), "{settled:?}");
    let db = svc.db().unwrap();
    let payments: i64 = db
        .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(payments, hashes.len() as i64);
}
