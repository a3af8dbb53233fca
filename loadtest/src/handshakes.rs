//! Handshake load: many distinct customer keys, derived from a seed so the server can be told the
//! same public keys (`pubkeys`), each sending one real initiation (`handshakes`); and a flood of
//! initiations from keys the server does not know (`flood`), as an attacker would send.
//!
//! Initiations are made before the clock starts (on every CPU), so the sender only has to send:
//! what is measured is the server.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Customer `i`'s private key for `seed`: splitmix64, so both sides derive the same keys.
pub fn secret(seed: u64, i: u64) -> StaticSecret {
    let mut x = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut b = [0u8; 32];
    for chunk in b.chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    StaticSecret::from(b)
}

/// Runs `f(i)` for `0..n` on every CPU, results in order.
fn parallel<T: Send>(n: u64, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
    let per = n.div_ceil(cpus.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per as usize)
            .map(|start| {
                let f = &f;
                s.spawn(move || (start..(start + per).min(n)).map(f).collect::<Vec<T>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

/// Hex public keys of customers `0..count` (for a UAPI `set`).
pub fn pubkeys(seed: u64, count: u64) -> Vec<String> {
    parallel(count, |i| {
        let p = PublicKey::from(&secret(seed, i));
        p.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// One initiation from each of customers `first..first + count`.
fn initiations(server: PublicKey, seed: u64, first: u64, count: u64) -> Vec<Vec<u8>> {
    parallel(count, |j| {
        let i = first + j;
        let mut tunn = Tunn::new(
            secret(seed, i),
            server,
            None,
            None,
            (i as u32) & 0xFF_FFFF,
            None,
        )
        .expect("valid keys");
        let mut buf = [0u8; 256];
        match tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            _ => Vec::new(),
        }
    })
}

/// Where and how fast to send.
pub struct Target {
    pub server: SocketAddr,
    pub server_key: PublicKey,
    pub bind: SocketAddr,
    /// Initiations a second; 0 = as fast as the socket takes them.
    pub rate: u64,
    pub seconds: u64,
}

pub struct Tally {
    pub sent: u64,
    pub responses: u64,
    pub cookies: u64,
    pub seconds: f64,
}

/// Sends `packets` to `server` at `rate` a second (0: as fast as the socket takes them), round
/// robin, for `seconds` at most, counting the answers by type.
fn run(t: &Target, packets: &[Vec<u8>]) -> Tally {
    let (server, bind, rate, seconds) = (t.server, t.bind, t.rate, t.seconds);
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| crate::fail(e));
    sock.connect(server).unwrap_or_else(|e| crate::fail(e));
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| crate::fail(e));
    let stop = AtomicBool::new(false);
    let (responses, cookies) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut sent = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Relaxed) {
                match sock.recv(&mut buf) {
                    Ok(92) if buf[0] == 2 => responses.fetch_add(1, Relaxed),
                    Ok(64) if buf[0] == 3 => cookies.fetch_add(1, Relaxed),
                    _ => 0,
                };
            }
        });
        let mut next = 0usize;
        'send: while Instant::now() < deadline {
            // One millisecond's share per step, so the offered rate is steady.
            let burst = if rate == 0 { 256 } else { (rate / 1000).max(1) };
            let step = Instant::now();
            for _ in 0..burst {
                if packets.is_empty() {
                    break 'send;
                }
                if sock.send(&packets[next % packets.len()]).is_ok() {
                    sent += 1;
                }
                next += 1;
            }
            if rate > 0 {
                let target = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = target.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait.min(Duration::from_millis(10)));
                }
            } else if step.elapsed() < Duration::from_micros(1) {
                std::hint::spin_loop();
            }
        }
        // Answers still in flight.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Relaxed);
    });
    Tally {
        sent,
        responses: responses.into_inner(),
        cookies: cookies.into_inner(),
        seconds: started.elapsed().as_secs_f64() - 0.3,
    }
}

/// Real initiations from `count` distinct customers (each once) at `rate` a second.
pub fn handshakes(t: &Target, seed: u64, first: u64, count: u64) -> Tally {
    let packets = initiations(t.server_key, seed, first, count);
    println!("ready");
    run(t, &packets)
}

/// Initiations from `distinct` keys the server does not know, repeated, at `rate` a second.
pub fn flood(t: &Target, distinct: u64) -> Tally {
    let seed = u64::from_le_bytes(*b"flooder!") ^ std::process::id() as u64;
    let packets = initiations(t.server_key, seed, 0, distinct.max(1));
    println!("ready");
    run(t, &packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_derive_the_same_on_both_sides_and_differ() {
        let a = pubkeys(7, 100);
        assert_eq!(a, pubkeys(7, 100));
        assert_ne!(a, pubkeys(8, 100));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 100);
        assert_eq!(a[5].len(), 64);
    }
}
