//! TCP flows: one smoltcp socket facing the guest, one host socket facing the world.
//!
//! # Theory of operation
//!
//! States of a flow (`Phase`):
//!
//! | phase        | smoltcp socket                       | host socket        | leaves when |
//! |--------------|--------------------------------------|--------------------|-------------|
//! | `Connecting` | listening / SYN-RECEIVED, SYN-ACK held | connect in flight  | connect result |
//! | `Open`       | relaying                              | relaying           | both sides closed, or a reset |
//! | `Draining`   | closed                                | flushing its tx     | tx empty |
//! | `Aborting`   | RST queued                            | closed             | next poll sent the RST |
//!
//! - Setup: the guest's SYN creates the socket (`listen` on the exact destination, SYN-ACK
//!   paused) and starts the host connect FIRST; only a successful connect releases the
//!   SYN-ACK. A failed connect (refused, unreachable, timed out) aborts the socket, so the
//!   guest gets a RST. A SYN repeated while connecting finds the flow by its 4-tuple and
//!   opens nothing new. Beyond `max_connections` flows, no socket is made and smoltcp answers
//!   the SYN with RST.
//! - `from_guest` → `to_host`: bytes leave the smoltcp receive buffer only as fast as the
//!   driver's transmit buffer takes them; the rest stays in smoltcp and closes the window
//!   the guest sees. Guest FIN → `shutdown(SHUT_WR)` once everything before it was handed
//!   to the driver.
//! - `from_host` → `to_guest`: host bytes are received straight into the smoltcp send
//!   buffer (`Driver::recv_into`) only as fast as it has room; a full buffer stops reading
//!   the host socket. Host EOF → `close()` of the smoltcp socket (FIN after the data).
//! - Resets: a guest RST closes the host socket with SO_LINGER 0 (the peer sees RST); a
//!   host error aborts the smoltcp socket (the guest sees RST).
//! - Per-flow memory is bounded by the smoltcp buffers (`tcp_buffer_bytes` receive,
//!   `tcp_to_guest_buffer_bytes` send) plus the driver's transmit ring (`Limits`); the
//!   driver's receive ring is not used (`recv_into`).
//! - Closed flows are reaped at once; TIME-WAIT keeps no state (the link cannot reorder).
//!
//! Demultiplexing is O(1): every flow has a socket set of its own, found by 4-tuple in a
//! hash map, and smoltcp is polled with just that set (smoltcp walks every socket of the
//! set it is given, for every segment). Only flows touched by a guest frame, a driver event
//! or their own smoltcp timer (kept in a min-heap keyed by `poll_at`) are serviced in a
//! turn, so an idle flow costs nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::{alloc_slot, token, Addrs, Port, T_TCP};
use crate::config::SlotConfig;
use crate::egress::{Driver, Event, Recv, SockId, SockKind};
use crate::metrics::Stats;
use crate::pool::Frame;
use crate::wire::classify::TcpFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Draining,
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
    gen: u32,
    phase: Phase,
    /// `shutdown(SHUT_WR)` was requested on the host socket.
    host_shut: bool,
    /// The host socket reached EOF.
    host_eof: bool,
    dirty: bool,
}

/// The TCP flow table.
pub struct Flows {
    slab: Vec<Option<Flow>>,
    free: Vec<u32>,
    map: HashMap<(SocketAddr, SocketAddr), u32>,
    dirty: Vec<u32>,
    reap: Vec<u32>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    next_gen: u32,
    active: usize,
    max: usize,
    /// smoltcp receive buffer (guest→host window) per flow.
    to_host_bytes: usize,
    /// smoltcp send buffer (host→guest) per flow.
    to_guest_bytes: usize,
    connect_timeout: Duration,
    /// Socket sets of reaped flows, kept for the next SYN (at most [`SPARE_SOCKETS`]).
    spare: Vec<(SocketSet<'static>, SocketHandle)>,
}

/// Segments one flow may send to the guest per turn (fairness between flows).
const EGRESS_BURST: usize = 16;

/// Reaped flows' sockets kept for reuse. A fresh socket costs two buffer allocations
/// above the mmap threshold: mmap, page faults and munmap for every connection (about 9 %
/// of the poll thread in a connect/request/close loop). Reuse keeps the touched pages, so
/// the cost is at most `SPARE_SOCKETS × (tcp_buffer_bytes + tcp_to_guest_buffer_bytes)` of
/// resident memory (5 MiB at the defaults).
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
            slab: Vec::new(),
            free: Vec::new(),
            map: HashMap::new(),
            dirty: Vec::new(),
            reap: Vec::new(),
            timers: BinaryHeap::new(),
            next_gen: 1,
            active: 0,
            max: cfg.max_connections,
            to_host_bytes: cfg.egress.tcp_buffer_bytes,
            to_guest_bytes: cfg.egress.tcp_to_guest_buffer_bytes,
            connect_timeout: Duration::from_millis(cfg.egress.connect_timeout_ms),
            spare: Vec::new(),
        }
    }

    fn mark(&mut self, idx: u32) {
        if let Some(Some(f)) = self.slab.get_mut(idx as usize) {
            if !f.dirty {
                f.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// A guest TCP segment from `src` to `dst` arrived: find its flow, or make one for a
    /// SYN. Returns the flow the segment belongs to; `None` means no flow (smoltcp, with no
    /// socket to match, answers with RST).
    #[allow(clippy::too_many_arguments)]
    pub fn on_frame(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        flags: TcpFlags,
        addrs: &Addrs,
        driver: &mut dyn Driver,
        stats: &Stats,
    ) -> Option<u32> {
        if let Some(&idx) = self.map.get(&(src, dst)) {
            self.mark(idx);
            return Some(idx);
        }
        if !flags.syn || flags.ack || flags.rst {
            return None;
        }
        if self.active >= self.max {
            Stats::inc(&stats.tcp_refused_limit);
            return None;
        }
        let (mut set, handle) = match self.spare.pop() {
            Some(spare) => {
                Stats::inc(&stats.tcp_sockets_reused);
                spare
            }
            None => new_socket_set(self.to_host_bytes, self.to_guest_bytes),
        };
        let sock = set.get_mut::<tcp::Socket>(handle);
        // A recycled socket may still be in TIME-WAIT; `listen` resets it completely.
        sock.abort();
        sock.pause_synack(true);
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(dst.ip())),
            port: dst.port(),
        };
        if sock.listen(ep).is_err() {
            self.spare.push((set, handle));
            return None; // port 0
        }
        let (idx, gen) = alloc_slot(&mut self.slab, &mut self.free, &mut self.next_gen);
        let (target, fallback) = addrs.host_target(dst);
        let mut flow = Flow {
            key: (src, dst),
            set,
            handle,
            timer: None,
            sock: None,
            fallback,
            gen,
            phase: Phase::Connecting,
            host_shut: false,
            host_eof: false,
            dirty: false,
        };
        Stats::inc(&stats.tcp_opened);
        self.active += 1;
        match driver.open(
            SockKind::Tcp,
            target,
            self.connect_timeout,
            token(T_TCP, gen, idx),
        ) {
            Ok(s) => flow.sock = Some(s),
            Err(e) => {
                // The SYN still reaches the socket; the abort makes smoltcp answer RST.
                tracing::debug!(%dst, error = %e, "host socket failed");
                Stats::inc(&stats.tcp_connect_failed);
                flow.phase = Phase::Aborting;
            }
        }
        self.slab[idx as usize] = Some(flow);
        self.map.insert((src, dst), idx);
        self.mark(idx);
        Some(idx)
    }

    /// Hand the guest segment in `frame` to flow `idx`'s socket.
    pub fn ingress(&mut self, idx: u32, frame: Frame, iface: &mut Interface, port: &mut Port<'_>) {
        let Some(Some(flow)) = self.slab.get_mut(idx as usize) else {
            port.pool.release(frame);
            return;
        };
        let now = port.now;
        iface.poll_ingress_single(now, &mut port.device(Some(frame)), &mut flow.set);
        if flow.phase == Phase::Aborting {
            flow.set.get_mut::<tcp::Socket>(flow.handle).abort();
        }
    }

    /// A driver event for flow `idx`.
    pub fn on_event(
        &mut self,
        gen: u32,
        idx: u32,
        ev: Event,
        driver: &mut dyn Driver,
        stats: &Stats,
    ) {
        let timeout = self.connect_timeout;
        let Some(Some(flow)) = self.slab.get_mut(idx as usize) else {
            return;
        };
        if flow.gen != gen {
            return;
        }
        if let Event::Connected { result, .. } = ev {
            if flow.phase != Phase::Connecting {
                return;
            }
            let sock = flow.set.get_mut::<tcp::Socket>(flow.handle);
            match result {
                Ok(()) => {
                    sock.pause_synack(false);
                    flow.phase = Phase::Open;
                }
                Err(e) => {
                    if let (Some(alt), Some(old)) = (flow.fallback.take(), flow.sock) {
                        driver.close(old, false);
                        flow.sock = None;
                        if let Ok(s) =
                            driver.open(SockKind::Tcp, alt, timeout, token(T_TCP, gen, idx))
                        {
                            flow.sock = Some(s);
                            return;
                        }
                    }
                    tracing::debug!(dst = %flow.key.1, error = %e, "host connect failed");
                    Stats::inc(&stats.tcp_connect_failed);
                    if let Some(s) = flow.sock.take() {
                        driver.close(s, false);
                    }
                    sock.abort();
                    flow.phase = Phase::Aborting;
                }
            }
        }
        self.mark(idx);
    }

    /// Mark the flows whose smoltcp timer is due.
    pub fn due_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let live = matches!(
                self.slab.get(idx as usize),
                Some(Some(f)) if f.gen == gen && f.timer == Some(t)
            );
            if live {
                if let Some(Some(f)) = self.slab.get_mut(idx as usize) {
                    f.timer = None;
                }
                self.mark(idx);
            }
        }
    }

    /// The earliest pending smoltcp timer.
    pub fn next_timer(&mut self) -> Option<Instant> {
        // Drop stale heap entries so the answer is exact.
        while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
            let live = matches!(
                self.slab.get(idx as usize),
                Some(Some(f)) if f.gen == gen && f.timer == Some(t)
            );
            if live {
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
        driver: &mut dyn Driver,
        stats: &Stats,
    ) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let now = port.now;
        for (i, &idx) in dirty.iter().enumerate() {
            if !port.room() {
                // The VMM has not drained `to_guest`: the rest wait for the next turn.
                self.dirty.extend_from_slice(&dirty[i..]);
                break;
            }
            let Some(Some(flow)) = self.slab.get_mut(idx as usize) else {
                continue;
            };
            flow.dirty = false;
            let done = service(flow, driver);
            // smoltcp sends at most one segment per socket per `poll_egress`: keep going
            // while it sends and `to_guest` has room, so one turn moves a window's worth,
            // not one frame (unpinned host→guest: see the commit).
            for _ in 0..EGRESS_BURST {
                let sent = iface.poll_egress(now, &mut port.device(None), &mut flow.set);
                if sent != PollResult::SocketStateChanged || !port.room() {
                    break;
                }
            }
            if done || flow.phase == Phase::Aborting {
                self.reap.push(idx);
                continue;
            }
            let t = iface.poll_at(now, &flow.set);
            if t != flow.timer {
                flow.timer = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, idx, flow.gen)));
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        for idx in std::mem::take(&mut self.reap) {
            if let Some(flow) = self.slab.get_mut(idx as usize).and_then(Option::take) {
                if let Some(s) = flow.sock {
                    driver.close(s, true);
                }
                self.map.remove(&flow.key);
                self.free.push(idx);
                if self.spare.len() < SPARE_SOCKETS {
                    self.spare.push((flow.set, flow.handle));
                }
                self.active -= 1;
            }
        }
        stats
            .tcp_active
            .store(self.active as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Flows left to service (a VMM has not drained `to_guest` yet).
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Shutdown: reset every host socket.
    pub fn close_all(&mut self, driver: &mut dyn Driver) {
        for flow in self.slab.iter_mut().filter_map(Option::take) {
            if let Some(s) = flow.sock {
                driver.close(s, true);
            }
        }
        self.map.clear();
        self.active = 0;
    }
}

/// Relay one flow; returns true when it is finished and should be reaped.
fn service(flow: &mut Flow, driver: &mut dyn Driver) -> bool {
    let s = flow.set.get_mut::<tcp::Socket>(flow.handle);
    match flow.phase {
        Phase::Aborting => return true,
        Phase::Connecting => {
            if s.state() == State::Closed {
                // The guest gave up (RST) while we were connecting.
                if let Some(sock) = flow.sock.take() {
                    driver.close(sock, true);
                }
                flow.phase = Phase::Aborting;
                return true;
            }
            return false;
        }
        Phase::Draining => {
            let Some(sock) = flow.sock else { return true };
            if driver.send_pending(sock) == 0 {
                driver.close(sock, false);
                flow.sock = None;
                return true;
            }
            return false;
        }
        Phase::Open => {}
    }
    let Some(sock) = flow.sock else {
        s.abort();
        flow.phase = Phase::Aborting;
        return true;
    };

    // from_guest → to_host
    while s.can_recv() {
        let n = s
            .recv(|buf| {
                let n = driver.send(sock, buf);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    // The guest's FIN has been received in exactly these states (Closed may also mean a
    // reset, which must not become a FIN to the host: it is handled below).
    let guest_done = matches!(
        s.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    ) && s.recv_queue() == 0;
    if guest_done && !flow.host_shut {
        driver.shutdown_write(sock);
        flow.host_shut = true;
    }

    // from_host → to_guest
    if !flow.host_eof {
        loop {
            if !s.can_send() {
                break;
            }
            // Straight from the host socket into smoltcp's transmit buffer (one copy).
            let r = s.send(|free| match driver.recv_into(sock, free) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            let Ok(r) = r else { break }; // not in a sending state
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(Recv::Empty) => break,
                Err(Recv::Eof) => {
                    flow.host_eof = true;
                    s.close();
                    break;
                }
                Err(Recv::Error(e)) => {
                    tracing::debug!(dst = %flow.key.1, error = %e, "host socket error");
                    s.abort();
                    driver.close(sock, false);
                    flow.sock = None;
                    flow.phase = Phase::Aborting;
                    return true;
                }
            }
        }
    }

    match s.state() {
        State::Closed | State::TimeWait => {
            if s.state() == State::Closed && !flow.host_shut {
                // Closed without the guest's FIN: a guest reset. Reset the host side too.
                driver.close(sock, true);
                flow.sock = None;
                flow.phase = Phase::Aborting;
                return true;
            }
            if driver.send_pending(sock) > 0 {
                flow.phase = Phase::Draining;
                return false;
            }
            driver.close(sock, false);
            flow.sock = None;
            true
        }
        _ => false,
    }
}
