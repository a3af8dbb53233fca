//! Starting a control for tests, in one place. Two ways:
//!
//! - [`Builder`]: the service in this process (one router, the dev Lightning backend unless
//!   another is given, the database in a temp dir), optionally served on loopback through the
//!   real routers (`/v1`, the page, with or without the original client's protocol, with or
//!   without the listener's limits). Inside the control's own tests the store is PostgreSQL
//!   when `STATICWIRE_TEST_PG` names a server (`db::open_store`), SQLite otherwise.
//! - [`Process`]: the `staticwire-control` binary as a child process with a config file, for
//!   tests of other crates that also run its operator commands (`dev-pay`, `fingerprint`).
//!
//! Compiled for the control's tests and, with the `testkit` feature, for other crates'.

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::config::{Config, RouterConfig};
use crate::feed::RouterLink;
use crate::lightning::{dev, Backend};
use crate::service::Service;
use crate::sql::Connection;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The router name every test control uses.
pub const ROUTER: &str = "t";

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
        }
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
        let db = Arc::new(Mutex::new(open_db(&cfg.db_path(), self.sqlite_only)));
        let ln = match self.ln {
            Some(ln) => ln,
            None => {
                let key = dev::load_or_create_key(&dir.join("dev-node.key")).expect("dev key");
                Backend::Dev(dev::DevNode::new(key, db.clone()))
            }
        };
        let routers = vec![RouterLink {
            name: ROUTER.into(),
            socket: dir.join(self.socket),
            listen_port: 51820,
            private_key: [1; 32],
            public_key: [2; 32],
        }];
        let proof = crate::secrets::proof_key(dir).expect("proof key");
        let mut svc = Service::new(cfg, Clock::system(), db, ln, routers).expect("service");
        svc.set_proof(staticwire_api::proof::Verifier::new(
            proof,
            staticwire_api::proof::DEFAULT_MAX_SEEN,
        ));
        if let Some(n) = self.network {
            svc.set_network(n);
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
/// `cargo build -p staticwire-control` puts it there.
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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `staticwire-control serve --dev-hooks` as a child process: the dev Lightning backend, one
/// router `t` (pool 203.0.113.0/28, no socket), `/v1` on `port` and the original client's
/// protocol over HTTPS on `https_port`. Killed when dropped.
pub struct Process {
    child: Child,
    /// The config file, for operator commands (`-c cfg dev-pay ...`).
    pub cfg: PathBuf,
    pub port: u16,
    pub https_port: u16,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts it with `extra` TOML (whole tables, e.g. `[limits]`) added to the config, and
    /// waits until both listeners accept.
    pub fn start(extra: &str) -> Process {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, https_port) = (free_port(), free_port());
        let cfg = dir.path().join("control.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\ninvoice_poll_millis = 100\n\
                 [compat]\nlisten = \"127.0.0.1:{https_port}\"\n{extra}\
                 [[routers]]\nname = \"{ROUTER}\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\npools = [\"203.0.113.0/28\"]\n",
                dir.path().display(),
                dir.path().join("none.sock").display()
            ),
        )
        .expect("config");
        let child = Command::new(binary())
            .args([
                "-c",
                cfg.to_str().expect("utf-8 path"),
                "serve",
                "--dev-hooks",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn staticwire-control");
        let mut p = Process {
            child,
            cfg,
            port,
            https_port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || TcpStream::connect(("127.0.0.1", https_port)).is_err()
        {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("staticwire-control exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "control did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `staticwire-control -c <cfg> <args>`: an operator command on this control's data.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.arg("-c").arg(&self.cfg).args(args);
        c
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
