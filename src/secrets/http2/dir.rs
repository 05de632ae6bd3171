//! One direction's frame machine (see the parent module's diagram): frame headers, header
//! blocks, DATA through per-stream scanners, control frames, and the flow-control credit
//! of the DATA it sends on.
//!
//! Every state consumes input only up to its own end, and a state that needs no more input
//! (a payload of zero bytes, a finished frame) is left at once, so a piece boundary never
//! changes the output. DATA is processed in segments at fixed offsets of each frame, for
//! the same reason.

use std::collections::BTreeMap;

use zeroize::Zeroize;

use super::block::{self, Rule, Swap};
use super::frame::{self, FrameHeader, Hpack, HEADER_LEN};
use super::{
    patterns, RewriteError, Shared, Side, HEAD_MAX, MAX_STREAMS, PREFACE, SEG_MAX, WINDOW_MAX,
};
use crate::secrets::scan::Scanner;
use crate::secrets::{SecretStats, ViolationReason};

/// How much of a direction is parsed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Header blocks decoded and rewritten, DATA scanned.
    Rewrite,
    /// Frames pass unchanged; only their headers and WINDOW_UPDATE frames are read (the
    /// host without a scrub set).
    FlowOnly,
}

/// A stream's state in one direction.
#[derive(Debug)]
pub(super) struct Stream {
    scanner: Scanner,
    /// Flow-control credit: payload bytes taken in, minus bytes sent on, minus what a
    /// WINDOW_UPDATE has settled (see the parent module's docs).
    credit: i64,
    /// Requests: per secret, whether its value may go into this stream's DATA.
    decisions: Vec<Result<(), ViolationReason>>,
    /// Requests: the host the request named, for reports.
    host: String,
}

impl Stream {
    fn new(msg: block::Message) -> Stream {
        Stream {
            scanner: Scanner::new(),
            credit: 0,
            decisions: msg.decisions,
            host: msg.host,
        }
    }

    /// The state for DATA on a stream without any: from the guest nothing may be replaced.
    fn orphan(sh: &Shared, side: Side) -> Stream {
        let decisions = match side {
            Side::FromGuest => vec![
                Err(ViolationReason::NeverInjected("DATA on a closed stream"));
                sh.secrets.len()
            ],
            Side::FromHost => Vec::new(),
        };
        Stream::new(block::Message {
            decisions,
            host: sh.flow.sni.clone().unwrap_or_default(),
        })
    }

    /// Its scanner, and the rule its replacements follow.
    fn parts(&mut self, side: Side) -> (&mut Scanner, Rule<'_>) {
        let rule = match side {
            Side::FromGuest => Rule::Decided {
                decisions: &self.decisions,
                host: &self.host,
            },
            Side::FromHost => Rule::Scrub,
        };
        (&mut self.scanner, rule)
    }
}

/// A header block being collected.
#[derive(Debug, Default)]
struct Block {
    /// HEADERS or PUSH_PROMISE.
    ty: u8,
    sid: u32,
    end_stream: bool,
    /// Some frame was padded: the block is re-encoded, so that no padding byte (which
    /// is never scanned) is passed on.
    padded: bool,
    /// Priority fields (HEADERS with PRIORITY) or the promised stream id (PUSH_PROMISE).
    lead: Vec<u8>,
    /// The frames as received, headers included (passed on when nothing changes).
    raw: Vec<u8>,
    /// The HPACK fragments, padding stripped.
    fragment: Vec<u8>,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.raw.zeroize();
        self.fragment.zeroize();
    }
}

/// A DATA frame in progress.
#[derive(Debug)]
struct Data {
    sid: u32,
    /// Payload bytes still to come.
    left: usize,
    padded: bool,
    /// The padding length, once read.
    pad: Option<usize>,
    end_stream: bool,
    /// The stream's state, out of the map for the frame (or an orphan's).
    stream: Box<Stream>,
    /// Put `stream` back into the map after the frame (not for orphans, END_STREAM or a
    /// stream reset meanwhile).
    keep: bool,
}

#[derive(Debug)]
enum State {
    Preface,
    Header,
    /// A payload collected whole into `buf`.
    Collect {
        left: usize,
    },
    Data(Data),
    /// A payload passed on, scanned after its first `skip` bytes.
    Scan {
        left: usize,
        skip: usize,
        what: &'static str,
        scanner: Scanner,
    },
    /// A payload passed on as it is.
    Raw {
        left: usize,
    },
}

impl State {
    /// The state can move on without more input.
    fn ready(&self) -> bool {
        match self {
            State::Preface | State::Header => false,
            State::Collect { left } | State::Scan { left, .. } | State::Raw { left } => *left == 0,
            State::Data(d) => d.left == 0,
        }
    }
}

/// One direction.
#[derive(Debug)]
pub(super) struct Dir {
    side: Side,
    mode: Mode,
    state: State,
    hdr: [u8; HEADER_LEN],
    hdr_len: usize,
    /// The preface, or a payload being collected.
    buf: Vec<u8>,
    block: Option<Block>,
    hpack: Hpack,
    /// Every header block so far was passed on as received.
    pristine: bool,
    streams: BTreeMap<u32, Stream>,
    /// The connection's flow-control credit (as [`Stream::credit`]).
    conn_credit: i64,
    /// The DATA segment being collected.
    seg: Vec<u8>,
    closed: bool,
}

fn malformed(side: Side, what: &str) -> RewriteError {
    RewriteError::Malformed {
        side,
        what: what.to_owned(),
    }
}

/// Adds `n` replacements to the side's counter.
fn count(side: Side, stats: &mut SecretStats, n: u64) {
    match side {
        Side::FromGuest => stats.substitutions += n,
        Side::FromHost => stats.scrubbed += n,
    }
}

/// Settles `credit` (of which `held` bytes are not sent on yet) against a WINDOW_UPDATE
/// increment `inc`: returns the increment to forward (0: drop the frame).
fn settle(credit: &mut i64, held: usize, inc: u32) -> u32 {
    let unsettled = *credit - i64::try_from(held).unwrap_or(i64::MAX);
    let forward = (i64::from(inc) + unsettled).clamp(0, i64::from(WINDOW_MAX));
    *credit -= forward - i64::from(inc);
    // Within 0..=WINDOW_MAX by the clamp.
    u32::try_from(forward).unwrap_or(0)
}

impl Dir {
    pub(super) fn new(side: Side, mode: Mode) -> Dir {
        Dir {
            side,
            mode,
            state: match side {
                Side::FromGuest => State::Preface,
                Side::FromHost => State::Header,
            },
            hdr: [0; HEADER_LEN],
            hdr_len: 0,
            buf: Vec::new(),
            block: None,
            hpack: Hpack::new(),
            pristine: true,
            streams: BTreeMap::new(),
            conn_credit: 0,
            seg: Vec::new(),
            closed: false,
        }
    }

    /// Bytes held back.
    pub(super) fn buffered(&self) -> usize {
        let block = self
            .block
            .as_ref()
            .map_or(0, |b| b.raw.len() + b.fragment.len());
        let state = match &self.state {
            State::Data(d) => d.stream.scanner.carried(),
            State::Scan { scanner, .. } => scanner.carried(),
            _ => 0,
        };
        let carries: usize = self.streams.values().map(|s| s.scanner.carried()).sum();
        self.hdr_len + self.buf.len() + block + self.seg.len() + state + carries
    }

    /// The sender closed: everything incomplete is dropped.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.state = State::Header;
        self.hdr_len = 0;
        self.buf.zeroize();
        self.buf = Vec::new();
        self.block = None;
        self.seg.zeroize();
        self.seg = Vec::new();
        self.streams.clear();
    }

    /// Runs `input` through the machine; `peer` is the other direction (its streams'
    /// credits, settled by WINDOW_UPDATE frames of this one; its state, by RST_STREAM).
    pub(super) fn feed(
        &mut self,
        sh: &Shared,
        peer: &mut Dir,
        stats: &mut SecretStats,
        mut input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        if self.closed && !input.is_empty() {
            return Err(malformed(self.side, "bytes after the close"));
        }
        while !input.is_empty() || self.state.ready() {
            let state = std::mem::replace(&mut self.state, State::Header);
            self.state = self.step(sh, peer, stats, state, &mut input, out)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        sh: &Shared,
        peer: &mut Dir,
        stats: &mut SecretStats,
        state: State,
        input: &mut &[u8],
        out: &mut Vec<u8>,
    ) -> Result<State, RewriteError> {
        let side = self.side;
        match state {
            State::Preface => {
                let n = (PREFACE.len() - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..n]);
                *input = &input[n..];
                if !PREFACE.starts_with(&self.buf) {
                    return Err(malformed(side, "not the HTTP/2 client preface"));
                }
                if self.buf.len() < PREFACE.len() {
                    return Ok(State::Preface);
                }
                self.buf.clear();
                out.extend_from_slice(PREFACE);
                Ok(State::Header)
            }
            State::Header => {
                let n = (HEADER_LEN - self.hdr_len).min(input.len());
                self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&input[..n]);
                self.hdr_len += n;
                *input = &input[n..];
                if self.hdr_len < HEADER_LEN {
                    return Ok(State::Header);
                }
                self.hdr_len = 0;
                self.on_header(sh, peer, out)
            }
            State::Collect { left } => {
                let n = left.min(input.len());
                self.buf.extend_from_slice(&input[..n]);
                *input = &input[n..];
                if left > n {
                    return Ok(State::Collect { left: left - n });
                }
                self.on_collected(sh, peer, stats, out)?;
                Ok(State::Header)
            }
            State::Raw { left } => {
                let n = left.min(input.len());
                out.extend_from_slice(&input[..n]);
                *input = &input[n..];
                Ok(if left > n {
                    State::Raw { left: left - n }
                } else {
                    State::Header
                })
            }
            State::Scan {
                left,
                skip,
                what,
                mut scanner,
            } => {
                let n = left.min(input.len());
                let (chunk, rest) = input.split_at(n);
                *input = rest;
                let s = skip.min(n);
                out.extend_from_slice(&chunk[..s]);
                let at_end = left == n;
                let mut swap = Swap::new(sh, side, Rule::Never(what));
                scanner.push(patterns(sh, side), &chunk[s..], at_end, out, &mut |i, o| {
                    swap.apply(i, o)
                })?;
                Ok(if at_end {
                    State::Header
                } else {
                    State::Scan {
                        left: left - n,
                        skip: skip - s,
                        what,
                        scanner,
                    }
                })
            }
            State::Data(d) => self.data_step(sh, stats, d, input, out),
        }
    }

    /// A frame header is complete: where its payload goes.
    fn on_header(
        &mut self,
        sh: &Shared,
        peer: &mut Dir,
        out: &mut Vec<u8>,
    ) -> Result<State, RewriteError> {
        let side = self.side;
        let h = FrameHeader::parse(&self.hdr);
        if let Some(b) = &self.block {
            if h.ty != frame::CONTINUATION || h.sid != b.sid {
                return Err(malformed(side, "a header block interrupted before its end"));
            }
        }
        if self.mode == Mode::FlowOnly {
            if h.ty == frame::WINDOW_UPDATE && h.len == 4 {
                return Ok(State::Collect { left: 4 });
            }
            if h.ty == frame::RST_STREAM {
                self.reset(peer, h.sid);
            }
            out.extend_from_slice(&self.hdr);
            return Ok(State::Raw { left: h.len });
        }
        let pass = |out: &mut Vec<u8>, hdr: &[u8]| out.extend_from_slice(hdr);
        Ok(match h.ty {
            frame::DATA => {
                if h.sid == 0 {
                    return Err(malformed(side, "DATA on stream 0"));
                }
                let padded = h.flags & frame::PADDED != 0;
                if padded && h.len == 0 {
                    return Err(malformed(side, "padded DATA without a pad length"));
                }
                let (stream, keep) = match self.streams.remove(&h.sid) {
                    Some(s) => (Box::new(s), true),
                    None => (Box::new(Stream::orphan(sh, side)), false),
                };
                State::Data(Data {
                    sid: h.sid,
                    left: h.len,
                    padded,
                    pad: None,
                    end_stream: h.flags & frame::END_STREAM != 0,
                    stream,
                    keep,
                })
            }
            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION => {
                if h.sid == 0 {
                    return Err(malformed(side, "a header block on stream 0"));
                }
                if h.ty == frame::CONTINUATION && self.block.is_none() {
                    return Err(malformed(side, "CONTINUATION without a header block"));
                }
                if h.ty == frame::PUSH_PROMISE && side == Side::FromGuest {
                    return Err(malformed(side, "PUSH_PROMISE from the client"));
                }
                let held = self.block.as_ref().map_or(0, |b| b.raw.len());
                if held + HEADER_LEN + h.len > HEAD_MAX {
                    return Err(RewriteError::HeadTooLarge { side });
                }
                State::Collect { left: h.len }
            }
            frame::WINDOW_UPDATE => {
                if h.len != 4 {
                    return Err(malformed(side, "WINDOW_UPDATE not of 4 bytes"));
                }
                State::Collect { left: 4 }
            }
            frame::RST_STREAM => {
                self.reset(peer, h.sid);
                pass(out, &self.hdr);
                State::Raw { left: h.len }
            }
            frame::SETTINGS | frame::PING | frame::PRIORITY => {
                pass(out, &self.hdr);
                State::Raw { left: h.len }
            }
            frame::GOAWAY => {
                pass(out, &self.hdr);
                State::Scan {
                    left: h.len,
                    // Last stream id and error code: binary, not scanned.
                    skip: h.len.min(8),
                    what: "GOAWAY frame",
                    scanner: Scanner::new(),
                }
            }
            _ => {
                pass(out, &self.hdr);
                State::Scan {
                    left: h.len,
                    skip: 0,
                    what: "frame of unknown type",
                    scanner: Scanner::new(),
                }
            }
        })
    }

    /// A stream was reset (by either side): both directions forget it.
    fn reset(&mut self, peer: &mut Dir, sid: u32) {
        self.streams.remove(&sid);
        peer.streams.remove(&sid);
        if let State::Data(d) = &mut peer.state {
            if d.sid == sid {
                d.keep = false;
            }
        }
    }

    /// A collected payload (WINDOW_UPDATE or a header block frame) is complete.
    fn on_collected(
        &mut self,
        sh: &Shared,
        peer: &mut Dir,
        stats: &mut SecretStats,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let side = self.side;
        let h = FrameHeader::parse(&self.hdr);
        let mut payload = std::mem::take(&mut self.buf);
        if h.ty == frame::WINDOW_UPDATE {
            let raw = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let inc = raw & WINDOW_MAX;
            let forward = if inc == 0 {
                // A protocol error the receiver reports; not ours to judge.
                0
            } else {
                peer.settle_window(h.sid, inc)
            };
            if forward == inc {
                out.extend_from_slice(&self.hdr);
                out.extend_from_slice(&payload);
            } else if forward > 0 {
                frame::write_header(out, 4, frame::WINDOW_UPDATE, h.flags, h.sid);
                out.extend_from_slice(&(raw & !WINDOW_MAX | forward).to_be_bytes());
            }
            return Ok(());
        }
        let mut block = self.block.take().unwrap_or_default();
        block.raw.extend_from_slice(&self.hdr);
        block.raw.extend_from_slice(&payload);
        let mut p = &payload[..];
        if h.ty != frame::CONTINUATION {
            if h.flags & frame::PADDED != 0 {
                let Some((&pad, rest)) = p.split_first() else {
                    return Err(malformed(side, "padded header block without a pad length"));
                };
                let Some(keep) = rest.len().checked_sub(usize::from(pad)) else {
                    return Err(malformed(side, "padding longer than its frame"));
                };
                p = &rest[..keep];
                block.padded = true;
            }
            let lead = match h.ty {
                frame::HEADERS if h.flags & frame::PRIORITY_FLAG != 0 => 5,
                frame::HEADERS => 0,
                _ => 4,
            };
            if p.len() < lead {
                return Err(malformed(side, "header block frame too short"));
            }
            block.ty = h.ty;
            block.sid = h.sid;
            block.end_stream = h.ty == frame::HEADERS && h.flags & frame::END_STREAM != 0;
            block.lead = p[..lead].to_vec();
            p = &p[lead..];
        }
        block.fragment.extend_from_slice(p);
        payload.zeroize();
        if h.flags & frame::END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        self.on_block(sh, stats, &block, out)
    }

    /// A header block is complete: decoded, judged, passed on or re-encoded.
    fn on_block(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        b: &Block,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let side = self.side;
        let mut fields = self.hpack.decode(&b.fragment, side)?;
        let headers = b.ty == frame::HEADERS;
        let exists = self.streams.contains_key(&b.sid);
        let (outcome, new_stream) = match side {
            Side::FromGuest if exists => {
                let host = self.streams.get(&b.sid).map_or("", |s| s.host.as_str());
                block::trailers(sh, &fields, host)?;
                (block::Outcome::default(), None)
            }
            Side::FromGuest => {
                let (outcome, msg) = block::request(sh, &mut fields, b.end_stream)?;
                (outcome, (!b.end_stream).then(|| Stream::new(msg)))
            }
            Side::FromHost => {
                let body_follows = headers && !b.end_stream;
                let outcome = block::response(sh, &mut fields, body_follows)?;
                let new = (body_follows && !exists).then(|| Stream::new(block::Message::default()));
                (outcome, new)
            }
        };
        if new_stream.is_some() && self.streams.len() >= MAX_STREAMS {
            return Err(RewriteError::TooManyStreams);
        }
        // What a stream's scanner holds goes before a later header block (trailers).
        if headers {
            if let Some(mut st) = self.streams.remove(&b.sid) {
                let r = self.flush(sh, stats, b.sid, &mut st, true, false, out);
                self.streams.insert(b.sid, st);
                r?;
            }
        }
        count(side, stats, outcome.count);
        if self.pristine && !outcome.changed && !b.padded {
            out.extend_from_slice(&b.raw);
        } else {
            self.pristine = false;
            let lead_len = frame::leading_size_updates(&b.fragment);
            let mut encoded = b.fragment[..lead_len].to_vec();
            frame::encode_fields(&fields.0, &mut encoded);
            let mut flags = 0;
            if b.end_stream {
                flags |= frame::END_STREAM;
            }
            if headers && !b.lead.is_empty() {
                flags |= frame::PRIORITY_FLAG;
            }
            frame::write_block(out, b.ty, flags, b.sid, &b.lead, &encoded);
            encoded.zeroize();
        }
        if let Some(st) = new_stream {
            self.streams.insert(b.sid, st);
        }
        if b.end_stream {
            self.streams.remove(&b.sid);
        }
        Ok(())
    }

    /// Consumes DATA payload bytes.
    fn data_step(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        mut d: Data,
        input: &mut &[u8],
        out: &mut Vec<u8>,
    ) -> Result<State, RewriteError> {
        if d.padded && d.pad.is_none() && !input.is_empty() {
            let pad = usize::from(input[0]);
            *input = &input[1..];
            d.left -= 1;
            self.take_in(&mut d.stream, 1);
            if pad > d.left {
                return Err(malformed(self.side, "padding longer than its frame"));
            }
            d.pad = Some(pad);
        }
        if d.padded && d.pad.is_none() {
            return Ok(State::Data(d));
        }
        // Data before the padding; none once in it.
        let data_left = d.left.saturating_sub(d.pad.unwrap_or(0));
        if data_left > 0 {
            let n = data_left.min(input.len()).min(SEG_MAX - self.seg.len());
            self.seg.extend_from_slice(&input[..n]);
            *input = &input[n..];
            d.left -= n;
            self.take_in(&mut d.stream, n);
            if self.seg.len() == SEG_MAX {
                self.flush(sh, stats, d.sid, &mut d.stream, false, false, out)?;
            }
        } else {
            let n = d.left.min(input.len());
            *input = &input[n..];
            d.left -= n;
            self.take_in(&mut d.stream, n);
        }
        if d.left > 0 {
            return Ok(State::Data(d));
        }
        self.flush(
            sh,
            stats,
            d.sid,
            &mut d.stream,
            d.end_stream,
            d.end_stream,
            out,
        )?;
        if d.keep && !d.end_stream {
            self.streams.insert(d.sid, *d.stream);
        }
        Ok(State::Header)
    }

    /// Counts `n` payload bytes taken in on `stream`.
    fn take_in(&mut self, stream: &mut Stream, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        stream.credit += n;
        self.conn_credit += n;
    }

    /// Runs the segment through `stream`'s scanner (`at_end`: the stream ends) and sends
    /// the result on as DATA frames (`end_stream` on the last).
    #[allow(clippy::too_many_arguments)]
    fn flush(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        sid: u32,
        stream: &mut Stream,
        at_end: bool,
        end_stream: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let side = self.side;
        let mut data = Vec::with_capacity(self.seg.len());
        let (scanner, rule) = stream.parts(side);
        let mut swap = Swap::new(sh, side, rule);
        let r = scanner.push(
            patterns(sh, side),
            &self.seg,
            at_end,
            &mut data,
            &mut |i, o| swap.apply(i, o),
        );
        count(side, stats, swap.count);
        self.seg.zeroize();
        self.seg.clear();
        if let Err(e) = r {
            data.zeroize();
            return Err(e);
        }
        let sent = frame::write_data(out, sid, &data, end_stream);
        data.zeroize();
        let sent = i64::try_from(sent).unwrap_or(i64::MAX);
        stream.credit -= sent;
        self.conn_credit -= sent;
        Ok(())
    }

    /// A WINDOW_UPDATE of `inc` for this direction's DATA on `sid` (0: the connection)
    /// came back from the other side: the increment to forward.
    fn settle_window(&mut self, sid: u32, inc: u32) -> u32 {
        let seg = self.seg.len();
        if sid == 0 {
            let held = seg
                + self
                    .streams
                    .values()
                    .map(|s| s.scanner.carried())
                    .sum::<usize>()
                + match &self.state {
                    State::Data(d) => d.stream.scanner.carried(),
                    _ => 0,
                };
            return settle(&mut self.conn_credit, held, inc);
        }
        if let State::Data(d) = &mut self.state {
            if d.sid == sid && d.keep {
                let held = seg + d.stream.scanner.carried();
                return settle(&mut d.stream.credit, held, inc);
            }
        }
        match self.streams.get_mut(&sid) {
            Some(s) => {
                let held = s.scanner.carried();
                settle(&mut s.credit, held, inc)
            }
            None => inc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::settle;

    #[test]
    fn settling_credit() {
        // Padding stripped: 10 more taken in than sent on, granted with the update.
        let mut c = 10;
        assert_eq!(settle(&mut c, 0, 100), 110);
        assert_eq!(c, 0);
        // Held bytes are not settled yet.
        let mut c = 10;
        assert_eq!(settle(&mut c, 4, 100), 106);
        assert_eq!(c, 4);
        // Grown by 30: withheld over two updates; a zero increment is not forwarded.
        let mut c = -30;
        assert_eq!(settle(&mut c, 0, 10), 0);
        assert_eq!(c, -20);
        assert_eq!(settle(&mut c, 0, 50), 30);
        assert_eq!(c, 0);
        // Never beyond the largest increment.
        let mut c = 10;
        assert_eq!(settle(&mut c, 0, super::WINDOW_MAX), super::WINDOW_MAX);
        assert_eq!(c, 10);
    }
}
