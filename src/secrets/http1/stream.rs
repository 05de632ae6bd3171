//! One direction's message framing state machine (see the parent module's state diagram):
//! collecting heads, then relaying each body through the scanner by its framing.
//!
//! Every state consumes input only up to its own end, so a call may walk through many
//! messages; transitions that need no input (an empty body, a finished segment) happen as
//! soon as the state's last byte is consumed, so a piece boundary never changes the output.

use std::collections::VecDeque;
use std::io::Write as _;

use zeroize::Zeroize;

use super::{
    request, response, Expect, RewriteError, Shared, Side, BODY_MAX, CHUNK_LINE_MAX, GROWTH_MAX,
    HEAD_MAX, MAX_PIPELINED,
};
use crate::secrets::scan::{Patterns, Scanner};
use crate::secrets::{SecretStats, Violation, ViolationReason};

/// A replacement: `with` instead of `raw[start..end]`.
#[derive(Debug)]
pub(super) struct Edit {
    pub start: usize,
    pub end: usize,
    pub with: Vec<u8>,
}

impl Drop for Edit {
    fn drop(&mut self) {
        // May hold a secret value (best effort: the caller's `out` holds it too).
        self.with.zeroize();
    }
}

/// A checked head waiting to be output, with its edits.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub raw: Vec<u8>,
    pub edits: Vec<Edit>,
    /// The single `Content-Length` value's range and number.
    pub content_length: Option<(usize, usize, u64)>,
    /// A line dropped when the body is buffered (`Expect: 100-continue`).
    pub drop_when_buffered: Option<(usize, usize)>,
}

impl Held {
    /// Appends the edited head; `body` is the rewritten length of a buffered body.
    fn render(mut self, body: Option<usize>, out: &mut Vec<u8>) {
        if let Some(len) = body {
            if let Some((start, end, old)) = self.content_length {
                if old != len as u64 {
                    self.edits.push(Edit {
                        start,
                        end,
                        with: len.to_string().into_bytes(),
                    });
                }
            }
            if let Some((start, end)) = self.drop_when_buffered {
                self.edits.push(Edit {
                    start,
                    end,
                    with: Vec::new(),
                });
            }
        }
        self.edits.sort_by_key(|e| e.start);
        let mut at = 0;
        for e in &self.edits {
            out.extend_from_slice(&self.raw[at..e.start]);
            out.extend_from_slice(&e.with);
            at = e.end;
        }
        out.extend_from_slice(&self.raw[at..]);
    }
}

/// How the body after a head is delimited.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Sized(u64),
    Chunked,
    /// Until the host closes (responses only).
    UntilClose,
    /// The rest of the stream is not HTTP (CONNECT, 101).
    OpaqueNow,
}

/// What a head analysis decided about its message.
#[derive(Debug, Default)]
pub(super) struct Message {
    /// Requests: per secret, whether its value may go into this body.
    pub decisions: Vec<Result<(), ViolationReason>>,
    /// The host as the request named it (for violations).
    pub host: String,
    /// The stream turns opaque after this message (`Upgrade`).
    pub opaque_after: bool,
}

/// A head analysis' result.
#[derive(Debug)]
pub(super) struct Head {
    pub held: Held,
    pub framing: Framing,
    /// Buffer a sized body up to [`BODY_MAX`] to rewrite it.
    pub buffer_body: bool,
    pub msg: Message,
}

/// Whether a replacement may change the length of what it replaces.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Fixed {
    Free,
    /// A streamed body of this declared length.
    Sized(u64),
    Opaque,
}

/// The replacement callback's state for one head, body or segment.
pub(super) struct Sub<'a> {
    side: Side,
    sh: &'a Shared,
    msg: &'a Message,
    fixed: Fixed,
    /// Consult `msg.decisions` (bodies); heads decide per place before applying.
    decided: bool,
    growth: usize,
    pub count: u64,
}

impl<'a> Sub<'a> {
    fn new(side: Side, sh: &'a Shared, msg: &'a Message, fixed: Fixed) -> Sub<'a> {
        Sub {
            side,
            sh,
            msg,
            fixed,
            decided: true,
            growth: 0,
            count: 0,
        }
    }

    /// A replacement for a head, whose analysis decided each place before applying.
    pub(super) fn for_head(side: Side, sh: &'a Shared, msg: &'a Message) -> Sub<'a> {
        Sub {
            decided: false,
            ..Sub::new(side, sh, msg, Fixed::Free)
        }
    }

    /// Appends the replacement of pattern `idx` after checking the bounds.
    pub(super) fn apply(&mut self, idx: usize, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let s = &self.sh.secrets.list()[idx];
        let (from, to) = match self.side {
            Side::FromGuest => {
                if self.decided {
                    // Every request head sets one decision per secret; none is a refusal.
                    let reason = match self.msg.decisions.get(idx) {
                        Some(Ok(())) => None,
                        Some(Err(reason)) => Some(*reason),
                        None => Some(ViolationReason::NeverInjected("request")),
                    };
                    if let Some(reason) = reason {
                        return Err(violation(self.sh, idx, &self.msg.host, reason));
                    }
                }
                (s.placeholder.as_bytes(), s.value.expose())
            }
            Side::FromHost => (s.value.expose(), s.placeholder.as_bytes()),
        };
        if from.len() != to.len() {
            match self.fixed {
                Fixed::Free => {}
                Fixed::Sized(len) => {
                    return Err(RewriteError::BodyTooLarge {
                        side: self.side,
                        len,
                        env_var: s.env_var.clone(),
                    })
                }
                Fixed::Opaque => {
                    return Err(RewriteError::SecretEchoed {
                        env_var: s.env_var.clone(),
                    })
                }
            }
        }
        self.grow(to.len().saturating_sub(from.len()))?;
        out.extend_from_slice(to);
        self.count += 1;
        Ok(())
    }

    /// Accounts `more` bytes of growth.
    pub(super) fn grow(&mut self, more: usize) -> Result<(), RewriteError> {
        self.growth += more;
        if self.growth > GROWTH_MAX {
            return Err(RewriteError::Expansion { side: self.side });
        }
        Ok(())
    }
}

/// The violation of secret `idx` towards `host`.
pub(super) fn violation(
    sh: &Shared,
    idx: usize,
    host: &str,
    reason: ViolationReason,
) -> RewriteError {
    let s = &sh.secrets.list()[idx];
    RewriteError::Violation(Violation {
        env_var: s.env_var.clone(),
        host: host.to_owned(),
        reason,
        on_violation: s.on_violation,
    })
}

#[derive(Debug)]
enum State {
    Head,
    /// A sized body being collected, its head held back.
    Buffered {
        held: Held,
        remaining: u64,
        body: Vec<u8>,
    },
    Streamed {
        remaining: u64,
        len: u64,
    },
    /// A chunk size line being collected.
    Size(Vec<u8>),
    /// A chunk's data, in segments of at most [`BODY_MAX`].
    Data {
        line: Vec<u8>,
        remaining: u64,
        seg: Vec<u8>,
        /// The chunk fits one segment (its original size line may be kept).
        whole: bool,
    },
    /// The CRLF after a chunk's data; the count seen so far.
    DataEnd(u8),
    /// The trailer section after the last chunk (`last`: its size line).
    Trailers {
        last: Vec<u8>,
        buf: Vec<u8>,
        nl: u8,
    },
    UntilClose,
    Opaque,
}

/// Line-end tracking for finding a head's (or trailer section's) empty line.
const MID_LINE: u8 = 0;
const LINE_START: u8 = 1;
const LINE_START_CR: u8 = 2;

/// One direction.
#[derive(Debug)]
pub(super) struct Stream {
    side: Side,
    state: State,
    head: Vec<u8>,
    nl: u8,
    scanner: Scanner,
    msg: Message,
}

impl Stream {
    pub(super) fn new(side: Side) -> Stream {
        Stream {
            side,
            state: State::Head,
            head: Vec::new(),
            nl: MID_LINE,
            scanner: Scanner::new(),
            msg: Message::default(),
        }
    }

    /// Bytes held back.
    pub(super) fn buffered(&self) -> usize {
        let state = match &self.state {
            State::Buffered { held, body, .. } => held.raw.len() + body.len(),
            State::Size(line) => line.len(),
            State::Data { line, seg, .. } => line.len() + seg.len(),
            State::Trailers { last, buf, .. } => last.len() + buf.len(),
            _ => 0,
        };
        self.head.len() + state + self.scanner.carried()
    }

    fn pats<'s>(&self, sh: &'s Shared) -> &'s Patterns {
        match self.side {
            Side::FromGuest => &sh.placeholders,
            Side::FromHost => &sh.values,
        }
    }

    /// Runs `input` through the machine; `closed`: the sender closed after it.
    /// `expect` is the request/response pairing queue (`None`: not tracked).
    pub(super) fn feed(
        &mut self,
        sh: &Shared,
        mut expect: Option<&mut VecDeque<Expect>>,
        stats: &mut SecretStats,
        mut input: &[u8],
        closed: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let side = self.side;
        let pats = self.pats(sh);
        while !input.is_empty() {
            match &mut self.state {
                State::Head => {
                    let (used, complete) = self.take_head(input, out)?;
                    input = &input[used..];
                    if complete {
                        self.on_head(sh, expect.as_deref_mut(), stats, out)?;
                    }
                }
                State::Buffered {
                    remaining, body, ..
                } => {
                    let n = take(*remaining, input.len());
                    body.extend_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.finish_buffered(sh, stats, out)?;
                    }
                }
                State::Streamed { remaining, len } => {
                    let n = take(*remaining, input.len());
                    let at_end = n as u64 == *remaining;
                    let mut sub = Sub::new(side, sh, &self.msg, Fixed::Sized(*len));
                    let r = self
                        .scanner
                        .push(pats, &input[..n], at_end, out, &mut |i, o| sub.apply(i, o));
                    count(side, stats, sub.count);
                    r?;
                    *remaining -= n as u64;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.next_message();
                    }
                }
                State::Size(line) => {
                    let n = line_len(input);
                    line.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if line.len() > CHUNK_LINE_MAX {
                        return Err(malformed(side, "chunk size line too long"));
                    }
                    if line.last() == Some(&b'\n') {
                        let line = std::mem::take(line);
                        self.on_size_line(sh, stats, line, out)?;
                    }
                }
                State::Data {
                    line,
                    remaining,
                    seg,
                    whole,
                } => {
                    let room = BODY_MAX - seg.len();
                    let n = take(*remaining, input.len()).min(room);
                    seg.extend_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    input = &input[n..];
                    if seg.len() == BODY_MAX || *remaining == 0 {
                        let mut data = Vec::with_capacity(seg.len());
                        let mut sub = Sub::new(side, sh, &self.msg, Fixed::Free);
                        let r = self
                            .scanner
                            .push(pats, seg, false, &mut data, &mut |i, o| sub.apply(i, o));
                        count(side, stats, sub.count);
                        r?;
                        if *whole && data == *seg {
                            out.extend_from_slice(line);
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        } else {
                            write_chunk(out, &data);
                        }
                        data.zeroize();
                        seg.clear();
                        if *remaining == 0 {
                            self.state = State::DataEnd(0);
                        }
                    }
                }
                State::DataEnd(seen) => {
                    if input[0] != b"\r\n"[usize::from(*seen)] {
                        return Err(malformed(side, "chunk data not followed by CRLF"));
                    }
                    input = &input[1..];
                    *seen += 1;
                    if *seen == 2 {
                        self.state = State::Size(Vec::new());
                    }
                }
                State::Trailers { last, buf, nl } => {
                    let (n, complete) = find_empty_line(nl, input);
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if buf.len() > HEAD_MAX {
                        return Err(RewriteError::HeadTooLarge { side });
                    }
                    if complete {
                        let (last, buf) = (std::mem::take(last), std::mem::take(buf));
                        self.on_trailers(sh, stats, &last, &buf, out)?;
                    }
                }
                State::UntilClose | State::Opaque => {
                    let fixed = if matches!(self.state, State::Opaque) {
                        Fixed::Opaque
                    } else {
                        Fixed::Free
                    };
                    let mut sub = Sub::new(side, sh, &self.msg, fixed);
                    let r = self
                        .scanner
                        .push(pats, input, false, out, &mut |i, o| sub.apply(i, o));
                    count(side, stats, sub.count);
                    r?;
                    input = &[];
                }
            }
        }
        if closed {
            let fixed = match self.state {
                State::UntilClose => Fixed::Free,
                State::Opaque => Fixed::Opaque,
                State::Streamed { len, .. } => Fixed::Sized(len),
                // An incomplete head, body or chunk is dropped with the connection.
                _ => return Ok(()),
            };
            let mut sub = Sub::new(side, sh, &self.msg, fixed);
            let r = self
                .scanner
                .push(pats, &[], true, out, &mut |i, o| sub.apply(i, o));
            count(side, stats, sub.count);
            r?;
        }
        Ok(())
    }

    /// Collects head bytes up to the empty line. Empty lines before a head are passed
    /// through (RFC 9112 §2.2). Returns (bytes used, head complete).
    fn take_head(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), RewriteError> {
        let mut skip = 0;
        if self.head.is_empty() {
            skip = input
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            out.extend_from_slice(&input[..skip]);
        }
        let rest = &input[skip..];
        // Look no further than one byte past the bound.
        let window = &rest[..rest.len().min(HEAD_MAX + 1 - self.head.len().min(HEAD_MAX))];
        let (n, complete) = find_empty_line(&mut self.nl, window);
        self.head.extend_from_slice(&window[..n]);
        if self.head.len() > HEAD_MAX {
            return Err(RewriteError::HeadTooLarge { side: self.side });
        }
        Ok((skip + n, complete))
    }

    fn on_head(
        &mut self,
        sh: &Shared,
        expect: Option<&mut VecDeque<Expect>>,
        stats: &mut SecretStats,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let raw = std::mem::take(&mut self.head);
        self.nl = MID_LINE;
        let head = match self.side {
            Side::FromGuest => {
                let (head, exp, subs) = request::analyze(sh, raw)?;
                if let Some(queue) = expect {
                    if queue.len() >= MAX_PIPELINED {
                        return Err(RewriteError::TooManyPipelined);
                    }
                    queue.push_back(exp);
                }
                stats.substitutions += subs;
                head
            }
            Side::FromHost => {
                let mut none = VecDeque::new();
                let (head, scrubbed) = response::analyze(sh, raw, expect.unwrap_or(&mut none))?;
                stats.scrubbed += scrubbed;
                head
            }
        };
        self.msg = head.msg;
        match head.framing {
            Framing::Sized(n) if n > 0 && head.buffer_body && n <= BODY_MAX as u64 => {
                self.state = State::Buffered {
                    held: head.held,
                    remaining: n,
                    body: Vec::new(),
                };
            }
            framing => {
                head.held.render(None, out);
                match framing {
                    Framing::Sized(len) if len > 0 => {
                        self.state = State::Streamed {
                            remaining: len,
                            len,
                        };
                    }
                    Framing::Chunked => self.state = State::Size(Vec::new()),
                    Framing::UntilClose => self.state = State::UntilClose,
                    Framing::OpaqueNow => self.go_opaque(sh),
                    Framing::None | Framing::Sized(_) => self.next_message(),
                }
            }
        }
        Ok(())
    }

    /// After a message: the next head, or the opaque rest of the stream.
    fn next_message(&mut self) {
        self.state = State::Head;
        if self.msg.opaque_after {
            self.state = State::Opaque;
            self.msg.decisions.fill(Err(ViolationReason::NeverInjected(
                "upgraded or tunnelled stream",
            )));
        }
    }

    fn go_opaque(&mut self, sh: &Shared) {
        self.msg.opaque_after = true;
        self.msg.decisions = vec![Ok(()); sh.secrets.len()];
        self.next_message();
    }

    fn finish_buffered(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let State::Buffered { held, body, .. } = std::mem::replace(&mut self.state, State::Head)
        else {
            return Ok(());
        };
        let mut data = Vec::with_capacity(body.len());
        let mut sub = Sub::new(self.side, sh, &self.msg, Fixed::Free);
        let mut scanner = Scanner::new();
        let r = scanner.push(self.pats(sh), &body, true, &mut data, &mut |i, o| {
            sub.apply(i, o)
        });
        count(self.side, stats, sub.count);
        r?;
        held.render(Some(data.len()), out);
        out.extend_from_slice(&data);
        data.zeroize();
        self.next_message();
        Ok(())
    }

    fn on_size_line(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        line: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Err(malformed(self.side, "chunk size line does not end in CRLF"));
        };
        let digits = text.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let rest = &text[digits..];
        if digits == 0
            || digits > 15
            || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t'))
        {
            return Err(malformed(self.side, "bad chunk size"));
        }
        let size = text[..digits].iter().fold(0u64, |acc, &b| {
            // `b` is a hex digit (checked above), at most 15 of them: no overflow.
            acc << 4 | u64::from(char::from(b).to_digit(16).unwrap_or(0))
        });
        self.framing_hit(sh, &line, "chunk extension")?;
        if size == 0 {
            let mut data = Vec::new();
            let mut sub = Sub::new(self.side, sh, &self.msg, Fixed::Free);
            let r = self
                .scanner
                .push(self.pats(sh), &[], true, &mut data, &mut |i, o| {
                    sub.apply(i, o)
                });
            count(self.side, stats, sub.count);
            r?;
            write_chunk(out, &data);
            data.zeroize();
            self.state = State::Trailers {
                last: line,
                buf: Vec::new(),
                nl: LINE_START,
            };
        } else {
            self.state = State::Data {
                line,
                remaining: size,
                seg: Vec::new(),
                whole: size <= BODY_MAX as u64,
            };
        }
        Ok(())
    }

    fn on_trailers(
        &mut self,
        sh: &Shared,
        stats: &mut SecretStats,
        last: &[u8],
        buf: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        out.extend_from_slice(last);
        match self.side {
            Side::FromGuest => {
                self.framing_hit(sh, buf, "trailers")?;
                out.extend_from_slice(buf);
            }
            Side::FromHost => {
                let mut sub = Sub::new(self.side, sh, &self.msg, Fixed::Free);
                let r =
                    Scanner::new().push(self.pats(sh), buf, true, out, &mut |i, o| sub.apply(i, o));
                count(self.side, stats, sub.count);
                r?;
            }
        }
        self.next_message();
        Ok(())
    }

    /// A placeholder (or value) in framing bytes that are never rewritten.
    fn framing_hit(
        &self,
        sh: &Shared,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<(), RewriteError> {
        let Some(&(_, idx)) = self.pats(sh).find_all(bytes).first() else {
            return Ok(());
        };
        Err(match self.side {
            Side::FromGuest => violation(
                sh,
                idx,
                &self.msg.host,
                ViolationReason::NeverInjected(what),
            ),
            Side::FromHost => RewriteError::SecretEchoed {
                env_var: sh.secrets.list()[idx].env_var.clone(),
            },
        })
    }
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

/// `min(remaining, available)` as a length.
fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Bytes of `input` up to and including the first `\n` (all of it when none).
fn line_len(input: &[u8]) -> usize {
    input
        .iter()
        .position(|&b| b == b'\n')
        .map_or(input.len(), |p| p + 1)
}

/// Advances the line-end tracker `nl` over `input` up to the end of the first empty line
/// (`\n\n` or `\n\r\n`). Returns (bytes used, found).
fn find_empty_line(nl: &mut u8, input: &[u8]) -> (usize, bool) {
    for (i, &b) in input.iter().enumerate() {
        *nl = match (*nl, b) {
            (LINE_START | LINE_START_CR, b'\n') => {
                *nl = MID_LINE;
                return (i + 1, true);
            }
            (_, b'\n') => LINE_START,
            (LINE_START, b'\r') => LINE_START_CR,
            (MID_LINE, b'\r') => MID_LINE,
            _ => MID_LINE,
        };
    }
    (input.len(), false)
}

/// Appends `data` as one chunk (nothing when empty: that would be the last chunk).
fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
