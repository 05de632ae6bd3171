//! TAP backend: the guest is a network namespace whose NIC is a TAP device.
//!
//! # Theory of operation
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte virtio-net
//! header (`TUNSETVNETHDRSZ`) and `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)`, so the guest kernel
//! hands over 64 KiB TCP super-frames with partial checksums and accepts the same back
//! (see `tun(4)` / `Documentation/networking/tuntap.rst`). A pool slot is laid out exactly
//! as the device reads and writes (header, then frame), so each direction is one syscall per
//! frame straight into or out of the slot, with no copy in userspace.
//!
//! - `from_guest`: [`Tap::read_frames`] reads until `EAGAIN` or the budget is spent, each
//!   frame into a freshly leased slot pushed onto the `from_guest` ring.
//! - `to_guest`: [`Tap::write_frame`] writes one slot. The tun driver queues the frame into
//!   the guest's stack synchronously, so a write does not block in practice; a failed write
//!   drops the frame and is counted by the caller (a TAP the guest set down fails every
//!   write with `EIO` until it is up again).
//! - A TAP deleted in the guest (`ip link del`) detaches the fd: it polls as an error and
//!   every read fails with `EBADFD`, which [`Tap::read_frames`] reports as
//!   [`TapError::Gone`].
//!
//! The fd is non-blocking; the poll thread waits for it to become readable.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::link::{GuestPort, Link, PortError};
use crate::metrics::Stats;
use crate::pool::{Frame, Pool, HDR_BYTES, SLOT_BYTES};
use crate::ring::Ring;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// Errors of the TAP backend.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name {0:?} is invalid (1..=15 bytes, no NUL)")]
    BadName(String),
    #[error("opening /dev/net/tun failed: {0}")]
    Open(io::Error),
    #[error("TUNSETIFF for TAP {name:?} failed: {source}")]
    SetIff { name: String, source: io::Error },
    #[error("TUNSETVNETHDRSZ failed: {0}")]
    VnetHdr(io::Error),
    #[error("TUNSETOFFLOAD failed: {0}")]
    Offload(io::Error),
    #[error("making the adopted TAP fd non-blocking failed: {0}")]
    Adopt(io::Error),
    #[error("the TAP device {0:?} was deleted")]
    Gone(String),
    #[error("reading from TAP {name:?} failed: {source}")]
    Read { name: String, source: io::Error },
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device (in whatever network namespace the opening thread was in).
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

fn ioctl(fd: RawFd, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: the callers pass a request whose argument type matches `arg` (an `IfReq` or a
    // c_int / c_uint living for the duration of the call).
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Open (creating if needed) the TAP `name` in the calling thread's network namespace,
    /// with virtio-net headers and checksum/TSO offloads.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.to_string()))?;
        if name.is_empty() || name.len() > 15 {
            return Err(TapError::BadName(name.to_string()));
        }
        let path = c"/dev/net/tun";
        // SAFETY: a valid NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TapError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(cname.as_bytes());
        ioctl(fd.as_raw_fd(), TUNSETIFF, (&mut req as *mut IfReq).cast()).map_err(|source| {
            TapError::SetIff {
                name: name.to_string(),
                source,
            }
        })?;
        let mut hdr: libc::c_int = HDR_BYTES as libc::c_int;
        ioctl(
            fd.as_raw_fd(),
            TUNSETVNETHDRSZ,
            (&mut hdr as *mut libc::c_int).cast(),
        )
        .map_err(TapError::VnetHdr)?;
        // TUNSETOFFLOAD takes the flags by value.
        // SAFETY: the request takes an unsigned long argument by value.
        let r = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(TapError::Offload(io::Error::last_os_error()));
        }
        let real = String::from_utf8_lossy(&req.name)
            .trim_end_matches('\0')
            .to_string();
        Ok(Tap { fd, name: real })
    }

    /// Adopt a TAP that [`Tap::open`] opened elsewhere (in another process, whose fd was
    /// passed over a unix socket): `fd` must be such a device fd and `name` its interface
    /// name. The fd is made non-blocking again (a no-op: the flag belongs to the shared open
    /// file, which `open` set).
    pub fn adopt(fd: OwnedFd, name: &str) -> Result<Tap, TapError> {
        // SAFETY: fcntl(2) F_GETFL / F_SETFL on a descriptor we own; no memory is passed.
        let r = unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if r < 0 {
            return Err(TapError::Adopt(io::Error::last_os_error()));
        }
        Ok(Tap {
            fd,
            name: name.to_string(),
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device fd (non-blocking).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read up to `budget` frames from the guest onto `ring`. Returns the number read;
    /// fewer than `budget` only when a read hit `EAGAIN` (the device is drained). A frame
    /// that finds the pool empty is read into a scratch buffer and dropped (counted on the
    /// ring) so the device does not stay readable forever.
    pub fn read_frames(
        &mut self,
        pool: &Pool,
        ring: &Ring,
        budget: usize,
    ) -> Result<usize, TapError> {
        let mut n = 0;
        while n < budget {
            let Some(mut frame) = pool.lease() else {
                let mut scratch = [0u8; 128];
                // SAFETY: reads at most 128 bytes into a live stack buffer; the frame is
                // truncated and discarded, which is what we want when out of slots.
                let r =
                    unsafe { libc::read(self.fd(), scratch.as_mut_ptr().cast(), scratch.len()) };
                if r < 0 {
                    match self.read_error(n)? {
                        Some(n) => return Ok(n),
                        None => continue,
                    }
                }
                ring.count_drop();
                n += 1;
                continue;
            };
            let slot = frame.slot_mut();
            // SAFETY: reads at most SLOT_BYTES into the slot we exclusively own.
            let r = unsafe { libc::read(self.fd(), slot.as_mut_ptr().cast(), SLOT_BYTES) };
            if r < 0 {
                drop(frame);
                match self.read_error(n)? {
                    Some(n) => return Ok(n),
                    None => continue,
                }
            }
            // Non-negative: checked above.
            #[allow(clippy::cast_sign_loss)]
            let r = r as usize;
            if r <= HDR_BYTES {
                continue; // a runt: `frame` drops, its slot returns
            }
            frame.set_len(r - HDR_BYTES);
            ring.push(frame);
            n += 1;
        }
        Ok(n)
    }

    /// After a failed `read(2)`: `Some(n)` at `EAGAIN` (done: fewer than the budget tells
    /// the caller the device is drained), `None` at `EINTR` (read again); `EBADFD` means
    /// the device was deleted under us.
    fn read_error(&self, n: usize) -> Result<Option<usize>, TapError> {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Some(n)),
            Some(libc::EINTR) => Ok(None),
            Some(libc::EBADFD) => Err(TapError::Gone(self.name.clone())),
            _ => Err(TapError::Read {
                name: self.name.clone(),
                source: e,
            }),
        }
    }

    /// Write one frame (header + frame bytes of the slot) to the guest.
    pub fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        let len = HDR_BYTES + frame.len();
        let slot = frame.slot();
        // SAFETY: writes `len` ≤ SLOT_BYTES bytes from the slot we own.
        let r = unsafe { libc::write(self.fd(), slot.as_ptr().cast(), len) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Write every queued `to_guest` frame to the TAP; a failed write is a counted drop.
fn write_queued(tap: &mut Tap, ring: &Ring, stats: &Stats) {
    while let Some(frame) = ring.pop() {
        if tap.write_frame(&frame).is_err() {
            // EIO while the guest has the link down; the frame drops with its slot.
            Stats::inc(&stats.to_guest_dropped);
            ring.count_drop();
        }
    }
}

/// The poll thread drives a TAP itself: it reads when the fd is ready and writes every
/// turn; frames carry the virtio-net header with offloads.
impl GuestPort for Tap {
    fn ready_fd(&self) -> Option<RawFd> {
        Some(self.fd())
    }

    fn offloads(&self) -> crate::link::Offloads {
        crate::link::Offloads::TSO
    }

    fn receive(&mut self, link: &Link, budget: usize) -> Result<usize, PortError> {
        self.read_frames(&link.pool, &link.from_guest, budget)
            .map_err(|e| match e {
                TapError::Gone(name) => PortError::Gone(format!("TAP {name}")),
                other => PortError::Io(other.to_string()),
            })
    }

    fn transmit(&mut self, link: &Link, _queued: usize) {
        write_queued(self, &link.to_guest, &link.stats);
    }

    fn make_room(&mut self, link: &Link) -> bool {
        write_queued(self, &link.to_guest, &link.stats);
        true
    }
}
