//! Allowed-IPs routing table: longest-prefix match from an address to a peer id.
//!
//! Host routes (/32, /128) are what a provider has by the thousand, so they sit in their own hash
//! map and cost one probe. Other prefix lengths live in one map per length, searched longest
//! first, so a lookup costs at most one probe per distinct length in use (usually a handful).
//! The table is a plain value: the device publishes immutable copies through `arc_swap`, so
//! readers on the packet path never take a lock.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Index of a peer in the device's slab.
pub type PeerId = u32;

#[derive(Clone, Default, Debug)]
struct Family<A: Copy + Eq + std::hash::Hash> {
    /// Full-length prefixes: the hot path.
    hosts: FxHashMap<A, PeerId>,
    /// Shorter prefixes, one map per length, sorted longest first. Keys are masked addresses.
    shorter: Vec<(u8, FxHashMap<A, PeerId>)>,
}

impl<A: Copy + Eq + std::hash::Hash> Family<A> {
    fn lookup(&self, addr: A, mask: impl Fn(A, u8) -> A) -> Option<PeerId> {
        if let Some(&id) = self.hosts.get(&addr) {
            return Some(id);
        }
        self.shorter
            .iter()
            .find_map(|(len, map)| map.get(&mask(addr, *len)).copied())
    }

    fn map_for(&mut self, len: u8, full: u8) -> &mut FxHashMap<A, PeerId> {
        if len == full {
            return &mut self.hosts;
        }
        let pos = match self.shorter.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.shorter.insert(pos, (len, FxHashMap::default()));
                pos
            }
        };
        &mut self.shorter[pos].1
    }

    fn insert(&mut self, addr: A, len: u8, full: u8, id: PeerId) -> Option<PeerId> {
        self.map_for(len, full).insert(addr, id)
    }

    fn remove(&mut self, addr: A, len: u8, full: u8) -> Option<PeerId> {
        let removed = self.map_for(len, full).remove(&addr);
        self.shorter.retain(|(_, m)| !m.is_empty());
        removed
    }

    fn len(&self) -> usize {
        self.hosts.len() + self.shorter.iter().map(|(_, m)| m.len()).sum::<usize>()
    }
}

fn mask_v4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - len))
    }
}

fn mask_v6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - len))
    }
}

#[derive(Clone, Default, Debug)]
pub struct RouteTable {
    v4: Family<u32>,
    v6: Family<u128>,
}

impl RouteTable {
    /// Routes `net` (host bits ignored) to `id`; returns the peer that owned it before.
    pub fn insert(&mut self, net: IpNet, id: PeerId) -> Option<PeerId> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(u32::from(n.addr()), n.prefix_len(), 32, id),
            IpNet::V6(n) => self
                .v6
                .insert(u128::from(n.addr()), n.prefix_len(), 128, id),
        }
    }

    /// Removes the route for `net`; returns its owner.
    pub fn remove(&mut self, net: IpNet) -> Option<PeerId> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.remove(u32::from(n.addr()), n.prefix_len(), 32),
            IpNet::V6(n) => self.v6.remove(u128::from(n.addr()), n.prefix_len(), 128),
        }
    }

    /// The owner of exactly this prefix, if any.
    pub fn owner(&self, net: IpNet) -> Option<PeerId> {
        match net.trunc() {
            IpNet::V4(n) => {
                let fam = &self.v4;
                if n.prefix_len() == 32 {
                    return fam.hosts.get(&u32::from(n.addr())).copied();
                }
                fam.shorter
                    .iter()
                    .find(|(l, _)| *l == n.prefix_len())
                    .and_then(|(_, m)| m.get(&u32::from(n.addr())).copied())
            }
            IpNet::V6(n) => {
                let fam = &self.v6;
                if n.prefix_len() == 128 {
                    return fam.hosts.get(&u128::from(n.addr())).copied();
                }
                fam.shorter
                    .iter()
                    .find(|(l, _)| *l == n.prefix_len())
                    .and_then(|(_, m)| m.get(&u128::from(n.addr())).copied())
            }
        }
    }

    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<PeerId> {
        self.v4.lookup(u32::from(addr), mask_v4)
    }

    #[inline]
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<PeerId> {
        self.v6.lookup(u128::from(addr), mask_v6)
    }

    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<PeerId> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Normalizes a prefix the way WireGuard stores it: host bits cleared.
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V4(n) => IpNet::V4(Ipv4Net::new(n.network(), n.prefix_len()).expect("valid len")),
        IpNet::V6(n) => IpNet::V6(Ipv6Net::new(n.network(), n.prefix_len()).expect("valid len")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn host_routes_win_over_shorter_prefixes() {
        let mut t = RouteTable::default();
        t.insert(net("203.0.113.0/24"), 1);
        t.insert(net("203.0.113.10/32"), 2);
        t.insert(net("0.0.0.0/0"), 3);
        assert_eq!(t.lookup("203.0.113.10".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("203.0.113.11".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(3));
    }

    #[test]
    fn longest_prefix_wins_at_every_length() {
        let mut t = RouteTable::default();
        for len in [8u8, 16, 20, 24, 28, 31] {
            t.insert(net(&format!("10.1.2.3/{len}")), len as u32);
        }
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(31));
        assert_eq!(t.lookup("10.1.2.5".parse().unwrap()), Some(28));
        assert_eq!(t.lookup("10.1.2.200".parse().unwrap()), Some(24));
        assert_eq!(t.lookup("10.1.9.1".parse().unwrap()), Some(20));
        assert_eq!(t.lookup("10.1.200.1".parse().unwrap()), Some(16));
        assert_eq!(t.lookup("10.200.0.1".parse().unwrap()), Some(8));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_prefixes() {
        let mut t = RouteTable::default();
        t.insert(net("2001:db8::/32"), 1);
        t.insert(net("2001:db8:1::/64"), 2);
        t.insert(net("2001:db8:1::7/128"), 3);
        assert_eq!(t.lookup("2001:db8:1::7".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("2001:db8:1::8".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("2001:db8:2::1".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("2001:db9::1".parse().unwrap()), None);
        assert_eq!(t.lookup("203.0.113.1".parse().unwrap()), None);
    }

    #[test]
    fn insert_moves_ownership_and_remove_cleans_up() {
        let mut t = RouteTable::default();
        assert_eq!(t.insert(net("203.0.113.10/32"), 1), None);
        assert_eq!(t.insert(net("203.0.113.10/32"), 2), Some(1));
        assert_eq!(t.insert(net("10.0.0.77/8"), 4), None);
        assert_eq!(t.owner(net("10.0.0.0/8")), Some(4));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(net("10.9.9.9/8")), Some(4));
        assert_eq!(t.remove(net("203.0.113.10/32")), Some(2));
        assert!(t.is_empty());
        assert_eq!(t.lookup("10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn canonical_clears_host_bits() {
        assert_eq!(canonical(net("10.1.2.3/8")), net("10.0.0.0/8"));
        assert_eq!(canonical(net("2001:db8::1/32")), net("2001:db8::/32"));
    }
}
