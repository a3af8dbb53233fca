//! Property tests: what the control reads from outside never panics and never answers 500.
//! HTTP paths, JSON bodies and form posts of both APIs (through the real routers and
//! handlers, with the dev Lightning backend), public keys, BOLT11 strings, config files.

use crate::abuse_tests::server;
use crate::config::LimitsConfig;
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use std::sync::OnceLock;

struct Env {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    _server: crate::abuse_tests::Server,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let limits = LimitsConfig {
            burst: u32::MAX,
            invoice_burst: u32::MAX,
            max_unpaid_per_client: u32::MAX,
            ..LimitsConfig::default()
        };
        let s = rt.block_on(server("203.0.112.0/20", limits));
        let app =
            crate::http::router(s.svc.clone(), false).merge(crate::compat::router(s.svc.clone()));
        Env {
            rt,
            app,
            _server: s,
        }
    })
}

fn call(method: &str, uri: &str, ctype: Option<&str>, body: Vec<u8>) -> Option<u16> {
    let e = env();
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = ctype {
        b = b.header("content-type", c);
    }
    let req = b.body(Body::from(body)).ok()?;
    let mut app = e.app.clone();
    let resp =
        e.rt.block_on(async { tower::Service::call(&mut app, req).await })
            .unwrap();
    Some(resp.status().as_u16())
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9+/=_%-]{0,60}",
        Just("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=".to_string()),
        Just("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI%3D".to_string()),
        Just("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()),
        "[0-9a-f]{64}",
        ".{0,20}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (segment(), any::<i64>()).prop_map(|(k, m)| {
            serde_json::to_vec(&serde_json::json!({"public_key": k, "months": m})).unwrap()
        }),
        (segment(), ".{0,12}").prop_map(|(k, a)| {
            format!("WireGuardPubKey={k}&amount={a}&months={a}&InvoiceToWaitFor={a}").into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn routes_of_both_apis_never_panic_nor_500(
        route in prop_oneof![
            Just("/v1/rentals".to_string()),
            segment().prop_map(|k| format!("/v1/rentals/{k}")),
            segment().prop_map(|k| format!("/v1/rentals/{k}/config")),
            segment().prop_map(|k| format!("/v1/rentals/{k}/renewals")),
            (segment(), ".{0,10}").prop_map(|(h, q)| format!("/v1/invoices/{h}?wait=0{q}")),
            Just("/api/rent/".to_string()),
            Just("/api/renew/".to_string()),
            Just("/api/getstatus/".to_string()),
            Just("/api/getconf/".to_string()),
            Just("/api/AddCredit/".to_string()),
            Just("/api/GetSellOfferTerms/".to_string()),
            "/[ -~]{0,40}",
        ],
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        ctype in prop_oneof![
            Just(Some("application/json")),
            Just(Some("application/x-www-form-urlencoded")),
            Just(Some("text/plain")),
            Just(None),
        ],
        body in body(),
    ) {
        if let Some(status) = call(method, &route, ctype, body) {
            prop_assert!(status != 500, "{method} {route}: 500");
        }
    }

    #[test]
    fn public_keys_never_panic(s in prop_oneof![".{0,60}", "[A-Za-z0-9+/_-]{43}=", "[A-Za-z0-9+/_-]{44}"]) {
        if let Ok(k) = crate::service::parse_public_key(&s) {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(&k).unwrap();
            prop_assert!(staticwire_api::check_public_key(&bytes).is_ok());
        }
    }

    #[test]
    fn bolt11_strings_never_panic(s in prop_oneof![".{0,120}", "ln(bc|tb|bcrt|tbs)[0-9]{0,6}[munp]?1[02-9ac-hj-np-z]{0,300}"]) {
        let _ = crate::network::invoice_network(&s);
    }

    #[test]
    fn config_files_never_panic(text in prop_oneof![
        ".{0,200}",
        "(listen = \"[0-9.:]{0,25}\"\n)?(\\[(terms|limits|compat|lightning|metrics)\\]\n[a-z_]{1,24} = ([0-9]{1,22}|\"[^\"\n]{0,20}\"|true|-1)\n){0,3}",
        "\\[\\[routers\\]\\]\nsocket = \"/x\"\nendpoint = \"e:1\"\npools = \\[\"[0-9./]{0,20}\"\\]\n",
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(&path, &text).unwrap();
        let _ = crate::config::Config::load(Some(&path));
    }
}
