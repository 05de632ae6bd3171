//! The command line's observation services: the control socket ([`control`]), the
//! Prometheus endpoint ([`http`]), the periodic rate line ([`interval`]), the packet
//! capture (the library's [`ringnet::pcap`]), the `ringnet ctl` client ([`ctl`]), and the
//! `ringnet qemu` subcommand ([`qemu`]); `ringnet ca` ([`ca`]) writes the TLS interception
//! CA certificate.
//!
//! # Theory of operation
//!
//! These modules do I/O by nature (a unix socket, a TCP listener, stderr, a file) and run on
//! threads of their own; none of them touches the poll thread except through the
//! library's handles ([`ringnet::observe::Observer`]): relaxed atomic loads for counters,
//! a mutex-guarded summary for latencies, a mailbox plus one eventfd write for a flow
//! snapshot, a lock-free queue for denial events. [`Observers::start`] starts what the
//! flags ask for (before the network starts, so a capture sees the first frame);
//! dropping [`Observers`] stops every thread (each checks a shared stop flag at least every
//! [`TICK`]), finishes the capture (after the network stopped: every frame is written) and
//! removes the control socket.
//!
//! Limits: [`control::MAX_CLIENTS`] control connections at once (more are answered with an
//! error and closed), [`control::EVENT_BACKLOG`] event lines queued per streaming client
//! (more are dropped for that client and counted in its stream), one scrape at a time on
//! the metrics endpoint with a 2 s read deadline per request.

pub mod ca;
pub mod control;
pub mod ctl;
pub mod http;
pub mod interval;
pub mod qemu;
pub mod rootless;
#[cfg(feature = "vhost-user")]
pub mod vhost;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;

use ringnet::Network;

/// How often the service threads look at the stop flag.
pub const TICK: Duration = Duration::from_millis(100);

/// Errors starting a service: one line each.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--control {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--control {0}: exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("--metrics-addr {addr}: {why}")]
    MetricsAddr { addr: String, why: String },
    #[error("--pcap: {0}")]
    Pcap(#[from] ringnet::pcap::PcapError),
    #[error("spawning a thread failed: {0}")]
    Spawn(std::io::Error),
}

/// The observation flags shared by `run` and `attach`.
#[derive(Args, Debug, Clone, Default)]
pub struct ObserveOpts {
    /// Serve a control socket at PATH (mode 0600, JSON lines: stats, flows, events); see
    /// `ringnet ctl`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve the counters and histograms as Prometheus text on http://ADDR:PORT/metrics
    /// (a bare PORT binds 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// Print one line of rates (Gbit/s each way, flows, drops) on stderr every N seconds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_interval: Option<u64>,
    /// Capture every frame at the guest boundary, both directions, into FILE (pcap).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Stop capturing once the pcap file would grow past N bytes.
    #[arg(long, value_name = "N", default_value_t = 256 << 20)]
    pub pcap_max_bytes: u64,
}

/// The running services; dropping it stops them.
#[derive(Default)]
pub struct Observers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pcap: Option<(ringnet::pcap::Writer, PathBuf)>,
    control: Option<PathBuf>,
}

impl Observers {
    /// Start what `opts` asks for on `net` (call before the network starts).
    pub fn start(net: &Network, opts: &ObserveOpts) -> Result<Observers, CliError> {
        let mut o = Observers::default();
        let obs = net.observer();
        let slot = net.config().slot;
        let sb = net.config().sandbox.clone();
        if let Some(path) = &opts.pcap {
            let w = net.capture(path, opts.pcap_max_bytes)?;
            o.pcap = Some((w, path.clone()));
        }
        if let Some(path) = &opts.control {
            let t = control::spawn(path, obs.clone(), o.stop.clone(), &sb)?;
            o.control = Some(path.clone());
            o.threads.extend(t);
        }
        if let Some(addr) = &opts.metrics_addr {
            let t = http::spawn(addr, obs.clone(), u32::from(slot), o.stop.clone(), &sb)?;
            o.threads.push(t);
        }
        if let Some(secs) = opts.stats_interval {
            let t = interval::spawn(Duration::from_secs(secs), obs, o.stop.clone(), &sb)?;
            o.threads.push(t);
        }
        Ok(o)
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((mut w, path)) = self.pcap.take() {
            w.finish();
            let c = w.capture();
            tracing::info!(
                "pcap: {} frames written to {} ({} left out: the writer fell behind)",
                c.written(),
                path.display(),
                c.dropped()
            );
        }
        if let Some(path) = self.control.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
