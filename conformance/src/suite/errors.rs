//! PROTOCOL.md §5 Errors (with the answers §4 Conventions requires): every refusal is the
//! error body with the status and code the protocol names.

use super::harness::{new_key, url_key, Suite};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use staticwire_api::codes;

pub(super) async fn errors(s: &mut Suite<'_>) {
    let r = s.http.get("/v1/conformance-no-such-route").await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-route",
        "An unknown route answers 404 not_found",
        c,
    );
    let r = s
        .http
        .send(
            "POST",
            "/v1/rentals",
            Some("text/plain"),
            Some(b"{}".to_vec()),
        )
        .await;
    let c = s.expect_error(&r, 415, codes::UNSUPPORTED_MEDIA);
    s.check(
        "error.media-type",
        "A body that is not application/json answers 415 unsupported_media_type",
        c,
    );
    let r = s
        .http
        .send(
            "POST",
            "/v1/rentals",
            Some("application/json"),
            Some(b"{".to_vec()),
        )
        .await;
    let c = s.expect_error(&r, 400, codes::BAD_REQUEST);
    s.check(
        "error.bad-json",
        "Malformed JSON answers 400 bad_request",
        c,
    );
    let mut low_order = [0u8; 32];
    low_order[0] = 1;
    let mut bad = Ok(());
    for key in [
        "AAAA".to_string(),
        STANDARD.encode([0u8; 32]),
        STANDARD.encode(low_order),
        STANDARD.encode([7u8; 31]),
    ] {
        let r = s.rent(&key).await;
        bad = bad.and(
            s.expect_error(&r, 400, codes::BAD_KEY)
                .map_err(|e| format!("key {key}: {e}")),
        );
    }
    s.check(
        "error.bad-key",
        "A key that is not 32 bytes, all zero or a low-order point answers 400 bad_public_key",
        bad,
    );
    // Over the 64 KiB a server should accept. A server may close the connection as it
    // answers, before the client has sent everything: then the answer is lost, which is
    // only a warning.
    let big = vec![b' '; 80 * 1024];
    let r = s
        .http
        .send("POST", "/v1/rentals", Some("application/json"), Some(big))
        .await;
    let rule = "A body over the server's limit answers 413 body_too_large";
    match &r {
        Err(e) => s.should(
            "error.too-large",
            rule,
            Err(format!("no answer to read: {e}")),
        ),
        // Read and found not to be JSON: the server's limit is higher, which is allowed.
        Ok(reply) if reply.status == 400 => s.skip(
            "error.too-large",
            rule,
            "the server read an 80 KiB body (its limit is higher)",
        ),
        Ok(_) => {
            let c = s.expect_error(&r, 413, codes::TOO_LARGE);
            s.check("error.too-large", rule, c)
        }
    }
    let r = s
        .http
        .get(&format!("/v1/rentals/{}", url_key(&new_key())))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-rental",
        "A key with no rental answers 404 not_found",
        c,
    );
    let r = s
        .http
        .get(&format!("/v1/rentals/{}/config", url_key(&new_key())))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-config",
        "GetConf of a key with no rental answers 404 not_found",
        c,
    );
    let mut h = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut h);
    let r = s
        .http
        .get(&format!("/v1/invoices/{}", hex::encode(h)))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-invoice",
        "An unknown payment hash answers 404 not_found",
        c,
    );
    let r = s.http.get("/v1/rentals").await;
    let c = s.expect_error(&r, 405, codes::METHOD_NOT_ALLOWED);
    s.should(
        "error.method",
        "A route asked with another method answers 405 method_not_allowed (SHOULD)",
        c,
    );
}
