//! Hostile rings: a split queue whose descriptor table, avail ring and indices are whatever
//! a guest wrote, run through TX and RX passes. Shared by the property test in `tests` and
//! the `vhost_user_rings` fuzz target (cargo-fuzz builds with `--cfg fuzzing`).
//!
//! Layout in guest memory (virtio 1.x §2.7, the used ring after the avail ring's
//! `used_event`): the descriptor table at [`DESC`], the avail ring at [`AVAIL`], the used
//! ring at [`USED`], buffers from [`BUFS`] (an indirect table at `BUFS`, well-formed bytes
//! at `BUFS + 0x1000`), [`MEM_BYTES`] in all. What must hold for any contents: no panic,
//! bounded work per pass, and no pool slot leaked.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::queue::{rx_pass, tx_pass, Scratch, PASS_BUDGET};
use crate::link::Link;
use crate::pool::HDR_BYTES;

/// Guest memory size.
pub const MEM_BYTES: usize = 32 << 20;
/// The descriptor table.
pub const DESC: u64 = 0;
/// The avail ring.
pub const AVAIL: u64 = 0x4000;
/// The used ring.
pub const USED: u64 = 0x8000;
/// The buffer area.
pub const BUFS: u64 = 0x10_0000;
/// Entries of the hostile queue.
pub const QUEUE_SIZE: u16 = 16;

/// One descriptor as the guest wrote it: address, length, flags, next.
pub type RawDesc = (u64, u32, u16, u16);

/// Everything the guest controls in one hostile queue.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// The descriptor table.
    pub descs: [RawDesc; QUEUE_SIZE as usize],
    /// An indirect table at `BUFS`, which descriptors may point to.
    pub indirect: [RawDesc; 8],
    /// The avail ring's entries.
    pub heads: [u16; QUEUE_SIZE as usize],
    /// The avail ring's index.
    pub avail_idx: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` negotiated.
    pub event_idx: bool,
    /// `VIRTIO_NET_F_MRG_RXBUF` negotiated.
    pub mrg: bool,
    /// Length of the frames queued for the guest.
    pub frame_len: usize,
}

/// Guest memory for a queue (the rings zeroed).
pub fn memory() -> GuestMemoryMmap {
    // Invariant: one range at 0 of a fixed, valid size always maps.
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES)]).expect("guest memory maps")
}

/// The device's queue over the rings at `DESC`/`AVAIL`/`USED` of `size` entries.
pub fn queue(size: u16, event_idx: bool) -> Queue {
    // Invariant: a power-of-two size ≤ 32768 and the fixed, aligned ring addresses are
    // valid for virtio-queue.
    let mut q = Queue::new(size).expect("a valid queue size");
    q.set_size(size);
    q.try_set_desc_table_address(GuestAddress(DESC))
        .expect("aligned descriptor table");
    q.try_set_avail_ring_address(GuestAddress(AVAIL))
        .expect("aligned avail ring");
    q.try_set_used_ring_address(GuestAddress(USED))
        .expect("aligned used ring");
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

/// Write descriptor `d` at `at`.
pub fn write_desc(mem: &GuestMemoryMmap, at: u64, d: RawDesc) {
    let raw = RawDescriptor::from(SplitDescriptor::new(d.0, d.1, d.2, d.3));
    // Invariant: callers write inside the descriptor table or the buffer area.
    mem.write_obj(raw, GuestAddress(at))
        .expect("descriptor inside guest memory");
}

/// Lay `h` out in fresh memory and run three TX passes, then three RX passes with a frame
/// queued for the guest before each. `Err` names the first broken property.
pub fn survive(h: &Hostile, link: &Link) -> Result<(), String> {
    let mem = memory();
    for (i, &d) in h.indirect.iter().enumerate() {
        write_desc(&mem, BUFS + 16 * i as u64, d);
    }
    for (i, &d) in h.descs.iter().enumerate() {
        write_desc(&mem, DESC + 16 * i as u64, d);
    }
    // Invariant (these writes): fixed addresses inside MEM_BYTES.
    for (i, head) in h.heads.iter().enumerate() {
        mem.write_obj(*head, GuestAddress(AVAIL + 4 + 2 * i as u64))
            .expect("avail ring inside guest memory");
    }
    mem.write_obj(h.avail_idx, GuestAddress(AVAIL + 2))
        .expect("avail index inside guest memory");
    // Some well-formed data in the buffer area for the chains that do point there.
    mem.write_slice(&[0x5a; 4096], GuestAddress(BUFS + 0x1000))
        .expect("buffer area inside guest memory");

    let mut scratch = Scratch::default();
    let mut q = queue(QUEUE_SIZE, h.event_idx);
    for _ in 0..3 {
        let p = tx_pass(&mut q, &mem, link, &mut scratch);
        if p.used > PASS_BUDGET {
            return Err(format!("a TX pass published {} entries", p.used));
        }
        while link.from_guest.pop().is_some() {}
    }
    let mut q = queue(QUEUE_SIZE, h.event_idx);
    let mut pending = None;
    for seed in 0..3u8 {
        let Some(mut f) = link.pool.lease() else {
            return Err("the pool ran dry".into());
        };
        let len = h.frame_len.min(f.capacity_mut().len());
        f.hdr_mut()[..HDR_BYTES].fill(seed);
        f.capacity_mut()[..len].fill(seed.wrapping_mul(31));
        f.set_len(len);
        if !link.to_guest.push(f) {
            return Err("to_guest full".into());
        }
        let p = rx_pass(&mut q, &mem, link, h.mrg, &mut pending, &mut scratch);
        if p.used > PASS_BUDGET * 16 {
            return Err(format!("an RX pass published {} entries", p.used));
        }
    }
    drop(pending);
    link.to_guest.clear();
    if link.pool.available() != link.pool.capacity() {
        return Err(format!(
            "{} pool slots leaked",
            link.pool.capacity() - link.pool.available()
        ));
    }
    Ok(())
}
