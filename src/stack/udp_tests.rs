//! UDP flows on the virtual-clock harness: the flow table at its limit.

use std::net::SocketAddr;
use std::time::Duration;

use crate::stack::harness::Harness;

/// A datagram from the guest's port 40000 to 198.51.100.7:`port`.
fn datagram(h: &Harness, port: u16) -> Vec<u8> {
    h.guest_udp(40000, SocketAddr::from(([198, 51, 100, 7], port)), b"ping")
}

#[test]
fn new_destinations_beyond_the_eviction_budget_are_shed() {
    let mut h = Harness::new("[egress]\nmax_udp_flows = 4\nevictions_per_sec = 3\n");
    // 4 fill the table, 3 evict (the burst), 5 are shed.
    for port in 1000..1012 {
        let f = datagram(&h, port);
        h.inject(&f);
        h.turn();
    }
    assert_eq!(h.stat("udp_opened"), 7);
    assert_eq!(h.stat("udp_evicted"), 3);
    assert_eq!(h.stat("udp_flow_shed"), 5);
    // A known destination is never shed; a second later the budget is back.
    let f = datagram(&h, 1011);
    h.inject(&f);
    h.turn();
    assert_eq!(
        h.stat("udp_flow_shed"),
        6,
        "1011 was shed, so it is not known"
    );
    let f = datagram(&h, 1006);
    h.inject(&f);
    h.turn();
    assert_eq!(h.stat("udp_flow_shed"), 6, "a flow in the table");
    h.run_for(Duration::from_secs(1));
    let f = datagram(&h, 1011);
    h.inject(&f);
    h.turn();
    assert_eq!(h.stat("udp_evicted"), 4);
    assert_eq!(h.stat("udp_flow_shed"), 6);
}

#[test]
fn opens_that_keep_failing_shed_new_destinations() {
    // A failed open keeps no flow: without a budget every datagram would try again.
    let mut h = Harness::new("[egress]\nfailed_connects_per_sec = 3\n");
    h.host().fail_opens = Some(std::io::ErrorKind::PermissionDenied);
    for port in 2000..2010 {
        let f = datagram(&h, port);
        h.inject(&f);
        h.turn();
    }
    assert_eq!(h.stat("udp_open_failed"), 3, "the burst");
    assert_eq!(h.stat("udp_flow_shed"), 7);
    // Opens work again; a second later the budget is back, and a success gives its token
    // back, so working destinations never run out.
    h.host().fail_opens = None;
    h.run_for(Duration::from_secs(1));
    for port in 3000..3020 {
        let f = datagram(&h, port);
        h.inject(&f);
        h.turn();
    }
    assert_eq!(h.stat("udp_opened"), 20);
    assert_eq!(h.stat("udp_flow_shed"), 7);
}
