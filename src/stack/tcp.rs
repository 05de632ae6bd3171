//! TCP flows: one smoltcp socket facing the guest, one host socket facing the world.
//!
//! # Theory of operation
//!
//! Every flow ends in bounded time whatever either side does. Its lifecycle (`Phase`,
//! smoltcp's socket state in brackets; "reaped" frees the slot, the 4-tuple and the host
//! socket at the end of the same turn):
//!
//! | phase        | event                                                        | action                                          | next       |
//! |--------------|--------------------------------------------------------------|-------------------------------------------------|------------|
//! | (none)       | guest SYN, a free slot (`max_connections`)                   | socket listens on the exact destination, SYN-ACK held; host connect starts | `Connecting` |
//! | (none)       | guest SYN, `max_connecting` connects pending                 | the oldest pending connect is evicted (below), then as above | `Connecting` |
//! | (none)       | guest SYN over the eviction or failed-connect budget ([`super::syn_gate`]) | dropped silently (the guest retransmits) | (none) |
//! | `Connecting` | host connect ok                                              | release the SYN-ACK; guest keep-alive and timeout armed | `Open` |
//! | `Connecting` | host connect refused/unreachable, a fallback target left     | connect the fallback (gateway → other family's loopback) | `Connecting` |
//! | `Connecting` | host connect failed or timed out (`connect_timeout_ms`)       | RST to the guest                                | `Aborting` |
//! | `Connecting` | evicted at the `max_connecting` cap                          | host socket closed, RST to the guest            | `Aborting` |
//! | `Connecting` | guest RST (socket back in LISTEN, or CLOSED)                  | host socket closed                              | reaped     |
//! | `Connecting` | guest SYN retransmitted                                      | none (same 4-tuple, same flow)                  | `Connecting` |
//! | `Open`       | guest RST in any state (LISTEN after SYN-RECEIVED, or CLOSED without the guest's FIN) | host socket reset (SO_LINGER 0) | reaped |
//! | `Open`       | host error or reset, also after the host's EOF               | RST to the guest                                | `Aborting` |
//! | `Open`       | host EOF                                                     | FIN to the guest after the data                 | `Open`     |
//! | `Open`       | guest FIN, everything before it handed to the driver         | `shutdown(SHUT_WR)` on the host socket          | `Open`     |
//! | `Open`       | both FINs exchanged (TIME-WAIT, or CLOSED after LAST-ACK)      | graceful host close: the driver flushes for at most `CLOSE_LINGER`, then closes | reaped |
//! | `Open`       | guest silent for `tcp_guest_timeout_ms` (keep-alives every quarter of it, a SYN-ACK, data or FIN unanswered) | smoltcp sends RST; host socket reset | reaped |
//! | `Aborting`   | the next smoltcp poll sent the RST                            | host socket (if any) closed                     | reaped     |
//!
//! So the longest any flow can live without progress is `connect_timeout_ms` while
//! connecting, then `tcp_guest_timeout_ms` (plus a quarter) after the guest last sent
//! anything; a flow whose guest answers keep-alives lives as long as both ends want it.
//!
//! - `from_guest` → `to_host`: bytes leave the smoltcp receive buffer only as fast as the
//!   driver's transmit buffer takes them; the rest stays in smoltcp and closes the window
//!   the guest sees. Guest FIN → `shutdown(SHUT_WR)` once everything before it was handed
//!   to the driver.
//! - `from_host` → `to_guest`: host bytes are received straight into the smoltcp send
//!   buffer (`Driver::recv_into`) only as fast as it has room; a full buffer stops reading
//!   the host socket. Host EOF → `close()` of the smoltcp socket (FIN after the data);
//!   after that the host socket is still asked for errors on every service, so a reset
//!   that follows the EOF (the guest keeps uploading to a closed server) is not lost.
//! - Per-flow memory is bounded by the smoltcp buffers (`tcp_buffer_bytes` receive,
//!   `tcp_to_guest_buffer_bytes` send) plus the driver's transmit ring (`Limits`); the
//!   driver's receive ring is not used (`recv_into`).
//! - TIME-WAIT keeps no state (the link cannot reorder): the flow is reaped at once.
//!
//! Demultiplexing is O(1): every flow has a socket set of its own, found by 4-tuple in a
//! hash map, and smoltcp is polled with just that set (smoltcp walks every socket of the
//! set it is given, for every segment). Only flows touched by a guest frame, a driver event
//! or their own smoltcp timer (kept in a min-heap keyed by `poll_at`) are serviced in a
//! turn, so an idle flow costs nothing but its keep-alive.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::dns::DnsConn;
use super::guard::Guard;
use super::syn_gate::Verdict;
use super::{Addrs, Host, Port, T_TCP};
use crate::config::SlotConfig;
use crate::egress::intercept::{FlowSpec, STATUS_OK};
use crate::egress::{Driver, EgressError, Event, Recv, SockId, SockKind, Token};
use crate::metrics::Stats;
use crate::policy::sni::{client_hello_sni, Sni, MAX_HELLO};
use crate::policy::{Dest, Proto};
use crate::pool::Frame;
use crate::slab::{Key, Slab};
use crate::wire::classify::TcpFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    /// A published port's client: the host side is connected, the guest side connecting.
    Inbound,
    Open,
    Aborting,
}

struct Flow {
    key: (SocketAddr, SocketAddr),
    /// This flow's own socket set, holding exactly one socket.
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// When smoltcp next wants a poll for this flow (as queued in the timer heap).
    timer: Option<Instant>,
    sock: Option<SockId>,
    /// Second host target to try when the first connect is refused (gateway → loopback of
    /// the other family).
    fallback: Option<SocketAddr>,
    phase: Phase,
    /// `shutdown(SHUT_WR)` was requested on the host socket.
    host_shut: bool,
    /// The host socket reached EOF.
    host_eof: bool,
    /// When the guest last sent a segment of this flow (tells a guest timeout from a
    /// guest reset when smoltcp closes the socket).
    from_guest_at: Instant,
    /// When the SYN-ACK was released (the host connect succeeded).
    synack_at: Option<Instant>,
    /// smoltcp's keep-alive and timeout are set (once the guest completed the handshake).
    guest_timeout_armed: bool,
    dirty: bool,
    /// A connection to the gateway's DNS (port 53): served here, no host socket.
    local: Option<Box<DnsConn>>,
    /// The domain that admitted this flow to port 443: the ClientHello's SNI must match it
    /// before any byte goes to the host.
    sni: Option<Dest>,
    /// The names the flow was admitted with (for re-checking under a new policy).
    names: Vec<Box<str>>,
    /// Opened by a host client of a published port (counted in `inbound_active`).
    inbound: bool,
    /// The host socket is a pair to a TLS worker whose status byte (the connect result)
    /// has not been read yet.
    tls_status: bool,
    /// When the flow was made.
    created: Instant,
    /// Observation ([`crate::observe::flows`]): payload bytes each way, the rule that
    /// admitted the flow.
    from_guest_bytes: u64,
    to_guest_bytes: u64,
    rule: Option<std::sync::Arc<str>>,
}

impl Flow {
    /// End the flow (it is reaped at the end of the turn): a RST to the guest when
    /// `rst_guest` (smoltcp sends it on the next poll), and the host socket closed, with
    /// SO_LINGER 0 when `reset_host` (the peer sees RST).
    fn end(
        &mut self,
        driver: &mut dyn Driver,
        connecting: &mut usize,
        rst_guest: bool,
        reset_host: bool,
    ) {
        if rst_guest {
            self.set.get_mut::<tcp::Socket>(self.handle).abort();
        }
        if let Some(sock) = self.sock.take() {
            driver.close(sock, reset_host);
        }
        Flows::set_phase(connecting, self, Phase::Aborting);
    }
}

/// How a service pass left a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Keep it.
    Keep,
    /// Reap it at the end of this turn.
    Reap,
}

/// The TCP flow table.
/// Why a guest TCP segment has no flow ([`Flows::on_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFlow {
    /// smoltcp answers it with RST (no SYN, denied, at a limit).
    Reset,
    /// Dropped without an answer: a SYN beyond the eviction budget.
    Shed,
}

pub struct Flows {
    slab: Slab<Flow>,
    map: HashMap<(SocketAddr, SocketAddr), Key>,
    dirty: Vec<Key>,
    reap: Vec<Key>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    max: usize,
    /// Flows in `Connecting`, and their start order (entries of flows that left
    /// `Connecting` are skipped lazily and compacted).
    connecting: usize,
    connect_order: VecDeque<Key>,
    max_connecting: usize,
    /// SYN admission under floods (the eviction and failure budgets).
    gate: super::syn_gate::SynGate,
    /// smoltcp receive buffer (guest→host window) per flow.
    to_host_bytes: usize,
    /// smoltcp send buffer (host→guest) per flow.
    to_guest_bytes: usize,
    connect_timeout: Duration,
    guest_timeout: SmolDuration,
    /// Socket sets of reaped flows, kept for the next SYN (at most [`SPARE_SOCKETS`]).
    spare: Vec<(SocketSet<'static>, SocketHandle)>,
    /// Queries read from guest DNS connections, for the resolver: (conn id, message).
    pub dns_queries: Vec<(u64, Vec<u8>)>,
    /// Guest DNS connections reaped, for the resolver to forget.
    pub dns_closed: Vec<u64>,
    /// Inbound flows open (published ports), and their cap.
    inbound: usize,
    max_inbound: usize,
    /// Inbound flows connecting to the guest (stale entries are dropped lazily).
    inbound_waiting: Vec<Key>,
    /// Host connect times (SYN to connect result, successful connects).
    pub connect_latency: crate::observe::latency::Recorder,
}

/// Segments one flow may send to the guest per turn (fairness between flows).
const EGRESS_BURST: usize = 16;

/// Reaped flows' sockets kept for reuse. A fresh socket costs two buffer allocations
/// above the mmap threshold: mmap, page faults and munmap for every connection (about 9 %
/// of the poll thread in a connect/request/close loop). Reuse keeps the touched pages, so
/// the cost is at most `SPARE_SOCKETS × (tcp_buffer_bytes + tcp_to_guest_buffer_bytes)` of
/// resident memory (5 MiB at the defaults), and only while the link is busy: an idle link
/// drops them ([`Flows::drop_spares`], the poll thread's idle trim).
const SPARE_SOCKETS: usize = 4;

/// One flow's socket set holding one fresh TCP socket: a receive buffer (guest→host
/// window) of `to_host` bytes and a send buffer of `to_guest` bytes.
///
/// `vec![0; n]` is `calloc`: above the mmap threshold its pages stay untouched (not
/// resident) until data passes through them, which keeps idle flows small.
fn new_socket_set(to_host: usize, to_guest: usize) -> (SocketSet<'static>, SocketHandle) {
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; to_host]),
        tcp::SocketBuffer::new(vec![0; to_guest]),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    let mut set = SocketSet::new(Vec::with_capacity(1));
    let handle = set.add(sock);
    (set, handle)
}

impl Flows {
    pub fn new(cfg: &SlotConfig) -> Flows {
        Flows {
            slab: Slab::new(cfg.max_connections),
            map: HashMap::new(),
            dirty: Vec::new(),
            reap: Vec::new(),
            timers: BinaryHeap::new(),
            max: cfg.max_connections,
            connecting: 0,
            connect_order: VecDeque::new(),
            max_connecting: cfg.egress.max_connecting.max(1),
            gate: super::syn_gate::SynGate::new(&cfg.egress),
            to_host_bytes: cfg.egress.tcp_buffer_bytes,
            to_guest_bytes: cfg.egress.tcp_to_guest_buffer_bytes,
            connect_timeout: Duration::from_millis(cfg.egress.connect_timeout_ms),
            guest_timeout: SmolDuration::from_millis(cfg.egress.tcp_guest_timeout_ms.max(1)),
            spare: Vec::new(),
            dns_queries: Vec::new(),
            dns_closed: Vec::new(),
            inbound: 0,
            max_inbound: cfg.max_inbound_connections.max(1),
            inbound_waiting: Vec::new(),
            connect_latency: crate::observe::latency::Recorder::new(),
        }
    }

    fn mark(&mut self, key: Key) {
        if let Some(f) = self.slab.get_mut(key) {
            if !f.dirty {
                f.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Leave `Connecting` for `to` (keeps the count of pending connects).
    fn set_phase(connecting: &mut usize, flow: &mut Flow, to: Phase) {
        if flow.phase == Phase::Connecting && to != Phase::Connecting {
            *connecting -= 1;
        }
        flow.phase = to;
    }

    /// Give up the oldest pending connect (the guest gets RST) to make room for a new one.
    fn evict_oldest_connect(&mut self, driver: &mut dyn Driver, stats: &Stats) {
        while let Some(key) = self.connect_order.pop_front() {
            let Some(flow) = self.slab.get_mut(key) else {
                continue;
            };
            if flow.phase != Phase::Connecting {
                continue;
            }
            tracing::debug!(dst = %flow.key.1, "pending connect evicted at the max_connecting cap");
            Stats::inc(&stats.tcp_connect_evicted);
            flow.end(driver, &mut self.connecting, true, true);
            self.map.remove(&flow.key);
            self.mark(key);
            return;
        }
    }

    /// A guest TCP segment from `src` to `dst` arrived: find its flow, or make one for a
    /// SYN. Returns the flow the segment belongs to; `Err(NoFlow::Reset)` means no flow
    /// (smoltcp, with no socket to match, answers with RST), `Err(NoFlow::Shed)` that the
    /// SYN is to be dropped without an answer (a connect flood: the guest retries).
    pub fn on_frame(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        flags: TcpFlags,
        addrs: &Addrs,
        host: &mut Host<'_>,
    ) -> Result<Key, NoFlow> {
        let stats = host.stats;
        if let Some(&key) = self.map.get(&(src, dst)) {
            self.mark(key);
            return Ok(key);
        }
        if !flags.syn || flags.ack || flags.rst {
            return Err(NoFlow::Reset);
        }
        let local = addrs.is_gateway(dst.ip()) && dst.port() == 53;
        let admission = if local {
            None
        } else {
            // Denied: no flow, so smoltcp answers the SYN with RST.
            Some(
                host.guard
                    .admit(Proto::Tcp, src.ip(), dst)
                    .ok_or(NoFlow::Reset)?,
            )
        };
        if self.slab.len() >= self.max {
            Stats::inc(&stats.tcp_refused_limit);
            return Err(NoFlow::Reset);
        }
        if !local {
            let full = self.connecting >= self.max_connecting;
            match self.gate.admit(src, dst, full, host.elapsed) {
                Verdict::Shed => {
                    Stats::inc(&stats.tcp_syn_shed);
                    return Err(NoFlow::Shed);
                }
                Verdict::Admit { evict, retry } => {
                    if retry {
                        Stats::inc(&stats.tcp_syn_retry_admitted);
                    }
                    if evict {
                        self.evict_oldest_connect(&mut *host.driver, stats);
                    }
                }
            }
        }
        let (mut set, handle) = match self.spare.pop() {
            Some(spare) => {
                Stats::inc(&stats.tcp_sockets_reused);
                spare
            }
            None => new_socket_set(self.to_host_bytes, self.to_guest_bytes),
        };
        let sock = set.get_mut::<tcp::Socket>(handle);
        // A recycled socket may still be in TIME-WAIT; `listen` resets it completely. The
        // guest timeout is armed once the SYN-ACK is released.
        sock.abort();
        sock.set_timeout(None);
        sock.set_keep_alive(None);
        sock.pause_synack(!local);
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(dst.ip())),
            port: dst.port(),
        };
        if sock.listen(ep).is_err() {
            self.spare.push((set, handle));
            return Err(NoFlow::Reset); // port 0
        }
        let (target, fallback) = addrs.host_target(dst);
        let (names, sni, rule) = match admission {
            Some(a) => (a.names, a.sni, a.rule),
            None => (
                Vec::new(),
                None,
                Some(crate::observe::flows::LOCAL_DNS.into()),
            ),
        };
        let flow = Flow {
            key: (src, dst),
            set,
            handle,
            timer: None,
            sock: None,
            fallback,
            phase: Phase::Connecting,
            host_shut: false,
            host_eof: false,
            from_guest_at: Instant::from_millis(0),
            synack_at: local.then(|| host_now(host)),
            guest_timeout_armed: false,
            dirty: false,
            local: local.then(Box::default),
            sni,
            names,
            inbound: false,
            tls_status: false,
            created: host_now(host),
            from_guest_bytes: 0,
            to_guest_bytes: 0,
            rule,
        };
        // Room was checked above (`slab.len() < max`, the slab's own bound).
        let key = self.slab.insert(flow).ok_or(NoFlow::Reset)?;
        if local {
            // The gateway's DNS answers at once: no host connect, the SYN-ACK goes out.
            if let Some(flow) = self.slab.get_mut(key) {
                flow.phase = Phase::Open;
            }
            self.map.insert((src, dst), key);
            self.mark(key);
            return Ok(key);
        }
        Stats::inc(&stats.tcp_opened);
        self.connecting += 1;
        let token = Token(key.pack(T_TCP));
        let intercept = host.intercept.filter(|i| i.intercepts(dst.port()));
        let opened = match intercept {
            // The flow's host socket is a pair to a TLS worker, which connects `target`
            // and answers with a status byte (read as this flow's connect result).
            Some(i) => {
                let spec = FlowSpec {
                    target,
                    fallback,
                    connect_timeout: self.connect_timeout,
                    pinned: host.guard.pinned(dst.ip()),
                    guest: src.ip(),
                    dst,
                };
                match i.open(spec) {
                    Ok(fd) => host.driver.adopt(fd, SockKind::Tcp, target, token),
                    Err(e) => {
                        tracing::debug!(%dst, error = %e, "TLS interception refused a flow");
                        Err(EgressError::Socket {
                            kind: SockKind::Tcp,
                            remote: target,
                            source: std::io::Error::other(e),
                        })
                    }
                }
            }
            None => host
                .driver
                .open(SockKind::Tcp, target, self.connect_timeout, token),
        };
        let Some(flow) = self.slab.get_mut(key) else {
            unreachable!("flow {key:?} was inserted just above");
        };
        if intercept.is_some() {
            flow.tls_status = true;
            flow.fallback = None;
        }
        match opened {
            Ok(s) => {
                flow.sock = Some(s);
                self.connect_order.push_back(key);
                if self.connect_order.len() > 2 * self.max_connecting + 64 {
                    let slab = &self.slab;
                    self.connect_order
                        .retain(|&k| slab.get(k).is_some_and(|f| f.phase == Phase::Connecting));
                }
            }
            Err(e) => {
                // The SYN still reaches the socket; the abort makes smoltcp answer RST.
                if !host.open_failed(&e) {
                    tracing::debug!(%dst, error = %e, "host socket failed");
                }
                Stats::inc(&stats.tcp_connect_failed);
                Self::set_phase(&mut self.connecting, flow, Phase::Aborting);
            }
        }
        self.map.insert((src, dst), key);
        self.mark(key);
        Ok(key)
    }

    /// Hand the guest segment in `frame` to flow `key`'s socket.
    pub fn ingress(&mut self, key: Key, frame: Frame, iface: &mut Interface, port: &mut Port<'_>) {
        let Some(flow) = self.slab.get_mut(key) else {
            return; // `frame` drops: its slot returns to the pool
        };
        let now = port.now;
        flow.from_guest_at = now;
        iface.poll_ingress_single(now, &mut port.device(Some(frame)), &mut flow.set);
        let s = flow.set.get_mut::<tcp::Socket>(flow.handle);
        if flow.phase == Phase::Aborting {
            s.abort();
        } else if matches!(s.state(), State::Listen | State::Closed) {
            // A guest reset: this 4-tuple is free again at once, so a new SYN on it (even
            // in this same batch) makes a new flow instead of reviving this one.
            self.map.remove(&flow.key);
        }
    }

    /// A driver event for flow `key`.
    pub fn on_event(&mut self, key: Key, ev: Event, host: &mut Host<'_>) {
        let timeout = self.connect_timeout;
        let Some(flow) = self.slab.get_mut(key) else {
            return;
        };
        let result = match ev {
            Event::Connected { result, .. } if !flow.tls_status => Some(result),
            // An intercepted flow's connect result is the TLS worker's status byte.
            Event::Readable { .. } if flow.tls_status && flow.phase == Phase::Connecting => {
                match flow.sock.map(|s| read_status(&mut *host.driver, s)) {
                    Some(None) => return, // not there yet
                    Some(Some(r)) => Some(r),
                    None => Some(Err(std::io::ErrorKind::NotConnected.into())),
                }
            }
            _ => None,
        };
        if let Some(result) = result {
            if flow.phase != Phase::Connecting {
                return;
            }
            flow.tls_status = false;
            let sock = flow.set.get_mut::<tcp::Socket>(flow.handle);
            match result {
                Ok(()) => {
                    // From now on the guest must answer: the SYN-ACK within the guest
                    // timeout (checked in `service`: smoltcp's own timeout would count
                    // from the guest's SYN, before a connect that may take longer), then
                    // data and keep-alives (smoltcp's timeout, armed once established).
                    sock.pause_synack(false);
                    flow.synack_at = Some(host_now(host));
                    Stats::inc(&host.stats.tcp_connected);
                    self.gate.connected();
                    let took = host_now(host) - flow.created;
                    (self.connect_latency).record(Duration::from_micros(took.total_micros()));
                    Self::set_phase(&mut self.connecting, flow, Phase::Open);
                }
                Err(e) => {
                    if let (Some(alt), Some(old)) = (flow.fallback.take(), flow.sock) {
                        host.driver.close(old, false);
                        flow.sock = None;
                        let token = Token(key.pack(T_TCP));
                        match host.driver.open(SockKind::Tcp, alt, timeout, token) {
                            Ok(s) => {
                                flow.sock = Some(s);
                                return;
                            }
                            Err(e) => {
                                host.open_failed(&e);
                            }
                        }
                    }
                    tracing::debug!(dst = %flow.key.1, error = %e, "host connect failed");
                    Stats::inc(&host.stats.tcp_connect_failed);
                    flow.end(&mut *host.driver, &mut self.connecting, true, false);
                }
            }
        }
        self.mark(key);
    }

    /// Mark the flows whose smoltcp timer is due.
    pub fn due_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(f) = self.slab.get_mut(key).filter(|f| f.timer == Some(t)) {
                f.timer = None;
                self.mark(key);
            }
        }
    }

    /// The earliest pending smoltcp timer.
    pub fn next_timer(&mut self) -> Option<Instant> {
        // Drop stale heap entries so the answer is exact.
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if self.slab.get(key).is_some_and(|f| f.timer == Some(t)) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    /// Relay bytes and run smoltcp egress for every flow touched since the last call; reap
    /// the flows that finished (after their RST or FIN went out).
    pub fn service_dirty(
        &mut self,
        iface: &mut Interface,
        port: &mut Port<'_>,
        host: &mut Host<'_>,
    ) {
        let stats = host.stats;
        let driver = &mut *host.driver;
        let mut dirty = std::mem::take(&mut self.dirty);
        let now = port.now;
        let mut cx = Cx {
            stats,
            guard: &*host.guard,
            guest_timeout: self.guest_timeout,
            connect_timeout: SmolDuration::from_micros(self.connect_timeout.as_micros() as u64),
            now,
            key: Key::fixed(0),
            dns_queries: &mut self.dns_queries,
        };
        for (i, &key) in dirty.iter().enumerate() {
            if !port.room() {
                // The VMM has not drained `to_guest`: the rest wait for the next turn.
                self.dirty.extend_from_slice(&dirty[i..]);
                break;
            }
            let Some(flow) = self.slab.get_mut(key) else {
                continue;
            };
            flow.dirty = false;
            cx.key = key;
            let mut next = service(flow, driver, &mut cx, &mut self.connecting);
            // smoltcp sends at most one segment per socket per `poll_egress`: keep going
            // while it sends and `to_guest` has room, so one turn moves a window's worth,
            // not one frame (unpinned host→guest: see the commit).
            for _ in 0..EGRESS_BURST {
                let sent = iface.poll_egress(now, &mut port.device(None), &mut flow.set);
                if sent != PollResult::SocketStateChanged || !port.room() {
                    break;
                }
            }
            if next == Next::Keep {
                // A timer that fired inside this poll (guest timeout, TIME-WAIT) may have
                // closed the socket: settle that now, not never.
                let state = flow.set.get::<tcp::Socket>(flow.handle).state();
                if matches!(state, State::Closed | State::Listen | State::TimeWait) {
                    next = service(flow, driver, &mut cx, &mut self.connecting);
                }
            }
            if next == Next::Reap {
                self.reap.push(key);
                continue;
            }
            // While its connect is pending the socket holds the guest's SYN with the SYN-ACK
            // paused: smoltcp asks to be polled now (it would send), yet nothing can go out
            // before the connect result (a driver event) or a guest frame, which both mark
            // the flow. Scheduled, every pending connect would be serviced on every turn.
            let t = if flow.phase == Phase::Connecting {
                None
            } else {
                iface.poll_at(now, &flow.set)
            };
            if t != flow.timer {
                flow.timer = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, key)));
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        for key in std::mem::take(&mut self.reap) {
            if let Some(mut flow) = self.slab.remove(key) {
                Self::set_phase(&mut self.connecting, &mut flow, Phase::Aborting);
                if let Some(s) = flow.sock {
                    driver.close(s, true);
                }
                // The 4-tuple may already belong to a newer flow (after a guest reset).
                if self.map.get(&flow.key) == Some(&key) {
                    self.map.remove(&flow.key);
                }
                if flow.local.is_some() {
                    self.dns_closed.push(key.pack(T_TCP));
                }
                if flow.inbound {
                    self.inbound -= 1;
                }
                if self.spare.len() < SPARE_SOCKETS {
                    self.spare.push((flow.set, flow.handle));
                }
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        stats.tcp_active.store(self.slab.len() as u64, Relaxed);
        stats.tcp_connecting.store(self.connecting as u64, Relaxed);
        stats.inbound_active.store(self.inbound as u64, Relaxed);
    }

    /// A reply of the gateway's DNS for guest connection `conn` (dropped when the
    /// connection is gone or its queue is full).
    pub fn deliver_dns(&mut self, conn: u64, msg: &[u8], stats: &Stats) {
        let (_, key) = Key::unpack(conn);
        if let Some(local) = self.slab.get_mut(key).and_then(|f| f.local.as_deref_mut()) {
            local.deliver(msg, stats);
            self.mark(key);
        }
    }

    /// The resolver dropped a query of guest connection `conn` (no reply will come).
    pub fn dns_query_dropped(&mut self, conn: u64) {
        let (_, key) = Key::unpack(conn);
        if let Some(local) = self.slab.get_mut(key).and_then(|f| f.local.as_deref_mut()) {
            local.dropped();
            self.mark(key);
        }
    }

    /// Reset the flows a new policy denies (RST to the guest, the host socket reset);
    /// returns how many.
    pub fn revoke(&mut self, guard: &Guard, driver: &mut dyn Driver) -> usize {
        let denied: Vec<Key> = self
            .slab
            .iter()
            .filter(|(_, f)| {
                f.local.is_none()
                    && f.phase != Phase::Aborting
                    && !guard.recheck(Proto::Tcp, f.key.1, &f.names)
            })
            .map(|(k, _)| k)
            .collect();
        for &key in &denied {
            if let Some(flow) = self.slab.get_mut(key) {
                tracing::info!(dst = %flow.key.1, "policy: open flow reset by the new policy");
                flow.end(driver, &mut self.connecting, true, true);
                self.map.remove(&flow.key);
            }
            self.mark(key);
        }
        denied.len()
    }

    /// The link went idle: drop the sockets kept for reuse (their buffers are unmapped);
    /// returns how many. The next SYNs allocate fresh ones.
    pub fn drop_spares(&mut self) -> usize {
        let n = self.spare.len();
        self.spare = Vec::new();
        n
    }

    /// Flows left to service (a VMM has not drained `to_guest` yet).
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Flows open now.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Shutdown: reset every host socket.
    pub fn close_all(&mut self, driver: &mut dyn Driver) {
        for flow in self.slab.drain() {
            let sock = flow.set.get::<tcp::Socket>(flow.handle);
            tracing::debug!(
                src = %flow.key.0,
                dst = %flow.key.1,
                phase = ?flow.phase,
                state = %sock.state(),
                host_eof = flow.host_eof,
                host_shut = flow.host_shut,
                "flow open at shutdown"
            );
            if let Some(s) = flow.sock {
                driver.close(s, true);
            }
        }
        self.map.clear();
        self.connect_order.clear();
        self.connecting = 0;
        self.inbound = 0;
    }
}

/// What `service` needs besides the flow and the driver.
struct Cx<'a> {
    stats: &'a Stats,
    guard: &'a Guard,
    guest_timeout: SmolDuration,
    connect_timeout: SmolDuration,
    now: Instant,
    /// The flow being serviced (its id as a DNS connection).
    key: Key,
    /// Queries read from guest DNS connections.
    dns_queries: &'a mut Vec<(u64, Vec<u8>)>,
}

/// The socket closed without the guest's FIN: the guest reset it, or (when it has been
/// silent for the guest timeout) smoltcp gave up on it. Either way the host side is reset.
fn guest_gone(
    flow: &mut Flow,
    driver: &mut dyn Driver,
    cx: &Cx<'_>,
    connecting: &mut usize,
) -> Next {
    let silent = cx.now - flow.from_guest_at >= cx.guest_timeout;
    if flow.phase == Phase::Open && silent {
        tracing::debug!(dst = %flow.key.1, "guest silent for the guest timeout: flow reset");
        Stats::inc(&cx.stats.tcp_guest_timeout);
    } else {
        Stats::inc(&cx.stats.tcp_guest_reset);
    }
    flow.end(driver, connecting, false, true);
    Next::Reap
}

/// The host socket failed: RST to the guest.
fn host_failed(
    flow: &mut Flow,
    driver: &mut dyn Driver,
    cx: &Cx<'_>,
    connecting: &mut usize,
) -> Next {
    Stats::inc(&cx.stats.tcp_host_reset);
    flow.end(driver, connecting, true, false);
    Next::Reap
}

/// Relay one flow and apply the lifecycle table (module docs) to what it finds.
fn service(
    flow: &mut Flow,
    driver: &mut dyn Driver,
    cx: &mut Cx<'_>,
    connecting: &mut usize,
) -> Next {
    let state = flow.set.get::<tcp::Socket>(flow.handle).state();
    match flow.phase {
        Phase::Aborting => return Next::Reap,
        Phase::Connecting => {
            if matches!(state, State::Listen | State::Closed) {
                // The guest gave up (RST) while we were connecting.
                return guest_gone(flow, driver, cx, connecting);
            }
            return Next::Keep;
        }
        Phase::Inbound => match state {
            State::SynSent => return Next::Keep,
            State::Closed | State::Listen => {
                // The guest refused (RST), or smoltcp gave up after the connect timeout.
                let timed_out = cx.now - flow.created >= cx.connect_timeout;
                Stats::inc(if timed_out {
                    &cx.stats.inbound_guest_timeout
                } else {
                    &cx.stats.inbound_guest_refused
                });
                tracing::debug!(guest = %flow.key.0, timed_out, "guest refused an inbound connection");
                flow.end(driver, connecting, false, true);
                return Next::Reap;
            }
            _ => {
                // Established: from now on an ordinary flow (the guest timeout is armed
                // below).
                flow.phase = Phase::Open;
                flow.synack_at = Some(cx.now);
            }
        },
        Phase::Open => {}
    }
    if flow.local.is_some() {
        return service_local(flow, cx);
    }
    let Some(sock) = flow.sock else {
        return host_failed(flow, driver, cx, connecting);
    };
    if state == State::SynReceived {
        if flow
            .synack_at
            .is_some_and(|t| cx.now - t >= cx.guest_timeout)
        {
            // The SYN-ACK went unanswered (smoltcp retransmits it with backoff, which is
            // what wakes this check): RST, and count it as a silent guest.
            tracing::debug!(dst = %flow.key.1, "SYN-ACK unanswered for the guest timeout");
            Stats::inc(&cx.stats.tcp_guest_timeout);
            flow.end(driver, connecting, true, true);
            return Next::Reap;
        }
    } else if !flow.guest_timeout_armed {
        let s = flow.set.get_mut::<tcp::Socket>(flow.handle);
        s.set_timeout(Some(cx.guest_timeout));
        s.set_keep_alive(Some(cx.guest_timeout / 4));
        flow.guest_timeout_armed = true;
    }
    // LISTEN: a RST answered the SYN-ACK (an abandoned connect). CLOSED is a normal end
    // only after both FINs (the guest's, then the ACK of ours); otherwise the guest reset
    // the flow or smoltcp gave up on a silent guest.
    if state == State::Listen || (state == State::Closed && !(flow.host_shut && flow.host_eof)) {
        return guest_gone(flow, driver, cx, connecting);
    }
    let s = flow.set.get_mut::<tcp::Socket>(flow.handle);

    // from_guest → to_host, once the ClientHello's SNI (if any) agrees with the domain
    // that admitted the flow.
    let mut hold = false;
    if let Some(dest) = &flow.sni {
        // The guest's FIN came (a hello cut short stays incomplete: nothing to check).
        let fin = matches!(
            s.state(),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
        );
        match s.peek(MAX_HELLO).map(client_hello_sni) {
            Ok(Sni::NeedMore) if !fin && s.recv_queue() < MAX_HELLO => hold = true,
            // Not receiving yet (SYN-RECEIVED): nothing to look at.
            Err(_) if !fin => hold = true,
            Ok(Sni::Name(name)) if !cx.guard.sni_agrees(dest, &name, flow.key.1) => {
                flow.end(driver, connecting, true, true);
                return Next::Reap;
            }
            _ => flow.sni = None,
        }
    }
    let s = flow.set.get_mut::<tcp::Socket>(flow.handle);
    while !hold && s.can_recv() {
        let n = s
            .recv(|buf| {
                let n = driver.send(sock, buf);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        flow.from_guest_bytes += n as u64;
    }
    // The guest's FIN has been received in exactly these states (Closed may also mean a
    // reset, which must not become a FIN to the host: it is handled above).
    let guest_done = matches!(
        s.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    ) && s.recv_queue() == 0;
    if guest_done && !hold && !flow.host_shut {
        driver.shutdown_write(sock);
        flow.host_shut = true;
    }

    // from_host → to_guest
    if flow.host_eof {
        // Nothing more to read, but a reset may still come (the guest keeps sending to a
        // server that closed): an empty receive reports it.
        if let Err(Recv::Error(e)) = driver.recv_into(sock, &mut []) {
            tracing::debug!(dst = %flow.key.1, error = %e, "host socket error after EOF");
            return host_failed(flow, driver, cx, connecting);
        }
    } else {
        while s.can_send() {
            // Straight from the host socket into smoltcp's transmit buffer (one copy).
            let r = s.send(|free| match driver.recv_into(sock, free) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            let Ok(r) = r else { break }; // not in a sending state
            match r {
                Ok(0) | Err(Recv::Empty) => break,
                Ok(n) => flow.to_guest_bytes += n as u64,
                Err(Recv::Eof) => {
                    flow.host_eof = true;
                    s.close();
                    break;
                }
                Err(Recv::Error(e)) => {
                    tracing::debug!(dst = %flow.key.1, error = %e, "host socket error");
                    return host_failed(flow, driver, cx, connecting);
                }
            }
        }
    }

    match s.state() {
        // Both FINs are through (a reset was handled above): close gracefully; the driver
        // flushes what is still queued for at most `CLOSE_LINGER`.
        State::Closed | State::TimeWait if flow.host_shut => {
            driver.close(sock, false);
            flow.sock = None;
            Next::Reap
        }
        _ => Next::Keep,
    }
}

#[path = "tcp_inbound.rs"]
mod inbound;
#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;

#[path = "tcp_observe.rs"]
mod observe;

/// Serve a guest connection to the gateway's DNS: replies out, whole queries in, our FIN
/// once the guest's came and every reply is written.
fn service_local(flow: &mut Flow, cx: &mut Cx<'_>) -> Next {
    let s = flow.set.get_mut::<tcp::Socket>(flow.handle);
    let state = s.state();
    // LISTEN: a RST answered the SYN-ACK; CLOSED before our FIN: a reset or a silent guest.
    if state == State::Listen || (state == State::Closed && !flow.host_shut) {
        Stats::inc(&cx.stats.tcp_guest_reset);
        flow.phase = Phase::Aborting;
        return Next::Reap;
    }
    if state != State::SynReceived && !flow.guest_timeout_armed {
        s.set_timeout(Some(cx.guest_timeout));
        s.set_keep_alive(Some(cx.guest_timeout / 4));
        flow.guest_timeout_armed = true;
    }
    let Some(conn) = flow.local.as_deref_mut() else {
        return Next::Keep;
    };
    conn.write(s);
    conn.read(s, cx.key.pack(T_TCP), cx.dns_queries);
    let guest_done = matches!(
        s.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    ) && s.recv_queue() == 0;
    if guest_done && conn.idle() && !flow.host_shut {
        s.close();
        flow.host_shut = true;
    }
    match s.state() {
        State::Closed | State::TimeWait if flow.host_shut => Next::Reap,
        _ => Next::Keep,
    }
}

/// An intercepted flow's connect result: the TLS worker's status byte
/// ([`crate::egress::intercept::STATUS_OK`], else failed); `None` while it has not come.
fn read_status(driver: &mut dyn Driver, sock: SockId) -> Option<std::io::Result<()>> {
    let mut status = None;
    let r = driver.recv(sock, &mut |b: &[u8]| match b.first() {
        Some(&byte) => {
            status = Some(byte);
            1
        }
        None => 0,
    });
    match (status, r) {
        (Some(STATUS_OK), _) => Some(Ok(())),
        (Some(_), _) | (None, Err(Recv::Eof)) => {
            Some(Err(std::io::ErrorKind::ConnectionRefused.into()))
        }
        (None, Err(Recv::Error(e))) => Some(Err(e)),
        (None, _) => None,
    }
}

/// The host context's time as smoltcp's.
fn host_now(host: &Host<'_>) -> Instant {
    super::smol_now(host.elapsed)
}
