//! The sending half of the packet path: a packet read from TUN is routed by its destination to
//! a peer, checked against the rental's download cap, and leaves encrypted. An idle peer gets
//! its session state made here (the packet is queued and a handshake starts).

use super::state::{drop_reason, Device, Io};
use crate::limits::Way;
use crate::stats::DropReason;
use boringtun::noise::TunnResult;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

impl Device {
    /// A packet read from TUN at `now`: route it by destination and send it encrypted to its
    /// peer.
    pub fn handle_tun(&self, now: Instant, packet: &[u8], buf: &mut [u8], io: &mut impl Io) {
        let Some(dst) = destination(packet) else {
            return self.stats.drop(DropReason::InvalidPacket);
        };
        // One pin for the packet's lookups (nested in the driver's batch pin).
        let pin = crate::epoch::pin();
        let Some(peer) =
            (self.routes.lookup_in(dst, &pin)).and_then(|id| self.peers.get_in(id, &pin))
        else {
            return self.stats.drop(DropReason::NoRoute);
        };
        let (res, endpoint) = {
            let mut s = peer.session.lock();
            if let Some(l) = s.limits.as_deref_mut() {
                if !l.admit(Way::Down, packet.len(), now) {
                    return self.stats.drop(DropReason::RateLimited);
                }
            }
            let active = match s.active {
                Some(ref mut a) => a,
                None => {
                    // An idle peer with traffic waiting: make its state, which queues the
                    // packet and starts a handshake.
                    let Some(identity) = self.identity.load_full() else {
                        return self.stats.drop(DropReason::NoKey);
                    };
                    if s.endpoint.is_none() {
                        return self.stats.drop(DropReason::NoEndpoint);
                    }
                    // Anyone on the internet can send to every rented address: the states
                    // such traffic makes before the customer answers are capped.
                    if self.unanswered.load(Relaxed) >= self.max_unanswered() {
                        return self.stats.drop(DropReason::UnderLoad);
                    }
                    match self.activate(&identity, peer, &mut s, now) {
                        Some(a) => {
                            a.unanswered = true;
                            self.unanswered.fetch_add(1, Relaxed);
                            a
                        }
                        None => return self.stats.drop(DropReason::NoKey),
                    }
                }
            };
            let res = active.tunn.encapsulate(packet, buf);
            (res, s.endpoint)
        };
        match res {
            TunnResult::WriteToNetwork(out) => match endpoint {
                Some(ep) => {
                    if io.send_udp(ep, out) {
                        peer.tx_bytes.add(out.len() as u64);
                        self.stats.tun_to_udp.add(1);
                    } else {
                        self.stats.drop(DropReason::IoError);
                    }
                }
                None => self.stats.drop(DropReason::NoEndpoint),
            },
            TunnResult::Err(e) => self.stats.drop(drop_reason(&e)),
            _ => {}
        }
    }
}

/// Destination address of an IP packet read from TUN.
#[inline]
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let b: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 if packet.len() >= 40 => {
            let b: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}
