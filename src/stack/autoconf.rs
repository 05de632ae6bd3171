//! The poll thread's side of guest autoconfiguration ([`crate::autoconf`]): requests the
//! classifier routed here are answered, and the reply frame is queued to the guest from
//! the gateway's MAC; unsolicited router advertisements go out when [`ra::Timer`] says so
//! (its delay is part of the turn's timeout). Nothing here runs with `autoconf = false`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{smol_now, Engine};
use crate::autoconf::{self as ac, dhcp4, dhcp6, ra, Request};
use crate::metrics::Stats;
use crate::pool::Frame;
use crate::wire::classify::Class;

/// Largest reply frame built here (a DHCPv4 reply is 300 bytes, an RA about 120).
const MAX_FRAME: usize = 600;

impl Engine {
    /// Answer the autoconfiguration request `req` carried by `frame`.
    pub(super) fn autoconf_request(&mut self, req: Request, frame: &Frame, elapsed: Duration) {
        if req == Request::RouterSolicit {
            self.send_ra(elapsed);
            return;
        }
        let stats = &self.link.stats;
        let a = self.addrs;
        let macs = (a.gw_mac, a.guest_mac);
        let mut port = self.guest.port(smol_now(elapsed));
        match req {
            Request::Ignored | Request::RouterSolicit => Stats::inc(&stats.dhcp_ignored),
            Request::Dhcp4 { payload } => {
                let Some(data) = frame.bytes().get(payload) else {
                    return;
                };
                let (Some(gw), Some(_)) = (a.gw4, a.guest4) else {
                    Stats::inc(&stats.dhcp_ignored);
                    return;
                };
                let mut out = [0u8; 400];
                match dhcp4::answer(data, &a, &mut out) {
                    dhcp4::Outcome::Reply { len, dst, nak } => {
                        let src = SocketAddr::new(IpAddr::V4(gw), ac::DHCP4_SERVER_PORT);
                        let dst = SocketAddr::new(IpAddr::V4(dst), ac::DHCP4_CLIENT_PORT);
                        port.emit(MAX_FRAME, |buf| {
                            ac::emit_udp_with(buf, macs, (src, dst), |b| {
                                b.get_mut(..len)?.copy_from_slice(&out[..len]);
                                Some(len)
                            })
                        });
                        Stats::inc(if nak {
                            &stats.dhcp_naks
                        } else {
                            &stats.dhcp_replies
                        });
                    }
                    dhcp4::Outcome::Released => Stats::inc(&stats.dhcp_released),
                    dhcp4::Outcome::Ignored => Stats::inc(&stats.dhcp_ignored),
                }
            }
            Request::Dhcp6 {
                src: client,
                payload,
            } => {
                let (Some(data), Some(ll)) = (frame.bytes().get(payload), a.gw6_link_local())
                else {
                    Stats::inc(&stats.dhcp_ignored);
                    return;
                };
                let src = SocketAddr::new(IpAddr::V6(ll), ac::DHCP6_SERVER_PORT);
                let mut answered = false;
                port.emit(MAX_FRAME, |buf| {
                    let n =
                        ac::emit_udp_with(buf, macs, (src, client), |b| dhcp6::answer(data, &a, b));
                    answered = n.is_some();
                    n
                });
                Stats::inc(if answered {
                    &stats.dhcp6_replies
                } else {
                    &stats.dhcp_ignored
                });
            }
        }
    }

    /// A new TCP flow or an echo from a SLAAC address of the guest: tell smoltcp that
    /// address's MAC first (a synthetic NA), as for inbound connects, so its SYN-ACK or
    /// echo reply does not wait out neighbour discovery.
    pub(super) fn prime_slaac_neighbor(&mut self, class: &Class, elapsed: Duration) {
        let src = match *class {
            Class::Tcp { src, flags, .. } if flags.syn && !flags.ack => src.ip(),
            Class::IcmpEcho {
                src, request: true, ..
            } => src,
            _ => return,
        };
        if let IpAddr::V6(a) = src {
            if self.addrs.is_slaac(a) && Some(a) != self.addrs.guest6 {
                self.prime_neighbor(src, elapsed);
            }
        }
    }

    /// Send a router advertisement to all nodes.
    fn send_ra(&mut self, elapsed: Duration) {
        let a = self.addrs;
        let Some(ll) = a.gw6_link_local() else {
            return;
        };
        let mut port = self.guest.port(smol_now(elapsed));
        let macs = (a.gw_mac, ac::multicast_mac(ac::ALL_NODES));
        port.emit(MAX_FRAME, |buf| {
            ac::emit_ndp_with(buf, macs, (ll, ac::ALL_NODES), |b| ra::advert(&a, b))
        });
        Stats::inc(&self.link.stats.ra_sent);
    }

    /// Send the unsolicited advertisement when due; how long until the next one (`None`
    /// when none are sent: autoconf off or IPv6 inactive).
    pub(super) fn periodic_ra(&mut self, elapsed: Duration) -> Option<Duration> {
        let timer = self.ra_timer.as_mut()?;
        if timer.fire(elapsed) {
            self.send_ra(elapsed);
        }
        self.ra_timer.as_ref().map(|t| t.delay(elapsed))
    }
}
