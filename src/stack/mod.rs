//! The poll thread: the guest's gateway and the switchboard between guest flows and host
//! sockets.
//!
//! # Theory of operation
//!
//! One thread owns everything below; nothing here is shared except the [`Link`] (pool,
//! rings, counters). Each turn of the loop:
//!
//! 1. `from_guest`: pump the TAP (if this thread serves one), then pop up to
//!    [`BATCH`] frames from the `from_guest` ring. Each frame is classified
//!    ([`crate::wire::classify`]) *before* smoltcp sees it:
//!    - ARP only when it targets the gateway IPv4, NDP solicitations only for the gateway
//!      IPv6, ICMP echo only when addressed to a gateway address go to smoltcp; echo to any
//!      other address is relayed through a ping socket ([`udp`]); everything else of that
//!      kind is dropped and counted (ringnet never answers for hosts it is not);
//!    - TCP: a SYN for an unknown 4-tuple creates a smoltcp socket listening on exactly that
//!      destination with its SYN-ACK held, and starts the host connect ([`tcp`]); then the
//!      frame goes to smoltcp, one frame per `poll_ingress_single`, so each SYN meets the
//!      socket made for it;
//!    - UDP is relayed outside smoltcp ([`udp`]);
//!    - a source address other than the guest's is dropped (no spoofed flows);
//!    - ARP and NDP naming a MAC other than the guest's (Ethernet source, ARP sender,
//!      NDP link-layer address option) are dropped and counted as `neigh_spoofed`: they
//!      would repoint smoltcp's neighbour entry for the guest ([`gateway`]).
//! 2. Driver events (connect results, host data, transmit space) mark flows dirty; dirty
//!    flows move bytes between their smoltcp socket and their host socket.
//! 3. `to_guest`: smoltcp egress writes frames into pool slots on the `to_guest` ring (every
//!    unicast one addressed to the guest's MAC, whatever smoltcp's neighbour cache says:
//!    [`device`]); the TAP is written from the ring, or the VMM is notified once per turn.
//! 4. Sleep in the egress driver's `wait` until a watched fd (the `from_guest` eventfd, the
//!    TAP, the stop eventfd) or a host socket has news, or smoltcp's next timer. With no
//!    timer pending the thread sleeps indefinitely: an idle ringnet uses no CPU.
//!
//! Limits: [`BATCH`] frames per turn (so host events are never starved by a flooding
//! guest), `max_connections` TCP flows, `max_udp_flows` UDP/ICMP flows, the pool's slots and
//! the rings' sizes; every drop increments a counter in [`crate::metrics::Stats`]. A host
//! socket that cannot be opened for want of a file descriptor is counted and warned about
//! through [`limits::note_open_failure`]; a write to a TAP the guest set down is a counted
//! drop, not an error.

pub mod device;
pub mod gateway;
pub mod limits;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use crate::backend::tap::Tap;
use crate::config::SlotConfig;
use crate::egress::{Driver, Event, Token};
use crate::metrics::Stats;
use crate::pool::{Frame, Pool};
use crate::ring::{EventFd, Ring};
use crate::wire::classify::classify;
use gateway::Verdict;

use device::GuestDevice;

/// Frames taken from `from_guest` per loop turn.
pub const BATCH: usize = 64;

/// How soon to look again when a VMM has not drained `to_guest`.
const BACKOFF: Duration = Duration::from_micros(200);

const T_WAKE: u64 = 0;
const T_TCP: u64 = 1;
const T_UDP: u64 = 2;
const WAKE_FROM_GUEST: u64 = 0;
const WAKE_TAP: u64 = 1;
const WAKE_STOP: u64 = 2;

/// Pack a flow token: kind, generation, slab index.
pub(crate) fn token(kind: u64, gen: u32, idx: u32) -> Token {
    Token(kind << 56 | (u64::from(gen) & 0xff_ffff) << 32 | u64::from(idx))
}

/// Take a free slab index (or grow the slab) and the next 24-bit generation for a new flow.
pub(crate) fn alloc_slot<T>(
    slab: &mut Vec<Option<T>>,
    free: &mut Vec<u32>,
    next_gen: &mut u32,
) -> (u32, u32) {
    let idx = free.pop().unwrap_or_else(|| {
        slab.push(None);
        (slab.len() - 1) as u32
    });
    let gen = *next_gen;
    *next_gen = next_gen.wrapping_add(1) & 0xff_ffff;
    (idx, gen)
}

fn untoken(t: Token) -> (u64, u32, u32) {
    (t.0 >> 56, ((t.0 >> 32) & 0xff_ffff) as u32, t.0 as u32)
}

/// Errors of the poll thread.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("egress driver: {0}")]
    Egress(#[from] crate::egress::EgressError),
    #[error("{0}")]
    Tap(#[from] crate::backend::tap::TapError),
    #[error("pinning the poll thread to CPU {0} failed")]
    Pin(usize),
}

/// What the poll thread shares with the VMM side.
#[derive(Debug)]
pub struct Link {
    pub pool: Pool,
    pub from_guest: Ring,
    pub to_guest: Ring,
    pub stop_fd: EventFd,
    pub stop: AtomicBool,
    pub stats: Stats,
}

/// Addresses the gateway answers for and the guest uses.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub gw_mac: [u8; 6],
    pub guest_mac: [u8; 6],
    pub gw4: Option<Ipv4Addr>,
    pub guest4: Option<Ipv4Addr>,
    pub gw6: Option<Ipv6Addr>,
    pub guest6: Option<Ipv6Addr>,
    pub mtu: usize,
}

impl Addrs {
    pub fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => Some(a) == self.gw4,
            IpAddr::V6(a) => Some(a) == self.gw6,
        }
    }

    pub fn is_guest(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => Some(a) == self.guest4,
            IpAddr::V6(a) => Some(a) == self.guest6,
        }
    }

    /// Where a guest flow to `dst` goes on the host: a gateway address means the host's
    /// loopback of the same family (with the other family as the fallback).
    pub fn host_target(&self, dst: SocketAddr) -> (SocketAddr, Option<SocketAddr>) {
        if !self.is_gateway(dst.ip()) {
            return (dst, None);
        }
        let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dst.port());
        let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), dst.port());
        if dst.is_ipv4() {
            (v4, Some(v6))
        } else {
            (v6, Some(v4))
        }
    }
}

/// The poll thread's state.
pub struct Engine {
    link: Arc<Link>,
    addrs: Addrs,
    iface: Interface,
    sockets: SocketSet<'static>,
    caps: DeviceCapabilities,
    driver: Box<dyn Driver + Send>,
    tap: Option<Tap>,
    /// The TAP may have frames: set by its readiness event, cleared by a read that hit
    /// `EAGAIN`. Saves the empty `read(2)` in turns woken by host sockets (two per TCP
    /// request/response).
    tap_ready: bool,
    tcp: tcp::Flows,
    udp: udp::Flows,
    events: Vec<Event>,
    scratch: Vec<u8>,
    epoch: std::time::Instant,
    sent: usize,
    cpu: Option<usize>,
    offload: bool,
    /// Rate limit of the "out of file descriptors" warning, shared by all flow kinds.
    fd_warn: limits::FdWarn,
}

impl Engine {
    /// Build the gateway for `cfg` over `link`, with `driver` for host sockets and, if
    /// given, a TAP this thread pumps itself.
    pub fn new(
        cfg: &SlotConfig,
        link: Arc<Link>,
        mut driver: Box<dyn Driver + Send>,
        tap: Option<Tap>,
    ) -> Result<Engine, StackError> {
        let addrs = Addrs {
            gw_mac: cfg.gateway_mac.0,
            guest_mac: cfg.guest_mac.0,
            gw4: cfg.ipv4.map(|s| s.gateway),
            guest4: cfg.ipv4.map(|s| s.guest),
            gw6: cfg.ipv6.map(|s| s.gateway),
            guest6: cfg.ipv6.map(|s| s.guest),
            mtu: cfg.mtu as usize,
        };
        // A TAP is opened with IFF_VNET_HDR and offloads; a VMM link gets plain frames.
        let offload = tap.is_some();
        let caps = device::capabilities(cfg.mtu, offload);
        let hw = HardwareAddress::Ethernet(EthernetAddress(addrs.gw_mac));
        let mut icfg = Config::new(hw);
        icfg.random_seed = seed();
        let epoch = std::time::Instant::now();
        let mut sent = 0usize;
        let mut scratch = Vec::new();
        let mut dev = GuestDevice {
            pool: &link.pool,
            to_guest: &link.to_guest,
            rx: None,
            caps: &caps,
            sent: &mut sent,
            scratch: &mut scratch,
            offload,
            guest_mac: addrs.guest_mac,
        };
        let mut iface = Interface::new(icfg, &mut dev, SmolInstant::from_millis(0));
        drop(dev);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|a| {
            if let Some(v4) = cfg.ipv4 {
                // Capacity is 4 addresses (feature iface-max-addr-count-4); we add at most 2.
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(v4.gateway), v4.prefix_len));
            }
            if let Some(v6) = cfg.ipv6 {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(v6.gateway), v6.prefix_len));
            }
        });
        if let Some(v4) = cfg.ipv4 {
            let _ = iface.routes_mut().add_default_ipv4_route(v4.gateway);
        }
        if let Some(v6) = cfg.ipv6 {
            let _ = iface.routes_mut().add_default_ipv6_route(v6.gateway);
        }
        driver.watch(
            link.from_guest.fd(),
            token(T_WAKE, 0, WAKE_FROM_GUEST as u32),
        )?;
        driver.watch(link.stop_fd.fd(), token(T_WAKE, 0, WAKE_STOP as u32))?;
        if let Some(t) = &tap {
            driver.watch(t.fd(), token(T_WAKE, 0, WAKE_TAP as u32))?;
        }
        Ok(Engine {
            tcp: tcp::Flows::new(cfg),
            udp: udp::Flows::new(cfg),
            link,
            addrs,
            iface,
            sockets: SocketSet::new(Vec::new()),
            caps,
            driver,
            tap,
            tap_ready: true,
            events: Vec::with_capacity(256),
            scratch,
            epoch,
            sent: 0,
            cpu: cfg.egress.cpu,
            offload,
            fd_warn: limits::FdWarn::new(limits::fds_wanted(cfg)),
        })
    }

    fn now(&self) -> SmolInstant {
        now_since(self.epoch)
    }

    /// Run until the stop flag is set.
    pub fn run(mut self) -> Result<(), StackError> {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                return Err(StackError::Pin(cpu));
            }
        }
        let result = self.run_loop();
        self.teardown();
        result
    }

    fn run_loop(&mut self) -> Result<(), StackError> {
        loop {
            if self.link.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            Stats::inc(&self.link.stats.polls);
            let mut more = false;
            if let Some(tap) = self.tap.as_mut().filter(|_| self.tap_ready) {
                let n = tap
                    .read_frames(&self.link.pool, &self.link.from_guest, BATCH)
                    .map_err(StackError::Tap)?;
                // Fewer than asked: the read hit EAGAIN. The readiness event sets it again.
                self.tap_ready = n == BATCH;
                more |= n == BATCH;
            }
            let mut taken = 0;
            while taken < BATCH {
                let Some(frame) = self.link.from_guest.pop() else {
                    break;
                };
                taken += 1;
                self.ingest(frame);
            }
            more |= !self.link.from_guest.is_empty();
            self.egress_and_service();
            self.flush_to_guest()?;

            let now = self.now();
            let mut timeout = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()));
            if let Some(t) = self.tcp.next_timer() {
                let d = Duration::from_micros((t - now).total_micros());
                timeout = Some(timeout.map_or(d, |x| x.min(d)));
            }
            if let Some(t) = self.udp.next_deadline(self.epoch.elapsed()) {
                timeout = Some(timeout.map_or(t, |x| x.min(t)));
            }
            if more {
                timeout = Some(Duration::ZERO);
            } else if self.tcp.has_dirty() {
                // Flows wait for the VMM to drain `to_guest`; look again shortly.
                timeout = Some(timeout.map_or(BACKOFF, |t| t.min(BACKOFF)));
            }
            let parked = timeout != Some(Duration::ZERO) && self.link.from_guest.park();
            if !parked && timeout != Some(Duration::ZERO) {
                timeout = Some(Duration::ZERO);
            }
            self.events.clear();
            let mut events = std::mem::take(&mut self.events);
            let r = self.driver.wait(timeout, &mut events);
            if parked {
                self.link.from_guest.unpark();
            }
            r?;
            for ev in events.drain(..) {
                self.on_event(ev);
            }
            self.events = events;
            let elapsed = self.epoch.elapsed();
            self.udp
                .expire(elapsed, &mut *self.driver, &self.link.stats);
        }
    }

    fn on_event(&mut self, ev: Event) {
        let t = match &ev {
            Event::Connected { token, .. }
            | Event::Readable { token }
            | Event::Writable { token }
            | Event::Wake { token } => *token,
        };
        let (kind, gen, idx) = untoken(t);
        match kind {
            T_WAKE if u64::from(idx) == WAKE_STOP => self.link.stop_fd.drain(),
            T_WAKE if u64::from(idx) == WAKE_TAP => self.tap_ready = true,
            // from_guest wake-ups: the ring is drained at the top of the next turn.
            T_WAKE => {}
            T_TCP => self.tcp.on_event(
                gen,
                idx,
                ev,
                &mut *self.driver,
                &self.link.stats,
                (&mut self.fd_warn, self.epoch.elapsed()),
            ),
            T_UDP => {
                let now = self.epoch.elapsed();
                let mut port = port!(self);
                self.udp
                    .on_event(gen, idx, ev, &mut *self.driver, &mut port, &self.addrs, now);
            }
            _ => {}
        }
    }

    /// Classify one guest frame and route it.
    fn ingest(&mut self, frame: Frame) {
        let stats = &self.link.stats;
        let pool = &self.link.pool;
        let v = match classify(pool.frame(&frame)) {
            Ok(class) => gateway::verdict(&class, &self.addrs),
            Err(_) => {
                Stats::inc(&stats.malformed);
                pool.release(frame);
                return;
            }
        };
        let elapsed = self.epoch.elapsed();
        match v {
            Verdict::Smoltcp => {}
            Verdict::Tcp { src, dst, flags } => {
                let flow = self.tcp.on_frame(
                    src,
                    dst,
                    flags,
                    &self.addrs,
                    &mut *self.driver,
                    stats,
                    (&mut self.fd_warn, elapsed),
                );
                if let Some(idx) = flow {
                    let mut port = port!(self);
                    self.tcp.ingress(idx, frame, &mut self.iface, &mut port);
                    return;
                }
            }
            Verdict::Udp { src, dst, payload } => {
                self.udp.on_datagram(
                    src,
                    dst,
                    &pool.frame(&frame)[payload],
                    &self.addrs,
                    &mut *self.driver,
                    stats,
                    &mut self.fd_warn,
                    elapsed,
                );
                pool.release(frame);
                return;
            }
            Verdict::Echo {
                src,
                dst,
                ident,
                msg,
            } => {
                self.udp.on_echo(
                    src,
                    dst,
                    ident,
                    &pool.frame(&frame)[msg],
                    &mut *self.driver,
                    stats,
                    &mut self.fd_warn,
                    elapsed,
                );
                pool.release(frame);
                return;
            }
            Verdict::Drop(why) => {
                Stats::inc(match why {
                    gateway::Drop::Arp => &stats.arp_filtered,
                    gateway::Drop::Ndp => &stats.ndp_filtered,
                    gateway::Drop::Unsupported => &stats.unsupported,
                    gateway::Drop::NeighSpoofed => &stats.neigh_spoofed,
                });
                pool.release(frame);
                return;
            }
        }
        self.poll_smoltcp(Some(frame));
    }

    /// One smoltcp pass over the gateway's own (socketless) set: with `rx`, process exactly
    /// that frame (ARP, NDP, echo to the gateway, or TCP without a flow, answered by RST);
    /// without, run the interface's timers and egress.
    fn poll_smoltcp(&mut self, rx: Option<Frame>) {
        let ingress = rx.is_some();
        let mut port = port!(self);
        let now = port.now;
        let mut dev = port.device(rx);
        if ingress {
            self.iface
                .poll_ingress_single(now, &mut dev, &mut self.sockets);
            // A frame smoltcp did not take is released when `dev` drops here.
        } else {
            self.iface.poll(now, &mut dev, &mut self.sockets);
        }
    }

    /// Interface egress, due flow timers, then relay bytes and egress for every flow that
    /// was touched.
    fn egress_and_service(&mut self) {
        self.poll_smoltcp(None);
        let now = self.now();
        self.tcp.due_timers(now);
        let mut port = port!(self);
        self.tcp.service_dirty(
            &mut self.iface,
            &mut port,
            &mut *self.driver,
            &self.link.stats,
        );
    }

    /// Hand the frames of this turn to the guest: write them to the TAP, or wake the VMM.
    fn flush_to_guest(&mut self) -> Result<(), StackError> {
        if let Some(tap) = &mut self.tap {
            write_to_tap(tap, &self.link.pool, &self.link.to_guest, &self.link.stats);
        } else if self.sent > 0 {
            self.link.to_guest.notify();
        }
        self.sent = 0;
        Ok(())
    }

    fn teardown(&mut self) {
        self.tcp.close_all(&mut *self.driver);
        self.udp.close_all(&mut *self.driver);
        self.link.from_guest.clear(&self.link.pool);
    }
}

/// The guest-facing device parts, borrowed for one stretch of smoltcp work.
pub(crate) struct Port<'a> {
    pub pool: &'a Pool,
    pub to_guest: &'a Ring,
    pub caps: &'a DeviceCapabilities,
    pub sent: &'a mut usize,
    pub scratch: &'a mut Vec<u8>,
    pub offload: bool,
    /// Destination MAC of every unicast frame to the guest.
    pub guest_mac: [u8; 6],
    pub now: SmolInstant,
    /// The TAP this thread writes `to_guest` frames to, if it serves one.
    pub tap: Option<&'a mut Tap>,
    pub stats: &'a Stats,
}

/// `to_guest` frames at which the producer makes room before producing more.
const TO_GUEST_HIGH: usize = crate::network::RING_SLOTS * 3 / 4;

impl Port<'_> {
    /// Build a frame outside smoltcp: lease a slot, let `build` write a frame of at most
    /// `max_len` bytes into it (returning its length, or `None` to give up), and queue it to
    /// the guest. Every failure is counted as `to_guest_dropped`.
    pub fn emit(&mut self, max_len: usize, build: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let Some(mut frame) = self.pool.lease() else {
            Stats::inc(&self.stats.to_guest_dropped);
            return;
        };
        let buf = self.pool.frame_capacity_mut(&mut frame);
        match build(buf) {
            Some(len) if len <= max_len => {
                self.pool.set_len(&mut frame, len);
                if self.to_guest.push(self.pool, frame) {
                    *self.sent += 1;
                } else {
                    Stats::inc(&self.stats.to_guest_dropped);
                }
            }
            _ => {
                Stats::inc(&self.stats.to_guest_dropped);
                self.pool.release(frame);
            }
        }
    }

    /// Make sure the `to_guest` ring can take a burst: with a TAP, write the queued frames
    /// out now; for a VMM link, report `false` when the VMM has not drained it yet (the
    /// caller then leaves work for the next turn instead of dropping frames).
    pub fn room(&mut self) -> bool {
        if self.to_guest.len() < TO_GUEST_HIGH {
            return true;
        }
        match self.tap.as_deref_mut() {
            Some(tap) => {
                write_to_tap(tap, self.pool, self.to_guest, self.stats);
                true
            }
            None => {
                self.to_guest.notify();
                false
            }
        }
    }

    /// A smoltcp device offering `rx` (at most one frame) and transmitting to the guest.
    pub fn device(&mut self, rx: Option<Frame>) -> GuestDevice<'_> {
        GuestDevice {
            pool: self.pool,
            to_guest: self.to_guest,
            rx,
            caps: self.caps,
            sent: self.sent,
            scratch: self.scratch,
            offload: self.offload,
            guest_mac: self.guest_mac,
        }
    }
}

/// Write every queued `to_guest` frame to the TAP. A failed write drops the frame, counted
/// on the ring and in `to_guest_dropped`, not logged: a TAP the guest set down fails every
/// write with `EIO` until it is up again (and a deleted one with `EBADFD` until the read
/// side stops the thread).
fn write_to_tap(tap: &mut Tap, pool: &Pool, ring: &Ring, stats: &Stats) {
    while let Some(frame) = ring.pop() {
        if tap.write_frame(pool, &frame).is_err() {
            ring.count_drop();
            Stats::inc(&stats.to_guest_dropped);
        }
        pool.release(frame);
    }
}

fn now_since(epoch: std::time::Instant) -> SmolInstant {
    SmolInstant::from_micros(epoch.elapsed().as_micros() as i64)
}

/// Borrow the device parts of an `Engine` without borrowing the whole engine.
macro_rules! port {
    ($e:ident) => {
        Port {
            pool: &$e.link.pool,
            to_guest: &$e.link.to_guest,
            caps: &$e.caps,
            sent: &mut $e.sent,
            scratch: &mut $e.scratch,
            offload: $e.offload,
            guest_mac: $e.addrs.guest_mac,
            now: now_since($e.epoch),
            tap: $e.tap.as_mut(),
            stats: &$e.link.stats,
        }
    };
}
use port;

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom(2) writes at most 8 bytes into the live array.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b) ^ std::process::id() as u64
}
