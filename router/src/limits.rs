//! Per-rental limits in the data plane: an optional bandwidth cap (bits a second) and packet-rate
//! cap per direction, and an optional block of outbound SMTP (TCP port 25), as providers apply to
//! keep their addresses off spam lists.
//!
//! The caps are GCRA token buckets kept as one "theoretical arrival time" per direction and
//! measure: a packet conforms if admitting it keeps that time within the burst allowance ahead of
//! now. Integer nanoseconds, no floating point, no allocation.

use std::time::Instant;

/// How far ahead of now a bucket may run: a burst of 100 ms at the capped rate.
const BURST_NS: u64 = 100_000_000;
/// But never less than a few full-size packets, or a low cap would refuse every packet.
const MIN_BURST_BYTES: u64 = 4 * 1500;

/// What the control configures for one rental; 0 = no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitConf {
    pub bits_per_second: u64,
    pub packets_per_second: u64,
    pub block_smtp: bool,
}

impl LimitConf {
    pub fn is_none(&self) -> bool {
        *self == LimitConf::default()
    }
}

#[derive(Debug, Default)]
struct Gcra {
    /// Nanoseconds since the limiter's epoch when the bucket is next empty.
    tat: u64,
}

impl Gcra {
    /// Admits a packet costing `cost_ns` if the bucket has room within `burst_ns`.
    fn admit(&mut self, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
        let tat = self.tat.max(now);
        if tat.saturating_sub(now) > burst_ns {
            return false;
        }
        self.tat = tat.saturating_add(cost_ns);
        true
    }
}

/// Buckets for one direction.
#[derive(Debug, Default)]
struct Direction {
    bytes: Gcra,
    packets: Gcra,
}

#[derive(Debug)]
pub struct Limits {
    pub conf: LimitConf,
    epoch: Instant,
    up: Direction,
    down: Direction,
}

/// Which way a packet goes, seen from the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From the customer to the internet.
    Up,
    /// From the internet to the customer.
    Down,
}

impl Limits {
    /// Limits starting at `now` (the clock is the caller's: the packet core reads none).
    pub fn new(conf: LimitConf, now: Instant) -> Self {
        Limits {
            conf,
            epoch: now,
            up: Direction::default(),
            down: Direction::default(),
        }
    }

    /// Whether a packet of `len` bytes may pass at `at`.
    pub fn admit(&mut self, way: Way, len: usize, at: Instant) -> bool {
        let now = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        let c = self.conf;
        let d = match way {
            Way::Up => &mut self.up,
            Way::Down => &mut self.down,
        };
        if c.packets_per_second > 0 {
            let cost = 1_000_000_000 / c.packets_per_second.max(1);
            let burst = BURST_NS.max(cost * 4);
            if !d.packets.admit(now, cost, burst) {
                return false;
            }
        }
        if c.bits_per_second > 0 {
            let ns_per_byte = 8_000_000_000f64 / c.bits_per_second as f64;
            let cost = (len as f64 * ns_per_byte) as u64;
            let burst = BURST_NS.max((MIN_BURST_BYTES as f64 * ns_per_byte) as u64);
            if !d.bytes.admit(now, cost, burst) {
                return false;
            }
        }
        true
    }
}

/// Whether an IP packet is TCP to port 25 (the first fragment of one, for IPv4). IPv6 extension
/// headers before TCP are walked (hop-by-hop, routing, destination options).
pub fn is_smtp(packet: &[u8]) -> bool {
    const TCP: u8 = 6;
    let Some(&first) = packet.first() else {
        return false;
    };
    let (mut next, mut off) = match first >> 4 {
        4 if packet.len() >= 20 => {
            let frag_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if frag_offset != 0 {
                return false;
            }
            (packet[9], usize::from(first & 0x0f) * 4)
        }
        6 if packet.len() >= 40 => (packet[6], 40),
        _ => return false,
    };
    if first >> 4 == 6 {
        // Hop-by-hop (0), routing (43), destination options (60): length in 8-byte units.
        for _ in 0..4 {
            if !matches!(next, 0 | 43 | 60) || packet.len() < off + 2 {
                break;
            }
            next = packet[off];
            off += (usize::from(packet[off + 1]) + 1) * 8;
        }
    }
    next == TCP
        && packet
            .get(off + 2..off + 4)
            .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == 25)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bandwidth_cap_passes_its_rate_and_no_more() {
        // 8 Mbit/s = 1 MB/s: over one simulated second of 1000-byte packets offered at 10 MB/s,
        // about 1 MB (plus the 100 ms burst) gets through.
        let mut l = Limits::new(
            LimitConf {
                bits_per_second: 8_000_000,
                ..Default::default()
            },
            Instant::now(),
        );
        let t0 = l.epoch;
        let mut passed = 0u64;
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_micros(i * 100);
            if l.admit(Way::Up, 1000, at) {
                passed += 1000;
            }
        }
        assert!((1_000_000..=1_110_000).contains(&passed), "{passed}");
        // The other direction has its own bucket.
        assert!(l.admit(Way::Down, 1000, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn packet_cap_and_tiny_caps_still_pass_some() {
        let mut l = Limits::new(
            LimitConf {
                packets_per_second: 1000,
                ..Default::default()
            },
            Instant::now(),
        );
        let t0 = l.epoch;
        let passed = (0..20_000u64)
            .filter(|i| l.admit(Way::Down, 64, t0 + Duration::from_micros(i * 100)))
            .count();
        // Two simulated seconds at 1000 packets a second, plus the burst.
        assert!((2000..=2110).contains(&passed), "{passed}");

        let mut tiny = Limits::new(
            LimitConf {
                bits_per_second: 1000,
                ..Default::default()
            },
            Instant::now(),
        );
        assert!(tiny.admit(Way::Up, 1500, tiny.epoch));
    }

    #[test]
    fn smtp_is_recognised_only_for_tcp_25() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[9] = 6;
        v4[22..24].copy_from_slice(&25u16.to_be_bytes());
        assert!(is_smtp(&v4));
        v4[22..24].copy_from_slice(&587u16.to_be_bytes());
        assert!(!is_smtp(&v4));
        v4[22..24].copy_from_slice(&25u16.to_be_bytes());
        v4[9] = 17;
        assert!(!is_smtp(&v4), "UDP to 25 is not SMTP");
        v4[9] = 6;
        v4[7] = 1; // a later fragment
        assert!(!is_smtp(&v4));

        let mut v6 = vec![0u8; 80];
        v6[0] = 0x60;
        v6[6] = 60; // destination options, 8 bytes, then TCP
        v6[40] = 6;
        v6[41] = 0;
        v6[50..52].copy_from_slice(&25u16.to_be_bytes());
        assert!(is_smtp(&v6));
        assert!(!is_smtp(&v6[..45]), "truncated");
        assert!(!is_smtp(&[]));
        assert!(!is_smtp(&[0x45]));
    }
}
