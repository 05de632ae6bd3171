//! Flow-table snapshots: what the guest is talking to, right now.
//!
//! # Theory of operation
//!
//! The flow tables belong to the poll thread. A reader (`request`) leaves the sending end
//! of a fresh channel in the link's `Mailbox` (at most [`MAX_WAITING`] at once) and
//! wakes the poll thread through the stop eventfd; the poll thread, on that wake-up and
//! between two turns, takes every waiting sender (`Mailbox::take`), builds one snapshot of
//! both tables (one allocation per flow for nothing but the vector: addresses, counters,
//! `&'static` state names and shared rule names) and sends a copy to each. It records how
//! long the build took; `Mailbox::max_us` keeps the longest. The reader waits on its
//! channel with a timeout, so a stopped or stuck poll thread costs it the timeout, no more.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ObserveError;
use crate::link::Link;
use crate::policy::Proto;

/// The rule name of a guest connection to the gateway's own DNS.
pub const LOCAL_DNS: &str = "gateway DNS";
/// The rule name of a flow a host client opened through a published port.
pub const PUBLISHED_PORT: &str = "published port";

/// Snapshot readers waiting at once, at most.
pub const MAX_WAITING: usize = 16;

/// One live flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub proto: Proto,
    /// The guest's end (for ICMP echo: the port is the guest's echo identifier).
    pub guest: SocketAddr,
    /// The destination the guest addressed (a gateway address stands for the host's
    /// loopback; for ICMP echo the port is 0).
    pub host: SocketAddr,
    /// `connecting`, a TCP state (`established`, `fin-wait-1`, …), `closing`; `open` for
    /// UDP and echo.
    pub state: &'static str,
    /// Payload bytes from the guest handed to the host socket.
    pub from_guest_bytes: u64,
    /// Payload bytes from the host socket handed to the guest.
    pub to_guest_bytes: u64,
    /// Time since the flow was created.
    pub age: Duration,
    /// Time since the guest last sent on it (TCP) or since its last datagram either way
    /// (UDP, echo).
    pub idle: Duration,
    /// The rule that admitted it (`rule N (…)`), `None` with no policy (everything
    /// allowed), or the default when no rule matched; `gateway DNS` for the local resolver.
    pub rule: Option<Arc<str>>,
}

/// Waiting readers and the longest snapshot so far.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    waiting: Mutex<Vec<(u64, Reply)>>,
    next_id: AtomicU64,
    max_us: AtomicU64,
}

/// Where a snapshot goes.
pub(crate) type Reply = mpsc::Sender<Arc<Vec<FlowInfo>>>;

impl Mailbox {
    /// The readers waiting now (the poll thread answers them all with one snapshot).
    pub(crate) fn take(&self) -> Vec<Reply> {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.drain(..).map(|(_, r)| r).collect()
    }

    /// Note that a snapshot took `took`.
    pub(crate) fn took(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub(crate) fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

/// Ask the poll thread of `link` for a snapshot; wait at most `timeout`.
pub(crate) fn request(link: &Link, timeout: Duration) -> Result<Vec<FlowInfo>, ObserveError> {
    if link.stop.load(Ordering::Acquire) {
        return Err(ObserveError::NotRunning);
    }
    let (tx, rx) = mpsc::channel();
    let id = link.observe.flows.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut w = link
            .observe
            .flows
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_WAITING {
            return Err(ObserveError::Busy);
        }
        w.push((id, tx));
    }
    link.stop_fd.notify();
    let start = Instant::now();
    match rx.recv_timeout(timeout) {
        Ok(snap) => Ok(Arc::try_unwrap(snap).unwrap_or_else(|a| (*a).clone())),
        // The poll thread dropped our sender unanswered: it stopped.
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ObserveError::NotRunning),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // Not answered: leave no stale sender behind for the next reader's count.
            let mut w = link
                .observe
                .flows
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            w.retain(|(i, _)| *i != id);
            Err(ObserveError::Timeout(start.elapsed()))
        }
    }
}
