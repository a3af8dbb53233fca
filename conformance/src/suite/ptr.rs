//! PROTOCOL.md, Reverse DNS: the `/ptr` routes of an active rental. A server may not offer
//! them (404 after the proof: the other rules are skipped); one that does lists the rental's
//! addresses, refuses a bad name, an address outside the rental and a name that does not
//! resolve to the address, and changes nothing when it refuses. (The proof on these routes is
//! checked with the others', in the proof chapter; the tunnel listener, which only a customer
//! inside a tunnel can reach, by `control/tests/netns_rdns.rs`.)

use super::harness::{ensure, rental_path, Suite};
use serde_json::json;

pub(super) async fn active(s: &mut Suite<'_>, key: &str, address: &str) {
    let path = format!("{}/ptr", rental_path(key));
    let r = s.http.get(&path).await;
    if s.expect_error(&r, 404, "not_found").is_ok() {
        s.check(
            "ptr.optional",
            "A server without reverse DNS answers the /ptr routes 404 not_found (after the proof)",
            Ok(()),
        );
        s.skip("ptr.*", "Reverse DNS", "the server offers no reverse DNS");
        return;
    }
    let before = s.expect(&r, 200, "PtrList");
    let listed = before.as_ref().map_err(Clone::clone).and_then(|v| {
        ensure(
            v["records"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["address"] == address)),
            || format!("{v}"),
        )
    });
    s.check(
        "ptr.list",
        "GET /ptr of an active rental lists its address",
        listed,
    );
    let json_body = |v: serde_json::Value| Some(v.to_string().into_bytes());
    let ctype = Some("application/json");
    let r = s
        .http
        .send(
            "PUT",
            &path,
            ctype,
            json_body(json!({"name": "bad_name..example"})),
        )
        .await;
    let c = s.expect_error(&r, 400, "bad_name");
    s.check(
        "ptr.bad-name",
        "A name that is not a host name: 400 bad_name",
        c,
    );

    let r = s
        .http
        .send(
            "PUT",
            &path,
            ctype,
            json_body(json!({"address": "198.51.100.1", "name": "mail.example.net"})),
        )
        .await;
    let c = s.expect_error(&r, 400, "address_not_rented");
    s.check(
        "ptr.not-rented",
        "An address outside the rental: 400 address_not_rented",
        c,
    );

    // .invalid never resolves (RFC 6761): forward confirmation must refuse it.
    let r = s
        .http
        .send(
            "PUT",
            &path,
            ctype,
            json_body(json!({"address": address, "name": "staticwire-conformance.invalid"})),
        )
        .await;
    let refused = s.expect_error(&r, 422, "forward_mismatch");
    let c = match refused {
        Ok(()) => Ok(()),
        Err(e) => s
            .expect_error(&r, 503, "dns_unavailable")
            .map_err(|_| format!("{e} (or 503 dns_unavailable)")),
    };
    s.check(
        "ptr.forward",
        "A name that does not resolve to the address is not set: 422 forward_mismatch (503 dns_unavailable without a resolver)",
        c,
    );

    let r = s.http.get(&path).await;
    let after = s.expect(&r, 200, "PtrList");
    let same = match (&before, &after) {
        (Ok(b), Ok(a)) => ensure(b == a, || format!("before {b}, after {a}")),
        (_, Err(e)) | (Err(e), _) => Err(e.clone()),
    };
    s.check("ptr.unchanged", "The refused PUTs changed nothing", same);
}
