//! Reading from TUN: turns one frame (virtio-net header + packet) into wire-ready IP packets.

use super::checksum::{checksum, ipv4_header_checksum};
use super::packet::{
    be16, be32, l4_len, parse_ip, pseudo, put16, put32, Ip, OffloadError, MAX_PACKET, PROTO_TCP,
    PROTO_UDP,
};
use super::vnet::*;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Calls `emit` with every IP packet carried by `packet` (the frame behind `hdr`) and returns how
/// many it emitted. Plain packets are passed through without a copy; everything else is built in
/// `scratch`, which should hold at least [`MAX_PACKET`] (65,535) bytes. On error nothing has been
/// emitted.
pub fn segment(
    hdr: &VirtioNetHdr,
    packet: &[u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let (proto, want_v6) = match hdr.gso_type & !GSO_ECN {
        GSO_NONE if hdr.flags & FLAG_NEEDS_CSUM == 0 => {
            emit(packet);
            return Ok(1);
        }
        GSO_NONE => return complete_checksum(hdr, packet, scratch, emit),
        GSO_TCPV4 => (PROTO_TCP, Some(false)),
        GSO_TCPV6 => (PROTO_TCP, Some(true)),
        GSO_UDP_L4 => (PROTO_UDP, None),
        _ => return Err(OffloadError::UnsupportedGso(hdr.gso_type)),
    };
    if hdr.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    // hdr_len and csum_start come from the sender and are only hints; the packet itself is
    // the authority on where its headers end.
    let ip = parse_ip(packet).ok_or(OffloadError::Malformed("IP header"))?;
    if ip.proto != proto || want_v6.is_some_and(|v6| v6 != ip.v6) {
        return Err(OffloadError::Malformed(
            "GSO type does not match the packet",
        ));
    }
    let l4h = l4_len(packet, ip).ok_or(OffloadError::Malformed("transport header"))?;
    split(packet, ip, l4h, usize::from(hdr.gso_size), scratch, emit)
}

/// `CHECKSUM_PARTIAL` without GSO: the field at `csum_start + csum_offset` holds the folded
/// pseudo-header sum; sum from `csum_start` to the end on top of it and store the complement.
fn complete_checksum(
    hdr: &VirtioNetHdr,
    packet: &[u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::BadChecksumOffset);
    }
    let out = scratch
        .get_mut(..packet.len())
        .ok_or(OffloadError::ScratchTooSmall { need: packet.len() })?;
    out.copy_from_slice(packet);
    let seed = u64::from(be16(out, at));
    put16(out, at, 0);
    // Like the kernel's skb_checksum_help: a computed 0 goes out as 0xffff, which is
    // equivalent for TCP and required for UDP (0 would mean "no checksum").
    let c = match checksum(&out[start..], seed) {
        0 => 0xffff,
        c => c,
    };
    put16(out, at, c);
    emit(out);
    Ok(1)
}

/// Splits a TSO/USO super-packet into segments of `gso` payload bytes, each with its own
/// lengths, IPv4 ID, TCP sequence number and flags, and complete checksums.
fn split(
    packet: &[u8],
    ip: Ip,
    l4h: usize,
    gso: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let hl = ip.iph + l4h;
    let payload = &packet[hl..];
    if payload.is_empty() {
        return Err(OffloadError::Malformed("GSO packet without payload"));
    }
    let largest = hl + gso.min(payload.len());
    if largest > MAX_PACKET {
        return Err(OffloadError::Malformed("segment longer than 65,535 bytes"));
    }
    if largest > scratch.len() {
        return Err(OffloadError::ScratchTooSmall { need: largest });
    }
    let tcp = ip.proto == PROTO_TCP;
    let (id0, seq0) = (be16(packet, 4), be32(packet, ip.iph + 4));
    let flags0 = if tcp { packet[ip.iph + 13] } else { 0 };
    let csum_at = ip.iph + if tcp { 16 } else { 6 };
    let count = payload.len().div_ceil(gso);
    scratch[..hl].copy_from_slice(&packet[..hl]);
    for (i, chunk) in payload.chunks(gso).enumerate() {
        let len = hl + chunk.len();
        let seg = &mut scratch[..len];
        seg[hl..].copy_from_slice(chunk);
        if ip.v6 {
            put16(seg, 4, (len - ip.iph) as u16);
        } else {
            put16(seg, 2, len as u16);
            put16(seg, 4, id0.wrapping_add(i as u16));
            let c = ipv4_header_checksum(&seg[..ip.iph]);
            put16(seg, 10, c);
        }
        if tcp {
            put32(seg, ip.iph + 4, seq0.wrapping_add((i * gso) as u32));
            let mut flags = flags0;
            if i + 1 < count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                flags &= !TCP_CWR;
            }
            seg[ip.iph + 13] = flags;
        } else {
            put16(seg, ip.iph + 4, (len - ip.iph) as u16);
        }
        put16(seg, csum_at, 0);
        let c = checksum(&seg[ip.iph..], pseudo(seg, ip.v6, ip.proto, len - ip.iph));
        put16(seg, csum_at, if c == 0 && !tcp { 0xffff } else { c });
        emit(seg);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::checksum::fold;
    use crate::offload::testutil::*;

    fn run(hdr: &VirtioNetHdr, packet: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; MAX_PACKET];
        let mut out = Vec::new();
        let n = segment(hdr, packet, &mut scratch, |s| out.push(s.to_vec()));
        assert_eq!(n.is_ok(), !out.is_empty(), "errors emit nothing");
        assert_eq!(n.unwrap_or(0), out.len());
        n.map(|_| out)
    }

    /// `p` as the kernel hands it over with `CHECKSUM_PARTIAL`: the folded pseudo-header sum in
    /// the checksum field, and the matching header (GSO of `gso` bytes unless 0).
    fn partial(mut p: Vec<u8>, gso: u16) -> (VirtioNetHdr, Vec<u8>) {
        let ip = parse_ip(&p).unwrap();
        let (off, gso_type) = match (ip.proto, ip.v6) {
            (PROTO_UDP, _) => (6, GSO_UDP_L4),
            (_, false) => (16, GSO_TCPV4),
            (_, true) => (16, GSO_TCPV6),
        };
        let sum = fold(pseudo(&p, ip.v6, ip.proto, p.len() - ip.iph));
        put16(&mut p, ip.iph + off, sum);
        let hdr_len = (ip.iph + l4_len(&p, ip).unwrap()) as u16;
        let gso_type = if gso == 0 { GSO_NONE } else { gso_type };
        let (csum_start, csum_offset) = (ip.iph as u16, off as u16);
        let (flags, gso_size) = (FLAG_NEEDS_CSUM, gso);
        let h = VirtioNetHdr {
            flags,
            gso_type,
            hdr_len,
            gso_size,
            csum_start,
            csum_offset,
        };
        (h, p)
    }

    #[test]
    fn plain_packets_pass_through_without_copy() {
        let p = Pkt::tcp(false).payload(100, 1).build();
        let mut seen = None;
        let n = segment(&VirtioNetHdr::NONE, &p, &mut [], |s| {
            seen = Some(s.as_ptr())
        });
        assert_eq!((n, seen), (Ok(1), Some(p.as_ptr())));
    }

    #[test]
    fn partial_checksum_is_completed() {
        for base in [
            Pkt::tcp(false),
            Pkt::tcp(true),
            Pkt::udp(false),
            Pkt::udp(true),
        ] {
            let want = base.payload(333, 5).build();
            let (h, p) = partial(want.clone(), 0);
            assert_eq!(run(&h, &p).unwrap(), vec![want]);
            let l4_len = p.len() - usize::from(h.csum_start);
            for (csum_start, csum_offset) in [(h.csum_start, l4_len as u16 - 1), (u16::MAX, 9)] {
                let bad = VirtioNetHdr {
                    csum_start,
                    csum_offset,
                    ..h
                };
                assert_eq!(run(&bad, &p), Err(OffloadError::BadChecksumOffset));
            }
        }
    }

    /// The segments a correct split produces, built independently by the test helper.
    fn expected(first: &Pkt, total: usize, gso: usize) -> Vec<Vec<u8>> {
        let n = total.div_ceil(gso);
        let seg = |i: usize| {
            let mut p = first.clone();
            p.flags &= !(CWR * (i > 0) as u8) & !((FIN | PSH) * (i + 1 < n) as u8);
            p.id = p.id.wrapping_add(i as u16);
            p.seq = p.seq.wrapping_add((i * gso) as u32);
            p.payload = first.payload.chunks(gso).nth(i).unwrap().to_vec();
            p.build()
        };
        (0..n).map(seg).collect()
    }

    #[test]
    fn tso_and_uso_split_into_exact_segments() {
        let opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
        let cases = [
            (
                Pkt::tcp(false).with(|p| p.opts = opts.clone()),
                ACK | PSH | FIN | CWR,
                1448,
            ),
            (
                Pkt::tcp(true).with(|p| p.opts = opts.clone()),
                ACK | PSH,
                1428,
            ),
            (Pkt::tcp(false), ACK, 1460),
            (Pkt::udp(false), 0, 1200),
            (Pkt::udp(true), 0, 1232),
        ];
        for (base, flags, gso) in cases {
            for total in [1, gso - 1, gso, gso + 1, 5 * gso, 5 * gso + 7, 65_535 - 100] {
                let first = base.clone().with(|p| p.flags = flags).payload(total, 9);
                let (hdr, p) = partial(first.build(), gso as u16);
                let segs = run(&hdr, &p).unwrap();
                assert_eq!(segs, expected(&first, total, gso), "{first:?} {total}");
                assert!(segs.iter().all(|s| checksums_ok(s)));
                // The ECN bit and a bogus hdr_len change nothing.
                let hdr2 = VirtioNetHdr {
                    gso_type: hdr.gso_type | GSO_ECN,
                    hdr_len: 3,
                    ..hdr
                };
                assert_eq!(run(&hdr2, &p).unwrap(), segs);
            }
        }
    }

    #[test]
    fn udp_zero_checksum_becomes_ffff() {
        // Search a payload whose checksum computes to 0: it must go out as 0xffff.
        let zero = (0..=u16::MAX).find_map(|x| {
            let p = Pkt::udp(false).with(|p| p.payload = x.to_be_bytes().to_vec());
            (be16(&p.build(), 26) == 0xffff).then_some(p)
        });
        let (hdr, p) = partial(zero.unwrap().build(), 100);
        assert_eq!(be16(&run(&hdr, &p).unwrap()[0], 26), 0xffff);
    }

    #[test]
    fn invalid_gso_is_refused() {
        let (hdr, p) = partial(Pkt::tcp(false).payload(3000, 1).build(), 1000);
        let (_, p6) = partial(Pkt::tcp(true).payload(3000, 1).build(), 1000);
        let (_, pu) = partial(Pkt::udp(false).payload(3000, 1).build(), 1000);
        let mut frag = p.clone();
        frag[6] |= 0x20; // MF
        let mut ext = p6.clone();
        ext[6] = 0; // hop-by-hop options header
        let mut tiny_doff = p.clone();
        tiny_doff[32] = 0x40;
        let cases: [(u8, u16, &[u8]); 14] = [
            (GSO_UDP, 1000, &pu),
            (2, 1000, &p),
            (0x42, 1000, &p),
            (GSO_TCPV4, 0, &p),
            (GSO_TCPV6, 1000, &p),
            (GSO_TCPV4, 1000, &p6),
            (GSO_UDP_L4, 1000, &p),
            (GSO_TCPV4, 1000, &pu),
            (GSO_TCPV4, 1000, &frag),
            (GSO_TCPV6, 1000, &ext),
            (GSO_TCPV4, 1000, &tiny_doff),
            (GSO_TCPV4, 1000, &p[..40]), // headers only
            (GSO_TCPV4, 1000, &[]),
            (GSO_TCPV4, u16::MAX, &[&p[..], &[0; 70_000]].concat()), // segment > 64 KiB
        ];
        for (gso_type, gso_size, pkt) in cases {
            let h = VirtioNetHdr {
                gso_type,
                gso_size,
                ..hdr
            };
            assert!(run(&h, pkt).is_err(), "{h:?}");
        }
        let r = segment(&hdr, &p, &mut [0; 1000], |_| panic!("emitted"));
        assert_eq!(r, Err(OffloadError::ScratchTooSmall { need: 1040 }));
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rng = Rng::new(1);
        let mut scratch = vec![0u8; MAX_PACKET];
        let tcp6 = Pkt::tcp(true).with(|p| p.opts = vec![1; 8]);
        for base in [Pkt::tcp(false), tcp6, Pkt::udp(false), Pkt::udp(true)] {
            let (hdr, p) = partial(base.payload(900, 1).build(), 100);
            for n in 0..=p.len() {
                let _ = segment(&hdr, &p[..n], &mut scratch, |_| {});
            }
            for _ in 0..3000 {
                let mut q = p.clone();
                for _ in 0..1 + rng.below(4) {
                    q[rng.below(p.len() as u64) as usize] = rng.next() as u8;
                }
                let mut raw = hdr.to_bytes();
                raw[rng.below(10) as usize] = rng.next() as u8;
                let h = VirtioNetHdr::decode(&raw).unwrap().0;
                let n = rng.below(q.len() as u64 + 1) as usize;
                let _ = segment(&h, &q[..n], &mut scratch, |s| {
                    assert!(s.len() <= MAX_PACKET)
                });
            }
        }
        for _ in 0..20_000 {
            let mut junk = [0u8; 128];
            rng.fill(&mut junk);
            let n = rng.below(129) as usize;
            if let Ok((h, p)) = VirtioNetHdr::decode(&junk[..n]) {
                let _ = segment(&h, p, &mut scratch[..rng.below(200) as usize], |_| {});
            }
        }
    }
}
