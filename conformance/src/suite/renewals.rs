//! PROTOCOL.md §6 POST /v1/rentals/{public_key}/renewals — Renew: refused while pending or for
//! months out of range; once active, a renewal invoice whose payment extends `paid_until`.

use super::harness::{ensure, new_key, rental_path, Check, Suite};
use crate::invoice;
use staticwire_api::{self as api, codes};

/// Renewals refused while the first invoice is unpaid.
pub(super) async fn unpaid(s: &mut Suite<'_>, t: &api::Terms, key: &str) {
    let r = s.renew(key, 1).await;
    let c = s.expect_error(&r, 409, codes::CONFLICT);
    s.check(
        "renew.pending",
        "Renewing a rental whose first invoice is unpaid answers 409 conflict",
        c,
    );
    let c = bad_months(s, t, key).await;
    s.check(
        "renew.bad-months",
        "months 0, negative, fractional, above max_months or beyond any integer answers 400 bad_months",
        c,
    );
    // Before the state: a key that never rented answers it as the pending rental does.
    let c = bad_months(s, t, &new_key()).await;
    s.check(
        "renew.bad-months-first",
        "months out of range answers 400 bad_months for a key that never rented too (checked before the state)",
        c,
    );
    let mut c = Ok(());
    for body in [r#"{"months":"1"}"#, r#"{"months":null}"#, r#"{}"#] {
        let r = renew_raw(s, key, body).await;
        c = c.and(
            s.expect_error(&r, 400, codes::BAD_REQUEST)
                .map_err(|e| format!("{body}: {e}")),
        );
    }
    s.check(
        "renew.months-type",
        "months missing or not a number answers 400 bad_request",
        c,
    );
}

/// Renew of `key` with `body` as sent, byte for byte.
async fn renew_raw(s: &Suite<'_>, key: &str, body: &str) -> Result<crate::http::Reply, String> {
    s.http
        .send(
            "POST",
            &format!("{}/renewals", rental_path(key)),
            Some("application/json"),
            Some(body.as_bytes().to_vec()),
        )
        .await
}

/// Every `months` out of range answers 400 bad_months for `key`, whatever its state.
pub(super) async fn bad_months(s: &Suite<'_>, t: &api::Terms, key: &str) -> Check {
    let above = (u64::from(t.max_months) + 1).to_string();
    let mut c = Ok(());
    for m in [
        "0",
        above.as_str(),
        "-1",
        "1.5",
        "1.0",
        "18446744073709551616",
    ] {
        let r = renew_raw(s, key, &format!(r#"{{"months":{m}}}"#)).await;
        c = c.and(
            s.expect_error(&r, 400, codes::BAD_MONTHS)
                .map_err(|e| format!("months {m}: {e}")),
        );
    }
    c
}

/// Renewals of the active rental; returns `paid_until` after paying one month.
pub(super) async fn paid(
    s: &mut Suite<'_>,
    t: &api::Terms,
    key: &str,
    paid_until: Option<i64>,
) -> Option<i64> {
    let r = s.renew(key, 1).await;
    let renewal: Result<api::InvoiceResponse, String> = s.expect_as(&r, 201, "InvoiceResponse");
    let c = renewal.as_ref().map_err(Clone::clone).and_then(|rn| {
        let i = &rn.invoice;
        ensure(
            i.purpose == api::InvoicePurpose::Renewal
                && i.months == 1
                && i.amount_sat == t.monthly_sat
                && i.state == api::InvoiceState::Open,
            || format!("{i:?}"),
        )?;
        invoice::check(&i.bolt11, t, t.monthly_sat, &i.payment_hash).map(|_| ())
    });
    s.check(
        "renew.invoice",
        "Renewing an active rental for 1 month: a renewal invoice of monthly_sat that passes the checks",
        c,
    );
    let r = s.renew(key, u64::from(t.max_months)).await;
    let c = s.expect(&r, 201, "InvoiceResponse").and_then(|v| {
        ensure(
            v["invoice"]["amount_sat"] == t.monthly_sat * u64::from(t.max_months)
                && v["invoice"]["months"] == t.max_months,
            || format!("{}", v["invoice"]),
        )
    });
    s.check(
        "renew.max",
        "Renewing for max_months costs max_months x monthly_sat",
        c,
    );
    let mut extended = None;
    let c = match &renewal {
        Err(_) => Err("no renewal invoice to pay".to_string()),
        Ok(rn) => {
            let settled = s.settle(&rn.invoice, Ok(())).await;
            let st = s.status(key).await;
            settled.and(st).and_then(|v| {
                extended = v["paid_until"].as_i64();
                ensure(
                    extended.is_some()
                        && extended == paid_until.map(|p| p + t.month_seconds as i64),
                    || format!("paid_until {}, was {paid_until:?}", v["paid_until"]),
                )
            })
        }
    };
    s.check(
        "renew.extends",
        "Paying a renewal adds its months to paid_until",
        c,
    );
    extended
}
