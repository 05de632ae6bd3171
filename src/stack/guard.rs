//! The poll thread's side of the policy: admission of new flows, the guest's DNS pins,
//! denial counters and log lines.
//!
//! # Theory of operation
//!
//! A [`Guard`] holds the current [`Policy`], this guest's [`Pins`] and the gateway
//! addresses. Flows ask it once, when they are created ([`Guard::admit`]); with a policy
//! that allows everything it answers at once without looking at rules or pins. Every
//! denial is counted (by protocol and by reason) and logged at info level naming the rule,
//! at most once per (protocol, guest address, destination) among the last
//! [`LOGGED_MAX`] denials, so a guest retrying a denied datagram does not flood the log.
//! It is also the DNS resolver's [`Judge`]: names the policy denies, explicit allows that
//! lift rebind protection, and the pins each answer makes.
//!
//! Every denial (a flow, a DNS name, a TLS server name) is also queued as a typed
//! [`Denial`] event in the link ([`crate::observe::events`], bounded, oldest dropped) and
//! raises the `policy_denial` termination event ([`crate::observe::term`]; a no-op unless
//! configured). Rule names (`rule N (…)`) are built once per policy and shared (`Arc<str>`)
//! by the events and by the flows they admitted ([`Admission::rule`]).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::dns::Judge;
use crate::metrics::Stats;
use crate::observe::{Denial, DenialReason, TermEvent};
use crate::policy::{Action, Decision, Dest, Direction, Flow, Gateways, Pins, Policy, Proto};

/// Denials remembered for "log once per flow".
pub const LOGGED_MAX: usize = 1024;

/// What admission found for a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The names the guest resolved to the destination, when a domain rule admitted the
    /// flow (kept for re-checking it under a new policy).
    pub names: Vec<Box<str>>,
    /// The domain destination that admitted a TCP flow to port 443: its ClientHello's SNI
    /// must match it.
    pub sni: Option<Dest>,
    /// The rule that admitted the flow (`rule N (…)` or the default); `None` when the
    /// policy allows everything.
    pub rule: Option<Arc<str>>,
}

/// Policy state of one guest.
pub struct Guard {
    policy: Arc<Policy>,
    /// `policy.allows_all()`, cached.
    open: bool,
    pins: Pins,
    gw: Gateways,
    logged: HashSet<(Proto, IpAddr, SocketAddr)>,
    logged_order: VecDeque<(Proto, IpAddr, SocketAddr)>,
    /// For the counters, denial events and the termination hook.
    link: Arc<crate::link::Link>,
    now: Duration,
    /// `rule N (…)` of every rule of `policy`, then the egress default's name.
    names: Vec<Arc<str>>,
}

/// The names of `policy`'s rules, then of its egress default (see [`Guard::name`]).
fn rule_names(policy: &Policy) -> Vec<Arc<str>> {
    let named = |rule, action| policy.describe(&Decision { action, rule }, Direction::Egress);
    let mut v: Vec<Arc<str>> = (policy.rules.iter().enumerate())
        .map(|(i, r)| named(Some(i), r.action).into())
        .collect();
    v.push(named(None, policy.default_egress).into());
    v
}

impl Guard {
    pub fn new(
        policy: Policy,
        gw: Gateways,
        max_pins: usize,
        link: Arc<crate::link::Link>,
    ) -> Guard {
        Guard {
            open: policy.allows_all(),
            pins: Pins::new(max_pins),
            gw,
            logged: HashSet::new(),
            logged_order: VecDeque::new(),
            link,
            now: Duration::ZERO,
            names: rule_names(&policy),
            policy: Arc::new(policy),
        }
    }

    /// The shared name of rule `rule` (`None`: the egress default).
    fn name(&self, rule: Option<usize>) -> Arc<str> {
        let i = rule.unwrap_or(self.policy.rules.len());
        // `names` has one entry per rule plus the default's (built with the policy).
        self.names
            .get(i)
            .or(self.names.last())
            .cloned()
            .unwrap_or_else(|| "".into())
    }

    /// Queue a denial event and raise the `policy_denial` termination event.
    fn denied(&self, d: Denial) {
        self.link.observe.events.push(d);
        crate::observe::term::fire(&self.link, TermEvent::PolicyDenial);
    }

    fn stats(&self) -> &Stats {
        &self.link.stats
    }

    /// Replace the policy (flows are re-checked by the caller with [`Guard::recheck`]).
    pub fn set_policy(&mut self, policy: Policy) {
        self.open = policy.allows_all();
        self.names = rule_names(&policy);
        self.policy = Arc::new(policy);
        self.logged.clear();
        self.logged_order.clear();
    }

    /// The time of the current turn (pins expire against it).
    pub fn set_now(&mut self, now: Duration) {
        self.now = now;
    }

    /// May the guest at `src` open a `proto` flow to `dst`? `None`: denied (counted and
    /// logged here; the caller refuses the flow).
    pub fn admit(&mut self, proto: Proto, src: IpAddr, dst: SocketAddr) -> Option<Admission> {
        if self.open {
            return Some(Admission {
                names: Vec::new(),
                sni: None,
                rule: None,
            });
        }
        let flow = Flow {
            direction: Direction::Egress,
            proto,
            ip: dst.ip(),
            port: if proto == Proto::Icmp { 0 } else { dst.port() },
        };
        let names = self.pins.names(dst.ip(), self.now);
        let d = self.policy.decide(&flow, &names, &self.gw);
        if d.action == Action::Allow {
            let rule = d.rule.and_then(|i| self.policy.rules.get(i));
            let by_domain = rule.filter(|r| matches!(r.dest, Dest::Domain(_) | Dest::Suffix(_)));
            return Some(Admission {
                names: match by_domain {
                    Some(_) => names.iter().map(|&n| n.into()).collect(),
                    None => Vec::new(),
                },
                sni: by_domain
                    .filter(|_| proto == Proto::Tcp && dst.port() == 443)
                    .map(|r| r.dest.clone()),
                rule: Some(self.name(d.rule)),
            });
        }
        self.count_denial(proto, &d);
        if self.first_denial(proto, src, dst) {
            let why = self.policy.describe(&d, Direction::Egress);
            tracing::info!("policy: denied {} {src} -> {dst} by {why}", proto.name());
        }
        self.denied(Denial {
            at: SystemTime::now(),
            proto,
            guest: Some(src),
            dst: Some(dst),
            name: None,
            reason: match d.rule {
                Some(_) => DenialReason::Rule,
                None => DenialReason::Default,
            },
            rule: self.name(d.rule),
        });
        None
    }

    /// May a host client at `client` reach guest port `port` over `proto` (a published
    /// port)? Denials are counted and logged like egress ones.
    pub fn admit_ingress(&mut self, proto: Proto, client: SocketAddr, port: u16) -> bool {
        if self.open {
            return true;
        }
        let flow = Flow {
            direction: Direction::Ingress,
            proto,
            ip: client.ip(),
            port,
        };
        let d = self.policy.decide(&flow, &[], &self.gw);
        if d.action == Action::Allow {
            return true;
        }
        self.count_denial(proto, &d);
        let dst = SocketAddr::new(client.ip(), port);
        if self.first_denial(proto, client.ip(), dst) {
            let why = self.policy.describe(&d, Direction::Ingress);
            tracing::info!(
                "policy: denied inbound {} {client} -> guest port {port} by {why}",
                proto.name()
            );
        }
        false
    }

    /// Is an open flow still allowed under the current policy? `names` are those it was
    /// admitted with. Denials here are counted as `policy_revoked` by the caller.
    pub fn recheck(&self, proto: Proto, dst: SocketAddr, names: &[Box<str>]) -> bool {
        if self.open {
            return true;
        }
        let flow = Flow {
            direction: Direction::Egress,
            proto,
            ip: dst.ip(),
            port: if proto == Proto::Icmp { 0 } else { dst.port() },
        };
        let mut all: Vec<&str> = self.pins.names(dst.ip(), self.now);
        all.extend(names.iter().map(|n| &**n));
        self.policy.decide(&flow, &all, &self.gw).action == Action::Allow
    }

    /// The names this guest resolved to `ip` through ringnet's DNS, still pinned.
    pub fn pinned(&self, ip: IpAddr) -> Vec<String> {
        self.pins
            .names(ip, self.now)
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// A TCP flow's SNI `name` against the domain that admitted it: false (counted,
    /// logged) when they disagree, or when the policy denies that name outright.
    pub fn sni_agrees(&self, dest: &Dest, name: &str, dst: SocketAddr) -> bool {
        let denied = self.policy.deny_name(name).is_some();
        if dest.matches_name(name) && !denied {
            return true;
        }
        Stats::inc(&self.stats().policy_sni_mismatch);
        tracing::info!(
            "policy: reset tcp to {dst}: TLS server name {name:?} does not agree with {dest} \
             that admitted the flow"
        );
        self.denied(Denial {
            at: SystemTime::now(),
            proto: Proto::Tcp,
            guest: None,
            dst: Some(dst),
            name: Some(name.into()),
            reason: DenialReason::SniMismatch,
            rule: format!("{dest} (the domain that admitted the flow)").into(),
        });
        false
    }

    /// Count a denial by protocol and by reason.
    fn count_denial(&self, proto: Proto, d: &crate::policy::Decision) {
        let stats = &self.link.stats;
        Stats::inc(match proto {
            Proto::Tcp => &stats.policy_denied_tcp,
            Proto::Udp => &stats.policy_denied_udp,
            Proto::Icmp => &stats.policy_denied_icmp,
        });
        Stats::inc(match d.rule {
            Some(_) => &stats.policy_denied_rule,
            None => &stats.policy_denied_default,
        });
    }

    fn first_denial(&mut self, proto: Proto, src: IpAddr, dst: SocketAddr) -> bool {
        let key = (proto, src, dst);
        if !self.logged.insert(key) {
            return false;
        }
        self.logged_order.push_back(key);
        if self.logged_order.len() > LOGGED_MAX {
            if let Some(old) = self.logged_order.pop_front() {
                self.logged.remove(&old);
            }
        }
        true
    }
}

impl Judge for Guard {
    fn deny_name(&self, name: &str) -> Option<String> {
        if self.open {
            return None;
        }
        let rule = self.policy.deny_name(name)?;
        let d = Decision {
            action: Action::Deny,
            rule,
        };
        self.denied(Denial {
            at: SystemTime::now(),
            proto: Proto::Udp,
            guest: None,
            dst: None,
            name: Some(name.into()),
            reason: DenialReason::DnsName,
            rule: self.name(rule),
        });
        Some(self.policy.describe(&d, Direction::Egress))
    }

    fn allows_explicitly(&self, ip: IpAddr) -> bool {
        self.policy.allows_explicitly(ip, &self.gw)
    }

    fn pin(&mut self, name: &str, ip: IpAddr, ttl: u32, now: Duration) {
        if self.pins.insert(name, ip, ttl, now) {
            Stats::inc(&self.stats().dns_pins_evicted);
        }
    }
}
