//! A small network lab for integration tests: namespaces for a customer, the provider and the
//! internet, wired like ../shared/rig/netns-rig.sh, with unique names per test so tests run in
//! parallel. Dropping the lab kills every process inside its namespaces and deletes them, also
//! when the test panicked.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const RENTED: &str = "203.0.113.10";
pub const INTERNET: &str = "198.19.0.2";
pub const PROVIDER_UNDERLAY: &str = "198.18.0.1";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// True when the namespace tests can run; otherwise says so loudly.
pub fn root_or_skip(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if uid.is_ok_and(|u| u.trim_ascii() == b"0") {
        return true;
    }
    eprintln!("\n!!!!! SKIPPED {test}: needs root (network namespaces, TUN). Run the tests with sudo. !!!!!\n");
    false
}

/// The router binary: Cargo's own path inside the router package, else the one built beside
/// the running test (other packages' tests, under `cargo test --workspace`).
pub fn router_bin() -> String {
    if let Some(p) = option_env!("CARGO_BIN_EXE_staticwire-router") {
        return p.to_string();
    }
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("staticwire-router");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p staticwire-router`",
        bin.display()
    );
    bin.display().to_string()
}

pub struct Lab {
    pub id: String,
    pub cli: String,
    pub srv: String,
    pub inet: String,
    /// Interface names (≤ 15 characters, unique on the host since sockets share one directory).
    pub wgc: String,
    pub wgs: String,
    pub dir: PathBuf,
    children: Vec<std::process::Child>,
}

pub fn run(cmd: &str) -> Output {
    Command::new("timeout")
        .args(["30", "bash", "-c", cmd])
        .output()
        .expect("run bash")
}

/// Runs `cmd`, panicking with its output if it fails.
pub fn must(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// Builds customer, provider and internet namespaces joined by veth pairs.
    pub fn new() -> Lab {
        Lab::with_prefix("swt")
    }

    /// As [`Lab::new`], with namespace and interface names starting with `prefix` (at most 4
    /// characters: interface names are limited to 15).
    pub fn with_prefix(prefix: &str) -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{prefix}{}{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            cli: format!("{id}-cli"),
            srv: format!("{id}-srv"),
            inet: format!("{id}-inet"),
            wgc: format!("{id}c"),
            wgs: format!("{id}s"),
            dir,
            children: Vec::new(),
            id,
        };
        let (cli, srv, inet, id) = (&lab.cli, &lab.srv, &lab.inet, &lab.id);
        for ns in [cli, srv, inet] {
            must(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        }
        must(&format!(
            "ip link add {id}a type veth peer name {id}b && \
             ip link set {id}a netns {cli} && ip link set {id}b netns {srv} && \
             ip link add {id}x type veth peer name {id}y && \
             ip link set {id}x netns {inet} && ip link set {id}y netns {srv} && \
             ip -n {cli} addr add 198.18.0.2/24 dev {id}a && ip -n {cli} link set {id}a up && \
             ip -n {srv} addr add {PROVIDER_UNDERLAY}/24 dev {id}b && ip -n {srv} link set {id}b up && \
             ip -n {srv} addr add 198.19.0.1/24 dev {id}y && ip -n {srv} link set {id}y up && \
             ip -n {inet} addr add {INTERNET}/24 dev {id}x && ip -n {inet} link set {id}x up && \
             ip -n {inet} route add 203.0.113.0/24 via 198.19.0.1 && \
             ip netns exec {srv} sysctl -qw net.ipv4.ip_forward=1"
        ));
        lab
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Generates a key pair in the lab dir; returns (private key path, public key).
    pub fn keypair(&self, name: &str) -> (String, String) {
        let key = self.path(&format!("{name}.key"));
        must(&format!("umask 077; wg genkey > {key}"));
        let public = must(&format!("wg pubkey < {key}")).trim().to_string();
        (key, public)
    }

    /// Runs a command inside namespace `ns`.
    pub fn ex(&self, ns: &str, cmd: &str) -> Output {
        run(&format!(
            "ip netns exec {ns} bash -c '{}'",
            cmd.replace('\'', "'\\''")
        ))
    }

    pub fn must_in(&self, ns: &str, cmd: &str) -> String {
        must(&format!(
            "ip netns exec {ns} bash -c '{}'",
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Starts `program args` inside `ns`, logging to `<lab dir>/<log>`; returns its handle for
    /// [`Lab::kill`]. The lab kills it on drop in any case.
    pub fn spawn_in(&mut self, ns: &str, program: &str, args: &[&str], log: &str) -> usize {
        let log = std::fs::File::create(self.path(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.children.push(child);
        self.children.len() - 1
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, handle: usize) {
        let c = &mut self.children[handle];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts our router in the foreground inside the provider namespace (metrics on loopback),
    /// in the I/O mode STATICWIRE_ROUTER_IO names (uring, batch, simple; default auto), with
    /// STATICWIRE_ROUTER_ARGS added (e.g. `--no-offload`).
    pub fn start_router(&mut self) -> usize {
        let (srv, wgs) = (self.srv.clone(), self.wgs.clone());
        let io = std::env::var("STATICWIRE_ROUTER_IO").unwrap_or_else(|_| "auto".into());
        let h = self.spawn_in(
            &srv,
            &router_bin(),
            &[
                "--foreground",
                "--io",
                &io,
                "--metrics",
                "127.0.0.1:9586",
                &wgs,
            ],
            "router.log",
        );
        self.wait_for(&format!("test -S /var/run/wireguard/{}.sock", self.wgs));
        h
    }

    /// The I/O mode the router reported at start (`io=...` in its log).
    pub fn router_io_mode(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.path("router.log")).ok()?;
        let at = log.find(" io=")? + 4;
        Some(log[at..].split_whitespace().next()?.to_string())
    }

    /// Starts the server under test: ours, or STATICWIRE_TEST_SERVER (e.g. wireguard-go).
    pub fn start_server(&mut self) -> bool {
        match std::env::var("STATICWIRE_TEST_SERVER") {
            Ok(cmd) => {
                self.must_in(&self.srv.clone(), &format!("{cmd} {}", self.wgs));
                self.wait_for(&format!("test -S /var/run/wireguard/{}.sock", self.wgs));
                false
            }
            Err(_) => {
                self.start_router();
                true
            }
        }
    }

    /// The provider host's own duties (wg-quick or a systemd unit in real life): the router's
    /// interface up and the rented pool routed to it.
    pub fn provider_interface_up(&self) {
        self.must_in(
            &self.srv,
            &format!(
                "ip link set {w} up && ip route replace 203.0.113.0/24 dev {w}",
                w = self.wgs
            ),
        );
    }

    /// Starts staticwire-control (`control` is its binary) in the provider namespace, driving
    /// this lab's router with the rented /32 as its only pool. `head` is TOML for the top of the
    /// config (listen addresses, [compat]); `ready` is a command run in the customer namespace
    /// until it succeeds. Returns the config path (for `dev-pay`, `fingerprint`).
    pub fn start_control(
        &mut self,
        control: &str,
        head: &str,
        args: &[&str],
        ready: &str,
    ) -> String {
        let cfg = self.path("control.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{data}\"\ninvoice_poll_millis = 100\n{head}\n\
                 [[routers]]\nname = \"{w}\"\nsocket = \"/var/run/wireguard/{w}.sock\"\n\
                 endpoint = \"{PROVIDER_UNDERLAY}:51820\"\npools = [\"{RENTED}/32\"]\n",
                data = self.path("control"),
                w = self.wgs
            ),
        )
        .unwrap();
        let mut all = vec!["-c", cfg.as_str(), "serve"];
        all.extend_from_slice(args);
        let srv = self.srv.clone();
        self.spawn_in(&srv, control, &all, "control.log");
        self.wait_for(&format!("ip netns exec {} {ready}", self.cli));
        cfg
    }

    /// Provider: key, port 51820, one customer peer owning the rented /32, route to it.
    pub fn configure_server(&self, customer_pub: &str) -> String {
        let (key, public) = self.keypair("srv");
        self.must_in(
            &self.srv,
            &format!(
                "wg set {w} private-key {key} listen-port 51820 peer {customer_pub} allowed-ips {RENTED}/32 && \
                 ip link set {w} up && ip route add 203.0.113.0/24 dev {w}",
                w = self.wgs
            ),
        );
        public
    }

    /// Customer: wireguard-go configured with `wg` as a real customer would.
    pub fn start_customer(&self, server_pub: &str, customer_key: &str) {
        let w = &self.wgc;
        self.must_in(&self.cli, &format!("wireguard-go {w} 2>/dev/null"));
        self.must_in(
            &self.cli,
            &format!(
                "wg set {w} private-key {customer_key} peer {server_pub} endpoint {PROVIDER_UNDERLAY}:51820 \
                 allowed-ips 198.19.0.0/24 persistent-keepalive 25 && \
                 ip addr add {RENTED}/32 dev {w} && ip link set {w} mtu 1420 up && \
                 ip route add 198.19.0.0/24 dev {w} src {RENTED}"
            ),
        );
    }

    /// The whole standard setup; returns (customer public key, whether the server is ours).
    pub fn tunnel(&mut self) -> (String, bool) {
        let ours = self.start_server();
        let (ckey, cpub) = self.keypair("cli");
        let spub = self.configure_server(&cpub);
        self.start_customer(&spub, &ckey);
        (cpub, ours)
    }

    /// Polls `cmd` (on the host) until it succeeds, at most 10 s.
    pub fn wait_for(&self, cmd: &str) {
        for _ in 0..100 {
            if run(cmd).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for: {cmd}");
    }

    /// Pings `to` from namespace `ns` (optionally from a source address); retries for the
    /// first handshake, at most ~10 s.
    pub fn ping_ok(&self, ns: &str, to: &str, from: Option<&str>) -> bool {
        self.ping_within(ns, to, from, 10)
    }

    /// Pings once a second until one answer comes, for at most `seconds`.
    pub fn ping_within(&self, ns: &str, to: &str, from: Option<&str>, seconds: u32) -> bool {
        let src = from.map(|f| format!("-I {f}")).unwrap_or_default();
        (0..seconds).any(|_| {
            self.ex(ns, &format!("ping -c 1 -W 1 {src} {to}"))
                .status
                .success()
        })
    }

    /// One-shot ping, no retries.
    pub fn ping_once(&self, ns: &str, to: &str, from: Option<&str>) -> bool {
        let src = from.map(|f| format!("-I {f}")).unwrap_or_default();
        self.ex(ns, &format!("ping -c 2 -W 1 {src} {to}"))
            .status
            .success()
    }

    /// Sends a few UDP datagrams from `src` in `from_ns` to `dst` in `to_ns`; true if any arrived.
    /// Unlike ping this needs no way back, so it tells which direction was blocked.
    pub fn udp_reaches(&self, from_ns: &str, src: &str, to_ns: &str, dst: &str) -> bool {
        let listener = Command::new("ip")
            .args(["netns", "exec", to_ns, "timeout", "5", "python3", "-c"])
            .arg(format!(
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                 s.bind(('{dst}', 9999)); s.settimeout(3); print(s.recvfrom(100)[0].decode())"
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start listener");
        std::thread::sleep(Duration::from_millis(500));
        self.must_in(
            from_ns,
            &format!(
                "python3 -c \"import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('{src}', 0))\nfor _ in range(5):\n    s.sendto(b'probe', ('{dst}', 9999)); time.sleep(0.1)\""
            ),
        );
        let out = listener.wait_with_output().expect("listener");
        String::from_utf8_lossy(&out.stdout).contains("probe")
    }

    /// Scrapes our router's metrics inside the provider namespace.
    pub fn metrics(&self) -> String {
        self.must_in(&self.srv, "curl -sf http://127.0.0.1:9586/metrics")
    }

    /// A bounded iperf3 TCP transfer from `client_ns` to a server bound at `server_addr` in
    /// `server_ns`; returns bits per second received.
    pub fn tcp_transfer(
        &self,
        server_ns: &str,
        server_addr: &str,
        client_ns: &str,
        bind: Option<&str>,
    ) -> f64 {
        let port = 5201;
        self.must_in(
            server_ns,
            &format!("iperf3 -s -D -1 -B {server_addr} -p {port} >/dev/null"),
        );
        std::thread::sleep(Duration::from_millis(300));
        let bind = bind.map(|b| format!("-B {b}")).unwrap_or_default();
        let json = self.must_in(
            client_ns,
            &format!("iperf3 -c {server_addr} -p {port} {bind} -t 2 -J --connect-timeout 3000"),
        );
        let key = "\"sum_received\":";
        let at = json.find(key).expect("iperf3 summary") + key.len();
        let rest = &json[at..];
        let bps = rest.find("\"bits_per_second\":").expect("bits_per_second") + 18;
        rest[bps..]
            .trim_start()
            .split([',', '\n', '}'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .expect("number")
    }
}

/// Value of the first sample of `metric` whose line contains every one of `labels`.
pub fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.cli, &self.srv, &self.inet] {
            let _ = run(&format!(
                "for p in $(ip netns pids {ns} 2>/dev/null); do kill $p 2>/dev/null; done; sleep 0.2; \
                 for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p 2>/dev/null; done; \
                 ip netns del {ns} 2>/dev/null"
            ));
        }
        for w in [&self.wgc, &self.wgs] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{w}.sock"));
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test, and say where they are.
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
