//! Issue "observe", without root, through the embedding API (a test VMM moving frames
//! through `GuestLink`; only the gateway and documentation addresses are addressed, and a
//! gateway address leads to this machine's loopback):
//!
//! - `drops_by_reason_in_a_forced_overflow`: 300 frames into a stopped network → 44
//!   `from_guest_ring_full`; a drained pool → `from_guest_pool_empty`; 300 ARP requests
//!   with nobody draining `to_guest` → 256 replies queued, 44 `to_guest_ring_full`;
//!   garbage → `malformed` / `unsupported`.
//! - `udp_exchange_moves_metrics_and_lists_the_flow`: N datagrams of P bytes each way with
//!   a UDP echo server on 127.0.0.1 (through the gateway): `tx_bytes` and `rx_bytes` are
//!   exactly N × (P + 42) (Ethernet 14 + IPv4 20 + UDP 8, the frame overhead of a UDP/IPv4
//!   datagram), frames N each way; `flows()` lists the flow with P × N bytes each way.
//! - `denials_are_events_and_the_hook_fires_once`: `terminate_on = ["policy_denial"]`, a
//!   denied datagram: the hook runs exactly once, the event names the rule, the network
//!   stops by itself and shuts down cleanly.
//! - `a_panicking_hook_does_not_take_the_poll_thread_down`: the same with a hook that
//!   panics: the network still stops cleanly (`shutdown` is `Ok`).
//! - `undrained_events_drop_the_oldest`: 1,100 denials, nobody draining: 1,024 kept (the
//!   newest), 76 dropped and counted.
//! - `dns_upstream_latency_and_connect_counters`: a query forwarded to a test upstream on
//!   127.0.0.1 that answers after 20 ms: `dns_latency()` has one sample of at least 20 ms,
//!   `dns_answered()` counts it; a UDP connect-free exchange leaves `host_connects_*` at 0.
//! - `snapshot_of_10000_flows`: 10,000 UDP flows (one host socket each): `flows()` lists
//!   them all; prints how long the poll thread spent building the snapshot (a
//!   measurement, not an assertion).

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::frames::{self, arp_request, GUEST, GW};
use ringnet::config::EgressDriver;
use ringnet::observe::{DenialReason, TermEvent};
use ringnet::policy::{Preset, Rule};
use ringnet::{GuestLink, HostRoutes, Network, NetworkConfig};
use smoltcp::wire::IpProtocol;

const V4: HostRoutes = HostRoutes {
    ipv4: true,
    ipv6: false,
};

fn config() -> NetworkConfig {
    let mut cfg = NetworkConfig::default();
    cfg.egress.driver = EgressDriver::Epoll;
    cfg
}

/// A UDP/IPv4 frame from the guest's `sport` to `dst` (UDP checksum 0: none, RFC 768).
fn udp(dst: SocketAddr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    l4.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    frames::ipv4(GUEST, *dst.ip(), IpProtocol::Udp, &l4)
}

/// Wait up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Frames the gateway sent, drained for `wait`.
fn drain(link: &GuestLink, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        link.wait(left.min(Duration::from_millis(20)));
        link.clear_notify();
        while let Some(f) = link.recv() {
            out.push(f.to_vec());
        }
    }
    out
}

/// Send `frame`, waiting (bounded) for room on `from_guest` instead of dropping.
fn send_paced(link: &GuestLink, frame: &[u8]) {
    assert!(
        wait_for(Duration::from_secs(5), || link.from_guest_room() > 0),
        "from_guest never drained"
    );
    assert!(link.send(None, frame));
}

#[test]
fn drops_by_reason_in_a_forced_overflow() {
    let mut net = Network::with_routes(&config(), 0, V4).unwrap();
    let link = net.take_link().unwrap();
    let m = net.metrics();
    // Not started: nobody drains from_guest (256 frames).
    let garbage = [0xffu8; 20];
    for _ in 0..300 {
        link.send(None, &garbage);
    }
    assert_eq!(m.drops().from_guest_ring_full, 44);
    assert_eq!(m.tx_frames(), 256);
    // Every free slot leased: the next frame finds the pool empty.
    let leases: Vec<_> = std::iter::from_fn(|| link.lease()).collect();
    assert!(!link.send(None, &garbage));
    assert_eq!(
        m.drops().from_guest_pool_empty,
        2,
        "the failed lease and the send"
    );
    drop(leases);
    net.start().unwrap();
    let dropped = || {
        let d = m.drops();
        d.malformed + d.unsupported
    };
    assert!(
        wait_for(Duration::from_secs(5), || dropped() == 256),
        "{:?}",
        m.drops()
    );

    // 300 ARP requests for the gateway, nobody draining to_guest (256 frames).
    for _ in 0..300 {
        send_paced(&link, &arp_request(GW));
    }
    assert!(
        wait_for(Duration::from_secs(5), || m.rx_frames()
            + m.drops().to_guest_ring_full
            == 300),
        "{:?}",
        m.drops()
    );
    assert_eq!(m.rx_frames(), 256);
    assert_eq!(m.drops().to_guest_ring_full, 44);
    assert_eq!(m.drops().to_guest_undelivered, 0);
    let d = m.drops();
    assert_eq!(d.total(), 44 + 2 + 44 + 256, "{d:?}");
    drop(drain(&link, Duration::from_millis(50)));
    net.shutdown().unwrap();
}

#[test]
fn udp_exchange_moves_metrics_and_lists_the_flow() {
    const N: u64 = 50;
    const P: usize = 1000;
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..N {
            let (n, from) = server.recv_from(&mut buf).expect("a datagram within 5 s");
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut net = Network::with_routes(&config(), 0, V4).unwrap();
    let link = net.take_link().unwrap();
    net.start().unwrap();
    let m = net.metrics();
    let dst = SocketAddr::new(GW.into(), port);
    let mut got = Vec::new();
    for i in 0..N {
        send_paced(&link, &udp(dst, 40000, &[i as u8; P]));
        // One at a time: the reply comes back before the next goes out.
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() as u64 <= i && Instant::now() < deadline {
            got.extend(drain(&link, Duration::from_millis(10)));
        }
    }
    echo.join().unwrap();
    assert_eq!(got.len() as u64, N, "one reply per datagram");
    let frame = (P + 42) as u64;
    assert_eq!(m.tx_frames(), N);
    assert_eq!(m.rx_frames(), N);
    assert_eq!(m.tx_bytes(), N * frame, "tx: N x (payload + 42)");
    assert_eq!(m.rx_bytes(), N * frame, "rx: N x (payload + 42)");
    assert_eq!(m.open_flows().udp, 1);
    assert_eq!(m.drops().total(), 0, "{:?}", m.drops());

    let flows = net.flows().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.proto, ringnet::policy::Proto::Udp);
    assert_eq!(f.guest, SocketAddr::new(GUEST.into(), 40000));
    assert_eq!(f.host, dst);
    assert_eq!(f.from_guest_bytes, N * P as u64);
    assert_eq!(f.to_guest_bytes, N * P as u64);
    assert!(f.rule.is_none(), "no policy: admitted by none");
    assert!(f.age >= f.idle);
    net.shutdown().unwrap();
    assert!(net.flows().is_err(), "no snapshot from a stopped network");
}

/// A network denying UDP to 198.51.100.9 by rule, with the policy-denial termination on.
fn denying(terminate: bool) -> Network {
    let mut cfg = config();
    if terminate {
        cfg.observe.terminate_on = vec![TermEvent::PolicyDenial];
    }
    let mut net = Network::with_routes(&cfg, 0, V4).unwrap();
    let mut p = Preset::AllowAll.policy();
    p.rules
        .push(Rule::parse_with_action("deny udp 198.51.100.9").unwrap());
    net.set_policy(p);
    net
}

const DENIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 53);

#[test]
fn denials_are_events_and_the_hook_fires_once() {
    let mut net = denying(true);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let term = net.termination();
    assert_eq!(term.events(), vec![TermEvent::PolicyDenial]);
    term.set_hook(Arc::new(move || {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    let link = net.take_link().unwrap();
    net.start().unwrap();
    for i in 0..3 {
        link.send(None, &udp(DENIED, 40000 + i, b"denied"));
    }
    assert!(
        wait_for(Duration::from_secs(2), || !net.is_running()),
        "the network stops after the hook's event"
    );
    assert!(wait_for(Duration::from_secs(2), || calls
        .load(Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly once");
    assert_eq!(term.fired(), Some(TermEvent::PolicyDenial));
    assert!(!term.trigger(TermEvent::PolicyDenial), "fires only once");
    let events = net.denials().drain();
    assert!(!events.is_empty());
    let e = &events[0];
    assert_eq!(e.reason, DenialReason::Rule);
    assert_eq!(e.dst, Some(DENIED));
    assert_eq!(e.guest, Some(GUEST.into()));
    assert!(e.rule.contains("198.51.100.9"), "{e:?}");
    net.shutdown().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_hook_does_not_take_the_poll_thread_down() {
    let mut net = denying(true);
    net.termination().set_hook(Arc::new(|| {
        panic!("a hook that panics (expected by the test)")
    }));
    let link = net.take_link().unwrap();
    net.start().unwrap();
    link.send(None, &udp(DENIED, 40000, b"denied"));
    assert!(wait_for(Duration::from_secs(2), || !net.is_running()));
    net.shutdown().expect("the poll thread ended cleanly");
    assert_eq!(net.termination().fired(), Some(TermEvent::PolicyDenial));
}

#[test]
fn undrained_events_drop_the_oldest() {
    let mut net = denying(false);
    let link = net.take_link().unwrap();
    net.start().unwrap();
    let m = net.metrics();
    for i in 0..1100u16 {
        send_paced(&link, &udp(DENIED, 20000 + i, b"denied"));
        if i % 128 == 0 {
            drop(drain(&link, Duration::ZERO)); // the ICMP errors
        }
    }
    let denied = || m.stats().policy_denied_udp.load(Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(5), || denied() == 1100));
    assert!(net.is_running(), "termination is not configured");
    let d = net.denials();
    assert_eq!(d.dropped(), 76);
    assert_eq!(m.drops().events, 76);
    let events = d.drain();
    assert_eq!(events.len(), 1024);
    let first = events[0].guest.zip(events[0].dst);
    assert!(first.is_some());
    // The newest are kept: the last one is the 1,100th datagram's.
    assert_eq!(events.last().unwrap().dst, Some(DENIED));
    net.shutdown().unwrap();
}

/// A DNS query for example.com A (ID 0x1234, recursion desired).
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
fn dns_upstream_latency_and_connect_counters() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut cfg = config();
    cfg.dns.servers = vec![upstream.local_addr().unwrap().to_string().parse().unwrap()];
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).expect("a forwarded query");
        std::thread::sleep(Duration::from_millis(20));
        buf[2] |= 0x80; // a response: no answers, NOERROR, the question echoed
        buf[3] |= 0x80;
        upstream.send_to(&buf[..n], from).unwrap();
    });
    let mut net = Network::with_routes(&cfg, 0, V4).unwrap();
    let link = net.take_link().unwrap();
    net.start().unwrap();
    let m = net.metrics();
    send_paced(
        &link,
        &udp(SocketAddr::new(GW.into(), 53), 5353, &dns_query()),
    );
    server.join().unwrap();
    assert!(wait_for(Duration::from_secs(2), || m.dns_latency().count == 1));
    let l = m.dns_latency();
    assert!(l.p50 >= Duration::from_millis(20), "{l:?}");
    assert!(l.max >= l.p99 && l.p99 >= l.p50, "{l:?}");
    assert!(l.max < Duration::from_secs(5), "{l:?}");
    assert_eq!(m.dns_answered(), 1);
    assert_eq!(m.dns_failed(), 0);
    assert_eq!((m.host_connects_ok(), m.host_connects_failed()), (0, 0));
    assert_eq!(m.connect_latency().count, 0);
    net.shutdown().unwrap();
}

/// Raise the soft open-files limit to the hard limit (10,000 flows need 10,000 sockets).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the live local only.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn snapshot_of_10000_flows() {
    const FLOWS: usize = 10_000;
    if raise_nofile() < FLOWS as u64 + 512 {
        panic!(
            "RLIMIT_NOFILE hard limit below {} (raise ulimit -Hn)",
            FLOWS + 512
        );
    }
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = SocketAddr::new(GW.into(), sink.local_addr().unwrap().port());
    let mut cfg = config();
    cfg.max_connections = FLOWS;
    cfg.egress.max_udp_flows = FLOWS;
    let mut net = Network::with_routes(&cfg, 0, V4).unwrap();
    let link = net.take_link().unwrap();
    net.start().unwrap();
    let m = net.metrics();
    for i in 0..FLOWS {
        send_paced(&link, &udp(dst, 10000 + i as u16, b"x"));
    }
    assert!(
        wait_for(Duration::from_secs(20), || m.open_flows().udp
            == FLOWS as u64),
        "{:?} {:?}",
        m.open_flows(),
        m.drops()
    );
    let t = Instant::now();
    let flows = net.flows().unwrap();
    let round_trip = t.elapsed();
    assert_eq!(flows.len(), FLOWS);
    assert!(flows.iter().all(|f| f.from_guest_bytes == 1));
    eprintln!(
        "snapshot of {FLOWS} flows: poll thread busy {} us, round trip {} us",
        m.snapshot_max_us(),
        round_trip.as_micros()
    );
    net.shutdown().unwrap();
}
