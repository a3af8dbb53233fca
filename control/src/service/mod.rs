//! The rental service: what the API and the background tasks do, over the database, the
//! Lightning backend and the routers. Split by concern:
//! - [`rentals`]: holding an address, renting, renewing, operator actions;
//! - [`invoices`]: making invoices, settlement, invoice checks and expiry;
//! - [`reconcile`]: what each router should hold, deadlines due, admissions and removals;
//! - [`views`]: the terms and a rental as the API shows them.
//!
//! The service's state is private; the loop (`crate::run`) and the faces (`crate::http`,
//! `crate::compat`, `crate::web`, `crate::metrics::scrape`) go through its methods, and nothing
//! here calls back up into them.

mod invoices;
mod ptr;
mod reconcile;
mod rentals;
mod space;
mod views;

pub use invoices::api_of;
pub use ptr::PtrError;
pub use reconcile::Removals;
pub use rentals::Hold;

use crate::clock::Clock;
use crate::config::Config;
use crate::feed::{Endpoints, RouterLink, SocketId};
use crate::ledger::Terms;
use crate::lightning::{Backend, LnError};
use crate::limits::Limits;
use crate::sql::Connection;
use crate::store;
use staticwire_api as api;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why a request was refused; the HTTP layer maps each to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid WireGuard public key: {0}")]
    BadKey(String),
    #[error("{0}")]
    BadMonths(String),
    #[error("no rental for this key")]
    NotFound,
    #[error("no such invoice")]
    NoInvoice,
    #[error("{0}")]
    Conflict(String),
    #[error("no free address left in the pools")]
    PoolExhausted,
    #[error("{0}")]
    BadRequest(String),
    /// The asking client prefix holds its cap of unpaid addresses (`crate::holds`).
    #[error("client {client} already holds {held} unpaid address(es), at most {max}: pay one or let its invoice expire")]
    TooManyUnpaid { client: String, held: u64, max: u32 },
    /// The listener's unpaid share of every host is held by clients that hold no more than the
    /// asking one (`crate::holds`).
    #[error("no address can be held unpaid now: this host's unpaid share is taken by clients holding no more than you; retry when an invoice is paid or expires")]
    UnpaidShareFull,
    #[error("{0}")]
    Lightning(#[from] LnError),
    #[error("internal error: {0}")]
    Internal(#[source] InternalError),
    #[error("the database cannot be written now ({0}); nothing was changed, retry later")]
    DatabaseUnavailable(String),
}

impl From<crate::sql::Error> for ServiceError {
    fn from(e: crate::sql::Error) -> Self {
        // The disk or the database server, not the request: answered 503 (retry later), and
        // the transaction was rolled back, so nothing is half-written.
        if e.is_unavailable() {
            ServiceError::DatabaseUnavailable(e.to_string())
        } else {
            ServiceError::Internal(InternalError::caused("database", e))
        }
    }
}

impl ServiceError {
    /// An internal error caused by `e` (kept as the source), with `e`'s message.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ServiceError::Internal(InternalError::from_error(e))
    }
}

/// What went wrong inside: a description, the error that caused it (kept as the source), or
/// both.
#[derive(Debug)]
pub struct InternalError {
    context: Option<std::borrow::Cow<'static, str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl InternalError {
    /// `context: e`, with `e` as the source.
    pub fn caused(
        context: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        InternalError {
            context: Some(context.into()),
            source: Some(Box::new(e)),
        }
    }

    /// `e` as it is, with `e` as the source.
    pub fn from_error(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        InternalError {
            context: None,
            source: Some(Box::new(e)),
        }
    }
}

impl From<&'static str> for InternalError {
    fn from(context: &'static str) -> Self {
        InternalError {
            context: Some(context.into()),
            source: None,
        }
    }
}

impl From<String> for InternalError {
    fn from(context: String) -> Self {
        InternalError {
            context: Some(context.into()),
            source: None,
        }
    }
}

impl std::fmt::Display for InternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.context, &self.source) {
            (Some(c), Some(e)) => write!(f, "{c}: {e}"),
            (Some(c), None) => f.write_str(c),
            (None, Some(e)) => write!(f, "{e}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

impl std::error::Error for InternalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Accepts standard or URL-safe base64 of exactly 32 bytes that are a usable X25519 public
/// key (not all zero, not a low-order point); returns the standard form.
pub fn parse_public_key(s: &str) -> Result<String, ServiceError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use base64::Engine;
    let bad = || ServiceError::BadKey("expected 32 bytes in base64 (44 characters)".into());
    if s.len() != 44 {
        return Err(bad());
    }
    let bytes = STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .map_err(|_| bad())?;
    let key = api::check_public_key(&bytes).map_err(|e| ServiceError::BadKey(e.to_string()))?;
    Ok(STANDARD.encode(key))
}

/// A key in a JSON body: standard base64 only (PROTOCOL.md section 4; the URL-safe alphabet is
/// for paths), then as [`parse_public_key`].
pub fn parse_body_key(s: &str) -> Result<String, ServiceError> {
    if s.contains(['-', '_']) {
        return Err(ServiceError::BadKey(
            "a key in a JSON body is standard base64 (+ and /), not URL-safe (- and _)".into(),
        ));
    }
    parse_public_key(s)
}

/// How often a long-poll re-reads its invoice when nothing here changed it.
const RECHECK: Duration = Duration::from_secs(1);

/// The invoice poll runs several times a second; a warning about the same invoice is logged
/// at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Rate-limits repeated warnings per subject (an invoice's payment hash).
pub struct WarnLimiter {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl WarnLimiter {
    pub fn new(every: Duration) -> Self {
        WarnLimiter {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a warning about `subject` may be logged now.
    pub fn allow(&self, subject: &str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        if last.len() > 4096 {
            let every = self.every;
            last.retain(|_, t| now.duration_since(*t) < every);
        }
        match last.get(subject) {
            Some(t) if now.duration_since(*t) < self.every => false,
            _ => {
                last.insert(subject.to_string(), now);
                true
            }
        }
    }
}

/// The rental service; see the module doc. Built once at start ([`Service::new`], then the
/// setters while it is not shared yet), then shared as an `Arc`.
pub struct Service {
    cfg: Config,
    terms: Terms,
    clock: Clock,
    db: Arc<Mutex<Connection>>,
    /// Read-only connections for reads of committed state (`Service::read`); none on
    /// PostgreSQL and in-memory tests.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    ln: Backend,
    routers: Vec<RouterLink>,
    /// Bumped whenever an invoice settles or expires, for long-polls.
    changed: watch::Sender<u64>,
    /// Customers' last endpoints as the routers reported them.
    endpoints: Mutex<Endpoints>,
    /// Of the HTTPS certificate, published in the terms.
    tls_fingerprint: Option<String>,
    /// Checks the proofs of key possession; its public key is the terms' `proof_key`.
    proof: Option<Arc<staticwire_api::proof::Verifier>>,
    /// The Lightning node that signs the invoices, published in the terms as `payee` and
    /// checked on every new invoice: the dev node's, or what `serve` learns from the node.
    payee: Option<String>,
    /// The Bitcoin network of the invoices, in the terms' spelling: the configured one, or
    /// the node's as `serve` learns it at start.
    network: &'static str,
    warnings: WarnLimiter,
    /// Whether the Lightning node's settlement stream is up: the invoice checks are then its
    /// safety net, far apart ([`Service::follow_settlements`]).
    stream_live: std::sync::atomic::AtomicBool,
    /// Set when the process stops: the loops end at their next wait, before the runtime
    /// that runs them goes ([`Service::stop`]).
    stopping: watch::Sender<bool>,
    /// The routers whose expiries and reconciliation this replica runs (None: all of them,
    /// as a single control on SQLite does); set from the leases in the database.
    owned: Mutex<Option<HashSet<String>>>,
    /// Per-client limits of the public listeners.
    limits: Arc<Limits>,
    /// Wakes the service loop: a deadline may have moved earlier.
    wake: tokio::sync::Notify,
    /// One conversation with the routers at a time, each deciding from the database as it is
    /// then, so an admission and a removal of one peer cannot overtake each other.
    feed_lock: tokio::sync::Mutex<()>,
    /// Routers that missed a change (down, restarted): fully compared at the next round.
    dirty: Mutex<HashSet<String>>,
    /// The per-peer limit lines of the terms, sent with every admission.
    peer_extra: String,
    /// The clock time of the last full compare: the service loop's deadline cursor starts
    /// there, so a deadline between that compare and the loop's start is not skipped.
    compared_at: std::sync::atomic::AtomicI64,
    /// Each router's socket (inode and change time) as last seen or fully compared: a new one
    /// is a restarted router.
    sockets: Mutex<HashMap<String, SocketId>>,
    /// Free IPv4 blocks and IPv6 prefixes per router (placement and the terms' free counts
    /// read it, never the pool); locked after the database when both are.
    space: Mutex<crate::freespace::FreeSpace>,
    /// Each router's free IPv4 addresses as last counted, for the terms: published by whoever
    /// holds the index, so a request for the terms never waits for a placement.
    free_published: HashMap<String, std::sync::atomic::AtomicU64>,
    /// The group commit of the rents, invoices and settlements (`crate::writer`).
    writer: Arc<crate::writer::GroupCommit>,
    /// Reverse DNS on the provider's DNS server, when `[rdns]` configures it.
    rdns: Option<Arc<crate::rdns::Rdns>>,
    /// PostgreSQL: a connection outside both group commits, each statement its own
    /// transaction: the shared replay cache (recording a proof neither commits an open batch
    /// nor waits behind it) and the lookups of committed state ([`Service::read`]).
    plain_db: Option<Mutex<Connection>>,
    /// The replay cache was last pruned of proofs older than this (Unix seconds).
    proofs_pruned: std::sync::atomic::AtomicU64,
    /// PostgreSQL: the changes that take no allocation lock (invoices, their next checks),
    /// on a connection and group commit of their own.
    side: Option<Side>,
}

/// A second connection with its own group commit (PostgreSQL only: SQLite has one writer).
/// The allocation lock, which every replica's placements wait for, is held by the first
/// connection's batches, which hold placements and settlements only ([`Service::stage_locking`]);
/// a rent's invoice goes here once its hold is committed. With one connection, each invoice
/// had to commit the batch holding the lock before it: a commit per rent, and no group.
struct Side {
    db: Arc<Mutex<Connection>>,
    writer: Arc<crate::writer::GroupCommit>,
}

impl Service {
    pub fn new(
        cfg: Config,
        clock: Clock,
        db: Arc<Mutex<Connection>>,
        ln: Backend,
        routers: Vec<RouterLink>,
    ) -> Result<Self, ServiceError> {
        let t = &cfg.terms;
        let month_secs = cfg.month_secs();
        let terms = Terms {
            activation_sat: t.activation_sat,
            monthly_sat: t.monthly_sat,
            month_secs,
            reservation_secs: t.reservation_months as i64 * month_secs,
            cooldown_secs: t.cooldown_days as i64 * 86_400,
            max_months: t.max_months,
        };
        {
            let db = db
                .lock()
                .map_err(|_| ServiceError::Internal("lock".into()))?;
            // One transaction: a commit (an fsync) per address made a large pool take minutes.
            let tx = db.unchecked_transaction()?;
            for r in &cfg.routers {
                store::seed_addresses(&tx, &r.name, &r.addresses())?;
            }
            tx.commit()?;
        }
        let (mut space, plain_db, side_db) = {
            let db = db
                .lock()
                .map_err(|_| ServiceError::Internal("lock".into()))?;
            (
                space::build(&db, &cfg, clock.now(), 0)?,
                // Its commits need not wait for the disk: see `crate::db::remember_proof`.
                db.another(Some("SET synchronous_commit = off"))?
                    .map(Mutex::new),
                db.another(None)?.map(|c| Arc::new(Mutex::new(c))),
            )
        };
        let free_published = cfg
            .routers
            .iter()
            .map(|r| {
                let free = space.free_v4(&r.name, clock.now()).unwrap_or(0);
                (r.name.clone(), std::sync::atomic::AtomicU64::new(free))
            })
            .collect();
        let writer = crate::writer::GroupCommit::start(&db);
        let side = side_db.map(|db| Side {
            writer: crate::writer::GroupCommit::start(&db),
            db,
        });
        if let Backend::Dev(node) = &ln {
            // Its invoice rows go where the control's invoices are staged.
            match &side {
                Some(side) => node.use_group_commit(side.writer.clone(), side.db.clone()),
                None => node.use_group_commit(writer.clone(), db.clone()),
            }
        }
        let network = cfg
            .network()
            .and_then(crate::network::normalize_network)
            .unwrap_or("bitcoin");
        // The dev node's key is known here; a real node's is asked for by `serve`.
        let payee = match &ln {
            Backend::Dev(node) => Some(node.node_id.to_string()),
            _ => None,
        };
        Ok(Service {
            readers: Vec::new(),
            next_reader: Default::default(),
            network,
            payee,
            warnings: WarnLimiter::new(WARN_EVERY),
            stream_live: std::sync::atomic::AtomicBool::new(false),
            stopping: watch::channel(false).0,
            owned: Mutex::new(None),
            limits: Limits::new(cfg.limits.clone()),
            wake: tokio::sync::Notify::new(),
            feed_lock: tokio::sync::Mutex::new(()),
            dirty: Mutex::new(Default::default()),
            peer_extra: cfg.terms.peer_limit_lines(),
            compared_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            sockets: Mutex::new(HashMap::new()),
            space: Mutex::new(space),
            free_published,
            writer,
            cfg,
            terms,
            clock,
            db,
            ln,
            routers,
            changed: watch::channel(0).0,
            endpoints: Mutex::new(Endpoints::new()),
            tls_fingerprint: None,
            proof: None,
            rdns: None,
            plain_db,
            proofs_pruned: std::sync::atomic::AtomicU64::new(0),
            side,
        })
    }

    /// The proof key (PROTOCOL.md 3.1), before the service is shared.
    pub fn set_proof(&mut self, v: staticwire_api::proof::Verifier) {
        self.proof = Some(Arc::new(v));
    }

    pub fn proof(&self) -> Option<&staticwire_api::proof::Verifier> {
        self.proof.as_deref()
    }

    /// Records an accepted proof of a request that changes state where every replica sees it
    /// (PROTOCOL.md 3.1): false when a replica already accepted the same proof (a replay).
    /// Reads are not recorded here (each replica remembers them in memory): a write per status
    /// poll would cost the database a commit per GET. On SQLite it is staged in the group
    /// commit, sharing the commit of the change it allows instead of costing one of its own
    /// (and, before it, the commit of the open batch that taking the connection for itself
    /// would force); a batch whose commit fails loses its proofs, which this replica still
    /// refuses (in memory). On PostgreSQL it has a connection of its own.
    pub fn share_proof(&self, proof: &api::proof::Proof, now: u64) -> Result<bool, ServiceError> {
        let mac: String = proof.mac.iter().map(|b| format!("{b:02x}")).collect();
        let oldest = now.saturating_sub(api::proof::WINDOW_SECONDS);
        // PostgreSQL: one statement on the plain connection, seen by every replica at
        // once. SQLite: in the open batch, sharing the commit of the change it allows.
        if self.plain_db.is_some() {
            // Pruned once a second (a proof older than the window is refused by its time).
            let pruned = self
                .proofs_pruned
                .fetch_max(oldest, std::sync::atomic::Ordering::Relaxed);
            let prune = (pruned < oldest).then_some(oldest);
            let db = self.plain()?;
            return Ok(crate::writer::blocking(|| {
                crate::db::remember_proof_alone(&db, &mac, proof.ts, prune)
            })?);
        }
        let (added, _) =
            self.stage(|tx| Ok(crate::db::remember_proof(tx, &mac, proof.ts, oldest)?))?;
        Ok(added)
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn ln(&self) -> &Backend {
        &self.ln
    }

    pub fn routers(&self) -> &[RouterLink] {
        &self.routers
    }

    /// The Bitcoin network of the invoices, in the terms' spelling.
    pub fn network(&self) -> &'static str {
        self.network
    }

    /// Sets the network `serve` learned from the node (before the service is shared).
    pub fn set_network(&mut self, network: &'static str) {
        self.network = network;
    }

    /// The Lightning node that signs the invoices (the terms' `payee`), if known.
    pub fn payee(&self) -> Option<&str> {
        self.payee.as_deref()
    }

    /// Sets the payee `serve` learned from the node (before the service is shared).
    pub fn set_payee(&mut self, payee: Option<String>) {
        self.payee = payee;
    }

    /// Publishes the HTTPS certificate's fingerprint in the terms.
    pub fn set_tls_fingerprint(&mut self, fingerprint: String) {
        self.tls_fingerprint = Some(fingerprint);
    }

    /// Per-client limits of the public listeners.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Sleeps for `wait` or until [`Service::wake`] is called, whichever comes first; true
    /// when woken (also when stopping).
    pub async fn sleep_unless_woken(&self, wait: Duration) -> bool {
        tokio::select! {
            woken = tokio::time::timeout(wait, self.wake.notified()) => woken.is_ok(),
            () = self.stopped() => true,
        }
    }

    /// Tells the loops to end (the process stops).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        self.wake();
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Answers once [`Service::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The clock time of the last full compare of every router (where the service loop's
    /// deadline cursor starts), if there was one.
    pub fn compared_at(&self) -> Option<i64> {
        match self.compared_at.load(std::sync::atomic::Ordering::SeqCst) {
            i64::MIN => None,
            t => Some(t),
        }
    }

    /// The routers whose rentals' invoices this replica checks: those it holds leases on
    /// when it runs some routers only (replicas on PostgreSQL), else None (every one). A
    /// router whose holder stops is taken over with its lease, and its invoices with it.
    pub fn checked_routers(&self) -> Option<Vec<String>> {
        let owned = self.owned.lock().ok()?;
        let set = owned.as_ref()?;
        if self.cfg.routers.iter().all(|r| set.contains(&r.name)) {
            return None;
        }
        let mut names: Vec<String> = set.iter().cloned().collect();
        names.sort();
        Some(names)
    }

    /// Records the routers this replica now runs (from its leases); returns whether the set
    /// changed.
    pub fn set_owned(&self, held: HashSet<String>) -> bool {
        let Ok(mut owned) = self.owned.lock() else {
            return false;
        };
        let changed = owned.as_ref() != Some(&held);
        *owned = Some(held);
        changed
    }

    /// Records `router`'s socket as seen now; returns whether it differs from the one last seen
    /// or compared against (a restarted router).
    pub fn note_socket(&self, router: &str, id: SocketId) -> bool {
        let seen = self
            .sockets
            .lock()
            .map(|mut ids| ids.insert(router.to_string(), id))
            .ok()
            .flatten();
        seen != Some(id)
    }

    /// The connection, with the open group-commit batch committed first: nothing uncommitted
    /// is read, and a transaction of the caller's own can begin.
    pub fn db(&self) -> Result<MutexGuard<'_, Connection>, ServiceError> {
        let db = crate::writer::lock_conn(&self.db)
            .map_err(|e| ServiceError::Internal(e.to_string().into()))?;
        if self.writer.is_open() {
            crate::writer::blocking(|| self.writer.flush(&db));
        }
        Ok(db)
    }

    /// PostgreSQL's plain connection (each statement its own transaction, never waiting for
    /// a batch: the router leases), else the connection as [`Service::db`] gives it.
    pub fn plain(&self) -> Result<MutexGuard<'_, Connection>, ServiceError> {
        match &self.plain_db {
            Some(plain) => crate::writer::lock_conn(plain)
                .map_err(|e| ServiceError::Internal(e.to_string().into())),
            None => self.db(),
        }
    }

    /// Runs `f` on a connection for a long read of committed state (every active rental):
    /// on PostgreSQL one opened for it, a session of its own; on SQLite one of the readers
    /// ([`Service::read`]). Nothing that places, settles or expires waits for it.
    pub(crate) fn long_read<T, E: From<ServiceError>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        // Only PostgreSQL has the plain connection; asking the writer's would wait for it.
        let own = match &self.plain_db {
            Some(_) => self
                .plain()?
                .another(None)
                .map_err(|e| E::from(ServiceError::from(e)))?,
            None => None,
        };
        match &own {
            Some(c) => f(c),
            None => f(&*self.read()?),
        }
    }

    /// A connection for a read of committed state only (a status lookup): one of the readers
    /// (no wait for the open batch, its commit or the service loop's work), PostgreSQL's
    /// plain connection, or else the connection after committing the open batch, as
    /// [`Service::db`].
    pub fn read(&self) -> Result<MutexGuard<'_, Connection>, ServiceError> {
        if self.plain_db.is_some() {
            return self.plain();
        }
        if self.readers.is_empty() {
            return self.db();
        }
        let poisoned = || ServiceError::Internal("database reader lock poisoned".into());
        for r in &self.readers {
            match r.try_lock() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        crate::writer::lock_conn(&self.readers[i]).map_err(|_| poisoned())
    }

    /// Every connection of the service, its readers after the writer's (tests count the
    /// SQLite steps of a request on all of them).
    #[cfg(test)]
    pub(crate) fn each_connection(&self, mut f: impl FnMut(&Connection)) {
        f(&self.db().expect("db"));
        for r in &self.readers {
            f(&r.lock().expect("reader"));
        }
    }

    /// Gives the service read-only connections to its SQLite file (`db::open_readers`).
    pub fn set_readers(&mut self, readers: Vec<Connection>) {
        self.readers = readers.into_iter().map(Mutex::new).collect();
    }

    /// The connection as it is, the open group-commit batch included (not committed first):
    /// for reads that a staged, not yet durable change cannot mislead (scheduling, a rental
    /// whose own change is durable already). Never for a transaction.
    /// On PostgreSQL the second connection ([`Side`]): these reads never keep the allocation
    /// lock's batches waiting.
    pub fn peek(&self) -> Result<MutexGuard<'_, Connection>, ServiceError> {
        let db = self.side.as_ref().map_or(&self.db, |s| &s.db);
        crate::writer::lock_conn(db).map_err(|e| ServiceError::Internal(e.to_string().into()))
    }

    /// Runs `f` in the open group-commit batch; its change is durable once
    /// [`Service::durable`] of the ticket answers (answer nobody before). `f` changes no
    /// unpaid hold and takes no allocation lock; on PostgreSQL it runs on the second
    /// connection ([`Side`]), so it sees only committed changes of the first.
    pub(crate) fn stage<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ServiceError>,
    ) -> Result<(T, crate::writer::Ticket), ServiceError> {
        match &self.side {
            Some(side) => {
                let db = side
                    .writer
                    .lock(&side.db)
                    .map_err(|e| ServiceError::Internal(e.to_string().into()))?;
                side.writer.stage(&db, f)
            }
            None => self.stage_locking(f),
        }
    }

    /// Answers once the batch of a staged change is committed: Ok, or the commit's error.
    pub(crate) async fn durable(&self, t: crate::writer::Ticket) -> Result<(), ServiceError> {
        match &self.side {
            Some(side) if side.writer.issued(t) => side.writer.durable(t).await?,
            _ => self.writer.durable(t).await?,
        }
        Ok(())
    }

    /// Whether changes staged by [`Service::stage`] see the staged, not yet committed ones of
    /// [`Service::stage_locking`] (one connection: SQLite).
    pub(crate) fn stages_share_a_batch(&self) -> bool {
        self.side.is_none()
    }

    /// [`Service::stage`] of a change that takes the allocation lock or changes an unpaid
    /// hold (a placement, a settlement): on the writer's connection, whose batches on
    /// PostgreSQL hold nothing else ([`Side`]).
    pub(crate) fn stage_locking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ServiceError>,
    ) -> Result<(T, crate::writer::Ticket), ServiceError> {
        let db = self
            .writer
            .lock(&self.db)
            .map_err(|e| ServiceError::Internal(e.to_string().into()))?;
        if let Ok(mut space) = self.space.lock() {
            space.unpaid.mark();
        }
        let out = self.writer.stage(&db, f);
        if out.is_err() {
            // Its savepoint (or the whole batch) was rolled back: the unpaid holds it touched
            // are counted as the database has them again. A lost batch rebuilds the index
            // (`Service::space`).
            let mut space = self
                .space
                .lock()
                .map_err(|_| ServiceError::Internal("free-space lock poisoned".into()))?;
            space.unpaid.resync_touched(&db, 0)?;
        }
        out
    }

    /// A connection of its own to this service's database, for another replica (tests; None
    /// on SQLite).
    #[cfg(any(test, feature = "testkit"))]
    pub fn another_connection(&self) -> Option<Connection> {
        self.peek().ok()?.another(None).ok().flatten()
    }

    /// The group commit (tests inject a failed commit through it).
    #[cfg(test)]
    pub(crate) fn group_commit(&self) -> &crate::writer::GroupCommit {
        &self.writer
    }

    /// Wakes the service loop (a deadline may now be earlier than it sleeps).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Marks a router for a full compare. One whose socket is missing is left to the socket
    /// watcher, which marks it when the socket appears.
    pub fn mark_dirty(&self, router: &str) {
        if !self.router(router).is_some_and(|r| r.socket.exists()) {
            return;
        }
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(router.to_string());
        }
        self.wake();
    }

    pub fn take_dirty(&self) -> HashSet<String> {
        self.dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    pub fn has_dirty(&self) -> bool {
        self.dirty.lock().map(|d| !d.is_empty()).unwrap_or(false)
    }

    fn router(&self, name: &str) -> Option<&RouterLink> {
        self.routers.iter().find(|r| r.name == name)
    }

    /// Whether this replica runs the expiries and reconciliation of `router`.
    pub fn owns(&self, router: &str) -> bool {
        match self.owned.lock() {
            Ok(o) => o.as_ref().is_none_or(|set| set.contains(router)),
            Err(_) => false,
        }
    }

    fn known_endpoints(&self) -> Endpoints {
        self.endpoints.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}
