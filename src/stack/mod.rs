//! The poll thread: the guest's gateway and the switchboard between guest flows and host
//! sockets.
//!
//! # Theory of operation
//!
//! One thread owns everything below; nothing here is shared except the [`Link`] (pool,
//! rings, counters). The guest side is a [`GuestPort`] (a TAP, the embedding rings, …);
//! host sockets are an egress [`Driver`]; time comes from a [`Clock`] and the random seed
//! from the caller, so the whole engine runs on virtual time in tests (`harness`). Each
//! turn of the loop ([`Engine::turn`]):
//!
//! 1. `from_guest`: let the port receive (a TAP is read when its fd was ready), then pop up to
//!    [`BATCH`] frames from the `from_guest` ring. Each frame is classified
//!    ([`crate::wire::classify()`]) *before* smoltcp sees it:
//!    - ARP only when it targets the gateway IPv4, NDP solicitations only for the gateway
//!      IPv6, ICMP echo only when addressed to a gateway address go to smoltcp; echo to any
//!      other address is relayed through a ping socket (`udp`); everything else of that
//!      kind is dropped and counted (ringnet never answers for hosts it is not);
//!    - TCP: a SYN for an unknown 4-tuple creates a smoltcp socket listening on exactly that
//!      destination with its SYN-ACK held, and starts the host connect (`tcp`); then the
//!      frame goes to smoltcp, one frame per `poll_ingress_single`, so each SYN meets the
//!      socket made for it;
//!    - UDP is relayed outside smoltcp (`udp`);
//!    - DNS: UDP to a gateway address, port 53, goes to the DNS service (`dns`, the
//!      resolver in [`crate::dns`]); a TCP SYN to it makes a *local* flow, served by
//!      ringnet with no host socket;
//!    - every new TCP, UDP and echo flow is first admitted by the policy (`guard`): a
//!      denied SYN gets RST (no host connect), a denied datagram or echo is dropped and
//!      answered with ICMP "administratively prohibited";
//!    - with `autoconf` on, DHCPv4 (UDP 68 → 67, also from 0.0.0.0), router
//!      solicitations and DHCPv6 (UDP 546 → 547) from the guest's MAC are answered by
//!      [`crate::autoconf`] (`autoconf.rs` here), before the rules below; the same from any
//!      other MAC is dropped. Router advertisements also go out unsolicited on a timer;
//!    - a source address other than the guest's is dropped (no spoofed flows);
//!    - ARP and NDP naming a MAC other than the guest's (Ethernet source, ARP sender,
//!      NDP link-layer address option) are dropped and counted as `neigh_spoofed`: they
//!      would repoint smoltcp's neighbour entry for the guest ([`gateway`]).
//! 2. Driver events (connect results, host data, transmit space) mark flows dirty; dirty
//!    flows move bytes between their smoltcp socket and their host socket. A readable
//!    listener of a published port (`inbound`) yields host clients: each becomes an
//!    inbound flow whose smoltcp socket connects to the guest (TCP), or a mapped UDP peer.
//! 3. `to_guest`: smoltcp egress writes frames into pool slots on the `to_guest` ring (every
//!    unicast one addressed to the guest's MAC, whatever smoltcp's neighbour cache says:
//!    [`device`]); the port transmits them (a TAP is written, a VMM is woken once per turn).
//! 4. Sleep in the egress driver's `wait` until a watched fd (the `from_guest` eventfd, the
//!    port's fd, the stop eventfd) or a host socket has news, or smoltcp's next timer. With
//!    no timer pending the thread sleeps indefinitely: an idle ringnet uses no CPU.
//! 5. Idle trim (`idle`): once `egress.idle_trim_ms` (2 s) have passed without traffic — no
//!    guest frame, no host socket or listener event; timers and control wake-ups do not
//!    count — the thread gives memory back, once per idle period: the pages of the pool's
//!    free slots ([`crate::pool::Pool::trim`], `MADV_DONTNEED`; slots in use, on any
//!    thread, are never touched), the TCP sockets kept for reuse, the egress driver's spare
//!    buffers, and glibc's free heap ([`crate::mem::trim_heap`]). Counted in `idle_trims`
//!    and `idle_trim_pool_bytes`. On a busy link this costs one store per turn; the trim's
//!    deadline joins the wait's timeout only while one is pending.
//!
//! Borrowing: protocol code gets two context values instead of the engine — a `Port`
//! (the guest side: link, port, device capabilities, the time) and a `Host` (the egress
//! driver, the counters, the fd warning, the time) — built from disjoint fields of the
//! engine, so both can be lent at once.
//!
//! A new policy ([`Link::set_policy`]) arrives with the stop eventfd's wake-up; open flows
//! it denies are ended at once. Flow-table snapshot requests arrive the same way and are
//! answered between turns; latency summaries are published at most every 100 ms
//! ([`crate::observe`], this module's `observe.rs`).
//!
//! Limits: [`BATCH`] frames per turn (so host events are never starved by a flooding
//! guest), `max_connections` TCP flows, `max_udp_flows` UDP/ICMP flows, the pool's slots and
//! the rings' sizes; every drop increments a counter in [`crate::metrics::Stats`]. A host
//! socket that cannot be opened for want of a file descriptor is counted and warned about
//! through `limits::note_open_failure`; a write to a TAP the guest set down is a counted
//! drop, not an error.

mod autoconf;
#[cfg(test)]
mod autoconf_tests;
pub mod device;
mod dns;
#[cfg(test)]
mod dns_tests;
pub mod gateway;
pub(crate) mod guard;
mod guest;
// The virtual-clock harness: for unit tests, and for the fuzz targets in `fuzz/` (cargo-fuzz
// builds every crate with `--cfg fuzzing`), which drive the whole engine with it.
#[cfg(any(test, all(fuzzing, feature = "cli")))]
pub mod harness;
mod idle;
#[cfg(test)]
mod idle_tests;
mod inbound;
#[cfg(test)]
mod inbound_tests;
pub mod limits;
mod observe;
#[cfg(test)]
mod observe_tests;
#[cfg(test)]
mod offload_tests;
#[cfg(test)]
mod policy_tests;
mod port;
mod syn_gate;
pub(crate) mod tcp;
pub(crate) mod udp;
#[cfg(test)]
mod udp_tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpAddress, IpCidr};

use crate::config::SlotConfig;
use crate::egress::intercept::Interceptor;
use crate::egress::{Driver, EgressError, Event, Token};
use crate::link::{GuestPort, Link, PortError};
use crate::metrics::Stats;
use crate::pool::Frame;
use crate::slab::Key;
use crate::wire::classify::classify;
use gateway::Verdict;
pub(crate) use port::{GuestSide, Port};

/// Frames taken from `from_guest` per loop turn.
pub const BATCH: usize = 64;

/// How soon to look again when a VMM has not drained `to_guest`.
const BACKOFF: Duration = Duration::from_micros(200);

/// Tags of the poll thread's egress tokens (`Key::pack`): a wake-up fd, or a flow.
const T_WAKE: u8 = 0;
const T_TCP: u8 = 1;
const T_UDP: u8 = 2;
const T_DNS: u8 = 3;
const T_DNS_TCP: u8 = 4;
const T_LISTEN: u8 = 5;
const WAKE_FROM_GUEST: u32 = 0;
const WAKE_PORT: u32 = 1;
const WAKE_STOP: u32 = 2;

/// Errors of the poll thread.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("egress driver: {0}")]
    Egress(#[from] EgressError),
    #[error("{0}")]
    Port(#[from] PortError),
    #[error("pinning the poll thread to CPU {0} failed")]
    Pin(usize),
    #[error("{0}")]
    Publish(#[from] inbound::PublishError),
    /// The poll thread could not enter its sandbox ([`crate::sandbox`]).
    #[error("sandbox: {0}")]
    Sandbox(crate::sandbox::SandboxError),
}

/// Where the poll thread's time comes from: the time since its start.
pub trait Clock: Send {
    fn elapsed(&self) -> Duration;
}

/// Real time (monotonic).
impl Clock for std::time::Instant {
    fn elapsed(&self) -> Duration {
        std::time::Instant::elapsed(self)
    }
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
    /// Guest autoconfiguration is on: the guest may also use SLAAC addresses of its /64.
    pub autoconf: bool,
}

impl Addrs {
    /// The addresses of slot configuration `cfg`.
    pub fn of(cfg: &SlotConfig) -> Addrs {
        Addrs {
            gw_mac: cfg.gateway_mac.0,
            guest_mac: cfg.guest_mac.0,
            gw4: cfg.ipv4.map(|s| s.gateway),
            guest4: cfg.ipv4.map(|s| s.guest),
            gw6: cfg.ipv6.map(|s| s.gateway),
            guest6: cfg.ipv6.map(|s| s.guest),
            mtu: cfg.mtu as usize,
            autoconf: cfg.autoconf,
        }
    }

    /// The gateway's IPv6 link-local address (modified EUI-64 of its MAC), when IPv6 is
    /// active: the source of its router advertisements and DHCPv6 replies.
    pub fn gw6_link_local(&self) -> Option<Ipv6Addr> {
        self.gw6.map(|_| crate::autoconf::link_local(self.gw_mac))
    }

    /// Tests: slot 0 of the default configuration with the families asked for (the
    /// addresses and MACs every fixture of the stack uses).
    #[cfg(test)]
    pub(crate) fn slot0(ipv4: bool, ipv6: bool) -> Addrs {
        let routes = crate::config::HostRoutes { ipv4, ipv6 };
        let cfg = crate::config::NetworkConfig::default()
            .derive(0, routes)
            .expect("the default configuration derives slot 0");
        Addrs::of(&cfg)
    }

    pub fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => Some(a) == self.gw4,
            IpAddr::V6(a) => Some(a) == self.gw6,
        }
    }

    pub fn is_guest(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => Some(a) == self.guest4,
            IpAddr::V6(a) => Some(a) == self.guest6 || self.is_slaac(a),
        }
    }

    /// With autoconf on, an address the guest may have configured by SLAAC (RFC 4862) from
    /// the prefix the gateway advertises: any address of its /64 (the slot's alone) other
    /// than the gateway's and the Subnet-Router anycast address.
    pub fn is_slaac(&self, a: Ipv6Addr) -> bool {
        let (Some(g), true) = (self.guest6, self.autoconf) else {
            return false;
        };
        let (a, g) = (a.segments(), g.segments());
        a[..4] == g[..4] && a[4..] != [0; 4] && Some(Ipv6Addr::from(a)) != self.gw6
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

/// The host side, lent to protocol code for one call.
pub(crate) struct Host<'a> {
    pub driver: &'a mut dyn Driver,
    pub stats: &'a Stats,
    /// The policy and this guest's DNS pins.
    pub guard: &'a mut guard::Guard,
    fd_warn: &'a mut limits::FdWarn,
    /// Time since the poll thread started.
    pub elapsed: Duration,
    /// The TLS workers, when `tls.enabled`.
    pub intercept: Option<&'a Interceptor>,
}

impl Host<'_> {
    /// A host socket open failed with `e`: when it was for want of file descriptors, count
    /// and (rate-limited) warn, and return true; else false.
    pub fn open_failed(&mut self, e: &EgressError) -> bool {
        limits::note_open_failure(self.stats, self.fd_warn, e, self.elapsed)
    }
}

/// What the engine owns on the host side.
struct HostSide {
    driver: Box<dyn Driver + Send>,
    /// Rate limit of the "out of file descriptors" warning, shared by all flow kinds.
    fd_warn: limits::FdWarn,
    link: Arc<Link>,
    guard: guard::Guard,
    intercept: Option<Arc<Interceptor>>,
}

impl HostSide {
    fn cx(&mut self, elapsed: Duration) -> Host<'_> {
        self.guard.set_now(elapsed);
        Host {
            driver: &mut *self.driver,
            stats: &self.link.stats,
            guard: &mut self.guard,
            fd_warn: &mut self.fd_warn,
            elapsed,
            intercept: self.intercept.as_deref(),
        }
    }
}

/// The poll thread's state.
pub struct Engine {
    link: Arc<Link>,
    /// Before `guest` and `ports`: the driver goes (its io_uring polls on their fds
    /// cancelled) before those fds close, also when `new` fails half way.
    host: HostSide,
    guest: GuestSide,
    addrs: Addrs,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The port's fd was ready (or never read): set by its readiness event, cleared by a
    /// receive that drained it. Saves the empty `read(2)` in turns woken by host sockets
    /// (two per TCP request/response).
    port_ready: bool,
    tcp: tcp::Flows,
    udp: udp::Flows,
    dns: dns::DnsService,
    ports: inbound::Ports,
    /// Datagrams taken from published UDP ports land here.
    udp_buf: Vec<u8>,
    events: Vec<Event>,
    clock: Box<dyn Clock>,
    cpu: Option<usize>,
    /// When the latency summaries may be published next.
    next_publish: Duration,
    /// Guest autoconfiguration requests are answered (`autoconf = true`).
    autoconf: bool,
    /// Unsolicited router advertisements: with autoconf and IPv6 active.
    ra_timer: Option<crate::autoconf::ra::Timer>,
    /// smoltcp's random seed (initial sequence numbers), stepped at each interface rebuild.
    iface_seed: u64,
    /// When to give memory back (`egress.idle_trim_ms` after the last traffic).
    idle: idle::IdleTrim,
}

impl Engine {
    /// Build the gateway for `cfg` over `link`: `driver` for host sockets, `port` for the
    /// guest, `clock` for time and `random_seed` for smoltcp (initial sequence numbers).
    pub fn new(
        cfg: &SlotConfig,
        link: Arc<Link>,
        mut driver: Box<dyn Driver + Send>,
        port: Box<dyn GuestPort>,
        clock: Box<dyn Clock>,
        random_seed: u64,
    ) -> Result<Engine, StackError> {
        let addrs = Addrs::of(cfg);
        let wake = |i| Token(Key::fixed(i).pack(T_WAKE));
        driver.watch(link.from_guest.fd(), wake(WAKE_FROM_GUEST))?;
        driver.watch(link.stop_fd.fd(), wake(WAKE_STOP))?;
        if let Some(fd) = port.ready_fd() {
            driver.watch(fd, wake(WAKE_PORT))?;
        }
        let mut guest = GuestSide::new(link.clone(), port, cfg.mtu, addrs.guest_mac);
        let now = smol_now(clock.elapsed());
        let mut cidrs = Vec::new();
        if let Some(v4) = cfg.ipv4 {
            cidrs.push(IpCidr::new(IpAddress::Ipv4(v4.gateway), v4.prefix_len));
        }
        if let Some(v6) = cfg.ipv6 {
            cidrs.push(IpCidr::new(IpAddress::Ipv6(v6.gateway), v6.prefix_len));
            // The router's link-local address (RAs come from it): NS for it answered.
            let ll = crate::autoconf::link_local(addrs.gw_mac);
            cidrs.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
        }
        let iface = guest::new_iface(&addrs, &cidrs, &mut guest, random_seed, now);
        let gateways = crate::policy::Gateways {
            v4: addrs.gw4,
            v6: addrs.gw6,
        };
        let guard = guard::Guard::new(cfg.policy.clone(), gateways, cfg.dns.max_pins, link.clone());
        let resolver = crate::dns::Resolver::new(
            crate::dns::ResolverConfig {
                servers: cfg.dns.servers.iter().map(|s| s.0).collect(),
                timeout: Duration::from_millis(cfg.dns.timeout_ms),
                hosts: cfg.dns.static_hosts(),
                gateway4: addrs.gw4,
                gateway6: addrs.gw6,
                rebind_protection: cfg.dns.rebind_protection,
                max_pending: cfg.dns.max_pending,
            },
            random_seed.rotate_left(17) ^ 0x646e_735f_7365_6564,
        );
        let mut engine = Engine {
            ports: inbound::Ports::new(),
            udp_buf: Vec::new(),
            tcp: tcp::Flows::new(cfg),
            udp: udp::Flows::new(cfg),
            dns: dns::DnsService::new(
                resolver,
                Duration::from_millis(cfg.dns.timeout_ms),
                cfg.dns.queries_per_sec,
            ),
            host: HostSide {
                driver,
                fd_warn: limits::FdWarn::new(limits::fds_wanted(cfg)),
                link: link.clone(),
                guard,
                intercept: None,
            },
            link,
            guest,
            addrs,
            iface,
            sockets: SocketSet::new(Vec::new()),
            port_ready: true,
            events: Vec::with_capacity(256),
            clock,
            cpu: cfg.egress.cpu,
            next_publish: Duration::ZERO,
            autoconf: cfg.autoconf,
            ra_timer: None,
            iface_seed: random_seed,
            idle: idle::IdleTrim::new(cfg.egress.idle_trim_ms),
        };
        if cfg.autoconf && cfg.ipv6.is_some() {
            let now = engine.clock.elapsed();
            engine.ra_timer = Some(crate::autoconf::ra::Timer::new(now));
        }
        for spec in &cfg.ports {
            let elapsed = engine.clock.elapsed();
            engine
                .ports
                .publish(spec.clone(), &mut engine.host.cx(elapsed))?;
        }
        Ok(engine)
    }

    /// Hand TCP flows to intercepted ports to `intercept`'s TLS workers (and refuse UDP to
    /// them); called before [`Engine::run`].
    pub fn set_interceptor(&mut self, intercept: Arc<Interceptor>) {
        self.host.intercept = Some(intercept);
    }

    /// Run until the stop flag is set.
    pub fn run(mut self) -> Result<(), StackError> {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                return Err(StackError::Pin(cpu));
            }
        }
        let result = loop {
            if self.link.stop.load(Ordering::Acquire) {
                break Ok(());
            }
            if let Err(e) = self.turn() {
                if matches!(e, StackError::Port(PortError::Gone(_))) {
                    crate::observe::term::fire(&self.link, crate::observe::TermEvent::GuestGone);
                }
                break Err(e);
            }
        };
        self.teardown();
        result
    }

    /// One turn of the loop: receive and route guest frames, service flows, transmit to
    /// the guest, then wait in the driver until there is something to do.
    pub fn turn(&mut self) -> Result<(), StackError> {
        Stats::inc(&self.link.stats.polls);
        let mut more = false;
        if self.port_ready {
            let n = self.guest.receive(BATCH)?;
            // Fewer than asked: the port is drained. Its readiness event sets it again.
            self.port_ready = n == BATCH;
            more |= n == BATCH;
        }
        // One clock read serves the whole batch (and the events below): they all belong to
        // this turn.
        let elapsed = self.clock.elapsed();
        let mut taken = 0;
        while taken < BATCH {
            let Some(frame) = self.link.from_guest.pop() else {
                break;
            };
            taken += 1;
            self.ingest(frame, elapsed);
        }
        if taken > 0 {
            self.idle.busy(elapsed);
        }
        more |= !self.link.from_guest.is_empty();
        let ra_delay = self.periodic_ra(elapsed);
        self.egress_and_service();
        self.guest.flush();

        let elapsed = self.clock.elapsed();
        let now = smol_now(elapsed);
        if self.idle.due(elapsed) {
            self.trim_memory();
        }
        let mut timeout = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        if let Some(t) = self.idle.delay(elapsed) {
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = self.tcp.next_timer() {
            let d = Duration::from_micros((t - now).total_micros());
            timeout = Some(timeout.map_or(d, |x| x.min(d)));
        }
        if let Some(t) = self.udp.next_deadline(elapsed) {
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = self.dns.next_deadline(elapsed) {
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = self.publish_latency(elapsed) {
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = ra_delay {
            // Measured at the top of the turn: early by this turn's length at most.
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
        let r = self.host.driver.wait(timeout, &mut events);
        if parked {
            self.link.from_guest.unpark();
        }
        r?;
        self.link.stats.uring_sq_full.store(
            self.host.driver.sq_full(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let elapsed = self.clock.elapsed();
        let mut traffic = false;
        for ev in events.drain(..) {
            traffic |= is_traffic(&ev);
            self.on_event(ev, elapsed);
        }
        if traffic {
            self.idle.busy(elapsed);
        }
        self.events = events;
        self.deliver_dns_replies();
        self.udp.expire(&mut self.host.cx(elapsed));
        let mut port = self.guest.port(smol_now(elapsed));
        self.dns
            .expire(&mut self.host.cx(elapsed), &mut port, &self.addrs);
        self.deliver_dns_replies();
        Ok(())
    }

    /// Hand the resolver's replies for guest TCP connections to their flows.
    fn deliver_dns_replies(&mut self) {
        for (conn, msg) in self.dns.tcp_replies.drain(..) {
            self.tcp.deliver_dns(conn, &msg, &self.link.stats);
        }
    }

    /// Queries read from guest DNS connections go to the resolver; connections that
    /// closed are forgotten. True when replies were handed to flows (service them again).
    fn dns_tcp_work(&mut self, elapsed: Duration) -> bool {
        for conn in self.tcp.dns_closed.drain(..) {
            self.dns.forget_conn(conn);
        }
        if self.tcp.dns_queries.is_empty() && self.dns.tcp_replies.is_empty() {
            return false;
        }
        let queries = std::mem::take(&mut self.tcp.dns_queries);
        let mut host = self.host.cx(elapsed);
        for (conn, msg) in &queries {
            if !self.dns.query_tcp(*conn, msg, &mut host) {
                self.tcp.dns_query_dropped(*conn);
            }
        }
        let mut port = self.guest.port(smol_now(elapsed));
        self.dns.flush(&mut host, &mut port, &self.addrs);
        let replies = !self.dns.tcp_replies.is_empty();
        self.deliver_dns_replies();
        self.tcp.dns_queries = queries;
        self.tcp.dns_queries.clear();
        replies
    }

    /// Install a new policy; open flows it denies are reset (TCP) or closed (UDP, echo).
    fn apply_policy(&mut self, policy: crate::policy::Policy, elapsed: Duration) {
        self.host.guard.set_policy(policy);
        let mut host = self.host.cx(elapsed);
        let n = self.tcp.revoke(&*host.guard, &mut *host.driver) + self.udp.revoke(&mut host);
        host.stats
            .policy_revoked
            .fetch_add(n as u64, Ordering::Relaxed);
        tracing::info!("policy replaced; {n} open flows it denies were ended");
    }

    fn on_event(&mut self, ev: Event, elapsed: Duration) {
        let t = match &ev {
            Event::Connected { token, .. }
            | Event::Readable { token }
            | Event::Writable { token }
            | Event::Wake { token } => *token,
        };
        let (kind, key) = Key::unpack(t.0);
        match kind {
            T_WAKE if key == Key::fixed(WAKE_STOP) => {
                self.link.stop_fd.drain();
                if self.link.take_reset() {
                    self.reset_guest();
                }
                if let Some(o) = self.link.take_offloads() {
                    self.set_offloads(o, elapsed);
                }
                if let Some(p) = self.link.take_policy() {
                    self.apply_policy(p, elapsed);
                }
                for change in self.link.take_port_changes() {
                    let mut host = self.host.cx(elapsed);
                    let r = if change.publish {
                        self.ports.publish(change.spec, &mut host)
                    } else {
                        self.ports.unpublish(&change.spec, &mut host)
                    };
                    let _ = change.reply.send(r.map_err(|e| e.to_string()));
                }
                self.answer_snapshots(elapsed);
            }
            T_WAKE if key == Key::fixed(WAKE_PORT) => self.port_ready = true,
            // from_guest wake-ups: the ring is drained at the top of the next turn.
            T_WAKE => {}
            T_TCP => self.tcp.on_event(key, ev, &mut self.host.cx(elapsed)),
            T_UDP => {
                let now = smol_now(elapsed);
                self.udp.on_event(
                    key,
                    ev,
                    &mut self.host.cx(elapsed),
                    &mut self.guest.port(now),
                    &self.addrs,
                );
            }
            T_LISTEN => self.on_listener(key, elapsed),
            T_DNS | T_DNS_TCP => {
                let mut port = self.guest.port(smol_now(elapsed));
                let host = &mut self.host.cx(elapsed);
                self.dns
                    .on_event(kind, key, ev, host, &mut port, &self.addrs);
            }
            _ => {}
        }
    }

    /// Classify one guest frame and route it.
    fn ingest(&mut self, frame: Frame, elapsed: Duration) {
        if self.guest.offloads().from_guest()
            && !guest::vnet_acceptable(frame.hdr(), self.guest.offloads())
        {
            Stats::inc(&self.link.stats.from_guest_bad_vnet);
            return;
        }
        let class = match classify(frame.bytes()) {
            Ok(class) => class,
            Err(_) => {
                Stats::inc(&self.link.stats.malformed);
                return;
            }
        };
        if self.autoconf {
            // classify succeeded: the frame has a whole Ethernet header.
            let mut eth_src = [0u8; 6];
            eth_src.copy_from_slice(&frame.bytes()[6..12]);
            if let Some(req) = crate::autoconf::route(&class, eth_src, &self.addrs) {
                self.autoconf_request(req, &frame, elapsed);
                return;
            }
        }
        self.prime_slaac_neighbor(&class, elapsed);
        let stats = &self.link.stats;
        let v = gateway::verdict(&class, &self.addrs);
        match v {
            Verdict::Smoltcp => {
                // An ARP or NDP answer may be what an inbound connect waits for (smoltcp
                // holds its SYN until the guest's MAC is known): look at those flows again
                // right after this frame instead of at their 1 s retry.
                self.poll_smoltcp(Some(frame), smol_now(elapsed));
                self.tcp.wake_inbound();
                return;
            }
            Verdict::Tcp { src, dst, flags } => {
                let mut host = self.host.cx(elapsed);
                match self.tcp.on_frame(src, dst, flags, &self.addrs, &mut host) {
                    Ok(key) => {
                        let mut port = self.guest.port(smol_now(elapsed));
                        self.tcp.ingress(key, frame, &mut self.iface, &mut port);
                        return;
                    }
                    Err(tcp::NoFlow::Shed) => return,
                    Err(tcp::NoFlow::Reset) => {}
                }
            }
            Verdict::Udp { src, dst, payload } => {
                let mut host = self.host.cx(elapsed);
                let data = &frame.bytes()[payload];
                if dst.port() == 53 && self.addrs.is_gateway(dst.ip()) {
                    let mut port = self.guest.port(smol_now(elapsed));
                    self.dns
                        .query_udp(src, dst, data, &mut host, &mut port, &self.addrs);
                    return;
                }
                if self.udp.on_datagram(src, dst, data, &self.addrs, &mut host)
                    == Err(udp::Refused::Denied)
                {
                    self.prohibited(&frame, src.ip(), elapsed);
                }
                return;
            }
            Verdict::Echo {
                src,
                dst,
                ident,
                msg,
            } => {
                let mut host = self.host.cx(elapsed);
                let data = &frame.bytes()[msg];
                if self.udp.on_echo((src, dst, ident), data, &mut host) == Err(udp::Refused::Denied)
                {
                    self.prohibited(&frame, src, elapsed);
                }
                return;
            }
            Verdict::Drop(why) => {
                Stats::inc(match why {
                    gateway::Drop::Arp => &stats.arp_filtered,
                    gateway::Drop::Ndp => &stats.ndp_filtered,
                    gateway::Drop::Unsupported => &stats.unsupported,
                    gateway::Drop::NeighSpoofed => &stats.neigh_spoofed,
                });
                return;
            }
        }
        self.poll_smoltcp(Some(frame), smol_now(elapsed));
    }

    /// A published port's listener is readable: take up to `ACCEPT_BATCH` clients or
    /// datagrams.
    fn on_listener(&mut self, key: Key, elapsed: Duration) {
        let Some(spec) = self.ports.get(key).map(|p| p.spec.clone()) else {
            return;
        };
        for _ in 0..inbound::ACCEPT_BATCH {
            let Some(p) = self.ports.get(key) else { return };
            let stats = &self.link.stats;
            match spec.protocol {
                crate::config::PortProto::Tcp => match p.listener.accept() {
                    Ok(Some(client)) => self.accept_tcp(&spec, client, elapsed),
                    Ok(None) => return,
                    Err(e) => {
                        Stats::inc(&stats.inbound_accept_failed);
                        tracing::debug!(port = %spec, error = %e, "accept failed");
                        return;
                    }
                },
                crate::config::PortProto::Udp => {
                    if self.udp_buf.is_empty() {
                        self.udp_buf = vec![0; 65536];
                    }
                    match p.listener.recv_from(&mut self.udp_buf) {
                        Ok(Some((n, peer))) => self.accept_udp(key, &spec, (n, peer), elapsed),
                        Ok(None) => return,
                        Err(e) => {
                            Stats::inc(&stats.inbound_accept_failed);
                            tracing::debug!(port = %spec, error = %e, "recvfrom failed");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A host client of published TCP port `spec`.
    fn accept_tcp(
        &mut self,
        spec: &crate::config::PortSpec,
        (fd, peer): (std::os::fd::OwnedFd, SocketAddr),
        elapsed: Duration,
    ) {
        use crate::egress::listen::Listener;
        let Some((guest, mut client)) = inbound::client_side(spec, peer, &self.addrs) else {
            Listener::reject(fd);
            return;
        };
        let host = self.host.cx(elapsed);
        if !host
            .guard
            .admit_ingress(crate::policy::Proto::Tcp, peer, spec.guest())
        {
            Listener::reject(fd);
            return;
        }
        // Clients shown as the gateway may share a port: pick another one that is free.
        let mut tries = 0u16;
        while self.tcp.has_tuple(guest, client) && tries < 64 {
            tries += 1;
            client.set_port(inbound::alt_port(peer.port(), tries));
        }
        self.prime_neighbor(guest.ip(), elapsed);
        let mut host = self.host.cx(elapsed);
        match self
            .tcp
            .inbound((fd, peer), guest, client, &mut self.iface, &mut host)
        {
            Ok(()) => {}
            Err(Some(fd)) => {
                Stats::inc(&host.stats.inbound_refused_limit);
                tracing::debug!(%peer, port = %spec, "inbound client refused: at the limit");
                Listener::reject(fd);
            }
            Err(None) => {}
        }
    }

    /// Tell smoltcp the guest's MAC for `guest` (the guest's address of one family) before
    /// it connects there: a synthetic ARP reply or neighbour advertisement from the guest.
    fn prime_neighbor(&mut self, guest: IpAddr, elapsed: Duration) {
        use crate::wire::neigh::{emit_guest_arp_reply, emit_guest_neighbor_advert};
        let a = self.addrs;
        let Some(mut frame) = self.link.pool.lease() else {
            return; // discovery then takes its usual course
        };
        let buf = frame.capacity_mut();
        let n = match (guest, a.gw4, a.gw6) {
            (IpAddr::V4(g), Some(gw), _) => {
                emit_guest_arp_reply(buf, (a.guest_mac, g), (a.gw_mac, gw)).ok()
            }
            (IpAddr::V6(g), _, Some(gw)) => {
                emit_guest_neighbor_advert(buf, (a.guest_mac, g), (a.gw_mac, gw)).ok()
            }
            _ => None,
        };
        if let Some(n) = n {
            frame.set_len(n);
            self.poll_smoltcp(Some(frame), smol_now(elapsed));
        }
    }

    /// A datagram of `peer` on published UDP port `key` (its bytes in `udp_buf`).
    fn accept_udp(
        &mut self,
        key: Key,
        spec: &crate::config::PortSpec,
        (n, peer): (usize, SocketAddr),
        elapsed: Duration,
    ) {
        let Some((guest, mut client)) = inbound::client_side(spec, peer, &self.addrs) else {
            return;
        };
        // Peers shown as the gateway may share a port (two loopback addresses): the same
        // sequence of other ports as for TCP finds this peer's own mapping or a free one.
        let mut tries = 0u16;
        let mut known = self.udp.mapped(guest, client);
        while known.is_some_and(|p| p != Some(peer)) && tries < 64 {
            tries += 1;
            client.set_port(inbound::alt_port(peer.port(), tries));
            known = self.udp.mapped(guest, client);
        }
        let mut host = self.host.cx(elapsed);
        if known.is_none()
            && !host
                .guard
                .admit_ingress(crate::policy::Proto::Udp, peer, spec.guest())
        {
            return;
        }
        let Some(p) = self.ports.get(key) else { return };
        let listener = &p.listener;
        let mut port = self.guest.port(smol_now(elapsed));
        self.udp.inbound(
            (key, peer),
            (guest, client),
            &self.udp_buf[..n],
            || listener.peer_socket(peer),
            &mut host,
            &mut port,
            &self.addrs,
        );
    }

    /// Tell the guest its packet in `frame` was refused by the policy: ICMP destination
    /// unreachable, administratively prohibited, from the gateway of its family.
    fn prohibited(&mut self, frame: &Frame, guest: IpAddr, elapsed: Duration) {
        let gw: Option<IpAddr> = match guest {
            IpAddr::V4(_) => self.addrs.gw4.map(Into::into),
            IpAddr::V6(_) => self.addrs.gw6.map(Into::into),
        };
        let (Some(gw), Some(ip)) = (gw, frame.bytes().get(14..)) else {
            return;
        };
        let (gw_mac, guest_mac) = (self.addrs.gw_mac, self.addrs.guest_mac);
        let mut port = self.guest.port(smol_now(elapsed));
        port.emit(self.addrs.mtu + 14, |buf| {
            crate::wire::classify::emit_icmp_prohibited(buf, gw_mac, guest_mac, gw, guest, ip).ok()
        });
    }

    /// One smoltcp pass over the gateway's own (socketless) set: with `rx`, process exactly
    /// that frame (ARP, NDP, echo to the gateway, or TCP without a flow, answered by RST);
    /// without, run the interface's timers and egress.
    fn poll_smoltcp(&mut self, rx: Option<Frame>, now: SmolInstant) {
        let ingress = rx.is_some();
        let mut port = self.guest.port(now);
        let mut dev = port.device(rx);
        if ingress {
            // A frame smoltcp did not take drops with `dev`, returning its slot.
            self.iface
                .poll_ingress_single(now, &mut dev, &mut self.sockets);
        } else {
            self.iface.poll(now, &mut dev, &mut self.sockets);
        }
    }

    /// Interface egress, due flow timers, then relay bytes and egress for every flow that
    /// was touched.
    fn egress_and_service(&mut self) {
        let elapsed = self.clock.elapsed();
        let now = smol_now(elapsed);
        self.poll_smoltcp(None, now);
        self.tcp.due_timers(now);
        self.tcp.service_dirty(
            &mut self.iface,
            &mut self.guest.port(now),
            &mut self.host.cx(elapsed),
        );
        if self.dns_tcp_work(elapsed) {
            self.tcp.service_dirty(
                &mut self.iface,
                &mut self.guest.port(now),
                &mut self.host.cx(elapsed),
            );
        }
    }

    /// The link has been idle for `egress.idle_trim_ms`: give memory back (module docs,
    /// step 5). Flows, sockets and frames in flight are untouched.
    fn trim_memory(&mut self) {
        let spares = self.tcp.drop_spares();
        let driver = self.host.driver.trim();
        let pool = self.link.pool.trim();
        let heap = crate::mem::trim_heap();
        self.idle.done();
        let stats = &self.link.stats;
        Stats::inc(&stats.idle_trims);
        stats
            .idle_trim_pool_bytes
            .fetch_add(pool as u64, Ordering::Relaxed);
        tracing::debug!(
            pool_bytes = pool,
            tcp_spare_sockets = spares,
            driver_spare_bytes = driver,
            heap,
            "idle: memory given back"
        );
    }

    fn teardown(&mut self) {
        self.tcp.close_all(&mut *self.host.driver);
        self.udp.close_all(&mut *self.host.driver);
        self.dns.close_all(&mut *self.host.driver);
        self.ports.close_all(&mut *self.host.driver);
        self.link.from_guest.clear();
    }
}

/// An event that is traffic for the idle trim: anything but the poll thread's own wake-up
/// fds (the guest's frames are counted when they are taken from `from_guest`; the stop fd
/// carries control requests).
fn is_traffic(ev: &Event) -> bool {
    match ev {
        Event::Wake { token } => Key::unpack(token.0).0 != T_WAKE,
        _ => true,
    }
}

fn smol_now(elapsed: Duration) -> SmolInstant {
    // i64 microseconds cover 292,000 years of uptime.
    #[allow(clippy::cast_possible_truncation)]
    SmolInstant::from_micros(elapsed.as_micros() as i64)
}
