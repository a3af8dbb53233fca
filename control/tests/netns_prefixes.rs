//! An IPv4 /30 and an IPv6 /64 rented through the control and carried by the router, in network
//! namespaces: the customer (wireguard-go) uses addresses from both prefixes; the "internet"
//! reaches them with ping, ping6 and TCP, the customer's outbound traffic leaves from them, and
//! packets with a source outside the rental's prefixes are dropped. Needs root; says SKIPPED
//! loudly without it.

#[path = "../../router/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::*;

const API: &str = "http://198.18.0.1:8420";
/// The provider's and the internet host's IPv6 addresses on their link.
const SRV6: &str = "2001:db8:ffff::1";
const INET6: &str = "2001:db8:ffff::2";
const POOL6: &str = "2001:db8:100::/48";

fn control_bin() -> String {
    staticwire_control::testkit::binary().display().to_string()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Sends UDP from `src` in `from_ns` to `dst` in `to_ns` (IPv4 or IPv6); true if any arrived.
fn udp_reaches(lab: &Lab, from_ns: &str, src: &str, to_ns: &str, dst: &str) -> bool {
    let family = if dst.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let listener = Command::new("ip")
        .args(["netns", "exec", to_ns, "timeout", "5", "python3", "-c"])
        .arg(format!(
            "import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); \
             s.bind(('{dst}', 9998)); s.settimeout(3); print(s.recvfrom(100)[0].decode())"
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start listener");
    std::thread::sleep(Duration::from_millis(500));
    lab.must_in(
        from_ns,
        &format!(
            "python3 -c \"import socket, time\ns = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
             s.bind(('{src}', 0))\nfor _ in range(5):\n    s.sendto(b'probe', ('{dst}', 9998)); time.sleep(0.1)\""
        ),
    );
    let out = listener.wait_with_output().expect("listener");
    String::from_utf8_lossy(&out.stdout).contains("probe")
}

/// The n-th address of an IPv4 network given as `a.b.c.d/len`.
fn v4_at(net: &str, n: u32) -> String {
    let base: std::net::Ipv4Addr = net.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(base) + n).to_string()
}

/// The address `suffix` (e.g. 1) inside an IPv6 network given as `x::/len`.
fn v6_at(net: &str, suffix: u128) -> String {
    let base: std::net::Ipv6Addr = net.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv6Addr::from(u128::from(base) + suffix).to_string()
}

#[test]
fn a_30_and_a_64_carry_traffic_both_ways_and_spoofed_sources_are_dropped() {
    if !root_or_skip("a_30_and_a_64_carry_traffic_both_ways_and_spoofed_sources_are_dropped") {
        return;
    }
    let mut lab = Lab::new();
    let (cli, srv, inet) = (lab.cli.clone(), lab.srv.clone(), lab.inet.clone());
    let (wgs, wgc, id) = (lab.wgs.clone(), lab.wgc.clone(), lab.id.clone());
    // IPv6 between the provider and the internet host; the internet routes the pool to the
    // provider, the provider routes it into the router.
    lab.must_in(
        &srv,
        &format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 && ip -6 addr add {SRV6}/64 dev {id}y nodad"
        ),
    );
    lab.must_in(
        &inet,
        &format!("ip -6 addr add {INET6}/64 dev {id}x nodad && ip -6 route add {POOL6} via {SRV6}"),
    );
    lab.start_router();
    lab.provider_interface_up();
    lab.must_in(&srv, &format!("ip -6 route replace {POOL6} dev {wgs}"));

    let cfg = lab.path("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\ninvoice_poll_millis = 100\nlisten = \"198.18.0.1:8420\"\n\
             reconcile_interval_secs = 1\n\
             [[routers]]\nname = \"{wgs}\"\nsocket = \"/var/run/wireguard/{wgs}.sock\"\n\
             endpoint = \"{PROVIDER_UNDERLAY}:51820\"\npools = [\"203.0.113.0/24\"]\n\
             ipv6_pool = \"{POOL6}\"\n\
             [terms]\nipv6_only_monthly_sat = 10000\n",
            lab.path("control")
        ),
    )
    .unwrap();
    lab.spawn_in(
        &srv,
        &control_bin(),
        &["-c", &cfg, "serve", "--dev-clock"],
        "control.log",
    );
    lab.wait_for(&format!("ip netns exec {cli} curl -sf {API}/healthz"));

    // The customer rents a /30 with IPv6 and pays.
    let (ckey, cpub) = lab.keypair("customer");
    assert_eq!(
        staticwire_control::proving::hold_base64(&std::fs::read_to_string(&ckey).unwrap()),
        cpub
    );
    // Each request proves the customer's key (PROTOCOL.md 3.1), made here with its key.
    let terms = json(&lab.must_in(&cli, &format!("curl -sS -f {API}/v1/terms")));
    let auth = |method: &str, target: &str, body: &str| {
        staticwire_control::proving::authorization(&terms, method, target, body.as_bytes())
            .expect("a proof of the customer's key")
    };
    let body = format!("{{\"public_key\":\"{cpub}\",\"prefix_len\":30}}");
    let rent = json(&lab.must_in(
        &cli,
        &format!(
            "curl -sS -f -X POST -H 'content-type: application/json' -H 'Authorization: {}' \
             -d '{body}' {API}/v1/rentals",
            auth("POST", "/v1/rentals", &body)
        ),
    ));
    assert_eq!(rent["rental"]["prefix_len"], 30, "{rent}");
    must(&format!(
        "{} -c {cfg} dev-pay {} >/dev/null",
        control_bin(),
        rent["invoice"]["bolt11"].as_str().unwrap()
    ));
    let url_key = cpub.replace('+', "-").replace('/', "_");
    let target = format!("/v1/rentals/{url_key}/config");
    let conf = json(&lab.must_in(
        &cli,
        &format!(
            "curl -sS -f -H 'Authorization: {}' {API}{target}",
            auth("GET", &target, "")
        ),
    ));
    let nets: Vec<String> = conf["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(nets.len(), 2, "{conf}");
    let (v4, v6) = (&nets[0], &nets[1]);
    assert!(v4.ends_with("/30") && v6.ends_with("/64"), "{nets:?}");
    lab.wait_for(&format!(
        "ip netns exec {srv} wg show {wgs} allowed-ips | grep -q '{v6}'"
    ));
    let allowed = lab.must_in(&srv, &format!("wg show {wgs} allowed-ips"));
    assert!(allowed.contains(v4.as_str()), "{allowed}");

    // The customer: the first and third address of the /30, ::1 and ::abcd of the /64, and
    // two addresses that are not its own, for spoofing.
    let (a1, a3) = (v4_at(v4, 0), v4_at(v4, 2));
    let (b1, b2) = (v6_at(v6, 1), v6_at(v6, 0xabcd));
    let spoof4 = v4_at(v4, 4);
    let spoof6 = v6_at(v6, 1 << 64);
    let spub = conf["server_public_key"].as_str().unwrap();
    lab.must_in(&cli, &format!("wireguard-go {wgc} 2>/dev/null"));
    lab.must_in(
        &cli,
        &format!(
            "wg set {wgc} private-key {ckey} peer {spub} endpoint {PROVIDER_UNDERLAY}:51820 \
             allowed-ips 198.19.0.0/24,2001:db8:ffff::/64 persistent-keepalive 25 && \
             ip addr add {a1}/32 dev {wgc} && ip addr add {a3}/32 dev {wgc} && \
             ip addr add {spoof4}/32 dev {wgc} && \
             ip -6 addr add {b1}/128 dev {wgc} nodad && ip -6 addr add {b2}/128 dev {wgc} nodad && \
             ip -6 addr add {spoof6}/128 dev {wgc} nodad && \
             ip link set {wgc} mtu 1420 up && \
             ip route add 198.19.0.0/24 dev {wgc} src {a1} && \
             ip -6 route add 2001:db8:ffff::/64 dev {wgc} src {b1}"
        ),
    );

    // IPv4 /30: both ways, from and to more than its first address.
    assert!(
        lab.ping_ok(&cli, INTERNET, Some(&a1)),
        "customer -> internet from {a1}"
    );
    assert!(
        lab.ping_ok(&cli, INTERNET, Some(&a3)),
        "customer -> internet from {a3}"
    );
    assert!(lab.ping_ok(&inet, &a1, None), "internet -> {a1}");
    assert!(lab.ping_ok(&inet, &a3, None), "internet -> {a3}");
    assert!(
        lab.tcp_transfer(&cli, &a3, &inet, None) > 1e6,
        "TCP internet -> {a3}"
    );

    // IPv6 /64: ping6 and TCP from the internet to it, the customer's traffic out of it.
    assert!(lab.ping_ok(&inet, &b1, None), "internet -> {b1}");
    assert!(lab.ping_ok(&inet, &b2, None), "internet -> {b2}");
    assert!(
        lab.ping_ok(&cli, INET6, Some(&b2)),
        "customer -> internet from {b2}"
    );
    assert!(
        lab.tcp_transfer(&cli, &b1, &inet, None) > 1e6,
        "TCP internet -> {b1}"
    );
    assert!(
        lab.tcp_transfer(&inet, INET6, &cli, Some(&b2)) > 1e6,
        "TCP customer -> internet from {b2}"
    );

    // Spoofed sources: the same tunnel, addresses outside the rental: dropped at the router.
    assert!(
        udp_reaches(&lab, &cli, &a3, &inet, INTERNET),
        "own /30 passes"
    );
    assert!(
        !udp_reaches(&lab, &cli, &spoof4, &inet, INTERNET),
        "{spoof4} got through"
    );
    assert!(udp_reaches(&lab, &cli, &b2, &inet, INET6), "own /64 passes");
    assert!(
        !udp_reaches(&lab, &cli, &spoof6, &inet, INET6),
        "{spoof6} got through"
    );
}
