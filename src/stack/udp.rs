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
//! - A flow whose host socket cannot be opened is not created (`udp_open_failed`; its
//!   datagram is dropped); running out of file descriptors is also counted and warned about
//!   ([`limits::note_open_failure`]). The next datagram of that flow tries again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::limits::{self, FdWarn};
use super::{alloc_slot, token, Addrs, Port, T_UDP};
use crate::config::SlotConfig;
use crate::egress::{Driver, Event, SockId, SockKind};
use crate::metrics::Stats;
use crate::wire::classify::{
    emit_icmp_echo_reply, emit_udp, icmp_payload_offset, udp_payload_offset,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Udp(SocketAddr, SocketAddr),
    Echo(IpAddr, IpAddr, u16),
}

#[derive(Debug)]
struct Flow {
    key: Key,
    sock: SockId,
    gen: u32,
    last: Duration,
}

/// The UDP / echo flow table.
pub struct Flows {
    slab: Vec<Option<Flow>>,
    free: Vec<u32>,
    map: HashMap<Key, u32>,
    next_gen: u32,
    max: usize,
    idle: Duration,
    next_sweep: Duration,
}

impl Flows {
    pub fn new(cfg: &SlotConfig) -> Flows {
        Flows {
            slab: Vec::new(),
            free: Vec::new(),
            map: HashMap::new(),
            next_gen: 1,
            max: cfg.egress.max_udp_flows,
            idle: Duration::from_millis(cfg.egress.udp_idle_timeout_ms),
            next_sweep: Duration::ZERO,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn lookup_or_open(
        &mut self,
        key: Key,
        kind: SockKind,
        target: SocketAddr,
        driver: &mut dyn Driver,
        stats: &Stats,
        fd_warn: &mut FdWarn,
        now: Duration,
    ) -> Option<SockId> {
        if let Some(&idx) = self.map.get(&key) {
            let flow = self.slab[idx as usize].as_mut()?;
            flow.last = now;
            return Some(flow.sock);
        }
        if self.map.len() >= self.max {
            self.evict_oldest(driver, stats);
        }
        let (idx, gen) = alloc_slot(&mut self.slab, &mut self.free, &mut self.next_gen);
        match driver.open(kind, target, Duration::ZERO, token(T_UDP, gen, idx)) {
            Ok(sock) => {
                self.slab[idx as usize] = Some(Flow {
                    key,
                    sock,
                    gen,
                    last: now,
                });
                self.map.insert(key, idx);
                Stats::inc(&stats.udp_opened);
                stats
                    .udp_active
                    .store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Some(sock)
            }
            Err(e) => {
                Stats::inc(&stats.udp_open_failed);
                if !limits::note_open_failure(stats, fd_warn, &e, now) {
                    tracing::debug!(%target, error = %e, "host datagram socket failed");
                }
                self.free.push(idx);
                None
            }
        }
    }

    fn remove(&mut self, idx: u32, driver: &mut dyn Driver, stats: &Stats) {
        if let Some(flow) = self.slab.get_mut(idx as usize).and_then(Option::take) {
            driver.close(flow.sock, false);
            self.map.remove(&flow.key);
            self.free.push(idx);
            stats
                .udp_active
                .store(self.map.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn evict_oldest(&mut self, driver: &mut dyn Driver, stats: &Stats) {
        let oldest = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().map(|f| (f.last, i as u32)))
            .min();
        if let Some((_, idx)) = oldest {
            self.remove(idx, driver, stats);
            Stats::inc(&stats.udp_evicted);
        }
    }

    /// A UDP datagram from the guest.
    #[allow(clippy::too_many_arguments)]
    pub fn on_datagram(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        addrs: &Addrs,
        driver: &mut dyn Driver,
        stats: &Stats,
        fd_warn: &mut FdWarn,
        now: Duration,
    ) {
        let (target, _) = addrs.host_target(dst);
        let Some(sock) = self.lookup_or_open(
            Key::Udp(src, dst),
            SockKind::Udp,
            target,
            driver,
            stats,
            fd_warn,
            now,
        ) else {
            Stats::inc(&stats.udp_dropped);
            return;
        };
        if driver.send(sock, payload) == 0 && !payload.is_empty() {
            Stats::inc(&stats.udp_dropped);
        }
    }

    /// An ICMP echo request from the guest to a non-gateway address; `msg` is the whole ICMP
    /// message (header and data).
    #[allow(clippy::too_many_arguments)]
    pub fn on_echo(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        msg: &[u8],
        driver: &mut dyn Driver,
        stats: &Stats,
        fd_warn: &mut FdWarn,
        now: Duration,
    ) {
        let target = SocketAddr::new(dst, 0);
        let Some(sock) = self.lookup_or_open(
            Key::Echo(src, dst, ident),
            SockKind::Ping,
            target,
            driver,
            stats,
            fd_warn,
            now,
        ) else {
            Stats::inc(&stats.icmp_dropped);
            return;
        };
        if msg.len() < 8 || driver.send(sock, msg) == 0 {
            Stats::inc(&stats.icmp_dropped);
        } else {
            Stats::inc(&stats.icmp_relayed);
        }
    }

    /// A driver event for flow `idx`: read every datagram into a frame for the guest.
    #[allow(clippy::too_many_arguments)]
    pub fn on_event(
        &mut self,
        gen: u32,
        idx: u32,
        ev: Event,
        driver: &mut dyn Driver,
        out: &mut Port<'_>,
        addrs: &Addrs,
        now: Duration,
    ) {
        if !matches!(ev, Event::Readable { .. }) {
            return;
        }
        let Some(Some(flow)) = self.slab.get_mut(idx as usize) else {
            return;
        };
        if flow.gen != gen {
            return;
        }
        flow.last = now;
        let (key, sock) = (flow.key, flow.sock);
        let (gw_mac, guest_mac) = (addrs.gw_mac, addrs.guest_mac);
        let max_len = addrs.mtu + 14;
        loop {
            let mut got = false;
            let r = driver.recv(sock, &mut |d| {
                got = true;
                match key {
                    Key::Udp(guest, dst) => {
                        let off = udp_payload_offset(dst.is_ipv6());
                        out.emit(max_len, |buf| {
                            let room = buf.len().checked_sub(off)?;
                            if d.len() > room {
                                return None;
                            }
                            buf[off..off + d.len()].copy_from_slice(d);
                            emit_udp(buf, gw_mac, guest_mac, dst, guest, d.len()).ok()
                        });
                    }
                    Key::Echo(guest, dst, ident) => {
                        if d.len() >= 8 {
                            let seq = u16::from_be_bytes([d[6], d[7]]);
                            let data = &d[8..];
                            let off = icmp_payload_offset(dst.is_ipv6());
                            out.emit(max_len, |buf| {
                                let room = buf.len().checked_sub(off)?;
                                if data.len() > room {
                                    return None;
                                }
                                buf[off..off + data.len()].copy_from_slice(data);
                                emit_icmp_echo_reply(
                                    buf,
                                    gw_mac,
                                    guest_mac,
                                    dst,
                                    guest,
                                    ident,
                                    seq,
                                    data.len(),
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
    }

    /// How long until the next idle sweep is due (None without flows).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        if self.map.is_empty() {
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
    pub fn expire(&mut self, now: Duration, driver: &mut dyn Driver, stats: &Stats) {
        if now < self.next_sweep || self.map.is_empty() {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1).min(self.idle);
        let idle: Vec<u32> = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                f.as_ref()
                    .filter(|f| now.saturating_sub(f.last) >= self.idle)
                    .map(|_| i as u32)
            })
            .collect();
        for idx in idle {
            self.remove(idx, driver, stats);
            Stats::inc(&stats.udp_expired);
        }
    }

    /// Shutdown: close every socket.
    pub fn close_all(&mut self, driver: &mut dyn Driver) {
        for flow in self.slab.iter_mut().filter_map(Option::take) {
            driver.close(flow.sock, false);
        }
        self.map.clear();
    }
}
