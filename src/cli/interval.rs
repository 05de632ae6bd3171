//! `--stats-interval N`: one line of rates on stderr every N seconds while running.
//!
//! I/O (stderr) on a thread of its own; it reads only the metrics handle's atomics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringnet::observe::Observer;

use ringnet::sandbox::{self, Role, SandboxConfig};

use super::{CliError, TICK};

/// Start the printer.
pub fn spawn(
    every: Duration,
    obs: Observer,
    stop: Arc<AtomicBool>,
    sandbox: &SandboxConfig,
) -> Result<JoinHandle<()>, CliError> {
    let sandbox = sandbox.clone();
    std::thread::Builder::new()
        .name("ringnet-stats".into())
        .spawn(move || {
            sandbox::enter_or_warn(Role::Service, &sandbox);
            run(every, &obs, &stop);
        })
        .map_err(CliError::Spawn)
}

fn run(every: Duration, obs: &Observer, stop: &AtomicBool) {
    let m = obs.metrics();
    let mut last = (
        Instant::now(),
        m.tx_bytes(),
        m.rx_bytes(),
        m.drops().total(),
    );
    let mut next = last.0 + every;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(TICK.min(next - now));
            continue;
        }
        next += every;
        let (tx, rx, drops) = (m.tx_bytes(), m.rx_bytes(), m.drops().total());
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let gbit = |bytes: u64| bytes as f64 * 8.0 / secs / 1e9;
        let f = m.open_flows();
        eprintln!(
            "ringnet: tx {:.3} Gbit/s rx {:.3} Gbit/s flows tcp {} udp {} drops +{} ({} total)",
            gbit(tx - last.1),
            gbit(rx - last.2),
            f.tcp,
            f.udp,
            drops.saturating_sub(last.3),
            drops
        );
        last = (now, tx, rx, drops);
    }
}
