//! Published ports: host clients reaching services in the guest.
//!
//! # Theory of operation
//!
//! Each published port is a [`Listener`] (egress) whose fd the driver watches (token
//! `T_LISTEN` + the port's key). When it is readable the poll thread takes at most
//! [`ACCEPT_BATCH`] clients or datagrams, so a flood of clients cannot starve the guest:
//!
//! - TCP `from_host`: an accepted client is checked against the ingress policy and
//!   `max_inbound_connections` (refused: the client gets RST), then becomes an inbound TCP
//!   flow (`tcp::Flows::inbound`): the driver adopts the accepted socket and a smoltcp
//!   client socket connects to the guest's port. From the guest's SYN-ACK on it is an
//!   ordinary flow (same buffers, backpressure, half-close and reset rules as egress). A
//!   guest that refuses (RST) or does not answer within `connect_timeout_ms` gets the
//!   host client reset.
//! - UDP `from_host`: a datagram from a peer not mapped yet (ingress policy first) gets the
//!   peer its own socket (`Listener::peer_socket`: same port, connected to the peer) and an
//!   inbound UDP flow (`udp::Flows::inbound`); the peer's next datagrams arrive on that
//!   socket. `to_host`: the guest's replies leave through it, from the published port. At
//!   most `max_udp_peers` peers per port (the oldest is evicted); idle peers expire with
//!   `udp_idle_timeout_ms` like any UDP flow.
//! - What the guest sees as the client ([`client_side`]): the client's own address and
//!   port (`client_address = "real"`, routed via the gateway), or the gateway address of
//!   the guest's family for loopback clients, clients of a family the guest lacks, and
//!   `client_address = "gateway"`. The guest's family is the client's when the guest has
//!   it, else the other (an IPv4 client reaches an IPv6-only guest).
//! - Run-time changes: [`Ports::publish`] binds and watches a new listener (errors go back
//!   to the caller); [`Ports::unpublish`] stops watching and closes it: open connections
//!   and mapped UDP peers carry on until they end.

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::{Addrs, Host, T_LISTEN};
use crate::config::{ClientAddress, PortProto, PortSpec};
use crate::egress::listen::Listener;
use crate::egress::{SockKind, Token};
use crate::slab::{Key, Slab};

/// Clients accepted (or datagrams taken) per readiness of one listener.
pub const ACCEPT_BATCH: usize = 64;

/// One published port.
pub(crate) struct Published {
    pub spec: PortSpec,
    pub listener: Listener,
}

/// The published ports of one network.
pub(crate) struct Ports {
    slab: Slab<Published>,
}

/// Why a port could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish {spec}: {source}")]
    Bind { spec: String, source: io::Error },
    #[error("cannot publish {spec}: it is published already")]
    Duplicate { spec: String },
    #[error("cannot unpublish {spec}: it is not published")]
    Unknown { spec: String },
    #[error("cannot publish {spec}: {what}")]
    Watch { spec: String, what: String },
    #[error("cannot publish {spec}: too many published ports")]
    TooMany { spec: String },
}

/// Published ports, at most.
pub const MAX_PORTS: usize = 4096;

impl Ports {
    pub fn new() -> Ports {
        Ports {
            slab: Slab::new(MAX_PORTS),
        }
    }

    /// Bind `spec`'s listener and watch it.
    pub fn publish(&mut self, spec: PortSpec, host: &mut Host<'_>) -> Result<(), PublishError> {
        let name = spec.to_string();
        if self.find(&spec).is_some() {
            return Err(PublishError::Duplicate { spec: name });
        }
        let kind = match spec.protocol {
            PortProto::Tcp => SockKind::Tcp,
            PortProto::Udp => SockKind::Udp,
        };
        let listener =
            Listener::bind(kind, spec.bind_addr()).map_err(|source| PublishError::Bind {
                spec: name.clone(),
                source,
            })?;
        let fd = listener.fd();
        let key = self
            .slab
            .insert(Published { spec, listener })
            .ok_or_else(|| PublishError::TooMany { spec: name.clone() })?;
        if let Err(e) = host.driver.watch(fd, Token(key.pack(T_LISTEN))) {
            self.slab.remove(key);
            return Err(PublishError::Watch {
                spec: name,
                what: e.to_string(),
            });
        }
        tracing::info!("published {name}");
        Ok(())
    }

    fn find(&self, spec: &PortSpec) -> Option<Key> {
        self.slab
            .iter()
            .find(|(_, p)| {
                p.spec.bind_addr() == spec.bind_addr() && p.spec.protocol == spec.protocol
            })
            .map(|(k, _)| k)
    }

    /// Stop accepting on the port `spec` names (its host address, port and protocol).
    pub fn unpublish(&mut self, spec: &PortSpec, host: &mut Host<'_>) -> Result<(), PublishError> {
        let key = self.find(spec).ok_or_else(|| PublishError::Unknown {
            spec: spec.to_string(),
        })?;
        if let Some(p) = self.slab.remove(key) {
            host.driver.unwatch(p.listener.fd());
            p.listener.shutdown();
            tracing::info!("unpublished {}", p.spec);
        }
        Ok(())
    }

    pub fn get(&self, key: Key) -> Option<&Published> {
        self.slab.get(key)
    }

    /// Shutdown: stop watching every listener.
    pub fn close_all(&mut self, driver: &mut dyn crate::egress::Driver) {
        for p in self.slab.drain() {
            driver.unwatch(p.listener.fd());
            p.listener.shutdown();
        }
    }
}

/// The guest end (`guest address : guest port`) and the address the guest sees the client
/// as, for a client at `peer` of port `spec`; `None` when the guest has no address at all.
pub fn client_side(
    spec: &PortSpec,
    peer: SocketAddr,
    addrs: &Addrs,
) -> Option<(SocketAddr, SocketAddr)> {
    let ip = peer.ip().to_canonical();
    let v4 = addrs
        .guest4
        .zip(addrs.gw4)
        .map(|(g, gw)| (IpAddr::V4(g), IpAddr::V4(gw)));
    let v6 = addrs
        .guest6
        .zip(addrs.gw6)
        .map(|(g, gw)| (IpAddr::V6(g), IpAddr::V6(gw)));
    let (same, (guest, gw)) = match ip {
        IpAddr::V4(_) => v4.map(|f| (true, f)).or(v6.map(|f| (false, f)))?,
        IpAddr::V6(_) => v6.map(|f| (true, f)).or(v4.map(|f| (false, f)))?,
    };
    let real = spec.client_address == ClientAddress::Real
        && same
        && !ip.is_loopback()
        && !ip.is_unspecified()
        && !addrs.is_gateway(ip)
        && !addrs.is_guest(ip);
    let seen = if real { ip } else { gw };
    Some((
        SocketAddr::new(guest, spec.guest()),
        SocketAddr::new(seen, peer.port()),
    ))
}

/// The `n`th other client port for a client on `port` whose own one is taken (clients
/// shown as the gateway may share a port): deterministic, so the same client finds its own
/// mapping again.
pub fn alt_port(port: u16, n: u16) -> u16 {
    49152 + (port.wrapping_add(n.wrapping_mul(7919)) % 16384)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v4: bool, v6: bool) -> Addrs {
        Addrs::slot0(v4, v6)
    }

    #[test]
    fn what_the_guest_sees_as_the_client() {
        let mut spec = PortSpec::parse_list("8080:80").unwrap().remove(0);
        let s = |spec: &PortSpec, peer: &str, a: &Addrs| {
            let (g, c) = client_side(spec, peer.parse().unwrap(), a).unwrap();
            format!("{g} {c}")
        };
        let both = addrs(true, true);
        assert_eq!(
            s(&spec, "198.51.100.7:5000", &both),
            "172.16.0.2:80 198.51.100.7:5000"
        );
        assert_eq!(
            s(&spec, "127.0.0.1:5000", &both),
            "172.16.0.2:80 172.16.0.1:5000"
        );
        assert_eq!(
            s(&spec, "[2001:db8::7]:5000", &both),
            "[fd42:6d73:62::2]:80 [2001:db8::7]:5000"
        );
        assert_eq!(
            s(&spec, "[::1]:5000", &both),
            "[fd42:6d73:62::2]:80 [fd42:6d73:62::1]:5000"
        );
        assert_eq!(
            s(&spec, "[::ffff:198.51.100.7]:5000", &both),
            "172.16.0.2:80 198.51.100.7:5000"
        );
        // A family the guest lacks: the gateway of the one it has.
        let v6 = addrs(false, true);
        assert_eq!(
            s(&spec, "198.51.100.7:5000", &v6),
            "[fd42:6d73:62::2]:80 [fd42:6d73:62::1]:5000"
        );
        spec.client_address = ClientAddress::Gateway;
        assert_eq!(
            s(&spec, "198.51.100.7:5000", &both),
            "172.16.0.2:80 172.16.0.1:5000"
        );
        assert!(client_side(
            &spec,
            "198.51.100.7:1".parse().unwrap(),
            &addrs(false, false)
        )
        .is_none());
    }
}
