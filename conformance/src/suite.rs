//! The rules of PROTOCOL.md, checked in the order a client meets them: terms, errors, rent,
//! status, invoices, payment, configuration, renewal, then the lifecycle (lapse, back
//! payments, release, an unpaid first invoice expiring) where the server offers test hooks.
//! Every check records an outcome; nothing the server answers can stop the run.

use crate::http::{Http, Reply};
use crate::invoice;
use crate::report::{Outcome, Report};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use staticwire_api::{self as api, codes, openapi};

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

type Check = Result<(), String>;

struct Suite<'a> {
    opts: &'a Options,
    http: Http,
    doc: Value,
    report: Report,
    pay_hook: bool,
    clock_hook: bool,
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

fn new_key() -> String {
    loop {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        if api::check_public_key(&k).is_ok() {
            return STANDARD.encode(k);
        }
    }
}

fn url_key(k: &str) -> String {
    STANDARD
        .decode(k)
        .map(|b| URL_SAFE.encode(b))
        .unwrap_or_default()
}

fn percent_key(k: &str) -> String {
    k.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

impl Suite<'_> {
    fn check(&mut self, id: &'static str, rule: &'static str, r: Check) {
        let outcome = match r {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        };
        self.report.add(id, rule, outcome);
    }

    fn should(&mut self, id: &'static str, rule: &'static str, r: Check) {
        let outcome = match r {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Warn(e),
        };
        self.report.add(id, rule, outcome);
    }

    fn skip(&mut self, id: &'static str, rule: &'static str, why: &str) {
        self.report.add(id, rule, Outcome::Skip(why.to_string()));
    }

    /// A success of `status` whose body is `schema`.
    fn expect(
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

    /// An error of `status` with `{"error":{"code":code,"message"}}`.
    fn expect_error(&self, reply: &Result<Reply, String>, status: u16, code: &str) -> Check {
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

    async fn pay(&self, bolt11: &str) -> Check {
        if let Some(cmd) = &self.opts.pay_command {
            let out = tokio::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .arg(bolt11)
                .output()
                .await
                .map_err(|e| format!("pay command {}: {e}", cmd[0]))?;
            return ensure(out.status.success(), || {
                format!(
                    "pay command failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        }
        let r = self
            .http
            .post_json("/v1/dev/pay", &json!({ "bolt11": bolt11 }))
            .await;
        self.expect(&r, 200, "DevPayResponse").map(|_| ())
    }

    fn can_pay(&self) -> bool {
        self.opts.pay_command.is_some() || self.pay_hook
    }

    /// Moves the server's clock by `secs`; returns its time now.
    async fn advance(&self, secs: i64) -> Result<i64, String> {
        let r = self
            .http
            .post_json("/v1/dev/clock", &json!({ "seconds": secs }))
            .await;
        let v = self.expect(&r, 200, "DevClockResponse")?;
        v["now"]
            .as_i64()
            .ok_or_else(|| "no time in the answer".into())
    }

    async fn status(&self, key: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(&format!("/v1/rentals/{}", url_key(key)))
            .await;
        self.expect(&r, 200, "Rental")
    }

    async fn rent(&self, key: &str) -> Result<Reply, String> {
        self.http
            .post_json("/v1/rentals", &json!({ "public_key": key }))
            .await
    }

    async fn renew(&self, key: &str, months: u64) -> Result<Reply, String> {
        self.http
            .post_json(
                &format!("/v1/rentals/{}/renewals", url_key(key)),
                &json!({ "months": months }),
            )
            .await
    }
}

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
    let mut s = Suite {
        opts,
        http,
        doc: openapi::document(),
        report,
        pay_hook: false,
        clock_hook: false,
    };
    let terms = terms(&mut s).await;
    errors(&mut s).await;
    if let Some(t) = terms {
        rentals(&mut s, &t).await;
    } else {
        s.skip("rent", "Renting and everything after it", "needs the terms");
    }
    s.report
}

async fn terms(s: &mut Suite<'_>) -> Option<api::Terms> {
    let r = s.http.get("/v1/terms").await;
    if let Err(e) = &r {
        s.check(
            "transport",
            "The client can talk to the server",
            Err(e.clone()),
        );
        return None;
    }
    let v = s.expect(&r, 200, "Terms");
    let terms: Option<api::Terms> = v
        .as_ref()
        .ok()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    s.check(
        "terms.schema",
        "GET /v1/terms answers 200 with the Terms object",
        v.map(|_| ()),
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

async fn errors(s: &mut Suite<'_>) {
    let r = s.http.get("/v1/conformance-no-such-route").await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-route",
        "An unknown route answers 404 not_found",
        c,
    );
    let r = s
        .http
        .send(
            "POST",
            "/v1/rentals",
            Some("text/plain"),
            Some(b"{}".to_vec()),
        )
        .await;
    let c = s.expect_error(&r, 415, codes::UNSUPPORTED_MEDIA);
    s.check(
        "error.media-type",
        "A body that is not application/json answers 415 unsupported_media_type",
        c,
    );
    let r = s
        .http
        .send(
            "POST",
            "/v1/rentals",
            Some("application/json"),
            Some(b"{".to_vec()),
        )
        .await;
    let c = s.expect_error(&r, 400, codes::BAD_REQUEST);
    s.check(
        "error.bad-json",
        "Malformed JSON answers 400 bad_request",
        c,
    );
    let mut low_order = [0u8; 32];
    low_order[0] = 1;
    let mut bad = Ok(());
    for key in [
        "AAAA".to_string(),
        STANDARD.encode([0u8; 32]),
        STANDARD.encode(low_order),
        STANDARD.encode([7u8; 31]),
    ] {
        let r = s.rent(&key).await;
        bad = bad.and(
            s.expect_error(&r, 400, codes::BAD_KEY)
                .map_err(|e| format!("key {key}: {e}")),
        );
    }
    s.check(
        "error.bad-key",
        "A key that is not 32 bytes, all zero or a low-order point answers 400 bad_public_key",
        bad,
    );
    // Over the 64 KiB a server should accept. A server may close the connection as it
    // answers, before the client has sent everything: then the answer is lost, which is
    // only a warning.
    let big = vec![b' '; 80 * 1024];
    let r = s
        .http
        .send("POST", "/v1/rentals", Some("application/json"), Some(big))
        .await;
    let rule = "A body over the server's limit answers 413 body_too_large";
    match &r {
        Err(e) => s.should(
            "error.too-large",
            rule,
            Err(format!("no answer to read: {e}")),
        ),
        // Read and found not to be JSON: the server's limit is higher, which is allowed.
        Ok(reply) if reply.status == 400 => s.skip(
            "error.too-large",
            rule,
            "the server read an 80 KiB body (its limit is higher)",
        ),
        Ok(_) => {
            let c = s.expect_error(&r, 413, codes::TOO_LARGE);
            s.check("error.too-large", rule, c)
        }
    }
    let r = s
        .http
        .get(&format!("/v1/rentals/{}", url_key(&new_key())))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-rental",
        "A key with no rental answers 404 not_found",
        c,
    );
    let r = s
        .http
        .get(&format!("/v1/rentals/{}/config", url_key(&new_key())))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-config",
        "GetConf of a key with no rental answers 404 not_found",
        c,
    );
    let mut h = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut h);
    let r = s
        .http
        .get(&format!("/v1/invoices/{}", hex::encode(h)))
        .await;
    let c = s.expect_error(&r, 404, codes::NOT_FOUND);
    s.check(
        "error.unknown-invoice",
        "An unknown payment hash answers 404 not_found",
        c,
    );
    let r = s.http.get("/v1/rentals").await;
    let c = s.expect_error(&r, 405, codes::METHOD_NOT_ALLOWED);
    s.should(
        "error.method",
        "A route asked with another method answers 405 method_not_allowed (SHOULD)",
        c,
    );
    if s.opts.use_hooks {
        let r = s
            .http
            .post_json("/v1/dev/pay", &json!({ "bolt11": "" }))
            .await;
        s.pay_hook = matches!(&r, Ok(r) if r.status == 400);
        let r = s
            .http
            .post_json("/v1/dev/clock", &json!({ "seconds": 0 }))
            .await;
        s.clock_hook = matches!(&r, Ok(r) if r.status == 200);
    }
}

async fn rentals(s: &mut Suite<'_>, t: &api::Terms) {
    let key = new_key();
    let r = s.rent(&key).await;
    let first = s.expect(&r, 201, "InvoiceResponse");
    let resp: Option<api::InvoiceResponse> = first
        .as_ref()
        .ok()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    s.check(
        "rent.created",
        "POST /v1/rentals answers 201 with the rental and its first invoice",
        first.map(|_| ()),
    );
    let Some(resp) = resp else {
        s.skip("rent.*", "Everything after renting", "renting failed");
        return;
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
    prefix(s, t).await;
    let other = new_key();
    let r = s.rent(&other).await;
    let other_resp: Option<api::InvoiceResponse> = s
        .expect(&r, 201, "InvoiceResponse")
        .ok()
        .and_then(|v| serde_json::from_value(v).ok());
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

    let st = s.status(&key).await.and_then(|v| {
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
        .get(&format!("/v1/rentals/{}", percent_key(&key)))
        .await;
    let c = s
        .expect(&r, 200, "Rental")
        .and_then(|v| ensure(v["address"] == rental.address.as_str(), || format!("{v}")));
    s.check(
        "status.percent-encoded",
        "The key in a path may be percent-encoded standard base64",
        c,
    );
    let r = s.renew(&key, 1).await;
    let c = s.expect_error(&r, 409, codes::CONFLICT);
    s.check(
        "renew.pending",
        "Renewing a rental whose first invoice is unpaid answers 409 conflict",
        c,
    );
    let mut c = Ok(());
    for m in [0, u64::from(t.max_months) + 1] {
        let r = s.renew(&key, m).await;
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
        .and_then(|v| ensure(v["state"] == "open", || format!("{v}")));
    s.check(
        "invoice.wait-open",
        "A long-poll on an unpaid invoice answers it, still open, when the wait ends",
        c,
    );
    let r = s.http.get(&format!("{path}?wait=soon")).await;
    let c = s.expect_error(&r, 400, codes::BAD_REQUEST);
    s.check(
        "invoice.bad-wait",
        "A wait that is not whole seconds answers 400 bad_request",
        c,
    );

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
            ("renew.*", "Renewal"),
            ("life.*", "Lapse, back payments, release"),
        ] {
            s.skip(id, rule, why);
        }
        return;
    }
    paid(s, t, &key, &resp, other_resp.as_ref()).await;
}

async fn paid(
    s: &mut Suite<'_>,
    t: &api::Terms,
    key: &str,
    resp: &api::InvoiceResponse,
    other: Option<&api::InvoiceResponse>,
) {
    let inv = &resp.invoice;
    // The long-poll starts before the payment: it must come back settled, not open after 30 s.
    let poll = {
        let http = Http::new(&s.opts.base, s.opts.fingerprint.as_deref());
        let path = format!("/v1/invoices/{}?wait=30", inv.payment_hash);
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
    let r = s.rent(key).await;
    let c = s.expect_error(&r, 409, codes::CONFLICT);
    s.check(
        "rent.active",
        "Renting again with an active key answers 409 conflict",
        c,
    );

    let r = s
        .http
        .get(&format!("/v1/rentals/{}/config", url_key(key)))
        .await;
    let c = s
        .expect(&r, 200, "ConfigResponse")
        .and_then(|v| config_ok(&v, t, &resp.rental.address));
    s.check(
        "config.get",
        "GetConf: the wg-quick file for the rented address and a published server, without a private key",
        c,
    );

    let r = s.renew(key, 1).await;
    let renewal: Result<api::InvoiceResponse, String> = s
        .expect(&r, 201, "InvoiceResponse")
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()));
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
            let paid = s.pay(&rn.invoice.bolt11).await;
            let r = s
                .http
                .get(&format!("/v1/invoices/{}?wait=30", rn.invoice.payment_hash))
                .await;
            let settled = paid
                .and_then(|_| s.expect(&r, 200, "Invoice"))
                .and_then(|v| ensure(v["state"] == "settled", || format!("{v}")));
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
    if s.clock_hook {
        lifecycle(s, t, key, extended, other).await;
    } else {
        s.skip(
            "life.*",
            "Lapse, back payments, release, unpaid expiry",
            "the server has no /v1/dev/clock hook",
        );
    }
}

fn config_ok(v: &Value, t: &api::Terms, address: &str) -> Check {
    let c: api::ConfigResponse = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    ensure(c.address == address, || format!("address {}", c.address))?;
    ensure(
        t.servers
            .iter()
            .any(|s| s.endpoint == c.endpoint && s.public_key == c.server_public_key),
        || {
            format!(
                "server {} {} not in the terms",
                c.endpoint, c.server_public_key
            )
        },
    )?;
    let mut sections = Vec::new();
    for line in c.wg_quick.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            sections.push(line.to_ascii_lowercase());
            continue;
        }
        let (k, _) = line
            .split_once('=')
            .ok_or_else(|| format!("wg-quick line {line:?}"))?;
        let k = k.trim().to_ascii_lowercase();
        ensure(k != "privatekey", || "the file carries a PrivateKey".into())?;
        ensure(
            [
                "address",
                "dns",
                "mtu",
                "listenport",
                "publickey",
                "presharedkey",
                "endpoint",
                "allowedips",
                "persistentkeepalive",
            ]
            .contains(&k.as_str()),
            || format!("wg-quick key {k:?} is not one a server may send"),
        )?;
    }
    ensure(sections == ["[interface]", "[peer]"], || {
        format!("sections {sections:?}")
    })?;
    ensure(c.wg_quick.contains(address), || {
        "the file lacks the address".into()
    })
}

async fn lifecycle(
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
    // The back payment: renewing 1 month costs 2, and paid-until lands in the future.
    let r = s.renew(key, 1).await;
    let rn: Result<api::InvoiceResponse, String> = s
        .expect(&r, 201, "InvoiceResponse")
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()));
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
            let paid = match checked {
                Ok(()) => s.pay(&i.bolt11).await,
                Err(e) => Err(e),
            };
            let r = s
                .http
                .get(&format!("/v1/invoices/{}?wait=30", i.payment_hash))
                .await;
            let st = s.status(key).await;
            paid.and_then(|_| s.expect(&r, 200, "Invoice"))
                .and_then(|v| ensure(v["state"] == "settled", || format!("{v}")))
                .and(st)
                .and_then(|v| {
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
    let conf = s
        .http
        .get(&format!("/v1/rentals/{}/config", url_key(key)))
        .await;
    let c = st
        .and_then(|v| ensure(v["state"] == "released", || format!("{v}")))
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
    let r = s.rent(key).await;
    let c = s
        .expect(&r, 201, "InvoiceResponse")
        .and_then(|v| ensure(v["rental"]["state"] == "pending", || format!("{v}")));
    s.check("life.rent-again", "A released key rents anew", c);
    // The second key's first invoice was never paid and has long expired.
    let c = match other {
        None => Err("no second rental to watch".to_string()),
        Some(o) => {
            let r = s
                .http
                .get(&format!("/v1/invoices/{}?wait=30", o.invoice.payment_hash))
                .await;
            let st = s.status(&o.rental.public_key).await;
            s.expect(&r, 200, "Invoice")
                .and_then(|v| ensure(v["state"] == "expired", || format!("{v}")))
                .and(st)
                .and_then(|v| ensure(v["state"] == "released", || format!("{v}")))
        }
    };
    s.check(
        "life.unpaid-expiry",
        "An unpaid first invoice expires and its rental is released",
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
        .expect(&r, 201, "InvoiceResponse")
        .and_then(|v| serde_json::from_value::<api::InvoiceResponse>(v).map_err(|e| e.to_string()))
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
