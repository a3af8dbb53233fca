//! The client-side mode against our client: staticip rents from a replay of a recorded
//! exchange with staticwire-control. Honest, it asks exactly the recorded requests (its key in
//! the rent, never its private key) and writes the configuration; with each kind of lying
//! invoice it refuses (exit 4) and asks nothing after the rent (the terms come first: they name
//! the proof key).

use staticwire_conformance::replay::{serve, verdict, Exchange, Tamper};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn staticip() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("staticip");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p staticip",
        bin.display()
    );
    bin
}

fn exchange() -> Exchange {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("exchanges/rent.json");
    Exchange::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn rent(url: &str, dir: &Path) -> Output {
    let (bin, url, dir) = (staticip(), url.to_string(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "--state-dir",
                dir.to_str().unwrap(),
                "--server",
                &url,
                "--json",
                "RentNewIP",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staticip_asks_what_the_recording_answers_and_refuses_lying_invoices() {
    let dir = tempfile::tempdir().unwrap();
    let r = serve(exchange(), Tamper::None).await.unwrap();
    let out = rent(&r.url, dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seen = r.seen();
    let steps: Vec<Option<usize>> = seen.iter().map(|s| s.step).collect();
    // The terms (their proof key, and later the invoice checks), rent, the long-poll, GetConf,
    // status.
    assert_eq!(
        steps,
        [Some(0), Some(1), Some(2), Some(3), Some(4)],
        "{seen:#?}"
    );
    assert!(seen[2].path.contains("?wait="), "{}", seen[2].path);
    // Every request on the rental carried a valid proof of the client's key.
    let (ok, lines) = verdict(&exchange().steps, &seen, Tamper::None);
    assert!(ok, "{lines:#?}");
    assert!(seen.iter().all(|s| s.refused.is_none()), "{seen:#?}");
    let private = std::fs::read_to_string(dir.path().join("rentals/default/private.key")).unwrap();
    let public = r.client_key().unwrap();
    assert_eq!(
        seen[1].body.as_ref().unwrap()["public_key"],
        public.as_str()
    );
    for s in &seen {
        let text = format!("{} {:?}", s.path, s.body);
        assert!(
            !text.contains(private.trim()),
            "the private key was sent: {text}"
        );
    }
    let conf = std::fs::read_to_string(dir.path().join("rentals/default/sw-default.conf")).unwrap();
    assert!(conf.contains("Address = 203.0.113.254/32"), "{conf}");
    assert!(
        conf.contains(&format!("PrivateKey = {}", private.trim())),
        "{conf}"
    );

    for tamper in [Tamper::Amount, Tamper::Payee, Tamper::Network, Tamper::Hash] {
        let dir = tempfile::tempdir().unwrap();
        let r = serve(exchange(), tamper).await.unwrap();
        let out = rent(&r.url, dir.path()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{tamper:?}: {stderr}");
        assert!(
            stderr.contains("refusing this invoice"),
            "{tamper:?}: {stderr}"
        );
        let asked: Vec<String> = r
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert_eq!(asked, ["GET /v1/terms", "POST /v1/rentals"], "{tamper:?}");
    }
}

/// A client that rents without a proof, or with a proof that does not verify (made with
/// another private key than the key it names), is answered 401 and fails the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_valid_proof_fails_the_replay() {
    use base64::Engine;
    use staticwire_api::proof::{proof_public_key, Prover};
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let (mine, other) = ([0x42u8; 32], [0x43u8; 32]);
    let key = b64(proof_public_key(&mine));
    let body = serde_json::json!({ "public_key": key }).to_string();
    for forged in [false, true] {
        let r = serve(exchange(), Tamper::None).await.unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let text = http
            .get(format!("{}/v1/terms", r.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let terms: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut req = http
            .post(format!("{}/v1/rentals", r.url))
            .header("content-type", "application/json")
            .body(body.clone());
        if forged {
            let server = base64::engine::general_purpose::STANDARD
                .decode(terms["proof_key"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let mut proof =
                Prover::new(&other, &server)
                    .unwrap()
                    .prove("POST", "/v1/rentals", body.as_bytes());
            proof.key = proof_public_key(&mine);
            req = req.header("authorization", proof.header_value());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "forged: {forged}");
        let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        let code = if forged {
            "proof_invalid"
        } else {
            "proof_required"
        };
        assert_eq!(v["error"]["code"], code);
        let seen = r.seen();
        let (ok, lines) = verdict(&exchange().steps, &seen, Tamper::None);
        assert!(!ok, "forged: {forged}: {lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("REFUSED") && l.contains("/v1/rentals")),
            "{lines:#?}"
        );
    }
}
