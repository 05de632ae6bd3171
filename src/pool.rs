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
//! Ownership is carried by [`Frame`], a move-only handle created only by [`Pool::lease`]:
//! it names its slot *and its pool*, so it cannot be forged (its fields are private to this
//! module) and cannot reach another pool's slot (every accessor goes through the frame's own
//! pool). Dropping a `Frame` returns its slot to the free list, so no early exit can leak a
//! slot. The pool gives out each free slot index once; whoever holds the `Frame` is the only
//! one that can reach the slot's bytes (the accessors borrow the handle), so the bytes need
//! no lock. Handles travel between threads through the SPSC rings ([`crate::ring`]), whose
//! push/pop pair orders the writes of the producer before the reads of the consumer.
//!
//! Lifetime: the slots live in a heap allocation that does not move while the [`Pool`]
//! lives. A frame holds a plain pointer to it, not a reference count (two uncontended
//! atomics per frame on the hot path, and a cache line bouncing between the VMM thread and
//! the poll thread). Instead, a pool dropped while frames are still out *leaks* its
//! allocation (logged), so an outstanding frame never points at freed memory. Owners
//! ([`crate::network`]'s link) drop their rings before the pool, so a normal shutdown frees
//! everything.
//!
//! Limits: the slot count is fixed at construction. An empty pool makes [`Pool::lease`]
//! return `None` and the caller drops the frame and counts it ([`Pool::lease_failures`]).
//! Memory is reserved, not touched: pages of a slot are first written when a frame lands in
//! it.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
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

/// The slots and their bookkeeping; lives at a fixed address for the pool's lifetime (or
/// forever, when leaked).
struct Slots {
    /// Owns the allocation `base` points into (freed with it).
    _bytes: Box<[UnsafeCell<u8>]>,
    /// Start of `bytes`, for slot addressing without a bounds check per access (every
    /// index a `Frame` holds is below `count`: it came from the free list).
    base: *mut u8,
    /// Frame length (bytes after the header) of each slot.
    lens: Box<[AtomicU32]>,
    free: ArrayQueue<u32>,
    count: usize,
    lease_failures: AtomicU64,
}

// SAFETY: the bytes of a slot are only reached through the `Frame` that owns its index, and
// an index is owned by at most one `Frame` at a time (the free list hands each index out
// once, and only `Frame::drop` puts it back), so two threads never access the same slot's
// bytes concurrently; everything else is atomics.
unsafe impl Sync for Slots {}

/// A leased slot. Move-only: exactly one owner can reach the slot's bytes; dropping it
/// returns the slot to its pool.
pub struct Frame {
    slots: NonNull<Slots>,
    idx: u32,
}

// SAFETY: a `Frame` is the unique owner of its slot; `Slots` is `Sync` and outlives every
// frame (see the module docs), so the handle may move to another thread.
unsafe impl Send for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("idx", &self.idx)
            .field("len", &self.len())
            .finish()
    }
}

impl Frame {
    #[inline]
    fn slots(&self) -> &Slots {
        // SAFETY: the pool's allocation lives (or is leaked) as long as any frame exists.
        unsafe { self.slots.as_ref() }
    }

    /// Slot index (for diagnostics and io_uring buffer ids).
    #[inline]
    pub fn index(&self) -> u32 {
        self.idx
    }

    #[inline]
    fn slot_ptr(&self) -> *mut u8 {
        // SAFETY: `idx < count` (it came from this pool's free list), so the slot lies inside
        // the allocation `base` points to.
        unsafe { self.slots().base.add(self.idx as usize * SLOT_BYTES) }
    }

    /// The whole slot: header then frame capacity.
    #[inline]
    pub fn slot_mut(&mut self) -> &mut [u8] {
        // SAFETY:
        // - the range lies inside the allocation (the index came from this pool's free list);
        // - `&mut self` proves exclusive ownership of this slot (each index is owned by one
        //   `Frame`), so no other reference to these bytes exists while it is borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(), SLOT_BYTES) }
    }

    /// The whole slot, read-only.
    #[inline]
    pub fn slot(&self) -> &[u8] {
        // SAFETY: as in `slot_mut`; a shared borrow of the unique handle excludes writers.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(), SLOT_BYTES) }
    }

    /// The virtio-net header bytes.
    #[inline]
    pub fn hdr_mut(&mut self) -> &mut [u8] {
        &mut self.slot_mut()[..HDR_BYTES]
    }

    /// The virtio-net header bytes, read-only.
    #[inline]
    pub fn hdr(&self) -> &[u8] {
        &self.slot()[..HDR_BYTES]
    }

    /// Frame length in bytes (after the header).
    #[inline]
    pub fn len(&self) -> usize {
        self.slots().lens[self.idx as usize].load(Ordering::Relaxed) as usize
    }

    /// True for a frame of length 0.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set the frame length; clamped to [`MAX_FRAME`].
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        // MAX_FRAME fits in u32.
        #[allow(clippy::cast_possible_truncation)]
        let len = len.min(MAX_FRAME) as u32;
        self.slots().lens[self.idx as usize].store(len, Ordering::Relaxed);
    }

    /// The frame bytes (length as set).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        let len = self.len();
        &self.slot()[HDR_BYTES..HDR_BYTES + len]
    }

    /// The frame bytes (length as set), writable.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.slot_mut()[HDR_BYTES..HDR_BYTES + len]
    }

    /// The full frame capacity after the header, writable (to fill before `set_len`).
    #[inline]
    pub fn capacity_mut(&mut self) -> &mut [u8] {
        &mut self.slot_mut()[HDR_BYTES..]
    }

    /// Header and frame, both writable.
    #[inline]
    pub fn split_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let len = self.len();
        let (hdr, rest) = self.slot_mut().split_at_mut(HDR_BYTES);
        (hdr, &mut rest[..len])
    }
}

impl Drop for Frame {
    #[inline]
    fn drop(&mut self) {
        // Invariant: at most `count` distinct frames exist (each index is handed out once),
        // so the free list, sized `count`, always has room for this one.
        if self.slots().free.push(self.idx).is_err() {
            unreachable!(
                "frame pool free list overflow: slot {} returned twice",
                self.idx
            );
        }
    }
}

/// The pool. Share it with `Arc` (or inside a struct that is).
pub struct Pool {
    slots: NonNull<Slots>,
}

// SAFETY: `Pool` only hands out access to `Slots`, which is `Sync`; the pointer is owned
// (freed in `Drop` unless leaked).
unsafe impl Send for Pool {}
// SAFETY: as above; every method takes `&self` and goes through atomics or a `Frame`.
unsafe impl Sync for Pool {}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("count", &self.capacity())
            .field("free", &self.available())
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
        let bytes: Box<[UnsafeCell<u8>]> = unsafe {
            let mut bytes = std::mem::ManuallyDrop::new(bytes.into_boxed_slice());
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                bytes.as_mut_ptr().cast::<UnsafeCell<u8>>(),
                bytes.len(),
            ))
        };
        let free = ArrayQueue::new(count);
        for i in 0..count {
            // Invariant: the queue has capacity `count`, so `count` pushes fit; count ≤ 65536.
            #[allow(clippy::cast_possible_truncation)]
            free.push(i as u32).expect("free list sized to count");
        }
        // `UnsafeCell::raw_get` gives a mutable pointer without creating a reference.
        let base = UnsafeCell::raw_get(bytes.as_ptr());
        let slots = Box::new(Slots {
            _bytes: bytes,
            base,
            lens: (0..count).map(|_| AtomicU32::new(0)).collect(),
            free,
            count,
            lease_failures: AtomicU64::new(0),
        });
        Ok(Pool {
            slots: NonNull::from(Box::leak(slots)),
        })
    }

    #[inline]
    fn slots(&self) -> &Slots {
        // SAFETY: allocated in `new`, freed only in `drop`.
        unsafe { self.slots.as_ref() }
    }

    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.slots().count
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots().free.len()
    }

    /// Times `lease` found the pool empty.
    pub fn lease_failures(&self) -> u64 {
        self.slots().lease_failures.load(Ordering::Relaxed)
    }

    /// Take a free slot, with its frame length set to 0 and its header zeroed.
    #[inline]
    pub fn lease(&self) -> Option<Frame> {
        match self.slots().free.pop() {
            Some(idx) => {
                let mut f = Frame {
                    slots: self.slots,
                    idx,
                };
                f.set_len(0);
                f.hdr_mut().fill(0);
                Some(f)
            }
            None => {
                self.slots().lease_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let out = self.capacity() - self.available();
        if out > 0 {
            // Frames still point into the slots: leak them rather than free memory in use.
            tracing::warn!(
                out,
                "frame pool dropped with frames outstanding; leaking it"
            );
            return;
        }
        // SAFETY: allocated by `Box::leak` in `new`; no frame refers to it any more (all
        // slots are free), and the pool is being dropped, so nothing else can.
        drop(unsafe { Box::from_raw(self.slots.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_until_empty_then_drop_returns_them() {
        let pool = Pool::new(4).unwrap();
        let frames: Vec<Frame> = (0..4).map(|_| pool.lease().unwrap()).collect();
        assert!(pool.lease().is_none());
        assert_eq!(pool.lease_failures(), 1);
        assert_eq!(pool.available(), 0);
        drop(frames);
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
        f.capacity_mut()[..65549].fill(0x5a);
        f.set_len(65549);
        f.hdr_mut()[0] = 1;
        assert_eq!(f.bytes().len(), 65549);
        assert!(f.bytes().iter().all(|&b| b == 0x5a));
        assert_eq!(f.hdr()[0], 1);
        f.set_len(usize::MAX);
        assert_eq!(f.len(), MAX_FRAME);
        drop(f);
        // A fresh lease starts with a zero header and length.
        let f = pool.lease().unwrap();
        let g = pool.lease().unwrap();
        assert_eq!(f.len(), 0);
        assert!(f.hdr().iter().all(|&b| b == 0));
        assert_ne!(f.index(), g.index());
    }

    #[test]
    fn frames_of_two_pools_stay_in_their_own() {
        let a = Pool::new(1).unwrap();
        let b = Pool::new(1).unwrap();
        let fa = a.lease().unwrap();
        let fb = b.lease().unwrap();
        assert_eq!(fa.index(), fb.index());
        drop(fb);
        assert_eq!((a.available(), b.available()), (0, 1));
        drop(fa);
        assert_eq!((a.available(), b.available()), (1, 1));
    }

    #[test]
    fn a_pool_dropped_with_frames_out_leaks_instead_of_freeing() {
        let pool = Pool::new(2).unwrap();
        let mut f = pool.lease().unwrap();
        drop(pool);
        // The frame's memory is still valid (leaked), and dropping it is harmless.
        f.capacity_mut()[0] = 7;
        f.set_len(1);
        assert_eq!(f.bytes(), &[7]);
    }
}
