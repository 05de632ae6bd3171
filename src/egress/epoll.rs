//! epoll (mio) egress: [`EpollIo`], the [`SockIo`] of [`EpollDriver`], the fallback when
//! io_uring cannot be set up (the socket table, `open`, the caller's side of send and
//! receive, `close`'s decision and the `wait` loop are shared: `super::driver`).
//!
//! # Theory of operation
//!
//! Completion semantics are emulated over readiness. Every socket is a raw nonblocking fd
//! (created by [`super::sys::socket`], so TCP, UDP and ping sockets take the same path)
//! registered with `mio::Poll` through `SourceFd` for `READABLE | WRITABLE`, edge-triggered;
//! its mio token is its slab [`Key`] packed with the tag [`SOCK`] (a watched fd's:
//! `Key::fixed(index)` with [`WATCH`]). A socket remembers the readiness it was told about
//! (`rx_ready`, `tx_ready`) until a syscall returns `EAGAIN`. The work (reads, writes,
//! shutdown) happens inside `wait`, for the sockets on the `dirty` list: those that got an
//! event, or whose caller sent or asked for a shutdown since.
//!
//! - connect: `connect(2)` returns `EINPROGRESS`; the first event reads `SO_ERROR`: an error
//!   fails the connect, writability completes it. Timeouts sit in a deadline heap that `wait`
//!   checks (it never sleeps past the next deadline).
//! - `from_host`, stream: readiness becomes a `Readable` event; the bytes are read on
//!   demand by `recv_into` (one `recv(2)` straight into the caller's memory, e.g. smoltcp's
//!   transmit buffer) or `recv` (through the rx ring). A caller that stops taking leaves
//!   the kernel buffer filling (backpressure).
//! - `from_host`, datagram: `recv(2)` while `rx_ready` and the queue has room, through the
//!   driver's one landing buffer into the queue.
//! - `to_host`: `send(2)` of the ring head while `tx_ready`.
//! - watched fds: registered edge-triggered, and re-registered (`EPOLL_CTL_MOD`) at the start
//!   of the `wait` after they fired. `EPOLL_CTL_MOD` re-checks readiness and queues the fd
//!   again if it is still readable, so an fd the caller did not drain is reported again:
//!   level-triggered behaviour at one `epoll_ctl` per wake-up.
//! - close: synchronous (no kernel op holds our buffers). A graceful close with unsent data
//!   keeps flushing for up to [`CLOSE_LINGER`](super::CLOSE_LINGER).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll};

use super::driver::{
    connect_timed_out, Connect, Sock, SockDriver, SockIo, SockPhase, SockRef, SockTable, Touch,
    Watch,
};
use super::state::{BufferPool, Shut};
use super::sys;
use super::{EgressDriver, EgressError, Event, Limits, Token};
use crate::slab::Key;

/// The epoll implementation of [`super::Driver`].
pub type EpollDriver = SockDriver<EpollIo>;

/// Tag of a socket's mio token.
const SOCK: u8 = 0;
/// Tag of a watched fd's mio token.
const WATCH: u8 = 1;

/// The mio token of `key` with `tag` (64-bit targets: the packed key fits in usize).
fn mio_token(tag: u8, key: Key) -> mio::Token {
    mio::Token(key.pack(tag) as usize)
}

/// Per-socket state of epoll ([`Sock::io`]).
pub struct EpollSock {
    /// Writable as far as we know: no `send(2)` has hit `EAGAIN` since readiness said so.
    tx_ready: bool,
    /// On the dirty list already.
    dirty: bool,
}

/// The epoll mechanism: the poll, the watched fds, the dirty list and the deadlines.
pub struct EpollIo {
    poll: Poll,
    mevents: mio::Events,
    watches: Vec<Watch>,
    dirty: Vec<Key>,
    /// Connect timeouts and graceful-close deadlines.
    deadlines: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl EpollIo {
    fn mark_dirty(&mut self, s: &mut Sock<EpollSock>, key: Key) {
        if !s.io.dirty {
            s.io.dirty = true;
            self.dirty.push(key);
        }
    }

    fn process_dirty(&mut self, t: &mut SockTable<EpollSock>) {
        let mut list = std::mem::take(&mut self.dirty);
        for &key in &list {
            let close = match t.entry(key) {
                Some(at) => {
                    at.s.io.dirty = false;
                    at.s.work(at.bufs, at.ready)
                }
                None => false,
            };
            if close {
                self.close_now(t, key);
            }
        }
        list.clear();
        list.append(&mut self.dirty);
        self.dirty = list;
    }

    fn close_now(&mut self, t: &mut SockTable<EpollSock>, key: Key) {
        if let Some(s) = t.remove(key) {
            let fd = s.fd.as_raw_fd();
            if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                tracing::debug!(error = %e, "deregister failed");
            }
        }
    }

    fn expire(&mut self, t: &mut SockTable<EpollSock>, now: Instant) {
        while let Some(&Reverse((at, key))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(at) = t.entry(key) else {
                continue;
            };
            match at.s.phase {
                SockPhase::Connecting => at.s.connected(Err(connect_timed_out()), at.ready),
                SockPhase::Lingering => {
                    tracing::debug!(?key, "graceful close timed out with unsent data");
                    self.close_now(t, key);
                }
                _ => {}
            }
        }
    }

    fn handle(&mut self, t: &mut SockTable<EpollSock>, ev: &mio::event::Event) {
        let (tag, key) = Key::unpack(ev.token().0 as u64);
        if tag == WATCH {
            if let Some(w) = self.watches.get_mut(key.index() as usize) {
                w.armed = false;
                t.ready.push(Event::Wake { token: w.token });
            }
            return;
        }
        let Some(SockRef { s, ready, .. }) = t.entry(key) else {
            return;
        };
        match s.phase {
            SockPhase::Connecting => {
                let result = match sys::take_error(s.fd.as_raw_fd()) {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) if ev.is_writable() => Ok(()),
                    Ok(None) => return,
                };
                s.rx_ready = true;
                s.io.tx_ready = true;
                s.connected(result, ready);
            }
            SockPhase::Open | SockPhase::Lingering => {
                let error = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                s.rx_ready |= ev.is_readable() || error;
                s.io.tx_ready |= ev.is_writable() || error;
            }
            SockPhase::Failed | SockPhase::Closing => return,
        }
        self.mark_dirty(s, key);
    }
}

impl Sock<EpollSock> {
    /// Move bytes while readiness and buffers allow. Returns true when a lingering close is
    /// finished and the socket should be closed now.
    fn work(&mut self, bufs: &mut BufferPool, ready: &mut Vec<Event>) -> bool {
        if !matches!(self.phase, SockPhase::Open | SockPhase::Lingering) {
            return false;
        }
        if self.phase == SockPhase::Open {
            self.read(bufs, ready);
        }
        self.write(bufs, ready);
        self.state.release(bufs);
        self.phase == SockPhase::Lingering && (!self.state.tx_pending() || self.state.err.is_some())
    }

    fn read(&mut self, bufs: &mut BufferPool, ready: &mut Vec<Event>) {
        if self.state.is_stream() {
            // Streams are read on demand by `recv` / `recv_into` (straight into the
            // caller's memory); here readiness only becomes an event.
            if self.rx_ready && !self.state.eof && self.state.err.is_none() {
                self.state.notify_readable(ready);
            }
        } else if self.rx_ready {
            self.drain_datagrams(bufs, ready);
        }
    }

    fn write(&mut self, bufs: &mut BufferPool, ready: &mut Vec<Event>) {
        let fd = self.fd.as_raw_fd();
        while self.io.tx_ready && self.state.err.is_none() {
            let data: &[u8] = if self.state.is_stream() {
                self.state.tx.data()
            } else {
                match self.state.dtx.front() {
                    Some(d) => d,
                    None => break,
                }
            };
            if data.is_empty() {
                break;
            }
            match sys::send(fd, data) {
                Ok(n) if self.state.is_stream() => self.state.tx.consume(n),
                Ok(_) => self.state.pop_datagram(bufs),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.tx_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if !self.state.is_stream() => {
                    tracing::debug!(error = %e, "datagram send failed; dropped");
                    self.state.pop_datagram(bufs);
                }
                Err(e) => self.state.fail(e, bufs, ready),
            }
        }
        if self.state.is_stream()
            && self.phase == SockPhase::Open
            && self.state.shut == Shut::Wanted
            && self.state.tx.len() == 0
        {
            if let Err(e) = sys::shutdown_write(fd) {
                tracing::debug!(error = %e, "shutdown(SHUT_WR) failed");
            }
            self.state.shut = Shut::Done;
        }
        self.state.notify_writable(ready, &bufs.limits);
    }
}

impl SockIo for EpollIo {
    const KIND: EgressDriver = EgressDriver::Epoll;
    const NONBLOCKING: bool = true;
    type Sock = EpollSock;

    fn new(_limits: &Limits) -> Result<EpollIo, EgressError> {
        Ok(EpollIo {
            poll: Poll::new().map_err(EgressError::EpollSetup)?,
            mevents: mio::Events::with_capacity(1024),
            watches: Vec::new(),
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
        })
    }

    fn new_sock(_connect: &Connect) -> EpollSock {
        EpollSock {
            tx_ready: false,
            dirty: false,
        }
    }

    /// A stream's nonblocking `connect(2)` (`EINPROGRESS`: the first event completes it);
    /// then the fd is registered, and the outcome of a connect that finished at once is
    /// reported (only once the open cannot fail any more).
    fn start(&mut self, at: SockRef<'_, EpollSock>, connect: &Connect) -> io::Result<()> {
        let SockRef { key, s, ready, .. } = at;
        let fd = s.fd.as_raw_fd();
        let mut finished = None;
        if s.phase == SockPhase::Connecting {
            match sys::connect(fd, &connect.addr) {
                Ok(()) => finished = Some(Ok(())),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => finished = Some(Err(e)),
            }
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), mio_token(SOCK, key), interest)?;
        if let Some(result) = finished {
            s.connected(result, ready);
        }
        s.rx_ready = s.phase == SockPhase::Open;
        s.io.tx_ready = s.phase == SockPhase::Open;
        if s.phase == SockPhase::Connecting && !connect.timeout.is_zero() {
            self.deadlines
                .push(Reverse((Instant::now() + connect.timeout, key)));
        }
        Ok(())
    }

    /// Queued data or a shutdown: the socket is worked in the next `wait`. Consuming a
    /// stream changes nothing here (streams are read on demand); consuming from a datagram
    /// socket still marked readable means its queue was full and datagrams may wait in the
    /// kernel: epoll is edge-triggered and will not say so again, so read them next `wait`.
    fn touched(&mut self, at: SockRef<'_, EpollSock>, what: Touch) {
        let more_datagrams = what == Touch::Consumed && !at.s.state.is_stream() && at.s.rx_ready;
        if what == Touch::Queued || more_datagrams {
            self.mark_dirty(at.s, at.key);
        }
    }

    fn linger(&mut self, t: &mut SockTable<EpollSock>, key: Key, until: Instant) {
        self.deadlines.push(Reverse((until, key)));
        if let Some(s) = t.socks.get_mut(key) {
            self.mark_dirty(s, key);
        }
    }

    fn close(&mut self, t: &mut SockTable<EpollSock>, key: Key) {
        self.close_now(t, key);
    }

    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError> {
        // A handful of watched fds (the poll thread's wake-ups): the index fits u32.
        let key = Key::fixed(self.watches.len() as u32);
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                mio_token(WATCH, key),
                Interest::READABLE,
            )
            .map_err(|source| EgressError::Watch { fd, source })?;
        self.watches.push(Watch {
            fd,
            token,
            armed: true,
            dead: false,
        });
        Ok(())
    }

    fn unwatch(&mut self, fd: RawFd) {
        for w in self.watches.iter_mut().filter(|w| w.fd == fd && !w.dead) {
            w.dead = true;
            w.armed = false;
            if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                tracing::debug!(fd, error = %e, "unwatch: deregister failed");
            }
        }
    }

    fn prepare(&mut self, t: &mut SockTable<EpollSock>, now: Instant) -> Option<Instant> {
        for (i, w) in self.watches.iter_mut().enumerate() {
            if w.armed || w.dead {
                continue;
            }
            let r = self.poll.registry().reregister(
                &mut SourceFd(&w.fd),
                mio_token(WATCH, Key::fixed(i as u32)),
                Interest::READABLE,
            );
            match r {
                Ok(()) => w.armed = true,
                Err(e) => {
                    tracing::warn!(fd = w.fd, error = %e, "re-arming a watched fd failed");
                    w.dead = true;
                }
            }
        }
        self.process_dirty(t);
        self.expire(t, now);
        self.deadlines.peek().map(|&Reverse((at, _))| at)
    }

    fn poll(
        &mut self,
        t: &mut SockTable<EpollSock>,
        timeout: Option<Duration>,
    ) -> Result<(), EgressError> {
        match self.poll.poll(&mut self.mevents, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EgressError::Wait(e)),
        }
        let mut batch = std::mem::replace(&mut self.mevents, mio::Events::with_capacity(0));
        for ev in batch.iter() {
            self.handle(t, ev);
        }
        batch.clear();
        self.mevents = batch;
        self.process_dirty(t);
        Ok(())
    }
}
