//! The io_uring driver: one thread per worker owns a ring, its TUN queue and its UDP socket
//! (worker 0 also the IPv6 one). TUN reads and UDP receives stay in flight; each wake-up
//! handles every completion that is ready, then submits the whole batch's output — GSO sends and
//! coalesced TUN writes — with the next wait, in one `io_uring_enter`.
//!
//! Output buffers must live until the kernel completes them, so a few outboxes rotate: one
//! fills while the others' sends finish (UDP sends usually complete at submission).

use super::msg::{RecvSlots, SendHdrs};
use super::outbox::Outbox;
use super::tun::Offloads;
use super::udp::Sockets;
use super::{drain_tun_frame, handle_datagrams, interface_gone, Net, BUF};
use crate::device::Device;
use crate::offload::gro::GroTable;
use crate::stats::{DropReason, IoStats, IoTally};
use io_uring::{opcode, squeue, types, IoUring};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

const TUN_READS: usize = 8;
const UDP_RECVS: usize = 16;
const OUTBOXES: usize = 4;
const OUTBOX_BYTES: usize = 1 << 20;
const GRO_ITEMS: usize = 16;
const RING_ENTRIES: u32 = 1024;

// user_data: kind in the top byte, socket generation (receives) in the next three, index low.
const K_TUN: u64 = 1;
const K_RECV4: u64 = 2;
const K_RECV6: u64 = 3;
const K_OUT: u64 = 4;

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

struct Worker {
    device: Arc<Device>,
    net: Arc<Net>,
    tun: Arc<File>,
    index: usize,
    off: Offloads,
    ring: IoUring,
    tun_bufs: Vec<u8>,
    recv4: RecvSlots,
    recv6: Option<RecvSlots>,
    /// The sockets the receives are armed on. When UAPI replaces them, the old ones are shut
    /// down, their receives complete, and once none is left the new ones are armed.
    sockets: Arc<Sockets>,
    recvs_in_flight: usize,
    /// The sockets the last flush sent on: kept open until the next flush has been submitted.
    send_sockets: Arc<Sockets>,
    outboxes: Vec<Outbox>,
    hdrs: Vec<SendHdrs>,
    inflight: [usize; OUTBOXES],
    cur: usize,
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Completions seen while waiting for an outbox, handled next.
    deferred: Vec<(u64, i32)>,
    tally: IoTally,
    stats: Arc<IoStats>,
    /// The sockets' generation as of this wake-up.
    net_generation: u64,
}

/// Runs worker `index` until the interface goes away.
pub fn worker(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, index: usize, off: Offloads) {
    let ring = match ring() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("io_uring worker {index}: {e}");
            return interface_gone();
        }
    };
    let sockets = net.sockets.load_full();
    let gso = sockets.gso;
    let mut w = Worker {
        ring,
        tun_bufs: vec![0; TUN_READS * BUF],
        recv4: RecvSlots::new(UDP_RECVS, BUF),
        recv6: (index == 0).then(|| RecvSlots::new(UDP_RECVS / 2, BUF)),
        send_sockets: sockets.clone(),
        sockets,
        recvs_in_flight: 0,
        outboxes: (0..OUTBOXES)
            .map(|_| {
                let gro = off.vnet_hdr.then(|| GroTable::new(GRO_ITEMS, off.uso));
                Outbox::new(OUTBOX_BYTES, gso, off.vnet_hdr, gro)
            })
            .collect(),
        hdrs: (0..OUTBOXES).map(|_| SendHdrs::new(1024)).collect(),
        inflight: [0; OUTBOXES],
        cur: 0,
        scratch: vec![0; BUF],
        out: vec![0; BUF],
        deferred: Vec::with_capacity(RING_ENTRIES as usize * 2),
        tally: IoTally::default(),
        stats: device.stats.io_worker(&format!("uring-{index}")),
        net_generation: 0,
        device,
        net,
        tun,
        index,
        off,
    };
    if let Err(e) = w.run() {
        tracing::error!("io_uring worker {index}: {e}");
        interface_gone();
    }
}

impl Worker {
    fn run(&mut self) -> std::io::Result<()> {
        for i in 0..TUN_READS {
            self.arm_tun(i)?;
        }
        self.arm_all_recvs()?;
        let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(RING_ENTRIES as usize * 2);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.append(&mut self.deferred);
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            self.tally.wakeups += 1;
            self.net_generation = self.net.sockets.load().generation;
            for &(data, res) in &cqes {
                if !self.complete(data, res)? {
                    return Ok(());
                }
                if self.outboxes[self.cur].nearly_full() {
                    self.flush()?;
                }
            }
            self.flush()?;
        }
    }

    /// Handles one completion; false when the interface is gone.
    fn complete(&mut self, data: u64, res: i32) -> std::io::Result<bool> {
        let (kind, generation, i) = split(data);
        match kind {
            K_TUN => {
                if res > 0 {
                    let frame = &self.tun_bufs[i * BUF..i * BUF + res as usize];
                    let outbox = &mut self.outboxes[self.cur];
                    self.tally.tun_frames_read += 1;
                    self.tally.tun_packets_read += drain_tun_frame(
                        &self.device,
                        self.off.vnet_hdr,
                        frame,
                        &mut self.scratch,
                        &mut self.out,
                        outbox,
                    );
                } else if res != -libc::EINTR && res != -libc::EAGAIN && res != -libc::ECANCELED {
                    // EBADFD/EIO: the interface was deleted under us.
                    tracing::debug!("tun read: {}", std::io::Error::from_raw_os_error(-res));
                    interface_gone();
                    return Ok(false);
                }
                self.arm_tun(i)?;
            }
            K_RECV4 | K_RECV6 => {
                self.recvs_in_flight -= 1;
                let current = generation == self.sockets.generation & 0xff_ffff
                    && self.net_generation == self.sockets.generation;
                if current && res >= 0 {
                    let slots = if kind == K_RECV4 {
                        &self.recv4
                    } else {
                        self.recv6.as_ref().expect("armed")
                    };
                    if let Some((from, data, seg)) = slots.received(i, res as usize) {
                        let outbox = &mut self.outboxes[self.cur];
                        self.tally.udp_receives += 1;
                        self.tally.udp_datagrams_received +=
                            handle_datagrams(&self.device, from, data, seg, &mut self.out, outbox);
                    }
                }
                if current {
                    self.arm_recv(kind, i)?;
                } else if self.recvs_in_flight == 0 {
                    // The replaced sockets are done with: receive on the new ones.
                    self.sockets = self.net.sockets.load_full();
                    self.arm_all_recvs()?;
                }
            }
            K_OUT => {
                self.inflight[i] = self.inflight[i].saturating_sub(1);
                if res < 0 {
                    tracing::trace!("send: {}", std::io::Error::from_raw_os_error(-res));
                    self.device.stats.drop(DropReason::IoError);
                }
            }
            _ => {}
        }
        Ok(true)
    }

    fn arm_all_recvs(&mut self) -> std::io::Result<()> {
        for i in 0..self.recv4.len() {
            self.arm_recv(K_RECV4, i)?;
        }
        for i in 0..self.recv6.as_ref().map_or(0, |r| r.len()) {
            self.arm_recv(K_RECV6, i)?;
        }
        Ok(())
    }

    fn push(&mut self, sqe: squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points to is owned by this worker and stays
            // untouched until its completion is reaped (reads, receives and outboxes alike).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_tun(&mut self, i: usize) -> std::io::Result<()> {
        let buf = self.tun_bufs[i * BUF..].as_mut_ptr();
        let sqe = opcode::Read::new(types::Fd(self.tun.as_raw_fd()), buf, BUF as u32)
            .offset(u64::MAX)
            .build()
            .user_data(ud(K_TUN, 0, i));
        self.push(sqe)
    }

    fn arm_recv(&mut self, kind: u64, i: usize) -> std::io::Result<()> {
        let sock = if kind == K_RECV4 {
            self.sockets
                .v4
                .get(self.index % self.sockets.v4.len().max(1))
        } else {
            self.sockets.v6.as_ref()
        };
        let Some(fd) = sock.map(|s| s.as_raw_fd()) else {
            return Ok(()); // no such socket in this generation
        };
        let slots = if kind == K_RECV4 {
            &mut self.recv4
        } else {
            self.recv6.as_mut().expect("worker 0")
        };
        let hdr = slots.arm(i);
        let sqe = opcode::RecvMsg::new(types::Fd(fd), hdr)
            .build()
            .user_data(ud(kind, self.sockets.generation, i));
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
        // Sends go out on the current sockets, kept alive until they are submitted.
        self.send_sockets = self.net.sockets.load_full();
        let tun_fd = self.tun.as_raw_fd();
        for f in 0..self.outboxes[c].frames.len() {
            let frame = self.outboxes[c].frame(f);
            let sqe = opcode::Write::new(types::Fd(tun_fd), frame.as_ptr(), frame.len() as u32)
                .offset(u64::MAX)
                .build()
                .user_data(ud(K_OUT, 0, c));
            self.push(sqe)?;
            self.inflight[c] += 1;
        }
        let cap = self.hdrs[c].capacity();
        for r in 0..self.outboxes[c].runs.len() {
            if r > 0 && r % cap == 0 {
                // Header slots are reused from here on: the kernel must be done with them.
                self.wait_outbox(c, 0)?;
            }
            let run = self.outboxes[c].runs[r];
            let Some(sock) = self.send_sockets.for_dest(run.to, self.index) else {
                self.device.stats.drop(DropReason::IoError);
                continue;
            };
            let fd = sock.as_raw_fd();
            let hdr = self.hdrs[c].fill(r % cap, &run, self.outboxes[c].udp());
            let sqe = opcode::SendMsg::new(types::Fd(fd), hdr)
                .build()
                .user_data(ud(K_OUT, 0, c));
            self.push(sqe)?;
            self.inflight[c] += 1;
        }
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
            let mut cq = self.ring.completion();
            for cqe in &mut cq {
                let (data, res) = (cqe.user_data(), cqe.result());
                let (kind, _, i) = split(data);
                if kind == K_OUT {
                    self.inflight[i] = self.inflight[i].saturating_sub(1);
                    if res < 0 {
                        self.device.stats.drop(DropReason::IoError);
                    }
                } else {
                    self.deferred.push((data, res));
                }
            }
        }
        Ok(())
    }
}
