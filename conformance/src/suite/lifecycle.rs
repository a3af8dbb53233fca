//! PROTOCOL.md §7 Lifecycle and ledger, on the server's clock hook: lapse, a back payment,
//! release past the reservation, renting anew, and an unpaid first invoice expiring.

use super::harness::{config_path, ensure, state_is, Suite};
use crate::invoice;
use staticwire_api::{self as api, codes};

/// The address of `key`'s rental, as its status says.
async fn st_address(s: &Suite<'_>, key: &str) -> Option<String> {
    s.status(key)
        .await
        .ok()
        .and_then(|v| v["address"].as_str().map(str::to_string))
}

/// `paid_until` is the renewed rental's; `other` the rental whose first invoice was never paid.
pub(super) async fn run(
    s: &mut Suite<'_>,
    t: &api::Terms,
    key: &str,
    paid_until: Option<i64>,
    other: Option<&api::InvoiceResponse>,
) {
    let Some(paid_until) = paid_until else {
        s.skip(
            "life.*",
            "Lapse, back payments, release",
            "needs the renewed rental",
        );
        return;
    };
    let month = t.month_seconds as i64;
    let day = (month / 4).clamp(1, 86_400);
    // One day past paid-until: lapsed, one month owed, the reservation running.
    let now = match s.advance(0).await {
        Ok(n) => n,
        Err(e) => {
            s.check("life.clock", "The clock hook answers", Err(e));
            return;
        }
    };
    let moved = s.advance(paid_until + day - now).await;
    let st = match moved {
        Ok(_) => s.status(key).await,
        Err(e) => Err(e),
    };
    let c = st.and_then(|v| {
        ensure(
            v["state"] == "lapsed"
                && v["months_owed"] == 1
                && v["amount_due_sat"] == 2 * t.monthly_sat
                && v["paid_until"] == paid_until
                && v["reserved_until"] == paid_until + t.reservation_seconds as i64,
            || format!("{v}"),
        )
    });
    s.check(
        "life.lapsed",
        "Past paid_until: lapsed, 1 month owed, 2 x monthly_sat due, reserved until paid_until + reservation",
        c,
    );
    let address = st_address(s, key).await;
    let r = s.http.get(&config_path(key)).await;
    let c = s.expect(&r, 200, "ConfigResponse").and_then(|v| {
        ensure(
            address.is_some() && v["address"] == address.unwrap_or_default(),
            || format!("{v}"),
        )
    });
    s.check(
        "life.lapsed-config",
        "GetConf of a lapsed rental answers 200 with its configuration",
        c,
    );
    // The back payment: renewing 1 month costs 2, and paid-until lands in the future.
    let r = s.renew(key, 1).await;
    let rn: Result<api::InvoiceResponse, String> = s.expect_as(&r, 201, "InvoiceResponse");
    let c = match rn {
        Err(e) => Err(e),
        Ok(rn) => {
            let i = &rn.invoice;
            let checked = ensure(i.months == 2 && i.amount_sat == 2 * t.monthly_sat, || {
                format!("{i:?}")
            })
            .and_then(|_| {
                invoice::check(&i.bolt11, t, 2 * t.monthly_sat, &i.payment_hash).map(|_| ())
            });
            let settled = s.settle(i, checked).await;
            let st = s.status(key).await;
            settled.and(st).and_then(|v| {
                ensure(
                    v["state"] == "active" && v["paid_until"] == paid_until + 2 * month,
                    || format!("{v}"),
                )
            })
        }
    };
    s.check(
        "life.back-payment",
        "Renewing a lapsed rental includes the months owed; paid, it is active until paid_until + those months",
        c,
    );
    // Past the reservation: released; renewing and GetConf are refused, renting anew works.
    let end = paid_until + 2 * month + t.reservation_seconds as i64;
    let moved = match s.advance(0).await {
        Ok(now) => s.advance(end + day - now).await,
        Err(e) => Err(e),
    };
    let st = match moved {
        Ok(_) => s.status(key).await,
        Err(e) => Err(e),
    };
    let renew = s.renew(key, 1).await;
    let conf = s.http.get(&config_path(key)).await;
    let c = st
        .and_then(|v| state_is(&v, "released"))
        .and(
            s.expect_error(&renew, 409, codes::CONFLICT)
                .map_err(|e| format!("renew: {e}")),
        )
        .and(
            s.expect_error(&conf, 409, codes::CONFLICT)
                .map_err(|e| format!("config: {e}")),
        );
    s.check(
        "life.released",
        "Past the reservation: released; renewing and GetConf answer 409 conflict",
        c,
    );
    let c = super::renewals::bad_months(s, t, key).await;
    s.check(
        "life.released-bad-months",
        "Renewing a released rental with months out of range answers 400 bad_months, not 409",
        c,
    );
    let r = s.rent(key).await;
    let c = s
        .expect(&r, 201, "InvoiceResponse")
        .and_then(|v| ensure(v["rental"]["state"] == "pending", || format!("{v}")));
    s.check("life.rent-again", "A released key rents anew", c);
    // The second key's first invoice was never paid and has long expired.
    let c = match other {
        None => Err("no second rental to watch".to_string()),
        Some(o) => {
            let r = s.long_poll(&o.invoice.payment_hash).await;
            let st = s.status(&o.rental.public_key).await;
            s.expect(&r, 200, "Invoice")
                .and_then(|v| state_is(&v, "expired"))
                .and(st)
                .and_then(|v| state_is(&v, "released"))
        }
    };
    s.check(
        "life.unpaid-expiry",
        "An unpaid first invoice expires and its rental is released",
        c,
    );
}
