//! Neighbour frames the gateway feeds its own smoltcp: the guest's address → MAC binding
//! it knows anyway (the guest's MAC is fixed by the slot), so a connection ringnet opens
//! towards the guest (a published port) needs no ARP or NDP round trip — and does not wait
//! on smoltcp's one-per-second discovery limit, which a previous lookup of the other
//! family may have used up.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};

use super::WireError;

const ETH: usize = 14;

/// An ARP reply from the guest (`guest_mac`, `guest`) to the gateway; returns its length.
pub fn emit_guest_arp_reply(
    buf: &mut [u8],
    (guest_mac, guest): ([u8; 6], Ipv4Addr),
    (gw_mac, gw): ([u8; 6], Ipv4Addr),
) -> Result<usize, WireError> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(guest_mac),
        source_protocol_addr: guest,
        target_hardware_addr: EthernetAddress(gw_mac),
        target_protocol_addr: gw,
    };
    let len = ETH + arp.buffer_len();
    let have = buf.len();
    let buf = buf.get_mut(..len).ok_or(WireError::Truncated {
        what: "neighbour frame buffer",
        need: len,
        have,
    })?;
    ethernet(buf, guest_mac, gw_mac, EthernetProtocol::Arp);
    arp.emit(&mut ArpPacket::new_unchecked(&mut buf[ETH..]));
    Ok(len)
}

/// A neighbour advertisement from the guest (`guest_mac`, `guest`) to the gateway, with
/// the override flag and the guest's link-layer address; returns its length.
pub fn emit_guest_neighbor_advert(
    buf: &mut [u8],
    (guest_mac, guest): ([u8; 6], Ipv6Addr),
    (gw_mac, gw): ([u8; 6], Ipv6Addr),
) -> Result<usize, WireError> {
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE | NdiscNeighborFlags::SOLICITED,
        target_addr: guest,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(guest_mac))),
    });
    let ip = Ipv6Repr {
        src_addr: guest,
        dst_addr: gw,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let len = ETH + ip.buffer_len() + icmp.buffer_len();
    let have = buf.len();
    let buf = buf.get_mut(..len).ok_or(WireError::Truncated {
        what: "neighbour frame buffer",
        need: len,
        have,
    })?;
    ethernet(buf, guest_mac, gw_mac, EthernetProtocol::Ipv6);
    let mut pkt = Ipv6Packet::new_unchecked(&mut buf[ETH..]);
    ip.emit(&mut pkt);
    icmp.emit(
        &guest,
        &gw,
        &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    Ok(len)
}

fn ethernet(buf: &mut [u8], src: [u8; 6], dst: [u8; 6], ethertype: EthernetProtocol) {
    EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(buf));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::classify::{classify, Class, NdpKind};

    #[test]
    fn the_frames_parse_as_what_they_claim() {
        let guest_mac = [2, 0x6d, 0x73, 0, 0, 2];
        let gw_mac = [2, 0x6d, 0x73, 0, 0, 1];
        let mut buf = [0u8; 128];
        let n = emit_guest_arp_reply(
            &mut buf,
            (guest_mac, Ipv4Addr::new(172, 16, 0, 2)),
            (gw_mac, Ipv4Addr::new(172, 16, 0, 1)),
        )
        .unwrap();
        match classify(&buf[..n]).unwrap() {
            Class::Arp {
                sender_mac,
                target_ip,
                ..
            } => {
                assert_eq!(sender_mac, guest_mac);
                assert_eq!(target_ip, Ipv4Addr::new(172, 16, 0, 1));
            }
            other => panic!("{other:?}"),
        }
        let g6: Ipv6Addr = "fd42:6d73:62::2".parse().unwrap();
        let n = emit_guest_neighbor_advert(
            &mut buf,
            (guest_mac, g6),
            (gw_mac, "fd42:6d73:62::1".parse().unwrap()),
        )
        .unwrap();
        match classify(&buf[..n]).unwrap() {
            Class::Ndp {
                kind,
                target,
                lladdr,
                ..
            } => {
                assert_eq!(kind, NdpKind::NeighborAdvert);
                assert_eq!(target, Some(g6));
                assert_eq!(lladdr, Some(guest_mac));
            }
            other => panic!("{other:?}"),
        }
        assert!(emit_guest_arp_reply(
            &mut buf[..20],
            (guest_mac, Ipv4Addr::LOCALHOST),
            (gw_mac, Ipv4Addr::LOCALHOST)
        )
        .is_err());
    }
}
