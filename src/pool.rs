//! Frame pool: fixed-size frame slots handed around by handle, never copied.
//!
//! # Theory of operation
//!
//! One allocation holds `count` slots of [`SLOT_BYTES`] each. A slot is laid out as the
//! 12-byte virtio-net header ([`crate::wire::vnet::VNET_HDR_LEN`]) followed by an Ethernet
//! frame of up to [`MAX_FRAME`] bytes — big enough for a 64 KiB GSO super-frame — which is
//! exactly what a TAP device with `IFF_VNET_HDR` reads and writes, so a slot can be handed to
//! `read(2)`/`write(2)` as it is.
//!
//! Ownership is carried by [`Frame`], a move-only handle created only by [`Pool::lease`]. The
//! pool gives out each free slot index once; whoever holds the `Frame` is the only one that
//! can reach the slot's bytes (the accessors borrow the handle), so the bytes need no lock.
//! Handles travel between threads through the SPSC rings ([`crate::ring`]), whose push/pop
//! pair orders the writes of the producer before the reads of the consumer.
//!
//! Limits: the slot count is fixed at construction. An empty pool makes [`Pool::lease`]
//! return `None` and the caller drops the frame and counts it ([`Pool::lease_failures`]).
//! Memory is reserved, not touched: pages of a slot are first written when a frame lands in
//! it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Bytes of the virtio-net header stored at the front of every slot.
pub const HDR_BYTES: usize = 12;
/// Largest Ethernet frame a slot holds: a 64 KiB IP packet + Ethernet header + VLAN tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Bytes per slot (header + frame, rounded up to a cache line).
pub const SLOT_BYTES: usize = (HDR_BYTES + MAX_FRAME).div_ceil(64) * 64;

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("frame pool size {0} is out of range (1..=65536 slots)")]
    BadSize(usize),
}

/// A leased slot. Move-only: exactly one owner can reach the slot's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    idx: u32,
}

impl Frame {
    /// Slot index (for diagnostics and io_uring buffer ids).
    pub fn index(&self) -> u32 {
        self.idx
    }
}

struct Slab(Box<[UnsafeCell<u8>]>);

// SAFETY: the bytes of a slot are only reached through a `Frame` (or `&mut Frame`), and a
// slot index is owned by at most one `Frame` at a time (the free list hands each index out
// once), so two threads never access the same slot's bytes concurrently.
unsafe impl Sync for Slab {}

/// The pool. Share it with `Arc`.
pub struct Pool {
    slab: Slab,
    /// Frame length (bytes after the header) of each slot.
    lens: Box<[AtomicU32]>,
    free: ArrayQueue<u32>,
    count: usize,
    lease_failures: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("count", &self.count)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Pool {
    /// A pool of `count` slots.
    pub fn new(count: usize) -> Result<Pool, PoolError> {
        if count == 0 || count > 65536 {
            return Err(PoolError::BadSize(count));
        }
        // `vec![0; n]` of a zeroable type comes from calloc: pages are mapped on first touch.
        let bytes: Vec<u8> = vec![0u8; count * SLOT_BYTES];
        // SAFETY: `UnsafeCell<u8>` has the same layout as `u8` (repr(transparent)), so the
        // allocation can be reinterpreted without copying; length and capacity are unchanged.
        let slab: Box<[UnsafeCell<u8>]> = unsafe {
            let mut bytes = std::mem::ManuallyDrop::new(bytes.into_boxed_slice());
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                bytes.as_mut_ptr().cast::<UnsafeCell<u8>>(),
                bytes.len(),
            ))
        };
        let free = ArrayQueue::new(count);
        for i in 0..count {
            // Invariant: the queue has capacity `count`, so `count` pushes fit.
            free.push(i as u32).expect("free list sized to count");
        }
        Ok(Pool {
            slab: Slab(slab),
            lens: (0..count).map(|_| AtomicU32::new(0)).collect(),
            free,
            count,
            lease_failures: AtomicU64::new(0),
        })
    }

    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Times `lease` found the pool empty.
    pub fn lease_failures(&self) -> u64 {
        self.lease_failures.load(Ordering::Relaxed)
    }

    /// Take a free slot, with its frame length set to 0 and its header zeroed.
    pub fn lease(&self) -> Option<Frame> {
        match self.free.pop() {
            Some(idx) => {
                let mut f = Frame { idx };
                self.set_len(&mut f, 0);
                self.hdr_mut(&mut f).fill(0);
                Some(f)
            }
            None => {
                self.lease_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Return a slot to the pool.
    pub fn release(&self, frame: Frame) {
        // Invariant: at most `count` distinct frames exist, so the free list never overflows.
        self.free
            .push(frame.idx)
            .expect("a frame returned twice or to the wrong pool");
    }

    fn slot_ptr(&self, frame: &Frame) -> *mut u8 {
        let start = frame.idx as usize * SLOT_BYTES;
        // `UnsafeCell::raw_get` gives a mutable pointer without creating a reference.
        UnsafeCell::raw_get(self.slab.0[start..start + SLOT_BYTES].as_ptr())
    }

    /// The whole slot: header then frame capacity.
    pub fn slot_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        assert!((frame.idx as usize) < self.count, "frame from another pool");
        // SAFETY:
        // - the range lies inside the slab (index < count, checked above);
        // - `&mut Frame` proves exclusive ownership of this slot (each index is owned by one
        //   `Frame`), so no other reference to these bytes exists for 'a.
        unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(frame), SLOT_BYTES) }
    }

    /// The whole slot, read-only.
    pub fn slot<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        assert!((frame.idx as usize) < self.count, "frame from another pool");
        // SAFETY: as in `slot_mut`; a shared borrow of the unique handle excludes writers.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(frame), SLOT_BYTES) }
    }

    /// The virtio-net header bytes.
    pub fn hdr_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        &mut self.slot_mut(frame)[..HDR_BYTES]
    }

    /// The virtio-net header bytes, read-only.
    pub fn hdr<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        &self.slot(frame)[..HDR_BYTES]
    }

    /// Frame length in bytes (after the header).
    pub fn len(&self, frame: &Frame) -> usize {
        self.lens[frame.idx as usize].load(Ordering::Relaxed) as usize
    }

    /// Set the frame length; clamped to [`MAX_FRAME`].
    pub fn set_len(&self, frame: &mut Frame, len: usize) {
        self.lens[frame.idx as usize].store(len.min(MAX_FRAME) as u32, Ordering::Relaxed);
    }

    /// The frame bytes (length as set).
    pub fn frame<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        let len = self.len(frame);
        &self.slot(frame)[HDR_BYTES..HDR_BYTES + len]
    }

    /// The frame bytes (length as set), writable.
    pub fn frame_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let len = self.len(frame);
        &mut self.slot_mut(frame)[HDR_BYTES..HDR_BYTES + len]
    }

    /// The full frame capacity after the header, writable (to fill before `set_len`).
    pub fn frame_capacity_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        &mut self.slot_mut(frame)[HDR_BYTES..]
    }

    /// Header and frame, both writable.
    pub fn split_mut<'a>(&'a self, frame: &'a mut Frame) -> (&'a mut [u8], &'a mut [u8]) {
        let len = self.len(frame);
        let (hdr, rest) = self.slot_mut(frame).split_at_mut(HDR_BYTES);
        (hdr, &mut rest[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_until_empty_then_release() {
        let pool = Pool::new(4).unwrap();
        let frames: Vec<Frame> = (0..4).map(|_| pool.lease().unwrap()).collect();
        assert!(pool.lease().is_none());
        assert_eq!(pool.lease_failures(), 1);
        assert_eq!(pool.available(), 0);
        for f in frames {
            pool.release(f);
        }
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Pool::new(0).is_err());
        assert!(Pool::new(65537).is_err());
    }

    #[test]
    fn slot_holds_a_gso_frame_and_header() {
        const _: () = assert!(SLOT_BYTES >= HDR_BYTES + 65535 + 14);
        let pool = Pool::new(2).unwrap();
        let mut f = pool.lease().unwrap();
        pool.frame_capacity_mut(&mut f)[..65549].fill(0x5a);
        pool.set_len(&mut f, 65549);
        pool.hdr_mut(&mut f)[0] = 1;
        assert_eq!(pool.frame(&f).len(), 65549);
        assert!(pool.frame(&f).iter().all(|&b| b == 0x5a));
        assert_eq!(pool.hdr(&f)[0], 1);
        pool.set_len(&mut f, usize::MAX);
        assert_eq!(pool.len(&f), MAX_FRAME);
        pool.release(f);
        // A fresh lease starts with a zero header and length.
        let f = pool.lease().unwrap();
        let g = pool.lease().unwrap();
        assert_eq!(pool.len(&f), 0);
        assert!(pool.hdr(&f).iter().all(|&b| b == 0));
        assert_ne!(f.index(), g.index());
        pool.release(f);
        pool.release(g);
    }
}
