//! Frames a test guest sends through a `GuestLink` (the embedding API), built with smoltcp's
//! wire types: an Ethernet header from the guest's MAC, ARP, IPv4 around any payload, an
//! ICMPv4 echo request. Checksums are filled in; addresses are slot 0's.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

/// Slot 0's guest and gateway.
pub const GUEST_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0, 0, 2];
pub const GW_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0, 0, 1];
pub const GUEST: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
pub const GW: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// An Ethernet header from [`GUEST_MAC`] to `dst` followed by `payload_len` zero bytes.
pub fn ethernet(dst: EthernetAddress, ethertype: EthernetProtocol, payload_len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + payload_len];
    EthernetRepr {
        src_addr: EthernetAddress(GUEST_MAC),
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf));
    buf
}

/// An ARP `op` from the guest ([`GUEST_MAC`], [`GUEST`]) about `target` (target hardware
/// address zero), in an Ethernet frame to `dst`.
pub fn arp(dst: EthernetAddress, op: ArpOperation, target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(GUEST_MAC),
        source_protocol_addr: GUEST,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = ethernet(dst, EthernetProtocol::Arp, repr.buffer_len());
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[14..]));
    buf
}

/// An ARP request from the guest for `target`, broadcast.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    arp(EthernetAddress::BROADCAST, ArpOperation::Request, target)
}

/// IPv4 `src` → `dst` (TTL 64) carrying `l4` as protocol `proto`, in an Ethernet frame from
/// the guest to the gateway.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: l4.len(),
        hop_limit: 64,
    };
    let mut buf = ethernet(
        EthernetAddress(GW_MAC),
        EthernetProtocol::Ipv4,
        ip.buffer_len() + l4.len(),
    );
    let mut p = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut p, &ChecksumCapabilities::default());
    p.payload_mut().copy_from_slice(l4);
    buf
}

/// An ICMPv4 echo request (the ICMP message only).
pub fn icmpv4_echo(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut l4 = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut l4[..]),
        &ChecksumCapabilities::default(),
    );
    l4
}
