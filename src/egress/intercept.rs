//! TLS interception's I/O: worker threads that own intercepted flows' sockets and drive
//! their [`Session`]s, so that no handshake or record crypto runs on the poll thread.
//!
//! # Theory of operation
//!
//! For a guest SYN to an intercepted port the poll thread calls [`Interceptor::open`]: it
//! makes a unix socket pair, keeps one end as the flow's "host socket" (adopted by its
//! egress driver like any other) and queues the other end, with the real destination, to a
//! worker (round robin). From the poll thread's side an intercepted flow is an ordinary
//! flow whose host happens to be a worker.
//!
//! ```text
//! guest ⇄ smoltcp ⇄ [poll thread] ⇄ unix pair ⇄ [TLS worker: Session] ⇄ TCP ⇄ server
//! ```
//!
//! A worker is a mio event loop over many flows, never blocking on one:
//!
//! 1. **Connect.** It connects the destination (then the fallback, if refused) within the
//!    flow's connect timeout and writes one status byte to the pair: [`STATUS_OK`], else
//!    [`STATUS_FAILED`] and close. The poll thread holds the guest's SYN-ACK until that byte
//!    (the flow's `Connecting` phase), so a refused server is a RST to the guest, as
//!    without interception.
//! 2. **Relay.** Bytes read from either side go through the session
//!    ([`crate::tls::session`]: ClientHello, upstream verification, leaf, decryption,
//!    secrets rewriting, encryption); what it outputs is written to the other side. A side
//!    is read only while the opposite output holds less than [`OUT_HIGH`] bytes, 64 KiB at
//!    a time: backpressure in both directions, and per-flow memory bounded by the outputs,
//!    one read and the session's own bounds.
//! 3. **End.** An end of stream is passed on (`shutdown(SHUT_WR)` once the output before
//!    it is written); the flow is freed when both directions ended. A session error (a
//!    violation, a refused server certificate, a bad record) writes what the session made
//!    for the guest (an alert), resets the server connection and closes the pair. The poll
//!    thread sees the pair's end as the host's FIN: a reset from the server reaches the
//!    guest as a TLS stream cut short, not as a TCP RST.
//!
//! A slow handshake, a stalled server or a guest that stops reading delays only its own
//! flow: every socket is non-blocking and every wait is an event. Heavy work (a leaf
//! signature, a key exchange) takes the worker for about a millisecond; `tls.workers`
//! spreads flows over more threads.
//!
//! ## Limits
//!
//! Flows per network are bounded by the poll thread's `max_connections` (one pair each);
//! each worker's queue of new flows holds [`QUEUE`] (beyond: refused, `tls_refused`).
//! Counters: `tls_*`, `secret_*` in [`crate::metrics::Stats`].
//!
//! ## Syscalls
//!
//! `socketpair`, `socket`/`connect`/`read`/`write`/`shutdown`/`close`, `setsockopt`
//! (`TCP_NODELAY`, `SO_LINGER`), `epoll_*` and an eventfd (mio), thread spawn. A worker
//! enters [`crate::sandbox::Role::TlsWorker`]'s allow-list before its loop.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::link::Link;
use crate::metrics::Stats;
use crate::observe::events::{Denial, DenialReason};
use crate::observe::term::TermEvent;
use crate::policy::Proto;
use crate::secrets::OnViolation;
use crate::tls::session::{Kind, Session, SessionError, Shared};

/// The status byte for a connected destination.
pub const STATUS_OK: u8 = 0;
/// The status byte for a destination that could not be connected (the pair closes).
pub const STATUS_FAILED: u8 = 1;

/// New flows queued per worker, at most.
pub const QUEUE: usize = 1024;

/// Output bytes towards one side above which the other side is not read.
pub const OUT_HIGH: usize = 256 * 1024;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

const WAKER: Token = Token(usize::MAX);

/// What went wrong starting workers or handing them a flow.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// A worker's event loop could not be made.
    #[error("TLS worker event loop: {0}")]
    Poll(io::Error),
    /// A worker thread could not be started.
    #[error("starting a TLS worker thread: {0}")]
    Spawn(io::Error),
    /// The unix socket pair of a flow could not be made.
    #[error("socket pair for an intercepted flow: {0}")]
    Pair(io::Error),
    /// Every worker's queue is full.
    #[error("every TLS worker's queue is full ({QUEUE} flows each)")]
    Full,
}

/// An intercepted flow, as the poll thread describes it.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// The host address to connect (the gateway mapped to loopback, as for any flow).
    pub target: SocketAddr,
    /// Tried when `target` refuses.
    pub fallback: Option<SocketAddr>,
    pub connect_timeout: Duration,
    /// The names this guest resolved to `dst` through ringnet's DNS.
    pub pinned: Vec<String>,
    /// The guest's address and the destination it dialed (for events and logs).
    pub guest: IpAddr,
    pub dst: SocketAddr,
}

struct NewFlow {
    pair: std::os::unix::net::UnixStream,
    spec: FlowSpec,
}

struct Worker {
    queue: Arc<ArrayQueue<NewFlow>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The TLS workers of one network.
pub struct Interceptor {
    ports: Vec<u16>,
    workers: Vec<Worker>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
    link: Arc<Link>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("ports", &self.ports)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Starts `shared.tls.workers` worker threads for the network of `link`; each enters the
    /// sandbox as `sandbox` says ([`crate::sandbox::Role::TlsWorker`]) before its loop.
    ///
    /// # Errors
    /// [`InterceptError::Poll`] or [`InterceptError::Spawn`].
    pub fn start(
        shared: Arc<Shared>,
        link: Arc<Link>,
        sandbox: &crate::sandbox::SandboxConfig,
    ) -> Result<Interceptor, InterceptError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..shared.tls.workers.max(1) {
            let poll = Poll::new().map_err(InterceptError::Poll)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(InterceptError::Poll)?);
            let queue = Arc::new(ArrayQueue::new(QUEUE));
            let mut loop_ = Loop {
                poll,
                queue: queue.clone(),
                stop: stop.clone(),
                shared: shared.clone(),
                link: link.clone(),
                conns: Vec::new(),
                free: Vec::new(),
                buf: vec![0; READ_CHUNK],
            };
            let thread = std::thread::Builder::new()
                .name(format!("ringnet-tls-{i}"))
                .spawn({
                    let sandbox = sandbox.clone();
                    move || {
                        crate::sandbox::enter_or_warn(crate::sandbox::Role::TlsWorker, &sandbox);
                        loop_.run();
                    }
                })
                .map_err(InterceptError::Spawn)?;
            workers.push(Worker {
                queue,
                waker,
                thread: Some(thread),
            });
        }
        Ok(Interceptor {
            ports: shared.tls.intercept_ports.clone(),
            workers,
            next: AtomicUsize::new(0),
            stop,
            link,
        })
    }

    /// True when TCP flows to `port` are intercepted.
    #[must_use]
    pub fn intercepts(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Hands a new flow to a worker; returns the poll thread's end of its pair.
    ///
    /// # Errors
    /// [`InterceptError::Pair`], [`InterceptError::Full`] (counted in `tls_refused`).
    pub fn open(&self, spec: FlowSpec) -> Result<OwnedFd, InterceptError> {
        let refused = |e| {
            Stats::inc(&self.link.stats.tls_refused);
            e
        };
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| refused(InterceptError::Pair(e)))?;
        let mut flow = NewFlow { pair: theirs, spec };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.workers.len() {
            let w = &self.workers[(start + k) % self.workers.len()];
            match w.queue.push(flow) {
                Ok(()) => {
                    if let Err(e) = w.waker.wake() {
                        tracing::debug!(error = %e, "waking a TLS worker failed");
                    }
                    Stats::inc(&self.link.stats.tls_flows);
                    return Ok(OwnedFd::from(ours));
                }
                Err(back) => flow = back,
            }
        }
        Err(refused(InterceptError::Full))
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &mut self.workers {
            let _ = w.waker.wake();
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    tracing::warn!("a TLS worker panicked");
                }
            }
        }
    }
}

/// One direction's socket state.
#[derive(Debug, Default, Clone, Copy)]
struct Side {
    readable: bool,
    writable: bool,
    eof: bool,
    shut: bool,
}

enum Phase {
    Connecting {
        deadline: Instant,
        fallback: Option<SocketAddr>,
    },
    Running,
}

struct Conn {
    guest: UnixStream,
    host: TcpStream,
    phase: Phase,
    session: Session,
    g: Side,
    h: Side,
    kind: Kind,
    spec: FlowSpec,
}

struct Loop {
    poll: Poll,
    queue: Arc<ArrayQueue<NewFlow>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    link: Arc<Link>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    buf: Vec<u8>,
}

fn token(idx: usize, host: bool) -> Token {
    Token(idx * 2 + usize::from(host))
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Acquire) {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "TLS worker: poll failed; its flows end");
                    break;
                }
            }
            let mut touched = Vec::new();
            for ev in &events {
                if ev.token() == WAKER {
                    continue;
                }
                let idx = ev.token().0 / 2;
                let host = ev.token().0 % 2 == 1;
                let Some(Some(c)) = self.conns.get_mut(idx) else {
                    continue;
                };
                let side = if host { &mut c.h } else { &mut c.g };
                side.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                side.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                touched.push(idx);
            }
            while let Some(flow) = self.queue.pop() {
                if let Some(idx) = self.admit(flow) {
                    touched.push(idx);
                }
            }
            self.expire_connects(&mut touched);
            touched.sort_unstable();
            touched.dedup();
            for idx in touched {
                self.drive(idx);
            }
        }
        // Stopping: every flow ends with the network.
        for idx in 0..self.conns.len() {
            self.close(idx, true);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| match c.phase {
                Phase::Connecting { deadline, .. } => Some(deadline),
                Phase::Running => None,
            })
            .min()
    }

    fn expire_connects(&mut self, touched: &mut Vec<usize>) {
        let now = Instant::now();
        for (idx, c) in self.conns.iter().enumerate() {
            if let Some(Conn {
                phase: Phase::Connecting { deadline, .. },
                ..
            }) = c
            {
                if *deadline <= now {
                    touched.push(idx);
                }
            }
        }
    }

    /// Registers a new flow and starts its connect.
    fn admit(&mut self, flow: NewFlow) -> Option<usize> {
        let NewFlow { pair, spec } = flow;
        if let Err(e) = pair.set_nonblocking(true) {
            tracing::debug!(error = %e, "TLS worker: socket pair");
            return None;
        }
        let guest = UnixStream::from_std(pair);
        let deadline = Instant::now() + spec.connect_timeout.max(Duration::from_millis(1));
        let host = match TcpStream::connect(spec.target) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(dst = %spec.dst, error = %e, "TLS worker: connect failed");
                let _ = send_to(&guest, &[STATUS_FAILED]);
                return None;
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = Conn {
            guest,
            host,
            phase: Phase::Connecting {
                deadline,
                fallback: spec.fallback,
            },
            session: Session::new(self.shared.clone(), spec.pinned.clone()),
            g: Side::default(),
            h: Side::default(),
            kind: Kind::Pending,
            spec,
        };
        let r = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = r
            .register(&mut conn.guest, token(idx, false), both)
            .and_then(|()| r.register(&mut conn.host, token(idx, true), both))
        {
            tracing::debug!(error = %e, "TLS worker: register failed");
            let _ = send_to(&conn.guest, &[STATUS_FAILED]);
            self.free.push(idx);
            return None;
        }
        self.conns[idx] = Some(conn);
        Some(idx)
    }

    fn drive(&mut self, idx: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return;
        };
        if let Phase::Connecting { deadline, fallback } = c.phase {
            match connect_state(&c.host) {
                Ok(true) => {
                    if let Err(e) = c.host.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY failed");
                    }
                    if send_to(&c.guest, &[STATUS_OK]).is_err() {
                        self.close(idx, true);
                        return;
                    }
                    c.phase = Phase::Running;
                    c.h.readable = true;
                    c.h.writable = true;
                    c.g.readable = true;
                    c.g.writable = true;
                }
                Ok(false) if Instant::now() < deadline => return,
                result => {
                    let why = match result {
                        Err(e) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if let Some(alt) = fallback.filter(|_| Instant::now() < deadline) {
                        if let Ok(mut h) = TcpStream::connect(alt) {
                            let r = self.poll.registry();
                            let _ = r.deregister(&mut c.host);
                            let both = Interest::READABLE | Interest::WRITABLE;
                            if r.register(&mut h, token(idx, true), both).is_ok() {
                                c.host = h;
                                c.phase = Phase::Connecting {
                                    deadline,
                                    fallback: None,
                                };
                                return;
                            }
                        }
                    }
                    tracing::debug!(dst = %c.spec.dst, "TLS worker: connect failed: {why}");
                    let _ = send_to(&c.guest, &[STATUS_FAILED]);
                    self.close(idx, false);
                    return;
                }
            }
        }
        let r = self.relay(idx);
        if r.is_ok() {
            self.kind_changed_stats(idx);
        }
        match r {
            Ok(true) => self.close(idx, false),
            Ok(false) => {}
            Err(Ended::Session(e)) => self.session_failed(idx, &e),
            Err(Ended::Io(e)) => {
                tracing::debug!(error = %e, "TLS worker: socket error");
                self.close(idx, true);
            }
        }
    }

    /// Moves bytes until nothing more can move; `Ok(true)` when the flow is complete.
    fn relay(&mut self, idx: usize) -> Result<bool, Ended> {
        let buf = &mut self.buf;
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return Ok(false);
        };
        loop {
            let mut progress = false;
            // from_guest → session
            if c.g.readable && !c.g.eof && c.session.to_host.len() < OUT_HIGH {
                match c.guest.read(buf) {
                    Ok(0) => {
                        c.g.eof = true;
                        c.session.guest_eof().map_err(Ended::Session)?;
                    }
                    Ok(n) => c
                        .session
                        .from_guest(&buf[..n], SystemTime::now())
                        .map_err(Ended::Session)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.g.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Ended::Io(e)),
                }
                progress = true;
            }
            // from_host → session
            if c.h.readable && !c.h.eof && c.session.to_guest.len() < OUT_HIGH {
                match c.host.read(buf) {
                    Ok(0) => {
                        c.h.eof = true;
                        c.session.host_eof().map_err(Ended::Session)?;
                    }
                    Ok(n) => c.session.from_host(&buf[..n]).map_err(Ended::Session)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.h.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Ended::Io(e)),
                }
                progress = true;
            }
            progress |= flush(
                &mut c.host,
                &mut c.h,
                &mut c.session.to_host,
                c.session.host_done,
            )?;
            progress |= flush(
                &mut c.guest,
                &mut c.g,
                &mut c.session.to_guest,
                c.session.guest_done,
            )?;
            if c.g.eof && c.h.eof && c.g.shut && c.h.shut {
                return Ok(true);
            }
            if !progress {
                return Ok(false);
            }
        }
    }

    /// Counts what the session became and what its rewriter did.
    fn kind_changed_stats(&mut self, idx: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return;
        };
        let stats = &self.link.stats;
        let kind = c.session.kind();
        if kind != c.kind {
            c.kind = kind;
            match kind {
                Kind::Intercepted => {
                    Stats::inc(&stats.tls_intercepted);
                    let leaves = self
                        .shared
                        .leaves
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .stats();
                    stats
                        .tls_leaf_issued
                        .store(leaves.issued, Ordering::Relaxed);
                    stats
                        .tls_leaf_evicted
                        .store(leaves.evicted, Ordering::Relaxed);
                }
                Kind::Bypassed => Stats::inc(&stats.tls_bypassed),
                Kind::Pending => {}
            }
        }
        let d = c.session.take_stats();
        for (counter, n) in [
            (&stats.secret_substitutions, d.substitutions),
            (&stats.secret_scrubbed, d.scrubbed),
            (&stats.secret_violations, d.violations),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn session_failed(&mut self, idx: usize, e: &SessionError) {
        self.kind_changed_stats(idx);
        let Some(Some(c)) = self.conns.get_mut(idx) else {
            return;
        };
        let stats = &self.link.stats;
        if let Some(v) = e.violation() {
            let event = Denial {
                at: SystemTime::now(),
                proto: Proto::Tcp,
                guest: Some(c.spec.guest),
                dst: Some(c.spec.dst),
                name: Some(v.host.clone().into()),
                reason: DenialReason::SecretViolation,
                rule: format!("secret {}: {}", v.env_var, v.reason).into(),
            };
            match v.on_violation {
                OnViolation::Block => tracing::debug!(dst = %c.spec.dst, "{v}"),
                OnViolation::BlockAndLog | OnViolation::BlockAndTerminate => {
                    tracing::warn!(dst = %c.spec.dst, "{v}");
                }
            }
            self.link.observe.events.push(event);
            if v.on_violation == OnViolation::BlockAndTerminate {
                crate::observe::term::fire_now(&self.link, TermEvent::Secret);
            } else {
                crate::observe::term::fire(&self.link, TermEvent::Secret);
            }
        } else if e.upstream_untrusted() {
            Stats::inc(&stats.tls_upstream_untrusted);
            tracing::info!(dst = %c.spec.dst, "TLS interception: {e}");
        } else {
            Stats::inc(&stats.tls_failed);
            tracing::debug!(dst = %c.spec.dst, "TLS interception: {e}");
        }
        // Best effort: the alert the session made for the guest.
        let out = &mut c.session.to_guest;
        if !out.is_empty() {
            let _ = send_to(&c.guest, out);
        }
        self.close(idx, true);
    }

    /// Frees flow `idx`; `reset` resets the server connection (SO_LINGER 0).
    fn close(&mut self, idx: usize, reset: bool) {
        let Some(slot) = self.conns.get_mut(idx) else {
            return;
        };
        let Some(mut c) = slot.take() else {
            return;
        };
        let r = self.poll.registry();
        let _ = r.deregister(&mut c.guest);
        let _ = r.deregister(&mut c.host);
        if reset {
            if let Err(e) = super::sys::set_linger_zero(c.host.as_raw_fd()) {
                tracing::debug!(error = %e, "SO_LINGER failed");
            }
        }
        self.free.push(idx);
    }
}

enum Ended {
    Session(SessionError),
    Io(io::Error),
}

/// Writes what `out` holds to `sock` (until it would block); shuts the write side once
/// `out` is empty and `done`. True when something happened.
fn flush<S: AsRawFd>(
    sock: &mut S,
    side: &mut Side,
    out: &mut Vec<u8>,
    done: bool,
) -> Result<bool, Ended> {
    let mut progress = false;
    while side.writable && !out.is_empty() {
        match super::sys::send(sock.as_raw_fd(), out) {
            Ok(0) => return Err(Ended::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                out.drain(..n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => side.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Ended::Io(e)),
        }
    }
    if out.is_empty() && done && !side.shut {
        side.shut = true;
        if let Err(e) = super::sys::shutdown_write(sock.as_raw_fd()) {
            if e.kind() != io::ErrorKind::NotConnected {
                return Err(Ended::Io(e));
            }
        }
        progress = true;
    }
    Ok(progress)
}

/// Writes `buf` to a socket without SIGPIPE (a closed peer is `EPIPE`: an embedding
/// process may not ignore SIGPIPE).
fn send_to(sock: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    super::sys::send(sock.as_raw_fd(), buf)
}

/// `Ok(true)` once a non-blocking connect has finished, `Ok(false)` while it runs.
fn connect_state(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}
