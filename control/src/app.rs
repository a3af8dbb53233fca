//! Starting the server: from a configuration to a built service ([`build`]: data dir, database,
//! Lightning backend, router keys, TLS identity), agreeing with the Lightning node
//! ([`agree_with_node`]) and serving it on its listeners until a signal ([`serve`]). The binary
//! (main.rs) parses the command line and turns a [`StartError`] into its message and exit status.
//!
//! Layer: above the loop and the faces, which it wires together; only main.rs imports it.

use crate::config::{Config, LightningConfig};
use crate::feed::RouterLink;
use crate::lightning::{cln::Cln, dev, lnd::Lnd, Backend, LnError, NetworkError};
use crate::metrics::scrape::MetricsError;
use crate::service::{Service, ServiceError};
use crate::{
    clock, compat, datadir, db, http, https, lease, lightning, limits, metrics, run, secrets,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Why the server could not start (or go on serving). Each message is what the binary prints
/// after `staticwire-control: ` before it exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be made, or a secret in it not tightened.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    /// The data dir belongs to another user, or could not be tightened.
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error("dev node key: {0}")]
    DevKey(std::io::Error),
    /// The LND backend could not be set up (macaroon, certificate, URL).
    #[error(transparent)]
    Lightning(#[from] LnError),
    #[error("router {router} key: {source}")]
    RouterKey {
        router: String,
        source: std::io::Error,
    },
    #[error("TLS certificate: {0}")]
    Tls(std::io::Error),
    #[error("proof key: {0}")]
    ProofKey(std::io::Error),
    /// The `[rdns]` TSIG key or zones are unusable.
    #[error(transparent)]
    Rdns(#[from] crate::rdns::RdnsError),
    #[error("cannot listen on the tunnel listener {addr}: {source}")]
    TunnelListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The configuration does not make a service (e.g. pools).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The configured network and the node's disagree, or neither is known.
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(MetricsError),
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve HTTPS on {addr}: {source}")]
    Https {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// SIGTERM could not be caught.
    #[error("{0}")]
    Signal(std::io::Error),
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

/// The service over `cfg`: the data dir (secrets tightened), the database, the Lightning
/// backend, each router's key and the HTTPS identity. Not yet serving.
pub fn build(cfg: Config) -> Result<(Service, https::Identities), StartError> {
    // SQLite's database file is made 0600 before SQLite opens it (PostgreSQL: no file here).
    let db_file = (!cfg.is_postgres()).then(|| cfg.db_path());
    secrets::create_data_dir(&cfg.data_dir, db_file.as_deref())?;
    datadir::secure(&cfg.data_dir)?;
    for f in secrets::tighten(&cfg.data_dir)? {
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
    let tsig = cfg.rdns.tsig_key_file.clone();
    for path in outside.chain(macaroon).chain(tsig) {
        if let Some(mode) = secrets::readable_by_others(&path) {
            tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "a secret is readable by others: chmod 600 it (or 640 for a trusted group)");
        }
    }
    let conn = db::open_url(&cfg.database_url())?;
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
                .map_err(StartError::DevKey)?;
            Backend::Dev(dev::DevNode::new(key, db.clone()))
        }
        LightningConfig::Lnd {
            url,
            macaroon,
            tls_cert,
            ..
        } => Backend::Lnd(Lnd::new(url, macaroon, tls_cert)?),
        LightningConfig::Cln { socket, .. } => Backend::Cln(Cln::new(socket)),
    };
    let routers = cfg
        .routers
        .iter()
        .map(|r| {
            let (private_key, public_key) =
                router_key(&cfg.key_file(r)).map_err(|source| StartError::RouterKey {
                    router: r.name.clone(),
                    source,
                })?;
            Ok(RouterLink {
                name: r.name.clone(),
                socket: r.socket.clone(),
                listen_port: r.listen_port,
                private_key,
                public_key,
                socket_uid: r.socket_uid,
            })
        })
        .collect::<Result<_, StartError>>()?;
    let tls = https::Identities::load_or_create(&cfg.data_dir).map_err(StartError::Tls)?;
    let proof = secrets::proof_key(&cfg.data_dir).map_err(StartError::ProofKey)?;
    let rdns = crate::rdns::Rdns::from_config(&cfg.rdns)?;
    let readers = db::open_readers(&cfg.database_url(), db::READERS)?;
    let mut service = Service::new(cfg, clock, db, ln, routers)?;
    service.set_readers(readers);
    if let Some(rdns) = rdns {
        service.set_rdns(rdns);
    }
    service.set_tls_fingerprint(tls.current.fingerprint());
    service.set_proof(staticwire_api::proof::Verifier::new(
        proof,
        staticwire_api::proof::DEFAULT_MAX_SEEN,
    ));
    Ok((service, tls))
}

/// Before serving: the network the terms publish, agreed with the node (invoices of another
/// network would be refused by every client while an address is held), and the node's key as
/// the terms' payee, so clients refuse invoices of another node.
pub async fn agree_with_node(service: &mut Service) -> Result<(), StartError> {
    let node = service.ln().network().await;
    let network = lightning::resolve_network(service.cfg().network(), node)?;
    service.set_network(network);
    if service.payee().is_none() {
        let payee = service.ln().node_id().await;
        service.set_payee(payee);
    }
    match service.payee() {
        Some(p) => tracing::info!(payee = %p, "invoices are signed by this node"),
        None => tracing::warn!("the node's public key is unknown (LND: getinfo needs info:read); the terms name no payee"),
    }
    Ok(())
}

/// Serves `service` until SIGINT or SIGTERM: `/v1` (and the page) on `listen`, the original
/// client's protocol over HTTPS and `/metrics` when configured, beside the settlement stream,
/// the deadline loop and this replica's router leases. `dev_clock`: the test hooks.
pub async fn serve(
    service: Arc<Service>,
    tls: https::Identities,
    dev_clock: bool,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(service.cfg().listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: service.cfg().listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, network = service.network(), "staticwire-control listening");
    for t in service.api_terms().servers {
        tracing::info!(endpoint = %t.endpoint, public_key = %t.public_key, "router");
    }
    if let Some(addr) = service.cfg().metrics.listen {
        let handle = metrics::scrape::install().map_err(StartError::Metrics)?;
        metrics::scrape::init(&service);
        let listener = metrics::scrape::bind(addr)
            .await
            .map_err(|source| StartError::MetricsListen { addr, source })?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Prometheus metrics at /metrics");
        tokio::spawn(metrics::scrape::serve(listener, service.clone(), handle));
    }
    // With PostgreSQL, replicas share the work: each router's expiries and reconciliation run
    // on the replica holding its lease.
    let replica = lease::replica_id();
    run::leases::refresh(&service, &replica);
    let beat = Arc::new(run::leases::Heartbeat::default());
    tokio::spawn(run::leases::keep(
        service.clone(),
        replica.clone(),
        beat.clone(),
    ));
    // Crash recovery first: settle what was paid while we were down, fix every router.
    beat.busy();
    if let Err(e) = service.check_invoices().await {
        tracing::warn!("{e}");
    }
    if let Err(e) = service.reconcile().await {
        tracing::warn!("{e}");
    }
    // Backends that can push settlements do; the poll below catches anything missed.
    tokio::spawn(service.clone().follow_settlements());
    // Deadlines, invoice checks, leases and the rare full compare (control/src/deadlines.rs).
    let service_loop = tokio::spawn(run::run(service.clone(), beat));
    // Reverse DNS: the full compare at start, then on its own schedule (control/src/rdns).
    let rdns_loop = tokio::spawn(run::rdns::run(service.clone()));
    if let Some(addr) = service.cfg().rdns.tunnel_listen {
        // /v1 for requests from inside the tunnels, where a rental's own source address may
        // stand in for its proof on the reverse-DNS routes (PROTOCOL.md, Reverse DNS).
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::TunnelListen { addr, source })?;
        tracing::info!(%addr, "tunnel listener (reverse DNS from inside the tunnels)");
        let app = http::tunnel_router(service.clone())
            .layer(axum::middleware::from_fn(metrics::events::track_http));
        let limits = service.limits().clone();
        tokio::spawn(limits::serve(
            listener,
            app,
            limits,
            None,
            std::future::pending::<()>(),
        ));
    }
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
            .map_err(|source| StartError::Https { addr, source })?;
        tracing::info!(addr = %bound, fingerprint = %tls.current.fingerprint(), next = ?tls.next.as_ref().map(https::Identity::fingerprint), "HTTPS (StaticWire client protocol and /v1)");
    }
    let limits = service.limits().clone();
    let app = http::router(service.clone(), dev_clock)
        .merge(https::well_known(tls.fingerprints()))
        .layer(axum::middleware::from_fn(metrics::events::track_http));
    // Registered here rather than at the shutdown future's first poll (inside limits::serve,
    // an instant later) so that failing to is an error to return.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StartError::Signal)?;
    let shutdown = async move {
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
    // The loops end at their next wait, while the runtime still runs them (a loop inside a
    // database call when the runtime goes would find no timer to wait on).
    service.stop();
    let ended = async {
        let _ = service_loop.await;
        let _ = rdns_loop.await;
    };
    if tokio::time::timeout(STOP_WAIT, ended).await.is_err() {
        tracing::warn!("the service loop did not end in {STOP_WAIT:?}; stopping anyway");
    }
    Ok(())
}

/// How long a stop waits for the service loops to end.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
