//! The packet path allocates nothing per packet: 100,000 packets each way through the code the
//! batched drivers run — TSO super-packets split and encrypted into GSO runs, decrypted
//! datagrams coalesced by GRO into TUN frames — with a global allocator that counts every
//! allocation made by this thread while the router's code runs.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use staticwire_router::device::{Device, NetControl};
use staticwire_router::io::outbox::Outbox;
use staticwire_router::io::{drain_tun_frame, handle_datagrams};
use staticwire_router::key::Key;
use staticwire_router::offload::checksum::{fold, ipv4_header_checksum, pseudo_v4, sum};
use staticwire_router::offload::vnet::{VirtioNetHdr, VNET_HDR_LEN};
use staticwire_router::offload::GroTable;
use staticwire_router::stats::IoTally;
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        System.realloc(p, l, n)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with allocations counted; returns how many it made.
fn counted(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Relaxed) - before
}

struct FixedNet;
impl NetControl for FixedNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

const RENTED: [u8; 4] = [203, 0, 113, 10];
const INTERNET: [u8; 4] = [198, 19, 0, 2];
const MSS: usize = 1380;

fn customer_addr() -> SocketAddr {
    "198.18.0.2:40001".parse().unwrap()
}

/// An IPv4/TCP packet with `payload` bytes, correct IP and TCP checksums.
fn tcp(src: [u8; 4], dst: [u8; 4], seq: u32, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = ipv4_header_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&80u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&7u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10; // ACK
    p[34..36].copy_from_slice(&502u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761) as u8;
    }
    let c = !fold(sum(&p[20..], pseudo_v4(src, dst, 6, (total - 20) as u32)));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TSO frame as the kernel hands it over: a virtio-net header and a 64 KiB TCP packet whose
/// checksum field holds only the pseudo-header sum.
fn tso_frame(segments: usize) -> Vec<u8> {
    let mut p = tcp(INTERNET, RENTED, 1, MSS * segments);
    let l4 = (p.len() - 20) as u32;
    let partial = fold(pseudo_v4(INTERNET, RENTED, 6, l4));
    p[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: 1,    // NEEDS_CSUM
        gso_type: 1, // TCPV4
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut frame = vec![0u8; VNET_HDR_LEN];
    hdr.encode(&mut frame);
    frame.extend_from_slice(&p);
    frame
}

#[test]
fn a_hundred_thousand_packets_each_way_allocate_nothing() {
    // The counter itself works: one allocation is seen as one.
    assert_eq!(counted(|| drop(std::hint::black_box(vec![0u8; 10]))), 1);
    let server = StaticSecret::from([1u8; 32]);
    let customer_secret = StaticSecret::from([2u8; 32]);
    let device = Device::new();
    let setup = format!(
        "private_key={}\nlisten_port=51820\npublic_key={}\nallowed_ip=203.0.113.10/32",
        Key(server.to_bytes()).to_hex(),
        Key(PublicKey::from(&customer_secret).to_bytes()).to_hex()
    );
    device
        .apply(
            Instant::now(),
            &parse_set(setup.lines()).unwrap(),
            &FixedNet,
        )
        .unwrap();
    let mut customer = Tunn::new(
        customer_secret,
        PublicKey::from(&server),
        None,
        None,
        9,
        None,
    )
    .unwrap();

    let mut outbox = Outbox::new(1 << 20, true, true, Some(GroTable::new(16, true)));
    let (mut out, mut scratch) = (vec![0u8; 70_000], vec![0u8; 70_000]);
    let mut buf = vec![0u8; 70_000];
    let mut tally = IoTally::default();

    // Handshake (allocations allowed here: session setup is not the packet path).
    let TunnResult::WriteToNetwork(init) = customer.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no initiation")
    };
    let init = init.to_vec();
    handle_datagrams(
        &device,
        Instant::now(),
        customer_addr(),
        &init,
        init.len(),
        &mut out,
        &mut outbox,
    );
    outbox.finish();
    let run = outbox.runs[0];
    let response = outbox.udp()[run.start..run.start + run.len].to_vec();
    outbox.clear();
    let TunnResult::WriteToNetwork(keepalive) = customer.decapsulate(None, &response, &mut buf)
    else {
        panic!("customer refused the response")
    };
    let keepalive = keepalive.to_vec();
    handle_datagrams(
        &device,
        Instant::now(),
        customer_addr(),
        &keepalive,
        keepalive.len(),
        &mut out,
        &mut outbox,
    );
    outbox.clear();

    // Outbound: 2,174 super-packets of 46 segments = 100,004 packets.
    let frame = tso_frame(46);
    let mut sent = 0u64;
    let allocations = counted(|| {
        while sent < 100_000 {
            // As the drivers do: one clock read per batch.
            let now = Instant::now();
            sent += drain_tun_frame(
                &device,
                now,
                true,
                &frame,
                &mut scratch,
                &mut out,
                &mut outbox,
            );
            outbox.finish();
            outbox.tally(&mut tally);
            outbox.clear();
        }
    });
    assert_eq!(allocations, 0, "outbound path allocated");
    assert!(tally.udp_datagrams_sent >= 100_000, "{tally:?}");
    assert!(
        tally.udp_sends * 10 < tally.udp_datagrams_sent,
        "segments did not leave as GSO runs: {tally:?}"
    );

    // Inbound: the customer's segments of one flow, sealed 64 at a time outside the count.
    let mut received = 0u64;
    let mut seq = 1u32;
    let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut inbound_allocations = 0;
    while received < 100_000 {
        sealed.clear();
        for _ in 0..64 {
            let p = tcp(RENTED, INTERNET, seq, MSS);
            seq = seq.wrapping_add(MSS as u32);
            match customer.encapsulate(&p, &mut buf) {
                TunnResult::WriteToNetwork(d) => sealed.push(d.to_vec()),
                other => panic!("customer could not seal: {other:?}"),
            }
        }
        inbound_allocations += counted(|| {
            let now = Instant::now();
            for d in &sealed {
                received += handle_datagrams(
                    &device,
                    now,
                    customer_addr(),
                    d,
                    d.len(),
                    &mut out,
                    &mut outbox,
                );
            }
            outbox.finish();
            outbox.tally(&mut tally);
            outbox.clear();
        });
    }
    assert_eq!(inbound_allocations, 0, "inbound path allocated");
    assert!(tally.tun_packets_written >= 100_000, "{tally:?}");
    assert!(
        tally.tun_frames_written * 10 < tally.tun_packets_written,
        "segments were not coalesced: {tally:?}"
    );
}
