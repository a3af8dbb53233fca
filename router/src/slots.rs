//! Peer id → peer, without locks: segments of atomic slots, allocated as ids grow.
//!
//! Admitting or removing a peer swaps one slot; nothing is copied, whatever the peer count.

use crate::peer::Peer;
use crate::routes::PeerId;
use arc_swap::{ArcSwapOption, Guard};
use std::sync::{Arc, OnceLock};

const SEG_BITS: u32 = 12;
const SEG: usize = 1 << SEG_BITS;
/// Ids are 24 bits (boringtun puts them in the top of its session indexes).
const SEGMENTS: usize = (1 << 24) / SEG;

type Segment = Box<[ArcSwapOption<Peer>]>;

pub struct PeerSlots {
    segments: Box<[OnceLock<Segment>]>,
}

impl Default for PeerSlots {
    fn default() -> Self {
        PeerSlots {
            segments: (0..SEGMENTS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl PeerSlots {
    /// The peer with this id, if any. The guard keeps it alive without touching its
    /// reference count.
    #[inline]
    pub fn get(&self, id: PeerId) -> Option<Guard<Option<Arc<Peer>>>> {
        let seg = self.segments.get(id as usize >> SEG_BITS)?.get()?;
        let guard = seg[id as usize & (SEG - 1)].load();
        guard.is_some().then_some(guard)
    }

    /// Puts `peer` in slot `id` (or empties it). Ids beyond 24 bits are refused by the caller.
    pub fn set(&self, id: PeerId, peer: Option<Arc<Peer>>) {
        let seg = self.segments[id as usize >> SEG_BITS]
            .get_or_init(|| (0..SEG).map(|_| ArcSwapOption::empty()).collect());
        seg[id as usize & (SEG - 1)].store(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn slots_across_segments() {
        let s = PeerSlots::default();
        assert!(s.get(0).is_none());
        assert!(s.get(u32::MAX).is_none());
        for id in [0u32, 4095, 4096, (1 << 24) - 1] {
            s.set(id, Some(Arc::new(Peer::new(id, Key([id as u8; 32])))));
            assert_eq!(s.get(id).unwrap().as_ref().unwrap().id, id);
        }
        s.set(4096, None);
        assert!(s.get(4096).is_none());
        assert!(s.get(4095).is_some());
    }
}
