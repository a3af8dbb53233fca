//! PROTOCOL.md §6 POST /v1/rentals — RentNewIP: the first invoice, renting again (idempotent
//! while pending, refused while active), a second key, a larger prefix priced per the ledger.

use super::harness::{ensure, new_key, rental_path, Suite};
use crate::invoice;
use serde_json::json;
use staticwire_api::{self as api, codes};

/// A key rented by `rent`, and a second one whose first invoice stays unpaid.
pub(super) struct Rented {
    pub(super) key: String,
    pub(super) first: api::InvoiceResponse,
    pub(super) other: Option<api::InvoiceResponse>,
}

/// Rents a fresh key and checks what comes back; `None` (recorded as a skip) when renting
/// failed, so nothing after it can be checked.
pub(super) async fn rent(s: &mut Suite<'_>, t: &api::Terms) -> Option<Rented> {
    let key = new_key();
    let r = s.rent(&key).await;
    let (c, resp): (_, Option<api::InvoiceResponse>) = s.expect_parsed(&r, 201, "InvoiceResponse");
    s.check(
        "rent.created",
        "POST /v1/rentals answers 201 with the rental and its first invoice",
        c,
    );
    let Some(resp) = resp else {
        s.skip("rent.*", "Everything after renting", "renting failed");
        return None;
    };
    let (rental, inv) = (&resp.rental, &resp.invoice);
    s.check(
        "rent.rental",
        "The new rental is pending, for the key sent, with an IPv4 address on a published server",
        ensure(rental.state == api::RentalState::Pending, || {
            format!("state {:?}", rental.state)
        })
        .and(ensure(rental.public_key == key, || {
            format!("public_key {} for {key}", rental.public_key)
        }))
        .and(ensure(
            rental.address.parse::<std::net::Ipv4Addr>().is_ok(),
            || format!("address {:?}", rental.address),
        ))
        .and(ensure(
            t.servers.iter().any(|srv| {
                srv.endpoint == rental.server.endpoint && srv.public_key == rental.server.public_key
            }),
            || {
                format!(
                    "server {} {} is not in the terms",
                    rental.server.endpoint, rental.server.public_key
                )
            },
        )),
    );
    s.check(
        "rent.invoice",
        "The first invoice is open, purpose activation, 1 month, first_payment_sat",
        ensure(
            inv.state == api::InvoiceState::Open
                && inv.purpose == api::InvoicePurpose::Activation
                && inv.months == 1
                && inv.amount_sat == t.first_payment_sat
                && inv.expires_at > inv.created_at,
            || format!("{inv:?}"),
        ),
    );
    let c = invoice::check(&inv.bolt11, t, t.first_payment_sat, &inv.payment_hash).map(|_| ());
    s.check(
        "rent.bolt11",
        "The BOLT11 passes the client's checks: signature, network, amount, hash, expiry, payee",
        c,
    );
    let c = invoice::expires_at(&inv.bolt11).and_then(|at| {
        ensure(inv.expires_at == at as i64, || {
            format!(
                "expires_at {}, the BOLT11 expires at {at} (timestamp + x)",
                inv.expires_at
            )
        })
    });
    s.check(
        "invoice.expiry",
        "The invoice's expires_at is the BOLT11's timestamp + expiry",
        c,
    );
    let r = s.rent(&key).await;
    let again = s.expect(&r, 201, "InvoiceResponse").and_then(|v| {
        ensure(
            v["invoice"]["payment_hash"] == inv.payment_hash.as_str()
                && v["rental"]["address"] == rental.address.as_str(),
            || format!("a second invoice or address: {v}"),
        )
    });
    s.check(
        "rent.idempotent",
        "Renting again while the first invoice is open answers the same invoice and address",
        again,
    );
    let r = s
        .http
        .post_json(
            "/v1/rentals",
            &json!({ "public_key": key, "x_conformance_future_member": true }),
        )
        .await;
    let c = s.expect(&r, 201, "InvoiceResponse").and_then(|v| {
        ensure(
            v["invoice"]["payment_hash"] == inv.payment_hash.as_str(),
            || format!("{v}"),
        )
    });
    s.check(
        "version.unknown-member",
        "A request member the server does not know is ignored",
        c,
    );
    query_on_posts(s, &key).await;
    refused_free(s, &key, &inv.payment_hash).await;
    prefix(s, t).await;
    let other = new_key();
    let r = s.rent(&other).await;
    let other_resp: Option<api::InvoiceResponse> = s.expect_as(&r, 201, "InvoiceResponse").ok();
    s.check(
        "rent.distinct",
        "Two keys hold two different addresses",
        match &other_resp {
            Some(o) => ensure(o.rental.address != rental.address, || {
                format!("both hold {}", rental.address)
            }),
            None => Err(format!("renting a second key: {r:?}")
                .chars()
                .take(300)
                .collect()),
        },
    );
    Some(Rented {
        key,
        first: resp,
        other: other_resp,
    })
}

/// Unknown query parameters on the two routes with a body, for the pending rental of `key`
/// (a server that ignored them would answer what the idempotent rent and a pending renewal
/// answer, and hold nothing new).
async fn query_on_posts(s: &mut Suite<'_>, key: &str) {
    let rent = s
        .http
        .post_json("/v1/rentals?x=1", &json!({ "public_key": key }))
        .await;
    let renew = s
        .http
        .post_json(
            &format!("{}/renewals?x=1", rental_path(key)),
            &json!({"months": 1}),
        )
        .await;
    let c = s
        .expect_error(&rent, 400, codes::BAD_REQUEST)
        .map_err(|e| format!("POST /v1/rentals?x=1: {e}"))
        .and(
            s.expect_error(&renew, 400, codes::BAD_REQUEST)
                .map_err(|e| format!("POST …/renewals?x=1: {e}")),
        );
    s.check(
        "error.unknown-query-post",
        "A query parameter on RentNewIP or Renew answers 400 bad_request",
        c,
    );
}

/// More refused invoice-making requests than the default invoice limit (20 at once), then the
/// pending rental's own rent again: none is 429, as a refused request made no invoice.
async fn refused_free(s: &mut Suite<'_>, key: &str, hash: &str) {
    const REFUSED: usize = 25;
    let mut c = Ok(());
    for i in 0..REFUSED {
        let body = json!({ "public_key": "AAAA" }).to_string().into_bytes();
        let r = s
            .http
            .send_once("POST", "/v1/rentals", Some("application/json"), Some(body))
            .await;
        if let Ok(reply) = &r {
            if reply.status == 429 {
                c = Err(format!("refused request {} answered 429", i + 1));
                break;
            }
        }
    }
    if c.is_ok() {
        let body = json!({ "public_key": key }).to_string().into_bytes();
        let r = s
            .http
            .send_once("POST", "/v1/rentals", Some("application/json"), Some(body))
            .await;
        c = s
            .expect(&r, 201, "InvoiceResponse")
            .and_then(|v| ensure(v["invoice"]["payment_hash"] == hash, || format!("{v}")));
    }
    s.should(
        "limits.refused-free",
        "Requests refused with 400 do not count against the invoice-making rate limit (SHOULD)",
        c,
    );
}

/// Renting a key whose rental is active is refused.
pub(super) async fn active(s: &mut Suite<'_>, key: &str) {
    let r = s.rent(key).await;
    let c = s.expect_error(&r, 409, codes::CONFLICT);
    s.check(
        "rent.active",
        "Renting again with an active key answers 409 conflict",
        c,
    );
}

/// A block of addresses where the terms offer one: priced per address (and IPv6 where the
/// rental got a prefix), per the ledger arithmetic.
async fn prefix(s: &mut Suite<'_>, t: &api::Terms) {
    let rule = "A rental of a larger IPv4 prefix is invoiced activation + its monthly rent";
    let Some(&len) = t.ipv4_prefix_lengths.iter().filter(|l| **l < 32).max() else {
        s.skip("rent.prefix", rule, "the terms offer /32 only");
        return;
    };
    let r = s
        .http
        .post_json(
            "/v1/rentals",
            &json!({ "public_key": new_key(), "prefix_len": len }),
        )
        .await;
    let c = s
        .expect_as::<api::InvoiceResponse>(&r, 201, "InvoiceResponse")
        .and_then(|rn| {
            let monthly = api::monthly_rent(
                t.monthly_sat,
                t.address_monthly_sat,
                t.ipv6_monthly_sat,
                len,
                rn.rental.ipv6.is_some(),
            );
            let expected = t.activation_sat + monthly;
            ensure(rn.rental.prefix_len == len, || {
                format!("prefix_len {} for /{len}", rn.rental.prefix_len)
            })?;
            ensure(rn.invoice.amount_sat == expected, || {
                format!("{} sat, expected {expected}", rn.invoice.amount_sat)
            })?;
            invoice::check(&rn.invoice.bolt11, t, expected, &rn.invoice.payment_hash).map(|_| ())
        });
    s.check("rent.prefix", rule, c);
}
