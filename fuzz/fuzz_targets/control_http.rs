//! The control's public HTTP layer: raw bytes on a connection, parsed by the same hyper
//! HTTP/1 settings as `limits::serve`, through the real `limits` middleware (rates, sizes,
//! timeouts) into the real routers of the control library — `/v1` (`http::router`, the page
//! included) and the original client's protocol (`compat::router`) — over a real service
//! (SQLite in a temp dir, the dev Lightning backend), started by the control's testkit. Never
//! a panic, never a 5xx.
#![no_main]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use libfuzzer_sys::fuzz_target;
use staticwire_control::config::LimitsConfig;
use staticwire_control::{compat, http, limits, testkit};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    rt: tokio::runtime::Runtime,
    app: Router,
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
        // per client (one fuzzing peer) stays, so rentals can never exhaust the pool.
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
        let app = http::router(service.clone(), false).merge(compat::router(service.clone()));
        let app = limits::layer(app, service.limits().clone());
        Env {
            rt,
            app,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let app = env.app.clone();
    let input = data.to_vec();
    let answer = env.rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let peer: SocketAddr = "198.18.0.7:40000".parse().expect("addr");
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower::Service::call(&mut app, req.map(Body::new)).await }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(1))
            .max_buf_size(64 * 1024);
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
    });
    // Every answer is a well-formed status line; none is a server error.
    for line in answer.split(|&b| b == b'\n') {
        if line.starts_with(b"HTTP/1.1 5") {
            panic!("server error: {}", String::from_utf8_lossy(line));
        }
    }
});
