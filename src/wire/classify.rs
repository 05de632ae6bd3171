//! Sans-IO classification of guest frames, and in-place emitters for to-guest UDP/ICMP.
//!
//! # Theory of operation
//!
//! The poll thread calls [`classify`] on every frame from the guest *before* smoltcp sees it,
//! to decide where the frame goes:
//!
//! | class                | typical action of the caller                                   |
//! |----------------------|----------------------------------------------------------------|
//! | [`Class::Arp`]       | answer only for the gateway address (smoltcp `any_ip` answers all) and only when every MAC in it is the guest's |
//! | [`Class::Tcp`]       | SYN without ACK on an unknown 4-tuple: create a listening socket; then smoltcp |
//! | [`Class::Udp`]       | relay `frame[payload]` to a host socket, outside smoltcp        |
//! | [`Class::IcmpEcho`]  | policy check, then reply or relay                               |
//! | [`Class::Ndp`]       | NS for the gateway and NA to smoltcp, unless a MAC in it is not the guest's; drop the rest |
//! | [`Class::OtherIp`]   | drop (fragments, IPv6 extension headers, other protocols)       |
//! | [`Class::Other`]     | drop (802.1Q, LLDP, …)                                           |
//!
//! Parsing order: Ethernet → EtherType → IPv4/IPv6 (length fields checked against the buffer
//! with explicit [`WireError::Truncated`] errors, then `smoltcp::wire::*::new_checked` as the
//! contract that no accessor panics) → L4 header bounded by the IP length, not the frame
//! length, so Ethernet padding is ignored. No checksum is verified (a guest with checksum
//! offload sends partial ones, and nothing downstream needs them complete: see [`super`])
//! and nothing allocates.
//!
//! Neighbour frames carry every MAC they claim, so the caller can refuse the ones that would
//! repoint its neighbour cache: ARP its Ethernet source and sender hardware address, NDP its
//! Ethernet source and the address of its link-layer address option (source or target,
//! RFC 4861 §4.6.1). The NDP options are walked to the end of the message; an option of
//! length 0 or past the end, or two link-layer address options naming different addresses,
//! make the frame a [`WireError::BadHeader`] (a receiver would have to guess which one counts).
//!
//! Fragments: an IPv4 packet with MF set or a non-zero fragment offset is
//! [`Class::OtherIp`] with `fragment: true`, so it is never mistaken for a full datagram.
//! IPv6 with any extension header (including Fragment, 44) is [`Class::OtherIp`] with `proto`
//! set to the first next-header value; `fragment` is true for next-header 44.
//!
//! # Emitters
//!
//! [`emit_udp`] and [`emit_icmp_echo_reply`] write Ethernet + IP + L4 headers in front of a
//! payload the caller already placed at [`udp_payload_offset`] / [`icmp_payload_offset`]
//! (e.g. a host `recv` straight into a pool slot), and fill every checksum. IPv4: TTL 64,
//! DF, id 0 (RFC 6864 §4.1 allows any id on atomic datagrams); IPv6: hop limit 64, flow 0.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::ops::Range;

use smoltcp::wire::{
    ArpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, NdiscOption,
    NdiscOptionType, TcpPacket, UdpPacket,
};

use super::csum;
use super::{need, WireError};

/// Ethernet header length (no 802.1Q).
pub const ETH_HDR_LEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const PROTO_ICMP: u8 = 1;
pub(super) const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_IPV6_FRAG: u8 = 44;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// Who-has (1).
    Request,
    /// Is-at (2).
    Reply,
    /// Any other opcode (RARP, InARP, …).
    Other(u16),
}

/// The TCP flags the poll thread needs to demultiplex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// ICMPv6 Neighbor Discovery message kinds (RFC 4861 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpKind {
    /// Router Solicitation (133).
    RouterSolicit,
    /// Router Advertisement (134).
    RouterAdvert,
    /// Neighbor Solicitation (135).
    NeighborSolicit,
    /// Neighbor Advertisement (136).
    NeighborAdvert,
    /// Redirect (137).
    Redirect,
}

/// What a guest frame is. Ranges are byte offsets into the classified frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// ARP for IPv4 over Ethernet.
    Arp {
        /// Operation.
        op: ArpOp,
        /// Sender protocol address.
        sender_ip: Ipv4Addr,
        /// Target protocol address.
        target_ip: Ipv4Addr,
        /// Sender hardware address.
        sender_mac: [u8; 6],
        /// Ethernet source address.
        eth_src: [u8; 6],
    },
    /// A TCP segment (not a fragment).
    Tcp {
        /// Guest address and port.
        src: SocketAddr,
        /// Destination address and port.
        dst: SocketAddr,
        /// Control flags.
        flags: TcpFlags,
        /// TCP header + payload bytes, per the IP length field.
        ip_payload_len: usize,
    },
    /// A UDP datagram (not a fragment).
    Udp {
        /// Guest address and port.
        src: SocketAddr,
        /// Destination address and port.
        dst: SocketAddr,
        /// The datagram payload, bounded by the UDP length field.
        payload: Range<usize>,
    },
    /// ICMP or ICMPv6 echo request or reply.
    IcmpEcho {
        /// ICMPv6 rather than ICMPv4.
        v6: bool,
        /// Request (type 8 / 128) rather than reply (0 / 129).
        request: bool,
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Echo data.
        payload: Range<usize>,
    },
    /// An ICMPv6 Neighbor Discovery message.
    Ndp {
        /// Message type.
        kind: NdpKind,
        /// IPv6 source.
        src: Ipv6Addr,
        /// IPv6 destination.
        dst: Ipv6Addr,
        /// Target address of NS, NA and Redirect.
        target: Option<Ipv6Addr>,
        /// Ethernet source address.
        eth_src: [u8; 6],
        /// The address of the message's link-layer address options (source or target), if
        /// it has any; several options all name this one.
        lladdr: Option<[u8; 6]>,
    },
    /// Any other IP packet, including fragments and IPv6 with extension headers.
    OtherIp {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// IPv4 protocol or the first IPv6 next-header.
        proto: u8,
        /// Part of a fragmented datagram (IPv4 MF/offset, IPv6 Fragment header).
        fragment: bool,
    },
    /// Not IP or ARP.
    Other {
        /// The EtherType field.
        ethertype: u16,
    },
}

/// The IP layer of a frame, with every offset validated against the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpView {
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 protocol or IPv6 next header.
    pub proto: u8,
    /// Offset of the L4 header in the frame.
    pub l4: usize,
    /// End of the IP packet in the frame (≤ frame length).
    pub end: usize,
    /// IPv4 fragment (MF or offset) or IPv6 Fragment header.
    pub fragment: bool,
    /// IPv6 with an extension header (`proto` is its type).
    pub ext: bool,
}

/// Layer 3 of a frame.
pub(crate) enum L3 {
    Arp,
    Ip(IpView),
    Other(u16),
}

/// Parse Ethernet and the IP header. Every returned offset is within `frame`.
pub(crate) fn parse_l3(frame: &[u8]) -> Result<L3, WireError> {
    need("ethernet header", ETH_HDR_LEN, frame.len())?;
    let eth = EthernetFrame::new_checked(frame).map_err(|_| WireError::BadHeader("ethernet"))?;
    let ethertype = u16::from(eth.ethertype());
    match ethertype {
        ETHERTYPE_ARP => Ok(L3::Arp),
        ETHERTYPE_IPV4 => parse_ipv4(frame).map(L3::Ip),
        ETHERTYPE_IPV6 => parse_ipv6(frame).map(L3::Ip),
        other => Ok(L3::Other(other)),
    }
}

fn parse_ipv4(frame: &[u8]) -> Result<IpView, WireError> {
    let have = frame.len() - ETH_HDR_LEN;
    need("ipv4 header", 20, have)?;
    let b = &frame[ETH_HDR_LEN..];
    if b[0] >> 4 != 4 {
        return Err(WireError::BadHeader("ipv4 version"));
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(WireError::BadHeader("ipv4 ihl < 5"));
    }
    need("ipv4 options", ihl, have)?;
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if total < ihl {
        return Err(WireError::BadHeader("ipv4 total length < header length"));
    }
    need("ipv4 total length", total, have)?;
    let ip = Ipv4Packet::new_checked(b).map_err(|_| WireError::BadHeader("ipv4"))?;
    Ok(IpView {
        v6: false,
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        proto: u8::from(ip.next_header()),
        l4: ETH_HDR_LEN + ihl,
        end: ETH_HDR_LEN + total,
        fragment: ip.more_frags() || ip.frag_offset() != 0,
        ext: false,
    })
}

fn parse_ipv6(frame: &[u8]) -> Result<IpView, WireError> {
    let have = frame.len() - ETH_HDR_LEN;
    need("ipv6 header", 40, have)?;
    let b = &frame[ETH_HDR_LEN..];
    if b[0] >> 4 != 6 {
        return Err(WireError::BadHeader("ipv6 version"));
    }
    let total = 40 + usize::from(u16::from_be_bytes([b[4], b[5]]));
    need("ipv6 payload length", total, have)?;
    let ip = Ipv6Packet::new_checked(b).map_err(|_| WireError::BadHeader("ipv6"))?;
    let proto = u8::from(ip.next_header());
    Ok(IpView {
        v6: true,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        proto,
        l4: ETH_HDR_LEN + 40,
        end: ETH_HDR_LEN + total,
        fragment: proto == PROTO_IPV6_FRAG,
        ext: is_ipv6_ext(proto),
    })
}

/// IPv6 extension header types (RFC 8200 §4, IANA "IPv6 Extension Header Types").
fn is_ipv6_ext(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// Classify a guest frame. Never panics, never allocates, does not verify checksums.
pub fn classify(frame: &[u8]) -> Result<Class, WireError> {
    let l3 = parse_l3(frame)?;
    // parse_l3 checked the Ethernet header.
    let eth_src = EthernetFrame::new_checked(frame)
        .map_err(|_| WireError::BadHeader("ethernet"))?
        .src_addr()
        .0;
    let ip = match l3 {
        L3::Arp => return classify_arp(&frame[ETH_HDR_LEN..], eth_src),
        L3::Other(ethertype) => return Ok(Class::Other { ethertype }),
        L3::Ip(ip) => ip,
    };
    let other = Class::OtherIp {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        fragment: ip.fragment,
    };
    if ip.fragment || ip.ext {
        return Ok(other);
    }
    let l4 = &frame[ip.l4..ip.end];
    match (ip.proto, ip.v6) {
        (PROTO_TCP, _) => {
            need("tcp header", 20, l4.len())?;
            need("tcp options", usize::from(l4[12] >> 4) * 4, l4.len())?;
            let tcp = TcpPacket::new_checked(l4).map_err(|_| WireError::BadHeader("tcp"))?;
            Ok(Class::Tcp {
                src: SocketAddr::new(ip.src, tcp.src_port()),
                dst: SocketAddr::new(ip.dst, tcp.dst_port()),
                flags: TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                },
                ip_payload_len: l4.len(),
            })
        }
        (PROTO_UDP, _) => {
            need("udp header", 8, l4.len())?;
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if len < 8 {
                return Err(WireError::BadHeader("udp length < 8"));
            }
            need("udp length", len, l4.len())?;
            let udp = UdpPacket::new_checked(l4).map_err(|_| WireError::BadHeader("udp"))?;
            Ok(Class::Udp {
                src: SocketAddr::new(ip.src, udp.src_port()),
                dst: SocketAddr::new(ip.dst, udp.dst_port()),
                payload: ip.l4 + 8..ip.l4 + len,
            })
        }
        (PROTO_ICMP, false) => {
            need("icmp header", 4, l4.len())?;
            let request = match l4[0] {
                8 => true,
                0 => false,
                _ => return Ok(other),
            };
            need("icmp echo header", 8, l4.len())?;
            let icmp = Icmpv4Packet::new_checked(l4).map_err(|_| WireError::BadHeader("icmp"))?;
            Ok(Class::IcmpEcho {
                v6: false,
                request,
                src: ip.src,
                dst: ip.dst,
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq_no(),
                payload: ip.l4 + 8..ip.end,
            })
        }
        (PROTO_ICMPV6, true) => classify_icmpv6(&ip, l4, other, eth_src),
        _ => Ok(other),
    }
}

fn classify_arp(b: &[u8], eth_src: [u8; 6]) -> Result<Class, WireError> {
    need("arp header", 8, b.len())?;
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
    if b[..6] != [0x00, 0x01, 0x08, 0x00, 6, 4] {
        return Err(WireError::Unsupported("arp other than ethernet/ipv4"));
    }
    need("arp body", 28, b.len())?;
    let arp = ArpPacket::new_checked(b).map_err(|_| WireError::BadHeader("arp"))?;
    let ip4 = |s: &[u8]| Ipv4Addr::new(s[0], s[1], s[2], s[3]);
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(arp.source_hardware_addr());
    let op = match u16::from(arp.operation()) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        o => ArpOp::Other(o),
    };
    Ok(Class::Arp {
        op,
        sender_ip: ip4(arp.source_protocol_addr()),
        target_ip: ip4(arp.target_protocol_addr()),
        sender_mac,
        eth_src,
    })
}

fn classify_icmpv6(
    ip: &IpView,
    l4: &[u8],
    other: Class,
    eth_src: [u8; 6],
) -> Result<Class, WireError> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip.src, ip.dst) else {
        return Ok(other);
    };
    need("icmpv6 header", 4, l4.len())?;
    // Minimum message lengths per RFC 4443 §4 and RFC 4861 §4.1-4.5.
    let (kind, min) = match l4[0] {
        128 | 129 => (None, 8),
        133 => (Some(NdpKind::RouterSolicit), 8),
        134 => (Some(NdpKind::RouterAdvert), 16),
        135 => (Some(NdpKind::NeighborSolicit), 24),
        136 => (Some(NdpKind::NeighborAdvert), 24),
        137 => (Some(NdpKind::Redirect), 40),
        _ => return Ok(other),
    };
    need("icmpv6 message", min, l4.len())?;
    let icmp = Icmpv6Packet::new_checked(l4).map_err(|_| WireError::BadHeader("icmpv6"))?;
    match kind {
        None => Ok(Class::IcmpEcho {
            v6: true,
            request: l4[0] == 128,
            src: ip.src,
            dst: ip.dst,
            ident: icmp.echo_ident(),
            seq: icmp.echo_seq_no(),
            payload: ip.l4 + 8..ip.end,
        }),
        Some(kind) => {
            let target = match kind {
                NdpKind::RouterSolicit | NdpKind::RouterAdvert => None,
                _ => Some(icmp.target_addr()),
            };
            Ok(Class::Ndp {
                kind,
                src,
                dst,
                target,
                eth_src,
                // The fixed part is `min` bytes (checked above); options follow.
                lladdr: ndp_lladdr(&l4[min..])?,
            })
        }
    }
}

/// Walk NDP options (RFC 4861 §4.6) to the end of the message and return the address of
/// its link-layer address options (source, 1, or target, 2), if any. smoltcp reads the
/// first six bytes of such an option on an Ethernet link, whatever its length; so do we.
fn ndp_lladdr(mut opts: &[u8]) -> Result<Option<[u8; 6]>, WireError> {
    let mut found: Option<[u8; 6]> = None;
    while !opts.is_empty() {
        need("ndp option header", 2, opts.len())?;
        let len = usize::from(opts[1]) * 8;
        if len == 0 {
            return Err(WireError::BadHeader("ndp option length 0"));
        }
        need("ndp option", len, opts.len())?;
        let opt = NdiscOption::new_checked(&opts[..len])
            .map_err(|_| WireError::BadHeader("ndp option"))?;
        if matches!(
            opt.option_type(),
            NdiscOptionType::SourceLinkLayerAddr | NdiscOptionType::TargetLinkLayerAddr
        ) {
            // len >= 8: type, length and at least six address bytes.
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&opts[2..8]);
            match found {
                Some(m) if m != mac => {
                    return Err(WireError::BadHeader(
                        "ndp link-layer address options disagree",
                    ))
                }
                _ => found = Some(mac),
            }
        }
        opts = &opts[len..];
    }
    Ok(found)
}

/// Offset of the UDP payload in a frame built by [`emit_udp`].
pub const fn udp_payload_offset(v6: bool) -> usize {
    ETH_HDR_LEN + if v6 { 40 } else { 20 } + 8
}

/// Offset of the echo data in a frame built by [`emit_icmp_echo_reply`].
pub const fn icmp_payload_offset(v6: bool) -> usize {
    ETH_HDR_LEN + if v6 { 40 } else { 20 } + 8
}

/// Write Ethernet + IP headers from `(src_mac, dst_mac)` and `(src, dst)` for an L4 message
/// of `l4_len` bytes (checked to fit the IP length field); return the L4 offset.
pub(crate) fn emit_l2l3(
    buf: &mut [u8],
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (IpAddr, IpAddr),
    proto: u8,
    l4_len: usize,
) -> Result<usize, WireError> {
    let v6 = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return Err(WireError::BadHeader("mixed ipv4/ipv6 addresses")),
    };
    let ip_hdr = if v6 { 40 } else { 20 };
    let l4 = ETH_HDR_LEN + ip_hdr;
    need("emit buffer", l4 + l4_len, buf.len())?;
    let ip_len = if v6 { l4_len } else { ip_hdr + l4_len };
    let ip_len = u16::try_from(ip_len).map_err(|_| WireError::Unsupported("payload > 64 KiB"))?;
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut buf[ETH_HDR_LEN..l4]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_dscp(0);
            ip.set_ecn(0);
            ip.set_total_len(ip_len);
            ip.set_ident(0);
            ip.clear_flags();
            ip.set_dont_frag(true);
            ip.set_frag_offset(0);
            ip.set_hop_limit(64);
            ip.set_next_header(proto.into());
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            csum::fill_ipv4_header(&mut buf[ETH_HDR_LEN..l4]);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Packet::new_unchecked(&mut buf[ETH_HDR_LEN..l4]);
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_len(ip_len);
            ip.set_next_header(proto.into());
            ip.set_hop_limit(64);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
        }
        _ => return Err(WireError::BadHeader("mixed ipv4/ipv6 addresses")),
    }
    Ok(l4)
}

/// Build an Ethernet + IPv4/IPv6 + UDP frame around a payload of `payload_len` bytes already
/// at [`udp_payload_offset`]`(v6)` in `buf`; fill all checksums; return the frame length.
pub fn emit_udp(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload_len: usize,
) -> Result<usize, WireError> {
    let udp_len = 8 + payload_len;
    let ips = (src.ip(), dst.ip());
    let l4 = emit_l2l3(buf, (src_mac, dst_mac), ips, PROTO_UDP, udp_len)?;
    let end = l4 + udp_len;
    let mut udp = UdpPacket::new_unchecked(&mut buf[l4..end]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len(udp_len as u16);
    udp.set_checksum(0);
    let s = csum::combine(
        csum::pseudo(src.ip(), dst.ip(), PROTO_UDP, udp_len),
        csum::sum(&buf[l4..end]),
    );
    buf[l4 + 6..l4 + 8].copy_from_slice(&csum::to_field(s).to_be_bytes());
    Ok(end)
}

/// Build an ICMPv4 echo reply (type 0) or ICMPv6 echo reply (type 129) around `payload_len`
/// bytes of echo data already at [`icmp_payload_offset`]`(v6)`; return the frame length.
#[allow(clippy::too_many_arguments)] // mirrors the echo fields one to one
pub fn emit_icmp_echo_reply(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq: u16,
    payload_len: usize,
) -> Result<usize, WireError> {
    let len = 8 + payload_len;
    let proto = if src.is_ipv6() {
        PROTO_ICMPV6
    } else {
        PROTO_ICMP
    };
    let l4 = emit_l2l3(buf, (src_mac, dst_mac), (src, dst), proto, len)?;
    let end = l4 + len;
    let m = &mut buf[l4..end];
    m[0] = if src.is_ipv6() { 129 } else { 0 };
    m[1] = 0;
    m[2..4].fill(0);
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    let s = if src.is_ipv6() {
        csum::combine(csum::pseudo(src, dst, proto, len), csum::sum(m))
    } else {
        csum::sum(m)
    };
    m[2..4].copy_from_slice(&csum::to_field(s).to_be_bytes());
    Ok(end)
}

/// Bytes of the offending packet quoted in an ICMP error: the IPv4 error stays within 576
/// bytes (RFC 1812 §4.3.2.3), the ICMPv6 error within the IPv6 minimum MTU (RFC 4443 §2.4).
const QUOTE_V4: usize = 576 - 20 - 8;
const QUOTE_V6: usize = 1280 - 40 - 8;

/// Write an ICMP "administratively prohibited" destination unreachable (ICMPv4 type 3
/// code 13, ICMPv6 type 1 code 1) from `src` (a gateway address) to `dst` (the guest),
/// quoting the start of `offending`, the guest's IP packet. Returns the frame length.
pub fn emit_icmp_prohibited(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    offending: &[u8],
) -> Result<usize, WireError> {
    let v6 = src.is_ipv6();
    let quote = &offending[..offending.len().min(if v6 { QUOTE_V6 } else { QUOTE_V4 })];
    let len = 8 + quote.len();
    let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    let l4 = emit_l2l3(buf, (src_mac, dst_mac), (src, dst), proto, len)?;
    let end = l4 + len;
    let m = &mut buf[l4..end];
    (m[0], m[1]) = if v6 { (1, 1) } else { (3, 13) };
    m[2..8].fill(0);
    m[8..].copy_from_slice(quote);
    let s = if v6 {
        csum::combine(csum::pseudo(src, dst, proto, len), csum::sum(m))
    } else {
        csum::sum(m)
    };
    m[2..4].copy_from_slice(&csum::to_field(s).to_be_bytes());
    Ok(end)
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
