//! Latency histograms: host TCP connect time and DNS upstream time.
//!
//! # Theory of operation
//!
//! A [`Recorder`] is an hdrhistogram of microseconds (1 µs ..= 120 s, 2 significant
//! digits: about 4 KiB) owned by the poll thread, which records into it without locks or
//! atomics. At most every [`PUBLISH_EVERY`], and only when something was recorded, the poll
//! thread turns it into a [`LatencySummary`] (count, p50, p99, max, sum) and stores that in
//! `Published` under a `Mutex` that readers take only to copy the summary out. A
//! summary is at most [`PUBLISH_EVERY`] older than the last record (the poll thread wakes
//! for it). Histograms are cumulative since the network started.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How often, at most, the poll thread publishes its histograms.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Largest value recorded exactly; larger ones are clamped to it.
const HIGHEST_US: u64 = 120_000_000;

/// Percentiles and count of one histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Sum of all samples (count × mean), for rates of time.
    pub sum: Duration,
}

/// A histogram on the poll thread.
#[derive(Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    dirty: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // Constant bounds: low 1 ≥ 1, high ≥ 2 × low, 2 significant digits ≤ 5.
            hist: Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("valid constant bounds"),
            dirty: false,
        }
    }

    /// Record one sample (clamped to 1 µs ..= 120 s).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, HIGHEST_US));
        self.dirty = true;
    }

    /// Recorded since the last [`Recorder::summary`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The summary of everything recorded so far (clears the dirty flag).
    pub fn summary(&mut self) -> LatencySummary {
        self.dirty = false;
        let h = &self.hist;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = Duration::from_micros;
        // The mean of at most 2^64 samples below 2^27 µs: the product fits an f64's range,
        // rounded to whole microseconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let sum = (h.mean() * h.len() as f64) as u64;
        LatencySummary {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
            sum: us(sum),
        }
    }
}

/// The summaries readers see.
#[derive(Debug, Default)]
pub(crate) struct Published {
    connect: Mutex<LatencySummary>,
    dns: Mutex<LatencySummary>,
}

impl Published {
    pub(crate) fn connect(&self) -> LatencySummary {
        *self.connect.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn dns(&self) -> LatencySummary {
        *self.dns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish the recorders that changed.
    pub(crate) fn publish(&self, connect: &mut Recorder, dns: &mut Recorder) {
        if connect.dirty() {
            *self.connect.lock().unwrap_or_else(|e| e.into_inner()) = connect.summary();
        }
        if dns.dirty() {
            *self.dns.lock().unwrap_or_else(|e| e.into_inner()) = dns.summary();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_percentiles_and_clamps() {
        let mut r = Recorder::new();
        assert_eq!(r.summary(), LatencySummary::default());
        for ms in 1..=100 {
            r.record(Duration::from_millis(ms));
        }
        r.record(Duration::from_secs(1000)); // clamped to 120 s
        r.record(Duration::ZERO); // clamped to 1 µs
        assert!(r.dirty());
        let s = r.summary();
        assert!(!r.dirty());
        assert_eq!(s.count, 102);
        let near = |d: Duration, ms: u64| {
            d.as_micros().abs_diff(u128::from(ms) * 1000) <= u128::from(ms) * 10
        };
        assert!(near(s.p50, 50), "{s:?}");
        assert!(near(s.p99, 100), "{s:?}");
        assert!(near(s.max, 120_000), "{s:?}");
        assert!(s.sum > Duration::from_secs(120), "{s:?}");
    }

    #[test]
    fn publish_only_what_changed() {
        let p = Published::default();
        let (mut c, mut d) = (Recorder::new(), Recorder::new());
        c.record(Duration::from_millis(3));
        p.publish(&mut c, &mut d);
        assert_eq!(p.connect().count, 1);
        assert_eq!(p.dns().count, 0);
        d.record(Duration::from_millis(7));
        p.publish(&mut c, &mut d);
        assert_eq!(p.dns().count, 1);
        assert_eq!(p.connect().count, 1);
    }
}
