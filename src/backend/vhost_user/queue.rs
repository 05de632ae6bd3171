//! One pass over a virtio-net TX or RX split virtqueue (virtio 1.x §2.7, §5.1.6), without
//! I/O of its own: a [`Queue`], the guest's memory and the link in; frames moved, used-ring
//! entries published and whether to notify the guest out. The worker thread
//! ([`super::device`]) runs the passes and signals; the tests drive them on a mock queue.
//!
//! Everything the guest wrote (descriptor tables, ring indices, buffer addresses and
//! lengths) is untrusted: descriptors are walked by virtio-queue's chain iterator (bounded
//! by the queue size, loops impossible) and additionally capped at [`MAX_CHAIN_DESCS`];
//! every guest-memory access is a checked `read_slice` / `write_slice` / atomic load or
//! store whose error drops the chain and counts it. Nothing here panics on guest input.
//!
//! Used ring: entries are written here rather than with `Queue::add_used`, which publishes
//! the used index after every entry. A frame spread over several receive buffers
//! (`VIRTIO_NET_F_MRG_RXBUF`) must become visible all at once: Linux reads `num_buffers`
//! from the first buffer and drops the frame if the others are not in the used ring yet.
//! So a frame's entries are written first and the index is stored once (release order).
//! Notification suppression ([`needs_notify`]) follows from the used index before and
//! after a pass (`VIRTIO_RING_F_EVENT_IDX`: `used_event` crossed; otherwise the avail
//! ring's `NO_INTERRUPT` flag).

use std::sync::atomic::{fence, Ordering};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use crate::link::{Link, RING_SLOTS};
use crate::metrics::Stats;
use crate::pool::{Frame, HDR_BYTES, MAX_FRAME};

/// Descriptors one chain may have (Linux uses at most ~20 for a 64 KiB frame; the chain
/// iterator already stops at the queue size, this bounds indirect tables too).
pub(crate) const MAX_CHAIN_DESCS: usize = 1024;
/// Smallest TX chain: the virtio-net header and an Ethernet header.
pub(crate) const MIN_TX_BYTES: usize = HDR_BYTES + 14;
/// Smallest RX buffer taken: the header and an Ethernet header; smaller chains are returned
/// unused (`vhost_rx_bad_chain`).
pub(crate) const MIN_RX_BYTES: usize = HDR_BYTES + 14;
/// Frames (TX: chains) one pass moves at most before it returns with [`Pass::more`], so the
/// other direction gets its turn on the one worker thread.
pub(crate) const PASS_BUDGET: usize = 256;

/// `VRING_AVAIL_F_NO_INTERRUPT` (virtio 1.x §2.7.7).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Offset of the ring array in the avail (2 × u16 header) and used rings (2 × u16 header).
const RING_HEADER: u64 = 4;
/// Bytes of a used-ring element (`le32 id, le32 len`).
const USED_ELEM: u64 = 8;

/// A chain's buffers: guest address and length of each descriptor.
pub(crate) type Segments = Vec<(GuestAddress, usize)>;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Used-ring entries published.
    pub used: usize,
    /// Frames moved (TX: onto `from_guest`; RX: into the guest's buffers).
    pub frames: usize,
    /// The guest should get an interrupt (entries were published and it did not suppress
    /// it).
    pub notify: bool,
    /// Stopped on the other side: TX because `from_guest` is full or the pool empty, RX
    /// because the guest has no receive buffers. The work waits where it is.
    pub stalled: bool,
    /// Stopped at [`PASS_BUDGET`] with work left.
    pub more: bool,
}

/// Scratch space a pass reuses (no allocation per frame once grown).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    segs: Segments,
    first: Segments,
    heads: Vec<(u16, u32)>,
}

enum Pop<'m, M> {
    Chain(DescriptorChain<&'m M>),
    /// Nothing available (or the ring is not running).
    Empty,
    /// The avail ring is inconsistent (its index more than a ring ahead).
    Broken,
}

fn pop<'m, M: GuestMemory>(q: &mut Queue, mem: &'m M) -> Pop<'m, M> {
    if !q.ready() {
        return Pop::Empty;
    }
    match q.iter(mem) {
        Ok(mut it) => it.next().map_or(Pop::Empty, Pop::Chain),
        Err(_) => Pop::Broken,
    }
}

/// The chain's descriptors into `segs`, all of them device-writable (`writable`) or all
/// device-readable; returns their total length, or `None` for a descriptor of the other
/// kind or more than [`MAX_CHAIN_DESCS`].
fn segments<M: GuestMemory>(
    chain: DescriptorChain<&M>,
    writable: bool,
    segs: &mut Segments,
) -> Option<usize> {
    segs.clear();
    let mut total = 0usize;
    for d in chain {
        if segs.len() == MAX_CHAIN_DESCS || d.is_write_only() != writable {
            return None;
        }
        let len = d.len() as usize;
        total = total.saturating_add(len);
        if len > 0 {
            segs.push((d.addr(), len));
        }
    }
    Some(total)
}

/// Fill `dst` from the segments in order (their total is `dst.len()`).
fn read_segs<M: GuestMemory>(mem: &M, segs: &Segments, dst: &mut [u8]) -> Option<()> {
    let mut off = 0usize;
    for &(addr, len) in segs {
        let end = off.checked_add(len)?;
        mem.read_slice(dst.get_mut(off..end)?, addr).ok()?;
        off = end;
    }
    Some(())
}

/// Write `src` into the segments starting `at` bytes in; `None` when they are too short or
/// name memory outside the guest's.
fn write_segs<M: GuestMemory>(mem: &M, segs: &Segments, mut at: usize, src: &[u8]) -> Option<()> {
    let mut src = src;
    for &(addr, len) in segs {
        if src.is_empty() {
            break;
        }
        if at >= len {
            at -= len;
            continue;
        }
        let n = (len - at).min(src.len());
        mem.write_slice(&src[..n], addr.checked_add(at as u64)?)
            .ok()?;
        src = &src[n..];
        at = 0;
    }
    src.is_empty().then_some(())
}

/// Write used element number `k` after the published ones (not visible to the guest until
/// [`publish`]). A head outside the ring is refused.
fn put_used<M: GuestMemory>(q: &Queue, mem: &M, k: u16, head: u16, len: u32) -> Option<()> {
    let size = q.size();
    if size == 0 || head >= size {
        return None;
    }
    let pos = q.next_used().wrapping_add(k) % size;
    let addr = GuestAddress(q.used_ring()).checked_add(RING_HEADER + u64::from(pos) * USED_ELEM)?;
    let mut elem = [0u8; USED_ELEM as usize];
    elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
    elem[4..].copy_from_slice(&len.to_le_bytes());
    mem.write_slice(&elem, addr).ok()
}

/// Make `n` written used elements visible: one release store of the used index.
fn publish<M: GuestMemory>(q: &mut Queue, mem: &M, n: u16) -> Option<()> {
    if n == 0 {
        return Some(());
    }
    let new = q.next_used().wrapping_add(n);
    let idx = GuestAddress(q.used_ring()).checked_add(2)?;
    mem.store(new.to_le(), idx, Ordering::Release).ok()?;
    q.set_next_used(new);
    Some(())
}

/// Whether the entries published since the used index was `old` call for an interrupt:
/// with `EVENT_IDX`, when `used_event` lies in `[old, new)` (the kernel's
/// `vring_need_event`); without, unless the driver set `VRING_AVAIL_F_NO_INTERRUPT`. An
/// unreadable field means notify (spurious interrupts are harmless, missing ones hang).
pub(crate) fn needs_notify<M: GuestMemory>(q: &Queue, mem: &M, old: u16) -> bool {
    let new = q.next_used();
    if new == old {
        return false;
    }
    // The used index store must be visible before the driver's field is read (and the
    // driver does the converse), or both sides may skip the interrupt.
    fence(Ordering::SeqCst);
    let avail = GuestAddress(q.avail_ring());
    if q.event_idx_enabled() {
        let Some(at) = avail.checked_add(RING_HEADER + 2 * u64::from(q.size())) else {
            return true;
        };
        match mem.load::<u16>(at, Ordering::Relaxed) {
            Ok(ev) => {
                let ev = u16::from_le(ev);
                new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
            }
            Err(_) => true,
        }
    } else {
        match mem.load::<u16>(avail, Ordering::Relaxed) {
            Ok(flags) => u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0,
            Err(_) => true,
        }
    }
}

/// Move frames the guest queued on its TX ring onto `link.from_guest`, one copy each into
/// a leased pool slot (header + frame, as a slot holds them).
///
/// Stops (with [`Pass::stalled`]) when `from_guest` is full or the pool is empty, leaving
/// the chains in the avail ring; when the ring is empty it re-enables kicks (with
/// `EVENT_IDX`: `avail_event`) and takes a chain that raced in.
pub(crate) fn tx_pass<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    link: &Link,
    scratch: &mut Scratch,
) -> Pass {
    let stats = &link.stats;
    let old = q.next_used();
    let mut pass = Pass::default();
    let mut pending: u16 = 0;
    let mut taken = 0usize;
    let mut rechecked = false;
    loop {
        if taken >= PASS_BUDGET {
            pass.more = true;
            break;
        }
        if link.from_guest.len() >= RING_SLOTS {
            pass.stalled = true;
            break;
        }
        let Some(mut frame) = link.pool.lease() else {
            pass.stalled = true;
            break;
        };
        let chain = match pop(q, mem) {
            Pop::Chain(c) => c,
            Pop::Empty => {
                if !rechecked && q.enable_notification(mem).unwrap_or(false) {
                    rechecked = true;
                    continue;
                }
                break;
            }
            Pop::Broken => {
                Stats::inc(&stats.vhost_ring_errors);
                break;
            }
        };
        rechecked = false;
        taken += 1;
        let head = chain.head_index();
        match read_chain(mem, chain, &mut scratch.segs, &mut frame) {
            Some(()) => {
                // Room was checked above and this thread is the ring's only producer.
                link.from_guest.push(frame);
                pass.frames += 1;
            }
            None => Stats::inc(&stats.vhost_tx_bad_chain),
        }
        if put_used(q, mem, pending, head, 0).is_some() {
            pending += 1;
        } else {
            Stats::inc(&stats.vhost_ring_errors);
        }
    }
    if publish(q, mem, pending).is_some() {
        pass.used = usize::from(pending);
    } else {
        Stats::inc(&stats.vhost_ring_errors);
    }
    if pass.stalled {
        Stats::inc(&stats.vhost_tx_stalls);
    }
    pass.notify = needs_notify(q, mem, old);
    pass
}

/// Copy a TX chain (header + Ethernet frame, device-readable only) into `frame`'s slot.
fn read_chain<M: GuestMemory>(
    mem: &M,
    chain: DescriptorChain<&M>,
    segs: &mut Segments,
    frame: &mut Frame,
) -> Option<()> {
    let total = segments(chain, false, segs)?;
    if !(MIN_TX_BYTES..=HDR_BYTES + MAX_FRAME).contains(&total) {
        return None;
    }
    read_segs(mem, segs, frame.slot_mut().get_mut(..total)?)?;
    frame.set_len(total - HDR_BYTES);
    Some(())
}

/// How delivering one frame to the guest went.
enum Delivery {
    /// Into this many buffers (used entries published).
    Done(u16),
    /// Not enough buffers: the chains taken were put back.
    NoBuffers,
    /// It can never fit: dropped.
    TooBig,
    /// A chain was unusable and returned with length 0 (this many entries); the frame is
    /// tried again on the next buffers.
    BadChain(u16),
    /// The avail ring is inconsistent.
    Broken,
}

/// Move frames from `link.to_guest` (after `pending`, the frame an earlier pass could not
/// place) into the guest's RX buffers: header then frame, one chain each, or with
/// mergeable buffers (`mrg`) as many chains as the frame needs, `num_buffers` in the
/// first header.
///
/// Out of buffers, the frame stays in `pending` and kicks are re-enabled ([`Pass::stalled`]:
/// wait for the guest's RX kick); with nothing left to deliver, RX kicks are disabled again
/// (the guest adds buffers without waking the worker).
pub(crate) fn rx_pass<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    link: &Link,
    mrg: bool,
    pending: &mut Option<Frame>,
    scratch: &mut Scratch,
) -> Pass {
    let stats = &link.stats;
    let old = q.next_used();
    let mut pass = Pass::default();
    let mut rechecked = false;
    let mut tries = 0usize;
    loop {
        if tries >= PASS_BUDGET {
            pass.more = pending.is_some() || !link.to_guest.is_empty();
            break;
        }
        let Some(frame) = pending.take().or_else(|| link.to_guest.pop()) else {
            break;
        };
        tries += 1;
        let outcome = if mrg {
            deliver_merged(q, mem, &frame, scratch)
        } else {
            deliver_one(q, mem, &frame, scratch)
        };
        match outcome {
            Delivery::Done(n) => {
                pass.used += usize::from(n);
                pass.frames += 1;
                rechecked = false;
            }
            Delivery::NoBuffers => {
                *pending = Some(frame);
                if !rechecked && q.enable_notification(mem).unwrap_or(false) {
                    rechecked = true;
                    continue;
                }
                Stats::inc(&stats.vhost_rx_no_buffer);
                pass.stalled = true;
                break;
            }
            Delivery::TooBig => Stats::inc(&stats.vhost_rx_too_big),
            Delivery::BadChain(n) => {
                Stats::inc(&stats.vhost_rx_bad_chain);
                pass.used += usize::from(n);
                *pending = Some(frame);
            }
            Delivery::Broken => {
                Stats::inc(&stats.vhost_ring_errors);
                *pending = Some(frame);
                break;
            }
        }
    }
    if !pass.stalled && pending.is_none() {
        // Nothing waits for buffers: the guest need not kick when it adds some.
        let _ = q.disable_notification(mem);
    }
    pass.notify = needs_notify(q, mem, old);
    pass
}

/// The frame's header as the guest gets it: the slot's, `num_buffers` set.
fn rx_header(frame: &Frame, num_buffers: u16) -> [u8; HDR_BYTES] {
    let mut hdr = [0u8; HDR_BYTES];
    hdr.copy_from_slice(frame.hdr());
    crate::wire::vnet::set_num_buffers(&mut hdr, num_buffers);
    hdr
}

/// Return `heads` (taken for one frame) to the guest with length 0 and publish them.
fn return_unused<M: GuestMemory>(q: &mut Queue, mem: &M, heads: &[(u16, u32)]) -> u16 {
    let mut n: u16 = 0;
    for &(head, _) in heads {
        if put_used(q, mem, n, head, 0).is_some() {
            n += 1;
        }
    }
    match publish(q, mem, n) {
        Some(()) => n,
        None => 0,
    }
}

/// Without mergeable buffers: the whole frame into one chain.
fn deliver_one<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    frame: &Frame,
    scratch: &mut Scratch,
) -> Delivery {
    let chain = match pop(q, mem) {
        Pop::Chain(c) => c,
        Pop::Empty => return Delivery::NoBuffers,
        Pop::Broken => return Delivery::Broken,
    };
    let head = chain.head_index();
    let need = HDR_BYTES + frame.len();
    let written = match segments(chain, true, &mut scratch.segs) {
        Some(cap) if cap < MIN_RX_BYTES => None,
        Some(cap) if cap < need => {
            // Too small for this frame, maybe not for the next: offered again.
            q.go_to_previous_position();
            return Delivery::TooBig;
        }
        Some(_) => write_segs(mem, &scratch.segs, 0, &rx_header(frame, 1))
            .and_then(|()| write_segs(mem, &scratch.segs, HDR_BYTES, frame.bytes())),
        None => None,
    };
    let len = if written.is_some() { need } else { 0 };
    // need ≤ HDR_BYTES + MAX_FRAME, far below u32::MAX.
    #[allow(clippy::cast_possible_truncation)]
    let used = put_used(q, mem, 0, head, len as u32).and_then(|()| publish(q, mem, 1));
    match (written, used) {
        (Some(()), Some(())) => Delivery::Done(1),
        (None, Some(())) => Delivery::BadChain(1),
        (_, None) => Delivery::Broken,
    }
}

/// With mergeable buffers: the frame over as many chains as it needs; the header (in the
/// first, which must hold it whole) says how many.
fn deliver_merged<M: GuestMemory>(
    q: &mut Queue,
    mem: &M,
    frame: &Frame,
    scratch: &mut Scratch,
) -> Delivery {
    let Scratch { segs, first, heads } = scratch;
    heads.clear();
    let bytes = frame.bytes();
    let mut done = 0usize;
    let mut bad = false;
    loop {
        let chain = match pop(q, mem) {
            Pop::Chain(c) => c,
            empty_or_broken => {
                // Put the chains taken for this frame back, in order.
                for _ in 0..heads.len() {
                    q.go_to_previous_position();
                }
                return match empty_or_broken {
                    Pop::Broken => Delivery::Broken,
                    // Every buffer the ring can hold is not enough.
                    _ if heads.len() >= usize::from(q.size()) => Delivery::TooBig,
                    _ => Delivery::NoBuffers,
                };
            }
        };
        let head = chain.head_index();
        let lead = if heads.is_empty() { HDR_BYTES } else { 0 };
        let cap = match segments(chain, true, segs) {
            Some(cap) if cap > lead => cap,
            _ => {
                heads.push((head, 0));
                bad = true;
                break;
            }
        };
        let n = (cap - lead).min(bytes.len() - done);
        if write_segs(mem, segs, lead, &bytes[done..done + n]).is_none() {
            heads.push((head, 0));
            bad = true;
            break;
        }
        done += n;
        // lead + n ≤ cap ≤ u32::MAX·MAX_CHAIN_DESCS, but n ≤ MAX_FRAME, so it fits.
        #[allow(clippy::cast_possible_truncation)]
        heads.push((head, (lead + n) as u32));
        if lead > 0 {
            std::mem::swap(first, segs);
        }
        if done == bytes.len() {
            break;
        }
    }
    // At most the queue size (≤ 32768) chains were taken.
    #[allow(clippy::cast_possible_truncation)]
    let count = heads.len() as u16;
    if !bad && write_segs(mem, first, 0, &rx_header(frame, count)).is_none() {
        bad = true;
    }
    if bad {
        return Delivery::BadChain(return_unused(q, mem, heads));
    }
    let mut n: u16 = 0;
    for &(head, len) in heads.iter() {
        if put_used(q, mem, n, head, len).is_none() {
            return Delivery::Broken;
        }
        n += 1;
    }
    match publish(q, mem, n) {
        Some(()) => Delivery::Done(n),
        None => Delivery::Broken,
    }
}
