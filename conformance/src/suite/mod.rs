//! The rules of PROTOCOL.md, checked in the order a client meets them: terms, errors, rent,
//! status, invoices, payment, configuration, renewal, then the lifecycle (lapse, back
//! payments, release, an unpaid first invoice expiring) where the server offers test hooks.
//! Every check records an outcome; nothing the server answers can stop the run.
//!
//! `harness` holds the run's context and records outcomes; every other module checks the
//! rules of the PROTOCOL.md chapter it is named for. This file tells the story that joins
//! them: one rental from its first invoice to its release.

mod config;
mod errors;
mod harness;
mod hooks;
mod invoices;
mod lifecycle;
mod proof;
mod ptr;
mod renewals;
mod rentals;
mod status;
mod terms;

use crate::http::Http;
use crate::report::{Outcome, Report};
pub use harness::Options;
use harness::Suite;
use staticwire_api as api;

pub async fn run(opts: &Options) -> Report {
    let mut report = Report::default();
    let http = match Http::new(&opts.base, opts.fingerprint.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            report.add(
                "transport",
                "The client can talk to the server",
                Outcome::Fail(e),
            );
            return report;
        }
    };
    let mut s = Suite::new(opts, http, report);
    let terms = terms::terms(&mut s).await;
    // From here on the suite proves its own keys' requests (PROTOCOL.md 3.1).
    s.http.set_proof_key(
        terms
            .as_ref()
            .and_then(|t| t.proof_key.as_deref())
            .and_then(staticwire_api::proof::keyring::decode_key),
    );
    errors::errors(&mut s).await;
    hooks::detect(&mut s).await;
    if let Some(t) = &terms {
        proof::proofs(&mut s, t).await;
    }
    if let Some(t) = terms {
        rental(&mut s, &t).await;
    } else {
        s.skip("rent", "Renting and everything after it", "needs the terms");
    }
    s.report
}

/// One rental through its life, as far as the server's hooks (or a pay command) allow.
async fn rental(s: &mut Suite<'_>, t: &api::Terms) {
    let Some(rented) = rentals::rent(s, t).await else {
        return;
    };
    let key = rented.key.as_str();
    status::pending(s, t, &rented).await;
    renewals::unpaid(s, t, key).await;
    invoices::unpaid(s, &rented.first.invoice).await;

    if !s.can_pay() {
        let why =
            "no way to pay: the server has no /v1/dev/pay hook and no --pay-command was given";
        for (id, rule) in [
            (
                "pay.long-poll",
                "Paying settles the invoice and wakes a long-poll",
            ),
            ("pay.active", "A paid first invoice makes the rental active"),
            ("config.get", "GetConf of an active rental"),
            ("ptr.*", "Reverse DNS of an active rental"),
            ("renew.*", "Renewal"),
            ("life.*", "Lapse, back payments, release"),
        ] {
            s.skip(id, rule, why);
        }
        return;
    }
    invoices::paid(s, &rented.first.invoice).await;
    let paid_until = status::active(s, t, key).await;
    rentals::active(s, key).await;
    config::get(s, t, key, &rented.first.rental.address).await;
    ptr::active(s, key, &rented.first.rental.address).await;
    let extended = renewals::paid(s, t, key, paid_until).await;
    if s.clock_hook {
        lifecycle::run(s, t, key, extended, rented.other.as_ref()).await;
    } else {
        s.skip(
            "life.*",
            "Lapse, back payments, release, unpaid expiry",
            "the server has no /v1/dev/clock hook",
        );
    }
}
