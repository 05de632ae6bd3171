//! The gateway's admission rule: what happens to each classified guest frame.
//!
//! Pure: a [`Class`] and the link's addresses in, a [`Verdict`] out. ringnet answers only
//! for itself — ARP and NDP only for the gateway's own addresses (so the guest's duplicate
//! address detection and ARP probes for other hosts go unanswered), ICMP echo only when
//! addressed to a gateway address — and admits flows only from the guest's own addresses.
//! The gateway's IPv6 addresses are its global one and its link-local one (the source of
//! its router advertisements, [`crate::autoconf`]). Autoconfiguration requests are routed
//! before this rule runs (`crate::autoconf::route`) when `autoconf` is on.
//!
//! Neighbour frames are also the only way anything on the guest link changes smoltcp's
//! neighbour cache (smoltcp 0.14 fills it from ARP aimed at it and from NDP NS/NA with a
//! link-layer address option; ordinary IP frames only extend an entry whose MAC they
//! match). The guest's MAC is known, so an ARP or NDP frame naming any other MAC — as its
//! Ethernet source, its ARP sender hardware address or its NDP link-layer address option —
//! is spoofed: it would repoint the entry for the address it claims (the guest's, typically)
//! and cut the guest off until the entry is refreshed. Such frames are dropped as
//! [`Drop::NeighSpoofed`] before any other rule looks at them. (The transmit side does not
//! rely on this alone: the device writes the guest's MAC into every unicast frame it sends;
//! see [`super::device`].)

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::Addrs;
use crate::wire::classify::{ArpOp, Class, NdpKind, TcpFlags};

/// Why a frame was dropped (each has a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// ARP not about the gateway's IPv4 address.
    Arp,
    /// NDP other than a solicitation for the gateway or an advertisement.
    Ndp,
    /// Other protocols, fragments, spoofed sources, echo replies.
    Unsupported,
    /// ARP or NDP naming a MAC other than the guest's (Ethernet source, ARP sender hardware
    /// address, NDP link-layer address option).
    NeighSpoofed,
}

/// What to do with a guest frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand to smoltcp as it is (ARP/NDP/echo for the gateway).
    Smoltcp,
    /// A TCP segment of a guest flow: flow table first, then smoltcp.
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        flags: TcpFlags,
    },
    /// A UDP datagram to relay.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
    },
    /// An echo request to relay through a ping socket; `msg` is the ICMP message.
    Echo {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        msg: Range<usize>,
    },
    Drop(Drop),
}

/// Decide the fate of one classified guest frame.
pub fn verdict(class: &Class, addrs: &Addrs) -> Verdict {
    let foreign = |mac: [u8; 6]| mac != addrs.guest_mac;
    match *class {
        Class::Arp {
            sender_mac,
            eth_src,
            ..
        } if foreign(sender_mac) || foreign(eth_src) => Verdict::Drop(Drop::NeighSpoofed),
        Class::Ndp {
            eth_src, lladdr, ..
        } if foreign(eth_src) || lladdr.is_some_and(foreign) => Verdict::Drop(Drop::NeighSpoofed),
        Class::Arp { op, target_ip, .. } => {
            if Some(target_ip) == addrs.gw4 && matches!(op, ArpOp::Request | ArpOp::Reply) {
                Verdict::Smoltcp
            } else {
                Verdict::Drop(Drop::Arp)
            }
        }
        Class::Ndp { kind, target, .. } => match kind {
            NdpKind::NeighborSolicit
                if addrs.gw6.is_some()
                    && (target == addrs.gw6 || target == addrs.gw6_link_local()) =>
            {
                Verdict::Smoltcp
            }
            NdpKind::NeighborAdvert if addrs.gw6.is_some() => Verdict::Smoltcp,
            _ => Verdict::Drop(Drop::Ndp),
        },
        Class::IcmpEcho {
            request: true,
            src,
            dst,
            ident,
            ref payload,
            ..
        } if addrs.is_guest(src) => {
            if addrs.is_gateway(dst) {
                Verdict::Smoltcp
            } else {
                Verdict::Echo {
                    src,
                    dst,
                    ident,
                    msg: payload.start.saturating_sub(8)..payload.end,
                }
            }
        }
        Class::Tcp {
            src, dst, flags, ..
        } if addrs.is_guest(src.ip()) => Verdict::Tcp { src, dst, flags },
        Class::Udp {
            src,
            dst,
            ref payload,
        } if addrs.is_guest(src.ip()) => Verdict::Udp {
            src,
            dst,
            payload: payload.clone(),
        },
        _ => Verdict::Drop(Drop::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addrs() -> Addrs {
        Addrs::slot0(true, true)
    }

    fn arp(op: ArpOp, target: [u8; 4]) -> Class {
        Class::Arp {
            op,
            sender_ip: Ipv4Addr::new(172, 16, 0, 2),
            target_ip: Ipv4Addr::from(target),
            sender_mac: [2, 0x6d, 0x73, 0, 0, 2],
            eth_src: [2, 0x6d, 0x73, 0, 0, 2],
        }
    }

    #[test]
    fn arp_only_for_the_gateway() {
        let a = addrs();
        assert_eq!(
            verdict(&arp(ArpOp::Request, [172, 16, 0, 1]), &a),
            Verdict::Smoltcp
        );
        assert_eq!(
            verdict(&arp(ArpOp::Reply, [172, 16, 0, 1]), &a),
            Verdict::Smoltcp
        );
        for other in [
            [172, 16, 0, 2],
            [172, 16, 0, 3],
            [10, 0, 0, 1],
            [198, 51, 100, 7],
        ] {
            assert_eq!(
                verdict(&arp(ArpOp::Request, other), &a),
                Verdict::Drop(Drop::Arp),
                "{other:?}"
            );
        }
        assert_eq!(
            verdict(&arp(ArpOp::Other(3), [172, 16, 0, 1]), &a),
            Verdict::Drop(Drop::Arp)
        );
        let v6_only = Addrs {
            gw4: None,
            guest4: None,
            ..a
        };
        assert_eq!(
            verdict(&arp(ArpOp::Request, [172, 16, 0, 1]), &v6_only),
            Verdict::Drop(Drop::Arp)
        );
    }

    fn ndp(kind: NdpKind, target: Option<Ipv6Addr>) -> Class {
        Class::Ndp {
            kind,
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:ff00:1".parse().unwrap(),
            target,
            eth_src: [2, 0x6d, 0x73, 0, 0, 2],
            lladdr: None,
        }
    }

    #[test]
    fn ndp_only_for_the_gateway() {
        let a = addrs();
        let gw: Ipv6Addr = "fd42:6d73:62::1".parse().unwrap();
        let guest: Ipv6Addr = "fd42:6d73:62::2".parse().unwrap();
        assert_eq!(
            verdict(&ndp(NdpKind::NeighborSolicit, Some(gw)), &a),
            Verdict::Smoltcp
        );
        // The router's link-local address (the source of its RAs) is the gateway's too.
        let ll = crate::autoconf::link_local(a.gw_mac);
        assert_eq!(
            verdict(&ndp(NdpKind::NeighborSolicit, Some(ll)), &a),
            Verdict::Smoltcp
        );
        // Duplicate address detection for the guest's own address: no answer.
        assert_eq!(
            verdict(&ndp(NdpKind::NeighborSolicit, Some(guest)), &a),
            Verdict::Drop(Drop::Ndp)
        );
        assert_eq!(
            verdict(&ndp(NdpKind::NeighborAdvert, Some(guest)), &a),
            Verdict::Smoltcp
        );
        for k in [
            NdpKind::RouterSolicit,
            NdpKind::RouterAdvert,
            NdpKind::Redirect,
        ] {
            assert_eq!(verdict(&ndp(k, None), &a), Verdict::Drop(Drop::Ndp));
        }
    }

    const GUEST: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 2];
    const GATEWAY: [u8; 6] = [2, 0x6d, 0x73, 0, 0, 1];
    const FOREIGN: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];
    const BCAST: [u8; 6] = [0xff; 6];

    /// `None`: handed to smoltcp.
    fn dropped(v: Verdict) -> Option<Drop> {
        match v {
            Verdict::Drop(d) => Some(d),
            Verdict::Smoltcp => None,
            other => panic!("neither smoltcp nor a drop: {other:?}"),
        }
    }

    #[test]
    fn arp_naming_a_foreign_mac_is_spoofed() {
        use ArpOp::{Reply as Rep, Request as Req};
        let a = addrs();
        let (g4, gw4, other) = ([172, 16, 0, 2], [172, 16, 0, 1], [172, 16, 0, 3]);
        let spoofed = Some(Drop::NeighSpoofed);
        // (op, sender IP, target IP, sender MAC, Ethernet source, verdict)
        let cases = [
            (Req, g4, gw4, GUEST, GUEST, None),
            (Rep, g4, gw4, GUEST, GUEST, None),
            // The guest's address claimed for another MAC, in the body or the header.
            (Req, g4, gw4, FOREIGN, GUEST, spoofed),
            (Rep, g4, gw4, FOREIGN, GUEST, spoofed),
            (Req, g4, gw4, GUEST, FOREIGN, spoofed),
            (Rep, g4, gw4, FOREIGN, FOREIGN, spoofed),
            // Another address for a foreign MAC; the gateway's own MAC; broadcast.
            (Rep, [172, 16, 0, 9], gw4, FOREIGN, FOREIGN, spoofed),
            (Rep, g4, gw4, GATEWAY, GUEST, spoofed),
            (Req, g4, gw4, BCAST, GUEST, spoofed),
            // Spoofed is spoofed (and counted so) whatever it asks for.
            (Req, g4, other, FOREIGN, FOREIGN, spoofed),
            (ArpOp::Other(3), g4, gw4, FOREIGN, GUEST, spoofed),
            // Genuine but not for the gateway (a probe, DAD): the gateway-only rule.
            (Req, g4, other, GUEST, GUEST, Some(Drop::Arp)),
            (Req, [0, 0, 0, 0], g4, GUEST, GUEST, Some(Drop::Arp)),
        ];
        for (op, sender, target, sender_mac, eth_src, want) in cases {
            let class = Class::Arp {
                op,
                sender_ip: Ipv4Addr::from(sender),
                target_ip: Ipv4Addr::from(target),
                sender_mac,
                eth_src,
            };
            assert_eq!(dropped(verdict(&class, &a)), want, "{class:?}");
        }
    }

    #[test]
    fn ndp_naming_a_foreign_mac_is_spoofed() {
        use NdpKind::{NeighborAdvert as Na, NeighborSolicit as Ns};
        let a = addrs();
        let (gw, g6, ll) = (Some("fd42:6d73:62::1"), "fd42:6d73:62::2", "fe80::2");
        let spoofed = Some(Drop::NeighSpoofed);
        // (kind, source, target, Ethernet source, link-layer option, verdict)
        let cases = [
            (Ns, g6, gw, GUEST, Some(GUEST), None),
            (Ns, g6, gw, GUEST, None, None),
            (Na, g6, Some(g6), GUEST, Some(GUEST), None),
            (Na, g6, Some(g6), GUEST, None, None),
            // The guest's address claimed for another MAC, in the option or the header.
            (Ns, g6, gw, GUEST, Some(FOREIGN), spoofed),
            (Na, g6, Some(g6), GUEST, Some(FOREIGN), spoofed),
            (Ns, g6, gw, FOREIGN, Some(GUEST), spoofed),
            (Na, g6, Some(g6), FOREIGN, None, spoofed),
            // Other sources and other messages naming a MAC not the guest's.
            (Na, ll, Some(g6), GUEST, Some(GATEWAY), spoofed),
            (Ns, "::", Some(g6), FOREIGN, None, spoofed),
            (
                NdpKind::RouterSolicit,
                ll,
                None,
                GUEST,
                Some(FOREIGN),
                spoofed,
            ),
            (NdpKind::Redirect, g6, gw, GUEST, Some(BCAST), spoofed),
            // Genuine ones meet the gateway-only rules (DAD, RS: unanswered).
            (Ns, "::", Some(g6), GUEST, None, Some(Drop::Ndp)),
            (
                NdpKind::RouterSolicit,
                ll,
                None,
                GUEST,
                Some(GUEST),
                Some(Drop::Ndp),
            ),
        ];
        for (kind, src, target, eth_src, lladdr, want) in cases {
            let class = Class::Ndp {
                kind,
                src: src.parse().unwrap(),
                dst: "ff02::1:ff00:1".parse().unwrap(),
                target: target.map(|t| t.parse().unwrap()),
                eth_src,
                lladdr,
            };
            assert_eq!(dropped(verdict(&class, &a)), want, "{class:?}");
        }
    }

    fn echo(src: &str, dst: &str) -> Class {
        Class::IcmpEcho {
            v6: false,
            request: true,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ident: 7,
            seq: 1,
            payload: 42..50,
        }
    }

    #[test]
    fn echo_answered_only_for_gateway_and_relayed_otherwise() {
        let a = addrs();
        assert_eq!(
            verdict(&echo("172.16.0.2", "172.16.0.1"), &a),
            Verdict::Smoltcp
        );
        assert_eq!(
            verdict(&echo("fd42:6d73:62::2", "fd42:6d73:62::1"), &a),
            Verdict::Smoltcp
        );
        assert_eq!(
            verdict(&echo("172.16.0.2", "198.51.100.7"), &a),
            Verdict::Echo {
                src: "172.16.0.2".parse().unwrap(),
                dst: "198.51.100.7".parse().unwrap(),
                ident: 7,
                msg: 34..50,
            }
        );
        // Spoofed source: dropped, never relayed.
        assert_eq!(
            verdict(&echo("172.16.0.9", "198.51.100.7"), &a),
            Verdict::Drop(Drop::Unsupported)
        );
        // Echo replies from the guest are not ours to handle.
        let mut reply = echo("172.16.0.2", "172.16.0.1");
        if let Class::IcmpEcho { request, .. } = &mut reply {
            *request = false;
        }
        assert_eq!(verdict(&reply, &a), Verdict::Drop(Drop::Unsupported));
    }

    #[test]
    fn flows_only_from_the_guest() {
        let a = addrs();
        let tcp = |src: &str| Class::Tcp {
            src: src.parse().unwrap(),
            dst: "198.51.100.7:80".parse().unwrap(),
            flags: TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
            ip_payload_len: 40,
        };
        assert!(matches!(
            verdict(&tcp("172.16.0.2:40000"), &a),
            Verdict::Tcp { .. }
        ));
        assert_eq!(
            verdict(&tcp("172.16.0.6:40000"), &a),
            Verdict::Drop(Drop::Unsupported)
        );
        let udp = Class::Udp {
            src: "[fd42:6d73:62::2]:5353".parse().unwrap(),
            dst: "[2001:db8::7]:53".parse().unwrap(),
            payload: 62..70,
        };
        assert!(matches!(verdict(&udp, &a), Verdict::Udp { .. }));
        let other = Class::OtherIp {
            src: "172.16.0.2".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            proto: 47,
            fragment: false,
        };
        assert_eq!(verdict(&other, &a), Verdict::Drop(Drop::Unsupported));
    }

    #[test]
    fn slaac_addresses_of_the_guest_prefix_only_with_autoconf() {
        let a = addrs();
        let udp = |src: &str| Class::Udp {
            src: src.parse().unwrap(),
            dst: "[2001:db8::7]:53".parse().unwrap(),
            payload: 62..70,
        };
        let slaac = "[fd42:6d73:62:0:6d:73ff:fe00:2]:5353";
        assert!(matches!(verdict(&udp(slaac), &a), Verdict::Udp { .. }));
        // Not the gateway's, not the subnet-router anycast, not another /64.
        for other in [
            "[fd42:6d73:62::1]:5353",
            "[fd42:6d73:62::]:5353",
            "[fd42:6d73:62:1::2]:5353",
        ] {
            assert_eq!(
                verdict(&udp(other), &a),
                Verdict::Drop(Drop::Unsupported),
                "{other}"
            );
        }
        let off = Addrs {
            autoconf: false,
            ..a
        };
        assert_eq!(verdict(&udp(slaac), &off), Verdict::Drop(Drop::Unsupported));
        assert!(matches!(
            verdict(&udp("[fd42:6d73:62::2]:5353"), &off),
            Verdict::Udp { .. }
        ));
    }
}
