//! The embedding API end to end, without root: a VMM-side test driver sends frames through
//! `GuestLink` and checks what the gateway answers. Only gateway addresses are contacted.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::frames::{self, arp_request, GUEST, GW, GW_MAC};
use ringnet::config::EgressDriver;
use ringnet::{GuestLink, HostRoutes, Network, NetworkConfig};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet,
};

fn network() -> Network {
    network_with(true)
}

/// With `autoconf = false`: no router advertisement at start, for tests that count every
/// frame the gateway sends (autoconfiguration is tested in `src/autoconf/` and on the
/// stack harness).
fn network_with(autoconf: bool) -> Network {
    let mut cfg = NetworkConfig::default();
    cfg.egress.driver = EgressDriver::Epoll;
    cfg.autoconf = autoconf;
    let mut net = Network::with_routes(
        &cfg,
        0,
        HostRoutes {
            ipv4: true,
            ipv6: true,
        },
    )
    .unwrap();
    net.start().unwrap();
    net
}

fn echo_request(dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let icmp = frames::icmpv4_echo(0x4242, seq, b"ringnet-echo");
    frames::ipv4(GUEST, dst, IpProtocol::Icmp, &icmp)
}

/// Frames the gateway sends within `wait`.
fn collect(link: &GuestLink, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        link.wait(left);
        link.clear_notify();
        while let Some(f) = link.recv() {
            out.push(f.to_vec());
        }
    }
    out
}

fn arp_replies(frames: &[Vec<u8>]) -> Vec<ArpRepr> {
    frames
        .iter()
        .filter_map(|b| {
            let f = EthernetFrame::new_checked(&b[..]).ok()?;
            if f.ethertype() != EthernetProtocol::Arp {
                return None;
            }
            ArpRepr::parse(&ArpPacket::new_checked(f.payload()).ok()?).ok()
        })
        .filter(|r| {
            matches!(
                r,
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    ..
                }
            )
        })
        .collect()
}

#[test]
fn gateway_answers_arp_only_for_itself() {
    let mut net = network();
    let link = net.take_link().unwrap();
    assert!(net.take_link().is_none(), "the link is handed out once");
    for other in [
        Ipv4Addr::new(172, 16, 0, 3),
        Ipv4Addr::new(172, 16, 0, 2),
        Ipv4Addr::new(198, 51, 100, 7),
    ] {
        assert!(link.send(None, &arp_request(other)));
    }
    let none = collect(&link, Duration::from_millis(300));
    assert!(
        arp_replies(&none).is_empty(),
        "no ARP reply for other hosts"
    );

    assert!(link.send(None, &arp_request(GW)));
    let frames = collect(&link, Duration::from_millis(300));
    let replies = arp_replies(&frames);
    assert_eq!(replies.len(), 1, "exactly one reply for the gateway");
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = replies[0]
    else {
        unreachable!()
    };
    assert_eq!(source_hardware_addr, EthernetAddress(GW_MAC));
    assert_eq!(source_protocol_addr, GW);
    assert_eq!(target_protocol_addr, GUEST);
    assert_eq!(
        net.stats()
            .arp_filtered
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let c = link.counters();
    assert_eq!(c.from_guest_frames, 4);
    assert!(c.to_guest_frames >= 1);
    net.shutdown().unwrap();
}

#[test]
fn gateway_answers_echo_to_itself() {
    let mut net = network();
    let link = net.take_link().unwrap();
    // Let smoltcp learn the guest's MAC first (it answers the ARP request).
    link.send(None, &arp_request(GW));
    collect(&link, Duration::from_millis(100));
    for seq in 1..=3 {
        assert!(link.send(None, &echo_request(GW, seq)));
    }
    let frames = collect(&link, Duration::from_millis(500));
    let mut seqs = Vec::new();
    for b in &frames {
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        if f.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let p = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert_eq!(p.src_addr(), GW);
        assert_eq!(p.dst_addr(), GUEST);
        let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum());
        if let Ok(Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        }) = Icmpv4Repr::parse(&icmp, &smoltcp::phy::ChecksumCapabilities::default())
        {
            assert_eq!(ident, 0x4242);
            assert_eq!(data, b"ringnet-echo");
            seqs.push(seq_no);
        }
    }
    assert_eq!(seqs, vec![1, 2, 3]);
    net.shutdown().unwrap();
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let mut net = network();
    let link = net.take_link().unwrap();
    for len in [0usize, 1, 13, 14, 20, 42, 60, 1514] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        link.send(None, &junk);
    }
    let mut ipv4_garbage = echo_request(GW, 1);
    ipv4_garbage[14] = 0x4f; // IHL 15: header longer than the packet
    link.send(None, &ipv4_garbage);
    collect(&link, Duration::from_millis(200));
    assert!(net.is_running(), "the poll thread survives garbage");
    // It still answers afterwards.
    link.send(None, &arp_request(GW));
    let frames = collect(&link, Duration::from_millis(300));
    assert_eq!(arp_replies(&frames).len(), 1);
    net.shutdown().unwrap();
}

#[test]
fn oversized_frames_are_dropped_and_counted() {
    let mut net = network();
    let link = net.take_link().unwrap();
    let huge = vec![0u8; 70_000];
    assert!(!link.send(None, &huge));
    assert_eq!(link.counters().from_guest_drops, 1);
    net.shutdown().unwrap();
}

#[test]
fn guest_env_and_mac() {
    let net = Network::with_routes(
        &NetworkConfig::default(),
        1,
        HostRoutes {
            ipv4: true,
            ipv6: false,
        },
    )
    .unwrap();
    assert_eq!(net.guest_mac().to_string(), "02:6d:73:00:01:02");
    let env = net.guest_env_vars();
    assert_eq!(env.len(), 3);
    assert_eq!(env[2].1, "addr=172.16.0.6/30,gw=172.16.0.5,dns=172.16.0.5");
}

#[test]
fn wait_times_out_then_wakes_on_a_frame() {
    let mut net = network_with(false);
    let link = net.take_link().unwrap();
    let t0 = Instant::now();
    assert!(
        !link.wait(Duration::from_millis(50)),
        "nothing sent, nothing came"
    );
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!(!link.wait(Duration::ZERO));
    link.send(None, &arp_request(GW));
    assert!(
        link.wait(Duration::from_secs(2)),
        "the ARP reply wakes the waiter"
    );
    assert!(link.wait(Duration::ZERO), "still readable until cleared");
    link.clear_notify();
    let reply = link.recv().expect("the frame that woke us");
    assert_eq!(arp_replies(&[reply.to_vec()]).len(), 1);
    drop(reply);
    net.shutdown().unwrap();
}

#[test]
fn room_and_pending_are_reported() {
    let mut net = network_with(false);
    let link = net.take_link().unwrap();
    assert_eq!(link.from_guest_room(), ringnet::network::RING_SLOTS);
    assert_eq!(link.to_guest_pending(), 0);
    link.send(None, &arp_request(GW));
    let deadline = Instant::now() + Duration::from_secs(2);
    while link.to_guest_pending() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(link.to_guest_pending(), 1);
    assert_eq!(
        arp_replies(&collect(&link, Duration::from_millis(50))).len(),
        1
    );
    net.shutdown().unwrap();
}
