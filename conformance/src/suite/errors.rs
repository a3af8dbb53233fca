//! PROTOCOL.md §5 Errors (with the answers §4 Conventions requires): every refusal is the
//! error body with the status and code the protocol names. One table of cases, one loop.

use super::harness::{config_path, new_key, rental_path, Suite};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use rand::RngCore;
use serde_json::json;
use staticwire_api::codes;

/// How a case's verdict is recorded.
enum Level {
    Must,
    Should,
    /// A body over the limit a server should accept (64 KiB): a server may close the
    /// connection as it answers, before the client has sent everything, and then the answer is
    /// lost, which is only a warning; a 400 means it read the body (its limit is higher),
    /// which is allowed.
    BodyLimit,
}

/// One request of a case. `label`, where a case sends several, names it in the failure.
struct Request {
    label: Option<String>,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

impl Request {
    fn get(path: String) -> Request {
        Request {
            label: None,
            method: "GET",
            path,
            content_type: None,
            body: None,
        }
    }

    /// RentNewIP's route, with `body` sent as `content_type`.
    fn post(content_type: &'static str, body: Vec<u8>) -> Request {
        Request {
            label: None,
            method: "POST",
            path: "/v1/rentals".into(),
            content_type: Some(content_type),
            body: Some(body),
        }
    }

    /// A JSON `body` to `path`, labelled with the path.
    fn post_to(path: String, body: serde_json::Value) -> Request {
        Request {
            label: Some(format!("POST {path}")),
            path,
            ..Request::post("application/json", body.to_string().into_bytes())
        }
    }

    /// A GET labelled with its path.
    fn get_labelled(path: String) -> Request {
        Request {
            label: Some(format!("GET {path}")),
            ..Request::get(path)
        }
    }

    /// RentNewIP with `key`, labelled with it.
    fn rent(key: String) -> Request {
        let body = json!({ "public_key": key }).to_string().into_bytes();
        Request {
            label: Some(format!("key {key}")),
            ..Request::post("application/json", body)
        }
    }
}

/// Rule `id` holds when every request answers `status` with the error `code`.
struct Case {
    id: &'static str,
    rule: &'static str,
    level: Level,
    requests: Vec<Request>,
    status: u16,
    code: &'static str,
}

/// A usable key whose standard base64 has a `+` or `/`, so its URL-safe form differs.
fn key_with_url_safe_form() -> String {
    loop {
        let k = new_key();
        if k.contains(['+', '/']) {
            return k;
        }
    }
}

/// `key` with stray bits in its last character: the same 32 bytes to a lenient decoder, not
/// the canonical base64.
fn non_canonical(key: &str) -> String {
    let mut b = key.as_bytes().to_vec();
    let i = STANDARD_ALPHABET
        .iter()
        .position(|c| *c == b[42])
        .unwrap_or(0);
    b[42] = STANDARD_ALPHABET[(i & !3) | 1];
    String::from_utf8(b).unwrap_or_default()
}

const STANDARD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn cases() -> Vec<Case> {
    let mut low_order = [0u8; 32];
    low_order[0] = 1;
    let mut hash = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut hash);
    let hash = hex::encode(hash);
    let url_safe = URL_SAFE.encode(
        STANDARD
            .decode(key_with_url_safe_form())
            .unwrap_or_default(),
    );
    let case = |id, rule, requests, status, code| Case {
        id,
        rule,
        level: Level::Must,
        requests,
        status,
        code,
    };
    vec![
        case(
            "error.unknown-route",
            "An unknown route answers 404 not_found",
            vec![Request::get("/v1/conformance-no-such-route".into())],
            404,
            codes::NOT_FOUND,
        ),
        case(
            "error.media-type",
            "A body that is not application/json answers 415 unsupported_media_type",
            vec![Request::post("text/plain", b"{}".to_vec())],
            415,
            codes::UNSUPPORTED_MEDIA,
        ),
        case(
            "error.bad-json",
            "Malformed JSON answers 400 bad_request",
            vec![Request::post("application/json", b"{".to_vec())],
            400,
            codes::BAD_REQUEST,
        ),
        case(
            "error.bad-key",
            "A key that is not 32 bytes, all zero or a low-order point answers 400 bad_public_key",
            vec![
                Request::rent("AAAA".into()),
                Request::rent(STANDARD.encode([0u8; 32])),
                Request::rent(STANDARD.encode(low_order)),
                Request::rent(STANDARD.encode([7u8; 31])),
                Request::rent(non_canonical(&new_key())),
            ],
            400,
            codes::BAD_KEY,
        ),
        case(
            "error.bad-key-alphabet",
            "A key in a JSON body in the URL-safe alphabet answers 400 bad_public_key (bodies are standard base64)",
            vec![Request::rent(url_safe)],
            400,
            codes::BAD_KEY,
        ),
        case(
            "error.bad-path-key",
            "A path key that is not a usable key answers 400 bad_public_key on status, GetConf and Renew",
            vec![
                Request::get_labelled("/v1/rentals/AAAA".into()),
                Request::get_labelled(format!("/v1/rentals/{}", URL_SAFE.encode(low_order))),
                Request::get_labelled("/v1/rentals/AAAA/config".into()),
                Request::post_to("/v1/rentals/AAAA/renewals".into(), json!({"months": 1})),
            ],
            400,
            codes::BAD_KEY,
        ),
        case(
            "error.unknown-query",
            "A query parameter a /v1 route does not define, or wait given twice, answers 400 bad_request, before the state",
            vec![
                Request::get_labelled("/v1/terms?x=1".into()),
                Request::get_labelled("/v1/openapi.json?x=1".into()),
                Request::get_labelled(format!("{}?x=1", rental_path(&new_key()))),
                Request::get_labelled(format!("{}?x=1", config_path(&new_key()))),
                Request::get_labelled(format!("/v1/invoices/{hash}?x=1")),
                Request::get_labelled(format!("/v1/invoices/{hash}?wait=0&wait=0")),
            ],
            400,
            codes::BAD_REQUEST,
        ),
        Case {
            level: Level::BodyLimit,
            ..case(
                "error.too-large",
                "A body over the server's limit answers 413 body_too_large",
                vec![Request::post("application/json", vec![b' '; 80 * 1024])],
                413,
                codes::TOO_LARGE,
            )
        },
        case(
            "error.unknown-rental",
            "A key with no rental answers 404 not_found",
            vec![Request::get(rental_path(&new_key()))],
            404,
            codes::NOT_FOUND,
        ),
        case(
            "error.unknown-config",
            "GetConf of a key with no rental answers 404 not_found",
            vec![Request::get(config_path(&new_key()))],
            404,
            codes::NOT_FOUND,
        ),
        case(
            "error.unknown-invoice",
            "An unknown payment hash, asked with a proof of one's own key, answers 404 not_found",
            vec![Request::get(format!("/v1/invoices/{}", claimed_hash(&hash)))],
            404,
            codes::NOT_FOUND,
        ),
        Case {
            level: Level::Should,
            ..case(
                "error.method",
                "A route asked with another method answers 405 method_not_allowed (SHOULD)",
                vec![Request::get("/v1/rentals".into())],
                405,
                codes::METHOD_NOT_ALLOWED,
            )
        },
    ]
}

/// `hash`, which the suite will look up proven with a key of its own (PROTOCOL.md 3.1: without
/// a proof, any look-up is 401 first).
fn claimed_hash(hash: &str) -> String {
    let key = new_key();
    if let Some(k) = staticwire_api::proof::keyring::decode_key(&key) {
        crate::http::claim_invoice(hash, &k);
    }
    hash.to_string()
}

pub(super) async fn errors(s: &mut Suite<'_>) {
    for case in cases() {
        // Every request is sent; the first failure is the verdict.
        let mut verdict = Ok(());
        let mut last = None;
        for req in case.requests {
            let r = s
                .http
                .send(req.method, &req.path, req.content_type, req.body)
                .await;
            let c = s.expect_error(&r, case.status, case.code);
            verdict = verdict.and(match req.label {
                Some(label) => c.map_err(|e| format!("{label}: {e}")),
                None => c,
            });
            last = Some(r);
        }
        match (case.level, last) {
            (Level::Should, _) => s.should(case.id, case.rule, verdict),
            (Level::BodyLimit, Some(Err(e))) => {
                s.should(case.id, case.rule, Err(format!("no answer to read: {e}")))
            }
            (Level::BodyLimit, Some(Ok(reply))) if reply.status == 400 => s.skip(
                case.id,
                case.rule,
                "the server read an 80 KiB body (its limit is higher)",
            ),
            (Level::Must | Level::BodyLimit, _) => s.check(case.id, case.rule, verdict),
        }
    }
}
