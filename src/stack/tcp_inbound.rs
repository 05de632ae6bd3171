//! Inbound TCP flows (published ports): made from an accepted host client, connecting to
//! the guest (phase `Inbound`) until its SYN-ACK; then ordinary flows (see the lifecycle
//! table in the parent module).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use smoltcp::iface::Interface;
use smoltcp::socket::tcp;
use smoltcp::time::Duration as SmolDuration;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::{host_now, new_socket_set, Flow, Flows, Phase};
use crate::egress::{SockKind, Token};
use crate::metrics::Stats;
use crate::stack::{Host, T_TCP};

impl Flows {
    /// Mark the inbound flows still connecting to the guest (their SYN may have waited for
    /// the guest's MAC): at most `max_inbound_connections` of them.
    pub fn wake_inbound(&mut self) {
        let mut waiting = std::mem::take(&mut self.inbound_waiting);
        waiting.retain(|&k| self.slab.get(k).is_some_and(|f| f.phase == Phase::Inbound));
        for &k in &waiting {
            self.mark(k);
        }
        self.inbound_waiting = waiting;
    }

    /// True when the 4-tuple (`guest`, `client`) belongs to a flow.
    pub fn has_tuple(&self, guest: SocketAddr, client: SocketAddr) -> bool {
        self.map.contains_key(&(guest, client))
    }

    /// True when an inbound flow may be added (below `max_inbound_connections` and the
    /// flow table's limit) between `guest` and `client` (a 4-tuple not in use).
    pub fn inbound_room(&self, guest: SocketAddr, client: SocketAddr) -> bool {
        self.inbound < self.max_inbound
            && self.slab.len() < self.max
            && !self.map.contains_key(&(guest, client))
    }

    /// A host client of a published port, accepted as `fd` from `peer`: connect to `guest`
    /// from `client` (what the guest sees) and adopt `fd` as the flow's host socket.
    /// `Err(Some(fd))` gives `fd` back (to be refused) when there is no room or the connect
    /// cannot start; `Err(None)`: the driver could not take it (closed, counted).
    pub fn inbound(
        &mut self,
        (fd, peer): (OwnedFd, SocketAddr),
        guest: SocketAddr,
        client: SocketAddr,
        iface: &mut Interface,
        host: &mut Host<'_>,
    ) -> Result<(), Option<OwnedFd>> {
        if !self.inbound_room(guest, client) {
            return Err(Some(fd));
        }
        let (mut set, handle) = match self.spare.pop() {
            Some(spare) => spare,
            None => new_socket_set(self.to_host_bytes, self.to_guest_bytes),
        };
        let sock = set.get_mut::<tcp::Socket>(handle);
        sock.abort();
        sock.set_keep_alive(None);
        sock.pause_synack(false);
        // The guest has the connect timeout to answer; smoltcp closes the socket then.
        sock.set_timeout(Some(SmolDuration::from_micros(
            self.connect_timeout.as_micros() as u64,
        )));
        let local = IpListenEndpoint {
            addr: Some(IpAddress::from(client.ip())),
            port: client.port(),
        };
        let remote = (IpAddress::from(guest.ip()), guest.port());
        if sock.connect(iface.context(), remote, local).is_err() {
            self.spare.push((set, handle));
            return Err(Some(fd));
        }
        let now = host_now(host);
        let flow = Flow {
            key: (guest, client),
            set,
            handle,
            timer: None,
            sock: None,
            fallback: None,
            phase: Phase::Inbound,
            host_shut: false,
            host_eof: false,
            from_guest_at: now,
            synack_at: None,
            guest_timeout_armed: false,
            dirty: false,
            local: None,
            sni: None,
            names: Vec::new(),
            inbound: true,
            tls_status: false,
            created: now,
            from_guest_bytes: 0,
            to_guest_bytes: 0,
            rule: Some(crate::observe::flows::PUBLISHED_PORT.into()),
        };
        let Some(key) = self.slab.insert(flow) else {
            return Err(Some(fd));
        };
        let token = Token(key.pack(T_TCP));
        match host.driver.adopt(fd, SockKind::Tcp, peer, token) {
            Ok(s) => {
                if let Some(flow) = self.slab.get_mut(key) {
                    flow.sock = Some(s);
                }
            }
            Err(e) => {
                // The accepted socket is closed with the error: the client sees it end.
                if !host.open_failed(&e) {
                    tracing::debug!(%peer, error = %e, "adopting an inbound client failed");
                }
                if let Some(flow) = self.slab.remove(key) {
                    self.spare.push((flow.set, flow.handle));
                }
                Stats::inc(&host.stats.inbound_refused_limit);
                return Err(None);
            }
        }
        self.inbound += 1;
        if self.inbound_waiting.len() >= 2 * self.max_inbound {
            let slab = &self.slab;
            self.inbound_waiting
                .retain(|&k| slab.get(k).is_some_and(|f| f.phase == Phase::Inbound));
        }
        self.inbound_waiting.push(key);
        Stats::inc(&host.stats.inbound_accepted);
        self.map.insert((guest, client), key);
        self.mark(key);
        Ok(())
    }
}
