//! The poll thread's side of observation ([`crate::observe`]): flow-table snapshots for the
//! readers waiting in the link's mailbox, and latency summaries published at most every
//! [`PUBLISH_EVERY`]. Both run between turns, never inside one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{smol_now, Engine};
use crate::observe::latency::PUBLISH_EVERY;

impl Engine {
    /// Answer every waiting snapshot reader with one snapshot of both flow tables (the
    /// time it took is recorded in the mailbox).
    pub(super) fn answer_snapshots(&mut self, elapsed: Duration) {
        let waiting = self.link.observe.flows.take();
        if waiting.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut flows = Vec::new();
        self.tcp.snapshot(smol_now(elapsed), &mut flows);
        self.udp.snapshot(elapsed, &mut flows);
        let flows = Arc::new(flows);
        self.link.observe.flows.took(start.elapsed());
        for reply in waiting {
            // A reader that gave up (timed out) dropped its receiver: nothing to do.
            let _ = reply.send(flows.clone());
        }
        // Readers see fresh latency summaries with their snapshot.
        self.next_publish = Duration::ZERO;
        self.publish_latency(elapsed);
    }

    /// Publish the latency summaries that changed, at most every [`PUBLISH_EVERY`]; returns
    /// how long until a pending publication is due (the poll thread must wake for it).
    pub(super) fn publish_latency(&mut self, elapsed: Duration) -> Option<Duration> {
        let connect = &mut self.tcp.connect_latency;
        let dns = self.dns.latency_mut();
        if !connect.dirty() && !dns.dirty() {
            return None;
        }
        if elapsed < self.next_publish {
            return Some(self.next_publish - elapsed);
        }
        self.link.observe.latency.publish(connect, dns);
        self.next_publish = elapsed + PUBLISH_EVERY;
        None
    }
}
