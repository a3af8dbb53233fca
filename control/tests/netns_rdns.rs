//! Reverse DNS for real, in network namespaces: a BIND 9 started here (TSIG key made by
//! `tsig-keygen`, an RFC 2317 classless zone for the /27 pool with its parent's CNAMEs, an IPv6
//! reverse zone, and the customers' forward zone), staticwire-router and staticwire-control on
//! the provider with its tunnel listener, and two customers with wireguard-go: one renting a
//! /32 with an IPv6 prefix, a "stranger" renting a /30. The customer sets its PTR through its
//! own tunnel (no proof) and its IPv6 PTR with a proof; `dig -x` at the server answers them; a
//! name whose A record points elsewhere is refused; the stranger, from its tunnel, cannot set
//! the other's PTR, but sets its own /30's; BIND restarted with empty zones is repaired by the
//! next compare; a lapse brings the provider's defaults back. Needs root (says SKIPPED loudly
//! without it); fails when BIND is not installed (ops/test.sh installs it).

#[path = "../../router/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

const API: &str = "http://198.18.0.1:8420";
/// The tunnel listener: on the provider's side of the tunnels, reached through them.
const TUNNEL_API: &str = "http://198.18.2.1:8421";
/// BIND, on the provider host (loopback of its namespace).
const DNS: &str = "198.18.53.1";
const METRICS: &str = "127.0.0.1:9587";
const POOL6: &str = "2001:db8:100::/48";
const KEY_NAME: &str = "staticwire-rdns";

fn control_bin() -> String {
    staticwire_control::testkit::binary().display().to_string()
}

/// The customer's tool, built beside this test (`cargo build -p staticip`; the workspace test
/// run builds it).
fn staticip() -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("staticip");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p staticip",
        bin.display()
    );
    bin.display().to_string()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn url_key(k: &str) -> String {
    k.replace('+', "-").replace('/', "_")
}

/// Polls until `f` holds, at most `secs`.
fn until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One HTTP request with curl from namespace `ns`: (status, body). `prove` adds the proof of
/// key possession made with the test's keyring for the server at `base`.
fn http(
    lab: &Lab,
    ns: &str,
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    prove: bool,
) -> (u16, Value) {
    let data = body
        .map(|b| format!("-H 'content-type: application/json' --data-raw '{b}'"))
        .unwrap_or_default();
    let auth = if prove {
        let terms = json(&lab.must_in(ns, &format!("curl -sS -f {base}/v1/terms")));
        staticwire_control::proving::authorization(
            &terms,
            method,
            path,
            body.unwrap_or("").as_bytes(),
        )
        .map(|a| format!("-H 'Authorization: {a}'"))
        .expect("a proof for a held key")
    } else {
        String::new()
    };
    let out = lab.must_in(
        ns,
        &format!("curl -sS -m 20 -w '\\n%{{http_code}}' -X {method} {data} {auth} {base}{path}"),
    );
    let (body, code) = out.trim_end().rsplit_once('\n').expect("status line");
    let v = if body.is_empty() {
        Value::Null
    } else {
        json(body)
    };
    (code.trim().parse().expect("status"), v)
}

/// What `dig -x` gets from the server, with the CNAME of the RFC 2317 parent zone followed as a
/// resolver would (an authoritative-only server answers the CNAME alone).
fn dig_x(lab: &Lab, ip: &str) -> String {
    let first = lab.must_in(
        &lab.srv,
        &format!("dig +tries=1 +time=2 +short -x {ip} @{DNS}"),
    );
    let mut out = first.clone();
    for target in first.lines().filter(|l| l.ends_with(".in-addr.arpa.")) {
        out.push_str(&lab.must_in(
            &lab.srv,
            &format!("dig +tries=1 +time=2 +short PTR {target} @{DNS}"),
        ));
    }
    out
}

fn sample_metric(lab: &Lab, name: &str) -> f64 {
    let text = lab.must_in(&lab.srv, &format!("curl -sf http://{METRICS}/metrics"));
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A namespace beside the lab's (the stranger), deleted on drop, also after a failure.
struct ExtraNs {
    ns: String,
    wg: String,
}

impl Drop for ExtraNs {
    fn drop(&mut self) {
        let ns = &self.ns;
        let _ = run(&format!(
            "for p in $(ip netns pids {ns} 2>/dev/null); do kill $p 2>/dev/null; done; sleep 0.2; \
             for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p 2>/dev/null; done; \
             ip netns del {ns} 2>/dev/null"
        ));
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.wg));
    }
}

const SOA: &str = "$TTL 300\n@ IN SOA ns.rdns.example. hostmaster.rdns.example. 1 3600 600 86400 300\n@ IN NS ns.rdns.example.\n";

/// Writes the zone files: the RFC 2317 parent with a CNAME per address of the /29 (the
/// upstream's part, static), and the control's zones empty.
fn write_zones(dir: &std::path::Path) {
    let mut parent = SOA.to_string();
    for d in 0..32 {
        parent.push_str(&format!("{d} IN CNAME {d}.0-27.113.0.203.in-addr.arpa.\n"));
    }
    std::fs::write(dir.join("parent.zone"), parent).unwrap();
    for z in ["child.zone", "v6.zone"] {
        std::fs::write(dir.join(z), SOA).unwrap();
        let _ = std::fs::remove_file(dir.join(format!("{z}.jnl")));
    }
    std::fs::write(
        dir.join("fwd.zone"),
        format!("{SOA}elsewhere IN A 198.51.100.7\n"),
    )
    .unwrap();
}

fn start_bind(lab: &mut Lab, dir: &std::path::Path) -> usize {
    let d = dir.display();
    let conf = format!(
        "include \"{d}/tsig.key\";\n\
         options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; session-keyfile \"{d}/session.key\";\n\
           managed-keys-directory \"{d}\"; listen-on port 53 {{ {DNS}; }}; listen-on-v6 {{ none; }};\n\
           recursion no; dnssec-validation no; notify no; }};\n\
         zone \"113.0.203.in-addr.arpa\" {{ type primary; file \"{d}/parent.zone\"; }};\n\
         zone \"0-27.113.0.203.in-addr.arpa\" {{ type primary; file \"{d}/child.zone\";\n\
           allow-update {{ key \"{KEY_NAME}\"; }}; allow-transfer {{ key \"{KEY_NAME}\"; }}; }};\n\
         zone \"0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa\" {{ type primary; file \"{d}/v6.zone\";\n\
           allow-update {{ key \"{KEY_NAME}\"; }}; allow-transfer {{ key \"{KEY_NAME}\"; }}; }};\n\
         zone \"customer.example\" {{ type primary; file \"{d}/fwd.zone\"; allow-update {{ key \"{KEY_NAME}\"; }}; }};\n"
    );
    std::fs::write(dir.join("named.conf"), conf).unwrap();
    let srv = lab.srv.clone();
    let conf = dir.join("named.conf").display().to_string();
    let h = lab.spawn_in(&srv, "named", &["-g", "-n", "1", "-c", &conf], "named.log");
    lab.wait_for(&format!(
        "ip netns exec {srv} dig +tries=1 +time=1 +short customer.example SOA @{DNS} | grep -q rdns"
    ));
    h
}

/// Brings up a customer's wireguard-go in `ns`, reaching only the tunnel listener through it.
fn customer_tunnel(
    lab: &Lab,
    ns: &str,
    wg: &str,
    key: &str,
    spub: &str,
    endpoint: &str,
    addr: &str,
) {
    lab.must_in(ns, &format!("wireguard-go {wg} 2>/dev/null"));
    lab.must_in(
        ns,
        &format!(
            "wg set {wg} private-key {key} peer {spub} endpoint {endpoint}:51820 \
             allowed-ips 198.18.2.1/32 persistent-keepalive 25 && \
             ip addr add {addr}/32 dev {wg} && ip link set {wg} mtu 1420 up && \
             ip route add 198.18.2.1/32 dev {wg} src {addr}"
        ),
    );
}

#[test]
fn customers_set_forward_confirmed_ptrs_through_their_tunnels_on_a_real_bind() {
    if !root_or_skip("customers_set_forward_confirmed_ptrs_through_their_tunnels_on_a_real_bind") {
        return;
    }
    for tool in ["named", "tsig-keygen", "dig", "nsupdate"] {
        assert!(
            run(&format!("command -v {tool}")).status.success(),
            "{tool} is missing: install bind9 and bind9-dnsutils (ops/test.sh does)"
        );
    }
    let started = Instant::now();
    let mut lab = Lab::with_prefix("rd");
    let (srv, cli, id) = (lab.srv.clone(), lab.cli.clone(), lab.id.clone());
    // The stranger's namespace, on its own link to the provider.
    let stranger = ExtraNs {
        ns: format!("{id}-st"),
        wg: format!("{id}t"),
    };
    let st = stranger.ns.clone();
    must(&format!(
        "ip netns add {st} && ip -n {st} link set lo up && \
         ip link add {id}p type veth peer name {id}q && \
         ip link set {id}p netns {st} && ip link set {id}q netns {srv} && \
         ip -n {st} addr add 198.18.1.2/24 dev {id}p && ip -n {st} link set {id}p up && \
         ip -n {srv} addr add 198.18.1.1/24 dev {id}q && ip -n {srv} link set {id}q up && \
         ip -n {st} route add 198.18.0.0/24 via 198.18.1.1 && \
         ip -n {srv} addr add {DNS}/32 dev lo && ip -n {srv} addr add 198.18.2.1/32 dev lo"
    ));

    // BIND with a TSIG key made here.
    let dir = lab.dir.join("bind");
    std::fs::create_dir_all(&dir).unwrap();
    must(&format!(
        "umask 077; tsig-keygen -a hmac-sha256 {KEY_NAME} > {}/tsig.key",
        dir.display()
    ));
    write_zones(&dir);
    let mut named = start_bind(&mut lab, &dir);

    // Router and control; the control's resolver is this BIND only.
    lab.start_router();
    lab.provider_interface_up();
    lab.must_in(
        &srv,
        &format!("ip -6 route replace {POOL6} dev {}", lab.wgs),
    );
    let cfg = lab.path("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{data}\"\ninvoice_poll_millis = 100\nlisten = \"198.18.0.1:8420\"\n\
             reconcile_interval_secs = 1\n\
             [metrics]\nlisten = \"{METRICS}\"\n\
             [[routers]]\nname = \"{w}\"\nsocket = \"/var/run/wireguard/{w}.sock\"\n\
             endpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/27\"]\nipv6_pool = \"{POOL6}\"\n\
             [rdns]\nserver = \"{DNS}:53\"\nresolver = \"{DNS}:53\"\ntsig_key_file = \"{key}\"\n\
             default_ipv4 = \"{{a}}-{{b}}-{{c}}-{{d}}.pool.rdns.example\"\ncompare_interval_secs = 2\n\
             tunnel_listen = \"198.18.2.1:8421\"\nmax_ipv6_names = 4\n\
             [[rdns.zones]]\nzone = \"0-27.113.0.203.in-addr.arpa.\"\nnetwork = \"203.0.113.0/27\"\n\
             owner = \"{{d}}.0-27.113.0.203.in-addr.arpa.\"\n\
             [[rdns.zones]]\nzone = \"0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa.\"\nnetwork = \"{POOL6}\"\n",
            data = lab.path("control"),
            w = lab.wgs,
            key = dir.join("tsig.key").display(),
        ),
    )
    .unwrap();
    let control = control_bin();
    lab.spawn_in(
        &srv,
        &control,
        &["-c", &cfg, "serve", "--dev-hooks"],
        "control.log",
    );
    lab.wait_for(&format!("ip netns exec {cli} curl -sf {API}/healthz"));

    // The first compare gives every pool address the provider's default, through the RFC
    // 2317 CNAME of the parent zone.
    assert!(
        until(15, || dig_x(&lab, "203.0.113.9")
            .contains("203-0-113-9.pool.rdns.example.")),
        "no default PTR after the first compare: {}",
        dig_x(&lab, "203.0.113.9")
    );
    assert!(dig_x(&lab, "203.0.113.9").contains("9.0-27.113.0.203.in-addr.arpa."));

    // The customer rents a /32 (with an IPv6 /64) with staticip, the stranger a /30; both pay.
    let sip_dir = lab.path("staticip");
    let sip_bin = staticip();
    let sip = |args: &str| {
        lab.must_in(
            &cli,
            &format!("{sip_bin} --state-dir {sip_dir} --server {API} {args}"),
        )
    };
    sip("rent --no-wait");
    let a = json(&sip("--json status"));
    let cpub = a["public_key"].as_str().unwrap().to_string();
    must(&format!(
        "{control} -c {cfg} dev-pay {} >/dev/null",
        a["open_invoice"]["bolt11"].as_str().unwrap()
    ));
    let ckey = format!("{sip_dir}/rentals/default/private.key");
    staticwire_control::proving::hold_base64(std::fs::read_to_string(&ckey).unwrap().trim());
    let (skey, spub_st) = lab.keypair("stranger");
    staticwire_control::proving::hold_base64(&std::fs::read_to_string(&skey).unwrap());
    let rent = |ns: &str, body: String| {
        let (code, v) = http(&lab, ns, API, "POST", "/v1/rentals", Some(&body), true);
        assert_eq!(code, 201, "{v}");
        must(&format!(
            "{control} -c {cfg} dev-pay {} >/dev/null",
            v["invoice"]["bolt11"].as_str().unwrap()
        ));
        v["rental"].clone()
    };
    let b = rent(
        &st,
        format!("{{\"public_key\":\"{spub_st}\",\"prefix_len\":30}}"),
    );
    let addr = a["address"].as_str().unwrap().to_string();
    let v6net: ipnet::Ipv6Net = a["ipv6"].as_str().expect("an IPv6 prefix").parse().unwrap();
    let v6 = std::net::Ipv6Addr::from(u128::from(v6net.network()) + 0x25).to_string();
    let st_net: ipnet::Ipv4Net = format!("{}/30", b["address"].as_str().unwrap())
        .parse()
        .unwrap();
    let st_addr = std::net::Ipv4Addr::from(u32::from(st_net.network()) + 1).to_string();
    let st_other = std::net::Ipv4Addr::from(u32::from(st_net.network()) + 2).to_string();
    eprintln!("customer {addr} + {v6net}, stranger {st_net}");

    // Their forward records, by the customers' own DNS provider (here the same BIND).
    let key_file = dir.join("tsig.key").display().to_string();
    lab.must_in(
        &srv,
        &format!(
            "printf 'server {DNS}\\nzone customer.example\\n\
             update add mail.customer.example. 300 A {addr}\\n\
             update add v6.customer.example. 300 AAAA {v6}\\n\
             update add st.customer.example. 300 A {st_addr}\\nsend\\n' | nsupdate -k {key_file}"
        ),
    );

    // Both tunnels up, each reaching only the tunnel listener through its tunnel.
    let terms = json(&lab.must_in(&cli, &format!("curl -sS -f {API}/v1/terms")));
    let server_pub = terms["servers"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let wgc = lab.wgc.clone();
    customer_tunnel(&lab, &cli, &wgc, &ckey, &server_pub, "198.18.0.1", &addr);
    customer_tunnel(
        &lab,
        &st,
        &stranger.wg,
        &skey,
        &server_pub,
        "198.18.1.1",
        &st_addr,
    );
    for ns in [&cli, &st] {
        assert!(
            until(20, || lab
                .ex(ns, &format!("curl -sf -m 2 {TUNNEL_API}/healthz"))
                .status
                .success()),
            "tunnel listener not reached through the tunnel from {ns}"
        );
    }
    let ptr_path = format!("/v1/rentals/{}/ptr", url_key(&cpub));
    let st_path = format!("/v1/rentals/{}/ptr", url_key(&spub_st));

    // The customer names its address from inside its own tunnel: no proof needed there.
    let (code, v) = http(
        &lab,
        &cli,
        TUNNEL_API,
        "PUT",
        &ptr_path,
        Some("{\"name\":\"Mail.Customer.Example\"}"),
        false,
    );
    assert_eq!(code, 200, "{v}");
    let rec = v["records"].as_array().unwrap();
    assert_eq!(rec[0]["address"], addr.as_str());
    assert_eq!(rec[0]["name"], "mail.customer.example.");
    assert_eq!(rec[0]["custom"], true);
    assert_eq!(rec[0]["published"], true);
    assert_eq!(v["tunnel_api"], TUNNEL_API);
    assert!(
        dig_x(&lab, &addr).contains("mail.customer.example."),
        "{}",
        dig_x(&lab, &addr)
    );

    // Its IPv6 address with staticip through the tunnel (which still sends the proof: on the
    // tunnel listener it must verify), then `staticip ptr show` on the public listener.
    let v = json(&sip(&format!(
        "--json ptr set v6.customer.example --address {v6} --tunnel"
    )));
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["address"] == v6.as_str()
                && r["name"] == "v6.customer.example."
                && r["published"] == true),
        "{v}"
    );
    assert!(
        dig_x(&lab, &v6).contains("v6.customer.example."),
        "{}",
        dig_x(&lab, &v6)
    );
    let shown = sip("ptr show");
    assert!(
        shown.contains("mail.customer.example.") && shown.contains("v6.customer.example."),
        "{shown}"
    );

    // A name whose A record points elsewhere: refused, nothing changed.
    let (code, v) = http(
        &lab,
        &cli,
        TUNNEL_API,
        "PUT",
        &ptr_path,
        Some("{\"name\":\"elsewhere.customer.example\"}"),
        false,
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (422, Some("forward_mismatch")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("198.51.100.7"));
    let (code, v) = http(
        &lab,
        &cli,
        TUNNEL_API,
        "PUT",
        &ptr_path,
        Some("{\"name\":\"bad_name.example\"}"),
        false,
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_name")),
        "{v}"
    );
    assert!(dig_x(&lab, &addr).contains("mail.customer.example."));

    // The stranger, from its own tunnel, without a proof of the customer's key: refused.
    let (code, v) = http(
        &lab,
        &st,
        TUNNEL_API,
        "PUT",
        &ptr_path,
        Some("{\"name\":\"st.customer.example\"}"),
        false,
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("tunnel_forbidden")),
        "{v}"
    );
    // On the public listener a proof is always required.
    let (code, v) = http(&lab, &st, API, "GET", &ptr_path, None, false);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (401, Some("proof_required")),
        "{v}"
    );
    assert!(dig_x(&lab, &addr).contains("mail.customer.example."));

    // The stranger names an address of its own /30, not one of the customer's.
    let body = format!("{{\"address\":\"{addr}\",\"name\":\"mail.customer.example\"}}");
    let (code, v) = http(&lab, &st, TUNNEL_API, "PUT", &st_path, Some(&body), false);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("address_not_rented")),
        "{v}"
    );
    let body = format!("{{\"address\":\"{st_addr}\",\"name\":\"st.customer.example\"}}");
    let (code, v) = http(&lab, &st, TUNNEL_API, "PUT", &st_path, Some(&body), false);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["records"].as_array().unwrap().len(), 4, "{v}");
    assert!(dig_x(&lab, &st_addr).contains("st.customer.example."));
    assert!(dig_x(&lab, &st_other).contains(&format!(
        "{}.pool.rdns.example.",
        st_other.replace('.', "-")
    )));

    // BIND loses everything (restarted on empty zones): the next compare repairs it.
    let repaired = sample_metric(&lab, "staticwire_control_rdns_repaired_total");
    lab.kill(named);
    write_zones(&dir);
    named = start_bind(&mut lab, &dir);
    let _ = named;
    assert!(
        until(20, || dig_x(&lab, &addr).contains("mail.customer.example.")
            && dig_x(&lab, &v6).contains("v6.customer.example.")
            && dig_x(&lab, &st_addr).contains("st.customer.example.")),
        "not repaired after BIND lost its zones: {} / {} / {}",
        dig_x(&lab, &addr),
        dig_x(&lab, &v6),
        dig_x(&lab, &st_addr)
    );
    let after = sample_metric(&lab, "staticwire_control_rdns_repaired_total");
    assert!(after >= repaired + 8.0, "repaired {repaired} -> {after}");
    assert_eq!(
        sample_metric(&lab, "staticwire_control_rdns_out_of_sync"),
        0.0
    );

    // Both rentals lapse: the provider's defaults come back, the IPv6 name goes.
    lab.must_in(
        &srv,
        &format!(
            "curl -sf -X POST -H 'content-type: application/json' -d '{{\"seconds\": {}}}' {API}/v1/dev/clock",
            31 * 86_400
        ),
    );
    let default = format!("{}.pool.rdns.example.", addr.replace('.', "-"));
    assert!(
        until(20, || dig_x(&lab, &addr).contains(&default)
            && dig_x(&lab, &v6).trim().is_empty()
            && dig_x(&lab, &st_addr).contains(&format!(
                "{}.pool.rdns.example.",
                st_addr.replace('.', "-")
            ))),
        "defaults not back after the lapse: {} / {} / {}",
        dig_x(&lab, &addr),
        dig_x(&lab, &v6),
        dig_x(&lab, &st_addr)
    );
    // And a lapsed rental cannot name anything.
    let (code, v) = http(
        &lab,
        &cli,
        API,
        "PUT",
        &ptr_path,
        Some("{\"name\":\"mail.customer.example\"}"),
        true,
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (409, Some("rental_not_active")),
        "{v}"
    );
    eprintln!(
        "rdns namespace test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
