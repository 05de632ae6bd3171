//! SPSC frame rings with eventfd wake-ups.
//!
//! # Theory of operation
//!
//! A guest link has two rings of [`Frame`] handles: `from_guest` (VMM → poll thread) and
//! `to_guest` (poll thread → VMM). Each ring has exactly one producer and one consumer
//! thread; the queue itself is crossbeam's bounded lock-free `ArrayQueue`, whose push/pop
//! pair publishes the producer's writes into the slot to the consumer.
//!
//! Wake-ups: every ring owns an eventfd. A consumer that is about to sleep calls
//! [`Ring::park`] (which re-checks the queue, closing the lost-wake-up race) and then blocks
//! on the fd; a producer that pushes while the consumer is parked writes the eventfd once.
//! A busy consumer therefore costs the producer no syscall at all. [`Ring::notify`] wakes
//! unconditionally, for consumers that poll the fd instead of parking (the VMM side).
//!
//! A full ring drops the frame — like a lossy NIC, never blocking the producer — and counts
//! the drop ([`RingStats::drops`]); the frame's slot goes back to its pool (dropping a
//! [`Frame`] returns it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;

use crate::pcap::Capture;

use crate::pool::Frame;

/// Errors creating a ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring size {0} is out of range (1..=65536)")]
    BadSize(usize),
    #[error("creating the ring's eventfd failed: {0}")]
    EventFd(io::Error),
}

/// Frame and byte counters of one ring.
#[derive(Debug, Default)]
pub struct RingStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Every frame dropped on the way to this ring (ring full, no pool slot, undeliverable).
    pub drops: AtomicU64,
    /// Of `drops`, those because the ring was full.
    pub full: AtomicU64,
}

/// A non-blocking eventfd used as a wake-up signal.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the fd readable (one write).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A failure can only be
        // EAGAIN (counter saturated), which still leaves the fd readable: nothing to do.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Reset the counter (non-blocking).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd; EAGAIN
        // (nothing pending) is the expected failure and harmless.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// The raw fd, for polling.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A bounded single-producer single-consumer ring of frames.
#[derive(Debug)]
pub struct Ring {
    queue: ArrayQueue<Frame>,
    wake: EventFd,
    parked: AtomicBool,
    stats: RingStats,
    /// A packet capture copying every frame pushed ([`Ring::tap`]); unset: one branch.
    capture: OnceLock<Arc<Capture>>,
}

impl Ring {
    /// A ring holding up to `size` frames.
    pub fn new(size: usize) -> Result<Ring, RingError> {
        if size == 0 || size > 65536 {
            return Err(RingError::BadSize(size));
        }
        Ok(Ring {
            queue: ArrayQueue::new(size),
            wake: EventFd::new().map_err(RingError::EventFd)?,
            parked: AtomicBool::new(false),
            stats: RingStats::default(),
            capture: OnceLock::new(),
        })
    }

    /// Producer: enqueue `frame` (its length goes into the byte counter). On a full ring
    /// the frame is dropped (its slot returns to the pool), the drop counted, and `false`
    /// returned.
    pub fn push(&self, frame: Frame) -> bool {
        let len = frame.len() as u64;
        // Copied before the push (the frame moves), offered after it succeeded.
        let copy = (self.capture.get())
            .filter(|c| c.is_on())
            .map(|c| (c, frame.bytes().to_vec()));
        match self.queue.push(frame) {
            Ok(()) => {
                if let Some((c, bytes)) = copy {
                    c.offer_owned(bytes);
                }
                self.stats.frames.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(len, Ordering::Relaxed);
                if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
                    self.notify();
                }
                true
            }
            Err(_frame) => {
                self.stats.drops.fetch_add(1, Ordering::Relaxed);
                self.stats.full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Consumer: the next frame, if any.
    pub fn pop(&self) -> Option<Frame> {
        self.queue.pop()
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Consumer: announce that it is about to block on [`Ring::fd`]. Returns `false` (and
    /// stays unparked) when frames arrived meanwhile, so the consumer must not block.
    pub fn park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Consumer: woken up (or gave up sleeping); clear the flag and the eventfd.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
        self.drain_fd();
    }

    /// Wake the consumer: one eventfd write.
    pub fn notify(&self) {
        self.wake.notify();
    }

    /// Reset the eventfd counter (non-blocking).
    pub fn drain_fd(&self) {
        self.wake.drain();
    }

    /// The eventfd that becomes readable on a wake-up.
    pub fn fd(&self) -> RawFd {
        self.wake.fd()
    }

    /// Counters.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// Attach a packet capture: every frame pushed from now on is copied into it. Fails
    /// (returning it) when one is attached already.
    pub fn tap(&self, capture: Arc<Capture>) -> Result<(), Arc<Capture>> {
        self.capture.set(capture)
    }

    /// The attached capture, if any.
    pub fn capture(&self) -> Option<&Arc<Capture>> {
        self.capture.get()
    }

    /// Count a frame dropped before it reached the ring (e.g. the pool was empty).
    pub fn count_drop(&self) {
        self.stats.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Drop every queued frame, returning the slots (shutdown).
    pub fn clear(&self) {
        while self.queue.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;
    use std::sync::Arc;

    /// Wait up to `ms` milliseconds (0: just check) for `fd` to be readable.
    fn wait_readable(fd: RawFd, ms: libc::c_int) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    fn fd_readable(fd: RawFd) -> bool {
        wait_readable(fd, 0)
    }

    #[test]
    fn full_ring_drops_and_returns_the_slot() {
        let pool = Pool::new(4).unwrap();
        let ring = Ring::new(2).unwrap();
        for _ in 0..2 {
            assert!(ring.push(pool.lease().unwrap()));
        }
        assert!(!ring.push(pool.lease().unwrap()));
        assert_eq!(ring.stats().drops.load(Ordering::Relaxed), 1);
        assert_eq!(pool.available(), 2);
        ring.clear();
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn parked_consumer_is_woken_once() {
        let pool = Pool::new(4).unwrap();
        let ring = Ring::new(4).unwrap();
        assert!(!fd_readable(ring.fd()));
        assert!(ring.park());
        ring.push(pool.lease().unwrap());
        assert!(fd_readable(ring.fd()));
        ring.unpark();
        assert!(!fd_readable(ring.fd()));
        // Not parked: no syscall, no wake-up.
        ring.push(pool.lease().unwrap());
        assert!(!fd_readable(ring.fd()));
        // Parking with frames queued refuses to park.
        assert!(!ring.park());
        ring.clear();
    }

    /// Two threads move 1,000,000 frames through a ring and back through the pool; order and
    /// contents are checked on the consumer side.
    #[test]
    fn two_thread_stress_keeps_order_and_contents() {
        const N: u64 = 1_000_000;
        let pool = Arc::new(Pool::new(64).unwrap());
        let ring = Arc::new(Ring::new(32).unwrap());
        let (p, r) = (pool.clone(), ring.clone());
        let producer = std::thread::spawn(move || {
            let mut seq = 0u64;
            while seq < N {
                let Some(mut f) = p.lease() else {
                    std::thread::yield_now();
                    continue;
                };
                let len = 8 + (seq % 57) as usize;
                let buf = f.capacity_mut();
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                for (i, b) in buf[8..len].iter_mut().enumerate() {
                    *b = (seq as u8).wrapping_add(i as u8);
                }
                f.set_len(len);
                // The ring is large relative to the consumer's pace only sometimes: wait for
                // room rather than dropping, so the sequence has no gaps.
                while r.len() == 32 {
                    std::thread::yield_now();
                }
                assert!(r.push(f));
                seq += 1;
            }
        });
        let mut expect = 0u64;
        while expect < N {
            let Some(f) = ring.pop() else {
                if ring.park() {
                    wait_readable(ring.fd(), 10);
                }
                ring.unpark();
                continue;
            };
            let bytes = f.bytes();
            assert_eq!(bytes.len(), 8 + (expect % 57) as usize);
            assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), expect);
            for (i, b) in bytes[8..].iter().enumerate() {
                assert_eq!(*b, (expect as u8).wrapping_add(i as u8));
            }
            drop(f);
            expect += 1;
        }
        producer.join().unwrap();
        assert_eq!(ring.stats().frames.load(Ordering::Relaxed), N);
        assert_eq!(ring.stats().drops.load(Ordering::Relaxed), 0);
        assert_eq!(pool.available(), 64);
    }
}
