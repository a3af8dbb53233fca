//! The io_uring driver: one thread per worker owns a ring, its TUN queue and its UDP socket
//! (worker 0 also the IPv6 one). One multishot read on the TUN queue and one multishot receive
//! per socket, each on its own provided-buffer ring, deliver every packet without a request
//! each; a wake-up handles every completion that is ready, then sends the batch's UDP output
//! with one `sendmmsg` (GSO runs; a send to a UDP socket completes at once, so a completion per
//! send only cost more) and submits its coalesced TUN writes with the next wait.
//!
//! TUN write buffers must live until the kernel completes them, so a few outboxes rotate: one
//! fills while the others' writes finish.

use super::bufring::BufRing;
use super::feed::{drain_tun_frame, handle_datagrams, BUF};
use super::msg::{from_sockaddr, gro_segment, SendHdrs, CMSG_SPACE};
use super::net::Net;
use super::outbox::{send_runs, Outbox};
use super::tun::interface_gone;
use super::tun::Offloads;
use super::udp::Sockets;
use crate::device::Device;
use crate::offload::gro::GroTable;
use crate::stats::{DropReason, IoStats, IoTally};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

/// Buffers for TUN frames and for UDP receives (each up to a 64 KiB GRO train, after the
/// multishot header, the sender's address and the control message).
const TUN_BUFFERS: u16 = 64;
const UDP_BUFFERS: u16 = 128;
const UDP_BUF: usize = BUF + 256;
const OUTBOXES: usize = 4;
const OUTBOX_BYTES: usize = 1 << 20;
const GRO_ITEMS: usize = 64;
const RING_ENTRIES: u32 = 1024;
/// A wake-up with at least this many completions means load: wait for bigger batches.
const BUSY_BATCH: usize = 4;
/// Completions a loaded wake-up waits for, and for how long at most once one is there.
const BATCH_TARGET: usize = 48;
const BATCH_WAIT_USEC: u32 = 25;

// user_data: kind in the top byte, socket generation (receives) in the next three, index low.
const K_TUN: u64 = 1;
const K_RECV4: u64 = 2;
const K_RECV6: u64 = 3;
/// A TUN write from outbox `index`.
const K_WRITE: u64 = 4;
/// The eventfd that says the sockets changed.
const K_WAKE: u64 = 5;
// Buffer groups.
const G_TUN: u16 = 0;
const G_UDP4: u16 = 1;
const G_UDP6: u16 = 2;

fn ud(kind: u64, generation: u64, index: usize) -> u64 {
    kind << 56 | (generation & 0xff_ffff) << 32 | index as u64
}

fn split(ud: u64) -> (u64, u64, usize) {
    (
        ud >> 56,
        (ud >> 32) & 0xff_ffff,
        (ud & 0xffff_ffff) as usize,
    )
}

/// Whether this process may use io_uring at all (seccomp, `kernel.io_uring_disabled`, age).
pub fn probe() -> std::io::Result<()> {
    IoUring::new(8).map(drop)
}

fn ring() -> std::io::Result<IoUring> {
    // One thread submits and reaps, so the kernel may skip cross-thread work; fall back to a
    // plain ring on kernels without these flags.
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

/// A completion: user data, result, flags (buffer id, more to come).
type Cqe = (u64, i32, u32);

struct Worker {
    // The ring goes first: dropped first, it releases the buffers registered with it.
    ring: IoUring,
    device: Arc<Device>,
    net: Arc<Net>,
    tun: Arc<File>,
    index: usize,
    off: Offloads,
    tun_bufs: BufRing,
    udp4_bufs: BufRing,
    udp6_bufs: Option<BufRing>,
    /// What multishot receives are told about the room for the sender's address and the
    /// control message (only the two lengths matter).
    recv_msg: Box<libc::msghdr>,
    /// The sockets the receives are armed on. When UAPI replaces them, the old ones are shut
    /// down, their receives end, and once none is left the new ones are armed.
    sockets: Arc<Sockets>,
    recvs_in_flight: usize,
    outboxes: Vec<Outbox>,
    hdrs: SendHdrs,
    inflight: [usize; OUTBOXES],
    cur: usize,
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Completions seen while waiting for an outbox, handled next.
    deferred: Vec<Cqe>,
    tally: IoTally,
    stats: Arc<IoStats>,
    /// The sockets' generation as of this wake-up.
    net_generation: u64,
    /// The clock as of this wake-up: the time the core sees for every packet of the batch.
    now: Instant,
    /// The kernel can bound a wait for several completions (IORING_FEAT_MIN_TIMEOUT, 6.12+).
    min_wait: bool,
    /// Written by [`Net`] when the sockets change; a read on it is always in flight.
    wake: std::os::fd::OwnedFd,
    wake_buf: Box<u64>,
}

/// Runs worker `index` until the interface goes away.
pub fn worker(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, index: usize, off: Offloads) {
    match Worker::new(device, net, tun, index, off).and_then(|mut w| w.run()) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!("io_uring worker {index}: {e}");
            interface_gone();
        }
    }
}

impl Worker {
    fn new(
        device: Arc<Device>,
        net: Arc<Net>,
        tun: Arc<File>,
        index: usize,
        off: Offloads,
    ) -> std::io::Result<Self> {
        let ring = ring()?;
        let min_wait = ring.params().is_feature_min_timeout();
        let sockets = net.sockets.load_full();
        let gso = sockets.gso;
        // SAFETY: all-zero is a valid msghdr.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        recv_msg.msg_controllen = CMSG_SPACE;
        // SAFETY: eventfd returns a new descriptor (or -1), which OwnedFd then owns.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `wake` is a valid descriptor (checked above) that nothing else owns.
        let wake = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(wake) };
        net.on_rebind(wake.as_raw_fd());
        Ok(Worker {
            wake,
            wake_buf: Box::new(0),
            tun_bufs: BufRing::new(&ring, G_TUN, TUN_BUFFERS, BUF)?,
            udp4_bufs: BufRing::new(&ring, G_UDP4, UDP_BUFFERS, UDP_BUF)?,
            udp6_bufs: if index == 0 {
                Some(BufRing::new(&ring, G_UDP6, UDP_BUFFERS / 4, UDP_BUF)?)
            } else {
                None
            },
            ring,
            recv_msg,
            sockets,
            recvs_in_flight: 0,
            outboxes: (0..OUTBOXES)
                .map(|_| {
                    let gro = off.vnet_hdr.then(|| GroTable::new(GRO_ITEMS, off.uso));
                    Outbox::new(OUTBOX_BYTES, gso, off.vnet_hdr, gro)
                })
                .collect(),
            hdrs: SendHdrs::new(1024),
            inflight: [0; OUTBOXES],
            cur: 0,
            scratch: vec![0; BUF],
            out: vec![0; BUF],
            deferred: Vec::with_capacity(RING_ENTRIES as usize * 2),
            tally: IoTally::default(),
            stats: device.stats.io_worker(&format!("uring-{index}")),
            net_generation: 0,
            now: Instant::now(),
            min_wait,
            device,
            net,
            tun,
            index,
            off,
        })
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_tun()?;
        self.arm_recvs()?;
        self.arm_wake()?;
        let mut cqes: Vec<Cqe> = Vec::with_capacity(RING_ENTRIES as usize * 2);
        loop {
            match self.wait(cqes.len()) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.append(&mut self.deferred);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            self.tally.wakeups += 1;
            // One clock read per wake-up, for every completion it handles.
            self.now = Instant::now();
            self.net_generation = self.net.sockets.load().generation;
            // Unpinned between wake-ups: the ring wait blocks.
            let _pin = crate::epoch::pin();
            for &cqe in &cqes {
                if !self.complete(cqe)? {
                    return Ok(());
                }
                if self.outboxes[self.cur].nearly_full() {
                    self.flush()?;
                }
            }
            self.flush()?;
        }
    }

    /// Submits and waits for work. Under load (the last wake-up found a batch) it waits a few
    /// microseconds for a bigger one, since a flush then carries more packets per kernel
    /// operation and more segments per coalesced TUN write; a lone packet never waits.
    fn wait(&mut self, last_batch: usize) -> std::io::Result<usize> {
        if last_batch < BUSY_BATCH || !self.min_wait {
            return self.ring.submit_and_wait(1);
        }
        let args = types::SubmitArgs::new().min_wait_usec(BATCH_WAIT_USEC);
        self.ring.submitter().submit_with_args(BATCH_TARGET, &args)
    }

    /// Handles one completion; false when the interface is gone.
    fn complete(&mut self, (data, res, flags): Cqe) -> std::io::Result<bool> {
        let (kind, generation, i) = split(data);
        let more = cqueue::more(flags);
        match kind {
            K_TUN => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if res > 0 {
                        let frame = self.tun_bufs.get(bid, res as usize);
                        let outbox = &mut self.outboxes[self.cur];
                        self.tally.tun_frames_read += 1;
                        self.tally.tun_packets_read += drain_tun_frame(
                            &self.device,
                            self.now,
                            self.off.vnet_hdr,
                            frame,
                            &mut self.scratch,
                            &mut self.out,
                            outbox,
                        );
                    }
                    self.tun_bufs.give_back(bid);
                }
                if res < 0
                    && ![libc::EINTR, libc::EAGAIN, libc::ECANCELED, libc::ENOBUFS].contains(&-res)
                {
                    // EBADFD/EIO: the interface was deleted under us.
                    tracing::debug!("tun read: {}", std::io::Error::from_raw_os_error(-res));
                    interface_gone();
                    return Ok(false);
                }
                if !more {
                    self.arm_tun()?;
                }
            }
            K_RECV4 | K_RECV6 => {
                let current = generation == self.sockets.generation & 0xff_ffff
                    && self.net_generation == self.sockets.generation;
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if current && res > 0 {
                        self.receive(kind, bid, res as usize);
                    }
                    match kind {
                        K_RECV4 => self.udp4_bufs.give_back(bid),
                        _ => self.udp6_bufs.as_mut().expect("armed").give_back(bid),
                    }
                }
                if !more {
                    self.recvs_in_flight -= 1;
                    if current {
                        self.arm_recv(kind)?;
                    } else if self.recvs_in_flight == 0 {
                        // The replaced sockets are done with: receive on the new ones.
                        self.sockets = self.net.sockets.load_full();
                        self.arm_recvs()?;
                    }
                }
            }
            K_WRITE => self.output_done(i, res),
            K_WAKE => {
                if self.net_generation != self.sockets.generation {
                    // End the receives on the replaced sockets; their last completions arm
                    // the new ones.
                    for kind in [K_RECV4, K_RECV6] {
                        let old = ud(kind, self.sockets.generation, 0);
                        self.push(opcode::AsyncCancel::new(old).build().user_data(0))?;
                    }
                }
                self.arm_wake()?;
            }
            _ => {}
        }
        Ok(true)
    }

    /// A TUN write finished. A kernel that refuses a coalesced frame (EINVAL) turns coalescing
    /// off for this worker: plain packets from then on.
    fn output_done(&mut self, outbox: usize, res: i32) {
        self.inflight[outbox] = self.inflight[outbox].saturating_sub(1);
        if res >= 0 {
            return;
        }
        self.device.stats.drop(DropReason::IoError);
        if res != -libc::EINVAL {
            return tracing::trace!("tun write: {}", std::io::Error::from_raw_os_error(-res));
        }
        for o in &mut self.outboxes {
            o.disable_gro();
        }
        let worker = self.index;
        tracing::warn!(
            worker,
            "kernel refused a coalesced TUN frame; writing plain packets"
        );
    }

    /// One datagram (or GRO train) from a multishot receive's buffer.
    fn receive(&mut self, kind: u64, bid: u16, len: usize) {
        let bufs = match kind {
            K_RECV4 => &self.udp4_bufs,
            _ => self.udp6_bufs.as_ref().expect("armed"),
        };
        let Ok(msg) = types::RecvMsgOut::parse(bufs.get(bid, len), &self.recv_msg) else {
            return self.device.stats.drop(DropReason::InvalidPacket);
        };
        if msg.is_payload_truncated() {
            return self.device.stats.drop(DropReason::InvalidPacket);
        }
        // SAFETY: all-zero is a valid sockaddr_storage; we copy at most its size into it.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let n = msg
            .name_data()
            .len()
            .min(size_of::<libc::sockaddr_storage>());
        // SAFETY: `n` bytes fit both the source slice and the destination struct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                msg.name_data().as_ptr(),
                &mut name as *mut _ as *mut u8,
                n,
            )
        };
        let Some(from) = from_sockaddr(&name) else {
            return self.device.stats.drop(DropReason::InvalidPacket);
        };
        let data = msg.payload_data();
        let seg = gro_segment(msg.control_data()).unwrap_or(data.len());
        let outbox = &mut self.outboxes[self.cur];
        self.tally.udp_receives += 1;
        self.tally.udp_datagrams_received += handle_datagrams(
            &self.device,
            self.now,
            from,
            data,
            seg,
            &mut self.out,
            outbox,
        );
    }

    fn push(&mut self, sqe: squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points to is owned by this worker and stays
            // untouched until its completion is reaped (buffer rings and outboxes alike).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// One multishot read on the TUN queue: a completion per frame, into the TUN buffers.
    fn arm_tun(&mut self) -> std::io::Result<()> {
        let sqe = opcode::ReadMulti::new(types::Fd(self.tun.as_raw_fd()), 0, G_TUN)
            .offset(u64::MAX)
            .build()
            .user_data(ud(K_TUN, 0, 0));
        self.push(sqe)
    }

    fn arm_wake(&mut self) -> std::io::Result<()> {
        let buf = &mut *self.wake_buf as *mut u64 as *mut u8;
        let sqe = opcode::Read::new(types::Fd(self.wake.as_raw_fd()), buf, 8)
            .build()
            .user_data(ud(K_WAKE, 0, 0));
        self.push(sqe)
    }

    fn arm_recvs(&mut self) -> std::io::Result<()> {
        self.arm_recv(K_RECV4)?;
        if self.udp6_bufs.is_some() {
            self.arm_recv(K_RECV6)?;
        }
        Ok(())
    }

    /// One multishot receive on this worker's IPv4 (or the IPv6) socket.
    fn arm_recv(&mut self, kind: u64) -> std::io::Result<()> {
        let (sock, group) = if kind == K_RECV4 {
            let v4 = &self.sockets.v4;
            (v4.get(self.index % v4.len().max(1)), G_UDP4)
        } else {
            (self.sockets.v6.as_ref(), G_UDP6)
        };
        let Some(fd) = sock.map(|s| s.as_raw_fd()) else {
            return Ok(()); // no such socket in this generation
        };
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, group)
            .build()
            .user_data(ud(kind, self.sockets.generation, 0));
        self.push(sqe)?;
        self.recvs_in_flight += 1;
        Ok(())
    }

    /// Submits the current outbox's output and moves on to a free outbox.
    fn flush(&mut self) -> std::io::Result<()> {
        let c = self.cur;
        self.outboxes[c].finish();
        if self.outboxes[c].is_empty() {
            self.tally.publish(&self.stats);
            return Ok(());
        }
        self.outboxes[c].tally(&mut self.tally);
        self.tally.publish(&self.stats);
        for _ in 0..self.outboxes[c].take_overflow() {
            self.device.stats.drop(DropReason::IoError);
        }
        let tun_fd = self.tun.as_raw_fd();
        for f in 0..self.outboxes[c].frames.len() {
            let frame = self.outboxes[c].frame(f);
            let sqe = opcode::Write::new(types::Fd(tun_fd), frame.as_ptr(), frame.len() as u32)
                .offset(u64::MAX)
                .build()
                .user_data(ud(K_WRITE, 0, c));
            self.push(sqe)?;
            self.inflight[c] += 1;
        }
        // UDP leaves synchronously, one `sendmmsg` for the batch: a send to an unconnected UDP
        // socket completes at once anyway, and a completion per datagram (with its async
        // msghdr) cost more than the syscall it saves.
        let sockets = self.net.sockets.load();
        send_runs(
            &self.device,
            &mut self.outboxes[c],
            &sockets,
            self.index,
            &mut self.hdrs,
        );
        self.outboxes[c].clear_runs();
        let next = (c + 1) % OUTBOXES;
        self.wait_outbox(next, 0)?;
        self.outboxes[next].clear();
        self.cur = next;
        Ok(())
    }

    /// Waits until outbox `c` has at most `left` operations in flight; other completions are
    /// kept for the main loop.
    fn wait_outbox(&mut self, c: usize, left: usize) -> std::io::Result<()> {
        while self.inflight[c] > left {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let seen = self.deferred.len();
            self.deferred.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            // Output completions are handled now; the rest waits for the main loop, in order.
            let mut keep = seen;
            for k in seen..self.deferred.len() {
                let (data, res, flags) = self.deferred[k];
                let (kind, _, i) = split(data);
                if kind == K_WRITE {
                    self.output_done(i, res);
                } else {
                    self.deferred[keep] = (data, res, flags);
                    keep += 1;
                }
            }
            self.deferred.truncate(keep);
        }
        Ok(())
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;
    use std::net::UdpSocket;

    /// A multishot receive with provided buffers gets each datagram with its sender.
    #[test]
    fn multishot_receive_on_loopback() {
        let Ok(ring) = ring() else {
            eprintln!("io_uring unavailable: skipped");
            return;
        };
        let mut ring = ring;
        let mut bufs = BufRing::new(&ring, 7, 4, 2048).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_controllen = CMSG_SPACE;
        let sqe = opcode::RecvMsgMulti::new(types::Fd(rx.as_raw_fd()), &*msg, 7)
            .build()
            .user_data(42);
        // SAFETY: `msg` and `bufs` (group 7) stay alive and unmoved while the test reaps this
        // receive's completions; nothing sends to `rx` after the loop, so the still-armed receive
        // touches neither again before the ring is dropped.
        unsafe { ring.submission().push(&sqe).unwrap() };
        ring.submit().unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 100], rx.local_addr().unwrap()).unwrap();
            ring.submit_and_wait(1).unwrap();
            let c = ring.completion().next().expect("a completion");
            assert_eq!(c.user_data(), 42);
            assert!(c.result() > 0, "result {}", c.result());
            assert!(cqueue::more(c.flags()));
            let bid = cqueue::buffer_select(c.flags()).expect("a buffer");
            let out = types::RecvMsgOut::parse(bufs.get(bid, c.result() as usize), &msg).unwrap();
            assert_eq!(out.payload_data(), &[i; 100]);
            bufs.give_back(bid);
        }
    }
}
