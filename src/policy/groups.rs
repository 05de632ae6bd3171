//! Address groups: which named ranges an address belongs to.
//!
//! An address may be in several groups (a gateway address is `host` and, in the default
//! pools, `private`; the metadata address is also `link-local`). `public` is every address
//! in no other group, documentation ranges included. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry: the host socket reaches
//! exactly that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A named set of addresses a rule can name (`group:NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// The gateway's own addresses (flows to them reach the host's loopback).
    Host,
    /// Cloud metadata services: 169.254.169.254 and fd00:ec2::254.
    Metadata,
    /// 127.0.0.0/8, ::1, and the unspecified 0.0.0.0/8 and :: (a connect to them reaches
    /// the local host).
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10, unique local fc00::/7.
    Private,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// 224/4, 255.255.255.255 and ff00::/8.
    Multicast,
    /// Everything in no other group.
    Public,
}

impl Group {
    /// Every group, in the order the docs list them.
    pub const ALL: [Group; 7] = [
        Group::Host,
        Group::Metadata,
        Group::Loopback,
        Group::Private,
        Group::LinkLocal,
        Group::Multicast,
        Group::Public,
    ];

    /// The name in rules (`group:NAME`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Group::Host => "host",
            Group::Metadata => "metadata",
            Group::Loopback => "loopback",
            Group::Private => "private",
            Group::LinkLocal => "link-local",
            Group::Multicast => "multicast",
            Group::Public => "public",
        }
    }

    /// The group named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// The gateway's addresses (members of [`Group::Host`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Gateways {
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => Some(a) == self.v4,
            IpAddr::V6(a) => Some(a) == self.v6,
        }
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into the IPv4 address it carries.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

const METADATA4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// True when `ip` (canonical) is in `group` (`Public` is decided by [`in_group`]).
fn in_named(group: Group, ip: IpAddr, gw: &Gateways) -> bool {
    match (group, ip) {
        (Group::Host, ip) => gw.contains(ip),
        (Group::Metadata, IpAddr::V4(a)) => a == METADATA4,
        (Group::Metadata, IpAddr::V6(a)) => a == METADATA6,
        (Group::Loopback, IpAddr::V4(a)) => a.is_loopback() || a.octets()[0] == 0,
        (Group::Loopback, IpAddr::V6(a)) => a.is_loopback() || a.is_unspecified(),
        (Group::Private, IpAddr::V4(a)) => a.is_private() || is_cgnat(a),
        (Group::Private, IpAddr::V6(a)) => a.segments()[0] & 0xfe00 == 0xfc00,
        (Group::LinkLocal, IpAddr::V4(a)) => a.is_link_local(),
        (Group::LinkLocal, IpAddr::V6(a)) => a.segments()[0] & 0xffc0 == 0xfe80,
        (Group::Multicast, IpAddr::V4(a)) => a.is_multicast() || a.is_broadcast(),
        (Group::Multicast, IpAddr::V6(a)) => a.is_multicast(),
        (Group::Public, _) => false,
    }
}

fn is_cgnat(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 100 && (o[1] & 0xc0) == 64
}

/// True when `ip` belongs to `group`.
#[must_use]
pub fn in_group(group: Group, ip: IpAddr, gw: &Gateways) -> bool {
    let ip = canonical(ip);
    match group {
        Group::Public => !Group::ALL[..6].iter().any(|&g| in_named(g, ip, gw)),
        g => in_named(g, ip, gw),
    }
}

/// True when an upstream DNS answer naming `ip` is a rebinding risk: a private, CGNAT,
/// loopback, link-local (metadata included) or unspecified address.
#[must_use]
pub fn rebind_protected(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let none = Gateways::default();
    [Group::Loopback, Group::Private, Group::LinkLocal]
        .iter()
        .any(|&g| in_named(g, ip, &none))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(ip: &str) -> Vec<&'static str> {
        let gw = Gateways {
            v4: Some(Ipv4Addr::new(172, 16, 0, 1)),
            v6: Some("fd42:6d73:62::1".parse().unwrap()),
        };
        let ip: IpAddr = ip.parse().unwrap();
        Group::ALL
            .iter()
            .filter(|&&g| in_group(g, ip, &gw))
            .map(|g| g.name())
            .collect()
    }

    #[test]
    fn group_table() {
        let table: &[(&str, &[&str])] = &[
            ("172.16.0.1", &["host", "private"]),
            ("fd42:6d73:62::1", &["host", "private"]),
            ("169.254.169.254", &["metadata", "link-local"]),
            ("fd00:ec2::254", &["metadata", "private"]),
            ("127.0.0.1", &["loopback"]),
            ("127.8.9.10", &["loopback"]),
            ("0.0.0.0", &["loopback"]),
            ("::", &["loopback"]),
            ("::1", &["loopback"]),
            ("::ffff:127.0.0.1", &["loopback"]),
            ("10.1.2.3", &["private"]),
            ("::ffff:10.1.2.3", &["private"]),
            ("172.31.255.255", &["private"]),
            ("172.32.0.1", &["public"]),
            ("192.168.1.1", &["private"]),
            ("100.64.0.1", &["private"]),
            ("100.127.255.255", &["private"]),
            ("100.128.0.1", &["public"]),
            ("fc00::1", &["private"]),
            ("169.254.1.1", &["link-local"]),
            ("fe80::1", &["link-local"]),
            ("224.0.0.251", &["multicast"]),
            ("255.255.255.255", &["multicast"]),
            ("ff02::1", &["multicast"]),
            ("198.51.100.7", &["public"]),
            ("2001:db8::7", &["public"]),
            ("8.8.8.8", &["public"]),
            ("2606:4700::1111", &["public"]),
        ];
        for (ip, want) in table {
            assert_eq!(groups(ip), *want, "{ip}");
        }
    }

    #[test]
    fn rebind_table() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "100.64.1.1",
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(rebind_protected(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.7", "2001:db8::7", "8.8.8.8", "224.0.0.1"] {
            assert!(!rebind_protected(ip.parse().unwrap()), "{ip}");
        }
    }
}
