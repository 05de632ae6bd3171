//! Tests for the classifier and the in-place emitters.

use super::*;
use crate::wire::fixtures::*;
use proptest::prelude::*;
use smoltcp::wire::IpAddress;

const GMAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HMAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xfe, 0x01];
/// A MAC that is neither the guest's nor the gateway's.
const FMAC: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn arp_request() {
    assert_eq!(
        classify(&ARP_REQUEST),
        Ok(Class::Arp {
            op: ArpOp::Request,
            sender_ip: v4("10.0.2.15"),
            target_ip: v4("10.0.2.2"),
            sender_mac: GMAC,
            eth_src: GMAC,
        })
    );
}

#[test]
fn arp_non_ethernet_is_unsupported() {
    let mut f = ARP_REQUEST;
    f[18] = 8; // hlen
    assert!(matches!(classify(&f), Err(WireError::Unsupported(_))));
}

#[test]
fn tcp_syn() {
    assert_eq!(
        classify(&TCP_SYN),
        Ok(Class::Tcp {
            src: sa("10.0.2.15:45678"),
            dst: sa("93.184.216.34:443"),
            flags: TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
            ip_payload_len: 40,
        })
    );
}

#[test]
fn udp_datagram() {
    let Ok(Class::Udp { src, dst, payload }) = classify(&UDP_DNS) else {
        panic!("not udp");
    };
    assert_eq!(src, sa("10.0.2.15:53124"));
    assert_eq!(dst, sa("10.0.2.3:53"));
    assert_eq!(payload, 42..71);
    assert_eq!(&UDP_DNS[payload][..4], &[0xab, 0xcd, 0x01, 0x00]);
}

/// The class of an echo request.
fn echo_request(
    v6: bool,
    src: &str,
    dst: &str,
    ident: u16,
    seq: u16,
    payload: Range<usize>,
) -> Class {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Class::IcmpEcho {
        v6,
        request: true,
        src: ip(src),
        dst: ip(dst),
        ident,
        seq,
        payload,
    }
}

#[test]
fn icmp_echo_requests() {
    let want = echo_request(false, "10.0.2.15", "1.1.1.1", 0x1234, 7, 42..74);
    assert_eq!(classify(&ICMPV4_ECHO_REQUEST), Ok(want));
    let want = echo_request(true, "fd00::15", "2001:db8::1", 0xbeef, 3, 62..94);
    assert_eq!(classify(&ICMPV6_ECHO_REQUEST), Ok(want));
}

#[test]
fn ndp_neighbor_solicit() {
    assert_eq!(
        classify(&NDP_NS),
        Ok(Class::Ndp {
            kind: NdpKind::NeighborSolicit,
            src: v6("fd00::15"),
            dst: v6("ff02::1:ff00:1"),
            target: Some(v6("fd00::1")),
            eth_src: GMAC,
            lladdr: Some(GMAC),
        })
    );
}

#[test]
fn ndp_neighbor_advert() {
    assert_eq!(
        classify(&NDP_NA),
        Ok(Class::Ndp {
            kind: NdpKind::NeighborAdvert,
            src: v6("fd00::15"),
            dst: v6("fd00::1"),
            target: Some(v6("fd00::15")),
            eth_src: GMAC,
            lladdr: Some(GMAC),
        })
    );
}

#[test]
fn ndp_router_solicit_has_no_target() {
    assert_eq!(
        classify(&NDP_RS),
        Ok(Class::Ndp {
            kind: NdpKind::RouterSolicit,
            src: v6("fd00::15"),
            dst: v6("ff02::2"),
            target: None,
            eth_src: GMAC,
            lladdr: Some(GMAC),
        })
    );
}

#[test]
fn ndp_fixture_checksums() {
    for f in [&NDP_NS[..], &NDP_NA, &NDP_RS] {
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    }
}

/// A copy of `frame` with `mac` written at `at`.
fn with_mac(frame: &[u8], at: usize, mac: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[at..at + 6].copy_from_slice(&mac);
    f
}

/// Every MAC a neighbour frame claims is reported, whichever of them lies.
#[test]
fn neighbour_frames_report_their_macs() {
    // (frame, offset of the MAC replaced by FMAC, Ethernet source, claimed address)
    let cases = [
        (&ARP_REQUEST[..], 6, FMAC, GMAC),
        (&ARP_REQUEST, 22, GMAC, FMAC),
        (&NDP_NS, 6, FMAC, GMAC),
        (&NDP_NS, 80, GMAC, FMAC),
        (&NDP_NA, 6, FMAC, GMAC),
        (&NDP_NA, 80, GMAC, FMAC),
        (&NDP_RS, 6, FMAC, GMAC),
        (&NDP_RS, 64, GMAC, FMAC),
    ];
    for (frame, at, eth, claimed) in cases {
        let got = match classify(&with_mac(frame, at, FMAC)) {
            Ok(Class::Arp {
                eth_src,
                sender_mac,
                ..
            }) => (eth_src, Some(sender_mac)),
            Ok(Class::Ndp {
                eth_src, lladdr, ..
            }) => (eth_src, lladdr),
            other => panic!("offset {at}: {other:?}"),
        };
        assert_eq!(got, (eth, Some(claimed)), "offset {at}");
    }
}

/// `frame` (an NS or NA) with `opt` appended as NDP options, IPv6 payload length adjusted.
fn with_options(frame: &[u8], opt: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f.extend_from_slice(opt);
    let len = u16::from_be_bytes([f[18], f[19]]) + opt.len() as u16;
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f
}

/// An NS / NA fixture without its link-layer address option.
fn bare(frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..78].to_vec();
    f[18..20].copy_from_slice(&24u16.to_be_bytes());
    f
}

fn lla(ty: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![ty, 1];
    o.extend_from_slice(&mac);
    o
}

#[test]
fn ndp_link_layer_options() {
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    let mut padded = NDP_NS.to_vec();
    padded.extend_from_slice(&[0xa5; 10]);
    let long_foreign = cat(&[1, 2], &cat(&FMAC, &[0; 8]));
    // (what, frame, the address reported; None: an error)
    let cases = vec![
        ("no options", bare(&NDP_NS), Some(None)),
        ("source option", NDP_NS.to_vec(), Some(Some(GMAC))),
        ("target option", NDP_NA.to_vec(), Some(Some(GMAC))),
        (
            "source and target options agree",
            with_options(&NDP_NS, &lla(2, GMAC)),
            Some(Some(GMAC)),
        ),
        (
            "other options are skipped",
            with_options(
                &bare(&NDP_NA),
                &cat(&[14, 1, 0, 0, 0, 0, 0, 0], &lla(2, FMAC)),
            ),
            Some(Some(FMAC)),
        ),
        (
            "a 16-byte option: its first six bytes",
            with_options(&bare(&NDP_NS), &long_foreign),
            Some(Some(FMAC)),
        ),
        ("padding is not an option", padded, Some(Some(GMAC))),
        (
            "a foreign target option after the source option",
            with_options(&NDP_NS, &lla(2, FMAC)),
            None,
        ),
        (
            "a second, foreign source option",
            with_options(&NDP_NA, &lla(1, FMAC)),
            None,
        ),
        (
            "option length 0",
            with_options(&bare(&NDP_NS), &[1, 0, 0, 0, 0, 0, 0, 0]),
            None,
        ),
        (
            "option past the end",
            with_options(&bare(&NDP_NS), &cat(&[1, 2], &GMAC)),
            None,
        ),
        ("a stray byte", with_options(&NDP_NS, &[1]), None),
        (
            "a prefix option too short for one",
            with_options(&bare(&NDP_NS), &[3, 1, 0, 0, 0, 0, 0, 0]),
            None,
        ),
    ];
    for (what, frame, want) in cases {
        let got = match classify(&frame) {
            Ok(Class::Ndp { lladdr, .. }) => Some(lladdr),
            Ok(other) => panic!("{what}: {other:?}"),
            Err(e) => {
                assert!(
                    matches!(e, WireError::BadHeader(_) | WireError::Truncated { .. }),
                    "{what}: {e:?}"
                );
                None
            }
        };
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn ipv4_options() {
    let Ok(Class::Udp { src, dst, payload }) = classify(&IPV4_OPTIONS_UDP) else {
        panic!("not udp");
    };
    assert_eq!((src, dst), (sa("10.0.2.15:5000"), sa("10.0.2.3:6000")));
    assert_eq!(&IPV4_OPTIONS_UDP[payload], b"hello");
}

#[test]
fn ethernet_padding_is_ignored() {
    let mut f = [0u8; 80];
    f[..71].copy_from_slice(&UDP_DNS);
    f[71..].fill(0xa5);
    assert_eq!(classify(&f), classify(&UDP_DNS));
    let mut syn = [0xa5u8; 90];
    syn[..74].copy_from_slice(&TCP_SYN);
    assert_eq!(classify(&syn), classify(&TCP_SYN));
}

#[test]
fn ipv4_fragments_are_other_ip() {
    for (flags_hi, flags_lo) in [(0x20, 0x00), (0x00, 0x10), (0x20, 0x01)] {
        let mut f = UDP_DNS;
        f[20] = flags_hi;
        f[21] = flags_lo;
        assert_eq!(
            classify(&f),
            Ok(Class::OtherIp {
                src: IpAddr::V4(v4("10.0.2.15")),
                dst: IpAddr::V4(v4("10.0.2.3")),
                proto: 17,
                fragment: true,
            })
        );
    }
}

#[test]
fn ipv6_extension_header_is_other_ip() {
    let mut f = ICMPV6_ECHO_REQUEST;
    f[20] = 0; // hop-by-hop
    assert!(matches!(
        classify(&f),
        Ok(Class::OtherIp {
            proto: 0,
            fragment: false,
            ..
        })
    ));
    f[20] = 44;
    assert!(matches!(
        classify(&f),
        Ok(Class::OtherIp {
            proto: 44,
            fragment: true,
            ..
        })
    ));
}

#[test]
fn other_ethertype_and_icmp() {
    let mut f = TCP_SYN;
    f[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(classify(&f), Ok(Class::Other { ethertype: 0x8100 }));
    let mut f = ICMPV4_ECHO_REQUEST;
    f[34] = 3; // destination unreachable
    assert!(matches!(classify(&f), Ok(Class::OtherIp { proto: 1, .. })));
}

#[test]
fn bad_headers() {
    let mut f = TCP_SYN;
    f[14] = 0x44; // ihl 4
    assert!(matches!(classify(&f), Err(WireError::BadHeader(_))));
    let mut f = TCP_SYN;
    f[14] = 0x65; // version 6 under the IPv4 EtherType
    assert!(matches!(classify(&f), Err(WireError::BadHeader(_))));
    let mut f = TCP_SYN;
    f[46] = 0x40; // tcp data offset 4
    assert!(classify(&f).is_err());
    let mut f = UDP_DNS;
    f[38..40].copy_from_slice(&[0, 4]); // udp length 4
    assert!(matches!(classify(&f), Err(WireError::BadHeader(_))));
}

/// Every prefix shorter than the meaningful part of a fixture is an error, not a panic.
#[test]
fn truncated_frames_are_errors() {
    let cases: [(&[u8], usize); 9] = [
        (&ARP_REQUEST, 42),
        (&TCP_SYN, 74),
        (&UDP_DNS, 71),
        (&ICMPV4_ECHO_REQUEST, 74),
        (&ICMPV6_ECHO_REQUEST, 94),
        (&NDP_NS, 86),
        (&NDP_NA, 86),
        (&NDP_RS, 70),
        (&IPV4_OPTIONS_UDP, 51),
    ];
    for (frame, essential) in cases {
        assert!(classify(frame).is_ok());
        for len in 0..essential {
            assert!(
                classify(&frame[..len]).is_err(),
                "prefix {len} of {essential} accepted"
            );
        }
    }
}

#[test]
fn emit_udp_v4_fixture() {
    let (src, dst) = (sa("10.0.2.3:53"), sa("10.0.2.15:53124"));
    let mut buf = [0xa5u8; 80];
    let off = udp_payload_offset(false);
    buf[off..off + 12].copy_from_slice(b"hello, guest");
    let n = emit_udp(&mut buf, HMAC, GMAC, src, dst, 12).unwrap();
    assert_eq!(&buf[..n], &EMIT_UDP_V4);
    assert_eq!(&buf[n..], &[0xa5; 26]);
    assert_eq!(
        classify(&buf[..n]),
        Ok(Class::Udp {
            src,
            dst,
            payload: off..n
        })
    );
}

#[test]
fn emit_udp_v6_fixture() {
    let (src, dst) = (sa("[2001:db8::1]:443"), sa("[fd00::15]:50000"));
    let mut buf = [0xa5u8; 74];
    let off = udp_payload_offset(true);
    buf[off..].copy_from_slice(b"hello, guest");
    let n = emit_udp(&mut buf, HMAC, GMAC, src, dst, 12).unwrap();
    assert_eq!(buf, EMIT_UDP_V6);
    assert_eq!(n, 74);
}

#[test]
fn emit_icmp_fixtures() {
    let data: Vec<u8> = (0x10..0x30).collect();
    let mut buf = [0xa5u8; 74];
    buf[icmp_payload_offset(false)..].copy_from_slice(&data);
    let (s, d) = (IpAddr::V4(v4("1.1.1.1")), IpAddr::V4(v4("10.0.2.15")));
    let n = emit_icmp_echo_reply(&mut buf, HMAC, GMAC, s, d, 0x1234, 7, 32).unwrap();
    assert_eq!((n, buf), (74, EMIT_ICMPV4_REPLY));

    let mut buf = [0xa5u8; 94];
    buf[icmp_payload_offset(true)..].copy_from_slice(&data);
    let (s, d) = (IpAddr::V6(v6("2001:db8::1")), IpAddr::V6(v6("fd00::15")));
    let n = emit_icmp_echo_reply(&mut buf, HMAC, GMAC, s, d, 0xbeef, 3, 32).unwrap();
    assert_eq!((n, buf), (94, EMIT_ICMPV6_REPLY));
}

#[test]
fn emit_errors() {
    let mut buf = [0u8; 60];
    let (a4, a6) = (sa("10.0.0.1:1"), sa("[::1]:1"));
    assert!(matches!(
        emit_udp(&mut buf, HMAC, GMAC, a4, a6, 0),
        Err(WireError::BadHeader(_))
    ));
    assert!(matches!(
        emit_udp(&mut buf, HMAC, GMAC, a4, a4, 100),
        Err(WireError::Truncated { .. })
    ));
    let mut big = vec![0u8; 70_000];
    assert!(matches!(
        emit_udp(&mut big, HMAC, GMAC, a4, a4, 65_508),
        Err(WireError::Unsupported(_))
    ));
    assert!(emit_udp(&mut big, HMAC, GMAC, a4, a4, 65_507).is_ok());
    assert!(emit_udp(&mut big, HMAC, GMAC, a6, a6, 65_527).is_ok());
    assert!(emit_udp(&mut big, HMAC, GMAC, a6, a6, 65_528).is_err());
}

fn arb_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

fn checksums_ok(frame: &[u8], src: IpAddr, dst: IpAddr) -> bool {
    let (s, d) = (IpAddress::from(src), IpAddress::from(dst));
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            let l4 = ip.payload();
            ip.verify_checksum()
                && match u8::from(ip.next_header()) {
                    17 => UdpPacket::new_checked(l4).unwrap().verify_checksum(&s, &d),
                    1 => Icmpv4Packet::new_checked(l4).unwrap().verify_checksum(),
                    _ => false,
                }
        }
        (IpAddr::V6(s6), IpAddr::V6(d6)) => {
            let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
            let l4 = ip.payload();
            match u8::from(ip.next_header()) {
                17 => UdpPacket::new_checked(l4).unwrap().verify_checksum(&s, &d),
                58 => Icmpv6Packet::new_checked(l4)
                    .unwrap()
                    .verify_checksum(&s6, &d6),
                _ => false,
            }
        }
        _ => false,
    }
}

proptest! {
    /// Both emitters on the same inputs: UDP from port `a` to port `b`, then an echo reply
    /// with identifier `a` and sequence `b`; each classifies back and verifies.
    #[test]
    fn emitters_round_trip(
        (s, d) in arb_pair(),
        a in any::<u16>(),
        b in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1600),
    ) {
        let v6 = s.is_ipv6();
        let off = udp_payload_offset(v6);
        let mut buf = vec![0xa5u8; off + payload.len() + 16];
        buf[off..off + payload.len()].copy_from_slice(&payload);
        let (src, dst) = (SocketAddr::new(s, a), SocketAddr::new(d, b));
        let n = emit_udp(&mut buf, HMAC, GMAC, src, dst, payload.len()).unwrap();
        prop_assert_eq!(n, off + payload.len());
        prop_assert!(buf[n..].iter().all(|&x| x == 0xa5));
        prop_assert_eq!(classify(&buf[..n]), Ok(Class::Udp { src, dst, payload: off..n }));
        prop_assert!(checksums_ok(&buf[..n], s, d));

        let off = icmp_payload_offset(v6);
        let mut buf = vec![0xa5u8; off + payload.len()];
        buf[off..].copy_from_slice(&payload);
        let n = emit_icmp_echo_reply(&mut buf, HMAC, GMAC, s, d, a, b, payload.len()).unwrap();
        let class = classify(&buf[..n]).unwrap();
        // An ICMPv6 reply whose addresses happen to be anything still classifies as echo.
        prop_assert_eq!(class, Class::IcmpEcho {
            v6, request: false, src: s, dst: d, ident: a, seq: b, payload: off..n,
        });
        prop_assert!(checksums_ok(&buf[..n], s, d));
    }

    #[test]
    fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = classify(&bytes);
    }

    #[test]
    fn classify_never_panics_on_mutants(
        which in 0usize..9,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let frames: [&[u8]; 9] = [
            &ARP_REQUEST, &TCP_SYN, &UDP_DNS, &ICMPV4_ECHO_REQUEST,
            &ICMPV6_ECHO_REQUEST, &NDP_NS, &IPV4_OPTIONS_UDP, &NDP_NA, &NDP_RS,
        ];
        let mut f = frames[which].to_vec();
        for (at, val) in edits {
            let i = at % f.len();
            f[i] = val;
        }
        let _ = classify(&f);
        let _ = classify(&f[..cut % (f.len() + 1)]);
    }

    /// Arbitrary option bytes behind an NS or NA: never a panic, and a reported address is
    /// one of the link-layer options' (every one of which names it).
    #[test]
    fn ndp_options_never_panic(
        na in any::<bool>(),
        opts in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let f = with_options(&bare(if na { &NDP_NA } else { &NDP_NS }), &opts);
        if let Ok(Class::Ndp { lladdr: Some(mac), .. }) = classify(&f) {
            let mut o = &opts[..];
            let mut seen = false;
            while o.len() >= 8 && o[1] != 0 && o.len() >= usize::from(o[1]) * 8 {
                if matches!(o[0], 1 | 2) {
                    prop_assert_eq!(&o[2..8], &mac[..]);
                    seen = true;
                }
                o = &o[usize::from(o[1]) * 8..];
            }
            prop_assert!(seen);
        }
    }
}
