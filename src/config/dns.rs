//! `[dns]`: the gateway's DNS service.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// An upstream DNS server: `ip` (port 53) or `ip:port` (`[v6]:port` for IPv6).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsServer(pub SocketAddr);

impl FromStr for DnsServer {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<DnsServer, ConfigError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(DnsServer(SocketAddr::new(ip, 53)));
        }
        s.parse::<SocketAddr>()
            .map(DnsServer)
            .map_err(|_| ConfigError::DnsServer {
                value: s.to_owned(),
            })
    }
}

impl std::fmt::Display for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One address or a list, for `[dns.hosts]` entries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum HostAddrs {
    One(IpAddr),
    Many(Vec<IpAddr>),
}

impl HostAddrs {
    pub fn to_vec(&self) -> Vec<IpAddr> {
        match self {
            HostAddrs::One(a) => vec![*a],
            HostAddrs::Many(v) => v.clone(),
        }
    }
}

/// `[dns]`: queries from the guest to a gateway address, port 53 (UDP and TCP), are
/// answered by ringnet: static records, else forwarded to `servers` in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Upstream servers (`ip` or `ip:port`), tried in order. Empty: the `nameserver`
    /// lines of the host's `/etc/resolv.conf`, read when the network is created (loopback
    /// ones included: ringnet runs in the host's namespace).
    #[serde(with = "servers_serde")]
    pub servers: Vec<DnsServer>,
    /// One try of one server gives up after this long; the next server is tried.
    pub timeout_ms: u64,
    /// Upstream answers naming private, loopback, link-local, CGNAT or unspecified
    /// addresses become NXDOMAIN unless a policy rule allows the address explicitly.
    pub rebind_protection: bool,
    /// Queries in flight upstream, at most (more are dropped and counted).
    pub max_pending: usize,
    /// Guest queries taken per second (a burst of as many), over UDP and TCP together;
    /// more are dropped before they are parsed (`dns_shed`) and the guest's resolver
    /// retries. A query flood would otherwise cost parsing, forwarding and an answer per
    /// frame and starve the guest's other traffic. 0: no limit.
    pub queries_per_sec: u32,
    /// Name → address pins kept for domain rules, at most.
    pub max_pins: usize,
    /// Static records: name → address or addresses (A and AAAA).
    pub hosts: BTreeMap<String, HostAddrs>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout_ms: 5_000,
            rebind_protection: true,
            max_pending: 1024,
            queries_per_sec: 2000,
            max_pins: 4096,
            hosts: BTreeMap::new(),
        }
    }
}

impl DnsConfig {
    /// The static records as the resolver takes them: lowercase names without the
    /// trailing dot.
    pub fn static_hosts(&self) -> Vec<(String, Vec<IpAddr>)> {
        self.hosts
            .iter()
            .map(|(name, a)| {
                let n = name.trim_end_matches('.').to_ascii_lowercase();
                (n, a.to_vec())
            })
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, zero) in [
            ("dns.timeout_ms", self.timeout_ms == 0),
            ("dns.max_pending", self.max_pending == 0),
            ("dns.max_pins", self.max_pins == 0),
        ] {
            if zero {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        for name in self.hosts.keys() {
            let n = name.trim_end_matches('.');
            let ok = !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !ok {
                return Err(ConfigError::DnsHost { name: name.clone() });
            }
        }
        Ok(())
    }
}

/// The `nameserver` addresses of a resolv.conf text (port 53), in order; lines that do not
/// parse (a scoped link-local address, a typo) are skipped.
pub fn resolv_conf_servers(text: &str) -> Vec<DnsServer> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
        .collect()
}

mod servers_serde {
    use super::DnsServer;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[DnsServer], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DnsServer>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_ports() {
        let p = |s: &str| s.parse::<DnsServer>().map(|d| d.0.to_string());
        assert_eq!(p("127.0.0.53").unwrap(), "127.0.0.53:53");
        assert_eq!(p("198.51.100.7:5353").unwrap(), "198.51.100.7:5353");
        assert_eq!(p("2001:db8::7").unwrap(), "[2001:db8::7]:53");
        assert_eq!(p("[2001:db8::7]:5353").unwrap(), "[2001:db8::7]:5353");
        let e = p("dns.example").unwrap_err().to_string();
        assert!(e.contains("\"dns.example\""), "{e}");
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# comment\nsearch example.test\nnameserver 127.0.0.53\n\
                    nameserver fe80::1%eth0\nnameserver   2001:db8::53 \noptions edns0\n";
        let got: Vec<String> = resolv_conf_servers(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["127.0.0.53:53", "[2001:db8::53]:53"]);
    }
}
