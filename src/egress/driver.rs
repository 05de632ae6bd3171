//! The one [`Driver`] implementation, [`SockDriver`], generic over how the kernel is asked
//! for socket I/O ([`SockIo`]: io_uring in `uring`, epoll in `epoll`).
//!
//! # Theory of operation
//!
//! Both drivers keep the same [`SockTable`]: every host socket is a [`Sock`] in the crate's
//! generational [`Slab`] (a [`SockId`] carries the socket's [`Key`], so an id used after
//! `close`, or a late completion, matches nothing), next to the [`BufferPool`] its buffers
//! come from and the events produced but not yet handed out. Everything that does not depend
//! on the mechanism is here, once:
//! - `open`: `socket(2)`, `TCP_NODELAY` for streams, `connect(2)` for datagram sockets, the
//!   slab entry; then the mechanism starts the stream connect (or arms the datagram socket);
//! - the caller's side of sending and receiving: `send` (queueing into [`SockState`]),
//!   `send_space`, `send_pending`, `recv` / `recv_into` with the on-demand `recv(2)` of
//!   streams, and `shutdown_write`;
//! - `close`: linger (a graceful close of a stream with unsent data) or close now;
//! - the loop of `wait`: the mechanism's due work and next deadline, the timeout, blocking
//!   until an event or the timeout;
//! - [`Sock::drain_datagrams`], the datagram receive after readiness.
//!
//! A [`SockIo`] does the rest: starting a connect, getting queued bytes and shutdowns to the
//! kernel, closing, keeping deadlines, watching fds and blocking. Its per-socket state is
//! [`Sock::io`].
//!
//! Slab entries never move while the driver lives (the slab reserves room for
//! `Limits::max_sockets` entries up front and never grows past it), so a mechanism may lend
//! fields of a [`Sock`] to the kernel (io_uring: the connect address and timeout) until the
//! operation completes. Only this module, the two mechanisms and `sys` make syscalls.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::state::{BufferPool, Shut, SockState};
use super::sys::{self, SockAddr};
use super::{
    Driver, EgressDriver, EgressError, Event, Limits, Recv, SockId, SockKind, Token, CLOSE_LINGER,
};
use crate::slab::{Key, Slab};

/// Where a socket is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SockPhase {
    /// A stream whose connect is in flight.
    Connecting,
    Open,
    /// The connect failed; waiting for the caller's `close`.
    Failed,
    /// Closed by the caller with unsent data: flushing until drained or [`CLOSE_LINGER`].
    Lingering,
    /// io_uring only: cancelling; freed when the last completion naming the socket is in.
    Closing,
}

/// One host socket.
pub struct Sock<X> {
    pub fd: OwnedFd,
    pub state: SockState,
    pub phase: SockPhase,
    /// The socket may be readable: readiness said so and no `recv(2)` has hit `EAGAIN`
    /// since. Streams are read on demand while it holds; epoll drains datagrams by it.
    pub rx_ready: bool,
    /// The mechanism's own state.
    pub io: X,
}

/// Every socket of a driver, the buffers they draw from and the events not yet handed out.
pub struct SockTable<X> {
    pub socks: Slab<Sock<X>>,
    pub bufs: BufferPool,
    /// Events produced but not yet handed to the caller.
    pub ready: Vec<Event>,
}

/// One socket of a [`SockTable`], borrowed with what socket-level code needs besides it.
pub struct SockRef<'a, X> {
    pub key: Key,
    pub s: &'a mut Sock<X>,
    pub bufs: &'a mut BufferPool,
    pub ready: &'a mut Vec<Event>,
}

/// Where and for how long a stream connects.
pub struct Connect {
    pub addr: SockAddr,
    /// `Duration::ZERO`: no timeout of ours.
    pub timeout: Duration,
}

/// What the caller just did to a socket ([`SockIo::touched`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Queued bytes (`send`) or asked for a shutdown: they are to reach the kernel.
    Queued,
    /// Consumed received data (`recv`, `recv_into`), or found none.
    Consumed,
}

impl<X> SockTable<X> {
    /// The socket `key` names, with the buffers and the event queue.
    pub fn entry(&mut self, key: Key) -> Option<SockRef<'_, X>> {
        Some(SockRef {
            key,
            s: self.socks.get_mut(key)?,
            bufs: &mut self.bufs,
            ready: &mut self.ready,
        })
    }

    /// Take the socket out and give its buffers back: only once no kernel operation can
    /// touch them. Its fd closes when the returned value drops.
    pub fn remove(&mut self, key: Key) -> Option<Sock<X>> {
        let mut s = self.socks.remove(key)?;
        s.state.free(&mut self.bufs);
        Some(s)
    }
}

impl<X> Sock<X> {
    /// The connect finished: `Open` or `Failed`, and [`Event::Connected`] unless the caller
    /// closed the socket already.
    pub fn connected(&mut self, result: io::Result<()>, ready: &mut Vec<Event>) {
        self.phase = if result.is_ok() {
            SockPhase::Open
        } else {
            SockPhase::Failed
        };
        if !self.state.quiet {
            ready.push(Event::Connected {
                token: self.state.token,
                result,
            });
        }
    }

    /// Datagram sockets, after readiness: `recv(2)` through the pool's landing buffer into
    /// the queue until `EAGAIN` (which clears `rx_ready`) or the queue is full; one
    /// `Readable` if anything came. Errors (ICMP-caused: port or host unreachable) are dropped
    /// as a NAT would; each failed `recv(2)` consumes one, and the loop is bounded anyway.
    pub fn drain_datagrams(&mut self, bufs: &mut BufferPool, ready: &mut Vec<Event>) {
        let fd = self.fd.as_raw_fd();
        let mut buf = std::mem::take(&mut bufs.scratch);
        let mut got = false;
        for _ in 0..bufs.limits.rx_datagrams + 8 {
            if !self.state.rx_room(&bufs.limits) {
                break;
            }
            match sys::recv(fd, &mut buf) {
                Ok(n) => {
                    self.state.push_datagram(&buf[..n.min(buf.len())], bufs);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rx_ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => tracing::debug!(error = %e, "datagram socket error ignored"),
            }
        }
        bufs.scratch = buf;
        if got {
            self.state.notify_readable(ready);
        }
    }
}

/// A watched fd ([`Driver::watch`]); its events carry `Key::fixed(index)`.
pub struct Watch {
    pub fd: RawFd,
    pub token: Token,
    /// Set up to report the next readiness (epoll: registered and not fired since;
    /// io_uring: a poll is in flight).
    pub armed: bool,
    /// Failed; no longer watched.
    pub dead: bool,
}

/// The error of a connect that did not finish within its timeout.
pub fn connect_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connect timed out")
}

/// How a [`SockDriver`] gets socket I/O done by the kernel: io_uring or epoll.
///
/// Hooks that concern one socket get a [`SockRef`]; hooks that may free a socket get the
/// whole table.
pub trait SockIo: Sized {
    /// What [`Driver::kind`] reports.
    const KIND: EgressDriver;
    /// Sockets are created nonblocking (else blocking: the kernel's io_uring does the
    /// waiting, and direct syscalls pass `MSG_DONTWAIT`).
    const NONBLOCKING: bool;
    /// Per-socket state of the mechanism ([`Sock::io`]).
    type Sock;

    fn new(limits: &Limits) -> Result<Self, EgressError>;

    /// [`Driver::sq_full`] of the mechanism.
    fn sq_full(&self) -> u64 {
        0
    }

    /// The mechanism's state for a new socket.
    fn new_sock(connect: &Connect) -> Self::Sock;

    /// The socket was just opened: a stream in `Connecting` (its connect not started) or a
    /// connected datagram socket in `Open`. Start the connect, set up readiness. An error
    /// undoes the open.
    fn start(&mut self, at: SockRef<'_, Self::Sock>, connect: &Connect) -> io::Result<()>;

    /// Before `send` queues `data`: write what the socket takes now and continue with the
    /// count written, or break with what `send` returns. The default writes nothing now.
    fn send_now(_at: &mut SockRef<'_, Self::Sock>, _data: &[u8]) -> ControlFlow<usize, usize> {
        ControlFlow::Continue(0)
    }

    /// The caller did `what` to the socket: get queued work to the kernel.
    fn touched(&mut self, at: SockRef<'_, Self::Sock>, what: Touch);

    /// Closed by the caller (now quiet and `Lingering`) with unsent data: keep flushing,
    /// then close; close anyway at `until`.
    fn linger(&mut self, t: &mut SockTable<Self::Sock>, key: Key, until: Instant);

    /// Closed by the caller (now quiet): close, freeing the socket once the kernel let go.
    fn close(&mut self, t: &mut SockTable<Self::Sock>, key: Key);

    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError>;

    /// Stop watching `fd`: no event about it after this returns.
    fn unwatch(&mut self, fd: RawFd);

    /// Start of a `wait` round: the work due before blocking (re-arming watched fds,
    /// deferred I/O, expired deadlines). Returns the mechanism's next deadline.
    fn prepare(&mut self, t: &mut SockTable<Self::Sock>, now: Instant) -> Option<Instant>;

    /// Submit queued work, block for at most `timeout` (`None`: until something happens),
    /// then act on what the kernel reported.
    fn poll(
        &mut self,
        t: &mut SockTable<Self::Sock>,
        timeout: Option<Duration>,
    ) -> Result<(), EgressError>;

    /// The driver is being dropped: make sure the kernel no longer touches its memory.
    fn finish(&mut self, _t: &mut SockTable<Self::Sock>) {}
}

/// The [`Driver`]: a table of sockets worked by a mechanism (`SockIo`). Its two forms are
/// [`super::UringDriver`] and [`super::EpollDriver`].
pub struct SockDriver<I: SockIo> {
    // Dropped in this order: the mechanism (the ring) before the sockets.
    pub(super) io: I,
    pub(super) t: SockTable<I::Sock>,
}

impl<I: SockIo> SockDriver<I> {
    /// Set the mechanism up; the io_uring one fails with the kernel's error (`EPERM` under
    /// seccomp or `kernel.io_uring_disabled`, `ENOSYS` without io_uring).
    pub fn new(limits: Limits) -> Result<Self, EgressError> {
        Ok(SockDriver {
            io: I::new(&limits)?,
            t: SockTable {
                socks: Slab::new(limits.max_sockets),
                bufs: BufferPool::new(limits),
                ready: Vec::new(),
            },
        })
    }
}

impl<I: SockIo> Drop for SockDriver<I> {
    fn drop(&mut self) {
        self.io.finish(&mut self.t);
    }
}

fn unknown() -> Recv {
    Recv::Error(io::Error::new(io::ErrorKind::NotFound, "unknown socket"))
}

/// The socket `key` names, unless it is unknown or closed by the caller.
fn live<X>(t: &mut SockTable<X>, key: Key) -> Result<SockRef<'_, X>, Recv> {
    match t.entry(key) {
        Some(at) if !at.s.state.quiet => Ok(at),
        _ => Err(unknown()),
    }
}

impl<I: SockIo> SockDriver<I> {
    /// Put a new socket in the table and let the mechanism start it (`open`, `adopt`).
    /// `Err(None)`: the table is full.
    fn insert(
        &mut self,
        (kind, fd, phase): (SockKind, OwnedFd, SockPhase),
        (remote, token): (SocketAddr, Token),
        connect: &Connect,
    ) -> Result<SockId, Option<EgressError>> {
        let sock = Sock {
            fd,
            state: SockState::new(kind, token, &self.t.bufs.limits),
            phase,
            rx_ready: false,
            io: I::new_sock(connect),
        };
        let key = self.t.socks.insert(sock).ok_or(None)?;
        let Some(at) = self.t.entry(key) else {
            unreachable!("{key:?} was inserted just above");
        };
        if let Err(source) = self.io.start(at, connect) {
            self.t.remove(key);
            return Err(Some(EgressError::Socket {
                kind,
                remote,
                source,
            }));
        }
        Ok(SockId(key))
    }
}

impl<I: SockIo> Driver for SockDriver<I> {
    fn kind(&self) -> EgressDriver {
        I::KIND
    }

    fn open(
        &mut self,
        kind: SockKind,
        remote: SocketAddr,
        connect_timeout: Duration,
        token: Token,
    ) -> Result<SockId, EgressError> {
        let limits = self.t.bufs.limits;
        let too_many = EgressError::TooManySockets(self.t.socks.len());
        if self.t.socks.len() >= limits.max_sockets {
            return Err(too_many);
        }
        let sock_err = |source| EgressError::Socket {
            kind,
            remote,
            source,
        };
        let fd = sys::socket(kind, &remote, I::NONBLOCKING).map_err(sock_err)?;
        let connect = Connect {
            addr: SockAddr::new(&remote),
            timeout: connect_timeout,
        };
        let stream = kind == SockKind::Tcp;
        if stream {
            if let Err(e) = sys::set_nodelay(fd.as_raw_fd()) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
        } else {
            sys::connect(fd.as_raw_fd(), &connect.addr).map_err(sock_err)?;
        }
        let phase = if stream {
            SockPhase::Connecting
        } else {
            SockPhase::Open
        };
        self.insert((kind, fd, phase), (remote, token), &connect)
            .map_err(|e| e.unwrap_or(too_many))
    }

    fn send(&mut self, sock: SockId, data: &[u8]) -> usize {
        let Some(mut at) = self.t.entry(sock.0) else {
            return 0;
        };
        let direct = match I::send_now(&mut at, data) {
            ControlFlow::Break(n) => return n,
            ControlFlow::Continue(n) => n,
        };
        let n = direct + at.s.state.send(&data[direct..], at.bufs);
        if n > direct {
            self.io.touched(at, Touch::Queued);
        }
        n
    }

    fn send_space(&self, sock: SockId) -> usize {
        self.t
            .socks
            .get(sock.0)
            .map_or(0, |s| s.state.send_space(&self.t.bufs.limits))
    }

    fn send_pending(&self, sock: SockId) -> usize {
        self.t
            .socks
            .get(sock.0)
            .map_or(0, |s| s.state.send_pending())
    }

    fn recv(&mut self, sock: SockId, f: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, Recv> {
        let at = live(&mut self.t, sock.0)?;
        let s = &mut *at.s;
        if s.state.is_stream() && s.phase == SockPhase::Open {
            let fd = s.fd.as_raw_fd();
            s.state
                .fill_stream(&mut s.rx_ready, at.bufs, |b| sys::recv(fd, b));
        }
        let r = s.state.recv(f, at.bufs);
        self.io.touched(at, Touch::Consumed);
        r
    }

    fn recv_into(&mut self, sock: SockId, buf: &mut [u8]) -> Result<usize, Recv> {
        let at = live(&mut self.t, sock.0)?;
        let s = &mut *at.s;
        let r = if s.state.is_stream() && s.phase == SockPhase::Open {
            let fd = s.fd.as_raw_fd();
            s.state
                .recv_stream_into(&mut s.rx_ready, buf, at.bufs, |b| sys::recv(fd, b))
        } else {
            s.state.recv_copy(buf, at.bufs)
        };
        self.io.touched(at, Touch::Consumed);
        r
    }

    fn shutdown_write(&mut self, sock: SockId) {
        if let Some(at) = self.t.entry(sock.0) {
            let state = &mut at.s.state;
            if state.is_stream() && state.shut == Shut::No && !state.quiet {
                state.shut = Shut::Wanted;
                self.io.touched(at, Touch::Queued);
            }
        }
    }

    fn close(&mut self, sock: SockId, reset: bool) {
        let key = sock.0;
        let Some(s) = self.t.socks.get_mut(key) else {
            return;
        };
        // Closed already, unless a lingering close is cut short by a reset.
        if s.state.quiet && !(reset && s.phase == SockPhase::Lingering) {
            return;
        }
        s.state.quiet = true;
        if reset {
            if let Err(e) = sys::set_linger_zero(s.fd.as_raw_fd()) {
                tracing::debug!(error = %e, "SO_LINGER failed");
            }
        }
        if !reset && s.phase == SockPhase::Open && s.state.is_stream() && s.state.tx_pending() {
            s.phase = SockPhase::Lingering;
            self.io
                .linger(&mut self.t, key, Instant::now() + CLOSE_LINGER);
        } else {
            self.io.close(&mut self.t, key);
        }
    }

    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError> {
        self.io.watch(fd, token)
    }

    fn unwatch(&mut self, fd: RawFd) {
        self.io.unwatch(fd);
    }

    fn adopt(
        &mut self,
        fd: OwnedFd,
        kind: SockKind,
        peer: SocketAddr,
        token: Token,
    ) -> Result<SockId, EgressError> {
        let limits = self.t.bufs.limits;
        if self.t.socks.len() >= limits.max_sockets {
            return Err(EgressError::TooManySockets(self.t.socks.len()));
        }
        let sock_err = |source| EgressError::Socket {
            kind,
            remote: peer,
            source,
        };
        sys::set_nonblocking(fd.as_raw_fd(), I::NONBLOCKING).map_err(sock_err)?;
        if kind == SockKind::Tcp {
            if let Err(e) = sys::set_nodelay(fd.as_raw_fd()) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
        }
        let connect = Connect {
            addr: SockAddr::new(&peer),
            timeout: Duration::ZERO,
        };
        let too_many = EgressError::TooManySockets(self.t.socks.len());
        self.insert((kind, fd, SockPhase::Open), (peer, token), &connect)
            .map_err(|e| e.unwrap_or(too_many))
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> Result<(), EgressError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let now = Instant::now();
            let next = self.io.prepare(&mut self.t, now);
            let mut t = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(next) = next {
                let dt = next.saturating_duration_since(now);
                t = Some(t.map_or(dt, |t| t.min(dt)));
            }
            if !self.t.ready.is_empty() {
                t = Some(Duration::ZERO);
            }
            self.io.poll(&mut self.t, t)?;
            if !self.t.ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        events.append(&mut self.t.ready);
        Ok(())
    }

    fn open_sockets(&self) -> usize {
        self.t.socks.len()
    }

    fn trim(&mut self) -> usize {
        self.t.bufs.trim()
    }

    fn sq_full(&self) -> u64 {
        self.io.sq_full()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::idle_socket;
    use super::super::{EpollDriver, UringDriver};
    use super::*;

    /// Both mechanisms: an idle established socket holds no data buffer and a small slab
    /// entry.
    #[test]
    fn idle_sockets_hold_no_buffer() {
        idle_socket(&mut EpollDriver::new(Limits::default()).unwrap());
        idle_socket(&mut UringDriver::new(Limits::default()).unwrap());
    }
}
