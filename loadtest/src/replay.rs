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

/// Sends every customer's datagrams, `burst` per `sendmmsg`, customers in turn, until all are
/// sent or `for_` has passed. A burst the socket refuses (buffer full) is retried later, never
/// skipped: a gap would only be a loss the server's replay window forgives, but sending in
/// order keeps the offered load what a real sender's would be.
pub fn replay(customers: &[Sealed], stride: usize, burst: usize, for_: Duration) -> Tally {
    let burst = burst.clamp(1, 64);
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
            let n = burst.min(total - *pos);
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
