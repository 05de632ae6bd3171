//! Denial events: what the policy refused, why, and by which rule, for an embedder to drain.
//!
//! # Theory of operation
//!
//! The poll thread's policy guard (`crate::stack::guard`) pushes one [`Denial`] per
//! refusal of the guest (a TCP connect, a datagram or echo request, a DNS name, a TLS server
//! name; host clients refused at a published port are counted and logged only) into a
//! lock-free bounded queue of [`EVENTS_MAX`] (`Queue`). A push into a full queue replaces
//! the oldest event and counts it as dropped, so a guest hammering a denied address costs
//! a bounded amount of memory whether or not anybody drains. [`Denials`] is the drain: any
//! thread, any time, oldest first. Each denial is also counted in [`crate::metrics::Stats`]
//! (`policy_denied_*`) and logged once per flow, as before.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_queue::ArrayQueue;
use serde::Serialize;

use crate::link::Link;
use crate::policy::Proto;

/// Denial events kept for a drain, at most.
pub const EVENTS_MAX: usize = 1024;

/// Why a denial happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialReason {
    /// An explicit deny rule matched.
    Rule,
    /// No rule matched and the direction's default is deny.
    Default,
    /// A TLS ClientHello named a server the admitting domain rule does not cover.
    SniMismatch,
    /// A DNS query for a name the policy denies (answered NXDOMAIN).
    DnsName,
    /// An intercepted request carried a secret's placeholder where the secret may not go
    /// (`rule` names the secret and why); the flow was stopped.
    SecretViolation,
}

impl DenialReason {
    pub fn name(self) -> &'static str {
        match self {
            DenialReason::Rule => "rule",
            DenialReason::Default => "default",
            DenialReason::SniMismatch => "sni_mismatch",
            DenialReason::DnsName => "dns_name",
            DenialReason::SecretViolation => "secret_violation",
        }
    }
}

/// One refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// Wall-clock time of the refusal.
    pub at: SystemTime,
    /// The flow's protocol (UDP for a DNS name).
    pub proto: Proto,
    /// The guest's address, when known (not for DNS names).
    pub guest: Option<IpAddr>,
    /// The destination the guest asked for (the gateway's port 53 for a DNS name).
    pub dst: Option<SocketAddr>,
    /// The name involved: the DNS name denied, or the TLS server name.
    pub name: Option<Box<str>>,
    pub reason: DenialReason,
    /// The rule that decided, as `rule N (…)`, or the default that did.
    pub rule: Arc<str>,
}

/// The bounded queue in the link.
#[derive(Debug)]
pub(crate) struct Queue {
    q: ArrayQueue<Denial>,
    dropped: AtomicU64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            q: ArrayQueue::new(EVENTS_MAX),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Queue {
    /// Queue `d`, dropping (and counting) the oldest when full.
    pub(crate) fn push(&self, d: Denial) {
        if self.q.force_push(d).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The drain of a network's denial events (cloneable; every clone drains the same queue).
#[derive(Clone)]
pub struct Denials {
    link: Arc<Link>,
}

impl std::fmt::Debug for Denials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denials")
            .field("queued", &self.link.observe.events.q.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Denials {
    pub(crate) fn new(link: Arc<Link>) -> Denials {
        Denials { link }
    }

    /// The oldest queued denial.
    pub fn pop(&self) -> Option<Denial> {
        self.link.observe.events.q.pop()
    }

    /// Every queued denial, oldest first.
    pub fn drain(&self) -> Vec<Denial> {
        std::iter::from_fn(|| self.pop()).collect()
    }

    /// Denials dropped because the queue was full (oldest first).
    pub fn dropped(&self) -> u64 {
        self.link.observe.events.dropped()
    }
}

/// Every queued denial of `link` (for tests inside the crate).
#[cfg(test)]
pub(crate) fn tests_drain(link: &Link) -> Vec<Denial> {
    std::iter::from_fn(|| link.observe.events.q.pop()).collect()
}
