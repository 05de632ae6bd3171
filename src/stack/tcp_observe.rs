//! The TCP flow table as [`FlowInfo`]s for a snapshot ([`crate::observe::flows`]): read
//! only, on the poll thread, between turns.

use std::time::Duration;

use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;

use super::{Flows, Phase};
use crate::observe::FlowInfo;
use crate::policy::Proto;

/// smoltcp's state as a static name (no allocation per flow).
fn state_name(s: State) -> &'static str {
    match s {
        State::Closed => "closed",
        State::Listen => "listen",
        State::SynSent => "syn-sent",
        State::SynReceived => "syn-received",
        State::Established => "established",
        State::FinWait1 => "fin-wait-1",
        State::FinWait2 => "fin-wait-2",
        State::CloseWait => "close-wait",
        State::Closing => "closing",
        State::LastAck => "last-ack",
        State::TimeWait => "time-wait",
    }
}

impl Flows {
    /// Append every flow to `out`; `now` is the poll thread's time.
    pub fn snapshot(&self, now: Instant, out: &mut Vec<FlowInfo>) {
        out.reserve(self.slab.len());
        for (_, f) in self.slab.iter() {
            let state = match f.phase {
                Phase::Connecting => "connecting",
                Phase::Inbound => "inbound-connecting",
                Phase::Aborting => "aborting",
                Phase::Open => state_name(f.set.get::<tcp::Socket>(f.handle).state()),
            };
            let since = |t: Instant| Duration::from_micros((now - t).total_micros());
            let age = since(f.created);
            let idle = if f.from_guest_at > Instant::from_millis(0) {
                since(f.from_guest_at)
            } else {
                age
            };
            out.push(FlowInfo {
                proto: Proto::Tcp,
                guest: f.key.0,
                host: f.key.1,
                state,
                from_guest_bytes: f.from_guest_bytes,
                to_guest_bytes: f.to_guest_bytes,
                age,
                idle,
                rule: f.rule.clone(),
            });
        }
    }
}
