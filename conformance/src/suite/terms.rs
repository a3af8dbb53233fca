//! PROTOCOL.md §6 GET /v1/terms (and GET /v1/openapi.json): the terms a client rents by, each
//! member checked for what the protocol promises of it.

use super::harness::{ensure, Suite};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use staticwire_api as api;

/// The terms' rules; the terms, when the server answered them, for every chapter after.
pub(super) async fn terms(s: &mut Suite<'_>) -> Option<api::Terms> {
    let r = s.http.get("/v1/terms").await;
    if let Err(e) = &r {
        s.check(
            "transport",
            "The client can talk to the server",
            Err(e.clone()),
        );
        return None;
    }
    let (c, terms): (_, Option<api::Terms>) = s.expect_parsed(&r, 200, "Terms");
    s.check(
        "terms.schema",
        "GET /v1/terms answers 200 with the Terms object",
        c,
    );
    let t = terms?;
    s.check(
        "terms.first-payment",
        "first_payment_sat = activation_sat + monthly_sat",
        ensure(
            t.first_payment_sat == t.activation_sat + t.monthly_sat,
            || {
                format!(
                    "{} != {} + {}",
                    t.first_payment_sat, t.activation_sat, t.monthly_sat
                )
            },
        ),
    );
    s.check(
        "terms.network",
        "network is bitcoin, testnet, signet or regtest",
        ensure(
            ["bitcoin", "testnet", "signet", "regtest"].contains(&t.network.as_str()),
            || format!("network {:?}", t.network),
        ),
    );
    s.check(
        "terms.durations",
        "month_seconds, invoice_expiry_seconds and max_months are positive",
        ensure(
            t.month_seconds > 0 && t.invoice_expiry_seconds > 0 && t.max_months >= 1,
            || format!("{t:?}"),
        ),
    );
    let servers = t.servers.iter().try_for_each(|srv| {
        let port_ok = srv
            .endpoint
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        ensure(port_ok, || {
            format!("endpoint {:?} is not host:port", srv.endpoint)
        })?;
        let key = STANDARD
            .decode(&srv.public_key)
            .map_err(|_| format!("server key {:?} is not base64", srv.public_key))?;
        api::check_public_key(&key)
            .map(|_| ())
            .map_err(|e| format!("server key {}: {e}", srv.public_key))
    });
    s.check(
        "terms.servers",
        "servers lists at least one endpoint host:port with a usable WireGuard key",
        ensure(!t.servers.is_empty(), || "no servers".into()).and(servers),
    );
    let fp = match &t.tls_fingerprint {
        None => Ok(()),
        Some(f) => ensure(
            f.len() == 64
                && f.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            || format!("tls_fingerprint {f:?} is not 64 lowercase hex characters"),
        )
        .and(match &s.opts.fingerprint {
            Some(pinned) if s.opts.base.starts_with("https://") => {
                ensure(pinned.eq_ignore_ascii_case(f), || {
                    format!("tls_fingerprint {f} is not the certificate served ({pinned})")
                })
            }
            _ => Ok(()),
        }),
    };
    s.check(
        "terms.fingerprint",
        "tls_fingerprint, when present, is the SHA-256 of the certificate served",
        fp,
    );
    let payee = match &t.payee {
        None => Ok(()),
        Some(p) => ensure(p.len() == 66 && hex::decode(p).is_ok(), || {
            format!("payee {p:?} is not a 33-byte node key in hex")
        }),
    };
    s.check(
        "terms.payee",
        "payee, when present, is a node public key in hex",
        payee,
    );
    let doc = s.http.get("/v1/openapi.json").await;
    let doc_ok = doc.and_then(|r| {
        let v = r.json()?;
        ensure(
            r.status == 200 && v["openapi"].as_str().is_some_and(|o| o.starts_with("3.1")),
            || format!("HTTP {}, openapi {}", r.status, v["openapi"]),
        )
    });
    s.should(
        "doc.served",
        "GET /v1/openapi.json answers the OpenAPI 3.1 document (SHOULD)",
        doc_ok,
    );
    Some(t)
}
