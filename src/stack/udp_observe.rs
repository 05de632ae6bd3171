//! The UDP / echo flow table as [`FlowInfo`]s for a snapshot ([`crate::observe::flows`]),
//! and the per-flow byte counts.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Flows, Peer};
use crate::observe::FlowInfo;
use crate::policy::Proto;
use crate::slab::Key;

impl Flows {
    /// Count `from_guest` / `to_guest` payload bytes on flow `key`.
    pub(super) fn count(&mut self, key: Key, from_guest: usize, to_guest: usize) {
        if let Some(f) = self.slab.get_mut(key) {
            f.from_guest_bytes += from_guest as u64;
            f.to_guest_bytes += to_guest as u64;
        }
    }

    /// Append every flow to `out`; `elapsed` is the poll thread's time.
    pub fn snapshot(&self, elapsed: Duration, out: &mut Vec<FlowInfo>) {
        out.reserve(self.slab.len());
        for (_, f) in self.slab.iter() {
            let (proto, guest, host) = match f.peer {
                Peer::Udp(g, h) => (Proto::Udp, g, h),
                Peer::Echo(g, h, ident) => (
                    Proto::Icmp,
                    SocketAddr::new(g, ident),
                    SocketAddr::new(h, 0),
                ),
            };
            out.push(FlowInfo {
                proto,
                guest,
                host,
                state: "open",
                from_guest_bytes: f.from_guest_bytes,
                to_guest_bytes: f.to_guest_bytes,
                age: elapsed.saturating_sub(f.created),
                idle: elapsed.saturating_sub(f.last),
                rule: f.rule.clone(),
            });
        }
    }
}
