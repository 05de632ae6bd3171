//! Guest autoconfiguration at the gateway: DHCPv4, router advertisements and stateless
//! DHCPv6, so a guest configures `eth0` with its stock tools (busybox `udhcpc`, `dhclient`,
//! systemd-networkd, SLAAC) instead of reading ringnet's environment variables.
//!
//! # Theory of operation
//!
//! Sans-IO. Each protocol module takes the request's bytes and the slot's [`Addrs`] and
//! writes the reply's bytes (or nothing); [`route`] decides which guest frames are requests;
//! the emitters here wrap a reply in Ethernet + IP (+ UDP) headers. The poll thread
//! (`stack::autoconf`) only routes frames here and queues the reply frame, from the
//! gateway's MAC to the guest's MAC. Nothing here keeps state: every slot has exactly one
//! guest with one address per family, so a lease is a pure function of the slot.
//!
//! | request (from the guest's MAC only)                 | module      | answer |
//! |-----------------------------------------------------|-------------|--------|
//! | UDP 68 → 67, source 0.0.0.0 or the guest's address  | [`dhcp4`]   | OFFER / ACK / NAK (RFC 2131) |
//! | ICMPv6 router solicitation (133)                    | [`ra`]      | router advertisement (RFC 4861 §6.2.6) |
//! | UDP 546 → 547 to ff02::1:2 or a gateway address     | [`dhcp6`]   | REPLY to INFORMATION-REQUEST (RFC 8415 §18.2.6) |
//!
//! Such a frame from any other MAC is dropped and counted (`dhcp_ignored`); so is a request
//! of a family that is not active. With `autoconf = false` none of this runs: the frames
//! meet the gateway's ordinary rule (a DISCOVER from 0.0.0.0 is a spoofed source, an RS is
//! an unanswered NDP message) and no advertisement is sent.
//!
//! Addressing of replies:
//! - DHCPv4: Ethernet destination the guest's MAC, IP destination 255.255.255.255 while the
//!   client has no address (`ciaddr` 0, and always for a NAK), else `ciaddr` (RFC 2131 §4.1).
//!   udhcpc and dhclient read replies on a packet socket filtered by UDP port 68 before
//!   they have an address, so a limited broadcast in a unicast frame reaches them; the
//!   kernel accepts it too. Source: the gateway's IPv4 address, port 67.
//! - RA: from the gateway's link-local address (RFC 4861 §6.1.2: hosts drop RAs from any
//!   other source; derived from the gateway's MAC, modified EUI-64, RFC 4291 App. A) to
//!   ff02::1 in a 33:33:00:00:00:01 frame, hop limit 255.
//! - DHCPv6: from the gateway's link-local address, port 547, to the client's source
//!   address and port.
//!
//! SLAAC: a guest that takes the advertised prefix forms its own interface identifier
//! (EUI-64, stable-privacy or temporary), so with autoconf on the gateway admits flows from
//! any address of the guest's /64 but the gateway's and the Subnet-Router anycast
//! (`Addrs::is_slaac`); the /64 is the slot's alone. The first SYN or echo from such an
//! address primes smoltcp's neighbour cache for it (a synthetic NA), as for inbound
//! connects, so the reply does not wait out neighbour discovery.
//!
//! Limits: every reply fits in one small frame (< 400 bytes); one request gives at most one
//! reply, so a flooding guest gets no amplification. Unsolicited RAs ([`ra::Timer`]): three
//! quick ones at start, then every [`ra::INTERVAL`].

pub mod dhcp4;
pub mod dhcp6;
pub mod ra;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use crate::stack::Addrs;
use crate::wire::classify::{emit_l2l3, emit_udp, udp_payload_offset, Class, NdpKind};
use crate::wire::csum;

/// DHCPv4 server and client ports (RFC 2131 §4.1).
pub const DHCP4_SERVER_PORT: u16 = 67;
pub const DHCP4_CLIENT_PORT: u16 = 68;
/// DHCPv6 server and client ports (RFC 8415 §7.2).
pub const DHCP6_SERVER_PORT: u16 = 547;
pub const DHCP6_CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// All-nodes multicast (RFC 4291 §2.7.1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A guest frame that is an autoconfiguration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A DHCPv4 message at `payload` in the frame.
    Dhcp4 { payload: Range<usize> },
    /// A router solicitation.
    RouterSolicit,
    /// A DHCPv6 message at `payload`, from the client at `src`.
    Dhcp6 {
        src: SocketAddr,
        payload: Range<usize>,
    },
    /// One of the above, but not from the guest's MAC or for an inactive family: dropped.
    Ignored,
}

/// Whether the classified frame `class`, whose Ethernet source is `eth_src`, is an
/// autoconfiguration request (`None`: not one; the gateway's ordinary rule applies).
pub fn route(class: &Class, eth_src: [u8; 6], addrs: &Addrs) -> Option<Request> {
    let ours = eth_src == addrs.guest_mac;
    match class {
        Class::Udp { src, dst, payload }
            if src.port() == DHCP4_CLIENT_PORT && dst.port() == DHCP4_SERVER_PORT =>
        {
            let IpAddr::V4(s) = src.ip() else {
                return None;
            };
            let from_guest = s == Ipv4Addr::UNSPECIFIED || Some(s) == addrs.guest4;
            let to_us = match dst.ip() {
                IpAddr::V4(d) => d == Ipv4Addr::BROADCAST || Some(d) == addrs.gw4,
                IpAddr::V6(_) => false,
            };
            if !to_us {
                return None;
            }
            Some(if ours && from_guest && addrs.gw4.is_some() {
                Request::Dhcp4 {
                    payload: payload.clone(),
                }
            } else {
                Request::Ignored
            })
        }
        Class::Udp { src, dst, payload }
            if src.port() == DHCP6_CLIENT_PORT && dst.port() == DHCP6_SERVER_PORT =>
        {
            let IpAddr::V6(d) = dst.ip() else {
                return None;
            };
            if d != ALL_DHCP_SERVERS && Some(d) != addrs.gw6 && Some(d) != addrs.gw6_link_local() {
                return None;
            }
            Some(if ours && addrs.gw6.is_some() {
                Request::Dhcp6 {
                    src: *src,
                    payload: payload.clone(),
                }
            } else {
                Request::Ignored
            })
        }
        Class::Ndp {
            kind: NdpKind::RouterSolicit,
            lladdr,
            ..
        } => Some(
            if ours && lladdr.is_none_or(|m| m == addrs.guest_mac) && addrs.gw6.is_some() {
                Request::RouterSolicit
            } else {
                Request::Ignored
            },
        ),
        _ => None,
    }
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291 §2.5.1, App. A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The Ethernet multicast address of IPv6 multicast `ip` (RFC 2464 §7).
pub fn multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Build a UDP frame whose payload `build` writes (returning its length) at
/// [`udp_payload_offset`]; return the frame length.
pub fn emit_udp_with(
    buf: &mut [u8],
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (SocketAddr, SocketAddr),
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Option<usize> {
    let off = udp_payload_offset(src.is_ipv6());
    let n = build(buf.get_mut(off..)?)?;
    emit_udp(buf, src_mac, dst_mac, src, dst, n).ok()
}

/// Build an ICMPv6 frame with hop limit 255 (NDP, RFC 4861 §6.1.2) whose message `build`
/// writes (returning its length) after the IPv6 header; fill the checksum; return the
/// frame length.
pub fn emit_ndp_with(
    buf: &mut [u8],
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Option<usize> {
    const L4: usize = 14 + 40;
    let n = build(buf.get_mut(L4..)?)?;
    let l4 = emit_l2l3(buf, (src_mac, dst_mac), (src.into(), dst.into()), 58, n).ok()?;
    buf[14 + 7] = 255; // hop limit
    let m = &mut buf[l4..l4 + n];
    m.get_mut(2..4)?.fill(0);
    let len = u32::try_from(n).ok()?;
    let s = csum::combine(csum::pseudo_v6(src, dst, 58, len), csum::sum(m));
    m[2..4].copy_from_slice(&csum::to_field(s).to_be_bytes());
    Some(l4 + n)
}

#[cfg(test)]
mod tests;
