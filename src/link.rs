//! The link between a guest NIC and its poll thread, and the guest-port trait.
//!
//! # Theory of operation
//!
//! A [`Link`] is what the poll thread shares with the guest side: the frame [`Pool`], the
//! two SPSC [`Ring`]s (`from_guest`: guest → poll thread, `to_guest`: poll thread → guest),
//! the stop signal and the poll thread's counters. Its sizes are fixed here
//! ([`POOL_SLOTS`], [`RING_SLOTS`]).
//!
//! A [`GuestPort`] is how frames get from the guest's NIC onto `from_guest` and from
//! `to_guest` to the guest's NIC. The poll thread knows only the trait; two kinds exist:
//! - a port the poll thread drives itself — a TAP device ([`crate::backend::tap::Tap`]):
//!   it reads frames when its fd is ready and writes `to_guest` out every turn;
//! - the embedding rings ([`RingPort`]): a VMM moves frames between its virtqueues and the
//!   rings from its own threads ([`crate::network::GuestLink`]); the port only wakes it.
//!
//! QEMU's stream protocol and vhost-user are the next implementations. One poll thread
//! serves one port; a NIC with several queue pairs becomes one link, port and poll thread
//! per queue pair (flows are steered to a queue by the guest's own RSS hash).
//!
//! Drop order: the rings (which may hold frames) drop before the pool, so a normal teardown
//! returns every slot (see [`crate::pool`] for what happens otherwise).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;

use crate::metrics::Stats;
use crate::policy::Policy;
use crate::pool::Pool;
use crate::ring::{EventFd, Ring};
use std::sync::Mutex;

/// Frame slots in the pool of one link.
pub const POOL_SLOTS: usize = 1024;
/// Frames each ring holds.
pub const RING_SLOTS: usize = 256;
/// `to_guest` frames at which the poll thread makes room before producing more.
pub const TO_GUEST_HIGH: usize = RING_SLOTS * 3 / 4;

/// What the poll thread shares with the guest side.
#[derive(Debug)]
pub struct Link {
    pub from_guest: Ring,
    pub to_guest: Ring,
    /// Wakes the poll thread for `stop` and for a new policy.
    pub stop_fd: EventFd,
    pub stop: AtomicBool,
    pub stats: Stats,
    /// Denial events, the termination hook, flow-snapshot requests, latency summaries
    /// ([`crate::observe`]).
    pub observe: crate::observe::Observe,
    /// A policy waiting for the poll thread ([`Link::set_policy`]).
    policy: Mutex<Option<Policy>>,
    /// Port changes waiting for the poll thread ([`Link::port_change`]).
    port_changes: Mutex<Vec<PortChange>>,
    /// Last: dropped after the rings (see the module docs).
    pub pool: Pool,
}

/// A published port to add or remove while the network runs.
#[derive(Debug)]
pub struct PortChange {
    /// Publish (true) or unpublish (false) `spec`.
    pub publish: bool,
    pub spec: crate::config::PortSpec,
    /// Where the poll thread says how it went (an error as its message).
    pub reply: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Errors building a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("frame pool: {0}")]
    Pool(#[from] crate::pool::PoolError),
    #[error("ring: {0}")]
    Ring(#[from] crate::ring::RingError),
    #[error("creating the stop eventfd failed: {0}")]
    StopFd(io::Error),
    #[error("a packet capture is already attached")]
    Capturing,
}

impl Link {
    /// A link of the standard sizes.
    pub fn new() -> Result<Link, LinkError> {
        Ok(Link {
            from_guest: Ring::new(RING_SLOTS)?,
            to_guest: Ring::new(RING_SLOTS)?,
            stop_fd: EventFd::new().map_err(LinkError::StopFd)?,
            stop: AtomicBool::new(false),
            stats: Stats::default(),
            observe: crate::observe::Observe::default(),
            policy: Mutex::new(None),
            port_changes: Mutex::new(Vec::new()),
            pool: Pool::new(POOL_SLOTS)?,
        })
    }

    /// Hand the poll thread a new policy (it takes it on its next wake-up, which this
    /// causes); a policy not taken yet is replaced.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(policy);
        self.stop_fd.notify();
    }

    /// Hand the poll thread a port change; its result comes back on `change.reply`.
    pub fn port_change(&self, change: PortChange) {
        self.port_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
        self.stop_fd.notify();
    }

    /// The port changes handed over by [`Link::port_change`].
    pub fn take_port_changes(&self) -> Vec<PortChange> {
        std::mem::take(&mut *self.port_changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The policy handed over by [`Link::set_policy`], once.
    pub fn take_policy(&self) -> Option<Policy> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Attach a packet capture to both rings (every frame crossing the guest boundary is
    /// copied into it). Fails when one is attached already.
    pub fn tap(&self, capture: &std::sync::Arc<crate::pcap::Capture>) -> Result<(), LinkError> {
        let ok = self.from_guest.tap(capture.clone()).is_ok();
        if !ok || self.to_guest.tap(capture.clone()).is_err() {
            return Err(LinkError::Capturing);
        }
        Ok(())
    }

    /// Frames left out of the attached capture (0 without one).
    pub fn capture_dropped(&self) -> u64 {
        self.from_guest.capture().map_or(0, |c| c.dropped())
    }
}

/// Why a guest port stopped working (the poll thread stops with it).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The guest's device went away (a TAP deleted in the guest, a VMM that hung up).
    #[error("the guest's {0} was deleted")]
    Gone(String),
    /// Any other failure, described.
    #[error("{0}")]
    Io(String),
}

/// The guest side of a link as the poll thread drives it.
pub trait GuestPort: Send {
    /// An fd that becomes readable when frames from the guest may be waiting for
    /// [`GuestPort::receive`]; `None` when frames only ever arrive on `from_guest` (whose
    /// eventfd the poll thread always watches).
    fn ready_fd(&self) -> Option<RawFd>;

    /// Frames in both directions carry a virtio-net header that this port honours
    /// (checksum and segmentation offload), so the poll thread may send TCP super-frames
    /// with partial checksums.
    fn offload(&self) -> bool;

    /// Move up to `budget` frames from the guest onto `link.from_guest`; returns how many.
    /// Fewer than `budget` means the port is drained until its fd is ready again. An error
    /// means the port is gone (the poll thread stops with it).
    fn receive(&mut self, link: &Link, budget: usize) -> Result<usize, PortError>;

    /// Hand the frames queued on `link.to_guest` to the guest (a port the poll thread
    /// drives writes them; the rings tell their consumer). `queued` frames were added since
    /// the last call.
    fn transmit(&mut self, link: &Link, queued: usize);

    /// `to_guest` is filling up: make room now if this port can. Returns false when the
    /// guest side has yet to drain it (the caller leaves work for a later turn instead of
    /// dropping frames).
    fn make_room(&mut self, link: &Link) -> bool;
}

/// The embedding rings as a port: a VMM moves the frames itself; the poll thread only
/// tells it when frames for the guest are waiting.
#[derive(Debug, Default)]
pub struct RingPort;

impl GuestPort for RingPort {
    fn ready_fd(&self) -> Option<RawFd> {
        None
    }

    fn offload(&self) -> bool {
        false
    }

    fn receive(&mut self, _link: &Link, _budget: usize) -> Result<usize, PortError> {
        Ok(0)
    }

    fn transmit(&mut self, link: &Link, queued: usize) {
        if queued > 0 {
            link.to_guest.notify();
        }
    }

    fn make_room(&mut self, link: &Link) -> bool {
        link.to_guest.notify();
        false
    }
}
