//! Reverse DNS of the rented addresses, on the provider's real authoritative server: the
//! customers name their addresses (forward-confirmed), the control records what it wants
//! (`records`, table `ptr_records`) and tells the server with RFC 2136 UPDATEs signed with
//! TSIG (`update`); a full compare (`compare`, over an AXFR of each zone) repairs a server that
//! lost records, at start, every `compare_interval_secs`, after a failed update and when a
//! rental's state changes (a lapse brings the provider's default back). `zone` maps addresses
//! to zones and owner names (RFC 2317 for pools smaller than a /24), `names` checks names and
//! fills the default's template, `forward` asks the resolver.
//!
//! An adapter: it knows the DNS and its own table, not the service; the service decides which
//! rental may name which address (`service::ptr`) and hands the whole wanted state to
//! [`Rdns::compare`].

pub mod compare;
pub mod forward;
pub mod names;
pub mod records;
pub mod update;
pub mod zone;

use crate::config::RdnsConfig;
use crate::metrics::events;
use hickory_proto::rr::Name;
use ipnet::Ipv6Net;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;
use update::{Change, DnsError, Primary};
use zone::Zones;

#[derive(Debug, thiserror::Error)]
pub enum RdnsError {
    #[error("rdns: {0}")]
    Zone(#[from] zone::ZoneError),
    #[error("rdns: {0}")]
    Dns(#[from] DnsError),
}

/// What one full compare found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compared {
    /// Records the control manages that it looked at.
    pub checked: usize,
    /// Records that were wrong or missing and were rewritten.
    pub repaired: usize,
    /// Zones whose compare or repair failed (retried at the next compare).
    pub failed_zones: usize,
}

/// The reverse-DNS adapter: configuration, zones, the primary server and the resolver.
pub struct Rdns {
    cfg: RdnsConfig,
    zones: Zones,
    primary: Primary,
    resolver: SocketAddr,
    wake: tokio::sync::Notify,
    /// One change at a time: a customer's update and the compare (which decides from the
    /// control's record as it is then) never overtake each other.
    lock: tokio::sync::Mutex<()>,
    /// The latest compare found every zone as wanted (or made it so).
    synced: std::sync::atomic::AtomicBool,
}

impl Rdns {
    /// From `[rdns]`: None when it is off (no `server`).
    pub fn from_config(cfg: &RdnsConfig) -> Result<Option<Rdns>, RdnsError> {
        let (Some(server), Some(key)) = (cfg.server, &cfg.tsig_key_file) else {
            return Ok(None);
        };
        let signer = update::read_key(key)?;
        Ok(Some(Rdns {
            zones: Zones::new(&cfg.zones)?,
            primary: Primary::new(server, signer),
            resolver: cfg.resolver.unwrap_or(server),
            cfg: cfg.clone(),
            wake: tokio::sync::Notify::new(),
            lock: tokio::sync::Mutex::new(()),
            synced: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn cfg(&self) -> &RdnsConfig {
        &self.cfg
    }

    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// Held across one change or one compare.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Whether the latest compare left every zone as wanted.
    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asks for a full compare soon (a rental changed state, an update failed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sleeps until [`Rdns::wake`] or `wait`, whichever comes first.
    pub async fn sleep_unless_woken(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
    }

    /// The provider's default name of `ip`, absolute (IPv4 with a template; IPv6: none).
    pub fn default_for(&self, ip: IpAddr) -> Option<String> {
        match (ip, &self.cfg.default_ipv4) {
            (IpAddr::V4(v4), Some(t)) => Some(names::fill(t, v4)),
            _ => None,
        }
    }

    /// Whether a reverse zone holds `ip`.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.zones.locate(ip).is_some()
    }

    /// Forward confirmation of `name` (absolute) for `ip` at the configured resolver.
    pub async fn confirm(&self, name: &str, ip: IpAddr) -> Result<(), forward::ForwardError> {
        forward::confirm(self.resolver, name, ip).await
    }

    /// Sets (or with None removes) the PTR of `ip` now, with one UPDATE.
    pub async fn set_now(&self, ip: IpAddr, target: Option<&str>) -> Result<(), DnsError> {
        let Some((zone, owner)) = self.zones.locate(ip) else {
            return Ok(());
        };
        let target = target
            .map(parse_name)
            .transpose()
            .map_err(|e| DnsError::Refused {
                what: "update",
                zone: self.zones.all()[zone].origin.to_ascii(),
                code: e,
            })?;
        let origin = &self.zones.all()[zone].origin;
        let result = self
            .primary
            .apply(origin, &[Change { owner, target }], self.cfg.ttl)
            .await;
        events::rdns_update(result.as_ref().map(|n| *n).map_err(|_| ()));
        result.map(|_| ())
    }

    /// The full compare: every zone transferred and diffed against `want` (each managed
    /// address → its target, absolute, or None for no record); the differences are sent as
    /// UPDATEs. An IPv6 owner found in a zone, inside one of `ipv6_pools` and not in `want`,
    /// is deleted; anything else the control does not manage is left alone.
    pub async fn compare(
        &self,
        want: &BTreeMap<IpAddr, Option<String>>,
        ipv6_pools: &[Ipv6Net],
    ) -> Compared {
        let mut per_zone: Vec<BTreeMap<Name, Option<Name>>> =
            vec![BTreeMap::new(); self.zones.all().len()];
        for (ip, target) in want {
            let Some((z, owner)) = self.zones.locate(*ip) else {
                continue;
            };
            let Ok(target) = target.as_deref().map(parse_name).transpose() else {
                tracing::warn!(address = %ip, "rdns: a recorded name is not a DNS name; skipped");
                continue;
            };
            per_zone[z].insert(owner, target);
        }
        let mut out = Compared::default();
        for (zone, want) in self.zones.all().iter().zip(per_zone) {
            let origin = zone.origin.to_ascii();
            out.checked += want.len();
            let have = match self.primary.transfer(&zone.origin).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(zone = %origin, "rdns compare: {e}");
                    events::rdns_compared(&origin, 0, None);
                    out.failed_zones += 1;
                    continue;
                }
            };
            let managed = |owner: &Name| {
                zone::ipv6_of_owner(owner)
                    .is_some_and(|a| ipv6_pools.iter().any(|p| p.contains(&a)))
            };
            let changes = compare::diff(&want, &have, managed);
            if changes.is_empty() {
                events::rdns_compared(&origin, 0, Some(0));
                continue;
            }
            let result = self
                .primary
                .apply(&zone.origin, &changes, self.cfg.ttl)
                .await;
            events::rdns_update(result.as_ref().map(|n| *n).map_err(|_| ()));
            match result {
                Ok(_) => {
                    tracing::info!(zone = %origin, repaired = changes.len(), "rdns: zone repaired");
                    events::rdns_compared(&origin, changes.len(), Some(0));
                    out.repaired += changes.len();
                }
                Err(e) => {
                    tracing::warn!(zone = %origin, wrong = changes.len(), "rdns repair: {e}");
                    events::rdns_compared(&origin, 0, Some(changes.len()));
                    out.failed_zones += 1;
                }
            }
        }
        self.synced
            .store(out.failed_zones == 0, std::sync::atomic::Ordering::SeqCst);
        out
    }
}

fn parse_name(s: &str) -> Result<Name, String> {
    let mut n = Name::from_str(s).map_err(|e| e.to_string())?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}
