//! The batched loop, where io_uring is not available: per worker a TUN reader and a UDP
//! receiver thread. `recvmmsg` takes many datagrams (each possibly a UDP_GRO train) per call,
//! `sendmmsg` sends many GSO runs per call, and a TUN read returns a whole TSO super-packet.

use super::feed::{drain_tun_frame, handle_datagrams, BUF};
use super::msg::{RecvSlots, SendHdrs};
use super::net::Net;
use super::outbox::{send_runs, Outbox};
use super::tun::interface_gone;
use super::tun::Offloads;
use super::udp::Sockets;
use crate::device::Device;
use crate::offload::gro::GroTable;
use crate::stats::{DropReason, IoStats, IoTally};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams per `recvmmsg`; TUN frames per wake-up.
const BATCH: usize = 64;
const OUTBOX_BYTES: usize = 1 << 20;
const GRO_ITEMS: usize = 64;

/// Sends what an outbox holds: TUN frames one `write` each (they are super-packets), UDP runs
/// with `sendmmsg`, grouped by socket. Errors count as drops.
pub(super) struct Flusher {
    hdrs: SendHdrs,
    /// This thread's figures since the last flush, and where they are published.
    pub tally: IoTally,
    stats: Arc<IoStats>,
}

impl Flusher {
    pub fn new(device: &Device, name: &str) -> Self {
        Flusher {
            hdrs: SendHdrs::new(1024),
            tally: IoTally::default(),
            stats: device.stats.io_worker(name),
        }
    }

    pub fn flush(
        &mut self,
        device: &Device,
        out: &mut Outbox,
        sockets: &Sockets,
        worker: usize,
        tun: &File,
    ) {
        out.finish();
        out.tally(&mut self.tally);
        self.tally.publish(&self.stats);
        for _ in 0..out.take_overflow() {
            device.stats.drop(DropReason::IoError);
        }
        let mut refused = false;
        for i in 0..out.frames.len() {
            let mut t = tun;
            if let Err(e) = t.write(out.frame(i)) {
                device.stats.drop(DropReason::IoError);
                refused |= e.raw_os_error() == Some(libc::EINVAL);
            }
        }
        send_runs(device, out, sockets, worker, &mut self.hdrs);
        out.clear();
        if refused {
            tracing::warn!("kernel refused a coalesced TUN frame; writing plain packets");
            out.disable_gro();
        }
    }
}

/// Reads TUN frames (super-packets with offloads) and sends them encrypted.
pub fn tun_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, worker: usize, off: Offloads) {
    if let Err(e) = super::tun::set_nonblocking(&tun) {
        tracing::error!("tun: cannot make non-blocking: {e}");
        return interface_gone();
    }
    let mut frame = vec![0u8; BUF];
    let mut scratch = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let mut flusher = Flusher::new(&device, &format!("tun-{worker}"));
    let mut outbox = Outbox::new(OUTBOX_BYTES, net.sockets.load().gso, off.vnet_hdr, None);
    loop {
        let mut idle = false;
        flusher.tally.wakeups += 1;
        // One clock read per batch: its frames count as read when the batch began.
        let now = Instant::now();
        let pin = crate::epoch::pin();
        for _ in 0..BATCH {
            match (&*tun).read(&mut frame) {
                Ok(n) => {
                    flusher.tally.tun_frames_read += 1;
                    flusher.tally.tun_packets_read += drain_tun_frame(
                        &device,
                        now,
                        off.vnet_hdr,
                        &frame[..n],
                        &mut scratch,
                        &mut out,
                        &mut outbox,
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    idle = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("tun read: {e}");
                    return interface_gone();
                }
            }
            if outbox.nearly_full() {
                break;
            }
        }
        if !outbox.is_empty() {
            let sockets = net.sockets.load();
            flusher.flush(&device, &mut outbox, &sockets, worker, &tun);
        }
        // Unpinned before sleeping in poll.
        drop(pin);
        if idle {
            let mut pfd = libc::pollfd {
                fd: tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one descriptor we own.
            unsafe { libc::poll(&mut pfd, 1, -1) };
        }
    }
}

/// Receives datagrams on one socket (`v6` picks the IPv6 one) and writes them decrypted to TUN,
/// coalesced per flow when the TUN has offloads.
pub fn udp_loop(
    device: Arc<Device>,
    net: Arc<Net>,
    tun: Arc<File>,
    worker: usize,
    v6: bool,
    off: Offloads,
) {
    let mut slots = RecvSlots::new(BATCH, BUF);
    let mut out = vec![0u8; BUF];
    let name = if v6 {
        "udp6".to_string()
    } else {
        format!("udp-{worker}")
    };
    let mut flusher = Flusher::new(&device, &name);
    let gro = off.vnet_hdr.then(|| GroTable::new(GRO_ITEMS, off.uso));
    let mut outbox = Outbox::new(OUTBOX_BYTES, net.sockets.load().gso, off.vnet_hdr, gro);
    loop {
        let sockets = net.sockets.load_full();
        let Some(sock) = sockets.for_worker(worker, v6) else {
            // This socket does not exist in the current generation; wait for a rebind.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let replaced = || net.sockets.load().generation != sockets.generation;
        loop {
            for i in 0..slots.len() {
                slots.arm(i);
            }
            // SAFETY: the headers point into `slots`' buffers, which outlive the call.
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    slots.hdrs.as_mut_ptr(),
                    slots.len() as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if r <= 0 {
                if replaced() {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if r < 0 && e.kind() != ErrorKind::Interrupted {
                    tracing::debug!("udp recv: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            flusher.tally.wakeups += 1;
            // One clock read per `recvmmsg`, for all the datagrams it returned.
            let now = Instant::now();
            // Unpinned before the next receive, which may block.
            let _pin = crate::epoch::pin();
            for i in 0..r as usize {
                let n = slots.hdrs[i].msg_len as usize;
                if let Some((from, data, seg)) = slots.received(i, n) {
                    flusher.tally.udp_receives += 1;
                    flusher.tally.udp_datagrams_received +=
                        handle_datagrams(&device, now, from, data, seg, &mut out, &mut outbox);
                }
                if outbox.nearly_full() {
                    flusher.flush(&device, &mut outbox, &sockets, worker, &tun);
                }
            }
            flusher.flush(&device, &mut outbox, &sockets, worker, &tun);
            if replaced() {
                break;
            }
        }
    }
}
