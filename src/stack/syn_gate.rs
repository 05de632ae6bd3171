//! Admission of new outbound TCP flows while a guest floods SYNs.
//!
//! # Theory of operation
//!
//! Every admitted SYN costs a host socket: `socket`, `connect`, and later `close`, tens of
//! µs of kernel time. A guest sending fresh SYNs as fast as it can would spend the poll
//! thread on them and starve its own open flows, so two token buckets bound the work a
//! guest can force ([`Budget`], time from the caller):
//!
//! - **evictions** (`egress.evictions_per_sec`): with `max_connecting` connects pending, a
//!   new SYN gets in only by evicting the oldest pending connect, within this budget;
//! - **failures** (`egress.failed_connects_per_sec`): every host connect spends a token,
//!   given back when it succeeds ([`SynGate::connected`]). Connects to ports where nothing
//!   listens fail at once and never fill `max_connecting`; this budget bounds them, and
//!   since the token is spent at the SYN, a flood is shed before its failures come back.
//!   A guest whose connects succeed only ever holds the tokens of connects in progress.
//!
//! A SYN over a budget is **shed**: dropped without an answer, so a real TCP stack
//! retransmits it (Linux after 1 s, then 3 s). Shed SYNs are remembered by a keyed hash of
//! their 4-tuple in [`Recent`] for [`SHED_MEMORY`] to twice that; a retransmission of one
//! gets in on a third budget of its own (as large as the eviction budget), which a flooder
//! sending fresh 4-tuples cannot use. The hash keys are random per process, so a guest
//! cannot aim at the filter's bits; if it could, it would gain at most the retry budget.
//!
//! Sans-IO: no syscalls, no counters; the caller counts and evicts.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::Duration;

use super::limits::{Budget, Recent};
use crate::config::EgressConfig;

/// Shed SYNs are remembered for their retransmission this long at least (twice at most):
/// Linux retransmits a SYN after 1 s, then 3 s.
pub const SHED_MEMORY: Duration = Duration::from_secs(2);

/// What to do with a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Open the flow; `evict`: give up the oldest pending connect first (the cap is full);
    /// `retry`: admitted as the retransmission of a shed SYN.
    Admit { evict: bool, retry: bool },
    /// Drop it silently.
    Shed,
}

/// The SYN admission state of one flow table.
#[derive(Debug)]
pub struct SynGate {
    evict: Budget,
    fail: Budget,
    retry: Budget,
    shed: Recent,
    keys: RandomState,
}

impl SynGate {
    pub fn new(cfg: &EgressConfig) -> SynGate {
        SynGate {
            evict: Budget::new(cfg.evictions_per_sec),
            fail: Budget::new(cfg.failed_connects_per_sec),
            retry: Budget::new(cfg.evictions_per_sec),
            shed: Recent::new(SHED_MEMORY),
            keys: RandomState::new(),
        }
    }

    /// A SYN from `src` to `dst` for a host connect at `now` (the caller's monotonic time);
    /// `full`: `max_connecting` connects are pending. An admitted SYN holds a failure token
    /// until [`SynGate::connected`].
    pub fn admit(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        full: bool,
        now: Duration,
    ) -> Verdict {
        let afford = self.fail.take(now);
        if !full && afford {
            return Verdict::Admit {
                evict: false,
                retry: false,
            };
        }
        let h = self.keys.hash_one((src, dst));
        if self.shed.contains(h, now) && self.retry.take(now) {
            return Verdict::Admit {
                evict: full,
                retry: true,
            };
        }
        // While connects keep failing, no other SYN gets in; at a full cap, one that
        // evicts within the eviction budget.
        if afford && self.evict.take(now) {
            return Verdict::Admit {
                evict: true,
                retry: false,
            };
        }
        if afford {
            self.fail.give_back();
        }
        self.shed.insert(h, now);
        Verdict::Shed
    }

    /// A host connect admitted here succeeded: its failure token comes back. (A retry
    /// admitted while no token was left gives one back too; the bucket's burst caps that,
    /// and retries are bounded by their own budget.)
    pub fn connected(&mut self) {
        self.fail.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(evictions: u32, failures: u32) -> SynGate {
        SynGate::new(&EgressConfig {
            evictions_per_sec: evictions,
            failed_connects_per_sec: failures,
            ..EgressConfig::default()
        })
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], port))
    }

    const GUEST: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 2, 2)),
        40000,
    );
    const OPEN: Verdict = Verdict::Admit {
        evict: false,
        retry: false,
    };

    #[test]
    fn connects_that_succeed_never_run_out() {
        let mut g = gate(2, 2);
        let t = Duration::from_secs(1);
        for port in 1..1000 {
            assert_eq!(g.admit(GUEST, addr(port), false, t), OPEN);
            g.connected();
        }
    }

    #[test]
    fn failures_beyond_the_budget_are_shed_and_their_retry_admitted() {
        let mut g = gate(2, 3);
        let t = Duration::from_secs(1);
        for port in 1..=3 {
            assert_eq!(g.admit(GUEST, addr(port), false, t), OPEN);
        }
        assert_eq!(g.admit(GUEST, addr(4), false, t), Verdict::Shed);
        assert_eq!(g.admit(GUEST, addr(5), false, t), Verdict::Shed);
        // The retransmission of port 4's SYN, a second later.
        let t1 = t + Duration::from_secs(1);
        let retry = Verdict::Admit {
            evict: false,
            retry: true,
        };
        assert_eq!(g.admit(GUEST, addr(4), false, t1), OPEN, "refilled");
        for port in 10..12 {
            g.admit(GUEST, addr(port), false, t1);
        }
        assert_eq!(g.admit(GUEST, addr(5), false, t1), retry);
        assert_eq!(g.admit(GUEST, addr(99), false, t1), Verdict::Shed);
    }

    #[test]
    fn a_full_cap_evicts_within_its_budget() {
        let mut g = gate(2, 100);
        let t = Duration::from_secs(1);
        let evict = Verdict::Admit {
            evict: true,
            retry: false,
        };
        assert_eq!(g.admit(GUEST, addr(1), true, t), evict);
        assert_eq!(g.admit(GUEST, addr(2), true, t), evict);
        assert_eq!(g.admit(GUEST, addr(3), true, t), Verdict::Shed);
        // A shed SYN gives its failure token back: 98 of 100 left (two admitted).
        assert_eq!(
            (0..200)
                .filter(|&p| g.admit(GUEST, addr(1000 + p), false, t) == OPEN)
                .count(),
            98
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let mut g = gate(0, 0);
        let t = Duration::ZERO;
        assert!((1..5000).all(|p| g.admit(GUEST, addr(p), p % 2 == 0, t) != Verdict::Shed));
    }
}
