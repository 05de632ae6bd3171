//! Wire formats on the guest link: the per-frame classifier, the UDP/ICMP frame builders,
//! checksums, TCP segmentation offload towards the guest and the virtio-net header.
//!
//! # Theory of operation
//!
//! Every byte handled here either came from the guest (untrusted) or is about to be written
//! to it. The module is sans-IO: functions take byte slices and return values or errors; the
//! guest ports (`backend/`, `network`) and the stack glue (`stack/`) do the I/O.
//!
//! ## From the guest (port → `from_guest` ring → poll thread)
//!
//! A port puts each frame into a pool slot, after room for a 12-byte virtio-net header: a
//! TAP reads `[virtio_net_hdr_v1 | Ethernet frame]` straight into the slot, a VMM hands
//! [`crate::GuestLink::send`] a frame and optionally a header. The poll thread reads only
//! the header's flags and GSO type, and only from a guest that negotiated offloads (they
//! must not claim more: [`crate::link::Offloads`]). Per frame it runs one function of this module, [`classify::classify`], which
//! names the frame (ARP, TCP 4-tuple + flags, UDP payload range, ICMP echo, NDP, other)
//! without allocating or verifying checksums; [`crate::stack::gateway::verdict`] then sends
//! it to smoltcp, the UDP relay or the ping relay, or drops it (`Engine::ingest`).
//!
//! Nothing completes the partial checksums a guest with checksum offload sends, because
//! nothing needs them: smoltcp verifies no checksum on receive
//! ([`crate::stack::device::capabilities`]), UDP payloads are relayed as they are, and echo
//! requests go out through ping sockets, whose checksums the kernel computes. A TSO
//! super-frame from a TAP reaches smoltcp as one large TCP segment (Linux writes its real
//! IPv4 total length; 0 appears only with BIG TCP, beyond the 64 KiB a pool slot holds).
//!
//! ## To the guest (poll thread → `to_guest` ring → port)
//!
//! * TCP, ARP, NDP and echo replies from the gateway come from smoltcp. To a guest that
//!   takes partial checksums and TSO ([`crate::link::Offloads`]: a TAP, a vhost-user guest
//!   or an embedding VMM's guest that negotiated them) smoltcp emits TCP super-segments
//!   without a TCP checksum; [`gso::prepare_tso`] stores the pseudo-header sum and returns
//!   the [`VnetHdr`] (NEEDS_CSUM, GSO TCPV4/TCPV6, `gso_size = mss`) that the device writes
//!   into the slot's header with [`VnetHdr::emit`]; the guest's kernel finishes the checksum
//!   and segments. To any other guest (plain embedding rings, QEMU's stream netdev)
//!   smoltcp segments and checksums every frame itself and the header stays zero.
//! * UDP and ICMP echo replies relayed from host sockets are built directly in a pool slot:
//!   the payload is received at [`classify::udp_payload_offset`] /
//!   [`classify::icmp_payload_offset`] and [`classify::emit_udp`] /
//!   [`classify::emit_icmp_echo_reply`] write the headers in front, every checksum filled.
//!
//! ## Invariants
//!
//! * Guest bytes never panic: every length field is checked against the buffer before use
//!   (`new_checked` from `smoltcp::wire`, plus explicit checks that give precise errors); a
//!   malformed frame is a [`WireError`] the caller counts and drops.
//! * No allocation on the per-frame path: [`WireError`] holds only `&'static str` and
//!   integers.
//! * Checksums are RFC 1071 one's-complement sums ([`csum`]), 8 bytes per step.
//! * Ethernet padding (frame longer than the IP total length) is accepted everywhere; the IP
//!   length field bounds the L4 data.
//!
//! ## Limits
//!
//! IPv6 extension headers are not walked: such packets classify as [`Class::OtherIp`] and
//! are refused by [`gso::prepare_tso`]. 802.1Q tags are [`Class::Other`].

pub mod classify;
pub mod csum;
pub mod gso;
pub mod neigh;
pub mod vnet;

pub use classify::{
    classify, emit_icmp_echo_reply, emit_udp, icmp_payload_offset, udp_payload_offset, ArpOp,
    Class, NdpKind, TcpFlags,
};
pub use gso::prepare_tso;
pub use vnet::{VnetHdr, VNET_HDR_LEN};

/// Why a frame could not be classified or built, or a TCP frame prepared for offload.
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
