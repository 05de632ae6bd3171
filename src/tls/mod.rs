//! TLS interception (issue #14): the CA, per-host leaf certificates, upstream verification
//! and the per-flow session that decrypts, rewrites and re-encrypts.
//!
//! # Theory of operation
//!
//! To read (and, with [`crate::secrets`], rewrite) a guest's HTTPS, ringnet terminates the
//! guest's TLS itself, presenting a certificate for the name the guest asked for (SNI), and
//! opens its own TLS connection to the real server. The guest accepts that certificate because
//! it trusts ringnet's CA, installed in it before it boots
//! ([`crate::Network::ca_cert_pem`], `ringnet ca --out FILE`; `ringnet run` points
//! `SSL_CERT_FILE` and friends at it).
//!
//! ```text
//! [tls] ─Ca::from_config→ Ca (files, or generated once into ca_dir and reused)
//!                          │ (built in Network::new: it exists before the guest boots)
//!                          ▼
//! SNI from the ClientHello ─LeafCache::get(name, now)→ Arc<rustls::sign::CertifiedKey>
//!
//! guest SYN to an intercepted port ─(poll thread)→ egress::intercept worker ─→ Session:
//!   ClientHello → bypass? ─yes→ splice
//!               └no→ handshake with the server (verified: upstream::Upstream)
//!                    → leaf for the SNI → relay through the secrets rewriter
//! ```
//!
//! - [`config`]: the `[tls]` section. [`ca`]: loading, generating and storing the CA.
//!   [`leaf`]: issuing and caching leaves (bounded LRU, counted).
//! - [`upstream`]: the rustls client configurations servers are verified with (webpki
//!   roots, the host's CA store, CA files, per-host overrides).
//! - [`session`]: one flow, sans-IO (bytes in, bytes and decisions out). Its I/O, and the
//!   threads that keep every handshake off the poll thread, are
//!   [`crate::egress::intercept`].
//!
//! What is not done: client certificates from the guest (a guest that must present one to
//! the server has to be bypassed), TLS 1.3 early data from the guest (refused by the
//! guest-side rustls, so the client retries without), HTTP/2 server push scrubbing beyond
//! header blocks.
//!
//! rustls with the `ring` provider signs and verifies (no aws-lc); rcgen builds certificates,
//! x509-parser reads an operator's CA certificate.
//!
//! ## Syscalls
//!
//! Only [`ca`] (the CA's files, see there), [`upstream`] (CA files and the host bundle, at
//! start), [`default_ca_dir`] (environment lookups) and [`host_ca_bundle`] (reading one
//! file). Leaf issue, the cache and sessions are pure.

pub mod ca;
pub mod config;
pub mod leaf;
pub mod session;
pub mod upstream;

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

pub use ca::{Ca, CaSource};
pub use config::{TlsConfig, TlsConfigError};
pub use leaf::{LeafCache, LeafName, LeafStats};

/// Host CA bundles, first found wins: Debian/Ubuntu/Alpine/Arch, then Fedora/RHEL.
pub const HOST_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// What can fail building the CA or a leaf. Messages are one line and never hold key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A CA file holds no usable CA certificate or key, or the two do not match.
    #[error("{}: {reason}", path.display())]
    NotCa { path: PathBuf, reason: String },
    /// PEM text given in memory is not a usable CA (`what`: "certificate" or "key").
    #[error("CA {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// `ca_dir` or a file in it could not be created, locked or written.
    #[error("CA directory {}: {source}", dir.display())]
    CaDir { dir: PathBuf, source: io::Error },
    /// Only one of the generated CA's two files is present.
    #[error(
        "{} exists but {} does not: restore it, or remove both to generate a new CA",
        found.display(),
        missing.display()
    )]
    HalfCa { found: PathBuf, missing: PathBuf },
    /// No `tls.ca_dir` and no `XDG_STATE_HOME` or `HOME` to default it from.
    #[error(
        "no CA directory: tls.ca_dir is not set, nor XDG_STATE_HOME or HOME to default it from"
    )]
    NoCaDir,
    /// rcgen failed to generate a key or build a certificate.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the leaf key.
    #[error("leaf signing key: {0}")]
    SigningKey(String),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// An upstream trust set holds no root (`what`: the config section).
    #[error("{what}: no root certificate to verify upstream servers with")]
    Roots { what: String },
    /// A server name is neither a DNS name nor an IP literal (shown escaped).
    #[error("server name \"{name}\" is not a DNS name or IP literal")]
    LeafName { name: String },
}

/// Where a generated CA is kept when `tls.ca_dir` is not set: `$XDG_STATE_HOME/ringnet`
/// when `XDG_STATE_HOME` is an absolute path (the XDG Base Directory spec ignores relative
/// ones), else `$HOME/.local/state/ringnet`; `None` when neither is set.
#[must_use]
pub fn default_ca_dir() -> Option<PathBuf> {
    let absolute = |var| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return Some(state.join("ringnet"));
    }
    absolute("HOME").map(|home| home.join(".local/state/ringnet"))
}

/// The host's CA bundle (PEM) from the first of [`HOST_CA_BUNDLES`] that holds a
/// certificate; `None` when none does.
#[must_use]
pub fn host_ca_bundle() -> Option<Vec<u8>> {
    HOST_CA_BUNDLES.iter().find_map(|path| {
        let pem = std::fs::read(path).ok()?;
        let has_cert = pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----");
        has_cert.then_some(pem)
    })
}

/// `now` as rcgen's time type (seconds; before 1970 or unrepresentable clamps to the epoch).
pub(crate) fn unix_time(now: SystemTime) -> time::OffsetDateTime {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
