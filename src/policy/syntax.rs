//! Rules as text and as configuration tables.
//!
//! Short syntax (command line, and strings in `[policy] rules`):
//!
//! ```text
//! [allow|deny] [egress|ingress|both] [PROTO[,PROTO…]] DEST [port P[-Q][,…]]
//! ```
//!
//! The action word is given by the flag (`--allow RULE`, `--deny RULE`) or leads the
//! string in a config file. The direction defaults to egress. PROTO is `tcp`, `udp` or
//! `icmp` (none: any). DEST is `any`, an address or CIDR (`198.51.100.7`, `10.0.0.0/8`,
//! `2001:db8::/32`), a domain (`example.com`), a domain and its subdomains
//! (`.example.com`) or a group (`group:private`; see [`Group`]). Ports are single ports
//! or inclusive ranges (`port 80,443,8000-8010`); a rule with ports never matches ICMP.
//!
//! `[policy]` in the config file:
//!
//! ```toml
//! [policy]
//! preset = "safe"            # optional: allow-all | none | safe
//! default_egress = "deny"    # optional: overrides the preset's
//! default_ingress = "allow"
//! rules = [
//!   "allow tcp 198.51.100.0/24 port 80",
//!   { action = "deny", destination = "10.0.0.0/8", protocols = ["tcp"], ports = ["22", "8000-8010"] },
//! ]
//! ```
//!
//! The file's rules come first, then the preset's; a default not given is the preset's,
//! or allow without a preset (rules are then exceptions to "everything allowed").

use std::fmt;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::{Action, Dest, Direction, Group, Policy, PolicyError, Preset, Proto, Rule};

/// `allow` / `deny`.
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
        Direction::Any => "both",
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            action_name(self.action),
            direction_name(self.direction)
        )?;
        let protos: Vec<&str> = self.protocols().iter().map(|p| p.name()).collect();
        if !protos.is_empty() {
            write!(f, " {}", protos.join(","))?;
        }
        write!(f, " {}", self.dest)?;
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
            write!(f, " port {}", ports.join(","))?;
        }
        Ok(())
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Any => f.write_str("any"),
            Dest::Net(n) if n.prefix() == if n.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{}", n.ip())
            }
            Dest::Net(n) => write!(f, "{n}"),
            // A domain spelled like a keyword ("udp", "any", "port") prints with its
            // trailing dot, which the parser reads as a domain.
            Dest::Domain(d) if is_keyword(d) => write!(f, "{d}."),
            Dest::Domain(d) => f.write_str(d),
            Dest::Suffix(s) => write!(f, ".{s}"),
            Dest::Group(g) => write!(f, "group:{}", g.name()),
        }
    }
}

/// Words the short syntax reads as something other than a destination.
fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "egress" | "out" | "ingress" | "in" | "both" | "port" | "ports" | "any" | "*"
    ) || parse_protos(word).is_some()
}

impl Rule {
    /// Parse the short syntax without the action word; `action` comes from the flag.
    ///
    /// # Errors
    /// [`PolicyError::Rule`] naming the rule and what is wrong.
    pub fn parse(action: Action, text: &str) -> Result<Rule, PolicyError> {
        let err = |what: String| PolicyError::Rule {
            rule: text.trim().to_owned(),
            what,
        };
        let mut direction = None;
        let mut protos = None;
        let mut ports = None;
        let mut dests: Vec<&str> = Vec::new();
        let mut tokens = text.split_whitespace();
        while let Some(t) = tokens.next() {
            let lower = t.to_ascii_lowercase();
            let dir = match lower.as_str() {
                "egress" | "out" => Some(Direction::Egress),
                "ingress" | "in" => Some(Direction::Ingress),
                "both" => Some(Direction::Any),
                _ => None,
            };
            if let Some(d) = dir {
                if direction.replace(d).is_some() {
                    return Err(err("more than one direction".into()));
                }
                continue;
            }
            if lower == "port" || lower == "ports" {
                let list = tokens
                    .next()
                    .ok_or_else(|| err(format!("'{t}' without a port list")))?;
                if ports.replace(parse_ports(list).map_err(err)?).is_some() {
                    return Err(err("more than one port list".into()));
                }
                continue;
            }
            if let Some(p) = parse_protos(&lower) {
                if protos.replace(p).is_some() {
                    return Err(err("more than one protocol list".into()));
                }
                continue;
            }
            dests.push(t);
        }
        let dest = match dests.as_slice() {
            [] => return Err(err("no destination (write 'any' for every address)".into())),
            [d] => *d,
            ["any", d] if direction.is_none() => {
                direction = Some(Direction::Any);
                *d
            }
            _ => {
                return Err(err(format!(
                    "more than one destination: {}",
                    dests.join(", ")
                )))
            }
        };
        build(
            action,
            direction.unwrap_or(Direction::Egress),
            dest,
            protos.unwrap_or(0),
            ports.unwrap_or_default(),
        )
        .map_err(err)
    }

    /// Parse the short syntax with a leading `allow` / `deny`.
    ///
    /// # Errors
    /// [`PolicyError::Rule`] naming the rule and what is wrong.
    pub fn parse_with_action(text: &str) -> Result<Rule, PolicyError> {
        let t = text.trim_start();
        let (word, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let action = match word.to_ascii_lowercase().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            _ => {
                return Err(PolicyError::Rule {
                    rule: text.trim().to_owned(),
                    what: "must start with allow or deny".into(),
                })
            }
        };
        Rule::parse(action, rest).map_err(|e| match e {
            PolicyError::Rule { what, .. } => PolicyError::Rule {
                rule: text.trim().to_owned(),
                what,
            },
            other => other,
        })
    }
}

fn build(
    action: Action,
    direction: Direction,
    dest: &str,
    protos: u8,
    ports: Vec<(u16, u16)>,
) -> Result<Rule, String> {
    if !ports.is_empty() && protos == Proto::Icmp.bit() {
        return Err("ports given for icmp (ICMP has no ports)".into());
    }
    Ok(Rule {
        action,
        direction,
        dest: parse_dest(dest)?,
        protos,
        ports,
    })
}

/// `tcp`, `udp,icmp`, …: the bit set, or `None` when a part is not a protocol.
fn parse_protos(t: &str) -> Option<u8> {
    let mut bits = 0;
    for p in t.split(',') {
        bits |= match p {
            "tcp" => Proto::Tcp.bit(),
            "udp" => Proto::Udp.bit(),
            "icmp" => Proto::Icmp.bit(),
            _ => return None,
        };
    }
    Some(bits)
}

fn parse_ports(list: &str) -> Result<Vec<(u16, u16)>, String> {
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?} is not a port (0-65535)"))
    };
    list.split(',')
        .map(|part| {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!(
                    "port range {part} is empty (the first port is larger)"
                ));
            }
            Ok((lo, hi))
        })
        .collect()
}

fn parse_dest(s: &str) -> Result<Dest, String> {
    let lower = s.to_ascii_lowercase();
    if lower == "any" || lower == "*" {
        return Ok(Dest::Any);
    }
    if let Some(g) = lower.strip_prefix("group:") {
        return Group::from_name(g).map(Dest::Group).ok_or_else(|| {
            let names: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
            format!("unknown group {g:?}: expected one of {}", names.join(", "))
        });
    }
    let looks_numeric = lower
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
    if lower.contains(':') || lower.contains('/') || looks_numeric {
        let net: IpNetwork = lower
            .parse()
            .map_err(|e| format!("{s:?} is not an address or CIDR: {e}"))?;
        if net.network() != net.ip() {
            return Err(format!(
                "{s} has host bits set (the network is {}/{})",
                net.network(),
                net.prefix()
            ));
        }
        return Ok(Dest::Net(net));
    }
    if let Some(rest) = lower.strip_prefix("*.") {
        return Err(format!("write .{rest} for a domain and its subdomains"));
    }
    match lower.strip_prefix('.') {
        Some(rest) => Ok(Dest::Suffix(domain_name(rest)?)),
        None => Ok(Dest::Domain(domain_name(&lower)?)),
    }
}

/// A domain name as rules and pins hold it: lowercase, no trailing dot, valid labels.
fn domain_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    let bad = |why: &str| format!("{s:?} is not a domain name: {why}");
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("labels are 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("only letters, digits, '-' and '_' in labels"));
        }
    }
    Ok(name.to_owned())
}

/// `[policy]` of the config file (and the file `--policy FILE` names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `allow-all`, `none` or `safe`: its rules come after `rules`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_egress: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ingress: Option<Action>,
    pub rules: Vec<RuleConfig>,
}

/// A rule in the config file: a string in the short syntax, or a table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RuleConfig {
    Text(String),
    Table(RuleTable),
}

/// A rule as a table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Proto>,
    /// `"80"`, `"8000-8010"` or a number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

/// A port or a range in a rule table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u32),
    Text(String),
}

impl RuleConfig {
    /// The rule (named in errors as it was written).
    ///
    /// # Errors
    /// [`PolicyError::Rule`].
    pub fn compile(&self) -> Result<Rule, PolicyError> {
        match self {
            RuleConfig::Text(t) => Rule::parse_with_action(t),
            RuleConfig::Table(t) => {
                let ports: Vec<String> = t
                    .ports
                    .iter()
                    .map(|p| match p {
                        PortSpec::Number(n) => n.to_string(),
                        PortSpec::Text(s) => s.clone(),
                    })
                    .collect();
                let desc = format!(
                    "{{ action = {}, destination = {:?}, protocols = {:?}, ports = {:?} }}",
                    action_name(t.action),
                    t.destination,
                    t.protocols,
                    ports
                );
                let err = |what: String| PolicyError::Rule {
                    rule: desc.clone(),
                    what,
                };
                let ports = if ports.is_empty() {
                    Vec::new()
                } else {
                    parse_ports(&ports.join(",")).map_err(err)?
                };
                let protos = t.protocols.iter().fold(0, |b, p| b | p.bit());
                build(
                    t.action,
                    t.direction.unwrap_or(Direction::Egress),
                    t.destination.trim(),
                    protos,
                    ports,
                )
                .map_err(err)
            }
        }
    }
}

impl PolicyConfig {
    /// True when nothing is configured (everything allowed).
    pub fn is_empty(&self) -> bool {
        *self == PolicyConfig::default()
    }

    /// The policy: these rules, then the preset's; defaults as given, else the preset's,
    /// else allow.
    ///
    /// # Errors
    /// The first invalid rule ([`PolicyError::Rule`]) or an unknown preset.
    pub fn compile(&self) -> Result<Policy, PolicyError> {
        let base = match &self.preset {
            Some(name) => Preset::from_name(name)?.policy(),
            None => Policy::default(),
        };
        let mut rules = self
            .rules
            .iter()
            .map(RuleConfig::compile)
            .collect::<Result<Vec<_>, _>>()?;
        rules.extend(base.rules);
        Ok(Policy {
            rules,
            default_egress: self.default_egress.unwrap_or(base.default_egress),
            default_ingress: self.default_ingress.unwrap_or(base.default_ingress),
        })
    }
}
