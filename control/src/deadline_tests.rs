//! The deadline queue: expiry driven by the queue (a clock moved past one rental's paid-until
//! takes exactly that peer off a router that speaks UAPI on a real Unix socket), the queue's
//! queries through their indexes (query plans, and SQLite's own count of rows stepped
//! through), the per-client cap of unpaid holds across a restart, and a change of the terms'
//! per-rental limits reaching peers the router already holds. No timed assertions.

use crate::abuse_tests::{from, new_key, server_in};
use crate::config::LimitsConfig;
use crate::deadlines;
use crate::service::Service;
use crate::sql::Connection;
use crate::store;
use crate::testkit::Builder;
use crate::uapi_fake::fake_router as uapi_router;
use rusqlite::StatementStatus;
use std::path::Path;
use std::sync::{Arc, Mutex};

const DAY: i64 = 86_400;

fn service(dir: &Path, reconcile_interval_secs: u64) -> Arc<Service> {
    let svc = Builder::new("203.0.113.0/24")
        .router_socket("router.sock")
        .sqlite_only()
        .config(move |c| {
            c.reconcile_interval_secs = reconcile_interval_secs;
            c.invoice_poll_millis = 50;
        })
        .service(dir);
    Arc::new(svc)
}

/// A paid rental of `key` at `address`, paid until `paid_until`.
fn paid(db: &Connection, key: &str, address: &str, started: i64, paid_until: i64) -> i64 {
    let id = store::insert_rental(db, key, address, "t", started).unwrap();
    db.execute(
        "UPDATE rentals SET started_at = ?1, credited_secs = ?2 WHERE id = ?3",
        crate::sql::params![started, paid_until - started, id],
    )
    .unwrap();
    id
}

fn hex_of(b64: &str) -> String {
    hex::encode(crate::feed::decode_key(b64).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passing_takes_exactly_that_peer_off_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let mut router = uapi_router(&dir.path().join("router.sock"));
    // No full compare during the test: only the deadline queue can remove anyone.
    let svc = service(dir.path(), 3600);
    let now = svc.clock().now();
    let keys: Vec<String> = (0..3).map(|_| new_key()).collect();
    {
        let db = svc.db().unwrap();
        paid(&db, &keys[0], "203.0.113.10", now, now + DAY);
        paid(&db, &keys[1], "203.0.113.11", now, now + 2 * DAY);
        paid(&db, &keys[2], "203.0.113.12", now, now + 30 * DAY);
    }
    svc.reconcile().await.unwrap();
    assert_eq!(router.peers.lock().unwrap().len(), 3, "all three admitted");
    tokio::spawn(crate::run::run(svc.clone(), Default::default()));

    svc.clock().advance(DAY);
    svc.wake();
    let gone = router.removed.recv().await.unwrap();
    assert_eq!(
        gone,
        hex_of(&keys[0]),
        "the first deadline's peer, and only it"
    );
    {
        let peers = router.peers.lock().unwrap();
        assert!(peers.contains_key(&hex_of(&keys[1])));
        assert!(peers.contains_key(&hex_of(&keys[2])));
    }
    svc.clock().advance(DAY);
    svc.wake();
    let gone = router.removed.recv().await.unwrap();
    assert_eq!(gone, hex_of(&keys[1]), "then the second's, not the third's");
    assert_eq!(
        router.peers.lock().unwrap().keys().collect::<Vec<_>>(),
        vec![&hex_of(&keys[2])]
    );
    assert!(router.removed.try_recv().is_err(), "nothing else removed");
    // The rentals are lapsed, not released: the reservation runs on.
    let live: i64 = svc
        .db()
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM rentals WHERE released_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_gets_every_active_peer_back_from_the_full_compare() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let router = uapi_router(&sock);
    let svc = service(dir.path(), 3600);
    let now = svc.clock().now();
    {
        let db = svc.db().unwrap();
        for i in 0..25 {
            paid(
                &db,
                &new_key(),
                &format!("203.0.113.{}", 10 + i),
                now,
                now + DAY,
            );
        }
        // Lapsed: never admitted.
        paid(&db, &new_key(), "203.0.113.100", now - 2 * DAY, now - DAY);
    }
    svc.reconcile().await.unwrap();
    assert_eq!(router.peers.lock().unwrap().len(), 25);
    // A stranger's peer is removed, a wrong address replaced, by the full compare. (A
    // customer's peer chosen before the stranger is added: chosen after, it was the stranger
    // one time in 26.)
    let some = router.peers.lock().unwrap().keys().next().cloned().unwrap();
    router
        .peers
        .lock()
        .unwrap()
        .insert(hex::encode([9u8; 32]), vec!["203.0.113.200/32".into()]);
    router
        .peers
        .lock()
        .unwrap()
        .insert(some.clone(), vec!["203.0.113.201/32".into()]);
    svc.reconcile().await.unwrap();
    let peers = router.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 25);
    assert!(!peers.contains_key(&hex::encode([9u8; 32])));
    assert_ne!(peers[&some], vec!["203.0.113.201/32".to_string()]);

    // The router restarts empty on a new socket: the watcher sees it and the loop compares.
    drop(router);
    std::fs::remove_file(&sock).unwrap();
    tokio::spawn(crate::run::run(svc.clone(), Default::default()));
    let fresh = uapi_router(&sock);
    loop {
        if fresh.peers.lock().unwrap().len() == 25 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The rows' plan of every query the loop and the hot routes run: each must search an index,
/// never scan a table.
#[test]
fn the_queue_and_hot_queries_search_indexes() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::db::open(&dir.path().join("db.sqlite")).unwrap());
    let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let cols = store::INVOICE_COLS;
    let queries = [
        deadlines::LAPSED_SQL.to_string(),
        deadlines::RESERVATION_ENDED_SQL.to_string(),
        deadlines::ORPHANS_SQL.to_string(),
        deadlines::DUE_INVOICES_SQL
            .replace("{COLS}", cols)
            .replace("{OF}", ""),
        deadlines::DUE_INVOICES_SQL
            .replace("{COLS}", cols)
            .replace("{OF}", &deadlines::of_routers(Some(&["wg0".into()]), 3).0),
        deadlines::NEXT_LAPSE_SQL.to_string(),
        deadlines::OLDEST_PAID_UNTIL_SQL.to_string(),
        deadlines::YOUNG_HOLD_SQL.to_string(),
        deadlines::NEXT_CHECK_SQL.replace("{OF}", ""),
        deadlines::NEXT_CHECK_SQL.replace("{OF}", &deadlines::of_routers(Some(&["wg0".into()]), 1).0),
        deadlines::ACTIVE_SQL
            .replace("{COLS}", store::RENTAL_COLS)
            .replace("{OF}", ""),
        deadlines::ACTIVE_SQL
            .replace("{COLS}", store::RENTAL_COLS)
            .replace("{OF}", "AND router IN (?2)"),
        deadlines::UNPAID_OF_SQL.to_string(),
        // GET /v1/rentals/{key} and POST /v1/rentals.
        "SELECT * FROM rentals WHERE public_key = ?1 ORDER BY (released_at IS NULL) DESC, id DESC LIMIT 1".into(),
        "SELECT * FROM rentals WHERE public_key = ?1 AND released_at IS NULL".into(),
        format!("SELECT {cols} FROM invoices WHERE rental_id = ?1 AND state = 'open' AND expires_at > ?2 ORDER BY created_at DESC, rowid DESC LIMIT 1"),
    ];
    for (i, sql) in queries.into_iter().enumerate() {
        let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n(0, stmt.parameter_count())),
                |r| r.get(3),
            )
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if i < 10 {
            assert!(
                !plan.iter().any(|s| s.contains("TEMP B-TREE")),
                "{sql}\nsorts: {plan:?}"
            );
        }
        for step in &plan {
            let on_table = ["rentals", "invoices", "addresses", "r", "a", "i"]
                .iter()
                .any(|t| {
                    step.starts_with(&format!("SCAN {t}"))
                        || step.starts_with(&format!("SEARCH {t}"))
                });
            if on_table {
                assert!(
                    step.starts_with("SEARCH")
                        || step.contains("USING INDEX")
                        || step.contains("USING COVERING INDEX"),
                    "{sql}\nplans a table scan: {plan:?}"
                );
                assert!(
                    !step.starts_with("SCAN") || step.contains("invoices_due"),
                    "{sql}\nscans: {plan:?}"
                );
            }
        }
    }
}

/// Among 10,000 rentals paid far ahead, the lapse query steps through the one that is due,
/// not the others: SQLite counts the rows a statement visits.
#[test]
fn the_lapse_query_does_not_touch_unrelated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::open(&dir.path().join("db.sqlite")).unwrap();
    let addrs: Vec<std::net::Ipv4Addr> = (0..10_001u32)
        .map(|i| std::net::Ipv4Addr::from(0xC612_0000 + i))
        .collect();
    store::seed_addresses(&db, "t", &addrs).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for (i, a) in addrs.iter().enumerate() {
        let until = if i == 5_000 {
            1_000
        } else {
            1_000_000 + i as i64
        };
        paid(&tx, &format!("key{i}"), &a.to_string(), 0, until);
    }
    tx.commit().unwrap();
    drop(db);
    let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    let mut stmt = db.prepare(deadlines::LAPSED_SQL).unwrap();
    let due: Vec<i64> = stmt
        .query_map([500, 2_000], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(due.len(), 1);
    assert_eq!(stmt.get_status(StatementStatus::FullscanStep), 0);
    let steps = stmt.get_status(StatementStatus::VmStep);
    assert!(steps < 200, "{steps} virtual machine steps for one due row");
    // The same query over a range holding every row steps through all of them: the count
    // above measures what it claims.
    let mut stmt = db.prepare(deadlines::LAPSED_SQL).unwrap();
    let all = stmt
        .query_map([0, i64::MAX], |r| r.get::<_, i64>(0))
        .unwrap()
        .count();
    assert_eq!(all, 10_001);
    assert!(stmt.get_status(StatementStatus::VmStep) > 10_000);
}

#[test]
fn invoice_checks_are_often_while_young_then_rarer_and_never_past_expiry() {
    let inv = |created_at: i64, expires_at: i64| store::InvoiceRow {
        payment_hash: String::new(),
        rental_id: 1,
        bolt11: String::new(),
        amount_msat: 1,
        purpose: staticwire_api::InvoicePurpose::Activation,
        months: 1,
        state: staticwire_api::InvoiceState::Open,
        created_at,
        expires_at,
        settled_at: None,
        credit_secs: None,
        ledger_from_creation: false,
    };
    let i = inv(1_000, 4_600);
    assert_eq!(deadlines::next_check_ms(&i, 1_000_000, 200), 1_000_200);
    assert_eq!(deadlines::next_check_ms(&i, 1_600_000, 200), 1_630_000);
    assert_eq!(deadlines::next_check_ms(&i, 4_590_000, 200), 4_600_000);
    assert_eq!(deadlines::next_check_ms(&i, 4_600_000, 200), 4_630_000);
    assert_eq!(deadlines::next_check_ms(&i, 5_190_000, 200), 5_200_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_on_unpaid_holds_survives_a_restart() {
    if crate::db::testing_postgres() {
        // An in-process restart gets a fresh schema there; the SQLite run covers the column.
        eprintln!("SKIPPED on PostgreSQL: the SQLite run of this test covers it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let limits = LimitsConfig {
        max_unpaid_per_client: 3,
        invoice_burst: 100,
        ..LimitsConfig::default()
    };
    let s = server_in(dir.path(), "203.0.113.0/28", limits.clone()).await;
    let attacker = from("127.0.0.2");
    for _ in 0..3 {
        assert_eq!(s.rent(&attacker, &new_key()).await.0, 201);
    }
    assert_eq!(s.rent(&attacker, &new_key()).await.0, 429);
    drop(s);
    let s = server_in(dir.path(), "203.0.113.0/28", limits).await;
    let (st, v) = s.rent(&attacker, &new_key()).await;
    assert_eq!(st, 429, "the restart forgot the cap: {v}");
    assert_eq!(v["error"]["code"], "too_many_unpaid");
    assert_eq!(s.rent(&from("127.0.1.3"), &new_key()).await.0, 201);
}

/// The per-rental limits are not in a router's `get`: a restart with other limits in the
/// terms sends them to every peer the router already holds (before, the compare found the
/// peers right and sent nothing until each was admitted anew).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_the_terms_limits_reaches_the_peers_a_router_holds() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let router = uapi_router(&sock);
    let start = |bps: Option<u64>, smtp: bool| {
        let svc = Builder::new("203.0.113.0/24")
            .router_socket("router.sock")
            .sqlite_only()
            .config(move |c| {
                c.terms.rate_limit_bps = bps;
                c.terms.block_smtp = smtp;
            })
            .service(dir.path());
        Arc::new(svc)
    };
    let key = new_key();
    let peer = hex::encode(crate::feed::decode_key(&key).unwrap());
    let sent_to_peer = |sets: &Arc<Mutex<Vec<String>>>| -> Vec<String> {
        let mut v = sets.lock().unwrap();
        let out = v
            .iter()
            .filter_map(|s| {
                let at = s.find(&format!("public_key={peer}\n"))?;
                let rest = &s[at..];
                let end = rest[1..].find("public_key=").map_or(rest.len(), |e| e + 1);
                Some(rest[..end].to_string())
            })
            .collect();
        v.clear();
        out
    };
    let svc = start(None, false);
    let now = svc.clock().now();
    paid(&svc.db().unwrap(), &key, "203.0.113.10", now, now + DAY);
    svc.reconcile().await.unwrap();
    let first = sent_to_peer(&router.sets);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        !first[0].contains("rate_limit"),
        "no limits configured: {first:?}"
    );
    drop(svc);

    // Restarted with a bandwidth cap and SMTP blocked: the peer is sent them.
    let svc = start(Some(1_000_000), true);
    svc.reconcile().await.unwrap();
    let sent = sent_to_peer(&router.sets);
    assert_eq!(
        sent.len(),
        1,
        "the new limits never reached the peer: {sent:?}"
    );
    for line in [
        "rate_limit_bps=1000000",
        "rate_limit_pps=0",
        "block_smtp=true",
    ] {
        assert!(sent[0].contains(line), "{line} missing: {sent:?}");
    }
    // Compared again, or restarted with the same terms: nothing more to send.
    svc.reconcile().await.unwrap();
    drop(svc);
    let svc = start(Some(1_000_000), true);
    svc.reconcile().await.unwrap();
    assert_eq!(sent_to_peer(&router.sets), Vec::<String>::new());
    drop(svc);

    // The limits taken out of the terms: the peer is told there are none.
    let svc = start(None, false);
    svc.reconcile().await.unwrap();
    let sent = sent_to_peer(&router.sets);
    assert_eq!(sent.len(), 1, "{sent:?}");
    for line in ["rate_limit_bps=0", "rate_limit_pps=0", "block_smtp=false"] {
        assert!(sent[0].contains(line), "{line} missing: {sent:?}");
    }
    assert_eq!(router.peers.lock().unwrap().len(), 1);
}

/// Replicas split the invoice checks by the routers they hold leases on: the due invoices and
/// the next check are those of the rentals on the given routers only, none for no router,
/// every one for all.
#[test]
fn invoice_checks_are_those_of_the_routers_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::db::open(&dir.path().join("db.sqlite")).unwrap();
    for (i, router) in ["a", "b", "a"].iter().enumerate() {
        let address = std::net::Ipv4Addr::new(203, 0, 113, i as u8);
        store::seed_addresses(&db, router, &[address]).unwrap();
        let id =
            store::insert_rental(&db, &format!("key{i}"), &address.to_string(), router, 0).unwrap();
        let hash = format!("{i:064x}");
        store::insert_invoice(
            &db,
            &hash,
            id,
            "lnbcrt1",
            1_000,
            staticwire_api::InvoicePurpose::Activation,
            store::Credit::Months(1),
            0,
            3_600,
            "v1",
            1_000 * (i as i64 + 1),
        )
        .unwrap();
    }
    let due = |routers: Option<&[String]>| -> Vec<i64> {
        deadlines::due_invoices(&db, 10_000, 10, routers)
            .unwrap()
            .iter()
            .map(|inv| inv.rental_id)
            .collect()
    };
    let next = |routers: Option<&[String]>| {
        deadlines::next_deadlines(&db, 0, routers)
            .unwrap()
            .invoice_check_ms
    };
    let (a, b, none) = (["a".to_string()], ["b".to_string()], [] as [String; 0]);
    assert_eq!(due(None), vec![1, 2, 3]);
    assert_eq!(due(Some(&a)), vec![1, 3]);
    assert_eq!(due(Some(&b)), vec![2]);
    assert_eq!(due(Some(&none)), Vec::<i64>::new());
    assert_eq!(next(None), Some(1_000));
    assert_eq!(next(Some(&b)), Some(2_000));
    assert_eq!(next(Some(&none)), None);
}

/// A service with two routers: the test kit's "t" (203.0.113.0/25) and "b" (the other half).
fn two_routers(dir: &Path) -> Service {
    Builder::new("203.0.113.0/25")
        .sqlite_only()
        .config(|c| {
            let mut b = c.routers[0].clone();
            b.name = "b".into();
            b.pools = vec!["203.0.113.128/25".parse().unwrap()];
            c.routers.push(b);
        })
        .service(dir)
}

/// A replica checks the invoices of the routers it holds leases on, of all of them when it
/// runs every router (or before leases decide: a single control).
#[test]
fn a_replica_checks_the_invoices_of_its_routers() {
    let dir = tempfile::tempdir().unwrap();
    let svc = two_routers(dir.path());
    let a = svc.cfg().routers[0].name.clone();
    assert_eq!(svc.checked_routers(), None);
    svc.set_owned([a.clone()].into());
    assert_eq!(svc.checked_routers(), Some(vec![a.clone()]));
    svc.set_owned(Default::default());
    assert_eq!(svc.checked_routers(), Some(vec![]));
    svc.set_owned([a, "b".to_string()].into());
    assert_eq!(svc.checked_routers(), None);
}

/// The full compare reads the active rentals of the routers this replica runs, and nothing
/// when it runs none (the replica without the lease): that read is seconds at a million
/// rentals, and its work must not grow with rentals it has no router for.
#[test]
fn a_replica_compares_only_the_routers_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let svc = two_routers(dir.path());
    let now = svc.clock().now();
    let add = |router: &str, addresses: std::ops::Range<u32>| {
        let db = svc.db().unwrap();
        for a in addresses {
            let id = store::insert_rental(&db, &new_key(), &format!("203.0.113.{a}"), router, now)
                .unwrap();
            db.execute(
                "UPDATE rentals SET started_at = ?1, credited_secs = ?2 WHERE id = ?3",
                crate::sql::params![now, 30 * DAY, id],
            )
            .unwrap();
        }
    };
    add("t", 4..6);
    add("b", 130..131);
    let peers = |only: Option<&std::collections::HashSet<String>>| {
        let mut v: Vec<(String, usize)> = svc
            .sweep_at(now, only)
            .unwrap()
            .into_iter()
            .map(|(r, d)| (r, d.len()))
            .collect();
        v.sort();
        v
    };
    let (t, b) = ("t".to_string(), "b".to_string());
    assert_eq!(peers(None), [(b.clone(), 1), (t.clone(), 2)]);
    assert_eq!(peers(Some(&[t.clone()].into())), [(t.clone(), 2)]);
    svc.set_owned([b.clone()].into());
    assert_eq!(peers(None), [(b.clone(), 1)]);
    assert_eq!(peers(Some(&[t.clone()].into())), []);
    svc.set_owned(Default::default());
    assert_eq!(peers(None), []);
    let few = crate::space_tests::steps(&svc, || peers(None)).0;
    add("t", 10..110);
    let many = crate::space_tests::steps(&svc, || peers(None)).0;
    assert_eq!(few, many, "no router run, yet the rentals were read");
    svc.set_owned([t.clone()].into());
    assert_eq!(peers(None), [(t, 102)]);
}
