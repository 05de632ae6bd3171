//! `[[ports]]` and `-p`: published ports (host clients reach services in the guest).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// TCP or UDP.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    #[default]
    Tcp,
    Udp,
}

impl PortProto {
    pub fn name(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// How the guest sees a host client of a published port.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAddress {
    /// The client's own address and port (routed via the gateway); a loopback client, or
    /// one of a family the guest lacks, appears as the gateway.
    #[default]
    Real,
    /// Every client appears as the gateway address (with the client's port where free).
    Gateway,
}

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Host address to listen on (`127.0.0.1` when absent).
    #[serde(default = "loopback")]
    pub host_bind: IpAddr,
    pub host_port: u16,
    /// Port in the guest (`host_port` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_port: Option<u16>,
    #[serde(default)]
    pub protocol: PortProto,
    #[serde(default)]
    pub client_address: ClientAddress,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl PortSpec {
    /// A TCP port published on loopback under the same number in the guest.
    pub fn tcp(host_port: u16) -> PortSpec {
        PortSpec {
            host_bind: loopback(),
            host_port,
            guest_port: None,
            protocol: PortProto::Tcp,
            client_address: ClientAddress::Real,
        }
    }

    /// The guest port.
    pub fn guest(&self) -> u16 {
        self.guest_port.unwrap_or(self.host_port)
    }

    /// Where the host listener binds.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_bind, self.host_port)
    }

    /// Parse one `-p` argument: `[BIND:]HOST_PORT[-END][:GUEST_PORT[-END]][/tcp|/udp]`
    /// (BIND an IPv4 address or `[IPv6]`); a range gives one spec per port.
    ///
    /// # Errors
    /// [`ConfigError::Publish`] naming the argument and what is wrong.
    pub fn parse_list(arg: &str) -> Result<Vec<PortSpec>, ConfigError> {
        let err = |what: &str| ConfigError::Publish {
            value: arg.to_owned(),
            reason: what.to_owned(),
        };
        let (body, protocol) = match arg.rsplit_once('/') {
            Some((b, "tcp")) => (b, PortProto::Tcp),
            Some((b, "udp")) => (b, PortProto::Udp),
            Some(_) => return Err(err("the protocol after '/' must be tcp or udp")),
            None => (arg, PortProto::Tcp),
        };
        // An IPv6 bind is bracketed: split it off first.
        let (bind, rest) = if let Some(r) = body.strip_prefix('[') {
            let (addr, after) = r
                .split_once(']')
                .ok_or_else(|| err("an IPv6 address needs its closing ']'"))?;
            let after = after
                .strip_prefix(':')
                .ok_or_else(|| err("a port must follow the bind address"))?;
            (Some(addr), after)
        } else {
            let parts: Vec<&str> = body.split(':').collect();
            match parts.as_slice() {
                [b, _, _] if b.contains('.') => (Some(*b), &body[b.len() + 1..]),
                [b, _] if b.contains('.') => (Some(*b), &body[b.len() + 1..]),
                _ => (None, body),
            }
        };
        let host_bind = match bind {
            Some(b) => b
                .parse::<IpAddr>()
                .map_err(|_| err(&format!("{b:?} is not an IP address")))?,
            None => loopback(),
        };
        let (host, guest) = match rest.split_once(':') {
            Some((h, g)) => (h, Some(g)),
            None => (rest, None),
        };
        let range = |s: &str| -> Result<(u16, u16), ConfigError> {
            let port = |p: &str| {
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| err(&format!("{p:?} is not a port (1-65535)")))
            };
            match s.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(err(&format!("the range {s} is empty")));
                    }
                    Ok((a, b))
                }
                None => port(s).map(|p| (p, p)),
            }
        };
        let (h0, h1) = range(host)?;
        let (g0, g1) = match guest {
            Some(g) => range(g)?,
            None => (h0, h1),
        };
        if h1 - h0 != g1 - g0 {
            return Err(err("the host and guest ranges differ in length"));
        }
        Ok((0..=h1 - h0)
            .map(|i| PortSpec {
                host_bind,
                host_port: h0 + i,
                guest_port: Some(g0 + i),
                protocol,
                client_address: ClientAddress::Real,
            })
            .collect())
    }
}

impl std::fmt::Display for PortSpec {
    /// `127.0.0.1:8080/tcp -> guest 80`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} -> guest {}",
            self.bind_addr(),
            self.protocol.name(),
            self.guest()
        )
    }
}

impl FromStr for ClientAddress {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<ClientAddress, ConfigError> {
        match s {
            "real" => Ok(ClientAddress::Real),
            "gateway" => Ok(ClientAddress::Gateway),
            _ => Err(ConfigError::Publish {
                value: s.to_owned(),
                reason: "client address must be real or gateway".into(),
            }),
        }
    }
}

/// Checks on the whole list: no two entries on the same host address, port and protocol.
pub(super) fn validate(ports: &[PortSpec]) -> Result<(), ConfigError> {
    for (i, p) in ports.iter().enumerate() {
        if p.host_port == 0 || p.guest() == 0 {
            return Err(ConfigError::Publish {
                value: p.to_string(),
                reason: "port 0 cannot be published".into(),
            });
        }
        if let Some(q) = ports[..i]
            .iter()
            .find(|q| q.bind_addr() == p.bind_addr() && q.protocol == p.protocol)
        {
            return Err(ConfigError::Publish {
                value: p.to_string(),
                reason: format!("{} is published twice (also as {q})", p.bind_addr()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> String {
        let v = PortSpec::parse_list(s).unwrap();
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn publish_syntax() {
        assert_eq!(one("8080"), "127.0.0.1:8080/tcp -> guest 8080");
        assert_eq!(one("8080:80"), "127.0.0.1:8080/tcp -> guest 80");
        assert_eq!(one("0.0.0.0:5353:53/udp"), "0.0.0.0:5353/udp -> guest 53");
        assert_eq!(
            one("198.51.100.7:8080"),
            "198.51.100.7:8080/tcp -> guest 8080"
        );
        assert_eq!(one("[::]:8080:80"), "[::]:8080/tcp -> guest 80");
        assert_eq!(one("[::1]:8080"), "[::1]:8080/tcp -> guest 8080");
        assert_eq!(
            one("8000-8002:9000-9002/tcp"),
            "127.0.0.1:8000/tcp -> guest 9000; 127.0.0.1:8001/tcp -> guest 9001; \
             127.0.0.1:8002/tcp -> guest 9002"
        );
        assert_eq!(PortSpec::parse_list("8000-8010").unwrap().len(), 11);
        for (bad, why) in [
            ("0", "is not a port"),
            ("70000", "is not a port"),
            ("80/sctp", "must be tcp or udp"),
            ("8010-8000", "is empty"),
            ("8000-8010:9000", "differ in length"),
            ("[::1:8080", "closing ']'"),
            ("300.1.1.1:80", "is not an IP address"),
            ("x:80", "is not a port"),
        ] {
            let e = PortSpec::parse_list(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let mut v = PortSpec::parse_list("8080").unwrap();
        v.extend(PortSpec::parse_list("8080:81").unwrap());
        let e = validate(&v).unwrap_err().to_string();
        assert!(e.contains("published twice"), "{e}");
        v.pop();
        v.extend(PortSpec::parse_list("8080/udp").unwrap());
        validate(&v).unwrap();
    }
}
