//! The scrape side of `/metrics`: the recorder, the listener, and the state series read from
//! the database at each scrape. A face over the service.

use crate::metrics::events;
use crate::service::{Service, ServiceError};
use crate::sql::Connection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use staticwire_api::RentalState;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// Why the recorder could not be set, or the state not read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Database(#[from] crate::sql::Error),
}

/// Latency buckets (seconds) of every histogram: a local dev backend answers in well under a
/// millisecond, a remote node in tens of milliseconds, a stuck one in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn describe() {
    describe_gauge!(
        "staticwire_control_build_info",
        "Always 1; the version is a label"
    );
    describe_gauge!(
        "staticwire_control_rentals",
        "Rentals by state (pending, active, lapsed, suspended, released)"
    );
    describe_gauge!(
        "staticwire_control_addresses",
        "Addresses per router and pool: free, held (pending invoice), used (a started rental), cooldown"
    );
    describe_counter!(
        "staticwire_control_invoices_created_total",
        "Invoices made, by purpose (activation, renewal)"
    );
    describe_counter!(
        "staticwire_control_invoices_settled_total",
        "Invoices paid, by purpose"
    );
    describe_counter!(
        "staticwire_control_invoices_expired_total",
        "Invoices that expired unpaid, by purpose"
    );
    describe_gauge!(
        "staticwire_control_settlement_stream_up",
        "1 while the Lightning backend's settlement stream is up; 0 while it reconnects (payments then credited by the invoice checks alone, every 10 s at best)"
    );
    describe_gauge!(
        "staticwire_control_invoices_open",
        "Invoices awaiting payment"
    );
    describe_counter!(
        "staticwire_control_received_sat_total",
        "Satoshis received, by the API that sold them (v1, 2023, credit)"
    );
    describe_counter!(
        "staticwire_control_payments_total",
        "Payments credited, by API"
    );
    describe_histogram!(
        "staticwire_control_settlement_admission_seconds",
        "From the control seeing a settlement to the router admitting the peer"
    );
    describe_counter!(
        "staticwire_control_reconcile_runs_total",
        "Reconciliations of a router, by result (ok, error)"
    );
    describe_counter!(
        "staticwire_control_reconcile_changes_total",
        "Differences a reconciliation applied to a router (admitted, removed, interface)"
    );
    describe_counter!(
        "staticwire_control_reconcile_errors_total",
        "Reconciliations that failed (router down, socket refused, bad answer)"
    );
    describe_gauge!(
        "staticwire_control_router_up",
        "1 if the latest reconciliation of the router succeeded"
    );
    describe_gauge!(
        "staticwire_control_router_last_reconcile_timestamp_seconds",
        "Unix time of the latest successful reconciliation"
    );
    describe_counter!(
        "staticwire_control_lightning_requests_total",
        "Calls to the Lightning node, by backend, operation and result (ok, unavailable, refused)"
    );
    describe_counter!(
        "staticwire_control_lightning_errors_total",
        "Failed calls to the Lightning node, by backend, operation and kind (unavailable, refused)"
    );
    describe_histogram!(
        "staticwire_control_lightning_request_duration_seconds",
        "Latency of calls to the Lightning node"
    );
    describe_counter!(
        "staticwire_control_http_requests_total",
        "HTTP requests by route (the pattern, never the key), method and status"
    );
    describe_histogram!(
        "staticwire_control_http_request_duration_seconds",
        "HTTP request latency by route"
    );
    describe_counter!(
        "staticwire_control_rdns_updates_total",
        "Reverse-DNS UPDATE messages sent to the provider's DNS server, by result (ok, failed)"
    );
    describe_counter!(
        "staticwire_control_rdns_compares_total",
        "Full compares of a reverse zone with the control's record, by zone and result (ok, error)"
    );
    describe_counter!(
        "staticwire_control_rdns_repaired_total",
        "PTR records a full compare found wrong or missing and rewrote, by zone"
    );
    describe_gauge!(
        "staticwire_control_rdns_out_of_sync",
        "PTR records of the zone that differ from the control's record after the latest compare (1 when it could not run)"
    );
    describe_gauge!(
        "staticwire_control_rdns_last_sync_timestamp_seconds",
        "Unix time the zone last matched the control's record"
    );
    describe_gauge!(
        "staticwire_control_data_dir_free_bytes",
        "Bytes available to the control in the filesystem of its data dir"
    );
    describe_gauge!(
        "staticwire_control_data_dir_size_bytes",
        "Size of the filesystem of the data dir"
    );
    describe_gauge!(
        "staticwire_control_database_bytes",
        "Size of the SQLite database with its write-ahead log"
    );
}

/// Sets the process-wide recorder; from then on every event is counted.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()?;
    describe();
    gauge!("staticwire_control_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Starts the error counters at zero, so `rate()` sees the first error and the alert rules'
/// series exist on a healthy host.
pub fn init(s: &Service) {
    let backend = s.ln().kind();
    for op in [
        "create_invoice",
        "invoice_status",
        "ready",
        "settlement_stream",
    ] {
        for kind in [events::UNAVAILABLE, events::REFUSED] {
            counter!("staticwire_control_lightning_errors_total",
                "backend" => backend, "op" => op, "kind" => kind)
            .absolute(0);
        }
    }
    for r in s.routers() {
        counter!("staticwire_control_reconcile_errors_total", "router" => r.name.clone())
            .absolute(0);
    }
}

/// Serves `GET /metrics` on `addr` (already bound by the caller so errors surface at start).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    handle: PrometheusHandle,
) {
    type Scraped = (Arc<Service>, PrometheusHandle, Arc<tokio::sync::Mutex<()>>);
    async fn scrape(State((s, h, reading)): State<Scraped>) -> Response {
        // One read at a time: a scrape arriving during one waits for it and answers what it
        // read (several Prometheus servers, or a short interval, cost one read a round).
        match reading.try_lock() {
            Ok(_reading) => {
                // Seconds at a million rentals: on a blocking thread, not a runtime worker.
                let s = s.clone();
                match tokio::task::spawn_blocking(move || refresh(&s)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("metrics: {e}"),
                    Err(e) => tracing::warn!("metrics: the read failed: {e}"),
                }
            }
            Err(_) => drop(reading.lock().await),
        }
        ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response()
    }
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state((service, handle, Arc::new(tokio::sync::Mutex::new(()))));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics listener: {e}");
    }
}

/// Reads the state series from the database, on a connection of its own
/// ([`Service::long_read`]: seconds at a million rentals, which no placement, settlement or
/// lookup waits for).
pub fn refresh(s: &Service) -> Result<(), MetricsError> {
    s.long_read(|db| state_series(s, db))?;
    // The data dir's disk.
    if let Some((free, size)) = disk(&s.cfg().data_dir) {
        gauge!("staticwire_control_data_dir_free_bytes").set(free as f64);
        gauge!("staticwire_control_data_dir_size_bytes").set(size as f64);
    }
    let db_path = s.cfg().db_path();
    let mut bytes = 0;
    for suffix in ["", "-wal"] {
        let mut p = db_path.clone().into_os_string();
        p.push(suffix);
        bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    gauge!("staticwire_control_database_bytes").set(bytes as f64);
    Ok(())
}

/// Rentals by state, addresses by status, invoices and money, read through `db`.
fn state_series(s: &Service, db: &Connection) -> Result<(), MetricsError> {
    let now = s.clock().now();
    let e = MetricsError::from;
    // Rentals by state, and which address each live one occupies (row by row where the
    // database allows).
    let mut by_state: HashMap<&'static str, u64> =
        ["pending", "active", "lapsed", "suspended", "released"]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
    let mut occupied: Vec<(u32, &'static str)> = Vec::new();
    let live = format!(
        "SELECT {} FROM rentals WHERE released_at IS NULL",
        crate::store::RENTAL_COLS
    );
    db.query_each(&live, [], |row| {
        let r = crate::store::rental(row)?;
        let state = r.account().state(s.terms(), now);
        *by_state.entry(state_name(state)).or_default() += 1;
        let status = if state == RentalState::Pending {
            "held"
        } else {
            "used"
        };
        // Every address of a prefix is occupied, not only its first.
        match r.networks_of().and_then(|n| n.v4) {
            Some(net) => {
                for a in u32::from(net.network())..=u32::from(net.broadcast()) {
                    occupied.push((a, status));
                }
            }
            None => {
                if let Ok(a) = r.address.parse::<Ipv4Addr>() {
                    occupied.push((u32::from(a), status));
                }
            }
        }
        Ok(())
    })
    .map_err(e)?;
    let released: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM rentals WHERE released_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    *by_state.entry("released").or_default() += released as u64;
    for (state, n) in by_state {
        gauge!("staticwire_control_rentals", "state" => state).set(n as f64);
    }
    // Addresses per router and pool.
    occupied.sort_unstable_by_key(|(a, _)| *a);
    occupied.dedup_by_key(|(a, _)| *a);
    let cooling = cooling(db, now).map_err(e)?;
    for rc in &s.cfg().routers {
        let addrs = rc.addresses();
        for pool in &rc.pools {
            let counts = address_counts(&addrs, pool, &occupied, &cooling);
            for (status, n) in counts {
                gauge!("staticwire_control_addresses",
                    "router" => rc.name.clone(), "pool" => pool.to_string(), "status" => status)
                .set(n as f64);
            }
        }
    }
    // Invoices, from the ledger: never deleted, so these only grow.
    let mut created: HashMap<String, u64> = HashMap::new();
    let mut settled: HashMap<String, u64> = HashMap::new();
    let mut expired: HashMap<String, u64> = HashMap::new();
    for p in ["activation", "renewal"] {
        created.insert(p.into(), 0);
        settled.insert(p.into(), 0);
        expired.insert(p.into(), 0);
    }
    let mut open = 0u64;
    {
        let mut stmt = db
            .prepare("SELECT purpose, state, COUNT(*) FROM invoices GROUP BY purpose, state")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (purpose, state, n) = row.map_err(e)?;
            let n = n.max(0) as u64;
            *created.entry(purpose.clone()).or_default() += n;
            match state.as_str() {
                "settled" => *settled.entry(purpose).or_default() += n,
                "expired" => *expired.entry(purpose).or_default() += n,
                _ => open += n,
            }
        }
    }
    for (name, map) in [
        ("staticwire_control_invoices_created_total", created),
        ("staticwire_control_invoices_settled_total", settled),
        ("staticwire_control_invoices_expired_total", expired),
    ] {
        for (purpose, n) in map {
            counter!(name, "purpose" => purpose).absolute(n);
        }
    }
    gauge!("staticwire_control_invoices_open").set(open as f64);
    // Money, by the API that sold it.
    let mut sat: HashMap<String, (u64, u64)> = ["v1", "2023", "credit"]
        .into_iter()
        .map(|a| (a.to_string(), (0, 0)))
        .collect();
    {
        let mut stmt = db
            .prepare(
                "SELECT i.api, CAST(COALESCE(SUM(p.amount_msat), 0) AS BIGINT) / 1000, COUNT(*)
                 FROM payments p JOIN invoices i ON i.payment_hash = p.payment_hash
                 GROUP BY i.api",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (api, total, n) = row.map_err(e)?;
            sat.insert(api, (total.max(0) as u64, n.max(0) as u64));
        }
    }
    for (api, (total, n)) in sat {
        counter!("staticwire_control_received_sat_total", "api" => api.clone()).absolute(total);
        counter!("staticwire_control_payments_total", "api" => api).absolute(n);
    }
    Ok(())
}

fn state_name(s: RentalState) -> &'static str {
    match s {
        RentalState::Pending => "pending",
        RentalState::Active => "active",
        RentalState::Lapsed => "lapsed",
        RentalState::Suspended => "suspended",
        RentalState::Released => "released",
    }
}

/// The addresses of `pool` among a router's `addrs` (sorted) by status: each occupied one
/// (`occupied`: sorted by address, one entry each) as its rental has it, a cooling one as
/// "cooldown", the rest "free". No lookup per address of the pool (a million at scale): the
/// occupied and the cooling are looked up in it instead.
fn address_counts(
    addrs: &[Ipv4Addr],
    pool: &ipnet::Ipv4Net,
    occupied: &[(u32, &'static str)],
    cooling: &HashSet<u32>,
) -> HashMap<&'static str, u64> {
    let of_pool = |a: u32| {
        let ip = Ipv4Addr::from(a);
        pool.contains(&ip) && addrs.binary_search(&ip).is_ok()
    };
    let mut counts: HashMap<&'static str, u64> = [("held", 0), ("used", 0)].into_iter().collect();
    let (first, last) = (u32::from(pool.network()), u32::from(pool.broadcast()));
    let from = occupied.partition_point(|(a, _)| *a < first);
    for &(a, status) in occupied[from..].iter().take_while(|(a, _)| *a <= last) {
        if of_pool(a) {
            *counts.entry(status).or_default() += 1;
        }
    }
    let occupied_at = |a: u32| occupied.binary_search_by_key(&a, |(o, _)| *o).is_ok();
    let cool = cooling
        .iter()
        .filter(|&&a| of_pool(a) && !occupied_at(a))
        .count() as u64;
    let total = addrs.iter().filter(|a| pool.contains(*a)).count() as u64;
    let taken: u64 = counts.values().sum::<u64>() + cool;
    counts.insert("cooldown", cool);
    counts.insert("free", total.saturating_sub(taken));
    counts
}

fn cooling(db: &Connection, now: i64) -> crate::sql::Result<HashSet<u32>> {
    let mut stmt = db.prepare("SELECT address FROM addresses WHERE cooldown_until > ?1")?;
    let rows = stmt.query_map([now], |r| r.get::<_, String>(0))?;
    let mut out = HashSet::new();
    for a in rows {
        if let Ok(a) = a?.parse::<Ipv4Addr>() {
            out.insert(u32::from(a));
        }
    }
    Ok(out)
}

/// (available, total) bytes of the filesystem holding `dir`.
fn disk(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Binds the metrics listener; refuses nothing, but says when it is not on loopback.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics listen address is not loopback: anyone who can reach it sees the business figures");
    }
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state series are read beside the writer's connection, not through it: a scrape
    /// (seconds at a million rentals) never holds up a placement, a settlement or an expiry.
    #[test]
    fn a_scrape_reads_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let svc = Arc::new(
            crate::testkit::Builder::new("203.0.113.0/28")
                .sqlite_only()
                .service(dir.path()),
        );
        let writer = svc.db().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = svc.clone();
        std::thread::spawn(move || {
            let _ = tx.send(refresh(&s).map_err(|e| e.to_string()));
        });
        let read = rx.recv_timeout(std::time::Duration::from_secs(60));
        drop(writer);
        read.expect("the scrape waited for the writer's connection")
            .unwrap();
    }

    /// Each address of the pool counted once, by the first status that holds: occupied (as
    /// its rental has it), cooling, free; reserved addresses and the pool's edges are not
    /// counted, nor anything outside the pool.
    #[test]
    fn addresses_are_counted_by_status() {
        let pool: ipnet::Ipv4Net = "203.0.113.0/28".parse().unwrap();
        let other: ipnet::Ipv4Net = "203.0.113.16/29".parse().unwrap();
        let ip = |last: u8| u32::from(Ipv4Addr::new(203, 0, 113, last));
        // .1 reserved; .0 and .15 are the pool's edges; .17–.22 the other pool's hosts.
        let mut addrs: Vec<Ipv4Addr> = pool.hosts().chain(other.hosts()).collect();
        addrs.retain(|a| *a != Ipv4Addr::from(ip(1)));
        addrs.sort();
        // A held /30 at .4, a used address at .9, a used one in the other pool; .9 is also
        // cooling (occupied wins), .12 and .18 are cooling, .1 (reserved) too.
        let mut occupied: Vec<(u32, &'static str)> = (4..8).map(|i| (ip(i), "held")).collect();
        occupied.extend([(ip(9), "used"), (ip(17), "used")]);
        occupied.sort_unstable();
        let cooling: HashSet<u32> = [ip(9), ip(12), ip(18), ip(1)].into_iter().collect();
        let c = address_counts(&addrs, &pool, &occupied, &cooling);
        // 14 hosts (.1–.14) less the reserved .1: 13.
        assert_eq!(c["held"], 4);
        assert_eq!(c["used"], 1);
        assert_eq!(c["cooldown"], 1);
        assert_eq!(c["free"], 13 - 4 - 1 - 1);
        let c = address_counts(&addrs, &other, &occupied, &cooling);
        assert_eq!(
            (c["held"], c["used"], c["cooldown"], c["free"]),
            (0, 1, 1, 4)
        );
        // The same as asking for each address of the pool in turn.
        for p in [pool, other] {
            let mut each: HashMap<&'static str, u64> = HashMap::new();
            for a in addrs
                .iter()
                .filter(|a| p.contains(*a))
                .map(|a| u32::from(*a))
            {
                let status = match occupied.iter().find(|(o, _)| *o == a) {
                    Some((_, s)) => *s,
                    None if cooling.contains(&a) => "cooldown",
                    None => "free",
                };
                *each.entry(status).or_default() += 1;
            }
            let mut fast = address_counts(&addrs, &p, &occupied, &cooling);
            fast.retain(|_, n| *n > 0);
            assert_eq!(fast, each, "{p}");
        }
    }
}
