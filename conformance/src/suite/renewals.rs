//! PROTOCOL.md §6 POST /v1/rentals/{public_key}/renewals — Renew: refused while pending or for
//! months out of range; once active, a renewal invoice whose payment extends `paid_until`.

use super::harness::{ensure, Suite};
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
    let mut c = Ok(());
    for m in [0, u64::from(t.max_months) + 1] {
        let r = s.renew(key, m).await;
        c = c.and(
            s.expect_error(&r, 400, codes::BAD_MONTHS)
                .map_err(|e| format!("months {m}: {e}")),
        );
    }
    s.check(
        "renew.bad-months",
        "months of 0 or above max_months answers 400 bad_months",
        c,
    );
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
