//! The gateway's DNS on the virtual-clock harness: a UDP query and a pipelined TCP
//! connection from the guest, the upstream tries the engine makes through the (fake)
//! driver, the answers back, and the pins they leave for domain rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smoltcp::socket::tcp::State;
use smoltcp::wire::IpAddress;

use crate::egress::SockKind;
use crate::stack::harness::Harness;

const UPSTREAM: &str = "198.51.100.53:53";

fn harness(extra: &str) -> Harness {
    Harness::new(&format!("[dns]\nservers = [\"{UPSTREAM}\"]\n{extra}"))
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The upstream's answer to `sent` (a query as the engine sent it): `name` A `ip`.
fn answer(sent: &[u8], ip: Ipv4Addr) -> Vec<u8> {
    let q = Message::from_vec(sent).unwrap();
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.response_code = ResponseCode::NoError;
    let name = q.queries[0].name().clone();
    m.add_queries(q.queries);
    m.add_answer(Record::from_rdata(name, 30, RData::from(ip)));
    m.to_vec().unwrap()
}

/// The engine's upstream UDP socket (opened on the first forwarded query).
fn upstream(h: &Harness) -> u64 {
    let host = h.host();
    let (&id, s) = host
        .socks
        .iter()
        .find(|(_, s)| s.kind == SockKind::Udp)
        .expect("an upstream UDP socket");
    assert_eq!(s.remote, UPSTREAM.parse::<SocketAddr>().unwrap());
    id
}

/// The UDP payloads the engine sent the guest from port 53.
fn dns_replies(h: &Harness) -> Vec<Message> {
    h.frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[34..36] == [0, 53])
        .map(|f| Message::from_vec(&f[42..]).expect("a DNS message"))
        .collect()
}

#[test]
fn a_udp_query_is_forwarded_and_answered_and_pins_the_name() {
    let mut h =
        harness("[policy]\npreset = \"none\"\nrules = [\"allow tcp pinned.test port 443\"]");
    h.keep_frames = true;
    let a = h.engine.addrs;
    let gw = SocketAddr::new(IpAddr::V4(a.gw4.unwrap()), 53);
    let q = query(0x1234, "pinned.test.");
    let frame = h.guest_udp(40000, gw, &q);
    h.inject(&frame);
    h.run_for(Duration::from_millis(10));
    let id = upstream(&h);
    let sent = h.host().socks[&id].sent.clone();
    assert_eq!(sent[2..], q[2..], "forwarded verbatim but for the ID");
    h.host()
        .host_sends(id, &answer(&sent, Ipv4Addr::new(198, 51, 100, 7)));
    h.run_for(Duration::from_millis(10));
    let replies = dns_replies(&h);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].metadata.id, 0x1234);
    assert_eq!(replies[0].answers.len(), 1);
    assert_eq!(h.stat("dns_queries"), 1);
    assert_eq!(h.stat("dns_answered"), 1);
    assert_eq!(h.stat("dns_forwarded"), 1);

    // The pin admits a connect to that address on the rule's port.
    let g = h
        .guest
        .connect_to(IpAddress::Ipv4(Ipv4Addr::new(198, 51, 100, 7)), 443);
    assert!(h.run_until(Duration::from_secs(1), |h| h.host().ids().len() == 2));
    assert_ne!(h.guest.sock(g).state(), State::Closed);
    assert_eq!(h.stat("policy_denied_tcp"), 0);
}

#[test]
fn pipelined_tcp_queries_are_answered_on_their_connection() {
    let mut h = harness("");
    let g = h.guest.connect(53);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(g).state()
            == State::Established)
    );
    assert!(
        h.host().ids().is_empty(),
        "no host connect for the gateway's DNS"
    );
    let (q1, q2) = (query(1, "one.test."), query(2, "two.test."));
    let mut both = Vec::new();
    for q in [&q1, &q2] {
        both.extend_from_slice(&(q.len() as u16).to_be_bytes());
        both.extend_from_slice(q);
    }
    // Split mid-message: framing must not care.
    h.guest.sock(g).send_slice(&both[..5]).unwrap();
    h.run_for(Duration::from_millis(10));
    h.guest.sock(g).send_slice(&both[5..]).unwrap();
    h.run_for(Duration::from_millis(20));
    let id = upstream(&h);
    let sent = h.host().socks[&id].sent.clone();
    assert_eq!(sent.len(), q1.len() + q2.len(), "two datagrams upstream");
    let (s1, s2) = sent.split_at(q1.len());
    // Answer in reverse order.
    h.host()
        .host_sends(id, &answer(s2, Ipv4Addr::new(198, 51, 100, 2)));
    h.run_for(Duration::from_millis(10));
    h.host()
        .host_sends(id, &answer(s1, Ipv4Addr::new(198, 51, 100, 1)));
    h.run_for(Duration::from_millis(20));
    let mut got = vec![0u8; 4096];
    let n = h.guest.sock(g).recv_slice(&mut got).unwrap();
    let mut rest = &got[..n];
    let mut ids = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let m = Message::from_vec(&rest[2..2 + len]).unwrap();
        ids.push(m.metadata.id);
        rest = &rest[2 + len..];
    }
    assert_eq!(ids, [2, 1]);
    // The guest closes; ringnet closes after it, the flow is reaped.
    h.guest.sock(g).close();
    assert!(h.run_until(Duration::from_secs(2), |h| h.stat("tcp_active") == 0));
    assert_eq!(h.stat("dns_answered"), 2);
}

#[test]
fn a_denied_name_is_nxdomain_and_never_asked_upstream() {
    let mut h = harness("[policy]\nrules = [\"deny .blocked.test\"]");
    let g = h.guest.connect(53);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(g).state()
            == State::Established)
    );
    let q = query(9, "x.blocked.test.");
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    h.guest.sock(g).send_slice(&msg).unwrap();
    h.run_for(Duration::from_millis(20));
    assert!(h.host().ids().is_empty(), "nothing went upstream");
    let mut got = vec![0u8; 1024];
    let n = h.guest.sock(g).recv_slice(&mut got).unwrap();
    let m = Message::from_vec(&got[2..n]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(h.stat("dns_denied"), 1);
}
