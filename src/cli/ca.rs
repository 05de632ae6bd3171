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
