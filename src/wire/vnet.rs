//! The virtio-net per-packet header (`struct virtio_net_hdr_v1`, virtio 1.x §5.1.6).
//!
//! # Theory of operation
//!
//! With `IFF_VNET_HDR` and `TUNSETVNETHDRSZ(12)` every TAP read and write carries this
//! 12-byte little-endian header in front of the Ethernet frame. It describes offloads:
//!
//! | field         | meaning                                                              |
//! |---------------|----------------------------------------------------------------------|
//! | `flags`       | [`flags::NEEDS_CSUM`]: checksum partial, finish it; [`flags::DATA_VALID`]: already verified |
//! | `gso_type`    | [`gso::NONE`], [`gso::TCPV4`], [`gso::UDP`], [`gso::TCPV6`], OR'ed with [`gso::ECN`] |
//! | `hdr_len`     | Ethernet + IP + L4 header bytes (a hint for the segmenter)           |
//! | `gso_size`    | payload bytes per segment (the MSS) when `gso_type != NONE`          |
//! | `csum_start`  | offset from the Ethernet header where checksumming starts            |
//! | `csum_offset` | offset from `csum_start` where the 16-bit result is stored           |
//! | `num_buffers` | mergeable-rx-buffer count; 0 or 1 on a TAP                            |
//!
//! [`VnetHdr::parse`] only decodes; it does not judge the values (that is
//! [`super::gso::from_guest_fixup`]'s job, where the frame is at hand). The 10-byte legacy
//! header (without `num_buffers`) is not supported: the backend always sets 12.

use super::{need, WireError};

/// Length of `struct virtio_net_hdr_v1`.
pub const VNET_HDR_LEN: usize = 12;

/// `flags` bits.
pub mod flags {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` to the end is partial.
    pub const NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already validated.
    pub const DATA_VALID: u8 = 2;
}

/// `gso_type` values.
pub mod gso {
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    pub const NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    pub const TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
    pub const UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    pub const TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_ECN` flag, OR'ed into the type.
    pub const ECN: u8 = 0x80;
}

/// A decoded virtio-net header (host byte order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VnetHdr {
    /// [`flags`] bits.
    pub flags: u8,
    /// One of [`gso`], possibly OR'ed with [`gso::ECN`].
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

impl VnetHdr {
    /// Decode the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, WireError> {
        need("virtio-net header", VNET_HDR_LEN, buf.len())?;
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        Ok(VnetHdr {
            flags: buf[0],
            gso_type: buf[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        })
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
        buf[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
    }

    /// `NEEDS_CSUM` is set.
    pub fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }

    /// The GSO type without the ECN bit.
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !gso::ECN
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

    fn tso_repr() -> VnetHdr {
        VnetHdr {
            flags: flags::NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let h = VnetHdr::parse(&TSO_BYTES).unwrap();
        assert!(h.needs_csum());
        assert_eq!(h.gso_kind(), gso::TCPV4);
        assert_eq!(h.hdr_len, 66);
        assert_eq!(h.gso_size, 1448);
        assert_eq!(h.csum_start, 34);
        assert_eq!(h.csum_offset, 16);
    }

    #[test]
    fn parse() {
        assert_eq!(VnetHdr::parse(&TSO_BYTES), Ok(tso_repr()));
    }

    #[test]
    fn construct_emit() {
        let mut buf = [0xa5u8; 14];
        tso_repr().emit(&mut buf);
        assert_eq!(&buf[..12], &TSO_BYTES);
        assert_eq!(&buf[12..], &[0xa5, 0xa5], "emit wrote past the header");
    }

    #[test]
    fn ecn_and_num_buffers() {
        let bytes = [0x02, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        let h = VnetHdr::parse(&bytes).unwrap();
        assert_eq!(h.flags, flags::DATA_VALID);
        assert_eq!(h.gso_kind(), gso::TCPV6);
        assert_eq!(h.gso_type & gso::ECN, gso::ECN);
        assert_eq!(h.num_buffers, 1);
    }

    #[test]
    fn truncated() {
        for len in 0..VNET_HDR_LEN {
            assert_eq!(
                VnetHdr::parse(&TSO_BYTES[..len]),
                Err(WireError::Truncated {
                    what: "virtio-net header",
                    need: 12,
                    have: len
                })
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::array::uniform12(any::<u8>())) {
            let h = VnetHdr::parse(&bytes).unwrap();
            let mut out = [0xa5u8; 12];
            h.emit(&mut out);
            prop_assert_eq!(out, bytes);
        }
    }
}
