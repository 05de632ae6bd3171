//! io_uring egress driver.
//!
//! # Theory of operation
//!
//! One ring (SQ 4096 entries, CQ sized for every socket's ops) carries every socket
//! operation; `wait` is one `io_uring_enter(2)` with an `EXT_ARG` timeout that submits the
//! queued SQEs and waits for a completion, then drains the CQ. Every SQE carries a
//! [`op::Tag`] (op, slot generation, slot) in `user_data`.
//!
//! Per socket, at most: one receive-side op ([`Op::Poll`]), one
//! [`Op::Send`], plus connect/link-timeout and cancel. A slot is freed only after
//! every op that names it has completed, so a kernel op never outlives the buffers it may
//! touch, and a CQE always finds its slot (the generation check is defence in depth).
//!
//! | direction | ops |
//! |---|---|
//! | connect | `socket(2)` (blocking fd: io_uring does the waiting), `Connect` linked to `LinkTimeout`; `-ECANCELED` on the connect means the timeout fired |
//! | `from_host`, stream | one-shot `PollAdd(POLLIN)` (no buffer held); when it fires, a `Readable` event, and the caller's `recv_into` does `recv(2, MSG_DONTWAIT)` straight into its own memory (smoltcp's transmit buffer): one copy, where an io_uring `Recv` needs a buffer of ours that must stay put until the CQE, and a second copy out of it. The poll is re-armed only after a `recv(2)` hit `EAGAIN`, so a stream that keeps data waiting costs no ring round trips (host→guest, pinned, MTU 65520: see the commit) |
//! | `from_host`, datagram | `PollAdd(POLLIN)`, then `recv(2, MSG_DONTWAIT)` into the driver's one landing buffer until `EAGAIN`, copying each datagram into the queue: no per-socket 64 KiB landing buffer |
//! | `to_host`, stream | with nothing queued or in flight, one `send(2, MSG_DONTWAIT)` at once for what the socket takes; the rest: one `Send(MSG_NOSIGNAL)` of the contiguous head of the tx ring (re-issued for the remainder after a short send; the ring grows past its first 4 KiB tier when a send completes with data still queued); then `shutdown(2, SHUT_WR)` directly when asked and drained (`IORING_OP_SHUTDOWN` always goes to an io-wq worker thread) |
//! | `to_host`, datagram | with nothing queued ahead, one `send(2, MSG_DONTWAIT)` at once (a ring round trip per datagram would cap UDP at one datagram per `wait`); on `EAGAIN` the datagram is queued and sent by `Send` |
//! | close | `AsyncCancel(fd, ALL)`; the fd is closed and buffers freed when the last CQE naming the socket is reaped. A graceful close with unsent data keeps sending for up to [`CLOSE_LINGER`] first |
//! | watched fds | one-shot `PollAdd(POLLIN)`, re-armed at the start of the next `wait` after it fired: if the caller did not drain the fd it fires again at once, which is level-triggered behaviour (a multishot poll would be edge-triggered: it fires per wake-up, not per readiness) |
//!
//! Memory per idle established TCP socket: the slab entry (~250 bytes) plus the kernel's
//! poll request; no data buffer.

mod op;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use self::op::{cqe_result, Op, Tag};
use super::flow::{Flow, Pools, Shut, Slab};
use super::sys::{self, SockAddr};
use super::{
    Driver, EgressDriver, EgressError, Event, Limits, Recv, SockId, SockKind, Token, CLOSE_LINGER,
};

/// Submission queue entries.
const SQ_ENTRIES: u32 = 4096;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    /// The connect failed; waiting for the caller's `close`.
    Failed,
    /// Closed by the caller with unsent data: flushing until drained or the deadline.
    Lingering,
    /// Cancelling; freed when `inflight` reaches 0.
    Closing,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum RxOp {
    Idle,
    Poll,
}

struct Sock {
    fd: OwnedFd,
    flow: Flow,
    phase: Phase,
    /// SQEs naming this socket whose CQE has not been reaped.
    inflight: u32,
    /// Connect arguments; they live in the slab (which never moves) until the CQE.
    addr: SockAddr,
    timeout: types::Timespec,
    rx_op: RxOp,
    /// Stream: the last poll said readable and no `recv(2)` has hit `EAGAIN` since.
    rx_ready: bool,
    tx_op: bool,
}

/// The submission side plus its in-flight count (for draining on drop).
struct Sq {
    ring: IoUring,
    inflight: usize,
}

impl Sq {
    /// Queue one SQE, submitting to make room when the SQ is full.
    ///
    /// # Safety
    /// Every buffer or struct the SQE points to must stay valid (and unaliased where the
    /// kernel writes) until its CQE is reaped.
    unsafe fn push(&mut self, sqe: &squeue::Entry) {
        self.reserve(1);
        // SAFETY: the caller guarantees the SQE's pointers; `reserve` made room, and the
        // loop below only retries after another submit.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            self.submit_some();
        }
        self.inflight += 1;
    }

    /// Make room for `n` SQEs that must be contiguous (a linked pair).
    fn reserve(&mut self, n: usize) {
        loop {
            let mut sq = self.ring.submission();
            sq.sync();
            if sq.capacity() - sq.len() >= n {
                return;
            }
            drop(sq);
            self.submit_some();
        }
    }

    fn submit_some(&mut self) {
        if let Err(e) = self.ring.submit() {
            // EBUSY/EAGAIN: the kernel is short of room for completions; it frees up as we
            // reap, which `wait` does. Nothing else is expected here.
            tracing::warn!(error = %e, "io_uring submit failed while the SQ was full");
            std::thread::yield_now();
        }
    }
}

/// A watched fd.
struct Watch {
    fd: RawFd,
    token: Token,
    armed: bool,
    dead: bool,
}

/// The io_uring implementation of [`Driver`].
pub struct UringDriver {
    sq: Sq,
    socks: Slab<Sock>,
    pools: Pools,
    watches: Vec<Watch>,
    /// Events produced but not yet handed to the caller.
    ready: Vec<Event>,
    /// Reused CQE batch.
    cqes: Vec<(u64, i32)>,
    /// Graceful closes still flushing: (deadline, slot, generation).
    lingers: Vec<(Instant, u32, u32)>,
}

/// Everything socket-level code needs besides the socket.
struct Cx<'a> {
    sq: &'a mut Sq,
    pools: &'a mut Pools,
    ready: &'a mut Vec<Event>,
}

impl UringDriver {
    /// Set up the ring; fails with the kernel's error (`EPERM` under seccomp or
    /// `kernel.io_uring_disabled`, `ENOSYS` without io_uring).
    pub fn new(limits: Limits) -> Result<UringDriver, EgressError> {
        let cq = (limits.max_sockets.saturating_mul(4))
            .next_power_of_two()
            .clamp(2 * SQ_ENTRIES as usize, 65536);
        let ring = IoUring::builder()
            // cq <= 65536: fits.
            .setup_cqsize(cq as u32)
            .build(SQ_ENTRIES)
            .map_err(EgressError::UringSetup)?;
        Ok(UringDriver {
            sq: Sq { ring, inflight: 0 },
            socks: Slab::new(limits.max_sockets),
            pools: Pools::new(limits),
            watches: Vec::new(),
            ready: Vec::new(),
            cqes: Vec::new(),
            lingers: Vec::new(),
        })
    }

    fn cx(&mut self) -> (Cx<'_>, &mut Slab<Sock>) {
        (
            Cx {
                sq: &mut self.sq,
                pools: &mut self.pools,
                ready: &mut self.ready,
            },
            &mut self.socks,
        )
    }

    /// Drain the CQ and act on every completion.
    fn reap(&mut self) {
        let mut batch = std::mem::take(&mut self.cqes);
        batch.clear();
        batch.extend(
            self.sq
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result())),
        );
        for &(ud, res) in &batch {
            self.complete(ud, res);
        }
        self.cqes = batch;
    }

    fn complete(&mut self, ud: u64, res: i32) {
        let Some(tag) = Tag::unpack(ud) else {
            tracing::warn!(ud, "completion with an unknown user_data");
            return;
        };
        self.sq.inflight = self.sq.inflight.saturating_sub(1);
        let res = cqe_result(res);
        if tag.op == Op::Wake {
            self.wake_done(tag.slot as usize, res);
            return;
        }
        let (mut cx, socks) = self.cx();
        let Some(s) = socks.get_mut(tag.slot, tag.gen) else {
            tracing::debug!(?tag, "stale completion ignored");
            return;
        };
        s.inflight = s.inflight.saturating_sub(1);
        s.complete(&mut cx, tag, res);
        if s.phase == Phase::Closing && s.inflight == 0 {
            if let Some(mut s) = socks.remove(tag.slot, tag.gen) {
                s.flow.free(cx.pools);
            }
        }
    }

    fn wake_done(&mut self, idx: usize, res: io::Result<usize>) {
        let Some(w) = self.watches.get_mut(idx) else {
            return;
        };
        w.armed = false;
        match res {
            Ok(_) => self.ready.push(Event::Wake { token: w.token }),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
            Err(e) => {
                tracing::warn!(fd = w.fd, error = %e, "watched fd failed; no longer watched");
                w.dead = true;
            }
        }
    }

    fn arm_watches(&mut self) {
        for (i, w) in self.watches.iter_mut().enumerate() {
            if w.armed || w.dead {
                continue;
            }
            // Watch indices are far below u32::MAX (one per wake-up fd of the poll thread).
            let ud = Tag::new(Op::Wake, i as u32, 0).pack();
            let sqe = opcode::PollAdd::new(types::Fd(w.fd), libc::POLLIN as u32)
                .build()
                .user_data(ud);
            // SAFETY: a poll SQE references no memory of ours.
            unsafe { self.sq.push(&sqe) };
            w.armed = true;
        }
    }

    fn expire_lingers(&mut self, now: Instant) -> Option<Instant> {
        let mut expired = std::mem::take(&mut self.lingers);
        let mut next = None::<Instant>;
        expired.retain(|&(at, slot, gen)| {
            if at <= now {
                let (mut cx, socks) = self.cx();
                if let Some(s) = socks.get_mut(slot, gen) {
                    if s.phase == Phase::Lingering {
                        tracing::debug!(slot, "graceful close timed out with unsent data");
                        s.start_close(&mut cx, slot, gen);
                    }
                    if s.phase == Phase::Closing && s.inflight == 0 {
                        if let Some(mut s) = socks.remove(slot, gen) {
                            s.flow.free(cx.pools);
                        }
                    }
                }
                false
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
                true
            }
        });
        expired.append(&mut self.lingers);
        self.lingers = expired;
        next
    }

    /// One `io_uring_enter(2)`: submit, wait for one CQE at most `timeout`.
    fn enter(&mut self, timeout: Option<Duration>) -> Result<(), EgressError> {
        let submitter = self.sq.ring.submitter();
        let r = match timeout {
            Some(t) if t.is_zero() => submitter.submit(),
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
            None => submitter.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(EgressError::Wait(e)),
            },
        }
    }
}

impl Sock {
    fn fd(&self) -> types::Fd {
        types::Fd(self.fd.as_raw_fd())
    }

    fn push(&mut self, cx: &mut Cx<'_>, sqe: squeue::Entry, op: Op, slot: u32, gen: u32) {
        let sqe = sqe.user_data(Tag::new(op, slot, gen).pack());
        // SAFETY: every caller lends the memory the SQE points to (ring regions marked lent,
        // the head datagram, or `addr`/`timeout` in this slab entry); none of it is freed or
        // moved before the CQE, because the slot is only freed once `inflight` is 0.
        unsafe { cx.sq.push(&sqe) };
        self.inflight += 1;
    }

    /// Queue whatever the socket's state allows.
    fn arm(&mut self, cx: &mut Cx<'_>, slot: u32, gen: u32) {
        match self.phase {
            Phase::Open => {
                self.arm_rx(cx, slot, gen);
                self.arm_tx(cx, slot, gen);
            }
            Phase::Lingering => {
                self.arm_tx(cx, slot, gen);
                if !self.tx_op && !self.flow.tx_pending() {
                    self.start_close(cx, slot, gen);
                }
            }
            _ => {}
        }
    }

    fn arm_rx(&mut self, cx: &mut Cx<'_>, slot: u32, gen: u32) {
        // A stream known readable needs no poll until a recv(2) hits EAGAIN.
        if self.rx_op != RxOp::Idle || self.rx_ready || !self.flow.rx_room(&cx.pools.limits) {
            return;
        }
        let sqe = opcode::PollAdd::new(self.fd(), libc::POLLIN as u32).build();
        self.push(cx, sqe, Op::Poll, slot, gen);
        self.rx_op = RxOp::Poll;
    }

    fn arm_tx(&mut self, cx: &mut Cx<'_>, slot: u32, gen: u32) {
        if self.tx_op || self.flow.err.is_some() {
            return;
        }
        let (ptr, len) = if self.flow.is_stream() {
            if self.flow.tx.len() == 0 {
                if self.flow.shut == Shut::Wanted && self.phase == Phase::Open {
                    // shutdown(2) never blocks, but `IORING_OP_SHUTDOWN` is always punted
                    // to an io-wq worker thread (a thread switch per connection): call it
                    // directly (pinned connect/request/close rate: see the commit).
                    if let Err(e) = sys::shutdown_write(self.fd.as_raw_fd()) {
                        tracing::debug!(error = %e, "shutdown(SHUT_WR) failed");
                    }
                    self.flow.shut = Shut::Done;
                }
                return;
            }
            self.flow.tx.lend_data()
        } else {
            match self.flow.dtx.front() {
                Some(d) => (d.as_ptr(), d.len()),
                None => return,
            }
        };
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let sqe = opcode::Send::new(self.fd(), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(cx, sqe, Op::Send, slot, gen);
        self.tx_op = true;
    }

    /// Stop everything: cancel ops on the fd; the slot is freed when the last CQE is in.
    fn start_close(&mut self, cx: &mut Cx<'_>, slot: u32, gen: u32) {
        self.phase = Phase::Closing;
        self.flow.quiet = true;
        if self.inflight > 0 {
            let b = types::CancelBuilder::fd(self.fd()).all();
            let sqe = opcode::AsyncCancel2::new(b).build();
            self.push(cx, sqe, Op::Cancel, slot, gen);
        }
    }

    fn complete(&mut self, cx: &mut Cx<'_>, tag: Tag, res: io::Result<usize>) {
        let (slot, gen) = (tag.slot, tag.gen);
        match tag.op {
            Op::Connect => {
                if self.phase != Phase::Connecting {
                    return;
                }
                let result = match res {
                    Ok(_) => {
                        self.phase = Phase::Open;
                        Ok(())
                    }
                    Err(e) => {
                        self.phase = Phase::Failed;
                        if e.raw_os_error() == Some(libc::ECANCELED) {
                            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                        } else {
                            Err(e)
                        }
                    }
                };
                if !self.flow.quiet {
                    cx.ready.push(Event::Connected {
                        token: self.flow.token,
                        result,
                    });
                }
            }
            Op::LinkTimeout | Op::Cancel | Op::Wake => {}
            Op::Poll => {
                self.rx_op = RxOp::Idle;
                if self.phase == Phase::Open && self.flow.rx_room(&cx.pools.limits) {
                    if self.flow.is_stream() {
                        // Read on demand by `recv_into` / `recv`, straight into the
                        // caller's memory (an io_uring `Recv` would need a buffer of ours
                        // and a second copy).
                        self.rx_ready = true;
                        self.flow.notify_readable(cx.ready);
                    } else {
                        self.drain_datagrams(cx);
                    }
                }
            }
            Op::Send => {
                self.tx_op = false;
                if self.flow.is_stream() {
                    match res {
                        Ok(n) => {
                            self.flow.tx.consume(n);
                            self.flow.tx.grow(cx.pools);
                        }
                        Err(e) => {
                            self.flow.tx.unlend();
                            if matches!(self.phase, Phase::Open | Phase::Lingering) {
                                self.flow.fail(e, cx.pools, cx.ready);
                                if self.phase == Phase::Lingering {
                                    self.start_close(cx, slot, gen);
                                }
                            }
                        }
                    }
                } else {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "datagram send failed; dropped");
                    }
                    self.flow.pop_datagram(cx.pools);
                }
                self.flow.notify_writable(cx.ready, &cx.pools.limits);
                self.flow.release(cx.pools);
            }
        }
        self.arm(cx, slot, gen);
    }

    /// After a poll on a datagram socket: read datagrams until `EAGAIN` or the queue is full.
    fn drain_datagrams(&mut self, cx: &mut Cx<'_>) {
        let fd = self.fd.as_raw_fd();
        let mut buf = std::mem::take(&mut cx.pools.scratch);
        let mut got = false;
        // Bounded: each failed recv consumes one pending ICMP error.
        for _ in 0..cx.pools.limits.rx_datagrams + 8 {
            if !self.flow.rx_room(&cx.pools.limits) {
                break;
            }
            match sys::recv(fd, &mut buf) {
                Ok(n) => {
                    self.flow.push_datagram(&buf[..n.min(buf.len())], cx.pools);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => tracing::debug!(error = %e, "datagram socket error ignored"),
            }
        }
        cx.pools.scratch = buf;
        if got {
            self.flow.notify_readable(cx.ready);
        }
    }
}

impl UringDriver {
    /// Run a receive on the socket `sock` names (unless unknown or closed by the caller),
    /// then queue whatever its state allows.
    fn with_live(
        &mut self,
        sock: SockId,
        f: impl FnOnce(&mut Sock, &mut Pools) -> Result<usize, Recv>,
    ) -> Result<usize, Recv> {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let (mut cx, socks) = self.cx();
        let Some(s) = socks.get_mut(slot, gen).filter(|s| !s.flow.quiet) else {
            return Err(unknown());
        };
        let r = f(s, cx.pools);
        s.arm(&mut cx, slot, gen);
        r
    }
}

fn unknown() -> Recv {
    Recv::Error(io::Error::new(io::ErrorKind::NotFound, "unknown socket"))
}

impl Driver for UringDriver {
    fn kind(&self) -> EgressDriver {
        EgressDriver::Uring
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
        // Blocking fd: io_uring does the waiting; direct syscalls pass MSG_DONTWAIT.
        let fd = sys::socket(kind, &remote, false).map_err(sock_err)?;
        let addr = SockAddr::new(&remote);
        let stream = kind == SockKind::Tcp;
        if stream {
            if let Err(e) = sys::set_nodelay(fd.as_raw_fd()) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
        } else {
            sys::connect(fd.as_raw_fd(), &addr).map_err(sock_err)?;
        }
        let sock = Sock {
            fd,
            flow: Flow::new(kind, token, &limits),
            phase: if stream {
                Phase::Connecting
            } else {
                Phase::Open
            },
            inflight: 0,
            addr,
            timeout: types::Timespec::from(connect_timeout),
            rx_op: RxOp::Idle,
            rx_ready: false,
            tx_op: false,
        };
        let (slot, gen) = self
            .socks
            .insert(sock)
            .ok_or(EgressError::TooManySockets(self.socks.len()))?;
        let (mut cx, socks) = self.cx();
        let Some(s) = socks.get_mut(slot, gen) else {
            unreachable!("slot {slot} was inserted just above");
        };
        if stream {
            let timed = !connect_timeout.is_zero();
            cx.sq.reserve(2);
            let mut connect = opcode::Connect::new(s.fd(), s.addr.as_ptr(), s.addr.len).build();
            if timed {
                connect = connect.flags(squeue::Flags::IO_LINK);
            }
            s.push(&mut cx, connect, Op::Connect, slot, gen);
            if timed {
                let lt = opcode::LinkTimeout::new(&raw const s.timeout).build();
                s.push(&mut cx, lt, Op::LinkTimeout, slot, gen);
            }
        } else {
            s.arm(&mut cx, slot, gen);
        }
        Ok(Slab::<Sock>::id(slot, gen))
    }

    fn send(&mut self, sock: SockId, data: &[u8]) -> usize {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let (mut cx, socks) = self.cx();
        let Some(s) = socks.get_mut(slot, gen) else {
            return 0;
        };
        // A datagram with nothing queued ahead of it goes out at once with one non-blocking
        // send(2) (as the epoll driver does): a ring round trip per datagram would cap UDP
        // at one datagram per `wait`. Only a full socket buffer queues it for io_uring.
        if !s.flow.is_stream()
            && s.phase == Phase::Open
            && !s.tx_op
            && s.flow.dtx.is_empty()
            && !s.flow.quiet
            && data.len() <= cx.pools.limits.max_datagram
        {
            match sys::send(s.fd.as_raw_fd(), data) {
                Ok(_) => return data.len(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // Like a NAT: ICMP-caused errors and failed sends drop the datagram.
                    tracing::debug!(error = %e, "datagram send failed; dropped");
                    return data.len();
                }
            }
        }
        // The same for a stream with nothing queued or in flight: write what the socket
        // takes now, queue only the rest (pinned upload through ringnet: 10.0 -> 13.9 Gbit/s).
        let mut direct = 0;
        if s.flow.is_stream()
            && s.phase == Phase::Open
            && !s.tx_op
            && s.flow.tx.len() == 0
            && s.flow.send_space(&cx.pools.limits) > 0
        {
            match sys::send(s.fd.as_raw_fd(), data) {
                Ok(k) if k == data.len() => return k,
                Ok(k) => direct = k,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // This send(2) consumed the socket's pending error (a reset): a later
                    // recv(2) would read a clean EOF. Keep it for `recv` (the guest must
                    // see the reset) and take nothing.
                    s.flow.fail(e, cx.pools, cx.ready);
                    return 0;
                }
            }
        }
        let n = direct + s.flow.send(&data[direct..], cx.pools);
        if n > direct {
            s.arm(&mut cx, slot, gen);
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
        self.with_live(sock, |s, pools| {
            if s.flow.is_stream() && s.phase == Phase::Open {
                s.flow.fill_stream(s.fd.as_raw_fd(), &mut s.rx_ready, pools);
            }
            s.flow.recv(f, pools)
        })
    }

    fn recv_into(&mut self, sock: SockId, buf: &mut [u8]) -> Result<usize, Recv> {
        self.with_live(sock, |s, pools| {
            if s.flow.is_stream() && s.phase == Phase::Open {
                let fd = s.fd.as_raw_fd();
                s.flow.recv_stream_into(fd, &mut s.rx_ready, buf, pools)
            } else {
                s.flow.recv_copy(buf, pools)
            }
        })
    }

    fn shutdown_write(&mut self, sock: SockId) {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let (mut cx, socks) = self.cx();
        if let Some(s) = socks.get_mut(slot, gen) {
            if s.flow.is_stream() && s.flow.shut == Shut::No && !s.flow.quiet {
                s.flow.shut = Shut::Wanted;
                s.arm(&mut cx, slot, gen);
            }
        }
    }

    fn close(&mut self, sock: SockId, reset: bool) {
        let (slot, gen) = Slab::<Sock>::split(sock);
        let now = Instant::now();
        let (mut cx, socks) = self.cx();
        let Some(s) = socks.get_mut(slot, gen) else {
            return;
        };
        if s.flow.quiet && !(reset && s.phase == Phase::Lingering) {
            return;
        }
        s.flow.quiet = true;
        if reset {
            if let Err(e) = sys::set_linger_zero(s.fd.as_raw_fd()) {
                tracing::debug!(error = %e, "SO_LINGER failed");
            }
        }
        let flush = !reset && s.phase == Phase::Open && s.flow.is_stream() && s.flow.tx_pending();
        if flush {
            s.phase = Phase::Lingering;
            if s.rx_op == RxOp::Poll {
                let b = types::CancelBuilder::user_data(Tag::new(Op::Poll, slot, gen).pack());
                s.push(
                    &mut cx,
                    opcode::AsyncCancel2::new(b).build(),
                    Op::Cancel,
                    slot,
                    gen,
                );
            }
            self.lingers.push((now + CLOSE_LINGER, slot, gen));
            return;
        }
        s.start_close(&mut cx, slot, gen);
        if s.inflight == 0 {
            if let Some(mut s) = socks.remove(slot, gen) {
                s.flow.free(cx.pools);
            }
        }
    }

    fn watch(&mut self, fd: RawFd, token: Token) -> Result<(), EgressError> {
        if fd < 0 {
            return Err(EgressError::Watch {
                fd,
                source: io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        self.watches.push(Watch {
            fd,
            token,
            armed: false,
            dead: false,
        });
        self.arm_watches();
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> Result<(), EgressError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.arm_watches();
            let now = Instant::now();
            let next_linger = self.expire_lingers(now);
            let mut t = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(l) = next_linger {
                let lt = l.saturating_duration_since(now);
                t = Some(t.map_or(lt, |t| t.min(lt)));
            }
            if !self.ready.is_empty() {
                t = Some(Duration::ZERO);
            }
            self.enter(t)?;
            self.reap();
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

impl Drop for UringDriver {
    /// Cancel everything and reap until no op can touch our memory; if the kernel does not
    /// let go within a bound, leak the buffers rather than free memory it may still write.
    fn drop(&mut self) {
        if self.sq.inflight == 0 {
            return;
        }
        for (_, _, s) in self.socks.iter_mut() {
            s.phase = Phase::Closing;
            s.flow.quiet = true;
        }
        let ud = Tag::new(Op::Cancel, u32::MAX, 0).pack();
        let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(ud);
        // SAFETY: a cancel SQE references no memory of ours.
        unsafe { self.sq.push(&sqe) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.sq.inflight > 0 && Instant::now() < deadline {
            if self.enter(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            self.reap();
        }
        if self.sq.inflight > 0 {
            tracing::error!(
                inflight = self.sq.inflight,
                "io_uring ops outlive the driver; leaking buffers"
            );
            std::mem::forget(std::mem::replace(&mut self.socks, Slab::new(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an exchange, an idle established socket holds no data buffer, and its slab
    /// entry is small.
    #[test]
    fn idle_socket_holds_no_buffer() {
        let mut d = UringDriver::new(Limits::default()).unwrap();
        let (id, _peer) = crate::egress::test_util::exchange_then_idle(&mut d);
        let (slot, gen) = Slab::<Sock>::split(id);
        let s = d.socks.get(slot, gen).unwrap();
        assert!(!s.flow.rx.holds_memory() && !s.flow.tx.holds_memory());
        assert_eq!(s.rx_op, RxOp::Poll, "idle: a poll, not a recv, is armed");
        let entry = std::mem::size_of::<(u32, Option<Sock>)>();
        eprintln!("uring slab entry: {entry} bytes");
        assert!(entry <= 1024, "{entry}");
    }
}
