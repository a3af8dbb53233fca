//! Load driver for `benches/control.sh`: seeds rentals straight into the control's SQLite
//! database (its own schema, made by the control first), then measures the control over HTTP
//! (rentals created per second, status lookups per second and their latency) and, standing in
//! for a router on a UAPI socket, how late peers leave after their paid-until. Every request
//! on a rental carries its proof of key possession (PROTOCOL.md 3.1), as a customer's does:
//! `k(i)` is a private key, the rental is its public key's.
//!
//! control_load seed DB FROM TO BASE_IP PAID_UNTIL   active rentals of keys k(FROM..TO) at BASE_IP+i
//! control_load rent URL COUNT CONCURRENCY [RATE]  POST /v1/rentals with new keys (RATE: paced)
//! control_load status URL N COUNT CONCURRENCY  GET /v1/rentals/{k(i)} for random i < N
//! control_load config URL N COUNT CONCURRENCY  GET /v1/rentals/{k(i)}/config likewise
//! control_load router SOCKET                   a UAPI endpoint printing "removed <ms> <key>" lines
//! control_load lag LOG FROM TO T0              expiry lag of k(FROM..TO), paid until T0 + (i-FROM) % 10
//! control_load unpaid DB FROM TO BASE_IP       pending rentals k(FROM..TO), each with an open
//!                                              invoice the dev node has settled (paid while the
//!                                              control was down)
//! control_load settled DB COUNT                waits until COUNT payments are credited; the rate
//! control_load terms URL STOPFILE CONCURRENCY  GET /v1/terms until STOPFILE exists

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use staticwire_api::proof::{proof_public_key, Prover};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `i`-th seeded private key: deterministic, so lookups need not read the database.
fn key(i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5157_0000_0000_0001;
    for chunk in out.chunks_mut(8) {
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out[0] |= 1;
    out[31] &= 0x7f;
    out
}

/// The public key of the `i`-th key: the rental's.
fn public(i: u64) -> [u8; 32] {
    proof_public_key(&key(i))
}

/// The server's proof key, from its terms.
async fn proof_key(c: &reqwest::Client, url: &str) -> [u8; 32] {
    let terms: serde_json::Value = c
        .get(format!("{url}/v1/terms"))
        .send()
        .await
        .expect("terms")
        .json()
        .await
        .expect("terms JSON");
    let k = STANDARD
        .decode(terms["proof_key"].as_str().expect("terms.proof_key"))
        .expect("proof_key base64");
    k.try_into().expect("32 bytes")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn seed(db: &str, from: u64, to: u64, base: std::net::Ipv4Addr, paid_until: i64) {
    let started = Instant::now();
    let mut c = rusqlite::Connection::open(db).expect("open database");
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut addr = tx
            .prepare(
                "INSERT INTO addresses(address, num, router) VALUES (?1, ?2, 'wg0')
                 ON CONFLICT(address) DO NOTHING",
            )
            .unwrap();
        let mut rental = tx
            .prepare(
                "INSERT INTO rentals(public_key, address, router, created_at, started_at, credited_secs)
                 VALUES (?1, ?2, 'wg0', ?3, ?3, ?4)",
            )
            .unwrap();
        let start = paid_until - 30 * 86_400;
        for i in from..to {
            let num = u32::from(base) + i as u32;
            let a = std::net::Ipv4Addr::from(num).to_string();
            addr.execute(rusqlite::params![a, num]).unwrap();
            rental
                .execute(rusqlite::params![
                    STANDARD.encode(public(i)),
                    a,
                    start,
                    paid_until - start
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    println!(
        "seeded {} rentals in {:.1} s",
        to - from,
        started.elapsed().as_secs_f64()
    );
}

/// Pending rentals with one open activation invoice each, already settled at the dev node: the
/// control credits them when it checks its open invoices (a burst of payments after an outage).
fn unpaid(db: &str, from: u64, to: u64, base: std::net::Ipv4Addr) {
    let mut c = rusqlite::Connection::open(db).expect("open database");
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    let now = now_ms() / 1000;
    let tx = c.transaction().unwrap();
    {
        let mut addr = tx
            .prepare(
                "INSERT INTO addresses(address, num, router) VALUES (?1, ?2, 'wg0')
                 ON CONFLICT(address) DO NOTHING",
            )
            .unwrap();
        let mut rental = tx
            .prepare(
                "INSERT INTO rentals(public_key, address, router, created_at) VALUES (?1, ?2, 'wg0', ?3)",
            )
            .unwrap();
        let mut invoice = tx
            .prepare(
                "INSERT INTO invoices(payment_hash, rental_id, bolt11, amount_msat, purpose, months, state, created_at, expires_at, next_check_ms)
                 VALUES (?1, ?2, 'lnbcrt-seeded', 1000000, 'activation', 1, 'open', ?3, ?4, 0)",
            )
            .unwrap();
        let mut dev = tx
            .prepare(
                "INSERT INTO dev_invoices(payment_hash, preimage, bolt11, amount_msat, expires_at, settled_at)
                 VALUES (?1, ?1, 'lnbcrt-seeded', 1000000, ?2, ?3)",
            )
            .unwrap();
        for i in from..to {
            let num = u32::from(base) + i as u32;
            let a = std::net::Ipv4Addr::from(num).to_string();
            addr.execute(rusqlite::params![a, num]).unwrap();
            rental
                .execute(rusqlite::params![STANDARD.encode(key(i)), a, now])
                .unwrap();
            let id = tx.last_insert_rowid();
            let hash = hex::encode(key(i ^ (1 << 50)));
            invoice
                .execute(rusqlite::params![hash, id, now, now + 3600])
                .unwrap();
            dev.execute(rusqlite::params![hash, now + 3600, now])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    println!("seeded {} unpaid rentals with settled invoices", to - from);
}

/// Polls the payments until `count` are credited: settlements per second from the first to
/// the last (each credited once: payments are unique by payment hash).
fn settled(db: &str, count: i64) {
    let c = rusqlite::Connection::open(db).expect("open database");
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0))
            .unwrap_or(0);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= count || started.elapsed() > Duration::from_secs(600) {
            let took = first.map_or(Duration::ZERO, |f| f.elapsed());
            let dup: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM (SELECT rental_id FROM payments GROUP BY rental_id HAVING COUNT(*) > 1)",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(-1);
            println!(
                "settlement: {n} of {count} invoices credited in {:.2} s after the first: {:.0}/s; rentals credited twice: {dup}",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64().max(1e-3)
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET /v1/terms on `conc` paced workers until the file `stop` exists (beside another load).
async fn terms(url: String, stop: String, conc: usize) {
    let c = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, stop) = (c.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            while !std::path::Path::new(&stop).exists() {
                let t = Instant::now();
                match c.get(format!("{url}/v1/terms")).send().await {
                    Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
                // Paced (about 100/s per worker): a visitor's load, not a second flood.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    report("GET /v1/terms", lat, errors, started.elapsed());
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn report(what: &str, mut lat: Vec<Duration>, errors: usize, took: Duration) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{what}: {} ok, {errors} errors in {:.2} s = {:.0}/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        lat.len(),
        took.as_secs_f64(),
        lat.len() as f64 / took.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// Runs `count` requests made by `req(i)` on `conc` workers.
/// `count` requests `req(i)` on `conc` workers; with `rate`, request `i` is not sent before
/// `i / rate` seconds from the start (an offered load, not a flood).
async fn drive<F, Fut>(what: &str, count: usize, conc: usize, rate: Option<f64>, req: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let req = Arc::new(req);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (req, next) = (req.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return (lat, errors);
                }
                if let Some(r) = rate {
                    let at = started + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(at.into()).await;
                }
                let t = Instant::now();
                if req(i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    report(what, lat, errors, started.elapsed());
}

/// `urls`: one control, or several replicas (comma-separated; request `i` goes to the
/// `i mod n`-th, proven with that replica's proof key).
async fn rent(urls: String, count: usize, conc: usize, rate: Option<f64>) {
    let c = client();
    let mut replicas = Vec::new();
    for url in urls.split(',') {
        replicas.push((url.to_string(), proof_key(&c, url).await));
    }
    let replicas = Arc::new(replicas);
    let salt: u64 = rand::random();
    drive("POST /v1/rentals", count, conc, rate, move |i| {
        let (c, replicas) = (c.clone(), replicas.clone());
        async move {
            let (url, server) = &replicas[i % replicas.len()];
            let private = key(salt ^ (1 << 40) ^ i as u64);
            let prover = Prover::new(&private, server).expect("a usable proof key");
            let body = serde_json::json!({ "public_key": STANDARD.encode(prover.public_key()) })
                .to_string();
            let proof = prover.prove("POST", "/v1/rentals", body.as_bytes());
            let r = c
                .post(format!("{url}/v1/rentals"))
                .header("content-type", "application/json")
                .header("authorization", proof.header_value())
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 201 => true,
                Ok(r) => {
                    eprintln!(
                        "rent: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    false
                }
                Err(e) => {
                    eprintln!("rent: {e}");
                    false
                }
            }
        }
    })
    .await;
}

async fn status(url: String, n: u64, count: usize, conc: usize, config: bool) {
    let c = client();
    let server = proof_key(&c, &url).await;
    let (name, tail) = match config {
        true => ("GET /v1/rentals/{key}/config", "/config"),
        false => ("GET /v1/rentals/{key}", ""),
    };
    drive(name, count, conc, None, move |_| {
        let (c, url) = (c.clone(), url.clone());
        let i = rand::random::<u64>() % n;
        async move {
            let prover = Prover::new(&key(i), &server).expect("a usable proof key");
            let target = format!("/v1/rentals/{}{tail}", URL_SAFE.encode(prover.public_key()));
            let proof = prover.prove("GET", &target, b"");
            matches!(c.get(format!("{url}{target}"))
                .header("authorization", proof.header_value()).send().await,
                Ok(r) if r.status().as_u16() == 200)
        }
    })
    .await;
}

/// Answers UAPI like a router (every `set` accepted, `get` with no peers) and prints when
/// each removal arrives.
async fn router(socket: String) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::with_capacity(1 << 16, r).lines();
            let mut key = String::new();
            let mut out = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.is_empty() {
                    break;
                }
                if let Some(k) = line.strip_prefix("public_key=") {
                    key = k.to_string();
                } else if line == "remove=true" {
                    out.push_str(&format!("removed {} {key}\n", now_ms()));
                }
            }
            print!("{out}");
            let _ = w.write_all(b"errno=0\n\n").await;
        });
    }
}

/// Expiry lag: when each peer's removal arrived after its paid-until.
fn lag(log: &str, from: u64, to: u64, t0: i64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut at = std::collections::HashMap::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        if let (Some("removed"), Some(ms), Some(k)) = (f.next(), f.next(), f.next()) {
            at.entry(k.to_string())
                .or_insert(ms.parse::<i64>().unwrap_or(0));
        }
    }
    let mut lags = Vec::new();
    for i in from..to {
        let due_ms = (t0 + ((i - from) % 10) as i64) * 1000;
        if let Some(ms) = at.get(&hex::encode(public(i))) {
            lags.push(ms - due_ms);
        }
    }
    lags.sort();
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "expiry lag: {} of {} peers removed; ms after paid-until p50 {} p99 {} max {} (min {})",
        lags.len(),
        to - from,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lags.first().copied().unwrap_or(-1)
    );
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<u64>().expect("a number");
    match arg(0).as_str() {
        "seed" => seed(
            &arg(1),
            num(2),
            num(3),
            arg(4).parse().expect("BASE_IP"),
            arg(5).parse().expect("PAID_UNTIL"),
        ),
        "unpaid" => unpaid(&arg(1), num(2), num(3), arg(4).parse().expect("BASE_IP")),
        "settled" => settled(&arg(1), num(2) as i64),
        "terms" => terms(arg(1), arg(2), num(3) as usize).await,
        "lag" => lag(&arg(1), num(2), num(3), num(4) as i64),
        "rent" => {
            let rate = std::env::args()
                .nth(5)
                .map(|r| r.parse().expect("RATE per second"));
            rent(arg(1), num(2) as usize, num(3) as usize, rate).await
        }
        "status" => status(arg(1), num(2), num(3) as usize, num(4) as usize, false).await,
        "config" => status(arg(1), num(2), num(3) as usize, num(4) as usize, true).await,
        "router" => router(arg(1)).await,
        "key" => println!("{}", hex::encode(public(num(1)))),
        _ => {
            eprintln!(
                "usage: control_load seed|rent|status|config|router|key ... (see the source)"
            );
            std::process::exit(2);
        }
    }
}
