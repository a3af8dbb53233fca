//! Where a new rental goes: which host, which IPv4 block, which IPv6 prefix.
//!
//! IPv4 blocks (/32 to /29) are placed like a buddy allocator: a request takes an aligned block
//! from the smallest fully free aligned block that holds it, so single addresses fill the
//! fragments first and large blocks stay whole for the rentals that need them. A block a rental
//! holds is never split: every address it covers counts as taken until it is released and its
//! cool-down is over. IPv6 prefixes (/64 or /56) are taken lowest first from the host's pool.

use crate::config::{Config, RouterConfig};
use crate::freespace::{FreeSpace, V4Free, V6Free};
use crate::sql::{params, Connection};
use ipnet::Ipv6Net;
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What the customer asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Want {
    /// IPv4 prefix length; None = 32.
    pub prefix_len: Option<u8>,
    /// IPv6 too? None = where it costs nothing extra.
    pub ipv6: Option<bool>,
    /// A host (router name); None = the first that has room.
    pub host: Option<String>,
    /// Some(false): IPv6 only, no IPv4 address.
    pub ipv4: Option<bool>,
}

/// Where a rental is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub router: String,
    /// None for an IPv6-only rental.
    pub address: Option<Ipv4Addr>,
    pub prefix_len: u8,
    pub ipv6: Option<Ipv6Net>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("prefix length /{0} is not on sale (see the terms' ipv4_prefix_lengths)")]
    PrefixNotOffered(u8),
    #[error("no host named {0:?}")]
    UnknownHost(String),
    #[error("no host offers IPv6")]
    NoIpv6,
    #[error("IPv6-only rentals are not sold here (the terms have no ipv6_only_monthly_sat)")]
    Ipv6OnlyNotOffered,
    #[error("an IPv6-only rental has no IPv4 prefix_len and cannot refuse IPv6")]
    Ipv6OnlyContradiction,
    #[error("no free block of that size left")]
    Exhausted,
}

/// The addresses of `router` a new block may use: rentable, not covered by a live rental, and
/// rested. Sorted. A read of the whole pool: the reference the free-space index is checked
/// against in tests, never on a request's path.
pub fn free_v4(db: &Connection, router: &str, now: i64) -> crate::sql::Result<Vec<u32>> {
    // Single addresses held are left out by the query (through the live-address index); the
    // few live prefixes are taken out here.
    let mut held = HashSet::new();
    let mut stmt = db.prepare_cached(
        "SELECT a.num, r.prefix_len FROM rentals r JOIN addresses a ON a.address = r.address
         WHERE r.released_at IS NULL AND r.router = ?1 AND r.prefix_len < 32",
    )?;
    let rows = stmt.query_map([router], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (base, len) = row?;
        let size = 1i64 << (32 - len.clamp(0, 32));
        held.extend(base..base + size);
    }
    let mut stmt = db.prepare_cached(
        "SELECT a.num FROM addresses a WHERE a.router = ?1 AND a.cooldown_until <= ?2
           AND NOT EXISTS (SELECT 1 FROM rentals r WHERE r.address = a.address AND r.released_at IS NULL)
         ORDER BY a.num",
    )?;
    let nums = stmt
        .query_map(params![router, now], |r| r.get::<_, i64>(0))?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(nums
        .into_iter()
        .filter(|n| !held.contains(n))
        .map(|n| n as u32)
        .collect())
}

/// How many of the sorted `free` lie in `[lo, lo + n)`.
fn count_in(free: &[u32], lo: u64, n: u64) -> u64 {
    let a = free.partition_point(|&x| u64::from(x) < lo);
    let b = free.partition_point(|&x| u64::from(x) < lo + n);
    (b - a) as u64
}

/// The buddy choice: the first address of a free aligned block of `2^(32-prefix_len)`
/// addresses inside the smallest fully free aligned block there is; ties go to the lowest.
pub fn pick_block(free: &[u32], prefix_len: u8) -> Option<u32> {
    let size = 1u64 << (32 - u32::from(prefix_len.min(32)));
    let mut best: Option<(u64, u32)> = None;
    for &a in free {
        let a64 = u64::from(a);
        if a64 % size != 0 || count_in(free, a64, size) != size {
            continue;
        }
        // Grow to the largest fully free aligned block around it, but no further than the
        // best so far: only a smaller one can win.
        let mut block = size;
        while block < (1u64 << 32) && best.is_none_or(|(b, _)| block < b) {
            let parent = block * 2;
            if count_in(free, a64 & !(parent - 1), parent) != parent {
                break;
            }
            block = parent;
        }
        if best.is_none_or(|(b, _)| block < b) {
            best = Some((block, a));
        }
    }
    best.map(|(_, a)| a)
}

/// The lowest prefix of length `len` inside `pool` that is not in `used`.
pub fn pick_v6(pool: Ipv6Net, len: u8, used: &HashSet<Ipv6Net>) -> Option<Ipv6Net> {
    if len < pool.prefix_len() || len > 128 {
        return None;
    }
    let bits = u32::from(len - pool.prefix_len());
    let count: u128 = if bits >= 64 { 1 << 64 } else { 1 << bits };
    let step: u128 = if len == 0 {
        0
    } else {
        1u128 << (128 - u32::from(len))
    };
    let base = u128::from(pool.network());
    // Indices are tried in order; only the used ones are skipped, so this ends after at most
    // used.len() + 1 steps.
    (0..count)
        .map(|i| Ipv6Net::new(Ipv6Addr::from(base + i * step), len).expect("valid length"))
        .find(|net| !used.contains(net))
}

/// A block of `order` on `router` that the index offers and the database confirms free; blocks
/// the index offers but the database holds (another replica's, a failed commit's) leave the
/// index on the way. `unread`: the index's offer, confirmed by the caller's insert.
fn pick_v4_checked(
    db: &Connection,
    router: &str,
    v4: &mut V4Free,
    order: u8,
    now: i64,
    unread: bool,
) -> crate::sql::Result<Option<u32>> {
    while let Some(a) = v4.pick(order) {
        if unread || crate::freespace::block_is_free(db, router, a, order, now)? {
            return Ok(Some(a));
        }
        v4.take(a, order);
    }
    Ok(None)
}

/// The lowest IPv6 prefix the index offers that no live rental holds.
fn pick_v6_checked(db: &Connection, v6: &mut V6Free) -> crate::sql::Result<Option<u128>> {
    while let Some(i) = v6.pick() {
        if !crate::freespace::live_v6(db, &v6.net(i))? {
            return Ok(Some(i));
        }
        v6.take(i);
    }
    Ok(None)
}

/// `prefix_len` None: no IPv4 (an IPv6-only rental). Takes what it places out of `space`.
fn place_on(
    db: &Connection,
    space: &mut FreeSpace,
    r: &RouterConfig,
    prefix_len: Option<u8>,
    ipv6: bool,
    now: i64,
    take: bool,
) -> crate::sql::Result<Option<Placement>> {
    let unread = space.unread;
    let Some(rs) = space.router(&r.name) else {
        return Ok(None);
    };
    rs.wake(now);
    let address = match prefix_len {
        Some(len) => match pick_v4_checked(db, &r.name, &mut rs.v4, 32 - len.min(32), now, unread)?
        {
            Some(a) => Some(a),
            None => return Ok(None),
        },
        None => None,
    };
    let v6 = match (ipv6, rs.v6.as_mut()) {
        (false, _) => None,
        (true, None) => return Ok(None),
        (true, Some(v6)) => match pick_v6_checked(db, v6)? {
            Some(i) => Some(i),
            None => return Ok(None),
        },
    };
    // Both found: only now taken, so a host without room for one keeps the other.
    if let (Some(a), Some(len), true) = (address, prefix_len, take) {
        rs.v4.take(a, 32 - len.min(32));
    }
    let ipv6 = match (v6, rs.v6.as_mut()) {
        (Some(i), Some(space6)) => {
            if take {
                space6.take(i);
            }
            Some(space6.net(i))
        }
        _ => None,
    };
    Ok(Some(Placement {
        router: r.name.clone(),
        address: address.map(Ipv4Addr::from),
        prefix_len: prefix_len.unwrap_or(32),
        ipv6,
    }))
}

/// Gives a placement back to the index (its rental was not written after all).
pub fn unplace(space: &mut FreeSpace, p: &Placement) {
    let Some(rs) = space.router(&p.router) else {
        return;
    };
    if let Some(a) = p.address {
        rs.v4.free_block(u32::from(a), 32 - p.prefix_len.min(32));
    }
    if let (Some(net), Some(v6)) = (p.ipv6, rs.v6.as_mut()) {
        if let Some(i) = v6.index_of(&net) {
            v6.free(i);
        }
    }
}

/// The hosts `want` may be placed on, or why it is not on sale (no pool is looked at).
pub fn hosts_for<'c>(cfg: &'c Config, want: &Want) -> Result<Vec<&'c RouterConfig>, AllocError> {
    validate(cfg, want)?;
    let hosts: Vec<&RouterConfig> = match &want.host {
        Some(h) => match cfg.routers.iter().find(|r| &r.name == h) {
            Some(r) => vec![r],
            None => return Err(AllocError::UnknownHost(h.clone())),
        },
        None => cfg.routers.iter().collect(),
    };
    let v6_only = want.ipv4 == Some(false);
    if (want.ipv6 == Some(true) || v6_only) && hosts.iter().all(|r| r.ipv6_pool.is_none()) {
        return Err(AllocError::NoIpv6);
    }
    Ok(hosts)
}

/// Whether `want` is on sale at all (before any pool is looked at).
pub fn validate(cfg: &Config, want: &Want) -> Result<(), AllocError> {
    let v6_only = want.ipv4 == Some(false);
    if v6_only && cfg.terms.ipv6_only_monthly_sat.is_none() {
        return Err(AllocError::Ipv6OnlyNotOffered);
    }
    if v6_only && (want.prefix_len.is_some() || want.ipv6 == Some(false)) {
        return Err(AllocError::Ipv6OnlyContradiction);
    }
    let prefix_len = want.prefix_len.unwrap_or(32);
    if !cfg.prefix_lengths().contains(&prefix_len) {
        return Err(AllocError::PrefixNotOffered(prefix_len));
    }
    if let Some(h) = &want.host {
        if !cfg.routers.iter().any(|r| &r.name == h) {
            return Err(AllocError::UnknownHost(h.clone()));
        }
    }
    if (want.ipv6 == Some(true) || v6_only)
        && cfg
            .routers
            .iter()
            .filter(|r| want.host.as_ref().is_none_or(|h| *h == r.name))
            .all(|r| r.ipv6_pool.is_none())
    {
        return Err(AllocError::NoIpv6);
    }
    Ok(())
}

/// Places a new rental: on the asked-for host, or the first configured host with room, from
/// the free-space index (O(log n); the database confirms the block), and takes it out of the
/// index. Runs inside the caller's transaction, which also inserts the rental.
pub fn place(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    want: &Want,
    now: i64,
) -> Result<Result<Placement, AllocError>, crate::sql::Error> {
    place_or_look(db, space, cfg, want, now, true)
}

/// Where [`place`] would place `want` now, taking nothing.
pub fn look(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    want: &Want,
    now: i64,
) -> Result<Result<Placement, AllocError>, crate::sql::Error> {
    place_or_look(db, space, cfg, want, now, false)
}

fn place_or_look(
    db: &Connection,
    space: &mut FreeSpace,
    cfg: &Config,
    want: &Want,
    now: i64,
    take: bool,
) -> Result<Result<Placement, AllocError>, crate::sql::Error> {
    let hosts = match hosts_for(cfg, want) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let v6_only = want.ipv4 == Some(false);
    let prefix_len = want.prefix_len.unwrap_or(32);
    let free_v6 = cfg.terms.ipv6_monthly_sat == 0;
    for r in hosts {
        let ipv6 = (v6_only || want.ipv6.unwrap_or(free_v6)) && r.ipv6_pool.is_some();
        if v6_only && !ipv6 {
            continue;
        }
        let v4 = (!v6_only).then_some(prefix_len);
        if let Some(p) = place_on(db, space, r, v4, ipv6, now, take)? {
            return Ok(Ok(p));
        }
    }
    Ok(Err(AllocError::Exhausted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(lo: u32, hi: u32) -> Vec<u32> {
        (lo..hi).collect()
    }

    #[test]
    fn blocks_are_aligned_and_whole() {
        let free = range(0, 16);
        assert_eq!(pick_block(&free, 29), Some(0));
        // .1 taken: the first whole aligned /29 is 8.
        let free: Vec<u32> = (0..16).filter(|&n| n != 1).collect();
        assert_eq!(pick_block(&free, 29), Some(8));
        assert_eq!(pick_block(&free, 30), Some(4));
        assert_eq!(pick_block(&free, 31), Some(2));
        // Nothing whole: none.
        let free: Vec<u32> = (0..16).filter(|n| n % 2 == 0).collect();
        assert_eq!(pick_block(&free, 31), None);
        assert_eq!(pick_block(&[], 32), None);
    }

    #[test]
    fn singles_fill_fragments_before_splitting_big_blocks() {
        // 0..16 with .1 taken: .0 is a lone free address; a /32 goes there, not into 8..16.
        let free: Vec<u32> = (0..16).filter(|&n| n != 1).collect();
        assert_eq!(pick_block(&free, 32), Some(0));
        // .0 and .1 taken: free blocks are 2..4 (a /31), 4..8 (/30), 8..16 (/29): a /32 takes
        // from the /31, a /31 takes the /31 whole, a /30 the /30.
        let free = range(2, 16);
        assert_eq!(pick_block(&free, 32), Some(2));
        assert_eq!(pick_block(&free, 31), Some(2));
        assert_eq!(pick_block(&free, 30), Some(4));
        assert_eq!(pick_block(&free, 29), Some(8));
    }

    #[test]
    fn allocating_in_turn_never_overlaps_and_keeps_a_big_block() {
        // A /24 where singles and /30s arrive mixed: after 40 singles and 8 /30s, a /29 still
        // fits (fragmentation would have prevented it), and no address is given twice.
        let mut free = range(0, 256);
        let mut taken = HashSet::new();
        for i in 0..48 {
            let len = if i % 6 == 5 { 30 } else { 32 };
            let a = pick_block(&free, len).expect("room");
            let n = 1u32 << (32 - len);
            for x in a..a + n {
                assert!(taken.insert(x), "{x} given twice");
            }
            free.retain(|x| *x < a || *x >= a + n);
        }
        assert!(pick_block(&free, 29).is_some());
        assert_eq!(taken.len(), 40 + 8 * 4);
        // The 40 singles sit in 40 consecutive addresses: whole /29s left intact around them.
        let whole29 = (0..32u64)
            .filter(|b: &u64| count_in(&free, b * 8, 8) == 8)
            .count();
        assert!(whole29 >= 32 - 9, "{whole29} whole /29s");
    }

    #[test]
    fn v6_takes_the_lowest_unused_prefix() {
        let pool: Ipv6Net = "2001:db8:100::/48".parse().unwrap();
        let mut used = HashSet::new();
        let a = pick_v6(pool, 64, &used).unwrap();
        assert_eq!(a.to_string(), "2001:db8:100::/64");
        used.insert(a);
        let b = pick_v6(pool, 64, &used).unwrap();
        assert_eq!(b.to_string(), "2001:db8:100:1::/64");
        let c = pick_v6(pool, 56, &HashSet::new()).unwrap();
        assert_eq!(c.to_string(), "2001:db8:100::/56");
        used.insert(c);
        assert_eq!(
            pick_v6(pool, 56, &used).unwrap().to_string(),
            "2001:db8:100:100::/56"
        );
        // A pool of exactly one prefix runs out.
        let one: Ipv6Net = "2001:db8:1:2::/64".parse().unwrap();
        let used: HashSet<_> = [one].into();
        assert_eq!(pick_v6(one, 64, &used), None);
        assert_eq!(
            pick_v6(one, 56, &HashSet::new()),
            None,
            "longer than the pool"
        );
    }
}
