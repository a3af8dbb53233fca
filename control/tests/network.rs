//! The control agrees with its Lightning node on the network before it serves: the real
//! binary against a Core Lightning stand-in on regtest.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

fn config(dir: &Path, port: u16, network: Option<&str>) -> PathBuf {
    let path = dir.join("control.toml");
    let network = network
        .map(|n| format!("network = \"{n}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
             [lightning]\nbackend = \"cln\"\nsocket = \"{}\"\n{network}\
             [[routers]]\nname = \"n\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/30\"]\n",
            dir.display(),
            dir.join("lightning-rpc").display(),
            dir.join("no-router.sock").display()
        ),
    )
    .unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_network_the_node_is_not_on_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    cln_standin(&dir.path().join("lightning-rpc"));
    let cfg = config(dir.path(), free_port(), Some("bitcoin"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_staticwire-control"))
        .args(["-c", cfg.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let port = free_port();
    let cfg = config(dir.path(), port, None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_staticwire-control"))
        .args(["-c", cfg.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mut terms = None;
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/v1/terms"))
            .send()
            .await
        {
            terms = r.json::<Value>().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(terms.expect("the control started")["network"], "regtest");
}
