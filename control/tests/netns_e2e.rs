//! The whole provider side for real, in network namespaces: staticwire-control and
//! staticwire-router on the provider, a customer with wireguard-go, a host on the "internet".
//! rent → dev-pay → tunnel passes traffic → clock past paid-until → peer removed, traffic stops →
//! renew with back payments → traffic again → router killed and restarted → the control
//! re-admits the peer by itself. Needs root; says SKIPPED loudly without it.

#[path = "../../router/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

const API: &str = "http://198.18.0.1:8420";

fn control_bin() -> String {
    staticwire_control::testkit::binary().display().to_string()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The customer's HTTP calls go over the underlay, from the customer's namespace.
fn api(lab: &Lab, method: &str, path: &str, body: Option<&str>) -> Value {
    let data = body
        .map(|b| format!("-H 'content-type: application/json' -d '{b}'"))
        .unwrap_or_default();
    // The proof of key possession (PROTOCOL.md 3.1), made here with the customer's key.
    let terms = json(&lab.must_in(&lab.cli, &format!("curl -sS -f {API}/v1/terms")));
    let auth = staticwire_control::proving::authorization(
        &terms,
        method,
        path,
        body.unwrap_or("").as_bytes(),
    )
    .map(|a| format!("-H 'Authorization: {a}'"))
    .unwrap_or_default();
    json(&lab.must_in(
        &lab.cli,
        &format!("curl -sS -f -X {method} {data} {auth} {API}{path}"),
    ))
}

fn peers(lab: &Lab) -> String {
    lab.must_in(&lab.srv, &format!("wg show {} peers", lab.wgs))
}

/// Polls until `f` holds, at most `secs`.
fn until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn dev_pay(cfg: &str, bolt11: &str) -> Instant {
    must(&format!(
        "{} -c {cfg} dev-pay {bolt11} >/dev/null",
        control_bin()
    ));
    Instant::now()
}

#[test]
fn rent_pay_tunnel_lapse_renew_and_router_restart() {
    if !root_or_skip("rent_pay_tunnel_lapse_renew_and_router_restart") {
        return;
    }
    let mut lab = Lab::new();
    let router = lab.start_router();
    lab.provider_interface_up();
    let cfg = lab.start_control(
        &control_bin(),
        "listen = \"198.18.0.1:8420\"\nreconcile_interval_secs = 1",
        &["--dev-clock"],
        &format!("curl -sf {API}/healthz"),
    );
    let srv = lab.srv.clone();

    // The customer rents with its own key.
    let (ckey, cpub) = lab.keypair("customer");
    assert_eq!(
        staticwire_control::proving::hold_base64(&std::fs::read_to_string(&ckey).unwrap()),
        cpub
    );
    let rent = api(
        &lab,
        "POST",
        "/v1/rentals",
        Some(&format!("{{\"public_key\":\"{cpub}\"}}")),
    );
    assert_eq!(rent["rental"]["address"], RENTED);
    assert_eq!(rent["invoice"]["amount_sat"], 72_000);
    assert!(!peers(&lab).contains(&cpub), "admitted before payment");

    let paid = dev_pay(&cfg, rent["invoice"]["bolt11"].as_str().unwrap());
    assert!(
        until(5, || peers(&lab).contains(&cpub)),
        "not admitted after payment"
    );
    eprintln!(
        "settlement -> router admission: {} ms",
        paid.elapsed().as_millis()
    );

    let url_key = cpub.replace('+', "-").replace('/', "_");
    let conf = api(&lab, "GET", &format!("/v1/rentals/{url_key}/config"), None);
    assert_eq!(conf["endpoint"], format!("{PROVIDER_UNDERLAY}:51820"));
    lab.start_customer(conf["server_public_key"].as_str().unwrap(), &ckey);
    let (cli, inet) = (lab.cli.clone(), lab.inet.clone());
    assert!(
        lab.ping_ok(&cli, INTERNET, Some(RENTED)),
        "customer -> internet"
    );
    assert!(
        lab.ping_ok(&inet, RENTED, None),
        "internet -> rented address"
    );
    assert!(lab.tcp_transfer(&inet, INTERNET, &cli, Some(RENTED)) > 1e6);

    // A month and a day later: lapsed, removed from the router, traffic stops.
    lab.must_in(&srv, &format!("curl -sf -X POST -H 'content-type: application/json' -d '{{\"seconds\": {}}}' {API}/v1/dev/clock", 31 * 86_400));
    assert!(
        until(5, || !peers(&lab).contains(&cpub)),
        "lapsed peer still admitted"
    );
    assert!(!lab.ping_once(&inet, RENTED, None), "traffic after lapse");
    let st = api(&lab, "GET", &format!("/v1/rentals/{url_key}"), None);
    assert_eq!(st["state"], "lapsed");
    assert_eq!(st["amount_due_sat"], 48_000);

    // Renew one month: back payment included, 48,000 sat; traffic flows again.
    let renew = api(
        &lab,
        "POST",
        &format!("/v1/rentals/{url_key}/renewals"),
        Some("{\"months\":1}"),
    );
    assert_eq!(renew["invoice"]["amount_sat"], 48_000);
    let paid = dev_pay(&cfg, renew["invoice"]["bolt11"].as_str().unwrap());
    assert!(
        until(5, || peers(&lab).contains(&cpub)),
        "not re-admitted after renewal"
    );
    eprintln!(
        "renewal settlement -> router admission: {} ms",
        paid.elapsed().as_millis()
    );
    assert!(
        lab.ping_within(&inet, RENTED, None, 40),
        "traffic after renewal"
    );

    // The router crashes and comes back empty; the control re-admits without help.
    let sock = format!("/var/run/wireguard/{}.sock", lab.wgs);
    let inode = |p: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
    };
    let old_socket = inode(&sock);
    eprintln!("socket {sock} before the kill: {old_socket:?}");
    lab.kill(router);
    lab.wait_for(&format!("! ip -n {srv} link show {} 2>/dev/null", lab.wgs));
    lab.start_router();
    // Measured from the moment the new router's socket exists (a killed router leaves its
    // old socket file behind, so wait for a new one).
    assert!(
        until(10, || inode(&sock).is_some_and(|i| Some(i) != old_socket)),
        "no new socket"
    );
    let appeared = Instant::now();
    assert!(
        until(10, || peers(&lab).contains(&cpub)),
        "not re-admitted after router restart"
    );
    let readmitted = appeared.elapsed();
    eprintln!(
        "re-admitted {} ms after the restarted router's socket appeared",
        readmitted.as_millis()
    );
    assert!(
        readmitted < Duration::from_secs(1),
        "re-admission took {readmitted:?}"
    );
    lab.provider_interface_up();
    assert!(
        lab.ping_within(&cli, INTERNET, Some(RENTED), 40),
        "traffic after router restart"
    );
    let dump = lab.must_in(&srv, &format!("wg show {} allowed-ips", lab.wgs));
    assert!(dump.contains(&format!("{RENTED}/32")), "{dump}");
}
