//! Observation on the virtual-clock harness: a TCP flow in a snapshot with its state, bytes
//! each way, age and rule; the host connect time in the published summary; a denied
//! connect's event, and the admitting rule of an allowed one.

use std::time::Duration;

use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpAddress, Ipv4Address};

use super::smol_now;
use crate::observe::{DenialReason, FlowInfo};
use crate::policy::Proto;
use crate::stack::harness::Harness;

/// Snapshot of both tables at the harness's time.
fn snapshot(h: &mut Harness) -> Vec<FlowInfo> {
    let now = h.clock.now();
    let mut v = Vec::new();
    h.engine.tcp.snapshot(smol_now(now), &mut v);
    h.engine.udp.snapshot(now, &mut v);
    v
}

#[test]
fn tcp_flow_snapshot_and_connect_latency() {
    let mut h = Harness::new("");
    let g = h.guest.connect(8080);
    assert!(h.run_until(Duration::from_secs(1), |h| !h.host().ids().is_empty()));
    let id = h.host().ids()[0];
    let flows = snapshot(&mut h);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].state, "connecting");
    // The host connect takes 30 ms of virtual time.
    h.run_for(Duration::from_millis(30));
    h.host().connect(id, Ok(()));
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(g).state()
            == State::Established)
    );
    h.guest.sock(g).send_slice(&[7; 1000]).unwrap();
    h.host().host_sends(id, &[9; 500]);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.host().socks[&id].sent.len()
            == 1000
            && h.guest.sock(g).recv_queue() == 500)
    );
    // Past the publication interval: the summary is out.
    h.run_for(Duration::from_millis(150));
    let flows = snapshot(&mut h);
    let f = &flows[0];
    assert_eq!(f.proto, Proto::Tcp);
    assert_eq!(f.host.to_string(), "172.16.0.1:8080");
    assert_eq!(f.guest.ip().to_string(), "172.16.0.2");
    assert_eq!(f.state, "established");
    assert_eq!((f.from_guest_bytes, f.to_guest_bytes), (1000, 500));
    assert!(f.age >= Duration::from_millis(180), "{f:?}");
    assert!(f.idle <= f.age, "{f:?}");
    assert!(f.rule.is_none(), "no policy: {f:?}");
    let l = h.link.observe.latency.connect();
    assert_eq!(l.count, 1);
    let ms = l.p50.as_millis();
    assert!((30..=45).contains(&ms), "connect time {l:?}");
    assert_eq!(h.stat("tcp_connected"), 1);
}

#[test]
fn denial_event_and_admitting_rule() {
    let mut h = Harness::new(
        "[policy]\nrules = [\"deny tcp 198.51.100.9\", \"allow tcp 198.51.100.0/24\"]\n",
    );
    let denied = h
        .guest
        .connect_to(IpAddress::Ipv4(Ipv4Address::new(198, 51, 100, 9)), 80);
    let _allowed = h
        .guest
        .connect_to(IpAddress::Ipv4(Ipv4Address::new(198, 51, 100, 8)), 80);
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.guest.sock(denied).state()
            == State::Closed
            && !h.host().ids().is_empty())
    );
    let events = crate::observe::events::tests_drain(&h.link);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.reason, DenialReason::Rule);
    assert_eq!(e.proto, Proto::Tcp);
    assert_eq!(e.dst.unwrap().to_string(), "198.51.100.9:80");
    assert!(e.rule.starts_with("rule 1 ("), "{e:?}");
    let flows = snapshot(&mut h);
    assert_eq!(flows.len(), 1, "{flows:?}");
    let rule = flows[0].rule.as_deref().unwrap_or_default();
    assert!(rule.starts_with("rule 2 (allow"), "{rule}");
}
