//! No public route reads the pool: the work of every request behind the public routes (terms,
//! rent of an address and of a prefix, status, configuration, invoice) is counted in SQLite's
//! own virtual machine steps, over a small pool and over one a thousand times larger, and stays
//! the same. The free-space index (`crate::freespace`) is what makes it so. Nor does a rent
//! read the unpaid holds: its work is the same beside 10 and beside 5,000 of them, also when
//! it must take one over (`crate::unpaid`).

use crate::abuse_tests::new_key;
use crate::alloc::Want;
use crate::service::Service;
use crate::sql::Connection;
use crate::store;
use crate::testkit::{Builder, ROUTER};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A service over `pool` with `singles` live single-address rentals and `blocks` live /30s,
/// started after they were written (so its index is built from the database, as at a start).
fn service_with(dir: &Path, pool: &str, singles: u32, blocks: u32) -> Service {
    let first = Builder::new(pool).sqlite_only().service(dir);
    let base = u32::from(
        pool.split('/')
            .next()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .unwrap(),
    );
    {
        let db = first.db().unwrap();
        let tx = db.unchecked_transaction().unwrap();
        for i in 0..singles {
            let a = std::net::Ipv4Addr::from(base + 4 + i);
            store::insert_rental(&tx, &format!("single{i}"), &a.to_string(), ROUTER, 1).unwrap();
        }
        for i in 0..blocks {
            let a = std::net::Ipv4Addr::from(base + 4 + singles.next_multiple_of(4) + 4 * i);
            store::insert_rental_with(
                &tx,
                &format!("block{i}"),
                &a.to_string(),
                30,
                None,
                ROUTER,
                1,
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    drop(first);
    Builder::new(pool).sqlite_only().service(dir)
}

/// SQLite virtual machine steps `f` costs on the service's connections (every statement, on
/// the writer's and on each reader's).
pub(crate) fn steps<T>(svc: &Service, f: impl FnOnce() -> T) -> (u64, T) {
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    with_sqlite(svc, |c| {
        let count = count.clone();
        c.progress_handler(
            1,
            Some(move || {
                count.fetch_add(1, Ordering::Relaxed);
                false
            }),
        )
    });
    let out = f();
    with_sqlite(svc, |c| c.progress_handler(0, None::<fn() -> bool>));
    (n.load(Ordering::Relaxed), out)
}

fn with_sqlite(svc: &Service, f: impl Fn(&rusqlite::Connection)) {
    svc.each_connection(|c| match c {
        Connection::Sqlite(c) => f(c),
        Connection::Postgres(_) => unreachable!("sqlite_only"),
    });
}

/// The steps of each public request, in order: terms, rent, status, config, invoice, rent
/// of a /30.
async fn route_steps(svc: &Service) -> Vec<u64> {
    let key = new_key();
    let mut out = vec![steps(svc, || svc.api_terms()).0];
    let (n, rented) = steps(svc, || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(svc.rent(&key, None))
        })
    });
    let rented = rented.expect("rent");
    out.push(n);
    out.push(steps(svc, || svc.status(&key).unwrap()).0);
    out.push(steps(svc, || svc.config(&key).unwrap()).0);
    out.push(steps(svc, || svc.invoice(&rented.invoice.payment_hash).unwrap()).0);
    let want = Want {
        prefix_len: Some(30),
        ..Want::default()
    };
    let (n, block) = steps(svc, || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(svc.rent_with(&new_key(), None, &want))
        })
    });
    assert_eq!(block.expect("rent a /30").rental.prefix_len, 30);
    out.push(n);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_route_reads_the_pool() {
    let (small_dir, large_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 256 addresses, 100 rented; and 131,072 addresses, 60,000 rented as singles and 2,000
    // as /30s.
    let small = service_with(small_dir.path(), "100.64.0.0/24", 100, 10);
    let large = service_with(large_dir.path(), "100.64.0.0/15", 60_000, 2_000);
    let s = route_steps(&small).await;
    let l = route_steps(&large).await;
    let names = ["terms", "rent", "status", "config", "invoice", "rent /30"];
    for ((name, s), l) in names.iter().zip(&s).zip(&l) {
        // The same statements through the same indexes: a deeper B-tree costs no VM steps;
        // a read of the pool would cost at least one per address (checked below).
        assert!(
            *l <= s + s / 4 + 50,
            "{name}: {l} steps over the large pool, {s} over the small one"
        );
    }
    assert_eq!(s[0], 0, "the terms read no database at all");
    // Every other route is counted (status, config and invoice on the readers).
    assert!(
        s[1..].iter().all(|&n| n > 0),
        "a route counted no steps: {s:?}"
    );
    // The counter sees a pool read: the reference placement's read of every free address.
    let (n, free) = steps(&large, || {
        crate::alloc::free_v4(&large.db().unwrap(), ROUTER, 0).unwrap()
    });
    let most = *l.iter().max().unwrap();
    assert!(
        free.len() > 50_000 && n > 10 * most,
        "a pool read ({} free) costs {n} steps, the costliest route {most}",
        free.len()
    );
    eprintln!("steps, small pool: {s:?}; large pool: {l:?}; a pool read: {n}");
}

/// A service over `pool` with `holds` live unpaid single-address holds (None: as many as
/// `/v1`'s share allows, half of the pool), each of a client /24 of its own (10.x.y.0/24),
/// started after they were written.
fn service_with_holds(dir: &Path, pool: &str, holds: Option<u32>) -> Service {
    let first = Builder::new(pool).sqlite_only().service(dir);
    let free = first.api_terms().servers[0].free_ipv4.unwrap();
    let holds = holds.unwrap_or((free / 2) as u32);
    let base = u32::from(
        pool.split('/')
            .next()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .unwrap(),
    );
    let now = first.clock().now();
    {
        let db = first.db().unwrap();
        let tx = db.unchecked_transaction().unwrap();
        for i in 0..holds {
            let a = std::net::Ipv4Addr::from(base + 4 + i);
            let id =
                store::insert_rental(&tx, &format!("hold{i}"), &a.to_string(), ROUTER, now - 1)
                    .unwrap();
            let client = format!("10.{}.{}.0/24", i / 256, i % 256);
            crate::deadlines::set_client(&tx, id, &client).unwrap();
        }
        tx.commit().unwrap();
    }
    drop(first);
    Builder::new(pool).sqlite_only().service(dir)
}

/// The steps of a rent from a client prefix that holds nothing.
async fn rent_steps(svc: &Service) -> u64 {
    let client = crate::limits::ClientId::of("198.18.0.9".parse().unwrap());
    let key = new_key();
    let (n, rented) = steps(svc, || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(svc.rent(&key, Some(client)))
        })
    });
    rented.expect("rent");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rent_does_not_read_the_unpaid_holds() {
    // The debug builds' check of the index reads every hold: not what a rent does.
    crate::unpaid::CHECK_IN_DEBUG.store(false, Ordering::Relaxed);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // Room to spare: the rent fits as things are.
    let few = service_with_holds(dirs[0].path(), "100.64.0.0/16", Some(10));
    let many = service_with_holds(dirs[1].path(), "100.64.0.0/16", Some(5_000));
    // The share of `/v1` (half of what is not paid for) spent by the holds (7 on a /28, 8,191
    // on a /18): the rent takes the oldest hold of a prefix over.
    let few_full = service_with_holds(dirs[2].path(), "100.64.0.0/28", None);
    let many_full = service_with_holds(dirs[3].path(), "100.64.0.0/18", None);
    let s = [
        rent_steps(&few).await,
        rent_steps(&many).await,
        rent_steps(&few_full).await,
        rent_steps(&many_full).await,
    ];
    crate::unpaid::CHECK_IN_DEBUG.store(true, Ordering::Relaxed);
    eprintln!(
        "rent steps beside 10 and 5,000 unpaid holds: {:?}; taking one over beside 7 and \
         8,191: {:?}",
        &s[..2],
        &s[2..]
    );
    for (name, few, many) in [("rent", s[0], s[1]), ("rent taking over", s[2], s[3])] {
        // Reading the holds would cost at least one step per hold.
        assert!(
            many <= few + few / 4 + 50,
            "{name}: {many} steps beside thousands of unpaid holds, {few} beside a few"
        );
    }
    for (svc, holds) in [(&few_full, 7), (&many_full, 8_191)] {
        assert_eq!(
            svc.unpaid_index_len(),
            holds,
            "one hold taken over, one new"
        );
        svc.unpaid_index_matches().unwrap();
        let taken = svc
            .db()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM rentals WHERE release_reason = 'taken_over'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        assert_eq!(taken, 1);
    }
}
