//! PROTOCOL.md §6 GET /v1/rentals/{public_key} — GetRentalStatus: a pending rental, the key
//! written either way in the path, and a freshly paid rental.

use super::harness::{ensure, percent_key, Suite};
use super::rentals::Rented;
use staticwire_api as api;

/// The status of the rental `rent` made, while its first invoice is open.
pub(super) async fn pending(s: &mut Suite<'_>, t: &api::Terms, rented: &Rented) {
    let key = &rented.key;
    let (rental, inv) = (&rented.first.rental, &rented.first.invoice);
    let st = s.status(key).await.and_then(|v| {
        ensure(
            v["state"] == "pending"
                && v["address"] == rental.address.as_str()
                && v["open_invoice"]["payment_hash"] == inv.payment_hash.as_str()
                && v["amount_due_sat"] == t.first_payment_sat,
            || format!("{v}"),
        )
    });
    s.check(
        "status.pending",
        "GET /v1/rentals/{url-safe key} of a pending rental: pending, its open invoice, amount due",
        st,
    );
    let r = s
        .http
        .get(&format!("/v1/rentals/{}", percent_key(key)))
        .await;
    let c = s
        .expect(&r, 200, "Rental")
        .and_then(|v| ensure(v["address"] == rental.address.as_str(), || format!("{v}")));
    s.check(
        "status.percent-encoded",
        "The key in a path may be percent-encoded standard base64",
        c,
    );
}

/// The status once the first invoice is paid; returns its `paid_until`.
pub(super) async fn active(s: &mut Suite<'_>, t: &api::Terms, key: &str) -> Option<i64> {
    let status = s.status(key).await;
    let paid_until = status.as_ref().ok().and_then(|v| v["paid_until"].as_i64());
    let c = status.and_then(|v| {
        let started = v["started_at"].as_i64();
        ensure(
            v["state"] == "active"
                && started.is_some()
                && paid_until == started.map(|s| s + t.month_seconds as i64)
                && v["amount_due_sat"] == 0
                && v["months_owed"] == 0
                && v["open_invoice"].is_null(),
            || format!("{v}"),
        )
    });
    s.check(
        "pay.active",
        "Paid: active, paid_until = started_at + month_seconds, nothing due, no open invoice",
        c,
    );
    paid_until
}
