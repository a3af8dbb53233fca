//! `msghdr` plumbing shared by the batch (`recvmmsg`/`sendmmsg`) and io_uring loops: receive
//! slots with room for a UDP_GRO control message, and send headers with a UDP_SEGMENT one.
//! Buffers are allocated once; the headers point into them and are refreshed before each use.

use super::udp::{SOL_UDP, UDP_GRO, UDP_SEGMENT};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for one `cmsghdr` carrying an int (UDP_GRO) or a u16 (UDP_SEGMENT), 8-byte aligned.
pub const CMSG_SPACE: usize = 32;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; CMSG_SPACE]);

pub fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source on the dual-stack path is the IPv4 peer it stands for.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::V4(SocketAddrV4::new(
                    v4,
                    u16::from_be(sin6.sin6_port),
                )));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `count` receive buffers of `size` bytes with their headers.
pub struct RecvSlots {
    bufs: Vec<u8>,
    size: usize,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<Cmsg>,
    pub hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the headers point into buffers the struct owns.
unsafe impl Send for RecvSlots {}

impl RecvSlots {
    pub fn new(count: usize, size: usize) -> Self {
        RecvSlots {
            bufs: vec![0; count * size],
            size,
            // SAFETY: all-zero is a valid value of these plain C structs.
            iov: vec![unsafe { zeroed() }; count],
            names: vec![unsafe { zeroed() }; count],
            cmsgs: vec![Cmsg([0; CMSG_SPACE]); count],
            hdrs: vec![unsafe { zeroed() }; count],
        }
    }

    pub fn len(&self) -> usize {
        self.hdrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hdrs.is_empty()
    }

    /// Points slot `i`'s header at its buffers, ready for a receive; returns the header.
    pub fn arm(&mut self, i: usize) -> *mut libc::msghdr {
        let base = self.bufs[i * self.size..].as_mut_ptr();
        self.iov[i] = libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: self.size,
        };
        let h = &mut self.hdrs[i];
        h.msg_len = 0;
        let m = &mut h.msg_hdr;
        m.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = &mut self.iov[i];
        m.msg_iovlen = 1;
        m.msg_control = self.cmsgs[i].0.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen = CMSG_SPACE;
        m.msg_flags = 0;
        m
    }

    /// Slot `i` after a receive of `n` bytes: the sender, the data, and the size of each
    /// datagram in it (UDP_GRO coalesces datagrams of one flow; `n` when there was none).
    pub fn received(&self, i: usize, n: usize) -> Option<(SocketAddr, &[u8], usize)> {
        let from = from_sockaddr(&self.names[i])?;
        let data = &self.bufs[i * self.size..i * self.size + n.min(self.size)];
        let used = self.hdrs[i].msg_hdr.msg_controllen.min(CMSG_SPACE);
        let seg = gro_segment(&self.cmsgs[i].0[..used]).unwrap_or(data.len());
        Some((from, data, seg.max(1)))
    }
}

/// The datagram size of a UDP GRO train, from a receive's control messages (`cmsghdr`s, each
/// a length, level and type, then data, 8-byte aligned). Read byte-wise: the buffer is ours
/// but its alignment is not guaranteed.
pub fn gro_segment(control: &[u8]) -> Option<usize> {
    const HDR: usize = size_of::<libc::cmsghdr>();
    let mut at = 0;
    while at + HDR <= control.len() {
        let word = |o: usize, n: usize| -> Option<u64> {
            let b = control.get(at + o..at + o + n)?;
            Some(b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
        };
        let len = word(0, size_of::<usize>())? as usize;
        let level = word(size_of::<usize>(), 4)? as i32;
        let kind = word(size_of::<usize>() + 4, 4)? as i32;
        if len < HDR {
            return None;
        }
        if level == SOL_UDP && kind == UDP_GRO {
            let seg = word(HDR, 4)? as usize;
            return (seg > 0).then_some(seg);
        }
        at += (len + 7) & !7;
    }
    None
}

/// Send headers for GSO runs, one per run, pointing into an outbox's datagram arena.
pub struct SendHdrs {
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<Cmsg>,
    pub hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvSlots; the arena pointers are only used while the arena is alive.
unsafe impl Send for SendHdrs {}

impl SendHdrs {
    pub fn new(capacity: usize) -> Self {
        SendHdrs {
            // SAFETY: all-zero is a valid value of these plain C structs.
            iov: vec![unsafe { zeroed() }; capacity],
            names: vec![unsafe { zeroed() }; capacity],
            cmsgs: vec![Cmsg([0; CMSG_SPACE]); capacity],
            hdrs: vec![unsafe { zeroed() }; capacity],
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Fills header `i` for `data` to `to`: one datagram, or with `gso` (UDP_SEGMENT) several
    /// of that size that the kernel splits.
    pub fn fill(
        &mut self,
        i: usize,
        to: SocketAddr,
        data: &[u8],
        gso: Option<u16>,
    ) -> *mut libc::msghdr {
        self.iov[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let namelen = to_sockaddr(to, &mut self.names[i]);
        let h = &mut self.hdrs[i];
        h.msg_len = 0;
        let m = &mut h.msg_hdr;
        m.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
        m.msg_namelen = namelen;
        m.msg_iov = &mut self.iov[i];
        m.msg_iovlen = 1;
        m.msg_flags = 0;
        if let Some(seg) = gso {
            m.msg_control = self.cmsgs[i].0.as_mut_ptr() as *mut libc::c_void;
            // SAFETY: CMSG_SPACE(2) fits in our 32-byte buffer; we write one cmsghdr + u16.
            unsafe {
                m.msg_controllen = libc::CMSG_SPACE(2) as usize;
                let c = libc::CMSG_FIRSTHDR(m);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
            }
        } else {
            m.msg_control = std::ptr::null_mut();
            m.msg_controllen = 0;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_segment_from_control_messages() {
        let mut c = vec![0u8; 2 * CMSG_SPACE];
        // An unrelated cmsg (level 0, type 1, 4 data bytes), then UDP_GRO = 1400.
        c[..8].copy_from_slice(&20u64.to_le_bytes());
        c[8..12].copy_from_slice(&0i32.to_le_bytes());
        c[12..16].copy_from_slice(&1i32.to_le_bytes());
        c[24..32].copy_from_slice(&20u64.to_le_bytes());
        c[32..36].copy_from_slice(&SOL_UDP.to_le_bytes());
        c[36..40].copy_from_slice(&UDP_GRO.to_le_bytes());
        c[40..44].copy_from_slice(&1400i32.to_le_bytes());
        assert_eq!(gro_segment(&c), Some(1400));
        assert_eq!(gro_segment(&c[..24]), None);
        assert_eq!(gro_segment(&[]), None);
        // A zero length would loop forever; a truncated header ends the walk.
        assert_eq!(gro_segment(&[0u8; 16]), None);
        assert_eq!(gro_segment(&c[..30]), None);
    }

    #[test]
    fn sockaddr_round_trip() {
        for a in [
            "198.18.0.2:51820".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ] {
            // SAFETY: zeroed sockaddr_storage is valid.
            let mut s = unsafe { zeroed() };
            to_sockaddr(a, &mut s);
            assert_eq!(from_sockaddr(&s), Some(a));
        }
        // SAFETY: as above.
        let mut s: libc::sockaddr_storage = unsafe { zeroed() };
        assert_eq!(from_sockaddr(&s), None);
        to_sockaddr("[::ffff:198.18.0.2]:7".parse().unwrap(), &mut s);
        assert_eq!(from_sockaddr(&s), Some("198.18.0.2:7".parse().unwrap()));
    }
}
