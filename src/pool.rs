//! Frame pool: fixed-size frame slots handed around by handle, never copied.
//!
//! # Theory of operation
//!
//! One allocation holds `count` slots of [`SLOT_BYTES`] each, [`STRIDE`] bytes apart (a
//! slot starts on a 4 KiB boundary, so a slot's pages are its own). A slot is laid out as the
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
//! it. The free list hands out the slot freed last first (a LIFO of "hot" slots, with the
//! never-touched or trimmed "cold" ones behind it: `FreeList`), so a busy link touches
//! only as many slots as it has frames in flight, not the whole pool.
//!
//! # Trimming (giving free slots' pages back)
//!
//! Touched pages stay resident after their frame is gone, so a link that once carried a
//! bulk transfer holds the whole pool (64 MiB at [`crate::link::POOL_SLOTS`]) forever.
//! [`Pool::trim`], called by the poll thread once its link has been idle for a while,
//! hands the free slots' pages back to the kernel ([`crate::mem::discard`]:
//! `MADV_DONTNEED`; the next write of such a page faults in a zero page).
//!
//! Invariant that makes it safe: **only a slot index the trimmer itself popped from the free
//! list is discarded, and only pages lying wholly inside a run of such slots.** A popped
//! index is owned exactly like a leased one — the free list hands each index out once, so
//! while the trimmer holds it no `Frame` for it exists and no other thread can lease it —
//! and a slot in use (a `Frame` alive on any thread, a frame on a ring) is never on the free
//! list, so its bytes are never touched. With 4 KiB pages every slot is [`STRIDE`] / 4096
//! whole pages of its own; with larger pages (16 or 64 KiB on some arm64 kernels) a page may
//! span two slots, and it is discarded only when both are in the same popped run (ranges
//! are rounded inwards), so the neighbour of a slot in use keeps the page they share.
//!
//! Race analysis (the VMM thread, the vhost-user worker or a TAP read may lease and drop
//! frames while the poll thread trims):
//! - ordering: a frame dropped on another thread pushes its index with release semantics and
//!   the trimmer's pop acquires it, so the previous owner's writes are complete before the
//!   pages are discarded; the trimmer's push releases the discarded state to the next
//!   lessee's acquiring pop. A lessee never relies on old slot contents ([`Pool::lease`]
//!   zeroes the header and length; the frame bytes are written before they are read).
//! - concurrent lease: the trimmer takes at most [`TRIM_BATCH`] indices off the hot stack
//!   at a time and pushes them onto the cold queue after one batch of `madvise` calls, where
//!   `lease` finds them, so a concurrent `lease` fails (a counted drop, as for any empty pool) only if more than `count - TRIM_BATCH`
//!   frames are in flight at that instant — which a link idle long enough to be trimmed does
//!   not have. The free list never overflows: the indices out with the trimmer are exactly
//!   like leased ones, so at most `count` indices are ever queued.
//! - concurrent drop: a frame returned meanwhile lands on the hot stack and is simply
//!   visited (or not) by this trim; a slot may be discarded twice or missed, neither of
//!   which matters.
//! - termination: a trim visits at most as many indices as were free when it began (and
//!   stops earlier when the hot stack runs dry).

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

/// Bytes of the virtio-net header stored at the front of every slot.
pub const HDR_BYTES: usize = 12;
/// Largest Ethernet frame a slot holds: a 64 KiB IP packet + Ethernet header + VLAN tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Bytes per slot (header + frame, rounded up to a cache line).
pub const SLOT_BYTES: usize = (HDR_BYTES + MAX_FRAME).div_ceil(64) * 64;
/// Distance between slot starts: [`SLOT_BYTES`] rounded up to 4 KiB, so that with 4 KiB
/// pages no page holds bytes of two slots and a free slot's pages can be given back
/// whatever its neighbours do ([`Pool::trim`]). The bytes between a slot's end and the next
/// slot are never touched (address space, not memory).
pub const STRIDE: usize = SLOT_BYTES.next_multiple_of(SLOT_ALIGN);
/// Alignment of the first slot (and, through [`STRIDE`], of every slot).
const SLOT_ALIGN: usize = 4096;

/// Free slots the trimmer takes off the free list at a time ([`Pool::trim`]): the most a
/// concurrent `lease` can find missing, and 4 MiB of slots per `madvise` batch.
pub const TRIM_BATCH: usize = 64;

/// The free slot indices, in two lists:
/// - **hot**: slots whose pages may be resident (freed since the last trim), a lock-free
///   LIFO stack, so a busy link keeps reusing the few slots it has in flight and touches
///   no others; every `Frame::drop` pushes here;
/// - **cold**: slots untouched since the pool was made or since the trim that discarded
///   them, a FIFO ([`ArrayQueue`]); `lease` takes from here only when the hot stack is
///   empty (more frames in flight than ever since the last trim).
///
/// A FIFO alone would cycle every slot of the pool through a bulk transfer and keep all of
/// them resident; the stack alone cannot be trimmed without holding all of it (it gives
/// back what was pushed last). [`Pool::trim`] pops the hot stack, discards the pages, and
/// pushes the indices onto the cold queue, where a concurrent `lease` finds them.
///
/// The stack (Treiber's) is linked through `next`, one entry per slot. `head` packs the top
/// index (low 32 bits; [`NIL`] when empty) with a tag (high 32 bits) that every successful
/// change bumps, so a pop that read `next[top]` of a top that was popped and pushed back
/// meanwhile fails its compare-and-swap instead of linking a stale successor (the ABA
/// problem): that would need exactly 2^32 changes between one thread's load and its CAS.
/// `next[i]` is written only by the thread pushing `i` (which owns it), before the release
/// CAS that publishes it; a pop reads it after an acquire load of `head`, and a stale read
/// (the index was popped meanwhile) is harmless: the CAS fails.
struct FreeList {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
    /// Indices on either list: one counter, so a drop's double-free check is one atomic.
    free: AtomicUsize,
    cold: ArrayQueue<u32>,
    count: usize,
}

/// The empty-stack index.
const NIL: u32 = u32::MAX;

impl FreeList {
    /// All of `0..count` free and cold. `count` ≤ 65536 (`Pool::new` checks).
    fn new(count: usize) -> FreeList {
        let cold = ArrayQueue::new(count);
        for i in 0..count {
            // Invariant: the queue has capacity `count`, so `count` pushes fit; count ≤ 65536.
            #[allow(clippy::cast_possible_truncation)]
            cold.push(i as u32).expect("free list sized to count");
        }
        FreeList {
            head: AtomicU64::new(u64::from(NIL)),
            next: (0..count).map(|_| AtomicU32::new(NIL)).collect(),
            free: AtomicUsize::new(count),
            cold,
            count,
        }
    }

    /// A free index: the hot stack's top, else the cold queue's head.
    #[inline]
    fn pop(&self) -> Option<u32> {
        self.pop_hot().or_else(|| {
            let idx = self.cold.pop()?;
            self.free.fetch_sub(1, Ordering::Relaxed);
            Some(idx)
        })
    }

    #[inline]
    fn pop_hot(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            // Invariant: the low half of `head` is an index or NIL (packed below).
            #[allow(clippy::cast_possible_truncation)]
            let top = head as u32;
            if top == NIL {
                return None;
            }
            let below = self.next[top as usize].load(Ordering::Relaxed);
            let new = (head & !0xffff_ffff).wrapping_add(1 << 32) | u64::from(below);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    self.free.fetch_sub(1, Ordering::Relaxed);
                    return Some(top);
                }
                Err(now) => head = now,
            }
        }
    }

    /// Put `idx` (owned by the caller) on the hot stack; `Err` if the lists already hold
    /// every index (an index returned twice: a bug).
    #[inline]
    fn push(&self, idx: u32) -> Result<(), u32> {
        if self.free.fetch_add(1, Ordering::Relaxed) >= self.count {
            self.free.fetch_sub(1, Ordering::Relaxed);
            return Err(idx);
        }
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            #[allow(clippy::cast_possible_truncation)]
            self.next[idx as usize].store(head as u32, Ordering::Relaxed);
            let new = (head & !0xffff_ffff).wrapping_add(1 << 32) | u64::from(idx);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => head = now,
            }
        }
    }

    /// Put `idx` (owned by the caller, its pages discarded) on the cold queue.
    fn push_cold(&self, idx: u32) -> Result<(), u32> {
        self.cold.push(idx)?;
        self.free.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn len(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }
}

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("frame pool size {0} is out of range (1..=65536 slots)")]
    BadSize(usize),
}

/// The slots and their bookkeeping; lives at a fixed address for the pool's lifetime (or
/// forever, when leaked).
struct Slots {
    /// Owns the allocation `base` points into (freed with it): `count` × [`STRIDE`] bytes
    /// plus room to align `base`.
    _bytes: Box<[UnsafeCell<u8>]>,
    /// Start of `bytes`, for slot addressing without a bounds check per access (every
    /// index a `Frame` holds is below `count`: it came from the free list).
    base: *mut u8,
    /// Frame length (bytes after the header) of each slot.
    lens: Box<[AtomicU32]>,
    free: FreeList,
    count: usize,
    lease_failures: AtomicU64,
    /// The memory page size ([`crate::mem::page_size`]), for [`Pool::trim`].
    page: usize,
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
        unsafe { self.slots().base.add(self.idx as usize * STRIDE) }
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
        // Reserve one alignment unit more: the first slot starts at the first 4 KiB boundary.
        let bytes: Vec<u8> = vec![0u8; count * STRIDE + SLOT_ALIGN];
        // SAFETY: `UnsafeCell<u8>` has the same layout as `u8` (repr(transparent)), so the
        // allocation can be reinterpreted without copying; length and capacity are unchanged.
        let bytes: Box<[UnsafeCell<u8>]> = unsafe {
            let mut bytes = std::mem::ManuallyDrop::new(bytes.into_boxed_slice());
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                bytes.as_mut_ptr().cast::<UnsafeCell<u8>>(),
                bytes.len(),
            ))
        };
        let free = FreeList::new(count);
        // `UnsafeCell::raw_get` gives a mutable pointer without creating a reference.
        let start = UnsafeCell::raw_get(bytes.as_ptr());
        // SAFETY: the offset is below SLOT_ALIGN, and the allocation has SLOT_ALIGN bytes
        // beyond the `count * STRIDE` the slots use, so `base` and every slot stay inside it.
        let base = unsafe { start.add(start.align_offset(SLOT_ALIGN)) };
        let slots = Box::new(Slots {
            _bytes: bytes,
            base,
            lens: (0..count).map(|_| AtomicU32::new(0)).collect(),
            free,
            count,
            lease_failures: AtomicU64::new(0),
            page: crate::mem::page_size(),
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

    /// Give the pages of the slots free now back to the kernel (see "Trimming" in the
    /// module docs for why this is safe while other threads lease and return frames).
    /// Returns how many bytes of them were resident. Slots in use are not touched; a free
    /// slot's contents read as zero afterwards.
    ///
    /// A few `madvise(2)` calls per [`TRIM_BATCH`] slots: meant for an idle link, not the
    /// data path.
    pub fn trim(&self) -> usize {
        let s = self.slots();
        let mut batch = [0u32; TRIM_BATCH];
        let mut left = s.free.len();
        let mut released = 0;
        while left > 0 {
            let want = left.min(TRIM_BATCH);
            let mut n = 0;
            while n < want {
                let Some(idx) = s.free.pop_hot() else { break };
                batch[n] = idx;
                n += 1;
            }
            left -= want;
            let held = &mut batch[..n];
            held.sort_unstable();
            let mut i = 0;
            while i < held.len() {
                // A run of consecutive slot indices: one contiguous byte range.
                let mut j = i + 1;
                while j < held.len() && held[j] == held[j - 1] + 1 {
                    j += 1;
                }
                released += self.discard_run(held[i] as usize, held[j - 1] as usize + 1);
                i = j;
            }
            for &idx in held.iter() {
                // Invariant: the trimmer held these indices like frames do, so the free
                // list (bounded by `count`) has room for them.
                if s.free.push_cold(idx).is_err() {
                    unreachable!("frame pool free list overflow returning trimmed slot {idx}");
                }
            }
            if n < want {
                break; // the hot list ran dry: everything else is in use or cold already
            }
        }
        released
    }

    /// Discard the whole pages inside slots `first..end` (all held by the trimmer).
    fn discard_run(&self, first: usize, end: usize) -> usize {
        let s = self.slots();
        let page = s.page;
        // The strides of slots `first..end` (each slot's unused tail included), rounded
        // inwards to whole pages (a no-op with 4 KiB pages).
        let from = s.base as usize + first * STRIDE;
        let to = s.base as usize + end * STRIDE;
        let (from, to) = (from.next_multiple_of(page), to - to % page);
        if from >= to {
            return 0;
        }
        // SAFETY:
        // - `[from, to)` lies inside slots `first..end` of the pool's allocation (rounded
        //   inwards to whole pages), a private anonymous allocation;
        // - the caller popped every one of those slot indices from the free list, so no
        //   `Frame` for them exists and no other thread can lease them until they are pushed
        //   back: nothing else touches these bytes, and free slots' contents are not needed.
        unsafe { crate::mem::discard(s.base.add(from - s.base as usize), to - from) }
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

    /// Fill a whole slot with `v`.
    fn fill(f: &mut Frame, v: u8) {
        f.slot_mut().fill(v);
    }

    #[test]
    fn slots_start_on_4k_boundaries() {
        const _: () = assert!(STRIDE.is_multiple_of(4096) && STRIDE >= SLOT_BYTES);
        let pool = Pool::new(3).unwrap();
        let frames: Vec<Frame> = (0..3).map(|_| pool.lease().unwrap()).collect();
        for f in &frames {
            assert!((f.slot().as_ptr() as usize).is_multiple_of(4096));
        }
    }

    #[test]
    fn a_busy_pool_reuses_the_slots_it_has_in_flight() {
        // LIFO: 10,000 rounds of up to 8 frames in flight touch 8 slots, not the pool.
        let pool = Pool::new(256).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut out: Vec<Frame> = Vec::new();
        for round in 0..10_000usize {
            while out.len() < 1 + round % 8 {
                let f = pool.lease().unwrap();
                seen.insert(f.index());
                out.push(f);
            }
            out.drain(..(round * 7) % (out.len() + 1));
        }
        drop(out);
        assert_eq!(seen.len(), 8, "slots used: {seen:?}");
        assert_eq!(pool.available(), 256);
    }

    #[test]
    fn trim_visits_every_free_slot_once_then_reuse_is_lifo_again() {
        let pool = Pool::new(3 * TRIM_BATCH + 5).unwrap();
        let mut frames: Vec<Frame> = (0..pool.capacity())
            .map(|_| pool.lease().unwrap())
            .collect();
        for f in &mut frames {
            fill(f, 0x77);
            f.set_len(100);
        }
        // One stays in use; the rest are freed in index order (the last on top).
        let kept = frames.remove(100);
        drop(frames);
        let released = pool.trim();
        let page = crate::mem::page_size();
        let n = pool.capacity() - 1;
        let per_slot = STRIDE / page * page;
        let whole = SLOT_BYTES.div_ceil(page) * page;
        assert!(
            released >= n * (SLOT_BYTES / page) * page && released <= n * per_slot.max(whole),
            "released {released}"
        );
        assert_eq!(pool.trim(), 0, "nothing left to release");
        assert_eq!(pool.available(), n);
        // Trimmed slots are cold: leased in turn; a slot freed again is hot and reused first.
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_ne!(a.index(), b.index());
        let ai = a.index();
        drop(a);
        let again = pool.lease().unwrap();
        assert_eq!(again.index(), ai);
        drop((kept, b, again));
    }

    #[test]
    fn trim_releases_free_slots_and_leaves_slots_in_use_alone() {
        let page = crate::mem::page_size();
        let pool = Pool::new(8).unwrap();
        let mut frames: Vec<Frame> = (0..8).map(|_| pool.lease().unwrap()).collect();
        for f in &mut frames {
            let v = 0x10 + f.index() as u8;
            fill(f, v);
            f.set_len(1000);
        }
        // Slots 2 and 5 stay in use; the rest go back to the free list.
        let mut kept: Vec<Frame> = Vec::new();
        for f in frames {
            if matches!(f.index(), 2 | 5) {
                kept.push(f);
            }
        }
        assert_eq!(pool.available(), 6);
        let released = pool.trim();
        // Every page of the six free slots was resident (filled), and is released.
        let per_slot = STRIDE / page * page;
        let whole = SLOT_BYTES.div_ceil(page) * page;
        assert!(
            released >= 6 * (SLOT_BYTES / page) * page && released <= 6 * per_slot.max(whole),
            "released {released}"
        );
        assert_eq!(
            pool.available(),
            6,
            "every trimmed slot is back on the free list"
        );
        assert_eq!(pool.trim(), 0, "nothing left to release");
        // Slots in use: every byte, header included, as written; lengths kept.
        for f in &kept {
            let v = 0x10 + f.index() as u8;
            assert!(
                f.slot().iter().all(|&b| b == v),
                "slot {} changed",
                f.index()
            );
            assert_eq!(f.len(), 1000);
        }
        // The free slots read as zero, and work as before.
        let mut again: Vec<Frame> = (0..6).map(|_| pool.lease().unwrap()).collect();
        assert!(pool.lease().is_none());
        for f in &mut again {
            assert!(!matches!(f.index(), 2 | 5));
            assert!(
                f.slot().iter().all(|&b| b == 0),
                "slot {} not zero",
                f.index()
            );
            fill(f, 0x77);
            f.set_len(65549);
            assert!(f.bytes().iter().all(|&b| b == 0x77));
        }
        for f in &kept {
            let v = 0x10 + f.index() as u8;
            assert!(f.slot().iter().all(|&b| b == v));
        }
    }

    #[test]
    fn trim_races_with_lease_and_drop_on_another_thread() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        // More slots than two trim batches, so a lease finds one while a batch is out.
        let pool = Arc::new(Pool::new(4 * TRIM_BATCH).unwrap());
        let trims = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let worker = {
            let (pool, trims, done) = (pool.clone(), trims.clone(), done.clone());
            std::thread::spawn(move || {
                let mut held: Vec<Frame> = Vec::new();
                let mut checked = 0;
                for round in 0..200u32 {
                    // Lease a few and write them whole, then hold them while at least one
                    // whole trim runs, then check that not a byte changed.
                    for k in 0..4u32 {
                        if let Some(mut f) = pool.lease() {
                            let v = ((round + k) as u8) | 1;
                            fill(&mut f, v);
                            held.push(f);
                        }
                    }
                    let t0 = trims.load(Ordering::Acquire);
                    while trims.load(Ordering::Acquire) < t0 + 2 {
                        std::thread::yield_now();
                    }
                    for f in held.drain(..) {
                        let v = f.slot()[0];
                        assert!(v & 1 == 1, "slot {} was discarded while leased", f.index());
                        assert!(f.slot().iter().all(|&b| b == v), "slot {} torn", f.index());
                        checked += 1;
                    }
                }
                done.store(true, Ordering::Release);
                checked
            })
        };
        while !done.load(Ordering::Acquire) && !worker.is_finished() {
            pool.trim();
            trims.fetch_add(1, Ordering::Release);
        }
        let checked = worker.join().expect("worker thread");
        assert_eq!(checked, 800, "every lease found a free slot");
        assert_eq!(pool.available(), 4 * TRIM_BATCH);
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
