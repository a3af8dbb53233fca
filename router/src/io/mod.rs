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
mod feed;
pub mod msg;
mod net;
pub mod outbox;
pub mod simple;
pub mod tun;
pub mod udp;
pub mod uring;

pub use feed::{drain_tun_frame, handle_datagrams};
pub use net::Net;

use crate::device::Device;
use std::fs::File;
use std::sync::Arc;
use std::thread::JoinHandle;

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
