//! A process's memory and descriptors from /proc (VmRSS, VmHWM, open fds), a background
//! [`Sampler`] of both, a least-squares [`slope`], and the counters of ringnet's `--stats`
//! output that are not `name value` lines ([`link_counters`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`); None once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with(field))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

pub fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:").unwrap_or_else(|| panic!("no VmHWM for pid {pid}"))
}

/// Open descriptors of `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count() as u64
}

/// The process's name (/proc/PID/comm), to check a pid is the process meant.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Poll until `pid`'s fd count is at most `want` (true) or `timeout` passes (false).
pub fn wait_fds_at_most(pid: u32, want: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if fd_count(pid) <= want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Poll until `pid`'s RSS is at most `want_kib` (true) or `timeout` passes (false).
pub fn wait_rss_at_most(pid: u32, want_kib: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if rss_kib(pid) <= want_kib {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One sample: seconds since the sampler started, VmRSS in KiB, open fds.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
}

/// Samples a process's RSS and fd count every `interval` on a thread of its own until
/// [`Sampler::finish`] (or drop). A sample is skipped once the process is gone.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, interval: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let thread = thread::spawn(move || {
            let t0 = Instant::now();
            let mut next = t0;
            while !s.load(Ordering::Relaxed) {
                let rss = status_kib(pid, "VmRSS:");
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
                if let (Some(rss_kib), Ok(fds)) = (rss, fds) {
                    let t = t0.elapsed().as_secs_f64();
                    v.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                        t,
                        rss_kib,
                        fds: fds as u64,
                    });
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stop sampling; every sample taken.
    pub fn finish(mut self) -> Vec<Sample> {
        self.halt();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Least-squares slope of `y` over `x` (units of y per unit of x); 0 with fewer than two
/// distinct x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// ringnet's `--stats` ring lines: `from_guest frames F bytes B drops D` and the same for
/// `to_guest`; (frames, bytes, drops) of `dir` ("from_guest" / "to_guest").
pub fn link_counters(stats: &str, dir: &str) -> Option<(u64, u64, u64)> {
    let prefix = format!("{dir} frames ");
    let l = stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))?;
    let w: Vec<&str> = l.split_whitespace().collect();
    // F bytes B drops D
    match w.as_slice() {
        [f, "bytes", b, "drops", d] => Some((f.parse().ok()?, b.parse().ok()?, d.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((super::slope(&pts) - 3.0).abs() < 1e-9);
    }
}
