//! The simple loop: blocking syscalls, one packet each, no offloads. The reference the batched
//! modes are measured and tested against, and the last fallback.

use super::feed::BUF;
use super::net::Net;
use super::tun::interface_gone;
use super::udp::Sockets;
use crate::device::{Device, Io};
use crate::offload::vnet::{VirtioNetHdr, VNET_HDR_LEN};
use crate::routes::PeerId;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMER_INTERVAL: Duration = Duration::from_millis(250);

/// Sends and writes at once, one syscall per packet. Also the timer thread's output.
pub struct WorkerIo<'a> {
    pub sockets: &'a Sockets,
    pub worker: usize,
    pub tun: &'a File,
    /// The TUN expects a virtio-net header before every packet.
    pub vnet: bool,
}

impl Io for WorkerIo<'_> {
    #[inline]
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) -> bool {
        match self.sockets.for_dest(to, self.worker) {
            Some(s) => s.send_to(packet, to).is_ok(),
            None => false,
        }
    }

    #[inline]
    fn write_tun(&mut self, _peer: PeerId, packet: &[u8]) -> bool {
        let mut tun = self.tun;
        if !self.vnet {
            return tun.write(packet).is_ok();
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        VirtioNetHdr::NONE.encode(&mut hdr);
        let bufs = [std::io::IoSlice::new(&hdr), std::io::IoSlice::new(packet)];
        tun.write_vectored(&bufs).is_ok()
    }
}

/// Reads packets from one TUN queue and sends them encrypted.
pub fn tun_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, worker: usize) {
    let mut packet = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let n = match (&*tun).read(&mut packet) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // EBADFD/EIO: the interface was deleted under us.
                tracing::debug!("tun read: {e}");
                return interface_gone();
            }
        };
        let sockets = net.sockets.load();
        let mut io = WorkerIo {
            sockets: &sockets,
            worker,
            tun: &tun,
            vnet: false,
        };
        device.handle_tun(Instant::now(), &packet[..n], &mut out, &mut io);
    }
}

/// Receives datagrams on one socket (`v6` picks the IPv6 one) and writes them decrypted to TUN.
pub fn udp_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, worker: usize, v6: bool) {
    let mut datagram = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let sockets = net.sockets.load_full();
        let Some(sock) = sockets.for_worker(worker, v6) else {
            // This socket does not exist in the current generation; wait for a rebind.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        loop {
            let replaced = || net.sockets.load().generation != sockets.generation;
            match sock.recv_from(&mut datagram) {
                Ok((0, _)) if replaced() => break,
                Ok((n, src)) => {
                    let mut io = WorkerIo {
                        sockets: &sockets,
                        worker,
                        tun: &tun,
                        vnet: false,
                    };
                    device.handle_udp(Instant::now(), src, &datagram[..n], &mut out, &mut io);
                }
                Err(_) if replaced() => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("udp recv: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

pub fn timer_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, vnet: bool) {
    let mut out = vec![0u8; BUF];
    let mut last_reset = Instant::now();
    loop {
        std::thread::sleep(TIMER_INTERVAL);
        let now = Instant::now();
        if now.saturating_duration_since(last_reset) >= Duration::from_secs(1) {
            device.reset_rate_limiter(now);
            last_reset = now;
        }
        let sockets = net.sockets.load();
        let mut io = WorkerIo {
            sockets: &sockets,
            worker: 0,
            tun: &tun,
            vnet,
        };
        device.tick(now, &mut out, &mut io);
    }
}
