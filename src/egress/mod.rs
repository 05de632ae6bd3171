//! Egress: the host sockets that carry guest flows.
//!
//! # Theory of operation
//!
//! The poll thread owns one [`Driver`]. Every guest TCP flow, UDP flow and ICMP echo
//! flow maps to one host socket that the driver opens, connects and then moves bytes
//! through. The driver is completion-shaped: the caller asks for work
//! ([`Driver::open`], [`Driver::send`], [`Driver::shutdown_write`], [`Driver::close`]) and
//! learns what happened from [`Event`]s returned by [`Driver::wait`].
//!
//! The driver owns every byte buffer that the kernel may touch, so no caller-owned memory is
//! ever lent to an in-flight io_uring operation:
//! - `to_host`: [`Driver::send`] copies into the socket's bounded transmit buffer
//!   ([`Limits::tx_buffer`] bytes for a stream, [`Limits::tx_datagrams`] datagrams for a
//!   datagram socket) and returns how much it took. When the buffer drains the driver reports
//!   [`Event::Writable`]; the caller then offers more (this is the backpressure towards the
//!   guest: whatever is not taken stays in the guest-facing TCP socket, closing its window).
//! - `from_host`: the driver keeps a receive armed only while the socket's receive buffer
//!   has room ([`Limits::rx_buffer`]); it reports [`Event::Readable`] when data, end of stream
//!   or an error is there, and the caller consumes with [`Driver::recv`]. A caller that stops
//!   consuming stops the host socket being read (backpressure towards the host).
//! - Memory is taken on demand: an idle socket holds no data buffers.
//!
//! Two drivers serve the same contract, [`UringDriver`] (io_uring, the default) and
//! [`EpollDriver`] (mio), chosen by [`select`] from [`EgressDriver`]. They are one
//! implementation, [`SockDriver`] (`driver.rs`: the socket table, `open`, the caller's side
//! of sending and receiving, `close`, the `wait` loop), over two mechanisms that differ only
//! in how the kernel is asked for I/O (`uring/`, `epoll.rs`). Socket state and buffers that
//! depend on neither are in `state.rs`, the syscall wrappers in `sys.rs`. Sockets live in the crate's
//! generational [`Slab`](crate::slab::Slab): a [`SockId`] carries the socket's
//! [`Key`], and so do io_uring's `user_data` and epoll's tokens.
//! The wake-up file descriptors of the poll thread (eventfds, the TAP fd) are registered
//! with [`Driver::watch`] so that one `wait` is the thread's only blocking point.
//!
//! [`intercept`] is the I/O half of TLS interception: worker threads, each a mio loop over
//! the intercepted flows handed to it (a unix socket pair to the poll thread, a TCP socket
//! to the server), driving [`crate::tls::session::Session`]s off the poll thread.
//!
//! Syscalls are made by `sys.rs`, `driver.rs`, `intercept.rs` and the two mechanisms only (`state.rs` is
//! handed its one read as a closure). A negative CQE result or a failed syscall becomes an
//! `io::Error` in exactly one place each (`uring/op.rs`, `sys.rs`).

mod driver;
mod epoll;
pub mod intercept;
pub mod listen;
mod state;
mod sys;
mod uring;

pub use driver::SockDriver;
pub use epoll::EpollDriver;
pub use uring::UringDriver;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::config::EgressDriver;
use crate::slab::Key;

/// Caller-chosen value returned with every event about a socket or watched fd.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token(pub u64);

/// Driver-assigned socket handle, opaque to the caller: the socket's [`Key`] in the driver's
/// slab, so a stale handle (used after `close`) matches nothing and is ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SockId(pub(crate) Key);

/// What kind of host socket to open.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SockKind {
    /// SOCK_STREAM, connected asynchronously; [`Event::Connected`] reports the outcome.
    Tcp,
    /// SOCK_DGRAM UDP, connected to the remote at once (so replies come only from it).
    Udp,
    /// Unprivileged ping socket: SOCK_DGRAM + IPPROTO_ICMP / IPPROTO_ICMPV6 (family from the
    /// remote address). Datagrams are ICMP echo messages (header + payload); the kernel
    /// rewrites the identifier, the caller restores the guest's.
    Ping,
}

/// Per-socket and global bounds. Every buffer the driver holds is bounded by these.
#[derive(Copy, Clone, Debug)]
pub struct Limits {
    /// Bytes of transmit buffer per stream socket.
    pub tx_buffer: usize,
    /// Bytes of receive buffer per stream socket.
    pub rx_buffer: usize,
    /// Datagrams queued for sending per datagram socket.
    pub tx_datagrams: usize,
    /// Datagrams held received per datagram socket.
    pub rx_datagrams: usize,
    /// Largest datagram (bigger ones are truncated on receive / refused on send).
    pub max_datagram: usize,
    /// Open sockets at most; `open` beyond it fails with [`EgressError::TooManySockets`].
    pub max_sockets: usize,
    /// io_uring submission queue entries (the kernel rounds up to a power of two); when the
    /// SQ is full the driver submits what is queued and retries (counted,
    /// [`Driver::sq_full`]). Ignored by epoll.
    pub uring_entries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tx_buffer: 256 * 1024,
            rx_buffer: 256 * 1024,
            tx_datagrams: 64,
            rx_datagrams: 64,
            max_datagram: 65535,
            max_sockets: 16384,
            uring_entries: 4096,
        }
    }
}

/// What happened. Events for a socket closed by the caller are never delivered.
#[derive(Debug)]
pub enum Event {
    /// TCP: the connect finished (Ok) or failed (refused, unreachable, timed out).
    /// UDP/Ping: never sent (they are usable as soon as `open` returns).
    Connected {
        token: Token,
        result: io::Result<()>,
    },
    /// Received data, end of stream or a socket error is waiting: call [`Driver::recv`].
    Readable { token: Token },
    /// Transmit space became free after the buffer had been full (or a send failed; the
    /// failure is reported by the next [`Driver::recv`] as an error).
    Writable { token: Token },
    /// A watched fd is readable.
    Wake { token: Token },
}

/// Result of consuming received data.
#[derive(Debug)]
pub enum Recv {
    /// Nothing buffered now; a `Readable` event will come.
    Empty,
    /// The peer closed its write side (stream) after all buffered data was consumed.
    Eof,
    /// The socket failed (reset, unreachable…); the caller should close it.
    Error(io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("io_uring setup failed: {0}")]
    UringSetup(io::Error),
    #[error("epoll setup failed: {0}")]
    EpollSetup(io::Error),
    #[error("creating a {kind:?} socket for {remote} failed: {source}")]
    Socket {
        kind: SockKind,
        remote: SocketAddr,
        source: io::Error,
    },
    #[error("socket limit reached ({0} open)")]
    TooManySockets(usize),
    #[error("waiting for events failed: {0}")]
    Wait(io::Error),
    #[error("watching fd {fd} failed: {source}")]
    Watch { fd: RawFd, source: io::Error },
}

/// How long a graceful [`Driver::close`] keeps flushing unsent data before closing anyway.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// The egress driver contract, implemented by io_uring and by epoll.
pub trait Driver {
    /// Which implementation this is: [`EgressDriver::Uring`] or [`EgressDriver::Epoll`].
    fn kind(&self) -> EgressDriver;

    /// Create a socket of `kind` and connect it to `remote`. TCP connects asynchronously
    /// (result in [`Event::Connected`], failing with `TimedOut` after `connect_timeout`;
    /// `Duration::ZERO` means no timeout of ours, only the kernel's SYN retries). Data may be
    /// sent (and `shutdown_write` asked) before the connect completes: it is flushed once
    /// connected. UDP and Ping are connected before this returns; a Ping socket refused by
    /// `net.ipv4.ping_group_range` fails with [`EgressError::Socket`] (`EACCES`).
    /// Host TCP sockets get `TCP_NODELAY` (the guest's stack already coalesced).
    fn open(
        &mut self,
        kind: SockKind,
        remote: SocketAddr,
        connect_timeout: Duration,
        token: Token,
    ) -> Result<SockId, EgressError>;

    /// Stream: copy as much of `data` as fits into the transmit buffer, return the count
    /// (0 when full: an [`Event::Writable`] follows when space frees up).
    /// Datagram: queue `data` as one datagram; returns `data.len()` or 0 when the queue is
    /// full (an [`Event::Writable`] follows), the socket is unknown, or `data` is larger than
    /// [`Limits::max_datagram`] (it never fits: drop it).
    /// Returns 0 after `shutdown_write`, `close` or a socket error.
    fn send(&mut self, sock: SockId, data: &[u8]) -> usize;

    /// Bytes (stream) or datagrams (datagram sockets) that `send` would take now.
    fn send_space(&self, sock: SockId) -> usize;

    /// Stream: bytes accepted by `send` and not yet written to the kernel.
    /// Datagram: datagrams queued and not yet sent.
    fn send_pending(&self, sock: SockId) -> usize;

    /// Stream: consume received bytes. `f` is handed the contiguous buffered bytes and returns
    /// how many it consumed; returns that count, or the state when nothing is buffered.
    /// Datagram: `f` is handed one datagram; it is consumed if `f` returns non-zero (an
    /// empty datagram is consumed whatever `f` returns); returns its length, or `Ok(0)` when
    /// `f` refused it.
    ///
    /// Buffered data comes before `Eof`/`Error`. The stream buffer is a ring: a wrapped
    /// buffer takes two calls, so consume in a loop until `f` takes less than offered or the
    /// result is `Err`. [`Event::Readable`] is reported once, then not again until `recv` has
    /// been called (whatever it returned): a caller that stops consuming gets no repeated
    /// events. An unknown or closed `sock` yields `Recv::Error` (`NotFound`).
    ///
    /// Datagram sockets never report `Recv::Error`: errors queued by ICMP (port unreachable
    /// → `ECONNREFUSED`, host unreachable, …) and failed datagram sends are dropped (logged
    /// at debug), as a NAT would; the flow stays usable.
    fn recv(&mut self, sock: SockId, f: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, Recv>;

    /// Stream: receive into `buf` (the caller's memory, such as smoltcp's transmit buffer):
    /// bytes the driver already holds first, else one `recv(2)` straight into `buf`, so
    /// received bytes are copied once (kernel → `buf`), not twice. Results, event rules
    /// and errors as for [`Driver::recv`]; `Ok(0)` only for an empty `buf`.
    /// Datagram: as `recv`, copying the datagram's head into `buf` (the rest is lost).
    fn recv_into(&mut self, sock: SockId, buf: &mut [u8]) -> Result<usize, Recv>;

    /// Stream: `shutdown(SHUT_WR)` once every buffered byte has been written (further
    /// `send`s take nothing). Datagram: no-op.
    fn shutdown_write(&mut self, sock: SockId);

    /// Close the socket; pending operations are cancelled, buffers freed once the kernel lets
    /// go of them. `reset` closes with SO_LINGER 0 (the peer sees RST). A graceful close
    /// (`reset == false`) of a stream with unsent data keeps sending it in the background for
    /// up to [`CLOSE_LINGER`] (then closes anyway); receive stops at once. No event about the
    /// socket is reported after `close`; using the `SockId` afterwards is harmless.
    fn close(&mut self, sock: SockId, reset: bool);

    /// Take over `fd`, a socket already connected to `peer` (an accepted TCP connection, a
    /// UDP socket connected to one peer), as an open socket of `kind` reporting events with
    /// `token`; from then on it is like a socket from [`Driver::open`].
    fn adopt(
        &mut self,
        fd: std::os::fd::OwnedFd,
        kind: SockKind,
        peer: SocketAddr,
        token: Token,
    ) -> Result<SockId, EgressError>;

    /// Stop watching `fd` (from [`Driver::watch`]); the caller may close it afterwards.
    fn unwatch(&mut self, fd: RawFd);

    /// Report [`Event::Wake`] with `token` whenever `fd` is readable (level-triggered: the
    /// caller drains the fd; an fd left readable is reported again by the next `wait`). The
    /// fd must stay open until [`Driver::unwatch`] (or while the driver lives).
    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError>;

    /// Submit queued work, then block until at least one event or `timeout` (None: forever;
    /// zero: don't block). Appends events to `events`. May return with no event when the
    /// timeout expires; spurious `Readable`/`Writable`/`Wake` are possible and harmless.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> Result<(), EgressError>;

    /// Sockets holding resources now: open ones, plus closed ones whose cancellation or
    /// graceful flush has not finished (bounded by [`Limits::max_sockets`]).
    fn open_sockets(&self) -> usize;

    /// The link went idle: free what is kept only for reuse (spare data buffers and
    /// datagram vectors); returns the bytes of capacity freed. Buffers holding data or lent
    /// to the kernel are kept. The default frees nothing.
    fn trim(&mut self) -> usize {
        0
    }

    /// Times a submission found the io_uring SQ full and had to submit first (0 for epoll).
    fn sq_full(&self) -> u64 {
        0
    }
}

/// Build a driver: `Auto` tries io_uring first and falls back to epoll; the returned string
/// says which one runs and why (for the start-up log line).
pub fn select(
    choice: EgressDriver,
    limits: Limits,
) -> Result<(Box<dyn Driver + Send>, String), EgressError> {
    match choice {
        EgressDriver::Uring => {
            let d = UringDriver::new(limits)?;
            let note = format!("io_uring ({})", d.io.restriction_note());
            Ok((Box::new(d), note))
        }
        EgressDriver::Epoll => Ok((
            Box::new(EpollDriver::new(limits)?),
            "epoll (requested)".into(),
        )),
        EgressDriver::Auto => match UringDriver::new(limits) {
            Ok(d) => {
                let note = format!("io_uring ({})", d.io.restriction_note());
                Ok((Box::new(d), note))
            }
            Err(e) => {
                let why = match &e {
                    EgressError::UringSetup(io) => io.to_string(),
                    other => other.to_string(),
                };
                let d = EpollDriver::new(limits)?;
                Ok((Box::new(d), format!("epoll (io_uring unavailable: {why})")))
            }
        },
    }
}

/// Shared by the drivers' unit tests (which then look at their private state).
#[cfg(test)]
pub(crate) mod test_util {
    use super::driver::{Sock, SockDriver, SockIo};
    use super::{Driver, Event, SockId, SockKind, Token};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Connect `d` to a local peer, exchange "hello" / "world", and let the socket go
    /// idle; returns its id (and the peer, to keep the connection up).
    pub fn exchange_then_idle<D: Driver>(d: &mut D) -> (SockId, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let id = d
            .open(
                SockKind::Tcp,
                l.local_addr().unwrap(),
                Duration::from_secs(5),
                Token(1),
            )
            .unwrap();
        let mut evs = Vec::new();
        while !evs.iter().any(|e| matches!(e, Event::Connected { .. })) {
            d.wait(Some(Duration::from_secs(5)), &mut evs).unwrap();
        }
        let (mut peer, _) = l.accept().unwrap();
        assert_eq!(d.send(id, b"hello"), 5);
        d.wait(Some(Duration::ZERO), &mut evs).unwrap();
        let mut buf = [0; 5];
        peer.read_exact(&mut buf).unwrap();
        peer.write_all(b"world").unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            d.wait(Some(Duration::from_millis(100)), &mut evs).unwrap();
            while let Ok(n) = d.recv(id, &mut |b| {
                got.extend_from_slice(b);
                b.len()
            }) {
                assert!(n > 0);
            }
        }
        assert_eq!(got, b"world");
        d.wait(Some(Duration::from_millis(20)), &mut evs).unwrap();
        (id, peer)
    }

    /// After an exchange, an idle established socket holds no data buffer, and its slab
    /// entry is small. Returns the socket, for the mechanism's own checks (and the peer).
    pub fn idle_socket<I: SockIo>(d: &mut SockDriver<I>) -> (&Sock<I::Sock>, TcpStream) {
        assert_eq!(d.kind(), I::KIND);
        let (id, peer) = exchange_then_idle(d);
        let s = d.t.socks.get(id.0).unwrap();
        assert!(!s.state.rx.holds_memory() && !s.state.tx.holds_memory());
        let entry = std::mem::size_of::<(u32, Option<Sock<I::Sock>>)>();
        eprintln!("{} slab entry: {entry} bytes", I::KIND);
        assert!(entry <= 1024, "{entry}");
        (s, peer)
    }
}
