//! TCP segmentation offload towards the guest.
//!
//! # Theory of operation
//!
//! For a guest that takes TSO ([`crate::link::Offloads`]: a TAP, a vhost-user or embedding
//! guest that negotiated it) the device
//! tells smoltcp that it computes TCP checksums and segments
//! ([`crate::stack::device::capabilities`]), so smoltcp emits TCP super-segments (payload
//! up to ~64 KiB) and leaves the TCP checksum field unset. [`prepare_tso`], called by the
//! device for every frame it transmits to such a port, hands that work to the guest's side:
//!
//! * It stores the pseudo-header sum in the TCP checksum field and describes the frame with
//!   a [`VnetHdr`]: `NEEDS_CSUM`, `csum_start` = L4 offset, `csum_offset` = 16, and
//!   `gso_type` TCPV4/TCPV6 with `gso_size = mss` when the payload exceeds one MSS. The
//!   pseudo-header sum uses the *whole* super-frame's TCP length, the value Linux itself
//!   leaves there (`__tcp_v4_send_check`: `th->check = ~tcp_v4_check(skb->len, saddr,
//!   daddr, 0)`, i.e. the folded, uncomplemented pseudo sum).
//! * `virtio_net_hdr_to_skb` turns the header into `CHECKSUM_PARTIAL` + `gso_size`; if the
//!   kernel has to segment, `tcp_gso_segment` swaps the old length out of that sum for each
//!   segment's length (`csum_add(csum_unfold(th->check), delta)`), and a non-GSO frame gets
//!   its checksum by summing from `csum_start` to the end (virtio 1.x §5.1.6.2). For a frame
//!   that fits one MSS the header says `GSO_NONE` with `gso_size = hdr_len = 0`, as
//!   `virtio_net_hdr_from_skb` writes it. The IPv4 header checksum is recomputed.
//!
//! Frames that are not TCP are refused ([`WireError::Unsupported`]); the device then leaves
//! their header zeroed (smoltcp checksummed them). On a port without offload smoltcp
//! segments and checksums every frame itself and nothing here runs.
//!
//! Nothing here touches frames *from* the guest: their virtio-net header is not read (see
//! [`super`] for why nothing needs completing).
//!
//! ## Limits
//!
//! IPv6 extension headers and IP fragments are rejected ([`WireError::Unsupported`]). The
//! ECN GSO bit is never set (smoltcp does not do ECN).

use super::classify::{parse_l3, IpView, ETH_HDR_LEN, L3, PROTO_TCP};
use super::csum;
use super::vnet::{self, VnetHdr};
use super::{need, WireError};

/// Offset of the checksum field in the TCP header.
const TCP_CSUM_OFFSET: usize = 16;

/// Locate IP and TCP in a frame; return the IP view and the TCP header length.
fn tcp_view(frame: &[u8]) -> Result<(IpView, usize), WireError> {
    let ip = match parse_l3(frame)? {
        L3::Ip(ip) => ip,
        _ => return Err(WireError::Unsupported("not an ip frame")),
    };
    if ip.fragment {
        return Err(WireError::Unsupported("ip fragment"));
    }
    if ip.ext {
        return Err(WireError::Unsupported("ipv6 extension headers"));
    }
    if ip.proto != PROTO_TCP {
        return Err(WireError::Unsupported("not tcp"));
    }
    let l4 = &frame[ip.l4..ip.end];
    need("tcp header", 20, l4.len())?;
    let th = usize::from(l4[12] >> 4) * 4;
    if th < 20 {
        return Err(WireError::BadHeader("tcp data offset < 5"));
    }
    need("tcp options", th, l4.len())?;
    Ok((ip, th))
}

/// Prepare a TCP super-frame for a vnet-header link with TSO: store the pseudo-header sum
/// in the TCP checksum field, fix the IPv4 header checksum, and return the header to send.
pub fn prepare_tso(frame: &mut [u8], mss: u16) -> Result<VnetHdr, WireError> {
    if mss == 0 {
        return Err(WireError::BadHeader("mss 0"));
    }
    let (ip, th) = tcp_view(frame)?;
    let tcp_len = ip.end - ip.l4;
    let field = ip.l4 + TCP_CSUM_OFFSET;
    let sum = csum::pseudo(ip.src, ip.dst, PROTO_TCP, tcp_len);
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    if !ip.v6 {
        csum::fill_ipv4_header(&mut frame[ETH_HDR_LEN..ip.l4]);
    }
    let to_u16 = |v: usize| u16::try_from(v).map_err(|_| WireError::BadHeader("offset > 64 KiB"));
    let mut hdr = VnetHdr {
        flags: vnet::flags::NEEDS_CSUM,
        csum_start: to_u16(ip.l4)?,
        csum_offset: TCP_CSUM_OFFSET as u16,
        ..VnetHdr::default()
    };
    if tcp_len - th > usize::from(mss) {
        hdr.gso_type = if ip.v6 {
            vnet::gso::TCPV6
        } else {
            vnet::gso::TCPV4
        };
        hdr.gso_size = mss;
        hdr.hdr_len = to_u16(ip.l4 + th)?;
    }
    Ok(hdr)
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
