//! HTTP/1.1 rewriting: placeholders → values in requests, values → placeholders in responses.
//!
//! # Theory of operation
//!
//! A [`Rewriter`] serves one decrypted TLS flow. It is sans-IO: the TLS layer hands it
//! plaintext in pieces of any size ([`Rewriter::from_guest`], [`Rewriter::from_host`]) and
//! forwards what it appends to `out`. Every piece boundary is invisible: feeding byte by
//! byte gives exactly the output of feeding all at once (property-tested). Each direction is
//! a `stream` state machine over RFC 9112 message framing:
//!
//! ```text
//!            head complete (≤ HEAD_MAX)
//!   Head ───────────────────────────────┬─ no body ───────────────────────→ Head
//!    ▲                                  ├─ Content-Length ≤ BODY_MAX,
//!    │                                  │  substitution possible ─→ Buffered ─→ Head
//!    │                                  ├─ Content-Length otherwise ─→ Streamed ─→ Head
//!    │                                  ├─ chunked ─→ Size ⇄ Data ─→ DataEnd ─→ … ─→ Trailers ─→ Head
//!    │                                  ├─ (response) neither ─→ UntilClose (until the host closes)
//!    └──────────────────────────────────┴─ CONNECT, Upgrade, 101 ─→ Opaque (for good)
//! ```
//!
//! ## From the guest (requests)
//!
//! - The head is collected up to its empty line (bounded by [`HEAD_MAX`]; beyond:
//!   [`RewriteError::HeadTooLarge`]) and parsed with `httparse` (at most [`MAX_HEADERS`]
//!   fields). Nothing of a head is output before the whole head has been checked.
//! - The agreement rule ([`super::FlowContext`]) is evaluated once per request from its
//!   `Host` header; then every placeholder in the head is located: request line path,
//!   query, header name or value, or inside the decoded credentials of
//!   `Authorization: Basic`. A placeholder is replaced when its secret allows the agreed host
//!   and the place; anywhere else the request is a [`Violation`] and stops the flow.
//! - Framing (RFC 9112 §6): `Transfer-Encoding` ending in `chunked` → chunked;
//!   `Content-Length` → sized; neither → no body. Both, several differing lengths, or another
//!   final coding are [`RewriteError::Malformed`] (request smuggling is not relayed).
//! - Sized bodies: when some secret could be substituted into this request's body, a body
//!   of at most [`BODY_MAX`] is buffered (the head with it, since `Content-Length` changes
//!   with the substitution), rewritten, and output with a corrected `Content-Length`; an
//!   `Expect: 100-continue` is then dropped, since the head goes out only with the body. A
//!   larger body, or one no secret could enter, streams through the scanner unchanged: a
//!   placeholder found there is replaced only if the value has the placeholder's length,
//!   else it is [`RewriteError::BodyTooLarge`] (or a violation where it may not go at all).
//! - Chunked bodies: each chunk's data goes through the scanner (whose carry finds a
//!   placeholder split across chunks) and is re-chunked; a chunk whose data comes out
//!   unchanged keeps its original size line. Chunks are processed in segments of at most
//!   [`BODY_MAX`], at fixed offsets, so the output does not depend on arrival. Chunk
//!   extensions and trailers are passed through; a placeholder in them is a violation.
//! - After `CONNECT` or a request with `Upgrade`, the rest of the stream is opaque: it is
//!   scanned, and any placeholder is a violation (also when the server then declines the
//!   upgrade: a gap, documented here).
//!
//! ## From the host (responses)
//!
//! Only flows where a secret could have been substituted are touched: those whose SNI
//! agrees with its pins and is among some secret's hosts (the *scrub set*); every other
//! flow's responses pass through as they are, unparsed. With a scrub set:
//!
//! - Requests are paired with responses (a queue of at most [`MAX_PIPELINED`] outstanding
//!   requests): the response to `HEAD`, and 1xx, 204 and 304 responses, have no body;
//!   1xx other than 101 precede the real response; 101, and 2xx to `CONNECT`, make the
//!   stream opaque.
//! - Real values in the head (anywhere) become placeholders. Sized bodies up to
//!   [`BODY_MAX`] are buffered, scrubbed and given a corrected `Content-Length`; larger ones
//!   stream, and a value whose length differs from its placeholder's there is
//!   [`RewriteError::BodyTooLarge`]. Chunked bodies are scrubbed and re-chunked, and
//!   close-delimited bodies scrubbed freely (their length is not stated); in an opaque
//!   stream an unequal-length value is [`RewriteError::SecretEchoed`].
//! - Only literal values are found: a server that echoes a value encoded (base64, JSON
//!   escapes, compressed) gets it past the scrub. Caveat emptor.
//!
//! ## Bounds
//!
//! Per direction at most: one head ([`HEAD_MAX`]), one body or chunk segment
//! ([`BODY_MAX`]), one chunk size line ([`CHUNK_LINE_MAX`]), trailers ([`HEAD_MAX`]) and the
//! scanner's carry (shorter than the longest placeholder resp. value). What replacements
//! add to one head, body or segment is bounded by [`GROWTH_MAX`]
//! ([`RewriteError::Expansion`]). [`Rewriter::buffered`] reports the bytes held.
//!
//! ## Errors
//!
//! Every error is final: the rewriter refuses all later input ([`RewriteError::Stopped`])
//! and the caller closes the flow. `out` then holds only bytes of checked, clean messages
//! (or of a streamed body before the offending placeholder), never a placeholder where it
//! may not go; the caller may forward or drop them. Rewritten bytes in `out` hold real
//! values: the caller should not keep them longer than it takes to encrypt them.

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::scan::Patterns;
use super::{FlowContext, SecretStats, Secrets, Violation};

/// Largest message head (request line or status line and fields), and trailer section.
pub const HEAD_MAX: usize = 64 * 1024;

/// Largest sized body buffered for rewriting, and the chunk segment size.
pub const BODY_MAX: usize = 1024 * 1024;

/// What replacements may add to one head, buffered body or chunk segment.
pub const GROWTH_MAX: usize = 1024 * 1024;

/// Header fields per head, at most.
pub const MAX_HEADERS: usize = 128;

/// Longest chunk size line (size and extensions).
pub const CHUNK_LINE_MAX: usize = 1024;

/// Requests awaiting their responses, at most.
pub const MAX_PIPELINED: usize = 128;

/// Which way a message goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// A request, from the guest.
    FromGuest,
    /// A response, from the host.
    FromHost,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::FromGuest => "request",
            Side::FromHost => "response",
        })
    }
}

/// Why a rewriter stopped the flow. None carries a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A placeholder where its secret may not go.
    #[error("{0}")]
    Violation(Violation),
    /// A message head (or trailer section) over [`HEAD_MAX`].
    #[error("{side} head larger than {HEAD_MAX} bytes")]
    HeadTooLarge { side: Side },
    /// A placeholder (or a value, from the host) in a streamed body whose length cannot
    /// change.
    #[error("{side} body of {len} bytes holds secret {env_var} but is larger than {BODY_MAX} bytes, the most rewritten")]
    BodyTooLarge {
        side: Side,
        len: u64,
        env_var: String,
    },
    /// Replacements would add more than [`GROWTH_MAX`] to one head, body or segment.
    #[error("{side}: replacements would add more than {GROWTH_MAX} bytes")]
    Expansion { side: Side },
    /// A real value from the host in an opaque stream (after an upgrade or `CONNECT`),
    /// where a length change would corrupt the framing.
    #[error("secret {env_var} seen from the host in an upgraded or tunnelled stream")]
    SecretEchoed { env_var: String },
    /// The bytes are not HTTP/1.x as relayed here.
    #[error("malformed {side}: {what}")]
    Malformed { side: Side, what: String },
    /// More than [`MAX_PIPELINED`] requests await their responses.
    #[error("more than {MAX_PIPELINED} requests await responses")]
    TooManyPipelined,
    /// More HTTP/2 streams with state than [`super::http2::MAX_STREAMS`] in one direction.
    #[error("more than {} HTTP/2 streams in progress", super::http2::MAX_STREAMS)]
    TooManyStreams,
    /// An earlier call failed; the flow must be closed.
    #[error("the rewriter stopped after an earlier error")]
    Stopped,
}

/// What a request leads the paired response to expect.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Expect {
    head: bool,
    connect: bool,
}

/// Read-only state both directions consult.
#[derive(Debug)]
struct Shared {
    secrets: Arc<Secrets>,
    flow: FlowContext,
    /// Every secret's placeholder, indexed like [`Secrets::list`].
    placeholders: Patterns,
    /// Values of the scrub set (others empty, so never matched), indexed likewise.
    values: Patterns,
}

/// The rewriter of one HTTP/1.x flow (see the module docs).
#[derive(Debug)]
pub struct Rewriter {
    shared: Shared,
    guest: stream::Stream,
    host: stream::Stream,
    /// Outstanding requests, oldest first (only kept with a scrub set).
    expect: VecDeque<Expect>,
    stats: SecretStats,
    stopped: bool,
}

impl Rewriter {
    /// A rewriter for a flow described by `ctx`.
    #[must_use]
    pub fn new(secrets: Arc<Secrets>, ctx: FlowContext) -> Rewriter {
        let placeholders = Patterns::new(secrets.list().iter().map(|s| s.placeholder.as_bytes()));
        let agreed = ctx.agreed_name().ok();
        let values = Patterns::new(secrets.list().iter().map(|s| match &agreed {
            Some(name) if s.allows_host(name) => s.value.expose(),
            _ => &[],
        }));
        Rewriter {
            shared: Shared {
                secrets,
                flow: ctx,
                placeholders,
                values,
            },
            guest: stream::Stream::new(Side::FromGuest),
            host: stream::Stream::new(Side::FromHost),
            expect: VecDeque::new(),
            stats: SecretStats::default(),
            stopped: false,
        }
    }

    /// True when responses are scrubbed (some secret may go to this flow's host).
    #[must_use]
    pub fn scrubs(&self) -> bool {
        !self.shared.values.is_empty()
    }

    /// Consumes decrypted bytes from the guest and appends what may go upstream to `out`.
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final (see the module docs).
    pub fn from_guest(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.run(Side::FromGuest, input, false, out)
    }

    /// Consumes decrypted bytes from the host and appends what may go to the guest to `out`.
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final.
    pub fn from_host(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.run(Side::FromHost, input, false, out)
    }

    /// The guest closed its side: flushes what the scanner held back (an incomplete head
    /// is dropped, never forwarded).
    ///
    /// # Errors
    /// As [`Rewriter::from_guest`].
    pub fn guest_closed(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.run(Side::FromGuest, &[], true, out)
    }

    /// The host closed its side: ends a close-delimited response body.
    ///
    /// # Errors
    /// As [`Rewriter::from_host`].
    pub fn host_closed(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.run(Side::FromHost, &[], true, out)
    }

    fn run(
        &mut self,
        side: Side,
        input: &[u8],
        closed: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        if self.stopped {
            return Err(RewriteError::Stopped);
        }
        let sh = &self.shared;
        let result = match side {
            Side::FromGuest if sh.secrets.is_empty() => {
                out.extend_from_slice(input);
                Ok(())
            }
            Side::FromHost if sh.values.is_empty() => {
                out.extend_from_slice(input);
                Ok(())
            }
            Side::FromGuest => {
                let expect = (!sh.values.is_empty()).then_some(&mut self.expect);
                self.guest
                    .feed(sh, expect, &mut self.stats, input, closed, out)
            }
            Side::FromHost => self.host.feed(
                sh,
                Some(&mut self.expect),
                &mut self.stats,
                input,
                closed,
                out,
            ),
        };
        if let Err(e) = &result {
            self.stopped = true;
            match e {
                RewriteError::Violation(_) => self.stats.violations += 1,
                RewriteError::HeadTooLarge { .. } => self.stats.heads_too_large += 1,
                _ => {}
            }
        }
        result
    }

    /// What this rewriter has done so far.
    #[must_use]
    pub fn stats(&self) -> SecretStats {
        self.stats
    }

    /// Bytes held back now in both directions (heads, bodies, segments, carries); at most
    /// [`BUFFERED_MAX`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.guest.buffered() + self.host.buffered()
    }
}

/// The most [`Rewriter::buffered`] reports: per direction a head, a body, a chunk line,
/// trailers and a carry.
pub const BUFFERED_MAX: usize =
    2 * (2 * HEAD_MAX + BODY_MAX + CHUNK_LINE_MAX + super::MAX_VALUE_LEN);
