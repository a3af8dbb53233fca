//! The running server against its OpenAPI document (`/v1/openapi.json`): every documented
//! route is exercised through the real listener (limits included), and every answer — success
//! or error — must be documented for that route and status, with a body of the documented
//! schema and, for errors, a documented code. Codes that need a broken database or Lightning
//! node to provoke are checked through the error mapping itself.

use crate::config::LimitsConfig;
use crate::lightning::LnError;
use crate::service::{Service, ServiceError};
use crate::testkit::{Builder, Control};
use axum::response::IntoResponse;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use staticwire_api::openapi::{self, ROUTES};
use staticwire_api::{codes, ErrorBody};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Mutex;

const DAY: i64 = 86_400;

struct Server {
    _ctl: Control,
    /// The TSIG key of its `[rdns]`.
    _keys: tempfile::TempDir,
    base: String,
    http: crate::proving::Client,
    doc: Value,
    /// (method, path template, status, code or "") of every answer seen.
    seen: Mutex<BTreeSet<(String, String, u16, String)>>,
}

/// A resolver for the forward confirmation of reverse DNS, made of hickory's message types:
/// `a-203-0-113-1.fwd.test.` has the A record 203.0.113.1, every other name none.
async fn resolver() -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut a = Message::new();
            a.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .set_response_code(ResponseCode::NoError);
            a.add_queries(q.queries().to_vec());
            for query in q.queries() {
                let ip = query
                    .name()
                    .to_ascii()
                    .strip_prefix("a-")
                    .and_then(|r| r.split('.').next().map(|l| l.replace('-', ".")))
                    .and_then(|l| l.parse::<std::net::Ipv4Addr>().ok());
                if let (Some(ip), RecordType::A) = (ip, query.query_type()) {
                    a.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A(ip)),
                    ));
                }
            }
            if let Ok(bytes) = a.to_vec() {
                let _ = sock.send_to(&bytes, from).await;
            }
        }
    });
    addr
}

async fn server(pool: &str, limits: LimitsConfig) -> Server {
    // Reverse DNS on: the resolver above, and a primary that is not there (its updates fail
    // and are left to the compare, which these tests do not run).
    let dns = resolver().await;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("rdns.key");
    std::fs::write(
        &key,
        "key \"t\" { algorithm hmac-sha256; secret \"2hOEy+Ap3r1yjgfNVOL/zRWuXtd+fwn2LWUfqxLQpX4=\"; };",
    )
    .unwrap();
    let ctl = Builder::new(pool)
        .limits(limits)
        .dev_hooks()
        .limited()
        .config(move |c| {
            c.rdns.server = Some(dns);
            c.rdns.resolver = Some(dns);
            c.rdns.tsig_key_file = Some(key);
            c.rdns.zones = vec![crate::config::RdnsZoneConfig {
                zone: "113.0.203.in-addr.arpa.".into(),
                network: "203.0.113.0/24".parse().unwrap(),
                owner: None,
            }];
        })
        .serve()
        .await;
    Server {
        _keys: keys,
        base: ctl.base(),
        _ctl: ctl,
        http: crate::proving::Client::new(),
        doc: openapi::document(),
        seen: Mutex::new(BTreeSet::new()),
    }
}

fn service(dir: &tempfile::TempDir, pool: &str, limits: LimitsConfig) -> Service {
    Builder::new(pool).limits(limits).service(dir.path())
}

/// A key pair whose private half the test client holds (it proves its requests).
fn new_key() -> String {
    crate::proving::new_key()
}

fn url_key(k: &str) -> String {
    URL_SAFE.encode(STANDARD.decode(k).unwrap())
}

impl Server {
    /// Checks one answer against the document; returns the JSON body (Null for text).
    fn check(&self, method: &str, template: Option<&str>, status: u16, body: &[u8]) -> Value {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let what = format!("{method} {template:?} -> {status} {json}");
        let Some(template) = template else {
            // An undocumented path: only "no such route" may come back.
            assert_eq!(status, 404, "{what}");
            assert_eq!(json["error"]["code"], codes::NOT_FOUND, "{what}");
            return json;
        };
        let op = &self.doc["paths"][template][method];
        if !op.is_object() {
            // A documented path with another method: 405, as its operations document.
            let item = self.doc["paths"][template].as_object();
            let any = item.and_then(|i| i.values().next()).unwrap_or(&Value::Null);
            assert!(any.is_object(), "undocumented path: {what}");
            assert_eq!(status, 405, "{what}");
            assert!(
                any["responses"]["405"]["content"]["application/json"]["examples"]
                    [codes::METHOD_NOT_ALLOWED]
                    .is_object(),
                "{what}"
            );
            assert_eq!(json["error"]["code"], codes::METHOD_NOT_ALLOWED, "{what}");
            let code = codes::METHOD_NOT_ALLOWED.to_string();
            let seen = (method.to_string(), template.to_string(), status, code);
            self.seen.lock().unwrap().insert(seen);
            return json;
        }
        let resp = &op["responses"][status.to_string()];
        assert!(resp.is_object(), "undocumented status: {what}");
        let route = openapi::route(method, template).unwrap();
        let code = if status == route.status {
            if let Some(schema) = resp["content"]["application/json"].get("schema") {
                assert!(!json.is_null(), "not JSON: {what}");
                openapi::validate(&self.doc, schema, &json)
                    .unwrap_or_else(|e| panic!("{e}: {what}"));
            } else {
                assert!(
                    resp["content"]["text/plain"].is_object(),
                    "no content: {what}"
                );
            }
            String::new()
        } else {
            let schema = openapi::schema_ref("ErrorBody");
            openapi::validate(&self.doc, &schema, &json).unwrap_or_else(|e| panic!("{e}: {what}"));
            let code = json["error"]["code"].as_str().unwrap().to_string();
            assert!(
                resp["content"]["application/json"]["examples"][&code].is_object(),
                "code not documented for this route and status: {what}"
            );
            code
        };
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_string(), template.to_string(), status, code));
        json
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        template: Option<&str>,
        ctype: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (status, self.check(method, template, status, &bytes))
    }

    async fn get(&self, path: &str, template: &str) -> (u16, Value) {
        self.call("get", path, Some(template), None, None).await
    }

    async fn post(&self, path: &str, template: &str, body: Value) -> (u16, Value) {
        self.call(
            "post",
            path,
            Some(template),
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }

    fn saw(&self, code: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.3 == code)
    }
}

const RENTALS: &str = "/v1/rentals";
const RENTAL: &str = "/v1/rentals/{public_key}";
const CONFIG: &str = "/v1/rentals/{public_key}/config";
const RENEWALS: &str = "/v1/rentals/{public_key}/renewals";
const INVOICE: &str = "/v1/invoices/{payment_hash}";
const PTR: &str = "/v1/rentals/{public_key}/ptr";

#[tokio::test]
async fn every_route_and_error_code_of_the_running_server_is_documented() {
    let s = server("203.0.113.0/30", LimitsConfig::default()).await;
    // The document itself, as served.
    let (st, doc) = s.get("/v1/openapi.json", "/v1/openapi.json").await;
    assert_eq!((st, &doc), (200, &openapi::document()));
    let (st, terms) = s.get("/v1/terms", "/v1/terms").await;
    assert_eq!(st, 200);
    assert_eq!(s.get("/healthz", "/healthz").await.0, 200);
    assert_eq!(s.get("/readyz", "/readyz").await.0, 200);

    // Bodies: media type, size, syntax, key.
    let c = |ct: &str, b: &str| (ct.to_string(), b.to_string());
    for ((ctype, body), status, code) in [
        (c("text/plain", "{}"), 415, codes::UNSUPPORTED_MEDIA),
        (c("application/json", "{"), 400, codes::BAD_REQUEST),
        (c("application/json", "{}"), 400, codes::BAD_REQUEST),
        (
            c("application/json", &"x".repeat(70_000)),
            413,
            codes::TOO_LARGE,
        ),
        (
            c("application/json", r#"{"public_key":"AAAA"}"#),
            400,
            codes::BAD_KEY,
        ),
    ] {
        let (st, v) = s
            .call("post", RENTALS, Some(RENTALS), Some(&ctype), Some(body))
            .await;
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)));
    }

    // Rent, twice: the same invoice.
    let key = new_key();
    let (st, first) = s.post(RENTALS, RENTALS, json!({"public_key": key})).await;
    assert_eq!(st, 201);
    let (_, again) = s.post(RENTALS, RENTALS, json!({"public_key": key})).await;
    assert_eq!(again["invoice"], first["invoice"]);
    let k = url_key(&key);
    let hash = first["invoice"]["payment_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let bolt11 = first["invoice"]["bolt11"].as_str().unwrap().to_string();
    assert_eq!(first["invoice"]["amount_sat"], terms["first_payment_sat"]);

    let (st, r) = s.get(&format!("/v1/rentals/{k}"), RENTAL).await;
    assert_eq!((st, r["state"].as_str()), (200, Some("pending")));
    assert_eq!(s.get("/v1/rentals/%FF%FE", RENTAL).await.0, 400);
    assert_eq!(s.get("/v1/rentals/short", RENTAL).await.0, 400);
    let unknown = url_key(&new_key());
    assert_eq!(
        s.get(&format!("/v1/rentals/{unknown}"), RENTAL).await.0,
        404
    );
    assert_eq!(
        s.get(&format!("/v1/rentals/{unknown}/config"), CONFIG)
            .await
            .0,
        404
    );
    let renewals = format!("/v1/rentals/{k}/renewals");
    let (st, v) = s.post(&renewals, RENEWALS, json!({"months": 1})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some(codes::CONFLICT))
    );
    let (st, v) = s.post(&renewals, RENEWALS, json!({"months": 0})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some(codes::BAD_MONTHS))
    );
    let (st, v) = s
        .post(
            &format!("/v1/rentals/{unknown}/renewals"),
            RENEWALS,
            json!({"months": 1}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some(codes::NOT_FOUND))
    );

    // Invoices and their long-poll.
    let (st, inv) = s.get(&format!("/v1/invoices/{hash}"), INVOICE).await;
    assert_eq!((st, inv["state"].as_str()), (200, Some("open")));
    for q in ["?wait=soon", "?color=red"] {
        let (st, v) = s.get(&format!("/v1/invoices/{hash}{q}"), INVOICE).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some(codes::BAD_REQUEST))
        );
    }
    // Look-ups proven with a key of one's own: unknown hashes are not found.
    let asker = new_key();
    crate::proving::claim_invoice(&"ab".repeat(32), &asker);
    crate::proving::claim_invoice("xyz", &asker);
    assert_eq!(
        s.get(&format!("/v1/invoices/{}", "ab".repeat(32)), INVOICE)
            .await
            .0,
        404
    );
    assert_eq!(s.get("/v1/invoices/xyz", INVOICE).await.0, 404);

    // The payment hook pays and credits before it answers.
    let pay = |b: &str| json!({ "bolt11": b });
    let (st, paid) = s.post("/v1/dev/pay", "/v1/dev/pay", pay(&bolt11)).await;
    assert_eq!(st, 200);
    assert_eq!(paid["payment_hash"], hash);
    let (st, v) = s.post("/v1/dev/pay", "/v1/dev/pay", pay(&bolt11)).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some(codes::CONFLICT))
    );
    let (st, _) = s
        .post("/v1/dev/pay", "/v1/dev/pay", pay("lnbc1nonsense"))
        .await;
    assert_eq!(st, 400);
    let (st, inv) = s.get(&format!("/v1/invoices/{hash}?wait=5"), INVOICE).await;
    assert_eq!((st, inv["state"].as_str()), (200, Some("settled")));
    let (st, r) = s.get(&format!("/v1/rentals/{k}"), RENTAL).await;
    assert_eq!((st, r["state"].as_str()), (200, Some("active")));
    let (st, conf) = s.get(&format!("/v1/rentals/{k}/config"), CONFIG).await;
    assert_eq!(st, 200);
    assert!(!conf["wg_quick"]
        .as_str()
        .unwrap()
        .lines()
        .any(|l| l.starts_with("PrivateKey")));
    let (st, v) = s.post(RENTALS, RENTALS, json!({"public_key": key})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some(codes::CONFLICT))
    );
    let (st, v) = s.post(&renewals, RENEWALS, json!({"months": 13})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some(codes::BAD_MONTHS))
    );

    // Reverse DNS of the active rental: its list, a forward-confirmed name (kept while no DNS
    // server takes it), a name that resolves elsewhere, a bad name, back to the default.
    let ptr = format!("/v1/rentals/{k}/ptr");
    let (st, list) = s.get(&ptr, PTR).await;
    assert_eq!(st, 200, "{list}");
    let addr = list["records"][0]["address"].as_str().unwrap().to_string();
    let put = |name: String| {
        s.call(
            "put",
            &ptr,
            Some(PTR),
            Some("application/json"),
            Some(json!({ "name": name }).to_string()),
        )
    };
    let (st, v) = put(format!("a-{}.fwd.test", addr.replace('.', "-"))).await;
    assert_eq!(
        (st, v["records"][0]["custom"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    assert_eq!(v["records"][0]["published"], false, "{v}");
    let (st, v) = put("a-198-51-100-1.fwd.test".into()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some(codes::FORWARD_MISMATCH)),
        "{v}"
    );
    let (st, v) = put("x..fwd.test".into()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some(codes::BAD_NAME))
    );
    let (st, v) = s
        .call(
            "delete",
            &ptr,
            Some(PTR),
            Some("application/json"),
            Some("{}".into()),
        )
        .await;
    assert_eq!(
        (st, v["records"][0]["custom"].as_bool()),
        (200, Some(false)),
        "{v}"
    );

    // Lapse: one month owed, so a renewal of one month is for two.
    let (st, _) = s
        .post(
            "/v1/dev/clock",
            "/v1/dev/clock",
            json!({"seconds": 31 * DAY}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, r) = s.get(&format!("/v1/rentals/{k}"), RENTAL).await;
    assert_eq!(r["state"], "lapsed");
    assert_eq!(r["months_owed"], 1);
    let (st, renewal) = s.post(&renewals, RENEWALS, json!({"months": 1})).await;
    assert_eq!(st, 201);
    assert_eq!(renewal["invoice"]["months"], 2);
    let (st, _) = s
        .post("/v1/dev/clock", "/v1/dev/clock", json!({"seconds": -1}))
        .await;
    assert_eq!(st, 400);

    // Past the reservation: released, and swept. Renewing answers what it answers before
    // the sweep: 409, not 404.
    s.post(
        "/v1/dev/clock",
        "/v1/dev/clock",
        json!({"seconds": 60 * DAY}),
    )
    .await;
    let (_, r) = s.get(&format!("/v1/rentals/{k}"), RENTAL).await;
    assert_eq!(r["state"], "released");
    let (st, v) = s.post(&renewals, RENEWALS, json!({"months": 1})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some(codes::CONFLICT))
    );
    let (st, _) = s.get(&format!("/v1/rentals/{k}/config"), CONFIG).await;
    assert_eq!(st, 409);

    // A /30 holds two addresses; the first rests in its cool-down. Two paid holds later the
    // pool is empty.
    let mut last = (0, Value::Null);
    for _ in 0..2 {
        last = s
            .post(RENTALS, RENTALS, json!({"public_key": new_key()}))
            .await;
        if last.0 != 201 {
            break;
        }
        let b = last.1["invoice"]["bolt11"].as_str().unwrap().to_string();
        assert_eq!(s.post("/v1/dev/pay", "/v1/dev/pay", pay(&b)).await.0, 200);
    }
    let (st, v) = s
        .post(RENTALS, RENTALS, json!({"public_key": new_key()}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (503, Some(codes::POOL_EXHAUSTED)),
        "{last:?}"
    );

    // Paths and methods that are not routes.
    for (m, p) in [
        ("get", "/v1/nothing"),
        ("post", "/v2/rentals"),
        ("get", "/v1"),
    ] {
        s.call(m, p, None, None, None).await;
    }
    let (st, v) = s.call("get", RENTALS, Some(RENTALS), None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (405, Some(codes::METHOD_NOT_ALLOWED))
    );
    let (st, _) = s
        .call("delete", "/v1/terms", Some("/v1/terms"), None, None)
        .await;
    assert_eq!(st, 405);

    // Every documented route was answered with its success status.
    for r in ROUTES {
        let ok = s
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|x| x.0 == r.method && x.1 == r.path && x.2 == r.status);
        assert!(ok, "{} {} never answered {}", r.method, r.path, r.status);
    }
    for code in [
        codes::BAD_KEY,
        codes::BAD_REQUEST,
        codes::BAD_MONTHS,
        codes::NOT_FOUND,
        codes::METHOD_NOT_ALLOWED,
        codes::CONFLICT,
        codes::TOO_LARGE,
        codes::UNSUPPORTED_MEDIA,
        codes::POOL_EXHAUSTED,
    ] {
        assert!(s.saw(code), "{code} never provoked");
    }
}

#[tokio::test]
async fn limits_answer_documented_codes() {
    let limits = LimitsConfig {
        // Three requests before the last one, which finds the burst spent.
        burst: 3,
        per_second: 0.001,
        max_unpaid_per_client: 1,
        body_timeout_secs: 1,
        ..LimitsConfig::default()
    };
    let s = server("203.0.113.0/28", limits).await;
    let (st, _) = s
        .post(RENTALS, RENTALS, json!({"public_key": new_key()}))
        .await;
    assert_eq!(st, 201);
    let (st, v) = s
        .post(RENTALS, RENTALS, json!({"public_key": new_key()}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (429, Some(codes::TOO_MANY_UNPAID))
    );
    // A body that never comes: 408 once the body timeout passes.
    let addr = s.base.trim_start_matches("http://").to_string();
    let raw = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(
            b"POST /v1/rentals HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{",
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(status, 408, "{text}");
    let v = s.check("post", Some(RENTALS), status, body.trim().as_bytes());
    assert_eq!(v["error"]["code"], codes::TIMEOUT);
    // The burst is spent: 429 with Retry-After.
    let r = s
        .http
        .get(format!("{}/v1/terms", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let st = r.status().as_u16();
    let v = s.check("get", Some("/v1/terms"), st, &r.bytes().await.unwrap());
    assert_eq!(v["error"]["code"], codes::RATE_LIMITED);
}

/// Every refusal the service can make maps to a code of the table, with one of its statuses,
/// and the routes that can meet it document it.
#[tokio::test]
async fn every_service_error_maps_to_a_documented_code() {
    let errors = [
        ServiceError::BadKey("x".into()),
        ServiceError::BadRequest("x".into()),
        ServiceError::BadMonths("x".into()),
        ServiceError::NotFound,
        ServiceError::NoInvoice,
        ServiceError::Conflict("x".into()),
        ServiceError::PoolExhausted,
        ServiceError::TooManyUnpaid {
            client: "127.0.0.0/24".into(),
            held: 1,
            max: 1,
        },
        ServiceError::UnpaidShareFull,
        ServiceError::Lightning(LnError::Unreachable("x".into())),
        ServiceError::Lightning(LnError::Certificate("x".into())),
        ServiceError::Lightning(LnError::Permission("x".into())),
        ServiceError::Lightning(LnError::Protocol("x".into())),
        ServiceError::Internal("x".into()),
        ServiceError::DatabaseUnavailable("x".into()),
    ];
    for e in &errors {
        listed(e);
    }
    let rent = openapi::route("post", RENTALS).unwrap();
    let renew = openapi::route("post", RENEWALS).unwrap();
    for e in errors {
        let resp = crate::http::ApiError::from(e).into_response();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let b: ErrorBody = serde_json::from_slice(&body).unwrap();
        let code = b.error.code.as_str();
        assert!(
            openapi::statuses_of(code).contains(&status),
            "{code} sent with {status}"
        );
        // Renting can meet every refusal but bad_months (a rent has no months) and
        // not_found; renewing every one but the pool's and the unpaid cap's.
        let documented =
            |r: &openapi::Route| r.errors.contains(&code) || openapi::COMMON_ERRORS.contains(&code);
        match code {
            codes::BAD_MONTHS | codes::NOT_FOUND => assert!(documented(renew), "{code}"),
            codes::POOL_EXHAUSTED | codes::TOO_MANY_UNPAID => {
                assert!(documented(rent), "{code}")
            }
            _ => assert!(documented(rent) && documented(renew), "{code}"),
        }
    }
}

/// Every variant, by name: a new one does not compile until it is added to the list above
/// (and its code documented for the routes that can meet it).
fn listed(e: &ServiceError) {
    match e {
        ServiceError::BadKey(_)
        | ServiceError::BadRequest(_)
        | ServiceError::BadMonths(_)
        | ServiceError::NotFound
        | ServiceError::NoInvoice
        | ServiceError::Conflict(_)
        | ServiceError::PoolExhausted
        | ServiceError::UnpaidShareFull
        | ServiceError::TooManyUnpaid { .. }
        | ServiceError::Lightning(_)
        | ServiceError::Internal(_)
        | ServiceError::DatabaseUnavailable(_) => {}
    }
}

/// An invoice payable to another node than the published payee is never handed out: the rent
/// answers 502 `lightning_error` and leaves no rental behind.
#[tokio::test]
async fn an_invoice_of_another_payee_is_refused_before_a_client_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(&dir, "203.0.113.0/28", LimitsConfig::default());
    assert!(svc.api_terms().payee.is_some(), "the dev node is the payee");
    svc.set_payee(Some(format!("02{}", "42".repeat(32))));
    let key = new_key();
    let err = svc.rent(&key, None).await.unwrap_err();
    let resp = crate::http::ApiError::from(err).into_response();
    assert_eq!(resp.status().as_u16(), 502);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let b: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(b.error.code, codes::BACKEND_ERROR);
    assert!(b.error.message.contains("payee"), "{}", b.error.message);
    assert!(matches!(svc.status(&key), Err(ServiceError::NotFound)));
}
