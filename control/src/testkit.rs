//! Starting a control for tests, in one place. Two ways:
//!
//! - [`Builder`]: the service in this process (one router, the dev Lightning backend unless
//!   another is given, the database in a temp dir), optionally served on loopback through the
//!   real routers (`/v1`, the page, with or without the original client's protocol, with or
//!   without the listener's limits). Inside the control's own tests the store is PostgreSQL
//!   when `STATICWIRE_TEST_PG` names a server (`db::open_store`), SQLite otherwise.
//! - [`Process`]: the `staticwire-control` binary as a child process with a config file
//!   ([`ProcessBuilder`]: the test's TOML, free loopback ports, restarts after `kill -9`), for
//!   tests of the binary itself (crashes, replicas, metrics, operator commands) and of other
//!   crates.
//!
//! Compiled for the control's tests and, with the `testkit` feature, for other crates'.

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::config::{Config, RouterConfig};
use crate::feed::RouterLink;
use crate::lightning::{dev, Backend};
use crate::service::Service;
use crate::sql::Connection;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The router name every test control uses.
pub const ROUTER: &str = "t";

/// A `[limits]` table with the request rates out of the way (for tests of the caps on
/// unpaid holds, not of the rates).
pub const NO_RATE_LIMITS: &str = "[limits]\nburst = 100000\nper_second = 100000.0\n\
                                  invoice_burst = 100000\ninvoices_per_minute = 1000000.0\n";

/// A change to a test control's configuration.
type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

/// How a test control is made; see the module doc.
pub struct Builder {
    pool: String,
    ipv6_pool: Option<String>,
    limits: LimitsConfig,
    edits: Vec<ConfigEdit>,
    ln: Option<Backend>,
    network: Option<&'static str>,
    socket: &'static str,
    sqlite_only: bool,
    dir: Option<PathBuf>,
    dev_hooks: bool,
    compat: bool,
    limited: bool,
    /// The database of another replica (PostgreSQL): a connection of this one's own to it.
    db: Option<Connection>,
}

impl Builder {
    /// A control whose one router rents out `pool` (no reserved addresses).
    pub fn new(pool: &str) -> Self {
        Builder {
            pool: pool.into(),
            ipv6_pool: None,
            limits: LimitsConfig::default(),
            edits: Vec::new(),
            ln: None,
            network: None,
            socket: "no-router.sock",
            sqlite_only: false,
            dir: None,
            dev_hooks: false,
            compat: false,
            limited: false,
            db: None,
        }
    }

    /// Another replica of `svc`: a connection of its own to `svc`'s PostgreSQL database
    /// (its own free-space index, unpaid holds and group commit). None on SQLite.
    pub fn replica_of(mut self, svc: &Service) -> Option<Self> {
        self.db = Some(svc.another_connection()?);
        Some(self)
    }

    /// An IPv6 pool on the router.
    pub fn ipv6_pool(mut self, pool: Option<&str>) -> Self {
        self.ipv6_pool = pool.map(str::to_string);
        self
    }

    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Edits the configuration after the rest is set (it is validated afterwards).
    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.edits.push(Box::new(f));
        self
    }

    /// Another Lightning backend than the dev node.
    pub fn lightning(mut self, ln: Backend) -> Self {
        self.ln = Some(ln);
        self
    }

    /// The Bitcoin network the service publishes (what `serve` learns from the node).
    pub fn network(mut self, network: &'static str) -> Self {
        self.network = Some(network);
        self
    }

    /// The router's UAPI socket file name in the data dir (default `no-router.sock`, which
    /// nothing listens on).
    pub fn router_socket(mut self, name: &'static str) -> Self {
        self.socket = name;
        self
    }

    /// SQLite even when `STATICWIRE_TEST_PG` is set (tests of SQLite's own query plans).
    pub fn sqlite_only(mut self) -> Self {
        self.sqlite_only = true;
        self
    }

    /// Keeps the data (database, keys) in `dir` rather than a temp dir of its own, so a second
    /// control on the same dir is a restart.
    pub fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Serves the test hooks (`/v1/dev/clock`, `/v1/dev/pay`).
    pub fn dev_hooks(mut self) -> Self {
        self.dev_hooks = true;
        self
    }

    /// Serves the original client's protocol beside `/v1`, as the HTTPS listener does.
    pub fn compat(mut self) -> Self {
        self.compat = true;
        self
    }

    /// Serves through the public listener (`limits::serve`: rates, connections, sizes, client
    /// addresses) rather than a bare `axum::serve`.
    pub fn limited(mut self) -> Self {
        self.limited = true;
        self
    }

    /// The service over the data in `dir`, not served.
    pub fn service(self, dir: &Path) -> Service {
        // reqwest is built without a default TLS provider; plain HTTP still needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut cfg = Config {
            data_dir: dir.to_path_buf(),
            limits: self.limits,
            ..Config::default()
        };
        cfg.routers = vec![RouterConfig {
            name: ROUTER.into(),
            socket: dir.join(self.socket),
            socket_uid: None,
            endpoint: "198.18.0.1:51820".into(),
            listen_port: 51820,
            pools: vec![self.pool.parse().expect("pool")],
            reserved: vec![],
            private_key_file: None,
            ipv6_pool: self.ipv6_pool.map(|p| p.parse().expect("IPv6 pool")),
            ipv6_prefix_len: 64,
        }];
        for edit in self.edits {
            edit(&mut cfg);
        }
        cfg.validate().expect("test configuration");
        let db = Arc::new(Mutex::new(match self.db {
            Some(db) => db,
            None => open_db(&cfg.db_path(), self.sqlite_only),
        }));
        let ln = match self.ln {
            Some(ln) => ln,
            None => {
                let key = dev::load_or_create_key(&dir.join("dev-node.key")).expect("dev key");
                Backend::Dev(dev::DevNode::new(key, db.clone()))
            }
        };
        let routers = cfg
            .routers
            .iter()
            .map(|r| RouterLink {
                name: r.name.clone(),
                socket: r.socket.clone(),
                listen_port: r.listen_port,
                private_key: [1; 32],
                public_key: [2; 32],
                socket_uid: None,
            })
            .collect();
        let proof = crate::secrets::proof_key(dir).expect("proof key");
        // Status reads go through read-only connections as in `serve` (SQLite only).
        let readers = match db.lock().expect("db").is_postgres() {
            true => Vec::new(),
            false => {
                crate::db::open_readers(&cfg.db_path().display().to_string(), crate::db::READERS)
                    .expect("readers")
            }
        };
        let mut svc = Service::new(cfg, Clock::system(), db, ln, routers).expect("service");
        svc.set_readers(readers);
        svc.set_proof(staticwire_api::proof::Verifier::new(
            proof,
            staticwire_api::proof::DEFAULT_MAX_SEEN,
        ));
        if let Some(n) = self.network {
            svc.set_network(n);
        }
        if let Some(rdns) = crate::rdns::Rdns::from_config(&svc.cfg().rdns).expect("[rdns]") {
            svc.set_rdns(rdns);
        }
        svc
    }

    /// The service served on a loopback port.
    pub async fn serve(mut self) -> Control {
        let (keep, dir) = match self.dir.take() {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let (dev_hooks, compat, limited) = (self.dev_hooks, self.compat, self.limited);
        let svc = Arc::new(self.service(&dir));
        let mut app = crate::http::router(svc.clone(), dev_hooks);
        if compat {
            app = app.merge(crate::compat::router(svc.clone()));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        if let Some(v) = svc.proof() {
            crate::proving::know_proof_key(&format!("http://{addr}"), v.public_key());
        }
        if limited {
            tokio::spawn(crate::limits::serve(
                listener,
                app,
                svc.limits().clone(),
                None,
                std::future::pending(),
            ));
        } else {
            tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        }
        Control {
            _dir: keep,
            svc,
            addr,
        }
    }
}

/// The store of a test control.
fn open_db(path: &Path, sqlite_only: bool) -> Connection {
    #[cfg(test)]
    if !sqlite_only {
        return crate::db::open_store(path).expect("test store");
    }
    let _ = sqlite_only;
    crate::db::open(path).expect("SQLite")
}

/// A control served in this process.
pub struct Control {
    _dir: Option<tempfile::TempDir>,
    pub svc: Arc<Service>,
    pub addr: SocketAddr,
}

impl Control {
    /// `http://127.0.0.1:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The `staticwire-control` binary beside the running test's directory (`target/<profile>/`);
/// Cargo builds it before the package's own integration tests, `cargo build -p
/// staticwire-control` for other crates' tests.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("staticwire-control");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p staticwire-control",
        bin.display()
    );
    bin
}

/// A free loopback TCP port (free when asked; the child binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// How a `staticwire-control` child process is configured: the test's own TOML, to which the
/// builder adds `listen` (a free loopback port), `data_dir` and, when asked, the HTTPS and
/// metrics listeners (free ports too). [`ProcessBuilder::write`] writes the file once; the
/// [`ProcessConfig`] it returns starts the process as often as a test needs (a restart after a
/// `kill -9` reuses the ports and the data).
pub struct ProcessBuilder {
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    file: String,
    text: String,
    listen_flag: bool,
    https: bool,
    metrics: bool,
    args: Vec<String>,
    keep: Option<tempfile::TempDir>,
}

impl ProcessBuilder {
    /// The config file `control.toml` in `dir`, with `data_dir = dir` and then `text` (the
    /// test's top-level keys first, then its tables, e.g. `[[routers]]`).
    pub fn new(dir: &Path, text: &str) -> Self {
        ProcessBuilder {
            dir: dir.to_path_buf(),
            data_dir: None,
            file: "control.toml".into(),
            text: text.into(),
            listen_flag: false,
            https: false,
            metrics: false,
            args: Vec::new(),
            keep: None,
        }
    }

    /// Another data dir than the config file's dir.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Another config file name in the dir (two configs over one data dir).
    pub fn file(mut self, name: &str) -> Self {
        self.file = name.into();
        self
    }

    /// No `listen` in the file: each start passes `serve --listen 127.0.0.1:<a free port>`
    /// (replicas sharing one config).
    pub fn listen_flag(mut self) -> Self {
        self.listen_flag = true;
        self
    }

    /// The HTTPS listener (`[compat] listen`): the original client's protocol and `/v1`.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// The Prometheus listener (`[metrics] listen`).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// An argument after `serve` (e.g. `--dev-hooks`), on every start.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Writes the config file.
    pub fn write(self) -> ProcessConfig {
        let port = (!self.listen_flag).then(free_port);
        let https_port = self.https.then(free_port);
        let metrics_port = self.metrics.then(free_port);
        let data_dir = self.data_dir.as_deref().unwrap_or(&self.dir);
        let mut text = String::new();
        if let Some(p) = port {
            text.push_str(&format!("listen = \"127.0.0.1:{p}\"\n"));
        }
        text.push_str(&format!(
            "data_dir = \"{}\"\n{}",
            data_dir.display(),
            self.text
        ));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if let Some(p) = https_port {
            text.push_str(&format!("[compat]\nlisten = \"127.0.0.1:{p}\"\n"));
        }
        if let Some(p) = metrics_port {
            text.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{p}\"\n"));
        }
        let path = self.dir.join(&self.file);
        std::fs::write(&path, text).expect("write the control's config");
        ProcessConfig {
            path,
            port,
            https_port,
            metrics_port,
            args: self.args,
            keep: self.keep,
        }
    }
}

/// A written control config (see [`ProcessBuilder`]): starts `staticwire-control -c <file>
/// serve ...` and runs operator commands on the same data.
pub struct ProcessConfig {
    /// The config file.
    pub path: PathBuf,
    port: Option<u16>,
    https_port: Option<u16>,
    metrics_port: Option<u16>,
    args: Vec<String>,
    keep: Option<tempfile::TempDir>,
}

impl ProcessConfig {
    /// Starts the server (stdout and stderr discarded) and waits until it answers
    /// `GET /healthz` and its HTTPS listener, if any, accepts.
    pub fn start(&self) -> Process {
        self.start_with(Stdio::null())
    }

    /// [`start`](Self::start) with stderr (the log) sent to `stderr`, e.g. a file.
    pub fn start_with(&self, stderr: impl Into<Stdio>) -> Process {
        let mut p = self.spawn_with(stderr);
        p.wait_ready();
        p
    }

    /// Starts the server without waiting for it (to kill it part-way through its start).
    pub fn spawn(&self) -> Process {
        self.spawn_with(Stdio::null())
    }

    /// [`spawn`](Self::spawn) with stderr sent to `stderr` (`Stdio::piped()` to read it from
    /// [`Process::child`]).
    pub fn spawn_with(&self, stderr: impl Into<Stdio>) -> Process {
        let port = self.port.unwrap_or_else(free_port);
        let mut cmd = self.command(&["serve"]);
        cmd.args(&self.args);
        if self.port.is_none() {
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn staticwire-control");
        Process {
            child,
            cfg: self.path.clone(),
            port,
            https_port: self.https_port,
            metrics_port: self.metrics_port,
            _dir: None,
        }
    }

    /// `staticwire-control -c <file> <args>`: an operator command on this control's data.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.arg("-c").arg(&self.path).args(args);
        c
    }
}

/// A `staticwire-control` child process; killed (SIGKILL, as a crash) when dropped.
pub struct Process {
    child: Child,
    /// The config file, for operator commands (`-c cfg dev-pay ...`).
    pub cfg: PathBuf,
    /// The `/v1` listener's port.
    pub port: u16,
    /// The HTTPS listener's port, when configured.
    pub https_port: Option<u16>,
    /// The Prometheus listener's port, when configured.
    pub metrics_port: Option<u16>,
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    /// `staticwire-control serve --dev-hooks` in a temp dir of its own: the dev Lightning
    /// backend, one router `t` (pool 203.0.113.0/28, no socket), `/v1` and the original
    /// client's protocol over HTTPS, with `extra` TOML (whole tables, e.g. `[limits]`) added to
    /// the config. Returns once both listeners answer.
    pub fn start(extra: &str) -> Process {
        Process::start_with(extra, "pools = [\"203.0.113.0/28\"]\n")
    }

    /// [`Process::start`] with `router` TOML lines (its `pools`, `reserved`, `ipv6_pool`) for
    /// the router instead of the /28.
    ///
    /// A free port can be taken by another test's connection before the child binds it: a
    /// child that exits at start is started again, on new ports, up to three times.
    pub fn start_with(extra: &str, router: &str) -> Process {
        let mut attempt = 0;
        loop {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut cfg = ProcessBuilder::new(
                dir.path(),
                &format!(
                    "invoice_poll_millis = 100\n{extra}\
                     [[routers]]\nname = \"{ROUTER}\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\n{router}",
                    dir.path().join("none.sock").display()
                ),
            )
            .https()
            .arg("--dev-hooks")
            .write();
            // Its log in its directory: why it exited, if it does.
            let log = dir.path().join("control.log");
            cfg.keep = Some(dir);
            let mut p = cfg.spawn_with(std::fs::File::create(&log).expect("log file"));
            let why = |status| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                format!("{status}: {}", tail.join(" | "))
            };
            match p.ready().map_err(why) {
                Ok(()) => {
                    p._dir = cfg.keep.take();
                    return p;
                }
                Err(status) if attempt < 2 => {
                    attempt += 1;
                    eprintln!("staticwire-control exited at start ({status}): again on new ports");
                }
                Err(status) => panic!("staticwire-control exited at start: {status}"),
            }
        }
    }

    /// Polls until `GET /healthz` is answered (and the HTTPS port accepts); panics when the
    /// process exits first or after 20 s.
    fn wait_ready(&mut self) {
        if let Err(status) = self.ready() {
            panic!("staticwire-control exited at start: {status}");
        }
    }

    /// [`Process::wait_ready`], answering the exit status of a child that exits first.
    fn ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers_healthz(self.port)
            || self
                .https_port
                .is_some_and(|p| TcpStream::connect(("127.0.0.1", p)).is_err())
        {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            assert!(Instant::now() < deadline, "control did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:port/metrics` of the Prometheus listener.
    pub fn metrics_url(&self) -> String {
        let port = self
            .metrics_port
            .expect("a control with a metrics listener");
        format!("http://127.0.0.1:{port}/metrics")
    }

    /// `staticwire-control -c <cfg> <args>`: an operator command on this control's data.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.arg("-c").arg(&self.cfg).args(args);
        c
    }

    /// The process id (replicas name their leases by it).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill staticwire-control");
        self.child.wait().expect("reap staticwire-control");
    }

    /// The child itself: its exit status, its piped stderr.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// Whether the control on `port` answers `GET /healthz` with an HTTP response (bound is not
/// enough: the listener accepts before the server's start-up settlement run is over).
fn answers_healthz(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut head = [0u8; 7];
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut head).is_ok()
        && &head == b"HTTP/1."
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
