//! Unpaid holds, bounded so that no flood can starve a paying customer.
//!
//! An unpaid hold is counted in what it takes out of a host's pools: a /29 is 8 IPv4
//! addresses, a /32 one; an IPv6-only hold is one prefix of the host's IPv6 pool (counted as
//! one unit in its client's cap, as a /32 is). Three bounds:
//!
//! 1. per client *prefix* (`[limits] client_prefix_v4` /24 and `client_prefix_v6` /48 by
//!    default, so one host's neighbours and one IPv6 site are one client): at most
//!    `max_unpaid_per_client` units held unpaid, over every host and both listeners;
//! 2. per host and listener: the unpaid IPv4 addresses of the `/v1` listener's holds at most
//!    `max_unpaid_share` of the host's addresses that are not paid for (free or held unpaid),
//!    those of the original client's listener at most `compat_unpaid_share`; the same for
//!    IPv6 prefixes of the host's IPv6 pool. Each listener takes over only its own holds, so
//!    neither can starve the other. The share holds a prefix back only beside other prefixes of
//!    its listener on the host: alone, its own cap bounds it (one client on a small pool, a /29
//!    where the share is under 8 addresses);
//! 3. a key's new rent replaces its own unpaid hold (`crate::service`).
//!
//! When a hold does not fit (its listener's share is spent or no block is free), it takes
//! over unpaid holds of its listener on that host: the oldest hold of the client prefix that
//! holds the most, as long as that prefix holds at least as much as the asking one will. A
//! taken-over hold is released (`taken_over`); its invoice stays payable.
//!
//! A payment always wins over holds: a paid invoice whose hold was taken over (or replaced)
//! is placed again at settlement, taking over any unpaid holds in its way ([`place_paid`]).
//! Invariant: **a customer from a prefix that holds nothing unpaid gets a /32 hold while its
//! host has an address neither paid for nor resting (on a host with more such addresses than
//! `max_unpaid_per_client`, 8 by default), and a payment gets its rental an address while the
//! host has a block of its size that is neither paid for nor resting.** Proof: let N be the
//! host's addresses neither paid for nor resting. The other listener holds at most
//! max(its share × N, the cap) < N of them (its share is under 1, and the cap under N), so if
//! none is free, this listener holds some. Every holder holds at least 1 ≥ 0 + 1, so the
//! customer may take over any of them; if some are free, either nobody else of the listener
//! holds (the share does not apply) or there is a holder to take over from when the share is
//! spent. A payment may take over every unpaid hold.

use crate::alloc::{self, AllocError, Placement, Want};
use crate::config::{Config, LimitsConfig};
use crate::freespace::{FreeSpace, Released};
use crate::sql::{params, Connection};
use crate::store::{self, RentalRow};
use crate::unpaid::{Family, UnpaidIndex};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::IpAddr;

pub use crate::unpaid::{Listener, ALLOCATION_LOCK};

/// The most holds one request may take over (a /29 among /32 holds takes 8).
const MAX_TAKEOVERS: usize = 64;

/// Who asks for a hold: a client prefix, through a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub prefix: String,
    pub listener: Listener,
}

impl Requester {
    /// The client prefix of `ip` (IPv4 /`client_prefix_v4`, IPv6 /`client_prefix_v6`).
    pub fn new(ip: IpAddr, limits: &LimitsConfig, listener: Listener) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(a) => Ipv4Net::new(a, limits.client_prefix_v4.min(32))
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| a.to_string()),
            IpAddr::V6(a) => Ipv6Net::new(a, limits.client_prefix_v6.min(128))
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| a.to_string()),
        };
        Requester { prefix, listener }
    }

    /// The rentals' `client` column: the prefix, marked when the original client's.
    pub fn column(&self) -> String {
        match self.listener {
            Listener::V1 => self.prefix.clone(),
            Listener::Compat => format!("compat {}", self.prefix),
        }
    }
}

/// Why an unpaid hold could not be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldError {
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("client {prefix} already holds {held} unpaid address(es); at most {max}: pay one or let its invoice expire")]
    PrefixCap { prefix: String, held: u64, max: u32 },
    #[error("the unpaid share of every host is held by clients that hold no more than you; retry when an invoice is paid or expires")]
    ShareFull,
}

fn block(prefix_len: u8) -> u64 {
    1u64 << (32 - u32::from(prefix_len.min(32)))
}

/// What a wanted rental counts in its client's cap.
pub fn units(want: &Want) -> u64 {
    if want.ipv4 == Some(false) {
        1
    } else {
        block(want.prefix_len.unwrap_or(32))
    }
}

/// Refuses a hold of `units` when `who`'s prefix would hold more than the cap unpaid (what it
/// holds, from the index of unpaid holds).
pub fn check_prefix_cap(
    unpaid: &UnpaidIndex,
    who: &Requester,
    units: u64,
    max: u32,
) -> Result<(), HoldError> {
    let held = unpaid.held_by(&who.prefix);
    if held + units > u64::from(max) {
        Err(HoldError::PrefixCap {
            prefix: who.prefix.clone(),
            held,
            max,
        })
    } else {
        Ok(())
    }
}

/// How a placement may take over holds: a hold for a requester (its listener's share, its
/// listener's holds, the fairness rule), or a payment (every unpaid hold, no share).
enum Mode<'a> {
    Hold(&'a Requester, f64),
    Paid,
}

/// The number of IPv6 prefixes of `len` in `pool`, capped (a /32 pool of /64s is 2^32).
fn v6_prefixes(pool: Ipv6Net, len: u8) -> u64 {
    let bits = u32::from(len.saturating_sub(pool.prefix_len())).min(62);
    1u64 << bits
}

/// Whether a hold of `want` fits on `router` now, and if not, which family is short.
struct Fit {
    v4_short: bool,
    v6_short: bool,
}

fn fit(
    space: &mut FreeSpace,
    cfg: &Config,
    router: &crate::config::RouterConfig,
    want: &Want,
    mode: &Mode,
    now: i64,
) -> Fit {
    let v6_only = want.ipv4 == Some(false);
    let free_v6 = cfg.terms.ipv6_monthly_sat == 0;
    let ipv6 = (v6_only || want.ipv6.unwrap_or(free_v6)) && router.ipv6_pool.is_some();
    // What the host's unpaid holds hold, all of them and this listener's; `beside`: this
    // listener's holds of other prefixes. The share holds back a prefix only beside others of
    // its listener on the host: alone it is bounded by its own cap (a /29 fits where the share
    // is under 8; one client on a small pool is not refused), and anyone arriving may take
    // over from it. From the index of unpaid holds: no read of them.
    let counts = match mode {
        Mode::Hold(who, _) => {
            let all = space.unpaid.on_host(&router.name);
            let mine = space.unpaid.on_host_of(&router.name, who.listener);
            let own = space
                .unpaid
                .on_host_of_prefix(&router.name, who.listener, &who.prefix);
            Some((all, mine, own))
        }
        Mode::Paid => None,
    };
    let mut out = Fit {
        v4_short: false,
        v6_short: false,
    };
    if !v6_only {
        let len = want.prefix_len.unwrap_or(32);
        // From the free-space index: no read of the pool.
        let free = space.free_v4(&router.name, now).unwrap_or(0);
        let n = block(len);
        out.v4_short = space
            .router(&router.name)
            .is_none_or(|r| r.v4.pick(32 - len.min(32)).is_none());
        if let (Mode::Hold(_, share), Some((all, mine, own))) = (mode, counts) {
            let beside = mine.v4 - own.v4;
            let not_paid = free + all.v4;
            let cap = (share * not_paid as f64).floor() as u64;
            out.v4_short |= beside > 0 && mine.v4 + n > cap;
        }
    }
    if ipv6 {
        let pool = router.ipv6_pool.expect("checked above");
        let (free6, short6) = match space.router(&router.name).and_then(|r| r.v6.as_mut()) {
            Some(v6) => {
                v6.wake(now);
                (v6.free_count(), v6.pick().is_none())
            }
            None => (0, true),
        };
        out.v6_short = short6;
        if let (Mode::Hold(_, share), Some((all, mine, own))) = (mode, counts) {
            let beside = mine.v6 - own.v6;
            let total = v6_prefixes(pool, router.ipv6_prefix_len);
            let used = total.saturating_sub(u64::try_from(free6).unwrap_or(u64::MAX));
            let not_paid = total.saturating_sub(used) + all.v6;
            let cap = (share * not_paid as f64).floor() as u64;
            out.v6_short |= beside > 0 && mine.v6 + 1 > cap;
        }
    }
    out
}

/// The hold to take over next on `router`, if any may be: of the prefix holding the most,
/// the oldest, holding what is short (from the index: O(log n)).
fn victim(
    unpaid: &UnpaidIndex,
    router: &str,
    mode: &Mode,
    want_units: u64,
    short: &Fit,
) -> Option<i64> {
    let families: Vec<Family> = [(Family::V4, short.v4_short), (Family::V6, short.v6_short)]
        .into_iter()
        .filter(|(_, s)| *s)
        .map(|(f, _)| f)
        .collect();
    match mode {
        Mode::Hold(who, _) => {
            let asker = unpaid.held_by(&who.prefix);
            unpaid
                .best(router, &[who.listener], &families, Some(&who.prefix))
                .filter(|c| c.prefix_units >= asker + want_units)
                .map(|c| c.id)
        }
        Mode::Paid => unpaid
            .best(router, &[Listener::V1, Listener::Compat], &families, None)
            .map(|c| c.id),
    }
}

fn savepoint(db: &Connection, what: &str) -> crate::sql::Result<()> {
    db.execute_batch(what)
}

/// Places `want` as `mode` allows: first on any host where it fits as things are (the
/// asked-for one, or each in the configured order), then taking over holds host by host. A
/// host where taking over did not make room is left as it was (a savepoint gives its holds
/// back).
fn place_taking_over(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    want: &Want,
    mode: Mode,
    now: i64,
) -> Result<Result<(Placement, Vec<i64>), HoldError>, crate::sql::Error> {
    // Asked for something not sold: nothing to take over.
    if let Err(e) = alloc::hosts_for(cfg, want) {
        return Ok(Err(e.into()));
    }
    let hosts: Vec<_> = cfg
        .routers
        .iter()
        .filter(|r| want.host.as_ref().is_none_or(|h| *h == r.name))
        .collect();
    let want_units = units(want);
    let mut share_full = false;
    for take_over in [false, true] {
        for r in &hosts {
            let on = Want {
                host: Some(r.name.clone()),
                ..want.clone()
            };
            let mark = space.unpaid.touched_len();
            // Only a takeover changes anything before the placement: only it is undone.
            if take_over {
                savepoint(db, "SAVEPOINT takeover")?;
            }
            let mut taken = Vec::new();
            loop {
                let f = fit(space, cfg, r, &on, &mode, now);
                if !f.v4_short && !f.v6_short {
                    if let Ok(p) = alloc::place(db, space, cfg, &on, now)? {
                        if take_over {
                            savepoint(db, "RELEASE SAVEPOINT takeover")?;
                        }
                        return Ok(Ok((p, taken)));
                    }
                }
                let next = (take_over && taken.len() < MAX_TAKEOVERS)
                    .then(|| victim(&space.unpaid, &r.name, &mode, want_units, &f))
                    .flatten();
                let Some(v) = next else {
                    // Room enough, but the listener's share is spent and nothing may be
                    // taken over.
                    share_full |= matches!(mode, Mode::Hold(..))
                        && alloc::look(db, space, cfg, &on, now)?.is_ok();
                    break;
                };
                release_unpaid(db, space, v, "taken_over", now)?;
                taken.push(v);
            }
            if take_over {
                savepoint(db, "ROLLBACK TO SAVEPOINT takeover")?;
                savepoint(db, "RELEASE SAVEPOINT takeover")?;
                // The holds taken over here are held again: counted as the database has them.
                space.unpaid.resync_touched(db, mark)?;
            }
        }
    }
    Ok(Err(if share_full {
        HoldError::ShareFull
    } else {
        AllocError::Exhausted.into()
    }))
}

/// Releases an unpaid hold and gives its space back to the index at once (an unpaid hold does
/// not rest). If a savepoint undoes the release, the index's offer of that space is refused by
/// the database check of `alloc` and dropped.
fn release_unpaid(
    db: &Connection,
    space: &mut FreeSpace,
    id: i64,
    reason: &str,
    now: i64,
) -> crate::sql::Result<()> {
    let r = store::rental_by_id(db, id)?;
    store::release(db, id, now, reason, 0)?;
    space.unpaid.touch(db, id)?;
    let released = Released {
        router: &r.router,
        address: &r.address,
        prefix_len: r.prefix_len,
        ipv6: r.ipv6.as_deref(),
        v6_rest_until: now,
    };
    space.released(db, &released, now)
}

/// Places an unpaid hold for `who` (inside the caller's transaction, under
/// [`ALLOCATION_LOCK`]): what is asked for must be on sale, `who`'s prefix within
/// `max_per_client`, and the hold within its listener's share of the host, taking over holds
/// as the module doc says. Returns the placement and the holds it took over.
pub fn place_unpaid(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    want: &Want,
    who: &Requester,
    max_per_client: u32,
    now: i64,
) -> Result<Result<(Placement, Vec<i64>), HoldError>, crate::sql::Error> {
    if let Err(e) = alloc::validate(cfg, want) {
        return Ok(Err(e.into()));
    }
    // Other replicas' holds (PostgreSQL), read under the allocation lock the caller holds.
    space.refresh_if_shared(db)?;
    crate::unpaid::debug_check(&space.unpaid, db);
    if let Err(e) = check_prefix_cap(&space.unpaid, who, units(want), max_per_client) {
        return Ok(Err(e));
    }
    let share = who.listener.share(&cfg.limits);
    place_taking_over(db, space, cfg, want, Mode::Hold(who, share), now)
}

/// What a rental had: the same prefix length, families and host (then any host).
fn want_of(r: &RentalRow, host: Option<String>) -> Want {
    let v4 = !r.address.is_empty();
    Want {
        prefix_len: v4.then_some(r.prefix_len),
        ipv6: if v4 { Some(r.ipv6.is_some()) } else { None },
        host,
        ipv4: (!v4).then_some(false),
    }
}

/// Why a paid rental's hold could not be placed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaced {
    /// The key rents another address, paid: the payment stays on the released rental.
    KeyRentsAnother,
    /// Every block of its size is paid for or resting.
    NoRoom,
}

/// At settlement: a paid rental whose hold was taken over (or replaced by the key's own new
/// rent) is placed again, on its host if there is room, else on any; unpaid holds in its way
/// are taken over, and an unpaid hold of the same key is given up for it. Returns the
/// placement made, inside the caller's transaction.
pub fn place_paid(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    r: &RentalRow,
    now: i64,
) -> crate::sql::Result<Result<Placement, Unplaced>> {
    db.lock_for_transaction(ALLOCATION_LOCK)?;
    space.refresh_if_shared(db)?;
    crate::unpaid::debug_check(&space.unpaid, db);
    if let Some(other) = store::live_rental(db, &r.public_key)? {
        if other.started_at.is_some() {
            return Ok(Err(Unplaced::KeyRentsAnother));
        }
        release_unpaid(db, space, other.id, "replaced_by_payment", now)?;
    }
    let mut placed = None;
    for host in [Some(r.router.clone()), None] {
        if let Ok((p, _)) = place_taking_over(db, space, cfg, &want_of(r, host), Mode::Paid, now)? {
            placed = Some(p);
            break;
        }
    }
    let Some(p) = placed else {
        return Ok(Err(Unplaced::NoRoom));
    };
    db.execute(
        "UPDATE rentals SET released_at = NULL, release_reason = NULL, address = ?1,
                prefix_len = ?2, ipv6 = ?3, router = ?4 WHERE id = ?5",
        params![
            p.address.map(|a| a.to_string()),
            p.prefix_len,
            p.ipv6.map(|n| n.to_string()),
            p.router,
            r.id
        ],
    )?;
    space.unpaid.touch(db, r.id)?;
    store::event(
        db,
        now,
        Some(r.id),
        "placed_on_payment",
        &serde_json::json!({
            "address": p.address.map(|a| a.to_string()),
            "prefix_len": p.prefix_len,
            "ipv6": p.ipv6.map(|n| n.to_string()),
            "router": p.router,
        }),
    )?;
    Ok(Ok(p))
}

/// Whether a released rental is one a payment places again: never paid, and released by a
/// takeover or by its key's own new rent.
pub fn placed_again_when_paid(r: &RentalRow) -> bool {
    r.started_at.is_none()
        && r.released_at.is_some()
        && matches!(
            r.release_reason.as_deref(),
            Some("taken_over") | Some("replaced")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_prefixes_are_a_24_and_a_48_by_default() {
        let l = LimitsConfig::default();
        let a = Requester::new("198.18.7.9".parse().unwrap(), &l, Listener::V1);
        assert_eq!(a.prefix, "198.18.7.0/24");
        assert_eq!(a.column(), "198.18.7.0/24");
        let m = Requester::new("::ffff:198.18.7.200".parse().unwrap(), &l, Listener::Compat);
        assert_eq!(m.prefix, "198.18.7.0/24");
        assert_eq!(m.column(), "compat 198.18.7.0/24");
        let b = Requester::new("2001:db8:1:2:3::4".parse().unwrap(), &l, Listener::V1);
        assert_eq!(b.prefix, "2001:db8:1::/48");
        assert_eq!(units(&Want::default()), 1);
        assert_eq!(
            units(&Want {
                prefix_len: Some(29),
                ..Want::default()
            }),
            8
        );
        assert_eq!(
            units(&Want {
                ipv4: Some(false),
                ..Want::default()
            }),
            1
        );
    }
}
