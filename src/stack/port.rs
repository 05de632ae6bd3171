//! The guest side of the poll thread: what the engine owns ([`GuestSide`]) and what it lends
//! to protocol code for one stretch of work ([`Port`]).
//!
//! Frames to the guest are built in pool slots and queued on `to_guest` — by smoltcp through
//! [`Port::device`], or by relays through [`Port::emit`] — and handed over by the
//! [`GuestPort`] once per turn ([`GuestSide::flush`]), or earlier when `to_guest` fills up
//! ([`Port::room`]). Every frame that cannot be built or queued is counted in
//! `to_guest_dropped`.

use std::sync::Arc;

use smoltcp::phy::DeviceCapabilities;
use smoltcp::time::Instant as SmolInstant;

use super::device::{self, GuestDevice};
use super::StackError;
use crate::link::{GuestPort, Link, Offloads, TO_GUEST_HIGH};
use crate::metrics::Stats;
use crate::pool::Frame;

/// What the engine owns on the guest side.
pub(crate) struct GuestSide {
    link: Arc<Link>,
    port: Box<dyn GuestPort>,
    caps: DeviceCapabilities,
    /// Frames queued on `to_guest` since the last flush.
    sent: usize,
    /// Landing area for a frame smoltcp writes when the pool is empty (then dropped).
    scratch: Vec<u8>,
    offloads: Offloads,
    mtu: u32,
    /// Destination MAC of every unicast frame to the guest.
    guest_mac: [u8; 6],
}

impl GuestSide {
    pub fn new(
        link: Arc<Link>,
        port: Box<dyn GuestPort>,
        mtu: u32,
        guest_mac: [u8; 6],
    ) -> GuestSide {
        let offloads = port.offloads().effective();
        GuestSide {
            link,
            port,
            caps: device::capabilities(mtu, offloads),
            sent: 0,
            scratch: Vec::new(),
            offloads,
            mtu,
            guest_mac,
        }
    }

    /// Lend the guest side at time `now`.
    pub fn port(&mut self, now: SmolInstant) -> Port<'_> {
        Port {
            link: &self.link,
            guest: &mut *self.port,
            caps: &self.caps,
            sent: &mut self.sent,
            scratch: &mut self.scratch,
            offloads: self.offloads,
            guest_mac: self.guest_mac,
            now,
        }
    }

    /// The guest negotiated `offloads` (anew): frames to it follow them from now on.
    pub fn set_offloads(&mut self, offloads: Offloads) {
        let offloads = offloads.effective();
        if offloads != self.offloads {
            tracing::info!(?offloads, "guest offloads changed");
        }
        self.offloads = offloads;
        self.caps = device::capabilities(self.mtu, offloads);
    }

    /// The offloads frames to and from the guest follow.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Let the port move up to `budget` frames from the guest onto `from_guest`.
    pub fn receive(&mut self, budget: usize) -> Result<usize, StackError> {
        Ok(self.port.receive(&self.link, budget)?)
    }

    /// Hand this turn's frames to the guest.
    pub fn flush(&mut self) {
        self.port.transmit(&self.link, self.sent);
        self.sent = 0;
    }
}

/// The guest side, lent for one stretch of smoltcp or relay work.
pub(crate) struct Port<'a> {
    link: &'a Link,
    guest: &'a mut dyn GuestPort,
    caps: &'a DeviceCapabilities,
    sent: &'a mut usize,
    scratch: &'a mut Vec<u8>,
    offloads: Offloads,
    guest_mac: [u8; 6],
    pub now: SmolInstant,
}

impl Port<'_> {
    /// Build a frame outside smoltcp: lease a slot, let `build` write a frame of at most
    /// `max_len` bytes into it (returning its length, or `None` to give up), and queue it to
    /// the guest. Every failure is counted as `to_guest_dropped`.
    pub fn emit(&mut self, max_len: usize, build: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let stats = &self.link.stats;
        let Some(mut frame) = self.link.pool.lease() else {
            Stats::inc(&stats.to_guest_dropped);
            self.link.to_guest.count_drop();
            return;
        };
        match build(frame.capacity_mut()) {
            Some(len) if len <= max_len => {
                frame.set_len(len);
                if self.offloads.mrg_rxbuf {
                    crate::wire::vnet::set_num_buffers(frame.hdr_mut(), 1);
                }
                if self.link.to_guest.push(frame) {
                    *self.sent += 1;
                } else {
                    Stats::inc(&stats.to_guest_dropped);
                }
            }
            _ => Stats::inc(&stats.to_guest_dropped),
        }
    }

    /// Make sure the `to_guest` ring can take a burst; `false` when the guest side has not
    /// drained it yet (the caller leaves work for the next turn instead of dropping frames).
    pub fn room(&mut self) -> bool {
        self.link.to_guest.len() < TO_GUEST_HIGH || self.guest.make_room(self.link)
    }

    /// A smoltcp device offering `rx` (at most one frame) and transmitting to the guest.
    pub fn device(&mut self, rx: Option<Frame>) -> GuestDevice<'_> {
        GuestDevice {
            pool: &self.link.pool,
            to_guest: &self.link.to_guest,
            rx,
            caps: self.caps,
            sent: self.sent,
            scratch: self.scratch,
            offloads: self.offloads,
            guest_mac: self.guest_mac,
        }
    }
}
