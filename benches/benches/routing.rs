//! Destination lookup and admission at provider scale. Ours (sharded immutable maps behind
//! `arc_swap`, read without a lock) against the baselines a first implementation would reach
//! for: `dashmap` and `RwLock<HashMap>`; and the cost of admitting one more customer to a table
//! of 100,000 and of 1,000,000 (ours copies one shard; the previous whole-table snapshot copied
//! everything, shown as `whole_table_copy`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use ipnet::IpNet;
use rustc_hash::FxHashMap;
use staticwire_router::routes::RouteTable;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

const PROBES: usize = 4096;

fn addr(i: u32) -> Ipv4Addr {
    // Distinct addresses spread over 100.64.0.0/10-like space.
    Ipv4Addr::from(0x6440_0000 + i.wrapping_mul(7))
}

/// The /64 of customer `i` in a provider's 2001:db8::/32.
fn net6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(i) << 64))
}

fn probes(entries: u32) -> Vec<u32> {
    let mut x = 0x9e37_79b9u32;
    (0..PROBES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % entries
        })
        .collect()
}

fn table(entries: u32, v6: bool) -> RouteTable {
    let t = RouteTable::default();
    let mut b = t.batch();
    for i in 0..entries {
        b.insert(IpNet::from(IpAddr::V4(addr(i))), i);
        if v6 {
            b.insert(format!("{}/64", net6(i)).parse().unwrap(), i);
        }
    }
    // A few shorter prefixes, as a provider with some routed subnets would have.
    for p in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        b.insert(p.parse().unwrap(), 0);
    }
    b.publish();
    t
}

fn lookups(c: &mut Criterion) {
    for entries in [100_000u32, 1_000_000] {
        let probes = probes(entries);
        let mut g = c.benchmark_group(format!("route_lookup_{}k", entries / 1000));
        g.throughput(Throughput::Elements(PROBES as u64));

        let ours = table(entries, true);
        g.bench_function("staticwire_v4_32", |b| {
            b.iter(|| {
                for &i in &probes {
                    black_box(ours.lookup_v4(addr(i)));
                }
            })
        });
        g.bench_function("staticwire_v6_64", |b| {
            b.iter(|| {
                for &i in &probes {
                    // Any address inside the customer's /64.
                    let a = u128::from(net6(i)) | 0x1234;
                    black_box(ours.lookup_v6(Ipv6Addr::from(a)));
                }
            })
        });
        drop(ours);

        let dash: DashMap<u32, u32> = DashMap::new();
        for i in 0..entries {
            dash.insert(u32::from(addr(i)), i);
        }
        g.bench_function("dashmap", |b| {
            b.iter(|| {
                for &i in &probes {
                    black_box(dash.get(&u32::from(addr(i))).map(|v| *v));
                }
            })
        });
        drop(dash);

        let locked: RwLock<HashMap<u32, u32>> =
            RwLock::new((0..entries).map(|i| (u32::from(addr(i)), i)).collect());
        g.bench_function("rwlock_std_hashmap", |b| {
            b.iter(|| {
                for &i in &probes {
                    black_box(locked.read().unwrap().get(&u32::from(addr(i))).copied());
                }
            })
        });
        g.finish();
    }
}

fn admissions(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_admit_one");
    for entries in [100_000u32, 1_000_000] {
        let ours = table(entries, false);
        let mut next = 0u32;
        g.bench_function(BenchmarkId::new("staticwire_sharded", entries), |b| {
            b.iter(|| {
                // Cycle over a few new addresses so the table stays the same size.
                let k = entries + next % 1024;
                next += 1;
                let net = IpNet::from(IpAddr::V4(addr(k)));
                let mut batch = ours.batch();
                if batch.owner(net).is_some() {
                    batch.remove(net);
                } else {
                    batch.insert(net, k);
                }
                batch.publish();
            })
        });
        drop(ours);
        // The previous design: one immutable map, copied whole for every admission.
        let whole: FxHashMap<u32, u32> = (0..entries).map(|i| (u32::from(addr(i)), i)).collect();
        g.bench_function(BenchmarkId::new("whole_table_copy", entries), |b| {
            b.iter(|| {
                let mut t = whole.clone();
                t.insert(u32::from(addr(entries + 1)), 1);
                black_box(t.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, admissions);
criterion_main!(benches);
