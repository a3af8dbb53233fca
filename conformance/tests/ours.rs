//! The suite against our own server, staticwire-control with the dev Lightning backend and its
//! test hooks: over HTTP, over HTTPS pinned by fingerprint, paying through a command instead
//! of the hook, and with no way to pay at all (the paid checks are skipped, not failed).

use staticwire_control::testkit::{binary as control_bin, Process};
use std::process::{Command, Output};

/// Several whole runs against one server from one address: the invoice rate limit (20 at
/// once by default, which one run nearly spends) is raised so no run waits out a 429. Reverse
/// DNS is on, towards a DNS server that is not there (port 9 of loopback): the rules that need
/// no answer from it are checked (a real BIND is control/tests/netns_rdns.rs's).
fn control() -> Process {
    let key = std::env::temp_dir().join(format!("staticwire-ours-{}.key", std::process::id()));
    std::fs::write(
        &key,
        "key \"conformance\" { algorithm hmac-sha256; secret \"2hOEy+Ap3r1yjgfNVOL/zRWuXtd+fwn2LWUfqxLQpX4=\"; };\n",
    )
    .unwrap();
    Process::start(&format!(
        "[limits]\ninvoice_burst = 1000\nburst = 1000\n\
         [rdns]\nserver = \"127.0.0.1:9\"\ntsig_key_file = \"{}\"\n\
         [[rdns.zones]]\nzone = \"113.0.203.in-addr.arpa.\"\nnetwork = \"203.0.113.0/24\"\n",
        key.display()
    ))
}

fn conformance(args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_staticwire-conformance"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn outcomes(report: &serde_json::Value, outcome: &str) -> Vec<String> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| format!("{} {}", r["id"], r["detail"]))
        .collect()
}

#[test]
fn our_server_passes_over_http_and_pinned_https() {
    let c = control();
    let (out, report) = conformance(&[&format!("http://127.0.0.1:{}", c.port)]);
    assert_eq!(outcomes(&report, "fail"), Vec::<String>::new());
    assert_eq!(outcomes(&report, "skip"), Vec::<String>::new());
    assert_eq!(outcomes(&report, "warn"), Vec::<String>::new());
    assert!(out.status.success());
    assert!(report["rules"].as_array().unwrap().len() >= 40, "{report}");
    for id in ["life.back-payment", "pay.long-poll", "rent.bolt11"] {
        assert!(
            report["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == id && r["outcome"] == "pass"),
            "{id}"
        );
    }

    let fp = Command::new(control_bin())
        .args(["-c", c.cfg.to_str().unwrap(), "fingerprint"])
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap().trim().to_string();
    let https = format!(
        "https://127.0.0.1:{}",
        c.https_port.expect("HTTPS listener")
    );
    let (out, report) = conformance(&[&https, "--fingerprint", &fp]);
    assert_eq!(outcomes(&report, "fail"), Vec::<String>::new());
    assert!(out.status.success());

    // Another certificate's fingerprint: every rule fails on the transport, reported.
    let wrong = "00".repeat(32);
    let (out, report) = conformance(&[&https, "--fingerprint", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    let fails = outcomes(&report, "fail");
    assert!(
        fails
            .iter()
            .any(|f| f.contains("does not match the pinned")),
        "{fails:?}"
    );
}

#[test]
fn paying_through_a_command_and_not_paying_at_all() {
    let c = control();
    let url = format!("http://127.0.0.1:{}", c.port);
    let pay = format!("{} -c {} dev-pay", control_bin().display(), c.cfg.display());
    let (out, report) = conformance(&[&url, "--no-hooks", "--pay-command", &pay]);
    assert_eq!(outcomes(&report, "fail"), Vec::<String>::new());
    assert!(out.status.success());
    let skipped = outcomes(&report, "skip");
    assert_eq!(
        skipped.len(),
        1,
        "only the lifecycle needs the clock: {skipped:?}"
    );
    assert!(skipped[0].contains("life."), "{skipped:?}");

    let (out, report) = conformance(&[&url, "--no-hooks"]);
    assert!(out.status.success(), "skips are not failures");
    assert!(outcomes(&report, "skip").len() >= 5);
    assert_eq!(outcomes(&report, "fail"), Vec::<String>::new());
}
