//! The smoltcp `Device` over the frame pool and the `to_guest` ring.
//!
//! Receive: the poll thread hands smoltcp exactly one already-classified frame at a time
//! ([`GuestDevice::rx`]); the slot returns to the pool when smoltcp has read it (the frame is
//! dropped with the token).
//! Transmit: each token leases a slot, lets smoltcp write the frame into it, and pushes it
//! onto `to_guest`. With an empty pool the frame is written into a scratch buffer and
//! dropped (counted), like a NIC without descriptors.
//!
//! Offload follows the guest's negotiated virtio-net offloads ([`crate::link::Offloads`],
//! from [`crate::link::GuestPort::offloads`] and later [`crate::link::Link::set_offloads`]):
//! a TAP (opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)`) takes them
//! all; the embedding link what its VMM's guest negotiated, none by default. When the guest
//! takes partial checksums smoltcp leaves TCP checksums out, and where it takes TSO for a
//! family smoltcp may emit super-segments of up to 64 KiB ([`capabilities`]); each TCP
//! frame leaves with a virtio-net header ([`crate::wire::gso::prepare_tso`]) saying
//! `NEEDS_CSUM` (and the GSO type and size when it spans several MSS), so ringnet computes
//! no TCP checksum in software; the guest's kernel does what is left. Other frames keep the
//! zeroed header of their slot (with `num_buffers = 1` for a guest with mergeable receive
//! buffers). Without offloads smoltcp segments and checksums every frame itself and the
//! header a VMM finds in front of each frame is zero.

//! Destination MAC: the guest link has exactly one station, the guest, whose MAC ringnet
//! knows ([`super::Addrs::guest_mac`]). Every unicast frame smoltcp transmits therefore
//! leaves with the guest's MAC as its destination, whatever smoltcp's neighbour cache holds
//! (a spoofed ARP or NDP frame that got past [`super::gateway`] could otherwise point the
//! guest's addresses at a MAC nobody answers to, and the guest's NIC would drop every frame
//! for it). Broadcast and multicast destinations (ARP requests, NDP solicitations to
//! solicited-node groups) are left as smoltcp wrote them.

use smoltcp::phy::{self, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::link::Offloads;
use crate::pool::{Frame, Pool};
use crate::ring::Ring;
use crate::wire::{gso, vnet};

/// The device, borrowed for one poll.
pub struct GuestDevice<'a> {
    pub pool: &'a Pool,
    pub to_guest: &'a Ring,
    /// The frame to offer smoltcp next (at most one).
    pub rx: Option<Frame>,
    pub caps: &'a DeviceCapabilities,
    /// Frames pushed onto `to_guest` during this borrow.
    pub sent: &'a mut usize,
    pub scratch: &'a mut Vec<u8>,
    pub offloads: Offloads,
    /// Destination of every unicast frame.
    pub guest_mac: [u8; 6],
}

pub struct RxToken {
    frame: Frame,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame.bytes())
    }
}

pub struct TxToken<'a> {
    pool: &'a Pool,
    to_guest: &'a Ring,
    sent: &'a mut usize,
    scratch: &'a mut Vec<u8>,
    offloads: Offloads,
    guest_mac: [u8; 6],
    meta: PacketMeta,
}

/// Point a unicast Ethernet frame at `mac`; leave group-addressed (broadcast, multicast:
/// the I/G bit of the first octet) and runt frames alone.
pub fn set_unicast_dst(frame: &mut [u8], mac: [u8; 6]) {
    if let Some(dst) = frame.get_mut(0..6) {
        if dst[0] & 1 == 0 {
            dst.copy_from_slice(&mac);
        }
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.pool.lease() {
            Some(mut frame) if len <= crate::pool::MAX_FRAME => {
                frame.set_len(len);
                let r = f(frame.bytes_mut());
                set_unicast_dst(frame.bytes_mut(), self.guest_mac);
                if self.offloads.guest_csum {
                    let mss = self
                        .meta
                        .segmentation_offload_size
                        .map_or(u16::MAX, |m| m.get());
                    let (hdr, bytes) = frame.split_mut();
                    // Non-TCP frames are refused by prepare_tso and keep a zero header
                    // (smoltcp checksummed them).
                    if let Ok(vh) = gso::prepare_tso(bytes, mss) {
                        vh.emit(hdr);
                    }
                }
                if self.offloads.mrg_rxbuf {
                    vnet::set_num_buffers(frame.hdr_mut(), 1);
                }
                if self.to_guest.push(frame) {
                    *self.sent += 1;
                }
                r
            }
            _ => {
                self.to_guest.count_drop();
                self.scratch.resize(len, 0);
                f(&mut self.scratch[..len])
            }
        }
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.meta = meta;
    }
}

impl GuestDevice<'_> {
    fn tx_token(&mut self) -> TxToken<'_> {
        TxToken {
            pool: self.pool,
            to_guest: self.to_guest,
            sent: self.sent,
            scratch: self.scratch,
            offloads: self.offloads,
            guest_mac: self.guest_mac,
            meta: PacketMeta::default(),
        }
    }
}

impl phy::Device for GuestDevice<'_> {
    type RxToken<'b>
        = RxToken
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((RxToken { frame }, self.tx_token()))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<'_>> {
        Some(self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Largest TCP super-frame handed to an offloading link (Ethernet header included; the IP
/// total length stays below 64 KiB).
pub const GSO_MAX_FRAME: usize = 65_000;

/// Capabilities for a guest link with IP MTU `mtu`: smoltcp computes checksums on transmit
/// (TCP only when the guest does not take partial checksums) and verifies none on receive
/// (a guest with checksum offload sends partial checksums, and the link is a memory copy
/// that cannot corrupt them); it emits TCP super-segments for each family the guest takes
/// them in.
pub fn capabilities(mtu: u32, offloads: Offloads) -> DeviceCapabilities {
    let offloads = offloads.effective();
    use smoltcp::phy::Checksum;
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = mtu as usize + 14;
    caps.max_burst_size = None;
    caps.checksum.ipv4 = Checksum::Tx;
    caps.checksum.tcp = Checksum::Tx;
    caps.checksum.udp = Checksum::Tx;
    caps.checksum.icmpv4 = Checksum::Tx;
    caps.checksum.icmpv6 = Checksum::Tx;
    if offloads.guest_csum {
        caps.checksum.tcp = Checksum::None;
    }
    if (mtu as usize + 14) < GSO_MAX_FRAME {
        let gso = std::num::NonZeroUsize::new(GSO_MAX_FRAME);
        if offloads.guest_tso4 {
            caps.segmentation.tcpv4 = gso;
        }
        if offloads.guest_tso6 {
            caps.segmentation.tcpv6 = gso;
            // smoltcp 0.14 drops an IPv6 packet above the device MTU before it looks at the
            // segmentation metadata ("IPv6 fragmentation support is unimplemented"). Declare
            // the largest MTU: smoltcp still never sends a segment above the guest's MSS
            // except as a super-segment the guest's GSO cuts, and everything else it sends
            // (ARP, NDP, echo replies) is no larger than what the guest sent.
            caps.max_transmission_unit = 65_520 + 14;
        }
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol,
        Ipv4Address, Ipv4Packet, Ipv4Repr,
    };

    const GUEST: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 2];
    const GW: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 1];
    const FOREIGN: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];

    #[test]
    fn unicast_destinations_become_the_guest() {
        // (destination smoltcp wrote, destination sent)
        let cases = [
            (FOREIGN, GUEST),
            (GW, GUEST),
            (GUEST, GUEST),
            ([0xff; 6], [0xff; 6]),
            ([0x01, 0x00, 0x5e, 0, 0, 1], [0x01, 0x00, 0x5e, 0, 0, 1]),
            ([0x33, 0x33, 0xff, 0, 0, 2], [0x33, 0x33, 0xff, 0, 0, 2]),
            ([0x03, 0, 0, 0, 0, 0], [0x03, 0, 0, 0, 0, 0]),
        ];
        for (dst, want) in cases {
            let mut f = [0u8; 60];
            f[..6].copy_from_slice(&dst);
            f[6..12].copy_from_slice(&GW);
            set_unicast_dst(&mut f, GUEST);
            assert_eq!(f[..6], want, "{dst:02x?}");
            assert_eq!(f[6..12], GW);
        }
        for len in 0..6 {
            let mut runt = vec![0u8; len];
            set_unicast_dst(&mut runt, GUEST);
            assert!(runt.iter().all(|&b| b == 0));
        }
    }

    fn device<'a>(
        pool: &'a Pool,
        ring: &'a Ring,
        caps: &'a DeviceCapabilities,
        sent: &'a mut usize,
        scratch: &'a mut Vec<u8>,
        rx: Option<&[u8]>,
    ) -> GuestDevice<'a> {
        let rx = rx.map(|bytes| {
            let mut f = pool.lease().expect("test pool has room");
            f.capacity_mut()[..bytes.len()].copy_from_slice(bytes);
            f.set_len(bytes.len());
            f
        });
        GuestDevice {
            pool,
            to_guest: ring,
            rx,
            caps,
            sent,
            scratch,
            offloads: Offloads::NONE,
            guest_mac: GUEST,
        }
    }

    fn ethernet(src: [u8; 6], dst: [u8; 6], ethertype: EthernetProtocol, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 14 + len];
        let repr = EthernetRepr {
            src_addr: EthernetAddress(src),
            dst_addr: EthernetAddress(dst),
            ethertype,
        };
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf));
        buf
    }

    /// smoltcp's neighbour entry for the guest poisoned on purpose (a spoofed ARP reply fed
    /// straight to it, past the gateway's admission rule): its echo reply still goes to the
    /// guest's MAC.
    #[test]
    fn poisoned_neighbour_cache_still_reaches_the_guest() {
        let pool = Pool::new(8).unwrap();
        let ring = Ring::new(8).unwrap();
        let caps = capabilities(1500, Offloads::NONE);
        let (mut sent, mut scratch) = (0usize, Vec::new());
        let gw = Ipv4Address::new(172, 16, 0, 1);
        let guest = Ipv4Address::new(172, 16, 0, 2);
        let now = Instant::from_millis(0);

        let mut dev = device(&pool, &ring, &caps, &mut sent, &mut scratch, None);
        let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(GW)));
        let mut iface = Interface::new(cfg, &mut dev, now);
        drop(dev);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(gw), 30)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());

        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(FOREIGN),
            source_protocol_addr: guest,
            target_hardware_addr: EthernetAddress(GW),
            target_protocol_addr: gw,
        };
        let mut spoof = ethernet(FOREIGN, GW, EthernetProtocol::Arp, arp.buffer_len());
        arp.emit(&mut ArpPacket::new_unchecked(&mut spoof[14..]));

        let icmp = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"ringnet",
        };
        let ip = Ipv4Repr {
            src_addr: guest,
            dst_addr: gw,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let len = ip.buffer_len() + icmp.buffer_len();
        let mut ping = ethernet(GUEST, GW, EthernetProtocol::Ipv4, len);
        let csum = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut ping[14..]);
        ip.emit(&mut p, &csum);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &csum);

        for frame in [&spoof, &ping] {
            let mut dev = device(&pool, &ring, &caps, &mut sent, &mut scratch, Some(frame));
            iface.poll_ingress_single(now, &mut dev, &mut sockets);
        }
        let reply = ring.pop().expect("an echo reply");
        let bytes = reply.bytes();
        assert_eq!(bytes[..6], GUEST, "echo reply sent to {:02x?}", &bytes[..6]);
        assert_eq!(bytes[6..12], GW);
        assert_eq!(bytes[12..14], [0x08, 0x00]);
        assert_eq!(bytes[14 + 20], 0, "ICMP type: echo reply");
        drop(reply);
        assert!(ring.pop().is_none());
        assert_eq!(pool.available(), 8);
    }
}
