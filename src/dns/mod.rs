//! The gateway's DNS service (sans-IO).
//!
//! # Theory of operation
//!
//! (to be written with the implementation: invariants, limits, data flow per direction)
//!
//! The caller (the poll thread, `stack::dns`) owns every socket; this module only turns
//! bytes and time into [`Out`] actions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::metrics::Stats;

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
}

impl Resolver {
    /// A resolver; `seed` seeds the upstream query IDs.
    pub fn new(cfg: ResolverConfig, seed: u64) -> Resolver {
        let _ = seed;
        Resolver { cfg }
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
        let _ = (client, bytes, now, judge, stats, out);
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
        let _ = (server, bytes, now, judge, stats, out);
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
        let _ = (exchange, bytes, now, judge, stats, out);
    }

    /// Exchange `exchange` failed in transport: try the next server, or answer SERVFAIL.
    pub fn failed(&mut self, exchange: Exchange, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        let _ = (exchange, now, stats, out);
    }

    /// Time left until the earliest try times out (`None` with nothing in flight).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let _ = now;
        None
    }

    /// Tries that timed out: the next server, or SERVFAIL.
    pub fn expire(&mut self, now: Duration, stats: &Stats, out: &mut Vec<Out>) {
        let _ = (now, stats, out);
    }

    /// Guest TCP connection `conn` is gone: forget its queries (late answers are dropped).
    pub fn forget_conn(&mut self, conn: u64) {
        let _ = conn;
    }

    /// Queries in flight upstream.
    pub fn pending(&self) -> usize {
        0
    }
}
