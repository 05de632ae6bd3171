//! Secret injection: the guest holds placeholders, the real values go only to their hosts.
//!
//! # Theory of operation
//!
//! The operator configures secrets (`[[secrets]]`, [`SecretSpec`]): an environment variable
//! name, a real value (inline, from a host environment variable or a file), the hosts it
//! belongs to and where in a request it may be injected. The guest is given only a
//! *placeholder* (`$RINGNET_SECRET_<ENV_VAR>` by default) in that variable
//! ([`crate::SlotConfig::guest_env_vars`]). ringnet terminates the guest's TLS
//! ([`crate::tls::session`]), and every decrypted request goes through a rewriter, which
//! swaps placeholders for values on the way out and real values back to placeholders on the
//! way in: an [`AnyRewriter`] holding an [`http1::Rewriter`], or an [`http2::Rewriter`] when
//! ALPN chose `h2`.
//!
//! Pure code: bytes in, bytes and decisions out. No syscall except reading a `value_file`
//! or a host environment variable when the configuration is derived ([`Secrets::load`]).
//!
//! ## Data flow
//!
//! ```text
//! guest ─TLS→ [TLS layer] ─plaintext→ Rewriter::from_guest ─placeholders → values→ [TLS] → host
//! guest ←TLS─ [TLS layer] ←plaintext─ Rewriter::from_host  ←values → placeholders─ [TLS] ← host
//! ```
//!
//! ## Which host a request goes to: the agreement rule
//!
//! A value is substituted into a request only when three names agree ([`FlowContext`]):
//! the TLS server name the guest sent (SNI), the request's `Host` header (port stripped,
//! case-insensitive, trailing dot ignored), and the DNS pins of the destination address (the
//! names this guest resolved to the address the flow was dialed to, through ringnet's DNS;
//! [`crate::policy::Pins`]). `Host` must equal the SNI, and the SNI must be among the pinned
//! names; a flow without SNI, or dialed to an address the guest never resolved through
//! ringnet (no pin), never gets a value. The agreed name must then match one of the secret's
//! [`HostPattern`]s. So a guest cannot send `Host: api.github.com` over a connection to its
//! own server, nor name `api.github.com` in SNI while dialing another address.
//!
//! ## Violations
//!
//! A placeholder found where its secret may not go — a host that fails the agreement rule
//! or is not among the secret's hosts, a place not in its `inject_in`, or a place that is
//! never injected (the request path, a header name, chunk extensions, trailers, an upgraded
//! or tunnelled stream) — is a [`Violation`]: the rewriter stops the flow
//! ([`http1::RewriteError::Violation`]) before the bytes holding the placeholder are output.
//! What else happens is the secret's [`OnViolation`] (log, terminate), which the caller
//! carries out (`crate::observe`, [`crate::observe::TermEvent::Secret`]).
//!
//! Only the literal placeholder is recognized: a percent-encoded, base64-encoded (outside
//! `Authorization: Basic`) or otherwise transformed placeholder is neither replaced nor a
//! violation. That leaks nothing (a placeholder is not a secret); it only means the request
//! goes out without the value.
//!
//! ## Limits
//!
//! [`MAX_SECRETS`] secrets, placeholders of [`MIN_PLACEHOLDER_LEN`]..=[`MAX_PLACEHOLDER_LEN`]
//! bytes, values of at most [`MAX_VALUE_LEN`] bytes; the rewriters' own bounds are in
//! [`http1`] and [`http2`].
//!
//! ## HTTP/2
//!
//! [`http2::Rewriter`] sits beside [`http1`], chosen by ALPN ([`AnyRewriter::for_alpn`]),
//! with the same interface, errors ([`http1::RewriteError`]) and decisions: [`Secrets`] and
//! [`FlowContext`] (with `:authority` in the role of `Host`), [`scan`] for DATA frames (one
//! carry per stream). In place of `httparse` it reads frames (RFC 9113) and decodes every
//! header block with HPACK (RFC 7541); a block that needs a change is re-encoded without the
//! dynamic table, DATA is re-framed, and the flow-control windows the peers see are kept in
//! step through the WINDOW_UPDATE frames (see its module docs for the residual risk).

pub mod base64;
pub mod config;
pub mod http1;
pub mod http2;
mod rewriter;
pub mod scan;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use rewriter::AnyRewriter;

pub use config::{
    SecretSpec, SecretValue, SecretsError, DEFAULT_PLACEHOLDER_PREFIX, MAX_PLACEHOLDER_LEN,
    MAX_SECRETS, MAX_VALUE_LEN, MIN_PLACEHOLDER_LEN,
};

/// Where in a request a placeholder may be replaced (`inject_in`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Any header value (taken literally; see `basic_auth` for encoded credentials).
    Headers,
    /// Inside the base64 user:password of `Authorization: Basic`.
    BasicAuth,
    /// The query string of the request target (after `?`).
    Query,
    /// The request body (`Content-Length` or chunked).
    Body,
}

impl Place {
    pub const ALL: [Place; 4] = [Place::Headers, Place::BasicAuth, Place::Query, Place::Body];

    fn bit(self) -> u8 {
        match self {
            Place::Headers => 1,
            Place::BasicAuth => 2,
            Place::Query => 4,
            Place::Body => 8,
        }
    }

    /// The name in the configuration file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Place::Headers => "headers",
            Place::BasicAuth => "basic_auth",
            Place::Query => "query",
            Place::Body => "body",
        }
    }
}

/// What a violation does beyond blocking the request (`on_violation`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnViolation {
    /// The flow is stopped; nothing else.
    Block,
    /// The flow is stopped, and the violation logged and reported as an event.
    #[default]
    BlockAndLog,
    /// The flow is stopped and the network terminated
    /// ([`crate::observe::TermEvent::Secret`]).
    BlockAndTerminate,
}

/// A `hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*` or `any`: every host (the agreement rule still applies).
    Any,
    /// Exactly this name (lowercase, no trailing dot).
    Exact(String),
    /// `*.suffix`: names ending in `.suffix`, not `suffix` itself (stored without `*.`).
    Subdomains(String),
}

impl HostPattern {
    /// Parses a `hosts` entry; `None` when it is not a name, `*.name`, `*` or `any`.
    #[must_use]
    pub fn parse(text: &str) -> Option<HostPattern> {
        let t = text.trim();
        if t == "*" || t.eq_ignore_ascii_case("any") {
            return Some(HostPattern::Any);
        }
        let (sub, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let name = normalize_name(name);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        ok.then_some(if sub {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// True when `name` (normalized: lowercase, no trailing dot) matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(e) => name == e,
            HostPattern::Subdomains(s) => {
                name.len() > s.len()
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

/// Lowercase, without one trailing dot.
#[must_use]
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A `Host` header value (or an absolute-form target's authority) as a name: the port
/// stripped, lowercase, without a trailing dot. An IPv6 literal keeps its brackets (it can
/// never equal an SNI, which is always a name).
#[must_use]
pub fn host_header_name(value: &str) -> String {
    let v = value.trim();
    let host = if v.starts_with('[') {
        v.find(']').map_or(v, |end| &v[..=end])
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    normalize_name(host)
}

/// One secret, loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub env_var: String,
    pub placeholder: String,
    pub value: SecretValue,
    pub hosts: Vec<HostPattern>,
    /// Bit set of [`Place`]s.
    inject_in: u8,
    pub on_violation: OnViolation,
}

impl Secret {
    /// True when the value may go to `host` (normalized).
    #[must_use]
    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| p.matches(host))
    }

    /// True when the value may be injected at `place`.
    #[must_use]
    pub fn injects_in(&self, place: Place) -> bool {
        self.inject_in & place.bit() != 0
    }
}

/// Every configured secret of a slot, in configuration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    list: Vec<Secret>,
}

impl Secrets {
    /// Validates `specs` ([`config::validate`]) and loads every value (reading files and
    /// host environment variables).
    ///
    /// # Errors
    /// The first [`SecretsError`].
    pub fn load(specs: &[SecretSpec]) -> Result<Secrets, SecretsError> {
        config::validate(specs)?;
        let placeholders = config::placeholders(specs);
        let list = specs
            .iter()
            .zip(&placeholders)
            .map(|(spec, (_, placeholder))| {
                Ok(Secret {
                    env_var: spec.env_var.clone(),
                    placeholder: placeholder.clone(),
                    value: spec.load(&placeholders)?,
                    hosts: spec.host_patterns()?,
                    inject_in: spec.inject_in.iter().fold(0, |acc, p| acc | p.bit()),
                    on_violation: spec.on_violation,
                })
            })
            .collect::<Result<Vec<_>, SecretsError>>()?;
        Ok(Secrets { list })
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Every secret, in configuration order (the index is the one the scanner reports).
    #[must_use]
    pub fn list(&self) -> &[Secret] {
        &self.list
    }

    /// The secrets whose value may go to `host` (normalized).
    pub fn for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Secret> + 'a {
        self.list.iter().filter(move |s| s.allows_host(host))
    }

    /// `(env_var, placeholder)` of every secret, in order (the guest's environment).
    #[must_use]
    pub fn guest_env_vars(&self) -> Vec<(String, String)> {
        self.list
            .iter()
            .map(|s| (s.env_var.clone(), s.placeholder.clone()))
            .collect()
    }
}

/// What the TLS layer knows about a flow, for the agreement rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowContext {
    /// The server name of the guest's ClientHello; `None` without SNI.
    pub sni: Option<String>,
    /// The names this guest resolved (through ringnet's DNS, still pinned) to the address
    /// the flow was dialed to.
    pub pinned: Vec<String>,
}

impl FlowContext {
    /// The flow's agreed name when the SNI is among the pinned names: what every request's
    /// `Host` must equal. Independent of any request.
    ///
    /// # Errors
    /// [`ViolationReason::NoSni`] or [`ViolationReason::NotPinned`].
    pub fn agreed_name(&self) -> Result<String, ViolationReason> {
        let sni = normalize_name(self.sni.as_deref().ok_or(ViolationReason::NoSni)?);
        if sni.is_empty() {
            return Err(ViolationReason::NoSni);
        }
        if !self.pinned.iter().any(|p| normalize_name(p) == sni) {
            return Err(ViolationReason::NotPinned);
        }
        Ok(sni)
    }

    /// The agreement rule for one request whose `Host` is `host` (a header value, port
    /// allowed): the agreed, normalized name.
    ///
    /// # Errors
    /// The [`ViolationReason`] naming the disagreement.
    pub fn agree(&self, host: &str) -> Result<String, ViolationReason> {
        let agreed = self.agreed_name()?;
        if host_header_name(host) != agreed {
            return Err(ViolationReason::HostMismatch);
        }
        Ok(agreed)
    }
}

/// Why a placeholder may not be replaced where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationReason {
    /// The flow has no TLS server name.
    NoSni,
    /// The server name is not among the names pinned to the flow's destination.
    NotPinned,
    /// The request has no `Host` header, several, or an absolute-form target naming
    /// another host.
    NoHost,
    /// `Host` differs from the server name.
    HostMismatch,
    /// The agreed host is not among the secret's hosts.
    HostNotAllowed,
    /// The place is not in the secret's `inject_in`.
    PlaceNotAllowed(Place),
    /// The placeholder sits where nothing is ever injected (named).
    NeverInjected(&'static str),
}

impl fmt::Display for ViolationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViolationReason::NoSni => f.write_str("the TLS connection has no server name"),
            ViolationReason::NotPinned => f.write_str(
                "the server name was not resolved to the destination through ringnet's DNS",
            ),
            ViolationReason::NoHost => {
                f.write_str("the request has no single Host header agreeing with its target")
            }
            ViolationReason::HostMismatch => f.write_str("Host differs from the TLS server name"),
            ViolationReason::HostNotAllowed => {
                f.write_str("the host is not among the secret's hosts")
            }
            ViolationReason::PlaceNotAllowed(p) => {
                write!(f, "{} is not in the secret's inject_in", p.name())
            }
            ViolationReason::NeverInjected(what) => write!(f, "placeholder in the {what}"),
        }
    }
}

/// A placeholder found where its secret may not go. Carries no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The secret's `env_var`.
    pub env_var: String,
    /// The request's host as the guest named it (`Host`, else the SNI, else empty).
    pub host: String,
    pub reason: ViolationReason,
    /// What the secret's configuration says to do about it.
    pub on_violation: OnViolation,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "secret {} towards {:?} blocked: {}",
            self.env_var, self.host, self.reason
        )
    }
}

/// What a rewriter did, for the caller's counters (`crate::metrics::Stats`
/// `secret_substitutions`, `secret_violations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecretStats {
    /// Placeholders replaced by values in requests.
    pub substitutions: u64,
    /// Values replaced by placeholders in responses.
    pub scrubbed: u64,
    /// Violations (at most one per rewriter: it stops there).
    pub violations: u64,
    /// Requests (or HTTP/2 header blocks) larger than [`http1::HEAD_MAX`].
    pub heads_too_large: u64,
}

/// The shared set a rewriter holds.
pub type SharedSecrets = Arc<Secrets>;
