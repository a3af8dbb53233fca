//! The thin I/O layer: worker threads that move packets between the TUN queues, the UDP sockets
//! and the sans-IO [`Device`]. Each worker owns one TUN queue and one UDP socket (SO_REUSEPORT);
//! the packet core is shared and lock-free on reads, so workers scale with cores.
//!
//! Three drivers of the same core, chosen with `--io`:
//! - [`uring`]: one thread per worker with its own io_uring: multishot TUN reads and UDP
//!   receives on provided-buffer rings, UDP output with one `sendmmsg` and TUN writes submitted
//!   per batch;
//! - [`batch`]: `recvmmsg`/`sendmmsg` threads, where io_uring is refused (seccomp, old kernels);
//! - [`simple`]: one blocking syscall per packet, no offloads (the reference).
//!
//! The batched drivers use offloads where the kernel has them: TUN super-packets (TSO/USO) are
//! split in userspace and leave as UDP GSO runs; UDP GRO trains are split, decrypted, and one
//! flow's segments reach TUN coalesced ([`crate::offload`]).

pub mod batch;
pub mod bufring;
pub mod msg;
pub mod outbox;
pub mod simple;
pub mod tun;
pub mod udp;
pub mod uring;

use crate::device::{Device, NetControl};
use crate::offload::segment::segment;
use crate::offload::vnet::VirtioNetHdr;
use crate::request::UapiError;
use crate::stats::DropReason;
use arc_swap::ArcSwap;
use outbox::Outbox;
use std::fs::File;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use udp::Sockets;

/// Big enough for any datagram or TUN super-packet, plus headers and WireGuard's overhead.
const BUF: usize = 65_536 + 256;
const TIMER_INTERVAL: Duration = Duration::from_millis(250);

/// How packets move between the kernel and the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoMode {
    /// io_uring if the kernel allows it, else batch.
    Auto,
    Uring,
    Batch,
    Simple,
}

impl IoMode {
    /// The mode to run: `Auto` becomes `Uring` where io_uring works, else `Batch`. A forced
    /// `Uring` that the kernel refuses is an error.
    pub fn resolve(self) -> std::io::Result<IoMode> {
        match self {
            IoMode::Auto => Ok(match uring::probe() {
                Ok(()) => IoMode::Uring,
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}); using batched syscalls");
                    IoMode::Batch
                }
            }),
            IoMode::Uring => uring::probe().map(|_| IoMode::Uring),
            m => Ok(m),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Batch => "batch",
            IoMode::Simple => "simple",
        }
    }
}

/// The UDP sockets, replaceable when UAPI changes the listen port or fwmark.
pub struct Net {
    sockets: ArcSwap<Sockets>,
    count: usize,
    offload: bool,
    /// Eventfds of io_uring workers, told when the sockets change (their multishot receives
    /// do not end when a socket is shut down, so they cancel them).
    wakers: parking_lot::Mutex<Vec<std::os::fd::RawFd>>,
}

impl Net {
    /// `offload`: UDP GSO/GRO where the kernel has them (the batched drivers split GRO trains).
    pub fn bind(port: u16, fwmark: u32, count: usize, offload: bool) -> std::io::Result<Self> {
        Ok(Net {
            sockets: ArcSwap::from_pointee(udp::bind(port, fwmark, count, 0, offload)?),
            count,
            offload,
            wakers: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Registers an eventfd to be written whenever the sockets are replaced.
    pub fn on_rebind(&self, eventfd: std::os::fd::RawFd) {
        self.wakers.lock().push(eventfd);
    }

    /// Whether the sockets segment sends (GSO) and coalesce receives (GRO).
    pub fn offloads(&self) -> (bool, bool) {
        let s = self.sockets.load();
        (s.gso, s.gro)
    }

    pub fn port(&self) -> u16 {
        self.sockets.load().port
    }
}

impl NetControl for Net {
    fn rebind(&self, port: u16, fwmark: u32) -> Result<u16, UapiError> {
        let generation = self.sockets.load().generation + 1;
        let new = udp::bind(port, fwmark, self.count, generation, self.offload).map_err(|e| {
            if e.kind() == ErrorKind::AddrInUse {
                UapiError::PortInUse(port)
            } else {
                UapiError::Io(e.to_string())
            }
        })?;
        let port = new.port;
        let old = self.sockets.swap(Arc::new(new));
        old.all().for_each(udp::wake);
        for &fd in self.wakers.lock().iter() {
            // SAFETY: writing 8 bytes to an eventfd a worker registered and keeps open.
            unsafe { libc::write(fd, &1u64 as *const u64 as *const libc::c_void, 8) };
        }
        tracing::info!(port, fwmark, "listening");
        Ok(port)
    }
}

/// Called when the interface disappears (deleted with `ip link del`, as `wg-quick down` does).
fn interface_gone() {
    tracing::info!("interface removed; shutting down");
    // SAFETY: sending a signal to ourselves; main's sigwait turns it into a clean shutdown.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

/// Pins the calling thread to the `i`-th CPU it may run on.
fn pin_to_cpu(i: usize) {
    // SAFETY: reading and setting this thread's affinity mask, which we own.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[i % cpus.len()], &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// One frame read from TUN at `now`: with offloads, a virtio-net header and possibly a
/// super-packet, split here into the segments the core encrypts one by one. Returns the packets
/// it held.
#[inline]
pub fn drain_tun_frame(
    device: &Device,
    now: Instant,
    vnet: bool,
    frame: &[u8],
    scratch: &mut [u8],
    out: &mut [u8],
    outbox: &mut Outbox,
) -> u64 {
    if !vnet {
        device.handle_tun(now, frame, out, outbox);
        return 1;
    }
    let Ok((hdr, packet)) = VirtioNetHdr::decode(frame) else {
        device.stats.drop(DropReason::InvalidPacket);
        return 0;
    };
    match segment(&hdr, packet, scratch, |seg| {
        device.handle_tun(now, seg, out, outbox)
    }) {
        Ok(n) => n as u64,
        Err(_) => {
            device.stats.drop(DropReason::InvalidPacket);
            0
        }
    }
}

/// One receive at `now`: a datagram, or a UDP GRO train of datagrams `seg` bytes each (the last
/// may be shorter), all from `from`.
#[inline]
pub fn handle_datagrams(
    device: &Device,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
    seg: usize,
    out: &mut [u8],
    outbox: &mut Outbox,
) -> u64 {
    let mut n = 0;
    for datagram in data.chunks(seg.max(1)) {
        device.handle_udp(now, from, datagram, out, outbox);
        n += 1;
    }
    n
}

/// Starts the workers for `mode` (resolved, not `Auto`) and the timer thread. They run until
/// the process exits.
pub fn start(
    device: Arc<Device>,
    net: Arc<Net>,
    queues: Vec<File>,
    mode: IoMode,
    off: tun::Offloads,
    pin_cpus: bool,
) -> std::io::Result<()> {
    let queues: Vec<Arc<File>> = queues.into_iter().map(Arc::new).collect();
    for (i, q) in queues.iter().enumerate() {
        let (d, n, t) = (device.clone(), net.clone(), q.clone());
        let pin = move || {
            if pin_cpus {
                pin_to_cpu(i);
            }
        };
        match mode {
            IoMode::Uring | IoMode::Auto => {
                spawn(format!("uring-{i}"), move || {
                    pin();
                    uring::worker(d, n, t, i, off)
                })?;
            }
            IoMode::Batch => {
                spawn(format!("tun-{i}"), move || {
                    pin();
                    batch::tun_loop(d, n, t, i, off)
                })?;
                let (d, n, t) = (device.clone(), net.clone(), q.clone());
                spawn(format!("udp-{i}"), move || {
                    pin();
                    batch::udp_loop(d, n, t, i, false, off)
                })?;
            }
            IoMode::Simple => {
                spawn(format!("tun-{i}"), move || {
                    pin();
                    simple::tun_loop(d, n, t, i)
                })?;
                let (d, n, t) = (device.clone(), net.clone(), q.clone());
                spawn(format!("udp-{i}"), move || {
                    pin();
                    simple::udp_loop(d, n, t, i, false)
                })?;
            }
        }
    }
    let (d, n, t) = (device.clone(), net.clone(), queues[0].clone());
    match mode {
        IoMode::Batch => {
            spawn("udp6".into(), move || {
                batch::udp_loop(d, n, t, 0, true, off)
            })?;
        }
        IoMode::Simple => {
            spawn("udp6".into(), move || simple::udp_loop(d, n, t, 0, true))?;
        }
        // The first io_uring worker receives on the IPv6 socket as well.
        IoMode::Uring | IoMode::Auto => {}
    }
    let (d, n, t) = (device, net, queues[0].clone());
    spawn("timers".into(), move || {
        simple::timer_loop(d, n, t, off.vnet_hdr)
    })?;
    Ok(())
}
