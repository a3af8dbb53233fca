//! The receiving half of the packet path: a datagram from the network is authenticated (MACs,
//! the handshake rate limiter, the per-source share under load), decrypted by its peer's
//! session, checked against the rental's upload limits and the sender's allowed IPs, and written
//! to TUN; handshake messages are answered. Initiations are opened here first, so a replayed or
//! forged one leaves no state behind.

use super::state::{drop_reason, static_shared, Device, Identity, Io};
use crate::initiation;
use crate::key::Key;
use crate::limits::{is_smtp, Limits, Way};
use crate::peer::Session;
use crate::routes::PeerId;
use crate::stats::DropReason;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

const ZERO_TIMESTAMP: initiation::Timestamp = [0; 12];

/// What kind of message a datagram is, and for initiations what opening it learned (and the
/// identity it was opened with).
enum Kind<'i> {
    Initiation(initiation::Opened, &'i Identity),
    Response,
    Cookie,
    Data,
}

impl Device {
    /// A datagram from the network, received at `now`: authenticate, decrypt, check its source
    /// against the sender's allowed IPs, and write it to TUN (or answer a handshake).
    pub fn handle_udp(
        &self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
        io: &mut impl Io,
    ) {
        // Only initiations need the identity itself: others check that one exists, a plain
        // load (an `arc_swap` load per datagram cost ~100 instructions).
        if !self.has_identity.load(Relaxed) {
            return self.stats.drop(DropReason::NoKey);
        }
        let identity_guard;
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(p) => p,
            Err(_) => return self.stats.drop(DropReason::InvalidPacket),
        };
        let (id, kind) = match packet {
            Packet::HandshakeInit(_) => {
                identity_guard = self.identity.load();
                let Some(identity) = identity_guard.as_ref() else {
                    return self.stats.drop(DropReason::NoKey);
                };
                // MAC1 and load check are cheap; only then spend a Diffie-Hellman on the sender.
                match identity
                    .rate_limiter
                    .verify_packet(Some(src.ip()), datagram, buf)
                {
                    Ok(_) => {
                        self.stats.handshake_initiations.add(1);
                        // Past the limit only cookie-proven sources get here; each gets a share.
                        let n = self.window_initiations.fetch_add(1, Relaxed);
                        if n >= self.handshake_limit() / 2 && !self.sources.allow(src.ip(), now) {
                            return self.stats.drop(DropReason::UnderLoad);
                        }
                    }
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.stats.handshake_initiations.add(1);
                        self.stats.cookie_replies.add(1);
                        io.send_udp(src, cookie);
                        return self.stats.drop(DropReason::UnderLoad);
                    }
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                }
                let opened = match initiation::open_static(
                    &identity.secret,
                    &identity.responder_hash,
                    datagram,
                ) {
                    Ok(o) => o,
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                };
                match self.keys.get(&Key(opened.peer)) {
                    Some(id) => (id, Kind::Initiation(opened, identity)),
                    None => return self.stats.drop(DropReason::UnknownPeer),
                }
            }
            Packet::HandshakeResponse(ref p) => (p.receiver_idx >> 8, Kind::Response),
            Packet::PacketCookieReply(ref p) => (p.receiver_idx >> 8, Kind::Cookie),
            Packet::PacketData(ref p) => (p.receiver_idx >> 8, Kind::Data),
        };
        // One pin for the packet's lookups (nested in the driver's batch pin).
        let pin = crate::epoch::pin();
        let Some(peer) = self.peers.get_in(id, &pin) else {
            return self.stats.drop(DropReason::UnknownPeer);
        };

        let mut session = peer.session.lock();
        // Anyone can encrypt a known customer's public key to us; only its owner can encrypt
        // the timestamp, which the new state checks. State made for a forgery goes at once.
        let mut fresh = false;
        if let Kind::Initiation(opened, identity) = &kind {
            // State that has accepted an initiation checks replays itself; new state (none, or
            // made for traffic from TUN) knows nothing, so the timestamp remembered when the
            // last state was dropped does (none yet: nothing to replay against).
            let unchecked = !matches!(&session.active, Some(a) if a.last_initiation.is_some());
            if unchecked && session.last_initiation != ZERO_TIMESTAMP {
                let ss = static_shared(identity, peer, &mut session);
                match opened.timestamp(&ss) {
                    Ok(ts) if ts > session.last_initiation => {}
                    Ok(_) => return self.stats.drop(DropReason::Replay),
                    Err(_) => return self.stats.drop(DropReason::AuthFailed),
                }
            }
            fresh = session.active.is_none();
            if self.activate(identity, peer, &mut session, now).is_none() {
                return self.stats.drop(DropReason::NoKey);
            }
        }
        let Session {
            active,
            endpoint,
            limits,
            ..
        } = &mut *session;
        let Some(active) = active.as_deref_mut() else {
            return self.stats.drop(DropReason::NoSession);
        };
        let res = active.tunn.decapsulate(Some(src.ip()), datagram, buf);
        if let TunnResult::Err(e) = &res {
            let reason = drop_reason(e);
            if fresh {
                self.deactivate(&mut session);
            }
            return self.stats.drop(reason);
        }
        if matches!(kind, Kind::Initiation(..)) {
            // Read its timestamp only if the state is dropped (off the handshake path).
            active.last_initiation = datagram.try_into().ok();
        }
        // Authenticated: the endpoint follows the newest packet (roaming).
        if !matches!(kind, Kind::Cookie) {
            *endpoint = Some(src);
        }
        peer.rx_bytes.add(datagram.len() as u64);
        match res {
            TunnResult::WriteToNetwork(out) => {
                if matches!(kind, Kind::Initiation(..) | Kind::Response) {
                    peer.mark_handshake();
                    active.since = now;
                    if std::mem::take(&mut active.unanswered) {
                        self.unanswered.fetch_sub(1, Relaxed);
                    }
                    self.stats.handshakes.add(1);
                }
                let mut sent = out.len() as u64;
                io.send_udp(src, out);
                // A new session releases the packets queued while it was negotiated.
                while let TunnResult::WriteToNetwork(out) = active.tunn.decapsulate(None, &[], buf)
                {
                    sent += out.len() as u64;
                    io.send_udp(src, out);
                }
                peer.tx_bytes.add(sent);
            }
            TunnResult::WriteToTunnelV4(inner, from) => {
                if let Some(reason) = limits.as_deref_mut().and_then(|l| refuse_up(l, inner, now)) {
                    return self.stats.drop(reason);
                }
                drop(session);
                self.deliver(peer.id, IpAddr::V4(from), inner, io, &pin)
            }
            TunnResult::WriteToTunnelV6(inner, from) => {
                if let Some(reason) = limits.as_deref_mut().and_then(|l| refuse_up(l, inner, now)) {
                    return self.stats.drop(reason);
                }
                drop(session);
                self.deliver(peer.id, IpAddr::V6(from), inner, io, &pin)
            }
            _ => {}
        }
    }

    #[inline]
    fn deliver(
        &self,
        id: PeerId,
        from: IpAddr,
        inner: &[u8],
        io: &mut impl Io,
        pin: &crate::epoch::Guard,
    ) {
        if self.routes.lookup_in(from, pin) != Some(id) {
            return self.stats.drop(DropReason::SpoofedSource);
        }
        if io.write_tun(id, inner) {
            self.stats.udp_to_tun.add(1);
        } else {
            self.stats.drop(DropReason::IoError);
        }
    }
}

/// Why an upload (a packet the customer sent) breaks the rental's limits at `now`, if it does.
fn refuse_up(l: &mut Limits, packet: &[u8], now: Instant) -> Option<DropReason> {
    if l.conf.block_smtp && is_smtp(packet) {
        return Some(DropReason::SmtpBlocked);
    }
    (!l.admit(Way::Up, packet.len(), now)).then_some(DropReason::RateLimited)
}
