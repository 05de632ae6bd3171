//! The stream protocol's framing, without I/O: a 32-bit big-endian length, then that many
//! bytes of Ethernet frame (QEMU's `-netdev stream` / `-netdev socket`, passt's "qemu"
//! mode).
//!
//! [`split`] decides what the front of a byte buffer holds: a whole record, the start of
//! one, or a length no frame can have. [`Deframer`] is the staging buffer the port reads
//! the socket into: bytes go in at [`Deframer::spare`] / [`Deframer::filled`], whole frames
//! come out of [`Deframer::next_frame`], and a record split across reads (anywhere, the
//! prefix included) stays buffered until its last byte arrives.
//!
//! Invariants of [`Deframer`]: `start <= end <= capacity`; bytes `start..end` are the
//! unconsumed stream; the capacity holds at least one record of the largest allowed frame,
//! so once [`Deframer::next_frame`] says `Ok(None)` (an incomplete record), the buffer
//! always has room to read more after compaction ([`Deframer::spare`] is never empty
//! then). Compaction moves at most one incomplete record, to the front.

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;
/// The shortest frame accepted: an Ethernet header (destination, source, EtherType).
pub const MIN_FRAME: usize = 14;

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A whole record: the frame is `buf[PREFIX_BYTES..PREFIX_BYTES + len]`.
    Frame(usize),
    /// An incomplete record (fewer than [`PREFIX_BYTES`] bytes, or a frame not all there).
    Partial,
    /// The prefix announces a length outside `MIN_FRAME..=max_frame`: the stream cannot be
    /// trusted past this point.
    BadLength(u32),
}

/// Look at the record at the front of `buf`, whose frames may be up to `max_frame` bytes.
pub fn split(buf: &[u8], max_frame: usize) -> Split {
    let Some(prefix) = buf.first_chunk::<PREFIX_BYTES>() else {
        return Split::Partial;
    };
    let announced = u32::from_be_bytes(*prefix);
    let len = announced as usize;
    if !(MIN_FRAME..=max_frame).contains(&len) {
        return Split::BadLength(announced);
    }
    if buf.len() - PREFIX_BYTES < len {
        return Split::Partial;
    }
    Split::Frame(len)
}

/// The prefix for a frame of `len` bytes.
pub fn prefix(len: usize) -> [u8; PREFIX_BYTES] {
    // Frames to the guest are at most a pool slot (`pool::MAX_FRAME`, 64 KiB + 18).
    #[allow(clippy::cast_possible_truncation)]
    (len as u32).to_be_bytes()
}

/// A length prefix outside `MIN_FRAME..=max_frame` (the value as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame length {0} out of range")]
pub struct BadLength(pub u32);

/// The receive staging buffer: socket bytes in, whole frames out.
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8]>,
    /// First unconsumed byte.
    start: usize,
    /// One past the last byte read.
    end: usize,
    max_frame: usize,
}

impl Deframer {
    /// A buffer of `capacity` bytes (raised to one whole record of `max_frame` if smaller)
    /// for frames of up to `max_frame` bytes.
    pub fn new(capacity: usize, max_frame: usize) -> Deframer {
        let capacity = capacity.max(PREFIX_BYTES + max_frame);
        Deframer {
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Forget everything buffered (a new connection starts a new stream).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Where to read the next bytes into; call [`Deframer::filled`] with how many landed.
    /// Moves an incomplete record to the front first when the tail could not take the
    /// largest record. Empty only when whole frames are buffered and the caller has not
    /// taken them.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.clear();
        } else if self.buf.len() - self.end < PREFIX_BYTES + self.max_frame {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the front of the last [`Deframer::spare`] slice.
    pub fn filled(&mut self, n: usize) {
        // Clamped: a caller's miscount must not move `end` past the buffer.
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame, consumed; `Ok(None)` while the next record is incomplete.
    /// After an error the stream is unusable (the caller drops it and [`Deframer::clear`]s).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, BadLength> {
        match split(&self.buf[self.start..self.end], self.max_frame) {
            Split::Partial => Ok(None),
            Split::BadLength(len) => Err(BadLength(len)),
            Split::Frame(len) => {
                let at = self.start + PREFIX_BYTES;
                self.start = at + len;
                Ok(Some(&self.buf[at..at + len]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize, fill: u8) -> Vec<u8> {
        let mut r = prefix(len).to_vec();
        r.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
        r
    }

    #[test]
    fn split_cases() {
        let max = 1514;
        assert_eq!(split(&[], max), Split::Partial);
        assert_eq!(split(&[0, 0, 0], max), Split::Partial);
        assert_eq!(split(&[0, 0, 0, 14], max), Split::Partial);
        assert_eq!(split(&record(14, 0), max), Split::Frame(14));
        assert_eq!(split(&record(1514, 0), max), Split::Frame(1514));
        assert_eq!(split(&[0, 0, 0, 0], max), Split::BadLength(0));
        assert_eq!(split(&[0, 0, 0, 13], max), Split::BadLength(13));
        assert_eq!(split(&[0, 0, 5, 0xeb], max), Split::BadLength(1515));
        assert_eq!(split(&[0xff; 4], max), Split::BadLength(u32::MAX));
        // The length is judged as soon as the prefix is there, before the frame.
        assert_eq!(split(&[0, 0, 0, 13, 1], max), Split::BadLength(13));
    }

    #[test]
    fn small_capacity_still_holds_the_largest_record() {
        let mut d = Deframer::new(16, 1514);
        assert!(d.spare().len() >= PREFIX_BYTES + 1514);
    }

    /// Two records fed through a buffer just big enough for one: compaction keeps the
    /// incomplete record and every byte of both frames comes out.
    #[test]
    fn compaction_keeps_the_incomplete_record() {
        let max = 100;
        let mut d = Deframer::new(0, max);
        let mut stream = record(90, 1);
        stream.extend(record(100, 7));
        let mut fed = 0;
        let mut got = Vec::new();
        while got.len() < 2 {
            let spare = d.spare();
            let n = spare.len().min(stream.len() - fed).min(60);
            assert!(n > 0, "no room with an incomplete record buffered");
            spare[..n].copy_from_slice(&stream[fed..fed + n]);
            fed += n;
            d.filled(n);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got[0], record(90, 1)[4..]);
        assert_eq!(got[1], record(100, 7)[4..]);
        assert_eq!(d.buffered(), 0);
    }
}
