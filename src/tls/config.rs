//! `[tls]`: the interception CA's files, the leaf cache's size, which flows are intercepted
//! (ports, bypass names), the worker threads, and how upstream servers are verified.
//!
//! Every key has a default, so an absent `[tls]` is `enabled = false`. [`validate`] runs with
//! [`crate::NetworkConfig::validate`]; each [`TlsConfigError`] is one line naming the key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest `tls.leaf_cache`: a leaf entry is about 1 KiB (certificate, name, bookkeeping),
/// so this bounds the cache at about 1 GiB however the file is mistyped.
pub const MAX_LEAF_CACHE: usize = 1 << 20;

/// Default `tls.leaf_cache`.
pub const DEFAULT_LEAF_CACHE: usize = 1024;

/// Most `tls.workers` (interception threads).
pub const MAX_WORKERS: usize = 64;

/// Where upstream servers' certificates are verified against (`tls.upstream_roots`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// The Mozilla root program, compiled in (`webpki-roots`).
    Webpki,
    /// The host's CA bundle ([`crate::tls::HOST_CA_BUNDLES`], read when the network starts).
    Host,
}

/// `[[tls.upstream]]`: how servers whose name matches `hosts` are verified, instead of the
/// defaults (`upstream_roots` and `upstream_ca_files`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamOverride {
    /// Exact names or `*.suffix` (as `bypass`).
    pub hosts: Vec<String>,
    /// Root sources for these hosts (default none: only `ca_files`).
    #[serde(default)]
    pub roots: Vec<RootSource>,
    /// CA certificate files (PEM) for these hosts.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// What is wrong with a `[tls]` section.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsConfigError {
    /// Only one of `ca_cert` and `ca_key` is given.
    #[error(
        "tls.{given} is set but tls.{missing} is not: give both (your own CA) or neither \
         (a CA generated and kept in tls.ca_dir)"
    )]
    CaPair {
        given: &'static str,
        missing: &'static str,
    },
    /// `ca_dir` is given together with the CA files, which it would not be used with.
    #[error("tls.ca_dir is set together with tls.ca_cert and tls.ca_key: ca_dir is only used for a generated CA, remove one")]
    CaDirWithFiles,
    /// A path is the empty string.
    #[error("tls.{field} is empty: give a path")]
    EmptyPath { field: &'static str },
    /// `leaf_cache` is 0 or above [`MAX_LEAF_CACHE`].
    #[error("tls.leaf_cache = {value} is out of range (1..={max})")]
    LeafCache { value: usize, max: usize },
    /// `workers` is 0 or above [`MAX_WORKERS`].
    #[error("tls.workers = {value} is out of range (1..={max})")]
    Workers { value: usize, max: usize },
    /// An upstream trust setting leaves no root to verify servers against.
    #[error("{what}: no upstream_roots and no ca_files: no server could be verified")]
    NoRoots { what: String },
    /// A `[[tls.upstream]]` entry's `hosts` is empty or holds a bad name.
    #[error("tls.upstream[{index}].hosts: {reason}")]
    UpstreamHosts { index: usize, reason: String },
    /// `intercept_ports` is empty.
    #[error("tls.intercept_ports is empty: set tls.enabled = false to intercept nothing")]
    NoPorts,
    /// `intercept_ports` holds port 0.
    #[error("tls.intercept_ports: port 0 is not a port")]
    PortZero,
    /// `intercept_ports` holds a port twice.
    #[error("tls.intercept_ports: port {port} is listed twice")]
    DuplicatePort { port: u16 },
    /// A `bypass` entry is neither a DNS name nor `*.` followed by one.
    #[error("tls.bypass: {value:?} is not a name or *.suffix: {reason}")]
    Bypass { value: String, reason: &'static str },
}

/// `[tls]`: TLS interception ([`crate::tls`]): the CA, its leaf certificates, which flows are
/// intercepted and how upstream servers are verified.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Build the interception CA when the network is created (default false).
    pub enabled: bool,
    /// The CA certificate (PEM) to sign leaves with; with `ca_key`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, PKCS#8 or SEC1); with `ca_cert`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    /// Where a generated CA is kept (`ca.pem`, `ca.key`) when no files are given. Default:
    /// `$XDG_STATE_HOME/ringnet`, else `$HOME/.local/state/ringnet`
    /// ([`crate::tls::default_ca_dir`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_dir: Option<PathBuf>,
    /// Leaf certificates cached at most (least recently used evicted), `1..=1048576`.
    pub leaf_cache: usize,
    /// Guest TCP destination ports whose TLS is intercepted (default `[443]`); UDP to these
    /// ports (QUIC) is dropped while interception is on, so clients fall back to TCP.
    pub intercept_ports: Vec<u16>,
    /// Server names never intercepted: exact names, or `*.suffix` for every name below
    /// `suffix` (not `suffix` itself). Their flows are spliced untouched: the server sees
    /// the guest's own ClientHello.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<String>,
    /// Threads doing the TLS work of intercepted flows (handshakes, record crypto,
    /// rewriting), off the poll thread (default 1, `1..=64`).
    pub workers: usize,
    /// Roots that upstream servers' certificates are verified against (default
    /// `["webpki", "host"]`).
    pub upstream_roots: Vec<RootSource>,
    /// More CA certificate files (PEM) trusted for every upstream server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_ca_files: Vec<PathBuf>,
    /// Per-host verification overrides (`[[tls.upstream]]`), first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<UpstreamOverride>,
    /// Give the guest the host's CA bundle besides ringnet's CA
    /// ([`crate::Network::host_cas_cert_pem`]); default false.
    pub trust_host_cas: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            ca_cert: None,
            ca_key: None,
            ca_dir: None,
            leaf_cache: DEFAULT_LEAF_CACHE,
            intercept_ports: vec![443],
            bypass: Vec::new(),
            workers: 1,
            upstream_roots: vec![RootSource::Webpki, RootSource::Host],
            upstream_ca_files: Vec::new(),
            upstream: Vec::new(),
            trust_host_cas: false,
        }
    }
}

impl TlsConfig {
    /// True when the section equals the defaults (it is then left out when serialized).
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }

    /// True when `server_name` matches a `bypass` entry: equal to an exact entry, or strictly
    /// below a `*.suffix` entry (ASCII case and one trailing dot ignored).
    #[must_use]
    pub fn bypasses(&self, server_name: &str) -> bool {
        self.bypass
            .iter()
            .any(|entry| name_matches(entry, server_name))
    }
}

/// Checks `[tls]` (whether or not `enabled`, so that turning it on cannot reveal an old
/// mistake).
///
/// # Errors
/// The first [`TlsConfigError`] that applies.
pub fn validate(tls: &TlsConfig) -> Result<(), TlsConfigError> {
    match (&tls.ca_cert, &tls.ca_key) {
        (Some(_), None) => {
            return Err(TlsConfigError::CaPair {
                given: "ca_cert",
                missing: "ca_key",
            })
        }
        (None, Some(_)) => {
            return Err(TlsConfigError::CaPair {
                given: "ca_key",
                missing: "ca_cert",
            })
        }
        (Some(_), Some(_)) if tls.ca_dir.is_some() => return Err(TlsConfigError::CaDirWithFiles),
        _ => {}
    }
    for (field, path) in [
        ("ca_cert", &tls.ca_cert),
        ("ca_key", &tls.ca_key),
        ("ca_dir", &tls.ca_dir),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(TlsConfigError::EmptyPath { field });
        }
    }
    if !(1..=MAX_LEAF_CACHE).contains(&tls.leaf_cache) {
        return Err(TlsConfigError::LeafCache {
            value: tls.leaf_cache,
            max: MAX_LEAF_CACHE,
        });
    }
    if tls.intercept_ports.is_empty() {
        return Err(TlsConfigError::NoPorts);
    }
    for (i, &port) in tls.intercept_ports.iter().enumerate() {
        if port == 0 {
            return Err(TlsConfigError::PortZero);
        }
        if tls.intercept_ports[..i].contains(&port) {
            return Err(TlsConfigError::DuplicatePort { port });
        }
    }
    for entry in &tls.bypass {
        validate_bypass(entry)?;
    }
    if !(1..=MAX_WORKERS).contains(&tls.workers) {
        return Err(TlsConfigError::Workers {
            value: tls.workers,
            max: MAX_WORKERS,
        });
    }
    if tls.upstream_roots.is_empty() && tls.upstream_ca_files.is_empty() {
        return Err(TlsConfigError::NoRoots { what: "tls".into() });
    }
    for (index, o) in tls.upstream.iter().enumerate() {
        if o.hosts.is_empty() {
            return Err(TlsConfigError::UpstreamHosts {
                index,
                reason: "empty: name the hosts this entry is for".into(),
            });
        }
        for h in &o.hosts {
            validate_bypass(h).map_err(|e| TlsConfigError::UpstreamHosts {
                index,
                reason: match e {
                    TlsConfigError::Bypass { value, reason } => format!("{value:?}: {reason}"),
                    other => other.to_string(),
                },
            })?;
        }
        if o.roots.is_empty() && o.ca_files.is_empty() {
            return Err(TlsConfigError::NoRoots {
                what: format!("tls.upstream[{index}]"),
            });
        }
    }
    Ok(())
}

/// True when `name` matches `pattern`: equal to an exact entry, or strictly below a
/// `*.suffix` entry (ASCII case and one trailing dot ignored).
#[must_use]
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let entry = pattern.strip_suffix('.').unwrap_or(pattern);
    match entry.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => name.eq_ignore_ascii_case(entry),
    }
}

fn validate_bypass(entry: &str) -> Result<(), TlsConfigError> {
    let bad = |reason| TlsConfigError::Bypass {
        value: entry.to_owned(),
        reason,
    };
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.contains('*') {
        return Err(bad("'*' is allowed only as a leading \"*.\""));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("an IP address is not a server name"));
    }
    if rustls::pki_types::DnsName::try_from(name).is_err() {
        return Err(bad("not a valid DNS name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TlsConfig)) -> Result<(), TlsConfigError> {
        let mut c = TlsConfig::default();
        f(&mut c);
        validate(&c)
    }

    #[test]
    fn tls_config_defaults_are_valid() {
        assert_eq!(validate(&TlsConfig::default()), Ok(()));
        assert!(TlsConfig::default().is_default());
    }

    #[test]
    fn tls_config_errors_are_one_line_and_name_the_key() {
        type Edit = Box<dyn FnOnce(&mut TlsConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.ca_cert = Some("a.pem".into())),
                "tls.ca_cert is set but tls.ca_key is not",
            ),
            (
                Box::new(|c| c.ca_key = Some("a.key".into())),
                "tls.ca_key is set but tls.ca_cert is not",
            ),
            (
                Box::new(|c| {
                    c.ca_cert = Some("a.pem".into());
                    c.ca_key = Some("a.key".into());
                    c.ca_dir = Some("/x".into());
                }),
                "tls.ca_dir is set together",
            ),
            (
                Box::new(|c| c.ca_dir = Some("".into())),
                "tls.ca_dir is empty",
            ),
            (
                Box::new(|c| c.leaf_cache = 0),
                "tls.leaf_cache = 0 is out of range",
            ),
            (
                Box::new(|c| c.leaf_cache = MAX_LEAF_CACHE + 1),
                "tls.leaf_cache = 1048577",
            ),
            (
                Box::new(|c| c.intercept_ports.clear()),
                "tls.intercept_ports is empty",
            ),
            (Box::new(|c| c.intercept_ports = vec![443, 0]), "port 0"),
            (
                Box::new(|c| c.intercept_ports = vec![443, 8443, 443]),
                "port 443 is listed twice",
            ),
            (
                Box::new(|c| c.bypass = vec!["*.".into()]),
                "the name is empty",
            ),
            (
                Box::new(|c| c.bypass = vec!["a.*.com".into()]),
                "'*' is allowed only",
            ),
            (
                Box::new(|c| c.bypass = vec!["10.0.0.1".into()]),
                "an IP address",
            ),
            (
                Box::new(|c| c.bypass = vec!["bad name".into()]),
                "not a valid DNS name",
            ),
        ];
        for (edit, want) in cases {
            let msg = with(edit).expect_err(want).to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
        assert_eq!(
            with(|c| c.bypass = vec!["example.com".into(), "*.internal.".into()]),
            Ok(())
        );
    }

    #[test]
    fn tls_config_bypass_matches_exact_and_strict_suffix() {
        let c = TlsConfig {
            bypass: vec!["Pinned.example.com".into(), "*.corp.example".into()],
            ..TlsConfig::default()
        };
        assert!(c.bypasses("pinned.example.com"));
        assert!(c.bypasses("pinned.example.com."));
        assert!(!c.bypasses("x.pinned.example.com"));
        assert!(c.bypasses("a.corp.example"));
        assert!(c.bypasses("A.B.CORP.EXAMPLE"));
        assert!(!c.bypasses("corp.example"));
        assert!(!c.bypasses("xcorp.example"));
        assert!(!c.bypasses("example.com"));
    }
}
