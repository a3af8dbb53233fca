//! A provided-buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a free buffer for each
//! packet a multishot read or receive completes, so one request serves every packet of a socket
//! or TUN queue. A request per buffer would put one poll entry per buffer on the file's wait
//! queue, and every arriving packet would wake all of them.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::alloc::{alloc_zeroed, Layout};
use std::sync::atomic::{AtomicU16, Ordering::Release};

pub struct BufRing {
    entries: *mut BufRingEntry,
    count: u16,
    tail: u16,
    bufs: Vec<u8>,
    size: usize,
    pub group: u16,
}

// SAFETY: the ring memory is owned by this struct and used by one thread.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as group `group` of `ring`.
    pub fn new(ring: &IoUring, group: u16, count: u16, size: usize) -> std::io::Result<Self> {
        assert!(count.is_power_of_two());
        let layout = Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .map_err(std::io::Error::other)?;
        // SAFETY: a non-zero, page-aligned layout; zeroed memory is a valid (empty) ring. The
        // memory is never freed: the ring lives as long as the worker, which is the process.
        let entries = unsafe { alloc_zeroed(layout) } as *mut BufRingEntry;
        if entries.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        // SAFETY: the ring memory is valid for `count` entries and stays valid (never freed).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, group, 0)?
        };
        let mut r = BufRing {
            entries,
            count,
            tail: 0,
            bufs: vec![0; count as usize * size],
            size,
            group,
        };
        for bid in 0..count {
            r.give_back(bid);
        }
        Ok(r)
    }

    /// The first `len` bytes of buffer `bid`, which the kernel just filled.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = (bid as usize % self.count as usize) * self.size;
        &self.bufs[start..start + len.min(self.size)]
    }

    /// Returns buffer `bid` to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        let bid = bid % self.count;
        let addr = self.bufs[bid as usize * self.size..].as_mut_ptr() as u64;
        // SAFETY: the slot index is masked into the ring; the tail is published with Release
        // after the entry is written, as the kernel's reader expects.
        unsafe {
            let e = &mut *self.entries.add((self.tail & (self.count - 1)) as usize);
            e.set_addr(addr);
            e.set_len(self.size as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Release);
        }
    }
}
