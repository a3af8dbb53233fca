//! staticwire-control: the StaticWire rental server and its operator commands.

use clap::{Parser, Subcommand};
use lightning::{cln::Cln, dev, lnd::Lnd, Backend};
use staticwire_control::config::{Config, LightningConfig};
use staticwire_control::feed::RouterLink;
use staticwire_control::service::Service;
use staticwire_control::{
    backup, clock, compat, db, http, https, lease, lightning, limits, metrics, migrate, run,
    secrets,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The StaticWire rental server: sells static IPv4 addresses for Lightning payments, with no
/// account, and drives staticwire-router over its UAPI socket.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file; without it the embedded defaults apply (dev Lightning backend,
    /// pool 203.0.113.0/24, router socket /var/run/wireguard/wg0.sock).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (database, keys); overrides the config file.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve {
        /// HTTP listen address; overrides the config file.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Serve the test hooks POST /v1/dev/clock (move time forward) and POST /v1/dev/pay
        /// (pay an invoice) — dev Lightning backend only; for demos, tests and the conformance
        /// suite.
        #[arg(long = "dev-hooks", alias = "dev-clock")]
        dev_clock: bool,
    },
    /// Print the SHA-256 fingerprint of the HTTPS certificate, for clients to pin.
    Fingerprint,
    /// Rotate the HTTPS identity with an overlap: `next`, let clients learn it, `retire`.
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Pay an invoice of the dev Lightning backend (refused with any other backend).
    DevPay {
        /// The BOLT11 invoice.
        bolt11: String,
    },
    /// Copy the database to FILE while the server keeps running (SQLite online backup).
    Backup {
        /// Where the copy goes (replaced atomically; mode 0600).
        file: PathBuf,
    },
    /// Replace the database with a backup; the server must be stopped. The database it
    /// replaces is kept as staticwire.sqlite.pre-restore.
    Restore {
        /// A file made by `backup`.
        file: PathBuf,
    },
    /// Copy this host's SQLite database into an empty PostgreSQL database (moving from one
    /// host to many); the server must be stopped. Commits only when row counts and ledger
    /// totals agree; then set `database = "postgres://..."` in the config.
    Migrate {
        /// The PostgreSQL database, e.g. postgres://staticwire@db.example/staticwire
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Operator commands; output is JSON.
    Rentals {
        #[command(subcommand)]
        action: RentalsAction,
    },
}

#[derive(Subcommand)]
enum TlsAction {
    /// The fingerprints to pin now (current, and next during a rotation), as JSON.
    Show,
    /// Make the next identity (once). From the next start it is announced beside the current
    /// one (GET /.well-known/staticwire-tls); the current one is still served.
    Next,
    /// Serve the next identity from the next start on and delete the old one.
    Retire,
}

#[derive(Subcommand)]
enum RentalsAction {
    /// Every rental, live and past.
    List,
    /// One rental with its invoices and event log.
    Show { public_key: String },
    /// Remove the peer from the router until resumed; the ledger keeps running.
    Suspend { public_key: String },
    /// Undo a suspension.
    Resume { public_key: String },
    /// End the rental now; the address rests for the cool-down, then returns to the pool.
    Release { public_key: String },
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("staticwire-control: {msg}");
    std::process::exit(1)
}

/// Loads (or creates, 0600) a router's WireGuard key; returns (private, public).
fn router_key(path: &Path) -> std::io::Result<([u8; 32], [u8; 32])> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            <[u8; 32]>::try_from(bytes).map_err(|_| {
                std::io::Error::other(format!("{}: not a 32-byte key", path.display()))
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
            dev::write_private(path, &format!("{}\n", STANDARD.encode(s.to_bytes())))?;
            s.to_bytes()
        }
        Err(e) => return Err(e),
    };
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
    Ok((secret, public.to_bytes()))
}

fn build(cfg: Config) -> (Service, https::Identities) {
    // SQLite's database file is made 0600 before SQLite opens it (PostgreSQL: no file here).
    let db_file = (!cfg.is_postgres()).then(|| cfg.db_path());
    secrets::create_data_dir(&cfg.data_dir, db_file.as_deref()).unwrap_or_else(|e| fail(e));
    for f in secrets::tighten(&cfg.data_dir).unwrap_or_else(|e| fail(e)) {
        tracing::warn!(file = %f.path.display(), was = format!("{:o}", f.was), "a secret was readable by others: set to 0600");
    }
    let outside = cfg
        .routers
        .iter()
        .filter_map(|r| r.private_key_file.clone());
    let macaroon = match &cfg.lightning {
        LightningConfig::Lnd { macaroon, .. } => Some(macaroon.clone()),
        _ => None,
    };
    for path in outside.chain(macaroon) {
        if let Some(mode) = secrets::readable_by_others(&path) {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "a secret is readable by others: chmod 600 it (or 640 for a trusted group)");
        }
    }
    let conn = db::open_url(&cfg.database_url()).unwrap_or_else(|e| fail(e));
    let offset: i64 = db::meta_get(&conn, "dev_clock_offset")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let clock = clock::Clock::system();
    if offset != 0 && matches!(cfg.lightning, LightningConfig::Dev) {
        clock.advance(offset);
    }
    let db = Arc::new(Mutex::new(conn));
    let ln = match &cfg.lightning {
        LightningConfig::Dev => {
            let key = dev::load_or_create_key(&cfg.data_dir.join("dev-node.key"))
                .unwrap_or_else(|e| fail(format!("dev node key: {e}")));
            Backend::Dev(dev::DevNode::new(key, db.clone()))
        }
        LightningConfig::Lnd {
            url,
            macaroon,
            tls_cert,
            ..
        } => Backend::Lnd(Lnd::new(url, macaroon, tls_cert).unwrap_or_else(|e| fail(e))),
        LightningConfig::Cln { socket, .. } => Backend::Cln(Cln::new(socket)),
    };
    let routers = cfg
        .routers
        .iter()
        .map(|r| {
            let (private_key, public_key) = router_key(&cfg.key_file(r))
                .unwrap_or_else(|e| fail(format!("router {} key: {e}", r.name)));
            RouterLink {
                name: r.name.clone(),
                socket: r.socket.clone(),
                listen_port: r.listen_port,
                private_key,
                public_key,
            }
        })
        .collect();
    let tls = https::Identities::load_or_create(&cfg.data_dir)
        .unwrap_or_else(|e| fail(format!("TLS certificate: {e}")));
    let proof = staticwire_control::secrets::proof_key(&cfg.data_dir)
        .unwrap_or_else(|e| fail(format!("proof key: {e}")));
    let mut service = Service::new(cfg, clock, db, ln, routers).unwrap_or_else(|e| fail(e));
    service.set_tls_fingerprint(tls.current.fingerprint());
    service.set_proof(staticwire_api::proof::Verifier::new(
        proof,
        staticwire_api::proof::DEFAULT_MAX_SEEN,
    ));
    (service, tls)
}

async fn serve(service: Arc<Service>, tls: https::Identities, dev_clock: bool) {
    let listener = tokio::net::TcpListener::bind(service.cfg().listen)
        .await
        .unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", service.cfg().listen)));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, network = service.network(), "staticwire-control listening");
    for t in service.api_terms().servers {
        tracing::info!(endpoint = %t.endpoint, public_key = %t.public_key, "router");
    }
    if let Some(addr) = service.cfg().metrics.listen {
        let handle = metrics::scrape::install().unwrap_or_else(|e| fail(format!("metrics: {e}")));
        metrics::scrape::init(&service);
        let listener = metrics::scrape::bind(addr)
            .await
            .unwrap_or_else(|e| fail(format!("cannot serve metrics on {addr}: {e}")));
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Prometheus metrics at /metrics");
        tokio::spawn(metrics::scrape::serve(listener, service.clone(), handle));
    }
    // With PostgreSQL, replicas share the work: each router's expiries and reconciliation run
    // on the replica holding its lease.
    let replica = lease::replica_id();
    run::leases::refresh(&service, &replica);
    // Crash recovery first: settle what was paid while we were down, fix every router.
    if let Err(e) = service.check_invoices().await {
        tracing::warn!("{e}");
    }
    if let Err(e) = service.reconcile().await {
        tracing::warn!("{e}");
    }
    // Backends that can push settlements do; the poll below catches anything missed.
    tokio::spawn(service.clone().follow_settlements());
    // Deadlines, invoice checks, leases and the rare full compare (control/src/deadlines.rs).
    tokio::spawn(run::run(service.clone(), replica.clone()));
    if let Some(addr) = service.cfg().compat.listen {
        // The original client's protocol and /v1, over HTTPS pinned by fingerprint.
        let app = http::router(service.clone(), dev_clock)
            .merge(
                compat::router(service.clone())
                    .layer(axum::middleware::from_fn(metrics::events::compat_api)),
            )
            .merge(https::well_known(tls.fingerprints()))
            .layer(axum::middleware::from_fn(metrics::events::track_http));
        let bound = https::serve(addr, &tls.current, app, service.limits().clone())
            .await
            .unwrap_or_else(|e| fail(format!("cannot serve HTTPS on {addr}: {e}")));
        tracing::info!(addr = %bound, fingerprint = %tls.current.fingerprint(), next = ?tls.next.as_ref().map(https::Identity::fingerprint), "HTTPS (StaticWire client protocol and /v1)");
    }
    let limits = service.limits().clone();
    let app = http::router(service.clone(), dev_clock)
        .merge(https::well_known(tls.fingerprints()))
        .layer(axum::middleware::from_fn(metrics::events::track_http));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(e));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    let shutdown = {
        let service = service.clone();
        async move {
            shutdown.await;
            run::leases::release_all(&service, &replica);
        }
    };
    limits::serve(listener, app, limits, None, shutdown).await;
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut cfg = Config::load(cli.config.as_deref()).unwrap_or_else(|e| fail(e));
    if let Some(d) = cli.data_dir {
        cfg.data_dir = d;
    }
    let command = cli.command.unwrap_or(Command::Serve {
        listen: None,
        dev_clock: false,
    });
    if let Command::Serve {
        listen: Some(l), ..
    } = &command
    {
        cfg.listen = *l;
    }
    match &command {
        Command::Backup { .. } | Command::Restore { .. } if cfg.is_postgres() => fail(
            "backup and restore copy the SQLite database; with PostgreSQL use pg_dump and pg_restore",
        ),
        Command::Backup { file } => match backup::backup(&cfg.db_path(), file) {
            Ok(n) => {
                print_json(&serde_json::json!({"backup": file, "rentals": n}));
                eprintln!(
                    "staticwire-control: back up the keys in {} too (once: they do not change)",
                    cfg.data_dir.display()
                );
                return;
            }
            Err(e) => fail(e),
        },
        Command::Migrate { to } => {
            if cfg.is_postgres() {
                fail("the configured database is already PostgreSQL; migrate copies a SQLite one");
            }
            if !staticwire_control::config::is_postgres_url(to) {
                fail("--to must be a postgres:// URL");
            }
            let _lock = match backup::try_lock(&cfg.data_dir) {
                Ok(Some(l)) => l,
                Ok(None) => fail(format!(
                    "a staticwire-control is serving from {}: stop it first",
                    cfg.data_dir.display()
                )),
                Err(e) => fail(format!("data dir lock: {e}")),
            };
            if !cfg.db_path().exists() {
                fail(format!("no database at {}", cfg.db_path().display()));
            }
            let src = db::open(&cfg.db_path()).unwrap_or_else(|e| fail(e));
            let dst = db::open_url(to).unwrap_or_else(|e| fail(e));
            match migrate::copy(&src, &dst) {
                Ok(report) => {
                    print_json(&serde_json::json!({
                        "migrated_to": migrate::redact(to),
                        "tables": report.tables,
                        "totals": report.totals,
                    }));
                    eprintln!(
                        "staticwire-control: verified; now set database = \"{}\" in the config and copy the keys in {} to every replica",
                        migrate::redact(to),
                        cfg.data_dir.display()
                    );
                    return;
                }
                Err(e) => fail(e),
            }
        }
        Command::Tls { action } => {
            let dir = &cfg.data_dir;
            let done = match action {
                TlsAction::Show => https::Identities::load_or_create(dir).map(|_| ()),
                TlsAction::Next => https::Identities::create_next(dir).map(|_| ()),
                TlsAction::Retire => https::Identities::retire_current(dir).map(|_| ()),
            };
            done.unwrap_or_else(|e| fail(format!("TLS identity: {e}")));
            let ids = https::Identities::load_or_create(dir)
                .unwrap_or_else(|e| fail(format!("TLS identity: {e}")));
            print_json(&ids.fingerprints());
            if !matches!(action, TlsAction::Show) {
                eprintln!("staticwire-control: restart the server to announce/serve the change");
            }
            return;
        }
        Command::Restore { file } => match backup::restore(&cfg.data_dir, &cfg.db_path(), file) {
            Ok(n) => {
                print_json(&serde_json::json!({"restored": file, "rentals": n}));
                return;
            }
            Err(e) => fail(e),
        },
        _ => {}
    }
    let dev_backend = matches!(cfg.lightning, LightningConfig::Dev);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(e));
    let (mut service, tls) = build(cfg);
    // A serving control holds its data dir's lock, so `restore` cannot pull the database from
    // under it. Two servers on one data dir are a mistake, but not one to refuse to start over.
    let _lock = if let Command::Serve { .. } = command {
        match backup::try_lock(&service.cfg().data_dir) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                tracing::warn!("another staticwire-control is serving from this data dir");
                None
            }
            Err(e) => {
                tracing::warn!("data dir lock: {e}");
                None
            }
        }
    } else {
        None
    };
    if let Command::Serve { .. } = command {
        // Invoices of another network than the terms say would be refused by every client
        // while an address is held: agree with the node before serving anything.
        let node = rt.block_on(service.ln().network());
        let network =
            lightning::resolve_network(service.cfg().network(), node).unwrap_or_else(|e| fail(e));
        service.set_network(network);
        // Published as the terms' payee, so clients refuse invoices of another node.
        if service.payee().is_none() {
            let payee = rt.block_on(service.ln().node_id());
            service.set_payee(payee);
        }
        match service.payee() {
            Some(p) => tracing::info!(payee = %p, "invoices are signed by this node"),
            None => tracing::warn!("the node's public key is unknown (LND: getinfo needs info:read); the terms name no payee"),
        }
    }
    let service = Arc::new(service);
    match command {
        Command::Serve { dev_clock, .. } => {
            if dev_clock && !dev_backend {
                fail("--dev-hooks needs the dev Lightning backend");
            }
            rt.block_on(serve(service, tls, dev_clock));
        }
        Command::Fingerprint => println!("{}", tls.current.fingerprint()),
        Command::Tls { .. } => unreachable!("handled above"),
        Command::DevPay { bolt11 } => {
            let Backend::Dev(node) = &service.ln() else {
                fail("dev-pay only works with the dev Lightning backend");
            };
            let db = service.db().unwrap_or_else(|e| fail(e));
            match dev::pay(&db, &node.node_id, &bolt11, service.clock().now()) {
                Ok(p) => print_json(&serde_json::json!({
                    "paid": true, "payment_hash": p.payment_hash, "preimage": p.preimage
                })),
                Err(e) => fail(e),
            }
        }
        Command::Backup { .. } | Command::Restore { .. } | Command::Migrate { .. } => {
            unreachable!("handled above")
        }
        Command::Rentals { action } => {
            let key = match &action {
                RentalsAction::Suspend { public_key }
                | RentalsAction::Resume { public_key }
                | RentalsAction::Release { public_key } => Some(public_key.clone()),
                _ => None,
            };
            let out = match action {
                RentalsAction::List => service
                    .list()
                    .map(|l| serde_json::to_value(l).expect("json")),
                RentalsAction::Show { public_key } => service.show(&public_key),
                RentalsAction::Suspend { public_key } => service
                    .set_suspended(&public_key, true)
                    .map(|r| serde_json::to_value(r).expect("json")),
                RentalsAction::Resume { public_key } => service
                    .set_suspended(&public_key, false)
                    .map(|r| serde_json::to_value(r).expect("json")),
                RentalsAction::Release { public_key } => service
                    .release(&public_key)
                    .map(|r| serde_json::to_value(r).expect("json")),
            };
            match out {
                Ok(v) => print_json(&v),
                Err(e) => fail(e),
            }
            // Apply a change to its router now rather than at the server's next full compare.
            if let Some(key) = key {
                if let Err(e) = rt.block_on(service.push_one(&key)) {
                    tracing::warn!("the router takes the change at the next full compare: {e}");
                }
            }
        }
    }
}
