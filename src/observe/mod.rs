//! Seeing inside a running network: the metrics handle, latency histograms, the
//! termination hook, flow-table snapshots and denial events.
//!
//! # Theory of operation
//!
//! Everything here hangs off the [`Link`] the poll thread shares with the embedder, so
//! every handle is an `Arc<Link>` and costs the data path nothing it did not already do:
//!
//! - Counters ([`Metrics`]): the rings' relaxed atomic frame/byte/drop counters (written
//!   where frames cross the guest boundary) and the poll thread's [`Stats`]. Reading them is
//!   a handful of relaxed loads on the reader's thread; the poll thread is not involved.
//!   `tx_bytes` is guest → ringnet (`from_guest`), `rx_bytes` ringnet → guest (`to_guest`),
//!   both whole Ethernet frames without the virtio-net header.
//! - Latency ([`latency`]): the poll thread records host connect times and DNS upstream
//!   times into its own hdrhistograms (no lock, no atomic) and publishes p50/p99/max/count
//!   summaries into a `Mutex` at most every [`latency::PUBLISH_EVERY`]; readers lock only
//!   that summary.
//! - Termination ([`Termination`]): a hook set by the embedder, called exactly once (an
//!   atomic compare-and-swap) when a configured [`TermEvent`] happens; the network's stop
//!   flag is set first, then the hook runs on a thread of its own (inside `catch_unwind`),
//!   so a hook that blocks or panics cannot take the poll thread with it.
//! - Flow snapshots ([`flows`]): a reader leaves a reply channel in a bounded mailbox and
//!   wakes the poll thread through the stop eventfd (as [`Link::set_policy`] does); the poll
//!   thread builds one snapshot per wake-up for every waiting reader, between two turns,
//!   and records how long it took (`snapshot_max_us`). Readers wait with a timeout.
//! - Denial events ([`events`]): the policy guard pushes a typed event for every denial into
//!   a bounded lock-free queue of [`events::EVENTS_MAX`]; when full, the oldest is dropped
//!   and counted. Whoever drains it ([`Denials`]) sees them in order.
//!
//! Limits: [`events::EVENTS_MAX`] queued denials, [`flows::MAX_WAITING`] snapshot readers
//! waiting at once (more are refused with [`ObserveError::Busy`]), one latency summary per
//! histogram. Nothing here makes a syscall on the poll thread except the one `clone(2)` of
//! the termination hook's thread.

pub mod events;
pub mod flows;
pub mod latency;
pub mod prometheus;
pub mod term;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::link::Link;
use crate::metrics::Stats;
use crate::network::LinkCounters;

pub use events::{Denial, DenialReason, Denials};
pub use flows::FlowInfo;
pub use latency::LatencySummary;
pub use term::{TermEvent, Termination};

/// Errors of the observation handles.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The poll thread is not running (not started yet, or stopped).
    #[error("the network is not running")]
    NotRunning,
    /// The poll thread did not answer within the timeout.
    #[error("the poll thread did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Too many readers are waiting for a snapshot already.
    #[error("too many flow snapshots requested at once")]
    Busy,
    /// A port change the poll thread refused (or did not answer), described.
    #[error("{0}")]
    Port(String),
}

/// `[observe]` in the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// Events that end the network (the termination hook is called once, then the poll
    /// thread stops): `policy_denial`, `guest_gone`, `secret`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminate_on: Vec<TermEvent>,
}

impl ObserveConfig {
    /// True when nothing is configured (left out of a serialized configuration).
    pub fn is_empty(&self) -> bool {
        self.terminate_on.is_empty()
    }
}

/// What the poll thread shares for observation (lives in the [`Link`]).
#[derive(Debug, Default)]
pub struct Observe {
    pub(crate) events: events::Queue,
    pub(crate) term: term::State,
    pub(crate) flows: flows::Mailbox,
    pub(crate) latency: latency::Published,
}

/// Frames dropped, by reason (see the module docs of [`crate::metrics`] for each counter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Guest frames dropped because `from_guest` was full.
    pub from_guest_ring_full: u64,
    /// Guest frames dropped for want of a pool slot (or too large for one).
    pub from_guest_pool_empty: u64,
    /// Frames for the guest dropped because `to_guest` was full.
    pub to_guest_ring_full: u64,
    /// Frames for the guest not built for want of a pool slot, or not written (the guest's
    /// TAP down or gone).
    pub to_guest_undelivered: u64,
    /// Guest frames that failed to parse.
    pub malformed: u64,
    /// Other protocols, fragments.
    pub unsupported: u64,
    /// ARP/NDP not for the gateway, and spoofed neighbour frames.
    pub filtered: u64,
    /// Flows and datagrams the policy refused (TCP, UDP, ICMP, SNI mismatches).
    pub policy: u64,
    /// Flows refused or evicted at a limit (`max_connections`, `max_connecting`,
    /// `max_udp_flows`, file descriptors, DNS queries in flight).
    pub limits: u64,
    /// UDP datagrams and ICMP echo requests dropped (queue full, open failed).
    pub datagrams: u64,
    /// Denial events dropped because nobody drained the queue.
    pub events: u64,
    /// Frames left out of a packet capture because its writer fell behind.
    pub capture: u64,
}

impl Drops {
    /// The sum of every reason.
    pub fn total(&self) -> u64 {
        self.from_guest_ring_full
            + self.from_guest_pool_empty
            + self.to_guest_ring_full
            + self.to_guest_undelivered
            + self.malformed
            + self.unsupported
            + self.filtered
            + self.policy
            + self.limits
            + self.datagrams
            + self.events
            + self.capture
    }
}

/// Flows open now, by protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenFlows {
    pub tcp: u64,
    /// UDP and ICMP echo flows.
    pub udp: u64,
}

/// A cloneable, thread-safe handle on a network's counters and latency summaries.
#[derive(Clone)]
pub struct Metrics {
    link: Arc<Link>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("tx_bytes", &self.tx_bytes())
            .field("rx_bytes", &self.rx_bytes())
            .finish()
    }
}

impl Metrics {
    pub(crate) fn new(link: Arc<Link>) -> Metrics {
        Metrics { link }
    }

    /// Bytes from the guest (Ethernet frames as they crossed the virtio-net boundary).
    pub fn tx_bytes(&self) -> u64 {
        self.link.from_guest.stats().bytes.load(Relaxed)
    }

    /// Bytes to the guest (Ethernet frames handed to the guest side).
    pub fn rx_bytes(&self) -> u64 {
        self.link.to_guest.stats().bytes.load(Relaxed)
    }

    /// Frames from the guest.
    pub fn tx_frames(&self) -> u64 {
        self.link.from_guest.stats().frames.load(Relaxed)
    }

    /// Frames to the guest.
    pub fn rx_frames(&self) -> u64 {
        self.link.to_guest.stats().frames.load(Relaxed)
    }

    /// Frame and byte counters of both directions.
    pub fn link_counters(&self) -> LinkCounters {
        let (f, t) = (self.link.from_guest.stats(), self.link.to_guest.stats());
        LinkCounters {
            from_guest_frames: f.frames.load(Relaxed),
            from_guest_bytes: f.bytes.load(Relaxed),
            from_guest_drops: f.drops.load(Relaxed),
            to_guest_frames: t.frames.load(Relaxed),
            to_guest_bytes: t.bytes.load(Relaxed),
            to_guest_drops: t.drops.load(Relaxed),
        }
    }

    /// The poll thread's counters.
    pub fn stats(&self) -> &Stats {
        &self.link.stats
    }

    /// Drops by reason.
    pub fn drops(&self) -> Drops {
        let s = &self.link.stats;
        let l = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        let (fg, tg) = (self.link.from_guest.stats(), self.link.to_guest.stats());
        Drops {
            from_guest_ring_full: l(&fg.full),
            from_guest_pool_empty: l(&fg.drops).saturating_sub(l(&fg.full)),
            to_guest_ring_full: l(&tg.full),
            to_guest_undelivered: l(&tg.drops).saturating_sub(l(&tg.full)),
            malformed: l(&s.malformed),
            unsupported: l(&s.unsupported),
            filtered: l(&s.arp_filtered) + l(&s.ndp_filtered) + l(&s.neigh_spoofed),
            policy: l(&s.policy_denied_tcp)
                + l(&s.policy_denied_udp)
                + l(&s.policy_denied_icmp)
                + l(&s.policy_sni_mismatch),
            limits: l(&s.tcp_refused_limit)
                + l(&s.tcp_connect_evicted)
                + l(&s.udp_evicted)
                + l(&s.host_fd_exhausted)
                + l(&s.dns_dropped),
            datagrams: l(&s.udp_dropped) + l(&s.icmp_dropped),
            events: self.link.observe.events.dropped(),
            capture: self.link.capture_dropped(),
        }
    }

    /// Flows open now.
    pub fn open_flows(&self) -> OpenFlows {
        OpenFlows {
            tcp: self.link.stats.tcp_active.load(Relaxed),
            udp: self.link.stats.udp_active.load(Relaxed),
        }
    }

    /// Host TCP connects that succeeded.
    pub fn host_connects_ok(&self) -> u64 {
        self.link.stats.tcp_connected.load(Relaxed)
    }

    /// Host TCP connects that failed (refused, unreachable, timed out, no descriptor).
    pub fn host_connects_failed(&self) -> u64 {
        self.link.stats.tcp_connect_failed.load(Relaxed)
    }

    /// DNS answers sent to the guest.
    pub fn dns_answered(&self) -> u64 {
        self.link.stats.dns_answered.load(Relaxed)
    }

    /// DNS queries that failed: SERVFAIL (no upstream answered) or dropped.
    pub fn dns_failed(&self) -> u64 {
        self.link.stats.dns_servfail.load(Relaxed) + self.link.stats.dns_dropped.load(Relaxed)
    }

    /// Host TCP connect time (the guest's SYN to the host socket's connect result, for
    /// connects that succeeded), as last published by the poll thread.
    pub fn connect_latency(&self) -> LatencySummary {
        self.link.observe.latency.connect()
    }

    /// DNS upstream time (query sent upstream to its answer, per try that was answered).
    pub fn dns_latency(&self) -> LatencySummary {
        self.link.observe.latency.dns()
    }

    /// The longest a flow-table snapshot kept the poll thread busy, in microseconds.
    pub fn snapshot_max_us(&self) -> u64 {
        self.link.observe.flows.max_us()
    }
}

/// A cloneable handle on everything observable, for threads other than the owner of the
/// [`crate::Network`] (a control socket, a metrics endpoint).
#[derive(Clone)]
pub struct Observer {
    link: Arc<Link>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

/// How long [`crate::Network::flows`] waits for the poll thread.
pub const FLOWS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Observer {
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.link.clone())
    }

    pub fn denials(&self) -> Denials {
        Denials::new(self.link.clone())
    }

    pub fn termination(&self) -> Termination {
        Termination::new(self.link.clone())
    }

    /// A snapshot of the live flow table, waiting at most `timeout` for the poll thread.
    pub fn flows(&self, timeout: std::time::Duration) -> Result<Vec<FlowInfo>, ObserveError> {
        flows::request(&self.link, timeout)
    }

    /// Publish (`publish`) or unpublish `spec` on the running network, from any thread: the
    /// poll thread binds or releases it on its next wake-up and says how it went (within
    /// `timeout`). As [`crate::Network::publish`] / `unpublish`, except that the network's
    /// own copy of its configuration does not list the change.
    pub fn change_port(
        &self,
        publish: bool,
        spec: crate::config::PortSpec,
        timeout: std::time::Duration,
    ) -> Result<(), ObserveError> {
        if self.link.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ObserveError::NotRunning);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.link.port_change(crate::link::PortChange {
            publish,
            spec,
            reply: tx,
        });
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(ObserveError::Port),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ObserveError::Timeout(timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ObserveError::NotRunning),
        }
    }
}

impl crate::Network {
    /// A cloneable, thread-safe handle on the counters and latency summaries.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.link.clone())
    }

    /// The termination handle (available right after `new`, before `start`).
    pub fn termination(&self) -> Termination {
        Termination::new(self.link.clone())
    }

    /// The drain of denial events.
    pub fn denials(&self) -> Denials {
        Denials::new(self.link.clone())
    }

    /// A cloneable handle on all of the above and on flow snapshots.
    pub fn observer(&self) -> Observer {
        Observer {
            link: self.link.clone(),
        }
    }

    /// A snapshot of the live flow table (TCP, UDP and ICMP echo flows), taken by the poll
    /// thread between two turns; waits at most [`FLOWS_TIMEOUT`].
    pub fn flows(&self) -> Result<Vec<FlowInfo>, ObserveError> {
        if !self.is_running() {
            return Err(ObserveError::NotRunning);
        }
        flows::request(&self.link, FLOWS_TIMEOUT)
    }

    /// Capture every frame crossing the guest boundary, both directions, into the pcap file
    /// `path` (created or truncated) until it reaches `max_bytes`; see [`crate::pcap`]. The
    /// capture runs until the returned writer is finished or dropped (finish it after
    /// [`crate::Network::shutdown`] to keep the last frames).
    pub fn capture(
        &self,
        path: &std::path::Path,
        max_bytes: u64,
    ) -> Result<crate::pcap::Writer, crate::pcap::PcapError> {
        if self.link.from_guest.capture().is_some() {
            return Err(crate::pcap::PcapError::AlreadyCapturing);
        }
        let w = crate::pcap::Writer::start_with(path, max_bytes, &self.config().sandbox)?;
        self.link
            .tap(w.capture())
            .map_err(|_| crate::pcap::PcapError::AlreadyCapturing)?;
        Ok(w)
    }
}
