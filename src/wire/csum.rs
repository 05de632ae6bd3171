//! Internet checksum (RFC 1071) helpers.
//!
//! # Theory of operation
//!
//! The Internet checksum is the one's-complement of the one's-complement sum of the data as
//! big-endian 16-bit words (an odd trailing byte is padded with zero on the right). Two
//! properties make it fast (RFC 1071 §2):
//!
//! * **Byte-order independence.** Summing native-endian words and byte-swapping the folded
//!   result equals summing big-endian words, so [`sum`] loads native `u64`s and swaps once.
//! * **Deferred carries.** Each `u64` load is split into two 32-bit halves added into 64-bit
//!   accumulators; carries pile up in the high bits and are folded back at the end
//!   (`fold`). Four independent accumulators over 32-byte blocks keep the adds in flight in
//!   parallel (and let LLVM vectorize). One accumulator absorbs at most 2^33 per step, so
//!   overflow needs more than 64 GiB in one call — far beyond any frame.
//!
//! Values are kept as *folded, not complemented* sums (`u16`); a checksum field gets
//! `!sum`, see [`to_field`]. Pseudo-header sums are per RFC 9293 §3.1 (IPv4) and
//! RFC 8200 §8.1 (IPv6).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[inline(always)]
fn split(w: u64) -> u64 {
    (w & 0xffff_ffff) + (w >> 32)
}

#[inline(always)]
fn load(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_ne_bytes(w)
}

/// Sum `data` as native-endian words into a 64-bit accumulator (not folded).
#[inline]
fn sum_ne(data: &[u8]) -> u64 {
    let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = data.chunks_exact(32);
    for blk in &mut blocks {
        a += split(load(&blk[0..8]));
        b += split(load(&blk[8..16]));
        c += split(load(&blk[16..24]));
        d += split(load(&blk[24..32]));
    }
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        a += split(load(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        b += split(u64::from_ne_bytes(w));
    }
    fold_wide(a, b) + fold_wide(c, d)
}

/// Add two accumulators without losing a carry (each is < 2^63 in practice).
#[inline(always)]
fn fold_wide(x: u64, y: u64) -> u64 {
    split(x) + split(y)
}

/// Fold a wide accumulator of 16-bit words to 16 bits with end-around carry.
///
/// Input words may be in either byte order; the output is in the same order.
#[inline]
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// One's-complement sum of `data` as big-endian words, folded, not complemented.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    u16::from_be(fold(sum_ne(data)))
}

/// One's-complement addition of two folded sums.
#[inline]
pub fn combine(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// The value to store in a checksum field for a folded sum: `!sum`, with 0 sent as `0xffff`
/// (equivalent in one's complement; required for UDP by RFC 768, harmless elsewhere).
#[inline]
pub fn to_field(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        v => v,
    }
}

/// Pseudo-header sum for IPv4 (RFC 9293 §3.1): `src, dst, 0, proto, len`, where `len` is
/// the L4 header + payload length.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let acc = u64::from(s >> 16)
        + u64::from(s & 0xffff)
        + u64::from(d >> 16)
        + u64::from(d & 0xffff)
        + u64::from(proto)
        + u64::from(len);
    fold(acc)
}

/// Pseudo-header sum for IPv6 (RFC 8200 §8.1): `src, dst, upper-layer length (32 bit),
/// zero, next header`.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u16 {
    let mut acc = u64::from(proto) + u64::from(len >> 16) + u64::from(len & 0xffff);
    for seg in src.segments().into_iter().chain(dst.segments()) {
        acc += u64::from(seg);
    }
    fold(acc)
}

/// Pseudo-header sum for an L4 message of `len` bytes from `src` to `dst`: [`pseudo_v4`] or
/// [`pseudo_v6`] by family; 0 for mixed families (no such packet exists). `len` must fit the
/// family's length field (callers take it from a parsed or bounded IP header).
pub(crate) fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, proto, len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_v6(s, d, proto, len as u32),
        _ => 0,
    }
}

/// Recompute the checksum of the IPv4 header `hdr` (exactly the header, options included).
pub(crate) fn fill_ipv4_header(hdr: &mut [u8]) {
    hdr[10..12].fill(0);
    let c = to_field(sum(hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §3 worked example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    static RFC1071: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];

    /// A 20-byte IPv4 header with a valid checksum (0xb861), from Wikipedia's example.
    static IPV4_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        assert_eq!(sum(&RFC1071), 0xddf2);
        assert_eq!(naive(&RFC1071), 0xddf2);
    }

    #[test]
    fn ipv4_header_verifies() {
        assert_eq!(sum(&IPV4_HDR), 0xffff);
        let mut h = IPV4_HDR;
        h[10..12].fill(0);
        assert_eq!(to_field(sum(&h)), 0xb861);
        h[10..12].fill(0xa5);
        fill_ipv4_header(&mut h);
        assert_eq!(h, IPV4_HDR);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0xff; 3]), 0xff00);
    }

    #[test]
    fn pseudo_matches_byte_layout() {
        let (s4, d4) = (Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(93, 184, 216, 34));
        let mut ph = Vec::new();
        ph.extend_from_slice(&s4.octets());
        ph.extend_from_slice(&d4.octets());
        ph.extend_from_slice(&[0, 6, 0x05, 0xc8]);
        assert_eq!(pseudo_v4(s4, d4, 6, 1480), naive(&ph));
        assert_eq!(pseudo(s4.into(), d4.into(), 6, 1480), naive(&ph));
        let s6: Ipv6Addr = "fd00::2".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::ffff:1".parse().unwrap();
        let mut ph = Vec::new();
        ph.extend_from_slice(&s6.octets());
        ph.extend_from_slice(&d6.octets());
        ph.extend_from_slice(&70_000u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(pseudo_v6(s6, d6, 17, 70_000), naive(&ph));
        assert_eq!(pseudo(s6.into(), d6.into(), 17, 70_000), naive(&ph));
        assert_eq!(pseudo(s4.into(), d6.into(), 17, 8), 0);
    }

    proptest! {
        #[test]
        fn sum_matches_naive(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            start in 0usize..64,
            cut in 0usize..64,
        ) {
            let start = start.min(data.len());
            let end = data.len().saturating_sub(cut).max(start);
            let s = &data[start..end];
            prop_assert_eq!(sum(s), naive(s));
        }

        #[test]
        fn sum_of_halves_combines(data in proptest::collection::vec(any::<u8>(), 0..512), at in 0usize..256) {
            let at = (at * 2).min(data.len() & !1);
            prop_assert_eq!(combine(sum(&data[..at]), sum(&data[at..])), sum(&data));
        }

        #[test]
        fn all_ones_data(len in 0usize..300) {
            let d = vec![0xffu8; len];
            prop_assert_eq!(sum(&d), naive(&d));
        }
    }
}
