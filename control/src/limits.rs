//! Limits on what one client can make the public listeners do: requests per client address
//! (token buckets, 429 with `Retry-After`), connections per client and in total, how long a
//! request head and body may take to arrive (slow-loris), how large a body may be (413), and
//! how long a request may run. Both listeners (`/v1` over HTTP, the original client's protocol
//! over HTTPS) go through [`serve`], so every public route is covered.
//!
//! A client is its IPv4 address, or its IPv6 /64 (one host usually owns a whole /64, so
//! counting single IPv6 addresses would limit nothing). The address is the TCP peer's, unless
//! the peer is one of `[limits] trusted_proxies`: then it is the rightmost address of the
//! request's `Forwarded` (or else `X-Forwarded-For`) that is not a trusted proxy
//! ([`forwarded_client`]). From anyone else those headers are ignored, since anyone can send
//! them.
//!
//! Its configuration, `[limits]`, is [`crate::config::LimitsConfig`].

use crate::config::LimitsConfig;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use staticwire_api::{codes, ErrorBody, ErrorDetail};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest request body a handler reads; real ones are under 100 bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Who a request counts against: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(IpAddr);

impl ClientId {
    /// The IPv4 address, or the first address of the IPv6 /64.
    pub fn ip(&self) -> IpAddr {
        self.0
    }

    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientId(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientId(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientId(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per client. Memory is bounded: past `MAX_CLIENTS` entries, buckets that
/// have refilled completely (which carry no information) are dropped, and if that is not
/// enough the map is cleared, which only ever errs towards letting requests through.
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<ClientId, Bucket>>,
}

const MAX_CLIENTS: usize = 100_000;

impl RateLimiter {
    pub fn new(burst: u32, per_sec: f64) -> Self {
        RateLimiter {
            burst: burst as f64,
            per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client`; when none is left, how long until one is.
    pub fn check(&self, client: ClientId, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            let (burst, rate) = (self.burst, self.per_sec);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_CLIENTS {
                map.clear();
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    /// Gives back the token `check` took for a request that turned out to cost nothing.
    pub fn refund(&self, client: ClientId) {
        let Ok(mut map) = self.buckets.lock() else {
            return;
        };
        if let Some(b) = map.get_mut(&client) {
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }
}

/// The limits shared by both listeners.
pub struct Limits {
    pub cfg: LimitsConfig,
    requests: RateLimiter,
    invoices: RateLimiter,
}

impl Limits {
    pub fn new(cfg: LimitsConfig) -> Arc<Self> {
        Arc::new(Limits {
            requests: RateLimiter::new(cfg.burst, cfg.per_second),
            invoices: RateLimiter::new(cfg.invoice_burst, cfg.invoices_per_minute / 60.0),
            cfg,
        })
    }
}

/// Routes that make a Lightning invoice: the expensive ones, limited separately.
pub fn makes_invoice(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && (path == "/v1/rentals"
            || (path.starts_with("/v1/rentals/") && path.ends_with("/renewals"))
            || path == "/api/rent/"
            || path == "/api/renew/"
            || path == "/api/AddCredit/")
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
        },
    };
    (status, axum::Json(body)).into_response()
}

/// The request's client, as [`serve`] recorded it.
pub fn client_of(req: &Request) -> Option<ClientId> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| ClientId::of(c.0.ip()))
}

/// Middleware: rate limits, then the body read whole within its size and time limits, then
/// the handler within the request timeout. An invoice-making request answered with a 4xx made
/// no invoice, and its invoice token is given back (PROTOCOL.md section 4: a client that
/// corrects a bad request is not locked out by its mistakes); it still counted as a request.
pub async fn enforce(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let mut invoice_token = None;
    if let Some(client) = client_of(&req) {
        let mut verdict = limits.requests.check(client, now);
        if verdict.is_ok() && makes_invoice(req.method(), req.uri().path()) {
            verdict = limits.invoices.check(client, now);
            if verdict.is_ok() {
                invoice_token = Some(client);
            }
        }
        if let Err(wait) = verdict {
            let secs = wait.as_secs() + 1;
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                format!("too many requests from {client}; retry in {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    }
    let resp = bounded(&limits.cfg, req, next).await;
    if let Some(client) = invoice_token {
        if resp.status().is_client_error() {
            limits.invoices.refund(client);
        }
    }
    resp
}

/// The body read whole within its size and time limits, then the handler within the request
/// timeout.
async fn bounded(cfg: &LimitsConfig, req: Request, next: Next) -> Response {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::TOO_LARGE,
            format!("bodies are limited to {} bytes", cfg.max_body_bytes),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, cfg.max_body_bytes);
    let bytes = match tokio::time::timeout(Duration::from_secs(cfg.body_timeout_secs), read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                codes::TIMEOUT,
                format!("the body must arrive within {} s", cfg.body_timeout_secs),
            )
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::time::timeout(Duration::from_secs(cfg.request_timeout_secs), next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::TIMEOUT,
            "the request took too long".into(),
        ),
    }
}

/// Wraps `app` in [`enforce`].
pub fn layer(app: axum::Router, limits: Arc<Limits>) -> axum::Router {
    app.layer(axum::middleware::from_fn_with_state(limits, enforce))
}

/// Counts open connections per client and in total; a permit frees its slot when dropped.
pub struct ConnectionCounter {
    per_client: usize,
    total: usize,
    open: Mutex<(usize, HashMap<ClientId, usize>)>,
}

pub struct ConnPermit {
    counter: Arc<ConnectionCounter>,
    client: ClientId,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Ok(mut g) = self.counter.open.lock() {
            g.0 = g.0.saturating_sub(1);
            if let Some(n) = g.1.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    g.1.remove(&self.client);
                }
            }
        }
    }
}

impl ConnectionCounter {
    pub fn new(per_client: usize, total: usize) -> Arc<Self> {
        Arc::new(ConnectionCounter {
            per_client,
            total,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a new connection of `client`, or None when it or the listener is full.
    pub fn admit(self: &Arc<Self>, client: ClientId) -> Option<ConnPermit> {
        self.admit_as(client, true)
    }

    /// [`ConnectionCounter::admit`]; `per_client` false counts the connection against the
    /// listener's total only (a trusted proxy's, which carry many clients).
    pub fn admit_as(self: &Arc<Self>, client: ClientId, per_client: bool) -> Option<ConnPermit> {
        let mut g = self.open.lock().ok()?;
        if g.0 >= self.total {
            return None;
        }
        let n = g.1.entry(client).or_insert(0);
        if per_client && *n >= self.per_client {
            return None;
        }
        *n += 1;
        g.0 += 1;
        Some(ConnPermit {
            counter: self.clone(),
            client,
        })
    }
}

/// Serves `app` on `listener` until `shutdown` resolves: every connection counted against its
/// client and the listener, its TLS handshake (when `tls` is given) and every request head
/// bounded in time, the client's address given to the handlers as `ConnectInfo`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Arc<Limits>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let counter = ConnectionCounter::new(
        limits.cfg.max_connections_per_client,
        limits.cfg.max_connections,
    );
    let app = layer(app, limits.clone());
    let header_timeout = Duration::from_secs(limits.cfg.header_timeout_secs);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let trusted = is_trusted(&limits.cfg.trusted_proxies, peer.ip());
        let Some(permit) = counter.admit_as(ClientId::of(peer.ip()), !trusted) else {
            tracing::debug!(%peer, "connection refused: too many open");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (app, tls, limits) = (app.clone(), tls.clone(), limits.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                // Handlers and the limits see the client: the peer, or behind a trusted proxy
                // the address it forwarded.
                let client = if trusted {
                    let ip =
                        forwarded_client(req.headers(), peer.ip(), &limits.cfg.trusted_proxies);
                    SocketAddr::new(ip, peer.port())
                } else {
                    peer
                };
                req.extensions_mut().insert(ConnectInfo(client));
                let mut app = app.clone();
                async move {
                    let req = req.map(Body::new);
                    tower::Service::call(&mut app, req).await
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            // A client may shut its sending side once its request is out: answer it anyway
            // (hyper's default drops a request still being handled when the read side ends).
            // A half-closed connection is still bounded by the request's deadline.
            http.timer(hyper_util::rt::TokioTimer::new())
                .half_close(true)
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            match tls {
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

fn is_trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|n| n.contains(&ip))
}

/// One address of a `Forwarded` `for=` or an `X-Forwarded-For` entry: `192.0.2.1`,
/// `192.0.2.1:80`, `2001:db8::1`, `"[2001:db8::1]:80"`; None for `unknown`, `_hidden` and
/// anything else.
fn hop_address(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The client of a request that came from the trusted proxy `peer`: the hops its
/// `Forwarded` (or, without one, `X-Forwarded-For`) names, walked from the right while they
/// are trusted proxies; the first that is not is the client. A hop that does not parse stops
/// the walk at the trusted proxy before it (which then counts as the client).
pub fn forwarded_client(
    headers: &axum::http::HeaderMap,
    peer: IpAddr,
    proxies: &[ipnet::IpNet],
) -> IpAddr {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let forwarded = values(header::FORWARDED);
    let hops: Vec<Option<IpAddr>> = if forwarded.is_empty() {
        values(axum::http::HeaderName::from_static("x-forwarded-for"))
            .iter()
            .map(|h| hop_address(h))
            .collect()
    } else {
        forwarded
            .iter()
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| hop_address(v))?
                })
            })
            .collect()
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(proxies, client) {
            break;
        }
        match hop {
            Some(ip) => client = *ip,
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_through_trusted_proxies() {
        let proxies: Vec<ipnet::IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let h = |pairs: &[(&str, &str)]| {
            let mut m = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |v| h(&[("x-forwarded-for", v)]);
        // The rightmost untrusted hop; a forged left part changes nothing.
        assert_eq!(
            forwarded_client(&xff("192.0.2.7"), proxy, &proxies),
            ip("192.0.2.7")
        );
        assert_eq!(
            forwarded_client(&xff("1.2.3.4, 192.0.2.7"), proxy, &proxies),
            ip("192.0.2.7")
        );
        // Through two trusted proxies.
        assert_eq!(
            forwarded_client(&xff("1.2.3.4, 192.0.2.7, 10.1.1.1"), proxy, &proxies),
            ip("192.0.2.7")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            forwarded_client(&xff("10.2.2.2"), proxy, &proxies),
            ip("10.2.2.2")
        );
        // Garbage where the proxy's own entry should be: the proxy.
        assert_eq!(
            forwarded_client(&xff("1.2.3.4, nonsense"), proxy, &proxies),
            proxy
        );
        assert_eq!(forwarded_client(&h(&[]), proxy, &proxies), proxy);
        // Several header lines are one list, in order.
        let two = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "192.0.2.9"),
        ]);
        assert_eq!(forwarded_client(&two, proxy, &proxies), ip("192.0.2.9"));
        // Forwarded wins over X-Forwarded-For; quoted IPv6 with a port; other parameters.
        let f = h(&[
            (
                "forwarded",
                "for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "192.0.2.7"),
        ]);
        assert_eq!(
            forwarded_client(&f, proxy, &proxies),
            ip("2001:db8:cafe::17")
        );
        let f = h(&[("forwarded", "proto=http;For=192.0.2.8:1234")]);
        assert_eq!(forwarded_client(&f, proxy, &proxies), ip("192.0.2.8"));
        assert_eq!(
            forwarded_client(&h(&[("forwarded", "for=unknown")]), proxy, &proxies),
            proxy
        );
        // Not from a trusted proxy: the peer, whatever it claims.
        let stranger = ip("198.51.100.1");
        assert_eq!(
            forwarded_client(&xff("192.0.2.7"), stranger, &proxies),
            stranger
        );
        assert!(is_trusted(&proxies, ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let a = ClientId::of("2001:db8:1:2:3:4:5:6".parse().unwrap());
        let b = ClientId::of("2001:db8:1:2:ffff::1".parse().unwrap());
        let c = ClientId::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = ClientId::of("::ffff:198.18.0.5".parse().unwrap());
        assert_eq!(mapped, ClientId::of("198.18.0.5".parse().unwrap()));
    }

    #[test]
    fn bucket_allows_the_burst_then_refills() {
        let l = RateLimiter::new(3, 1.0);
        let c = ClientId::of("198.18.0.1".parse().unwrap());
        let other = ClientId::of("198.18.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check(c, t).is_ok());
        }
        let wait = l.check(c, t).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(l.check(other, t).is_ok(), "another client is not affected");
        assert!(l.check(c, t + Duration::from_millis(1100)).is_ok());
        assert!(l.check(c, t + Duration::from_millis(1100)).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let l = RateLimiter::new(2, 1.0);
        let t = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let _ = l.check(ClientId::of(IpAddr::V4(i.into())), t);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }

    #[test]
    fn connections_are_counted_per_client_and_in_total() {
        let c = ConnectionCounter::new(2, 3);
        let a = ClientId::of("198.18.0.1".parse().unwrap());
        let b = ClientId::of("198.18.0.2".parse().unwrap());
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_none());
        let _b1 = c.admit(b).unwrap();
        assert!(c.admit(b).is_none(), "listener full");
        drop(a1);
        assert!(c.admit(a).is_some());
    }
}
