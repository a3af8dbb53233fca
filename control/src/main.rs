//! staticwire-control: the StaticWire rental server and its operator commands.

use clap::{Parser, Subcommand};
use staticwire_control::config::{Config, LightningConfig};
use staticwire_control::lightning::{dev, Backend};
use staticwire_control::{app, backup, db, https, migrate};
use std::path::PathBuf;
use std::sync::Arc;

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
        // Colours only on a terminal: under systemd stderr is the journal, where escape codes
        // split every `field=value` of a line.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let (mut service, tls) = app::build(cfg).unwrap_or_else(|e| fail(e));
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
        // Agree with the node before serving anything (app::agree_with_node).
        rt.block_on(app::agree_with_node(&mut service))
            .unwrap_or_else(|e| fail(e));
    }
    let service = Arc::new(service);
    match command {
        Command::Serve { dev_clock, .. } => {
            if dev_clock && !dev_backend {
                fail("--dev-hooks needs the dev Lightning backend");
            }
            rt.block_on(app::serve(service, tls, dev_clock))
                .unwrap_or_else(|e| fail(e));
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
