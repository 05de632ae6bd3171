//! Temporary: the rewriter chosen by ALPN (HTTP/1.1 only until the HTTP/2 rewriter lands).

use std::sync::Arc;

use super::http1::{RewriteError, Rewriter};
use super::{FlowContext, SecretStats, Secrets};

/// A flow's rewriter.
#[derive(Debug)]
pub enum AnyRewriter {
    Http1(Rewriter),
}

impl AnyRewriter {
    #[must_use]
    pub fn for_alpn(_alpn: Option<&[u8]>, secrets: Arc<Secrets>, ctx: FlowContext) -> AnyRewriter {
        AnyRewriter::Http1(Rewriter::new(secrets, ctx))
    }
    /// # Errors
    /// As the rewriter's.
    pub fn from_guest(&mut self, i: &[u8], o: &mut Vec<u8>) -> Result<(), RewriteError> {
        let AnyRewriter::Http1(r) = self;
        r.from_guest(i, o)
    }
    /// # Errors
    /// As the rewriter's.
    pub fn from_host(&mut self, i: &[u8], o: &mut Vec<u8>) -> Result<(), RewriteError> {
        let AnyRewriter::Http1(r) = self;
        r.from_host(i, o)
    }
    /// # Errors
    /// As the rewriter's.
    pub fn guest_closed(&mut self, o: &mut Vec<u8>) -> Result<(), RewriteError> {
        let AnyRewriter::Http1(r) = self;
        r.guest_closed(o)
    }
    /// # Errors
    /// As the rewriter's.
    pub fn host_closed(&mut self, o: &mut Vec<u8>) -> Result<(), RewriteError> {
        let AnyRewriter::Http1(r) = self;
        r.host_closed(o)
    }
    #[must_use]
    pub fn stats(&self) -> SecretStats {
        let AnyRewriter::Http1(r) = self;
        r.stats()
    }
}
