//! Policy on the poll thread, on the virtual-clock harness: denials (RST, ICMP
//! administratively prohibited), SNI agreement, a policy swapped at run time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpAddress, Ipv4Address};

use crate::dns::Judge;
use crate::policy::Preset;
use crate::stack::harness::Harness;

const SINK: Ipv4Address = Ipv4Address::new(198, 51, 100, 7);
const OTHER: Ipv4Address = Ipv4Address::new(198, 51, 100, 9);

fn policy(rules: &[&str], preset: Option<&str>) -> Harness {
    let rules: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    let preset = preset.map_or(String::new(), |p| format!("preset = {p:?}\n"));
    Harness::new(&format!(
        "[policy]\n{preset}rules = [{}]\n",
        rules.join(", ")
    ))
}

fn wait_state(h: &mut Harness, g: SocketHandle, state: State, limit: Duration) -> bool {
    h.run_until(limit, |h| h.guest.sock(g).state() == state)
}

/// Connect to `ip:port`, the host connect succeeds: the flow is established.
fn established(h: &mut Harness, ip: Ipv4Address, port: u16) -> (SocketHandle, u64) {
    let before = h.host().ids().len();
    let g = h.guest.connect_to(IpAddress::Ipv4(ip), port);
    assert!(h.run_until(Duration::from_secs(2), |h| h.host().ids().len() > before));
    let id = *h.host().ids().last().expect("a host socket");
    h.host().connect(id, Ok(()));
    assert!(wait_state(h, g, State::Established, Duration::from_secs(2)));
    h.run_for(Duration::from_millis(20));
    (g, id)
}

#[test]
fn a_denied_connect_is_reset_at_once_and_never_reaches_the_host() {
    let mut h = policy(&["deny tcp 198.51.100.0/24 port 22"], None);
    let start = h.clock.now();
    let g = h.guest.connect_to(IpAddress::Ipv4(SINK), 22);
    assert!(wait_state(&mut h, g, State::Closed, Duration::from_secs(1)));
    // ARP for the gateway, the SYN, the RST: a few 5 ms turns.
    assert!(h.clock.now() - start < Duration::from_millis(100));
    assert!(
        h.host().ids().is_empty(),
        "no host socket for a denied flow"
    );
    assert_eq!(h.stat("policy_denied_tcp"), 1);
    assert_eq!(h.stat("policy_denied_rule"), 1);
    assert_eq!(h.stat("tcp_opened"), 0);
    // Another port of the same address is allowed (the default).
    let (_, id) = established(&mut h, SINK, 80);
    let remote = h.host().socks[&id].remote;
    assert_eq!(remote, SocketAddr::from(([198, 51, 100, 7], 80)));
}

#[test]
fn a_denied_datagram_is_answered_administratively_prohibited() {
    let mut h = policy(&["deny udp 198.51.100.7 port 5000-5010"], None);
    h.keep_frames = true;
    let a = h.engine.addrs;
    let frame = |h: &Harness, port: u16| {
        h.guest_udp(40000, SocketAddr::from(([198, 51, 100, 7], port)), b"ping")
    };
    h.inject(&frame(&h, 5005));
    h.run_for(Duration::from_millis(10));
    assert!(h.host().ids().is_empty());
    assert_eq!(h.stat("policy_denied_udp"), 1);
    let icmp: Vec<&Vec<u8>> = h
        .frames
        .iter()
        .filter(|f| f.len() > 34 && f[12..14] == [8, 0] && f[23] == 1)
        .collect();
    assert_eq!(icmp.len(), 1, "one ICMP error");
    let f = icmp[0];
    assert_eq!(
        (f[34], f[35]),
        (3, 13),
        "destination unreachable, administratively prohibited"
    );
    assert_eq!(&f[26..30], &a.gw4.unwrap().octets(), "from the gateway");
    // The quote is the guest's own packet: its destination address and port.
    assert_eq!(&f[42 + 16..42 + 20], &[198, 51, 100, 7]);
    assert_eq!(&f[42 + 22..42 + 24], &5005u16.to_be_bytes());
    // An allowed port opens a host socket.
    h.inject(&frame(&h, 6000));
    h.run_for(Duration::from_millis(10));
    assert_eq!(h.host().ids().len(), 1);
}

#[test]
fn sni_must_agree_with_the_domain_rule_that_admitted_the_flow() {
    const HELLO_OK: &[u8] = include_bytes!("../policy/fixtures/client_hello_allowed_test.bin");
    const HELLO_OTHER: &[u8] = include_bytes!("../policy/fixtures/client_hello_other_test.bin");
    let mut h = policy(&["allow tcp allowed.test port 443"], Some("none"));
    let now = h.clock.now();
    let pinned = IpAddr::from([198, 51, 100, 7]);
    h.engine.host.guard.pin("allowed.test", pinned, 60, now);

    // A name the guest resolved: admitted, and the matching ClientHello goes through.
    let (g, id) = established(&mut h, SINK, 443);
    h.guest.sock(g).send_slice(&HELLO_OK[..100]).unwrap();
    h.run_for(Duration::from_millis(20));
    assert!(
        h.host().socks[&id].sent.is_empty(),
        "held until the hello is whole"
    );
    h.guest.sock(g).send_slice(&HELLO_OK[100..]).unwrap();
    h.run_for(Duration::from_millis(20));
    assert_eq!(h.host().socks[&id].sent, HELLO_OK);

    // Same address, a ClientHello for another name: reset, nothing sent.
    let (g2, id2) = established(&mut h, SINK, 443);
    h.guest.sock(g2).send_slice(HELLO_OTHER).unwrap();
    assert!(wait_state(
        &mut h,
        g2,
        State::Closed,
        Duration::from_secs(1)
    ));
    assert!(h.host().socks[&id2].sent.is_empty());
    assert_eq!(h.host().socks[&id2].closed, Some(true));
    assert_eq!(h.stat("policy_sni_mismatch"), 1);

    // An address no answer named is denied, as is another port.
    for (ip, port) in [(OTHER, 443), (SINK, 80)] {
        let g = h.guest.connect_to(IpAddress::Ipv4(ip), port);
        assert!(wait_state(&mut h, g, State::Closed, Duration::from_secs(1)));
    }
    assert_eq!(h.stat("policy_denied_default"), 2);

    // The pin expires after its TTL: the same address is denied then.
    h.run_for(Duration::from_secs(61));
    let g = h.guest.connect_to(IpAddress::Ipv4(SINK), 443);
    assert!(wait_state(&mut h, g, State::Closed, Duration::from_secs(1)));
    assert_eq!(h.stat("policy_denied_default"), 3);
}

#[test]
fn a_new_policy_resets_the_flows_it_denies() {
    let mut h = Harness::new("");
    let (g1, id1) = established(&mut h, SINK, 80);
    let (g2, id2) = established(&mut h, OTHER, 80);
    let mut p = Preset::AllowAll.policy();
    p.rules
        .push(crate::policy::Rule::parse_with_action("deny 198.51.100.7").unwrap());
    h.link.set_policy(p);
    h.host().wake_stop();
    assert!(wait_state(
        &mut h,
        g1,
        State::Closed,
        Duration::from_secs(1)
    ));
    assert_eq!(h.host().socks[&id1].closed, Some(true), "host side reset");
    assert_eq!(h.guest.sock(g2).state(), State::Established);
    assert_eq!(h.host().socks[&id2].closed, None);
    assert_eq!(h.stat("policy_revoked"), 1);
    // New flows follow the new policy too.
    let g = h.guest.connect_to(IpAddress::Ipv4(SINK), 443);
    assert!(wait_state(&mut h, g, State::Closed, Duration::from_secs(1)));
    assert_eq!(h.stat("policy_denied_tcp"), 1);
}
