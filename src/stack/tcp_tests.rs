//! The TCP flow lifecycle (the table in [`super`]'s module docs), cell by cell, on the
//! virtual-clock harness: a smoltcp guest, a scripted host, virtual time.

use std::io;
use std::time::Duration;

use smoltcp::socket::tcp::State;

use crate::stack::harness::Harness;

const PORT: u16 = 8080;

fn harness() -> Harness {
    Harness::new("[egress]\nmax_connecting = 4\ntcp_guest_timeout_ms = 4000\n")
}

/// A guest connection whose host socket is open (connect pending); returns (guest socket,
/// host socket id).
fn connecting(h: &mut Harness) -> (smoltcp::iface::SocketHandle, u64) {
    let before = h.host().ids().len();
    let g = h.guest.connect(PORT);
    assert!(
        h.run_until(Duration::from_secs(2), |h| h.host().ids().len() > before),
        "the guest's SYN opened no host socket"
    );
    let id = *h.host().ids().last().expect("a socket");
    (g, id)
}

fn established(h: &mut Harness) -> (smoltcp::iface::SocketHandle, u64) {
    let (g, id) = connecting(h);
    h.host().connect(id, Ok(()));
    guest_reaches(h, g, State::Established, 2);
    // Deliver the guest's ACK of the SYN-ACK too.
    h.run_for(Duration::from_millis(20));
    (g, id)
}

fn closed(h: &Harness, id: u64) -> Option<bool> {
    h.host().socks[&id].closed
}

/// Run until the guest's socket `g` is in `state` (panics after `secs` of virtual time).
fn guest_reaches(h: &mut Harness, g: smoltcp::iface::SocketHandle, state: State, secs: u64) {
    let ok = h.run_until(Duration::from_secs(secs), |h| {
        h.guest.sock(g).state() == state
    });
    assert!(
        ok,
        "guest socket is {}, not {state}",
        h.guest.sock(g).state()
    );
}

/// Run until the engine closed host socket `id`; returns whether it was a reset.
fn host_closed(h: &mut Harness, id: u64) -> bool {
    assert!(h.run_until(Duration::from_secs(1), |h| closed(h, id).is_some()));
    closed(h, id) == Some(true)
}

#[test]
fn connect_success_relays_both_ways() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    assert_eq!(h.stat("tcp_active"), 1);
    assert_eq!(h.stat("tcp_connecting"), 0);
    h.guest.sock(g).send_slice(b"hello").unwrap();
    h.host().host_sends(id, b"world");
    assert!(
        h.run_until(Duration::from_secs(1), |h| h.host().socks[&id].sent
            == b"hello"
            && h.guest.sock(g).recv_queue() == 5)
    );
    let mut buf = [0; 5];
    h.guest.sock(g).recv_slice(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert_eq!(closed(&h, id), None);
}

/// Both host targets of a gateway connect (the loopback of each family) fail with `kind`.
fn fails_on_both_targets(kind: io::ErrorKind) {
    let mut h = harness();
    let (g, id) = connecting(&mut h);
    h.host().connect(id, Err(kind.into()));
    h.run_for(Duration::from_millis(20));
    let second = *h.host().ids().last().unwrap();
    assert_ne!(second, id, "the second target is tried");
    assert_eq!(h.guest.sock(g).state(), State::SynSent, "no answer yet");
    h.host().connect(second, Err(kind.into()));
    guest_reaches(&mut h, g, State::Closed, 1);
    assert_eq!(h.stat("tcp_connect_failed"), 1);
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn connect_refused_on_both_targets_is_a_reset() {
    fails_on_both_targets(io::ErrorKind::ConnectionRefused);
}

#[test]
fn connect_timeout_is_a_reset() {
    fails_on_both_targets(io::ErrorKind::TimedOut);
}

#[test]
fn syn_retransmitted_while_connecting_opens_nothing_new() {
    let mut h = harness();
    let (g, id) = connecting(&mut h);
    // The guest retransmits its SYN (RTO 1 s, then 2 s) while the host connect is pending.
    h.run_for(Duration::from_secs(4));
    assert_eq!(h.host().ids(), vec![id], "one host socket");
    h.host().connect(id, Ok(()));
    let ok = h.run_until(Duration::from_secs(3), |h| {
        h.guest.sock(g).state() == State::Established
    });
    assert!(
        ok,
        "guest {} stats {:?} host {:?}",
        h.guest.sock(g).state(),
        h.link.stats.render(),
        h.host().socks
    );
}

#[test]
fn guest_reset_while_connecting_closes_the_host_socket() {
    let mut h = harness();
    let (g, id) = connecting(&mut h);
    h.guest.sock(g).abort();
    assert!(host_closed(&mut h, id), "reset");
    assert_eq!(h.stat("tcp_active"), 0);
    assert_eq!(h.stat("tcp_connecting"), 0);
    assert_eq!(h.stat("tcp_guest_reset"), 1);
}

#[test]
fn abandoned_connect_rst_to_the_synack_is_reaped() {
    let mut h = harness();
    let (g, id) = connecting(&mut h);
    // The guest forgets the socket: its stack answers the SYN-ACK with RST, and smoltcp
    // puts the listening socket back in LISTEN.
    h.guest.sockets.remove(g);
    h.host().connect(id, Ok(()));
    assert!(h.run_until(Duration::from_secs(1), |h| closed(h, id).is_some()));
    assert_eq!(closed(&h, id), Some(true), "host side reset");
    assert_eq!(h.stat("tcp_active"), 0);
    assert_eq!(h.stat("tcp_guest_reset"), 1);
}

#[test]
fn guest_reset_when_established_resets_the_host() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.guest.sock(g).abort();
    assert!(host_closed(&mut h, id), "reset");
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn host_reset_reaches_the_guest_as_rst() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.host().host_reset(id);
    guest_reaches(&mut h, g, State::Closed, 1);
    assert_eq!(h.stat("tcp_host_reset"), 1);
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn host_reset_after_its_eof_still_reaches_the_guest() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.host().host_eof(id);
    guest_reaches(&mut h, g, State::CloseWait, 1);
    // The guest keeps uploading to a server that closed; the server resets.
    h.guest.sock(g).send_slice(b"more").unwrap();
    h.run_for(Duration::from_millis(20));
    h.host().host_reset(id);
    guest_reaches(&mut h, g, State::Closed, 1);
    assert_eq!(h.stat("tcp_host_reset"), 1);
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn half_close_guest_first() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.guest.sock(g).send_slice(b"request").unwrap();
    h.guest.sock(g).close();
    assert!(h.run_until(Duration::from_secs(1), |h| h.host().socks[&id].shut));
    assert_eq!(h.host().socks[&id].sent, b"request");
    // The host still answers, then closes.
    h.host().host_sends(id, b"response");
    h.host().host_eof(id);
    assert!(h.run_until(Duration::from_secs(1), |h| closed(h, id).is_some()));
    assert_eq!(closed(&h, id), Some(false), "graceful close");
    let mut buf = [0; 8];
    assert_eq!(h.guest.sock(g).recv_slice(&mut buf), Ok(8));
    assert_eq!(&buf, b"response");
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn half_close_host_first() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.host().host_sends(id, b"banner");
    h.host().host_eof(id);
    guest_reaches(&mut h, g, State::CloseWait, 1);
    // The guest still sends, then closes: both FINs are through.
    h.guest.sock(g).send_slice(b"bye").unwrap();
    h.guest.sock(g).close();
    assert!(h.run_until(Duration::from_secs(1), |h| closed(h, id).is_some()));
    assert_eq!(
        closed(&h, id),
        Some(false),
        "graceful close, the driver lingers"
    );
    assert_eq!(h.host().socks[&id].sent, b"bye");
    assert!(h.host().socks[&id].shut);
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn a_vanished_guest_loses_its_flow_after_the_guest_timeout() {
    let mut h = harness();
    let (_g, id) = established(&mut h);
    h.guest.link_up = false;
    // Keep-alives every second go unanswered; the 4 s timeout ends the flow.
    h.run_for(Duration::from_secs(3));
    assert_eq!(closed(&h, id), None, "not before the timeout");
    assert!(h.run_until(Duration::from_secs(3), |h| closed(h, id).is_some()));
    assert_eq!(closed(&h, id), Some(true));
    assert_eq!(h.stat("tcp_guest_timeout"), 1);
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn an_idle_guest_that_answers_keepalives_keeps_its_flow() {
    let mut h = harness();
    let (g, id) = established(&mut h);
    h.run_for(Duration::from_secs(20));
    assert_eq!(closed(&h, id), None);
    assert_eq!(h.guest.sock(g).state(), State::Established);
}

#[test]
fn an_unanswered_synack_ends_at_the_guest_timeout() {
    let mut h = harness();
    let (_g, id) = connecting(&mut h);
    h.guest.link_up = false;
    h.host().connect(id, Ok(()));
    assert!(h.run_until(Duration::from_secs(8), |h| closed(h, id).is_some()));
    assert_eq!(h.stat("tcp_active"), 0);
}

/// A new guest SYN is shed (no host socket, no RST: the guest stays in SYN-SENT), and its
/// retransmission, a real stack retrying, opens a host socket. The guest's socket.
fn shed_then_retried(h: &mut Harness) -> smoltcp::iface::SocketHandle {
    let before = h.host().ids().len();
    let g = h.guest.connect(PORT);
    h.run_for(Duration::from_millis(200));
    assert_eq!(h.host().ids().len(), before, "a shed SYN opens no socket");
    assert!(h.stat("tcp_syn_shed") >= 1);
    assert_eq!(
        h.guest.sock(g).state(),
        State::SynSent,
        "the guest got no RST"
    );
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.host().ids().len() > before),
        "the retried SYN opened no host socket"
    );
    g
}

#[test]
fn syns_beyond_the_eviction_budget_are_shed_and_retried() {
    // 4 pending connects allowed, 2 evictions per second.
    let mut h = Harness::new(
        "[egress]\nmax_connecting = 4\nevictions_per_sec = 2\ntcp_guest_timeout_ms = 4000\n",
    );
    for _ in 0..6 {
        connecting(&mut h);
    }
    assert_eq!(h.stat("tcp_connect_evicted"), 2, "the burst");
    // The seventh SYN finds the budget spent; its retransmission gets in.
    shed_then_retried(&mut h);
    assert_eq!(h.stat("tcp_connect_evicted"), 3);
    assert_eq!(h.stat("tcp_syn_retry_admitted"), 1);
}

#[test]
fn the_oldest_pending_connect_is_evicted_at_the_cap() {
    let mut h = harness();
    let mut first = None;
    for i in 0..5 {
        let (g, id) = connecting(&mut h);
        if i == 0 {
            first = Some((g, id));
        }
    }
    let (g, id) = first.unwrap();
    assert_eq!(closed(&h, id), Some(true), "evicted");
    guest_reaches(&mut h, g, State::Closed, 1);
    assert_eq!(h.stat("tcp_connect_evicted"), 1);
    assert_eq!(h.stat("tcp_connecting"), 4);
}

#[test]
fn syns_are_shed_while_connects_keep_failing() {
    // Nothing listens: every connect is refused at once, so none stays pending and the
    // `max_connecting` cap never acts. 3 failures per second are allowed.
    let mut h = Harness::new("[egress]\nfailed_connects_per_sec = 3\n");
    for _ in 0..3 {
        // A gateway connect tries the loopback of each family: both refuse.
        let (g, id) = connecting(&mut h);
        h.host()
            .connect(id, Err(io::ErrorKind::ConnectionRefused.into()));
        h.run_for(Duration::from_millis(20));
        let second = *h.host().ids().last().expect("the second target");
        h.host()
            .connect(second, Err(io::ErrorKind::ConnectionRefused.into()));
        guest_reaches(&mut h, g, State::Closed, 1);
    }
    assert_eq!(h.stat("tcp_connect_failed"), 3);
    assert_eq!(h.stat("tcp_syn_shed"), 0, "within the budget");
    // The budget is spent: the next SYN is shed; its retransmission connects.
    let g = shed_then_retried(&mut h);
    let id = *h.host().ids().last().expect("a host socket");
    h.host().connect(id, Ok(()));
    guest_reaches(&mut h, g, State::Established, 2);
    assert_eq!(h.stat("tcp_connect_evicted"), 0, "no cap acted");
}

#[test]
fn a_pending_connect_is_not_serviced_every_turn() {
    // The socket holds the guest's SYN with its SYN-ACK paused, so smoltcp says "poll me
    // now" for as long as the connect takes: scheduled, every pending connect would be
    // serviced on every turn (256 of them under a SYN flood).
    let mut h = harness();
    let (g, id) = connecting(&mut h);
    h.run_for(Duration::from_millis(50));
    assert_eq!(h.engine.tcp.next_timer(), None, "no timer while connecting");
    // What does move it still does: the connect result releases the SYN-ACK.
    h.host().connect(id, Ok(()));
    guest_reaches(&mut h, g, State::Established, 1);
}
