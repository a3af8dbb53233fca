//! Reverse DNS of a rental's addresses (PROTOCOL.md, Reverse DNS): which rental may name which address,
//! the forward confirmation, the control's record of it, and the whole wanted state that the
//! full compare of `crate::rdns` holds the zones to. The DNS itself is `crate::rdns`'s.

use super::{Service, ServiceError};
use crate::prefixes::Networks;
use crate::rdns::forward::ForwardError;
use crate::rdns::names::{self, NameError};
use crate::rdns::{records, Compared, Rdns};
use crate::store::{self, RentalRow};
use staticwire_api::{PtrList, PtrRecord, RentalState};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a reverse-DNS request was refused; the HTTP layer maps each to a status and a code.
#[derive(Debug, thiserror::Error)]
pub enum PtrError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("this server offers no reverse DNS")]
    Off,
    #[error("bad name: {0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    BadAddress(String),
    #[error("{0} is not an address of this rental (or no reverse zone of this server holds it)")]
    NotRented(IpAddr),
    #[error("reverse DNS is set for an active rental only; this one is {0}")]
    NotActive(&'static str),
    #[error("this rental already names {0} IPv6 addresses, the most this server allows")]
    Limit(u32),
    #[error("{0}")]
    Forward(#[from] ForwardError),
}

impl From<crate::sql::Error> for PtrError {
    fn from(e: crate::sql::Error) -> Self {
        PtrError::Service(e.into())
    }
}

fn state_name(s: RentalState) -> &'static str {
    match s {
        RentalState::Pending => "pending (not paid yet)",
        RentalState::Active => "active",
        RentalState::Lapsed => "lapsed (renew it first)",
        RentalState::Suspended => "suspended",
        RentalState::Released => "released",
    }
}

impl Service {
    /// The reverse-DNS adapter, before the service is shared.
    pub fn set_rdns(&mut self, rdns: Rdns) {
        self.rdns = Some(Arc::new(rdns));
    }

    pub fn rdns(&self) -> Option<&Arc<Rdns>> {
        self.rdns.as_ref()
    }

    /// Asks the reverse-DNS compare to run soon (a rental's state changed).
    pub fn rdns_wake(&self) {
        if let Some(r) = &self.rdns {
            r.wake();
        }
    }

    fn rdns_on(&self) -> Result<&Arc<Rdns>, PtrError> {
        self.rdns.as_ref().ok_or(PtrError::Off)
    }

    fn live(&self, key: &str) -> Result<RentalRow, PtrError> {
        let db = self.db()?;
        Ok(store::live_rental(&db, key)?.ok_or(ServiceError::NotFound)?)
    }

    fn active(&self, r: &RentalRow) -> bool {
        r.account().state(&self.terms, self.clock.now()) == RentalState::Active
    }

    /// Whether `ip` is an address of the key's live rental: the tunnel listener's check of a
    /// request's source (the router lets a tunnel send only from its rental's addresses).
    pub fn is_rental_source(&self, key: &str, ip: IpAddr) -> Result<bool, ServiceError> {
        let db = self.db()?;
        let Some(r) = store::live_rental(&db, key)? else {
            return Ok(false);
        };
        Ok(contains(&r, ip))
    }

    /// The address a request names, checked against the rental; None means its IPv4 address.
    fn address_of(&self, r: &RentalRow, asked: Option<&str>) -> Result<IpAddr, PtrError> {
        let ip: IpAddr = match asked {
            Some(a) => a.trim().parse().map_err(|_| {
                PtrError::BadAddress(format!("{a:?} is not an IPv4 or IPv6 address"))
            })?,
            None => r.address.parse().map_err(|_| {
                PtrError::BadAddress("this rental has no IPv4 address: give the address".into())
            })?,
        };
        if !contains(r, ip) || !self.rdns_on()?.covers(ip) {
            return Err(PtrError::NotRented(ip));
        }
        Ok(ip)
    }

    /// GetPtr: every IPv4 address of the rental and its custom IPv6 ones, as served.
    pub fn ptr_list(&self, key: &str) -> Result<PtrList, PtrError> {
        let rdns = self.rdns_on()?;
        let r = self.live(key)?;
        let rows = records::of_rental(&*self.db()?, r.id)?;
        let active = self.active(&r);
        let mut out = Vec::new();
        let net = Networks::new(&r.address, r.prefix_len, r.ipv6.as_deref()).unwrap_or_default();
        let custom = |ip: IpAddr| rows.iter().find(|row| row.address == ip.to_string());
        let mut ips: Vec<IpAddr> = net
            .v4
            .iter()
            .flat_map(|n| n.hosts().chain([n.network(), n.broadcast()]))
            .map(IpAddr::V4)
            .collect();
        ips.sort();
        ips.dedup();
        ips.extend(
            rows.iter()
                .filter_map(|row| row.address.parse::<IpAddr>().ok())
                .filter(IpAddr::is_ipv6),
        );
        for ip in ips.into_iter().filter(|ip| rdns.covers(*ip)) {
            let (name, is_custom, published) = match custom(ip).filter(|_| active) {
                Some(row) => (Some(row.name.clone()), true, row.published),
                None => (rdns.default_for(ip), false, rdns.synced()),
            };
            out.push(PtrRecord {
                address: ip.to_string(),
                name,
                custom: is_custom,
                published,
            });
        }
        Ok(PtrList {
            records: out,
            tunnel_api: rdns.cfg().tunnel_listen.map(|a| format!("http://{a}")),
            max_ipv6_names: rdns.cfg().max_ipv6_names,
        })
    }

    /// SetPtr: checks everything (name, address, state, the limit, forward confirmation)
    /// before recording anything; then records it and tells the DNS server. A server that
    /// does not take it now is repaired by the compare (the answer says `published: false`).
    pub async fn ptr_set(
        &self,
        key: &str,
        address: Option<&str>,
        name: &str,
    ) -> Result<PtrList, PtrError> {
        let rdns = self.rdns_on()?.clone();
        let name = names::host_name(name)?;
        let r = self.live(key)?;
        let ip = self.address_of(&r, address)?;
        if !self.active(&r) {
            let s = r.account().state(&self.terms, self.clock.now());
            return Err(PtrError::NotActive(state_name(s)));
        }
        if ip.is_ipv6() {
            let rows = records::of_rental(&*self.db()?, r.id)?;
            let others = rows
                .iter()
                .filter(|row| row.address.contains(':') && row.address != ip.to_string())
                .count();
            if others >= rdns.cfg().max_ipv6_names as usize {
                return Err(PtrError::Limit(rdns.cfg().max_ipv6_names));
            }
        }
        rdns.confirm(&name, ip).await?;
        let _one = rdns.lock().await;
        records::upsert(&*self.db()?, &ip.to_string(), r.id, &name, self.clock.now())?;
        match rdns.set_now(ip, Some(&name)).await {
            Ok(()) => records::set_published(&*self.db()?, &ip.to_string(), true)?,
            Err(e) => {
                tracing::warn!(address = %ip, "rdns update deferred to the compare: {e}");
                rdns.wake();
            }
        }
        tracing::info!(address = %ip, name = %name, "PTR set by the customer");
        drop(_one);
        self.ptr_list(key)
    }

    /// ClearPtr: the provider's default again for `address`, or for every address of the
    /// rental.
    pub async fn ptr_clear(&self, key: &str, address: Option<&str>) -> Result<PtrList, PtrError> {
        let rdns = self.rdns_on()?.clone();
        let r = self.live(key)?;
        let ips: Vec<IpAddr> = match address {
            Some(a) => vec![self.address_of(&r, Some(a))?],
            None => records::of_rental(&*self.db()?, r.id)?
                .iter()
                .filter_map(|row| row.address.parse().ok())
                .collect(),
        };
        let _one = rdns.lock().await;
        for ip in ips {
            records::remove(&*self.db()?, r.id, Some(&ip.to_string()))?;
            if let Err(e) = rdns.set_now(ip, rdns.default_for(ip).as_deref()).await {
                tracing::warn!(address = %ip, "rdns update deferred to the compare: {e}");
                rdns.wake();
            }
        }
        drop(_one);
        self.ptr_list(key)
    }

    /// The full compare of the reverse zones with what the control wants: each pool address
    /// in a zone has the provider's default, unless an active rental named it; a name of an
    /// inactive rental's IPv6 address is removed. None when reverse DNS is off.
    pub async fn rdns_compare(&self) -> Result<Option<Compared>, ServiceError> {
        let Some(rdns) = self.rdns.clone() else {
            return Ok(None);
        };
        let _one = rdns.lock().await;
        let mut want: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        for router in &self.cfg.routers {
            for pool in &router.pools {
                for a in pool.hosts().chain([pool.network(), pool.broadcast()]) {
                    let ip = IpAddr::V4(a);
                    if !router.reserved.contains(&a) && rdns.covers(ip) {
                        want.insert(ip, rdns.default_for(ip));
                    }
                }
            }
        }
        let rows = {
            let db = self.db()?;
            let rows = records::all_live(&db)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let rental = store::rental_by_id(&db, row.rental_id)?;
                out.push((row, rental));
            }
            out
        };
        for (row, rental) in &rows {
            let Ok(ip) = row.address.parse::<IpAddr>() else {
                continue;
            };
            if self.active(rental) {
                want.insert(ip, Some(row.name.clone()));
            } else if ip.is_ipv6() {
                want.insert(ip, None);
            }
        }
        let pools6: Vec<_> = self
            .cfg
            .routers
            .iter()
            .filter_map(|r| r.ipv6_pool)
            .collect();
        let done = rdns.compare(&want, &pools6).await;
        if done.failed_zones == 0 {
            let db = self.db()?;
            for (row, _) in rows.iter().filter(|(row, _)| !row.published) {
                records::set_published(&db, &row.address, true)?;
            }
        }
        Ok(Some(done))
    }
}

/// Whether `ip` is inside the rental's IPv4 prefix or its IPv6 prefix.
fn contains(r: &RentalRow, ip: IpAddr) -> bool {
    let Some(net) = Networks::new(&r.address, r.prefix_len, r.ipv6.as_deref()) else {
        return false;
    };
    match ip {
        IpAddr::V4(v4) => net.v4.is_some_and(|n| n.contains(&v4)),
        IpAddr::V6(v6) => net.v6.is_some_and(|n| n.contains(&v6)),
    }
}
