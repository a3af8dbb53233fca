//! Allowed-IPs routing table: longest-prefix match from an address to a peer id.
//!
//! Every prefix, whatever its length, is one entry of a sharded map keyed by (masked address,
//! length); a bitmask of the lengths in use tells a lookup which lengths to probe, longest first.
//! A provider's table holds one or two lengths (/32 and /64, say), so a lookup is one or two
//! probes whatever the size, and a /64 costs what a /32 does. Readers never lock; a writer
//! changes a few shards and publishes them (see [`crate::sharded`]).

use crate::sharded::{Batch, Sharded};
use crossbeam_epoch::Guard;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use parking_lot::{Mutex, MutexGuard};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::*};

/// Index of a peer in the device's slab.
pub type PeerId = u32;

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

/// Prefix lengths 0..=128 as a bitmask, read without locks.
#[derive(Default)]
struct Lengths([AtomicU64; 3]);

impl Lengths {
    /// Calls `probe` for each length in use, longest first, until it finds something.
    #[inline(always)]
    fn find<T>(&self, mut probe: impl FnMut(u8) -> Option<T>) -> Option<T> {
        for w in (0..3).rev() {
            let mut bits = self.0[w].load(Acquire);
            while bits != 0 {
                let b = 63 - bits.leading_zeros();
                if let Some(found) = probe((w as u32 * 64 + b) as u8) {
                    return Some(found);
                }
                bits &= !(1u64 << b);
            }
        }
        None
    }

    fn store(&self, counts: &[u32; 129]) {
        for w in 0..3 {
            let mut bits = 0u64;
            for b in 0..64 {
                if counts.get(w * 64 + b).is_some_and(|&c| c > 0) {
                    bits |= 1 << b;
                }
            }
            self.0[w].store(bits, Release);
        }
    }
}

#[derive(Default)]
pub struct RouteTable {
    v4: Sharded<(u32, u8), PeerId>,
    v6: Sharded<(u128, u8), PeerId>,
    v4_lens: Lengths,
    v6_lens: Lengths,
    /// Entries per prefix length; only writers touch it.
    counts: Mutex<Counts>,
}

struct Counts {
    v4: [u32; 129],
    v6: [u32; 129],
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            v4: [0; 129],
            v6: [0; 129],
        }
    }
}

impl RouteTable {
    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<PeerId> {
        let a = u32::from(addr);
        self.v4_lens
            .find(|len| self.v4.get(&(mask_v4(a, len), len)))
    }

    #[inline]
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<PeerId> {
        let a = u128::from(addr);
        self.v6_lens
            .find(|len| self.v6.get(&(mask_v6(a, len), len)))
    }

    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<PeerId> {
        self.lookup_in(addr, &crossbeam_epoch::pin())
    }

    /// [`RouteTable::lookup`] under the caller's epoch pin (the packet path pins once per
    /// packet, not once per probe).
    #[inline]
    pub fn lookup_in(&self, addr: IpAddr, guard: &Guard) -> Option<PeerId> {
        match addr {
            IpAddr::V4(addr) => {
                let a = u32::from(addr);
                self.v4_lens
                    .find(|len| self.v4.get_in(&(mask_v4(a, len), len), guard))
            }
            IpAddr::V6(addr) => {
                let a = u128::from(addr);
                self.v6_lens
                    .find(|len| self.v6.get_in(&(mask_v6(a, len), len), guard))
            }
        }
    }

    /// The owner of exactly this prefix, if any.
    pub fn owner(&self, net: IpNet) -> Option<PeerId> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get(&(u32::from(n.addr()), n.prefix_len())),
            IpNet::V6(n) => self.v6.get(&(u128::from(n.addr()), n.prefix_len())),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a batch of changes, published together by [`RouteBatch::publish`]. Batches are
    /// serialized: a second one waits for the first.
    pub fn batch(&self) -> RouteBatch<'_> {
        RouteBatch {
            table: self,
            v4: self.v4.batch(),
            v6: self.v6.batch(),
            counts: self.counts.lock(),
        }
    }

    /// One change, published at once (tests and single edits).
    pub fn insert(&self, net: IpNet, id: PeerId) -> Option<PeerId> {
        let mut b = self.batch();
        let prev = b.insert(net, id);
        b.publish();
        prev
    }

    /// Removes one route at once; returns its owner.
    pub fn remove(&self, net: IpNet) -> Option<PeerId> {
        let mut b = self.batch();
        let prev = b.remove(net);
        b.publish();
        prev
    }
}

pub struct RouteBatch<'a> {
    table: &'a RouteTable,
    v4: Batch<'a, (u32, u8), PeerId>,
    v6: Batch<'a, (u128, u8), PeerId>,
    counts: MutexGuard<'a, Counts>,
}

impl RouteBatch<'_> {
    /// Routes `net` (host bits ignored) to `id`; returns the peer that owned it before.
    pub fn insert(&mut self, net: IpNet, id: PeerId) -> Option<PeerId> {
        let (prev, len, counts) = match net.trunc() {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let prev = self.v4.insert((u32::from(n.addr()), len), id);
                (prev, len, &mut self.counts.v4)
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let prev = self.v6.insert((u128::from(n.addr()), len), id);
                (prev, len, &mut self.counts.v6)
            }
        };
        if prev.is_none() {
            counts[len as usize] += 1;
        }
        prev
    }

    /// Removes the route for `net`; returns its owner.
    pub fn remove(&mut self, net: IpNet) -> Option<PeerId> {
        let (prev, len, counts) = match net.trunc() {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let prev = self.v4.remove(&(u32::from(n.addr()), len));
                (prev, len, &mut self.counts.v4)
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let prev = self.v6.remove(&(u128::from(n.addr()), len));
                (prev, len, &mut self.counts.v6)
            }
        };
        if prev.is_some() {
            counts[len as usize] -= 1;
        }
        prev
    }

    /// The owner of exactly this prefix, as this batch sees it.
    pub fn owner(&self, net: IpNet) -> Option<PeerId> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get(&(u32::from(n.addr()), n.prefix_len())),
            IpNet::V6(n) => self.v6.get(&(u128::from(n.addr()), n.prefix_len())),
        }
    }

    pub fn publish(self) {
        // Entries first, then the lengths that make lookups probe them.
        self.v4.publish();
        self.v6.publish();
        self.table.v4_lens.store(&self.counts.v4);
        self.table.v6_lens.store(&self.counts.v6);
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
        let t = RouteTable::default();
        t.insert(net("203.0.113.0/24"), 1);
        t.insert(net("203.0.113.10/32"), 2);
        t.insert(net("0.0.0.0/0"), 3);
        assert_eq!(t.lookup("203.0.113.10".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("203.0.113.11".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(3));
    }

    #[test]
    fn longest_prefix_wins_at_every_length() {
        let t = RouteTable::default();
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
        let t = RouteTable::default();
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
        let t = RouteTable::default();
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
