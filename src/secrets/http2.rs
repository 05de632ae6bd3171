//! HTTP/2 rewriting (RFC 9113): placeholders → values in requests, values → placeholders in
//! responses, on a connection whose frames and header blocks are re-framed where needed.
//!
//! # Theory of operation
//!
//! A [`Rewriter`] serves one decrypted TLS flow whose ALPN chose `h2` (see
//! [`super::AnyRewriter`]). Like [`super::http1::Rewriter`] it is sans-IO: the TLS layer
//! hands it plaintext in pieces of any size and forwards what it appends to `out`. Every
//! piece boundary is invisible: feeding byte by byte gives exactly the output of feeding all
//! at once (property-tested, and fuzzed by `fuzz/fuzz_targets/secrets_http2.rs`).
//!
//! Each direction is a frame machine (RFC 9113 §4.1: a 9-byte header, then the payload):
//!
//! ```text
//!   Preface (guest only, 24 bytes) ─→ Header ─┬─ HEADERS, PUSH_PROMISE, CONTINUATION,
//!                                     ▲  ▲   │  WINDOW_UPDATE ─→ Collect ─→ (block done?) ─┐
//!                                     │  │   ├─ DATA ─→ Data (segments, per-stream carry) ──┤
//!                                     │  │   ├─ GOAWAY, unknown types ─→ Scan ──────────────┤
//!                                     │  │   └─ SETTINGS, PING, PRIORITY, RST_STREAM ─→ Raw ┤
//!                                     │  └──────────────────────────────────────────────────┘
//!                                     └── a header block awaits CONTINUATION: only that frame
//!                                         type on that stream may follow (else Malformed)
//! ```
//!
//! Invariants:
//!
//! - Only whole frames are output, each at most [`FRAME_OUT_MAX`] bytes of payload when we
//!   build it (the protocol minimum of SETTINGS_MAX_FRAME_SIZE, so always acceptable), or
//!   exactly as received when we pass it on. A frame cut short by the close is dropped.
//! - A placeholder where its secret may not go stops the flow ([`RewriteError::Violation`])
//!   before the bytes holding it are output; the rules are those of HTTP/1.1
//!   ([`super::FlowContext::agree`], [`super::Secret::allows_host`],
//!   [`super::Secret::injects_in`]).
//! - Every header block of a parsed direction is HPACK-decoded (RFC 7541), so the decoder's
//!   dynamic table follows the sender's.
//!
//! ## From the guest (requests)
//!
//! - The 24-byte client preface is checked and passed on.
//! - A header block (HEADERS, then CONTINUATION until END_HEADERS) is collected whole, up
//!   to [`HEAD_MAX`] bytes of frames ([`RewriteError::HeadTooLarge`]); padding is stripped,
//!   priority fields are kept. Decoded, at most [`HEAD_MAX`] bytes of header list (name +
//!   value + 32 per field, RFC 9113 §6.5.2).
//! - The request's host is `:authority`, else `host` (both: they must name the same host;
//!   several, or none: [`super::ViolationReason::NoHost`]), and the agreement rule decides
//!   once per request. Placeholders in header values are replaced per [`Place::Headers`](super::Place::Headers), in
//!   `:path` after `?` per [`Place::Query`](super::Place::Query), inside the decoded credentials of
//!   `authorization: Basic` per [`Place::BasicAuth`](super::Place::BasicAuth). In `:path` before `?`, another
//!   pseudo-header, a header name, or trailers (a later HEADERS on the stream) a placeholder
//!   is always a violation.
//! - `CONNECT` (also RFC 8441's extended CONNECT) makes the stream a tunnel: a placeholder
//!   in its DATA is a violation.
//! - When some secret could be substituted into the request's body with a value whose length
//!   differs from its placeholder's, its `content-length` fields are dropped (optional in
//!   HTTP/2, RFC 9113 §8.1.1), so the body may change length.
//! - DATA goes through a per-stream [`Scanner`](super::scan::Scanner) (a placeholder split across frames of a
//!   stream is found; streams interleave, so carries are per stream), replacement per
//!   [`Place::Body`](super::Place::Body). Padding is stripped. A frame's data is processed in segments of at most
//!   [`SEG_MAX`] bytes at fixed offsets, each segment's output sent as DATA frames of at
//!   most [`FRAME_OUT_MAX`]; END_STREAM flushes the stream's carry and rides on the last
//!   frame. DATA on a stream without request state (closed, reset or never opened) is
//!   scanned on its own: a placeholder there is a violation.
//! - PUSH_PROMISE from the client is [`RewriteError::Malformed`].
//!
//! ## From the host (responses)
//!
//! Only with a scrub set (some secret may go to this flow's agreed name; [`Rewriter::scrubs`],
//! the rule of HTTP/1.1): every response and PUSH_PROMISE header block is decoded and real
//! values in names and values become placeholders; DATA is scrubbed per stream like requests
//! (a value found in a tunnel is scrubbed too, which a length-sensitive tunnelled protocol
//! may not survive); `content-length` is dropped when a scrubbed value differs in length
//! from its placeholder (also from responses to HEAD, where it is informational only).
//! Without a scrub set the host's frames pass unchanged: only frame headers are read, and
//! WINDOW_UPDATE frames (for the accounting below); no header block is decoded.
//!
//! ## Header blocks: HPACK without a dynamic table of ours
//!
//! Each parsed direction has one HPACK decoder, bounded to a dynamic table of
//! [`HPACK_TABLE_MAX`] bytes. A block that needs no change is passed on as received (its
//! frames untouched) as long as every earlier block of the direction was: the receiver's
//! decoder then holds the sender's dynamic table. From the first block that changes on,
//! every block of the direction is re-encoded: each field as a *literal never indexed* with
//! a literal name, no Huffman coding, behind the block's leading dynamic table size updates
//! (copied as they were). So our blocks never reference or change the receiver's dynamic
//! table (its entries from the pass-through era stay, unused), nothing needs to track the
//! peer's SETTINGS_HEADER_TABLE_SIZE, and no intermediary after us may index a substituted
//! value (RFC 7541 §7.1.3). The block goes out as HEADERS (or PUSH_PROMISE) and
//! CONTINUATION frames of at most [`FRAME_OUT_MAX`] bytes, END_STREAM and priority kept,
//! END_HEADERS on the last.
//!
//! ## Flow control
//!
//! DATA frames are flow-controlled by their whole payload, padding included (RFC 9113
//! §6.9). When the bytes sent on differ from those taken in (padding stripped, a value
//! longer or shorter than its placeholder), the two peers' windows would drift apart. So
//! each direction keeps a *credit* per stream and for the connection: payload bytes taken
//! in, minus bytes sent on, minus bytes still held (segment, carry). A WINDOW_UPDATE coming
//! back the other way for that stream (or the connection) is forwarded with the credit
//! added: a positive credit is granted now, a negative one withheld (a frame whose
//! increment would drop to zero is not forwarded, the rest withheld from the next), so both
//! peers' views agree again after each WINDOW_UPDATE.
//!
//! Residual risk: between WINDOW_UPDATEs the views differ by the unsettled credit. After a
//! substitution that grew the data by N bytes, the guest believes it may send N bytes more
//! than the host's window allows: a guest using its last N bytes of window before the next
//! WINDOW_UPDATE overruns the host's window (FLOW_CONTROL_ERROR). After stripping padding
//! the guest's window lags instead, until the host's next WINDOW_UPDATE; a host that waits
//! for more than the lag to be consumed before updating would stall the stream. Windows are
//! normally far larger than values and padding. A stream's credit is forgotten with its
//! state (END_STREAM, RST_STREAM): the guest sends nothing more on it.
//!
//! ## Limits
//!
//! Per direction at most: one frame header, one header block ([`HEAD_MAX`] of frames, and
//! its fragments), one DATA segment ([`SEG_MAX`]), [`MAX_STREAMS`] streams with state (a
//! stream has state from its first header block without END_STREAM until END_STREAM or
//! RST_STREAM; more: [`RewriteError::TooManyStreams`]) each with a carry shorter than the
//! longest placeholder resp. value, and one control frame's carry. What replacements add to
//! one header block or segment is bounded by [`GROWTH_MAX`] ([`RewriteError::Expansion`]).
//! [`Rewriter::buffered`] is at most [`BUFFERED_MAX`]. Beside the bytes held, each parsed
//! direction keeps its decoder's dynamic table (at most [`HPACK_TABLE_MAX`]) and a few
//! counters per stream.
//!
//! ## Errors
//!
//! As for HTTP/1.1: every error is final ([`RewriteError::Stopped`] after it), and the
//! caller closes the flow. A placeholder in a GOAWAY frame or a frame of unknown type from
//! the guest is a violation; a value in one from the host is
//! [`RewriteError::SecretEchoed`] (a short value may be found in binary payloads by
//! chance). The decoders' dynamic tables may hold real values from the host until the
//! rewriter is dropped.

mod block;
mod dir;
mod frame;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use super::http1::{RewriteError, Side, GROWTH_MAX, HEAD_MAX};
use super::scan::Patterns;
use super::{FlowContext, SecretStats, Secrets};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest payload of a frame the rewriter builds: the initial SETTINGS_MAX_FRAME_SIZE,
/// which a peer may raise but never lower (RFC 9113 §6.5.2).
pub const FRAME_OUT_MAX: usize = 16_384;

/// DATA is scanned in segments of at most this many bytes (at fixed offsets of a frame).
pub const SEG_MAX: usize = 16_384;

/// Streams with state (open request bodies from the guest; open responses from the host,
/// with a scrub set), per direction.
pub const MAX_STREAMS: usize = 256;

/// Largest HPACK dynamic table a sender may ask for (a size update beyond it is
/// [`RewriteError::Malformed`]).
pub const HPACK_TABLE_MAX: usize = 64 * 1024;

/// Largest flow-control window increment (RFC 9113 §6.9.1).
pub const WINDOW_MAX: u32 = (1 << 31) - 1;

/// The most [`Rewriter::buffered`] reports: per direction the preface, a frame header and a
/// WINDOW_UPDATE payload, a header block and its fragments, a segment, and the carries of
/// every stream, the frame in progress and a control frame.
pub const BUFFERED_MAX: usize =
    2 * (PREFACE.len() + 9 + 4 + 2 * HEAD_MAX + SEG_MAX + (MAX_STREAMS + 2) * super::MAX_VALUE_LEN);

/// Read-only state both directions consult.
#[derive(Debug)]
struct Shared {
    secrets: Arc<Secrets>,
    flow: FlowContext,
    /// Every secret's placeholder, indexed like [`Secrets::list`].
    placeholders: Patterns,
    /// Values of the scrub set (others empty, so never matched), indexed likewise.
    values: Patterns,
    /// Per secret: its value's length differs from its placeholder's.
    len_differs: Vec<bool>,
    /// Some secret of the scrub set has `len_differs`.
    scrub_len_differs: bool,
}

/// The rewriter of one HTTP/2 flow (see the module docs).
#[derive(Debug)]
pub struct Rewriter {
    shared: Shared,
    guest: dir::Dir,
    host: dir::Dir,
    stats: SecretStats,
    stopped: bool,
}

impl Rewriter {
    /// A rewriter for a flow described by `ctx`.
    #[must_use]
    pub fn new(secrets: Arc<Secrets>, ctx: FlowContext) -> Rewriter {
        let list = secrets.list();
        let placeholders = Patterns::new(list.iter().map(|s| s.placeholder.as_bytes()));
        let agreed = ctx.agreed_name().ok();
        let scrubbed = |s: &super::Secret| agreed.as_deref().is_some_and(|n| s.allows_host(n));
        let values =
            Patterns::new(
                list.iter()
                    .map(|s| if scrubbed(s) { s.value.expose() } else { &[] }),
            );
        let len_differs: Vec<bool> = list
            .iter()
            .map(|s| s.value.expose().len() != s.placeholder.len())
            .collect();
        let scrub_len_differs = list
            .iter()
            .zip(&len_differs)
            .any(|(s, &d)| d && scrubbed(s));
        let host_mode = if !values.is_empty() {
            dir::Mode::Rewrite
        } else {
            dir::Mode::FlowOnly
        };
        Rewriter {
            shared: Shared {
                secrets,
                flow: ctx,
                placeholders,
                values,
                len_differs,
                scrub_len_differs,
            },
            guest: dir::Dir::new(Side::FromGuest, dir::Mode::Rewrite),
            host: dir::Dir::new(Side::FromHost, host_mode),
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

    /// The guest closed its side: an incomplete frame or header block is dropped, never
    /// forwarded, and so are the carries of streams left open (cut short either way).
    /// Later bytes from the guest are [`RewriteError::Malformed`].
    ///
    /// # Errors
    /// [`RewriteError::Stopped`] after an earlier error.
    pub fn guest_closed(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.run(Side::FromGuest, &[], true, out)
    }

    /// The host closed its side; as [`Rewriter::guest_closed`].
    ///
    /// # Errors
    /// [`RewriteError::Stopped`] after an earlier error.
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
        if self.shared.secrets.is_empty() {
            out.extend_from_slice(input);
            return Ok(());
        }
        let (this, peer) = match side {
            Side::FromGuest => (&mut self.guest, &mut self.host),
            Side::FromHost => (&mut self.host, &mut self.guest),
        };
        let result = if closed {
            this.close();
            Ok(())
        } else {
            this.feed(&self.shared, peer, &mut self.stats, input, out)
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

    /// Bytes held back now in both directions; at most [`BUFFERED_MAX`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.guest.buffered() + self.host.buffered()
    }
}

/// Per-direction pattern set: placeholders from the guest, values from the host.
fn patterns(sh: &Shared, side: Side) -> &Patterns {
    match side {
        Side::FromGuest => &sh.placeholders,
        Side::FromHost => &sh.values,
    }
}
