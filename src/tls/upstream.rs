//! How intercepted flows' upstream servers are verified: rustls client configurations built
//! once when the network starts.
//!
//! # Theory of operation
//!
//! ringnet opens its own TLS connection to the server the guest dialed and verifies it like
//! a browser would: the certificate chain must lead to a trusted root and name the server
//! the guest asked for (its SNI). A server that fails verification never gets the guest's
//! bytes, and the guest's handshake fails (no silent downgrade, no unverified relay).
//!
//! Trust comes from `tls.upstream_roots` (the compiled-in Mozilla roots, `webpki`, and the
//! host's CA bundle, `host`) plus `tls.upstream_ca_files`; a `[[tls.upstream]]` entry whose
//! `hosts` match the server name replaces them for that server (first match wins). Every
//! set is read and parsed here, once: a missing or empty file is an error at start, not a
//! surprise at the first connection.
//!
//! ## Syscalls
//!
//! Reading the CA files and the host bundle, in [`Upstream::from_config`] only.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::config::{name_matches, RootSource, TlsConfig};
use super::TlsError;

/// The client configurations of one network.
#[derive(Debug)]
pub struct Upstream {
    default: Arc<ClientConfig>,
    /// `(hosts, config)` of each `[[tls.upstream]]` entry, in order.
    overrides: Vec<(Vec<String>, Arc<ClientConfig>)>,
}

impl Upstream {
    /// Builds every configuration `tls` asks for.
    ///
    /// # Errors
    /// [`TlsError::Read`] for an unreadable CA file, [`TlsError::NotCa`] for a file with no
    /// certificate or with one rustls refuses as a root, [`TlsError::Roots`] when a set ends
    /// up empty (a host bundle that is missing, say).
    pub fn from_config(tls: &TlsConfig) -> Result<Upstream, TlsError> {
        let default = client_config(&tls.upstream_roots, &tls.upstream_ca_files, "tls")?;
        let overrides = tls
            .upstream
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let what = format!("tls.upstream[{i}]");
                Ok((
                    o.hosts.clone(),
                    client_config(&o.roots, &o.ca_files, &what)?,
                ))
            })
            .collect::<Result<_, TlsError>>()?;
        Ok(Upstream { default, overrides })
    }

    /// The configuration to verify `server_name` with.
    #[must_use]
    pub fn config_for(&self, server_name: &str) -> &Arc<ClientConfig> {
        self.overrides
            .iter()
            .find(|(hosts, _)| hosts.iter().any(|h| name_matches(h, server_name)))
            .map_or(&self.default, |(_, c)| c)
    }
}

/// The provider every TLS connection of ringnet uses (ring).
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(
    roots: &[RootSource],
    files: &[std::path::PathBuf],
    what: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    for source in roots {
        match source {
            RootSource::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            RootSource::Host => {
                if let Some(pem) = super::host_ca_bundle() {
                    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                    let (added, _ignored) = store.add_parsable_certificates(certs);
                    tracing::debug!(added, "{what}: host CA bundle");
                } else {
                    tracing::warn!(
                        "{what}: upstream_roots has \"host\" but no host CA bundle was found ({})",
                        super::HOST_CA_BUNDLES.join(", ")
                    );
                }
            }
        }
    }
    for file in files {
        add_file(&mut store, file)?;
    }
    if store.is_empty() {
        return Err(TlsError::Roots { what: what.into() });
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::SigningKey(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_file(store: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::NotCa {
            path: path.to_owned(),
            reason: format!("not PEM: {e}"),
        })?;
        store.add(cert).map_err(|e| TlsError::NotCa {
            path: path.to_owned(),
            reason: format!("refused as a root: {e}"),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::NotCa {
            path: path.to_owned(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::config::UpstreamOverride;

    #[test]
    fn upstream_defaults_build_and_overrides_match_first() {
        let dir = std::env::temp_dir().join(format!("ringnet-upstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["test-ca".into()]).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let tls = TlsConfig {
            upstream: vec![UpstreamOverride {
                hosts: vec!["*.corp.test".into()],
                roots: Vec::new(),
                ca_files: vec![file.clone()],
            }],
            ..TlsConfig::default()
        };
        let up = Upstream::from_config(&tls).unwrap();
        assert!(Arc::ptr_eq(
            up.config_for("a.corp.test"),
            &up.overrides[0].1
        ));
        assert!(Arc::ptr_eq(up.config_for("corp.test"), &up.default));
        assert!(Arc::ptr_eq(up.config_for("example.com"), &up.default));

        let missing = TlsConfig {
            upstream_roots: Vec::new(),
            upstream_ca_files: vec![dir.join("nope.pem")],
            ..TlsConfig::default()
        };
        let e = Upstream::from_config(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        std::fs::write(dir.join("empty.pem"), "nothing").unwrap();
        let empty = TlsConfig {
            upstream_roots: Vec::new(),
            upstream_ca_files: vec![dir.join("empty.pem")],
            ..TlsConfig::default()
        };
        let e = Upstream::from_config(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
