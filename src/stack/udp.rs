//! UDP and ICMP echo flows, relayed outside smoltcp.
//!
//! # Theory of operation
//!
//! - `from_guest`: a datagram from guest `src` to `dst` finds (or opens) the flow keyed by
//!   `(src, dst)`, whose host socket is a UDP socket connected to `dst` (a gateway address
//!   maps to host loopback), and is queued on it. An echo request to a non-gateway address
//!   finds (or opens) the flow keyed by `(guest ip, dst ip, identifier)`, whose host socket
//!   is an unprivileged ping socket; the kernel picks its own identifier.
//! - `to_guest`: each datagram read from a flow's socket becomes one frame built straight
//!   into a pool slot, from the address and port the guest sent to (for echo: the guest's
//!   identifier restored). Replies larger than the guest MTU are dropped and counted.
//! - Limits: `max_udp_flows` flows; at the limit the least recently used flow is evicted.
//!   Flows idle for `udp_idle_timeout_ms` are closed. Every drop is counted.
//! - A new flow is admitted by the policy first ([`super::guard::Guard::admit`]); a denied
//!   datagram is dropped and the caller answers with ICMP "administratively prohibited".
//!   Flows a new policy denies are closed ([`Flows::revoke`]).
//! - A flow whose host socket cannot be opened is not created (`udp_open_failed`; its
//!   datagram is dropped); running out of file descriptors is also counted and warned about
//!   ([`limits::note_open_failure`]). The next datagram of that flow tries again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Addrs, Host, Port, T_UDP};
use crate::config::SlotConfig;
use crate::egress::{Event, SockId, SockKind, Token};
use crate::metrics::Stats;
use crate::policy::Proto;
use crate::slab::{Key, Slab};
use crate::wire::classify::{
    emit_icmp_echo_reply, emit_udp, icmp_payload_offset, udp_payload_offset,
};

/// Why a datagram found no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The policy denies the flow (counted by the guard).
    Denied,
    /// The host socket could not be opened or the table is full (counted here).
    Failed,
}

/// What a flow relays: UDP between two endpoints, or ICMP echo with one identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    Udp(SocketAddr, SocketAddr),
    Echo(IpAddr, IpAddr, u16),
}

#[derive(Debug)]
struct Flow {
    peer: Peer,
    /// The names the guest had resolved to the destination, when a domain rule admitted
    /// the flow (for re-checking it under a new policy).
    names: Vec<Box<str>>,
    /// The published port whose host peer this flow serves (inbound flows only).
    published: Option<Key>,
    /// That host peer (inbound flows only).
    host_peer: Option<SocketAddr>,
    /// Set right after the open that needs the flow's key for its token.
    sock: Option<SockId>,
    last: Duration,
    /// Observation ([`crate::observe::flows`]): creation time, payload bytes each way, the
    /// rule that admitted it.
    created: Duration,
    from_guest_bytes: u64,
    to_guest_bytes: u64,
    rule: Option<std::sync::Arc<str>>,
}

/// The UDP / echo flow table.
pub struct Flows {
    slab: Slab<Flow>,
    map: HashMap<Peer, Key>,
    /// Mapped peers per published port.
    peers: HashMap<Key, usize>,
    max_peers: usize,
    idle: Duration,
    next_sweep: Duration,
    /// Evictions allowed at a full table (`egress.evictions_per_sec`).
    evict_budget: super::limits::Budget,
    /// Host sockets allowed to fail opening (`egress.failed_connects_per_sec`): a failed
    /// open keeps no flow, so without it every datagram to such a destination would try
    /// again (socket, connect, close).
    fail_budget: super::limits::Budget,
}

impl Flows {
    pub fn new(cfg: &SlotConfig) -> Flows {
        Flows {
            slab: Slab::new(cfg.egress.max_udp_flows),
            map: HashMap::new(),
            peers: HashMap::new(),
            max_peers: cfg.max_udp_peers.max(1),
            idle: Duration::from_millis(cfg.egress.udp_idle_timeout_ms),
            next_sweep: Duration::ZERO,
            evict_budget: super::limits::Budget::new(cfg.egress.evictions_per_sec),
            fail_budget: super::limits::Budget::new(cfg.egress.failed_connects_per_sec),
        }
    }

    /// The flow's socket; a new flow is admitted by the policy first.
    fn lookup_or_open(
        &mut self,
        peer: Peer,
        kind: SockKind,
        target: SocketAddr,
        host: &mut Host<'_>,
    ) -> Result<(SockId, Key), Refused> {
        if let Some(&key) = self.map.get(&peer) {
            let flow = self.slab.get_mut(key).ok_or(Refused::Failed)?;
            flow.last = host.elapsed;
            return flow.sock.map(|s| (s, key)).ok_or(Refused::Failed);
        }
        let (proto, src, dst) = match peer {
            Peer::Udp(src, dst) => (Proto::Udp, src.ip(), dst),
            Peer::Echo(src, dst, _) => (Proto::Icmp, src, SocketAddr::new(dst, 0)),
        };
        let admission = host.guard.admit(proto, src, dst).ok_or(Refused::Denied)?;
        // Spent by the open below and given back when it succeeds: while opens keep
        // failing, new destinations are shed.
        if !self.fail_budget.take(host.elapsed) {
            Stats::inc(&host.stats.udp_flow_shed);
            return Err(Refused::Failed);
        }
        // The sweep of idle flows is lazy: a full table first gives up its oldest, within
        // the eviction budget (a flood of new destinations sheds instead).
        if self.slab.len() >= self.slab.max() {
            if !self.evict_budget.take(host.elapsed) {
                self.fail_budget.give_back();
                Stats::inc(&host.stats.udp_flow_shed);
                return Err(Refused::Failed);
            }
            self.evict_oldest(host);
        }
        let flow = Flow {
            peer,
            names: admission.names,
            published: None,
            host_peer: None,
            sock: None,
            last: host.elapsed,
            created: host.elapsed,
            from_guest_bytes: 0,
            to_guest_bytes: 0,
            rule: admission.rule,
        };
        let key = self.slab.insert(flow).ok_or(Refused::Failed)?;
        match host
            .driver
            .open(kind, target, Duration::ZERO, Token(key.pack(T_UDP)))
        {
            Ok(sock) => {
                self.fail_budget.give_back();
                if let Some(flow) = self.slab.get_mut(key) {
                    flow.sock = Some(sock);
                }
                self.map.insert(peer, key);
                Stats::inc(&host.stats.udp_opened);
                self.publish(host.stats);
                Ok((sock, key))
            }
            Err(e) => {
                self.slab.remove(key);
                Stats::inc(&host.stats.udp_open_failed);
                if !host.open_failed(&e) {
                    tracing::debug!(%target, error = %e, "host datagram socket failed");
                }
                Err(Refused::Failed)
            }
        }
    }

    fn publish(&self, stats: &Stats) {
        stats
            .udp_active
            .store(self.slab.len() as u64, Ordering::Relaxed);
    }

    fn remove(&mut self, key: Key, host: &mut Host<'_>) {
        if let Some(flow) = self.slab.remove(key) {
            if let Some(sock) = flow.sock {
                host.driver.close(sock, false);
            }
            if let Some(port) = flow.published {
                if let Some(n) = self.peers.get_mut(&port) {
                    *n -= 1;
                    if *n == 0 {
                        self.peers.remove(&port);
                    }
                }
            }
            self.map.remove(&flow.peer);
            self.publish(host.stats);
        }
    }

    fn evict_oldest(&mut self, host: &mut Host<'_>) {
        let oldest = self.slab.iter().map(|(k, f)| (f.last, k)).min();
        if let Some((_, key)) = oldest {
            self.remove(key, host);
            Stats::inc(&host.stats.udp_evicted);
        }
    }

    /// A UDP datagram from the guest. `Err(Refused::Denied)`: the policy refused it (the
    /// caller tells the guest).
    pub fn on_datagram(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        addrs: &Addrs,
        host: &mut Host<'_>,
    ) -> Result<(), Refused> {
        if host.intercept.is_some_and(|i| i.intercepts(dst.port())) {
            // QUIC to an intercepted port: refused (like a denial), so the client falls back
            // to TCP, where its TLS is intercepted.
            Stats::inc(&host.stats.tls_quic_blocked);
            return Err(Refused::Denied);
        }
        let (target, _) = addrs.host_target(dst);
        let peer = Peer::Udp(src, dst);
        let (sock, key) = match self.lookup_or_open(peer, SockKind::Udp, target, host) {
            Ok(s) => s,
            Err(r) => {
                if r == Refused::Failed {
                    Stats::inc(&host.stats.udp_dropped);
                }
                return Err(r);
            }
        };
        if host.driver.send(sock, payload) == 0 && !payload.is_empty() {
            Stats::inc(&host.stats.udp_dropped);
        } else {
            self.count(key, payload.len(), 0);
        }
        Ok(())
    }

    /// An ICMP echo request from the guest to a non-gateway address; `msg` is the whole ICMP
    /// message (header and data).
    pub fn on_echo(
        &mut self,
        (src, dst, ident): (IpAddr, IpAddr, u16),
        msg: &[u8],
        host: &mut Host<'_>,
    ) -> Result<(), Refused> {
        let target = SocketAddr::new(dst, 0);
        let peer = Peer::Echo(src, dst, ident);
        let (sock, key) = match self.lookup_or_open(peer, SockKind::Ping, target, host) {
            Ok(s) => s,
            Err(r) => {
                if r == Refused::Failed {
                    Stats::inc(&host.stats.icmp_dropped);
                }
                return Err(r);
            }
        };
        if msg.len() < 8 || host.driver.send(sock, msg) == 0 {
            Stats::inc(&host.stats.icmp_dropped);
        } else {
            Stats::inc(&host.stats.icmp_relayed);
            self.count(key, msg.len(), 0);
        }
        Ok(())
    }

    /// The host peer `client` (as the guest sees it) is mapped to at `guest`, if any
    /// (`None` inside for a guest-initiated flow on that 4-tuple).
    pub fn mapped(&self, guest: SocketAddr, client: SocketAddr) -> Option<Option<SocketAddr>> {
        let key = self.map.get(&Peer::Udp(guest, client))?;
        Some(self.slab.get(*key).and_then(|f| f.host_peer))
    }

    /// A datagram from `peer`, a host peer of published port `port` (taken from its
    /// listener): to the guest at `guest`, seen from `client`. A new peer (admitted by the
    /// caller) gets its own socket from `make_socket` and a flow; at `max_udp_peers` the
    /// port's oldest peer is evicted.
    #[allow(clippy::too_many_arguments)]
    pub fn inbound(
        &mut self,
        (port, peer): (Key, SocketAddr),
        (guest, client): (SocketAddr, SocketAddr),
        data: &[u8],
        make_socket: impl FnOnce() -> std::io::Result<std::os::fd::OwnedFd>,
        host: &mut Host<'_>,
        out: &mut Port<'_>,
        addrs: &Addrs,
    ) {
        let p = Peer::Udp(guest, client);
        let key = if let Some(&key) = self.map.get(&p) {
            if let Some(f) = self.slab.get_mut(key) {
                f.last = host.elapsed;
            }
            key
        } else {
            if self.peers.get(&port).copied().unwrap_or(0) >= self.max_peers {
                let oldest = self
                    .slab
                    .iter()
                    .filter(|(_, f)| f.published == Some(port))
                    .map(|(k, f)| (f.last, k))
                    .min();
                if let Some((_, k)) = oldest {
                    self.remove(k, host);
                    Stats::inc(&host.stats.udp_inbound_evicted);
                }
            }
            if self.slab.len() >= self.slab.max() {
                self.evict_oldest(host);
            }
            let flow = Flow {
                peer: p,
                names: Vec::new(),
                published: Some(port),
                host_peer: Some(peer),
                sock: None,
                last: host.elapsed,
                created: host.elapsed,
                from_guest_bytes: 0,
                to_guest_bytes: 0,
                rule: Some(crate::observe::flows::PUBLISHED_PORT.into()),
            };
            let Some(key) = self.slab.insert(flow) else {
                Stats::inc(&host.stats.udp_dropped);
                return;
            };
            let token = Token(key.pack(T_UDP));
            let adopted = make_socket()
                .map_err(|e| crate::egress::EgressError::Socket {
                    kind: SockKind::Udp,
                    remote: peer,
                    source: e,
                })
                .and_then(|fd| host.driver.adopt(fd, SockKind::Udp, peer, token));
            match adopted {
                Ok(sock) => {
                    if let Some(f) = self.slab.get_mut(key) {
                        f.sock = Some(sock);
                    }
                    self.map.insert(p, key);
                    *self.peers.entry(port).or_default() += 1;
                    Stats::inc(&host.stats.udp_inbound_peers);
                    self.publish(host.stats);
                }
                Err(e) => {
                    self.slab.remove(key);
                    Stats::inc(&host.stats.udp_open_failed);
                    Stats::inc(&host.stats.udp_dropped);
                    if !host.open_failed(&e) {
                        tracing::debug!(%peer, error = %e, "socket for a published UDP peer failed");
                    }
                    return;
                }
            }
            key
        };
        self.count(key, 0, data.len());
        let (gw_mac, guest_mac) = (addrs.gw_mac, addrs.guest_mac);
        let off = udp_payload_offset(client.is_ipv6());
        emit_after(out, addrs.mtu + 14, off, data, |buf| {
            emit_udp(buf, gw_mac, guest_mac, client, guest, data.len()).ok()
        });
    }

    /// Close the flows a new policy denies; returns how many.
    pub fn revoke(&mut self, host: &mut Host<'_>) -> usize {
        let denied: Vec<Key> = self
            .slab
            .iter()
            .filter(|(_, f)| f.published.is_none())
            .filter(|(_, f)| {
                let (proto, dst) = match f.peer {
                    Peer::Udp(_, dst) => (Proto::Udp, dst),
                    Peer::Echo(_, dst, _) => (Proto::Icmp, SocketAddr::new(dst, 0)),
                };
                !host.guard.recheck(proto, dst, &f.names)
            })
            .map(|(k, _)| k)
            .collect();
        for &key in &denied {
            self.remove(key, host);
        }
        denied.len()
    }

    /// A driver event for flow `key`: read every datagram into a frame for the guest.
    pub fn on_event(
        &mut self,
        key: Key,
        ev: Event,
        host: &mut Host<'_>,
        out: &mut Port<'_>,
        addrs: &Addrs,
    ) {
        if !matches!(ev, Event::Readable { .. }) {
            return;
        }
        let Some(flow) = self.slab.get_mut(key) else {
            return;
        };
        flow.last = host.elapsed;
        let Some(sock) = flow.sock else { return };
        let peer = flow.peer;
        let (gw_mac, guest_mac) = (addrs.gw_mac, addrs.guest_mac);
        let max_len = addrs.mtu + 14;
        let mut bytes = 0u64;
        loop {
            let mut got = false;
            let r = host.driver.recv(sock, &mut |d| {
                got = true;
                bytes += d.len() as u64;
                match peer {
                    Peer::Udp(guest, dst) => {
                        let off = udp_payload_offset(dst.is_ipv6());
                        emit_after(out, max_len, off, d, |buf| {
                            emit_udp(buf, gw_mac, guest_mac, dst, guest, d.len()).ok()
                        });
                    }
                    Peer::Echo(guest, dst, ident) => {
                        if d.len() >= 8 {
                            let seq = u16::from_be_bytes([d[6], d[7]]);
                            let data = &d[8..];
                            let off = icmp_payload_offset(dst.is_ipv6());
                            emit_after(out, max_len, off, data, |buf| {
                                let (src, n) = (dst, data.len());
                                emit_icmp_echo_reply(
                                    buf, gw_mac, guest_mac, src, guest, ident, seq, n,
                                )
                                .ok()
                            });
                        }
                    }
                }
                1
            });
            if r.is_err() || !got {
                break;
            }
        }
        if let Some(flow) = self.slab.get_mut(key) {
            flow.to_guest_bytes += bytes;
        }
    }

    /// How long until the next idle sweep is due (None without flows).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        if self.slab.is_empty() {
            None
        } else {
            Some(
                self.next_sweep
                    .saturating_sub(now)
                    .max(Duration::from_millis(1)),
            )
        }
    }

    /// Close flows idle for longer than the idle timeout (checked about once a second).
    pub fn expire(&mut self, host: &mut Host<'_>) {
        let now = host.elapsed;
        if now < self.next_sweep || self.slab.is_empty() {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1).min(self.idle);
        let idle: Vec<Key> = self
            .slab
            .iter()
            .filter(|(_, f)| now.saturating_sub(f.last) >= self.idle)
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            self.remove(key, host);
            Stats::inc(&host.stats.udp_expired);
        }
    }

    /// Flows open now.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Shutdown: close every socket.
    pub fn close_all(&mut self, driver: &mut dyn crate::egress::Driver) {
        for sock in self.slab.drain().filter_map(|f| f.sock) {
            driver.close(sock, false);
        }
        self.map.clear();
    }
}

#[path = "udp_observe.rs"]
mod observe;

/// Queue a frame to the guest whose payload `data` sits at `off`, headers written in front
/// by `headers` (which returns the frame length); dropped and counted when it does not fit.
pub(super) fn emit_after(
    out: &mut Port<'_>,
    max_len: usize,
    off: usize,
    data: &[u8],
    headers: impl FnOnce(&mut [u8]) -> Option<usize>,
) {
    out.emit(max_len, |buf| {
        let room = buf.len().checked_sub(off)?;
        if data.len() > room {
            return None;
        }
        buf[off..off + data.len()].copy_from_slice(data);
        headers(buf)
    });
}
