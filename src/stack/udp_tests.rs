//! UDP flows on the virtual-clock harness: the flow table at its limit.

use std::net::SocketAddr;
use std::time::Duration;

use crate::stack::harness::Harness;

/// A datagram from the guest's port 40000 to 198.51.100.7:`port`.
fn datagram(h: &Harness, port: u16) -> Vec<u8> {
    h.guest_udp(40000, SocketAddr::from(([198, 51, 100, 7], port)), b"ping")
}

/// One datagram to each of `ports`, a turn after each.
fn send_to(h: &mut Harness, ports: impl IntoIterator<Item = u16>) {
    for port in ports {
        let f = datagram(h, port);
        h.inject(&f);
        h.turn();
    }
}

#[test]
fn new_destinations_beyond_the_eviction_budget_are_shed() {
    let mut h = Harness::new("[egress]\nmax_udp_flows = 4\nevictions_per_sec = 3\n");
    // 4 fill the table, 3 evict (the burst), 5 are shed.
    send_to(&mut h, 1000..1012);
    assert_eq!(h.stat("udp_opened"), 7);
    assert_eq!(h.stat("udp_evicted"), 3);
    assert_eq!(h.stat("udp_flow_shed"), 5);
    // A known destination is never shed; a second later the budget is back.
    send_to(&mut h, [1011]);
    assert_eq!(
        h.stat("udp_flow_shed"),
        6,
        "1011 was shed, so it is not known"
    );
    send_to(&mut h, [1006]);
    assert_eq!(h.stat("udp_flow_shed"), 6, "a flow in the table");
    h.run_for(Duration::from_secs(1));
    send_to(&mut h, [1011]);
    assert_eq!(h.stat("udp_evicted"), 4);
    assert_eq!(h.stat("udp_flow_shed"), 6);
}

#[test]
fn opens_that_keep_failing_shed_new_destinations() {
    // A failed open keeps no flow: without a budget every datagram would try again.
    let mut h = Harness::new("[egress]\nfailed_connects_per_sec = 3\n");
    h.host().fail_opens = Some(std::io::ErrorKind::PermissionDenied);
    send_to(&mut h, 2000..2010);
    assert_eq!(h.stat("udp_open_failed"), 3, "the burst");
    assert_eq!(h.stat("udp_flow_shed"), 7);
    // Opens work again; a second later the budget is back, and a success gives its token
    // back, so working destinations never run out.
    h.host().fail_opens = None;
    h.run_for(Duration::from_secs(1));
    send_to(&mut h, 3000..3020);
    assert_eq!(h.stat("udp_opened"), 20);
    assert_eq!(h.stat("udp_flow_shed"), 7);
}
