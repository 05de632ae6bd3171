//! TX and RX passes on split queues in plain guest memory, driven from the driver's side:
//! frames whole and in pieces, bad chains, backpressure, mergeable buffers, 64 KiB
//! super-frames, interrupt suppression, and random descriptor tables.
//!
//! Most tests use [`Driver`], a driver-side queue laid out as virtio 1.x §2.7 says (the
//! used ring after the avail ring's `used_event`). `virtio_queue::mock::MockSplitQueue`
//! places its used ring at `avail + 4 + len` (it counts the avail ring in entries, not
//! bytes), overlapping the upper half of the avail ring, so it serves only the cross-check
//! with a few chains ([`mock_split_queue_cross_check`]).

use std::sync::Arc;

use proptest::prelude::*;
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::offered_features;
use super::hostile::{
    memory, queue, survive, write_desc, Hostile, AVAIL, BUFS, DESC, MEM_BYTES, USED,
};
use super::queue::{rx_pass, tx_pass, Pass, Scratch, PASS_BUDGET};
use crate::link::{Link, Offloads, RING_SLOTS};
use crate::pool::{Frame, HDR_BYTES, MAX_FRAME};

const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;

fn link() -> Arc<Link> {
    Arc::new(Link::new().unwrap())
}

/// The driver's side of one split queue.
struct Driver<'m> {
    mem: &'m GuestMemoryMmap,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
    next_buf: u64,
}

impl<'m> Driver<'m> {
    fn new(mem: &'m GuestMemoryMmap, size: u16) -> Driver<'m> {
        // Rings start zeroed (flags, indices, events).
        mem.write_slice(&vec![0u8; (BUFS - DESC) as usize], GuestAddress(DESC))
            .unwrap();
        Driver {
            mem,
            size,
            next_desc: 0,
            avail_idx: 0,
            next_buf: BUFS,
        }
    }

    /// The device's queue over this driver's rings.
    fn queue(&self, event_idx: bool) -> Queue {
        queue(self.size, event_idx)
    }

    fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        write_desc(self.mem, DESC + 16 * u64::from(i), (addr, len, flags, next));
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += u64::from(len).div_ceil(64) * 64 + 64;
        assert!(
            self.next_buf < MEM_BYTES as u64,
            "test buffer space exhausted"
        );
        a
    }

    /// Descriptors for `bufs` (address, length, device-writable) linked in order; returns
    /// the head (not offered yet).
    fn link_descs(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = k + 1 == bufs.len();
            let flags = if w { WRITE } else { 0 } | if last { 0 } else { NEXT };
            self.write_desc(i, addr, len, flags, self.next_desc);
        }
        head
    }

    /// Offer a chain of fresh buffers of these lengths; returns the head and their addresses.
    fn chain(&mut self, lens: &[(u32, bool)]) -> (u16, Vec<u64>) {
        let bufs: Vec<(u64, u32, bool)> = lens
            .iter()
            .map(|&(len, w)| (self.alloc(len), len, w))
            .collect();
        let head = self.link_descs(&bufs);
        self.offer(head);
        (head, bufs.iter().map(|b| b.0).collect())
    }

    /// Offer a TX chain carrying `bytes` split at these lengths.
    fn tx_chain(&mut self, bytes: &[u8], split: &[usize]) -> u16 {
        let mut lens: Vec<(u32, bool)> = split.iter().map(|&n| (n as u32, false)).collect();
        let rest = bytes.len() - split.iter().sum::<usize>();
        if rest > 0 {
            lens.push((rest as u32, false));
        }
        let bufs: Vec<(u64, u32, bool)> = lens
            .iter()
            .map(|&(len, w)| (self.alloc(len), len, w))
            .collect();
        let mut off = 0;
        for &(addr, len, _) in &bufs {
            let len = len as usize;
            self.mem
                .write_slice(&bytes[off..off + len], GuestAddress(addr))
                .unwrap();
            off += len;
        }
        let head = self.link_descs(&bufs);
        self.offer(head);
        head
    }

    fn offer(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn used(&self, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    fn set_used_event(&self, v: u16) {
        let at = AVAIL + 4 + 2 * u64::from(self.size);
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    fn avail_event(&self) -> u16 {
        let at = USED + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn set_avail_flags(&self, v: u16) {
        self.mem.write_obj(v, GuestAddress(AVAIL)).unwrap();
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// A header + Ethernet frame of `len` frame bytes, recognisable by `seed`.
fn tx_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; HDR_BYTES + len];
    v[0] = seed; // header flags byte: the device must pass it on untouched
    for (i, b) in v[HDR_BYTES..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    v
}

/// Queue a frame of `len` bytes for the guest (header flags byte = `seed`).
fn queue_to_guest(link: &Link, len: usize, seed: u8) -> Vec<u8> {
    let bytes = tx_bytes(len, seed);
    let mut f = link.pool.lease().unwrap();
    f.hdr_mut().copy_from_slice(&bytes[..HDR_BYTES]);
    f.capacity_mut()[..len].copy_from_slice(&bytes[HDR_BYTES..]);
    f.set_len(len);
    assert!(link.to_guest.push(f));
    bytes
}

fn stat(link: &Link, name: &str) -> u64 {
    link.stats
        .snapshot()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .unwrap()
}

fn tx(q: &mut Queue, mem: &GuestMemoryMmap, link: &Link) -> Pass {
    tx_pass(q, mem, link, &mut Scratch::default())
}

fn rx(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    link: &Link,
    mrg: bool,
    pending: &mut Option<Frame>,
) -> Pass {
    rx_pass(q, mem, link, mrg, pending, &mut Scratch::default())
}

fn num_buffers(hdr: &[u8]) -> u16 {
    u16::from_le_bytes([hdr[10], hdr[11]])
}

#[test]
fn offered_features_are_version_1_with_or_without_offloads() {
    let with = offered_features(Offloads {
        mrg_rxbuf: true,
        ..Offloads::TSO
    });
    let without = offered_features(Offloads {
        mrg_rxbuf: true,
        ..Offloads::NONE
    });
    for f in [with, without] {
        assert_ne!(f & (1 << 32), 0, "VIRTIO_F_VERSION_1");
        assert_ne!(f & (1 << 29), 0, "EVENT_IDX");
        assert_ne!(f & (1 << 28), 0, "INDIRECT_DESC");
        assert_ne!(f & (1 << 30), 0, "VHOST_USER_F_PROTOCOL_FEATURES");
        assert_ne!(f & (1 << 15), 0, "MRG_RXBUF");
    }
    assert_eq!(without & 0x1983, 0, "no csum/TSO bits (0, 1, 7, 8, 11, 12)");
    assert_eq!(
        Offloads::from_virtio_features(with),
        Offloads {
            mrg_rxbuf: true,
            ..Offloads::TSO
        }
    );
}

#[test]
fn tx_frame_in_one_descriptor() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let bytes = tx_bytes(60, 1);
    let head = d.tx_chain(&bytes, &[]);
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.frames, p.stalled, p.notify), (1, 1, false, true));
    let f = link.from_guest.pop().unwrap();
    assert_eq!(f.hdr(), &bytes[..HDR_BYTES]);
    assert_eq!(f.bytes(), &bytes[HDR_BYTES..]);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (u32::from(head), 0));
    // Nothing more: an empty pass publishes nothing and does not interrupt.
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.notify), (0, false));
}

#[test]
fn tx_frame_split_over_descriptors() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    // Header alone, then the frame in three pieces (a zero-length one among them); then
    // header and frame start sharing a descriptor.
    let a = tx_bytes(1500, 2);
    d.tx_chain(&a, &[HDR_BYTES, 0, 100, 700]);
    let b = tx_bytes(9000, 3);
    d.tx_chain(&b, &[5, 4000]);
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.frames), (2, 2));
    for want in [a, b] {
        let f = link.from_guest.pop().unwrap();
        assert_eq!(f.hdr(), &want[..HDR_BYTES]);
        assert_eq!(f.bytes(), &want[HDR_BYTES..]);
    }
    assert_eq!(stat(&link, "vhost_tx_bad_chain"), 0);
}

#[test]
fn tx_indirect_chain() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let bytes = tx_bytes(200, 4);
    let (b0, b1) = (d.alloc(12), d.alloc(200));
    mem.write_slice(&bytes[..12], GuestAddress(b0)).unwrap();
    mem.write_slice(&bytes[12..], GuestAddress(b1)).unwrap();
    let table = d.alloc(32);
    mem.write_obj(
        RawDescriptor::from(SplitDescriptor::new(b0, 12, NEXT, 1)),
        GuestAddress(table),
    )
    .unwrap();
    mem.write_obj(
        RawDescriptor::from(SplitDescriptor::new(b1, 200, 0, 0)),
        GuestAddress(table + 16),
    )
    .unwrap();
    d.write_desc(0, table, 32, VRING_DESC_F_INDIRECT as u16, 0);
    d.next_desc = 1;
    d.offer(0);
    let p = tx(&mut q, &mem, &link);
    assert_eq!(p.frames, 1);
    assert_eq!(link.from_guest.pop().unwrap().bytes(), &bytes[12..]);
}

#[test]
fn tx_short_long_and_writable_chains_are_dropped_and_counted() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let heads = [
        // Header only.
        d.tx_chain(&tx_bytes(0, 5), &[]),
        // Header + 13 bytes: no whole Ethernet header.
        d.tx_chain(&tx_bytes(13, 6), &[]),
        // A device-writable descriptor in a TX chain.
        d.chain(&[(12, false), (60, true)]).0,
        // Longer than a pool slot (never read: its length alone drops it).
        {
            let addr = d.alloc(64);
            let h = d.link_descs(&[(addr, (HDR_BYTES + MAX_FRAME + 1) as u32, false)]);
            d.offer(h);
            h
        },
        // A descriptor pointing outside guest memory.
        {
            let h = d.link_descs(&[(u64::MAX - 8, 100, false)]);
            d.offer(h);
            h
        },
    ];
    let good = tx_bytes(64, 7);
    let good_head = d.tx_chain(&good, &[]);
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.frames), (6, 1));
    assert_eq!(stat(&link, "vhost_tx_bad_chain"), 5);
    // Every chain went back to the guest, in order, with length 0.
    for (i, h) in heads.iter().chain([&good_head]).enumerate() {
        assert_eq!(d.used(i as u16), (u32::from(*h), 0));
    }
    assert_eq!(link.from_guest.pop().unwrap().bytes(), &good[HDR_BYTES..]);
    assert!(link.from_guest.pop().is_none());
}

#[test]
fn tx_backpressure_leaves_chains_in_the_ring() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    // from_guest full (the poll thread is behind).
    for _ in 0..RING_SLOTS {
        let mut f = link.pool.lease().unwrap();
        f.set_len(60);
        assert!(link.from_guest.push(f));
    }
    let bytes = tx_bytes(80, 8);
    d.tx_chain(&bytes, &[]);
    let p = tx(&mut q, &mem, &link);
    assert!(p.stalled);
    assert_eq!((p.used, p.frames, d.used_idx()), (0, 0, 0));
    assert_eq!(stat(&link, "vhost_tx_stalls"), 1);
    // The poll thread makes room: the same chain goes through, nothing was dropped.
    link.from_guest.clear();
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.frames, p.stalled), (1, 1, false));
    assert_eq!(link.from_guest.pop().unwrap().bytes(), &bytes[HDR_BYTES..]);
    assert_eq!(
        link.from_guest
            .stats()
            .drops
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn tx_with_an_empty_pool_stalls() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let held: Vec<Frame> = std::iter::from_fn(|| link.pool.lease()).collect();
    d.tx_chain(&tx_bytes(80, 9), &[]);
    assert!(tx(&mut q, &mem, &link).stalled);
    assert_eq!(d.used_idx(), 0);
    drop(held);
    assert_eq!(tx(&mut q, &mem, &link).frames, 1);
}

#[test]
fn tx_pass_stops_at_its_budget() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 1024);
    let mut q = d.queue(false);
    for i in 0..PASS_BUDGET + 10 {
        d.tx_chain(&tx_bytes(60, i as u8), &[]);
    }
    let p = tx(&mut q, &mem, &link);
    assert!(p.more || p.stalled);
    assert!(p.used <= PASS_BUDGET);
}

#[test]
fn event_idx_suppresses_interrupts_and_sets_avail_event() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(true);
    // The driver wants an interrupt only after used entry 5.
    d.set_used_event(5);
    for i in 0..3 {
        d.tx_chain(&tx_bytes(60, i), &[]);
    }
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.notify), (3, false));
    // The ring drained: kicks re-armed at the next avail index.
    assert_eq!(d.avail_event(), 3);
    for i in 0..3 {
        d.tx_chain(&tx_bytes(60, i), &[]);
    }
    let p = tx(&mut q, &mem, &link);
    assert_eq!(
        (p.used, p.notify),
        (3, true),
        "used 3..6 crosses used_event 5"
    );
    assert_eq!(d.avail_event(), 6);
}

#[test]
fn no_interrupt_flag_is_honoured_without_event_idx() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    d.set_avail_flags(1);
    d.tx_chain(&tx_bytes(60, 1), &[]);
    assert!(!tx(&mut q, &mem, &link).notify);
    d.set_avail_flags(0);
    d.tx_chain(&tx_bytes(60, 1), &[]);
    assert!(tx(&mut q, &mem, &link).notify);
}

#[test]
fn rx_one_big_buffer() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let (head, addrs) = d.chain(&[(4096, true)]);
    let want = queue_to_guest(&link, 1000, 1);
    let mut pending = None;
    let p = rx(&mut q, &mem, &link, false, &mut pending);
    assert_eq!((p.used, p.frames, p.stalled, p.notify), (1, 1, false, true));
    assert_eq!(d.used(0), (u32::from(head), (HDR_BYTES + 1000) as u32));
    let got = d.read(addrs[0], HDR_BYTES + 1000);
    assert_eq!(got[0], 1, "header flags as the slot holds them");
    assert_eq!(num_buffers(&got), 1);
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
    assert!(pending.is_none());
}

#[test]
fn rx_header_and_frame_spread_over_a_chain_of_descriptors() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let (_, addrs) = d.chain(&[(10, true), (2, true), (0, true), (500, true), (1000, true)]);
    let want = queue_to_guest(&link, 1200, 2);
    let p = rx(&mut q, &mem, &link, false, &mut None);
    assert_eq!(p.frames, 1);
    let mut got = d.read(addrs[0], 10);
    got.extend(d.read(addrs[1], 2));
    got.extend(d.read(addrs[3], 500));
    got.extend(d.read(addrs[4], 700));
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
    assert_eq!(num_buffers(&got), 1);
}

#[test]
fn rx_mergeable_over_several_small_buffers() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let chains: Vec<(u16, Vec<u64>)> = (0..6).map(|_| d.chain(&[(1500, true)])).collect();
    let want = queue_to_guest(&link, 5000, 3);
    let p = rx(&mut q, &mem, &link, true, &mut None);
    assert_eq!((p.used, p.frames), (4, 1));
    assert_eq!(d.used_idx(), 4, "all four entries published at once");
    let lens = [1500, 1500, 1500, HDR_BYTES + 5000 - 4500];
    let mut got = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        assert_eq!(d.used(i as u16), (u32::from(chains[i].0), *len as u32));
        got.extend(d.read(chains[i].1[0], *len));
    }
    assert_eq!(num_buffers(&got), 4);
    assert_eq!(got[0], 3);
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
}

#[test]
fn rx_without_buffers_keeps_the_frame_until_buffers_come() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(true);
    let first = queue_to_guest(&link, 300, 4);
    let second = queue_to_guest(&link, 400, 5);
    let mut pending = None;
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert!(p.stalled);
    assert_eq!((p.used, p.notify), (0, false));
    assert!(pending.is_some(), "the frame is kept, not dropped");
    assert_eq!(link.to_guest.len(), 1);
    assert_eq!(stat(&link, "vhost_rx_no_buffer"), 1);
    // Kicks were enabled for the next buffer (EVENT_IDX: avail_event = next avail).
    assert_eq!(d.avail_event(), 0);
    let (_, a) = d.chain(&[(2048, true)]);
    let (_, b) = d.chain(&[(2048, true)]);
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert_eq!((p.frames, p.stalled), (2, false));
    assert!(pending.is_none());
    assert_eq!(
        &d.read(a[0], HDR_BYTES + 300)[HDR_BYTES..],
        &first[HDR_BYTES..]
    );
    assert_eq!(
        &d.read(b[0], HDR_BYTES + 400)[HDR_BYTES..],
        &second[HDR_BYTES..]
    );
    assert_eq!(link.pool.available(), link.pool.capacity());
}

#[test]
fn rx_mergeable_waits_for_enough_buffers_and_keeps_order() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let c0 = d.chain(&[(1500, true)]);
    let c1 = d.chain(&[(1500, true)]);
    let want = queue_to_guest(&link, 5000, 6);
    let mut pending = None;
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert!(p.stalled);
    assert_eq!(d.used_idx(), 0, "the two chains taken were put back");
    let c2 = d.chain(&[(1500, true)]);
    let c3 = d.chain(&[(1500, true)]);
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert_eq!((p.used, p.frames), (4, 1));
    for (i, c) in [&c0, &c1, &c2, &c3].iter().enumerate() {
        assert_eq!(d.used(i as u16).0, u32::from(c.0));
    }
    let mut got = Vec::new();
    for (i, c) in [&c0, &c1, &c2, &c3].iter().enumerate() {
        got.extend(d.read(c.1[0], d.used(i as u16).1 as usize));
    }
    assert_eq!(num_buffers(&got), 4);
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
}

#[test]
fn rx_super_frame_of_64k_over_mergeable_buffers() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(true);
    let len = 65549;
    let chains: Vec<(u16, Vec<u64>)> = (0..32).map(|_| d.chain(&[(4096, true)])).collect();
    let want = queue_to_guest(&link, len, 7);
    let p = rx(&mut q, &mem, &link, true, &mut None);
    let n = (HDR_BYTES + len).div_ceil(4096);
    assert_eq!((p.used, p.frames), (n, 1));
    let mut got = Vec::new();
    for (i, c) in chains.iter().take(n).enumerate() {
        let (id, l) = d.used(i as u16);
        assert_eq!(id, u32::from(c.0));
        got.extend(d.read(c.1[0], l as usize));
    }
    assert_eq!(got.len(), HDR_BYTES + len);
    assert_eq!(usize::from(num_buffers(&got)), n);
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
}

#[test]
fn rx_frame_too_big_for_one_chain_is_dropped_and_the_chain_reused() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    let (head, addrs) = d.chain(&[(1000, true)]);
    queue_to_guest(&link, 1500, 8);
    let small = queue_to_guest(&link, 500, 9);
    let p = rx(&mut q, &mem, &link, false, &mut None);
    assert_eq!((p.used, p.frames), (1, 1));
    assert_eq!(stat(&link, "vhost_rx_too_big"), 1);
    assert_eq!(d.used(0), (u32::from(head), (HDR_BYTES + 500) as u32));
    assert_eq!(
        &d.read(addrs[0], HDR_BYTES + 500)[HDR_BYTES..],
        &small[HDR_BYTES..]
    );
}

#[test]
fn rx_frame_larger_than_the_whole_ring_is_dropped() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 4);
    let mut q = d.queue(false);
    for _ in 0..4 {
        d.chain(&[(100, true)]);
    }
    queue_to_guest(&link, 1000, 10);
    let mut pending = None;
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert!(pending.is_none());
    assert_eq!((p.used, stat(&link, "vhost_rx_too_big")), (0, 1));
    // The buffers are still there for a frame that fits.
    queue_to_guest(&link, 300, 11);
    assert_eq!(rx(&mut q, &mem, &link, true, &mut pending).used, 4);
}

#[test]
fn rx_bad_chains_are_returned_empty_and_the_frame_takes_the_next() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    for mrg in [false, true] {
        let before = d.used_idx();
        // A device-readable descriptor, a buffer smaller than the header, memory outside
        // the guest's, then a good one.
        let h0 = d.chain(&[(100, false), (2000, true)]).0;
        let h1 = d.chain(&[(8, true)]).0;
        let h2 = {
            let h = d.link_descs(&[(u64::MAX - 100, 2000, true)]);
            d.offer(h);
            h
        };
        let (h3, a3) = d.chain(&[(2000, true)]);
        let want = queue_to_guest(&link, 700, 12);
        let p = rx(&mut q, &mem, &link, mrg, &mut None);
        assert_eq!((p.used, p.frames), (4, 1), "mrg {mrg}");
        for (k, h) in [h0, h1, h2].iter().enumerate() {
            assert_eq!(d.used(before + k as u16), (u32::from(*h), 0));
        }
        assert_eq!(d.used(before + 3).0, u32::from(h3));
        assert_eq!(
            &d.read(a3[0], HDR_BYTES + 700)[HDR_BYTES..],
            &want[HDR_BYTES..]
        );
    }
    assert_eq!(stat(&link, "vhost_rx_bad_chain"), 6);
}

#[test]
fn rx_ring_not_running_delivers_nothing() {
    let mem = memory();
    let link = link();
    let mut d = Driver::new(&mem, 256);
    let mut q = d.queue(false);
    q.set_ready(false);
    d.chain(&[(2048, true)]);
    queue_to_guest(&link, 100, 13);
    let mut pending = None;
    let p = rx(&mut q, &mem, &link, true, &mut pending);
    assert_eq!((p.used, p.frames), (0, 0));
    assert!(pending.is_some());
}

#[test]
fn avail_index_beyond_the_ring_is_a_ring_error() {
    let mem = memory();
    let link = link();
    let d = Driver::new(&mem, 16);
    let mut q = d.queue(false);
    mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
    let p = tx(&mut q, &mem, &link);
    assert_eq!(p.used, 0);
    assert_eq!(stat(&link, "vhost_ring_errors"), 1);
    queue_to_guest(&link, 100, 14);
    let mut pending = None;
    let mut rq = d.queue(false);
    assert_eq!(rx(&mut rq, &mem, &link, true, &mut pending).used, 0);
    assert!(pending.is_some());
}

/// The same TX and RX paths on virtio-queue's own driver mock (a few chains: see the
/// module docs for its layout).
#[test]
fn mock_split_queue_cross_check() {
    let mem = memory();
    let link = link();
    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let bytes = tx_bytes(100, 15);
    mem.write_slice(&bytes, GuestAddress(BUFS)).unwrap();
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(BUFS, 40, NEXT, 1)),
        RawDescriptor::from(SplitDescriptor::new(BUFS + 40, 72, 0, 0)),
    ];
    mq.add_desc_chains(&descs, 0).unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let p = tx(&mut q, &mem, &link);
    assert_eq!((p.used, p.frames), (1, 1));
    assert_eq!(mq.used().idx().load(), 1);
    assert_eq!(mq.used().ring().ref_at(0).unwrap().load().id(), 0);
    assert_eq!(link.from_guest.pop().unwrap().bytes(), &bytes[HDR_BYTES..]);

    let mq = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let rx_buf = BUFS + 0x10000;
    mq.add_desc_chains(
        &[RawDescriptor::from(SplitDescriptor::new(
            rx_buf, 2048, WRITE, 0,
        ))],
        0,
    )
    .unwrap();
    let mut q: Queue = mq.create_queue().unwrap();
    let want = queue_to_guest(&link, 200, 16);
    let p = rx(&mut q, &mem, &link, true, &mut None);
    assert_eq!((p.used, p.frames), (1, 1));
    let used = mq.used().ring().ref_at(0).unwrap().load();
    assert_eq!((used.id(), used.len()), (0, (HDR_BYTES + 200) as u32));
    let mut got = vec![0u8; HDR_BYTES + 200];
    mem.read_slice(&mut got, GuestAddress(rx_buf)).unwrap();
    assert_eq!(&got[HDR_BYTES..], &want[HDR_BYTES..]);
}

/// A descriptor as a hostile driver may write it.
fn any_desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        (BUFS..BUFS + 0x10000),
        (MEM_BYTES as u64 - 64..MEM_BYTES as u64 + 64),
        Just(0u64),
        Just(u64::MAX - 7),
        any::<u64>(),
    ];
    let len = prop_oneof![
        Just(0u32),
        1u32..200,
        1000u32..70_000,
        Just(u32::MAX),
        any::<u32>(),
    ];
    let flags = 0u16..8; // NEXT, WRITE, INDIRECT in any combination
    let next = 0u16..24; // beyond the 16-entry table too
    (addr, len, flags, next)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random descriptor tables, avail rings and indices (loops, out-of-memory addresses,
    /// zero and huge lengths, nested indirect tables): TX and RX passes never panic, do
    /// bounded work, never publish more than a ring's worth of entries per frame, and
    /// leak no pool slot (`hostile::survive`, which the `vhost_user_rings` fuzz target
    /// runs too).
    #[test]
    fn hostile_rings_are_survived(
        descs in proptest::collection::vec(any_desc(), 16),
        indirect in proptest::collection::vec(any_desc(), 8),
        heads in proptest::collection::vec(0u16..20, 16),
        avail_idx in any::<u16>(),
        event_idx in any::<bool>(),
        mrg in any::<bool>(),
        frame_len in prop_oneof![Just(14usize), 60usize..2000, Just(MAX_FRAME)],
    ) {
        let h = Hostile {
            descs: descs.try_into().unwrap(),
            indirect: indirect.try_into().unwrap(),
            heads: heads.try_into().unwrap(),
            avail_idx,
            event_idx,
            mrg,
            frame_len,
        };
        let link = link();
        prop_assert_eq!(survive(&h, &link), Ok(()));
    }
}
