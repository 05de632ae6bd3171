//! The virtio-net device as vhost-user-backend drives it: features, the worker thread's
//! event handling, per-connection state (see [`super`] for the theory of operation).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::queue::{self, Pass, Scratch};
use crate::link::{virtio_net_f, Link, Offloads};
use crate::pool::Frame;

/// The guest memory as the daemon shares it with the backend.
pub(crate) type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Queue index of the receive queue (frames to the guest).
pub(crate) const RX: usize = 0;
/// Queue index of the transmit queue (frames from the guest).
pub(crate) const TX: usize = 1;
/// Queues: one RX/TX pair.
pub(crate) const NUM_QUEUES: usize = 2;
/// Largest queue size a VMM may set (QEMU's `rx_queue_size` / `tx_queue_size` go up to it).
pub(crate) const MAX_QUEUE_SIZE: usize = 1024;
/// Event id of frames waiting on `to_guest` (the ring's eventfd). Ids up to
/// [`NUM_QUEUES`] are the queues' kicks and the daemon's own exit / ring-enabled event.
pub(crate) const EV_TO_GUEST: u16 = NUM_QUEUES as u16 + 1;
/// Event id of the resume timer (TX backpressure, a pass that hit its budget).
pub(crate) const EV_RESUME: u16 = NUM_QUEUES as u16 + 2;
/// How long TX waits before trying again after `from_guest` was full or the pool empty.
pub(crate) const TX_RETRY: Duration = Duration::from_micros(200);

/// The virtio feature bits offered for `offloads`: virtio 1.x only (12-byte header),
/// `EVENT_IDX`, indirect descriptors, vhost-user protocol features, and the
/// `VIRTIO_NET_F_*` bits of the offloads (mergeable RX buffers among them).
///
/// `VHOST_USER_F_PROTOCOL_FEATURES` is what QEMU's vhost-user netdev needs to start the
/// device at all (without it QEMU 7.2 fails restoring the rings' enable state and falls
/// back to userspace virtio); the vendored vhost crate accepts the `SET_VRING_ENABLE`
/// QEMU sends before `SET_FEATURES` (`vendor/vhost/RINGNET-PATCH.md`).
pub fn offered_features(offloads: Offloads) -> u64 {
    (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_RING_F_EVENT_IDX)
        | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        | offloads.virtio_features()
}

/// The worker thread's state; the front-end's thread touches it only to clear it when a
/// ring stops or the device resets.
#[derive(Default)]
struct Worker {
    /// A frame for the guest that found no receive buffers; it goes first next time.
    pending: Option<Frame>,
    scratch: Scratch,
}

/// One connection's virtio-net device.
pub(crate) struct NetDevice {
    link: Arc<Link>,
    features: u64,
    acked: AtomicU64,
    mem: Memory,
    worker: Mutex<Worker>,
    resume: Timer,
    /// Read ends of the exit events handed to the daemon's worker threads, which the
    /// daemon registers by raw fd and never closes ([`NetDevice::close_exit_fds`]).
    exit_fds: Mutex<Vec<RawFd>>,
}

impl NetDevice {
    pub(crate) fn new(link: Arc<Link>, features: u64, mem: Memory) -> io::Result<NetDevice> {
        Ok(NetDevice {
            link,
            features,
            acked: AtomicU64::new(0),
            mem,
            worker: Mutex::new(Worker::default()),
            resume: Timer::new()?,
            exit_fds: Mutex::new(Vec::new()),
        })
    }

    /// The resume timer's fd (registered as [`EV_RESUME`]).
    pub(crate) fn resume_fd(&self) -> RawFd {
        self.resume.fd.as_raw_fd()
    }

    /// Close the exit events' read ends once the daemon and its worker threads are gone.
    /// `sole` is the caller's proof: it holds the only reference to this device, so no
    /// epoll handler (which holds one) is left.
    pub(crate) fn close_exit_fds(self: &Arc<Self>) {
        if Arc::strong_count(self) != 1 {
            tracing::debug!("vhost-user: daemon still referenced; exit event fds left open");
            return;
        }
        for fd in std::mem::take(&mut *lock(&self.exit_fds)) {
            // SAFETY: `fd` is the read end we created in `exit_event` and gave up with
            // `into_raw_fd` to the daemon, which registered it with its epoll and never
            // closes it. The strong count shows that every epoll handler (each holds a clone
            // of this device) has been dropped, so nothing uses the fd any more; it is still
            // open (nobody closed it), so its number cannot have been reused, and it is
            // closed exactly once (taken out of the list).
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    fn mrg_rxbuf(&self) -> bool {
        self.acked.load(Ordering::Relaxed) & (1u64 << virtio_net_f::MRG_RXBUF) != 0
    }

    /// Run the TX queue; true when it must be resumed by the timer.
    fn tx(&self, vrings: &[VringRwLock<Memory>], w: &mut Worker) -> Option<Pass> {
        let vring = vrings.get(TX)?;
        let mem = self.mem.memory();
        let mut st = vring.get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            return None;
        }
        let pass = queue::tx_pass(st.get_queue_mut(), &*mem, &self.link, &mut w.scratch);
        if pass.notify {
            signal(&st);
        }
        Some(pass)
    }

    /// Run the RX queue.
    fn rx(&self, vrings: &[VringRwLock<Memory>], w: &mut Worker) -> Option<Pass> {
        let vring = vrings.get(RX)?;
        let mem = self.mem.memory();
        let mut st = vring.get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            return None;
        }
        let mrg = self.mrg_rxbuf();
        let Worker { pending, scratch } = w;
        let pass = queue::rx_pass(st.get_queue_mut(), &*mem, &self.link, mrg, pending, scratch);
        if pass.notify {
            signal(&st);
        }
        Some(pass)
    }
}

/// Interrupt the guest for a queue (its call eventfd); a failure is logged, not fatal.
fn signal(st: &vhost_user_backend::VringState<Memory>) {
    if let Err(e) = st.signal_used_queue() {
        tracing::debug!("vhost-user: signalling the guest failed: {e}");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VhostUserBackend for NetDevice {
    type Bitmap = ();
    type Vring = VringRwLock<Memory>;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
        let offloads = Offloads::from_virtio_features(features);
        tracing::info!("vhost-user: guest acked features {features:#x} (offloads: {offloads:?})");
        if features & (1u64 << VIRTIO_F_VERSION_1) == 0 {
            // A legacy driver: its 10-byte headers (12 with MRG_RXBUF) are not what a pool
            // slot holds; its frames will be misread or dropped as bad chains.
            tracing::warn!(
                "vhost-user: the guest did not ack VIRTIO_F_VERSION_1; only virtio 1.x \
                 drivers (12-byte headers) are supported"
            );
        }
        self.link.set_offloads(offloads);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // REPLY_ACK is answered by the vhost crate itself; one queue pair needs no MQ, and
        // the config space (MAC, link status) stays the VMM's.
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn reset_device(&self) {
        let mut w = lock(&self.worker);
        w.pending = None;
        self.acked.store(0, Ordering::Relaxed);
        self.resume.disarm();
    }

    fn set_event_idx(&self, enabled: bool) {
        tracing::debug!(
            "vhost-user: EVENT_IDX {}",
            if enabled { "on" } else { "off" }
        );
    }

    fn update_memory(&self, mem: Memory) -> io::Result<()> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let m = mem.memory();
        let bytes: u64 = m.iter().map(|r| r.len()).sum();
        tracing::info!(
            "vhost-user: guest memory table: {} region(s), {} MiB",
            m.num_regions(),
            bytes >> 20
        );
        Ok(())
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // The ring is stopped (GET_VRING_BASE): nothing of it may be used again.
        let mut w = lock(&self.worker);
        if queue_index as usize == RX {
            w.pending = None;
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok((consumer, notifier)) => {
                lock(&self.exit_fds).push(consumer.as_raw_fd());
                Some((consumer, notifier))
            }
            Err(e) => {
                tracing::warn!("vhost-user: creating the worker's exit event failed: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Never an error for what the guest did: an error ends the worker thread.
        let mut w = lock(&self.worker);
        let (tx, rx) = match device_event {
            e if usize::from(e) == RX => (None, self.rx(vrings, &mut w)),
            e if usize::from(e) == TX => (self.tx(vrings, &mut w), None),
            EV_TO_GUEST => {
                self.link.to_guest.drain_fd();
                (None, self.rx(vrings, &mut w))
            }
            EV_RESUME => {
                self.resume.clear();
                (self.tx(vrings, &mut w), self.rx(vrings, &mut w))
            }
            _ => return Ok(()),
        };
        let soon = tx.is_some_and(|p| p.more) || rx.is_some_and(|p| p.more);
        if soon {
            self.resume.arm(Duration::from_micros(1));
        } else if tx.is_some_and(|p| p.stalled) {
            self.resume.arm(TX_RETRY);
        }
        Ok(())
    }
}

/// A one-shot, non-blocking timerfd (`timerfd_create(2)`).
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create(2) takes no pointers; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Timer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Fire once after `after` (replacing an earlier arming); 0 is rounded up to 1 ns.
    fn arm(&self, after: Duration) {
        self.set(after.max(Duration::from_nanos(1)));
    }

    fn disarm(&self) {
        self.set(Duration::ZERO);
    }

    fn set(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: `spec` is a live, initialised itimerspec; a null old-value pointer is
        // allowed; the fd is ours and open.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            tracing::debug!(
                "vhost-user: timerfd_settime failed: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Consume an expiry (non-blocking; nothing to read is fine).
    fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into the live local buffer from our own fd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}
