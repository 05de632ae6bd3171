//! When the poll thread gives memory back: the idle-trim clock (sans-IO).
//!
//! # Theory of operation
//!
//! | state     | event                                              | next      |
//! |-----------|----------------------------------------------------|-----------|
//! | `Trimmed` | traffic (a guest frame, a host socket or listener event) at `t` | `Busy(t)` |
//! | `Busy(t)` | traffic at `t'`                                    | `Busy(t')` |
//! | `Busy(t)` | a turn at or after `t + idle_trim_ms`              | trim, `Trimmed` |
//!
//! The engine starts `Trimmed` (nothing to give back yet). While `Busy`, the loop's wait
//! ends by `t + idle_trim_ms` at the latest ([`IdleTrim::delay`]), so the trim happens on
//! time even when nothing else would wake the thread; once `Trimmed`, it adds no timer and
//! an idle engine sleeps indefinitely as before. So each idle period costs one extra
//! wake-up and one trim, and a busy link none: traffic costs a store per turn.
//!
//! Timers (smoltcp retransmissions and keep-alives, UDP and DNS expiry) and control
//! wake-ups (policy, snapshots) are not traffic. A keep-alive the guest answers is: an idle
//! engine with open TCP flows trims again after each exchange (every quarter of
//! `tcp_guest_timeout_ms`), which releases the slot or two it touched.

use std::time::Duration;

/// The idle-trim clock of one poll thread.
#[derive(Debug)]
pub struct IdleTrim {
    /// `egress.idle_trim_ms`; `None` never trims.
    after: Option<Duration>,
    /// Time of the last traffic.
    last_busy: Duration,
    /// Trimmed since the last traffic (or nothing happened yet).
    trimmed: bool,
}

impl IdleTrim {
    /// A clock trimming `idle_trim_ms` after the last traffic (0: never).
    pub fn new(idle_trim_ms: u64) -> IdleTrim {
        IdleTrim {
            after: (idle_trim_ms > 0).then(|| Duration::from_millis(idle_trim_ms)),
            last_busy: Duration::ZERO,
            trimmed: true,
        }
    }

    /// Traffic at `now`.
    #[inline]
    pub fn busy(&mut self, now: Duration) {
        self.last_busy = now;
        self.trimmed = false;
    }

    /// True when the trim is due at `now`; the caller trims, then calls [`IdleTrim::done`].
    pub fn due(&self, now: Duration) -> bool {
        match self.after {
            Some(after) if !self.trimmed => now >= self.last_busy + after,
            _ => false,
        }
    }

    /// The trim was done.
    pub fn done(&mut self) {
        self.trimmed = true;
    }

    /// How long the loop may wait before the trim is due; `None` when none is pending.
    pub fn delay(&self, now: Duration) -> Option<Duration> {
        match self.after {
            Some(after) if !self.trimmed => Some((self.last_busy + after).saturating_sub(now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn trims_once_per_idle_period() {
        let mut t = IdleTrim::new(2000);
        assert!(!t.due(MS(10_000)), "nothing to trim before any traffic");
        assert_eq!(t.delay(MS(0)), None);
        t.busy(MS(100));
        assert_eq!(t.delay(MS(600)), Some(MS(1500)));
        assert!(!t.due(MS(2099)));
        t.busy(MS(2000)); // still busy: the deadline moves
        assert!(!t.due(MS(2100)));
        assert!(t.due(MS(4000)));
        assert_eq!(t.delay(MS(4500)), Some(Duration::ZERO));
        t.done();
        assert!(!t.due(MS(9000)));
        assert_eq!(t.delay(MS(9000)), None);
        t.busy(MS(9000));
        assert!(t.due(MS(11_000)));
    }

    #[test]
    fn zero_never_trims() {
        let mut t = IdleTrim::new(0);
        t.busy(MS(1));
        assert!(!t.due(MS(1_000_000)));
        assert_eq!(t.delay(MS(0)), None);
    }
}
