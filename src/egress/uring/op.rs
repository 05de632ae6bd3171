//! The typed token carried in `user_data`, and the one place a CQE result becomes an
//! `io::Result`.
//!
//! Layout of `user_data` (64 bits): `op (8) | generation (24) | slot (32)`. For
//! [`Op::Wake`] the slot is the index of the watched fd and the generation is 0.

use std::io;

/// What an SQE was for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// `IORING_OP_CONNECT`, linked to a [`Op::LinkTimeout`].
    Connect = 1,
    /// `IORING_OP_LINK_TIMEOUT` bounding a connect.
    LinkTimeout = 2,
    /// One-shot `IORING_OP_POLL_ADD(POLLIN)` on a socket: data may be read now.
    Poll = 3,
    /// `IORING_OP_SEND` from the socket's transmit ring / datagram queue.
    Send = 5,
    /// `IORING_OP_ASYNC_CANCEL` of the socket's other ops.
    Cancel = 7,
    /// One-shot `IORING_OP_POLL_ADD(POLLIN)` on a watched fd.
    Wake = 8,
}

/// A decoded `user_data`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    pub op: Op,
    pub gen: u32,
    pub slot: u32,
}

pub(super) const GEN_MASK: u32 = 0x00ff_ffff;

impl Tag {
    pub fn new(op: Op, slot: u32, gen: u32) -> Tag {
        Tag {
            op,
            gen: gen & GEN_MASK,
            slot,
        }
    }

    pub fn pack(self) -> u64 {
        ((self.op as u64) << 56) | (u64::from(self.gen & GEN_MASK) << 32) | u64::from(self.slot)
    }

    /// `None` for a value this driver never produced.
    pub fn unpack(ud: u64) -> Option<Tag> {
        let op = match ud >> 56 {
            1 => Op::Connect,
            2 => Op::LinkTimeout,
            3 => Op::Poll,
            5 => Op::Send,
            7 => Op::Cancel,
            8 => Op::Wake,
            _ => return None,
        };
        // Truncations intended: fields of the packed word.
        #[allow(clippy::cast_possible_truncation)]
        Some(Tag {
            op,
            gen: ((ud >> 32) as u32) & GEN_MASK,
            slot: ud as u32,
        })
    }
}

/// The one place where a negative CQE result becomes an `io::Error` (`io_uring_enter(2)`:
/// `res` is `-errno` on failure).
pub(super) fn cqe_result(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trip() {
        for op in [Op::Connect, Op::Poll, Op::Wake, Op::Cancel] {
            let t = Tag::new(op, 0xdead_beef, 0x0123_4567);
            let u = Tag::unpack(t.pack()).expect("packed by us");
            assert_eq!(u, Tag::new(op, 0xdead_beef, 0x0023_4567));
        }
        assert_eq!(Tag::unpack(0), None);
    }

    #[test]
    fn negative_result_is_errno() {
        let e = cqe_result(-libc::ECONNREFUSED).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(cqe_result(42).unwrap(), 42);
    }
}
