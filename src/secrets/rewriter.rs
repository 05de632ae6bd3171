//! Either rewriter, chosen by the protocol the TLS handshake negotiated (ALPN, RFC 7301), so
//! the TLS layer holds one type per flow.

use std::sync::Arc;

use super::http1::RewriteError;
use super::{http1, http2, FlowContext, SecretStats, Secrets};

/// The rewriter of one flow: HTTP/2 when ALPN chose `h2`, else HTTP/1.x.
#[derive(Debug)]
pub enum AnyRewriter {
    Http1(http1::Rewriter),
    Http2(http2::Rewriter),
}

impl AnyRewriter {
    /// The most [`AnyRewriter::buffered`] reports.
    pub const BUFFERED_MAX: usize = if http1::BUFFERED_MAX > http2::BUFFERED_MAX {
        http1::BUFFERED_MAX
    } else {
        http2::BUFFERED_MAX
    };

    /// The rewriter for a flow whose ALPN protocol is `alpn`: `h2` → HTTP/2; anything
    /// else (`http/1.1`, none) → HTTP/1.x.
    #[must_use]
    pub fn for_alpn(alpn: Option<&[u8]>, secrets: Arc<Secrets>, ctx: FlowContext) -> AnyRewriter {
        match alpn {
            Some(b"h2") => AnyRewriter::Http2(http2::Rewriter::new(secrets, ctx)),
            _ => AnyRewriter::Http1(http1::Rewriter::new(secrets, ctx)),
        }
    }

    /// True when responses are scrubbed.
    #[must_use]
    pub fn scrubs(&self) -> bool {
        match self {
            AnyRewriter::Http1(r) => r.scrubs(),
            AnyRewriter::Http2(r) => r.scrubs(),
        }
    }

    /// As [`http1::Rewriter::from_guest`].
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final.
    pub fn from_guest(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        match self {
            AnyRewriter::Http1(r) => r.from_guest(input, out),
            AnyRewriter::Http2(r) => r.from_guest(input, out),
        }
    }

    /// As [`http1::Rewriter::from_host`].
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final.
    pub fn from_host(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        match self {
            AnyRewriter::Http1(r) => r.from_host(input, out),
            AnyRewriter::Http2(r) => r.from_host(input, out),
        }
    }

    /// As [`http1::Rewriter::guest_closed`].
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final.
    pub fn guest_closed(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        match self {
            AnyRewriter::Http1(r) => r.guest_closed(out),
            AnyRewriter::Http2(r) => r.guest_closed(out),
        }
    }

    /// As [`http1::Rewriter::host_closed`].
    ///
    /// # Errors
    /// Any [`RewriteError`]; every error is final.
    pub fn host_closed(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        match self {
            AnyRewriter::Http1(r) => r.host_closed(out),
            AnyRewriter::Http2(r) => r.host_closed(out),
        }
    }

    /// What the rewriter has done so far.
    #[must_use]
    pub fn stats(&self) -> SecretStats {
        match self {
            AnyRewriter::Http1(r) => r.stats(),
            AnyRewriter::Http2(r) => r.stats(),
        }
    }

    /// Bytes held back now; at most [`AnyRewriter::BUFFERED_MAX`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        match self {
            AnyRewriter::Http1(r) => r.buffered(),
            AnyRewriter::Http2(r) => r.buffered(),
        }
    }
}
