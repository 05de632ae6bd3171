//! Driver-independent socket state: [`SockState`] (the caller-visible state of one host
//! socket and its buffers), its [`ByteRing`]s, and the [`BufferPool`] they draw from. No
//! syscalls here: the drivers hand in the one read this needs as a closure.
//!
//! # Buffers
//! - Stream sockets hold one [`ByteRing`] per direction. A ring's memory is taken from the
//!   pool when the first byte needs it — [`SMALL_BUFFER`] bytes first, regrown (data copied
//!   to the start) to `Limits::rx_buffer` / `tx_buffer` only when more is needed and nothing
//!   is lent — and handed back as soon as the ring is empty and not lent to the kernel, so an
//!   idle socket holds no data buffer and 10,000 flows exchanging small messages at once hold
//!   4 KiB each, not 256 KiB. The pool keeps spares so the steady state does not allocate.
//! - A transmit ring's head data may be *lent* (to an in-flight io_uring `Send`): while lent,
//!   the ring's memory is never freed or moved and the lent bytes are not consumed by us.
//! - Stream receive rings serve only [`SockState::recv`] callers: the stack receives with
//!   [`SockState::recv_stream_into`], straight from the socket into its own memory.
//! - Datagram sockets queue `Vec<u8>`s (at most `rx_datagrams` / `tx_datagrams`), recycled
//!   through the pool's spare vectors.
//! - Spares are dropped when the link goes idle ([`BufferPool::trim`], through
//!   `Driver::trim`), so an idle driver holds no data buffer at all, spare or lent.

use std::collections::VecDeque;
use std::io;

use super::{Event, Limits, Recv, SockKind, Token};

/// Spare data buffers kept per size class (each one `rx_buffer` / `tx_buffer` bytes).
const SPARE_BUFFERS: usize = 16;
/// Spare small buffers kept.
const SPARE_SMALL: usize = 256;
/// First allocation of a ring: enough for a request or a response; a ring grows to its
/// full size only when more is needed (and nothing is lent).
pub const SMALL_BUFFER: usize = 4096;
/// Spare datagram vectors kept, and the largest capacity worth keeping.
const SPARE_VECS: usize = 256;
const SPARE_VEC_MAX_CAP: usize = 9216;

/// Fixed-size byte buffers, recycled.
struct SizeClass {
    size: usize,
    max_spare: usize,
    spare: Vec<Box<[u8]>>,
}

/// Every buffer source of one driver.
pub struct BufferPool {
    pub limits: Limits,
    /// By size: small, rx, tx (sizes may coincide; the first match serves).
    classes: [SizeClass; 3],
    vecs: Vec<Vec<u8>>,
    /// Landing area for datagram receive (`recv(2)` is synchronous, so one is enough).
    pub scratch: Box<[u8]>,
}

impl BufferPool {
    pub fn new(limits: Limits) -> BufferPool {
        let class = |size: usize, max_spare| SizeClass {
            size: size.max(1),
            max_spare,
            spare: Vec::new(),
        };
        BufferPool {
            limits,
            classes: [
                class(SMALL_BUFFER, SPARE_SMALL),
                class(limits.rx_buffer, SPARE_BUFFERS),
                class(limits.tx_buffer, SPARE_BUFFERS),
            ],
            vecs: Vec::new(),
            scratch: vec![0u8; limits.max_datagram.max(1)].into_boxed_slice(),
        }
    }

    fn take(&mut self, size: usize) -> Box<[u8]> {
        let spare = self
            .classes
            .iter_mut()
            .find(|c| c.size == size)
            .and_then(|c| c.spare.pop());
        // `vec![0; n]` is calloc: a fresh mmap-sized buffer is zero pages, no memset.
        spare.unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
    }

    fn give(&mut self, b: Box<[u8]>) {
        if let Some(c) = self.classes.iter_mut().find(|c| c.size == b.len()) {
            if c.spare.len() < c.max_spare {
                c.spare.push(b);
            }
        }
    }

    fn vec_from(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.vecs.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        v
    }

    /// Drop every spare buffer and vector (the link went idle: give the memory back);
    /// returns the bytes of buffer capacity dropped. Buffers in use are kept.
    pub fn trim(&mut self) -> usize {
        let mut bytes = 0;
        for c in &mut self.classes {
            bytes += c.spare.len() * c.size;
            c.spare = Vec::new();
        }
        bytes += self.vecs.iter().map(Vec::capacity).sum::<usize>();
        self.vecs = Vec::new();
        bytes
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.vecs.len() < SPARE_VECS && v.capacity() <= SPARE_VEC_MAX_CAP {
            self.vecs.push(v);
        }
    }
}

/// A byte ring whose memory exists only while it holds data (or a region is lent). Memory
/// comes in two sizes: [`SMALL_BUFFER`] first, then `limit` when that is not enough.
pub struct ByteRing {
    buf: Option<Box<[u8]>>,
    /// Most bytes the ring may hold (`Limits::rx_buffer` / `tx_buffer`).
    limit: usize,
    head: usize,
    len: usize,
    /// The head data is lent to a reader (an in-flight `Send`).
    lent_data: bool,
}

impl ByteRing {
    fn new(limit: usize) -> ByteRing {
        ByteRing {
            buf: None,
            limit: limit.max(1),
            head: 0,
            len: 0,
            lent_data: false,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn mem_cap(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }

    fn can_move(&self) -> bool {
        !self.lent_data
    }

    /// Bytes that can be added now (the memory cannot grow while lent).
    pub fn room(&self) -> usize {
        if self.buf.is_some() && !self.can_move() {
            self.mem_cap() - self.len
        } else {
            self.limit - self.len
        }
    }

    /// Start and length of the free contiguous region after the data, in the memory held.
    fn free_region(&self) -> (usize, usize) {
        let cap = self.mem_cap();
        if cap == 0 {
            return (0, 0);
        }
        let tail = (self.head + self.len) % cap;
        let n = if self.len == cap {
            0
        } else if tail >= self.head {
            cap - tail
        } else {
            self.head - tail
        };
        (tail, n)
    }

    /// Make `want` bytes (at most the room) free: take memory if none, grow to `limit`
    /// (copying the data to the start) if the small buffer is too small and nothing is lent.
    fn reserve(&mut self, want: usize, bufs: &mut BufferPool) {
        let want = want.min(self.limit - self.len).max(1);
        let cap = self.mem_cap();
        if cap == 0 {
            let size = if want <= SMALL_BUFFER {
                SMALL_BUFFER.min(self.limit)
            } else {
                self.limit
            };
            self.buf = Some(bufs.take(size));
            self.head = 0;
        } else if cap - self.len < want && cap < self.limit && self.can_move() {
            let mut new = bufs.take(self.limit);
            if let Some(old) = self.buf.take() {
                let first = self.len.min(cap - self.head);
                new[..first].copy_from_slice(&old[self.head..self.head + first]);
                new[first..self.len].copy_from_slice(&old[..self.len - first]);
                bufs.give(old);
            }
            self.head = 0;
            self.buf = Some(new);
        }
    }

    /// Let `f` write into the free contiguous region (a synchronous `recv(2)`); commits what
    /// it reports written. `want` sizes the memory (see [`ByteRing::reserve`]).
    pub fn fill(
        &mut self,
        bufs: &mut BufferPool,
        want: usize,
        f: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.reserve(want, bufs);
        let (start, n) = self.free_region();
        let r = match &mut self.buf {
            Some(mem) => f(&mut mem[start..start + n]),
            None => f(&mut []),
        };
        if let Ok(k) = r {
            self.len += k.min(n);
        }
        r
    }

    /// Copy as much of `data` in as fits; returns the count.
    pub fn push(&mut self, mut data: &[u8], bufs: &mut BufferPool) -> usize {
        self.reserve(data.len(), bufs);
        let mut total = 0;
        while !data.is_empty() {
            let (start, n) = self.free_region();
            let n = n.min(data.len());
            let Some(mem) = &mut self.buf else { break };
            if n == 0 {
                break;
            }
            mem[start..start + n].copy_from_slice(&data[..n]);
            self.len += n;
            total += n;
            data = &data[n..];
        }
        total
    }

    /// The contiguous data at the head.
    pub fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.head..(self.head + self.len).min(b.len())],
            None => &[],
        }
    }

    /// Lend the contiguous data at the head for reading (a send); ends with
    /// [`ByteRing::consume`] or [`ByteRing::unlend`].
    pub fn lend_data(&mut self) -> (*const u8, usize) {
        let d = self.data();
        let r = (d.as_ptr(), d.len());
        self.lent_data = true;
        r
    }

    pub fn unlend(&mut self) {
        self.lent_data = false;
    }

    /// Drop `n` bytes from the head (ends a lend of the data).
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.lent_data = false;
        let cap = self.mem_cap().max(1);
        self.head = (self.head + n) % cap;
        self.len -= n;
        // Rewind to the start for larger contiguous regions.
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Move still-queued data of a small first-tier buffer into a full-size one, once nothing
    /// is lent. A stream socket whose `Send` is always in flight never has an unlent moment
    /// inside `push`, so without this its transmit ring would stay at [`SMALL_BUFFER`].
    pub fn grow(&mut self, bufs: &mut BufferPool) {
        if self.len > 0 && self.mem_cap() < self.limit && self.can_move() {
            self.reserve(self.limit, bufs);
        }
    }

    /// Drop all data (after a fatal error). Not while lent.
    fn clear(&mut self) {
        if self.can_move() {
            self.head = 0;
            self.len = 0;
        }
    }

    #[cfg(test)]
    pub fn holds_memory(&self) -> bool {
        self.buf.is_some()
    }

    /// Give the memory back when nothing is stored and nothing is lent.
    fn release(&mut self, bufs: &mut BufferPool) {
        if self.len == 0 && self.can_move() {
            self.head = 0;
            if let Some(b) = self.buf.take() {
                bufs.give(b);
            }
        }
    }
}

/// Progress of a requested `shutdown(SHUT_WR)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shut {
    No,
    Wanted,
    Done,
}

/// Buffers and caller-visible state of one socket.
pub struct SockState {
    pub kind: SockKind,
    pub token: Token,
    pub rx: ByteRing,
    pub tx: ByteRing,
    pub drx: VecDeque<Vec<u8>>,
    pub dtx: VecDeque<Vec<u8>>,
    pub eof: bool,
    pub err: Option<io::Error>,
    pub shut: Shut,
    /// A `Readable` went out and `recv` has not been called since.
    readable_told: bool,
    /// A `send` could not take everything: report `Writable` when space frees up.
    tx_blocked: bool,
    /// Closed by the caller: report nothing more.
    pub quiet: bool,
}

impl SockState {
    pub fn new(kind: SockKind, token: Token, limits: &Limits) -> SockState {
        SockState {
            kind,
            token,
            rx: ByteRing::new(limits.rx_buffer),
            tx: ByteRing::new(limits.tx_buffer),
            drx: VecDeque::new(),
            dtx: VecDeque::new(),
            eof: false,
            err: None,
            shut: Shut::No,
            readable_told: false,
            tx_blocked: false,
            quiet: false,
        }
    }

    pub fn is_stream(&self) -> bool {
        self.kind == SockKind::Tcp
    }

    /// Receive may proceed: no EOF/error yet and room for more.
    pub fn rx_room(&self, limits: &Limits) -> bool {
        if self.eof || self.err.is_some() {
            return false;
        }
        if self.is_stream() {
            self.rx.room() > 0
        } else {
            self.drx.len() < limits.rx_datagrams
        }
    }

    pub fn tx_pending(&self) -> bool {
        if self.is_stream() {
            self.tx.len() > 0
        } else {
            !self.dtx.is_empty()
        }
    }

    pub fn send(&mut self, data: &[u8], bufs: &mut BufferPool) -> usize {
        if self.err.is_some() || self.shut != Shut::No || self.quiet {
            return 0;
        }
        let n = if self.is_stream() {
            self.tx.push(data, bufs)
        } else if data.len() > bufs.limits.max_datagram {
            return 0; // never fits: no Writable will follow
        } else if self.dtx.len() >= bufs.limits.tx_datagrams {
            0
        } else {
            let v = bufs.vec_from(data);
            self.dtx.push_back(v);
            data.len()
        };
        if n < data.len() {
            self.tx_blocked = true;
        }
        n
    }

    /// Stream: bytes accepted by `send` and not yet written; datagram: datagrams queued.
    pub fn send_pending(&self) -> usize {
        if self.is_stream() {
            self.tx.len()
        } else {
            self.dtx.len()
        }
    }

    pub fn send_space(&self, limits: &Limits) -> usize {
        if self.err.is_some() || self.shut != Shut::No || self.quiet {
            0
        } else if self.is_stream() {
            self.tx.room()
        } else {
            limits.tx_datagrams.saturating_sub(self.dtx.len())
        }
    }

    pub fn recv(
        &mut self,
        f: &mut dyn FnMut(&[u8]) -> usize,
        bufs: &mut BufferPool,
    ) -> Result<usize, Recv> {
        self.readable_told = false;
        if self.is_stream() {
            let d = self.rx.data();
            if !d.is_empty() {
                let n = f(d).min(d.len());
                self.rx.consume(n);
                self.rx.release(bufs);
                return Ok(n);
            }
        } else if let Some(d) = self.drx.front() {
            let len = d.len();
            if f(d) == 0 && len > 0 {
                return Ok(0);
            }
            if let Some(v) = self.drx.pop_front() {
                bufs.recycle(v);
            }
            return Ok(len);
        }
        if let Some(e) = &self.err {
            return Err(Recv::Error(clone_error(e)));
        }
        if self.eof {
            return Err(Recv::Eof);
        }
        Err(Recv::Empty)
    }

    /// Streams, receive on demand: bytes already held go first; else, when the socket may
    /// be readable (`*ready`), one `read` (the driver's `recv(2)` on the socket) straight
    /// into `out` (no copy through the ring). `EAGAIN` clears `*ready`: the driver's
    /// readiness event sets it again. Results as for [`SockState::recv`].
    pub fn recv_stream_into(
        &mut self,
        ready: &mut bool,
        out: &mut [u8],
        bufs: &mut BufferPool,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> Result<usize, Recv> {
        if self.rx.len() > 0 || !*ready || out.is_empty() {
            return self.recv_copy(out, bufs);
        }
        self.readable_told = false;
        if let Some(e) = &self.err {
            return Err(Recv::Error(clone_error(e)));
        }
        if self.eof {
            return Err(Recv::Eof);
        }
        loop {
            match read(out) {
                Ok(0) => {
                    self.eof = true;
                    return Err(Recv::Eof);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *ready = false;
                    return Err(Recv::Empty);
                }
                Err(e) => {
                    let r = Recv::Error(clone_error(&e));
                    self.err = Some(e);
                    self.tx.clear();
                    self.release(bufs);
                    return Err(r);
                }
            }
        }
    }

    /// [`SockState::recv`] into `out`: a datagram longer than `out` loses its tail.
    pub fn recv_copy(&mut self, out: &mut [u8], bufs: &mut BufferPool) -> Result<usize, Recv> {
        self.recv(
            &mut |d| {
                let n = d.len().min(out.len());
                out[..n].copy_from_slice(&d[..n]);
                n.max(usize::from(d.is_empty()))
            },
            bufs,
        )
    }

    /// Streams, for [`SockState::recv`] callers: when nothing is held and the socket may be
    /// readable, one `read` (the driver's `recv(2)` on the socket) into the ring first.
    pub fn fill_stream(
        &mut self,
        ready: &mut bool,
        bufs: &mut BufferPool,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) {
        if self.rx.len() > 0 || !*ready || self.eof || self.err.is_some() {
            return;
        }
        loop {
            match self.rx.fill(bufs, usize::MAX, &mut read) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *ready = false,
                Err(e) => {
                    self.err = Some(e);
                    self.tx.clear();
                }
            }
            break;
        }
        self.release(bufs);
    }

    /// A datagram arrived.
    pub fn push_datagram(&mut self, data: &[u8], bufs: &mut BufferPool) {
        let v = bufs.vec_from(data);
        self.drx.push_back(v);
    }

    /// The datagram at the head of the send queue left (or failed).
    pub fn pop_datagram(&mut self, bufs: &mut BufferPool) {
        if let Some(v) = self.dtx.pop_front() {
            bufs.recycle(v);
        }
    }

    pub fn notify_readable(&mut self, out: &mut Vec<Event>) {
        if !self.readable_told && !self.quiet {
            self.readable_told = true;
            out.push(Event::Readable { token: self.token });
        }
    }

    pub fn notify_writable(&mut self, out: &mut Vec<Event>, limits: &Limits) {
        if self.tx_blocked && !self.quiet && self.send_space(limits) > 0 {
            self.tx_blocked = false;
            out.push(Event::Writable { token: self.token });
        }
        if self.tx_blocked && (self.err.is_some() || self.quiet) {
            self.tx_blocked = false;
            if !self.quiet {
                out.push(Event::Writable { token: self.token });
            }
        }
    }

    /// The socket failed: keep the error for `recv`, drop unsent data, tell the caller.
    pub fn fail(&mut self, e: io::Error, bufs: &mut BufferPool, out: &mut Vec<Event>) {
        if self.err.is_none() {
            self.err = Some(e);
        }
        // Datagram queues are left alone: their head may be lent to a send (datagram sockets
        // never fail anyway); `free` empties them.
        self.tx.clear();
        self.notify_readable(out);
        self.notify_writable(out, &bufs.limits);
        self.release(bufs);
    }

    /// Return memory that holds nothing (and is not lent).
    pub fn release(&mut self, bufs: &mut BufferPool) {
        self.rx.release(bufs);
        self.tx.release(bufs);
    }

    /// Return everything; only once no operation can touch the buffers any more.
    pub fn free(&mut self, bufs: &mut BufferPool) {
        self.tx.lent_data = false;
        self.rx.clear();
        self.tx.clear();
        self.release(bufs);
        while let Some(v) = self.drx.pop_front() {
            bufs.recycle(v);
        }
        while let Some(v) = self.dtx.pop_front() {
            bufs.recycle(v);
        }
    }
}

/// Duplicate an `io::Error` (it is not `Clone`); keeps the errno when there is one.
pub fn clone_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bufs(cap: usize) -> BufferPool {
        BufferPool::new(Limits {
            rx_buffer: cap,
            tx_buffer: cap,
            ..Limits::default()
        })
    }

    #[test]
    fn ring_wraps_and_releases() {
        let mut p = bufs(8);
        let mut r = ByteRing::new(8);
        assert!(!r.holds_memory());
        assert_eq!(r.push(b"abcdef", &mut p), 6);
        r.consume(4);
        assert_eq!(r.push(b"ghijklmn", &mut p), 6); // 2 left + 6 = full
        assert_eq!(r.data(), b"efgh");
        r.consume(4);
        assert_eq!(r.data(), b"ijkl");
        r.consume(4);
        r.release(&mut p);
        assert!(!r.holds_memory());
    }

    #[test]
    fn trim_drops_the_spares_and_keeps_buffers_in_use() {
        let mut p = bufs(1 << 16);
        let (mut a, mut b) = (ByteRing::new(1 << 16), ByteRing::new(1 << 16));
        assert_eq!(a.push(b"spare soon", &mut p), 10);
        assert_eq!(b.push(b"in use", &mut p), 6);
        a.consume(10);
        a.release(&mut p); // its small buffer becomes a spare
        assert_eq!(p.trim(), SMALL_BUFFER);
        assert_eq!(p.trim(), 0);
        assert_eq!(b.data(), b"in use");
        // The pool still serves: a fresh buffer is allocated.
        assert_eq!(a.push(b"again", &mut p), 5);
        assert_eq!(a.data(), b"again");
    }

    #[test]
    fn transmit_ring_outgrows_the_first_tier_while_sends_are_in_flight() {
        let mut p = bufs(1 << 20);
        let mut r = ByteRing::new(1 << 20);
        assert_eq!(r.push(b"hello", &mut p), 5); // a small first write: small buffer
        let (_, n) = r.lend_data(); // its Send is in flight
        assert_eq!(n, 5);
        assert!(r.room() <= SMALL_BUFFER, "cannot grow while lent");
        let big = vec![7u8; 64 * 1024];
        let took = r.push(&big, &mut p);
        assert!(took < SMALL_BUFFER);
        r.consume(5); // the Send completed; more data is queued
        r.grow(&mut p);
        assert_eq!(r.room(), (1 << 20) - took, "grown to the full size");
        assert_eq!(r.data().len(), took);
        assert!(r.data().iter().all(|&b| b == 7));
    }
}
