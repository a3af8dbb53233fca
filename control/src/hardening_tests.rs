//! Item 5 of issue 20, each through the part that does it: non-canonical key encodings
//! refused by the real binary; a router socket served by another user sent nothing; the
//! client behind a trusted reverse proxy, and only a trusted one; the web page's check of the
//! invoice's payee signature (its JavaScript run by Node on real invoices). The data dir's
//! permissions are `crate::datadir`'s tests; the terms' limits reaching held peers are
//! `deadline_tests`'.

use crate::feed::{Endpoints, FeedError, RouterLink};
use crate::testkit::{Builder, Process};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A client from `ip` that proves its keys' requests (PROTOCOL.md 3.1).
fn from(ip: &str) -> crate::proving::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::proving::Client::with(
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

async fn rent(
    p: &Process,
    c: &crate::proving::Client,
    key: &str,
    xff: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut r = c
        .post(format!("{}/v1/rentals", p.url()))
        .json(&json!({ "public_key": key }));
    if let Some((name, value)) = xff {
        r = r.header(name, value);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn key_of(bytes: [u8; 32]) -> String {
    STANDARD.encode(bytes)
}

/// A key with its top bit set names the same X25519 point as without it, and u ≥ 2^255 − 19
/// the same as u − p: before, each was a rental of its own of one customer's point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_key_encodings_are_refused_as_bad_public_key() {
    let p = Process::start("");
    let c = from("127.0.0.1");
    // A key the test client holds (the rent is proven), and two other spellings of its point.
    let canonical: [u8; 32] = STANDARD
        .decode(crate::proving::hold([7u8; 32]))
        .unwrap()
        .try_into()
        .unwrap();
    let mut top = canonical;
    top[31] |= 0x80;
    let mut over = [0xffu8; 32];
    over[31] = 0x7f;
    over[0] = 0xf6; // p + 9: the base point's u again
    for bad in [top, over] {
        let (st, v) = rent(&p, &c, &key_of(bad), None).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("bad_public_key")),
            "{v}"
        );
        let url_key = URL_SAFE.encode(bad);
        let r = c
            .get(format!("{}/v1/rentals/{url_key}", p.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let (st, v) = rent(&p, &c, &key_of(canonical), None).await;
    assert_eq!(st, 201, "{v}");
}

/// A stand-in "router" listening on `sock` as user `nobody` (a Python one-liner run with that
/// uid), writing whatever it is sent to `log`.
fn listener_as_nobody(sock: &Path, log: &Path) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(8)\n\
                  while True:\n  c,_=s.accept()\n  d=c.recv(65536)\n\
                  \x20 if d:\n    open(sys.argv[2],'ab').write(b'--\\n'+d)\n\
                  \x20 try:\n    c.sendall(b'errno=0\\n\\n')\n  except OSError:\n    pass\n  c.close()\n";
    let child = Command::new("python3")
        .args(["-c", script])
        .arg(sock)
        .arg(log)
        .uid(65534)
        .gid(65534)
        .spawn()
        .ok()?;
    // Listening, not only bound (the file exists from the bind on): a probe that sends
    // nothing is logged as nothing.
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Whoever listens at the router socket path is sent the router's private key: a listener of
/// another user (not root, not the control's own, not `socket_uid`) is refused before
/// anything is written, and one of the configured `socket_uid` is trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_socket_served_by_another_user_is_sent_nothing() {
    if !is_root() {
        eprintln!("SKIPPED a_router_socket_served_by_another_user_is_sent_nothing: needs root to run a listener as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Where nobody may make its socket and log.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let (sock, log) = (dir.path().join("wg.sock"), dir.path().join("received"));
    let Some(mut child) = listener_as_nobody(&sock, &log) else {
        eprintln!("SKIPPED a_router_socket_served_by_another_user_is_sent_nothing: no python3");
        return;
    };
    let mut link = RouterLink {
        name: "t".into(),
        socket: sock.clone(),
        listen_port: 51820,
        private_key: [0x42; 32],
        public_key: [2; 32],
        socket_uid: None,
    };
    let result = link
        .reconcile(Default::default(), &mut Endpoints::new(), "", false)
        .await;
    assert!(
        matches!(result, Err(FeedError::Untrusted(_, 65534))),
        "{result:?}"
    );
    // The router's configured user: trusted (the listener takes connections in turn, so the
    // refused one was read before this one).
    link.socket_uid = Some(65534);
    link.private_key = [0x43; 32];
    let result = link
        .reconcile(Default::default(), &mut Endpoints::new(), "", false)
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(result.is_ok(), "{result:?}");
    let got = std::fs::read_to_string(&log).unwrap();
    assert!(got.starts_with("--\nget=1"), "{got}");
    assert!(got.contains(&hex::encode([0x43u8; 32])), "{got}");
    assert!(
        !got.contains(&hex::encode([0x42u8; 32])),
        "the key went to the untrusted listener: {got}"
    );
}

/// Behind a reverse proxy every customer would be the proxy: `X-Forwarded-For` and
/// `Forwarded` are believed from `trusted_proxies` (the rightmost untrusted hop is the
/// client), for the caps on unpaid holds as for the rate limits, and ignored from anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_clients_count_only_from_trusted_proxies() {
    let p = Process::start(
        "[limits]\nmax_unpaid_per_client = 1\ninvoice_burst = 1000\nburst = 1000\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let proxy = from("127.0.0.1");
    let new = crate::abuse_tests::new_key;
    let xff = |v| Some(("x-forwarded-for", v));
    // Two customers behind the proxy: one hold each, not one for both.
    assert_eq!(rent(&p, &proxy, &new(), xff("192.0.2.7")).await.0, 201);
    assert_eq!(rent(&p, &proxy, &new(), xff("198.51.100.7")).await.0, 201);
    // The first one again (a forged hop on the left changes nothing): its cap.
    let (st, v) = rent(&p, &proxy, &new(), xff("10.9.9.9, 192.0.2.8")).await;
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("192.0.2.0/24"),
        "{v}"
    );
    // `Forwarded`, an IPv6 client with a port.
    let fwd = Some(("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=http"));
    assert_eq!(rent(&p, &proxy, &new(), fwd).await.0, 201);
    let (st, v) = rent(&p, &proxy, &new(), fwd).await;
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2001:db8:cafe::/48"),
        "{v}"
    );
    // A sender that is not a trusted proxy: its own address, whatever it forwards.
    let stranger = from("127.0.9.1");
    assert_eq!(rent(&p, &stranger, &new(), xff("192.0.2.77")).await.0, 201);
    let (st, v) = rent(&p, &stranger, &new(), xff("203.0.113.99")).await;
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.9.0/24"),
        "{v}"
    );
}

/// The page's BOLT11 check (control/web/bolt11.js, run by Node): real invoices of the dev
/// node recover its key as the payee; an invoice of another node, or one whose signed data
/// was changed (checksum made right again), does not; the BOLT11 specification's example
/// recovers its payee, and SHA-256 agrees with Node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_recovers_the_invoice_payee_from_its_signature() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED the_page_recovers_the_invoice_payee_from_its_signature: no node");
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = Builder::new("203.0.113.0/28").service(a.path());
    let other = Builder::new("203.0.113.0/28").service(b.path());
    let mut invoices = Vec::new();
    for _ in 0..3 {
        let r = ours
            .rent(&crate::abuse_tests::new_key(), None)
            .await
            .unwrap();
        invoices.push(r.invoice.bolt11);
    }
    let foreign = other
        .rent(&crate::abuse_tests::new_key(), None)
        .await
        .unwrap()
        .invoice
        .bolt11;
    let input = json!({
        "payee": ours.payee().unwrap(),
        "other_payee": other.payee().unwrap(),
        "invoices": invoices,
        "foreign": foreign,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/bolt11_test.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(input.to_string())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all passed"), "{text}");
}

/// The web page's proof of key possession under Node: the PROTOCOL.md 3.1 test vector through
/// WebCrypto's X25519 and through tweetnacl's, and the page's SHA-256 and HMAC against Node's.
#[test]
fn web_page_proof_matches_the_protocol_vector() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/proof_test.mjs");
    let out = Command::new("node").arg(&script).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("passed, 0 failed"), "{text}");
}
