//! Views: the terms and a rental as the API shows them, the wg-quick configuration, the
//! operator's listings, and the prices of one rental.

use super::{parse_public_key, Service, ServiceError};
use crate::ledger::{self, Terms};
use crate::sql::Connection;
use crate::store::{self, InvoiceRow, RentalRow};
use staticwire_api as api;
use staticwire_api::RentalState;

impl Service {
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
            proof_key: self.proof.as_ref().map(|v| v.public_key_base64()),
            reverse_dns: self.rdns.is_some(),
        }
    }

    pub(super) fn rental_view(
        &self,
        db: &Connection,
        r: &RentalRow,
        now: i64,
    ) -> Result<api::Rental, ServiceError> {
        let open = if r.account().state(&self.terms, now) == RentalState::Released {
            None
        } else {
            store::open_invoice(db, r.id, now)?
        };
        Ok(self.rental_view_with(r, now, open))
    }

    /// [`Service::rental_view`] given the rental's open invoice (its latest; None if it has
    /// none), as a change that has just made it knows it.
    pub(super) fn rental_view_with(
        &self,
        r: &RentalRow,
        now: i64,
        open: Option<store::InvoiceRow>,
    ) -> api::Rental {
        let acc = r.account();
        let state = acc.state(&self.terms, now);
        let open = open.filter(|_| state != RentalState::Released);
        let amount_due_sat = match (&open, state) {
            (Some(inv), RentalState::Pending) => (inv.amount_msat / 1000) as u64,
            _ => ledger::amount_due(&self.terms_of(r), &acc, now),
        };
        api::Rental {
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
        }
    }

    /// What the payer's wallet shows and keeps. Nothing that links the payment to the key or
    /// the address (PROTOCOL.md [invoice.anonymous]): the payment hash is seen by every routing
    /// node on the path, and the invoice by whoever the customer shows it to.
    pub(super) fn description(&self, _r: &RentalRow, what: &str) -> String {
        format!("StaticWire {what}")
    }

    /// GetRentalStatus.
    pub fn status(&self, key: &str) -> Result<api::Rental, ServiceError> {
        let key = parse_public_key(key)?;
        let now = self.clock.now();
        let db = self.read()?;
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
        // From the free-space index: the terms never read the database.
        self.cfg
            .routers
            .iter()
            .map(|r| {
                let mut s = self.server_of(&r.name);
                s.free_ipv4 = self.free_ipv4(&r.name);
                s
            })
            .collect()
    }
}
