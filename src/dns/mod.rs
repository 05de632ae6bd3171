//! The gateway's DNS service (sans-IO).
//!
//! # Theory of operation
//!
//! The caller (the poll thread, `stack::dns`) owns every socket; this module only turns
//! bytes and time into [`Out`] actions. It reads no clock (`now` is the time since start,
//! handed in) and makes no syscall.
//!
//! ## Data flow
//!
//! - `from_guest` ([`Resolver::query`]): a query from a guest, UDP or TCP (without its length
//!   prefix). Fewer than 12 bytes or a response: dropped. Another opcode than QUERY: NOTIMP.
//!   Unparseable or not exactly one question: FORMERR (echoing the raw header's ID, opcode,
//!   RD). Then, in this order: a name the [`Judge`] denies gets NXDOMAIN and never leaves;
//!   a static name (the host alias, [`ResolverConfig::hosts`]) is answered locally (TTL 60,
//!   pinned); an A query with IPv4 inactive (AAAA with IPv6 inactive) gets an empty NOERROR;
//!   anything else goes upstream.
//! - `to_host` ([`Out::Udp`], [`Out::Tcp`]): each try of each server is one [`Exchange`].
//!   The first try is UDP to server 0: the guest's bytes verbatim, only the ID rewritten to
//!   a random one no other UDP try in flight uses. A truncated UDP answer for a TCP guest
//!   is retried over TCP to the same server. A try that times out or fails in transport
//!   (or, over TCP, answers garbage) moves to the next server on the same transport; after
//!   the last server the guest gets SERVFAIL.
//! - `from_host` ([`Resolver::udp_answer`], [`Resolver::tcp_answer`]): an answer counts only
//!   if it parses, is a response and carries the try's ID (UDP: and comes from the try's
//!   server) and question (name case-insensitive, type, class); anything else is ignored
//!   and counted (`dns_upstream_bad`), so a spoofed or stale datagram cannot end a try.
//!   Any rcode is an answer: NXDOMAIN, SERVFAIL or REFUSED from upstream are passed along,
//!   not failed over.
//! - `to_guest` ([`Out::Reply`]): upstream answers go back byte for byte, only the guest's
//!   ID restored — except when rebind protection turns an answer with a private address
//!   into NXDOMAIN, or when the answer exceeds a UDP guest's size (its EDNS size, at least
//!   512; 512 without EDNS), which gets a TC reply with the question and no records
//!   instead. Every A/AAAA record the guest receives pins its address to the question's
//!   name and to the names of the CNAME chain leading to it ([`Judge::pin`]).
//!
//! ## Invariants and limits
//!
//! - At most [`ResolverConfig::max_pending`] guest queries are in flight upstream; a query
//!   beyond that is dropped (the guest retries). Failover and the TCP retry replace a try,
//!   they never add one. Every index (by exchange, UDP ID, deadline, TCP connection) holds
//!   exactly the tries in flight: memory is bounded by `max_pending` tries, each holding one
//!   query (at most 64 KiB).
//! - Every query that is not dropped gets exactly one reply, unless its TCP connection is
//!   forgotten ([`Resolver::forget_conn`]) first.
//! - No input panics: guest and upstream bytes go through hickory-proto's parser; the
//!   only byte access here is the ID at offset 0, through checked slices.
//! - Messages passed along are never re-encoded; only local replies (errors, static
//!   answers, NXDOMAIN, TC replies) are built, with the guest's question as it wrote it.

mod flight;
mod msg;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};

use crate::metrics::Stats;
use crate::policy::groups::rebind_protected;

use flight::{Flights, Transport, Try};
use msg::{Asked, Flags, FromGuest};

/// What the resolver is told at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Upstream servers, tried in this order.
    pub servers: Vec<SocketAddr>,
    /// How long one try of one server may take before the next server is tried.
    pub timeout: Duration,
    /// Static records: name (lowercase, no trailing dot) → addresses. The host alias
    /// ([`crate::config::HOST_ALIAS`]) is added by [`Resolver::new`] from the gateway
    /// addresses.
    pub hosts: Vec<(String, Vec<IpAddr>)>,
    /// The gateway's IPv4 address; `None`: IPv4 is inactive (A queries get an empty NOERROR).
    pub gateway4: Option<Ipv4Addr>,
    /// The gateway's IPv6 address; `None`: IPv6 is inactive (AAAA queries get an empty
    /// NOERROR).
    pub gateway6: Option<Ipv6Addr>,
    /// Turn upstream answers carrying private, loopback, link-local, CGNAT or unspecified
    /// addresses into NXDOMAIN (unless [`Judge::allows_explicitly`]).
    pub rebind_protection: bool,
    /// Queries in flight upstream, at most (more are dropped and counted).
    pub max_pending: usize,
}

/// Who asked; handed back with the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// A UDP query from `guest` to the gateway address `gateway` (port 53).
    Udp {
        guest: SocketAddr,
        gateway: SocketAddr,
    },
    /// A query read from a guest TCP connection to the gateway; `conn` is the caller's id
    /// for that connection.
    Tcp { conn: u64 },
}

/// One upstream try, as the caller tracks it (unique while in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exchange(pub u32);

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Send `bytes` (a whole DNS message) to the guest: UDP as one datagram from `gateway`
    /// to `guest`; TCP on connection `conn`, with its 2-byte length prefix.
    Reply { client: Client, bytes: Vec<u8> },
    /// Send `query` (its ID rewritten) as one datagram to `servers[server]`; answers come
    /// back through [`Resolver::udp_answer`]. If it cannot be sent, call
    /// [`Resolver::failed`] with `exchange`.
    Udp {
        server: usize,
        exchange: Exchange,
        query: Vec<u8>,
    },
    /// Open a TCP connection to `servers[server]`, send `query` with its 2-byte length
    /// prefix, read one length-prefixed answer and hand it to [`Resolver::tcp_answer`]
    /// (then close); on connect failure, reset or EOF before the answer, call
    /// [`Resolver::failed`].
    Tcp {
        server: usize,
        exchange: Exchange,
        query: Vec<u8>,
    },
}

/// What the resolver asks of the policy (implemented by the poll thread over the policy
/// and the pin table).
pub trait Judge {
    /// `Some(rule)` (the deciding rule, for the log) when the policy denies `name`
    /// (lowercase, no trailing dot): the query is answered NXDOMAIN and never sent upstream.
    fn deny_name(&self, name: &str) -> Option<String>;
    /// True when a policy rule allows `ip` explicitly (exempts it from rebind protection).
    fn allows_explicitly(&self, ip: IpAddr) -> bool;
    /// An answer given to the guest says `name` (lowercase, no trailing dot) has address
    /// `ip` for `ttl` seconds.
    fn pin(&mut self, name: &str, ip: IpAddr, ttl: u32, now: Duration);
}

/// The DNS service's state: queries in flight upstream.
#[derive(Debug)]
pub struct Resolver {
    cfg: ResolverConfig,
    /// Static records (the hosts and the host alias): name (lowercase, no trailing dot) →
    /// addresses.
    statics: HashMap<String, Vec<IpAddr>>,
    /// The upstream tries in flight.
    flights: Flights,
    /// PTR names of the gateway addresses (answered with the host alias, never asked
    /// upstream: `ping host.ringnet.internal` looks its address up in reverse).
    reverse: HashMap<String, hickory_proto::rr::Name>,
    /// Upstream answer times: a try's start (its deadline less the timeout) to its answer.
    pub latency: crate::observe::latency::Recorder,
}

impl Resolver {
    /// A resolver; `seed` seeds the upstream query IDs.
    pub fn new(cfg: ResolverConfig, seed: u64) -> Resolver {
        let mut statics: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ips) in &cfg.hosts {
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let known = statics.entry(key).or_default();
            for ip in ips {
                if !known.contains(ip) {
                    known.push(*ip);
                }
            }
        }
        // The alias always names the gateway, whatever the hosts say.
        let alias = cfg.gateway4.map(IpAddr::V4).into_iter();
        let alias = alias.chain(cfg.gateway6.map(IpAddr::V6)).collect();
        statics.insert(crate::config::HOST_ALIAS.to_owned(), alias);
        let mut reverse = HashMap::new();
        if let Ok(target) = hickory_proto::rr::Name::from_ascii(crate::config::HOST_ALIAS) {
            let gateways = cfg.gateway4.map(IpAddr::V4).into_iter();
            for ip in gateways.chain(cfg.gateway6.map(IpAddr::V6)) {
                let ptr = msg::name_key(&hickory_proto::rr::Name::from(ip));
                reverse.insert(ptr, target.clone());
            }
        }
        Resolver {
            cfg,
            statics,
            flights: Flights::new(seed),
            reverse,
            latency: crate::observe::latency::Recorder::new(),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ResolverConfig {
        &self.cfg
    }

    /// A query from the guest.
    pub fn query(
        &mut self,
        client: Client,
        bytes: &[u8],
        now: Duration,
        judge: &mut dyn Judge,
        stats: &Stats,
        out: &mut Vec<Out>,
    ) {
        Stats::inc(&stats.dns_queries);
        let tcp = matches!(client, Client::Tcp { .. });
        let asked = match msg::from_guest(bytes, tcp) {
            FromGuest::Drop => {
                Stats::inc(&stats.dns_dropped);
                return;
            }
            FromGuest::Error { rcode, reply } => {
                if rcode == ResponseCode::FormErr {
                    Stats::inc(&stats.dns_formerr);
                }
                if let Some(bytes) = reply {
                    to_guest(client, bytes, stats, out);
                }
                return;
            }
            FromGuest::Query(asked) => asked,
        };
        let name = asked.name();
        if let Some(rule) = judge.deny_name(&name) {
            tracing::info!(name = %name, rule = %rule, "dns: name denied by policy, answered NXDOMAIN");
            Stats::inc(&stats.dns_denied);
            Stats::inc(&stats.dns_local);
            local(
                client,
                &asked,
                ResponseCode::NXDomain,
                Vec::new(),
                stats,
                out,
            );
            return;
        }
        let qtype = asked.query.query_type();
        if let Some(ips) = self.statics.get(&name) {
            let mut answers = Vec::new();
            if asked.query.query_class() == DNSClass::IN {
                for &ip in ips {
                    let family = match ip {
                        IpAddr::V4(_) => RecordType::A,
                        IpAddr::V6(_) => RecordType::AAAA,
                    };
                    if family == qtype && self.family_active(qtype) {
                        judge.pin(&name, ip, msg::STATIC_TTL, now);
                        answers.push(msg::static_record(&asked, ip));
                    }
                }
            }
            Stats::inc(&stats.dns_local);
            local(client, &asked, ResponseCode::NoError, answers, stats, out);
            return;
        }
        if let Some(target) = self.reverse.get(&name) {
            let mut answers = Vec::new();
            if qtype == RecordType::PTR && asked.query.query_class() == DNSClass::IN {
                let ptr =
                    hickory_proto::rr::RData::PTR(hickory_proto::rr::rdata::PTR(target.clone()));
                answers.push(Record::from_rdata(
                    asked.query.name().clone(),
                    msg::STATIC_TTL,
                    ptr,
                ));
            }
            Stats::inc(&stats.dns_local);
            local(client, &asked, ResponseCode::NoError, answers, stats, out);
            return;
        }
        if !self.family_active(qtype) {
            Stats::inc(&stats.dns_local);
            local(
                client,
                &asked,
                ResponseCode::NoError,
                Vec::new(),
                stats,
                out,
            );
            return;
        }
        if self.cfg.servers.is_empty() {
            servfail(client, &asked, stats, out);
            return;
        }
        if self.flights.len() >= self.cfg.max_pending {
            Stats::inc(&stats.dns_dropped);
            return;
        }
        let Some(id) = self.flights.fresh_id() else {
            // Every UDP ID is in flight (max_pending above 65535): as if over the limit.
            Stats::inc(&stats.dns_dropped);
            return;
        };
        let first = Try {
            client,
            asked,
            query: bytes.to_vec(),
            id,
            server: 0,
            transport: Transport::Udp,
            deadline: now,
        };
        self.send_to_host(first, now, stats, out);
    }

    /// False for A with IPv4 inactive, AAAA with IPv6 inactive.
    fn family_active(&self, qtype: RecordType) -> bool {
        match qtype {
            RecordType::A => self.cfg.gateway4.is_some(),
            RecordType::AAAA => self.cfg.gateway6.is_some(),
            _ => true,
        }
    }

    /// Starts try `t` to `t.server` over `t.transport` with upstream ID `t.id` (for UDP,
    /// from [`Flights::fresh_id`]) and a new deadline.
    fn send_to_host(&mut self, mut t: Try, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        msg::set_id(&mut t.query, t.id);
        t.deadline = now.saturating_add(self.cfg.timeout);
        let (server, transport, query) = (t.server, t.transport, t.query.clone());
        let exchange = self.flights.start(t);
        Stats::inc(&stats.dns_forwarded);
        out.push(match transport {
            Transport::Udp => Out::Udp {
                server,
                exchange,
                query,
            },
            Transport::Tcp => Out::Tcp {
                server,
                exchange,
                query,
            },
        });
    }

    /// Try `t` (out of flight) failed: the next server on the same transport, or SERVFAIL.
    fn failover(&mut self, mut t: Try, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        Stats::inc(&stats.dns_upstream_failed);
        let next = t.server.saturating_add(1);
        if next >= self.cfg.servers.len() {
            servfail(t.client, &t.asked, stats, out);
            return;
        }
        t.server = next;
        if t.transport == Transport::Udp {
            match self.flights.fresh_id() {
                Some(id) => t.id = id,
                None => {
                    servfail(t.client, &t.asked, stats, out);
                    return;
                }
            }
        }
        self.send_to_host(t, now, stats, out);
    }

    /// A datagram from `servers[server]`'s UDP socket.
    pub fn udp_answer(
        &mut self,
        server: usize,
        bytes: &[u8],
        now: Duration,
        judge: &mut dyn Judge,
        stats: &Stats,
        out: &mut Vec<Out>,
    ) {
        let found = msg::from_host(bytes).and_then(|answer| {
            let ex = self.flights.udp_match(server, answer.metadata.id)?;
            let t = self.flights.get(ex)?;
            msg::same_question(&answer, &t.asked).then_some((ex, answer))
        });
        let Some((ex, answer)) = found else {
            // Unparseable, unknown or for another question: the try goes on (and times out
            // if nothing better comes).
            Stats::inc(&stats.dns_upstream_bad);
            return;
        };
        if let Some(t) = self.flights.take(ex) {
            self.relay_from_host(t, &answer, bytes, now, judge, stats, out);
        }
    }

    /// The answer of TCP exchange `exchange` (without its length prefix).
    pub fn tcp_answer(
        &mut self,
        exchange: Exchange,
        bytes: &[u8],
        now: Duration,
        judge: &mut dyn Judge,
        stats: &Stats,
        out: &mut Vec<Out>,
    ) {
        let known = self
            .flights
            .get(exchange)
            .is_some_and(|t| t.transport == Transport::Tcp);
        if !known {
            Stats::inc(&stats.dns_upstream_bad);
            return;
        }
        let Some(t) = self.flights.take(exchange) else {
            return;
        };
        let answer = msg::from_host(bytes)
            .filter(|a| a.metadata.id == t.id && msg::same_question(a, &t.asked));
        match answer {
            Some(answer) => self.relay_from_host(t, &answer, bytes, now, judge, stats, out),
            None => {
                // The connection carries one answer only: no better one will come.
                Stats::inc(&stats.dns_upstream_bad);
                self.failover(t, now, stats, out);
            }
        }
    }

    /// `answer` (parsed from `bytes`) ends try `t` (out of flight): a TCP retry, or the
    /// reply to the guest.
    #[allow(clippy::too_many_arguments)]
    fn relay_from_host(
        &mut self,
        t: Try,
        answer: &Message,
        bytes: &[u8],
        now: Duration,
        judge: &mut dyn Judge,
        stats: &Stats,
        out: &mut Vec<Out>,
    ) {
        let sent = t.deadline.saturating_sub(self.cfg.timeout);
        self.latency.record(now.saturating_sub(sent));
        let tcp_client = matches!(t.client, Client::Tcp { .. });
        if answer.metadata.truncation && tcp_client && t.transport == Transport::Udp {
            let retry = Try {
                transport: Transport::Tcp,
                ..t
            };
            // Same server, same upstream ID (a TCP try needs no unique one).
            self.send_to_host(retry, now, stats, out);
            return;
        }
        if self.cfg.rebind_protection {
            let blocked = msg::addresses(answer)
                .find(|&ip| rebind_protected(ip) && !judge.allows_explicitly(ip));
            if let Some(ip) = blocked {
                tracing::info!(
                    name = %t.asked.name(),
                    %ip,
                    "dns: answer with a private address blocked (rebind protection), answered NXDOMAIN"
                );
                Stats::inc(&stats.dns_rebind_blocked);
                local(
                    t.client,
                    &t.asked,
                    ResponseCode::NXDomain,
                    Vec::new(),
                    stats,
                    out,
                );
                return;
            }
        }
        for pin in msg::pins(answer, t.asked.query.name()) {
            judge.pin(&pin.name, pin.ip, pin.ttl, now);
        }
        if !tcp_client && bytes.len() > t.asked.max_size {
            Stats::inc(&stats.dns_truncated);
            if let Some(reply) = msg::truncated(&t.asked, answer) {
                to_guest(t.client, reply, stats, out);
            }
            return;
        }
        let mut reply = bytes.to_vec();
        msg::set_id(&mut reply, t.asked.id);
        to_guest(t.client, reply, stats, out);
    }

    /// Exchange `exchange` failed in transport: try the next server, or answer SERVFAIL.
    pub fn failed(&mut self, exchange: Exchange, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        if let Some(t) = self.flights.take(exchange) {
            self.failover(t, now, stats, out);
        }
    }

    /// Time left until the earliest try times out (`None` with nothing in flight).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        self.flights.earliest().map(|d| d.saturating_sub(now))
    }

    /// Tries that timed out: the next server, or SERVFAIL.
    pub fn expire(&mut self, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        // Ends: each turn ends a try, and a try started here has a later deadline unless
        // the timeout is zero, in which case each query moves one server on per turn.
        while let Some(ex) = self.flights.expired(now) {
            if let Some(t) = self.flights.take(ex) {
                self.failover(t, now, stats, out);
            }
        }
    }

    /// Guest TCP connection `conn` is gone: forget its queries (late answers are dropped).
    pub fn forget_conn(&mut self, conn: u64) {
        for ex in self.flights.of_conn(conn) {
            self.flights.take(ex);
        }
    }

    /// Queries in flight upstream.
    pub fn pending(&self) -> usize {
        self.flights.len()
    }
}

/// Sends `bytes` to the guest.
fn to_guest(client: Client, bytes: Vec<u8>, stats: &Stats, out: &mut Vec<Out>) {
    Stats::inc(&stats.dns_answered);
    out.push(Out::Reply { client, bytes });
}

/// A reply built here for `asked`; truncated (TC, no records) if a UDP guest cannot take
/// it whole.
fn local(
    client: Client,
    asked: &Asked,
    rcode: ResponseCode,
    answers: Vec<Record>,
    stats: &Stats,
    out: &mut Vec<Out>,
) {
    let flags = Flags {
        authoritative: !answers.is_empty(),
        ..Flags::default()
    };
    let mut reply = msg::to_guest(asked, rcode, answers, flags);
    let tcp_client = matches!(client, Client::Tcp { .. });
    if !tcp_client && reply.as_ref().is_some_and(|r| r.len() > asked.max_size) {
        Stats::inc(&stats.dns_truncated);
        let flags = Flags {
            truncated: true,
            ..flags
        };
        reply = msg::to_guest(asked, rcode, Vec::new(), flags);
    }
    match reply {
        Some(bytes) => to_guest(client, bytes, stats, out),
        None => tracing::debug!("dns: a local reply could not be encoded"),
    }
}

/// SERVFAIL for `asked`: no upstream answered.
fn servfail(client: Client, asked: &Asked, stats: &Stats, out: &mut Vec<Out>) {
    Stats::inc(&stats.dns_servfail);
    local(
        client,
        asked,
        ResponseCode::ServFail,
        Vec::new(),
        stats,
        out,
    );
}
