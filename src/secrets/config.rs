//! `[[secrets]]`: what the operator writes, its validation, and loading the real values.
//!
//! A [`SecretSpec`] is one `[[secrets]]` table as deserialized. [`validate`] checks the list
//! without touching the host (names, placeholders, hosts, sources); [`SecretSpec::load`]
//! then reads each real value (inline, a host environment variable or a file) into a
//! [`SecretValue`] and checks what needs the value (empty, a placeholder inside a value).
//! They run from [`crate::NetworkConfig::validate`] resp. [`crate::NetworkConfig::derive`]
//! (through [`super::Secrets::load`]).
//!
//! Secrecy: a value lives only in [`SecretValue`]s, which print as `<redacted>`, are never
//! serialized (an inline `value` is skipped when a configuration is written back out) and
//! are zeroed when dropped. Copies made outside ringnet's control (the process environment,
//! the kernel's page cache for a file, std's temporary `OsString` of an environment lookup)
//! are out of reach. No [`SecretsError`] carries a value: errors name the `env_var` and the
//! source.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroize;

use super::{HostPattern, OnViolation, Place};

/// Prefix of a default placeholder: the placeholder of `env_var = "X"` is
/// `$RINGNET_SECRET_X`.
pub const DEFAULT_PLACEHOLDER_PREFIX: &str = "$RINGNET_SECRET_";

/// Shortest placeholder in bytes: a shorter one would turn up by chance in ordinary traffic.
pub const MIN_PLACEHOLDER_LEN: usize = 8;

/// Longest placeholder in bytes (bounds the scanner's carry on requests).
pub const MAX_PLACEHOLDER_LEN: usize = 256;

/// Longest secret value in bytes (bounds the scanner's carry on responses).
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// Secrets per configuration, at most.
pub const MAX_SECRETS: usize = 64;

/// What is wrong with a `[[secrets]]` entry, or why its value could not be loaded. Every
/// message names the secret by its `env_var`; none contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// `env_var` is not an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
    #[error("secret {env_var:?}: env_var is not a valid environment variable name")]
    EnvVar { env_var: String },
    /// Two entries have the same `env_var`.
    #[error("secret {env_var}: env_var is given twice")]
    DuplicateEnvVar { env_var: String },
    /// Not exactly one of `value`, `value_from_env`, `value_file`.
    #[error("secret {env_var}: give exactly one of value, value_from_env, value_file ({found})")]
    Source { env_var: String, found: String },
    /// The placeholder is too short, too long, or not printable ASCII.
    #[error("secret {env_var}: placeholder {placeholder:?} {reason}")]
    Placeholder {
        env_var: String,
        placeholder: String,
        reason: &'static str,
    },
    /// One placeholder contains another: a scan could not tell them apart.
    #[error("secret {env_var}: placeholder {placeholder:?} contains the placeholder of secret {other} ({inner:?}); give one of them another placeholder")]
    PlaceholderOverlap {
        env_var: String,
        placeholder: String,
        other: String,
        inner: String,
    },
    /// `hosts` is empty or an entry is not a host pattern.
    #[error("secret {env_var}: hosts {reason}")]
    Hosts { env_var: String, reason: String },
    /// `inject_in` is empty.
    #[error(
        "secret {env_var}: inject_in is empty (expected some of headers, basic_auth, query, body)"
    )]
    InjectIn { env_var: String },
    /// More than [`MAX_SECRETS`] entries.
    #[error("{count} secrets configured: at most {max}")]
    TooMany { count: usize, max: usize },
    /// The value could not be read from its source.
    #[error("secret {env_var}: {source_desc}: {reason}")]
    Load {
        env_var: String,
        /// `value_file /path` or `value_from_env NAME`.
        source_desc: String,
        reason: String,
    },
    /// The loaded value is unusable (empty, too long, or containing a placeholder).
    #[error("secret {env_var}: the value ({source_desc}) {reason}")]
    Value {
        env_var: String,
        source_desc: String,
        reason: String,
    },
}

/// A real secret value: redacted when printed, never serialized, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps `bytes` (taking ownership, so no copy is left behind).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    /// The value's bytes, for the rewriter.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        // Zeroes the whole capacity, not just the length (zeroize's `Vec` impl).
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretValue(s.into_bytes()))
    }
}

/// One `[[secrets]]` table.
///
/// ```toml
/// [[secrets]]
/// env_var = "GITHUB_TOKEN"              # the guest gets GITHUB_TOKEN=$RINGNET_SECRET_GITHUB_TOKEN
/// value_from_env = "HOST_GITHUB_TOKEN"  # or value = "…", or value_file = "/run/secrets/gh"
/// hosts = ["api.github.com", "*.githubusercontent.com"]
/// inject_in = ["headers", "basic_auth"] # default ["headers"]
/// on_violation = "block-and-terminate"  # default "block-and-log"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The guest environment variable that carries the placeholder.
    pub env_var: String,
    /// The value itself (never written back out when the configuration is serialized).
    #[serde(default, skip_serializing)]
    pub value: Option<SecretValue>,
    /// Name of a host environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from_env: Option<String>,
    /// A file holding the value; one trailing newline (`\n` or `\r\n`) is trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<PathBuf>,
    /// What the guest sees instead of the value; default `$RINGNET_SECRET_<env_var>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Where the value may go: `api.example.com`, `*.example.com` (subdomains only), or
    /// `*` / `any`.
    pub hosts: Vec<String>,
    /// Where in a request the placeholder is replaced.
    #[serde(default = "default_inject_in")]
    pub inject_in: Vec<Place>,
    /// What a violation does beyond blocking the request.
    #[serde(default)]
    pub on_violation: OnViolation,
}

fn default_inject_in() -> Vec<Place> {
    vec![Place::Headers]
}

impl SecretSpec {
    /// The placeholder the guest sees.
    #[must_use]
    pub fn placeholder(&self) -> String {
        self.placeholder
            .clone()
            .unwrap_or_else(|| format!("{DEFAULT_PLACEHOLDER_PREFIX}{}", self.env_var))
    }

    /// The compiled host patterns.
    ///
    /// # Errors
    /// [`SecretsError::Hosts`] when the list is empty or an entry is not a pattern.
    pub fn host_patterns(&self) -> Result<Vec<HostPattern>, SecretsError> {
        if self.hosts.is_empty() {
            return Err(SecretsError::Hosts {
                env_var: self.env_var.clone(),
                reason: "is empty: name the hosts this secret may be sent to".to_owned(),
            });
        }
        self.hosts
            .iter()
            .map(|h| {
                HostPattern::parse(h).ok_or_else(|| SecretsError::Hosts {
                    env_var: self.env_var.clone(),
                    reason: format!("entry {h:?} is not a host name, *.suffix or * (or any)"),
                })
            })
            .collect()
    }

    fn source_desc(&self) -> String {
        match (&self.value_from_env, &self.value_file) {
            (Some(var), _) => format!("value_from_env {var}"),
            (None, Some(path)) => format!("value_file {}", path.display()),
            (None, None) => "value".to_owned(),
        }
    }

    /// Reads the value from its source. Makes `read(2)` calls for `value_file`.
    ///
    /// # Errors
    /// [`SecretsError::Load`] when the source cannot be read, [`SecretsError::Value`] when
    /// the value is empty, too long, or contains a placeholder of `placeholders`.
    pub fn load(&self, placeholders: &[(String, String)]) -> Result<SecretValue, SecretsError> {
        let load_err = |reason: String| SecretsError::Load {
            env_var: self.env_var.clone(),
            source_desc: self.source_desc(),
            reason,
        };
        let value = match (&self.value, &self.value_from_env, &self.value_file) {
            (Some(v), None, None) => v.clone(),
            (None, Some(var), None) => {
                let os = std::env::var_os(var)
                    .ok_or_else(|| load_err("the host environment variable is not set".into()))?;
                SecretValue::new(std::os::unix::ffi::OsStringExt::into_vec(os))
            }
            (None, None, Some(path)) => {
                let mut bytes = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                SecretValue::new(bytes)
            }
            _ => return Err(self.source_error()),
        };
        let value_err = |reason: String| SecretsError::Value {
            env_var: self.env_var.clone(),
            source_desc: self.source_desc(),
            reason,
        };
        if value.is_empty() {
            return Err(value_err("is empty".to_owned()));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(value_err(format!(
                "is {} bytes long: at most {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        for (env_var, placeholder) in placeholders {
            if contains(value.expose(), placeholder.as_bytes()) {
                return Err(value_err(format!(
                    "contains the placeholder of secret {env_var} ({placeholder:?})"
                )));
            }
        }
        Ok(value)
    }

    fn source_error(&self) -> SecretsError {
        let found: Vec<&str> = [
            ("value", self.value.is_some()),
            ("value_from_env", self.value_from_env.is_some()),
            ("value_file", self.value_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        SecretsError::Source {
            env_var: self.env_var.clone(),
            found: if found.is_empty() {
                "none given".to_owned()
            } else {
                format!("got {}", found.join(", "))
            },
        }
    }
}

/// True when `needle` occurs in `hay`.
pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn valid_env_var(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks the list without reading any value: env_var names and duplicates, exactly one
/// source, placeholders (length, printable ASCII, none containing another), hosts,
/// `inject_in`, and an inline value (empty, containing a placeholder).
///
/// # Errors
/// The first [`SecretsError`] that applies, in list order.
pub fn validate(specs: &[SecretSpec]) -> Result<(), SecretsError> {
    if specs.len() > MAX_SECRETS {
        return Err(SecretsError::TooMany {
            count: specs.len(),
            max: MAX_SECRETS,
        });
    }
    let placeholders: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.env_var.clone(), s.placeholder()))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        if !valid_env_var(&spec.env_var) {
            return Err(SecretsError::EnvVar {
                env_var: spec.env_var.clone(),
            });
        }
        if specs[..i].iter().any(|s| s.env_var == spec.env_var) {
            return Err(SecretsError::DuplicateEnvVar {
                env_var: spec.env_var.clone(),
            });
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        let env_var = &spec.env_var;
        let sources = [
            spec.value.is_some(),
            spec.value_from_env.is_some(),
            spec.value_file.is_some(),
        ];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(spec.source_error());
        }
        let placeholder = &placeholders[i].1;
        let bad = |reason| SecretsError::Placeholder {
            env_var: env_var.clone(),
            placeholder: placeholder.clone(),
            reason,
        };
        if placeholder.len() < MIN_PLACEHOLDER_LEN {
            return Err(bad("is shorter than 8 bytes"));
        }
        if placeholder.len() > MAX_PLACEHOLDER_LEN {
            return Err(bad("is longer than 256 bytes"));
        }
        if !placeholder.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "must be printable ASCII without spaces (it travels in headers)",
            ));
        }
        for (j, (other, inner)) in placeholders.iter().enumerate() {
            if j != i && contains(placeholder.as_bytes(), inner.as_bytes()) {
                return Err(SecretsError::PlaceholderOverlap {
                    env_var: env_var.clone(),
                    placeholder: placeholder.clone(),
                    other: other.clone(),
                    inner: inner.clone(),
                });
            }
        }
        spec.host_patterns()?;
        if spec.inject_in.is_empty() {
            return Err(SecretsError::InjectIn {
                env_var: env_var.clone(),
            });
        }
        if spec.value.is_some() {
            spec.load(&placeholders)?;
        }
    }
    Ok(())
}

/// `(env_var, placeholder)` of every entry, in order.
#[must_use]
pub fn placeholders(specs: &[SecretSpec]) -> Vec<(String, String)> {
    specs
        .iter()
        .map(|s| (s.env_var.clone(), s.placeholder()))
        .collect()
}
