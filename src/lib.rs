//! ringnet — a userspace network data plane for microVMs and sandboxes.
//!
//! # Theory of operation
//!
//! ringnet plays a guest's whole network. The guest has one Ethernet NIC (virtio-net in a
//! VMM, or a TAP device in a network namespace); ringnet is the gateway at the other end of
//! the wire: it answers ARP, NDP and ICMP echo for the gateway addresses only, and turns
//! every TCP, UDP and ICMP echo flow the guest opens into a real host socket.
//!
//! ```text
//!            VMM / TAP side                      poll thread (one per guest NIC)
//!  guest ──► GuestLink::send / Tap::read ──► [from_guest ring] ──► classify ──┬─► smoltcp (TCP, ARP/NDP, echo to gw)
//!   NIC        (frame written into a                                          ├─► UDP relay ──┐
//!              pool slot, handle queued)                                      └─► ping relay ─┤
//!                                                                                             ▼
//!  guest ◄── GuestLink::recv / Tap::write ◄── [to_guest ring] ◄── smoltcp egress    egress driver (io_uring | epoll)
//!   NIC        (slot returned to pool)                            / frame builders ◄─ host sockets ◄─► the host
//! ```
//!
//! Invariants:
//! - Frames live in the [`pool`] and move between threads as handles through the SPSC
//!   [`ring`]s; a frame is never copied between the VMM side and the poll thread. Payload
//!   bytes are copied between a frame and smoltcp's socket buffer, and between that and the
//!   egress driver's socket buffer (the kernel copies the rest).
//! - Only [`backend`] (TAP, namespaces), [`egress`] (host sockets), [`pcap`] (the capture
//!   file's writer thread) and [`tls::ca`] (the interception CA's files, read or written once
//!   in [`Network::new`]) make syscalls, besides [`mem`] (`madvise` of free pool slots and
//!   `malloc_trim` when a link goes idle); the
//!   [`wire`] classifier and emitters and the [`config`] derivation are pure.
//! - An idle network gives its memory back: after `egress.idle_trim_ms` without traffic the
//!   poll thread discards the free pool slots' pages, drops spare socket buffers and trims
//!   the heap ([`stack`], [`pool::Pool::trim`]), so RSS falls back near its start value.
//! - Nothing a guest sends can make ringnet panic or grow without bound: every queue, flow
//!   table and buffer has a limit and a counter in [`metrics::Stats`].
//!
//! - Seeing inside costs the data path nothing it did not do already: counters are the
//!   relaxed atomics above, latency histograms and flow tables stay on the poll thread and
//!   are copied out between turns, denial events go through a bounded lock-free queue
//!   ([`observe`]); a packet capture copies frames to a writer thread ([`pcap`]).
//!
//! - A guest that asks is configured by the gateway ([`autoconf`]: DHCPv4, router
//!   advertisements, stateless DHCPv6), sans-IO like the classifier; `autoconf = false`
//!   leaves that to the embedder (the guest's environment variables are the same either way).
//!
//! Start with [`Network`].
//!
//! # Features
//!
//! - `cli` (default): the `ringnet` binary and what only it needs: TOML configuration files
//!   (`NetworkConfig::load`, `NetworkConfig::from_toml_str`) and the namespace plumbing that
//!   runs `ip` (`backend::netns`, `backend::watch`), with clap, tracing-subscriber and toml.
//!   An embedding VMM depends on `ringnet = { version = "…", default-features = false }` and
//!   gets the engine alone: [`Network`], [`config`] (built in code or deserialized with
//!   serde), [`backend::tap`], [`egress`], [`stack`], [`wire`]. ringnet logs through `tracing`;
//!   the embedder installs the subscriber.
//! - `vhost-user` (default): `backend::vhost_user`, a vhost-user-net backend a VMM (QEMU,
//!   cloud-hypervisor) connects to over a unix socket (`ringnet vhost-user`), with the
//!   rust-vmm crates (vhost, vhost-user-backend, virtio-queue, vm-memory).

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod autoconf;
pub mod backend;
pub mod config;
pub mod dns;
pub mod egress;
pub mod link;
pub mod mem;
pub mod metrics;
pub mod network;
pub mod observe;
pub mod pcap;
pub mod policy;
pub mod pool;
pub mod ring;
pub mod sandbox;
pub mod secrets;
pub mod slab;
pub mod stack;
pub mod tls;
pub mod wire;

pub use config::{HostRoutes, NetworkConfig, SlotConfig};
pub use link::Offloads;
pub use network::{GuestLink, LinkCounters, Network, NetworkError, RxFrame, TxLease};
pub use observe::{Metrics, Termination};
