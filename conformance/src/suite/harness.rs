//! What every chapter's checks stand on: the run's context (options, connection, OpenAPI
//! document, hooks found), recording an outcome per rule, judging a reply against the OpenAPI
//! schema or the error body, and the requests several chapters make.

use crate::http::{Http, Reply};
use crate::report::{Outcome, Report};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use staticwire_api::openapi;

pub struct Options {
    /// `http://host:port` or `https://host:port`.
    pub base: String,
    /// SHA-256 of the server's certificate, for https.
    pub fingerprint: Option<String>,
    /// Pays an invoice: the program and its arguments; the BOLT11 string is appended.
    pub pay_command: Option<Vec<String>>,
    /// Use the server's test hooks (`/v1/dev/pay`, `/v1/dev/clock`) when it offers them.
    pub use_hooks: bool,
}

/// One rule's verdict: `Err` says what the server did wrong.
pub(super) type Check = Result<(), String>;

pub(super) struct Suite<'a> {
    pub(super) opts: &'a Options,
    pub(super) http: Http,
    pub(super) doc: Value,
    pub(super) report: Report,
    /// The server answers `/v1/dev/pay` (found by `hooks::detect`).
    pub(super) pay_hook: bool,
    /// The server answers `/v1/dev/clock` (found by `hooks::detect`).
    pub(super) clock_hook: bool,
}

pub(super) fn ensure(cond: bool, why: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// A fresh WireGuard key pair whose private half the suite keeps, so its requests on the
/// rental are proven; the public key in standard base64.
pub(super) fn new_key() -> String {
    crate::http::keyring().new_key()
}

/// A key as a path writes it: the URL-safe alphabet.
fn url_key(k: &str) -> String {
    STANDARD
        .decode(k)
        .map(|b| URL_SAFE.encode(b))
        .unwrap_or_default()
}

/// A key as a path may also write it: standard base64, percent-encoded.
pub(super) fn percent_key(k: &str) -> String {
    k.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The rental of `key`, the key written URL-safe.
pub(super) fn rental_path(key: &str) -> String {
    format!("/v1/rentals/{}", url_key(key))
}

/// GetConf of `key`.
pub(super) fn config_path(key: &str) -> String {
    format!("{}/config", rental_path(key))
}

/// A long-poll on the invoice `hash`, for as long as a settlement may take.
pub(super) fn long_poll_path(hash: &str) -> String {
    format!("/v1/invoices/{hash}?wait=30")
}

/// The rental or invoice `v` is in `state`.
pub(super) fn state_is(v: &Value, state: &str) -> Check {
    ensure(v["state"] == state, || format!("{v}"))
}

impl Suite<'_> {
    pub(super) fn new(opts: &Options, http: Http, report: Report) -> Suite<'_> {
        Suite {
            opts,
            http,
            doc: openapi::document(),
            report,
            pay_hook: false,
            clock_hook: false,
        }
    }

    /// A MUST: an `Err` fails the run.
    pub(super) fn check(&mut self, id: &'static str, rule: &'static str, r: Check) {
        self.record(id, rule, r, Outcome::Fail);
    }

    /// A SHOULD: an `Err` is a warning.
    pub(super) fn should(&mut self, id: &'static str, rule: &'static str, r: Check) {
        self.record(id, rule, r, Outcome::Warn);
    }

    fn record(
        &mut self,
        id: &'static str,
        rule: &'static str,
        r: Check,
        broken: fn(String) -> Outcome,
    ) {
        let outcome = r.map_or_else(broken, |()| Outcome::Pass);
        self.report.add(id, rule, outcome);
    }

    pub(super) fn skip(&mut self, id: &'static str, rule: &'static str, why: &str) {
        self.report.add(id, rule, Outcome::Skip(why.to_string()));
    }

    /// A success of `status` whose body is `schema`.
    pub(super) fn expect(
        &self,
        reply: &Result<Reply, String>,
        status: u16,
        schema: &str,
    ) -> Result<Value, String> {
        let reply = reply.as_ref().map_err(Clone::clone)?;
        let v = reply.json()?;
        if reply.status != status {
            return Err(format!("HTTP {}, expected {status}: {v}", reply.status));
        }
        openapi::validate(&self.doc, &openapi::schema_ref(schema), &v)
            .map_err(|e| format!("not a {schema}: {e}"))?;
        Ok(v)
    }

    /// `expect`, read as a `T`.
    pub(super) fn expect_as<T: DeserializeOwned>(
        &self,
        reply: &Result<Reply, String>,
        status: u16,
        schema: &str,
    ) -> Result<T, String> {
        self.expect(reply, status, schema)
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
    }

    /// `expect` as a verdict on the schema, and the body as a `T` where it reads as one.
    pub(super) fn expect_parsed<T: DeserializeOwned>(
        &self,
        reply: &Result<Reply, String>,
        status: u16,
        schema: &str,
    ) -> (Check, Option<T>) {
        let v = self.expect(reply, status, schema);
        let parsed = v
            .as_ref()
            .ok()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        (v.map(|_| ()), parsed)
    }

    /// An error of `status` with `{"error":{"code":code,"message"}}`.
    pub(super) fn expect_error(
        &self,
        reply: &Result<Reply, String>,
        status: u16,
        code: &str,
    ) -> Check {
        let reply = reply.as_ref().map_err(Clone::clone)?;
        let v = reply.json()?;
        openapi::validate(&self.doc, &openapi::schema_ref("ErrorBody"), &v)
            .map_err(|e| format!("HTTP {}: not an error body ({e}): {v}", reply.status))?;
        ensure(reply.status == status && v["error"]["code"] == code, || {
            format!(
                "HTTP {} {}, expected {status} {code}",
                reply.status, v["error"]["code"]
            )
        })
    }

    pub(super) async fn status(&self, key: &str) -> Result<Value, String> {
        let r = self.http.get(&rental_path(key)).await;
        self.expect(&r, 200, "Rental")
    }

    pub(super) async fn rent(&self, key: &str) -> Result<Reply, String> {
        self.http
            .post_json("/v1/rentals", &json!({ "public_key": key }))
            .await
    }

    pub(super) async fn renew(&self, key: &str, months: u64) -> Result<Reply, String> {
        self.http
            .post_json(
                &format!("{}/renewals", rental_path(key)),
                &json!({ "months": months }),
            )
            .await
    }

    pub(super) async fn long_poll(&self, hash: &str) -> Result<Reply, String> {
        self.http.get(&long_poll_path(hash)).await
    }
}
