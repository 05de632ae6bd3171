//! Frame headers and the frames the rewriter builds (RFC 9113 §4.1, §6), and HPACK: the
//! bounded decoder of a direction and the stateless encoding of re-encoded blocks
//! (RFC 7541 §6.2.3, literal never indexed, new name, no Huffman coding).

use std::fmt;

use loona_hpack::encoder::encode_integer_into;
use zeroize::Zeroize;

use super::{RewriteError, Side, FRAME_OUT_MAX, HEAD_MAX, HPACK_TABLE_MAX};

/// Frame types (RFC 9113 §6).
pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

/// Flags.
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY_FLAG: u8 = 0x20;

/// Length of a frame header.
pub(super) const HEADER_LEN: usize = 9;

/// A parsed frame header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: usize,
    pub ty: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub sid: u32,
}

impl FrameHeader {
    pub(super) fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            ty: b[3],
            flags: b[4],
            sid: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Appends a frame header. `len` is at most [`FRAME_OUT_MAX`] (or 4 for WINDOW_UPDATE).
pub(super) fn write_header(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, sid: u32) {
    debug_assert!(len <= FRAME_OUT_MAX);
    let len = len.to_be_bytes();
    let n = len.len();
    out.extend_from_slice(&len[n - 3..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(sid & 0x7fff_ffff).to_be_bytes());
}

/// Appends `data` as DATA frames of at most [`FRAME_OUT_MAX`] bytes on stream `sid`,
/// END_STREAM on the last when `end_stream` (one empty frame when `data` is empty: none
/// without `end_stream`). Returns the payload bytes written (what flow control counts).
pub(super) fn write_data(out: &mut Vec<u8>, sid: u32, data: &[u8], end_stream: bool) -> usize {
    let end = if end_stream { END_STREAM } else { 0 };
    if data.is_empty() {
        if end_stream {
            write_header(out, 0, DATA, end, sid);
        }
        return 0;
    }
    let mut chunks = data.chunks(FRAME_OUT_MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { end } else { 0 };
        write_header(out, chunk.len(), DATA, flags, sid);
        out.extend_from_slice(chunk);
    }
    data.len()
}

/// Appends a header block as a `ty` frame (HEADERS or PUSH_PROMISE, `flags` its
/// END_STREAM and PRIORITY bits, `lead` its priority fields or promised stream id) and
/// CONTINUATION frames, each of at most [`FRAME_OUT_MAX`] bytes, END_HEADERS on the last.
pub(super) fn write_block(
    out: &mut Vec<u8>,
    ty: u8,
    flags: u8,
    sid: u32,
    lead: &[u8],
    block: &[u8],
) {
    let (first, mut rest) = block.split_at(block.len().min(FRAME_OUT_MAX - lead.len()));
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    write_header(out, lead.len() + first.len(), ty, flags | end, sid);
    out.extend_from_slice(lead);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(FRAME_OUT_MAX));
        rest = tail;
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        write_header(out, chunk.len(), CONTINUATION, end, sid);
        out.extend_from_slice(chunk);
    }
}

/// A decoded header field: name, value.
pub(super) type Field = (Vec<u8>, Vec<u8>);

/// A decoded header list; wiped when dropped (it may hold values).
#[derive(Debug, Default)]
pub(super) struct Fields(pub Vec<Field>);

impl Drop for Fields {
    fn drop(&mut self) {
        for (n, v) in &mut self.0 {
            n.zeroize();
            v.zeroize();
        }
    }
}

/// Appends `fields` HPACK-encoded without touching any dynamic table: each a literal
/// header field never indexed with a literal name (RFC 7541 §6.2.3), strings without
/// Huffman coding (§5.2).
pub(super) fn encode_fields(fields: &[Field], out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.push(0x10);
        for s in [name, value] {
            // Writing into a Vec cannot fail.
            let _ = encode_integer_into(s.len(), 7, 0, out);
            out.extend_from_slice(s);
        }
    }
}

/// The length of the dynamic table size updates (RFC 7541 §6.3) that open `block`, a
/// block the decoder accepted (so every integer in it is complete).
pub(super) fn leading_size_updates(block: &[u8]) -> usize {
    let mut i = 0;
    while i < block.len() && block[i] & 0xe0 == 0x20 {
        let mut end = i + 1;
        if block[i] & 0x1f == 0x1f {
            while end < block.len() && block[end] & 0x80 != 0 {
                end += 1;
            }
            end += 1;
        }
        i = end;
    }
    i.min(block.len())
}

/// The HPACK decoder of one direction.
pub(super) struct Hpack(loona_hpack::Decoder<'static>);

impl fmt::Debug for Hpack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hpack")
    }
}

impl Hpack {
    pub(super) fn new() -> Hpack {
        let mut d = loona_hpack::Decoder::new();
        d.set_max_allowed_table_size(HPACK_TABLE_MAX);
        Hpack(d)
    }

    /// Decodes one whole header block (updating the dynamic table). The header list may
    /// hold at most [`HEAD_MAX`] bytes, counted as RFC 9113 §6.5.2 does.
    pub(super) fn decode(&mut self, block: &[u8], side: Side) -> Result<Fields, RewriteError> {
        let mut fields = Fields::default();
        let mut size = 0usize;
        self.0
            .decode_with_cb(block, |name, value| {
                // Past the bound only sizes are added: a block of references to large
                // table entries costs no copying.
                size = size.saturating_add(name.len() + value.len() + 32);
                if size <= HEAD_MAX {
                    fields.0.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| RewriteError::Malformed {
                side,
                what: format!("HPACK: {e}"),
            })?;
        if size > HEAD_MAX {
            return Err(RewriteError::HeadTooLarge { side });
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = vec![0xa5];
        write_header(&mut out, 0x01_02_03 & 0x3fff, HEADERS, 0x25, 0x8000_0007);
        assert_eq!(out[1..], [0x00, 0x02, 0x03, 0x01, 0x25, 0, 0, 0, 7]);
        let h = FrameHeader::parse(out[1..].try_into().unwrap());
        assert_eq!(
            h,
            FrameHeader {
                len: 0x0203,
                ty: HEADERS,
                flags: 0x25,
                sid: 7
            }
        );
        let mut b = [0xffu8; 9];
        b[3] = 0;
        assert_eq!(FrameHeader::parse(&b).len, 0xff_ffff);
        assert_eq!(FrameHeader::parse(&b).sid, 0x7fff_ffff);
    }

    #[test]
    fn encoded_fields_decode_and_leave_no_table_entries() {
        let fields = vec![
            (b":path".to_vec(), b"/".to_vec()),
            (b"x-long".to_vec(), vec![b'v'; 300]),
        ];
        let mut block = vec![0x3f, 0xe1, 0x1f, 0x20]; // size updates: 4096, then 0
        assert_eq!(leading_size_updates(&block), 4);
        encode_fields(&fields, &mut block);
        assert_eq!(leading_size_updates(&block), 4);
        let mut d = loona_hpack::Decoder::new();
        assert_eq!(d.decode(&block).unwrap(), fields);
        // Decoding the same block again gives the same list (nothing was indexed).
        assert_eq!(d.decode(&block).unwrap(), fields);
    }

    #[test]
    fn blocks_and_data_are_split_at_the_frame_size() {
        let block = vec![7u8; FRAME_OUT_MAX * 2];
        let mut out = Vec::new();
        write_block(
            &mut out,
            HEADERS,
            END_STREAM | PRIORITY_FLAG,
            3,
            &[0; 5],
            &block,
        );
        let mut at = 0;
        let mut frames = Vec::new();
        while at < out.len() {
            let h = FrameHeader::parse(out[at..at + 9].try_into().unwrap());
            frames.push((h.len, h.ty, h.flags));
            at += 9 + h.len;
        }
        assert_eq!(
            frames,
            [
                (FRAME_OUT_MAX, HEADERS, END_STREAM | PRIORITY_FLAG),
                (FRAME_OUT_MAX, CONTINUATION, 0),
                (5, CONTINUATION, END_HEADERS),
            ]
        );
        let mut out = Vec::new();
        assert_eq!(write_data(&mut out, 1, &[], false), 0);
        assert!(out.is_empty());
        assert_eq!(write_data(&mut out, 1, &[], true), 0);
        assert_eq!(out, [0, 0, 0, DATA, END_STREAM, 0, 0, 0, 1]);
    }
}
