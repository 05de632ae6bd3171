//! The virtio-net per-packet header (`struct virtio_net_hdr_v1`, virtio 1.x §5.1.6).
//!
//! # Theory of operation
//!
//! A TAP opened with `IFF_VNET_HDR` and `TUNSETVNETHDRSZ(12)` carries this 12-byte
//! little-endian header in front of the Ethernet frame on every read and write, and every
//! pool slot has room for it in front of its frame. It describes offloads:
//!
//! | field         | meaning                                                              |
//! |---------------|----------------------------------------------------------------------|
//! | `flags`       | [`flags::NEEDS_CSUM`] (1): the checksum from `csum_start` on is partial; `DATA_VALID` (2): already verified |
//! | `gso_type`    | [`gso::NONE`], [`gso::TCPV4`], `UDP` (3), [`gso::TCPV6`], OR'ed with `ECN` (0x80) |
//! | `hdr_len`     | Ethernet + IP + L4 header bytes (a hint for the segmenter)           |
//! | `gso_size`    | payload bytes per segment (the MSS) when `gso_type != NONE`          |
//! | `csum_start`  | offset from the Ethernet header where checksumming starts            |
//! | `csum_offset` | offset from `csum_start` where the 16-bit result is stored           |
//! | `num_buffers` | mergeable-rx-buffer count; 0 or 1 on a TAP                            |
//!
//! To the guest, [`super::gso::prepare_tso`] builds the header of each TCP frame to a guest
//! that takes partial checksums and the device writes it with [`VnetHdr::emit`]; other
//! frames keep the zeroed header their pool slot was leased with. From a guest that sends
//! partial checksums the poll thread checks the header's flags and GSO type against what
//! the guest negotiated ([`crate::link::Offloads`]) and otherwise ignores it ([`super`]
//! says why nothing needs more). The 10-byte legacy header (without `num_buffers`) is not
//! supported: the TAP always sets 12, vhost-user requires `VIRTIO_F_VERSION_1`.

/// Length of `struct virtio_net_hdr_v1`.
pub const VNET_HDR_LEN: usize = 12;

/// `flags` bits.
pub mod flags {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` to the end is partial.
    pub const NEEDS_CSUM: u8 = 1;
}

/// `gso_type` values.
pub mod gso {
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    pub const NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    pub const TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    pub const TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_ECN`: OR'ed into the type when the segments carry ECN bits.
    pub const ECN: u8 = 0x80;
}

/// A virtio-net header, fields in host byte order ([`VnetHdr::emit`] writes the wire form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VnetHdr {
    /// [`flags`] bits.
    pub flags: u8,
    /// One of [`gso`] (the ECN bit, 0x80, is never set).
    pub gso_type: u8,
    /// Header bytes (Ethernet + IP + L4).
    pub hdr_len: u16,
    /// Segment payload size for GSO.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
    /// Number of merged receive buffers.
    pub num_buffers: u16,
}

/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_AT: usize = 10;

/// Set `num_buffers` in the wire-form header `hdr`, leaving the other fields; a header
/// shorter than [`VNET_HDR_LEN`] is left alone.
pub fn set_num_buffers(hdr: &mut [u8], n: u16) {
    if let Some(field) = hdr.get_mut(NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2) {
        field.copy_from_slice(&n.to_le_bytes());
    }
}

impl VnetHdr {
    /// Decode the wire form (any bytes are a header; what they claim is checked where it
    /// matters: [`crate::link::Offloads`]).
    pub fn parse(buf: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        VnetHdr {
            flags: buf[0],
            gso_type: buf[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    /// Encode into the first [`VNET_HDR_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`VNET_HDR_LEN`] (a host-side sizing bug, never guest input).
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..VNET_HDR_LEN];
        buf[0] = self.flags;
        buf[1] = self.gso_type;
        buf[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        buf[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        buf[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        buf[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        buf[NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2].copy_from_slice(&self.num_buffers.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TSO frame header as Linux writes it: NEEDS_CSUM, TCPV4, hdr_len 66, mss 1448,
    /// csum_start 34, csum_offset 16, num_buffers 0.
    static TSO_BYTES: [u8; 12] = [
        0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn emit_tso() {
        let tso = VnetHdr {
            flags: flags::NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        let mut buf = [0xa5u8; 14];
        tso.emit(&mut buf);
        assert_eq!(&buf[..12], &TSO_BYTES);
        assert_eq!(&buf[12..], &[0xa5, 0xa5], "emit wrote past the header");
    }

    #[test]
    #[should_panic]
    fn emit_into_a_short_buffer_panics() {
        VnetHdr::default().emit(&mut [0u8; VNET_HDR_LEN - 1]);
    }

    proptest! {
        /// Every field lands at its offset, little-endian, and nothing past the header.
        #[test]
        fn emit_layout(
            flags in any::<u8>(),
            gso_type in any::<u8>(),
            hdr_len in any::<u16>(),
            gso_size in any::<u16>(),
            csum_start in any::<u16>(),
            csum_offset in any::<u16>(),
            num_buffers in any::<u16>(),
        ) {
            let h = VnetHdr {
                flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers,
            };
            let mut out = [0xa5u8; VNET_HDR_LEN + 1];
            h.emit(&mut out);
            let le = |i: usize| u16::from_le_bytes([out[i], out[i + 1]]);
            prop_assert_eq!(
                (out[0], out[1], le(2), le(4), le(6), le(8), le(10), out[12]),
                (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers, 0xa5)
            );
        }
    }
}
