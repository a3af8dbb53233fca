//! A read-mostly hash map split into many immutable shards, each published as an epoch-managed
//! pointer (crossbeam-epoch).
//!
//! Readers load one shard and probe it: no lock, no reference-count traffic, no atomic
//! read-modify-write. The I/O drivers pin the epoch once per batch ([`crate::epoch`]), so a
//! lookup inside a batch is a plain load; a retired shard is freed once no pinned reader can hold
//! it. (An `arc_swap` load per lookup cost about 100 instructions, measured.) A writer (only ever
//! one, under the device's config lock) copies just the shards it touches and publishes them once
//! at the end of a batch, so one admission at a million entries copies a few hundred entries, not
//! the whole table, and a `set` of a million peers copies each shard once.

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};
use rustc_hash::FxHashMap;
use std::hash::Hash;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

/// 4096 shards: about 250 entries each at a million, so copying one costs a few microseconds.
const SHARD_BITS: u32 = 12;
const SHARDS: usize = 1 << SHARD_BITS;

/// How a key picks its shard. Must not reuse the bits the map's own hash puts in its control
/// bytes, or every key of a shard would share them.
pub trait ShardKey: Copy + Eq + Hash {
    fn shard(&self) -> usize;
}

pub struct Sharded<K, V> {
    /// Never null: every shard holds a map, empty or not.
    shards: Box<[Atomic<FxHashMap<K, V>>]>,
}

impl<K: ShardKey, V: Copy> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS)
                .map(|_| Atomic::new(FxHashMap::default()))
                .collect(),
        }
    }
}

impl<K, V> Drop for Sharded<K, V> {
    fn drop(&mut self) {
        for s in self.shards.iter() {
            // SAFETY: `&mut self`: no reader is left; every shard was made by `Atomic::new` or
            // `Owned::new` and is freed once, here (retired ones went to the collector).
            unsafe {
                let g = epoch::unprotected();
                drop(s.load(Acquire, g).into_owned());
            }
        }
    }
}

impl<K: ShardKey, V: Copy> Sharded<K, V> {
    /// Calls `f` with the current shard `i`, under an epoch pin (nested in the batch's pin, when
    /// the caller holds one, so it costs a thread-local counter).
    #[inline]
    fn with_shard<T>(&self, i: usize, f: impl FnOnce(&FxHashMap<K, V>) -> T) -> T {
        let guard = epoch::pin();
        let shard = self.shards[i].load(Acquire, &guard);
        // SAFETY: shards are never null, and a shard retired after this load is freed only once
        // every guard pinned before the retirement is gone, `guard` among them.
        f(unsafe { shard.deref() })
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<V> {
        self.with_shard(key.shard() & (SHARDS - 1), |m| m.get(key).copied())
    }

    /// [`Sharded::get`] under the caller's pin (the packet path pins once per packet).
    #[inline]
    pub fn get_in(&self, key: &K, guard: &Guard) -> Option<V> {
        let shard = self.shards[key.shard() & (SHARDS - 1)].load(Acquire, guard);
        // SAFETY: as in `with_shard`, under `guard`.
        unsafe { shard.deref() }.get(key).copied()
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.with_shard(i, |m| m.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a batch of changes; nothing is visible to readers until [`Batch::publish`].
    pub fn batch(&self) -> Batch<'_, K, V> {
        Batch {
            map: self,
            dirty: FxHashMap::default(),
        }
    }
}

/// Working copies of the shards a writer has touched.
pub struct Batch<'a, K, V> {
    map: &'a Sharded<K, V>,
    dirty: FxHashMap<usize, FxHashMap<K, V>>,
}

impl<K: ShardKey, V: Copy> Batch<'_, K, V> {
    fn shard(&mut self, key: &K) -> &mut FxHashMap<K, V> {
        let i = key.shard() & (SHARDS - 1);
        let map = self.map;
        self.dirty
            .entry(i)
            .or_insert_with(|| map.with_shard(i, FxHashMap::clone))
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let i = key.shard() & (SHARDS - 1);
        match self.dirty.get(&i) {
            Some(m) => m.get(key).copied(),
            None => self.map.get(key),
        }
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard(&key).insert(key, value)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        // Only copy a shard that holds the key.
        self.get(key)?;
        self.shard(key).remove(key)
    }

    /// Makes every change of the batch visible, one shard at a time; the old shards are freed
    /// once no reader can still hold them.
    pub fn publish(self) {
        let guard = epoch::pin();
        for (i, mut m) in self.dirty {
            if m.len() * 4 < m.capacity() {
                m.shrink_to_fit();
            }
            let old = self.map.shards[i].swap(Owned::new(m), AcqRel, &guard);
            // SAFETY: unreachable for new readers from here on; the collector frees it after
            // every reader pinned now has unpinned.
            unsafe { guard.defer_destroy(old) };
        }
        // Retired shards of a big `set` can be many megabytes: hand them over now.
        guard.flush();
    }
}

/// Fibonacci hashing: a multiply spreads sequential addresses (a provider's pool) over all
/// shards, and the top bits it takes differ from FxHash's.
#[inline]
fn spread(x: u64) -> usize {
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS)) as usize
}

impl ShardKey for crate::key::Key {
    #[inline]
    fn shard(&self) -> usize {
        // Public keys are uniformly random already.
        u16::from_le_bytes([self.0[0], self.0[1]]) as usize
    }
}

impl ShardKey for (u32, u8) {
    #[inline]
    fn shard(&self) -> usize {
        spread(u64::from(self.0) ^ (u64::from(self.1) << 32))
    }
}

impl ShardKey for (u128, u8) {
    #[inline]
    fn shard(&self) -> usize {
        let a = self.0;
        spread((a >> 64) as u64 ^ (a as u64).rotate_left(17) ^ u64::from(self.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_invisible_until_published() {
        let m: Sharded<(u32, u8), u32> = Sharded::default();
        let mut b = m.batch();
        for i in 0..10_000u32 {
            b.insert((i, 32), i);
        }
        assert_eq!(b.get(&(7, 32)), Some(7));
        assert_eq!(m.get(&(7, 32)), None);
        b.publish();
        assert_eq!(m.get(&(7, 32)), Some(7));
        assert_eq!(m.len(), 10_000);

        let mut b = m.batch();
        assert_eq!(b.remove(&(7, 32)), Some(7));
        assert_eq!(b.remove(&(7, 32)), None);
        assert_eq!(b.insert((8, 32), 80), Some(8));
        assert_eq!(m.get(&(7, 32)), Some(7));
        b.publish();
        assert_eq!(m.get(&(7, 32)), None);
        assert_eq!(m.get(&(8, 32)), Some(80));
        assert_eq!(m.len(), 9_999);
    }

    #[test]
    fn sequential_addresses_spread_over_shards() {
        let mut used = std::collections::HashSet::new();
        for i in 0..4096u32 {
            used.insert((0xCB00_7100 + i, 32u8).shard());
        }
        // A pool of 4096 consecutive addresses should touch most shards, not a handful.
        assert!(used.len() > 2000, "{}", used.len());
    }
}
