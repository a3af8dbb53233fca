//! The rental service: what the API and the background tasks do, over the database, the
//! Lightning backend and the routers.

use crate::alloc::{AllocError, Want};
use crate::clock::Clock;
use crate::config::Config;
use crate::feed::{decode_key, Endpoints, RouterLink};
use crate::ledger::{self, RenewError, Terms};
use crate::lightning::{Backend, LnError, Settlement, Status};
use crate::sql::Connection;
use crate::store::{self, InvoiceRow, RentalRow};
use staticwire_api as api;
use staticwire_api::{InvoicePurpose, InvoiceState, RentalState};
use std::collections::HashMap;
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
    #[error("{0}")]
    Conflict(String),
    #[error("no free address left in the pools")]
    PoolExhausted,
    #[error("{0}")]
    BadRequest(String),
    #[error("{client} already holds {max} unpaid rentals: pay one or let its invoice expire")]
    TooManyUnpaid {
        client: crate::limits::ClientId,
        max: u32,
    },
    #[error("{0}")]
    Lightning(#[from] LnError),
    #[error("internal error: {0}")]
    Internal(String),
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
            ServiceError::Internal(format!("database: {e}"))
        }
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

/// How often a long-poll re-reads its invoice when nothing here changed it.
const RECHECK: Duration = Duration::from_secs(1);

/// The advisory lock key under which rentals are placed (PostgreSQL).
const ALLOCATION_LOCK: i64 = 0x5357_414c; // "SWAL"

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

pub struct Service {
    pub cfg: Config,
    pub terms: Terms,
    pub clock: Clock,
    db: Arc<Mutex<Connection>>,
    pub ln: Backend,
    pub routers: Vec<RouterLink>,
    /// Bumped whenever an invoice settles or expires, for long-polls.
    changed: watch::Sender<u64>,
    /// Customers' last endpoints as the routers reported them.
    endpoints: Mutex<Endpoints>,
    /// Of the HTTPS certificate, published in the terms.
    pub tls_fingerprint: Option<String>,
    /// The Lightning node that signs the invoices, published in the terms as `payee` and
    /// checked on every new invoice: the dev node's, or what `serve` learns from the node.
    pub payee: Option<String>,
    /// The Bitcoin network of the invoices, in the terms' spelling: the configured one, or
    /// the node's as `serve` learns it at start.
    pub network: &'static str,
    warnings: WarnLimiter,
    /// The routers whose expiries and reconciliation this replica runs (None: all of them,
    /// as a single control on SQLite does); set from the leases in the database.
    pub owned: Mutex<Option<std::collections::HashSet<String>>>,
    /// Per-client limits of the public listeners.
    pub limits: Arc<crate::limits::Limits>,
    /// Wakes the service loop: a deadline may have moved earlier.
    pub(crate) wake: tokio::sync::Notify,
    /// One conversation with the routers at a time, each deciding from the database as it is
    /// then, so an admission and a removal of one peer cannot overtake each other.
    pub(crate) feed_lock: tokio::sync::Mutex<()>,
    /// Routers that missed a change (down, restarted): fully compared at the next round.
    dirty: Mutex<std::collections::HashSet<String>>,
    /// The per-peer limit lines of the terms, sent with every admission.
    pub(crate) peer_extra: String,
    /// The clock time of the last full compare: the service loop's deadline cursor starts
    /// there, so a deadline between that compare and the loop's start is not skipped.
    pub(crate) compared_at: std::sync::atomic::AtomicI64,
    /// Each router's socket (inode and change time) as last seen or fully compared: a new one
    /// is a restarted router.
    pub(crate) sockets: Mutex<HashMap<String, crate::deadlines::SocketId>>,
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
        let network = cfg
            .network()
            .and_then(crate::lightning::normalize_network)
            .unwrap_or("bitcoin");
        // The dev node's key is known here; a real node's is asked for by `serve`.
        let payee = match &ln {
            Backend::Dev(node) => Some(node.node_id.to_string()),
            _ => None,
        };
        Ok(Service {
            network,
            payee,
            warnings: WarnLimiter::new(WARN_EVERY),
            owned: Mutex::new(None),
            limits: crate::limits::Limits::new(cfg.limits.clone()),
            wake: tokio::sync::Notify::new(),
            feed_lock: tokio::sync::Mutex::new(()),
            dirty: Mutex::new(Default::default()),
            peer_extra: cfg.terms.peer_limit_lines(),
            compared_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            sockets: Mutex::new(HashMap::new()),
            cfg,
            terms,
            clock,
            db,
            ln,
            routers,
            changed: watch::channel(0).0,
            endpoints: Mutex::new(Endpoints::new()),
            tls_fingerprint: None,
        })
    }

    pub fn db(&self) -> Result<MutexGuard<'_, Connection>, ServiceError> {
        self.db
            .lock()
            .map_err(|_| ServiceError::Internal("database lock poisoned".into()))
    }

    /// Wakes the service loop (a deadline may now be earlier than it sleeps).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Marks a router for a full compare. One whose socket is missing is left to the socket
    /// watcher, which marks it when the socket appears.
    pub(crate) fn mark_dirty(&self, router: &str) {
        if !self.router(router).is_some_and(|r| r.socket.exists()) {
            return;
        }
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(router.to_string());
        }
        self.wake();
    }

    pub(crate) fn take_dirty(&self) -> std::collections::HashSet<String> {
        self.dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty.lock().map(|d| !d.is_empty()).unwrap_or(false)
    }

    fn router(&self, name: &str) -> Option<&RouterLink> {
        self.routers.iter().find(|r| r.name == name)
    }

    fn server_of(&self, router: &str) -> api::Server {
        let (endpoint, public_key) = match (
            self.router(router),
            self.cfg.routers.iter().find(|r| r.name == router),
        ) {
            (Some(link), Some(rc)) => (rc.endpoint.clone(), link.public_key_b64()),
            _ => (String::new(), String::new()),
        };
        let rc = self.cfg.routers.iter().find(|r| r.name == router);
        api::Server {
            endpoint,
            public_key,
            name: router.to_string(),
            free_ipv4: None,
            ipv6_prefix_len: rc.and_then(|r| r.ipv6_pool.map(|_| r.ipv6_prefix_len)),
        }
    }

    pub fn api_terms(&self) -> api::Terms {
        let t = &self.terms;
        api::Terms {
            activation_sat: t.activation_sat,
            monthly_sat: t.monthly_sat,
            first_payment_sat: t.activation_sat + t.monthly_sat,
            month_seconds: t.month_secs as u64,
            reservation_seconds: t.reservation_secs as u64,
            invoice_expiry_seconds: self.cfg.terms.invoice_expiry_secs,
            max_months: t.max_months,
            network: self.network.to_string(),
            servers: self.hosts(),
            tls_fingerprint: self.tls_fingerprint.clone(),
            payee: self.payee.clone(),
            ipv4_prefix_lengths: self.cfg.prefix_lengths(),
            address_monthly_sat: self.address_monthly_sat(),
            ipv6_monthly_sat: self.cfg.terms.ipv6_monthly_sat,
            ipv6_only_monthly_sat: self.cfg.terms.ipv6_only_monthly_sat,
        }
    }

    fn rental_view(
        &self,
        db: &Connection,
        r: &RentalRow,
        now: i64,
    ) -> Result<api::Rental, ServiceError> {
        let acc = r.account();
        let state = acc.state(&self.terms, now);
        let open = if state == RentalState::Released {
            None
        } else {
            store::open_invoice(db, r.id, now)?
        };
        let amount_due_sat = match (&open, state) {
            (Some(inv), RentalState::Pending) => (inv.amount_msat / 1000) as u64,
            _ => ledger::amount_due(&self.terms_of(r), &acc, now),
        };
        Ok(api::Rental {
            public_key: r.public_key.clone(),
            state,
            address: r.address.clone(),
            created_at: r.created_at,
            started_at: r.started_at,
            paid_until: acc.paid_until(),
            months_owed: if matches!(state, RentalState::Lapsed | RentalState::Suspended) {
                acc.months_owed(&self.terms, now)
            } else {
                0
            },
            amount_due_sat,
            reserved_until: if state == RentalState::Lapsed {
                acc.reserved_until(&self.terms)
            } else {
                None
            },
            open_invoice: open.map(|i| i.to_api()),
            server: self.server_of(&r.router),
            prefix_len: r.prefix_len,
            ipv6: r.ipv6.clone(),
        })
    }

    fn description(&self, r: &RentalRow, what: &str) -> String {
        let held = match r.networks_of() {
            Some(n) if !n.is_single() => n.cidrs().join(" "),
            _ => r.address.clone(),
        };
        format!("StaticWire {what}: {held} for {}", r.public_key)
    }
}

/// The outcome of asking for an address.
pub enum Hold {
    /// The key already has a pending rental with an open invoice: the same answer again.
    Existing(Box<api::InvoiceResponse>),
    /// A new pending rental holding an address; its first invoice is still to be made.
    New(RentalRow),
}

impl Service {
    /// Holds a free address for `key` (or finds its pending rental). A new hold asked for by
    /// `client` counts against its cap of unpaid holds.
    pub fn hold(
        &self,
        key: &str,
        now: i64,
        client: Option<crate::limits::ClientId>,
    ) -> Result<Hold, ServiceError> {
        self.hold_with(key, now, client, &Want::default())
    }

    /// [`Service::hold`] of what `want` asks for: an IPv4 prefix, IPv6, a host.
    pub fn hold_with(
        &self,
        key: &str,
        now: i64,
        client: Option<crate::limits::ClientId>,
        want: &Want,
    ) -> Result<Hold, ServiceError> {
        let mut db = self.db()?;
        let tx = db.transaction()?;
        // Replicas on one PostgreSQL place rentals one at a time: no block goes out twice.
        tx.lock_for_transaction(ALLOCATION_LOCK)?;
        if let Some(r) = store::live_rental(&tx, key)? {
            match r.account().state(&self.terms, now) {
                RentalState::Pending => {
                    if let Some(inv) = store::open_invoice(&tx, r.id, now)? {
                        // Asking again returns the same invoice instead of a second address.
                        let view = self.rental_view(&tx, &r, now)?;
                        return Ok(Hold::Existing(Box::new(api::InvoiceResponse {
                            rental: view,
                            invoice: inv.to_api(),
                        })));
                    }
                    if now - r.created_at < 60 {
                        return Err(ServiceError::Conflict(
                            "this rental's invoice is being created; retry".into(),
                        ));
                    }
                    store::drop_hold(&tx, r.id, now, "unpaid")?;
                }
                RentalState::Released => {
                    let cool = r.account().reserved_until(&self.terms).unwrap_or(now)
                        + self.terms.cooldown_secs;
                    store::release(&tx, r.id, now, "reservation_ended", cool)?;
                }
                state => {
                    return Err(ServiceError::Conflict(format!(
                        "this key already rents {} ({state:?}); renew it instead",
                        r.address
                    )))
                }
            }
        }
        if let Some(client) = client {
            self.check_unpaid_cap(&tx, client)?;
        }
        let place = match crate::alloc::place(&tx, &self.cfg, want, now)? {
            Ok(p) => p,
            Err(AllocError::Exhausted) => return Err(ServiceError::PoolExhausted),
            Err(e) => return Err(ServiceError::BadRequest(e.to_string())),
        };
        // The "rented" event is written with the first invoice: a hold whose invoice cannot be
        // made is deleted without a trace.
        let id = store::insert_rental_with(
            &tx,
            key,
            &place.address.map(|a| a.to_string()).unwrap_or_default(),
            place.prefix_len,
            place.ipv6.map(|n| n.to_string()).as_deref(),
            &place.router,
            now,
        )?;
        if let Some(client) = client {
            crate::deadlines::set_client(&tx, id, &client.to_string())?;
        }
        tx.commit()?;
        self.wake();
        Ok(Hold::New(store::rental_by_id(&db, id)?))
    }

    /// Refuses a new hold when `client` already has `max_unpaid_per_client` rentals that are
    /// live and unpaid. Counted from the database (the hold's `client` column), so a restart
    /// does not reset the cap.
    fn check_unpaid_cap(
        &self,
        db: &Connection,
        client: crate::limits::ClientId,
    ) -> Result<(), ServiceError> {
        let max = self.limits.cfg.max_unpaid_per_client;
        if crate::deadlines::unpaid_holds_of(db, &client.to_string())? >= u64::from(max) {
            return Err(ServiceError::TooManyUnpaid { client, max });
        }
        Ok(())
    }

    /// Gives a hold back when its first invoice could not be made: the rejected request
    /// leaves nothing behind (no rental, so `GET /v1/rentals/{key}` stays 404).
    pub fn unhold(&self, rental: &RentalRow, now: i64) -> Result<(), ServiceError> {
        let db = self.db()?;
        store::drop_hold(&db, rental.id, now, "invoice_failed")?;
        Ok(())
    }

    /// RentNewIP: hold an address for `key` and return the first invoice. `client` is who
    /// asked (None for operator and test calls: no per-client cap).
    pub async fn rent(
        &self,
        key: &str,
        client: Option<crate::limits::ClientId>,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        self.rent_with(key, client, &Want::default()).await
    }

    /// [`Service::rent`] of an IPv4 prefix, with or without IPv6, on a given host.
    pub async fn rent_with(
        &self,
        key: &str,
        client: Option<crate::limits::ClientId>,
        want: &Want,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let rental = match self.hold_with(&key, now, client, want)? {
            Hold::Existing(resp) => return Ok(*resp),
            Hold::New(r) => r,
        };
        let quote = ledger::activation_quote(&self.terms_of(&rental));
        match self
            .invoice_for(&rental, quote, InvoicePurpose::Activation, now)
            .await
        {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // No invoice, no hold: give the address back at once.
                self.unhold(&rental, now)?;
                Err(e)
            }
        }
    }

    async fn invoice_for(
        &self,
        r: &RentalRow,
        quote: ledger::Quote,
        purpose: InvoicePurpose,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let what = match purpose {
            InvoicePurpose::Activation => "activation and first month".to_string(),
            InvoicePurpose::Renewal => format!("{} month(s)", quote.months),
        };
        self.invoice_with(
            r,
            quote.amount_sat,
            &what,
            purpose,
            store::Credit::Months(quote.months),
            now,
        )
        .await
    }

    /// Creates an invoice of `amount_sat` that credits `credit` when paid.
    pub async fn invoice_with(
        &self,
        r: &RentalRow,
        amount_sat: u64,
        what: &str,
        purpose: InvoicePurpose,
        credit: store::Credit,
        now: i64,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let expiry = Duration::from_secs(self.cfg.terms.invoice_expiry_secs);
        let new = self
            .ln
            .create_invoice(amount_sat * 1000, &self.description(r, what), expiry, now)
            .await?;
        // A customer's client refuses an invoice of another payee than the terms name.
        if let Some(payee) = &self.payee {
            let got = crate::lightning::invoice_payee(&new.bolt11);
            if got.as_ref() != Some(payee) {
                return Err(LnError::Protocol(format!(
                    "the node made an invoice payable to {}, but the published payee is {payee}",
                    got.as_deref().unwrap_or("nobody")
                ))
                .into());
            }
        }
        // A customer's client refuses an invoice of another network; refuse it first.
        match crate::lightning::invoice_network(&new.bolt11) {
            Some(n) if n == self.network => {}
            other => {
                return Err(LnError::Protocol(format!(
                    "the node made an invoice for {}, but the network is {}",
                    other.unwrap_or("an unknown network"),
                    self.network
                ))
                .into())
            }
        }
        let mut db = self.db()?;
        let tx = db.transaction()?;
        if purpose == InvoicePurpose::Activation && store::invoices_of(&tx, r.id)?.is_empty() {
            store::event(
                &tx,
                now,
                Some(r.id),
                "rented",
                &serde_json::json!({"address": r.address}),
            )?;
        }
        store::insert_invoice(
            &tx,
            &new.payment_hash,
            r.id,
            &new.bolt11,
            amount_sat * 1000,
            purpose,
            credit,
            now,
            new.expires_at,
        )?;
        store::set_invoice_api(&tx, &new.payment_hash, crate::metrics::api_of(credit))?;
        tx.commit()?;
        self.wake();
        let inv = store::invoice_by_hash(&db, &new.payment_hash)?
            .ok_or_else(|| ServiceError::Internal("invoice vanished".into()))?;
        Ok(api::InvoiceResponse {
            rental: self.rental_view(&db, r, now)?,
            invoice: inv.to_api(),
        })
    }

    /// GetRentalStatus.
    pub fn status(&self, key: &str) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::latest_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        self.rental_view(&db, &r, now)
    }

    /// GetConf: the wg-quick file without the private key.
    pub fn config(&self, key: &str) -> Result<api::ConfigResponse, ServiceError> {
        let status = self.status(key)?;
        if status.state == RentalState::Released {
            return Err(ServiceError::Conflict("the rental was released".into()));
        }
        let s = &status.server;
        let keepalive = 25;
        let net = crate::prefixes::Networks::of_view(&status);
        let allowed = net.allowed_ips();
        let routed = if net.is_single() {
            String::new()
        } else {
            format!("# Routed to you: {}\n", net.cidrs().join(", "))
        };
        let wg_quick = format!(
            "[Interface]\n# PrivateKey = <the private key of {}; never sent to the server>\nAddress = {}\n{routed}\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}\nPersistentKeepalive = {keepalive}\n",
            status.public_key,
            net.interface_addresses().join(", "),
            s.public_key,
            s.endpoint,
            allowed.join(", ")
        );
        Ok(api::ConfigResponse {
            wg_quick,
            networks: net.cidrs(),
            address: status.address,
            endpoint: s.endpoint.clone(),
            server_public_key: s.public_key.clone(),
            allowed_ips: allowed,
            persistent_keepalive: keepalive,
        })
    }

    /// Renew: an invoice for `months` more, plus any back payments owed.
    pub async fn renew(
        &self,
        key: &str,
        months: u32,
    ) -> Result<api::InvoiceResponse, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let (rental, quote) = {
            let db = self.db()?;
            let Some(r) = store::live_rental(&db, &key)? else {
                // Released and swept answers what released and not yet swept does.
                return Err(match store::latest_rental(&db, &key)? {
                    Some(_) => ServiceError::Conflict(RenewError::Released.to_string()),
                    None => ServiceError::NotFound,
                });
            };
            let q = ledger::renewal_quote(&self.terms_of(&r), &r.account(), months, now).map_err(
                |e| match e {
                    RenewError::BadMonths(_) => ServiceError::BadMonths(e.to_string()),
                    RenewError::NotStarted | RenewError::Released => {
                        ServiceError::Conflict(e.to_string())
                    }
                },
            )?;
            (r, q)
        };
        self.invoice_for(&rental, quote, InvoicePurpose::Renewal, now)
            .await
    }

    pub fn invoice(&self, hash: &str) -> Result<api::Invoice, ServiceError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::NotFound);
        }
        let db = self.db()?;
        let inv =
            store::invoice_by_hash(&db, &hash.to_lowercase())?.ok_or(ServiceError::NotFound)?;
        Ok(inv.to_api())
    }

    /// Answers once the invoice is no longer open, or after `wait`.
    pub async fn wait_invoice(
        &self,
        hash: &str,
        wait: Duration,
    ) -> Result<api::Invoice, ServiceError> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let inv = self.invoice(hash)?;
            if inv.state != InvoiceState::Open {
                return Ok(inv);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(inv);
            }
            // Another replica may settle it (PostgreSQL): look again at least every second
            // rather than only when this one sees a change.
            let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), rx.changed()).await;
        }
    }

    /// Credits a settled invoice once, then admits the peer if the rental is active.
    pub async fn settle(&self, hash: &str, settled_at: i64) -> Result<bool, ServiceError> {
        let seen = Instant::now();
        let now = self.clock.now();
        let rental = {
            let mut db = self.db()?;
            let tx = db.transaction()?;
            // Another replica settling the same invoice waits here, then finds it paid.
            store::lock_invoice(&tx, hash)?;
            if store::payment_exists(&tx, hash)? {
                return Ok(false);
            }
            let inv: InvoiceRow =
                store::invoice_by_hash(&tx, hash)?.ok_or(ServiceError::NotFound)?;
            store::credit(&tx, &inv, settled_at, self.terms.month_secs)?;
            let r = store::rental_by_id(&tx, inv.rental_id)?;
            if r.released_at.is_some() {
                store::event(
                    &tx,
                    now,
                    Some(r.id),
                    "payment_after_release",
                    &serde_json::json!({"payment_hash": hash}),
                )?;
            }
            tx.commit()?;
            r
        };
        tracing::info!(rental = rental.id, address = %rental.address, payment_hash = hash, "payment settled");
        self.admit_if_active(rental.id, seen).await?;
        self.changed.send_modify(|v| *v += 1);
        self.wake();
        Ok(true)
    }

    /// Admits a rental's peer if it is active, deciding under the feed lock from the database
    /// as it is then. A router that cannot be told now is marked for a full compare.
    pub async fn admit_if_active(&self, id: i64, seen: Instant) -> Result<(), ServiceError> {
        let _feed = self.feed_lock.lock().await;
        let now = self.clock.now();
        let rental = store::rental_by_id(&*self.db()?, id)?;
        if rental.account().state(&self.terms, now) != RentalState::Active {
            return Ok(());
        }
        let (Some(link), Some(key)) = (self.router(&rental.router), decode_key(&rental.public_key))
        else {
            return Ok(());
        };
        let Some(nets) = rental.networks() else {
            tracing::error!(address = %rental.address, "bad address in database");
            return Ok(());
        };
        // No endpoint: the router may hold this peer already (a renewal) with a newer endpoint
        // than the last full compare learned; sending the learned one would move the
        // customer's traffic back to a port it left (a reboot, a roam) until its next
        // keepalive. A router that lost the peer gets the learned endpoint from the compare.
        match link
            .admit(&key, &nets, &Endpoints::new(), &self.peer_extra)
            .await
        {
            Ok(()) => {
                crate::metrics::admitted(&link.name, seen);
                tracing::info!(address = %rental.address, "peer admitted")
            }
            Err(e) => {
                tracing::warn!("admission deferred to a full compare: {e}");
                self.mark_dirty(&link.name);
            }
        }
        Ok(())
    }

    /// Follows the backend's settlement stream from the position stored in the database,
    /// crediting each settlement and then storing its position, so a restart resumes there
    /// instead of replaying the node's history. The poll remains the safety net.
    pub async fn follow_settlements(self: Arc<Self>) {
        let Some(key) = self.ln.stream_index_key() else {
            return;
        };
        let from = self
            .db()
            .ok()
            .and_then(|db| crate::db::meta_get(&db, key).ok().flatten())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Settlement>(64);
        let streamer = self.clone();
        tokio::spawn(async move { streamer.ln.stream_settlements(from, tx).await });
        while let Some(s) = rx.recv().await {
            let at = if s.settled_at > 0 {
                s.settled_at
            } else {
                self.clock.now()
            };
            match self.settle(&s.payment_hash, at).await {
                Ok(_) | Err(ServiceError::NotFound) => {}
                Err(e) => {
                    // Not stored: the next start replays it; the poll may credit it first.
                    tracing::warn!("streamed settlement {}: {e}", s.payment_hash);
                    continue;
                }
            }
            if s.index > 0 {
                let stored = self.db().map_err(|e| e.to_string()).and_then(|db| {
                    crate::db::meta_set(&db, key, &s.index.to_string()).map_err(|e| e.to_string())
                });
                if let Err(e) = stored {
                    tracing::warn!("storing the settlement stream position: {e}");
                }
            }
        }
    }

    /// Checks every open invoice with the backend: settles paid ones, expires dead ones (and
    /// with an unpaid first invoice, the rental and its hold on the address).
    pub async fn check_invoices(&self) -> Result<(), ServiceError> {
        let open = store::open_invoices(&*self.db()?)?;
        for inv in open {
            self.check_invoice(&inv).await?;
        }
        Ok(())
    }

    /// Asks the backend about one open invoice: settles it if paid, expires it if dead (and
    /// with an unpaid first invoice, the rental and its hold on the address).
    pub async fn check_invoice(&self, inv: &InvoiceRow) -> Result<(), ServiceError> {
        let now = self.clock.now();
        match self.ln.status(&inv.payment_hash, now).await {
            Ok(Status::Settled { at }) => {
                self.settle(&inv.payment_hash, if at > 0 { at } else { now })
                    .await?;
            }
            Ok(Status::Gone) => self.expire(inv, now)?,
            Ok(Status::Open) if now > inv.expires_at + 600 => self.expire(inv, now)?,
            Ok(Status::Open) => {}
            // Past its expiry nobody can pay it any more, whatever the node knows: expire
            // it like any other (a payment the node reports later is still credited).
            Ok(Status::Unknown) if now >= inv.expires_at => {
                tracing::warn!(payment_hash = %inv.payment_hash, "the Lightning node does not know this invoice; expired it at its expiry");
                self.expire(inv, now)?
            }
            Ok(Status::Unknown) => {
                if self.warnings.allow(&inv.payment_hash) {
                    tracing::warn!(payment_hash = %inv.payment_hash, expires_at = inv.expires_at, "the Lightning node does not know this invoice (replaced or restored node, or another node?)")
                }
            }
            Err(e) => {
                if self.warnings.allow(&inv.payment_hash) {
                    tracing::warn!(payment_hash = %inv.payment_hash, "invoice check failed: {e}")
                }
            }
        }
        Ok(())
    }

    fn expire(&self, inv: &InvoiceRow, now: i64) -> Result<(), ServiceError> {
        let mut db = self.db()?;
        let tx = db.transaction()?;
        if store::expire_invoice(&tx, &inv.payment_hash, now)?
            && inv.purpose == InvoicePurpose::Activation
        {
            let r = store::rental_by_id(&tx, inv.rental_id)?;
            let still_open = store::open_invoice(&tx, r.id, now)?.is_some();
            if r.started_at.is_none() && r.released_at.is_none() && !still_open {
                store::release(&tx, r.id, now, "unpaid", 0)?;
            }
        }
        tx.commit()?;
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The full compare with every router this replica runs (at start, rarely, after a dev
    /// clock jump).
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        self.reconcile_only(None).await
    }

    /// The full compare with the routers named in `only` (all this replica runs when `None`).
    /// A router that is down is skipped and marked for another try; it never stops the control.
    pub async fn reconcile_only(
        &self,
        only: Option<&std::collections::HashSet<String>>,
    ) -> Result<(), ServiceError> {
        let _feed = self.feed_lock.lock().await;
        let now = self.clock.now();
        let mut desired = self.sweep_at(now)?;
        if only.is_none() {
            self.compared_at
                .store(now, std::sync::atomic::Ordering::SeqCst);
        }
        for link in self.routers.iter().filter(|l| self.owns(&l.name)) {
            if only.is_some_and(|o| !o.contains(&link.name)) {
                continue;
            }
            let want = desired.remove(&link.name).unwrap_or_default();
            if let (Some(id), Ok(mut ids)) = (
                crate::deadlines::socket_id(&link.socket),
                self.sockets.lock(),
            ) {
                ids.insert(link.name.clone(), id);
            }
            let mut known = self.known_endpoints();
            let result = link.reconcile(want, &mut known, &self.peer_extra).await;
            if let Ok(mut e) = self.endpoints.lock() {
                *e = known;
            }
            crate::metrics::reconciled(
                &link.name,
                result
                    .as_ref()
                    .map(|c| (c.admitted, c.removed, c.interface))
                    .map_err(|_| ()),
            );
            match result {
                Ok(c) if c != Default::default() => {
                    tracing::info!(router = %link.name, admitted = c.admitted, removed = c.removed, interface = c.interface, "router reconciled");
                    let db = self.db()?;
                    store::event(
                        &db,
                        self.clock.now(),
                        None,
                        "reconciled",
                        &serde_json::json!({
                            "router": link.name, "admitted": c.admitted, "removed": c.removed, "interface": c.interface
                        }),
                    )?;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("{e}");
                    self.mark_dirty(&link.name);
                }
            }
        }
        Ok(())
    }

    /// Tells a key's router what an operator command just changed (admit if active, else
    /// remove): one peer, not a full compare.
    pub async fn push_one(&self, key: &str) -> Result<(), ServiceError> {
        let key = parse_public_key(key)?;
        let r = store::latest_rental(&*self.db()?, &key)?.ok_or(ServiceError::NotFound)?;
        if r.account().state(&self.terms, self.clock.now()) == RentalState::Active {
            return self.admit_if_active(r.id, Instant::now()).await;
        }
        let (Some(link), Some(k)) = (self.router(&r.router), decode_key(&r.public_key)) else {
            return Ok(());
        };
        let _feed = self.feed_lock.lock().await;
        link.remove(&[k])
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Operator actions.
    pub fn set_suspended(&self, key: &str, suspended: bool) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::live_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        store::set_suspended(&db, r.id, suspended, now)?;
        let r = store::rental_by_id(&db, r.id)?;
        self.rental_view(&db, &r, now)
    }

    pub fn release(&self, key: &str) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::live_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        store::release(&db, r.id, now, "operator", now + self.terms.cooldown_secs)?;
        let r = store::rental_by_id(&db, r.id)?;
        self.rental_view(&db, &r, now)
    }

    pub fn list(&self) -> Result<Vec<api::Rental>, ServiceError> {
        let now = self.clock.now();
        let db = self.db()?;
        store::all_rentals(&db)?
            .iter()
            .map(|r| self.rental_view(&db, r, now))
            .collect()
    }

    /// A rental with its invoices and event log, for `rentals show`.
    pub fn show(&self, key: &str) -> Result<serde_json::Value, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.db()?;
        let r = store::latest_rental(&db, &key)?.ok_or(ServiceError::NotFound)?;
        let invoices: Vec<api::Invoice> = store::invoices_of(&db, r.id)?
            .iter()
            .map(InvoiceRow::to_api)
            .collect();
        let events: Vec<serde_json::Value> = store::events_of(&db, r.id)?
            .into_iter()
            .map(|(at, kind, detail)| {
                serde_json::json!({"at": at, "kind": kind, "detail": serde_json::from_str::<serde_json::Value>(&detail).unwrap_or_default()})
            })
            .collect();
        Ok(serde_json::json!({
            "rental": self.rental_view(&db, &r, now)?,
            "invoices": invoices,
            "events": events,
        }))
    }

    fn known_endpoints(&self) -> Endpoints {
        self.endpoints.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

impl Service {
    /// Rent per month of every address of a prefix beyond its first.
    pub fn address_monthly_sat(&self) -> u64 {
        self.cfg
            .terms
            .address_monthly_sat
            .unwrap_or(self.cfg.terms.monthly_sat)
    }

    /// The terms of one rental: its monthly rent counts its addresses and IPv6 prefix.
    pub fn terms_of(&self, r: &RentalRow) -> Terms {
        let monthly_sat = match self.cfg.terms.ipv6_only_monthly_sat {
            Some(price) if r.address.is_empty() => price,
            _ => api::monthly_rent(
                self.terms.monthly_sat,
                self.address_monthly_sat(),
                self.cfg.terms.ipv6_monthly_sat,
                r.prefix_len,
                r.ipv6.is_some(),
            ),
        };
        Terms {
            monthly_sat,
            ..self.terms
        }
    }

    /// Every host with how many single addresses it has free now.
    pub fn hosts(&self) -> Vec<api::Server> {
        let now = self.clock.now();
        let db = self.db().ok();
        self.cfg
            .routers
            .iter()
            .map(|r| {
                let mut s = self.server_of(&r.name);
                s.free_ipv4 = db
                    .as_ref()
                    .and_then(|db| crate::alloc::free_v4(db, &r.name, now).ok())
                    .map(|f| f.len() as u64);
                s
            })
            .collect()
    }
}

impl Service {
    /// Whether this replica runs the expiries and reconciliation of `router`.
    pub fn owns(&self, router: &str) -> bool {
        match self.owned.lock() {
            Ok(o) => o.as_ref().is_none_or(|set| set.contains(router)),
            Err(_) => false,
        }
    }
}
