//! The OpenAPI 3.1 document of `/v1`: the schemas are generated from this crate's types (so
//! they cannot drift from what the server sends and the client reads), the routes and the
//! error codes each may answer come from [`ROUTES`] and [`codes::ALL`]. The control serves
//! it at `/v1/openapi.json`, and its tests check the running server against it.

use crate::codes;
use serde_json::{json, Map, Value};

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// JSON of this schema (a name under `components.schemas`).
    Json(&'static str),
    /// `text/plain`.
    Text,
    /// Any JSON object (the OpenAPI document itself).
    Object,
}

/// One route of `/v1` (and the health checks beside it).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// OpenAPI path template, e.g. `/v1/rentals/{public_key}`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// Schema of the JSON request body, if any.
    pub request: Option<&'static str>,
    pub status: u16,
    pub success: Success,
    /// The error codes this route may answer (besides the ones every route may: see
    /// [`COMMON_ERRORS`]).
    pub errors: &'static [&'static str],
    /// A test hook: served only by a server on a test Lightning backend with its hooks turned
    /// on (`staticwire-control serve --dev-hooks`), never in production.
    pub dev_only: bool,
    /// Acts on or reveals a key's rental: needs a proof of key possession
    /// (`Authorization: StaticWire-Proof`, PROTOCOL.md v1.1) and may answer [`PROOF_ERRORS`].
    pub proof: bool,
}

/// Codes any route may answer: rate limits, an overrunning request, an internal failure.
pub const COMMON_ERRORS: &[&str] = &[codes::RATE_LIMITED, codes::TIMEOUT, codes::INTERNAL];

/// Codes of a route that needs a proof of key possession (all 401).
pub const PROOF_ERRORS: &[&str] = &[
    codes::PROOF_REQUIRED,
    codes::PROOF_INVALID,
    codes::PROOF_EXPIRED,
    codes::PROOF_REPLAYED,
    codes::PROOF_KEY_MISMATCH,
];

/// Name of the security scheme under `components.securitySchemes`.
pub const PROOF_SCHEME_NAME: &str = "StaticWireProof";

/// Codes of a route with a JSON body.
const BODY: [&str; 3] = [
    codes::BAD_REQUEST,
    codes::TOO_LARGE,
    codes::UNSUPPORTED_MEDIA,
];

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/terms",
        operation_id: "getTerms",
        summary: "Terms of sale: prices, month length, reservation, invoice expiry, network, servers",
        request: None,
        status: 200,
        success: Success::Json("Terms"),
        errors: &[codes::BAD_REQUEST],
        dev_only: false,
        proof: false,
    },
    Route {
        method: "post",
        path: "/v1/rentals",
        operation_id: "rentNewIp",
        summary: "RentNewIP: hold a free address for a WireGuard public key and invoice the first payment",
        request: Some("RentRequest"),
        status: 201,
        success: Success::Json("InvoiceResponse"),
        errors: &[
            BODY[0],
            BODY[1],
            BODY[2],
            codes::BAD_KEY,
            codes::CONFLICT,
            codes::TOO_MANY_UNPAID,
            codes::POOL_EXHAUSTED,
            codes::BACKEND_DOWN,
            codes::BACKEND_ERROR,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "get",
        path: "/v1/rentals/{public_key}",
        operation_id: "getRentalStatus",
        summary: "GetRentalStatus: state, address, paid-until, what is due, open invoice",
        request: None,
        status: 200,
        success: Success::Json("Rental"),
        errors: &[
            codes::BAD_REQUEST,
            codes::BAD_KEY,
            codes::NOT_FOUND,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "get",
        path: "/v1/rentals/{public_key}/config",
        operation_id: "getConf",
        summary: "GetConf: the wg-quick configuration without the private key, for an active, lapsed or suspended rental (and maybe a pending one); 409 for a released one",
        request: None,
        status: 200,
        success: Success::Json("ConfigResponse"),
        errors: &[
            codes::BAD_REQUEST,
            codes::BAD_KEY,
            codes::NOT_FOUND,
            codes::CONFLICT,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "post",
        path: "/v1/rentals/{public_key}/renewals",
        operation_id: "renew",
        summary: "Renew: invoice for more months plus any back payments owed",
        request: Some("RenewRequest"),
        status: 201,
        success: Success::Json("InvoiceResponse"),
        errors: &[
            BODY[0],
            BODY[1],
            BODY[2],
            codes::BAD_KEY,
            codes::BAD_MONTHS,
            codes::NOT_FOUND,
            codes::CONFLICT,
            codes::BACKEND_DOWN,
            codes::BACKEND_ERROR,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "get",
        path: "/v1/rentals/{public_key}/ptr",
        operation_id: "getPtr",
        summary: "Reverse DNS: the PTR record of every address of the rental (PROTOCOL.md, Reverse DNS); 404 when the server offers none",
        request: None,
        status: 200,
        success: Success::Json("PtrList"),
        errors: &[
            codes::BAD_REQUEST,
            codes::BAD_KEY,
            codes::TUNNEL_FORBIDDEN,
            codes::NOT_FOUND,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "put",
        path: "/v1/rentals/{public_key}/ptr",
        operation_id: "setPtr",
        summary: "Reverse DNS: set the PTR record of one of the rental's addresses to a name that resolves to it (forward-confirmed)",
        request: Some("PtrRequest"),
        status: 200,
        success: Success::Json("PtrList"),
        errors: &[
            BODY[0],
            BODY[1],
            BODY[2],
            codes::BAD_KEY,
            codes::BAD_NAME,
            codes::ADDRESS_NOT_RENTED,
            codes::TUNNEL_FORBIDDEN,
            codes::NOT_FOUND,
            codes::RENTAL_NOT_ACTIVE,
            codes::PTR_LIMIT,
            codes::FORWARD_MISMATCH,
            codes::DNS_UNAVAILABLE,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "delete",
        path: "/v1/rentals/{public_key}/ptr",
        operation_id: "clearPtr",
        summary: "Reverse DNS: back to the provider's default for one address of the rental, or all of them",
        request: Some("PtrClearRequest"),
        status: 200,
        success: Success::Json("PtrList"),
        errors: &[
            BODY[0],
            BODY[1],
            BODY[2],
            codes::BAD_KEY,
            codes::ADDRESS_NOT_RENTED,
            codes::TUNNEL_FORBIDDEN,
            codes::NOT_FOUND,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "get",
        path: "/v1/invoices/{payment_hash}",
        operation_id: "getInvoice",
        summary: "Invoice state; with wait, long-polls until it is no longer open",
        request: None,
        status: 200,
        success: Success::Json("Invoice"),
        errors: &[
            codes::BAD_REQUEST,
            codes::NOT_FOUND,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: true,
    },
    Route {
        method: "get",
        path: "/v1/openapi.json",
        operation_id: "getOpenApi",
        summary: "This document",
        request: None,
        status: 200,
        success: Success::Object,
        errors: &[codes::BAD_REQUEST],
        dev_only: false,
        proof: false,
    },
    Route {
        method: "get",
        path: "/healthz",
        operation_id: "healthz",
        summary: "Liveness",
        request: None,
        status: 200,
        success: Success::Text,
        errors: &[],
        dev_only: false,
        proof: false,
    },
    Route {
        method: "get",
        path: "/readyz",
        operation_id: "readyz",
        summary: "Readiness: the database answers and the Lightning node can do what renting needs",
        request: None,
        status: 200,
        success: Success::Text,
        errors: &[
            codes::BACKEND_DOWN,
            codes::BACKEND_ERROR,
            codes::DATABASE_UNAVAILABLE,
        ],
        dev_only: false,
        proof: false,
    },
    Route {
        method: "post",
        path: "/v1/dev/pay",
        operation_id: "devPay",
        summary: "Test hook: pay an invoice of the server's test Lightning node and credit it at once",
        request: Some("DevPayRequest"),
        status: 200,
        success: Success::Json("DevPayResponse"),
        errors: &[BODY[0], BODY[1], BODY[2], codes::NOT_FOUND, codes::CONFLICT],
        dev_only: true,
        proof: false,
    },
    Route {
        method: "post",
        path: "/v1/dev/clock",
        operation_id: "devClock",
        summary: "Test hook: move the server's clock forward",
        request: Some("DevClockRequest"),
        status: 200,
        success: Success::Json("DevClockResponse"),
        errors: &[BODY[0], BODY[1], BODY[2]],
        dev_only: true,
        proof: false,
    },
];

/// A WireGuard public key in a JSON body: standard base64 of 32 bytes, canonical (the last
/// character before the `=` carries no stray bits).
pub const KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";
/// A key in a path, once percent-decoded: the URL-safe alphabet or the standard one.
pub const PATH_KEY_PATTERN: &str = "^([A-Za-z0-9+/]{42}|[A-Za-z0-9_-]{42})[AEIMQUYcgkosw048]=$";
/// A SHA-256 (payment hash, preimage, TLS fingerprint): 64 lowercase hex characters.
pub const HASH_PATTERN: &str = "^[0-9a-f]{64}$";
/// A Lightning node key: a compressed secp256k1 point, 66 lowercase hex characters.
pub const NODE_KEY_PATTERN: &str = "^0[23][0-9a-f]{64}$";

/// What PROTOCOL.md says of members beyond their type, added to the generated schemas:
/// (schema, member, keyword, value).
const CONSTRAINTS: &[(&str, &str, &str, Constraint)] = &[
    ("Terms", "month_seconds", "minimum", Constraint::Min(1)),
    (
        "Terms",
        "invoice_expiry_seconds",
        "minimum",
        Constraint::Min(1),
    ),
    ("Terms", "max_months", "minimum", Constraint::Min(1)),
    (
        "Terms",
        "tls_fingerprint",
        "pattern",
        Constraint::Pattern(HASH_PATTERN),
    ),
    (
        "Terms",
        "payee",
        "pattern",
        Constraint::Pattern(NODE_KEY_PATTERN),
    ),
    (
        "Terms",
        "proof_key",
        "pattern",
        Constraint::Pattern(KEY_PATTERN),
    ),
    (
        "Server",
        "public_key",
        "pattern",
        Constraint::Pattern(KEY_PATTERN),
    ),
    (
        "RentRequest",
        "public_key",
        "pattern",
        Constraint::Pattern(KEY_PATTERN),
    ),
    ("RenewRequest", "months", "minimum", Constraint::Min(1)),
    (
        "Rental",
        "public_key",
        "pattern",
        Constraint::Pattern(KEY_PATTERN),
    ),
    (
        "Invoice",
        "payment_hash",
        "pattern",
        Constraint::Pattern(HASH_PATTERN),
    ),
    (
        "ConfigResponse",
        "server_public_key",
        "pattern",
        Constraint::Pattern(KEY_PATTERN),
    ),
    (
        "DevPayResponse",
        "payment_hash",
        "pattern",
        Constraint::Pattern(HASH_PATTERN),
    ),
    (
        "DevPayResponse",
        "preimage",
        "pattern",
        Constraint::Pattern(HASH_PATTERN),
    ),
];

#[derive(Debug, Clone, Copy)]
enum Constraint {
    Min(u64),
    Pattern(&'static str),
}

/// Whether `s` matches `pattern`, for the patterns this document uses (no regex engine: each
/// is written out); `None` for a pattern it does not know.
pub fn matches_pattern(pattern: &str, s: &str) -> Option<bool> {
    let lower_hex = |t: &str| t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let key = |alphabet: &[u8; 2]| {
        let b = s.as_bytes();
        b.len() == 44
            && b[..42]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || alphabet.contains(c))
            && b"AEIMQUYcgkosw048".contains(&b[42])
            && b[43] == b'='
    };
    Some(match pattern {
        KEY_PATTERN => key(b"+/"),
        PATH_KEY_PATTERN => key(b"+/") || key(b"-_"),
        HASH_PATTERN => s.len() == 64 && lower_hex(s),
        NODE_KEY_PATTERN => {
            s.len() == 66 && (s.starts_with("02") || s.starts_with("03")) && lower_hex(s)
        }
        _ => return None,
    })
}

fn constrain(schemas: &mut Value) {
    for (schema, member, keyword, c) in CONSTRAINTS {
        let v = match c {
            Constraint::Min(n) => json!(n),
            Constraint::Pattern(p) => json!(p),
        };
        schemas[*schema]["properties"][*member][*keyword] = v;
    }
}

/// Answers any path may give whatever its method: no such route, or not with this method.
pub const ANY_PATH_ERRORS: &[&str] = &[codes::NOT_FOUND, codes::METHOD_NOT_ALLOWED];

/// The HTTP statuses `code` is sent with.
pub fn statuses_of(code: &str) -> &'static [u16] {
    codes::ALL
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(&[], |(_, s)| *s)
}

/// The route an OpenAPI path template and method name, if documented.
pub fn route(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    crate::Terms,
    crate::Server,
    crate::RentRequest,
    crate::RenewRequest,
    crate::RentalState,
    crate::InvoiceState,
    crate::InvoicePurpose,
    crate::Invoice,
    crate::Rental,
    crate::InvoiceResponse,
    crate::ConfigResponse,
    crate::ErrorBody,
    crate::ErrorDetail,
    crate::DevPayRequest,
    crate::DevPayResponse,
    crate::DevClockRequest,
    crate::DevClockResponse,
    crate::PtrRequest,
    crate::PtrClearRequest,
    crate::PtrRecord,
    crate::PtrList,
)))]
struct Schemas;

fn error_responses(errors: &[&str], proof: bool) -> Map<String, Value> {
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    let proof_errors = if proof { PROOF_ERRORS } else { &[] };
    for code in errors
        .iter()
        .chain(proof_errors)
        .chain(COMMON_ERRORS)
        .chain(ANY_PATH_ERRORS)
    {
        for &status in statuses_of(code) {
            let list = by_status.entry(status).or_default();
            if !list.contains(code) {
                list.push(code);
            }
        }
    }
    let mut out = Map::new();
    for (status, list) in by_status {
        let examples: Map<String, Value> = list
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    json!({"value": {"error": {"code": c, "message": "a sentence for people"}}}),
                )
            })
            .collect();
        let mut resp = json!({
            "description": format!("Error: {}", list.join(", ")),
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"},
                "examples": examples,
            }},
        });
        if status == 401 {
            resp["headers"] = json!({"WWW-Authenticate": {
                "description": "StaticWire-Proof",
                "schema": {"type": "string"},
            }});
        }
        if status == 429 {
            resp["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait (rate_limited)",
                "schema": {"type": "integer", "minimum": 1},
            }});
        }
        out.insert(status.to_string(), resp);
    }
    out
}

fn parameters(path: &str) -> Vec<Value> {
    let mut p = Vec::new();
    if path.contains("{public_key}") {
        p.push(json!({
            "name": "public_key", "in": "path", "required": true,
            "description": "The customer's WireGuard public key: 32 bytes in base64 (44 characters), URL-safe alphabet (-_), or the standard alphabet percent-encoded (%2B, %2F, %3D); the pattern is of the decoded value. A key that is not a usable key answers 400 bad_public_key.",
            "schema": {"type": "string", "minLength": 44, "maxLength": 44, "pattern": PATH_KEY_PATTERN},
        }));
    }
    if path.contains("{payment_hash}") {
        p.push(json!({
            "name": "payment_hash", "in": "path", "required": true,
            "description": "SHA-256 payment hash, 64 lowercase hex characters (any other answers 404 not_found)",
            "schema": {"type": "string", "pattern": HASH_PATTERN},
        }));
        p.push(json!({
            "name": "wait", "in": "query", "required": false,
            "description": "Long-poll: answer as soon as the invoice is settled or expired, or after this many seconds (one or more digits). A server may cap it (staticwire-control: 60); a larger value, of any size, is capped, never an error. Given twice, not digits, or beside any other query parameter: 400 bad_request (every /v1 route refuses parameters it does not define).",
            "schema": {"type": "integer", "minimum": 0},
        }));
    }
    p
}

/// The whole document, as served at `/v1/openapi.json`.
pub fn document() -> Value {
    let generated =
        serde_json::to_value(<Schemas as utoipa::OpenApi>::openapi()).unwrap_or_else(|_| json!({}));
    let mut schemas = generated["components"]["schemas"].clone();
    constrain(&mut schemas);
    let all: Vec<&str> = codes::ALL.iter().map(|(c, _)| *c).collect();
    schemas["ErrorCode"] = json!({
        "type": "string",
        "description": "Stable error codes (ErrorDetail.code). A client treats a code it does not know by its HTTP status.",
        "enum": all,
    });
    let mut paths = Map::new();
    for r in ROUTES {
        let ok = match r.success {
            Success::Json(schema) => json!({"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}),
            Success::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
            Success::Object => json!({"application/json": {"schema": {"type": "object"}}}),
        };
        let mut responses = error_responses(r.errors, r.proof);
        responses.insert(
            r.status.to_string(),
            json!({"description": "Success", "content": ok}),
        );
        let mut op = json!({
            "operationId": r.operation_id,
            "summary": r.summary,
            "parameters": parameters(r.path),
            "responses": responses,
        });
        if r.proof {
            op["security"] = json!([{PROOF_SCHEME_NAME: []}]);
        }
        if r.dev_only {
            op["description"] = json!("Only on a server whose Lightning backend is a test one and whose test hooks are turned on; a production server MUST NOT serve it (PROTOCOL.md, Test hooks).");
            op["x-staticwire-dev-only"] = json!(true);
        }
        if let Some(schema) = r.request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "StaticWire rental protocol",
            "version": "1.1.0",
            "description": "Rent a static public IPv4 address over WireGuard, paid with Bitcoin Lightning, with no account. The normative text is PROTOCOL.md; this document is generated from the types of the staticwire-api crate. Every error is {\"error\":{\"code\",\"message\"}}; the example names under each error status are the codes that route may answer with it.",
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {PROOF_SCHEME_NAME: {
                "type": "http",
                "scheme": crate::proof::SCHEME,
                "description": "Proof of possession of the WireGuard private key of the rental the request acts on: Authorization: StaticWire-Proof key=\"<base64 public key>\", ts=\"<unix seconds>\", nonce=\"<base64 16 bytes>\", mac=\"<base64 HMAC-SHA256>\", the MAC keyed by HKDF-SHA256 of X25519(client private key, the terms' proof_key). Exact construction and test vector: PROTOCOL.md, proof of key possession.",
            }},
        },
    })
}

/// Checks `value` against `schema` (a schema of this document, `$ref`s resolved in `doc`), for
/// the subset the document uses: `$ref`, `type` (one or a list), `enum`, `oneOf`, `properties`
/// and `required`, `items`, `minimum`, and `pattern` for the patterns the document uses
/// ([`matches_pattern`]; an unknown one is a mismatch). Members the schema does not name are
/// allowed (servers may add fields). Returns where the first mismatch is.
pub fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    validate_at(doc, schema, value, "$", 0)
}

fn validate_at(doc: &Value, schema: &Value, v: &Value, at: &str, depth: u32) -> Result<(), String> {
    if depth > 32 {
        return Err(format!("{at}: schema nesting too deep"));
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or("");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: unknown schema {r}"));
        }
        return validate_at(doc, target, v, at, depth + 1);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|o| validate_at(doc, o, v, at, depth + 1).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            0 => Err(format!("{at}: matches none of the alternatives: {v}")),
            _ => Err(format!("{at}: matches several alternatives: {v}")),
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: expected {}, got {v}", types.join(" or ")));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            return Err(format!(
                "{at}: {v} is not one of {}",
                Value::from(values.clone())
            ));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            return Err(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let (Some(p), Some(text)) = (schema["pattern"].as_str(), v.as_str()) {
        match matches_pattern(p, text) {
            Some(true) => {}
            Some(false) => return Err(format!("{at}: {v} does not match {p}")),
            None => return Err(format!("{at}: pattern {p} is not one this validator knows")),
        }
    }
    if let Some(obj) = v.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let name = req.as_str().unwrap_or("");
            if !obj.contains_key(name) {
                return Err(format!("{at}: required member {name:?} missing"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                if let Some(member) = obj.get(name) {
                    validate_at(doc, sub, member, &format!("{at}.{name}"), depth + 1)?;
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, item) in list.iter().enumerate() {
            validate_at(doc, items, item, &format!("{at}[{i}]"), depth + 1)?;
        }
    }
    Ok(())
}

/// The schema of a component by name, as a `$ref` to validate against.
pub fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_a_route_names_is_generated() {
        let doc = document();
        let names: Vec<&str> = ROUTES
            .iter()
            .filter_map(|r| match r.success {
                Success::Json(s) => Some(s),
                _ => None,
            })
            .chain(ROUTES.iter().filter_map(|r| r.request))
            .chain(["ErrorBody", "ErrorCode"])
            .collect();
        for n in names {
            assert!(
                doc["components"]["schemas"][n].is_object(),
                "schema {n} missing"
            );
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn every_code_has_a_status_and_every_route_code_is_known() {
        for (code, statuses) in codes::ALL {
            assert!(!statuses.is_empty(), "{code}");
        }
        for r in ROUTES {
            for c in r.errors.iter().chain(COMMON_ERRORS) {
                assert!(!statuses_of(c).is_empty(), "{} {}: {c}", r.method, r.path);
            }
        }
    }

    #[test]
    fn schemas_follow_the_serde_names() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["RentalState"]["enum"],
            json!(["pending", "active", "lapsed", "suspended", "released"])
        );
        let rental = &s["Rental"]["properties"];
        for field in [
            "public_key",
            "paid_until",
            "months_owed",
            "amount_due_sat",
            "server",
            "prefix_len",
            "ipv6",
        ] {
            assert!(rental[field].is_object(), "Rental.{field}");
        }
        for field in ["public_key", "prefix_len", "ipv6", "host"] {
            assert!(
                s["RentRequest"]["properties"][field].is_object(),
                "RentRequest.{field}"
            );
        }
        for field in ["ipv4_prefix_lengths", "address_monthly_sat", "payee"] {
            assert!(s["Terms"]["properties"][field].is_object(), "Terms.{field}");
        }
        assert!(s["ConfigResponse"]["properties"]["networks"].is_object());
        assert!(s["Terms"]["properties"]["proof_key"].is_object());
    }

    #[test]
    fn routes_that_act_on_a_rental_need_the_proof() {
        let doc = document();
        assert_eq!(
            doc["components"]["securitySchemes"][PROOF_SCHEME_NAME]["scheme"],
            "StaticWire-Proof"
        );
        let proven: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.proof)
            .map(|r| r.operation_id)
            .collect();
        assert_eq!(
            proven,
            [
                "rentNewIp",
                "getRentalStatus",
                "getConf",
                "renew",
                "getPtr",
                "setPtr",
                "clearPtr",
                "getInvoice"
            ]
        );
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method];
            let examples = &op["responses"]["401"]["content"]["application/json"]["examples"];
            if r.proof {
                assert_eq!(
                    op["security"],
                    json!([{PROOF_SCHEME_NAME: []}]),
                    "{}",
                    r.path
                );
                for code in PROOF_ERRORS {
                    assert!(examples[*code].is_object(), "{} {code}", r.path);
                }
                assert!(op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
            } else {
                assert!(op["security"].is_null(), "{}", r.path);
                assert!(op["responses"]["401"].is_null(), "{}", r.path);
            }
        }
    }

    #[test]
    fn validation_catches_missing_members_wrong_types_and_enums() {
        let doc = document();
        let terms = serde_json::to_value(crate::Terms {
            activation_sat: 1,
            monthly_sat: 2,
            first_payment_sat: 3,
            month_seconds: 4,
            reservation_seconds: 5,
            invoice_expiry_seconds: 6,
            max_months: 7,
            network: "regtest".into(),
            servers: vec![crate::Server {
                endpoint: "198.18.0.1:51820".into(),
                public_key: "CQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                name: "wg0".into(),
                free_ipv4: Some(3),
                ipv6_prefix_len: Some(64),
            }],
            tls_fingerprint: None,
            payee: None,
            ipv4_prefix_lengths: vec![32, 30],
            address_monthly_sat: 8,
            ipv6_monthly_sat: 0,
            ipv6_only_monthly_sat: Some(10),
            proof_key: None,
            reverse_dns: false,
        })
        .unwrap();
        let t = schema_ref("Terms");
        assert_eq!(validate(&doc, &t, &terms), Ok(()));
        let mut extra = terms.clone();
        extra["new_member"] = json!(1);
        assert_eq!(validate(&doc, &t, &extra), Ok(()), "additions are allowed");
        let mut missing = terms.clone();
        missing.as_object_mut().unwrap().remove("network");
        assert!(validate(&doc, &t, &missing)
            .unwrap_err()
            .contains("network"));
        let mut wrong = terms.clone();
        wrong["servers"][0]["endpoint"] = json!(5);
        assert!(validate(&doc, &t, &wrong)
            .unwrap_err()
            .contains("$.servers[0].endpoint"));
        let state = schema_ref("RentalState");
        assert!(validate(&doc, &state, &json!("active")).is_ok());
        assert!(validate(&doc, &state, &json!("gone")).is_err());
        let neg = json!({"months": -1});
        assert!(validate(&doc, &schema_ref("RenewRequest"), &neg).is_err());
    }

    /// Issue 27: what PROTOCOL.md says beyond the types is in the document and checked.
    #[test]
    fn keys_hashes_and_durations_are_constrained_as_the_protocol_says() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        for m in ["month_seconds", "invoice_expiry_seconds", "max_months"] {
            assert_eq!(s["Terms"]["properties"][m]["minimum"], 1, "Terms.{m}");
        }
        assert_eq!(s["RenewRequest"]["properties"]["months"]["minimum"], 1);
        let terms = json!({"activation_sat": 1, "monthly_sat": 1, "first_payment_sat": 2,
            "month_seconds": 0, "reservation_seconds": 0, "invoice_expiry_seconds": 1,
            "max_months": 1, "network": "regtest", "servers": []});
        let err = validate(&doc, &schema_ref("Terms"), &terms).unwrap_err();
        assert!(err.contains("month_seconds"), "{err}");
        assert!(validate(&doc, &schema_ref("RenewRequest"), &json!({"months": 0})).is_err());

        let key = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        let hash = "1dcdd355e3cf18da89953b630dc186f015d1b2f86d0f506a79d14cc4d5e2a347";
        let inv = |hash: &str| {
            json!({"payment_hash": hash, "bolt11": "lnbcrt1", "amount_sat": 1,
                "purpose": "activation", "months": 1, "state": "open", "created_at": 1,
                "expires_at": 2, "settled_at": null})
        };
        assert_eq!(validate(&doc, &schema_ref("Invoice"), &inv(hash)), Ok(()));
        let upper = validate(&doc, &schema_ref("Invoice"), &inv(&hash.to_uppercase()));
        assert!(upper.unwrap_err().contains("payment_hash"));
        let req = |k: &str| json!({ "public_key": k });
        assert_eq!(
            validate(&doc, &schema_ref("RentRequest"), &req(key)),
            Ok(())
        );
        for bad in [
            "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=", // URL-safe
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=", // stray bits
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",  // no padding
            "AAAA",
        ] {
            assert!(
                validate(&doc, &schema_ref("RentRequest"), &req(bad)).is_err(),
                "{bad}"
            );
        }
        assert_eq!(matches_pattern(PATH_KEY_PATTERN, key), Some(true));
        assert_eq!(
            matches_pattern(PATH_KEY_PATTERN, &key.replace('/', "_")),
            Some(true)
        );
        assert_eq!(
            matches_pattern(PATH_KEY_PATTERN, &key.replace('/', "_").replace('w', "+")),
            Some(false),
            "one alphabet, not a mix"
        );
        assert_eq!(
            matches_pattern(NODE_KEY_PATTERN, &format!("02{hash}")),
            Some(true)
        );
        assert_eq!(
            matches_pattern(NODE_KEY_PATTERN, &format!("04{hash}")),
            Some(false)
        );
        assert_eq!(matches_pattern("^x$", "x"), None);
    }

    /// Every pattern the document carries is one `validate` can check.
    #[test]
    fn every_pattern_in_the_document_is_known() {
        fn walk(v: &Value, found: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
                        found.push(p.to_string());
                    }
                    m.values().for_each(|x| walk(x, found));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&document(), &mut found);
        assert!(found.len() >= CONSTRAINTS.len(), "{found:?}");
        for p in found {
            assert!(matches_pattern(&p, "").is_some(), "{p}");
        }
    }

    /// Every `/v1` route may answer 400 bad_request: it refuses query parameters it does not
    /// define (PROTOCOL.md section 4).
    #[test]
    fn every_v1_route_lists_bad_request() {
        let doc = document();
        for r in ROUTES.iter().filter(|r| r.path.starts_with("/v1/")) {
            let examples = &doc["paths"][r.path][r.method]["responses"]["400"]["content"]
                ["application/json"]["examples"];
            assert!(
                examples[codes::BAD_REQUEST].is_object(),
                "{} {}",
                r.method,
                r.path
            );
        }
        let status = &doc["paths"]["/v1/rentals/{public_key}"]["get"]["responses"]["400"];
        assert!(status["content"]["application/json"]["examples"][codes::BAD_KEY].is_object());
    }
}
