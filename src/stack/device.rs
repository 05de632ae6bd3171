//! The smoltcp `Device` over the frame pool and the `to_guest` ring.
//!
//! Receive: the poll thread hands smoltcp exactly one already-classified frame at a time
//! ([`GuestDevice::rx`]); the token releases the slot once smoltcp has read it (or on drop).
//! Transmit: each token leases a slot, lets smoltcp write the frame into it, and pushes it
//! onto `to_guest`. With an empty pool the frame is written into a scratch buffer and
//! dropped (counted), like a NIC without descriptors.
//!
//! Offload (a TAP with `IFF_VNET_HDR`, or a VMM that negotiated guest checksum/TSO): smoltcp
//! leaves TCP checksums to the device and may emit super-segments of up to 64 KiB; each TCP
//! frame leaves with a virtio-net header saying `NEEDS_CSUM` (and the GSO type and size
//! when it spans several MSS), so neither side ever computes a TCP checksum in software.
//! Without offload smoltcp segments and checksums every frame itself.
//!
//! Destination MAC: the guest link has exactly one station, the guest, whose MAC ringnet
//! knows ([`super::Addrs::guest_mac`]). Every unicast frame smoltcp transmits therefore
//! leaves with the guest's MAC as its destination, whatever smoltcp's neighbour cache holds
//! (a spoofed ARP or NDP frame that got past [`super::gateway`] could otherwise point the
//! guest's addresses at a MAC nobody answers to, and the guest's NIC would drop every frame
//! for it). Broadcast and multicast destinations (ARP requests, NDP solicitations to
//! solicited-node groups) are left as smoltcp wrote them.

use smoltcp::phy::{self, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::pool::{Frame, Pool};
use crate::ring::Ring;
use crate::wire::gso;

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
    pub offload: bool,
    /// Destination of every unicast frame.
    pub guest_mac: [u8; 6],
}

impl Drop for GuestDevice<'_> {
    fn drop(&mut self) {
        // A frame smoltcp never asked for goes back to the pool.
        if let Some(f) = self.rx.take() {
            self.pool.release(f);
        }
    }
}

pub struct RxToken<'a> {
    pool: &'a Pool,
    frame: Option<Frame>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        // Invariant: `frame` is Some from construction until consume/drop takes it.
        let frame = self.frame.take().expect("rx token holds a frame");
        let r = f(self.pool.frame(&frame));
        self.pool.release(frame);
        r
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            self.pool.release(f);
        }
    }
}

pub struct TxToken<'a> {
    pool: &'a Pool,
    to_guest: &'a Ring,
    sent: &'a mut usize,
    scratch: &'a mut Vec<u8>,
    offload: bool,
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
                self.pool.set_len(&mut frame, len);
                let r = f(self.pool.frame_mut(&mut frame));
                set_unicast_dst(self.pool.frame_mut(&mut frame), self.guest_mac);
                if self.offload {
                    let mss = self
                        .meta
                        .segmentation_offload_size
                        .map_or(u16::MAX, |m| m.get());
                    let (hdr, bytes) = self.pool.split_mut(&mut frame);
                    // Non-TCP frames are refused by prepare_tso and keep a zero header
                    // (smoltcp checksummed them).
                    if let Ok(vh) = gso::prepare_tso(bytes, mss) {
                        vh.emit(hdr);
                    }
                }
                if self.to_guest.push(self.pool, frame) {
                    *self.sent += 1;
                }
                r
            }
            other => {
                if let Some(frame) = other {
                    self.pool.release(frame);
                }
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

impl phy::Device for GuestDevice<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((
            RxToken {
                pool: self.pool,
                frame: Some(frame),
            },
            TxToken {
                pool: self.pool,
                to_guest: self.to_guest,
                sent: self.sent,
                scratch: self.scratch,
                offload: self.offload,
                guest_mac: self.guest_mac,
                meta: PacketMeta::default(),
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            pool: self.pool,
            to_guest: self.to_guest,
            sent: self.sent,
            scratch: self.scratch,
            offload: self.offload,
            guest_mac: self.guest_mac,
            meta: PacketMeta::default(),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Largest TCP super-frame handed to an offloading link (Ethernet header included; the IP
/// total length stays below 64 KiB).
pub const GSO_MAX_FRAME: usize = 65_000;

/// Capabilities for a guest link with IP MTU `mtu`: smoltcp computes checksums on transmit
/// (TCP only without `offload`) and verifies none on receive (a guest with checksum offload
/// sends partial checksums, and the link is a memory copy that cannot corrupt them).
pub fn capabilities(mtu: u32, offload: bool) -> DeviceCapabilities {
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
    if offload && (mtu as usize + 14) < GSO_MAX_FRAME {
        caps.checksum.tcp = Checksum::None;
        let gso = std::num::NonZeroUsize::new(GSO_MAX_FRAME);
        caps.segmentation.tcpv4 = gso;
        caps.segmentation.tcpv6 = gso;
        // smoltcp 0.14 drops an IPv6 packet above the device MTU before it looks at the
        // segmentation metadata ("IPv6 fragmentation support is unimplemented"). Declare
        // the largest MTU: smoltcp still never sends a segment above the guest's MSS except
        // as a super-segment the guest's GSO cuts, and everything else it sends (ARP, NDP,
        // echo replies) is no larger than what the guest sent.
        caps.max_transmission_unit = 65_520 + 14;
    } else if offload {
        caps.checksum.tcp = Checksum::None;
    }
    caps
}
