//! The HTTP JSON API, `/v1`. Every error is `{"error":{"code","message"}}` with a fitting
//! status; a rejected request changes nothing.

use crate::service::{Service, ServiceError};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use staticwire_api::{codes, ErrorBody, ErrorDetail, RenewRequest, RentRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted; real ones are under 100 bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest long-poll on an invoice.
const MAX_WAIT: u64 = 60;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match &e {
            ServiceError::BadKey(_) => (StatusCode::BAD_REQUEST, codes::BAD_KEY),
            ServiceError::BadMonths(_) => (StatusCode::BAD_REQUEST, codes::BAD_MONTHS),
            ServiceError::NotFound => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, codes::CONFLICT),
            ServiceError::PoolExhausted => (StatusCode::SERVICE_UNAVAILABLE, codes::POOL_EXHAUSTED),
            ServiceError::TooManyUnpaid { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, codes::TOO_MANY_UNPAID)
            }
            // One meaning per code: 503 the node could not be talked to; 502 it answered but
            // refused or answered something unusable.
            ServiceError::Lightning(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::BACKEND_DOWN)
            }
            ServiceError::Lightning(_) => (StatusCode::BAD_GATEWAY, codes::BACKEND_ERROR),
            ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
            ServiceError::DatabaseUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::DATABASE_UNAVAILABLE)
            }
        };
        if status.is_server_error() {
            tracing::warn!("{e}");
        }
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Reads a JSON body: right content type, bounded size, well-formed.
async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA,
            "send Content-Type: application/json",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::TOO_LARGE,
            format!("bodies are limited to {MAX_BODY} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        )
    })
}

async fn terms(State(s): State<Arc<Service>>) -> ApiResult<staticwire_api::Terms> {
    Ok(Json(s.api_terms()))
}

async fn rent(
    State(s): State<Arc<Service>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RentRequest = json_body(&headers, body).await?;
    let client = client.map(|Extension(ConnectInfo(a))| crate::limits::ClientId::of(a.ip()));
    let resp = s.rent(&req.public_key, client).await?;
    Ok((StatusCode::CREATED, Json(resp)).into_response())
}

async fn status(
    State(s): State<Arc<Service>>,
    Path(key): Path<String>,
) -> ApiResult<staticwire_api::Rental> {
    Ok(Json(s.status(&key)?))
}

async fn config(
    State(s): State<Arc<Service>>,
    Path(key): Path<String>,
) -> ApiResult<staticwire_api::ConfigResponse> {
    Ok(Json(s.config(&key)?))
}

async fn renew(
    State(s): State<Arc<Service>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RenewRequest = json_body(&headers, body).await?;
    let resp = s.renew(&key, req.months).await?;
    Ok((StatusCode::CREATED, Json(resp)).into_response())
}

async fn invoice(
    State(s): State<Arc<Service>>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<staticwire_api::Invoice> {
    let mut wait = 0;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("wait", v)) => {
                wait = v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        codes::BAD_REQUEST,
                        "wait must be seconds",
                    )
                })?
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_REQUEST,
                    format!("unknown parameter {pair:?}"),
                ))
            }
        }
    }
    let inv = s
        .wait_invoice(&hash, Duration::from_secs(wait.min(MAX_WAIT)))
        .await?;
    Ok(Json(inv))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    s.db()?
        .query_row("SELECT 1", [], |_| Ok(()))
        .map_err(ServiceError::from)?;
    s.ln.ready().await.map_err(ServiceError::from)?;
    Ok("ready\n")
}

#[derive(serde::Deserialize)]
struct Advance {
    seconds: i64,
}

/// Dev mode only (`serve --dev-clock`): moves the service's clock forward, for demos and tests.
async fn dev_clock(
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a: Advance = json_body(&headers, body).await?;
    if a.seconds < 0 || a.seconds > 10 * 365 * 86_400 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "seconds must be between 0 and ten years",
        ));
    }
    s.clock.advance(a.seconds);
    crate::db::meta_set(&*s.db()?, "dev_clock_offset", &s.clock.offset().to_string())
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    s.reconcile().await?;
    s.bump();
    Ok(Json(
        serde_json::json!({"now": s.clock.now(), "offset": s.clock.offset()}),
    ))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

pub fn router(service: Arc<Service>, dev_clock_route: bool) -> Router {
    let mut r = Router::new()
        .route("/v1/terms", get(terms))
        .route("/v1/rentals", post(rent))
        .route("/v1/rentals/{key}", get(status))
        .route("/v1/rentals/{key}/config", get(config))
        .route("/v1/rentals/{key}/renewals", post(renew))
        .route("/v1/invoices/{hash}", get(invoice))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if dev_clock_route {
        r = r.route("/v1/dev/clock", post(dev_clock));
    }
    r.fallback(not_found).with_state(service)
}
