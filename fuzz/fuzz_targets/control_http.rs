//! The control's public HTTP layer: raw bytes on a connection, parsed by the same hyper
//! HTTP/1 settings as `limits::serve`, through the real `limits` middleware (rates, sizes,
//! timeouts; control/src/limits.rs, included by path) into handlers shaped like the control's
//! (JSON bodies of /v1, form posts of the original client's /api/, keys in paths). Never a
//! panic, never a 5xx from parsing.
#![no_main]

#[path = "../../control/src/limits.rs"]
#[allow(dead_code)]
mod limits;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn json(headers: HeaderMap, body: Body) -> StatusCode {
    let _ = headers.get("content-type").map(|v| v.to_str());
    match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => match serde_json::from_slice::<staticwire_api::RentRequest>(&b) {
            Ok(_) => StatusCode::CREATED,
            Err(_) => StatusCode::BAD_REQUEST,
        },
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

async fn form(body: Body) -> StatusCode {
    match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => match serde_urlencoded::from_bytes::<HashMap<String, String>>(&b) {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::BAD_REQUEST,
        },
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

async fn keyed(Path(key): Path<String>) -> StatusCode {
    if key.len() == 44 {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    app: Router,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let app = Router::new()
            .route("/v1/terms", get(|| async { "{}" }))
            .route("/v1/rentals", post(json))
            .route("/v1/rentals/{key}", get(keyed))
            .route("/v1/rentals/{key}/config", get(keyed))
            .route("/v1/rentals/{key}/renewals", post(json))
            .route("/api/rent/", post(form))
            .route("/api/AddCredit/", post(form))
            .route("/api/getstatus/", post(form));
        let cfg = limits::LimitsConfig {
            burst: u32::MAX,
            invoice_burst: u32::MAX,
            header_timeout_secs: 1,
            body_timeout_secs: 1,
            ..limits::LimitsConfig::default()
        };
        let app = limits::layer(app, limits::Limits::new(cfg));
        Env { rt, app }
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
    let _ = Arc::new(());
});
