//! What an SQE was for ([`Op`], the tag of its `user_data`), and the one place a CQE result
//! becomes an `io::Result`.
//!
//! `user_data` is a slab [`Key`](crate::slab::Key) packed with the op as its tag
//! (`key.pack(op as u8)`: `op (8) | generation (24) | index (32)`): the socket's key, or for
//! [`Op::Wake`] `Key::fixed(index of the watched fd)`.

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

impl Op {
    const ALL: [Op; 6] = [
        Op::Connect,
        Op::LinkTimeout,
        Op::Poll,
        Op::Send,
        Op::Cancel,
        Op::Wake,
    ];

    /// The op a `user_data` tag names; `None` for a tag this driver never produced.
    pub fn from_tag(tag: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|&op| op as u8 == tag)
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
        use crate::slab::Key;
        for op in Op::ALL {
            let k = Key::fixed(0xdead_beef);
            let (tag, key) = Key::unpack(k.pack(op as u8));
            assert_eq!((Op::from_tag(tag), key), (Some(op), k));
        }
        assert_eq!(Op::from_tag(0), None);
    }

    #[test]
    fn negative_result_is_errno() {
        let e = cqe_result(-libc::ECONNREFUSED).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(cqe_result(42).unwrap(), 42);
    }
}
