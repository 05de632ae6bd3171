//! The resolver on messages built by hickory-proto (and a few raw byte fixtures), with a
//! fake [`Judge`] recording pins: the helpers here, the tests per direction in `from_guest`
//! (local answers, errors, drops) and `from_host` (forwarding, answers, failover).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;

use super::*;
use crate::config::HOST_ALIAS;

#[derive(Default)]
struct FakeJudge {
    /// (name, rule) pairs denied.
    deny: Vec<(String, String)>,
    /// Addresses allowed explicitly.
    explicit: Vec<IpAddr>,
    /// Every pin, in order.
    pins: Vec<(String, IpAddr, u32, Duration)>,
    /// Names asked about.
    asked: Vec<String>,
}

impl Judge for FakeJudge {
    fn deny_name(&self, name: &str) -> Option<String> {
        self.deny
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, rule)| rule.clone())
    }
    fn allows_explicitly(&self, ip: IpAddr) -> bool {
        self.explicit.contains(&ip)
    }
    fn pin(&mut self, name: &str, ip: IpAddr, ttl: u32, now: Duration) {
        self.asked.push(name.to_owned());
        self.pins.push((name.to_owned(), ip, ttl, now));
    }
}

const GW4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfd42, 0x6d73, 0x62, 0, 0, 0, 0, 1);
const TIMEOUT: Duration = Duration::from_secs(2);
const PUBLIC4: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

fn cfg() -> ResolverConfig {
    ResolverConfig {
        servers: vec![
            "192.0.2.53:53".parse().unwrap(),
            "198.51.100.53:53".parse().unwrap(),
        ],
        timeout: TIMEOUT,
        hosts: vec![(
            "db.internal".to_owned(),
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4)),
                "fd00::3".parse().unwrap(),
            ],
        )],
        gateway4: Some(GW4),
        gateway6: Some(GW6),
        rebind_protection: true,
        max_pending: 4,
    }
}

fn udp_client() -> Client {
    Client::Udp {
        guest: "172.16.0.2:40000".parse().unwrap(),
        gateway: SocketAddr::new(IpAddr::V4(GW4), 53),
    }
}

const TCP: Client = Client::Tcp { conn: 7 };

fn query_msg(id: u16, name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    query_msg(id, name, qtype).to_vec().unwrap()
}

fn query_edns(id: u16, name: &str, qtype: RecordType, size: u16) -> Vec<u8> {
    let mut m = query_msg(id, name, qtype);
    let mut edns = Edns::new();
    edns.set_max_payload(size);
    m.set_edns(edns);
    m.to_vec().unwrap()
}

/// An upstream response to `query` (as sent upstream) carrying `answers`.
fn answer(query: &[u8], rcode: ResponseCode, answers: Vec<Record>) -> Message {
    let q = Message::from_vec(query).unwrap();
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.add_queries(q.queries);
    m.insert_answers(answers);
    m
}

fn a(name: &str, ip: Ipv4Addr, ttl: u32) -> Record {
    Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, RData::from(ip))
}

fn cname(name: &str, target: &str) -> Record {
    let target = Name::from_ascii(target).unwrap();
    Record::from_rdata(
        Name::from_ascii(name).unwrap(),
        300,
        RData::CNAME(CNAME(target)),
    )
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

struct Harness {
    r: Resolver,
    judge: FakeJudge,
    stats: Stats,
    now: Duration,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(cfg())
    }
    fn with(cfg: ResolverConfig) -> Harness {
        Harness {
            r: Resolver::new(cfg, 42),
            judge: FakeJudge::default(),
            stats: Stats::default(),
            now: Duration::from_secs(10),
        }
    }
    fn query(&mut self, client: Client, bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        self.r.query(
            client,
            bytes,
            self.now,
            &mut self.judge,
            &self.stats,
            &mut out,
        );
        out
    }
    fn udp_answer(&mut self, server: usize, bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let (now, judge, stats) = (self.now, &mut self.judge, &self.stats);
        self.r
            .udp_answer(server, bytes, now, judge, stats, &mut out);
        out
    }
    fn tcp_answer(&mut self, ex: Exchange, bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        let (now, judge, stats) = (self.now, &mut self.judge, &self.stats);
        self.r.tcp_answer(ex, bytes, now, judge, stats, &mut out);
        out
    }
    fn failed(&mut self, ex: Exchange) -> Vec<Out> {
        let mut out = Vec::new();
        self.r.failed(ex, self.now, &self.stats, &mut out);
        out
    }
    fn expire(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        self.r.expire(self.now, &self.stats, &mut out);
        out
    }
    /// Forwards a query from `client`: the one `Out::Udp` it makes.
    fn forward(&mut self, client: Client, bytes: &[u8]) -> (usize, Exchange, Vec<u8>) {
        udp_of(self.query(client, bytes))
    }
    /// Indexes all empty once nothing is in flight.
    fn assert_clean(&self) {
        assert_eq!(self.r.pending(), 0);
        assert_eq!(self.r.flights.sizes(), (0, 0, 0, 0));
        assert_eq!(self.r.next_deadline(self.now), None);
    }
}

fn udp_of(out: Vec<Out>) -> (usize, Exchange, Vec<u8>) {
    match out.as_slice() {
        [Out::Udp {
            server,
            exchange,
            query,
        }] => (*server, *exchange, query.clone()),
        other => panic!("expected one Out::Udp, got {other:?}"),
    }
}

fn tcp_of(out: Vec<Out>) -> (usize, Exchange, Vec<u8>) {
    match out.as_slice() {
        [Out::Tcp {
            server,
            exchange,
            query,
        }] => (*server, *exchange, query.clone()),
        other => panic!("expected one Out::Tcp, got {other:?}"),
    }
}

/// The one reply: its client, its bytes and its parse.
fn reply_of(out: Vec<Out>) -> (Client, Vec<u8>, Message) {
    match out.as_slice() {
        [Out::Reply { client, bytes }] => {
            (*client, bytes.clone(), Message::from_vec(bytes).unwrap())
        }
        other => panic!("expected one Out::Reply, got {other:?}"),
    }
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers.iter().filter_map(|r| r.data.ip_addr()).collect()
}

mod from_guest;
mod from_host;
