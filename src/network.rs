//! The embedding API: one [`Network`] per guest NIC.
//!
//! # Theory of operation
//!
//! [`Network::new`] derives and validates the guest's addresses (see [`crate::config`]),
//! allocates the frame pool and the two rings, and with `tls.enabled` loads or generates the
//! TLS interception CA ([`crate::tls::Ca::from_config`]), so that [`Network::ca_cert_pem`]
//! can be installed in the guest before it boots. [`Network::start`] builds the egress driver
//! and the gateway and spawns the poll thread; it fails before spawning if either cannot be
//! built. A VMM then takes its end of the link once with [`Network::take_link`]:
//!
//! - `from_guest`: [`GuestLink::send`] (copies a frame) or [`GuestLink::lease`] +
//!   [`TxLease::commit`] (the VMM writes the frame straight into a pool slot);
//! - `to_guest`: [`GuestLink::recv`] hands out the next frame as an [`RxFrame`] that returns
//!   its slot on drop; [`GuestLink::notify_fd`] becomes readable when frames are waiting.
//!
//! Both ends never block: a full ring or an empty pool drops the frame and counts it.
//! [`Network::shutdown`] (also run by `Drop`) stops and joins the poll thread, which closes
//! every host socket.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{ConfigError, HostRoutes, MacAddr, NetworkConfig, SlotConfig};
use crate::egress::{self, Limits};
use crate::link::{GuestPort, Link, LinkError, Offloads, RingPort};
use crate::metrics::Stats;
use crate::pool::{Frame, HDR_BYTES, MAX_FRAME};
use crate::stack::{Engine, StackError};

pub use crate::link::{POOL_SLOTS, RING_SLOTS};

/// Errors of the embedding API.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The TLS interception CA could not be loaded or generated, or an upstream trust
    /// setting is unusable.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The TLS interception workers could not be started.
    #[error("tls: {0}")]
    Intercept(#[from] egress::intercept::InterceptError),
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("egress: {0}")]
    Egress(#[from] egress::EgressError),
    #[error("poll thread: {0}")]
    Stack(#[from] StackError),
    #[error("spawning the poll thread failed: {0}")]
    Spawn(std::io::Error),
    #[error("the network is already started")]
    AlreadyStarted,
    #[error("the poll thread panicked")]
    Panicked,
    /// A published port could not be added or removed.
    #[error("{0}")]
    Port(String),
}

/// One guest NIC's network.
pub struct Network {
    cfg: SlotConfig,
    pub(crate) link: Arc<Link>,
    thread: Option<JoinHandle<Result<(), StackError>>>,
    link_taken: bool,
    driver_note: String,
    /// The guest's offloads as stated at [`Network::take_link_with`].
    offloads: Offloads,
    /// The TLS interception CA, when `tls.enabled`.
    tls_ca: Option<Arc<crate::tls::Ca>>,
    /// What the TLS workers share (upstream trust, leaves, secrets), when `tls.enabled`.
    tls_shared: Option<Arc<crate::tls::session::Shared>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("slot", &self.cfg.slot)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Network {
    /// A network for sandbox slot `slot`, with the host's routes probed.
    pub fn new(config: &NetworkConfig, slot: u32) -> Result<Network, NetworkError> {
        Network::with_routes(config, slot, HostRoutes::probe())
    }

    /// As [`Network::new`] with the route probe's answer given. With neither family routed
    /// nor set explicitly the network still starts, with a warning: the guest gets a link
    /// but no addresses ([`SlotConfig::is_offline`]).
    pub fn with_routes(
        config: &NetworkConfig,
        slot: u32,
        routes: HostRoutes,
    ) -> Result<Network, NetworkError> {
        let mut cfg = config.derive(slot, routes)?;
        if cfg.dns.servers.is_empty() {
            cfg.dns.servers = host_dns_servers();
        }
        if cfg.is_offline() {
            tracing::warn!(
                slot = cfg.slot,
                "no host route for IPv4 or IPv6 (and no interface.ipv4_address or \
                 ipv6_address): the guest gets a link but no addresses"
            );
        }
        // Before the guest boots, so that its CA certificate can be installed in it.
        let (tls_ca, tls_shared) = if cfg.tls.enabled {
            let ca = Arc::new(crate::tls::Ca::from_config(&cfg.tls)?);
            tracing::debug!(slot = cfg.slot, ?ca, "TLS interception CA ready");
            let shared = crate::tls::session::Shared {
                upstream: crate::tls::upstream::Upstream::from_config(&cfg.tls)?,
                leaves: std::sync::Mutex::new(crate::tls::LeafCache::new(
                    ca.clone(),
                    cfg.tls.leaf_cache,
                )?),
                secrets: cfg.secrets.clone(),
                tls: cfg.tls.clone(),
            };
            (Some(ca), Some(Arc::new(shared)))
        } else {
            (None, None)
        };
        let link = Arc::new(Link::new()?);
        link.observe.term.set_events(&config.observe.terminate_on);
        Ok(Network {
            tls_ca,
            tls_shared,
            cfg,
            link,
            thread: None,
            link_taken: false,
            driver_note: String::new(),
            offloads: Offloads::NONE,
        })
    }

    /// The derived configuration.
    pub fn config(&self) -> &SlotConfig {
        &self.cfg
    }

    /// The guest's MAC address.
    pub fn guest_mac(&self) -> MacAddr {
        self.cfg.guest_mac
    }

    /// Environment variables for the guest's init (see [`SlotConfig::guest_env_vars`]).
    pub fn guest_env_vars(&self) -> Vec<(String, String)> {
        self.cfg.guest_env_vars()
    }

    /// The TLS interception CA's certificate (PEM), which the guest must trust: `Some` when
    /// `tls.enabled` (the CA is loaded or generated by [`Network::new`]), else `None`.
    pub fn ca_cert_pem(&self) -> Option<Vec<u8>> {
        self.tls_ca
            .as_ref()
            .map(|ca| ca.cert_pem().as_bytes().to_vec())
    }

    /// The host's CA bundle (PEM) for the guest to trust besides ringnet's CA: `Some` only
    /// when `tls.enabled` and `tls.trust_host_cas` are set and one of
    /// [`crate::tls::HOST_CA_BUNDLES`] holds a certificate (read at each call).
    pub fn host_cas_cert_pem(&self) -> Option<Vec<u8>> {
        if self.cfg.tls.enabled && self.cfg.tls.trust_host_cas {
            crate::tls::host_ca_bundle()
        } else {
            None
        }
    }

    /// The TLS interception CA, when `tls.enabled` (for the TLS layer's
    /// [`crate::tls::LeafCache`]).
    pub fn tls_ca(&self) -> Option<&Arc<crate::tls::Ca>> {
        self.tls_ca.as_ref()
    }

    /// Poll-thread counters.
    pub fn stats(&self) -> &Stats {
        &self.link.stats
    }

    /// Frame and byte counters of both directions of the link.
    pub fn link_counters(&self) -> LinkCounters {
        GuestLink {
            link: self.link.clone(),
        }
        .counters()
    }

    /// Frame slots free in the pool now (all of them once stopped and drained).
    pub fn pool_free(&self) -> usize {
        self.link.pool.available()
    }

    /// Frame slots in the pool.
    pub fn pool_capacity(&self) -> usize {
        self.link.pool.capacity()
    }

    /// File descriptors this network needs at its limits: one per allowed flow, sockets
    /// still closing and ringnet's own (see [`crate::stack::limits::fds_wanted`]). An
    /// embedding process wants an `RLIMIT_NOFILE` of at least the sum over its networks;
    /// below it, host sockets fail and are counted as `host_fd_exhausted`.
    pub fn fds_wanted(&self) -> u64 {
        crate::stack::limits::fds_wanted(&self.cfg)
    }

    /// Replace the policy while the network runs (or before it starts). The poll thread
    /// takes it on its next wake-up; open flows the new policy denies are then reset (TCP)
    /// or closed (UDP, ICMP echo) and counted as `policy_revoked`. The DNS pins the guest
    /// made so far stay valid for domain rules.
    pub fn set_policy(&mut self, policy: crate::policy::Policy) {
        self.cfg.policy = policy.clone();
        self.link.set_policy(policy);
    }

    /// Publish `spec` (host clients reach the guest's port): before `start`, it is bound
    /// with the configured ports when the network starts; while running, the poll thread
    /// binds it now. Errors: the port cannot be bound (in use, an address the host does not
    /// have), or it is published already.
    pub fn publish(&mut self, spec: crate::config::PortSpec) -> Result<(), NetworkError> {
        if self.thread.is_none() {
            if self
                .cfg
                .ports
                .iter()
                .any(|p| p.bind_addr() == spec.bind_addr() && p.protocol == spec.protocol)
            {
                return Err(NetworkError::Port(format!("{spec} is published already")));
            }
            self.cfg.ports.push(spec);
            return Ok(());
        }
        self.port_change(true, spec)
    }

    /// Stop accepting on the published port `spec` names (host address, port and
    /// protocol); its open connections carry on until they end.
    pub fn unpublish(&mut self, spec: &crate::config::PortSpec) -> Result<(), NetworkError> {
        if self.thread.is_none() {
            let before = self.cfg.ports.len();
            self.cfg
                .ports
                .retain(|p| !(p.bind_addr() == spec.bind_addr() && p.protocol == spec.protocol));
            if self.cfg.ports.len() == before {
                return Err(NetworkError::Port(format!("{spec} is not published")));
            }
            return Ok(());
        }
        self.port_change(false, spec.clone())
    }

    fn port_change(
        &mut self,
        publish: bool,
        spec: crate::config::PortSpec,
    ) -> Result<(), NetworkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.link.port_change(crate::link::PortChange {
            publish,
            spec: spec.clone(),
            reply: tx,
        });
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Ok(())) => {
                if publish {
                    self.cfg.ports.push(spec);
                } else {
                    self.cfg.ports.retain(|p| {
                        !(p.bind_addr() == spec.bind_addr() && p.protocol == spec.protocol)
                    });
                }
                Ok(())
            }
            Ok(Err(e)) => Err(NetworkError::Port(e)),
            Err(_) => Err(NetworkError::Port(format!(
                "{spec}: the poll thread did not answer (stopped?)"
            ))),
        }
    }

    /// Which egress driver runs and why (after `start`).
    pub fn driver_note(&self) -> &str {
        &self.driver_note
    }

    /// Start the poll thread for a VMM that drives the link itself ([`Network::take_link`]).
    pub fn start(&mut self) -> Result<(), NetworkError> {
        self.spawn(Box::new(RingPort {
            offloads: self.offloads,
        }))
    }

    /// Start the poll thread serving a guest port it drives itself (a TAP, …); the link
    /// is not handed out then.
    pub fn start_port(&mut self, port: Box<dyn GuestPort>) -> Result<(), NetworkError> {
        self.link_taken = true;
        self.spawn(port)
    }

    fn spawn(&mut self, port: Box<dyn GuestPort>) -> Result<(), NetworkError> {
        if self.thread.is_some() {
            return Err(NetworkError::AlreadyStarted);
        }
        let buf = self.cfg.egress.tcp_buffer_bytes;
        let limits = Limits {
            tx_buffer: buf,
            rx_buffer: buf,
            max_sockets: crate::stack::limits::host_sockets(&self.cfg),
            uring_entries: self.cfg.egress.uring_entries,
            ..Limits::default()
        };
        let (driver, note) = egress::select(self.cfg.egress.driver, limits)?;
        tracing::info!(slot = self.cfg.slot, "egress driver: {note}");
        self.driver_note = note;
        let mut engine = Engine::new(
            &self.cfg,
            self.link.clone(),
            driver,
            port,
            Box::new(std::time::Instant::now()),
            random_seed(),
        )
        .map_err(|e| match e {
            // Says itself what it is: "cannot publish 127.0.0.1:8080/tcp: …".
            StackError::Publish(p) => NetworkError::Port(p.to_string()),
            e => NetworkError::Stack(e),
        })?;
        if let Some(shared) = &self.tls_shared {
            let workers = egress::intercept::Interceptor::start(
                shared.clone(),
                self.link.clone(),
                &self.cfg.sandbox,
            )?;
            engine.set_interceptor(Arc::new(workers));
        }
        if self.cfg.sandbox.seccomp() || self.cfg.sandbox.drop_capabilities() {
            // The termination hook may do anything: it gets a thread of its own now, before
            // the poll thread is filtered (a thread spawned later would inherit the filter).
            crate::observe::term::start_runner(&self.link).map_err(NetworkError::Spawn)?;
        }
        let sandbox = self.cfg.sandbox.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ringnet-poll-{}", self.cfg.slot))
            .spawn(move || {
                // Every setup syscall is done: the driver, the port, the listeners, the
                // TLS workers exist.
                crate::sandbox::enter(crate::sandbox::Role::Poll, &sandbox)
                    .map_err(StackError::Sandbox)?;
                engine.run()
            })
            .map_err(NetworkError::Spawn)?;
        self.thread = Some(handle);
        Ok(())
    }

    /// The VMM's end of the link, carrying plain frames ([`Offloads::NONE`]); `None` after
    /// the first call (or when serving a TAP).
    pub fn take_link(&mut self) -> Option<GuestLink> {
        self.take_link_with(Offloads::NONE)
    }

    /// The VMM's end of the link for a guest that negotiated `offloads` (see [`Offloads`]
    /// for what each one changes); `None` after the first call (or when serving a TAP). A
    /// guest that negotiates again later (its driver reloaded) is announced with
    /// [`GuestLink::set_offloads`].
    pub fn take_link_with(&mut self, offloads: Offloads) -> Option<GuestLink> {
        if self.link_taken {
            return None;
        }
        self.link_taken = true;
        self.offloads = offloads;
        if self.thread.is_some() {
            self.link.set_offloads(offloads);
        }
        Some(GuestLink {
            link: self.link.clone(),
        })
    }

    /// True while the poll thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the poll thread and wait for it; returns its error, if it failed.
    pub fn shutdown(&mut self) -> Result<(), NetworkError> {
        let Some(handle) = self.thread.take() else {
            return Ok(());
        };
        self.link.stop.store(true, Ordering::Release);
        self.link.stop_fd.notify();
        let r = handle.join().map_err(|_| NetworkError::Panicked)?;
        self.link.to_guest.clear();
        r.map_err(NetworkError::from)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!("ringnet poll thread ended with an error: {e}");
        }
    }
}

/// Link counters as seen by the VMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub from_guest_frames: u64,
    pub from_guest_bytes: u64,
    pub from_guest_drops: u64,
    pub to_guest_frames: u64,
    pub to_guest_bytes: u64,
    pub to_guest_drops: u64,
}

/// The VMM's end of a guest link. `Send`; use it from one VMM thread per direction.
#[derive(Debug)]
pub struct GuestLink {
    link: Arc<Link>,
}

impl GuestLink {
    /// Copy one frame from the guest into the link. `vnet_hdr` is the 12-byte virtio-net
    /// header (or `None` for a plain frame); it is read as the negotiated [`Offloads`]
    /// say (not at all without any). Returns false if it was dropped (too large, pool
    /// empty, ring full).
    pub fn send(&self, vnet_hdr: Option<&[u8; HDR_BYTES]>, frame: &[u8]) -> bool {
        let Some(mut lease) = self.lease() else {
            return false;
        };
        if frame.len() > lease.buf().len() {
            lease.abandon();
            self.link.from_guest.count_drop();
            return false;
        }
        lease.buf()[..frame.len()].copy_from_slice(frame);
        if let Some(h) = vnet_hdr {
            lease.hdr().copy_from_slice(h);
        }
        lease.commit(frame.len())
    }

    /// The guest negotiated `offloads` (anew: its driver reloaded, or the VMM learned them
    /// after start); the poll thread follows them from its next wake-up, which this causes.
    pub fn set_offloads(&self, offloads: Offloads) {
        self.link.set_offloads(offloads);
    }

    /// The guest was replaced (rebooted, a VMM reconnected): the poll thread closes every
    /// flow of the old one (host sockets reset) on its next wake-up, which this causes.
    pub fn reset_guest(&self) {
        self.link.reset_guest();
    }

    /// Frames `send`/`lease` can take right now without dropping (free ring entries, bounded
    /// by free pool slots). A VMM that stops taking guest TX descriptors at 0 turns a
    /// would-be drop into backpressure.
    pub fn from_guest_room(&self) -> usize {
        let ring = RING_SLOTS.saturating_sub(self.link.from_guest.len());
        ring.min(self.link.pool.available())
    }

    /// Frames waiting for the guest (without taking them).
    pub fn to_guest_pending(&self) -> usize {
        self.link.to_guest.len()
    }

    /// The link itself, for a backend in this crate that moves frames as owned
    /// [`Frame`]s (the vhost-user backend keeps a frame for the guest across wake-ups).
    #[cfg_attr(not(feature = "vhost-user"), allow(dead_code))]
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Lease a slot to write a frame from the guest into without a copy.
    pub fn lease(&self) -> Option<TxLease<'_>> {
        match self.link.pool.lease() {
            Some(frame) => Some(TxLease {
                link: &self.link,
                frame,
            }),
            None => {
                self.link.from_guest.count_drop();
                None
            }
        }
    }

    /// The next frame for the guest, if any.
    pub fn recv(&self) -> Option<RxFrame<'_>> {
        self.link.to_guest.pop().map(|frame| RxFrame {
            frame,
            _link: std::marker::PhantomData,
        })
    }

    /// An fd that is readable when frames for the guest are waiting. Call
    /// [`GuestLink::clear_notify`] before draining with `recv` until it returns `None`.
    pub fn notify_fd(&self) -> RawFd {
        self.link.to_guest.fd()
    }

    /// Reset the readiness of [`GuestLink::notify_fd`].
    pub fn clear_notify(&self) {
        self.link.to_guest.drain_fd();
    }

    /// Block until [`GuestLink::notify_fd`] is readable (frames for the guest are waiting)
    /// or `timeout` has passed; true when it is readable, false on timeout (or if `poll(2)`
    /// fails). For a VMM thread without an event loop of its own: `poll(2)` on the fd,
    /// retried with the time left when a signal interrupts it; the timeout is rounded up to
    /// whole milliseconds, and a zero timeout only checks. It leaves the readiness as it is:
    /// call [`GuestLink::clear_notify`], then drain with [`GuestLink::recv`].
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        let mut pfd = libc::pollfd {
            fd: self.notify_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let ms = left
                .as_micros()
                .div_ceil(1000)
                .min(libc::c_int::MAX as u128) as libc::c_int;
            // SAFETY: `pfd` is one valid pollfd on this stack frame, alive for the whole
            // call (nfds 1); poll(2) writes only its `revents`. The fd is the ring's eventfd,
            // owned by `self.link`, so it stays open while we wait.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return pfd.revents & libc::POLLIN != 0;
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// Frame and byte counters of both directions.
    pub fn counters(&self) -> LinkCounters {
        let (f, t) = (self.link.from_guest.stats(), self.link.to_guest.stats());
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        LinkCounters {
            from_guest_frames: l(&f.frames),
            from_guest_bytes: l(&f.bytes),
            from_guest_drops: l(&f.drops),
            to_guest_frames: l(&t.frames),
            to_guest_bytes: l(&t.bytes),
            to_guest_drops: l(&t.drops),
        }
    }
}

/// A leased slot the VMM fills with a frame from the guest; dropped uncommitted, the
/// slot goes back to the pool.
pub struct TxLease<'a> {
    link: &'a Link,
    frame: Frame,
}

impl TxLease<'_> {
    /// Room for the frame (up to [`MAX_FRAME`] bytes).
    pub fn buf(&mut self) -> &mut [u8] {
        &mut self.frame.capacity_mut()[..MAX_FRAME]
    }

    /// The 12-byte virtio-net header (zeroed on lease).
    pub fn hdr(&mut self) -> &mut [u8] {
        self.frame.hdr_mut()
    }

    /// Queue the first `len` bytes of [`TxLease::buf`] to the poll thread. Returns false
    /// when the ring was full (dropped, counted).
    pub fn commit(mut self, len: usize) -> bool {
        self.frame.set_len(len);
        self.link.from_guest.push(self.frame)
    }

    /// Give the slot back without sending.
    pub fn abandon(self) {}
}

/// A frame for the guest; its slot returns to the pool on drop.
pub struct RxFrame<'a> {
    frame: Frame,
    /// Borrows the link, so that frames are handed back before it goes away.
    _link: std::marker::PhantomData<&'a Link>,
}

impl RxFrame<'_> {
    /// The 12-byte virtio-net header to hand the guest with the frame.
    pub fn vnet_hdr(&self) -> &[u8] {
        self.frame.hdr()
    }
}

impl std::ops::Deref for RxFrame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.frame.bytes()
    }
}

/// The nameservers of the host's `/etc/resolv.conf` (read once, when a network is
/// created); a warning when there are none: the guest's queries then get SERVFAIL.
fn host_dns_servers() -> Vec<crate::config::DnsServer> {
    const PATH: &str = "/etc/resolv.conf";
    let servers = match std::fs::read_to_string(PATH) {
        Ok(text) => crate::config::resolv_conf_servers(&text),
        Err(e) => {
            tracing::warn!("cannot read {PATH}: {e}");
            Vec::new()
        }
    };
    if servers.is_empty() {
        tracing::warn!(
            "no DNS servers (none in {PATH}, none in dns.servers): the guest's DNS queries \
             will be answered SERVFAIL, except static names"
        );
    } else {
        let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
        tracing::info!("DNS upstream servers from {PATH}: {}", list.join(", "));
    }
    servers
}

/// A random seed for smoltcp (initial sequence numbers): getrandom(2), mixed with the pid.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom(2) writes at most 8 bytes into the live array.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b) ^ u64::from(std::process::id())
}
