//! vhost-user-net backend: a VMM (QEMU, cloud-hypervisor) hands ringnet its guest's
//! virtio-net queues over a unix socket (`ringnet vhost-user --socket PATH`).
//!
//! # Theory of operation
//!
//! The VMM connects to the socket, shares the guest's memory (memfd regions, mapped here by
//! vm-memory on `SET_MEM_TABLE`), and sends each virtqueue's layout and its kick (guest →
//! ringnet) and call (ringnet → guest) eventfds. The rust-vmm crates do the protocol:
//! `vhost` parses messages, `vhost-user-backend` keeps the rings' state and runs one
//! epoll worker thread that calls `device::NetDevice`'s `handle_event`; `virtio-queue`
//! walks descriptor chains. `queue` is this backend's part: the TX and RX passes.
//!
//! Threads (per connection, besides the caller's and ringnet's poll thread, which runs as
//! usual from `Network::start` with the embedding link — the stack does not know which
//! port it serves):
//! - the daemon's request thread: vhost-user messages (features, memory table, rings);
//! - one worker thread for both queues: all frame movement. It is the only producer of
//!   `from_guest` and the only consumer of `to_guest`, as the SPSC rings require; the
//!   request thread only clears the worker's state when a ring stops or the device resets.
//!
//! Wake-ups of the worker, per direction:
//!
//! | direction | event | what runs |
//! |---|---|---|
//! | TX (guest → ringnet) | the TX queue's kick | `queue::tx_pass`: chains copied into pool slots, pushed on `from_guest` (whose push wakes the poll thread if it is parked) |
//! | TX | the resume timer (200 µs after a stall) | the TX pass again (and RX) |
//! | RX (ringnet → guest) | `to_guest`'s eventfd (the poll thread queued frames) | `queue::rx_pass`: frames written into the guest's receive buffers |
//! | RX | the RX queue's kick (the guest added buffers; enabled only while a frame waits for them) | the RX pass again |
//! | both | a pass that used its budget (256 frames) | the timer, armed for 1 µs, so the other direction gets a turn |
//!
//! Each pass ends with an interrupt through the queue's call eventfd when the guest's
//! suppression allows it (`VIRTIO_RING_F_EVENT_IDX` is offered and honoured both ways:
//! `used_event` for interrupts, `avail_event` for kicks).
//!
//! Backpressure. TX takes a descriptor chain only with a pool slot leased and room on
//! `from_guest`; otherwise the chains stay in the guest's avail ring (the guest's queue
//! fills and its stack backs off: no drop) and the resume timer retries in 200 µs — the
//! poll thread gives no "room again" signal, and a timer cannot deadlock. RX keeps a frame
//! that found no buffers (an owned pool [`crate::pool::Frame`]) and waits for the guest's
//! RX kick; frames behind it wait on `to_guest`, whose producer, the poll thread, stops
//! producing at its high-water mark rather than dropping.
//!
//! Copies. One per frame and direction, between guest memory and a pool slot, and it
//! stays: the poll thread owns frames as pool slots (handles on SPSC rings, returned when
//! dropped), and smoltcp copies payload into socket buffers anyway. A frame pointing into
//! guest memory would have to hold its descriptor chain (and the guest's buffer) until the
//! poll thread is done with it, out of order with the used ring, and guest memory can
//! change under it.
//!
//! Guest input. Descriptor addresses, lengths, chain links and ring indices are the guest's
//! to choose: every access is checked, a bad chain is returned (TX: used with length 0;
//! RX: used with length 0, the frame tried on the next buffers) and counted
//! (`vhost_tx_bad_chain`, `vhost_rx_bad_chain`, `vhost_ring_errors`), never a panic. Chains
//! are bounded by the queue size (virtio-queue) and 1024 descriptors (here).
//!
//! Features. Offered: `VIRTIO_F_VERSION_1` (required: only the 12-byte
//! `virtio_net_hdr_v1` is supported, which is what a pool slot holds), `EVENT_IDX`,
//! `INDIRECT_DESC`, and by default checksum and TSO offload both ways with mergeable RX
//! buffers ([`Offloads::TSO`] + `mrg_rxbuf`). Without offloads ([`Offloads::NONE`] with
//! `mrg_rxbuf`) mergeable buffers stay offered: they are buffer management, not an
//! offload, and let frames up to the configured MTU reach a guest that posts page-sized
//! buffers. What the guest acks is handed to the link
//! ([`crate::link::Link::set_offloads`]); the poll thread then builds headers for it.
//! `VHOST_USER_F_PROTOCOL_FEATURES` is offered (QEMU's vhost-user netdev does not start
//! without it) with protocol features `REPLY_ACK` only: one queue pair needs no `MQ`, and
//! the config space (MAC, link status) stays the VMM's. QEMU's virtio-net sends
//! `SET_VRING_ENABLE` before `SET_FEATURES`, which vhost 0.18 refuses by dropping the
//! connection; the vendored, patched vhost (`vendor/vhost/RINGNET-PATCH.md`) remembers those
//! requests and applies them once the features are set.
//!
//! Connections. One VMM at a time. Each connection gets a fresh device, daemon and guest
//! memory map; when the VMM disconnects, the frames queued for the old guest are dropped,
//! the link's offloads fall back to none, [`crate::link::Link::reset_guest`] closes the
//! old guest's flows, and the socket accepts the next VMM. A ring stopped by the VMM
//! (`GET_VRING_BASE`, as on a guest driver reset) forgets the RX frame it held; a new
//! feature set is handed to the link again. A stale file at the socket path is replaced
//! (a non-socket is an error); the socket is removed when the server is dropped.

mod device;
#[cfg(any(test, fuzzing))]
pub mod hostile;
mod queue;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

pub use device::offered_features;
use device::{Memory, NetDevice, EV_RESUME, EV_TO_GUEST};

use crate::link::Offloads;
use crate::metrics::Stats;
use crate::network::GuestLink;

/// How often a server waiting for a VMM checks for [`StopHandle::stop`].
pub const ACCEPT_TICK: Duration = Duration::from_millis(100);

/// Errors of the vhost-user server.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// Something other than a socket is at the path (not replaced).
    #[error("{0}: exists and is not a socket")]
    NotASocket(PathBuf),
    /// The stale socket could not be removed.
    #[error("removing the stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    /// Binding the listening socket failed.
    #[error("listening on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: vhost::vhost_user::Error,
    },
    /// Waiting for a connection failed.
    #[error("waiting for a VMM on {path}: {source}")]
    Accept { path: PathBuf, source: io::Error },
    /// The device's own fds (timerfd) could not be created.
    #[error("creating the vhost-user device: {0}")]
    Device(io::Error),
    /// The daemon (its worker thread) could not be created.
    #[error("starting the vhost-user daemon: {0}")]
    Daemon(String),
    /// An extra event source could not be added to the worker's epoll.
    #[error("registering the {what} event with the vhost-user worker: {source}")]
    Register {
        what: &'static str,
        source: io::Error,
    },
}

/// A vhost-user-net server on one socket, serving one VMM at a time until stopped.
pub struct VhostUserNet {
    guest: GuestLink,
    socket: PathBuf,
    listener: Listener,
    features: u64,
    stop: Arc<Stop>,
}

impl std::fmt::Debug for VhostUserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserNet")
            .field("socket", &self.socket)
            .field("features", &format_args!("{:#x}", self.features))
            .finish()
    }
}

#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    /// The connection being served, to cut it on stop.
    conn: Mutex<Option<ShutdownHandle>>,
}

/// Stops a [`VhostUserNet::serve`] running on another thread.
#[derive(Clone)]
pub struct StopHandle(Arc<Stop>);

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.0.flag.load(Ordering::Relaxed))
            .finish()
    }
}

impl StopHandle {
    /// Make `serve` return: at once when a VMM is connected (its connection is shut
    /// down), within [`ACCEPT_TICK`] while it waits for one.
    pub fn stop(&self) {
        self.0.flag.store(true, Ordering::Release);
        if let Some(conn) = lock(&self.0.conn).as_ref() {
            conn.shutdown();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostUserNet {
    /// Listen on `socket` for a VMM whose guest is served through `guest` (the link of a
    /// started [`crate::Network`], taken with `take_link_with(Offloads::NONE)`: the
    /// guest's offloads are handed over when it acks them). `offloads` is what the device
    /// offers. A socket left at the path by an earlier run is replaced.
    pub fn bind(
        guest: GuestLink,
        socket: impl AsRef<Path>,
        offloads: Offloads,
    ) -> Result<VhostUserNet, VhostUserError> {
        let path = socket.as_ref().to_path_buf();
        remove_stale_socket(&path)?;
        let listener = Listener::new(&path, false).map_err(|source| VhostUserError::Bind {
            path: path.clone(),
            source,
        })?;
        Ok(VhostUserNet {
            guest,
            socket: path,
            listener,
            features: offered_features(offloads),
            stop: Arc::new(Stop::default()),
        })
    }

    /// The virtio feature bits the device offers.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A handle to stop [`VhostUserNet::serve`] from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Serve VMMs one after the other until [`StopHandle::stop`]. A connection that ends
    /// (the VMM quit, or broke the protocol) resets the guest's side of the link and the
    /// socket takes the next one; errors are what keeps the server from listening.
    pub fn serve(&mut self) -> Result<(), VhostUserError> {
        while !self.stop.flag.load(Ordering::Acquire) {
            if readable(self.listener.as_raw_fd(), ACCEPT_TICK).map_err(|source| {
                VhostUserError::Accept {
                    path: self.socket.clone(),
                    source,
                }
            })? {
                self.serve_connection()?;
            }
        }
        Ok(())
    }

    /// Accept one VMM and serve it until it disconnects.
    fn serve_connection(&mut self) -> Result<(), VhostUserError> {
        let link = self.guest.link().clone();
        let mem: Memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let device = Arc::new(
            NetDevice::new(link.clone(), self.features, mem.clone())
                .map_err(VhostUserError::Device)?,
        );
        let mut daemon = VhostUserDaemon::new("ringnet-vhost".into(), device.clone(), mem)
            .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
        for handler in daemon.get_epoll_handlers() {
            let register = |fd, ev: u16, what| {
                handler
                    .register_listener(fd, EventSet::IN, u64::from(ev))
                    .map_err(|source| VhostUserError::Register { what, source })
            };
            register(link.to_guest.fd(), EV_TO_GUEST, "to_guest")?;
            register(device.resume_fd(), EV_RESUME, "resume timer")?;
        }
        if let Err(e) = daemon.start(&mut self.listener) {
            // A connection that failed on accept: wait for the next one.
            tracing::warn!(
                "vhost-user: accepting a VMM on {} failed: {e}",
                self.socket.display()
            );
            std::thread::sleep(ACCEPT_TICK);
            return Ok(());
        }
        Stats::inc(&link.stats.vhost_connections);
        tracing::info!("vhost-user: a VMM connected on {}", self.socket.display());
        *lock(&self.stop.conn) = daemon.shutdown_handle();
        if self.stop.flag.load(Ordering::Acquire) {
            daemon.request_shutdown();
        }
        let ended = daemon.wait();
        *lock(&self.stop.conn) = None;
        // Joins the worker thread: from here on this thread is the rings' only user.
        drop(daemon);
        device.close_exit_fds();
        drop(device);
        // The guest behind the link is gone: its frames, offloads and flows with it.
        link.to_guest.clear();
        link.set_offloads(Offloads::NONE);
        link.reset_guest();
        use vhost::vhost_user::Error as Protocol;
        use vhost_user_backend::Error as Daemon;
        match ended {
            // The VMM quit (mid-message, too): the normal end of a connection.
            Ok(())
            | Err(Daemon::HandleRequest(Protocol::Disconnected | Protocol::PartialMessage)) => {
                tracing::info!(
                    "vhost-user: the VMM disconnected; listening on {} again",
                    self.socket.display()
                );
            }
            Err(e) => tracing::warn!(
                "vhost-user: the VMM's connection ended: {e}; listening on {} again",
                self.socket.display()
            ),
        }
        Ok(())
    }
}

/// Remove a socket left at `path` (a dead server's); refuse to remove anything else.
fn remove_stale_socket(path: &Path) -> Result<(), VhostUserError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| VhostUserError::RemoveStale {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(VhostUserError::NotASocket(path.to_path_buf())),
        Err(_) => Ok(()),
    }
}

/// Wait up to `timeout` for `fd` to be readable (`poll(2)`); false on timeout or a signal.
fn readable(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd on this stack frame for the whole call (nfds 1);
    // poll(2) writes only its `revents`.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}
