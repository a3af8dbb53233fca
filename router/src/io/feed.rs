//! Handing the core its input, the same in every batched driver: a TUN frame (split into
//! segments when it is a super-packet) and a UDP receive (split when it is a GRO train).

use super::outbox::Outbox;
use crate::device::Device;
use crate::offload::segment::segment;
use crate::offload::vnet::VirtioNetHdr;
use crate::stats::DropReason;
use std::net::SocketAddr;
use std::time::Instant;

/// Big enough for any datagram or TUN super-packet, plus headers and WireGuard's overhead.
pub(super) const BUF: usize = 65_536 + 256;

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
