//! PROTOCOL.md §6 GET /v1/invoices/{payment_hash}[?wait=S]: the invoice as issued, a long-poll
//! that ends open, a bad wait, and a long-poll woken by the payment.

use super::harness::{ensure, long_poll_path, state_is, Suite};
use crate::http::Http;
use staticwire_api::{self as api, codes};

/// The first invoice while it is open.
pub(super) async fn unpaid(s: &mut Suite<'_>, inv: &api::Invoice) {
    let path = format!("/v1/invoices/{}", inv.payment_hash);
    let r = s.http.get(&path).await;
    let c = s.expect(&r, 200, "Invoice").and_then(|v| {
        ensure(
            serde_json::from_value::<api::Invoice>(v.clone())
                .ok()
                .as_ref()
                == Some(inv),
            || format!("{v}"),
        )
    });
    s.check(
        "invoice.get",
        "GET /v1/invoices/{hash} answers the invoice as issued",
        c,
    );
    let r = s.http.get(&format!("{path}?wait=1")).await;
    let c = s
        .expect(&r, 200, "Invoice")
        .and_then(|v| state_is(&v, "open"));
    s.check(
        "invoice.wait-open",
        "A long-poll on an unpaid invoice answers it, still open, when the wait ends",
        c,
    );
    let mut c = Ok(());
    for q in [
        "wait=soon",
        "wait=",
        "wait=-1",
        "wait=%2B1",
        "wait=1.5",
        "wait=1&wait=1",
        "wait=1&x=1",
    ] {
        let r = s.http.get(&format!("{path}?{q}")).await;
        c = c.and(
            s.expect_error(&r, 400, codes::BAD_REQUEST)
                .map_err(|e| format!("?{q}: {e}")),
        );
    }
    s.check(
        "invoice.bad-wait",
        "A wait that is not whole seconds, a second wait or another parameter answers 400 bad_request",
        c,
    );
    // Asked with a proof of the rental's own key (PROTOCOL.md 3.1).
    let upper = format!("/v1/invoices/{}", inv.payment_hash.to_uppercase());
    let own = format!("/v1/invoices/{}", inv.payment_hash);
    if let Some(k) = crate::http::keyring().key_of("GET", &own, b"") {
        crate::http::claim_invoice(&inv.payment_hash.to_uppercase(), &k);
    }
    let r = s.http.get(&upper).await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.uppercase-hash",
        "An issued payment hash written in uppercase is not one the server issued: 404 not_found",
        c,
    );
}

/// Pays `inv` while a long-poll waits on it.
pub(super) async fn paid(s: &mut Suite<'_>, inv: &api::Invoice) {
    // The long-poll starts before the payment: it must come back settled, not open after 30 s.
    let poll = {
        let http = Http::new(&s.opts.base, s.opts.fingerprint.as_deref());
        if let Ok(h) = &http {
            h.set_proof_key(s.http.proof_key());
        }
        let path = long_poll_path(&inv.payment_hash);
        tokio::spawn(async move {
            match http {
                Ok(h) => h.get(&path).await,
                Err(e) => Err(e),
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let paid = s.pay(&inv.bolt11).await;
    let polled = match poll.await {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    };
    let c = paid.and_then(|_| {
        s.expect(&polled, 200, "Invoice").and_then(|v| {
            ensure(v["state"] == "settled" && v["settled_at"].is_i64(), || {
                format!("{v}")
            })
        })
    });
    s.check(
        "pay.long-poll",
        "A long-poll waiting on an invoice answers settled once it is paid",
        c,
    );
    // Settled, so the long-poll answers at once however long it may wait.
    let mut c = Ok(());
    for wait in [
        "99999999999",
        "18446744073709551616",
        "1000000000000000000000000000000",
    ] {
        let r = s
            .http
            .get(&format!("/v1/invoices/{}?wait={wait}", inv.payment_hash))
            .await;
        c = c.and(
            s.expect(&r, 200, "Invoice")
                .and_then(|v| state_is(&v, "settled"))
                .map_err(|e| format!("wait={wait}: {e}")),
        );
    }
    s.check(
        "invoice.wait-large",
        "A wait of any size is capped, never an error",
        c,
    );
}
