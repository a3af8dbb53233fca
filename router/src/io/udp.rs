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
    /// The kernel segments one `sendmsg` into many datagrams (UDP_SEGMENT).
    pub gso: bool,
    /// Receives may hold several datagrams of one flow (UDP_GRO), split by the reader.
    pub gro: bool,
}

impl Sockets {
    pub fn all(&self) -> impl Iterator<Item = &UdpSocket> {
        self.v4.iter().chain(self.v6.iter())
    }

    /// The socket worker `worker` receives on: its own IPv4 one, or (`v6`) the IPv6 one.
    /// `None` when this generation has no such socket.
    pub fn for_worker(&self, worker: usize, v6: bool) -> Option<&UdpSocket> {
        if v6 {
            self.v6.as_ref()
        } else {
            self.v4.get(worker)
        }
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

pub const SOL_UDP: libc::c_int = 17;
pub const UDP_SEGMENT: libc::c_int = 103;
pub const UDP_GRO: libc::c_int = 104;

fn setsockopt_int(
    s: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: i32,
) -> bool {
    // SAFETY: setsockopt with a c_int value on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

/// Whether the kernel segments UDP sends for this socket: reading the option succeeds exactly
/// where UDP_SEGMENT exists (Linux 4.18+).
fn gso_supported(s: &impl std::os::fd::AsRawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int we own.
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            SOL_UDP,
            UDP_SEGMENT,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        ) == 0
    }
}

/// Binds `count` IPv4 sockets (and an IPv6 one if possible) to `port`; 0 picks a free port.
/// With `offload`, turns on UDP GRO and notes whether UDP GSO works.
pub fn bind(
    port: u16,
    fwmark: u32,
    count: usize,
    generation: u64,
    offload: bool,
) -> io::Result<Sockets> {
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
    let mut sockets = Sockets {
        port,
        v4,
        v6,
        generation,
        gso: false,
        gro: false,
    };
    if offload {
        let gso = sockets.all().all(gso_supported);
        let gro = sockets
            .all()
            .all(|s| setsockopt_int(s, SOL_UDP, UDP_GRO, 1));
        (sockets.gso, sockets.gro) = (gso, gro);
        if !gro {
            // Mixed sockets would hand the reader coalesced data it does not expect.
            sockets.all().for_each(|s| {
                setsockopt_int(s, SOL_UDP, UDP_GRO, 0);
            });
        }
    }
    Ok(sockets)
}

/// Wakes threads blocked on a replaced socket: after `shutdown` a UDP `recv` returns at once.
pub fn wake(s: &UdpSocket) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown on an fd we own; ENOTCONN for unconnected UDP is expected and harmless.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
}
