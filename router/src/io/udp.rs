//! The UDP side: one IPv4 socket per worker sharing the port through SO_REUSEPORT (the kernel
//! spreads flows over them), plus one IPv6 socket when the host has IPv6.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Socket buffers big enough to ride out bursts of a few thousand packets.
const BUFFER_BYTES: libc::c_int = 8 << 20;

pub struct Sockets {
    pub port: u16,
    pub v4: Vec<UdpSocket>,
    pub v6: Option<UdpSocket>,
    /// Changes with every rebind, so readers of replaced sockets know to reload.
    pub generation: u64,
}

impl Sockets {
    pub fn all(&self) -> impl Iterator<Item = &UdpSocket> {
        self.v4.iter().chain(self.v6.iter())
    }

    #[inline]
    pub fn for_dest(&self, to: SocketAddr, worker: usize) -> Option<&UdpSocket> {
        match to {
            SocketAddr::V4(_) => self.v4.get(worker % self.v4.len()),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }
}

fn force_buffers(s: &Socket) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with a c_int value; failure (no CAP_NET_ADMIN) just keeps defaults.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &BUFFER_BYTES as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn socket(addr: SocketAddr, fwmark: u32, reuse: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(reuse)?;
    if fwmark != 0 {
        s.set_mark(fwmark)?;
    }
    force_buffers(&s);
    s.bind(&addr.into())?;
    Ok(s)
}

/// Binds `count` IPv4 sockets (and an IPv6 one if possible) to `port`; 0 picks a free port.
pub fn bind(port: u16, fwmark: u32, count: usize, generation: u64) -> io::Result<Sockets> {
    let v4addr = |p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, p));
    if port != 0 {
        // SO_REUSEPORT would let us share a port that another root process holds with the same
        // option; a probe bind without it makes "port in use" an error as it should be.
        drop(socket(v4addr(port), 0, false)?);
    }
    let first = socket(v4addr(port), fwmark, true)?;
    let port = first.local_addr()?.as_socket().map_or(port, |a| a.port());
    let mut v4 = vec![UdpSocket::from(first)];
    for _ in 1..count.max(1) {
        v4.push(socket(v4addr(port), fwmark, true)?.into());
    }
    let v6 = match socket(
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        fwmark,
        true,
    ) {
        Ok(s) => Some(s.into()),
        Err(e) => {
            tracing::debug!("no IPv6 socket on port {port}: {e}");
            None
        }
    };
    Ok(Sockets {
        port,
        v4,
        v6,
        generation,
    })
}

/// Wakes threads blocked on a replaced socket: after `shutdown` a UDP `recv` returns at once.
pub fn wake(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown on an fd we own; ENOTCONN for unconnected UDP is expected and harmless.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
}
