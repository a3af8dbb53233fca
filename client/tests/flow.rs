//! staticip against a real staticwire-control (dev Lightning backend): the full flow, renewal,
//! auto-pay through CLN and LND stand-ins that settle via the dev backend, tampered invoices,
//! caps, the daemon, and --json. Every byte the client sends goes through a recording proxy, so
//! the test can check that the private key never leaves the machine.

use serde_json::Value;
use staticwire_control::testkit::{binary as control_bin, Process};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn staticip() -> &'static str {
    env!("CARGO_BIN_EXE_staticip")
}

struct Provider {
    /// The control (killed when dropped); the fields below are copied from it.
    _control: Process,
    cfg: PathBuf,
    port: u16,
    /// Everything clients sent through the proxy.
    sent: Arc<Mutex<Vec<u8>>>,
    proxy_port: u16,
    https_port: u16,
}

/// A TCP proxy that records what the client sends.
fn recording_proxy(target: u16, sent: Arc<Mutex<Vec<u8>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c_r, mut up_w) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut up_r, mut c_w) = (up, c);
                let t = std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_r.read(&mut buf) {
                        if n == 0 || up_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = up_w.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut up_r, &mut c_w);
                let _ = t.join();
            });
        }
    });
    port
}

fn provider() -> Provider {
    let control = Process::start("");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let proxy_port = recording_proxy(control.port, sent.clone());
    Provider {
        cfg: control.cfg.clone(),
        port: control.port,
        https_port: control.https_port.expect("HTTPS listener"),
        _control: control,
        sent,
        proxy_port,
    }
}

impl Provider {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    fn dev_pay(&self, bolt11: &str) {
        let out = Command::new(control_bin())
            .args(["-c", self.cfg.to_str().unwrap(), "dev-pay", bolt11])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn advance_clock(&self, secs: i64) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = format!("{{\"seconds\":{secs}}}");
        write!(s, "POST /v1/dev/clock HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    /// The open invoice of a rental, as the customer would see it in the status.
    fn open_bolt11(&self, state_dir: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state_dir.join("rentals/default/rental.json").exists() {
            assert!(
                Instant::now() < deadline,
                "the client never reached the server"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let st = run(state_dir, &self.url(), &["--json", "status"]);
            let text = String::from_utf8_lossy(&st.stdout).to_string();
            if let Some(b) = serde_json::from_str::<Value>(text.trim())
                .ok()
                .and_then(|v| v["open_invoice"]["bolt11"].as_str().map(String::from))
            {
                return b;
            }
            assert!(Instant::now() < deadline, "no open invoice: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cmd(state_dir: &Path, server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(staticip());
    c.args([
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--server",
        server,
    ])
    .args(args);
    c
}

fn run(state_dir: &Path, server: &str, args: &[&str]) -> Output {
    cmd(state_dir, server, args).output().unwrap()
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn private_key(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join("rentals/default/private.key"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn rent_pay_status_conf_renew_and_the_key_never_leaves() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();

    // Rent, waiting for payment; the customer pays from elsewhere.
    let child = cmd(sd, &p.url(), &["--json", "RentNewIP"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.dev_pay(&p.open_bolt11(sd));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["rental"]["state"], "active");
    assert_eq!(v["payment"]["paid"], true);
    assert_eq!(v["payment"]["invoice"]["amount_sat"], 72_000);
    let conf_path = PathBuf::from(v["config_path"].as_str().unwrap());
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    assert!(conf.contains(&format!("PrivateKey = {}", private_key(sd))));
    assert!(conf.contains(&format!(
        "Address = {}/32",
        v["rental"]["address"].as_str().unwrap()
    )));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&conf_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Status and conf from the remembered server (no --server needed now).
    let st = Command::new(staticip())
        .args(["--state-dir", sd.to_str().unwrap(), "--json", "status"])
        .output()
        .unwrap();
    assert_eq!(json(&st)["state"], "active");
    let c = run(sd, &p.url(), &["--json", "GetConf"]);
    assert!(json(&c)["wg_quick"]
        .as_str()
        .unwrap()
        .contains("PrivateKey = (hidden"));

    // Renew two months.
    let before = json(&st)["paid_until"].as_i64().unwrap();
    let child = cmd(sd, &p.url(), &["--json", "renew", "--months", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.dev_pay(&p.open_bolt11(sd));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["payment"]["invoice"]["amount_sat"], 48_000);
    assert_eq!(
        v["rental"]["paid_until"].as_i64().unwrap(),
        before + 2 * 30 * 86_400
    );

    // Nothing the client sent contained the private key, in any encoding.
    let key = private_key(sd);
    let raw = base64_decode(&key);
    let sent = String::from_utf8_lossy(&p.sent.lock().unwrap()).to_string();
    assert!(
        sent.contains("POST /v1/rentals"),
        "the proxy saw the traffic"
    );
    for form in [
        key.clone(),
        key.replace('+', "-").replace('/', "_"),
        hex(&raw),
        urlencode(&key),
    ] {
        assert!(!sent.contains(&form), "private key sent to the server");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// Pays through the dev backend as a real node would pay the provider's node; returns the
/// preimage, the proof of payment.
fn dev_pay(control_cfg: &Path, bolt11: &str) -> Option<String> {
    let out = Command::new(control_bin())
        .args(["-c", control_cfg.to_str().unwrap(), "dev-pay", bolt11])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["preimage"].as_str().map(String::from)
}

fn payment_hash_of(bolt11: &str) -> String {
    use bitcoin::hashes::Hash;
    let inv: lightning_invoice::Bolt11Invoice = bolt11.parse().unwrap();
    hex(&inv.payment_hash().to_byte_array())
}

/// How a stand-in node answers the next payment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pays,
    NoRoute,
    /// Reports success with a preimage that is not the invoice's.
    WrongPreimage,
    /// LND: streams IN_FLIGHT, then drops the connection; the payment stays in flight.
    DropsInFlight,
}

/// A CLN stand-in: answers `pay` by paying through the dev backend, `listpays` from what it
/// paid. Records the `pay` requests.
fn cln_standin(sock: &Path, control_cfg: PathBuf) -> Arc<Mutex<Vec<Value>>> {
    cln_standin_with(sock, control_cfg, Arc::new(Mutex::new(Mode::Pays)))
}

fn cln_standin_with(
    sock: &Path,
    control_cfg: PathBuf,
    mode: Arc<Mutex<Mode>>,
) -> Arc<Mutex<Vec<Value>>> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    // payment hash -> (status, preimage)
    let pays: Arc<Mutex<std::collections::HashMap<String, (String, String)>>> = Arc::default();
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let a = asked.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let req: Value = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break Value::Null;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Ok(v) = serde_json::from_slice(&buf) {
                    break v;
                }
            };
            let valid = req["jsonrpc"] == "2.0" && req["params"].is_object();
            let reply = if valid && req["method"] == "listpays" {
                let hash = req["params"]["payment_hash"].as_str().unwrap_or("");
                let list: Vec<Value> = pays
                    .lock()
                    .unwrap()
                    .get(hash)
                    .map(|(status, preimage)| {
                        serde_json::json!({"payment_hash": hash, "status": status, "preimage": preimage})
                    })
                    .into_iter()
                    .collect();
                serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": {"pays": list}})
            } else if valid && req["method"] == "pay" && req["params"]["bolt11"].is_string() {
                a.lock().unwrap().push(req.clone());
                let bolt11 = req["params"]["bolt11"].as_str().unwrap();
                let hash = payment_hash_of(bolt11);
                let m = *mode.lock().unwrap();
                let paid = match m {
                    Mode::NoRoute => None,
                    _ => dev_pay(&control_cfg, bolt11),
                };
                match paid {
                    Some(preimage) => {
                        let shown = if m == Mode::WrongPreimage {
                            "ab".repeat(32)
                        } else {
                            preimage
                        };
                        pays.lock()
                            .unwrap()
                            .insert(hash, ("complete".into(), shown.clone()));
                        serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": {"status": "complete", "payment_preimage": shown, "amount_msat": 0}})
                    }
                    None => {
                        pays.lock()
                            .unwrap()
                            .insert(hash, ("failed".into(), String::new()));
                        serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 210, "message": "Ran out of routes to try"}})
                    }
                }
            } else {
                serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32600, "message": "invalid request"}})
            };
            let mut bytes = serde_json::to_vec(&reply).unwrap();
            bytes.extend_from_slice(b"\n\n");
            let _ = s.write_all(&bytes);
        }
    });
    asked
}

#[test]
fn auto_pay_through_cln_with_caps_and_the_daemon() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    let sock = sd.join("lightning-rpc");
    let asked = cln_standin(&sock, p.cfg.clone());
    std::fs::write(
        sd.join("config.toml"),
        format!("[autopay]\nmax_payment_sat = 80000\nmax_30_days_sat = 130000\n[cln]\nsocket = \"{}\"\n", sock.display()),
    )
    .unwrap();

    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["rental"]["state"], "active");
    assert_eq!(asked.lock().unwrap().len(), 1);
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(
        log.contains("\"succeeded\"") && log.contains("72000"),
        "{log}"
    );

    // Over the per-payment cap: refused before the node is asked.
    let out = run(sd, &p.url(), &["--json", "-a", "renew", "--months", "4"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json(&out)["error"].as_str().unwrap().contains("cap"));
    assert_eq!(asked.lock().unwrap().len(), 1);

    // The daemon renews once paid-until is near: 27 days on, 3 days left, renew 5 days ahead.
    let before = json(&run(sd, &p.url(), &["--json", "status"]))["paid_until"]
        .as_i64()
        .unwrap();
    p.advance_clock(27 * 86_400);
    let offset = (27 * 86_400).to_string();
    let out = run(
        sd,
        &p.url(),
        &[
            "--json",
            "-a",
            "--clock-offset",
            &offset,
            "daemon",
            "--once",
            "--renew-days",
            "5",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["renewed"], true);
    assert_eq!(
        v["rental"]["paid_until"].as_i64().unwrap(),
        before + 30 * 86_400
    );
    assert_eq!(asked.lock().unwrap().len(), 2);

    // The 30-day cap: 72,000 + 24,000 spent; another 48,000 would pass 130,000.
    let out = run(sd, &p.url(), &["--json", "-a", "renew", "--months", "2"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(asked.lock().unwrap().len(), 2);

    // Not near paid-until: the daemon does nothing.
    let out = run(
        sd,
        &p.url(),
        &[
            "--json",
            "-a",
            "--clock-offset",
            &offset,
            "daemon",
            "--once",
        ],
    );
    assert_eq!(json(&out)["renewed"], false);
}

/// A provider that lies: serves real terms but invoices that do not match them.
fn lying_provider(terms: Value, invoice: Value) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let (status, v) = if line.starts_with("GET /v1/terms") {
                (200, terms.clone())
            } else if line.starts_with("POST /v1/rentals ") {
                (
                    201,
                    serde_json::json!({"rental": rental_json(), "invoice": invoice}),
                )
            } else {
                (200, rental_json())
            };
            let text = v.to_string();
            let mut s = s;
            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
        }
    });
    url
}

fn rental_json() -> Value {
    serde_json::json!({"public_key": "k", "state": "pending", "address": "203.0.113.5", "created_at": 0,
        "started_at": null, "paid_until": null, "months_owed": 0, "amount_due_sat": 72000, "reserved_until": null,
        "open_invoice": null, "server": {"endpoint": "198.18.0.1:51820", "public_key": "x"}})
}

fn signed(currency: lightning_invoice::Currency, msat: u64) -> (String, String) {
    use bitcoin::hashes::{sha256, Hash};
    use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
    let hash = sha256::Hash::hash(&[9u8; 32]);
    let key = SecretKey::from_slice(&[5; 32]).unwrap();
    let secp = Secp256k1::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let inv = lightning_invoice::InvoiceBuilder::new(currency)
        .description("StaticWire".into())
        .payment_hash(hash)
        .payment_secret(lightning_invoice::PaymentSecret([1; 32]))
        .duration_since_epoch(now)
        .min_final_cltv_expiry_delta(18)
        .amount_milli_satoshis(msat)
        .expiry_time(Duration::from_secs(3600))
        .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &key))
        .unwrap();
    (inv.to_string(), hex(&hash.to_byte_array()))
}

#[test]
fn tampered_invoices_are_refused_and_nothing_is_paid() {
    let terms = serde_json::json!({"activation_sat": 48000, "monthly_sat": 24000, "first_payment_sat": 72000,
        "month_seconds": 2592000, "reservation_seconds": 5184000, "invoice_expiry_seconds": 3600, "max_months": 12,
        "network": "regtest", "servers": [{"endpoint": "198.18.0.1:51820", "public_key": "x"}]});
    let cases = [
        (
            lightning_invoice::Currency::Regtest,
            100_000_000u64,
            100_000u64,
            "asks 100000 sat",
        ),
        (
            lightning_invoice::Currency::Regtest,
            100_000_000,
            72_000,
            "asks 100000 sat",
        ),
        (
            lightning_invoice::Currency::Bitcoin,
            72_000_000,
            72_000,
            "network bitcoin",
        ),
    ];
    for (currency, msat, claimed, why) in cases {
        let (bolt11, hash) = signed(currency, msat);
        let invoice = serde_json::json!({"payment_hash": hash, "bolt11": bolt11, "amount_sat": claimed, "purpose": "activation",
            "months": 1, "state": "open", "created_at": 0, "expires_at": 4_000_000_000u64, "settled_at": null});
        let url = lying_provider(terms.clone(), invoice);
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path();
        let sock = sd.join("lightning-rpc");
        let asked = cln_standin(&sock, PathBuf::from("/nonexistent"));
        std::fs::write(
            sd.join("config.toml"),
            format!("[cln]\nsocket = \"{}\"\n", sock.display()),
        )
        .unwrap();
        let out = run(sd, &url, &["--json", "-a", "rent"]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{why}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            json(&out)["error"].as_str().unwrap().contains(why),
            "{}",
            json(&out)
        );
        assert!(
            asked.lock().unwrap().is_empty(),
            "{why}: the node was asked to pay"
        );
        assert!(!sd.join("payments.log").exists());
    }
}

const MACAROON: &[u8] = b"\x02\x01\x03lnd admin macaroon";

/// What the LND stand-in knows and was asked.
#[derive(Default)]
struct LndNode {
    /// payment hash -> (status, preimage)
    payments: Mutex<std::collections::HashMap<String, (String, String)>>,
    /// bolt11 of every `POST /v2/router/send`.
    sends: Mutex<Vec<String>>,
    /// payment hash of every `GET /v2/router/track/{hash}`.
    tracks: Mutex<Vec<String>>,
}

/// lnd's own certificate (self-signed, CA:TRUE, pinned), or one signed by a CA, for `localhost`.
enum NodeCert {
    SelfSigned,
    SignedBy(Box<(rcgen::Certificate, rcgen::KeyPair)>),
}

/// A CA for node certificates; returns it and its PEM.
fn test_ca() -> (rcgen::Certificate, rcgen::KeyPair, String) {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "staticip test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (cert, key, pem)
}

/// An LND stand-in over TLS: `POST /v2/router/send` streams IN_FLIGHT, pays through the dev
/// backend, then SUCCEEDED with the real preimage (or as `mode` says); `GET
/// /v2/router/track/{hash}` streams the payment's current state, or answers lnd's "payment
/// isn't initiated".
fn lnd_standin_with(
    control_cfg: PathBuf,
    mode: Arc<Mutex<Mode>>,
    cert: NodeCert,
) -> (String, Vec<u8>, Arc<LndNode>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match cert {
        NodeCert::SelfSigned => {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key).unwrap()
        }
        NodeCert::SignedBy(ca) => params.signed_by(&key, &ca.0, &ca.1).unwrap(),
    };
    let der = cert.der().to_vec();
    let server = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let node = Arc::new(LndNode::default());
    let n = node.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tls.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = tls.read_exact(&mut body);
            let macaroon_ok = head
                .to_lowercase()
                .contains(&format!("grpc-metadata-macaroon: {}", hex(MACAROON)));
            let ok_head =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            let line = |status: &str, preimage: &str| {
                format!(
                    "{{\"result\":{{\"status\":\"{status}\",\"payment_preimage\":\"{preimage}\",\"failure_reason\":\"FAILURE_REASON_NO_ROUTE\"}}}}\n"
                )
            };
            if !macaroon_ok {
                let _ = tls.write_all(b"HTTP/1.1 500 X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"code\":2,\"message\":\"verification failed\"}\n");
            } else if let Some(rest) = head.strip_prefix("GET /v2/router/track/") {
                use base64::Engine;
                let b64 = rest.split([' ', '?']).next().unwrap_or("");
                let hash = base64::engine::general_purpose::URL_SAFE
                    .decode(b64)
                    .map(|h| hex(&h))
                    .unwrap_or_default();
                n.tracks.lock().unwrap().push(hash.clone());
                let known = n.payments.lock().unwrap().get(&hash).cloned();
                match known {
                    Some((status, preimage)) => {
                        let _ = tls.write_all(ok_head);
                        let _ = tls.write_all(line(&status, &preimage).as_bytes());
                    }
                    None => {
                        let _ = tls.write_all(b"HTTP/1.1 500 X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"code\":2,\"message\":\"payment isn't initiated\"}\n");
                    }
                }
            } else if head.starts_with("POST /v2/router/send ") {
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let bolt11 = req["payment_request"].as_str().unwrap_or("").to_string();
                n.sends.lock().unwrap().push(bolt11.clone());
                let hash = payment_hash_of(&bolt11);
                let _ = tls.write_all(ok_head);
                let _ = tls.write_all(line("IN_FLIGHT", "").as_bytes());
                let _ = tls.flush();
                let m = *mode.lock().unwrap();
                let (status, preimage) = match m {
                    Mode::DropsInFlight => {
                        n.payments
                            .lock()
                            .unwrap()
                            .insert(hash, ("IN_FLIGHT".into(), String::new()));
                        // Gone without a final update; the payment is still out there.
                        let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    Mode::NoRoute => ("FAILED".to_string(), String::new()),
                    Mode::Pays | Mode::WrongPreimage => match dev_pay(&control_cfg, &bolt11) {
                        Some(p) if m == Mode::Pays => ("SUCCEEDED".into(), p),
                        Some(_) => ("SUCCEEDED".into(), "cd".repeat(32)),
                        None => ("FAILED".into(), String::new()),
                    },
                };
                n.payments
                    .lock()
                    .unwrap()
                    .insert(hash, (status.clone(), preimage.clone()));
                let _ = tls.write_all(line(&status, &preimage).as_bytes());
            } else {
                let _ = tls.write_all(b"HTTP/1.1 404 X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"code\":5,\"message\":\"Not Found\"}\n");
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (format!("{}:{}", addr.ip(), addr.port()), der, node)
}

fn lndconnect(hostport: &str, der: Option<&[u8]>) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let cert = der.map(|d| format!("cert={}&", b64(d))).unwrap_or_default();
    format!(
        "[lnd]\nlndconnect = \"lndconnect://{hostport}?{cert}macaroon={}\"\n",
        b64(MACAROON)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn auto_pay_through_lnd_stream_over_pinned_tls() {
    let p = provider();
    let mode = Arc::new(Mutex::new(Mode::Pays));
    let (hostport, der, node) = lnd_standin_with(p.cfg.clone(), mode, NodeCert::SelfSigned);
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    std::fs::write(sd.join("config.toml"), lndconnect(&hostport, Some(&der))).unwrap();
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["rental"]["state"], "active");
    assert_eq!(node.sends.lock().unwrap().len(), 1);
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(log.contains("\"succeeded\""), "{log}");

    // Another node's certificate is not trusted: nothing is sent to it, and the error says
    // why (a configuration problem: exit 1), rather than "node down".
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(
        sd.join("config.toml"),
        lndconnect(&hostport, Some(other.cert.der())),
    )
    .unwrap();
    let out = run(sd, &p.url(), &["--json", "-a", "renew"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match the pinned"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.sends.lock().unwrap().len(), 1);
}

#[test]
fn lndconnect_without_cert_trusts_a_ca_signed_node() {
    let p = provider();
    let (ca, ca_key, ca_pem) = test_ca();
    let mode = Arc::new(Mutex::new(Mode::Pays));
    let (hostport, _, node) = lnd_standin_with(
        p.cfg.clone(),
        mode,
        NodeCert::SignedBy(Box::new((ca, ca_key))),
    );
    let port = hostport.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    std::fs::write(sd.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(
        sd.join("config.toml"),
        lndconnect(&format!("localhost:{port}"), None),
    )
    .unwrap();
    let out = cmd(sd, &p.url(), &["--json", "-a", "rent"])
        .env("SSL_CERT_FILE", sd.join("ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["rental"]["state"], "active");
    assert_eq!(node.sends.lock().unwrap().len(), 1);
}

#[test]
fn a_failed_attempt_then_a_paid_retry_counts_against_the_30_day_cap() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    let sock = sd.join("lightning-rpc");
    let mode = Arc::new(Mutex::new(Mode::NoRoute));
    let asked = cln_standin_with(&sock, p.cfg.clone(), mode.clone());
    std::fs::write(
        sd.join("config.toml"),
        format!(
            "[autopay]\nmax_payment_sat = 80000\nmax_30_days_sat = 80000\n[cln]\nsocket = \"{}\"\n",
            sock.display()
        ),
    )
    .unwrap();
    // No route: fails.
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // A node that pays the same invoice.
    *mode.lock().unwrap() = Mode::Pays;
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(asked.lock().unwrap().len(), 2);
    // 72,000 left in the last 30 days: a renewal of 24,000 would make 96,000.
    let out = run(sd, &p.url(), &["--json", "-a", "renew"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        json(&out)["error"].as_str().unwrap().contains("cap"),
        "{}",
        json(&out)
    );
    assert_eq!(asked.lock().unwrap().len(), 2, "the renewal was paid");
}

#[test]
fn a_payment_in_flight_counts_and_is_never_sent_twice() {
    let p = provider();
    let mode = Arc::new(Mutex::new(Mode::DropsInFlight));
    let (hostport, der, node) = lnd_standin_with(p.cfg.clone(), mode, NodeCert::SelfSigned);
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    std::fs::write(
        sd.join("config.toml"),
        format!(
            "[autopay]\nmax_payment_sat = 80000\nmax_30_days_sat = 80000\n{}",
            lndconnect(&hostport, Some(&der))
        ),
    )
    .unwrap();
    // The stream drops after IN_FLIGHT: the outcome is unknown, not "failed".
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("in flight"), "{}", stderr(&out));
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(
        log.contains("\"unknown\"") && !log.contains("\"failed\""),
        "{log}"
    );
    // Retrying asks the node, which still has it in flight: nothing is sent again.
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(node.sends.lock().unwrap().len(), 1);
    assert!(
        !node.tracks.lock().unwrap().is_empty(),
        "the node was not asked"
    );
    // The payment completes at the node; the next run learns it instead of paying again.
    let bolt11 = node.sends.lock().unwrap()[0].clone();
    let preimage = dev_pay(&p.cfg, &bolt11).unwrap();
    node.payments
        .lock()
        .unwrap()
        .insert(payment_hash_of(&bolt11), ("SUCCEEDED".into(), preimage));
    // The server learns of the payment on its own: by the next run the key already rents, and
    // a rent is refused (409). The run settles the logged payment instead of failing.
    let mut active = false;
    for _ in 0..200 {
        let out = run(sd, &p.url(), &["--json", "status"]);
        if out.status.success() && json(&out)["state"] == "active" {
            active = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(active, "the control never credited the payment");
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["rental"]["state"], "active");
    assert_eq!(node.sends.lock().unwrap().len(), 1);
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(log.contains("\"succeeded\""), "{log}");
}

#[test]
fn a_preimage_that_does_not_prove_payment_is_not_taken_for_one() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    let sock = sd.join("lightning-rpc");
    cln_standin_with(
        &sock,
        p.cfg.clone(),
        Arc::new(Mutex::new(Mode::WrongPreimage)),
    );
    std::fs::write(
        sd.join("config.toml"),
        format!("[cln]\nsocket = \"{}\"\n", sock.display()),
    )
    .unwrap();
    let out = run(sd, &p.url(), &["--json", "-a", "rent"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("preimage"), "{}", stderr(&out));
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(log.contains("\"unknown\""), "{log}");
}

#[test]
fn a_bad_node_configuration_is_a_local_error() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    std::fs::write(
        sd.join("config.toml"),
        "[lnd]\nurl = \"https://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = run(sd, &p.url(), &["--json", "--no-wait", "-a", "rent"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bad node configuration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn https_with_a_pinned_fingerprint() {
    let p = provider();
    let fpr = String::from_utf8(
        Command::new(control_bin())
            .args(["-c", p.cfg.to_str().unwrap(), "fingerprint"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fpr = fpr.trim();
    let url = format!("https://127.0.0.1:{}", p.https_port);
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    // Without a pin, or with the wrong one, nothing is trusted.
    let out = run(sd, &url, &["--json", "--no-wait", "rent"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        sd,
        &url,
        &[
            "--json",
            "--no-wait",
            "--fingerprint",
            &"00".repeat(32),
            "rent",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "{err}"
    );
    let out = run(
        sd,
        &url,
        &["--json", "--no-wait", "--fingerprint", fpr, "rent"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["payment"]["invoice"]["amount_sat"], 72_000);
    // The pin is remembered with the rental.
    let st = Command::new(staticip())
        .args(["--state-dir", sd.to_str().unwrap(), "--json", "status"])
        .output()
        .unwrap();
    assert_eq!(
        json(&st)["state"],
        "pending",
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// A one-record DNS server: answers `_staticwire._tcp.<domain>` SRV with localhost:`port`.
fn srv_dns(domain: &'static str, port: u16) -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..20 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let q = &buf[..n];
            // Question: name labels from offset 12 to the zero byte, then type and class.
            let Some(end) = q[12..].iter().position(|&b| b == 0).map(|p| 12 + p) else {
                continue;
            };
            let qtype = u16::from_be_bytes([q[end + 1], q[end + 2]]);
            let mut labels = Vec::new();
            let mut i = 12;
            while q[i] != 0 {
                let l = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_string());
                i += l + 1;
            }
            let name = labels.join(".");
            let hit = qtype == 33 && name == format!("_staticwire._tcp.{domain}");
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]); // id
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(hit), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end + 5]); // the question
            if hit {
                let target = b"\x09localhost\x00";
                r.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
                r.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
                r.extend_from_slice(&[0, 10, 0, 5]);
                r.extend_from_slice(&port.to_be_bytes());
                r.extend_from_slice(target);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

#[test]
fn a_bare_domain_is_found_through_its_srv_record() {
    let p = provider();
    let fpr = String::from_utf8(
        Command::new(control_bin())
            .args(["-c", p.cfg.to_str().unwrap(), "fingerprint"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dns = srv_dns("provider.test", p.https_port);
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(
        dir.path(),
        "provider.test",
        &["--json", "--no-wait", "--fingerprint", fpr.trim(), "rent"],
    )
    .env("STATICIP_NAMESERVER", dns.to_string())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["payment"]["invoice"]["amount_sat"], 72_000);
    let saved = std::fs::read_to_string(dir.path().join("rentals/default/rental.json")).unwrap();
    assert!(
        saved.contains(&format!("https://localhost:{}", p.https_port)),
        "{saved}"
    );
}

#[test]
fn a_30_is_rented_and_renewed_at_its_per_address_price() {
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path();
    let sock = sd.join("lightning-rpc");
    let asked = cln_standin(&sock, p.cfg.clone());
    std::fs::write(
        sd.join("config.toml"),
        format!("[autopay]\nmax_payment_sat = 150000\nmax_30_days_sat = 300000\n[cln]\nsocket = \"{}\"\n", sock.display()),
    )
    .unwrap();
    let out = run(
        sd,
        &p.url(),
        &["--json", "-a", "rent", "--prefix-len", "30"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["rental"]["state"], "active");
    assert_eq!(v["rental"]["prefix_len"], 30);
    assert_eq!(v["rental"]["address"], "203.0.113.4");
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    // 48,000 activation + 4 addresses × 24,000.
    assert!(log.contains("144000"), "{log}");
    let conf = std::fs::read_to_string(v["config_path"].as_str().unwrap()).unwrap();
    assert!(conf.contains("# Routed to you: 203.0.113.4/30"), "{conf}");

    let out = run(sd, &p.url(), &["--json", "-a", "renew", "--months", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(asked.lock().unwrap().len(), 2);
    let log = std::fs::read_to_string(sd.join("payments.log")).unwrap();
    assert!(log.contains("96000"), "{log}");

    // A prefix length the provider does not sell: refused by the server, nothing held.
    let sd2 = tempfile::tempdir().unwrap();
    let out = run(
        sd2.path(),
        &p.url(),
        &["--json", "rent", "--prefix-len", "28"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(json(&out)["error"].as_str().unwrap().contains("/28"));
}
