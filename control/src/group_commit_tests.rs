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

/// Settlements the node's stream delivers in a burst (a replay after an outage) are credited
/// together, each once, and the stream's position is stored at the last of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_burst_is_credited_once_and_its_position_stored() {
    let dir = tempfile::tempdir().unwrap();
    let svc = std::sync::Arc::new(Builder::new("203.0.113.0/24").service(dir.path()));
    let keys: Vec<String> = (0..40).map(|_| new_key()).collect();
    let rents = join_all(keys.iter().map(|k| svc.rent(k, None))).await;
    let crate::lightning::Backend::Dev(node) = svc.ln() else {
        unreachable!("the test kit's node is the dev node")
    };
    // All paid while nothing follows the stream: it replays them at once.
    for r in rents {
        let bolt11 = r.unwrap().invoice.bolt11;
        let db = svc.db().unwrap();
        crate::lightning::dev::pay(&db, &node.node_id, &bolt11, svc.clock().now()).unwrap();
    }
    tokio::spawn(svc.clone().follow_settlements());
    let count = || -> (i64, Option<String>) {
        let db = svc.db().unwrap();
        let n = db
            .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
            .unwrap();
        (n, crate::db::meta_get(&db, "dev_settle_index").unwrap())
    };
    // A bound on waiting, not a measurement: the burst takes milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count() != (40, Some("40".into())) {
        assert!(std::time::Instant::now() < deadline, "{:?}", count());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The index of unpaid holds (`crate::unpaid`) never drifts from the database: a staged rent
/// that dropped its key's hold and then failed is rolled back with its savepoint (the hold is
/// counted again), and a batch whose commit failed is forgotten (its holds are not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpaid_index_follows_rolled_back_stages_and_lost_batches() {
    use crate::alloc::Want;
    use crate::limits::ClientId;
    let dir = tempfile::tempdir().unwrap();
    let svc = Builder::new("203.0.113.0/24").service(dir.path());
    let client = || Some(ClientId::of("198.18.0.7".parse().unwrap()));
    let keys: Vec<String> = (0..3).map(|_| new_key()).collect();
    for k in &keys {
        svc.rent(k, client()).await.expect("rent");
    }
    svc.unpaid_index_matches().unwrap();
    assert_eq!(svc.unpaid_index_len(), 3);

    // The key asks for other options: its hold is dropped in the stage, then the new one is
    // refused (a /20 is not sold), and the stage rolls back.
    let not_sold = Want {
        prefix_len: Some(20),
        ..Want::default()
    };
    let refused = svc.rent_with(&keys[0], client(), &not_sold).await;
    assert!(
        matches!(refused, Err(ServiceError::BadRequest(_))),
        "{:?}",
        refused.err()
    );
    assert_eq!(
        svc.status(&keys[0]).unwrap().state,
        staticwire_api::RentalState::Pending
    );
    svc.unpaid_index_matches().unwrap();
    assert_eq!(
        svc.unpaid_index_len(),
        3,
        "the dropped hold is counted again"
    );

    // A lost batch: holds staged, their commit failed.
    svc.group_commit().fail_next_commits(u64::MAX);
    let lost: Vec<String> = (0..8).map(|_| new_key()).collect();
    let out = join_all(lost.iter().map(|k| svc.rent(k, client()))).await;
    assert!(out.iter().all(|r| r.is_err()));
    svc.group_commit().fail_next_commits(0);
    svc.unpaid_index_matches().unwrap();
    assert_eq!(
        svc.unpaid_index_len(),
        3,
        "nothing of the lost batch is counted"
    );

    // And it goes on counting: the cap of the client prefix (8 by default) is reached with
    // five more, not earlier or later.
    for _ in 0..5 {
        svc.rent(&new_key(), client())
            .await
            .expect("within the cap");
    }
    let over = svc.rent(&new_key(), client()).await;
    assert!(
        matches!(over, Err(ServiceError::TooManyUnpaid { held: 8, .. })),
        "{:?}",
        over.err()
    );
    svc.unpaid_index_matches().unwrap();
}

/// A change staged without waiting for the server (PostgreSQL pipelines it) that fails is
/// never taken for committed: a later stage finds the error and rolls back to its savepoint,
/// but the batch's commit fails, so the first stage's waiter is told too. (On SQLite every
/// statement waits: the first stage fails itself.)
#[tokio::test]
async fn a_change_sent_without_waiting_that_fails_fails_its_batch() {
    use crate::writer::GroupCommit;
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::open_store(&dir.path().join("db")).unwrap();
    db.execute_batch("CREATE TABLE pipelined (id INTEGER PRIMARY KEY)")
        .unwrap();
    db.execute("INSERT INTO pipelined(id) VALUES (1)", [])
        .unwrap();
    let g = GroupCommit::default();
    // Stage A: a duplicate key, sent without waiting.
    let a = g.stage(&db, |tx| {
        tx.send("INSERT INTO pipelined(id) VALUES (1)", [])
    });
    // Stage B: a statement that waits (it finds A's error on PostgreSQL).
    let b = g.stage(&db, |tx| {
        tx.execute("INSERT INTO pipelined(id) VALUES (2)", [])
    });
    g.flush(&db);
    let told: Vec<bool> = [a.map(|(_, t)| t), b.map(|(_, t)| t)]
        .into_iter()
        .map(|staged| match staged {
            Ok(t) => futures_util::FutureExt::now_or_never(g.durable(t))
                .expect("the batch is closed")
                .is_ok(),
            Err(_) => false,
        })
        .collect();
    let kept: i64 = db
        .query_row("SELECT COUNT(*) FROM pipelined", [], |r| r.get(0))
        .unwrap();
    if db.is_postgres() {
        assert_eq!(told, [false, false], "the batch failed as a whole");
        assert_eq!(kept, 1, "nothing of it was committed");
    } else {
        assert_eq!(told, [false, true], "A failed alone");
        assert_eq!(kept, 2);
    }
}
