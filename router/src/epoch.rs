//! The epoch the packet path's lock-free tables are read under (crossbeam-epoch).
//!
//! Routes, keys and peer slots are replaced by writers and freed only after every reader pinned
//! at that moment has unpinned. Each lookup pins on its own; an I/O driver holds one [`pin`]
//! across a batch, so the lookups inside it nest (a thread-local counter) instead of each
//! paying the pin's fence. A batch must not block while pinned: freeing waits for it.

pub use crossbeam_epoch::Guard;

/// Pins this thread for one batch of packets.
#[inline]
pub fn pin() -> Guard {
    crossbeam_epoch::pin()
}
