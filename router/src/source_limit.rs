//! A per-source token bucket for handshake initiations while the device is under load.
//!
//! Under load the cookie (MAC2) proves an initiation's source address is real; this then keeps any
//! one address from spending more than its share of Diffie-Hellman, as WireGuard's kernel module
//! and wireguard-go do (20 per second, bursts of 5).

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const PER_SECOND: f64 = 20.0;
const BURST: f64 = 5.0;
const SHARDS: usize = 16;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct SourceLimit {
    shards: [Mutex<FxHashMap<IpAddr, Bucket>>; SHARDS],
}

impl Default for SourceLimit {
    fn default() -> Self {
        SourceLimit {
            shards: std::array::from_fn(|_| Mutex::new(FxHashMap::default())),
        }
    }
}

impl SourceLimit {
    fn shard(&self, ip: &IpAddr) -> &Mutex<FxHashMap<IpAddr, Bucket>> {
        let mut h = rustc_hash::FxHasher::default();
        ip.hash(&mut h);
        &self.shards[(h.finish() >> 60) as usize % SHARDS]
    }

    /// Takes a token for `ip` at `now`; false when the source is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.shard(&ip).lock();
        let b = map.entry(ip).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * PER_SECOND).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose buckets have refilled (memory stays bounded by recent sources).
    pub fn prune(&self, now: Instant) {
        let full = Duration::from_secs_f64(BURST / PER_SECOND);
        for shard in &self.shards {
            shard
                .lock()
                .retain(|_, b| now.saturating_duration_since(b.at) < full);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_source() {
        let l = SourceLimit::default();
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, 5);
        assert!(l.allow(b, t0), "another source has its own bucket");
        // 100 ms later: two more tokens for a.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..10).filter(|_| l.allow(a, t1)).count(), 2);
        l.prune(t1 + Duration::from_secs(1));
        assert!(l.is_empty());
    }
}
