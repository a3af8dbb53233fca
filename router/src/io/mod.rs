//! The thin I/O layer: worker threads that move packets between the TUN queues, the UDP sockets
//! and the sans-IO [`Device`]. Each worker owns one TUN queue and one UDP socket; the packet core
//! is shared and lock-free on reads, so workers scale with cores.
//!
//! This layer uses blocking syscalls, one packet each. The seam for batched io_uring loops is
//! [`crate::device::Io`] plus the `handle_*` entry points, which take no ownership of buffers.

pub mod tun;
pub mod udp;

use crate::device::{Device, Io, NetControl};
use crate::uapi::UapiError;
use arc_swap::ArcSwap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use udp::Sockets;

/// Big enough for any datagram, plus WireGuard's 32 bytes of overhead.
const BUF: usize = 65_536 + 64;
const TIMER_INTERVAL: Duration = Duration::from_millis(250);

/// The UDP sockets, replaceable when UAPI changes the listen port or fwmark.
pub struct Net {
    sockets: ArcSwap<Sockets>,
    count: usize,
}

impl Net {
    pub fn bind(port: u16, fwmark: u32, count: usize) -> std::io::Result<Self> {
        Ok(Net {
            sockets: ArcSwap::from_pointee(udp::bind(port, fwmark, count, 0)?),
            count,
        })
    }

    pub fn port(&self) -> u16 {
        self.sockets.load().port
    }
}

impl NetControl for Net {
    fn rebind(&self, port: u16, fwmark: u32) -> Result<u16, UapiError> {
        let generation = self.sockets.load().generation + 1;
        let new = udp::bind(port, fwmark, self.count, generation).map_err(|e| {
            if e.kind() == ErrorKind::AddrInUse {
                UapiError::PortInUse(port)
            } else {
                UapiError::Io(e.to_string())
            }
        })?;
        let port = new.port;
        let old = self.sockets.swap(Arc::new(new));
        old.all().for_each(udp::wake);
        tracing::info!(port, fwmark, "listening");
        Ok(port)
    }
}

struct WorkerIo<'a> {
    sockets: &'a Sockets,
    worker: usize,
    tun: &'a File,
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
    fn write_tun(&mut self, packet: &[u8]) -> bool {
        let mut tun = self.tun;
        tun.write(packet).is_ok()
    }
}

/// Called when the interface disappears (deleted with `ip link del`, as `wg-quick down` does).
fn interface_gone() {
    tracing::info!("interface removed; shutting down");
    // SAFETY: sending a signal to ourselves; main's sigwait turns it into a clean shutdown.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// Reads packets from one TUN queue and sends them encrypted.
fn tun_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, worker: usize) {
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
        };
        device.handle_tun(&packet[..n], &mut out, &mut io);
    }
}

/// Receives datagrams on one socket (`v6` picks the IPv6 one) and writes them decrypted to TUN.
fn udp_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>, worker: usize, v6: bool) {
    let mut datagram = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let sockets = net.sockets.load_full();
        let sock = if v6 {
            sockets.v6.as_ref()
        } else {
            sockets.v4.get(worker)
        };
        let Some(sock) = sock else {
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
                    };
                    device.handle_udp(src, &datagram[..n], &mut out, &mut io);
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

fn timer_loop(device: Arc<Device>, net: Arc<Net>, tun: Arc<File>) {
    let mut out = vec![0u8; BUF];
    let mut last_reset = Instant::now();
    loop {
        std::thread::sleep(TIMER_INTERVAL);
        if last_reset.elapsed() >= Duration::from_secs(1) {
            device.reset_rate_limiter();
            last_reset = Instant::now();
        }
        let sockets = net.sockets.load();
        let mut io = WorkerIo {
            sockets: &sockets,
            worker: 0,
            tun: &tun,
        };
        device.tick(&mut out, &mut io);
    }
}

/// Starts the worker threads: per TUN queue a TUN reader and a UDP reader, one IPv6 reader, and
/// the timer thread. They run until the process exits.
pub fn start(device: Arc<Device>, net: Arc<Net>, queues: Vec<File>) -> std::io::Result<()> {
    let queues: Vec<Arc<File>> = queues.into_iter().map(Arc::new).collect();
    for (i, q) in queues.iter().enumerate() {
        let (d, n, t) = (device.clone(), net.clone(), q.clone());
        spawn(format!("tun-{i}"), move || tun_loop(d, n, t, i))?;
        let (d, n, t) = (device.clone(), net.clone(), q.clone());
        spawn(format!("udp-{i}"), move || udp_loop(d, n, t, i, false))?;
    }
    let (d, n, t) = (device.clone(), net.clone(), queues[0].clone());
    spawn("udp6".into(), move || udp_loop(d, n, t, 0, true))?;
    let (d, n, t) = (device, net, queues[0].clone());
    spawn("timers".into(), move || timer_loop(d, n, t))?;
    Ok(())
}
