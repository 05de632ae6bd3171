//! File descriptors: how many ringnet wants, and what happens when the host runs out.
//!
//! # Theory of operation
//!
//! Every guest flow is one host socket, so one file descriptor. With a low
//! `RLIMIT_NOFILE` (a `ulimit -n` of 1,024 is common) `socket(2)` fails with `EMFILE` long
//! before `max_connections` is reached, and with `ENFILE` when the whole system's file
//! table is full. The guest sees such a failure as a refused connection (TCP: RST) or a lost
//! datagram, which looks like a closed port, so ringnet makes it visible:
//!
//! - [`fds_wanted`] says how many descriptors one guest network needs at its limits; the
//!   `ringnet` binary raises its soft limit to the hard limit at start and warns when the
//!   hard limit is below that.
//! - `note_open_failure` classifies a failed host socket open: `EMFILE` / `ENFILE` count
//!   in [`Stats::host_fd_exhausted`] and log a warning, at most one per [`WARN_EVERY`],
//!   saying how many opens failed since the previous one and what to do. Other failures
//!   (a ping socket refused by `net.ipv4.ping_group_range`, the driver's socket limit) are
//!   the caller's to count and log at debug.
//!
//! Time is passed in by the caller (the poll thread's time since its epoch), so the rate
//! limit is tested without a clock. No syscalls here.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::SlotConfig;
use crate::egress::EgressError;
use crate::metrics::Stats;

/// Host sockets the egress driver may hold beyond the flow limits: sockets still closing
/// (a graceful close flushes for up to [`crate::egress::CLOSE_LINGER`]).
pub const CLOSING_SOCKETS: usize = 64;

/// Descriptors of ringnet's own next to its host sockets: stdio, the TAP, eventfds, the
/// io_uring or epoll instance, namespace fds, pipes to the children it spawns.
pub const OWN_FDS: usize = 64;

/// At most one fd-exhaustion warning per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(5);

/// Host sockets one guest network may hold at once: every TCP and UDP/ICMP flow it allows
/// plus [`CLOSING_SOCKETS`] (the egress driver's `max_sockets`).
pub fn host_sockets(cfg: &SlotConfig) -> usize {
    cfg.max_connections
        .saturating_add(cfg.egress.max_udp_flows)
        .saturating_add(CLOSING_SOCKETS)
}

/// File descriptors a process serving one guest network needs at its limits:
/// [`host_sockets`] plus [`OWN_FDS`], plus with `tls.enabled` two more per TCP flow (an
/// intercepted flow's host socket is a socket pair to a TLS worker, which holds the
/// server's socket).
pub fn fds_wanted(cfg: &SlotConfig) -> u64 {
    let tls = if cfg.tls.enabled {
        cfg.max_connections.saturating_mul(2)
    } else {
        0
    };
    host_sockets(cfg)
        .saturating_add(tls)
        .saturating_add(OWN_FDS) as u64
}

/// Which descriptor table was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// `EMFILE`: this process's `RLIMIT_NOFILE`.
    Process,
    /// `ENFILE`: the system-wide limit (`fs.file-max`).
    System,
}

impl Exhausted {
    /// The failure's kind, if `err` is a host socket that could not be created for want of
    /// a file descriptor.
    pub(crate) fn of(err: &EgressError) -> Option<Exhausted> {
        match err {
            EgressError::Socket { source, .. } => match source.raw_os_error() {
                Some(libc::EMFILE) => Some(Exhausted::Process),
                Some(libc::ENFILE) => Some(Exhausted::System),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The rate limit of the fd-exhaustion warning: one per poll thread, shared by TCP, UDP and
/// ICMP echo flows.
#[derive(Debug)]
pub(crate) struct FdWarn {
    /// When the last warning was logged (None: never).
    last: Option<Duration>,
    /// Failures since then (including those not yet reported).
    since: u64,
    /// [`fds_wanted`] of this network, quoted in the warning.
    wanted: u64,
}

impl FdWarn {
    pub(crate) fn new(wanted: u64) -> FdWarn {
        FdWarn {
            last: None,
            since: 0,
            wanted,
        }
    }

    /// Count one failure at `now`. When a warning is due (the first failure, then at most
    /// one per [`WARN_EVERY`]) returns how many failures it reports (this one and those
    /// since the last warning) and how long ago that warning was; else None.
    fn hit(&mut self, now: Duration) -> Option<(u64, Option<Duration>)> {
        self.since += 1;
        let ago = self.last.map(|t| now.saturating_sub(t));
        if ago.is_some_and(|ago| ago < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some((std::mem::take(&mut self.since), ago))
    }
}

/// After a host socket open failed with `err` at `now` (time since the poll thread's
/// epoch): when it ran out of file descriptors (`EMFILE` / `ENFILE`), count it in
/// [`Stats::host_fd_exhausted`], log the rate-limited warning and return true; otherwise
/// return false (nothing counted or logged: the caller's other counters and debug log
/// apply).
pub(crate) fn note_open_failure(
    stats: &Stats,
    warn: &mut FdWarn,
    err: &EgressError,
    now: Duration,
) -> bool {
    let Some(kind) = Exhausted::of(err) else {
        return false;
    };
    stats.host_fd_exhausted.fetch_add(1, Ordering::Relaxed);
    if let Some((n, ago)) = warn.hit(now) {
        let what = match ago {
            None => "a host socket could not be opened".to_string(),
            Some(ago) => format!(
                "{n} host sockets could not be opened since the last warning {}s ago",
                ago.as_secs()
            ),
        };
        match kind {
            Exhausted::Process => tracing::warn!(
                "{what}: too many open files (EMFILE): the guest sees a refused connection or \
                 a lost datagram; raise `ulimit -n` (RLIMIT_NOFILE) for ringnet to at least \
                 {} or lower max_connections / max_udp_flows (all counted in \
                 host_fd_exhausted, warned about at most every {}s)",
                warn.wanted,
                WARN_EVERY.as_secs()
            ),
            Exhausted::System => tracing::warn!(
                "{what}: the system's file table is full (ENFILE): the guest sees a refused \
                 connection or a lost datagram; raise fs.file-max or close files elsewhere \
                 (all counted in host_fd_exhausted, warned about at most every {}s)",
                WARN_EVERY.as_secs()
            ),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostRoutes, NetworkConfig};
    use crate::egress::SockKind;
    use std::io;

    fn socket_err(errno: i32) -> EgressError {
        EgressError::Socket {
            kind: SockKind::Udp,
            remote: "127.0.0.1:53".parse().unwrap(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn only_emfile_and_enfile_on_socket_creation_count() {
        assert_eq!(
            Exhausted::of(&socket_err(libc::EMFILE)),
            Some(Exhausted::Process)
        );
        assert_eq!(
            Exhausted::of(&socket_err(libc::ENFILE)),
            Some(Exhausted::System)
        );
        assert_eq!(Exhausted::of(&socket_err(libc::EACCES)), None);
        assert_eq!(Exhausted::of(&EgressError::TooManySockets(9)), None);
        let wait = EgressError::Wait(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(Exhausted::of(&wait), None);

        let stats = Stats::default();
        let mut warn = FdWarn::new(100);
        assert!(note_open_failure(
            &stats,
            &mut warn,
            &socket_err(libc::EMFILE),
            S(0)
        ));
        assert!(note_open_failure(
            &stats,
            &mut warn,
            &socket_err(libc::ENFILE),
            S(1)
        ));
        assert!(!note_open_failure(
            &stats,
            &mut warn,
            &socket_err(libc::ECONNREFUSED),
            S(2)
        ));
        assert_eq!(stats.host_fd_exhausted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn warns_at_once_then_at_most_every_five_seconds_with_the_count_since() {
        let mut w = FdWarn::new(100);
        assert_eq!(
            w.hit(S(10)),
            Some((1, None)),
            "the first failure warns at once"
        );
        for i in 0..99 {
            assert_eq!(w.hit(S(10) + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(w.hit(Duration::from_millis(14_999)), None);
        // 99 + 1 suppressed, then the one that is due.
        assert_eq!(w.hit(S(15)), Some((101, Some(S(5)))));
        assert_eq!(w.hit(S(16)), None);
        // After a quiet minute the next failure warns at once and counts the one before.
        assert_eq!(w.hit(S(80)), Some((2, Some(S(65)))));
    }

    #[test]
    fn a_clock_going_backwards_does_not_warn() {
        let mut w = FdWarn::new(100);
        assert_eq!(w.hit(S(10)), Some((1, None)));
        assert_eq!(w.hit(S(3)), None);
        assert_eq!(w.hit(S(15)), Some((2, Some(S(5)))));
    }

    #[test]
    fn wanted_counts_every_flow_closing_sockets_and_own_fds() {
        let mut cfg = NetworkConfig {
            max_connections: 1000,
            ..NetworkConfig::default()
        };
        cfg.egress.max_udp_flows = 500;
        let slot = cfg
            .derive(
                0,
                HostRoutes {
                    ipv4: true,
                    ipv6: false,
                },
            )
            .unwrap();
        assert_eq!(host_sockets(&slot), 1000 + 500 + CLOSING_SOCKETS);
        assert_eq!(
            fds_wanted(&slot),
            (1000 + 500 + CLOSING_SOCKETS + OWN_FDS) as u64
        );
        // TLS interception: a socket pair per flow besides the server's socket.
        cfg.tls.enabled = true;
        let slot = cfg
            .derive(
                0,
                HostRoutes {
                    ipv4: true,
                    ipv6: false,
                },
            )
            .unwrap();
        assert_eq!(
            fds_wanted(&slot),
            (3 * 1000 + 500 + CLOSING_SOCKETS + OWN_FDS) as u64
        );
    }
}

/// A token bucket on work a guest can force at will (`egress.evictions_per_sec`,
/// `egress.failed_connects_per_sec`, `dns.queries_per_sec`): `take`
/// succeeds at most `per_sec` times per second on average, with a burst of `per_sec`.
/// Time comes from the caller; `per_sec` 0 always succeeds.
#[derive(Debug)]
pub struct Budget {
    per_sec: u64,
    /// Tokens, in millionths (one token = 1,000,000).
    micro: u64,
    last: Duration,
}

impl Budget {
    pub fn new(per_sec: u32) -> Budget {
        Budget {
            per_sec: u64::from(per_sec),
            micro: u64::from(per_sec) * 1_000_000,
            last: Duration::ZERO,
        }
    }

    /// Spend one token at `now` (the caller's monotonic time); false when none is left.
    pub fn take(&mut self, now: Duration) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        self.refill(now);
        if self.micro >= 1_000_000 {
            self.micro -= 1_000_000;
            true
        } else {
            false
        }
    }

    /// Return one token spent (up to the burst): the work it paid for turned out cheap.
    pub fn give_back(&mut self) {
        self.micro = self
            .micro
            .saturating_add(1_000_000)
            .min(self.per_sec * 1_000_000);
    }

    fn refill(&mut self, now: Duration) {
        let cap = self.per_sec * 1_000_000;
        let dt = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        // µs elapsed × tokens per second = millionths of a token.
        let earned = u64::try_from(dt.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(self.per_sec);
        self.micro = self.micro.saturating_add(earned).min(cap);
    }
}

/// Bits per generation of [`Recent`]: 4 Mi bits (512 KiB). With two probes, 120,000
/// insertions per generation leave about 0.3 % false positives.
const RECENT_BITS: usize = 1 << 22;

/// What was seen lately, approximately: two generations of a two-probe Bloom filter over
/// 64-bit hashes, each living `period`; `contains` answers for the current and the previous
/// one, so an item is remembered for at least one period and at most two. False positives
/// happen (see [`RECENT_BITS`]), false negatives do not within a period. Memory: none until
/// the first insert, then up to 1 MiB; a generation's bits are freed, not cleared, when it
/// expires (fresh zero pages on the next insert). Time comes from the caller.
#[derive(Debug)]
pub struct Recent {
    gens: [Vec<u64>; 2],
    cur: usize,
    since: Duration,
    period: Duration,
}

impl Recent {
    pub fn new(period: Duration) -> Recent {
        Recent {
            gens: [Vec::new(), Vec::new()],
            cur: 0,
            since: Duration::ZERO,
            period,
        }
    }

    fn probes(h: u64) -> [usize; 2] {
        // Invariant: masked below RECENT_BITS, so the casts keep every bit used.
        #[allow(clippy::cast_possible_truncation)]
        [
            (h as usize) & (RECENT_BITS - 1),
            ((h >> 32) as usize) & (RECENT_BITS - 1),
        ]
    }

    fn age(&mut self, now: Duration) {
        if now.saturating_sub(self.since) < self.period {
            return;
        }
        // Two periods or more without a call: both generations are stale.
        let stale = now.saturating_sub(self.since) >= self.period * 2;
        self.cur ^= 1;
        self.gens[self.cur] = Vec::new();
        if stale {
            self.gens[self.cur ^ 1] = Vec::new();
        }
        self.since = now;
    }

    pub fn insert(&mut self, h: u64, now: Duration) {
        self.age(now);
        let g = &mut self.gens[self.cur];
        if g.is_empty() {
            *g = vec![0; RECENT_BITS / 64];
        }
        for p in Self::probes(h) {
            g[p / 64] |= 1 << (p % 64);
        }
    }

    pub fn contains(&mut self, h: u64, now: Duration) -> bool {
        self.age(now);
        let ps = Self::probes(h);
        self.gens
            .iter()
            .any(|g| !g.is_empty() && ps.iter().all(|&p| g[p / 64] & (1 << (p % 64)) != 0))
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_burst_then_its_rate() {
        let mut b = Budget::new(100);
        let t0 = Duration::from_secs(5);
        assert_eq!((0..250).filter(|_| b.take(t0)).count(), 100, "the burst");
        // 10 ms later: one more token.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!((0..10).filter(|_| b.take(t1)).count(), 1);
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..250).filter(|_| b.take(t2)).count(), 100);
        // Time going backwards earns nothing.
        assert!(!b.take(t0));
        let mut free = Budget::new(0);
        assert!((0..10_000).all(|_| free.take(Duration::ZERO)));
    }

    #[test]
    fn a_token_given_back_can_be_spent_again_up_to_the_burst() {
        let mut b = Budget::new(2);
        let t = Duration::from_secs(1);
        assert!(b.take(t) && b.take(t) && !b.take(t));
        b.give_back();
        assert!(b.take(t) && !b.take(t));
        for _ in 0..5 {
            b.give_back();
        }
        assert_eq!(
            (0..5).filter(|_| b.take(t)).count(),
            2,
            "never beyond the burst"
        );
    }

    #[test]
    fn recent_remembers_for_one_to_two_periods() {
        let p = Duration::from_secs(2);
        let mut r = Recent::new(p);
        let t = Duration::from_secs(10);
        assert!(!r.contains(42, t));
        r.insert(42, t);
        assert!(r.contains(42, t));
        assert!(r.contains(42, t + Duration::from_millis(1999)));
        // Into the next generation: still there (previous generation).
        assert!(r.contains(42, t + Duration::from_millis(2500)));
        // Two generations on: gone.
        assert!(!r.contains(42, t + Duration::from_millis(6000)));
        // 100,000 others: few false positives among 100,000 never inserted.
        for i in 0..100_000u64 {
            r.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), t + p * 4);
        }
        let fp = (0..100_000u64)
            .filter(|i| r.contains(i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ 0x5555, t + p * 4))
            .count();
        assert!(fp < 1000, "{fp} false positives");
    }
}
