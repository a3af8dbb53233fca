//! The HTTP JSON API, `/v1`. Every error is `{"error":{"code","message"}}` with a fitting
//! status; a rejected request changes nothing.

use crate::limits::MAX_BODY;
use crate::service::{Service, ServiceError};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use staticwire_api::{codes, ErrorBody, ErrorDetail, RentRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            ServiceError::NotFound | ServiceError::NoInvoice => {
                (StatusCode::NOT_FOUND, codes::NOT_FOUND)
            }
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, codes::CONFLICT),
            ServiceError::PoolExhausted | ServiceError::UnpaidShareFull => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::POOL_EXHAUSTED)
            }
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
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(staticwire_api::proof::SCHEME),
            );
        }
        if self.code == codes::RATE_LIMITED && !resp.headers().contains_key(header::RETRY_AFTER) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        }
        resp
    }
}

/// Checks the proof of key possession of a request on a rental (PROTOCOL.md 3.1), before
/// anything is read or changed: `key` is the key it acts on (standard base64), None for an
/// invoice look-up (its owner is compared by the caller). Returns the proven key, or None for
/// an unproven request the server still serves (only with `require_proof = false`, the
/// deliberate downgrade for 1.0 clients). A proof of a request that changes state (a POST) is
/// also recorded in the database, so no other replica accepts it again.
fn prove(
    s: &Service,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    key: Option<&str>,
) -> Result<Option<String>, ApiError> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use staticwire_api::proof::ProofError;
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or("\u{0}"));
    if header.is_none() && !s.cfg().require_proof {
        return Ok(None);
    }
    let refuse = |e: ProofError| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, e.code(), e.to_string())
    };
    // Without a proof key nothing can be proven: refused as unproven.
    let verifier = s.proof().ok_or(refuse(ProofError::Required))?;
    let expected: Option<[u8; 32]> = key
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|b| b.try_into().ok());
    // The target exactly as received: path and query, in origin form.
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let now = staticwire_api::proof::unix_now();
    let proof = verifier
        .check(
            header,
            expected.as_ref(),
            method.as_str(),
            target,
            body,
            now,
        )
        .map_err(refuse)?;
    // Every request that changes state (rent, renewals, the PTR's PUT and DELETE).
    if method != Method::GET && !s.share_proof(&proof, now)? {
        return Err(refuse(ProofError::Replayed));
    }
    Ok(Some(STANDARD.encode(proof.key)))
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Reads a JSON body: right content type, bounded size, well-formed.
async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    Ok(json_body_bytes(headers, body).await?.0)
}

/// Reads a JSON body and keeps its bytes, which a proof covers.
async fn json_body_bytes<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<(T, axum::body::Bytes), ApiError> {
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
    let v = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("invalid JSON body: {e}"),
        )
    })?;
    Ok((v, bytes))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
}

/// The extractor of a `/v1` route that defines no query parameter: any parameter is refused
/// with 400 `bad_request` (PROTOCOL.md section 4), before anything else about the request.
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match query_pairs(parts.uri.query()).next() {
            None => Ok(NoQuery),
            Some(p) => Err(bad_request(format!(
                "unknown query parameter {p:?}: this route takes none"
            ))),
        }
    }
}

/// The parameters of a query; an empty query, or an empty pair (`a=1&&b=2`), is none.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = &str> {
    query.unwrap_or("").split('&').filter(|p| !p.is_empty())
}

/// `wait` of an invoice look-up, capped at [`MAX_WAIT`]: one or more ASCII digits, of any
/// size; given twice, not digits, or beside another parameter: 400.
fn parse_wait(query: Option<&str>) -> Result<u64, ApiError> {
    let mut wait = None;
    for pair in query_pairs(query) {
        match pair.split_once('=') {
            Some(("wait", _)) if wait.is_some() => return Err(bad_request("wait is given twice")),
            Some(("wait", v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits beyond u64 are a long wait too, capped like any other.
                wait = Some(v.parse::<u64>().unwrap_or(u64::MAX).min(MAX_WAIT));
            }
            Some(("wait", _)) => return Err(bad_request("wait must be whole seconds (digits)")),
            _ => {
                return Err(bad_request(format!(
                    "unknown query parameter {pair:?}: wait is the only one"
                )))
            }
        }
    }
    Ok(wait.unwrap_or(0))
}

async fn terms(_: NoQuery, State(s): State<Arc<Service>>) -> ApiResult<staticwire_api::Terms> {
    Ok(Json(s.api_terms()))
}

async fn rent(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (req, bytes): (RentRequest, _) = json_body_bytes(&headers, body).await?;
    let key = crate::service::parse_body_key(&req.public_key)?;
    prove(&s, &headers, &method, &uri, &bytes, Some(&key))?;
    let client = client.map(|Extension(ConnectInfo(a))| crate::limits::ClientId::of(a.ip()));
    let want = crate::alloc::Want {
        prefix_len: req.prefix_len,
        ipv6: req.ipv6,
        host: req.host,
        ipv4: req.ipv4,
    };
    let resp = s.rent_with(&key, client, &want).await?;
    Ok((StatusCode::CREATED, Json(resp)).into_response())
}

/// A path segment, or the JSON error for one that does not decode (bad percent-encoding, not
/// UTF-8): every error is `{"error"}`, also the extractor's.
fn segment(p: Result<Path<String>, PathRejection>, code: &'static str) -> Result<String, ApiError> {
    p.map(|Path(v)| v).map_err(|e| {
        let status = if code == codes::NOT_FOUND {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, format!("bad path segment: {e}"))
    })
}

/// The path's key in standard form, once the request proved it.
fn proven_key(
    s: &Service,
    key: Result<Path<String>, PathRejection>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, ApiError> {
    let key = crate::service::parse_public_key(&segment(key, codes::BAD_KEY)?)?;
    prove(s, headers, method, uri, body, Some(&key))?;
    Ok(key)
}

async fn status(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    key: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<staticwire_api::Rental> {
    let key = proven_key(&s, key, &method, &uri, &headers, b"")?;
    Ok(Json(s.status(&key)?))
}

async fn config(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    key: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<staticwire_api::ConfigResponse> {
    let key = proven_key(&s, key, &method, &uri, &headers, b"")?;
    Ok(Json(s.config(&key)?))
}

/// A renewal's body as sent: `months` read as any JSON value, so that a number out of range
/// (negative, fractional, huge) is told apart from a missing or non-number one.
#[derive(Deserialize)]
struct RenewBody {
    months: serde_json::Value,
}

/// `months` as the service takes it: 400 `bad_request` when it is not a number, 400
/// `bad_months` when it is one but not an integer from 1 to `max_months` (PROTOCOL.md, Renew).
fn months_of(v: &serde_json::Value, max_months: u32) -> Result<u32, ApiError> {
    let serde_json::Value::Number(n) = v else {
        return Err(bad_request(format!("months must be a number, not {v}")));
    };
    n.as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| (1..=max_months).contains(m))
        .ok_or_else(|| {
            ServiceError::BadMonths(crate::ledger::RenewError::BadMonths(max_months).to_string())
                .into()
        })
}

async fn renew(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    key: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = crate::service::parse_public_key(&segment(key, codes::BAD_KEY)?)?;
    let (req, bytes): (RenewBody, _) = json_body_bytes(&headers, body).await?;
    // The request's own form before the proof and the state (PROTOCOL.md 3.1, Renew).
    let months = months_of(&req.months, s.terms().max_months)?;
    prove(&s, &headers, &method, &uri, &bytes, Some(&key))?;
    let resp = s.renew(&key, months).await?;
    Ok((StatusCode::CREATED, Json(resp)).into_response())
}

async fn invoice(
    State(s): State<Arc<Service>>,
    hash: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<staticwire_api::Invoice> {
    let wait = parse_wait(query.as_deref())?;
    let hash = segment(hash, codes::NOT_FOUND)?;
    // The proof first, whether or not the hash is known; then an invoice of another key's
    // rental is as unknown as one never issued.
    if let Some(proven) = prove(&s, &headers, &method, &uri, b"", None)? {
        if s.invoice_owner(&hash)? != proven {
            return Err(ServiceError::NoInvoice.into());
        }
    }
    let inv = s.wait_invoice(&hash, Duration::from_secs(wait)).await?;
    Ok(Json(inv))
}

/// Marks the requests of the tunnel listener (`[rdns] tunnel_listen`): there a request from
/// the rental's own tunnel needs no proof on the reverse-DNS routes (PROTOCOL.md, Reverse DNS).
#[derive(Clone, Copy)]
pub struct TunnelListener;

impl From<crate::service::PtrError> for ApiError {
    fn from(e: crate::service::PtrError) -> Self {
        use crate::rdns::forward::ForwardError;
        use crate::service::PtrError as P;
        let e = match e {
            P::Service(inner) => return inner.into(),
            other => other,
        };
        let (status, code) = match &e {
            P::Service(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
            P::Off => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            P::BadName(_) => (StatusCode::BAD_REQUEST, codes::BAD_NAME),
            P::BadAddress(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            P::NotRented(_) => (StatusCode::BAD_REQUEST, codes::ADDRESS_NOT_RENTED),
            P::NotActive(_) => (StatusCode::CONFLICT, codes::RENTAL_NOT_ACTIVE),
            P::Limit(_) => (StatusCode::CONFLICT, codes::PTR_LIMIT),
            P::Forward(ForwardError::Mismatch { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, codes::FORWARD_MISMATCH)
            }
            P::Forward(ForwardError::Unavailable(..)) => {
                (StatusCode::SERVICE_UNAVAILABLE, codes::DNS_UNAVAILABLE)
            }
        };
        if status.is_server_error() {
            tracing::warn!("{e}");
        }
        ApiError::new(status, code, e.to_string())
    }
}

/// Who is asking on a `/ptr` route: the path's key, the listener, the TCP peer, and the parts
/// of the request a proof covers. Extracted whole (nothing refused yet, so a malformed body is
/// still answered before a bad key); [`PtrCaller::authorize`] decides.
struct PtrCaller {
    key: Result<Path<String>, PathRejection>,
    tunnel: bool,
    client: Option<std::net::IpAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for PtrCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = Path::<String>::from_request_parts(parts, state).await;
        let client =
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| match a.ip() {
                    // An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d.
                    std::net::IpAddr::V6(v6) => v6
                        .to_ipv4_mapped()
                        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                    v4 => v4,
                });
        Ok(PtrCaller {
            key,
            tunnel: parts.extensions.get::<TunnelListener>().is_some(),
            client,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl PtrCaller {
    /// Who may act on a rental's reverse DNS (PROTOCOL.md, Reverse DNS): on the public
    /// listener, the holder of its key, proven (always required here, whatever
    /// `require_proof` says); on the tunnel listener a proof that is sent must verify, and
    /// without one the request's source must be an address of the rental itself (the
    /// router's anti-spoofing guarantees it). The rental's key in standard form.
    fn authorize(self, s: &Service, body: &[u8]) -> Result<String, ApiError> {
        let key = crate::service::parse_public_key(&segment(self.key, codes::BAD_KEY)?)?;
        if self.headers.contains_key(header::AUTHORIZATION) {
            prove(s, &self.headers, &self.method, &self.uri, body, Some(&key))?;
            return Ok(key);
        }
        if !self.tunnel {
            let e = staticwire_api::proof::ProofError::Required;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                e.code(),
                e.to_string(),
            ));
        }
        match self.client {
            Some(ip) if s.is_rental_source(&key, ip)? => Ok(key),
            client => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::TUNNEL_FORBIDDEN,
                format!(
                    "this request came from {} through the tunnels, which is not an address of the rental it names; prove the key (Authorization: StaticWire-Proof) or send it from the rental's own tunnel",
                    client.map(|c| c.to_string()).unwrap_or_else(|| "an unknown address".into())
                ),
            )),
        }
    }
}

async fn get_ptr(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    caller: PtrCaller,
) -> ApiResult<staticwire_api::PtrList> {
    let key = caller.authorize(&s, b"")?;
    Ok(Json(s.ptr_list(&key)?))
}

async fn set_ptr(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    caller: PtrCaller,
    body: Body,
) -> ApiResult<staticwire_api::PtrList> {
    let (req, bytes): (staticwire_api::PtrRequest, _) =
        json_body_bytes(&caller.headers, body).await?;
    let key = caller.authorize(&s, &bytes)?;
    Ok(Json(
        s.ptr_set(&key, req.address.as_deref(), &req.name).await?,
    ))
}

async fn clear_ptr(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    caller: PtrCaller,
    body: Body,
) -> ApiResult<staticwire_api::PtrList> {
    let (req, bytes): (staticwire_api::PtrClearRequest, _) =
        json_body_bytes(&caller.headers, body).await?;
    let key = caller.authorize(&s, &bytes)?;
    Ok(Json(s.ptr_clear(&key, req.address.as_deref()).await?))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    s.db()?
        .query_row("SELECT 1", [], |_| Ok(()))
        .map_err(ServiceError::from)?;
    s.ln().ready().await.map_err(ServiceError::from)?;
    Ok("ready\n")
}

/// Test hook (`serve --dev-hooks`, dev backend only): moves the service's clock forward.
async fn dev_clock(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<staticwire_api::DevClockResponse> {
    let a: staticwire_api::DevClockRequest = json_body(&headers, body).await?;
    if a.seconds < 0 || a.seconds > 10 * 365 * 86_400 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "seconds must be between 0 and ten years",
        ));
    }
    s.clock().advance(a.seconds);
    crate::db::meta_set(
        &*s.db()?,
        "dev_clock_offset",
        &s.clock().offset().to_string(),
    )
    .map_err(ServiceError::internal)?;
    s.reconcile().await?;
    s.wake();
    s.bump();
    Ok(Json(staticwire_api::DevClockResponse {
        now: s.clock().now(),
        offset: s.clock().offset(),
    }))
}

/// Test hook (`serve --dev-hooks`, dev backend only): what `staticwire-control dev-pay` does,
/// over HTTP, then the invoice check, so the payment is credited when this answers.
async fn dev_pay(
    _: NoQuery,
    State(s): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<staticwire_api::DevPayResponse> {
    use crate::lightning::dev::{self, DevPayError};
    let req: staticwire_api::DevPayRequest = json_body(&headers, body).await?;
    let crate::lightning::Backend::Dev(node) = &s.ln() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no dev Lightning backend",
        ));
    };
    let paid = {
        let db = s.db()?;
        dev::pay(&db, &node.node_id, &req.bolt11, s.clock().now())
    };
    let paid = paid.map_err(|e| {
        let (status, code) = match e {
            DevPayError::Malformed(_) => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            DevPayError::ForeignInvoice => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            DevPayError::AlreadyPaid | DevPayError::Expired => {
                (StatusCode::CONFLICT, codes::CONFLICT)
            }
            DevPayError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        };
        ApiError::new(status, code, e.to_string())
    })?;
    s.check_invoices().await?;
    Ok(Json(staticwire_api::DevPayResponse {
        paid: true,
        payment_hash: paid.payment_hash,
        preimage: paid.preimage,
    }))
}

async fn openapi(_: NoQuery) -> Json<serde_json::Value> {
    Json(staticwire_api::openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this route does not take this method",
    )
}

/// Adds the route the OpenAPI document names `operation_id`, at its path and method: every
/// route served is documented, as it is registered from the document's table.
fn documented<H, T>(
    router: Router<Arc<Service>>,
    operation_id: &str,
    handler: H,
) -> Router<Arc<Service>>
where
    H: Handler<T, Arc<Service>>,
    T: 'static,
{
    let Some(route) = staticwire_api::openapi::ROUTES
        .iter()
        .find(|r| r.operation_id == operation_id)
    else {
        panic!("route {operation_id} is not in the OpenAPI document");
    };
    let method = match route.method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "put" => MethodFilter::PUT,
        "delete" => MethodFilter::DELETE,
        other => panic!("method {other} of {operation_id}"),
    };
    router.route(route.path, on(method, handler))
}

/// The `/v1` API; with `dev_hooks` (dev Lightning backend only) also its test hooks.
pub fn router(service: Arc<Service>, dev_hooks: bool) -> Router {
    let mut r = Router::new();
    r = documented(r, "getTerms", terms);
    r = documented(r, "rentNewIp", rent);
    r = documented(r, "getRentalStatus", status);
    r = documented(r, "getConf", config);
    r = documented(r, "renew", renew);
    r = documented(r, "getInvoice", invoice);
    r = documented(r, "getPtr", get_ptr);
    r = documented(r, "setPtr", set_ptr);
    r = documented(r, "clearPtr", clear_ptr);
    r = documented(r, "getOpenApi", openapi);
    r = documented(r, "healthz", healthz);
    r = documented(r, "readyz", readyz);
    if dev_hooks {
        r = documented(r, "devPay", dev_pay);
        r = documented(r, "devClock", dev_clock);
    }
    let r = crate::web::routes(r);
    crate::web::log_bodies(
        r.fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(service),
    )
}

/// The tunnel listener's API (`[rdns] tunnel_listen`): the terms and the reverse-DNS routes,
/// each request marked as having come through the tunnels.
pub fn tunnel_router(service: Arc<Service>) -> Router {
    let mut r = Router::new();
    r = documented(r, "getTerms", terms);
    r = documented(r, "getPtr", get_ptr);
    r = documented(r, "setPtr", set_ptr);
    r = documented(r, "clearPtr", clear_ptr);
    r = documented(r, "getOpenApi", openapi);
    r = documented(r, "healthz", healthz);
    crate::web::log_bodies(
        r.fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(Extension(TunnelListener))
            .with_state(service),
    )
}
