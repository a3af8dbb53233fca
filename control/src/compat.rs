//! The original StaticWire client's protocol, served beside `/v1` over the same ledger.
//!
//! Form-encoded POSTs to case-sensitive paths with a trailing slash; the customer is
//! `WireGuardPubKey=<standard base64>`. Errors are HTTP 200 with a top-level `"Error"` string,
//! which is what that client reacts to. Two releases:
//! - 2023 (monthly): `/api/rent/`, `/api/renew/`, `/api/getstatus/`, `/api/getconf/`;
//! - current (credit): `/api/GetSellOfferTerms/`, `/api/AddCredit/`, and `/api/getstatus/`
//!   with the credit fields and `InvoiceToWaitFor`.
//!
//! Credit is rent paid ahead: `Rate` sat per second, a month being 365.25/12 days. A top-up of
//! `amount` sat credits `amount / Rate` seconds; so `Credit = total_paid - ActivationFee -
//! elapsed * Rate` holds for a rental paid this way, as the AutoPay client checks.

use crate::service::{parse_public_key, Hold, Service, ServiceError};
use crate::store::{self, Credit, RentalRow};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use staticwire_api::{InvoicePurpose, RentalState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Seconds in the original client's month.
const MONTH_SECS: f64 = 365.25 / 12.0 * 86_400.0;
/// Longest `InvoiceToWaitFor` wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

struct CompatError(String);

impl IntoResponse for CompatError {
    fn into_response(self) -> Response {
        (StatusCode::OK, Json(json!({ "Error": self.0 }))).into_response()
    }
}

impl From<ServiceError> for CompatError {
    fn from(e: ServiceError) -> Self {
        CompatError(e.to_string())
    }
}

type Answer = Result<Json<Value>, CompatError>;

/// Sat per second.
pub fn rate(s: &Service) -> f64 {
    s.terms().monthly_sat as f64 / MONTH_SECS
}

async fn form(headers: &HeaderMap, body: Body) -> Result<HashMap<String, String>, CompatError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-www-form-urlencoded") {
        return Err(CompatError(
            "send an application/x-www-form-urlencoded body".into(),
        ));
    }
    let bytes = axum::body::to_bytes(body, crate::limits::MAX_BODY)
        .await
        .map_err(|_| CompatError("body too large".into()))?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| CompatError(format!("bad form body: {e}")))
}

fn client_id(c: Option<Extension<ConnectInfo<SocketAddr>>>) -> Option<crate::limits::ClientId> {
    c.map(|Extension(ConnectInfo(a))| crate::limits::ClientId::of(a.ip()))
}

/// The customer's key. The original clients cannot prove they hold it (PROTOCOL.md 3.1, Annex
/// A): with `[compat] accept_unproven = false` every call that names a key is refused.
fn key_of(s: &Service, f: &HashMap<String, String>) -> Result<String, CompatError> {
    if !s.cfg().compat.accept_unproven {
        return Err(CompatError(
            "this server serves only clients that prove they hold their key (StaticWire protocol v1.1, /v1): use staticip or the provider's web page".into(),
        ));
    }
    let k = f
        .get("WireGuardPubKey")
        .ok_or_else(|| CompatError("WireGuardPubKey is required".into()))?;
    Ok(parse_public_key(k)?)
}

fn sell_offer_terms(s: &Service, with_activation_fee: bool) -> Value {
    let c = &s.cfg().compat;
    let mut t = json!({
        "Rate": rate(s),
        "MinimumInitialCredit": c.minimum_initial_credit_sat,
        "MinRegularPaymentSize": c.min_regular_payment_sat,
        "MaximumCredit": c.maximum_credit_sat,
    });
    if with_activation_fee {
        t["ActivationFee"] = json!(s.terms().activation_sat);
    }
    t
}

/// The getstatus object of a rental.
fn status_of(s: &Service, r: &RentalRow, now: i64) -> Result<Value, ServiceError> {
    let db = s.db()?;
    let acc = r.account();
    let state = acc.state(s.terms(), now);
    let unpaid = if state == RentalState::Released {
        None
    } else {
        store::open_invoice(&db, r.id, now)?
    };
    let (total_paid, payments) = store::paid_totals(&db, r.id)?;
    let remaining = acc.paid_until().map_or(0, |p| p - now);
    Ok(json!({
        "unpaid_invoice": unpaid.map(|i| i.bolt11),
        "CurrentRate": rate(s),
        "start_time": r.started_at.unwrap_or(r.created_at),
        "current_time": now,
        "TimeRemaining": remaining,
        "total_paid": total_paid,
        "Credit": remaining as f64 * rate(s),
        "Networks": r.networks_of().map(|n| n.cidrs()).unwrap_or_default(),
        "ActivationFee": s.terms().activation_sat,
        "NumberOfPayments": payments,
        "address": r.address,
        "state": state,
        "paid_until": acc.paid_until(),
    }))
}

fn rental_of(s: &Service, key: &str) -> Result<RentalRow, ServiceError> {
    let db = s.db()?;
    store::latest_rental(&db, key)?.ok_or(ServiceError::NotFound)
}

async fn get_sell_offer_terms(State(s): State<Arc<Service>>) -> Answer {
    Ok(Json(sell_offer_terms(&s, true)))
}

async fn get_status(State(s): State<Arc<Service>>, headers: HeaderMap, body: Body) -> Answer {
    let f = form(&headers, body).await?;
    let key = key_of(&s, &f)?;
    if let Some(b) = f
        .get("InvoiceToWaitFor")
        .filter(|b| !b.is_empty() && *b != "None")
    {
        let inv: lightning_invoice::Bolt11Invoice = b
            .trim()
            .parse()
            .map_err(|e| CompatError(format!("InvoiceToWaitFor is not an invoice: {e}")))?;
        use bitcoin::hashes::Hash;
        let hash = hex::encode(inv.payment_hash().to_byte_array());
        // Unknown invoices answer at once; known ones when settled or expired, bounded.
        if s.invoice(&hash).is_ok() {
            s.wait_invoice(&hash, MAX_WAIT).await?;
        }
    }
    let r = rental_of(&s, &key)?;
    Ok(Json(status_of(&s, &r, s.clock().now())?))
}

async fn get_conf(State(s): State<Arc<Service>>, headers: HeaderMap, body: Body) -> Answer {
    let f = form(&headers, body).await?;
    let key = key_of(&s, &f)?;
    let c = s.config(&key)?;
    // Exactly what wireguard_tools' WireguardConfig.from_dict accepts once the client adds
    // private_key: any other key would crash that client.
    Ok(Json(json!({
        "addresses": crate::prefixes::Networks::of_view(&s.status(&key)?).interface_addresses(),
        "peers": [{
            "public_key": c.server_public_key,
            "endpoint": c.endpoint,
            "allowed_ips": c.allowed_ips,
            "persistent_keepalive": c.persistent_keepalive,
        }],
    })))
}

fn monthly_answer(s: &Service, resp: &staticwire_api::InvoiceResponse, initial: bool) -> Value {
    json!({
        "Invoice": resp.invoice.bolt11,
        "InitialInvoice": initial,
        "Amount": resp.invoice.amount_sat,
        "Months": resp.invoice.months,
        "ActivationFee": s.terms().activation_sat,
        "MonthlyRate": s.terms().monthly_sat,
        "MonthSeconds": s.terms().month_secs,
        "Address": resp.rental.address,
        "PaymentHash": resp.invoice.payment_hash,
    })
}

async fn rent(
    State(s): State<Arc<Service>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let key = key_of(&s, &form(&headers, body).await?)?;
    let resp = s.rent(&key, client_id(client)).await?;
    Ok(Json(monthly_answer(&s, &resp, true)))
}

async fn renew(State(s): State<Arc<Service>>, headers: HeaderMap, body: Body) -> Answer {
    let f = form(&headers, body).await?;
    let key = key_of(&s, &f)?;
    let months = match f.get("months").or_else(|| f.get("Months")) {
        None => 1,
        Some(m) => m
            .parse()
            .map_err(|_| CompatError("months must be a whole number".into()))?,
    };
    let resp = s.renew(&key, months).await?;
    Ok(Json(monthly_answer(&s, &resp, false)))
}

async fn add_credit(
    State(s): State<Arc<Service>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let client = client_id(client);
    let f = form(&headers, body).await?;
    let key = key_of(&s, &f)?;
    let amount: u64 = f
        .get("amount")
        .ok_or_else(|| CompatError("amount is required".into()))?
        .trim()
        .parse()
        .map_err(|_| CompatError("amount must be a whole number of sat".into()))?;
    let c = &s.cfg().compat;
    let now = s.clock().now();
    let secs = (amount as f64 / rate(&s)).round() as i64;
    let live = {
        let db = s.db()?;
        store::live_rental(&db, &key).map_err(ServiceError::from)?
    };
    let existing = live.filter(|r| {
        !matches!(
            r.account().state(s.terms(), now),
            RentalState::Released | RentalState::Pending
        )
    });
    let (resp, initial) = match existing {
        Some(r) => {
            if amount < c.min_regular_payment_sat {
                return Err(CompatError(format!(
                    "amount is below MinRegularPaymentSize ({} sat)",
                    c.min_regular_payment_sat
                )));
            }
            let credit = r
                .account()
                .paid_until()
                .map_or(0.0, |p| (p - now) as f64 * rate(&s));
            if credit + amount as f64 > c.maximum_credit_sat as f64 {
                return Err(CompatError(format!(
                    "credit would exceed MaximumCredit ({} sat)",
                    c.maximum_credit_sat
                )));
            }
            if credit + amount as f64 <= 0.0 {
                return Err(CompatError(format!(
                    "amount does not cover the back payments ({:.0} sat owed)",
                    -credit
                )));
            }
            let what = format!("{amount} sat of credit");
            let resp = s
                .invoice_with(
                    &r,
                    amount,
                    &what,
                    InvoicePurpose::Renewal,
                    Credit::Seconds {
                        secs,
                        from_creation: false,
                    },
                    now,
                )
                .await?;
            (resp, false)
        }
        None => {
            if amount < c.minimum_initial_credit_sat {
                return Err(CompatError(format!(
                    "amount is below MinimumInitialCredit ({} sat)",
                    c.minimum_initial_credit_sat
                )));
            }
            if amount > c.maximum_credit_sat {
                return Err(CompatError(format!(
                    "amount exceeds MaximumCredit ({} sat)",
                    c.maximum_credit_sat
                )));
            }
            let r = match s.hold_committed(&key, now, client).await? {
                Hold::New(r) => r,
                Hold::Existing(_) => {
                    return Err(CompatError(
                        "an invoice is already open for this key: pay it or let it expire".into(),
                    ))
                }
            };
            let total = s.terms().activation_sat + amount;
            let what = format!("activation and {amount} sat of credit");
            let credit = Credit::Seconds {
                secs,
                from_creation: true,
            };
            match s
                .invoice_with(&r, total, &what, InvoicePurpose::Activation, credit, now)
                .await
            {
                Ok(resp) => (resp, true),
                Err(e) => {
                    s.unhold(&r, now)?;
                    return Err(e.into());
                }
            }
        }
    };
    let r = rental_of(&s, &key)?;
    Ok(Json(json!({
        "Invoice": resp.invoice.bolt11,
        "InitialInvoice": initial,
        "AddedCredit": amount,
        "SellOfferTerms": sell_offer_terms(&s, initial),
        "Status": status_of(&s, &r, now)?,
    })))
}

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/api/rent/", post(rent))
        .route("/api/renew/", post(renew))
        .route("/api/getstatus/", post(get_status))
        .route("/api/getconf/", post(get_conf))
        .route("/api/GetSellOfferTerms/", post(get_sell_offer_terms))
        .route("/api/AddCredit/", post(add_credit))
        // Marked as the original client's (also where the binary's own layer is missing, as
        // in tests), for its share of unpaid holds and its invoices' metrics.
        .layer(axum::middleware::from_fn(
            crate::metrics::events::compat_api,
        ))
        .with_state(service)
}
