//! Router advertisements (RFC 4861 §4.2, §6.2) with DNS (RDNSS, RFC 8106).
//!
//! # Theory of operation
//!
//! The gateway is the guest's only router. Its advertisement carries: router lifetime
//! [`ROUTER_LIFETIME_SECS`]; the O flag (stateless DHCPv6 has DNS too, RFC 4861 §4.2); the
//! source link-layer address (the gateway's MAC, so the guest needs no NS to reach it);
//! the MTU; the guest's /64 as an on-link prefix with autonomous configuration (SLAAC);
//! and an RDNSS option naming the gateway's address. A guest that configured the static
//! `::2` from the environment variables takes the default route and DNS from it just as
//! well. The message is smoltcp's `NdiscRepr::RouterAdvert`; RDNSS is not in smoltcp and is
//! written after it by hand (8 + 16·n bytes).
//!
//! Timing ([`Timer`]): answered at once on each solicitation; unsolicited ones at start
//! and then [`INITIAL_INTERVAL`] apart until [`INITIAL_COUNT`] were sent (RFC 4861 §6.2.4),
//! then every [`INTERVAL`] (below MaxRtrAdvInterval's 600 s default, §6.2.1).

use std::time::Duration;

use smoltcp::time::Duration as SmolDuration;
use smoltcp::wire::{
    EthernetAddress, Icmpv6Packet, NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr,
    NdiscRouterFlags, RawHardwareAddress,
};

use crate::stack::Addrs;

/// Router lifetime advertised, seconds (RFC 4861 §6.2.1's default, 3 × MaxRtrAdvInterval).
pub const ROUTER_LIFETIME_SECS: u64 = 1800;
/// Valid and preferred lifetime of the prefix and the RDNSS entry, seconds.
pub const PREFIX_VALID_SECS: u32 = 86_400;
pub const PREFIX_PREFERRED_SECS: u32 = 14_400;
pub const RDNSS_LIFETIME_SECS: u32 = 1800;
/// Unsolicited advertisements at start (MAX_INITIAL_RTR_ADVERTISEMENTS) and their spacing
/// (MAX_INITIAL_RTR_ADVERT_INTERVAL), RFC 4861 §10.
pub const INITIAL_COUNT: u32 = 3;
pub const INITIAL_INTERVAL: Duration = Duration::from_secs(16);
/// Spacing of unsolicited advertisements after the initial ones.
pub const INTERVAL: Duration = Duration::from_secs(200);
const OPT_RDNSS: u8 = 25;

/// Write the router advertisement (the ICMPv6 message, checksum zero) into `out`; return
/// its length, or `None` without IPv6 or room.
pub fn advert(addrs: &Addrs, out: &mut [u8]) -> Option<usize> {
    let (gw6, guest6) = (addrs.gw6?, addrs.guest6?);
    let prefix = {
        let mut o = guest6.octets();
        o[8..].fill(0);
        o.into()
    };
    let repr = NdiscRepr::RouterAdvert {
        hop_limit: 64,
        flags: NdiscRouterFlags::OTHER,
        router_lifetime: SmolDuration::from_secs(ROUTER_LIFETIME_SECS),
        reachable_time: SmolDuration::ZERO,
        retrans_time: SmolDuration::ZERO,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(addrs.gw_mac))),
        mtu: u32::try_from(addrs.mtu).ok(),
        prefix_info: Some(NdiscPrefixInformation {
            prefix_len: 64,
            flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
            valid_lifetime: SmolDuration::from_secs(u64::from(PREFIX_VALID_SECS)),
            preferred_lifetime: SmolDuration::from_secs(u64::from(PREFIX_PREFERRED_SECS)),
            prefix,
        }),
    };
    let n = repr.buffer_len();
    let total = n + 24;
    let buf = out.get_mut(..total)?;
    buf.fill(0);
    let mut packet = Icmpv6Packet::new_unchecked(&mut buf[..n]);
    repr.emit(&mut packet);
    rdnss(&mut buf[n..], RDNSS_LIFETIME_SECS, gw6);
    Some(total)
}

/// Write an RDNSS option with one server (RFC 8106 §5.1: type 25, length 3 units of 8 bytes,
/// reserved, lifetime, address) into `out`, which is 24 bytes.
fn rdnss(out: &mut [u8], lifetime: u32, server: std::net::Ipv6Addr) {
    out[0] = OPT_RDNSS;
    out[1] = 3;
    out[2..4].fill(0);
    out[4..8].copy_from_slice(&lifetime.to_be_bytes());
    out[8..24].copy_from_slice(&server.octets());
}

/// When unsolicited advertisements are due.
#[derive(Debug, Clone)]
pub struct Timer {
    next: Duration,
    sent: u32,
}

impl Timer {
    /// The first advertisement is due at `now`.
    pub fn new(now: Duration) -> Timer {
        Timer { next: now, sent: 0 }
    }

    /// True when one is due at `now` (then the next is scheduled: the caller sends it).
    pub fn fire(&mut self, now: Duration) -> bool {
        if now < self.next {
            return false;
        }
        self.sent = self.sent.saturating_add(1);
        let gap = if self.sent < INITIAL_COUNT {
            INITIAL_INTERVAL
        } else {
            INTERVAL
        };
        self.next = now + gap;
        true
    }

    /// How long until the next one is due.
    pub fn delay(&self, now: Duration) -> Duration {
        self.next.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::NdiscOption;

    fn addrs() -> Addrs {
        Addrs::slot0(false, true)
    }

    #[test]
    fn rdnss_fixture() {
        let mut b = [0xa5u8; 24];
        rdnss(&mut b, 1800, "fd42:6d73:62::1".parse().unwrap());
        assert_eq!(
            b,
            [
                25, 3, 0, 0, 0, 0, 0x07, 0x08, 0xfd, 0x42, 0x6d, 0x73, 0, 0x62, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 1
            ]
        );
    }

    #[test]
    fn advert_parses_back() {
        let mut b = [0xa5u8; 256];
        let n = advert(&addrs(), &mut b).unwrap();
        let p = Icmpv6Packet::new_checked(&b[..n]).unwrap();
        let Ok(NdiscRepr::RouterAdvert {
            hop_limit,
            flags,
            router_lifetime,
            lladdr,
            mtu,
            prefix_info,
            ..
        }) = NdiscRepr::parse(&p)
        else {
            panic!("not an RA");
        };
        assert_eq!(hop_limit, 64);
        assert_eq!(flags, NdiscRouterFlags::OTHER);
        assert_eq!(router_lifetime, SmolDuration::from_secs(1800));
        assert_eq!(lladdr.unwrap().as_bytes(), &[2, 0x6d, 0x73, 0, 0, 1]);
        assert_eq!(mtu, Some(1500));
        let pi = prefix_info.unwrap();
        assert_eq!(pi.prefix_len, 64);
        assert_eq!(
            pi.prefix,
            "fd42:6d73:62::".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert!(pi.flags.contains(NdiscPrefixInfoFlags::ADDRCONF));
        // The RDNSS option is the last one.
        let last = NdiscOption::new_checked(&b[n - 24..n]).unwrap();
        assert_eq!(u8::from(last.option_type()), 25);
        assert_eq!(&b[n - 16..n], &addrs().gw6.unwrap().octets());
        // No IPv6: nothing.
        let v4 = Addrs {
            gw6: None,
            guest6: None,
            ..addrs()
        };
        assert_eq!(advert(&v4, &mut b), None);
        assert_eq!(advert(&addrs(), &mut [0u8; 40]), None);
    }

    #[test]
    fn timer_three_quick_then_every_interval() {
        let mut t = Timer::new(Duration::ZERO);
        let mut fired = Vec::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(700) {
            if t.fire(now) {
                fired.push(now.as_secs());
            }
            assert!(t.delay(now) <= INTERVAL);
            now += Duration::from_secs(1);
        }
        assert_eq!(fired, [0, 16, 32, 232, 432, 632]);
    }
}
