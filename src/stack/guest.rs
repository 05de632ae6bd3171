//! What changes when the guest does: its driver negotiates offloads anew, or the guest is
//! replaced (a VMM reconnected, a guest rebooted); and the gateway's smoltcp interface,
//! built once at start and again for new offloads.
//!
//! smoltcp reads a device's capabilities once, in `Interface::new`, so new offloads mean a
//! new interface (same addresses and routes; open sockets live in their own sets and keep
//! going). A replaced guest loses every flow of the old one; published ports stay.

use std::net::IpAddr;
use std::time::Duration;

use smoltcp::iface::{Config, Interface};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use super::port::GuestSide;
use super::{smol_now, Addrs, Engine};
use crate::metrics::Stats;

impl Engine {
    /// The guest negotiated `offloads` (anew). smoltcp reads a device's capabilities once,
    /// when its interface is built, so the interface is rebuilt with the new ones (same
    /// addresses and routes; open sockets live in their own sets and keep going) and the
    /// guest's neighbour entries primed again.
    pub(super) fn set_offloads(&mut self, offloads: crate::link::Offloads, elapsed: Duration) {
        if offloads.effective() == self.guest.offloads() {
            return;
        }
        self.guest.set_offloads(offloads);
        let cidrs: Vec<IpCidr> = self.iface.ip_addrs().to_vec();
        // A different seed: initial sequence numbers must not repeat the first interface's.
        self.iface_seed = self
            .iface_seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let now = smol_now(elapsed);
        self.iface = new_iface(&self.addrs, &cidrs, &mut self.guest, self.iface_seed, now);
        let guests = [
            self.addrs.guest4.map(IpAddr::V4),
            self.addrs.guest6.map(IpAddr::V6),
        ];
        for guest in guests.into_iter().flatten() {
            self.prime_neighbor(guest, elapsed);
        }
    }

    /// The guest behind the link was replaced: every flow of the old one ends (host
    /// sockets reset, UDP sockets closed, DNS connections dropped); published ports stay.
    pub(super) fn reset_guest(&mut self) {
        let open = self.tcp.len() + self.udp.len();
        self.tcp.close_all(&mut *self.host.driver);
        self.udp.close_all(&mut *self.host.driver);
        self.dns.close_all(&mut *self.host.driver);
        Stats::inc(&self.link.stats.guest_resets);
        tracing::info!("the guest was replaced: {open} flows of the old one closed");
    }
}

/// The gateway's smoltcp interface on `guest`'s device (whose capabilities it keeps): the
/// gateway MAC, `cidrs`, default routes via the gateways, any-IP.
pub(super) fn new_iface(
    addrs: &Addrs,
    cidrs: &[IpCidr],
    guest: &mut GuestSide,
    random_seed: u64,
    now: SmolInstant,
) -> Interface {
    let hw = HardwareAddress::Ethernet(EthernetAddress(addrs.gw_mac));
    let mut icfg = Config::new(hw);
    icfg.random_seed = random_seed;
    let mut iface = Interface::new(icfg, &mut guest.port(now).device(None), now);
    iface.set_any_ip(true);
    iface.update_ip_addrs(|a| {
        for &c in cidrs {
            // Capacity is 4 addresses (feature iface-max-addr-count-4); the gateway has at
            // most 3.
            let _ = a.push(c);
        }
    });
    if let Some(gw) = addrs.gw4 {
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
    if let Some(gw) = addrs.gw6 {
        let _ = iface.routes_mut().add_default_ipv6_route(gw);
    }
    iface
}

/// A virtio-net header from a guest that sends partial checksums: it may say no more than
/// the guest negotiated (`NEEDS_CSUM` with `csum`; TCP GSO with `host_tso4` / `host_tso6`,
/// the ECN bit allowed). The frame itself is accepted whole and its partial checksum
/// trusted ([`crate::link::Offloads`]).
pub(super) fn vnet_acceptable(hdr: &[u8], offloads: crate::link::Offloads) -> bool {
    use crate::wire::vnet;
    let (Some(&flags), Some(&gso)) = (hdr.first(), hdr.get(1)) else {
        return false;
    };
    let csum_ok = flags & vnet::flags::NEEDS_CSUM == 0 || offloads.csum;
    let gso_ok = match gso & !vnet::gso::ECN {
        vnet::gso::NONE => true,
        vnet::gso::TCPV4 => offloads.host_tso4,
        vnet::gso::TCPV6 => offloads.host_tso6,
        _ => false,
    };
    csum_ok && gso_ok
}
