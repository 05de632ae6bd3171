//! Wire formats on the guest link: virtio-net headers, checksums, segmentation offload and
//! the per-frame classifier.
//!
//! # Theory of operation
//!
//! Every byte handled here either came from the guest (untrusted) or is about to be written
//! to it. The module is sans-IO: functions take byte slices and return values or errors; the
//! TAP/vhost driver (`backend/`) and the stack glue (`stack/`) do the I/O.
//!
//! ## From the guest (TAP read → smoltcp / relays)
//!
//! 1. The driver reads `[virtio_net_hdr_v1 | Ethernet frame]`; [`VnetHdr::parse`] decodes the
//!    12-byte header (virtio 1.x §5.1.6).
//! 2. [`gso::from_guest_fixup`] completes a `NEEDS_CSUM` partial checksum in place. A GSO
//!    super-frame is *not* split: smoltcp receives it as one large segment, which is valid TCP
//!    once its checksum covers the whole payload. The IPv4 total length of a guest TSO frame
//!    is checked (Linux writes the super-frame length; see `gso.rs`).
//! 3. [`classify::classify`] names the frame (ARP, TCP 4-tuple + flags, UDP payload range,
//!    ICMP echo, NDP, other) without allocating or verifying checksums, so the poll thread can
//!    filter ARP/ICMP, create listening sockets for SYNs and relay UDP outside smoltcp.
//!
//! ## To the guest (smoltcp / relays → TAP write)
//!
//! * TCP from smoltcp with segmentation offload arrives as a super-segment without a TCP
//!   checksum. With a vnet-header link, [`gso::prepare_tso`] stores the pseudo-header sum and
//!   returns the [`VnetHdr`] (NEEDS_CSUM, GSO TCPV4/TCPV6, `gso_size = mss`) that the driver
//!   writes in front with [`VnetHdr::emit`]; the guest's virtio driver or the kernel segments.
//!   Without offload, [`gso::segment_tcp`] cuts it into MSS-sized frames with full checksums,
//!   and [`gso::finish_checksums`] fills every checksum of a single frame.
//! * UDP and ICMP echo replies are built directly in a pool slot: the payload is received at
//!   [`classify::udp_payload_offset`] / [`classify::icmp_payload_offset`] and
//!   [`classify::emit_udp`] / [`classify::emit_icmp_echo_reply`] write the headers in front.
//!
//! ## Invariants
//!
//! * Guest bytes never panic: every length field is checked against the buffer before use
//!   (`new_checked` from `smoltcp::wire`, plus explicit checks that give precise errors); a
//!   malformed frame is a [`WireError`] the caller counts and drops.
//! * No allocation on the per-frame path. [`WireError`] holds only `&'static str` and
//!   integers; [`gso::segment_tcp`] reuses one caller-owned scratch `Vec`.
//! * Checksums are RFC 1071 one's-complement sums ([`csum`]), 8 bytes per step.
//! * Ethernet padding (frame longer than the IP total length) is accepted everywhere; the IP
//!   length field bounds the L4 data.
//!
//! ## Limits
//!
//! IPv6 extension headers are not walked: such packets classify as
//! [`Class::OtherIp`] and are rejected by the offload helpers. 802.1Q tags are [`Class::Other`].

pub mod classify;
pub mod csum;
pub mod gso;
pub mod vnet;

pub use classify::{
    classify, emit_icmp_echo_reply, emit_udp, icmp_payload_offset, udp_payload_offset, ArpOp,
    Class, NdpKind, TcpFlags,
};
pub use gso::{finish_checksums, from_guest_fixup, prepare_tso, segment_tcp};
pub use vnet::{VnetHdr, VNET_HDR_LEN};

/// Why a frame could not be parsed, emitted or fixed up.
///
/// Cheap to construct (no allocation): it is returned once per bad guest frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A header or length field points past the end of the buffer.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// Which header or field was cut short.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Well-formed but outside what this code handles (e.g. IPv6 extension headers).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A header field is inconsistent or invalid.
    #[error("bad header: {0}")]
    BadHeader(&'static str),
}

/// Return `Err(Truncated)` unless `have >= need`.
#[inline]
pub(crate) fn need(what: &'static str, need: usize, have: usize) -> Result<(), WireError> {
    if have < need {
        Err(WireError::Truncated { what, need, have })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod fixtures;
