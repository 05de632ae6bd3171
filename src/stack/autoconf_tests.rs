//! Guest autoconfiguration on the virtual-clock harness: DHCPv4, RS → RA, periodic RAs,
//! DHCPv6, the off switch.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, Icmpv6Packet, NdiscRepr};

use super::harness::Harness;
use crate::autoconf::{self as ac, emit_ndp_with, emit_udp_with};
use crate::config::HostRoutes;
use crate::wire::classify::{classify, Class, NdpKind};

const GUEST_MAC: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 2];
const GW_MAC: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 1];
const BOTH: HostRoutes = HostRoutes {
    ipv4: true,
    ipv6: true,
};

/// A BOOTREQUEST of type `msg` from `chaddr` (layout of busybox udhcpc's, RFC 2131 §2).
fn bootrequest(msg: u8, chaddr: [u8; 6], options: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[..3].copy_from_slice(&[1, 1, 6]);
    b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    b[28..34].copy_from_slice(&chaddr);
    b.extend_from_slice(&[0x63, 0x82, 0x53, 0x63, 53, 1, msg]);
    b.extend_from_slice(&[55, 4, 1, 3, 6, 26]);
    b.extend_from_slice(options);
    b.push(255);
    b.resize(300, 0);
    b
}

/// A DHCPv4 message from 0.0.0.0:68 to 255.255.255.255:67 in a broadcast frame from `mac`.
fn dhcp4_frame(mac: [u8; 6], msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 600];
    let src: SocketAddr = "0.0.0.0:68".parse().unwrap();
    let dst: SocketAddr = "255.255.255.255:67".parse().unwrap();
    let n = emit_udp_with(&mut buf, (mac, [0xff; 6]), (src, dst), |b| {
        b[..msg.len()].copy_from_slice(msg);
        Some(msg.len())
    })
    .unwrap();
    buf.truncate(n);
    buf
}

/// The UDP frames the engine sent from `port`: (frame, IP destination, payload).
fn udp_from(h: &Harness, port: u16) -> Vec<(Vec<u8>, std::net::IpAddr, Vec<u8>)> {
    h.frames
        .iter()
        .filter_map(|f| match classify(f).ok()? {
            Class::Udp { src, dst, payload } if src.port() == port => {
                Some((f.clone(), dst.ip(), f[payload].to_vec()))
            }
            _ => None,
        })
        .collect()
}

fn router_adverts(h: &Harness) -> usize {
    h.frames
        .iter()
        .filter(|f| {
            matches!(
                classify(f),
                Ok(Class::Ndp {
                    kind: NdpKind::RouterAdvert,
                    ..
                })
            )
        })
        .count()
}

#[test]
fn discover_offer_request_ack() {
    let mut h = Harness::new("");
    h.keep_frames = true;
    h.inject(&dhcp4_frame(GUEST_MAC, &bootrequest(1, GUEST_MAC, &[])));
    h.turn();
    let replies = udp_from(&h, 67);
    assert_eq!(replies.len(), 1, "one OFFER");
    let (frame, dst, payload) = &replies[0];
    assert_eq!(&frame[..6], &GUEST_MAC, "to the guest's MAC");
    assert_eq!(&frame[6..12], &GW_MAC);
    assert_eq!(*dst, std::net::IpAddr::V4(Ipv4Addr::BROADCAST));
    let p = DhcpPacket::new_checked(&payload[..]).unwrap();
    let offer = DhcpRepr::parse(&p).unwrap();
    assert_eq!(offer.message_type, DhcpMessageType::Offer);
    assert_eq!(offer.your_ip, Ipv4Addr::new(172, 16, 0, 2));
    assert_eq!(offer.router, Some(Ipv4Addr::new(172, 16, 0, 1)));
    assert_eq!(h.stat("dhcp_replies"), 1);

    let req = bootrequest(3, GUEST_MAC, &[50, 4, 172, 16, 0, 2, 54, 4, 172, 16, 0, 1]);
    h.inject(&dhcp4_frame(GUEST_MAC, &req));
    h.turn();
    let replies = udp_from(&h, 67);
    let p = DhcpPacket::new_checked(&replies[1].2[..]).unwrap();
    assert_eq!(
        DhcpRepr::parse(&p).unwrap().message_type,
        DhcpMessageType::Ack
    );
    let req = bootrequest(3, GUEST_MAC, &[50, 4, 10, 9, 9, 9]);
    h.inject(&dhcp4_frame(GUEST_MAC, &req));
    h.turn();
    assert_eq!(udp_from(&h, 67).len(), 3);
    assert_eq!((h.stat("dhcp_replies"), h.stat("dhcp_naks")), (2, 1));
    // No UDP flow was opened for any of it.
    assert!(h.host().ids().is_empty());
}

#[test]
fn only_the_guest_mac_gets_a_lease() {
    let mut h = Harness::new("");
    h.keep_frames = true;
    let foreign = [2, 0xde, 0xad, 0xbe, 0xef, 1];
    // A foreign Ethernet source, or the guest's frame naming a foreign chaddr.
    h.inject(&dhcp4_frame(foreign, &bootrequest(1, foreign, &[])));
    h.inject(&dhcp4_frame(GUEST_MAC, &bootrequest(1, foreign, &[])));
    h.inject(&dhcp4_frame(foreign, &bootrequest(1, GUEST_MAC, &[])));
    h.turn();
    assert!(udp_from(&h, 67).is_empty());
    assert_eq!(h.stat("dhcp_ignored"), 3);
    assert!(h.host().ids().is_empty());
}

#[test]
fn autoconf_off_drops_dhcp_and_sends_no_ra() {
    let mut h = Harness::with_routes("autoconf = false", BOTH);
    h.keep_frames = true;
    h.inject(&dhcp4_frame(GUEST_MAC, &bootrequest(1, GUEST_MAC, &[])));
    h.inject(&router_solicit());
    h.run_for(Duration::from_millis(50));
    assert!(udp_from(&h, 67).is_empty());
    assert_eq!(router_adverts(&h), 0);
    assert_eq!(
        h.stat("unsupported"),
        1,
        "DISCOVER from 0.0.0.0: spoofed as before"
    );
    assert_eq!(h.stat("ndp_filtered"), 1);
    assert_eq!(h.stat("dhcp_ignored") + h.stat("ra_sent"), 0);
}

fn guest_ll() -> Ipv6Addr {
    ac::link_local(GUEST_MAC)
}

fn router_solicit() -> Vec<u8> {
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let mut buf = vec![0u8; 200];
    let macs = (GUEST_MAC, ac::multicast_mac(all_routers));
    let n = emit_ndp_with(&mut buf, macs, (guest_ll(), all_routers), |b| {
        let repr = NdiscRepr::RouterSolicit {
            lladdr: Some(smoltcp::wire::EthernetAddress(GUEST_MAC).into()),
        };
        let len = repr.buffer_len();
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut b[..len]));
        Some(len)
    })
    .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn solicitation_answered_and_periodic_adverts_on_virtual_time() {
    let mut h = Harness::with_routes("", BOTH);
    h.keep_frames = true;
    h.turn();
    assert_eq!(router_adverts(&h), 1, "one at start");
    h.inject(&router_solicit());
    h.turn();
    assert_eq!(router_adverts(&h), 2, "answered at once");
    let ra = h
        .frames
        .iter()
        .rev()
        .find(|f| f.get(54) == Some(&134))
        .unwrap()
        .clone();
    assert_eq!(&ra[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(
        &ra[22..38],
        &ac::link_local(GW_MAC).octets(),
        "link-local source"
    );
    match NdiscRepr::parse(&Icmpv6Packet::new_checked(&ra[54..]).unwrap()).unwrap() {
        NdiscRepr::RouterAdvert {
            prefix_info, mtu, ..
        } => {
            let p = prefix_info.unwrap();
            assert_eq!(p.prefix, "fd42:6d73:62::".parse::<Ipv6Addr>().unwrap());
            assert_eq!(mtu, Some(1500));
        }
        other => panic!("{other:?}"),
    }
    // Unsolicited: at 16 s and 32 s, then every 200 s.
    let mut at = Vec::new();
    for s in 1..=700u64 {
        h.clock.advance(Duration::from_secs(1));
        let before = router_adverts(&h);
        h.turn();
        if router_adverts(&h) > before {
            at.push(s);
        }
    }
    assert_eq!(at, [16, 32, 232, 432, 632]);
    assert_eq!(h.stat("ra_sent"), 7);
}

#[test]
fn dhcp6_information_request_and_ns_for_the_router_link_local() {
    let mut h = Harness::with_routes("", BOTH);
    h.keep_frames = true;
    let req = [
        11, 1, 2, 3, 0, 1, 0, 10, 0, 3, 0, 1, 2, 0x6d, 0x73, 0, 0, 2, 0, 6, 0, 2, 0, 23,
    ];
    let mut buf = vec![0u8; 200];
    let src = SocketAddr::new(guest_ll().into(), 546);
    let dst = SocketAddr::new(ac::ALL_DHCP_SERVERS.into(), 547);
    let macs = (GUEST_MAC, ac::multicast_mac(ac::ALL_DHCP_SERVERS));
    let n = emit_udp_with(&mut buf, macs, (src, dst), |b| {
        b[..req.len()].copy_from_slice(&req);
        Some(req.len())
    })
    .unwrap();
    h.inject(&buf[..n]);
    h.turn();
    let replies = udp_from(&h, 547);
    assert_eq!(replies.len(), 1);
    let (frame, dst, payload) = &replies[0];
    assert_eq!(&frame[..6], &GUEST_MAC);
    assert_eq!(*dst, std::net::IpAddr::V6(guest_ll()));
    assert_eq!(&payload[..4], &[7, 1, 2, 3]);
    assert_eq!(
        &payload[payload.len() - 16..],
        &"fd42:6d73:62::1".parse::<Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(h.stat("dhcp6_replies"), 1);

    // The router's link-local address (the RA's source) is resolvable.
    let gw_ll = ac::link_local(GW_MAC);
    let mut snm = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    snm[13..].copy_from_slice(&gw_ll.octets()[13..]);
    let snm = Ipv6Addr::from(snm);
    let mut buf = vec![0u8; 200];
    let n = emit_ndp_with(
        &mut buf,
        (GUEST_MAC, ac::multicast_mac(snm)),
        (guest_ll(), snm),
        |b| {
            let repr = NdiscRepr::NeighborSolicit {
                target_addr: gw_ll,
                lladdr: Some(smoltcp::wire::EthernetAddress(GUEST_MAC).into()),
            };
            let len = repr.buffer_len();
            repr.emit(&mut Icmpv6Packet::new_unchecked(&mut b[..len]));
            Some(len)
        },
    )
    .unwrap();
    h.inject(&buf[..n]);
    h.turn();
    let na = h.frames.iter().any(|f| {
        matches!(classify(f), Ok(Class::Ndp { kind: NdpKind::NeighborAdvert, target, .. }) if target == Some(gw_ll))
    });
    assert!(na, "NA for the router's link-local address");
}

#[test]
fn slaac_source_admitted_only_with_autoconf() {
    for (toml, opened) in [("", 1), ("autoconf = false", 0)] {
        let mut h = Harness::with_routes(toml, BOTH);
        let slaac: Ipv6Addr = "fd42:6d73:62:0:6d:73ff:fe00:2".parse().unwrap();
        let mut buf = vec![0u8; 200];
        let src = SocketAddr::new(slaac.into(), 40000);
        let dst: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
        let n = emit_udp_with(&mut buf, (GUEST_MAC, GW_MAC), (src, dst), |b| {
            b[..4].copy_from_slice(b"ping");
            Some(4)
        })
        .unwrap();
        h.inject(&buf[..n]);
        h.turn();
        assert_eq!(h.host().ids().len(), opened, "{toml:?}");
        assert_eq!(h.stat("unsupported"), 1 - opened as u64, "{toml:?}");
    }
}

/// A TCP SYN (no options) from `src` to `dst` in a frame from the guest's MAC.
fn syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0u8; 200];
    let macs = (GUEST_MAC, GW_MAC);
    let l4 = crate::wire::classify::emit_l2l3(&mut buf, macs, (src.ip(), dst.ip()), 6, 20).unwrap();
    let t = &mut buf[l4..l4 + 20];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv6 only");
    };
    let sum = crate::wire::csum::combine(
        crate::wire::csum::pseudo_v6(s, d, 6, 20),
        crate::wire::csum::sum(t),
    );
    t[16..18].copy_from_slice(&crate::wire::csum::to_field(sum).to_be_bytes());
    buf.truncate(l4 + 20);
    buf
}

#[test]
fn slaac_syn_answered_without_neighbour_discovery() {
    let mut h = Harness::with_routes("", BOTH);
    h.keep_frames = true;
    let slaac: Ipv6Addr = "fd42:6d73:62:0:6d:73ff:fe00:2".parse().unwrap();
    let src = SocketAddr::new(slaac.into(), 40000);
    let dst: SocketAddr = "[2001:db8::7]:80".parse().unwrap();
    h.inject(&syn(src, dst));
    h.turn();
    let id = h.host().ids()[0];
    h.host().connect(id, Ok(()));
    h.turn();
    h.turn();
    let synack = h.frames.iter().any(|f| {
        matches!(classify(f), Ok(Class::Tcp { dst, flags, .. })
            if dst == src && flags.syn && flags.ack)
    });
    let ns = h.frames.iter().any(|f| {
        matches!(
            classify(f),
            Ok(Class::Ndp {
                kind: NdpKind::NeighborSolicit,
                ..
            })
        )
    });
    assert!(synack, "SYN-ACK to the SLAAC address");
    assert!(!ns, "no neighbour solicitation for it");
}
