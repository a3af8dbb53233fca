//! Destination lookup at provider scale: 100,000 rented /32s. Ours (an immutable table behind
//! `arc_swap`, read without a lock) against the baselines a first implementation would reach
//! for: `dashmap` and `RwLock<HashMap>`.

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dashmap::DashMap;
use ipnet::IpNet;
use staticwire_router::routes::RouteTable;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

const ENTRIES: u32 = 100_000;
const PROBES: usize = 4096;

fn addr(i: u32) -> Ipv4Addr {
    // 100k distinct addresses spread over 100.64.0.0/10-like space.
    Ipv4Addr::from(0x6440_0000 + i.wrapping_mul(7))
}

fn probes() -> Vec<Ipv4Addr> {
    let mut x = 0x9e37_79b9u32;
    (0..PROBES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addr(x % ENTRIES)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let probes = probes();
    let mut g = c.benchmark_group("route_lookup_100k");
    g.throughput(Throughput::Elements(PROBES as u64));

    let mut table = RouteTable::default();
    for i in 0..ENTRIES {
        table.insert(IpNet::from(IpAddr::V4(addr(i))), i);
    }
    // A few shorter prefixes, as a provider with some routed subnets would have.
    for p in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        table.insert(p.parse().unwrap(), 0);
    }
    let ours = ArcSwap::from_pointee(table);
    g.bench_function("staticwire_arcswap_table", |b| {
        b.iter(|| {
            let t = ours.load();
            for a in &probes {
                black_box(t.lookup_v4(*a));
            }
        })
    });

    let dash: DashMap<u32, u32> = DashMap::new();
    for i in 0..ENTRIES {
        dash.insert(u32::from(addr(i)), i);
    }
    g.bench_function("dashmap", |b| {
        b.iter(|| {
            for a in &probes {
                black_box(dash.get(&u32::from(*a)).map(|v| *v));
            }
        })
    });

    let locked: Arc<RwLock<HashMap<u32, u32>>> = Arc::new(RwLock::new(
        (0..ENTRIES).map(|i| (u32::from(addr(i)), i)).collect(),
    ));
    g.bench_function("rwlock_std_hashmap", |b| {
        b.iter(|| {
            for a in &probes {
                black_box(locked.read().unwrap().get(&u32::from(*a)).copied());
            }
        })
    });
    g.finish();

    // What an admission costs the writer at this scale: copy the table and publish it.
    c.bench_function("route_admit_one_at_100k", |b| {
        let mut next = ENTRIES;
        b.iter(|| {
            let mut t = RouteTable::clone(&ours.load());
            // Cycle over a few new addresses so the table stays at ~100k.
            let k = ENTRIES + next % 1024;
            t.insert(IpNet::from(IpAddr::V4(addr(k))), k);
            next += 1;
            ours.store(Arc::new(t));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
