//! `ringnet ca --out FILE [--config FILE]`: write the TLS interception CA certificate that a
//! guest must trust.
//!
//! # Theory of operation
//!
//! Reads the configuration (defaults without `--config`), builds the CA exactly as
//! [`ringnet::Network::new`] would with `tls.enabled` ([`ringnet::tls::Ca::from_config`]: the
//! operator's `ca_cert`/`ca_key`, else `ca_dir`'s stored CA, generated and stored there on
//! first use) and writes its certificate as PEM to FILE (`-`: stdout). This works whether or
//! not `tls.enabled` is set, so an image can be prepared before interception is turned on:
//! a later start finds the same CA in `ca_dir`. The private key is never written here.
//!
//! Errors are one line (exit status 2 from `main`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use ringnet::config::NetworkConfig;
use ringnet::tls::Ca;

/// `ringnet ca` arguments.
#[derive(Args, Debug)]
pub struct CaArgs {
    /// Write the CA certificate (PEM) here; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// TOML configuration file (its [tls] section picks the CA).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `ringnet ca`.
///
/// # Errors
/// The configuration does not load, the CA cannot be loaded or generated, or FILE cannot be
/// written; the message is one line.
pub fn run(args: &CaArgs) -> Result<ExitCode, String> {
    let config = match &args.config {
        Some(path) => NetworkConfig::load(path).map_err(|e| e.to_string())?,
        None => NetworkConfig::default(),
    };
    let ca = Ca::from_config(&config.tls).map_err(|e| format!("tls: {e}"))?;
    let pem = ca.cert_pem().as_bytes();
    if args.out.as_os_str() == "-" {
        std::io::stdout()
            .write_all(pem)
            .map_err(|e| format!("writing the CA certificate to stdout: {e}"))?;
    } else {
        std::fs::write(&args.out, pem).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    }
    tracing::info!(subject = ca.subject(), source = ?ca.source(), "CA certificate written");
    Ok(ExitCode::SUCCESS)
}

/// Environment variables `ringnet run` points at [`GuestCaBundle`]: OpenSSL and most
/// runtimes (`SSL_CERT_FILE`), Nix-built programs (`NIX_SSL_CERT_FILE`), the curl tool
/// (`CURL_CA_BUNDLE`), Python requests, httplib2 and pip (`REQUESTS_CA_BUNDLE`,
/// `HTTPLIB2_CA_CERTS`, `PIP_CERT`), Node.js (`NODE_EXTRA_CA_CERTS`, added to its own roots),
/// git (`GIT_SSL_CAINFO`), the AWS SDKs (`AWS_CA_BUNDLE`) and gRPC
/// (`GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`). Set whatever the parent had, so an inherited value
/// naming the host bundle cannot hide ringnet's CA.
pub const CA_ENV_VARS: [&str; 10] = [
    "SSL_CERT_FILE",
    "NIX_SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "HTTPLIB2_CA_CERTS",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
];

/// The CA bundle `ringnet run` gives its command with `tls.enabled`: ringnet's CA, then the
/// host's CAs when `tls.trust_host_cas` is set. A temporary file (mode 0644: certificates
/// are public) removed when this drops, after the command ended.
pub struct GuestCaBundle {
    pub path: PathBuf,
}

impl GuestCaBundle {
    /// Writes the bundle for `net`; `Ok(None)` without TLS interception.
    ///
    /// # Errors
    /// The file cannot be written (one line).
    pub fn write(net: &ringnet::Network) -> Result<Option<GuestCaBundle>, String> {
        let Some(mut pem) = net.ca_cert_pem() else {
            return Ok(None);
        };
        if let Some(host) = net.host_cas_cert_pem() {
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            pem.extend_from_slice(&host);
        }
        let path = std::env::temp_dir().join(format!(
            "ringnet-{}-{}-ca.pem",
            std::process::id(),
            net.config().slot
        ));
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&pem))
            .map_err(|e| format!("writing the CA bundle {}: {e}", path.display()))?;
        Ok(Some(GuestCaBundle { path }))
    }

    /// `(variable, path)` for every one of [`CA_ENV_VARS`].
    pub fn env(&self) -> impl Iterator<Item = (&'static str, &std::path::Path)> + '_ {
        CA_ENV_VARS.iter().map(move |v| (*v, self.path.as_path()))
    }
}

impl Drop for GuestCaBundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
