//! Inbound TCP flows (published ports) on the virtual-clock harness: the guest accepts and
//! bytes flow both ways; the guest refuses or never answers and the host client is reset.

use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::socket::tcp::State;

use crate::stack::harness::Harness;

const PEER: &str = "198.51.100.7:5000";

/// Start an inbound flow from `PEER` to the guest's port 80, seen as `PEER` itself.
fn inbound(h: &mut Harness) -> u64 {
    let guest = SocketAddr::new(h.engine.addrs.guest4.unwrap().into(), 80);
    let peer: SocketAddr = PEER.parse().unwrap();
    let fd = std::fs::File::open("/dev/null").unwrap().into();
    let elapsed = h.clock.now();
    let e = &mut h.engine;
    let r = e.tcp.inbound(
        (fd, peer),
        guest,
        peer,
        &mut e.iface,
        &mut e.host.cx(elapsed),
    );
    assert!(r.is_ok(), "inbound flow refused");
    let id = *h.host().ids().last().expect("the adopted socket");
    assert_eq!(h.host().socks[&id].remote, peer);
    id
}

#[test]
fn a_guest_that_accepts_gets_the_client_and_bytes_flow_both_ways() {
    let mut h = Harness::new("");
    let l = h.guest.listen(80);
    let id = inbound(&mut h);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(l).state()
            == State::Established)
    );
    let seen = h.guest.sock(l).remote_endpoint().unwrap();
    assert_eq!(seen.to_string(), PEER, "the guest sees the real client");
    h.host().host_sends(id, b"from the host client");
    h.run_for(Duration::from_millis(20));
    let mut buf = [0u8; 64];
    let n = h.guest.sock(l).recv_slice(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from the host client");
    h.guest.sock(l).send_slice(b"from the guest").unwrap();
    h.run_for(Duration::from_millis(20));
    assert_eq!(h.host().socks[&id].sent, b"from the guest");
    assert_eq!(h.stat("inbound_accepted"), 1);
    assert_eq!(h.stat("inbound_active"), 1);
    // The client closes: FIN to the guest, which closes too; the flow ends.
    h.host().host_eof(id);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(l).state()
            == State::CloseWait)
    );
    h.guest.sock(l).close();
    assert!(h.run_until(Duration::from_secs(2), |h| h.stat("inbound_active") == 0));
    assert_eq!(h.host().socks[&id].closed, Some(false), "a graceful close");
}

#[test]
fn a_guest_that_refuses_resets_the_client() {
    let mut h = Harness::new("");
    let id = inbound(&mut h);
    // No listener: the guest's stack answers the SYN with RST.
    assert!(h.run_until(Duration::from_secs(1), |h| h.host().socks[&id]
        .closed
        .is_some()));
    assert_eq!(
        h.host().socks[&id].closed,
        Some(true),
        "the client is reset"
    );
    assert_eq!(h.stat("inbound_guest_refused"), 1);
    assert_eq!(h.stat("inbound_active"), 0);
}

#[test]
fn a_guest_that_never_answers_resets_the_client_after_the_connect_timeout() {
    let mut h = Harness::new("[egress]\nconnect_timeout_ms = 3000\n");
    h.guest.link_up = false;
    let id = inbound(&mut h);
    h.run_for(Duration::from_millis(2500));
    assert_eq!(h.host().socks[&id].closed, None, "still trying");
    assert!(h.run_until(Duration::from_secs(5), |h| h.host().socks[&id]
        .closed
        .is_some()));
    assert!(
        h.clock.now() < Duration::from_millis(4500),
        "{:?}",
        h.clock.now()
    );
    assert_eq!(h.host().socks[&id].closed, Some(true));
    assert_eq!(h.stat("inbound_guest_timeout"), 1);
}
