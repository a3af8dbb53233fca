//! Test-only packet builder, an independent (textbook) checksum and a deterministic PRNG.

use super::packet::{PROTO_TCP, PROTO_UDP};

pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const CWR: u8 = 0x80;

/// RFC 1071 the slow way: 16-bit big-endian words, wide accumulator, complemented.
pub fn naive_checksum(data: &[u8], initial: u64) -> u16 {
    let mut s: u64 = initial;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Verifies a TCP/UDP packet's transport checksum (and the IPv4 header checksum) from scratch.
pub fn checksums_ok(p: &[u8]) -> bool {
    let v6 = p[0] >> 4 == 6;
    let (iph, proto) = if v6 {
        (40, p[6])
    } else {
        (usize::from(p[0] & 15) * 4, p[9])
    };
    let l4 = [pseudo_bytes(p, v6, proto), p[iph..].to_vec()].concat();
    (v6 || naive_checksum(&p[..iph], 0) == 0) && naive_checksum(&l4, 0) == 0
}

/// The pseudo-header exactly as laid out on paper (RFC 793 / RFC 8200 §8.1).
fn pseudo_bytes(p: &[u8], v6: bool, proto: u8) -> Vec<u8> {
    let iph = if v6 { 40 } else { usize::from(p[0] & 15) * 4 };
    let l4len = ((p.len() - iph) as u16).to_be_bytes();
    if v6 {
        [&p[8..40], &[0, 0], &l4len[..], &[0, 0, 0, proto]].concat()
    } else {
        [&p[12..20], &[0, proto], &l4len[..]].concat()
    }
}

/// A TCP or UDP packet over IPv4 or IPv6, built with correct lengths and checksums.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub v6: bool,
    pub udp: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub opts: Vec<u8>,
    pub id: u16,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub flow_label: u32,
    pub payload: Vec<u8>,
}

impl Pkt {
    pub fn tcp(v6: bool) -> Self {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if v6 {
            src[..2].copy_from_slice(&[0xfd, 0]);
            dst[..2].copy_from_slice(&[0xfd, 0]);
            (src[15], dst[15]) = (1, 2);
        } else {
            src[..4].copy_from_slice(&[10, 0, 0, 1]);
            dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        }
        Pkt {
            v6,
            udp: false,
            src,
            dst,
            sport: 40000,
            dport: 443,
            seq: 0xffff_f000, // wraps within a few segments
            ack: 77,
            flags: ACK,
            window: 512,
            opts: Vec::new(),
            id: 0xfffe,
            ttl: 64,
            tos: 0,
            df: true,
            flow_label: 0x12345,
            payload: Vec::new(),
        }
    }

    pub fn udp(v6: bool) -> Self {
        Pkt {
            udp: true,
            flags: 0,
            ..Self::tcp(v6)
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// `n` payload bytes that differ per position and per `salt`.
    pub fn payload(mut self, n: usize, salt: u8) -> Self {
        self.payload = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let iph = if self.v6 { 40 } else { 20 };
        let l4h = if self.udp { 8 } else { 20 + self.opts.len() };
        let len = iph + l4h + self.payload.len();
        let mut p = vec![0u8; len];
        let proto = if self.udp { PROTO_UDP } else { PROTO_TCP };
        if self.v6 {
            let w = 6 << 28 | u32::from(self.tos) << 20 | self.flow_label;
            p[..4].copy_from_slice(&w.to_be_bytes());
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            (p[6], p[7]) = (proto, self.ttl);
            p[8..24].copy_from_slice(&self.src);
            p[24..40].copy_from_slice(&self.dst);
        } else {
            (p[0], p[1]) = (0x45, self.tos);
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.id.to_be_bytes());
            p[6] = if self.df { 0x40 } else { 0 };
            (p[8], p[9]) = (self.ttl, proto);
            p[12..16].copy_from_slice(&self.src[..4]);
            p[16..20].copy_from_slice(&self.dst[..4]);
            let c = naive_checksum(&p[..20], 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let t = &mut p[iph..];
        t[..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        if self.udp {
            t[4..6].copy_from_slice(&((len - iph) as u16).to_be_bytes());
        } else {
            t[4..8].copy_from_slice(&self.seq.to_be_bytes());
            t[8..12].copy_from_slice(&self.ack.to_be_bytes());
            (t[12], t[13]) = (((l4h / 4) << 4) as u8, self.flags);
            t[14..16].copy_from_slice(&self.window.to_be_bytes());
            t[20..l4h].copy_from_slice(&self.opts);
        }
        p[iph + l4h..].copy_from_slice(&self.payload);
        let off = iph + if self.udp { 6 } else { 16 };
        let mut c = naive_checksum(
            &[pseudo_bytes(&p, self.v6, proto), p[iph..].to_vec()].concat(),
            0,
        );
        if self.udp && c == 0 {
            c = 0xffff;
        }
        p[off..off + 2].copy_from_slice(&c.to_be_bytes());
        assert!(checksums_ok(&p));
        p
    }
}

/// xorshift64*: deterministic, dependency-free randomness for the randomized tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-enough value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}
