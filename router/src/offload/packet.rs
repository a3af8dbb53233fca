//! What segmentation and coalescing share: IP and transport header fields read and written
//! without ever panicking on hostile lengths, and why a frame cannot be turned into packets.

use super::checksum;

/// Why a frame read from TUN could not be turned into IP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("frame shorter than the virtio-net header")]
    ShortFrame,
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGso(u8),
    #[error("GSO packet with gso_size 0")]
    ZeroGsoSize,
    #[error("checksum start/offset outside the packet")]
    BadChecksumOffset,
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("scratch buffer too small: {need} bytes needed")]
    ScratchTooSmall { need: usize },
}

pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
/// Largest IP packet we build or store (IPv4 total length is 16 bits).
pub(crate) const MAX_PACKET: usize = 65_535;

// Field accessors that read 0 / write nothing out of bounds. Callers validate lengths first;
// these only make sure a validation bug can never become a panic on hostile input.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from(be16(b, at)) << 16 | u32::from(be16(b, at.wrapping_add(2)))
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at.wrapping_add(2)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    put16(b, at, (v >> 16) as u16);
    put16(b, at.wrapping_add(2), v as u16);
}

/// IP version, header length and transport protocol of an unfragmented packet.
#[derive(Clone, Copy)]
pub(crate) struct Ip {
    pub v6: bool,
    pub iph: usize,
    pub proto: u8,
}

/// Parses the IP header; `None` for anything but IPv4 (any IHL ≥ 5, not a fragment) or IPv6.
/// IPv6 extension headers surface as an unknown `proto` and are refused by the callers.
pub(crate) fn parse_ip(p: &[u8]) -> Option<Ip> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let iph = usize::from(p[0] & 0x0f) * 4;
            // MF set or a fragment offset: ports are not where we expect them.
            let fragment = be16(p, 6) & 0x3fff != 0;
            (iph >= 20 && iph <= p.len() && !fragment).then_some(Ip {
                v6: false,
                iph,
                proto: p[9],
            })
        }
        6 if p.len() >= 40 => Some(Ip {
            v6: true,
            iph: 40,
            proto: p[6],
        }),
        _ => None,
    }
}

/// Length of the TCP or UDP header at `ip.iph`, if the whole header is inside `p`.
pub(crate) fn l4_len(p: &[u8], ip: Ip) -> Option<usize> {
    let l4h = match ip.proto {
        PROTO_TCP => usize::from(*p.get(ip.iph + 12)? >> 4) * 4,
        PROTO_UDP => 8,
        _ => return None,
    };
    ((l4h >= 20 || ip.proto == PROTO_UDP) && ip.iph + l4h <= p.len()).then_some(l4h)
}

/// Unfolded pseudo-header sum for the transport segment of `p` with `l4_len` bytes.
pub(crate) fn pseudo(p: &[u8], v6: bool, proto: u8, l4_len: usize) -> u64 {
    fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = b.get(at..at + N) {
            a.copy_from_slice(s);
        }
        a
    }
    if v6 {
        checksum::pseudo_v6(arr(p, 8), arr(p, 24), proto, l4_len as u32)
    } else {
        checksum::pseudo_v4(arr(p, 12), arr(p, 16), proto, l4_len as u32)
    }
}
