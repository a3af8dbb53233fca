//! Two replicas on one PostgreSQL race for the same free space: each has its own free-space
//! index (neither knows what the other placed until it reads the other's holds under the
//! allocation lock), its own group commit and its own connection. Every address goes out
//! exactly once: the pool fills, the losers of the last addresses are told `pool_exhausted`,
//! and no address is held by two live rentals. Runs when STATICWIRE_TEST_PG names a server
//! (ops/test.sh); on SQLite there is one writer and nothing to race.

use crate::abuse_tests::new_key;
use crate::config::LimitsConfig;
use crate::limits::ClientId;
use crate::service::{Hold, Service, ServiceError};
use crate::testkit::Builder;
use std::collections::BTreeSet;
use std::sync::Arc;

fn builder() -> Builder {
    Builder::new("203.0.113.0/28").limits(LimitsConfig {
        max_unpaid_per_client: 1000,
        ..LimitsConfig::default()
    })
}

/// The live rentals' addresses (as numbers), every address of each block.
fn held(svc: &Service) -> Vec<i64> {
    let db = svc.db().unwrap();
    let rows = db
        .query_all(
            "SELECT a.num, r.prefix_len FROM rentals r JOIN addresses a ON a.address = r.address
             WHERE r.released_at IS NULL",
            [],
        )
        .unwrap();
    let mut out = Vec::new();
    for r in rows {
        let (base, len): (i64, i64) = (r.get(0).unwrap(), r.get(1).unwrap());
        out.extend(base..base + (1 << (32 - len)));
    }
    out
}

#[test]
fn two_replicas_racing_for_the_last_addresses_never_hold_one_twice() {
    if !crate::db::testing_postgres() {
        eprintln!("SKIPPED: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(builder().service(dir.path()));
    let b = Arc::new(
        builder()
            .replica_of(&a)
            .expect("PostgreSQL")
            .service(dir.path()),
    );
    // Both indexes were built on an empty pool: each offers every address.
    let pool = {
        let db = a.db().unwrap();
        db.query_row("SELECT COUNT(*) FROM addresses", [], |r| r.get::<_, i64>(0))
            .unwrap() as usize
    };
    assert!(pool >= 8, "{pool} addresses");
    // Twice as many holds as addresses, half at each replica, all at once, from one client
    // prefix (the holds' path: its cap, the other replica's holds read under the lock; alone
    // on the host it is bounded by its cap, not by a share, and takes over none of its own).
    let now = a.clock().now();
    let threads: Vec<_> = (0..2 * pool)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let client = ClientId::of("198.18.1.1".parse().unwrap());
                svc.hold(&new_key(), now, Some(client))
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut exhausted = 0;
    for t in threads {
        match t.join().unwrap() {
            Ok(Hold::New(r)) => won.push(r.address),
            Ok(Hold::Existing(_)) => panic!("a new key found a rental"),
            Err(ServiceError::PoolExhausted) => exhausted += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // Every address went out once, to one of the racers; the others were told so.
    let distinct: BTreeSet<_> = won.iter().collect();
    assert_eq!(
        distinct.len(),
        won.len(),
        "an address answered twice: {won:?}"
    );
    assert_eq!(won.len(), pool, "{exhausted} exhausted");
    assert_eq!(exhausted, pool);
    // As both replicas committed them (each read through its own connection).
    for svc in [&a, &b] {
        let nums = held(svc);
        let set: BTreeSet<_> = nums.iter().collect();
        assert_eq!(set.len(), nums.len(), "an address held twice");
        assert_eq!(nums.len(), pool);
    }
    // And each replica's index of unpaid holds matches the database, the other's included.
    a.unpaid_index_matches().unwrap();
    b.unpaid_index_matches().unwrap();
    // One more at either: none left.
    for svc in [&a, &b] {
        assert!(matches!(
            svc.hold(&new_key(), now, None),
            Err(ServiceError::PoolExhausted)
        ));
    }
}
