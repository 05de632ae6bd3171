//! Checksum and segmentation offload on the guest link.
//!
//! # Theory of operation
//!
//! ## To the guest
//!
//! smoltcp with `segmentation-offload` emits TCP super-segments (payload up to ~64 KiB)
//! and leaves the TCP checksum field unset. Two ways out:
//!
//! * **Offload** ([`prepare_tso`]): store the pseudo-header sum in the TCP checksum field
//!   and describe the frame with a [`VnetHdr`]: `NEEDS_CSUM`, `csum_start` = L4 offset,
//!   `csum_offset` = 16, and `gso_type` TCPV4/TCPV6 with `gso_size = mss` when the payload
//!   exceeds one MSS. The pseudo-header sum uses the *whole* super-frame's TCP length, the
//!   value Linux itself leaves there (`__tcp_v4_send_check`: `th->check =
//!   ~tcp_v4_check(skb->len, saddr, daddr, 0)`, i.e. the folded, uncomplemented pseudo sum).
//!   `virtio_net_hdr_to_skb` turns the header into `CHECKSUM_PARTIAL` + `gso_size`; if the
//!   kernel has to segment, `tcp_gso_segment` swaps the old length out of that sum for each
//!   segment's length (`csum_add(csum_unfold(th->check), delta)`), and a non-GSO frame gets
//!   its checksum by summing from `csum_start` (what [`csum::complete_partial`] does). For a
//!   frame that fits one MSS the header says `GSO_NONE` with `gso_size = hdr_len = 0`, as
//!   `virtio_net_hdr_from_skb` writes it. The IPv4 header checksum is recomputed.
//! * **Software** ([`segment_tcp`], [`finish_checksums`]): for a link without offload, cut
//!   the super-segment into frames of at most `mss` payload bytes (IP lengths, IPv4 id + i,
//!   sequence numbers advanced, FIN/PSH only on the last, CWR only on the first — as
//!   `tcp_gso_segment` does) and compute every checksum.
//!
//! ## From the guest
//!
//! A guest with `VIRTIO_NET_F_CSUM`/`HOST_TSO*` sends partial checksums and super-frames.
//! [`from_guest_fixup`] does not segment: smoltcp accepts one large segment, so the partial
//! checksum is completed over the whole packet (the guest's pseudo sum already counts the
//! whole TCP length, see above). Linux sets the IPv4 total length of a GSO super-frame to
//! the real length (`ip_queue_xmit` → `iph_set_totlen(iph, skb->len)`); only BIG TCP
//! (> 64 KiB, impossible on virtio-net whose GSO limit is 64 KiB) writes 0. The fixup
//! accepts a consistent length, repairs 0 from the frame length, and rejects anything else.
//!
//! ## Limits
//!
//! IPv6 extension headers and IP fragments are rejected ([`WireError::Unsupported`]). The
//! ECN GSO bit is never set (smoltcp does not do ECN) and UFO/USO are not handled. URG is
//! copied as is (smoltcp never sends urgent data).

use core::net::IpAddr;

use super::classify::{parse_l3, IpView, L3};
use super::csum;
use super::vnet::{self, VnetHdr};
use super::{need, WireError};

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
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

/// Pseudo-header sum for an L4 message of `len` bytes between `ip`'s addresses.
fn pseudo(ip: &IpView, proto: u8, len: usize) -> u16 {
    match (ip.src, ip.dst) {
        // IPv4 L4 lengths are < 65536 because the total length field is 16 bits.
        (IpAddr::V4(s), IpAddr::V4(d)) => csum::pseudo_v4(s, d, proto, len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => csum::pseudo_v6(s, d, proto, len as u32),
        _ => 0,
    }
}

/// Recompute the IPv4 header checksum of the header at `frame[14..l4]`.
fn fill_ipv4_csum(frame: &mut [u8], l4: usize) {
    frame[24..26].fill(0);
    let c = csum::to_field(csum::sum(&frame[14..l4]));
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Fill the L4 checksum at `frame[l4 + field]` for the message `frame[l4..end]`.
fn fill_l4_csum(frame: &mut [u8], ip: &IpView, proto: u8, l4: usize, end: usize, field: usize) {
    frame[l4 + field..l4 + field + 2].fill(0);
    let s = csum::sum(&frame[l4..end]);
    let s = if proto == PROTO_ICMP {
        s
    } else {
        csum::combine(pseudo(ip, proto, end - l4), s)
    };
    frame[l4 + field..l4 + field + 2].copy_from_slice(&csum::to_field(s).to_be_bytes());
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
    frame[field..field + 2].copy_from_slice(&pseudo(&ip, PROTO_TCP, tcp_len).to_be_bytes());
    if !ip.v6 {
        fill_ipv4_csum(frame, ip.l4);
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

/// Compute, in software, the IPv4 header checksum and the TCP, UDP, ICMP or ICMPv6 checksum
/// of one frame. Non-IP frames and other protocols are left as they are; for IP fragments
/// only the IPv4 header checksum is filled (the L4 checksum spans the whole datagram).
pub fn finish_checksums(frame: &mut [u8]) -> Result<(), WireError> {
    let ip = match parse_l3(frame)? {
        L3::Ip(ip) => ip,
        _ => return Ok(()),
    };
    if !ip.v6 {
        fill_ipv4_csum(frame, ip.l4);
    }
    if ip.fragment || ip.ext {
        return Ok(());
    }
    let have = ip.end - ip.l4;
    let (end, field) = match (ip.proto, ip.v6) {
        (PROTO_TCP, _) => {
            need("tcp header", 20, have)?;
            (ip.end, TCP_CSUM_OFFSET)
        }
        (PROTO_UDP, _) => {
            need("udp header", 8, have)?;
            let len = usize::from(u16::from_be_bytes([frame[ip.l4 + 4], frame[ip.l4 + 5]]));
            if len < 8 {
                return Err(WireError::BadHeader("udp length < 8"));
            }
            need("udp length", len, have)?;
            (ip.l4 + len, 6)
        }
        (PROTO_ICMP, false) | (PROTO_ICMPV6, true) => {
            need("icmp header", 4, have)?;
            (ip.end, 2)
        }
        _ => return Ok(()),
    };
    fill_l4_csum(frame, &ip, ip.proto, ip.l4, end, field);
    Ok(())
}

/// Segment a TCP super-frame into frames carrying at most `mss` payload bytes each, with
/// full checksums, handing each to `out`. `scratch` is reused (it grows once to
/// headers + `mss`). Returns the number of frames emitted. A frame whose payload fits one
/// MSS is emitted once, checksummed.
pub fn segment_tcp(
    frame: &[u8],
    mss: u16,
    scratch: &mut Vec<u8>,
    out: &mut dyn FnMut(&[u8]),
) -> Result<usize, WireError> {
    if mss == 0 {
        return Err(WireError::BadHeader("mss 0"));
    }
    let (ip, th) = tcp_view(frame)?;
    let hdrs = ip.l4 + th;
    let payload = &frame[hdrs..ip.end];
    scratch.clear();
    if payload.len() <= usize::from(mss) {
        scratch.extend_from_slice(&frame[..ip.end]);
        finish_checksums(scratch)?;
        out(scratch);
        return Ok(1);
    }
    scratch.reserve(hdrs + usize::from(mss));
    scratch.extend_from_slice(&frame[..hdrs]);
    let tcp = ip.l4;
    let seq0 = u32::from_be_bytes([
        frame[tcp + 4],
        frame[tcp + 5],
        frame[tcp + 6],
        frame[tcp + 7],
    ]);
    let flags0 = frame[tcp + 13];
    let id0 = u16::from_be_bytes([frame[18], frame[19]]);
    let count = payload.len().div_ceil(usize::from(mss));
    for (i, chunk) in payload.chunks(usize::from(mss)).enumerate() {
        scratch.truncate(hdrs);
        scratch.extend_from_slice(chunk);
        let s = &mut scratch[..];
        let l4_len = th + chunk.len();
        if ip.v6 {
            // l4_len ≤ the original payload length field, so it fits.
            s[18..20].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            let total = (tcp - 14 + l4_len) as u16;
            s[16..18].copy_from_slice(&total.to_be_bytes());
            s[18..20].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            fill_ipv4_csum(s, tcp);
        }
        let seq = seq0.wrapping_add((i * usize::from(mss)) as u32);
        s[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        s[tcp + 13] = flags;
        let end = s.len();
        fill_l4_csum(s, &ip, PROTO_TCP, tcp, end, TCP_CSUM_OFFSET);
        out(s);
    }
    Ok(count)
}

/// Make a frame from the guest valid for smoltcp: complete a `NEEDS_CSUM` partial checksum
/// over the whole packet (GSO super-frames stay one segment) and check, or repair when 0,
/// the IPv4 total length of a TSO frame.
pub fn from_guest_fixup(hdr: &VnetHdr, frame: &mut [u8]) -> Result<(), WireError> {
    let gso = hdr.gso_kind();
    if !hdr.needs_csum() {
        return match gso {
            vnet::gso::NONE => Ok(()),
            _ => Err(WireError::Unsupported("gso without NEEDS_CSUM")),
        };
    }
    let v4_tso = match gso {
        vnet::gso::NONE => false,
        vnet::gso::TCPV4 => true,
        vnet::gso::TCPV6 => false,
        vnet::gso::UDP => return Err(WireError::Unsupported("udp fragmentation offload")),
        _ => return Err(WireError::BadHeader("unknown gso type")),
    };
    if v4_tso {
        repair_ipv4_tot_len(frame)?;
    }
    let end = match parse_l3(frame)? {
        L3::Ip(ip) => {
            if gso != vnet::gso::NONE {
                let want_v6 = gso == vnet::gso::TCPV6;
                if ip.v6 != want_v6 || ip.proto != PROTO_TCP || ip.fragment {
                    return Err(WireError::BadHeader("gso type does not match the packet"));
                }
                if ip.end != frame.len() {
                    return Err(WireError::BadHeader("ip length disagrees with gso frame"));
                }
            }
            ip.end
        }
        _ if gso != vnet::gso::NONE => return Err(WireError::BadHeader("gso on non-ip frame")),
        _ => frame.len(),
    };
    csum::complete_partial(
        &mut frame[..end],
        usize::from(hdr.csum_start),
        usize::from(hdr.csum_offset),
    )
}

/// For an IPv4 TSO super-frame with total length 0, write the frame's IP length.
fn repair_ipv4_tot_len(frame: &mut [u8]) -> Result<(), WireError> {
    need("ipv4 header", 34, frame.len())?;
    if frame[12..14] != [0x08, 0x00] || frame[16..18] != [0, 0] {
        return Ok(());
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    need("ipv4 options", 14 + ihl, frame.len())?;
    let total = u16::try_from(frame.len() - 14)
        .map_err(|_| WireError::BadHeader("ipv4 tso frame > 64 KiB"))?;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    if ihl >= 20 {
        fill_ipv4_csum(frame, 14 + ihl);
    }
    Ok(())
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
