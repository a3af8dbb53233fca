//! Peer id → peer, without locks: segments of atomic slots, allocated as ids grow.
//!
//! Admitting or removing a peer swaps one slot; nothing is copied, whatever the peer count. A
//! slot holds an `Arc<Peer>` as a raw pointer; a reader borrows it under an epoch pin (a plain
//! load when the I/O driver pinned the batch, see [`crate::epoch`]), and a replaced peer's
//! reference is dropped once no pinned reader can hold it.

use crate::peer::Peer;
use crate::routes::PeerId;
use crossbeam_epoch::{self as epoch, Guard};
use std::ops::Deref;
use std::ptr;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, OnceLock};

const SEG_BITS: u32 = 12;
const SEG: usize = 1 << SEG_BITS;
/// Ids are 24 bits (boringtun puts them in the top of its session indexes).
const SEGMENTS: usize = (1 << 24) / SEG;

/// Null, or a pointer from `Arc::into_raw` that owns one reference.
type Segment = Box<[AtomicPtr<Peer>]>;

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

impl Drop for PeerSlots {
    fn drop(&mut self) {
        for seg in self.segments.iter().filter_map(OnceLock::get) {
            for slot in seg.iter() {
                let p = slot.load(Acquire);
                if !p.is_null() {
                    // SAFETY: `&mut self`: no reader is left; the slot owns this reference.
                    drop(unsafe { Arc::from_raw(p) });
                }
            }
        }
    }
}

/// A peer borrowed from its slot: valid while this lives (it holds an epoch pin).
pub struct PeerRef {
    peer: *const Peer,
    _pin: Guard,
}

impl Deref for PeerRef {
    type Target = Peer;
    #[inline]
    fn deref(&self) -> &Peer {
        // SAFETY: non-null, loaded under `_pin`; the reference the slot owned is dropped only
        // after every guard pinned before its removal is gone.
        unsafe { &*self.peer }
    }
}

/// A replaced slot's reference, handed to the epoch collector.
struct Retired(*const Peer);
// SAFETY: it stands for an `Arc<Peer>`, which is Send (Peer is Send + Sync).
unsafe impl Send for Retired {}

impl PeerSlots {
    /// The peer with this id, if any. The reference keeps it alive without touching its
    /// reference count.
    #[inline]
    pub fn get(&self, id: PeerId) -> Option<PeerRef> {
        let seg = self.segments.get(id as usize >> SEG_BITS)?.get()?;
        let pin = epoch::pin();
        let peer = seg[id as usize & (SEG - 1)].load(Acquire);
        (!peer.is_null()).then_some(PeerRef { peer, _pin: pin })
    }

    /// [`PeerSlots::get`] under the caller's pin: the peer lives as long as the pin.
    #[inline]
    pub fn get_in<'g>(&self, id: PeerId, _pin: &'g Guard) -> Option<&'g Peer> {
        let seg = self.segments.get(id as usize >> SEG_BITS)?.get()?;
        let peer = seg[id as usize & (SEG - 1)].load(Acquire);
        // SAFETY: loaded under `_pin`, as in `PeerRef::deref`.
        (!peer.is_null()).then(|| unsafe { &*peer })
    }

    /// Puts `peer` in slot `id` (or empties it). Ids beyond 24 bits are refused by the caller.
    pub fn set(&self, id: PeerId, peer: Option<Arc<Peer>>) {
        let seg = self.segments[id as usize >> SEG_BITS]
            .get_or_init(|| (0..SEG).map(|_| AtomicPtr::new(ptr::null_mut())).collect());
        let new = peer.map_or(ptr::null_mut(), |p| Arc::into_raw(p).cast_mut());
        let old = seg[id as usize & (SEG - 1)].swap(new, AcqRel);
        if !old.is_null() {
            let old = Retired(old);
            let guard = epoch::pin();
            // SAFETY: no new reader can load `old`; readers pinned before the swap are waited
            // for. The slot owned this reference, now the collector does.
            guard.defer(move || {
                let old = old;
                drop(unsafe { Arc::from_raw(old.0) })
            });
        }
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
            assert_eq!(s.get(id).unwrap().id, id);
        }
        s.set(4096, None);
        assert!(s.get(4096).is_none());
        assert!(s.get(4095).is_some());
    }
}
