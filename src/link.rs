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
//! - a port the poll thread drives itself — a TAP device ([`crate::backend::tap::Tap`]), or
//!   QEMU's stream netdev ([`crate::backend::stream::StreamPort`]: length-prefixed frames
//!   over a unix socket QEMU connects to, reconnects included, or a connected socket fd):
//!   it reads frames when its fd is ready and writes `to_guest` out every turn;
//! - the embedding rings ([`RingPort`]): a VMM moves frames between its virtqueues and the
//!   rings from its own threads ([`crate::network::GuestLink`]); the port only wakes it.
//!
//! The vhost-user backend (`backend::vhost_user`, feature `vhost-user`) is a VMM of the
//! second kind living in ringnet: its worker thread moves frames between the guest's
//! virtqueues and the rings. One poll thread
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
    /// Offloads the guest negotiated anew, waiting for the poll thread
    /// ([`Link::set_offloads`]).
    offloads: Mutex<Option<Offloads>>,
    /// The guest behind the link was replaced; its flows are to be closed
    /// ([`Link::reset_guest`]).
    reset: AtomicBool,
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
            offloads: Mutex::new(None),
            reset: AtomicBool::new(false),
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

    /// Tell the poll thread which offloads the guest negotiated (again: a guest whose driver
    /// reloaded, a VMM that learned them after start); it takes them on its next wake-up,
    /// which this causes.
    pub fn set_offloads(&self, offloads: Offloads) {
        *self.offloads.lock().unwrap_or_else(|e| e.into_inner()) = Some(offloads);
        self.stop_fd.notify();
    }

    /// The offloads handed over by [`Link::set_offloads`], once.
    pub fn take_offloads(&self) -> Option<Offloads> {
        self.offloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The guest behind the link was replaced (a VMM reconnected, a guest rebooted): the
    /// poll thread closes every flow of the old one on its next wake-up, which this causes.
    /// Frames already on `from_guest` are the new guest's and are kept.
    pub fn reset_guest(&self) {
        self.reset.store(true, std::sync::atomic::Ordering::Release);
        self.stop_fd.notify();
    }

    /// True once after each [`Link::reset_guest`].
    pub fn take_reset(&self) -> bool {
        self.reset.swap(false, std::sync::atomic::Ordering::AcqRel)
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

    /// The virtio-net offloads of the guest behind this port when it starts (later changes
    /// come through [`Link::set_offloads`]). Frames in both directions carry a virtio-net
    /// header ([`crate::wire::vnet`]) in their slot; with [`Offloads::NONE`] it is zero to
    /// the guest and not read from it.
    fn offloads(&self) -> Offloads;

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
pub struct RingPort {
    /// What the VMM's guest negotiated, as far as the VMM knew at start.
    pub offloads: Offloads,
}

impl GuestPort for RingPort {
    fn ready_fd(&self) -> Option<RawFd> {
        None
    }

    fn offloads(&self) -> Offloads {
        self.offloads
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

/// The virtio-net offloads a guest's driver negotiated (virtio 1.x §5.1.3 feature bits),
/// as the link honours them.
///
/// From the guest: with [`Offloads::csum`] a frame may carry a partial checksum
/// (`NEEDS_CSUM`), with [`Offloads::host_tso4`] / [`Offloads::host_tso6`] it may be a TCP
/// super-frame of up to 64 KiB (`GSO_TCPV4` / `GSO_TCPV6`); both are accepted whole, the
/// partial checksum trusted (nothing on the way to a host socket needs it). A header that
/// claims an offload the guest did not negotiate drops its frame (`from_guest_bad_vnet`).
///
/// To the guest: with [`Offloads::guest_csum`] TCP frames leave with a partial checksum and
/// `NEEDS_CSUM`; with [`Offloads::guest_tso4`] / [`Offloads::guest_tso6`] as well, TCP
/// super-frames of up to 64 KiB with the GSO type and size. With [`Offloads::mrg_rxbuf`]
/// every header says `num_buffers = 1` (a VMM that spreads a frame over several receive
/// buffers writes the real count). Virtio makes TSO depend on the checksum feature of the
/// same direction; [`Offloads::effective`] drops a TSO bit without it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Offloads {
    /// `VIRTIO_NET_F_CSUM`: the guest sends partial checksums.
    pub csum: bool,
    /// `VIRTIO_NET_F_GUEST_CSUM`: the guest takes partial checksums.
    pub guest_csum: bool,
    /// `VIRTIO_NET_F_HOST_TSO4`: the guest sends IPv4 TCP super-frames.
    pub host_tso4: bool,
    /// `VIRTIO_NET_F_HOST_TSO6`: the guest sends IPv6 TCP super-frames.
    pub host_tso6: bool,
    /// `VIRTIO_NET_F_GUEST_TSO4`: the guest takes IPv4 TCP super-frames.
    pub guest_tso4: bool,
    /// `VIRTIO_NET_F_GUEST_TSO6`: the guest takes IPv6 TCP super-frames.
    pub guest_tso6: bool,
    /// `VIRTIO_NET_F_MRG_RXBUF`: the header's `num_buffers` counts receive buffers.
    pub mrg_rxbuf: bool,
}

/// Virtio-net feature bit numbers (virtio 1.x §5.1.3).
pub mod virtio_net_f {
    pub const CSUM: u32 = 0;
    pub const GUEST_CSUM: u32 = 1;
    pub const GUEST_TSO4: u32 = 7;
    pub const GUEST_TSO6: u32 = 8;
    pub const HOST_TSO4: u32 = 11;
    pub const HOST_TSO6: u32 = 12;
    pub const MRG_RXBUF: u32 = 15;
}

impl Offloads {
    /// Plain frames both ways (the embedding link's default).
    pub const NONE: Offloads = Offloads {
        csum: false,
        guest_csum: false,
        host_tso4: false,
        host_tso6: false,
        guest_tso4: false,
        guest_tso6: false,
        mrg_rxbuf: false,
    };

    /// Checksum and TCP segmentation offload both ways (what a TAP opened with
    /// `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)` gives), without mergeable receive buffers.
    pub const TSO: Offloads = Offloads {
        csum: true,
        guest_csum: true,
        host_tso4: true,
        host_tso6: true,
        guest_tso4: true,
        guest_tso6: true,
        mrg_rxbuf: false,
    };

    /// The offloads of a negotiated virtio-net feature set (`VIRTIO_NET_F_*` bits).
    pub fn from_virtio_features(features: u64) -> Offloads {
        let bit = |b: u32| features & (1u64 << b) != 0;
        Offloads {
            csum: bit(virtio_net_f::CSUM),
            guest_csum: bit(virtio_net_f::GUEST_CSUM),
            host_tso4: bit(virtio_net_f::HOST_TSO4),
            host_tso6: bit(virtio_net_f::HOST_TSO6),
            guest_tso4: bit(virtio_net_f::GUEST_TSO4),
            guest_tso6: bit(virtio_net_f::GUEST_TSO6),
            mrg_rxbuf: bit(virtio_net_f::MRG_RXBUF),
        }
    }

    /// The `VIRTIO_NET_F_*` feature bits of these offloads (what a device offers).
    pub fn virtio_features(self) -> u64 {
        let bit = |on: bool, b: u32| if on { 1u64 << b } else { 0 };
        bit(self.csum, virtio_net_f::CSUM)
            | bit(self.guest_csum, virtio_net_f::GUEST_CSUM)
            | bit(self.host_tso4, virtio_net_f::HOST_TSO4)
            | bit(self.host_tso6, virtio_net_f::HOST_TSO6)
            | bit(self.guest_tso4, virtio_net_f::GUEST_TSO4)
            | bit(self.guest_tso6, virtio_net_f::GUEST_TSO6)
            | bit(self.mrg_rxbuf, virtio_net_f::MRG_RXBUF)
    }

    /// These offloads as the link applies them: a TSO bit without the checksum feature of
    /// its direction is dropped (virtio requires it; a super-frame needs a partial
    /// checksum).
    pub fn effective(self) -> Offloads {
        Offloads {
            host_tso4: self.host_tso4 && self.csum,
            host_tso6: self.host_tso6 && self.csum,
            guest_tso4: self.guest_tso4 && self.guest_csum,
            guest_tso6: self.guest_tso6 && self.guest_csum,
            ..self
        }
    }

    /// True when headers from the guest may say anything but "plain frame".
    pub fn from_guest(self) -> bool {
        self.csum
    }
}
