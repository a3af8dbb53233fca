//! The offload paths per super-packet: the Internet checksum, splitting a 64 KiB TSO frame from
//! TUN into segments, coalescing one flow's segments for TUN (GRO), and the whole outbound batch
//! path (split, route, encrypt, GSO run) as the io_uring and batch drivers run it.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use staticwire_router::device::{Device, NetControl};
use staticwire_router::io::drain_tun_frame;
use staticwire_router::io::outbox::Outbox;
use staticwire_router::key::Key;
use staticwire_router::offload::checksum::{checksum, fold, ipv4_header_checksum, pseudo_v4, sum};
use staticwire_router::offload::vnet::{VirtioNetHdr, VNET_HDR_LEN};
use staticwire_router::offload::{segment, GroTable};
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::time::Instant;

const RENTED: [u8; 4] = [203, 0, 113, 10];
const INTERNET: [u8; 4] = [198, 19, 0, 2];
const MSS: usize = 1380;
const SEGMENTS: usize = 46;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

/// An IPv4/TCP segment with correct checksums.
fn tcp(src: [u8; 4], dst: [u8; 4], seq: u32, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&502u16.to_be_bytes());
    let c = !fold(sum(&p[20..], pseudo_v4(src, dst, 6, (total - 20) as u32)));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// What TUN hands over with TSO: a virtio-net header and a 64 KiB segment-to-be.
fn tso_frame() -> (VirtioNetHdr, Vec<u8>) {
    let mut p = tcp(INTERNET, RENTED, 1, MSS * SEGMENTS);
    let partial = fold(pseudo_v4(INTERNET, RENTED, 6, (p.len() - 20) as u32));
    p[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: 1,
        gso_type: 1,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, p)
}

fn bench(c: &mut Criterion) {
    let data = vec![0xa5u8; 65_535];
    let mut g = c.benchmark_group("checksum");
    for n in [1420usize, 65_535] {
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("{n}B"), |b| {
            b.iter(|| checksum(black_box(&data[..n]), 0))
        });
    }
    g.finish();

    let (hdr, packet) = tso_frame();
    let mut scratch = vec![0u8; 70_000];
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Elements(SEGMENTS as u64));
    g.bench_function("split 64 KiB TSO frame", |b| {
        b.iter(|| {
            segment(&hdr, black_box(&packet), &mut scratch, |s| {
                black_box(s);
            })
        })
    });
    let segments: Vec<Vec<u8>> = (0..SEGMENTS)
        .map(|i| tcp(RENTED, INTERNET, 1 + (i * MSS) as u32, MSS))
        .collect();
    let mut gro = GroTable::new(64, true);
    g.bench_function("coalesce 46 segments (GRO)", |b| {
        b.iter(|| {
            for s in &segments {
                gro.push(0, s);
            }
            gro.flush(|f| {
                black_box(f);
            });
        })
    });

    // The outbound batch path: split, route, encrypt each segment, append to a GSO run.
    let server = StaticSecret::from([1u8; 32]);
    let customer = StaticSecret::from([2u8; 32]);
    let dev = Device::new();
    let req = format!(
        "private_key={}\npublic_key={}\nallowed_ip=203.0.113.10/32\n",
        Key(server.to_bytes()).to_hex(),
        Key(PublicKey::from(&customer).to_bytes()).to_hex()
    );
    dev.apply(Instant::now(), &parse_set(req.lines()).unwrap(), &NoNet)
        .unwrap();
    let mut tunn = Tunn::new(customer, PublicKey::from(&server), None, None, 9, None).unwrap();
    let from = "198.18.0.2:40001".parse().unwrap();
    let mut outbox = Outbox::new(1 << 20, true, true, Some(GroTable::new(64, true)));
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 70_000]);
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false) else {
        panic!("no initiation")
    };
    let init = init.to_vec();
    staticwire_router::io::handle_datagrams(
        &dev,
        Instant::now(),
        from,
        &init,
        init.len(),
        &mut out,
        &mut outbox,
    );
    outbox.finish();
    let r = outbox.runs[0];
    let resp = outbox.udp()[r.start..r.start + r.len].to_vec();
    outbox.clear();
    if let TunnResult::WriteToNetwork(ka) = tunn.decapsulate(None, &resp, &mut buf) {
        let ka = ka.to_vec();
        staticwire_router::io::handle_datagrams(
            &dev,
            Instant::now(),
            from,
            &ka,
            ka.len(),
            &mut out,
            &mut outbox,
        );
    }
    outbox.clear();
    let mut frame = vec![0u8; VNET_HDR_LEN];
    hdr.encode(&mut frame);
    frame.extend_from_slice(&packet);
    // One clock read per batch in the drivers: a frame's share of it is ~0.
    let now = Instant::now();
    g.bench_function("TSO frame -> encrypted GSO run (whole path)", |b| {
        b.iter(|| {
            drain_tun_frame(
                &dev,
                now,
                true,
                black_box(&frame),
                &mut scratch,
                &mut out,
                &mut outbox,
            );
            outbox.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
