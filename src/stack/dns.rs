//! The DNS service's sockets: guest queries in, upstream tries out, answers back.
//!
//! # Theory of operation
//!
//! The resolver ([`crate::dns::Resolver`]) decides; this module carries its [`Out`]
//! actions over the poll thread's sockets:
//!
//! - `from_guest`: UDP datagrams to a gateway address, port 53, go to
//!   [`DnsService::query_udp`]; TCP connections to it are local flows of the TCP table
//!   whose bytes [`DnsConn`] frames (2-byte length prefix) into queries, at most
//!   [`CONN_MAX_PENDING`] in flight per connection (further bytes wait in smoltcp, closing
//!   the guest's window).
//! - `to_host`: one connected UDP socket per upstream server, opened through the egress
//!   driver on first use and kept; a TCP try (after a truncated upstream answer to a TCP
//!   client) opens its own connection, sends the length-prefixed query, reads one answer
//!   and closes. A try whose socket cannot be opened or fails is reported to the resolver
//!   ([`Resolver::failed`]), which tries the next server.
//! - `from_host` → `to_guest`: answers go to the resolver; its replies become a UDP frame
//!   to the guest, or are queued on the guest's TCP connection ([`DnsConn::deliver`],
//!   bounded by [`CONN_OUT_MAX`] bytes; beyond it a reply is dropped and counted).
//!
//! Nothing here blocks: every socket is the driver's, every wait is the poll thread's one
//! wait. Limits: the resolver's `max_pending` bounds tries in flight (and so the TCP tries
//! open at once); upstream answers are at most 64 KiB.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::socket::tcp;

use super::{Addrs, Host, Port, T_DNS, T_DNS_TCP};
use crate::dns::{Client, Exchange, Out, Resolver};
use crate::egress::{Event, Recv, SockId, SockKind, Token};
use crate::metrics::Stats;
use crate::slab::{Key, Slab};
use crate::wire::classify::{emit_udp, udp_payload_offset};

/// Queries one guest TCP connection may have in flight.
pub const CONN_MAX_PENDING: usize = 16;

/// Reply bytes queued for one guest TCP connection, at most.
pub const CONN_OUT_MAX: usize = 256 * 1024;

/// One upstream TCP try.
struct TcpTry {
    exchange: Exchange,
    sock: SockId,
    /// The answer read so far (with its length prefix).
    buf: Vec<u8>,
    /// When the resolver gives up on it (its own timeout); the socket is closed then.
    until: Duration,
}

/// The DNS service's sockets and the resolver.
pub(crate) struct DnsService {
    resolver: Resolver,
    udp: Vec<Option<SockId>>,
    tcp: Slab<TcpTry>,
    out: Vec<Out>,
    /// Replies for guest TCP connections (conn id, message), for the TCP flow table.
    pub tcp_replies: Vec<(u64, Vec<u8>)>,
    connect_timeout: Duration,
    /// Guest queries taken (`dns.queries_per_sec`).
    budget: super::limits::Budget,
}

impl DnsService {
    pub fn new(resolver: Resolver, connect_timeout: Duration, queries_per_sec: u32) -> DnsService {
        let servers = resolver.config().servers.len();
        let max = resolver.config().max_pending;
        DnsService {
            resolver,
            udp: vec![None; servers],
            tcp: Slab::new(max),
            out: Vec::new(),
            tcp_replies: Vec::new(),
            connect_timeout,
            budget: super::limits::Budget::new(queries_per_sec),
        }
    }

    /// A query may be taken now (`dns.queries_per_sec`); else it is counted and dropped.
    fn admit(&mut self, host: &Host<'_>) -> bool {
        if self.budget.take(host.elapsed) {
            return true;
        }
        Stats::inc(&host.stats.dns_shed);
        false
    }

    /// A UDP query from the guest (`dst` is a gateway address, port 53).
    pub fn query_udp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        host: &mut Host<'_>,
        port: &mut Port<'_>,
        addrs: &Addrs,
    ) {
        if !self.admit(host) {
            return;
        }
        let client = Client::Udp {
            guest: src,
            gateway: dst,
        };
        let mut out = std::mem::take(&mut self.out);
        self.resolver.query(
            client,
            payload,
            host.elapsed,
            host.guard,
            host.stats,
            &mut out,
        );
        self.out = out;
        self.flush(host, port, addrs);
    }

    /// A query read from guest TCP connection `conn`; false when the resolver dropped it
    /// (no reply will come).
    pub fn query_tcp(&mut self, conn: u64, msg: &[u8], host: &mut Host<'_>) -> bool {
        if !self.admit(host) {
            return false;
        }
        let before = (self.out.len(), self.resolver.pending());
        let mut out = std::mem::take(&mut self.out);
        self.resolver.query(
            Client::Tcp { conn },
            msg,
            host.elapsed,
            host.guard,
            host.stats,
            &mut out,
        );
        self.out = out;
        (self.out.len(), self.resolver.pending()) != before
    }

    /// The resolver's upstream answer times (published by the poll thread).
    pub fn latency_mut(&mut self) -> &mut crate::observe::latency::Recorder {
        &mut self.resolver.latency
    }

    /// Guest TCP connection `conn` is gone.
    pub fn forget_conn(&mut self, conn: u64) {
        self.resolver.forget_conn(conn);
    }

    /// Carry out the resolver's actions (replies to TCP clients land in `tcp_replies`).
    pub fn flush(&mut self, host: &mut Host<'_>, port: &mut Port<'_>, addrs: &Addrs) {
        // In order (queries go upstream as the guest sent them); failures handled on the
        // way append their next tries for the next round.
        while !self.out.is_empty() {
            for action in std::mem::take(&mut self.out) {
                self.carry_out(action, host, port, addrs);
            }
        }
    }

    fn carry_out(&mut self, action: Out, host: &mut Host<'_>, port: &mut Port<'_>, addrs: &Addrs) {
        match action {
            Out::Reply {
                client: Client::Udp { guest, gateway },
                bytes,
            } => reply_udp(port, addrs, gateway, guest, &bytes),
            Out::Reply {
                client: Client::Tcp { conn },
                bytes,
            } => self.tcp_replies.push((conn, bytes)),
            Out::Udp {
                server,
                exchange,
                query,
            } => {
                if !self.send_udp(server, &query, host) {
                    self.resolver
                        .failed(exchange, host.elapsed, host.stats, &mut self.out);
                }
            }
            Out::Tcp {
                server,
                exchange,
                query,
            } => {
                if !self.open_tcp(server, exchange, &query, host) {
                    self.resolver
                        .failed(exchange, host.elapsed, host.stats, &mut self.out);
                }
            }
        }
    }

    fn server(&self, i: usize) -> Option<SocketAddr> {
        self.resolver.config().servers.get(i).copied()
    }

    fn send_udp(&mut self, server: usize, query: &[u8], host: &mut Host<'_>) -> bool {
        let Some(addr) = self.server(server) else {
            return false;
        };
        let sock = match self.udp.get(server).copied().flatten() {
            Some(s) => s,
            None => {
                let token = Token(Key::fixed(server as u32).pack(T_DNS));
                match host.driver.open(SockKind::Udp, addr, Duration::ZERO, token) {
                    Ok(s) => {
                        self.udp[server] = Some(s);
                        s
                    }
                    Err(e) => {
                        if !host.open_failed(&e) {
                            tracing::debug!(%addr, error = %e, "DNS upstream socket failed");
                        }
                        return false;
                    }
                }
            }
        };
        host.driver.send(sock, query) == query.len()
    }

    fn open_tcp(
        &mut self,
        server: usize,
        exchange: Exchange,
        query: &[u8],
        host: &mut Host<'_>,
    ) -> bool {
        let (Some(addr), Ok(len)) = (self.server(server), u16::try_from(query.len())) else {
            return false;
        };
        let Some(key) = self.tcp.insert(TcpTry {
            exchange,
            sock: SockId(Key::fixed(0)),
            buf: Vec::new(),
            until: host.elapsed + self.resolver.config().timeout,
        }) else {
            return false;
        };
        let token = Token(key.pack(T_DNS_TCP));
        let sock = match host
            .driver
            .open(SockKind::Tcp, addr, self.connect_timeout, token)
        {
            Ok(s) => s,
            Err(e) => {
                self.tcp.remove(key);
                if !host.open_failed(&e) {
                    tracing::debug!(%addr, error = %e, "DNS upstream TCP socket failed");
                }
                return false;
            }
        };
        let mut msg = Vec::with_capacity(2 + query.len());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(query);
        // A new socket's transmit buffer (`tcp_buffer_bytes`) holds any DNS message.
        let sent = host.driver.send(sock, &msg);
        if let Some(t) = self.tcp.get_mut(key) {
            t.sock = sock;
        }
        if sent != msg.len() {
            self.end_tcp(key, host);
            return false;
        }
        true
    }

    fn end_tcp(&mut self, key: Key, host: &mut Host<'_>) -> Option<Exchange> {
        let t = self.tcp.remove(key)?;
        host.driver.close(t.sock, false);
        Some(t.exchange)
    }

    /// A driver event for a DNS socket.
    pub fn on_event(
        &mut self,
        tag: u8,
        key: Key,
        ev: Event,
        host: &mut Host<'_>,
        port: &mut Port<'_>,
        addrs: &Addrs,
    ) {
        if tag == T_DNS {
            self.on_udp_event(key.index() as usize, &ev, host);
        } else {
            self.on_tcp_event(key, &ev, host);
        }
        self.flush(host, port, addrs);
    }

    fn on_udp_event(&mut self, server: usize, ev: &Event, host: &mut Host<'_>) {
        let Some(sock) = self.udp.get(server).copied().flatten() else {
            return;
        };
        if !matches!(ev, Event::Readable { .. }) {
            return;
        }
        let (resolver, out) = (&mut self.resolver, &mut self.out);
        loop {
            let mut got = false;
            let r = host.driver.recv(sock, &mut |d| {
                got = true;
                resolver.udp_answer(server, d, host.elapsed, host.guard, host.stats, out);
                1
            });
            if r.is_err() || !got {
                break;
            }
        }
    }

    fn on_tcp_event(&mut self, key: Key, ev: &Event, host: &mut Host<'_>) {
        let Some(t) = self.tcp.get_mut(key) else {
            return;
        };
        let failed = match ev {
            Event::Connected { result, .. } => result.is_err(),
            Event::Readable { .. } => {
                let sock = t.sock;
                let buf = &mut t.buf;
                let mut failed = false;
                loop {
                    let r = host.driver.recv(sock, &mut |d| {
                        // At most one length-prefixed message: 2 + 65535 bytes.
                        let take = d.len().min(2 + 65535 - buf.len());
                        buf.extend_from_slice(&d[..take]);
                        take
                    });
                    match r {
                        Ok(n) if n > 0 => continue,
                        Ok(_) | Err(Recv::Empty) => break,
                        Err(Recv::Eof | Recv::Error(_)) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let want = buf
                    .get(..2)
                    .map(|l| 2 + usize::from(u16::from_be_bytes([l[0], l[1]])));
                if let Some(want) = want.filter(|&w| buf.len() >= w) {
                    let answer = buf[2..want].to_vec();
                    if let Some(exchange) = self.end_tcp(key, host) {
                        self.resolver.tcp_answer(
                            exchange,
                            &answer,
                            host.elapsed,
                            host.guard,
                            host.stats,
                            &mut self.out,
                        );
                    }
                    return;
                }
                failed
            }
            _ => false,
        };
        if failed {
            if let Some(exchange) = self.end_tcp(key, host) {
                self.resolver
                    .failed(exchange, host.elapsed, host.stats, &mut self.out);
            }
        }
    }

    /// Time until the next upstream try times out.
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        self.resolver.next_deadline(now)
    }

    /// Tries that timed out: the resolver moves on (next server or SERVFAIL), and the TCP
    /// sockets of tries past their time are closed (a late answer would be ignored).
    pub fn expire(&mut self, host: &mut Host<'_>, port: &mut Port<'_>, addrs: &Addrs) {
        let now = host.elapsed;
        if self
            .resolver
            .next_deadline(now)
            .is_some_and(|d| d.is_zero())
        {
            self.resolver.expire(now, host.stats, &mut self.out);
            self.flush(host, port, addrs);
        }
        if !self.tcp.is_empty() {
            let stale: Vec<Key> = self
                .tcp
                .iter()
                .filter(|(_, t)| t.until <= now)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                self.end_tcp(key, host);
            }
        }
    }

    /// Shutdown: close every socket.
    pub fn close_all(&mut self, driver: &mut dyn crate::egress::Driver) {
        for s in self.udp.iter_mut().filter_map(Option::take) {
            driver.close(s, false);
        }
        for t in self.tcp.drain() {
            driver.close(t.sock, true);
        }
    }
}

/// A reply to a UDP query: one frame from `gateway` (port 53) to `guest`.
fn reply_udp(
    port: &mut Port<'_>,
    addrs: &Addrs,
    gateway: SocketAddr,
    guest: SocketAddr,
    msg: &[u8],
) {
    let (gw_mac, guest_mac) = (addrs.gw_mac, addrs.guest_mac);
    let off = udp_payload_offset(gateway.is_ipv6());
    super::udp::emit_after(port, addrs.mtu + 14, off, msg, |buf| {
        emit_udp(buf, gw_mac, guest_mac, gateway, guest, msg.len()).ok()
    });
}

/// A guest TCP connection to the gateway's DNS: length-prefixed queries in, replies out.
#[derive(Debug, Default)]
pub(crate) struct DnsConn {
    /// The message being read (with its length prefix), at most 2 + 65535 bytes.
    inbuf: Vec<u8>,
    /// Replies to write, with their length prefixes.
    outbuf: VecDeque<u8>,
    /// Queries handed to the resolver and not answered yet.
    pending: usize,
}

impl DnsConn {
    /// Read whole queries from the guest (while fewer than [`CONN_MAX_PENDING`] are in
    /// flight) into `queries`, tagged with `conn`.
    pub fn read(&mut self, s: &mut tcp::Socket<'_>, conn: u64, queries: &mut Vec<(u64, Vec<u8>)>) {
        while self.pending < CONN_MAX_PENDING && s.can_recv() {
            let want = match self.inbuf.get(..2) {
                Some(l) => 2 + usize::from(u16::from_be_bytes([l[0], l[1]])),
                None => 2,
            };
            let need = want - self.inbuf.len();
            let inbuf = &mut self.inbuf;
            let got = s
                .recv(|b| {
                    let n = b.len().min(need);
                    inbuf.extend_from_slice(&b[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if got == 0 {
                break;
            }
            if self.inbuf.len() >= 2 && self.inbuf.len() == want && want > 2 {
                let msg = self.inbuf.split_off(2);
                self.inbuf.clear();
                self.pending += 1;
                queries.push((conn, msg));
            } else if want == 2 && self.inbuf.len() == 2 && self.inbuf == [0, 0] {
                // An empty message: nothing to answer.
                self.inbuf.clear();
            }
        }
    }

    /// Queue a reply; false (dropped) when [`CONN_OUT_MAX`] would be exceeded.
    pub fn deliver(&mut self, msg: &[u8], stats: &Stats) -> bool {
        self.pending = self.pending.saturating_sub(1);
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        if self.outbuf.len() + 2 + msg.len() > CONN_OUT_MAX {
            Stats::inc(&stats.dns_dropped);
            return false;
        }
        self.outbuf.extend(len.to_be_bytes());
        self.outbuf.extend(msg);
        true
    }

    /// Write queued replies into the socket's send buffer.
    pub fn write(&mut self, s: &mut tcp::Socket<'_>) {
        while !self.outbuf.is_empty() && s.can_send() {
            let (a, _) = self.outbuf.as_slices();
            let n = s.send_slice(a).unwrap_or(0);
            if n == 0 {
                break;
            }
            self.outbuf.drain(..n);
        }
    }

    /// A query of this connection will not be answered (the resolver dropped it).
    pub fn dropped(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Nothing in flight and nothing left to write.
    pub fn idle(&self) -> bool {
        self.pending == 0 && self.outbuf.is_empty()
    }
}
