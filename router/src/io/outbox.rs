//! The output of one batch: what the packet core sends, collected so the I/O loop moves it with few
//! syscalls (`send_runs` for the UDP side, shared by the batch and io_uring drivers). Encrypted
//! datagrams to one endpoint form GSO runs (one `sendmsg` each, the kernel splits them); decrypted
//! packets go through the GRO table, so one TCP flow's segments reach TUN as one super-packet.
//! Storage is allocated once; nothing allocates per packet.

use super::msg::SendHdrs;
use super::udp::Sockets;
use crate::device::{Device, Io};
use crate::offload::gro::GroTable;
use crate::offload::vnet::{VirtioNetHdr, VNET_HDR_LEN};
use crate::routes::PeerId;
use crate::stats::{DropReason, IoTally};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Room in one GSO send: an IPv4 UDP payload is at most 65,507 bytes.
const MAX_RUN_BYTES: usize = 65_000;
/// One input unit (a 64 KiB TUN super-packet or a GRO receive) produces at most this much
/// output (per-segment WireGuard overhead included); the loops flush before less is left.
pub const UNIT_OUTPUT: usize = 96 * 1024;

/// Datagrams `start..start+len` of the arena, all `seg` bytes but a possibly shorter last one,
/// to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub to: SocketAddr,
    pub start: usize,
    pub len: usize,
    pub seg: usize,
    pub count: usize,
}

pub struct Outbox {
    udp: Vec<u8>,
    pub runs: Vec<Run>,
    /// A run that got a short datagram takes no more (GSO segments are equal but the last).
    run_closed: bool,
    gso: bool,
    tun: Vec<u8>,
    /// Frames in `tun`: (start, len), each a virtio-net header (with offloads) and a packet.
    pub frames: Vec<(usize, usize)>,
    gro: Option<GroTable>,
    vnet: bool,
    /// Packets that did not fit (a bug in the flush discipline, never expected); counted.
    overflow: u64,
    /// Decrypted packets taken for TUN in this batch (more than `frames` when coalesced).
    tun_packets: u64,
    /// Bytes the GRO table holds for `tun` (an upper bound: coalescing only shrinks them).
    tun_pending: usize,
}

impl Outbox {
    /// `gso`: UDP runs may hold many datagrams. `vnet`: TUN frames carry a virtio-net header.
    /// `gro`: coalesce TUN writes with this table (needs `vnet`).
    pub fn new(capacity: usize, gso: bool, vnet: bool, gro: Option<GroTable>) -> Self {
        Outbox {
            udp: Vec::with_capacity(capacity),
            runs: Vec::with_capacity(capacity / 64),
            run_closed: false,
            gso,
            tun: Vec::with_capacity(capacity),
            frames: Vec::with_capacity(capacity / 64),
            gro: gro.filter(|_| vnet),
            vnet,
            overflow: 0,
            tun_packets: 0,
            tun_pending: 0,
        }
    }

    /// The datagram arena the runs index.
    pub fn udp(&self) -> &[u8] {
        &self.udp
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        let (s, l) = self.frames[i];
        &self.tun[s..s + l]
    }

    /// True when another input unit might not fit: flush first.
    pub fn nearly_full(&self) -> bool {
        self.udp.capacity() - self.udp.len() < UNIT_OUTPUT
            || self.tun.capacity() - self.tun.len() < UNIT_OUTPUT + self.tun_pending
            || self.runs.capacity() - self.runs.len() < 64
            || self.frames.capacity() - self.frames.len() < 64
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.frames.is_empty()
            && self.gro.as_ref().is_none_or(|g| g.is_empty())
    }

    /// Ends the batch: coalesced packets become frames. Call before sending.
    pub fn finish(&mut self) {
        self.tun_pending = 0;
        let Some(gro) = self.gro.as_mut() else { return };
        let (tun, frames, overflow) = (&mut self.tun, &mut self.frames, &mut self.overflow);
        gro.flush(|frame| {
            push_frame(tun, frames, overflow, None, frame);
        });
    }

    /// Sends one datagram per run from now on (the kernel refused a GSO send).
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// Writes packets to TUN as they are from now on (the kernel refused a coalesced frame).
    /// Whatever the table holds still goes out with the next `finish`.
    pub fn disable_gro(&mut self) {
        self.tun_pending = 0;
        if let Some(mut gro) = self.gro.take() {
            let (tun, frames, overflow) = (&mut self.tun, &mut self.frames, &mut self.overflow);
            gro.flush(|frame| {
                push_frame(tun, frames, overflow, None, frame);
            });
        }
    }

    /// Packets lost because the outbox was full since the last call (never expected: the
    /// drivers flush before that can happen); the drivers count them as I/O errors.
    pub fn take_overflow(&mut self) -> u64 {
        std::mem::take(&mut self.overflow)
    }

    /// Adds this batch's sends and writes to a worker's totals (after `finish`).
    pub fn tally(&self, t: &mut IoTally) {
        t.udp_sends += self.runs.len() as u64;
        t.udp_datagrams_sent += self.runs.iter().map(|r| r.count as u64).sum::<u64>();
        t.tun_frames_written += self.frames.len() as u64;
        t.tun_packets_written += self.tun_packets;
    }

    /// Forgets the UDP runs (sent), keeping the TUN frames (still being written).
    pub fn clear_runs(&mut self) {
        self.udp.clear();
        self.runs.clear();
        self.run_closed = false;
    }

    /// Forgets everything sent.
    pub fn clear(&mut self) {
        self.tun_packets = 0;
        self.udp.clear();
        self.runs.clear();
        self.run_closed = false;
        self.tun.clear();
        self.frames.clear();
    }
}

/// Sends an outbox's UDP runs with `sendmmsg`, as many per call as go to one socket. A run that
/// fails (unreachable, filtered) is dropped and counted; EIO on a GSO run turns GSO off.
pub(crate) fn send_runs(
    device: &Device,
    out: &mut Outbox,
    sockets: &Sockets,
    worker: usize,
    hdrs: &mut SendHdrs,
) {
    let mut i = 0;
    while i < out.runs.len() {
        let Some(sock) = sockets.for_dest(out.runs[i].to, worker) else {
            device.stats.drop(DropReason::IoError);
            i += 1;
            continue;
        };
        // The longest stretch of runs for the same socket, up to our header capacity.
        let v6 = out.runs[i].to.is_ipv6();
        let mut n = 0;
        while i + n < out.runs.len() && out.runs[i + n].to.is_ipv6() == v6 && n < hdrs.capacity() {
            let r = &out.runs[i + n];
            let gso = (r.count > 1).then_some(r.seg as u16);
            hdrs.fill(n, r.to, &out.udp()[r.start..r.start + r.len], gso);
            n += 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: the headers point into the outbox arena and our own buffers, alive here.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs.hdrs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            // The message at `done` failed (unreachable, filtered, ...): drop it, go on.
            let lost = out.runs[i + done].count as u64;
            tracing::trace!("sendmmsg: {e}");
            if e.raw_os_error() == Some(libc::EIO) && lost > 1 {
                // The route cannot segment GSO sends: plain datagrams from now on.
                tracing::warn!("kernel refused UDP GSO; sending plain packets");
                out.disable_gso();
            }
            for _ in 0..lost {
                device.stats.drop(DropReason::IoError);
            }
            done += 1;
        }
        i += n;
    }
}

/// Appends a frame: `hdr` (when the device has virtio-net headers and the caller has one to add)
/// then `data`.
fn push_frame(
    tun: &mut Vec<u8>,
    frames: &mut Vec<(usize, usize)>,
    overflow: &mut u64,
    hdr: Option<&VirtioNetHdr>,
    data: &[u8],
) -> bool {
    let len = data.len() + if hdr.is_some() { VNET_HDR_LEN } else { 0 };
    if tun.capacity() - tun.len() < len || frames.len() == frames.capacity() {
        *overflow += 1;
        return false;
    }
    let start = tun.len();
    if let Some(h) = hdr {
        let mut b = [0u8; VNET_HDR_LEN];
        h.encode(&mut b);
        tun.extend_from_slice(&b);
    }
    tun.extend_from_slice(data);
    frames.push((start, len));
    true
}

impl Io for Outbox {
    #[inline]
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) -> bool {
        let n = packet.len();
        if n == 0 {
            return false;
        }
        if self.udp.capacity() - self.udp.len() < n {
            self.overflow += 1;
            return false;
        }
        let start = self.udp.len();
        self.udp.extend_from_slice(packet);
        if self.gso && !self.run_closed {
            if let Some(r) = self.runs.last_mut() {
                if r.to == to
                    && n <= r.seg
                    && r.count < MAX_SEGMENTS
                    && r.len + n <= MAX_RUN_BYTES
                    && r.start + r.len == start
                {
                    r.len += n;
                    r.count += 1;
                    self.run_closed = n < r.seg;
                    return true;
                }
            }
        }
        if self.runs.len() == self.runs.capacity() {
            self.udp.truncate(start);
            self.overflow += 1;
            return false;
        }
        self.runs.push(Run {
            to,
            start,
            len: n,
            seg: n,
            count: 1,
        });
        self.run_closed = false;
        true
    }

    #[inline]
    fn write_tun(&mut self, peer: PeerId, packet: &[u8]) -> bool {
        self.tun_packets += 1;
        let (tun, frames, overflow) = (&mut self.tun, &mut self.frames, &mut self.overflow);
        match self.gro.as_mut() {
            Some(gro) => {
                self.tun_pending += packet.len() + VNET_HDR_LEN;
                if gro.push(peer, packet) {
                    return true;
                }
                gro.flush(|frame| {
                    push_frame(tun, frames, overflow, None, frame);
                });
                self.tun_pending = packet.len() + VNET_HDR_LEN;
                gro.push(peer, packet)
            }
            None => {
                let hdr = self.vnet.then_some(&VirtioNetHdr::NONE);
                push_frame(tun, frames, overflow, hdr, packet)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(p: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 2], p))
    }

    #[test]
    fn equal_datagrams_to_one_endpoint_form_one_run() {
        let mut o = Outbox::new(1 << 20, true, false, None);
        for _ in 0..10 {
            assert!(o.send_udp(ep(1), &[7; 100]));
        }
        o.send_udp(ep(1), &[7; 40]); // short last one closes the run
        o.send_udp(ep(1), &[7; 40]);
        o.send_udp(ep(2), &[7; 40]);
        let runs: Vec<_> = o
            .runs
            .iter()
            .map(|r| (r.to, r.len, r.seg, r.count))
            .collect();
        assert_eq!(
            runs,
            vec![
                (ep(1), 1040, 100, 11),
                (ep(1), 40, 40, 1),
                (ep(2), 40, 40, 1)
            ]
        );
    }

    #[test]
    fn runs_respect_kernel_limits_and_no_gso_means_one_each() {
        let mut o = Outbox::new(1 << 20, true, false, None);
        for _ in 0..(MAX_SEGMENTS + 1) {
            o.send_udp(ep(1), &[1; 64]);
        }
        assert_eq!(o.runs.len(), 2);
        assert_eq!(o.runs[0].count, MAX_SEGMENTS);
        let mut o = Outbox::new(1 << 20, false, false, None);
        o.send_udp(ep(1), &[1; 64]);
        o.send_udp(ep(1), &[1; 64]);
        assert_eq!(o.runs.len(), 2);
    }

    #[test]
    fn larger_datagram_starts_a_new_run() {
        let mut o = Outbox::new(1 << 20, true, false, None);
        o.send_udp(ep(1), &[1; 64]);
        o.send_udp(ep(1), &[1; 80]);
        assert_eq!(o.runs.len(), 2);
    }

    #[test]
    fn plain_frames_get_a_zero_header_with_vnet() {
        let mut o = Outbox::new(1 << 16, false, true, None);
        o.write_tun(0, &[0x45; 20]);
        o.finish();
        assert_eq!(o.frames.len(), 1);
        assert_eq!(&o.frame(0)[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&o.frame(0)[VNET_HDR_LEN..], &[0x45; 20]);
    }

    #[test]
    fn packets_held_for_coalescing_count_towards_a_full_outbox() {
        let mut o = Outbox::new(256 << 10, false, true, Some(GroTable::new(256, true)));
        let mut flushes = 0;
        for i in 0..250u32 {
            // Distinct flows (ICMP-like, never merged): each is held as its own item.
            let mut p = vec![0u8; 1400];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&1400u16.to_be_bytes());
            p[9] = 1;
            p[12..16].copy_from_slice(&i.to_be_bytes());
            assert!(o.write_tun(0, &p));
            if o.nearly_full() {
                o.finish();
                o.clear();
                flushes += 1;
            }
        }
        assert!(flushes > 0);
        assert_eq!(o.take_overflow(), 0);
    }

    #[test]
    fn full_outbox_counts_instead_of_growing() {
        let mut o = Outbox::new(256, false, false, None);
        assert!(o.send_udp(ep(1), &[1; 200]));
        assert!(!o.send_udp(ep(1), &[1; 200]));
        assert_eq!(o.overflow, 1);
        assert!(o.nearly_full());
        o.clear();
        assert!(o.send_udp(ep(1), &[1; 200]));
    }
}
