//! The control's public HTTP layer: raw bytes on a connection, parsed by the same hyper
//! HTTP/1 settings as `limits::serve`, through the real `limits` middleware (rates, sizes,
//! timeouts) into the real routers of the control library — `/v1` (`http::router`, the page
//! included) and the original client's protocol (`compat::router`) — over a real service
//! (SQLite in a temp dir, the dev Lightning backend), started by the control's testkit. Never
//! a panic, never a 5xx.
//!
//! Two kinds of input. One whose first byte is below 0x80 is sent as it is (a fuzzed request,
//! its `Authorization` header included: the proof parser's malformed headers). One from 0x80
//! up is a *proven* request (PROTOCOL.md 3.1) built from the input: a route, one of 64 client
//! keys whose private halves derive from an input byte, a client prefix, and fuzzed parts
//! (bodies, amounts, path segments, queries) — so the handlers behind the proof see the fuzzed
//! parts — with a valid proof made by `staticwire_api::proof::Prover` (the code the clients
//! use), or a deliberately broken one (expired, another key, a flipped MAC, a replay, a
//! reformatted or garbage header), or none. Beyond "no 5xx": on the routes that need a proof,
//! a replayed, expired, forged or missing one is never answered 2xx. The key space and client
//! prefixes are small so that rentals are found again (status, config, renewals of held and,
//! paid in-process by the dev node, active rentals) and so that holds and payments can never
//! exhaust the /22.
#![no_main]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use libfuzzer_sys::fuzz_target;
use staticwire_api::proof::{unix_now, Prover, WINDOW_SECONDS};
use staticwire_control::config::LimitsConfig;
use staticwire_control::lightning::Backend;
use staticwire_control::service::Service;
use staticwire_control::{compat, http, limits, store, testkit};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    rt: tokio::runtime::Runtime,
    app: Router,
    service: Arc<Service>,
    /// The service's proof key, as its terms publish it.
    proof_key: [u8; 32],
    _dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        // Rates out of the way so every input reaches the handlers; the cap on unpaid holds
        // per client prefix stays, so (16 prefixes, 64 keys) rentals can never exhaust the pool.
        let cfg = LimitsConfig {
            burst: u32::MAX,
            invoice_burst: u32::MAX,
            header_timeout_secs: 1,
            body_timeout_secs: 1,
            ..LimitsConfig::default()
        };
        let service = Arc::new(
            testkit::Builder::new("203.0.112.0/22")
                .limits(cfg)
                .service(dir.path()),
        );
        let proof_key = service.proof().expect("a proof key").public_key();
        let app = http::router(service.clone(), false).merge(compat::router(service.clone()));
        let app = limits::layer(app, service.limits().clone());
        Env {
            rt,
            app,
            service,
            proof_key,
            _dir: dir,
        }
    })
}

/// Client keys: 64, so that rentals are found again and (a /29 each at most) cannot exhaust
/// the /22 when all are paid.
const KEYS: u8 = 64;

/// The private key of client key `i` (X25519 clamps it; every clamped scalar is a valid key).
fn private_key(i: u8) -> [u8; 32] {
    let i = i % KEYS;
    std::array::from_fn(|n| i ^ (n as u8).wrapping_mul(37) ^ 0xA5)
}

fn prover(i: u8, proof_key: &[u8; 32]) -> Prover {
    Prover::new(&private_key(i), proof_key).expect("the service's proof key is valid")
}

/// A nonce no earlier execution used: a valid proof stays valid when libFuzzer runs an input
/// again (the replay cache would refuse it otherwise).
fn fresh_nonce(tag: u8) -> [u8; 16] {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes();
    let mut out = [tag; 16];
    out[..8].copy_from_slice(&n);
    out
}

/// Standard base64 to the URL-safe alphabet (path segments).
fn url_safe(b64: &str) -> String {
    b64.replace('+', "-").replace('/', "_")
}

/// Bytes a request-target may carry (visible ASCII, no space).
fn target_bytes(b: &[u8]) -> String {
    b.iter()
        .filter(|c| c.is_ascii_graphic())
        .map(|&c| c as char)
        .collect()
}

/// Bytes a header value may carry (no CR, LF or other controls but tab; obs-text kept).
fn header_bytes(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f))
        .collect()
}

/// One request to send.
struct Req {
    method: String,
    target: String,
    body: Vec<u8>,
    /// The client key it acts on.
    key: u8,
}

impl Req {
    fn new(method: &str, target: String, body: Vec<u8>, key: u8) -> Req {
        Req {
            method: method.into(),
            target,
            body,
            key,
        }
    }

    fn bytes(&self, auth: Option<&[u8]>) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.method,
            self.target,
            self.body.len()
        )
        .into_bytes();
        if let Some(a) = auth {
            out.extend_from_slice(b"Authorization: ");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// How the proof of a built request is made (bits 3..7 of the first byte).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProofKind {
    /// Valid: now, or `ts` inside the window's edge.
    Valid { ts_back: u64 },
    /// Outside the window (by a margin the request's own run time cannot close).
    Expired { future: bool },
    /// By another key than the one the request names.
    OtherKey,
    /// Its MAC with one bit flipped.
    FlippedMac,
    /// Valid, and the whole request sent again with the same proof.
    Replay,
    /// Valid, in a reformatted header (case, quotes, order, extra or doubled parameters).
    Reformatted,
    /// `StaticWire-Proof ` and fuzzed bytes.
    Garbage,
}

impl ProofKind {
    fn of(bits: u8) -> ProofKind {
        match bits & 0x0f {
            0..=6 => ProofKind::Valid { ts_back: 0 },
            7 => ProofKind::Valid {
                ts_back: WINDOW_SECONDS - 10,
            },
            8 => ProofKind::Expired { future: false },
            9 => ProofKind::Expired { future: true },
            10 => ProofKind::OtherKey,
            11 => ProofKind::FlippedMac,
            12 | 13 => ProofKind::Replay,
            14 => ProofKind::Reformatted,
            _ => ProofKind::Garbage,
        }
    }

    /// Whether no answer to it may be 2xx (on a route that needs a proof).
    /// `route`: routes 4 (an invoice look-up names no key) and 5 (the body names any key)
    /// may be proven by any key.
    fn never_ok(self, route: u8) -> bool {
        match self {
            ProofKind::Expired { .. } | ProofKind::FlippedMac | ProofKind::Garbage => true,
            ProofKind::OtherKey => matches!(route, 0..=3 | 6),
            _ => false,
        }
    }
}

/// A valid header reformatted as `f`'s bits say; some forms are still valid, some not.
fn reformat(header: &str, f: u8) -> String {
    let (scheme, params) = header.split_once(' ').expect("scheme and parameters");
    let mut scheme = scheme.to_string();
    let mut parts: Vec<String> = params.split(", ").map(str::to_string).collect();
    if f & 0x01 != 0 {
        scheme = scheme.to_ascii_lowercase();
    }
    if f & 0x02 != 0 {
        parts = parts.iter().map(|p| p.replace('"', "")).collect();
    }
    if f & 0x04 != 0 {
        parts.reverse();
    }
    if f & 0x08 != 0 {
        parts.push("v=\"2\"".into());
    }
    if f & 0x10 != 0 {
        parts.push(parts[0].clone());
    }
    if f & 0x20 != 0 {
        parts = parts.iter().map(|p| p.replacen('=', " = ", 1)).collect();
    }
    if f & 0x40 != 0 {
        parts = parts.iter().map(|p| p.to_ascii_uppercase()).collect();
    }
    let sep = if f & 0x80 != 0 { "," } else { ", " };
    format!("{scheme} {}", parts.join(sep))
}

/// The `Authorization` value of `req` made as `kind` says.
fn authorization(env: &Env, req: &Req, kind: ProofKind, fuzz: &[u8]) -> Vec<u8> {
    let now = unix_now();
    let ts = match kind {
        ProofKind::Valid { ts_back } => now - ts_back,
        ProofKind::Expired { future: false } => now - WINDOW_SECONDS - 5,
        ProofKind::Expired { future: true } => now + WINDOW_SECONDS + 5,
        _ => now,
    };
    let key = match kind {
        ProofKind::OtherKey => req.key.wrapping_add(1),
        _ => req.key,
    };
    let mut proof = prover(key, &env.proof_key).prove_at(
        &req.method,
        &req.target,
        &req.body,
        ts,
        fresh_nonce(req.key),
    );
    match kind {
        ProofKind::FlippedMac => {
            let bit = fuzz.first().copied().unwrap_or(0);
            proof.mac[usize::from(bit >> 3) % 32] ^= 1 << (bit & 7);
            proof.header_value().into_bytes()
        }
        ProofKind::Reformatted => {
            reformat(&proof.header_value(), fuzz.first().copied().unwrap_or(0)).into_bytes()
        }
        ProofKind::Garbage => {
            let mut h = b"StaticWire-Proof ".to_vec();
            h.extend(header_bytes(fuzz));
            h
        }
        _ => proof.header_value().into_bytes(),
    }
}

/// Pays client key `key`'s open invoice, if it has one, with the dev node (as `dev-pay`).
async fn pay_open_invoice(s: &Service, key: &str) {
    let Backend::Dev(node) = s.ln() else { return };
    let now = s.clock().now();
    let bolt11 = {
        let Ok(db) = s.db() else { return };
        let Ok(Some(r)) = store::latest_rental(&db, key) else {
            return;
        };
        match store::open_invoice(&db, r.id, now) {
            Ok(Some(inv)) => inv.bolt11,
            _ => return,
        }
    };
    let paid = {
        let Ok(db) = s.db() else { return };
        staticwire_control::lightning::dev::pay(&db, &node.node_id, &bolt11, now).is_ok()
    };
    if paid {
        let _ = s.check_invoices().await;
    }
}

/// A proven request (or requests) built from `data` (first byte from 0x80): the bytes to send,
/// how many requests the first copy has, and whether no answer may be 2xx after the first
/// copy (a replay) or at all (a broken proof).
struct Built {
    bytes: Vec<u8>,
    first: usize,
    replayed: bool,
    never_ok: bool,
}

async fn build(env: &Env, data: &[u8]) -> Built {
    let tag = data[0];
    let route = tag & 0x07;
    let kind = ProofKind::of(tag >> 3);
    let rest = &data[1..];
    let key = rest.first().copied().unwrap_or(0) % KEYS;
    let flags = rest.get(1).copied().unwrap_or(0);
    let fuzz = rest.get(2..).unwrap_or_default();
    // What the proof's form takes of the fuzz (a garbage header: up to the first newline; a
    // flipped bit or a reformatting: one byte); the request's parts take the rest.
    let (proof_fuzz, fuzz) = match kind {
        ProofKind::Garbage => match fuzz.iter().position(|&b| b == b'\n') {
            Some(n) => (&fuzz[..n], &fuzz[n + 1..]),
            None => (fuzz, &[][..]),
        },
        ProofKind::FlippedMac | ProofKind::Reformatted if !fuzz.is_empty() => fuzz.split_at(1),
        _ => (&[][..], fuzz),
    };
    let public = prover(key, &env.proof_key).public_key();
    let std_key = staticwire_api::proof::Proof {
        key: public,
        ts: 0,
        nonce: [0; 16],
        mac: [0; 32],
    }
    .key_base64();
    let path_key = url_safe(&std_key);
    // Bit 4 of the flags: pay the key's open invoice first, so its rental is active.
    if flags & 0x10 != 0 {
        pay_open_invoice(&env.service, &std_key).await;
    }
    let rent_body = |tail: &[u8]| {
        let mut b = format!("{{\"public_key\":\"{std_key}\"").into_bytes();
        b.extend_from_slice(tail);
        b.push(b'}');
        b
    };
    let reqs = match route {
        // A rent of this key, its other fields fuzzed: `,"prefix_len":29,"ipv6":true`.
        0 => vec![Req::new("POST", "/v1/rentals".into(), rent_body(fuzz), key)],
        // The key's status and config, the fuzz appended to the path (a query, more segments).
        1 => vec![Req::new(
            "GET",
            format!("/v1/rentals/{path_key}{}", target_bytes(fuzz)),
            Vec::new(),
            key,
        )],
        2 => vec![Req::new(
            "GET",
            format!("/v1/rentals/{path_key}/config{}", target_bytes(fuzz)),
            Vec::new(),
            key,
        )],
        // A renewal, its body fuzzed: `{"months":3}`.
        3 => vec![Req::new(
            "POST",
            format!("/v1/rentals/{path_key}/renewals"),
            fuzz.to_vec(),
            key,
        )],
        // An invoice look-up, its hash and query fuzzed.
        4 => vec![Req::new(
            "GET",
            format!("/v1/invoices/{}", target_bytes(fuzz)),
            Vec::new(),
            key,
        )],
        // A rent, its whole body fuzzed.
        5 => vec![Req::new("POST", "/v1/rentals".into(), fuzz.to_vec(), key)],
        // Rent, status, config, renewal of one key on one connection.
        6 => {
            let (a, b) = fuzz.split_at(fuzz.len() / 2);
            vec![
                Req::new("POST", "/v1/rentals".into(), rent_body(a), key),
                Req::new("GET", format!("/v1/rentals/{path_key}"), Vec::new(), key),
                Req::new(
                    "GET",
                    format!("/v1/rentals/{path_key}/config"),
                    Vec::new(),
                    key,
                ),
                Req::new(
                    "POST",
                    format!("/v1/rentals/{path_key}/renewals"),
                    b.to_vec(),
                    key,
                ),
            ]
        }
        // Any method and target (first line of the fuzz), the rest its body.
        _ => {
            let line_end = fuzz.iter().position(|&b| b == b'\n').unwrap_or(fuzz.len());
            let (line, body) = (&fuzz[..line_end], fuzz.get(line_end + 1..).unwrap_or(&[]));
            let line = String::from_utf8_lossy(line).into_owned();
            let (method, target) = line.split_once(' ').unwrap_or(("GET", line.as_str()));
            let method: String = method.chars().filter(|c| c.is_ascii_uppercase()).collect();
            let method = if method.is_empty() {
                "GET".into()
            } else {
                method
            };
            let target = target_bytes(target.as_bytes());
            let target = if target.starts_with('/') {
                target
            } else {
                format!("/{target}")
            };
            vec![Req::new(&method, target, body.to_vec(), key)]
        }
    };
    // Bit 5 of the flags: no Authorization at all (`proof_required`).
    let unproven = flags & 0x20 != 0;
    let mut bytes = Vec::new();
    let mut auths = Vec::new();
    for r in &reqs {
        let auth = (!unproven).then(|| authorization(env, r, kind, proof_fuzz));
        bytes.extend(r.bytes(auth.as_deref()));
        auths.push(auth);
    }
    let replayed = kind == ProofKind::Replay && !unproven;
    if replayed {
        for (r, auth) in reqs.iter().zip(&auths) {
            bytes.extend(r.bytes(auth.as_deref()));
        }
    }
    // Route 7 may name routes without a proof (terms, the page); the others all need one.
    let checked = route != 7;
    Built {
        bytes,
        first: reqs.len(),
        replayed: replayed && checked,
        // `require_proof` is on (the default): an unproven request is refused as well.
        never_ok: checked && (unproven || kind.never_ok(route)),
    }
}

async fn exchange(app: Router, input: Vec<u8>, peer: SocketAddr) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower::Service::call(&mut app, req.map(Body::new)).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // As `limits::serve`, but for half-closures: the client shuts its write side once the
    // input is sent, and without `half_close` hyper drops the request in flight on that EOF
    // and answers nothing (the target then checked no answer at all).
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1))
        .max_buf_size(64 * 1024)
        .half_close(true);
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let talk = async {
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        out
    };
    let (_, out) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(3), conn),
        tokio::time::timeout(Duration::from_secs(3), talk)
    );
    out.unwrap_or_default()
}

/// The statuses of the HTTP/1.1 responses in `out`, in order: each response's head, then its
/// body by `Content-Length` or chunks (a body's own text is never read as a status line).
/// Stops at what it cannot follow (a body to the end of the connection, a HEAD's empty body).
fn statuses(out: &[u8]) -> Vec<u16> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let mut found = Vec::new();
    let mut rest = out;
    while let Some(after) = rest.strip_prefix(b"HTTP/1.1 ") {
        let Some(st) = after
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u16>().ok())
        else {
            break;
        };
        found.push(st);
        let Some(end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        rest = &rest[end + 4..];
        if (100..200).contains(&st) || st == 204 || st == 304 {
            continue;
        }
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let Some(n) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
            rest = rest.get(n..).unwrap_or_default();
        } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(line) = find(rest, b"\r\n") else {
                    return found;
                };
                let size = std::str::from_utf8(&rest[..line])
                    .ok()
                    .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
                let Some(size) = size else { return found };
                rest = rest.get(line + 2 + size + 2..).unwrap_or_default();
                if size == 0 {
                    break;
                }
            }
        } else {
            break;
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let app = env.app.clone();
    let answer = env.rt.block_on(async move {
        match data.first() {
            Some(&tag) if tag >= 0x80 => {
                let built = build(env, data).await;
                // One of 16 client prefixes (bits 0..3 of the flags byte): 16 × 8 unpaid
                // addresses at most, far under `/v1`'s share of the /22.
                let prefix = data.get(2).copied().unwrap_or(0) & 0x0f;
                let peer = SocketAddr::from(([198, 18, prefix, 7], 40000));
                let out = exchange(app, built.bytes.clone(), peer).await;
                (Some(built), out)
            }
            _ => {
                let peer: SocketAddr = "198.18.0.7:40000".parse().expect("addr");
                (None, exchange(app, data.to_vec(), peer).await)
            }
        }
    });
    let (built, answer) = answer;
    let statuses = statuses(&answer);
    // None is a server error.
    if let Some(st) = statuses.iter().find(|&&st| st >= 500) {
        panic!("server error: {st}");
    }
    let Some(built) = built else { return };
    for (i, &st) in statuses.iter().enumerate() {
        let ok = (200..300).contains(&st);
        if ok && built.never_ok {
            panic!("a broken or missing proof was accepted: {st}");
        }
        if ok && built.replayed && i >= built.first {
            panic!("a replayed proof was accepted: {st}");
        }
    }
});
