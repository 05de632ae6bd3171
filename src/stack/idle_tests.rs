//! The idle trim (module docs, step 5) on the virtual-clock harness: an engine trims once
//! `idle_trim_ms` after its traffic stopped, never while traffic flows, and its flows work
//! afterwards.

use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use crate::stack::harness::Harness;

const PORT: u16 = 8080;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// A guest connection through the engine, established both ways: (guest socket, host id).
fn established(h: &mut Harness) -> (SocketHandle, u64) {
    let before = h.host().ids().len();
    let g = h.guest.connect(PORT);
    assert!(h.run_until(MS(2000), |h| h.host().ids().len() > before));
    let id = *h.host().ids().last().expect("a host socket");
    h.host().connect(id, Ok(()));
    assert!(h.run_until(MS(2000), |h| h.guest.sock(g).state() == State::Established));
    h.run_for(MS(20));
    (g, id)
}

/// One exchange: `n` bytes each way, delivered.
fn exchange(h: &mut Harness, g: SocketHandle, id: u64, n: usize) {
    let sent = h.host().socks[&id].sent.len();
    let up = vec![0x11; n];
    assert_eq!(h.guest.sock(g).send_slice(&up), Ok(n));
    h.host().host_sends(id, &vec![0x22; n]);
    assert!(h.run_until(MS(1000), |h| {
        h.host().socks[&id].sent.len() == sent + n && h.guest.sock(g).recv_queue() == n
    }));
    let mut buf = vec![0; n];
    assert_eq!(h.guest.sock(g).recv_slice(&mut buf), Ok(n));
    assert!(buf.iter().all(|&b| b == 0x22));
}

#[test]
fn an_idle_engine_trims_once_and_never_while_busy() {
    let mut h = Harness::new("[egress]\nidle_trim_ms = 2000\n");
    h.run_for(MS(5000));
    assert_eq!(
        h.stat("idle_trims"),
        0,
        "nothing to give back before any traffic"
    );
    let (g, id) = established(&mut h);

    // Busy for 10 s: an exchange every 1.5 s (gaps shorter than idle_trim_ms).
    for _ in 0..7 {
        h.run_for(MS(1500));
        exchange(&mut h, g, id, 20_000);
        assert_eq!(h.stat("idle_trims"), 0, "trimmed while traffic flowed");
    }

    // Idle: one trim about 2 s after the last frame, then none however long it stays idle
    // (the guest's keep-alives come every 15 s at the default guest timeout).
    let quiet = h.clock.now();
    assert!(h.run_until(MS(3000), |h| h.stat("idle_trims") == 1));
    let waited = h.clock.now() - quiet;
    assert!(
        waited >= MS(1500),
        "trimmed {waited:?} after the last exchange"
    );
    assert!(
        h.stat("idle_trim_pool_bytes") > 0,
        "the pool's touched free slots"
    );
    h.run_for(MS(10_000));
    assert_eq!(h.stat("idle_trims"), 1, "once per idle period");

    // The flow works after the trim, and the next idle period trims again.
    exchange(&mut h, g, id, 20_000);
    assert_eq!(h.stat("idle_trims"), 1);
    assert!(h.run_until(MS(3000), |h| h.stat("idle_trims") == 2));
    assert_eq!(h.stat("tcp_active"), 1);
    assert_eq!(h.host().socks[&id].closed, None);
}

/// A flow that ends gracefully leaves its socket on the spare list.
fn open_and_close(h: &mut Harness) {
    let (g, id) = established(h);
    exchange(h, g, id, 100);
    h.guest.sock(g).close();
    h.host().host_eof(id);
    assert!(h.run_until(MS(1000), |h| h.host().socks[&id].closed.is_some()));
    assert_eq!(h.stat("tcp_active"), 0);
}

#[test]
fn the_trim_drops_spare_sockets_and_zero_never_trims() {
    // Without trimming, the next flow reuses the finished flow's socket.
    let mut h = Harness::new("[egress]\nidle_trim_ms = 0\n");
    open_and_close(&mut h);
    h.run_for(MS(5000));
    assert_eq!(h.stat("idle_trims"), 0);
    open_and_close(&mut h);
    assert_eq!(h.stat("tcp_sockets_reused"), 1);

    // With it, the idle link dropped the spare: the next flow gets a fresh socket.
    let mut h = Harness::new("[egress]\nidle_trim_ms = 500\n");
    open_and_close(&mut h);
    h.run_for(MS(1000));
    assert_eq!(h.stat("idle_trims"), 1);
    open_and_close(&mut h);
    assert_eq!(h.stat("tcp_sockets_reused"), 0);
}
