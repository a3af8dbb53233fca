//! Linux TUN device with one file descriptor per queue (IFF_MULTI_QUEUE), so each worker thread
//! reads and writes its own queue.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

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

/// Creates the interface `name` with `queues` queues and the given MTU. Fails if an interface of
/// that name exists already (attaching to another process's TUN would split its traffic).
pub fn create(name: &str, queues: usize, mtu: u32) -> io::Result<Vec<File>> {
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
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags lays out.
        if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        files.push(f);
    }
    set_mtu(name, mtu)?;
    Ok(files)
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
