//! Tests for the TSO preparation.

use super::*;
use crate::wire::fixtures::*;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};

const SEQ0: u32 = 0xffff_f000;
const ID0: u16 = 0xfff0;
/// FIN, PSH, ACK, CWR.
const ALL: u8 = 0x01 | 0x08 | 0x10 | 0x80;
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
/// 12 bytes of options, `flags` as given.
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

/// What the guest's side does with `NEEDS_CSUM` (virtio 1.x §5.1.6.2): sum from
/// `csum_start` to the end (the field holds the pseudo-header sum) and store the complement
/// at `csum_start + csum_offset`.
fn complete_as_device(frame: &mut [u8], hdr: &VnetHdr) {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    let s = csum::sum(&frame[start..]);
    frame[at..at + 2].copy_from_slice(&csum::to_field(s).to_be_bytes());
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
    complete_as_device(&mut f, &hdr);
    assert!(tcp_ok(&f, false));
}

#[test]
fn prepare_tso_v6_and_small() {
    let mut f = tcp_frame(true, 20_000, ALL);
    let hdr = prepare_tso(&mut f, 1440).unwrap();
    assert_eq!(hdr.gso_type, vnet::gso::TCPV6);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (54, 16));
    assert_eq!((hdr.hdr_len, hdr.gso_size), (86, 1440));
    complete_as_device(&mut f, &hdr);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tso_then_complete_verifies(v6 in any::<bool>(), payload_len in 0usize..9000, mss in 1u16..9000) {
        let mut f = tcp_frame(v6, payload_len, 0x18);
        let hdr = prepare_tso(&mut f, mss).unwrap();
        prop_assert_eq!(hdr.gso_type != vnet::gso::NONE, payload_len > usize::from(mss));
        complete_as_device(&mut f, &hdr);
        prop_assert!(tcp_ok(&f, v6));
    }

    #[test]
    fn prepare_tso_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
        mss in any::<u16>(),
    ) {
        let _ = prepare_tso(&mut bytes, mss);
    }
}
