//! The UDP sockets the workers share, replaced whole when UAPI changes the listen port or the
//! fwmark (the device's [`NetControl`]); the workers notice the new generation.

use super::udp::{self, Sockets};
use crate::device::NetControl;
use crate::request::UapiError;
use arc_swap::ArcSwap;
use std::io::ErrorKind;
use std::sync::Arc;

/// The UDP sockets, replaceable when UAPI changes the listen port or fwmark.
pub struct Net {
    pub(super) sockets: ArcSwap<Sockets>,
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
