//! Configuration at scale: parsing and applying a 1,000-peer `set=1`, and answering `get=1`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use staticwire_router::device::{Device, NetControl};
use staticwire_router::key::Key;
use staticwire_router::uapi::format::format_get;
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::time::Instant;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

fn request(peers: u32) -> String {
    let mut req = format!(
        "private_key={}\nreplace_peers=true\n",
        Key([1; 32]).to_hex()
    );
    for i in 0..peers {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[31] = 0x42;
        req.push_str(&format!(
            "public_key={}\nendpoint=198.18.{}.{}:51820\nreplace_allowed_ips=true\nallowed_ip=100.64.{}.{}/32\n",
            Key(k).to_hex(),
            i >> 8 & 255,
            i & 255,
            i >> 8 & 255,
            i & 255
        ));
    }
    req
}

fn bench(c: &mut Criterion) {
    let req = request(1000);
    c.bench_function("uapi_parse_set_1000_peers", |b| {
        b.iter(|| parse_set(req.lines()).unwrap())
    });
    let parsed = parse_set(req.lines()).unwrap();
    c.bench_function("uapi_apply_set_1000_peers", |b| {
        b.iter_batched(
            Device::new,
            |dev| dev.apply(Instant::now(), &parsed, &NoNet).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let dev = Device::new();
    dev.apply(Instant::now(), &parsed, &NoNet).unwrap();
    c.bench_function("uapi_get_1000_peers", |b| {
        b.iter(|| format_get(&dev.view()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
