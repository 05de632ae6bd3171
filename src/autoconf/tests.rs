use super::*;

const GUEST: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 2];
const FOREIGN: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];

fn addrs() -> Addrs {
    Addrs::slot0(true, true)
}

fn udp(src: &str, dst: &str) -> Class {
    Class::Udp {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        payload: 42..342,
    }
}

#[test]
fn dhcp4_routed_only_from_the_guest_mac() {
    let a = addrs();
    let dhcp = Some(Request::Dhcp4 { payload: 42..342 });
    let ignored = Some(Request::Ignored);
    // (source, destination, Ethernet source, route)
    let cases = [
        ("0.0.0.0:68", "255.255.255.255:67", GUEST, dhcp.clone()),
        ("172.16.0.2:68", "172.16.0.1:67", GUEST, dhcp.clone()),
        ("172.16.0.2:68", "255.255.255.255:67", GUEST, dhcp),
        ("0.0.0.0:68", "255.255.255.255:67", FOREIGN, ignored.clone()),
        ("172.16.0.9:68", "255.255.255.255:67", GUEST, ignored),
        // Not DHCP to the gateway: the ordinary rules.
        ("172.16.0.2:68", "198.51.100.7:67", GUEST, None),
        ("172.16.0.2:5000", "255.255.255.255:67", GUEST, None),
        ("172.16.0.2:68", "172.16.0.1:53", GUEST, None),
    ];
    for (src, dst, mac, want) in cases {
        assert_eq!(route(&udp(src, dst), mac, &a), want, "{src} {dst} {mac:?}");
    }
    let v6_only = Addrs {
        gw4: None,
        guest4: None,
        ..a
    };
    assert_eq!(
        route(&udp("0.0.0.0:68", "255.255.255.255:67"), GUEST, &v6_only),
        Some(Request::Ignored)
    );
}

#[test]
fn rs_and_dhcp6_routed_only_from_the_guest_mac() {
    let a = addrs();
    let rs = |eth_src, lladdr| Class::Ndp {
        kind: NdpKind::RouterSolicit,
        src: "fe80::2".parse().unwrap(),
        dst: "ff02::2".parse().unwrap(),
        target: None,
        eth_src,
        lladdr,
    };
    assert_eq!(
        route(&rs(GUEST, None), GUEST, &a),
        Some(Request::RouterSolicit)
    );
    assert_eq!(
        route(&rs(GUEST, Some(GUEST)), GUEST, &a),
        Some(Request::RouterSolicit)
    );
    assert_eq!(
        route(&rs(GUEST, Some(FOREIGN)), GUEST, &a),
        Some(Request::Ignored)
    );
    assert_eq!(
        route(&rs(FOREIGN, None), FOREIGN, &a),
        Some(Request::Ignored)
    );
    let ns = Class::Ndp {
        kind: NdpKind::NeighborSolicit,
        src: "fe80::2".parse().unwrap(),
        dst: "ff02::1:ff00:1".parse().unwrap(),
        target: a.gw6,
        eth_src: GUEST,
        lladdr: None,
    };
    assert_eq!(route(&ns, GUEST, &a), None);

    let gw_ll = a.gw6_link_local().unwrap();
    for dst in [ALL_DHCP_SERVERS, a.gw6.unwrap(), gw_ll] {
        let c = udp(
            "[fe80::2]:546",
            &SocketAddr::new(dst.into(), 547).to_string(),
        );
        assert!(
            matches!(route(&c, GUEST, &a), Some(Request::Dhcp6 { .. })),
            "{dst}"
        );
        assert_eq!(route(&c, FOREIGN, &a), Some(Request::Ignored));
    }
    assert_eq!(
        route(&udp("[fe80::2]:546", "[2001:db8::1]:547"), GUEST, &a),
        None
    );
}

#[test]
fn link_local_is_modified_eui64() {
    assert_eq!(
        link_local([2, 0x6d, 0x73, 0, 0, 1]),
        "fe80::6d:73ff:fe00:1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        link_local([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
}

#[test]
fn ndp_frame_has_hop_limit_255_and_a_valid_checksum() {
    let a = addrs();
    let mut buf = [0xa5u8; 512];
    let src = a.gw6_link_local().unwrap();
    let n = emit_ndp_with(
        &mut buf,
        (a.gw_mac, multicast_mac(ALL_NODES)),
        (src, ALL_NODES),
        |b| ra::advert(&a, b),
    )
    .unwrap();
    let frame = &buf[..n];
    assert_eq!(&frame[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(frame[14 + 7], 255);
    assert_eq!(frame[14 + 6], 58);
    let icmp = &frame[54..];
    assert_eq!(icmp[0], 134);
    let len = u32::try_from(icmp.len()).unwrap();
    let s = csum::combine(csum::pseudo_v6(src, ALL_NODES, 58, len), csum::sum(icmp));
    assert_eq!(s, 0xffff, "checksum verifies");
    // The classifier reads it back as an RA with the gateway's MAC.
    match crate::wire::classify(frame).unwrap() {
        Class::Ndp {
            kind: NdpKind::RouterAdvert,
            lladdr,
            ..
        } => assert_eq!(lladdr, Some(a.gw_mac)),
        other => panic!("{other:?}"),
    }
}
