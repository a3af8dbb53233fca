//! Linux TUN device with one file descriptor per queue (IFF_MULTI_QUEUE), so each worker thread
//! reads and writes its own queue. With offloads, every frame carries a virtio-net header
//! (IFF_VNET_HDR) and the kernel hands us TCP (and UDP) super-packets of up to 64 KiB (TSO/USO),
//! one read for dozens of segments; we write coalesced super-packets back the same way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_VNET_HDR: libc::c_int = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// What the kernel agreed to on this TUN device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Every frame starts with a virtio-net header.
    pub vnet_hdr: bool,
    /// The kernel may hand us TCP super-packets (and accepts them from us).
    pub tso: bool,
    /// The same for UDP (kernel 6.2+).
    pub uso: bool,
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqMtu {
    name: [u8; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

/// Checks a Linux interface name the way the kernel's `dev_valid_name` does.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

fn ifname(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Creates the interface `name` with `queues` queues and the given MTU, with virtio-net headers
/// and segmentation offloads when `offload` is set and the kernel has them. Fails if an
/// interface of that name exists already (attaching to another process's TUN would split its
/// traffic).
pub fn create(
    name: &str,
    queues: usize,
    mtu: u32,
    offload: bool,
) -> io::Result<(Vec<File>, Offloads)> {
    let raw_name = ifname(name)?;
    if Path::new("/sys/class/net").join(name).exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("interface {name} already exists"),
        ));
    }
    let mut files = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags {
            name: raw_name,
            flags: (libc::IFF_TUN
                | libc::IFF_NO_PI
                | libc::IFF_MULTI_QUEUE
                | if offload { IFF_VNET_HDR } else { 0 }) as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags lays out.
        if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        files.push(f);
    }
    set_mtu(name, mtu)?;
    let mut offloads = Offloads {
        vnet_hdr: offload,
        ..Offloads::default()
    };
    if offload {
        // USO needs kernel 6.2; without it, TCP offloads alone are still worth having.
        let tcp = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        if set_offload(&files, tcp | TUN_F_USO4 | TUN_F_USO6).is_ok() {
            (offloads.tso, offloads.uso) = (true, true);
        } else if set_offload(&files, tcp).is_ok() {
            offloads.tso = true;
        } else if let Err(e) = set_offload(&files, 0) {
            tracing::warn!("TUN offloads refused: {e}");
        }
    }
    Ok((files, offloads))
}

fn set_offload(files: &[File], flags: libc::c_uint) -> io::Result<()> {
    for f in files {
        // SAFETY: TUNSETOFFLOAD takes the flags as an unsigned long argument.
        if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETOFFLOAD as _, flags as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Switches a queue to non-blocking reads and writes (the batch loop polls).
pub fn set_nonblocking(f: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mut req = IfReqMtu {
        name: ifname(name)?,
        mtu: mtu as libc::c_int,
        _pad: [0; 20],
    };
    // SAFETY: plain socket syscall; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCSIFMTU reads a struct ifreq, which IfReqMtu lays out.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFMTU as _, &mut req) };
    let err = io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    Ok(())
}

/// Called when the interface disappears (deleted with `ip link del`, as `wg-quick down` does).
pub(super) fn interface_gone() {
    tracing::info!("interface removed; shutting down");
    // SAFETY: sending a signal to ourselves; main's sigwait turns it into a clean shutdown.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_name("wg0"));
        assert!(valid_name("swt-12345-abcd"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-very-long-name0"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a:1"));
        assert!(!valid_name(".."));
    }
}
