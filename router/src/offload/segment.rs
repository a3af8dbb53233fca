//! Reading from TUN: turns one frame (virtio-net header + packet) into wire-ready IP packets.

use super::checksum::{checksum, ipv4_header_checksum};
use super::vnet::*;
use super::{
    be16, be32, l4_len, parse_ip, pseudo, put16, put32, Ip, OffloadError, MAX_PACKET, PROTO_TCP,
    PROTO_UDP,
};

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
    use crate::offload::checksum::{fold, sum};
    use crate::offload::testutil::*;

    fn run(hdr: &VirtioNetHdr, packet: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; MAX_PACKET];
        let mut out = Vec::new();
        let n = segment(hdr, packet, &mut scratch, |s| out.push(s.to_vec()));
        assert_eq!(n.is_ok(), !out.is_empty(), "errors emit nothing");
        n.map(|n| {
            assert_eq!(n, out.len());
            out
        })
    }

    /// A super-packet as the kernel hands it over: the first segment's headers with the given
    /// flags, all payload, the pseudo-header sum in the checksum field.
    fn superpacket(first: &Pkt, flags: u8, payload: &[u8], gso: u16) -> (VirtioNetHdr, Vec<u8>) {
        let mut p = Pkt {
            flags,
            payload: payload.to_vec(),
            ..first.clone()
        }
        .build();
        let ip = parse_ip(&p).unwrap();
        let (off, gso_type) = match (first.udp, first.v6) {
            (true, _) => (6, GSO_UDP_L4),
            (false, false) => (16, GSO_TCPV4),
            (false, true) => (16, GSO_TCPV6),
        };
        let partial = fold(pseudo(&p, ip.v6, ip.proto, p.len() - ip.iph));
        put16(&mut p, ip.iph + off, partial);
        let hdr_len = (ip.iph + l4_len(&p, ip).unwrap()) as u16;
        let csum_start = ip.iph as u16;
        let flags = FLAG_NEEDS_CSUM;
        (
            VirtioNetHdr {
                flags,
                gso_type,
                hdr_len,
                gso_size: gso,
                csum_start,
                csum_offset: off as u16,
            },
            p,
        )
    }

    #[test]
    fn plain_packets_pass_through_without_copy() {
        let p = Pkt::tcp(false).payload(100, 1).build();
        let mut scratch = [0u8; 8];
        let mut seen = None;
        let n = segment(&VirtioNetHdr::NONE, &p, &mut scratch, |s| {
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
            let want = base.clone().payload(333, 5).build();
            let ip = parse_ip(&want).unwrap();
            let off = if base.udp { 6 } else { 16 };
            let mut p = want.clone();
            let partial = fold(pseudo(&p, ip.v6, ip.proto, p.len() - ip.iph));
            put16(&mut p, ip.iph + off, partial);
            let hdr = VirtioNetHdr {
                flags: FLAG_NEEDS_CSUM,
                csum_start: ip.iph as u16,
                csum_offset: off as u16,
                ..VirtioNetHdr::NONE
            };
            assert_eq!(run(&hdr, &p).unwrap(), vec![want.clone()]);
            let bad = VirtioNetHdr {
                csum_offset: (p.len() - ip.iph - 1) as u16,
                ..hdr
            };
            assert_eq!(run(&bad, &p), Err(OffloadError::BadChecksumOffset));
            let bad = VirtioNetHdr {
                csum_start: u16::MAX,
                csum_offset: u16::MAX,
                ..hdr
            };
            assert_eq!(run(&bad, &p), Err(OffloadError::BadChecksumOffset));
        }
    }

    /// Expected segments built from scratch by the test helper, not by the code under test.
    fn expected(first: &Pkt, flags: u8, payload: &[u8], gso: usize) -> Vec<Vec<u8>> {
        let n = payload.len().div_ceil(gso);
        let chunks = payload.chunks(gso).enumerate();
        let seg = |(i, c): (usize, &[u8])| {
            let mut f = flags & !(CWR * (i > 0) as u8);
            if i + 1 < n {
                f &= !(FIN | PSH);
            }
            let (id, seq) = (
                first.id.wrapping_add(i as u16),
                first.seq.wrapping_add((i * gso) as u32),
            );
            Pkt {
                flags: f,
                id,
                seq,
                payload: c.to_vec(),
                ..first.clone()
            }
            .build()
        };
        chunks.map(seg).collect()
    }

    #[test]
    fn tso_and_uso_split_into_exact_segments() {
        let opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
        let cases = [
            (
                Pkt {
                    opts: opts.clone(),
                    ..Pkt::tcp(false)
                },
                ACK | PSH | FIN | CWR,
                1448,
            ),
            (
                Pkt {
                    opts,
                    ..Pkt::tcp(true)
                },
                ACK | PSH,
                1428,
            ),
            (Pkt::tcp(false), ACK, 1460),
            (Pkt::udp(false), 0, 1200),
            (Pkt::udp(true), 0, 1232),
        ];
        for (first, flags, gso) in cases {
            for total in [
                1,
                gso - 1,
                gso,
                gso + 1,
                5 * gso,
                5 * gso + 7,
                65_535 - 40 - 60,
            ] {
                let payload = first.clone().payload(total, 9).payload;
                let (hdr, p) = superpacket(&first, flags, &payload, gso as u16);
                let segs = run(&hdr, &p).unwrap();
                assert_eq!(
                    segs,
                    expected(&first, flags, &payload, gso),
                    "{first:?} {total}"
                );
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
        // Find a payload whose segment checksum computes to zero, then check it goes out as 0xffff.
        let first = Pkt::udp(false);
        for x in 0..=u16::MAX {
            let payload = x.to_be_bytes();
            let mut p = Pkt {
                payload: payload.to_vec(),
                ..first.clone()
            }
            .build();
            put16(&mut p, 26, 0);
            if fold(sum(&p[20..], pseudo(&p, false, PROTO_UDP, p.len() - 20))) != 0xffff {
                continue;
            }
            let (hdr, sp) = superpacket(&first, 0, &payload, 100);
            assert_eq!(be16(&run(&hdr, &sp).unwrap()[0], 26), 0xffff);
            return;
        }
        panic!("no zero-checksum payload found");
    }

    #[test]
    fn invalid_gso_is_refused() {
        let first = Pkt::tcp(false);
        let payload = vec![7u8; 3000];
        let (hdr, p) = superpacket(&first, ACK, &payload, 1000);
        let (hdr6, p6) = superpacket(&Pkt::tcp(true), ACK, &payload, 1000);
        let (udp, pu) = superpacket(&Pkt::udp(false), 0, &payload, 1000);
        let mut frag = p.clone();
        frag[6] |= 0x20; // MF
        let mut ext = p6.clone();
        ext[6] = 0; // hop-by-hop options header
        let mut tiny_doff = p.clone();
        tiny_doff[32] = 0x40;
        let cases: Vec<(VirtioNetHdr, &[u8])> = vec![
            (
                VirtioNetHdr {
                    gso_type: GSO_UDP,
                    ..udp
                },
                &pu,
            ),
            (VirtioNetHdr { gso_type: 2, ..hdr }, &p),
            (
                VirtioNetHdr {
                    gso_type: 0x42,
                    ..hdr
                },
                &p,
            ),
            (VirtioNetHdr { gso_size: 0, ..hdr }, &p),
            (
                VirtioNetHdr {
                    gso_type: GSO_TCPV6,
                    ..hdr
                },
                &p,
            ),
            (
                VirtioNetHdr {
                    gso_type: GSO_TCPV4,
                    ..hdr6
                },
                &p6,
            ),
            (
                VirtioNetHdr {
                    gso_type: GSO_UDP_L4,
                    ..hdr
                },
                &p,
            ),
            (udp, &p),
            (hdr, &frag),
            (hdr6, &ext),
            (hdr, &tiny_doff),
            (hdr, &p[..40]), // headers only
            (hdr, &[]),
        ];
        for (h, pkt) in cases {
            assert!(run(&h, pkt).is_err(), "{h:?}");
        }
        let mut small = [0u8; 1000];
        let r = segment(&hdr, &p, &mut small, |_| panic!("emitted"));
        assert_eq!(r, Err(OffloadError::ScratchTooSmall { need: 1040 }));
        let huge = vec![0u8; 70_000];
        let (h, big) = superpacket(&first, ACK, &huge[..65_000], 65_000);
        assert!(run(
            &VirtioNetHdr {
                gso_size: u16::MAX,
                ..h
            },
            &[&big[..], &huge[..]].concat()
        )
        .is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rng = Rng::new(1);
        let mut scratch = vec![0u8; MAX_PACKET];
        let bases = [
            superpacket(&Pkt::tcp(false), ACK, &[1; 900], 100),
            superpacket(
                &Pkt {
                    opts: vec![1; 8],
                    ..Pkt::tcp(true)
                },
                ACK,
                &[2; 900],
                100,
            ),
            superpacket(&Pkt::udp(false), 0, &[3; 900], 100),
            superpacket(&Pkt::udp(true), 0, &[4; 900], 100),
        ];
        for (hdr, p) in &bases {
            for n in 0..=p.len() {
                let _ = segment(hdr, &p[..n], &mut scratch, |_| {});
            }
            for _ in 0..3000 {
                let mut q = p.clone();
                let mut h = *hdr;
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(q.len() as u64) as usize;
                    q[i] = rng.next() as u8;
                }
                let mut raw = h.to_bytes();
                raw[rng.below(10) as usize] = rng.next() as u8;
                h = VirtioNetHdr::decode(&raw).unwrap().0;
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
