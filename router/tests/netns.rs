//! End-to-end tests in network namespaces with real parts: a TUN device, wireguard-go as the
//! customer configured with `wg`, the stock `wg` and `wg-quick` tools, ping and iperf3.
//! They need root; without it each test says SKIPPED loudly.
//!
//! STATICWIRE_TEST_SERVER=wireguard-go runs the same tests against another server (the
//! metrics checks, which only our router has, are then skipped with a message).

mod support;

use support::*;

#[test]
fn tunnel_carries_ping_and_tcp_both_ways() {
    if !root_or_skip("tunnel_carries_ping_and_tcp_both_ways") {
        return;
    }
    let mut lab = Lab::new();
    let (cpub, ours) = lab.tunnel();
    let (cli, srv, inet) = (lab.cli.clone(), lab.srv.clone(), lab.inet.clone());
    // The mode the router chose (e.g. batch when io_uring is disabled) is the one expected.
    if let (true, Ok(expected)) = (ours, std::env::var("STATICWIRE_EXPECT_IO")) {
        assert_eq!(lab.router_io_mode().as_deref(), Some(expected.as_str()));
    }

    assert!(
        lab.ping_ok(&cli, INTERNET, Some(RENTED)),
        "customer -> internet"
    );
    assert!(
        lab.ping_ok(&inet, RENTED, None),
        "internet -> rented address"
    );

    let up = lab.tcp_transfer(&inet, INTERNET, &cli, Some(RENTED));
    assert!(up > 1e6, "upload carried {up} bit/s");
    let down = lab.tcp_transfer(&cli, RENTED, &inet, None);
    assert!(down > 1e6, "inbound carried {down} bit/s");

    // `wg show` against the server: a recent handshake and byte counters both ways.
    let dump = lab.must_in(&srv, &format!("wg show {} dump", lab.wgs));
    let peer: Vec<&str> = dump
        .lines()
        .find(|l| l.starts_with(&cpub))
        .expect("peer in dump")
        .split('\t')
        .collect();
    let (handshake, rx, tx): (u64, u64, u64) = (
        peer[4].parse().unwrap(),
        peer[5].parse().unwrap(),
        peer[6].parse().unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        handshake > now - 120 && handshake <= now + 1,
        "handshake at {handshake}"
    );
    assert!(rx > 1_000_000 && tx > 1_000_000, "rx {rx} tx {tx}");
    assert!(peer[2].starts_with("198.18.0.2:"), "endpoint {}", peer[2]);
    assert_eq!(peer[3], format!("{RENTED}/32"));

    // showconf -> syncconf round trip keeps the tunnel as it is.
    let conf = lab.path("srv.conf");
    lab.must_in(
        &srv,
        &format!(
            "wg showconf {} > {conf} && wg syncconf {} {conf}",
            lab.wgs, lab.wgs
        ),
    );
    assert!(lab.ping_ok(&cli, INTERNET, Some(RENTED)), "after syncconf");

    if !ours {
        eprintln!("metrics checks skipped: STATICWIRE_TEST_SERVER is not our router");
        return;
    }
    let m = lab.metrics();
    let key = format!("public_key=\"{cpub}\"");
    let sent = sample(&m, "wireguard_sent_bytes_total", &[&key]).expect("sent series");
    let received = sample(&m, "wireguard_received_bytes_total", &[&key]).expect("received series");
    let hs = sample(&m, "wireguard_latest_handshake_seconds", &[&key]).expect("handshake series");
    assert!(
        sent > 1e6 && received > 1e6 && hs > 1.7e9,
        "{sent} {received} {hs}"
    );
    assert!(m.contains(&format!("allowed_ips=\"{RENTED}/32\"")));
    assert_eq!(sample(&m, "wireguard_peers", &[]), Some(1.0));
    // The customer's session state was made by its handshake and is kept while in use.
    assert_eq!(
        sample(&m, "staticwire_router_active_sessions", &[]),
        Some(1.0)
    );
    assert!(sample(&m, "staticwire_router_sessions_total", &["event=\"made\""]) >= Some(1.0));
    assert!(
        sample(
            &m,
            "staticwire_router_packets_total",
            &["path=\"udp_to_tun\""]
        )
        .unwrap()
            > 100.0
    );
    assert!(
        sample(
            &m,
            "staticwire_router_packets_total",
            &["path=\"tun_to_udp\""]
        )
        .unwrap()
            > 100.0
    );
}

/// Bulk TCP both ways, byte for byte: the offload path splits the kernel's super-packets and
/// coalesces decrypted segments, so a wrong sequence number, length or checksum would corrupt or
/// stall the transfer.
#[test]
fn bulk_transfers_arrive_intact_both_ways() {
    if !root_or_skip("bulk_transfers_arrive_intact_both_ways") {
        return;
    }
    let mut lab = Lab::new();
    let (_, ours) = lab.tunnel();
    let (cli, inet) = (lab.cli.clone(), lab.inet.clone());
    assert!(lab.ping_ok(&cli, INTERNET, Some(RENTED)), "tunnel up");
    let dir = lab.path("www");
    must(&format!(
        "mkdir -p {dir} && head -c 48000000 /dev/urandom > {dir}/blob"
    ));
    let want = must(&format!("sha256sum < {dir}/blob"));
    let serve = |lab: &mut Lab, ns: &str, addr: &str, log: &str| {
        lab.spawn_in(
            ns,
            "python3",
            &["-m", "http.server", "-b", addr, "-d", &dir, "8000"],
            log,
        );
        let probe = format!("bash -c \"</dev/tcp/{addr}/8000\"");
        for _ in 0..50 {
            if lab.ex(ns, &probe).status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("http server on {addr} did not start");
    };
    // Inbound: the internet serves, the customer downloads (the router reads TSO from TUN).
    serve(&mut lab, &inet, INTERNET, "http-inet.log");
    let got = lab.must_in(
        &cli,
        &format!(
            "curl -sf --max-time 60 --interface {RENTED} http://{INTERNET}:8000/blob | sha256sum"
        ),
    );
    assert_eq!(got, want, "inbound transfer corrupted");
    // Upload: the customer serves, the internet downloads (the router coalesces into TUN).
    serve(&mut lab, &cli, RENTED, "http-cli.log");
    let got = lab.must_in(
        &inet,
        &format!("curl -sf --max-time 60 http://{RENTED}:8000/blob | sha256sum"),
    );
    assert_eq!(got, want, "upload corrupted");

    // With offloads (the batched modes), bulk TCP took the offload paths: TUN reads held
    // super-packets, TUN writes coalesced segments, and UDP sends carried GSO runs.
    let io = std::env::var("STATICWIRE_ROUTER_IO").unwrap_or_else(|_| "auto".into());
    let args = std::env::var("STATICWIRE_ROUTER_ARGS").unwrap_or_default();
    if !ours || io == "simple" || args.contains("--no-offload") {
        return;
    }
    let m = lab.metrics();
    let sum = |name: &str, what: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("what=\"{what}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for what in ["tun_read", "tun_write", "udp_send"] {
        let ops = sum("staticwire_router_io_operations_total", what);
        let packets = sum("staticwire_router_io_packets_total", what);
        assert!(ops > 0.0, "no {what} operations counted:\n{m}");
        assert!(
            packets > 2.0 * ops,
            "{what}: {packets} packets in {ops} operations, offloads unused"
        );
    }
}

#[test]
fn spoofed_source_is_dropped_and_counted() {
    if !root_or_skip("spoofed_source_is_dropped_and_counted") {
        return;
    }
    let mut lab = Lab::new();
    let (_, ours) = lab.tunnel();
    let (cli, inet) = (lab.cli.clone(), lab.inet.clone());
    assert!(lab.ping_ok(&cli, INTERNET, Some(RENTED)));

    // The customer claims an address it did not rent; its WireGuard encrypts it happily.
    lab.must_in(
        &cli,
        &format!("ip addr add 203.0.113.99/32 dev {}", lab.wgc),
    );
    assert!(
        !lab.udp_reaches(&cli, "203.0.113.99", &inet, INTERNET),
        "a spoofed datagram reached the internet"
    );
    assert!(
        lab.udp_reaches(&cli, RENTED, &inet, INTERNET),
        "the same datagram from the rented address must arrive (control)"
    );
    assert!(
        lab.ping_ok(&cli, INTERNET, Some(RENTED)),
        "the real address still works"
    );

    if ours {
        let spoofed = sample(
            &lab.metrics(),
            "staticwire_router_dropped_packets_total",
            &["reason=\"spoofed_source\""],
        );
        assert!(
            spoofed.unwrap_or(0.0) >= 5.0,
            "spoofed_source = {spoofed:?}"
        );
    } else {
        eprintln!("metrics checks skipped: STATICWIRE_TEST_SERVER is not our router");
    }
}

#[test]
fn removing_the_peer_stops_traffic_at_once() {
    if !root_or_skip("removing_the_peer_stops_traffic_at_once") {
        return;
    }
    let mut lab = Lab::new();
    let (cpub, _) = lab.tunnel();
    let (cli, srv, inet) = (lab.cli.clone(), lab.srv.clone(), lab.inet.clone());
    assert!(lab.ping_ok(&cli, INTERNET, Some(RENTED)));
    lab.must_in(&srv, &format!("wg set {} peer {cpub} remove", lab.wgs));
    assert!(
        !lab.ping_once(&cli, INTERNET, Some(RENTED)),
        "upload after removal"
    );
    assert!(!lab.ping_once(&inet, RENTED, None), "inbound after removal");
    let dump = lab.must_in(&srv, &format!("wg show {} peers", lab.wgs));
    assert!(dump.trim().is_empty(), "peers left: {dump}");

    // Admitting it again (what staticwire-control does on renewal) restores traffic once the
    // customer's WireGuard notices its old session gets no answers and handshakes anew
    // (after about 15 s, as against any WireGuard server).
    lab.must_in(
        &srv,
        &format!("wg set {} peer {cpub} allowed-ips {RENTED}/32", lab.wgs),
    );
    assert!(
        lab.ping_within(&cli, INTERNET, Some(RENTED), 40),
        "after re-admission"
    );
}

#[test]
fn wg_quick_brings_up_and_down_a_config_file() {
    if !root_or_skip("wg_quick_brings_up_and_down_a_config_file") {
        return;
    }
    let lab = Lab::new();
    let (skey, spub) = lab.keypair("srv");
    let (ckey, cpub) = lab.keypair("cli");
    let private = std::fs::read_to_string(&skey).unwrap();
    let conf = lab.path(&format!("{}.conf", lab.wgs));
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 203.0.113.1/32\n\n\
             [Peer]\nPublicKey = {cpub}\nAllowedIPs = {RENTED}/32\n",
            private.trim()
        ),
    )
    .unwrap();
    let srv = lab.srv.clone();
    lab.must_in(
        &srv,
        &format!(
            "WG_QUICK_USERSPACE_IMPLEMENTATION={} wg-quick up {conf}",
            router_bin()
        ),
    );
    let show = lab.must_in(&srv, &format!("wg show {}", lab.wgs));
    assert!(
        show.contains(&cpub) && show.contains("listening port: 51820"),
        "{show}"
    );
    let route = lab.must_in(&srv, &format!("ip route show dev {}", lab.wgs));
    assert!(route.contains(RENTED), "wg-quick added no route: {route}");

    lab.start_customer(&spub, &ckey);
    assert!(
        lab.ping_ok(&lab.cli, INTERNET, Some(RENTED)),
        "traffic through the wg-quick tunnel"
    );

    lab.must_in(&srv, &format!("wg-quick down {conf}"));
    lab.wait_for(&format!("! test -e /var/run/wireguard/{}.sock", lab.wgs));
    let links = lab.must_in(&srv, "ip -o link show");
    assert!(!links.contains(&lab.wgs), "interface left behind: {links}");
    lab.wait_for(&format!("test -z \"$(ip netns pids {srv})\""));
}

#[test]
fn sigterm_removes_socket_and_interface() {
    if !root_or_skip("sigterm_removes_socket_and_interface") {
        return;
    }
    let lab = Lab::new();
    let srv = lab.srv.clone();
    // Daemon mode, as wg-quick starts it: the parent returns once the interface exists.
    lab.must_in(&srv, &format!("{} {}", router_bin(), lab.wgs));
    let links = lab.must_in(&srv, "ip -o link show");
    assert!(links.contains(&lab.wgs), "{links}");
    lab.must_in(
        &srv,
        &format!("test -S /var/run/wireguard/{}.sock", lab.wgs),
    );
    lab.must_in(
        &srv,
        &format!("pkill -TERM -f '{} {}$'", router_bin(), lab.wgs),
    );
    lab.wait_for(&format!("! test -e /var/run/wireguard/{}.sock", lab.wgs));
    lab.wait_for(&format!("! ip -n {srv} link show {} 2>/dev/null", lab.wgs));
}
