//! Writing to TUN: coalesces decrypted packets of one flow into TSO/USO super-packets, so the
//! kernel's stack processes one skb per burst instead of one per packet.
//!
//! A packet only ever joins the latest item of its flow, so per-flow order is preserved. Only
//! exact continuations merge (next sequence number, identical headers apart from lengths, IDs and
//! checksums, valid checksums), which makes the kernel's resegmentation reproduce the original
//! packets byte for byte.

use super::checksum::{fold, ipv4_header_checksum, sum};
use super::packet::{
    be16, be32, l4_len, parse_ip, pseudo, put16, Ip, MAX_PACKET, PROTO_TCP, PROTO_UDP,
};
use super::vnet::*;

/// Segments per super-packet, as in the kernel's UDP GRO (UDP_GRO_CNT_MAX) and wireguard-go.
const MAX_SEGMENTS: usize = 64;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Counters since the last [`GroTable::take_stats`]: `packets` went to TUN in `frames` writes;
/// `dropped` counts packets longer than 65,535 bytes, which no IP header can describe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    pub frames: u64,
    pub packets: u64,
    pub dropped: u64,
}

/// Peer, protocol, addresses and ports. The peer is part of the key so that packets of
/// different peers never merge, whatever addresses they carry.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    peer: u32,
    v6: bool,
    proto: u8,
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// A coalescing candidate: a TCP segment with only ACK (and maybe PSH), or a UDP datagram,
/// with payload, consistent lengths and no IP options or extension headers.
#[derive(Clone, Copy, Default)]
struct Seg {
    v6: bool,
    tcp: bool,
    iph: usize,
    l4h: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

#[derive(Clone, Copy)]
struct Item {
    key: Option<FlowKey>,
    len: usize,
    /// May take more segments: a candidate not closed by PSH, a short segment or a bad checksum.
    open: bool,
    /// The first segment's transport checksum has been verified (lazily, on the first merge).
    verified: bool,
    seg: Seg,
    gso: usize,
    segments: usize,
    next_seq: u32,
}

/// Coalesces packets into at most `max_items` preallocated 64 KiB frames between flushes.
pub struct GroTable {
    bufs: Vec<Box<[u8]>>,
    items: Vec<Item>,
    udp: bool,
    stats: GroStats,
}

impl GroTable {
    /// Allocates all buffers up front (`max_items` × 64 KiB, at least one). `udp` enables UDP
    /// coalescing, which needs USO on the TUN device.
    pub fn new(max_items: usize, udp: bool) -> Self {
        let n = max_items.max(1);
        let frame = VNET_HDR_LEN + MAX_PACKET;
        GroTable {
            bufs: (0..n).map(|_| vec![0; frame].into_boxed_slice()).collect(),
            items: Vec::with_capacity(n),
            udp,
            stats: GroStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn take_stats(&mut self) -> GroStats {
        std::mem::take(&mut self.stats)
    }

    /// Adds a decrypted IP packet from `peer`. Returns false, storing nothing, when the packet
    /// needs a new item and the table is full: flush, then push again.
    pub fn push(&mut self, peer: u32, packet: &[u8]) -> bool {
        if packet.len() > MAX_PACKET {
            self.stats.dropped += 1;
            return true;
        }
        let ip = parse_ip(packet);
        let key = ip.and_then(|ip| flow_key(peer, packet, ip));
        let seg = ip
            .filter(|_| key.is_some())
            .and_then(|ip| candidate(packet, ip, self.udp));
        let mut open = seg.is_some();
        if let (Some(k), Some(s)) = (key, seg) {
            if let Some(i) = self.items.iter().rposition(|it| it.key == Some(k)) {
                match self.try_merge(i, packet, s) {
                    Merge::Done => return true,
                    Merge::BadChecksum => open = false,
                    Merge::No => {}
                }
            }
        }
        let Some(buf) = self.bufs.get_mut(self.items.len()) else {
            return false;
        };
        buf[VNET_HDR_LEN..][..packet.len()].copy_from_slice(packet);
        let seg = seg.unwrap_or_default();
        let (gso, next_seq) = (seg.payload, seg.seq.wrapping_add(seg.payload as u32));
        let open = open && !seg.psh;
        let len = packet.len();
        let item = Item {
            key,
            len,
            open,
            verified: false,
            seg,
            gso,
            segments: 1,
            next_seq,
        };
        self.items.push(item);
        true
    }

    fn try_merge(&mut self, i: usize, p: &[u8], s: Seg) -> Merge {
        let it = &mut self.items[i];
        let buf = &mut self.bufs[i];
        let head = &buf[VNET_HDR_LEN..][..it.len];
        let fits = it.segments < MAX_SEGMENTS && it.len + s.payload <= MAX_PACKET;
        if !it.open || !fits || s.payload > it.gso || s.l4h != it.seg.l4h {
            return Merge::No;
        }
        if !ip_compatible(head, p, s.v6, it.segments) {
            return Merge::No;
        }
        if s.tcp && (s.seq != it.next_seq || !tcp_compatible(head, p, s.iph, s.l4h)) {
            return Merge::No;
        }
        // The kernel recomputes checksums of what we hand it, so a corrupted packet must not
        // ride along inside a super-packet.
        if !it.verified {
            it.verified = l4_checksum_ok(head, it.seg);
            if !it.verified {
                it.open = false;
                return Merge::No;
            }
        }
        if !l4_checksum_ok(p, s) {
            return Merge::BadChecksum;
        }
        let start = VNET_HDR_LEN + it.len;
        buf[start..start + s.payload].copy_from_slice(&p[s.iph + s.l4h..]);
        if s.psh {
            buf[VNET_HDR_LEN + s.iph + 13] |= TCP_PSH;
        }
        it.len += s.payload;
        it.segments += 1;
        it.next_seq = it.next_seq.wrapping_add(s.payload as u32);
        it.open = !s.psh && s.payload == it.gso;
        Merge::Done
    }

    /// Emits every item in insertion order as virtio-net header + packet, then empties the table.
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        for (it, buf) in self.items.iter().zip(self.bufs.iter_mut()) {
            let (hdr, frame) = buf.split_at_mut(VNET_HDR_LEN);
            let packet = &mut frame[..it.len];
            let vnet = if it.segments > 1 {
                finish(packet, it)
            } else {
                VirtioNetHdr::NONE
            };
            vnet.encode(hdr);
            emit(&buf[..VNET_HDR_LEN + it.len]);
            self.stats.frames += 1;
            self.stats.packets += it.segments as u64;
        }
        self.items.clear();
    }
}

enum Merge {
    Done,
    No,
    BadChecksum,
}

fn flow_key(peer: u32, p: &[u8], ip: Ip) -> Option<FlowKey> {
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return None;
    }
    let (at, n) = if ip.v6 { (8, 32) } else { (12, 8) };
    let mut key = FlowKey {
        peer,
        v6: ip.v6,
        proto: ip.proto,
        addrs: [0; 32],
        ports: [0; 4],
    };
    key.addrs[..n].copy_from_slice(p.get(at..at + n)?);
    key.ports.copy_from_slice(p.get(ip.iph..ip.iph + 4)?);
    Some(key)
}

fn candidate(p: &[u8], ip: Ip, udp: bool) -> Option<Seg> {
    let lengths_ok = if ip.v6 {
        usize::from(be16(p, 4)) == p.len() - 40
    } else {
        // No options (the kernel does not merge them either), and a header that would survive
        // the kernel's own checks: we are about to recompute its checksum.
        let hdr_ok = ip.iph == 20 && fold(sum(&p[..20], 0)) == 0xffff;
        hdr_ok && usize::from(be16(p, 2)) == p.len()
    };
    let l4h = l4_len(p, ip)?;
    let payload = p.len() - ip.iph - l4h;
    if !lengths_ok || payload == 0 {
        return None;
    }
    let mut seg = Seg {
        v6: ip.v6,
        iph: ip.iph,
        l4h,
        payload,
        ..Seg::default()
    };
    if ip.proto == PROTO_TCP {
        let flags = p[ip.iph + 13];
        (flags == TCP_ACK || flags == TCP_ACK | TCP_PSH).then_some(())?;
        (seg.tcp, seg.seq, seg.psh) = (true, be32(p, ip.iph + 4), flags & TCP_PSH != 0);
    } else {
        // A zero UDP checksum means "none" over IPv4 (and is invalid over IPv6): leave it alone.
        let ok = usize::from(be16(p, ip.iph + 4)) == p.len() - ip.iph && be16(p, ip.iph + 6) != 0;
        (udp && ok).then_some(())?;
    }
    Some(seg)
}

/// IP headers that may share a super-packet: IPv4 with equal TOS, TTL and DF, and an ID that
/// continues the sequence unless DF is set (RFC 6864: IDs of atomic datagrams carry no meaning);
/// IPv6 with equal traffic class, flow label and hop limit.
fn ip_compatible(head: &[u8], p: &[u8], v6: bool, segments: usize) -> bool {
    if v6 {
        return head[..4] == p[..4] && head[7] == p[7];
    }
    let df = head[6] & 0x40 != 0;
    let id_ok = df || be16(p, 4) == be16(head, 4).wrapping_add(segments as u16);
    head[1] == p[1] && head[8] == p[8] && head[6] >> 5 == p[6] >> 5 && id_ok
}

/// Equal TCP headers apart from sequence number, flags and checksum: ACK number, data offset,
/// window, urgent pointer and options (the kernel compares options too; we add the window so the
/// resegmented packets match the originals).
fn tcp_compatible(head: &[u8], p: &[u8], iph: usize, l4h: usize) -> bool {
    let (a, b) = (&head[iph..iph + l4h], &p[iph..iph + l4h]);
    a[8..13] == b[8..13] && a[14..16] == b[14..16] && a[18..] == b[18..]
}

fn l4_checksum_ok(p: &[u8], s: Seg) -> bool {
    let proto = if s.tcp { PROTO_TCP } else { PROTO_UDP };
    let l4 = &p[s.iph..];
    fold(sum(l4, pseudo(p, s.v6, proto, l4.len()))) == 0xffff
}

/// Turns a coalesced item into a `CHECKSUM_PARTIAL` GSO packet: fixes the lengths, and stores
/// the folded (uncomplemented) pseudo-header sum where the kernel finishes the checksum.
fn finish(p: &mut [u8], it: &Item) -> VirtioNetHdr {
    let s = it.seg;
    let l4_len = p.len() - s.iph;
    if s.v6 {
        put16(p, 4, l4_len as u16);
    } else {
        put16(p, 2, p.len() as u16);
        let c = ipv4_header_checksum(&p[..s.iph]);
        put16(p, 10, c);
    }
    let (proto, csum_offset, gso_type) = match (s.tcp, s.v6) {
        (true, false) => (PROTO_TCP, 16, GSO_TCPV4),
        (true, true) => (PROTO_TCP, 16, GSO_TCPV6),
        (false, _) => (PROTO_UDP, 6, GSO_UDP_L4),
    };
    if !s.tcp {
        put16(p, s.iph + 4, l4_len as u16);
    }
    let partial = fold(pseudo(p, s.v6, proto, l4_len));
    put16(p, s.iph + usize::from(csum_offset), partial);
    VirtioNetHdr {
        flags: FLAG_NEEDS_CSUM,
        gso_type,
        hdr_len: (s.iph + s.l4h) as u16,
        gso_size: it.gso as u16,
        csum_start: s.iph as u16,
        csum_offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::segment::segment;
    use crate::offload::testutil::*;

    /// Consecutive segments of `base`'s flow with the given payload sizes; PSH on the last one
    /// when `psh`.
    fn stream(base: &Pkt, sizes: &[usize], psh: bool) -> Vec<(u32, Vec<u8>)> {
        let mut p = base.clone();
        let mut out = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let mut q = p.clone().payload(n, i as u8);
            if psh && i + 1 == sizes.len() {
                q.flags |= PSH;
            }
            out.push((1, q.build()));
            p.seq = p.seq.wrapping_add(n as u32);
            p.id = p.id.wrapping_add(1);
        }
        out
    }

    /// Pushes everything (flushing when full), flushes, returns the frames.
    fn gro(t: &mut GroTable, pkts: &[(u32, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for (peer, p) in pkts {
            if !t.push(*peer, p) {
                t.flush(|f| frames.push(f.to_vec()));
                assert!(t.push(*peer, p));
            }
        }
        t.flush(|f| frames.push(f.to_vec()));
        assert!(t.is_empty());
        frames
    }

    fn resegment(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut scratch = vec![0u8; MAX_PACKET];
        let mut out = Vec::new();
        for f in frames {
            let (hdr, p) = VirtioNetHdr::decode(f).unwrap();
            segment(&hdr, p, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        }
        out
    }

    fn packets(pkts: &[(u32, Vec<u8>)]) -> Vec<Vec<u8>> {
        pkts.iter().map(|(_, p)| p.clone()).collect()
    }

    #[test]
    fn coalesces_and_resegments_exactly() {
        let opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let bases = [
            Pkt::tcp(false).with(|p| p.opts = opts.clone()),
            Pkt::tcp(false).with(|p| p.df = false),
            Pkt::tcp(true).with(|p| p.opts = opts.clone()),
            Pkt::udp(false),
            Pkt::udp(true),
        ];
        for base in bases {
            let pkts = stream(&base, &[1000, 1000, 1000, 1000, 300], !base.udp);
            let mut t = GroTable::new(4, true);
            let frames = gro(&mut t, &pkts);
            assert_eq!(frames.len(), 1, "{base:?}");
            let (h, p) = VirtioNetHdr::decode(&frames[0]).unwrap();
            let (iph, hl) = (if base.v6 { 40 } else { 20 }, pkts[0].1.len() - 1000);
            let (proto, off, gso_type) = match (base.udp, base.v6) {
                (true, _) => (PROTO_UDP, 6, GSO_UDP_L4),
                (false, v6) => (PROTO_TCP, 16, if v6 { GSO_TCPV6 } else { GSO_TCPV4 }),
            };
            let (flags, hdr_len, gso_size) = (FLAG_NEEDS_CSUM, hl as u16, 1000);
            let (csum_start, csum_offset) = (iph as u16, off);
            let want = VirtioNetHdr {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            };
            assert_eq!((h, p.len()), (want, hl + 4300));
            let l4_len = p.len() - iph;
            let partial = fold(pseudo(p, base.v6, proto, l4_len));
            assert_eq!(be16(p, iph + usize::from(off)), partial);
            if base.v6 {
                assert_eq!(usize::from(be16(p, 4)), l4_len);
            } else {
                assert_eq!(
                    (usize::from(be16(p, 2)), naive_checksum(&p[..20], 0)),
                    (p.len(), 0)
                );
            }
            assert_eq!(resegment(&frames), packets(&pkts));
            assert_eq!(
                t.take_stats(),
                GroStats {
                    frames: 1,
                    packets: 5,
                    dropped: 0
                }
            );
            assert_eq!(t.take_stats(), GroStats::default());
        }
    }

    #[test]
    fn only_exact_continuations_merge() {
        type Variant = (&'static str, fn(&mut Pkt));
        let variants: [Variant; 16] = [
            ("out of order", |p| p.seq += 1000),
            ("retransmission", |p| p.seq -= 1000),
            ("different ack", |p| p.ack += 1),
            ("different ttl/hop limit", |p| p.ttl -= 1),
            ("different tos/traffic class", |p| p.tos = 2),
            ("different window", |p| p.window = 9),
            ("different options", |p| p.opts = vec![1; 4]),
            ("other port", |p| p.dport = 80),
            ("FIN", |p| p.flags |= FIN),
            ("SYN", |p| p.flags |= SYN),
            ("RST", |p| p.flags |= RST),
            ("no ACK", |p| p.flags = PSH),
            ("longer", |p| p.payload.push(0)),
            ("other protocol", |p| p.udp = true),
            ("v6: different flow label", |p| p.flow_label = 1),
            ("v4: no DF, ID out of sequence", |p| {
                (p.df, p.id) = (false, 7)
            }),
        ];
        let mut t = GroTable::new(8, true);
        for v6 in [false, true] {
            let base = Pkt::tcp(v6).payload(1000, 0);
            let next = base
                .clone()
                .with(|p| (p.seq, p.id) = (p.seq + 1000, p.id + 1));
            let next = next.payload(1000, 1);
            let (mut bad_l4, mut bad_ip) = (next.build(), next.build());
            bad_l4[100] ^= 1;
            bad_ip[10] ^= 1; // IPv4 header checksum (IPv6: source address, other flow)
            let mut cases = vec![
                ("control", vec![(1, base.build()), (1, next.build())]),
                ("other peer", vec![(1, base.build()), (2, next.build())]),
                ("bad checksum", vec![(1, base.build()), (1, bad_l4)]),
                ("bad header", vec![(1, base.build()), (1, bad_ip)]),
            ];
            for (name, f) in variants {
                if name.starts_with(if v6 { "v4:" } else { "v6:" }) {
                    continue;
                }
                let first = base.clone().with(|p| p.df = !name.starts_with("v4: no DF"));
                let second = next.clone().with(f).build();
                cases.push((name, vec![(1, first.build()), (1, second)]));
            }
            for (name, pkts) in cases {
                let frames = gro(&mut t, &pkts);
                let plain = pkts.iter().map(|(_, p)| [&[0; 10], &p[..]].concat());
                assert_eq!(
                    frames == plain.collect::<Vec<_>>(),
                    name != "control",
                    "{name}"
                );
            }
        }
        // With DF, IDs carry no meaning (RFC 6864) and need not continue the sequence.
        let base = Pkt::tcp(false).payload(1000, 0);
        let next = base.clone().with(|p| (p.seq, p.id) = (p.seq + 1000, 7));
        let pkts = [(1, base.build()), (1, next.payload(1000, 1).build())];
        assert_eq!(gro(&mut t, &pkts).len(), 1);
        // Neither ICMP nor anything else unknown merges.
        let icmp = [
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0x26, 0xcd, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let icmp = [&icmp[..], &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]].concat();
        let frames = gro(&mut t, &[(1, icmp.clone()), (1, icmp.clone())]);
        assert_eq!(frames, vec![[&[0; 10], &icmp[..]].concat(); 2]);
    }

    #[test]
    fn psh_and_short_segments_close_the_item() {
        let mut t = GroTable::new(8, true);
        for base in [Pkt::tcp(true), Pkt::tcp(false), Pkt::udp(false)] {
            let mut cases = vec![stream(&base, &[500, 200, 500, 500], false)];
            if !base.udp {
                let third = base.clone().with(|p| p.seq = p.seq.wrapping_add(1000));
                let mut pkts = stream(&base, &[500, 500], true);
                pkts.extend(stream(
                    &third.with(|p| p.id = p.id.wrapping_add(2)),
                    &[500],
                    false,
                ));
                cases.push(pkts);
            }
            for pkts in cases {
                let frames = gro(&mut t, &pkts);
                assert_eq!((frames.len(), resegment(&frames)), (2, packets(&pkts)));
            }
        }
    }

    #[test]
    fn flow_order_is_preserved() {
        let a = stream(&Pkt::tcp(false), &[100, 100, 100], false);
        let b = stream(&Pkt::tcp(false).with(|p| p.sport = 1), &[100, 100], false);
        let ack = (1, Pkt::tcp(false).with(|p| p.seq = 0).build());
        let pkts = [&a[0], &b[0], &ack, &a[1], &b[1], &a[2]].map(Clone::clone);
        let frames = gro(&mut GroTable::new(8, true), &pkts);
        // a0 | b0+b1 | ack | a1+a2: a1 may not jump over the ACK of its own flow.
        let want = [&a[0], &b[0], &b[1], &ack, &a[1], &a[2]].map(|p| p.1.clone());
        assert_eq!((frames.len(), resegment(&frames)), (4, want.to_vec()));
    }

    #[test]
    fn limits_full_table_and_udp_switch() {
        let mut t = GroTable::new(2, true);
        let s = stream(&Pkt::tcp(false), &[100, 100], false);
        assert!(t.push(1, &s[0].1) && t.push(2, &s[0].1));
        assert!(!t.push(3, &s[0].1), "full");
        assert!(t.push(1, &s[1].1), "merging needs no new item");
        assert_eq!(t.len(), 2);
        t.flush(|_| {});
        // 64 segments at most, 65,535 bytes at most.
        for (size, per_frame) in [(100, 64), (1400, 46)] {
            let pkts = stream(&Pkt::tcp(false), &[size; 70], false);
            let frames = gro(&mut GroTable::new(4, true), &pkts);
            assert_eq!(frames.len(), 70usize.div_ceil(per_frame));
            assert!(frames.iter().all(|f| f.len() <= VNET_HDR_LEN + MAX_PACKET));
            assert_eq!(resegment(&frames), packets(&pkts));
        }
        let pkts = stream(&Pkt::udp(false), &[100, 100], false);
        assert_eq!(gro(&mut GroTable::new(4, false), &pkts).len(), 2);
        let mut t = GroTable::new(0, true);
        assert!(t.push(1, &[0u8; 70_000]) && t.push(1, &[0x45]));
        assert_eq!(gro(&mut t, &[]).len(), 1);
        assert_eq!(
            t.take_stats(),
            GroStats {
                frames: 1,
                packets: 1,
                dropped: 1
            }
        );
    }

    #[test]
    fn randomized_streams_round_trip() {
        let mut rng = Rng::new(42);
        let (mut frames, mut total) = (0, 0);
        for round in 0..40 {
            let mut flows: Vec<Pkt> = (0..1 + rng.below(5) as u16)
                .map(|_| match rng.below(3) {
                    0 => Pkt::udp(rng.below(2) == 0),
                    _ => Pkt::tcp(rng.below(2) == 0).with(|p| p.df = rng.below(2) == 0),
                })
                .enumerate()
                .map(|(i, p)| p.with(|p| p.sport = i as u16))
                .collect();
            let mut pkts = Vec::new();
            for _ in 0..rng.below(300) {
                let f = rng.below(flows.len() as u64) as usize;
                let mss = 100 + 50 * f;
                let n = match rng.below(20) {
                    0 => 1 + rng.below(mss as u64) as usize,
                    1 => 0,
                    _ => mss,
                };
                let mut p = flows[f].clone().payload(n, rng.next() as u8);
                if !p.udp && rng.below(16) == 0 {
                    p.flags |= PSH;
                }
                if !p.udp && rng.below(30) == 0 {
                    p.seq = p.seq.wrapping_sub(mss as u32); // retransmission
                }
                flows[f].seq = flows[f].seq.wrapping_add(n as u32);
                flows[f].id = flows[f].id.wrapping_add(1);
                pkts.push((f as u32, p.build()));
            }
            let mut t = GroTable::new(1 + rng.below(8) as usize, true);
            let out = resegment(&gro(&mut t, &pkts));
            let stats = t.take_stats();
            assert_eq!(stats.packets, pkts.len() as u64, "round {round}");
            (frames, total) = (frames + stats.frames, total + stats.packets);
            for f in 0..flows.len() as u16 {
                let of_flow = |p: &&Vec<u8>| be16(p, if p[0] >> 4 == 6 { 40 } else { 20 }) == f;
                let sent: Vec<_> = pkts.iter().map(|(_, p)| p).filter(of_flow).collect();
                let got: Vec<_> = out.iter().filter(of_flow).collect();
                assert_eq!(got, sent, "round {round} flow {f}");
            }
        }
        assert!(frames * 2 < total, "{frames} frames for {total} packets");
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rng = Rng::new(5);
        let mut inputs = Vec::new();
        let tcp4 = Pkt::tcp(false).with(|p| p.opts = vec![1; 8]);
        for base in [tcp4, Pkt::tcp(true), Pkt::udp(false), Pkt::udp(true)] {
            let s = packets(&stream(&base, &[300, 300], false));
            for n in 0..=s[0].len() {
                inputs.extend([s[0][..n].to_vec(), s[1][..n].to_vec()]);
            }
            for _ in 0..2000 {
                let mut q = s[rng.below(2) as usize].clone();
                for _ in 0..1 + rng.below(3) {
                    q[rng.below(s[0].len() as u64) as usize] = rng.next() as u8;
                }
                inputs.push(q);
            }
        }
        for _ in 0..5000 {
            let mut junk = vec![0u8; rng.below(100) as usize];
            rng.fill(&mut junk);
            if let Some(b) = junk.first_mut() {
                *b = [0x45, 0x65][rng.below(2) as usize];
            }
            inputs.push(junk);
        }
        let pkts: Vec<_> = inputs
            .into_iter()
            .map(|p| (rng.below(3) as u32, p))
            .collect();
        let frames = gro(&mut GroTable::new(16, true), &pkts);
        // Whatever came in, the kernel gets back exactly as many packets as were pushed.
        let mut scratch = vec![0u8; MAX_PACKET];
        let mut n = 0;
        for f in &frames {
            let (hdr, p) = VirtioNetHdr::decode(f).unwrap();
            n += segment(&hdr, p, &mut scratch, |_| {}).unwrap();
        }
        assert_eq!(n, pkts.len());
    }
}
