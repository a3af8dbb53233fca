//! The original client's path end to end in namespaces: AddCredit over pinned HTTPS, payment
//! through the dev backend, GetConf turned into a wg-quick file by the real `wireguard_tools`
//! package (WireguardConfig.from_dict), that file brought up with wg-quick + wireguard-go, and
//! the internet reaching the rented address. Needs root and STATICWIRE_COMPAT_PYTHON (a Python
//! with requests, requests-toolbelt, bolt11 and wireguard-tools; ops/test.sh makes one).

#[path = "../../router/tests/support/mod.rs"]
mod support;

use support::*;

#[test]
fn original_client_rents_and_its_wireguard_tools_config_works() {
    if !root_or_skip("original_client_rents_and_its_wireguard_tools_config_works") {
        return;
    }
    let Ok(python) = std::env::var("STATICWIRE_COMPAT_PYTHON") else {
        eprintln!("\n!!!!! SKIPPED original_client_rents_and_its_wireguard_tools_config_works: set STATICWIRE_COMPAT_PYTHON (ops/test.sh does) !!!!!\n");
        return;
    };
    let control = &staticwire_control::testkit::binary().display().to_string();
    let mut lab = Lab::new();
    lab.start_router();
    lab.provider_interface_up();
    let (cli, inet) = (lab.cli.clone(), lab.inet.clone());
    let cfg = lab.start_control(
        control,
        "listen = \"127.0.0.1:8420\"\n[compat]\nlisten = \"198.18.0.1:8443\"",
        &[],
        "curl -skf https://198.18.0.1:8443/healthz",
    );
    let fpr = must(&format!("{control} -c {cfg} fingerprint"))
        .trim()
        .to_string();

    let conf = lab.path(&format!("{}q.conf", lab.id));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/protocol_test.py");
    let address = lab.must_in(
        &cli,
        &format!(
            "{python} {script} --customer https://198.18.0.1:8443 {fpr} {control} {cfg} {conf}"
        ),
    );
    assert_eq!(address.trim(), RENTED);
    lab.must_in(
        &cli,
        &format!("WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go wg-quick up {conf}"),
    );
    assert!(
        lab.ping_ok(&inet, RENTED, None),
        "internet -> rented address through the wireguard_tools config"
    );
    assert!(
        lab.udp_reaches(&cli, RENTED, &inet, INTERNET),
        "customer -> internet from the rented address"
    );
    lab.must_in(&cli, &format!("wg-quick down {conf}"));
}
