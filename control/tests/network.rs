//! The control agrees with its Lightning node on the network before it serves: the real
//! binary against a Core Lightning stand-in on regtest.

use serde_json::{json, Value};
use staticwire_control::testkit::{ProcessBuilder, ProcessConfig};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Answers `getinfo` as a regtest node does; everything else as a node with no invoices.
fn cln_standin(sock: &Path) {
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let req: Value = loop {
                    let n = s.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Ok(v) = serde_json::from_slice(&buf) {
                        break v;
                    }
                };
                let reply = match req["method"].as_str() {
                    Some("getinfo") => {
                        json!({"jsonrpc": "2.0", "id": req["id"], "result": {"id": "02", "network": "regtest"}})
                    }
                    Some("waitanyinvoice") => {
                        std::thread::sleep(Duration::from_secs(1));
                        json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 904, "message": "Timed out"}})
                    }
                    _ => json!({"jsonrpc": "2.0", "id": req["id"], "result": {"invoices": []}}),
                };
                let mut bytes = serde_json::to_vec(&reply).unwrap();
                bytes.extend_from_slice(b"\n\n");
                let _ = s.write_all(&bytes);
            });
        }
    });
}

fn config(dir: &Path, network: Option<&str>) -> ProcessConfig {
    let network = network
        .map(|n| format!("network = \"{n}\"\n"))
        .unwrap_or_default();
    ProcessBuilder::new(
        dir,
        &format!(
            "[lightning]\nbackend = \"cln\"\nsocket = \"{}\"\n{network}\
             [[routers]]\nname = \"n\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/30\"]\n",
            dir.join("lightning-rpc").display(),
            dir.join("no-router.sock").display()
        ),
    )
    .write()
}

#[test]
fn a_network_the_node_is_not_on_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    cln_standin(&dir.path().join("lightning-rpc"));
    let mut control = config(dir.path(), Some("bitcoin")).spawn_with(Stdio::piped());
    let child = control.child();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the control started although the node is on regtest");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("regtest") && err.contains("bitcoin"), "{err}");
}

#[tokio::test]
async fn without_a_configured_network_the_nodes_is_published() {
    let dir = tempfile::tempdir().unwrap();
    cln_standin(&dir.path().join("lightning-rpc"));
    let control = config(dir.path(), None).spawn();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut terms = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{}/v1/terms", control.url())).send().await {
            terms = r.json::<Value>().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(control);
    assert_eq!(terms.expect("the control started")["network"], "regtest");
}
