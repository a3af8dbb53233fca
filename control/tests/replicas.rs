//! Two control replicas on one PostgreSQL, hammered through both at once with rentals (single
//! addresses and prefixes), double payments and renewals, while both poll the Lightning backend
//! and race to settle: every address is held at most once and every payment credited exactly
//! once. Then the replica holding a router's lease is killed with SIGKILL and the other takes
//! the lease over and keeps the router in line. The two routers are stand-ins speaking the
//! WireGuard UAPI on Unix sockets. Needs STATICWIRE_TEST_PG (ops/test.sh starts a server);
//! says SKIPPED without it.

use serde_json::{json, Value};
use staticwire_control::testkit::{Process, ProcessBuilder, ProcessConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Peers of a stand-in router: hex public key -> allowed IPs.
type Peers = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// A router stand-in: answers `get=1` with its peers and applies `set=1` bodies.
fn fake_router(path: &Path) -> Peers {
    let peers: Peers = Arc::default();
    let listener = UnixListener::bind(path).unwrap();
    let p = peers.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let p = p.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut lines = BufReader::new(conn).lines();
                let Some(Ok(first)) = lines.next() else {
                    return;
                };
                let mut body = Vec::new();
                for l in lines.by_ref() {
                    let Ok(l) = l else { return };
                    if l.is_empty() {
                        break;
                    }
                    body.push(l);
                }
                let mut out = String::new();
                if first == "get=1" {
                    out.push_str("private_key=00\nlisten_port=51820\n");
                    for (k, ips) in p.lock().unwrap().iter() {
                        out.push_str(&format!("public_key={k}\n"));
                        for ip in ips {
                            out.push_str(&format!("allowed_ip={ip}\n"));
                        }
                    }
                } else {
                    let mut peers = p.lock().unwrap();
                    let mut current = None;
                    for l in body {
                        let (k, v) = l.split_once('=').unwrap_or((&l, ""));
                        match k {
                            "public_key" => {
                                current = Some(v.to_string());
                                peers.entry(v.to_string()).or_default();
                            }
                            "remove" => {
                                if let Some(c) = current.take() {
                                    peers.remove(&c);
                                }
                            }
                            "replace_allowed_ips" => {
                                if let Some(c) = &current {
                                    peers.insert(c.clone(), Vec::new());
                                }
                            }
                            "allowed_ip" => {
                                if let Some(c) = &current {
                                    peers.entry(c.clone()).or_default().push(v.to_string());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                out.push_str("errno=0\n\n");
                let _ = w.write_all(out.as_bytes());
            });
        }
    });
    peers
}

/// A replica on its own port, its log in `log`.
fn start(cfg: &ProcessConfig, log: &Path) -> Process {
    cfg.start_with(std::fs::File::create(log).unwrap())
}

fn key(i: u32, salt: u32) -> String {
    let mut k = [7u8; 32];
    // Not in byte 0, whose low three bits X25519 clears: the keys would collide.
    k[1..5].copy_from_slice(&i.to_le_bytes());
    k[5..9].copy_from_slice(&salt.to_le_bytes());
    staticwire_control::proving::hold(k)
}

fn url_key(k: &str) -> String {
    k.replace('+', "-").replace('/', "_")
}

async fn post(c: &staticwire_control::proving::Client, url: String, body: Value) -> (u16, Value) {
    match c.post(url).json(&body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!(e.to_string())),
    }
}

/// One customer: rents through one replica, pays through both at once, renews through the
/// other and pays that twice too. Returns (public key, monthly price it paid) when it got
/// its rental.
async fn customer(
    c: staticwire_control::proving::Client,
    bases: [String; 2],
    i: u32,
) -> Option<(String, u64)> {
    let k = key(i, 1);
    let (a, b) = (&bases[(i % 2) as usize], &bases[1 - (i % 2) as usize]);
    let prefix = [32, 32, 31, 30][(i % 4) as usize];
    let body = json!({"public_key": k, "prefix_len": prefix});
    // The same rental asked for through both replicas at once.
    let (r1, r2) = tokio::join!(
        post(&c, format!("{a}/v1/rentals"), body.clone()),
        post(&c, format!("{b}/v1/rentals"), body)
    );
    let rent = [r1, r2].into_iter().find(|(s, _)| *s == 201)?.1;
    let bolt11 = rent["invoice"]["bolt11"].as_str()?.to_string();
    let amount = rent["invoice"]["amount_sat"].as_u64()?;
    let pay = json!({ "bolt11": bolt11 });
    let _ = tokio::join!(
        post(&c, format!("{a}/v1/dev/pay"), pay.clone()),
        post(&c, format!("{b}/v1/dev/pay"), pay)
    );
    let monthly = amount - 48_000;
    // Renew through the other replica once the first payment is credited.
    for _ in 0..200 {
        let (s, r) = post(
            &c,
            format!("{b}/v1/rentals/{}/renewals", url_key(&k)),
            json!({"months": 1}),
        )
        .await;
        if s == 201 {
            let pay = json!({ "bolt11": r["invoice"]["bolt11"] });
            let _ = tokio::join!(
                post(&c, format!("{a}/v1/dev/pay"), pay.clone()),
                post(&c, format!("{b}/v1/dev/pay"), pay)
            );
            return Some((k, monthly));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("customer {i} could not renew");
}

fn pg(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

#[test]
fn two_replicas_never_double_allocate_nor_double_credit_and_hand_over_the_lease() {
    let Ok(server) = std::env::var("STATICWIRE_TEST_PG") else {
        eprintln!("SKIPPED two_replicas_...: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A database of our own on the test server.
    let db_name = format!("swt_replicas_{}", std::process::id());
    let mut admin = pg(&server);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .unwrap();
    let url = format!("{}/{db_name}", server.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let (sock_a, sock_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let routers: HashMap<&str, Peers> =
        [("a", fake_router(&sock_a)), ("b", fake_router(&sock_b))].into();
    // Both replicas share the data dir for the keys (router keys, dev node, TLS); the state
    // is all in PostgreSQL.
    let cfg = ProcessBuilder::new(
        dir.path(),
        &format!(
            "database = \"{url}\"\ninvoice_poll_millis = 50\n\
             reconcile_interval_secs = 1\n\
             [limits]\nmax_unpaid_per_client = 1000\nburst = 100000\nper_second = 100000.0\ninvoice_burst = 100000\ninvoices_per_minute = 1000000.0\n\
             [[routers]]\nname = \"a\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\n\
             pools = [\"203.0.113.0/26\"]\nipv6_pool = \"2001:db8:100::/48\"\n\
             [[routers]]\nname = \"b\"\nsocket = \"{}\"\nendpoint = \"198.18.0.2:51820\"\n\
             pools = [\"203.0.113.64/26\"]\n",
            sock_a.display(),
            sock_b.display()
        ),
    )
    .listen_flag()
    .arg("--dev-hooks")
    .write();
    let mut replicas = vec![
        start(&cfg, &dir.path().join("r0.log")),
        start(&cfg, &dir.path().join("r1.log")),
    ];
    let bases = [replicas[0].url(), replicas[1].url()];

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = staticwire_control::proving::Client::new();
    // One proof is good at one replica only (the replay cache is in the database): the same
    // proven rent sent to the other is a replay, and holds nothing more.
    rt.block_on(async {
        let raw = reqwest::Client::new();
        let terms: Value = raw
            .get(format!("{}/v1/terms", bases[0]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let body = json!({ "public_key": key(4242, 3) }).to_string();
        let auth = staticwire_control::proving::authorization(
            &terms,
            "POST",
            "/v1/rentals",
            body.as_bytes(),
        )
        .unwrap();
        let mut answers = Vec::new();
        for base in &bases {
            let r = raw
                .post(format!("{base}/v1/rentals"))
                .header("content-type", "application/json")
                .header("authorization", &auth)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            answers.push((st, v["error"]["code"].as_str().map(str::to_string)));
        }
        assert_eq!(
            answers,
            [(201, None), (401, Some("proof_replayed".to_string()))]
        );
    });
    let customers = 48;
    let done: Vec<(String, u64)> = rt.block_on(async {
        let tasks: Vec<_> = (0..customers)
            .map(|i| tokio::spawn(customer(http.clone(), bases.clone(), i)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.extend(t.await.unwrap());
        }
        out
    });
    eprintln!(
        "{} of {customers} customers rented, paid and renewed",
        done.len()
    );
    assert!(
        done.len() >= 40,
        "pools hold 62 + 61 addresses: only {} rentals",
        done.len()
    );

    let mut db = pg(&url);
    // Both replicas settle by polling; wait until no paid invoice is left open.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM invoices i JOIN dev_invoices d USING (payment_hash)
                 WHERE d.settled_at IS NOT NULL AND i.state <> 'settled'",
                &[],
            )
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} paid invoices never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every address at most once: the blocks of live rentals never overlap, and no IPv6
    // prefix is held twice.
    let rows = db
        .query(
            "SELECT a.num, r.prefix_len, r.ipv6, r.public_key FROM rentals r
             JOIN addresses a ON a.address = r.address WHERE r.released_at IS NULL",
            &[],
        )
        .unwrap();
    let mut covered = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for r in &rows {
        let (base, len): (i64, i64) = (r.get(0), r.get(1));
        for n in base..base + (1 << (32 - len)) {
            assert!(covered.insert(n), "address {n} held twice");
        }
        if let Some(p) = r.get::<_, Option<String>>(2) {
            assert!(v6.insert(p.clone()), "{p} held twice");
        }
    }
    let keys: BTreeSet<String> = rows.iter().map(|r| r.get(3)).collect();
    assert_eq!(keys.len(), rows.len(), "a key with two live rentals");

    // Every payment credited exactly once: one payment per paid invoice, one "payment" event
    // per payment, and each customer's ledger holds exactly its two months.
    let one = |sql: &str| -> i64 { pg(&url).query_one(sql, &[]).unwrap().get(0) };
    let paid = one("SELECT COUNT(*) FROM dev_invoices WHERE settled_at IS NOT NULL");
    assert_eq!(one("SELECT COUNT(*) FROM payments"), paid);
    assert_eq!(
        one("SELECT COUNT(*) FROM events WHERE kind = 'payment'"),
        paid
    );
    assert_eq!(
        paid,
        2 * done.len() as i64,
        "one activation and one renewal each"
    );
    let month = 30 * 86_400i64;
    for (k, monthly) in &done {
        let r = db
            .query_one(
                "SELECT r.credited_secs, CAST(COALESCE(SUM(p.amount_msat), 0) AS BIGINT)
                 FROM rentals r LEFT JOIN payments p ON p.rental_id = r.id
                 WHERE r.public_key = $1 AND r.released_at IS NULL GROUP BY r.id",
                &[k],
            )
            .unwrap();
        let (secs, msat): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(secs, 2 * month, "{k}: credited {secs} s");
        assert_eq!(
            msat as u64,
            (48_000 + 2 * monthly) * 1000,
            "{k}: paid {msat} msat"
        );
    }

    // Each router holds exactly the active rentals placed on it (reconciled by its lease
    // holder, admitted by whichever replica settled).
    for (name, peers) in &routers {
        let want: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM rentals WHERE router = $1 AND released_at IS NULL AND started_at IS NOT NULL",
                &[&name.to_string()],
            )
            .unwrap()
            .get(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while peers.lock().unwrap().len() as i64 != want {
            assert!(
                Instant::now() < deadline,
                "router {name}: {} peers, {want} active",
                peers.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // A long-poll on one replica answers when the other settles the invoice.
    let (s, v) = rt.block_on(post(
        &http,
        format!("{}/v1/rentals", bases[0]),
        json!({"public_key": key(999, 2)}),
    ));
    assert_eq!(s, 201, "{v}");
    let hash = v["invoice"]["payment_hash"].as_str().unwrap().to_string();
    let waiter = {
        let (http, url) = (
            http.clone(),
            format!("{}/v1/invoices/{hash}?wait=30", bases[0]),
        );
        rt.spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (s, _) = rt.block_on(post(
        &http,
        format!("{}/v1/dev/pay", bases[1]),
        json!({"bolt11": v["invoice"]["bolt11"]}),
    ));
    assert_eq!(s, 200);
    let paid = Instant::now();
    let answered = rt.block_on(waiter).unwrap();
    eprintln!(
        "long-poll on the other replica answered {} ms after the payment",
        paid.elapsed().as_millis()
    );
    assert_eq!(answered["state"], "settled", "{answered}");

    // The lease of router a: held by one replica; kill it, the other takes over.
    let holder = |db: &mut postgres::Client| -> Option<String> {
        db.query_opt("SELECT holder FROM leases WHERE name = 'router:a'", &[])
            .unwrap()
            .map(|r| r.get(0))
    };
    let pid_of = |h: &str| h.split(':').nth(1).and_then(|p| p.parse::<u32>().ok());
    let before = holder(&mut db).expect("router a has a lease holder");
    let victim = replicas
        .iter()
        .position(|r| Some(r.id()) == pid_of(&before))
        .expect("the holder is one of ours");
    let killed = Instant::now();
    replicas[victim].kill();
    let survivor_pid = replicas[1 - victim].id();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if holder(&mut db).as_deref().and_then(pid_of) == Some(survivor_pid) {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was not taken over");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "lease of router a handed over {} ms after its holder was killed",
        killed.elapsed().as_millis()
    );
    // The survivor now runs router a: a peer added behind the control's back is removed.
    routers["a"]
        .lock()
        .unwrap()
        .insert("ab".repeat(32), vec!["203.0.113.99/32".into()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while routers["a"].lock().unwrap().contains_key(&"ab".repeat(32)) {
        assert!(
            Instant::now() < deadline,
            "the new lease holder does not reconcile router a"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(replicas);
    drop(db);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"));
}
