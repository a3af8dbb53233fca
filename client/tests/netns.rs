//! staticip end to end in network namespaces: the provider runs staticwire-control and
//! staticwire-router; the customer rents with staticip, the dev backend settles the invoice,
//! `staticip up` brings up the written wg-quick file with wireguard-go, and the internet reaches
//! the rented address. Needs root; says SKIPPED loudly without it.

#[path = "../../router/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use support::*;

fn sibling(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: cargo build --workspace",
        bin.display()
    );
    bin.display().to_string()
}

#[test]
fn staticip_rents_and_brings_up_the_tunnel() {
    if !root_or_skip("staticip_rents_and_brings_up_the_tunnel") {
        return;
    }
    let control = sibling("staticwire-control");
    let mut lab = Lab::new();
    lab.start_router();
    lab.provider_interface_up();
    let (cli, inet) = (lab.cli.clone(), lab.inet.clone());
    let cfg = lab.start_control(
        &control,
        "listen = \"198.18.0.1:8420\"",
        &[],
        "curl -sf http://198.18.0.1:8420/healthz",
    );

    // A rental name unique to this lab, so the interface name (sw-<name>) is too.
    let name = format!(
        "t{}",
        &lab.id[3..].chars().rev().take(8).collect::<String>()
    );
    let sip = format!(
        "env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go {} --state-dir {} --server http://198.18.0.1:8420 --name {name}",
        env!("CARGO_BIN_EXE_staticip"),
        lab.path("customer")
    );
    let rent: Value =
        serde_json::from_str(&lab.must_in(&cli, &format!("{sip} --json --no-wait rent"))).unwrap();
    let bolt11 = rent["payment"]["invoice"]["bolt11"]
        .as_str()
        .expect("invoice")
        .to_string();
    assert_eq!(rent["payment"]["invoice"]["amount_sat"], 72_000);
    must(&format!("{control} -c {cfg} dev-pay {bolt11} >/dev/null"));
    lab.wait_for(&format!(
        "ip netns exec {cli} {sip} --json status | grep -q '\"state\":\"active\"'"
    ));

    lab.must_in(&cli, &format!("{sip} up"));
    let conf =
        std::fs::read_to_string(lab.path(&format!("customer/rentals/{name}/sw-{name}.conf")))
            .unwrap();
    assert!(conf.contains(&format!("Address = {RENTED}/32")) && conf.contains("PrivateKey = "));
    assert!(
        lab.ping_ok(&inet, RENTED, None),
        "internet -> rented address through the wg-quick tunnel"
    );
    assert!(
        lab.udp_reaches(&cli, RENTED, &inet, INTERNET),
        "customer -> internet from the rented address"
    );
    lab.must_in(&cli, &format!("{sip} down"));
    assert!(
        !lab.ping_once(&inet, RENTED, None),
        "traffic after staticip down"
    );
}
