//! Tests for the offload helpers.

use super::*;
use crate::wire::fixtures::*;
use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};

const SEQ0: u32 = 0xffff_f000;
const ID0: u16 = 0xfff0;
/// NOP, NOP, timestamps.
const TCP_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
            IpAddr::V6("fd00::15".parse::<Ipv6Addr>().unwrap()),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
        )
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A TCP super-frame as smoltcp emits it with segmentation offload: checksum field zero,
/// 12 bytes of options, `flags` as given (PSH|ACK|FIN|CWR by default in tests).
fn tcp_frame(v6: bool, payload_len: usize, flags: u8) -> Vec<u8> {
    let (src, dst) = addrs(v6);
    let ip_hdr = if v6 { 40 } else { 20 };
    let tcp_len = 32 + payload_len;
    let mut f = vec![0u8; 14 + ip_hdr + tcp_len];
    f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0xfe, 1]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len((20 + tcp_len) as u16);
            ip.set_ident(ID0);
            ip.set_dont_frag(true);
            ip.set_hop_limit(64);
            ip.set_next_header(6.into());
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut ip = Ipv6Packet::new_unchecked(&mut f[14..54]);
            ip.set_version(6);
            ip.set_payload_len(tcp_len as u16);
            ip.set_next_header(6.into());
            ip.set_hop_limit(64);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
        }
        _ => unreachable!(),
    }
    let l4 = 14 + ip_hdr;
    f[l4..l4 + 2].copy_from_slice(&443u16.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&45678u16.to_be_bytes());
    f[l4 + 4..l4 + 8].copy_from_slice(&SEQ0.to_be_bytes());
    f[l4 + 8..l4 + 12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    f[l4 + 12] = 8 << 4;
    f[l4 + 13] = flags;
    f[l4 + 14..l4 + 16].copy_from_slice(&65535u16.to_be_bytes());
    f[l4 + 20..l4 + 32].copy_from_slice(&TCP_OPTS);
    f[l4 + 32..].copy_from_slice(&pattern(payload_len));
    f
}

const ALL: u8 = TCP_FIN | TCP_PSH | TCP_CWR | 0x10;

fn tcp_ok(frame: &[u8], v6: bool) -> bool {
    let (s, d) = addrs(v6);
    let l4 = if v6 { 54 } else { 34 };
    let ip_ok = v6
        || Ipv4Packet::new_checked(&frame[14..])
            .unwrap()
            .verify_checksum();
    let tcp = TcpPacket::new_checked(&frame[l4..]).unwrap();
    ip_ok && tcp.verify_checksum(&IpAddress::from(s), &IpAddress::from(d))
}

#[test]
fn prepare_tso_v4_64k() {
    let payload = 65535 - 20 - 32;
    let mut f = tcp_frame(false, payload, ALL);
    assert_eq!(f.len(), 65549);
    let hdr = prepare_tso(&mut f, 1460).unwrap();
    assert_eq!(
        hdr,
        VnetHdr {
            flags: vnet::flags::NEEDS_CSUM,
            gso_type: vnet::gso::TCPV4,
            hdr_len: 14 + 20 + 32,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    );
    assert!(Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum());
    let (IpAddr::V4(s), IpAddr::V4(d)) = addrs(false) else {
        unreachable!()
    };
    let field = u16::from_be_bytes([f[50], f[51]]);
    assert_eq!(field, csum::pseudo_v4(s, d, 6, (32 + payload) as u16));
    // Completing it as a device would (sum from csum_start) gives a valid checksum.
    csum::complete_partial(&mut f, 34, 16).unwrap();
    assert!(tcp_ok(&f, false));
}

#[test]
fn prepare_tso_v6_and_small() {
    let mut f = tcp_frame(true, 20_000, ALL);
    let hdr = prepare_tso(&mut f, 1440).unwrap();
    assert_eq!(hdr.gso_type, vnet::gso::TCPV6);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (54, 16));
    assert_eq!((hdr.hdr_len, hdr.gso_size), (86, 1440));
    csum::complete_partial(&mut f, 54, 16).unwrap();
    assert!(tcp_ok(&f, true));

    let mut f = tcp_frame(false, 1460, ALL);
    let hdr = prepare_tso(&mut f, 1460).unwrap();
    assert_eq!(
        (hdr.flags, hdr.gso_type, hdr.gso_size, hdr.hdr_len),
        (vnet::flags::NEEDS_CSUM, vnet::gso::NONE, 0, 0)
    );
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
}

#[test]
fn prepare_tso_errors() {
    let mut f = tcp_frame(false, 100, ALL);
    assert_eq!(prepare_tso(&mut f, 0), Err(WireError::BadHeader("mss 0")));
    let mut u = UDP_DNS;
    assert_eq!(
        prepare_tso(&mut u, 1460),
        Err(WireError::Unsupported("not tcp"))
    );
    let mut a = ARP_REQUEST;
    assert!(matches!(
        prepare_tso(&mut a, 1460),
        Err(WireError::Unsupported(_))
    ));
    let mut t = TCP_SYN;
    t[20] = 0x20; // MF
    assert_eq!(
        prepare_tso(&mut t, 1460),
        Err(WireError::Unsupported("ip fragment"))
    );
    for len in 0..74 {
        let mut t = TCP_SYN;
        assert!(prepare_tso(&mut t[..len], 1460).is_err());
    }
}

fn check_segments(v6: bool, payload_len: usize, mss: u16, flags: u8) -> Result<(), TestCaseError> {
    let f = tcp_frame(v6, payload_len, flags);
    let hdrs = if v6 { 86 } else { 66 };
    let mut scratch = Vec::new();
    let mut got = Vec::new();
    let mut segs = Vec::new();
    let n = segment_tcp(&f, mss, &mut scratch, &mut |s: &[u8]| segs.push(s.to_vec())).unwrap();
    prop_assert_eq!(n, segs.len());
    prop_assert_eq!(n, payload_len.div_ceil(usize::from(mss)).max(1));
    for (i, s) in segs.iter().enumerate() {
        prop_assert!(s.len() <= hdrs + usize::from(mss));
        prop_assert!(tcp_ok(s, v6), "segment {} checksum", i);
        let t = hdrs - 32;
        let seq = u32::from_be_bytes([s[t + 4], s[t + 5], s[t + 6], s[t + 7]]);
        prop_assert_eq!(seq, SEQ0.wrapping_add((i * usize::from(mss)) as u32));
        let fl = s[t + 13];
        let last = i + 1 == n;
        prop_assert_eq!(
            fl & (TCP_FIN | TCP_PSH),
            if last { flags & (TCP_FIN | TCP_PSH) } else { 0 }
        );
        prop_assert_eq!(fl & TCP_CWR, if i == 0 { flags & TCP_CWR } else { 0 });
        prop_assert_eq!(fl & 0x10, flags & 0x10);
        prop_assert_eq!(&s[t + 20..t + 32], &TCP_OPTS);
        if !v6 {
            let ip = Ipv4Packet::new_checked(&s[14..]).unwrap();
            prop_assert_eq!(usize::from(ip.total_len()), s.len() - 14);
            prop_assert_eq!(ip.ident(), ID0.wrapping_add(i as u16));
        } else {
            let ip = Ipv6Packet::new_checked(&s[14..]).unwrap();
            prop_assert_eq!(usize::from(ip.payload_len()), s.len() - 54);
        }
        got.extend_from_slice(&s[hdrs..]);
    }
    prop_assert_eq!(got, pattern(payload_len));
    Ok(())
}

#[test]
fn segment_64k_v4() {
    check_segments(false, 65535 - 20 - 32, 1460, ALL).unwrap();
}

#[test]
fn segment_64k_v6() {
    check_segments(true, 65535 - 32, 1440, ALL).unwrap();
}

#[test]
fn segment_small_and_empty() {
    check_segments(false, 1460, 1460, ALL).unwrap();
    check_segments(true, 0, 1460, 0x10).unwrap();
    let f = tcp_frame(false, 10, 0x10);
    assert!(segment_tcp(&f, 0, &mut Vec::new(), &mut |_| {}).is_err());
    assert!(segment_tcp(&UDP_DNS, 1460, &mut Vec::new(), &mut |_| {}).is_err());
}

#[test]
fn segment_reuses_scratch() {
    let f = tcp_frame(false, 30_000, 0x10);
    let mut scratch = Vec::new();
    segment_tcp(&f, 1460, &mut scratch, &mut |_| {}).unwrap();
    let cap = scratch.capacity();
    segment_tcp(&f, 1460, &mut scratch, &mut |_| {}).unwrap();
    assert_eq!(scratch.capacity(), cap);
}

/// Zero the checksums of real frames, recompute, compare with the independently computed
/// fixture bytes.
#[test]
fn finish_checksums_matches_fixtures() {
    let cases: [(&[u8], &[usize]); 6] = [
        (&TCP_SYN, &[24, 50]),
        (&UDP_DNS, &[24, 40]),
        (&ICMPV4_ECHO_REQUEST, &[24, 36]),
        (&ICMPV6_ECHO_REQUEST, &[56]),
        (&NDP_NS, &[56]),
        (&IPV4_OPTIONS_UDP, &[24, 44]),
    ];
    for (fixture, fields) in cases {
        let mut f = fixture.to_vec();
        for &at in fields {
            f[at..at + 2].copy_from_slice(&[0xa5, 0xa5]);
        }
        finish_checksums(&mut f).unwrap();
        assert_eq!(&f[..], fixture);
    }
    let mut arp = ARP_REQUEST;
    finish_checksums(&mut arp).unwrap();
    assert_eq!(arp, ARP_REQUEST);
}

#[test]
fn finish_checksums_ignores_padding() {
    let mut f = UDP_DNS.to_vec();
    f[40..42].fill(0);
    f.extend_from_slice(&[0xa5; 9]);
    finish_checksums(&mut f).unwrap();
    assert_eq!(&f[..71], &UDP_DNS);
}

/// The guest leaves the pseudo-header sum in the field (Linux `CHECKSUM_PARTIAL`).
fn guest_partial(fixture: &[u8], field: usize, pseudo: u16) -> Vec<u8> {
    let mut f = fixture.to_vec();
    f[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    f
}

fn partial_hdr(start: u16, off: u16) -> VnetHdr {
    VnetHdr {
        flags: vnet::flags::NEEDS_CSUM,
        csum_start: start,
        csum_offset: off,
        ..VnetHdr::default()
    }
}

#[test]
fn from_guest_completes_partial() {
    let (g, h) = (Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(93, 184, 216, 34));
    let mut f = guest_partial(&TCP_SYN, 50, csum::pseudo_v4(g, h, 6, 40));
    from_guest_fixup(&partial_hdr(34, 16), &mut f).unwrap();
    assert_eq!(&f[..], &TCP_SYN);

    // UDP with Ethernet padding: the padding must not enter the sum.
    let dns = Ipv4Addr::new(10, 0, 2, 3);
    let mut f = guest_partial(&UDP_DNS, 40, csum::pseudo_v4(g, dns, 17, 37));
    f.extend_from_slice(&[0xa5; 5]);
    from_guest_fixup(&partial_hdr(34, 6), &mut f).unwrap();
    assert_eq!(&f[..71], &UDP_DNS);
}

#[test]
fn from_guest_tso_super_frame() {
    for v6 in [false, true] {
        let mut f = tcp_frame(v6, 60_000, 0x18);
        let hdr = prepare_tso(&mut f, 1448).unwrap(); // what a guest's stack leaves
        from_guest_fixup(&hdr, &mut f).unwrap();
        assert!(tcp_ok(&f, v6));
    }
}

#[test]
fn from_guest_repairs_zero_tot_len() {
    let mut f = tcp_frame(false, 60_000, 0x18);
    let hdr = prepare_tso(&mut f, 1448).unwrap();
    f[16..18].fill(0);
    from_guest_fixup(&hdr, &mut f).unwrap();
    assert_eq!(u16::from_be_bytes([f[16], f[17]]), 60_052);
    assert!(tcp_ok(&f, false));
}

#[test]
fn from_guest_rejects() {
    let mut f = tcp_frame(false, 5000, 0x18);
    let mut hdr = prepare_tso(&mut f, 1448).unwrap();
    let orig = f.clone();

    hdr.gso_type = vnet::gso::TCPV6;
    assert!(matches!(
        from_guest_fixup(&hdr, &mut f),
        Err(WireError::BadHeader(_))
    ));
    hdr.gso_type = vnet::gso::UDP;
    assert!(matches!(
        from_guest_fixup(&hdr, &mut f),
        Err(WireError::Unsupported(_))
    ));
    hdr.gso_type = 0x42;
    assert!(from_guest_fixup(&hdr, &mut f).is_err());
    hdr.gso_type = vnet::gso::TCPV4;
    hdr.flags = 0;
    assert!(from_guest_fixup(&hdr, &mut f).is_err());

    // Super-frame longer than its IPv4 total length.
    let mut padded = f.clone();
    padded.push(0);
    hdr.flags = vnet::flags::NEEDS_CSUM;
    assert!(from_guest_fixup(&hdr, &mut padded).is_err());

    // csum field past the end.
    let mut t = TCP_SYN;
    assert!(matches!(
        from_guest_fixup(&partial_hdr(34, 60), &mut t),
        Err(WireError::Truncated { .. })
    ));
    assert_eq!(f, orig, "rejected frames are not modified");

    // No flags, no GSO: nothing to do.
    let mut t = TCP_SYN;
    from_guest_fixup(&VnetHdr::default(), &mut t).unwrap();
    assert_eq!(t, TCP_SYN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn segment_round_trip(
        v6 in any::<bool>(),
        payload_len in 0usize..12_000,
        mss in 1u16..3000,
        flags in any::<u8>(),
    ) {
        // SYN/RST with data are legal on the wire; the segmenter just copies them.
        check_segments(v6, payload_len, mss, flags)?;
    }

    #[test]
    fn tso_then_complete_verifies(v6 in any::<bool>(), payload_len in 0usize..9000, mss in 1u16..9000) {
        let mut f = tcp_frame(v6, payload_len, 0x18);
        let hdr = prepare_tso(&mut f, mss).unwrap();
        prop_assert_eq!(hdr.gso_type != vnet::gso::NONE, payload_len > usize::from(mss));
        from_guest_fixup(&hdr, &mut f).unwrap();
        prop_assert!(tcp_ok(&f, v6));
    }

    #[test]
    fn offload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), h in proptest::array::uniform12(any::<u8>())) {
        let mut f = bytes.clone();
        let _ = prepare_tso(&mut f, 1460);
        let mut f = bytes.clone();
        let _ = finish_checksums(&mut f);
        let _ = segment_tcp(&bytes, 100, &mut Vec::new(), &mut |_| {});
        let hdr = VnetHdr::parse(&h).unwrap();
        let mut f = bytes;
        let _ = from_guest_fixup(&hdr, &mut f);
    }
}
