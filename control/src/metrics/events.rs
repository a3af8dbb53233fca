//! Metric events, recorded where they happen: HTTP requests, Lightning calls, reconciliations,
//! admissions. A leaf: every label is a `&'static str` kind or a name, never a type of
//! another module, so whoever records an event imports nothing but this.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use std::future::Future;
use std::time::Instant;

/// Counts every request by its route pattern (`/v1/rentals/{public_key}`, never the key itself, so
/// the number of series stays bounded), method and status, and times it.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    counter!("staticwire_control_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status)
    .increment(1);
    histogram!("staticwire_control_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

tokio::task_local! {
    /// The API a request came through, when not `/v1`.
    static API: &'static str;
}

/// Runs `f` as a request of `api` (what [`request_api`] answers inside it).
pub async fn within_api<F: Future>(api: &'static str, f: F) -> F::Output {
    API.scope(api, f).await
}

/// Marks requests of the original client's protocol, so their invoices are counted as its.
pub async fn compat_api(req: Request, next: Next) -> Response {
    within_api("2023", next.run(req)).await
}

/// The API the current request came through: `2023` inside [`compat_api`], else `v1`.
pub fn request_api() -> &'static str {
    API.try_with(|a| *a).unwrap_or("v1")
}

/// A failed call's kind in the series: the node could not be talked to (`unavailable`), or it
/// answered no (`refused`).
pub const UNAVAILABLE: &str = "unavailable";
pub const REFUSED: &str = "refused";

/// Records one call to the Lightning node: `Ok`, or the failure's kind ([`UNAVAILABLE`],
/// [`REFUSED`]).
pub fn lightning_call(
    backend: &'static str,
    op: &'static str,
    started: Instant,
    outcome: Result<(), &'static str>,
) {
    match outcome {
        Ok(()) => counter!("staticwire_control_lightning_requests_total",
            "backend" => backend, "op" => op, "result" => "ok")
        .increment(1),
        Err(kind) => lightning_error(backend, op, kind),
    }
    histogram!("staticwire_control_lightning_request_duration_seconds",
        "backend" => backend, "op" => op)
    .record(started.elapsed().as_secs_f64());
}

/// Records a failed call to the Lightning node (or a dropped settlement stream) of `kind`.
pub fn lightning_error(backend: &'static str, op: &'static str, kind: &'static str) {
    counter!("staticwire_control_lightning_requests_total",
        "backend" => backend, "op" => op, "result" => kind)
    .increment(1);
    counter!("staticwire_control_lightning_errors_total",
        "backend" => backend, "op" => op, "kind" => kind)
    .increment(1);
}

/// Whether the backend's settlement stream is up (1) or down, reconnecting (0): while it is
/// down payments are credited by the invoice checks alone.
pub fn settlement_stream(backend: &'static str, up: bool) {
    gauge!("staticwire_control_settlement_stream_up", "backend" => backend).set(if up {
        1.0
    } else {
        0.0
    });
}

/// What one reconciliation of a router changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub admitted: usize,
    pub removed: usize,
    /// Whether the interface (key, port) had to be set.
    pub interface: bool,
}

/// A reconciliation that did not get through (router down, socket refused, bad answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileFailed;

/// Records one reconciliation of `router`: what it changed, or that it failed.
pub fn reconciled(router: &str, result: Result<Reconciled, ReconcileFailed>) {
    let r = router.to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    match result {
        Ok(Reconciled {
            admitted,
            removed,
            interface,
        }) => {
            counter!("staticwire_control_reconcile_runs_total", "router" => r.clone(), "result" => "ok")
                .increment(1);
            for (kind, n) in [
                ("admitted", admitted as u64),
                ("removed", removed as u64),
                ("interface", u64::from(interface)),
            ] {
                counter!("staticwire_control_reconcile_changes_total",
                    "router" => r.clone(), "kind" => kind)
                .increment(n);
            }
            gauge!("staticwire_control_router_up", "router" => r.clone()).set(1.0);
            gauge!("staticwire_control_router_last_reconcile_timestamp_seconds", "router" => r)
                .set(now);
        }
        Err(ReconcileFailed) => {
            counter!("staticwire_control_reconcile_runs_total", "router" => r.clone(), "result" => "error")
                .increment(1);
            counter!("staticwire_control_reconcile_errors_total", "router" => r.clone())
                .increment(1);
            gauge!("staticwire_control_router_up", "router" => r).set(0.0);
        }
    }
}

/// A peer was admitted `since` after its payment was seen.
pub fn admitted(router: &str, since: Instant) {
    histogram!("staticwire_control_settlement_admission_seconds", "router" => router.to_string())
        .record(since.elapsed().as_secs_f64());
}

/// Records one batch of reverse-DNS UPDATE messages sent to the provider's DNS server:
/// `messages` taken, or the attempt failed.
pub fn rdns_update(result: Result<usize, ()>) {
    match result {
        Ok(n) => {
            counter!("staticwire_control_rdns_updates_total", "result" => "ok").increment(n as u64)
        }
        Err(()) => {
            counter!("staticwire_control_rdns_updates_total", "result" => "failed").increment(1)
        }
    }
}

/// Records a full compare of a reverse zone: how many records were wrong and repaired, and
/// how many are still out of sync afterwards (all of them when the compare itself failed).
pub fn rdns_compared(zone: &str, repaired: usize, out_of_sync: Option<usize>) {
    let z = zone.to_string();
    let result = if out_of_sync.is_some() { "ok" } else { "error" };
    counter!("staticwire_control_rdns_compares_total", "zone" => z.clone(), "result" => result)
        .increment(1);
    counter!("staticwire_control_rdns_repaired_total", "zone" => z.clone())
        .increment(repaired as u64);
    // A compare that could not run leaves the zone's state unknown: counted as out of sync.
    gauge!("staticwire_control_rdns_out_of_sync", "zone" => z.clone())
        .set(out_of_sync.unwrap_or(1) as f64);
    if out_of_sync == Some(0) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        gauge!("staticwire_control_rdns_last_sync_timestamp_seconds", "zone" => z).set(now);
    }
}
