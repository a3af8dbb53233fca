//! Overload from one core: every customer's data packets are sealed before the clock starts (in
//! counter order, per customer), then only replayed with `sendmmsg`, bursts of a few per customer,
//! round robin. Sending costs the generator a syscall share and a copy, no cryptography, so one
//! core offers several times what one server core can decrypt. Bounded by a packet count, a
//! memory cap and time.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One customer's sealed datagrams, all `stride` bytes, in counter order.
pub struct Sealed {
    pub sock: std::net::UdpSocket,
    pub data: Vec<u8>,
}

/// What a replay sent.
pub struct Tally {
    pub sent: u64,
    pub offered_seconds: f64,
}

/// Sends every customer's datagrams, `burst` per `sendmmsg` (with `gso`, per UDP GSO send: one
/// buffer the kernel splits, far cheaper for the sender, and the server's socket may then receive
/// the burst as one GRO train, a lighter load than separate senders), customers in turn, until
/// all are sent or `for_` has passed. A burst the socket refuses (buffer full) is retried later, never
/// skipped: a gap would only be a loss the server's replay window forgives, but sending in
/// order keeps the offered load what a real sender's would be. With `rate` (datagrams a second),
/// the sender waits before any burst that would put it ahead of that rate, so a sweep of rates
/// finds the server's saturating load and shows what happens past it.
pub fn replay(
    customers: &[Sealed],
    stride: usize,
    burst: usize,
    gso: bool,
    rate: Option<u64>,
    for_: Duration,
) -> Tally {
    let burst = burst.clamp(1, 64);
    if gso {
        let seg = stride as libc::c_int;
        for c in customers {
            // SAFETY: setsockopt with a c_int on our socket. UDP_SEGMENT = 103.
            let r = unsafe {
                libc::setsockopt(
                    c.sock.as_raw_fd(),
                    libc::SOL_UDP,
                    103,
                    &seg as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                eprintln!("UDP_SEGMENT: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
        }
    }
    let mut next = vec![0usize; customers.len()];
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(burst);
    // SAFETY: all-zero is valid for mmsghdr.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; burst];
    let started = Instant::now();
    let deadline = started + for_;
    let mut sent = 0u64;
    let mut left = customers.iter().filter(|c| !c.data.is_empty()).count();
    'outer: while left > 0 {
        for (c, pos) in customers.iter().zip(next.iter_mut()) {
            let total = c.data.len() / stride;
            if *pos >= total {
                continue;
            }
            if let Some(rate) = rate {
                pace(started, sent, rate);
            }
            let n = burst.min(total - *pos);
            if gso {
                let b = &c.data[*pos * stride..(*pos + n) * stride];
                // SAFETY: a send from our buffer on our connected socket.
                let r = unsafe { libc::send(c.sock.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
                if r > 0 {
                    *pos += n;
                    sent += n as u64;
                    if *pos >= total {
                        left -= 1;
                    }
                }
                continue;
            }
            iov.clear();
            for k in 0..n {
                iov.push(libc::iovec {
                    iov_base: c.data[(*pos + k) * stride..].as_ptr() as *mut libc::c_void,
                    iov_len: stride,
                });
            }
            for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the headers point at `iov`, which points into `c.data`; both outlive the
            // call, and the socket is connected (no addresses).
            let r = unsafe { libc::sendmmsg(c.sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
            if r > 0 {
                *pos += r as usize;
                sent += r as u64;
                if *pos >= total {
                    left -= 1;
                }
            }
        }
        if Instant::now() >= deadline {
            break 'outer;
        }
    }
    Tally {
        sent,
        offered_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Waits until `sent` datagrams are no more than `rate` a second since `started`: sleeps for
/// long waits, spins the last stretch (a sleep overshoots by tens of microseconds).
fn pace(started: Instant, sent: u64, rate: u64) {
    let due = started + Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let wait = due - now;
        if wait > Duration::from_micros(200) {
            std::thread::sleep(wait - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}
