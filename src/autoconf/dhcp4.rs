//! The gateway's DHCPv4 server (RFC 2131, options RFC 2132): one guest, one address.
//!
//! # Theory of operation
//!
//! The slot's guest address is the only lease there is, so the server keeps no state: each
//! message from the guest's MAC (`chaddr` must be it too) is answered from the slot's
//! addresses alone.
//!
//! | message  | answer |
//! |----------|--------|
//! | DISCOVER | OFFER of the guest's address |
//! | REQUEST  | naming another server (`server identifier`): none (the client chose it); for the guest's address (option 50, or `ciaddr` when renewing): ACK; for any other: NAK |
//! | INFORM   | ACK with the options, no address, no lease time |
//! | DECLINE, RELEASE | none (accepted silently: the address stays the guest's) |
//! | other    | none |
//!
//! Every OFFER/ACK carries: server identifier, lease time [`LEASE_SECS`] (1 day) with
//! renewal T1 = ½ and rebinding T2 = ⅞ of it (RFC 2131 §4.4.5), subnet mask of the /30,
//! router = DNS server = the gateway, interface MTU (option 26). Replies are padded to the
//! BOOTP minimum of 300 bytes (RFC 1542 §3.4: some clients drop shorter ones).
//! Wire format: smoltcp's `DhcpPacket` / `DhcpRepr`; options smoltcp's `emit` does not
//! write (T1, T2, MTU, DNS) go in `additional_options`.

use std::net::Ipv4Addr;

use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress};

use crate::stack::Addrs;

/// Lease time offered, seconds.
pub const LEASE_SECS: u32 = 86_400;
/// Smallest BOOTP message (RFC 1542 §3.4).
const MIN_LEN: usize = 300;
const OPT_DNS: u8 = 6;
const OPT_MTU: u8 = 26;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;

/// What became of one DHCPv4 message from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of `len` bytes was written, to be sent to `dst` (port 68).
    Reply {
        len: usize,
        dst: Ipv4Addr,
        nak: bool,
    },
    /// DECLINE or RELEASE: accepted, nothing to send.
    Released,
    /// Unparseable, not from the guest, for another server, or a message type a server
    /// does not answer.
    Ignored,
}

/// Answer the DHCPv4 message `req` (the UDP payload) into `out`.
pub fn answer(req: &[u8], addrs: &Addrs, out: &mut [u8]) -> Outcome {
    let (Some(gw), Some(guest)) = (addrs.gw4, addrs.guest4) else {
        return Outcome::Ignored;
    };
    let Ok(packet) = DhcpPacket::new_checked(req) else {
        return Outcome::Ignored;
    };
    let Ok(repr) = DhcpRepr::parse(&packet) else {
        return Outcome::Ignored;
    };
    if repr.client_hardware_address.0 != addrs.guest_mac {
        return Outcome::Ignored;
    }
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let broadcast = Ipv4Addr::BROADCAST;
    let (kind, your_ip, lease, dst) = match repr.message_type {
        DhcpMessageType::Discover => (DhcpMessageType::Offer, guest, true, broadcast),
        DhcpMessageType::Request => {
            if repr.server_identifier.is_some_and(|s| s != gw) {
                return Outcome::Ignored;
            }
            let asked = repr.requested_ip.unwrap_or(repr.client_ip);
            if asked == guest {
                let dst = if repr.client_ip == unspecified {
                    broadcast
                } else {
                    repr.client_ip
                };
                (DhcpMessageType::Ack, guest, true, dst)
            } else {
                (DhcpMessageType::Nak, unspecified, false, broadcast)
            }
        }
        DhcpMessageType::Inform if repr.client_ip != unspecified => {
            (DhcpMessageType::Ack, unspecified, false, repr.client_ip)
        }
        DhcpMessageType::Decline | DhcpMessageType::Release => return Outcome::Released,
        _ => return Outcome::Ignored,
    };
    let nak = kind == DhcpMessageType::Nak;
    let mtu = u16::try_from(addrs.mtu).unwrap_or(u16::MAX).to_be_bytes();
    let t1 = (LEASE_SECS / 2).to_be_bytes();
    let t2 = (LEASE_SECS / 8 * 7).to_be_bytes();
    let dns = gw.octets();
    let with_lease = [
        DhcpOption {
            kind: OPT_T1,
            data: &t1,
        },
        DhcpOption {
            kind: OPT_T2,
            data: &t2,
        },
        DhcpOption {
            kind: OPT_DNS,
            data: &dns,
        },
        DhcpOption {
            kind: OPT_MTU,
            data: &mtu,
        },
    ];
    let reply = DhcpRepr {
        message_type: kind,
        transaction_id: repr.transaction_id,
        secs: 0,
        client_hardware_address: EthernetAddress(addrs.guest_mac),
        // RFC 2131 Table 3: ciaddr is echoed in an ACK to INFORM, else 0.
        client_ip: if repr.message_type == DhcpMessageType::Inform {
            repr.client_ip
        } else {
            unspecified
        },
        your_ip,
        server_ip: unspecified,
        router: (!nak).then_some(gw),
        subnet_mask: (!nak).then_some(Ipv4Addr::new(255, 255, 255, 252)),
        relay_agent_ip: repr.relay_agent_ip,
        broadcast: repr.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(gw),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: lease.then_some(LEASE_SECS),
        renew_duration: None,
        rebind_duration: None,
        additional_options: match (nak, lease) {
            (true, _) => &with_lease[..0],
            (false, true) => &with_lease[..],
            (false, false) => &with_lease[2..],
        },
    };
    let len = reply.buffer_len().max(MIN_LEN);
    let Some(buf) = out.get_mut(..len) else {
        return Outcome::Ignored;
    };
    buf.fill(0);
    let mut packet = DhcpPacket::new_unchecked(&mut buf[..]);
    if reply.emit(&mut packet).is_err() {
        return Outcome::Ignored;
    }
    Outcome::Reply { len, dst, nak }
}

#[cfg(test)]
#[path = "dhcp4_tests.rs"]
mod tests;
