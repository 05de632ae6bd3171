//! Backends: where guest frames come from and go to.
//!
//! # Theory of operation
//!
//! A backend moves frames between a guest NIC and the link's two rings. The embedding API
//! ([`crate::Network::take_link`]) is the backend of a VMM that drives the rings itself from
//! its own threads; the TAP backend ([`tap::Tap`]) is pumped by the poll thread itself, so
//! serving a TAP costs no extra thread and no cross-thread wake-up. The QEMU stream
//! backend ([`stream::StreamPort`]) is pumped the same way: length-prefixed frames over a
//! stream socket QEMU connects to (`-netdev stream`), reconnects included. `watch::GuestWatch`
//! tells the namespace + TAP backend's owner when the guest's namespace or TAP goes away or
//! its link comes back up.
//! Only this module and `egress/` make syscalls on the data path.
//!
//! `netns`, `userns` and `watch` (namespaces, rootless ones included, running `ip`, watching
//! the guest side) are the `ringnet` binary's plumbing and need the `cli` feature; [`tap::Tap`] is part of the engine: an
//! embedder serves a TAP it opened with `Network::start_port(Box::new(tap))`, and a QEMU
//! stream the same way.
//!
//! `vhost_user` (feature `vhost-user`, on by default) serves a VMM's virtio-net queues over
//! a vhost-user socket: QEMU or cloud-hypervisor map the guest's memory into ringnet, and a
//! worker thread of its own moves frames between the virtqueues and the link's rings.

#[cfg(feature = "cli")]
pub mod netns;
pub mod stream;
pub mod tap;
#[cfg(feature = "cli")]
pub mod userns;
#[cfg(feature = "vhost-user")]
pub mod vhost_user;
#[cfg(feature = "cli")]
pub mod watch;
