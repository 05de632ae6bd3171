//! epoll (mio) egress driver: the fallback when io_uring cannot be set up.
//!
//! # Theory of operation
//!
//! Completion semantics are emulated over readiness. Every socket is a raw nonblocking fd
//! (created by [`super::sys::socket`], so TCP, UDP and ping sockets take the same path)
//! registered with `mio::Poll` through `SourceFd` for `READABLE | WRITABLE`, edge-triggered.
//! A socket remembers the readiness it was told about (`rx_ready`, `tx_ready`) until a
//! syscall returns `EAGAIN`. The work (reads, writes, shutdown) happens inside `wait`, for
//! the sockets on the `dirty` list: those that got an event, or whose caller sent, consumed
//! or asked for a shutdown since.
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
//!   keeps flushing for up to [`CLOSE_LINGER`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll};

use super::flow::{Flow, Pools, Shut, Slab};
use super::sys::{self, SockAddr};
use super::{
    Driver, EgressDriver, EgressError, Event, Limits, Recv, SockId, SockKind, Token, CLOSE_LINGER,
};

/// mio tokens of watched fds have this bit set; sockets use `generation << 32 | slot`.
const WATCH_BIT: usize = 1 << 63;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Failed,
    Lingering,
}

struct Sock {
    fd: OwnedFd,
    flow: Flow,
    phase: Phase,
    rx_ready: bool,
    tx_ready: bool,
    /// On the dirty list already.
    dirty: bool,
}

struct Watch {
    fd: RawFd,
    token: Token,
    fired: bool,
}

/// The epoll implementation of [`Driver`].
pub struct EpollDriver {
    poll: Poll,
    mevents: mio::Events,
    socks: Slab<Sock>,
    pools: Pools,
    watches: Vec<Watch>,
    ready: Vec<Event>,
    dirty: Vec<(u32, u32)>,
    /// Connect timeouts and graceful-close deadlines: (when, slot, generation).
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

fn mio_token(slot: u32, gen: u32) -> mio::Token {
    // 64-bit targets: the id fits in usize.
    mio::Token(Slab::<Sock>::id(slot, gen).0 as usize)
}

/// The socket `sock` names, unless it is unknown or closed by the caller.
fn live(socks: &mut Slab<Sock>, sock: SockId) -> Result<&mut Sock, Recv> {
    let (slot, gen) = Slab::<Sock>::split(sock);
    match socks.get_mut(slot, gen) {
        Some(s) if !s.flow.quiet => Ok(s),
        _ => Err(unknown()),
    }
}

fn unknown() -> Recv {
    Recv::Error(io::Error::new(io::ErrorKind::NotFound, "unknown socket"))
}

impl EpollDriver {
    pub fn new(limits: Limits) -> Result<EpollDriver, EgressError> {
        Ok(EpollDriver {
            poll: Poll::new().map_err(EgressError::EpollSetup)?,
            mevents: mio::Events::with_capacity(1024),
            socks: Slab::new(limits.max_sockets),
            pools: Pools::new(limits),
            watches: Vec::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            deadlines: BinaryHeap::new(),
        })
    }

    fn mark_dirty(&mut self, slot: u32, gen: u32) {
        if let Some(s) = self.socks.get_mut(slot, gen) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push((slot, gen));
            }
        }
    }

    fn process_dirty(&mut self) {
        let mut list = std::mem::take(&mut self.dirty);
        for &(slot, gen) in &list {
            let close = match self.socks.get_mut(slot, gen) {
                Some(s) => {
                    s.dirty = false;
                    s.io(&mut self.pools, &mut self.ready)
                }
                None => false,
            };
            if close {
                self.close_now(slot, gen);
            }
        }
        list.clear();
        list.append(&mut self.dirty);
        self.dirty = list;
    }

    fn close_now(&mut self, slot: u32, gen: u32) {
        if let Some(mut s) = self.socks.remove(slot, gen) {
            let fd = s.fd.as_raw_fd();
            if let Err(e) = self.poll.registry().deregister(&mut SourceFd(&fd)) {
                tracing::debug!(error = %e, "deregister failed");
            }
            s.flow.free(&mut self.pools);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, gen))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(s) = self.socks.get_mut(slot, gen) else {
                continue;
            };
            match s.phase {
                Phase::Connecting => {
                    s.phase = Phase::Failed;
                    if !s.flow.quiet {
                        self.ready.push(Event::Connected {
                            token: s.flow.token,
                            result: Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "connect timed out",
                            )),
                        });
                    }
                }
                Phase::Lingering => {
                    tracing::debug!(slot, "graceful close timed out with unsent data");
                    self.close_now(slot, gen);
                }
                _ => {}
            }
        }
    }

    fn handle(&mut self, token: mio::Token, readable: bool, writable: bool, error: bool) {
        if token.0 & WATCH_BIT != 0 {
            if let Some(w) = self.watches.get_mut(token.0 & !WATCH_BIT) {
                w.fired = true;
                self.ready.push(Event::Wake { token: w.token });
            }
            return;
        }
        let (slot, gen) = Slab::<Sock>::split(SockId(token.0 as u64));
        let Some(s) = self.socks.get_mut(slot, gen) else {
            return;
        };
        match s.phase {
            Phase::Connecting => {
                let result = match sys::take_error(s.fd.as_raw_fd()) {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) if writable => Ok(()),
                    Ok(None) => return,
                };
                s.phase = if result.is_ok() {
                    Phase::Open
                } else {
                    Phase::Failed
                };
                s.rx_ready = true;
                s.tx_ready = true;
                if !s.flow.quiet {
                    self.ready.push(Event::Connected {
                        token: s.flow.token,
                        result,
                    });
                }
            }
            Phase::Open | Phase::Lingering => {
                s.rx_ready |= readable || error;
                s.tx_ready |= writable || error;
            }
            Phase::Failed => return,
        }
        self.mark_dirty(slot, gen);
    }
}

impl Sock {
    /// Move bytes while readiness and buffers allow. Returns true when a lingering close is
    /// finished and the socket should be closed now.
    fn io(&mut self, pools: &mut Pools, ready: &mut Vec<Event>) -> bool {
        if !matches!(self.phase, Phase::Open | Phase::Lingering) {
            return false;
        }
        let fd = self.fd.as_raw_fd();
        if self.phase == Phase::Open {
            self.read(fd, pools, ready);
        }
        self.write(fd, pools, ready);
        self.flow.release(pools);
        self.phase == Phase::Lingering && (!self.flow.tx_pending() || self.flow.err.is_some())
    }

    fn read(&mut self, fd: RawFd, pools: &mut Pools, ready: &mut Vec<Event>) {
        if self.flow.is_stream() {
            // Streams are read on demand by `recv` / `recv_into` (straight into the
            // caller's memory); here readiness only becomes an event.
            if self.rx_ready && !self.flow.eof && self.flow.err.is_none() {
                self.flow.notify_readable(ready);
            }
            return;
        }
        let mut got = false;
        let mut rounds = 0;
        while self.rx_ready && self.flow.rx_room(&pools.limits) {
            rounds += 1;
            let mut buf = std::mem::take(&mut pools.scratch);
            let r = sys::recv(fd, &mut buf);
            if let Ok(n) = r {
                self.flow.push_datagram(&buf[..n.min(buf.len())], pools);
            }
            pools.scratch = buf;
            match r {
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.rx_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "datagram socket error ignored");
                    if rounds > pools.limits.rx_datagrams + 8 {
                        break;
                    }
                }
            }
        }
        if got {
            self.flow.notify_readable(ready);
        }
    }

    fn write(&mut self, fd: RawFd, pools: &mut Pools, ready: &mut Vec<Event>) {
        while self.tx_ready && self.flow.err.is_none() {
            let data: &[u8] = if self.flow.is_stream() {
                self.flow.tx.data()
            } else {
                match self.flow.dtx.front() {
                    Some(d) => d,
                    None => break,
                }
            };
            if data.is_empty() {
                break;
            }
            match sys::send(fd, data) {
                Ok(n) if self.flow.is_stream() => self.flow.tx.consume(n),
                Ok(_) => self.flow.pop_datagram(pools),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tx_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if !self.flow.is_stream() => {
                    tracing::debug!(error = %e, "datagram send failed; dropped");
                    self.flow.pop_datagram(pools);
                }
                Err(e) => self.flow.fail(e, pools, ready),
            }
        }
        if self.flow.is_stream()
            && self.phase == Phase::Open
            && self.flow.shut == Shut::Wanted
            && self.flow.tx.len() == 0
        {
            if let Err(e) = sys::shutdown_write(fd) {
                tracing::debug!(error = %e, "shutdown(SHUT_WR) failed");
            }
            self.flow.shut = Shut::Done;
        }
        self.flow.notify_writable(ready, &pools.limits);
    }
}

impl Driver for EpollDriver {
    fn kind(&self) -> EgressDriver {
        EgressDriver::Epoll
    }

    fn open(
        &mut self,
        kind: SockKind,
        remote: SocketAddr,
        connect_timeout: Duration,
        token: Token,
    ) -> Result<SockId, EgressError> {
        let limits = self.pools.limits;
        if self.socks.len() >= limits.max_sockets {
            return Err(EgressError::TooManySockets(self.socks.len()));
        }
        let sock_err = |source| EgressError::Socket {
            kind,
            remote,
            source,
        };
        let fd = sys::socket(kind, &remote, true).map_err(sock_err)?;
        let addr = SockAddr::new(&remote);
        let stream = kind == SockKind::Tcp;
        let mut connect_result = None;
        let phase = if stream {
            if let Err(e) = sys::set_nodelay(fd.as_raw_fd()) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
            match sys::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => {
                    connect_result = Some(Ok(()));
                    Phase::Open
                }
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Phase::Connecting,
                Err(e) => {
                    connect_result = Some(Err(e));
                    Phase::Failed
                }
            }
        } else {
            sys::connect(fd.as_raw_fd(), &addr).map_err(sock_err)?;
            Phase::Open
        };
        let raw = fd.as_raw_fd();
        let sock = Sock {
            fd,
            flow: Flow::new(kind, token, &limits),
            phase,
            rx_ready: phase == Phase::Open,
            tx_ready: phase == Phase::Open,
            dirty: false,
        };
        let (slot, gen) = self
            .socks
            .insert(sock)
            .ok_or(EgressError::TooManySockets(self.socks.len()))?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(source) =
            self.poll
                .registry()
                .register(&mut SourceFd(&raw), mio_token(slot, gen), interest)
        {
            self.close_now(slot, gen);
            return Err(sock_err(source));
        }
        if let Some(result) = connect_result {
            self.ready.push(Event::Connected { token, result });
        }
        if phase == Phase::Connecting && !connect_timeout.is_zero() {
            self.deadlines
                .push(Reverse((Instant::now() + connect_timeout, slot, gen)));
        }
        Ok(Slab::<Sock>::id(slot, gen))
    }

    fn send(&mut self, sock: SockId, data: &[u8]) -> usize {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let Some(s) = self.socks.get_mut(slot, gen) else {
            return 0;
        };
        let n = s.flow.send(data, &mut self.pools);
        if n > 0 {
            self.mark_dirty(slot, gen);
        }
        n
    }

    fn send_space(&self, sock: SockId) -> usize {
        let (slot, gen) = Slab::<Sock>::split(sock);
        self.socks
            .get(slot, gen)
            .map_or(0, |s| s.flow.send_space(&self.pools.limits))
    }

    fn send_pending(&self, sock: SockId) -> usize {
        let (slot, gen) = Slab::<Sock>::split(sock);
        self.socks.get(slot, gen).map_or(0, |s| {
            if s.flow.is_stream() {
                s.flow.tx.len()
            } else {
                s.flow.dtx.len()
            }
        })
    }

    fn recv(&mut self, sock: SockId, f: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, Recv> {
        let s = live(&mut self.socks, sock)?;
        if s.flow.is_stream() && s.phase == Phase::Open {
            s.flow
                .fill_stream(s.fd.as_raw_fd(), &mut s.rx_ready, &mut self.pools);
        }
        s.flow.recv(f, &mut self.pools)
    }

    fn recv_into(&mut self, sock: SockId, buf: &mut [u8]) -> Result<usize, Recv> {
        let s = live(&mut self.socks, sock)?;
        if s.flow.is_stream() && s.phase == Phase::Open {
            let fd = s.fd.as_raw_fd();
            return s
                .flow
                .recv_stream_into(fd, &mut s.rx_ready, buf, &mut self.pools);
        }
        s.flow.recv_copy(buf, &mut self.pools)
    }

    fn shutdown_write(&mut self, sock: SockId) {
        let (slot, gen) = Slab::<Sock>::split(sock);
        if let Some(s) = self.socks.get_mut(slot, gen) {
            if s.flow.is_stream() && s.flow.shut == Shut::No && !s.flow.quiet {
                s.flow.shut = Shut::Wanted;
                self.mark_dirty(slot, gen);
            }
        }
    }

    fn close(&mut self, sock: SockId, reset: bool) {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let Some(s) = self.socks.get_mut(slot, gen) else {
            return;
        };
        if s.flow.quiet && !reset {
            return;
        }
        s.flow.quiet = true;
        if reset {
            if let Err(e) = sys::set_linger_zero(s.fd.as_raw_fd()) {
                tracing::debug!(error = %e, "SO_LINGER failed");
            }
        } else if s.phase == Phase::Open
            && s.flow.is_stream()
            && s.flow.tx_pending()
            && s.flow.err.is_none()
        {
            s.phase = Phase::Lingering;
            self.deadlines
                .push(Reverse((Instant::now() + CLOSE_LINGER, slot, gen)));
            self.mark_dirty(slot, gen);
            return;
        }
        self.close_now(slot, gen);
    }

    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError> {
        let idx = self.watches.len();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                mio::Token(WATCH_BIT | idx),
                Interest::READABLE,
            )
            .map_err(|source| EgressError::Watch { fd, source })?;
        self.watches.push(Watch {
            fd,
            token,
            fired: false,
        });
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> Result<(), EgressError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            for (i, w) in self.watches.iter_mut().enumerate() {
                if w.fired {
                    w.fired = false;
                    let r = self.poll.registry().reregister(
                        &mut SourceFd(&w.fd),
                        mio::Token(WATCH_BIT | i),
                        Interest::READABLE,
                    );
                    if let Err(e) = r {
                        tracing::warn!(fd = w.fd, error = %e, "re-arming a watched fd failed");
                    }
                }
            }
            self.process_dirty();
            let now = Instant::now();
            self.expire(now);
            let mut t = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(Reverse((at, _, _))) = self.deadlines.peek() {
                let dt = at.saturating_duration_since(now);
                t = Some(t.map_or(dt, |t| t.min(dt)));
            }
            if !self.ready.is_empty() {
                t = Some(Duration::ZERO);
            }
            match self.poll.poll(&mut self.mevents, t) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EgressError::Wait(e)),
            }
            let mut batch = std::mem::replace(&mut self.mevents, mio::Events::with_capacity(0));
            for ev in batch.iter() {
                let error = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                self.handle(ev.token(), ev.is_readable(), ev.is_writable(), error);
            }
            batch.clear();
            self.mevents = batch;
            self.process_dirty();
            if !self.ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        events.append(&mut self.ready);
        Ok(())
    }

    fn open_sockets(&self) -> usize {
        self.socks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an exchange, an idle established socket holds no data buffer, and its slab
    /// entry is small.
    #[test]
    fn idle_socket_holds_no_buffer() {
        let mut d = EpollDriver::new(Limits::default()).unwrap();
        let (id, _peer) = crate::egress::test_util::exchange_then_idle(&mut d);
        let (slot, gen) = Slab::<Sock>::split(id);
        let s = d.socks.get(slot, gen).unwrap();
        assert!(!s.flow.rx.holds_memory() && !s.flow.tx.holds_memory());

        let entry = std::mem::size_of::<(u32, Option<Sock>)>();
        eprintln!("epoll slab entry: {entry} bytes");
        assert!(entry <= 1024, "{entry}");
    }
}
