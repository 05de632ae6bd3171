//! The smoltcp `Device` over the frame pool and the `to_guest` ring.
//!
//! Receive: the poll thread hands smoltcp exactly one already-classified frame at a time
//! ([`GuestDevice::rx`]); the token releases the slot once smoltcp has read it (or on drop).
//! Transmit: each token leases a slot, lets smoltcp write the frame into it, and pushes it
//! onto `to_guest`. With an empty pool the frame is written into a scratch buffer and
//! dropped (counted), like a NIC without descriptors.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::pool::{Frame, Pool};
use crate::ring::Ring;

/// The device, borrowed for one poll.
pub struct GuestDevice<'a> {
    pub pool: &'a Pool,
    pub to_guest: &'a Ring,
    /// The frame to offer smoltcp next (at most one).
    pub rx: Option<Frame>,
    pub caps: &'a DeviceCapabilities,
    /// Frames pushed onto `to_guest` during this borrow.
    pub sent: &'a mut usize,
    pub scratch: &'a mut Vec<u8>,
}

pub struct RxToken<'a> {
    pool: &'a Pool,
    frame: Option<Frame>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        // Invariant: `frame` is Some from construction until consume/drop takes it.
        let frame = self.frame.take().expect("rx token holds a frame");
        let r = f(self.pool.frame(&frame));
        self.pool.release(frame);
        r
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            self.pool.release(f);
        }
    }
}

pub struct TxToken<'a> {
    pool: &'a Pool,
    to_guest: &'a Ring,
    sent: &'a mut usize,
    scratch: &'a mut Vec<u8>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.pool.lease() {
            Some(mut frame) if len <= crate::pool::MAX_FRAME => {
                self.pool.set_len(&mut frame, len);
                let r = f(self.pool.frame_mut(&mut frame));
                if self.to_guest.push(self.pool, frame) {
                    *self.sent += 1;
                }
                r
            }
            other => {
                if let Some(frame) = other {
                    self.pool.release(frame);
                }
                self.to_guest.count_drop();
                self.scratch.resize(len, 0);
                f(&mut self.scratch[..len])
            }
        }
    }
}

impl phy::Device for GuestDevice<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((
            RxToken {
                pool: self.pool,
                frame: Some(frame),
            },
            TxToken {
                pool: self.pool,
                to_guest: self.to_guest,
                sent: self.sent,
                scratch: self.scratch,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            pool: self.pool,
            to_guest: self.to_guest,
            sent: self.sent,
            scratch: self.scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Capabilities for a guest link with IP MTU `mtu`: smoltcp computes checksums on transmit
/// and verifies none on receive (a guest with checksum offload sends partial checksums, and
/// the link is a memory copy that cannot corrupt them).
pub fn capabilities(mtu: u32) -> DeviceCapabilities {
    use smoltcp::phy::Checksum;
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = mtu as usize + 14;
    caps.max_burst_size = None;
    caps.checksum.ipv4 = Checksum::Tx;
    caps.checksum.tcp = Checksum::Tx;
    caps.checksum.udp = Checksum::Tx;
    caps.checksum.icmpv4 = Checksum::Tx;
    caps.checksum.icmpv6 = Checksum::Tx;
    caps
}
