//! The network policy: which flows the guest may open, and which it may be reached by.
//!
//! # Theory of operation
//!
//! Pure decision code: rules, the DNS pins and a flow's description in, a [`Decision`]
//! out. Nothing here makes a syscall or reads a clock; the poll thread calls it once per
//! new flow (never per packet), so a policy of any length costs nothing on the bulk path.
//!
//! - A [`Rule`] is { action, direction, destination, protocols, ports }. Rules are
//!   checked in order; the first that matches decides, else the direction's default
//!   ([`Policy::decide`]). Empty protocol or port sets mean "any"; a rule with ports never
//!   matches ICMP.
//! - Destinations: `any`; an address or CIDR (IPv4-mapped IPv6 addresses are judged as the
//!   IPv4 address they carry); a domain (`example.com`) or a domain and its subdomains on
//!   label boundaries (`.example.com`); a [`Group`] (`group:private`, …).
//! - Domains match through DNS pinning ([`Pins`]): an address matches a domain rule only if
//!   this guest resolved a matching name to that address through ringnet's DNS, and the pin
//!   (the record's TTL, at least 1 s) has not expired. The caller passes the names pinned
//!   to the flow's address.
//! - Names ([`Policy::deny_name`]): the first domain rule that matches a name decides
//!   whether ringnet's DNS resolves it: an allow resolves it, a deny without protocol or
//!   port restrictions answers NXDOMAIN (the name never goes upstream). With no such rule,
//!   a name is denied only when nothing could ever be reached through it: the egress
//!   default is deny and no allow rule names addresses, groups or `any`.
//! - TLS: a TCP flow to port 443 admitted by a domain rule is held until its ClientHello
//!   is seen ([`sni`]); an SNI that does not match that rule's domain resets the flow.
//! - Syntax ([`syntax`]): `[egress|ingress|both] [PROTO[,PROTO…]] DEST [port P[-Q][,…]]`,
//!   with the action given by `--allow` / `--deny` or as the first word in a config file.
//! - Presets ([`Preset`]): `allow-all`, `none`, `safe` (documented at [`Preset::Safe`]).
//!
//! Limits: the pin table holds at most `dns.max_pins` pins; at the limit the pin that
//! expires first is dropped (counted as `dns_pins_evicted`).

pub mod groups;
pub mod pins;
pub mod sni;
pub mod syntax;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

pub use groups::{Gateways, Group};
pub use pins::Pins;

/// Errors in a rule or a policy definition; each names the rule and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("rule {rule:?}: {what}")]
    Rule { rule: String, what: String },
    #[error("unknown policy preset {0:?}: expected allow-all, none or safe")]
    Preset(String),
}

/// What a rule (or a default) does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// Which way a flow goes: opened by the guest (egress) or towards it (ingress).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Egress,
    Ingress,
    /// In rules only: both directions.
    #[serde(alias = "both")]
    Any,
}

/// A transport protocol of a flow.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn bit(self) -> u8 {
        match self {
            Proto::Tcp => 1,
            Proto::Udp => 2,
            Proto::Icmp => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// What a rule's destination names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Any,
    Net(IpNetwork),
    /// Exactly this name (lowercase, no trailing dot).
    Domain(String),
    /// This name and its subdomains.
    Suffix(String),
    Group(Group),
}

impl Dest {
    fn is_domain(&self) -> bool {
        matches!(self, Dest::Domain(_) | Dest::Suffix(_))
    }

    /// True when `name` (lowercase, no trailing dot) is this domain destination's.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            Dest::Domain(d) => name == d,
            Dest::Suffix(s) => {
                name == s
                    || (name.len() > s.len()
                        && name.ends_with(s.as_str())
                        && name.as_bytes()[name.len() - s.len() - 1] == b'.')
            }
            _ => false,
        }
    }
}

/// One rule. Build with [`Rule::parse`] (short syntax) or from a config table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub direction: Direction,
    pub dest: Dest,
    /// Bit set of [`Proto`]s; 0 = any.
    protos: u8,
    /// Inclusive port ranges; empty = any.
    pub ports: Vec<(u16, u16)>,
}

impl Rule {
    /// Protocols this rule is limited to (empty: any).
    pub fn protocols(&self) -> Vec<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Icmp]
            .into_iter()
            .filter(|p| self.protos & p.bit() != 0)
            .collect()
    }

    fn unrestricted(&self) -> bool {
        self.protos == 0 && self.ports.is_empty()
    }

    fn applies_to(&self, dir: Direction) -> bool {
        self.direction == Direction::Any || self.direction == dir
    }

    fn matches(&self, flow: &Flow, names: &[&str], gw: &Gateways) -> bool {
        if !self.applies_to(flow.direction) {
            return false;
        }
        if self.protos != 0 && self.protos & flow.proto.bit() == 0 {
            return false;
        }
        if !self.ports.is_empty()
            && (flow.proto == Proto::Icmp
                || !self
                    .ports
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&flow.port)))
        {
            return false;
        }
        match &self.dest {
            Dest::Any => true,
            Dest::Net(n) => n.contains(groups::canonical(flow.ip)),
            Dest::Group(g) => groups::in_group(*g, flow.ip, gw),
            d => names.iter().any(|n| d.matches_name(n)),
        }
    }
}

/// A flow to decide about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `Egress` or `Ingress` (never `Any`).
    pub direction: Direction,
    pub proto: Proto,
    /// The far end: the destination of an egress flow, the client of an ingress flow.
    pub ip: IpAddr,
    /// The destination port (0 for ICMP).
    pub port: u16,
}

/// A decision and what made it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The deciding rule's index; `None`: the direction's default.
    pub rule: Option<usize>,
}

/// The named presets.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    /// No rules; both directions allowed.
    AllowAll,
    /// No rules; both directions denied.
    None,
    /// The public internet and the gateway; nothing internal:
    /// 1. `allow egress group:host` (services of the host, through the gateway)
    /// 2. `deny egress group:metadata`
    /// 3. `deny egress tcp,udp any port 53,853` (foreign DNS and DNS over TLS: the
    ///    gateway's DNS, which pins names, cannot be bypassed)
    /// 4. `deny egress group:loopback`, `group:private`, `group:link-local`,
    ///    `group:multicast`
    /// 5. `allow egress group:public`
    ///
    /// Egress default deny; ingress default allow (only published ports are reachable).
    Safe,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::AllowAll, Preset::None, Preset::Safe];

    pub fn name(self) -> &'static str {
        match self {
            Preset::AllowAll => "allow-all",
            Preset::None => "none",
            Preset::Safe => "safe",
        }
    }

    /// The preset called `name`.
    ///
    /// # Errors
    /// [`PolicyError::Preset`] for any other name.
    pub fn from_name(name: &str) -> Result<Preset, PolicyError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| PolicyError::Preset(name.to_owned()))
    }

    /// The preset's policy.
    pub fn policy(self) -> Policy {
        let (egress, ingress, rules): (_, _, &[&str]) = match self {
            Preset::AllowAll => (Action::Allow, Action::Allow, &[]),
            Preset::None => (Action::Deny, Action::Deny, &[]),
            Preset::Safe => (
                Action::Deny,
                Action::Allow,
                &[
                    "allow egress group:host",
                    "deny egress group:metadata",
                    "deny egress tcp,udp any port 53,853",
                    "deny egress group:loopback",
                    "deny egress group:private",
                    "deny egress group:link-local",
                    "deny egress group:multicast",
                    "allow egress group:public",
                ],
            ),
        };
        let rules = rules
            .iter()
            .map(|r| {
                // The preset rules above are fixed and covered by a unit test.
                Rule::parse_with_action(r).expect("preset rules parse")
            })
            .collect();
        Policy {
            rules,
            default_egress: egress,
            default_ingress: ingress,
        }
    }
}

/// An ordered rule list and the two defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_egress: Action,
    pub default_ingress: Action,
}

impl Default for Policy {
    /// Everything allowed (no policy configured).
    fn default() -> Policy {
        Preset::AllowAll.policy()
    }
}

impl Policy {
    /// True when this policy allows everything (no rules, both defaults allow): the poll
    /// thread then skips the per-flow checks.
    pub fn allows_all(&self) -> bool {
        self.rules.is_empty()
            && self.default_egress == Action::Allow
            && self.default_ingress == Action::Allow
    }

    /// True when some rule names a domain (then flows need their pinned names).
    pub fn has_domain_rules(&self) -> bool {
        self.rules.iter().any(|r| r.dest.is_domain())
    }

    /// Decide about `flow`; `names` are the names the guest resolved to `flow.ip`.
    pub fn decide(&self, flow: &Flow, names: &[&str], gw: &Gateways) -> Decision {
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(flow, names, gw) {
                return Decision {
                    action: r.action,
                    rule: Some(i),
                };
            }
        }
        let action = match flow.direction {
            Direction::Ingress => self.default_ingress,
            _ => self.default_egress,
        };
        Decision { action, rule: None }
    }

    /// `Some(index)` of the deciding rule (`None` inside: the default) when the guest's DNS
    /// must answer NXDOMAIN for `name` (lowercase, no trailing dot); see the module docs.
    pub fn deny_name(&self, name: &str) -> Option<Option<usize>> {
        for (i, r) in self.rules.iter().enumerate() {
            if !r.applies_to(Direction::Egress) || !r.dest.matches_name(name) {
                continue;
            }
            match r.action {
                Action::Allow => return None,
                Action::Deny if r.unrestricted() => return Some(Some(i)),
                Action::Deny => {}
            }
        }
        let reachable_by_address = self.rules.iter().any(|r| {
            r.action == Action::Allow && r.applies_to(Direction::Egress) && !r.dest.is_domain()
        });
        (self.default_egress == Action::Deny && !reachable_by_address).then_some(None)
    }

    /// True when a rule names `ip` explicitly (an address, CIDR or group other than
    /// `public`) and the first such rule allows it: exempts `ip` from DNS rebind protection.
    pub fn allows_explicitly(&self, ip: IpAddr, gw: &Gateways) -> bool {
        let ip = groups::canonical(ip);
        for r in self
            .rules
            .iter()
            .filter(|r| r.applies_to(Direction::Egress))
        {
            let named = match &r.dest {
                Dest::Net(n) => n.contains(ip),
                Dest::Group(Group::Public) => false,
                Dest::Group(g) => groups::in_group(*g, ip, gw),
                _ => false,
            };
            if named {
                return r.action == Action::Allow;
            }
        }
        false
    }

    /// How a decision reads in a log line: `rule 3 (deny egress tcp 10.0.0.0/8 port 22)`
    /// or `the egress default (deny)`.
    pub fn describe(&self, d: &Decision, direction: Direction) -> String {
        match d.rule.and_then(|i| self.rules.get(i).map(|r| (i, r))) {
            Some((i, r)) => format!("rule {} ({r})", i + 1),
            None => {
                let (dir, a) = match direction {
                    Direction::Ingress => ("ingress", self.default_ingress),
                    _ => ("egress", self.default_egress),
                };
                format!("the {dir} default ({})", syntax::action_name(a))
            }
        }
    }
}
