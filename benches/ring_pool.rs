//! Frame pool, SPSC ring and virtio-net header micro-benchmarks.
//!
//! Cases:
//! - `ring/push_pop/{1,16,64}`: one thread pushes a batch of 1, 16 or 64 frames onto a
//!   `Ring` and pops them back (throughput in frames; no pool traffic, no wake-ups).
//! - `ring/two_thread/{spin,park}`: a producer thread leases a frame, writes an 8-byte
//!   sequence number and pushes it; the consumer (the bench thread) pops, checks the
//!   sequence and releases the slot, 100,000 frames per iteration (throughput in frames/s).
//!   `spin`: the consumer busy-polls an empty ring; `park`: it parks and sleeps in
//!   `poll(2)` on the ring's eventfd, so the producer pays an eventfd write per wake-up.
//! - `pool/lease_release/{1,64}`: lease then release 1 or 64 slots (throughput in frames;
//!   `lease` also zeroes the 12-byte header and the length).
//! - `vnet/emit`: `wire::vnet::VnetHdr::emit` of a TSO header.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnet::pool::{Frame, Pool};
use ringnet::ring::Ring;
use ringnet::wire::vnet::{self, VnetHdr, VNET_HDR_LEN};

/// Ring and pool sizes of a real link (`network::RING_SLOTS`, `network::POOL_SLOTS`).
const RING_SLOTS: usize = ringnet::network::RING_SLOTS;
const POOL_SLOTS: usize = ringnet::network::POOL_SLOTS;
/// Frames moved per iteration of the two-thread case.
const TWO_THREAD_FRAMES: u64 = 100_000;

fn bench_push_pop(c: &mut Criterion) {
    let pool = Pool::new(POOL_SLOTS).unwrap();
    let ring = Ring::new(RING_SLOTS).unwrap();
    let mut g = c.benchmark_group("ring/push_pop");
    for batch in [1usize, 16, 64] {
        let mut frames: Vec<Frame> = (0..batch).map(|_| pool.lease().unwrap()).collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(batch.to_string(), |b| {
            b.iter(|| {
                for f in frames.drain(..) {
                    assert!(ring.push(f));
                }
                while let Some(f) = ring.pop() {
                    frames.push(f);
                }
                black_box(frames.len())
            })
        });
        for f in frames {
            drop(f);
        }
    }
    g.finish();
    assert_eq!(ring.stats().drops.load(Ordering::Relaxed), 0);
    assert_eq!(pool.available(), POOL_SLOTS);
}

#[derive(Clone, Copy)]
enum Wait {
    Spin,
    Park,
}

/// Move `n` frames producer → consumer through a fresh ring; returns the elapsed time.
fn two_thread_run(pool: &Pool, ring: &Ring, n: u64, wait: Wait) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0u64;
            while seq < n {
                // Wait for room rather than letting the ring drop (it is lossy by design).
                if ring.len() >= RING_SLOTS {
                    std::hint::spin_loop();
                    continue;
                }
                let Some(mut f) = pool.lease() else {
                    std::hint::spin_loop();
                    continue;
                };
                f.capacity_mut()[..8].copy_from_slice(&seq.to_le_bytes());
                f.set_len(64);
                assert!(ring.push(f));
                seq += 1;
            }
        });
        let mut expect = 0u64;
        while expect < n {
            let Some(f) = ring.pop() else {
                match wait {
                    Wait::Spin => std::hint::spin_loop(),
                    Wait::Park => {
                        if ring.park() {
                            let mut pfd = libc::pollfd {
                                fd: ring.fd(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: one valid pollfd on the stack; bounded 100 ms timeout.
                            unsafe { libc::poll(&mut pfd, 1, 100) };
                        }
                        ring.unpark();
                    }
                }
                continue;
            };
            let got = u64::from_le_bytes(f.bytes()[..8].try_into().unwrap());
            assert_eq!(got, expect, "ring reordered or lost a frame");
            drop(f);
            expect += 1;
        }
    });
    start.elapsed()
}

fn bench_two_thread(c: &mut Criterion) {
    let pool = Pool::new(POOL_SLOTS).unwrap();
    let ring = Ring::new(RING_SLOTS).unwrap();
    let mut g = c.benchmark_group("ring/two_thread");
    g.throughput(Throughput::Elements(TWO_THREAD_FRAMES));
    g.sample_size(20);
    for (name, wait) in [("spin", Wait::Spin), ("park", Wait::Park)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| two_thread_run(&pool, &ring, TWO_THREAD_FRAMES, wait))
                    .sum()
            })
        });
    }
    g.finish();
    assert_eq!(ring.stats().drops.load(Ordering::Relaxed), 0);
    assert_eq!(pool.available(), POOL_SLOTS);
}

fn bench_pool(c: &mut Criterion) {
    let pool = Pool::new(POOL_SLOTS).unwrap();
    let mut g = c.benchmark_group("pool/lease_release");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1", |b| {
        b.iter(|| {
            let f = pool.lease().unwrap();
            drop(black_box(f));
        })
    });
    let mut held: Vec<Frame> = Vec::with_capacity(64);
    g.throughput(Throughput::Elements(64));
    g.bench_function("64", |b| {
        b.iter(|| {
            held.extend((0..64).map(|_| pool.lease().unwrap()));
            for f in held.drain(..) {
                drop(black_box(f));
            }
        })
    });
    g.finish();
    assert_eq!(pool.available(), POOL_SLOTS);
    assert_eq!(pool.lease_failures(), 0);
}

fn bench_vnet(c: &mut Criterion) {
    let hdr = VnetHdr {
        flags: vnet::flags::NEEDS_CSUM,
        gso_type: vnet::gso::TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let mut g = c.benchmark_group("vnet");
    let mut out = [0u8; VNET_HDR_LEN];
    g.bench_function("emit", |b| {
        b.iter(|| {
            black_box(&hdr).emit(black_box(&mut out));
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_push_pop,
    bench_two_thread,
    bench_pool,
    bench_vnet
);
criterion_main!(benches);
