//! Configuration: the TOML file, its validation, and the per-slot network plan.
//!
//! # Theory of operation
//!
//! One ringnet process serves many microVMs; each guest is identified by a *slot*
//! (`0..=65535`). The operator writes one [`NetworkConfig`] (TOML, every field defaulted, so an
//! empty file is valid) and ringnet derives everything guest-specific from the slot number with
//! [`NetworkConfig::derive`], producing a validated [`SlotConfig`]. Nothing else in the crate
//! reads the TOML: downstream modules take a `SlotConfig`. Reading TOML (`NetworkConfig::load`,
//! `NetworkConfig::from_toml_str`) needs the `cli` feature (on by default); without it a
//! `NetworkConfig` is built in code, or deserialized with serde from the embedder's own format.
//!
//! Data flow: `TOML text ─from_toml_str/load→ NetworkConfig ─validate→ ─derive(slot, routes)→
//! SlotConfig ─guest_env_vars→ guest kernel/init`.
//!
//! ## Address plan per slot `s` (HI:LO = `s` as a big-endian `u16`)
//!
//! | item        | guest                                 | gateway (ringnet)        |
//! |-------------|---------------------------------------|--------------------------|
//! | MAC         | `02:6d:73:HI:LO:02`                   | `02:6d:73:HI:LO:01`      |
//! | IPv4 (/30)  | `pool.network() + 4·s + 2`            | guest − 1                |
//! | IPv6 (/64)  | `pool.network() + (s << 64) + 2`      | `::1` of the same /64    |
//!
//! The MACs are locally administered unicast (first octet `0x02`: U/L bit set, I/G bit clear,
//! IEEE 802). Each slot owns one /30 of `interface.ipv4_pool` and one /64 of
//! `interface.ipv6_pool`; a pool holds `2^(30 − prefix)` resp. `2^(64 − prefix)` slots, and a
//! slot outside it is an error, never a wrap-around. The pool base is always the pool's
//! network address, whatever host bits the file gave. Distinct slots therefore never share a
//! MAC, subnet or address (a property test checks this).
//!
//! Explicit `interface.mac`, `interface.ipv4_address` and `interface.ipv6_address` override the
//! derived guest values (the pool is then not consulted for that family):
//! - MAC: only the guest MAC is replaced; the gateway MAC stays derived, and the two must differ.
//! - IPv4: the guest sits in the /30 containing the address. The gateway is the *other* usable
//!   host of that /30: network+1, or network+2 when the guest is network+1. The network and
//!   broadcast addresses of the /30 are rejected.
//! - IPv6: the gateway is `::1` of the address's /64, or `::2` when the guest is `::1`. The
//!   Subnet-Router anycast address (`::0` of the /64, RFC 4291 §2.6.1) is rejected.
//!
//! ## Address families
//!
//! A family is *active* when its guest address is given explicitly or when the host can route
//! it ([`HostRoutes::probe`]: a `connect(2)` of an unbound UDP socket to a documentation address,
//! RFC 5737 / RFC 3849, which is a routing-table lookup and sends no packet). Probe results are
//! passed into `derive`, so derivation itself is pure (but for loading secret values) and tested for every combination. An
//! inactive family is `None` in the [`SlotConfig`]. With no active family at all (an offline
//! host and no explicit address) the slot still derives, with both `None`
//! ([`SlotConfig::is_offline`]): the guest gets a link, its MAC and MTU and the base variables
//! only, and [`crate::Network`] logs a warning. With IPv6 active the MTU must be at least
//! 1280 (RFC 8200 §5).
//!
//! ## Limits and validation
//!
//! [`NetworkConfig::validate`] runs on every load and again inside `derive` (the fields are
//! public, so a hand-built config gets the same checks): `interface.mtu` in `576..=65520`,
//! `env_prefix` matching `[A-Z_][A-Z0-9_]*`, non-zero counts and timeouts, a unicast non-zero
//! guest MAC. Unknown keys are rejected in every section. Each [`ConfigError`] names the field
//! and the offending value.
//!
//! ## Sections
//!
//! `[interface]`, `[egress]`, `[dns]` ([`DnsConfig`]), `[policy]`
//! ([`crate::policy::syntax`]), `[[ports]]` ([`PortSpec`]) and `[[secrets]]`
//! ([`crate::secrets::SecretSpec`]) and `[tls]` ([`crate::tls::TlsConfig`]: TLS
//! interception, its CA, leaf cache and upstream trust).
//!
//! ## Syscalls
//!
//! `open`/`read`/`close` in `NetworkConfig::load`; `socket`/`bind`/`connect`/`close` in
//! [`HostRoutes::probe`]; `open`/`read`/`close` of each `[[secrets]]` `value_file` (and a
//! lookup in the process environment for `value_from_env`) in `NetworkConfig::derive`.
//! Everything else is pure.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::policy::syntax::PolicyConfig;
use crate::policy::Policy;
use crate::secrets::{SecretSpec, Secrets};
use crate::tls::TlsConfig;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Name the guest is told (`{P}_HOST_ALIAS`) for reaching the host: the gateway's DNS
/// answers it with the gateway addresses (flows to them reach the host's loopback).
pub const HOST_ALIAS: &str = "host.ringnet.internal";

/// Highest slot number; slots are 16 bits because they are embedded in the MAC address.
pub const MAX_SLOT: u32 = u16::MAX as u32;

/// Allowed `interface.mtu` range.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=65520;

/// Smallest MTU with IPv6 active (RFC 8200 §5).
pub const IPV6_MIN_MTU: u32 = 1280;

/// Largest TCP buffer per flow and direction (64 MiB): windows beyond this gain nothing on
/// a local link, and a typo must not make every flow reserve gigabytes.
pub const MAX_TCP_BUFFER: usize = 64 << 20;

/// Prefix length of the per-slot IPv4 subnet.
pub const IPV4_SLOT_PREFIX: u8 = 30;

/// Prefix length of the per-slot IPv6 subnet.
pub const IPV6_SLOT_PREFIX: u8 = 64;

const DEFAULT_IPV4_POOL: Ipv4Network =
    match Ipv4Network::new_checked(Ipv4Addr::new(172, 16, 0, 0), 12) {
        Some(net) => net,
        None => panic!("172.16.0.0/12 is a valid network"),
    };

const DEFAULT_IPV6_POOL: Ipv6Network =
    match Ipv6Network::new_checked(Ipv6Addr::new(0xfd42, 0x6d73, 0x0062, 0, 0, 0, 0, 0), 48) {
        Some(net) => net,
        None => panic!("fd42:6d73:62::/48 is a valid network"),
    };

/// Everything that can be wrong with a configuration or a slot derivation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type or syntax
    /// (toml's message names the key and line).
    #[error("invalid configuration in {origin}{at}: {message}")]
    Parse {
        origin: String,
        /// ` line N (the line's text)`, when toml gives a position.
        at: String,
        /// toml's message, on one line.
        message: String,
    },
    /// A MAC address string is not six hex octets separated by `:` or `-`.
    #[error("invalid MAC address {value:?}: expected six hex octets separated by ':' or '-'")]
    MacSyntax { value: String },
    /// An egress driver name is not one of [`EgressDriver::ALL`].
    #[error("invalid egress driver {value:?}: expected auto, uring or epoll")]
    EgressDriver { value: String },
    /// `interface.mtu` is outside [`MTU_RANGE`].
    #[error("interface.mtu = {value} is out of range (576..=65520)")]
    MtuOutOfRange { value: u32 },
    /// IPv6 is active but `interface.mtu` is below [`IPV6_MIN_MTU`].
    #[error(
        "interface.mtu = {value} is below 1280, the IPv6 minimum (RFC 8200 §5), and IPv6 is active"
    )]
    MtuTooSmallForIpv6 { value: u32 },
    /// `env_prefix` is not a valid environment variable name prefix.
    #[error("env_prefix = {value:?} is invalid: {reason}")]
    EnvPrefix { value: String, reason: &'static str },
    /// A count or timeout that must be positive is zero.
    #[error("{field} = 0 is invalid: it must be at least 1")]
    ZeroLimit { field: &'static str },
    /// A size is above its maximum.
    #[error("{field} = {value} is too large: at most {max}")]
    TooLarge {
        field: &'static str,
        value: u64,
        max: u64,
    },
    /// `egress.idle_trim_ms` is neither 0 nor within [`IDLE_TRIM_RANGE_MS`].
    #[error("egress.idle_trim_ms = {value} is out of range: 0 (never) or 100..=3600000")]
    IdleTrim { value: u64 },
    /// `egress.uring_entries` is not within 8..=32768.
    #[error("egress.uring_entries = {value} is out of range: 8..=32768")]
    UringEntries { value: u32 },
    /// The explicit `interface.mac` cannot be a guest's MAC.
    #[error("interface.mac = {value} is not usable as a guest MAC: {reason}")]
    GuestMac {
        value: MacAddr,
        reason: &'static str,
    },
    /// An explicit `interface.ipv4_address` / `interface.ipv6_address` cannot be a guest's address.
    #[error("{field} = {value} is not usable as a guest address: {reason}")]
    GuestAddress {
        field: &'static str,
        value: IpAddr,
        reason: &'static str,
    },
    /// A `dns.servers` entry is not `ip` or `ip:port`.
    #[error("invalid DNS server {value:?}: expected an IP address or ip:port ([v6]:port)")]
    DnsServer { value: String },
    /// A `[dns.hosts]` name is not a domain name.
    #[error("dns.hosts: {name:?} is not a domain name")]
    DnsHost { name: String },
    /// A published port (`[[ports]]`, `-p`) is invalid.
    #[error("invalid published port {value:?}: {reason}")]
    Publish { value: String, reason: String },
    /// A `[policy]` rule or preset is invalid.
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// A `[[secrets]]` entry is invalid or its value cannot be loaded (the message names the
    /// secret and its source, never the value).
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretsError),
    /// The `[tls]` section is invalid (the message names the key).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsConfigError),
    /// The slot number exceeds [`MAX_SLOT`].
    #[error("slot {slot} is out of range (0..=65535)")]
    SlotOutOfRange { slot: u32 },
    /// The pool is smaller than one per-slot block or does not reach the slot.
    #[error("{field} {pool} holds {capacity} slots (/{block} blocks); slot {slot} is outside it")]
    SlotOutsidePool {
        field: &'static str,
        pool: String,
        capacity: u128,
        block: u8,
        slot: u32,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Guest TCP + UDP flows open at once, at most.
    pub max_connections: usize,
    /// Prefix of the guest environment variables (`{P}_NET`, ...): `[A-Z_][A-Z0-9_]*`.
    pub env_prefix: String,
    /// The guest-facing interface: addresses, pools, MTU.
    pub interface: InterfaceConfig,
    /// Host sockets carrying guest flows.
    pub egress: EgressConfig,
    /// The gateway's DNS service.
    pub dns: DnsConfig,
    /// Observation: the events that end the network (`[observe] terminate_on`).
    #[serde(skip_serializing_if = "crate::observe::ObserveConfig::is_empty")]
    pub observe: crate::observe::ObserveConfig,
    /// Who may talk to whom (nothing configured: everything allowed).
    #[serde(skip_serializing_if = "PolicyConfig::is_empty")]
    pub policy: PolicyConfig,
    /// Inbound TCP connections through published ports open at once, at most.
    pub max_inbound_connections: usize,
    /// Host peers of one published UDP port mapped at once, at most (the oldest is
    /// evicted).
    pub max_udp_peers: usize,
    /// Published ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Guest autoconfiguration at the gateway (DHCPv4, router advertisements, stateless
    /// DHCPv6; [`crate::autoconf`]). `false` for an embedder that configures the guest
    /// itself (from [`SlotConfig::guest_env_vars`]): those frames are then dropped and no
    /// advertisement is sent.
    pub autoconf: bool,
    /// `[[secrets]]`: credentials the guest holds only as placeholders ([`crate::secrets`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretSpec>,
    /// `[tls]`: TLS interception's CA and leaf certificates ([`crate::tls`]).
    #[serde(skip_serializing_if = "TlsConfig::is_default")]
    pub tls: TlsConfig,
    /// `[sandbox]`: seccomp filters and capabilities of ringnet's threads
    /// ([`crate::sandbox`]).
    #[serde(skip_serializing_if = "crate::sandbox::SandboxConfig::is_default")]
    pub sandbox: crate::sandbox::SandboxConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            max_connections: 1024,
            env_prefix: "RINGNET".to_owned(),
            interface: InterfaceConfig::default(),
            egress: EgressConfig::default(),
            dns: DnsConfig::default(),
            observe: crate::observe::ObserveConfig::default(),
            policy: PolicyConfig::default(),
            max_inbound_connections: 1024,
            max_udp_peers: 256,
            ports: Vec::new(),
            autoconf: true,
            secrets: Vec::new(),
            tls: TlsConfig::default(),
            sandbox: crate::sandbox::SandboxConfig::default(),
        }
    }
}

/// `[interface]`: the guest's link and addresses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Guest MAC; derived from the slot when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Link MTU, `576..=65520`; at least 1280 when IPv6 is active.
    pub mtu: u32,
    /// Guest IPv4 address; derived from `ipv4_pool` when absent. Setting it activates IPv4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// Pool carved into one /30 per slot.
    #[serde(with = "display_fromstr")]
    pub ipv4_pool: Ipv4Network,
    /// Guest IPv6 address; derived from `ipv6_pool` when absent. Setting it activates IPv6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<Ipv6Addr>,
    /// Pool carved into one /64 per slot.
    #[serde(with = "display_fromstr")]
    pub ipv6_pool: Ipv6Network,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            mac: None,
            mtu: 1500,
            ipv4_address: None,
            ipv4_pool: DEFAULT_IPV4_POOL,
            ipv6_address: None,
            ipv6_pool: DEFAULT_IPV6_POOL,
        }
    }
}

/// `egress.driver` and `--egress`: which egress implementation runs. A running driver
/// reports `Uring` or `Epoll` (`Driver::kind`); `Auto` is only ever asked for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDriver {
    /// `io_uring` when it can be set up, else epoll.
    #[default]
    Auto,
    Uring,
    Epoll,
}

impl EgressDriver {
    /// Every value, in the order `--help` lists them.
    pub const ALL: [EgressDriver; 3] =
        [EgressDriver::Auto, EgressDriver::Uring, EgressDriver::Epoll];

    /// The name in the config file and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            EgressDriver::Auto => "auto",
            EgressDriver::Uring => "uring",
            EgressDriver::Epoll => "epoll",
        }
    }
}

impl fmt::Display for EgressDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EgressDriver {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EgressDriver::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| ConfigError::EgressDriver {
                value: s.to_owned(),
            })
    }
}

/// `[egress]`: host sockets.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    pub driver: EgressDriver,
    /// Host TCP connect gives up after this long.
    pub connect_timeout_ms: u64,
    /// TCP flows whose host connect is in progress, at most (a share of
    /// `max_connections`): at the cap, the oldest pending connect is given up (the guest
    /// gets RST) so that a flood of connects to unreachable hosts cannot starve the rest.
    pub max_connecting: usize,
    /// A TCP flow whose guest has sent nothing for this long is reset: the guest is
    /// probed with keep-alives every quarter of it, so only a guest that vanished (or
    /// ignores its own connection) is affected. Also bounds an unanswered SYN-ACK.
    pub tcp_guest_timeout_ms: u64,
    /// A UDP flow with no traffic either way for this long is closed.
    pub udp_idle_timeout_ms: u64,
    /// UDP flows open at once, at most.
    pub max_udp_flows: usize,
    /// Guest→host buffering per TCP flow, in bytes: the receive window the guest sees
    /// (smoltcp's receive buffer) and the egress transmit ring, each this size.
    pub tcp_buffer_bytes: usize,
    /// Host→guest buffering per TCP flow, in bytes: smoltcp's send buffer (host bytes not
    /// yet acknowledged by the guest). Bigger than the other direction because host data
    /// lands in it straight from the host socket: it is all there is.
    pub tcp_to_guest_buffer_bytes: usize,
    /// After this long without traffic (no guest frame, no host socket event) the poll
    /// thread gives memory back: the frame pool's free slots, spare socket buffers and the
    /// heap's free memory ([`crate::stack`]); once per idle period. 0 never trims; else
    /// within [`IDLE_TRIM_RANGE_MS`]. Low values trim between the bursts of a slow trickle,
    /// which then pays page faults for every slot it reuses.
    pub idle_trim_ms: u64,
    /// io_uring submission queue entries (8..=32768; the kernel rounds up to a power of
    /// two). When the SQ is full the driver submits what it has queued and retries;
    /// `uring_sq_full` counts those times. Small values only for testing that path.
    pub uring_entries: u32,
    /// Evictions a full flow table may make per second, per table (TCP pending connects at
    /// `max_connecting`, UDP/ICMP flows at `max_udp_flows`), with a burst of as many. A
    /// flood of new flows to distinct destinations would otherwise cost a host socket
    /// (socket, connect, close: tens of µs of kernel time) per frame and starve the flows
    /// already open; beyond the budget the new flow's first frame is dropped silently
    /// (`tcp_syn_shed`, `udp_flow_shed`) and the guest retries. A table that is not full
    /// never sheds. 0: no budget (every new flow evicts).
    pub evictions_per_sec: u32,
    /// Host connects that may fail per second (refused, unreachable, timed out), with a
    /// burst of as many; a connect counts from its SYN until it succeeds, so those in
    /// progress count too. A flood of SYNs to ports where nothing listens keeps no connect
    /// pending, so `max_connecting` never acts, yet each SYN costs a host socket; once this
    /// budget is spent, new SYNs are shed (`tcp_syn_shed`) until it refills, and a
    /// retransmitted SYN gets in on the retry budget (`tcp_syn_retry_admitted`). UDP and
    /// ICMP echo flows have a budget as large for host sockets that fail to open (a failed
    /// open keeps no flow, so every datagram would try again): beyond it, datagrams to new
    /// destinations are dropped (`udp_flow_shed`). A guest whose connects succeed is never
    /// affected. 0: no budget.
    pub failed_connects_per_sec: u32,
    /// CPU to pin the poll thread to; unpinned when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<usize>,
}

/// Allowed `egress.idle_trim_ms` other than 0 (never): 100 ms to 1 hour.
pub const IDLE_TRIM_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            driver: EgressDriver::Auto,
            connect_timeout_ms: 10_000,
            max_connecting: 256,
            tcp_guest_timeout_ms: 60_000,
            udp_idle_timeout_ms: 60_000,
            max_udp_flows: 1024,
            tcp_buffer_bytes: 256 * 1024,
            tcp_to_guest_buffer_bytes: 1024 * 1024,
            idle_trim_ms: 2000,
            uring_entries: 4096,
            evictions_per_sec: 1000,
            failed_connects_per_sec: 1000,
            cpu: None,
        }
    }
}

/// Which address families the host can route (input to [`NetworkConfig::derive`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct HostRoutes {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl HostRoutes {
    /// Asks the kernel's routing table whether each family has a route to the internet, by
    /// `connect(2)`ing a UDP socket to `192.0.2.1:443` (RFC 5737) resp. `[2001:db8::1]:443`
    /// (RFC 3849). UDP connect only selects a route and source address; no packet is sent.
    /// Any failure (no route, IPv6 disabled) reports the family as unroutable.
    #[must_use]
    pub fn probe() -> HostRoutes {
        let routable = |bind: SocketAddr, target: SocketAddr| -> bool {
            let result = UdpSocket::bind(bind).and_then(|sock| sock.connect(target));
            if let Err(e) = &result {
                tracing::debug!(%target, error = %e, "host route probe failed");
            }
            result.is_ok()
        };
        HostRoutes {
            ipv4: routable(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 443)),
            ),
            ipv6: routable(
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
                SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 443)),
            ),
        }
    }
}

/// Everything one guest's network needs, derived and validated by [`NetworkConfig::derive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotConfig {
    pub slot: u16,
    pub guest_mac: MacAddr,
    pub gateway_mac: MacAddr,
    pub mtu: u32,
    /// `None` when IPv4 is inactive.
    pub ipv4: Option<Ipv4Slot>,
    /// `None` when IPv6 is inactive.
    pub ipv6: Option<Ipv6Slot>,
    pub max_connections: usize,
    pub env_prefix: String,
    pub egress: EgressConfig,
    pub dns: DnsConfig,
    /// The compiled `[policy]`.
    pub policy: Policy,
    pub max_inbound_connections: usize,
    pub max_udp_peers: usize,
    pub ports: Vec<PortSpec>,
    /// Answer DHCPv4, router solicitations and DHCPv6, and advertise the router
    /// (`NetworkConfig::autoconf`).
    pub autoconf: bool,
    /// The loaded `[[secrets]]`, values included (printed redacted).
    pub secrets: Arc<Secrets>,
    /// `[tls]` as configured (the CA itself is built by [`crate::Network::new`]).
    pub tls: TlsConfig,
    /// `[sandbox]` as configured.
    pub sandbox: crate::sandbox::SandboxConfig,
}

impl SlotConfig {
    /// True when neither family is active (the host routes neither and no address is set
    /// explicitly): the guest gets a link but no addresses, and only the base variables.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }

    /// The environment the guest's init reads to configure `eth0`, in this order:
    /// `{P}_NET`, `{P}_HOST_ALIAS`, then `{P}_NET_IPV4` and `{P}_NET_IPV6` for active families.
    /// The gateway is also the guest's DNS server. Then one `(env_var, placeholder)` per
    /// secret, in configuration order (the guest never gets a real value).
    #[must_use]
    pub fn guest_env_vars(&self) -> Vec<(String, String)> {
        let p = &self.env_prefix;
        let mut vars = vec![
            (
                format!("{p}_NET"),
                format!("iface=eth0,mac={},mtu={}", self.guest_mac, self.mtu),
            ),
            (format!("{p}_HOST_ALIAS"), HOST_ALIAS.to_owned()),
        ];
        let family = |name: &str, guest: IpAddr, len: u8, gw: IpAddr| {
            let value = format!("addr={guest}/{len},gw={gw},dns={gw}");
            (format!("{p}_NET_{name}"), value)
        };
        if let Some(v4) = &self.ipv4 {
            vars.push(family(
                "IPV4",
                v4.guest.into(),
                v4.prefix_len,
                v4.gateway.into(),
            ));
        }
        if let Some(v6) = &self.ipv6 {
            vars.push(family(
                "IPV6",
                v6.guest.into(),
                v6.prefix_len,
                v6.gateway.into(),
            ));
        }
        vars.extend(self.secrets.guest_env_vars());
        vars
    }
}

impl NetworkConfig {
    /// Parses and validates a TOML document. Needs the `cli` feature.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML, unknown keys or bad values; any
    /// [`NetworkConfig::validate`] error.
    #[cfg(any(feature = "cli", test))]
    pub fn from_toml_str(text: &str) -> Result<NetworkConfig, ConfigError> {
        Self::parse(text, "<string>")
    }

    /// Reads, parses and validates the TOML file at `path`. Needs the `cli` feature.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read; otherwise as
    /// [`NetworkConfig::from_toml_str`], with the path in the message.
    #[cfg(any(feature = "cli", test))]
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<NetworkConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    #[cfg(any(feature = "cli", test))]
    fn parse(text: &str, origin: &str) -> Result<NetworkConfig, ConfigError> {
        let config: NetworkConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or_else(String::new, |span| {
                let line_no = text[..span.start.min(text.len())].matches('\n').count();
                let line = text.lines().nth(line_no).unwrap_or("").trim();
                format!(" line {} ({line})", line_no + 1)
            });
            ConfigError::Parse {
                origin: origin.to_owned(),
                at,
                message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not depend on the slot or the host's routes.
    ///
    /// # Errors
    /// The first of [`ConfigError::MtuOutOfRange`], [`ConfigError::EnvPrefix`],
    /// [`ConfigError::ZeroLimit`], [`ConfigError::GuestMac`] that applies.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let iface = &self.interface;
        if !MTU_RANGE.contains(&iface.mtu) {
            return Err(ConfigError::MtuOutOfRange { value: iface.mtu });
        }
        validate_env_prefix(&self.env_prefix)?;
        let egress = &self.egress;
        let zero = [
            ("max_connections", self.max_connections == 0),
            ("max_inbound_connections", self.max_inbound_connections == 0),
            ("max_udp_peers", self.max_udp_peers == 0),
            ("egress.connect_timeout_ms", egress.connect_timeout_ms == 0),
            ("egress.max_connecting", egress.max_connecting == 0),
            (
                "egress.tcp_guest_timeout_ms",
                egress.tcp_guest_timeout_ms == 0,
            ),
            (
                "egress.udp_idle_timeout_ms",
                egress.udp_idle_timeout_ms == 0,
            ),
            ("egress.max_udp_flows", egress.max_udp_flows == 0),
            ("egress.tcp_buffer_bytes", egress.tcp_buffer_bytes == 0),
            (
                "egress.tcp_to_guest_buffer_bytes",
                egress.tcp_to_guest_buffer_bytes == 0,
            ),
        ];
        if let Some(&(field, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(ConfigError::ZeroLimit { field });
        }
        for (field, value) in [
            ("egress.tcp_buffer_bytes", egress.tcp_buffer_bytes),
            (
                "egress.tcp_to_guest_buffer_bytes",
                egress.tcp_to_guest_buffer_bytes,
            ),
        ] {
            if value > MAX_TCP_BUFFER {
                return Err(ConfigError::TooLarge {
                    field,
                    value: value as u64,
                    max: MAX_TCP_BUFFER as u64,
                });
            }
        }
        if egress.idle_trim_ms != 0 && !IDLE_TRIM_RANGE_MS.contains(&egress.idle_trim_ms) {
            return Err(ConfigError::IdleTrim {
                value: egress.idle_trim_ms,
            });
        }
        if !(8..=32768).contains(&egress.uring_entries) {
            return Err(ConfigError::UringEntries {
                value: egress.uring_entries,
            });
        }
        self.dns.validate()?;
        self.policy.compile()?;
        ports::validate(&self.ports)?;
        crate::secrets::config::validate(&self.secrets)?;
        crate::tls::config::validate(&self.tls)?;
        if let Some(mac) = iface.mac {
            if mac.is_multicast() {
                return Err(ConfigError::GuestMac {
                    value: mac,
                    reason: "it is a multicast/broadcast address",
                });
            }
            if mac.is_zero() {
                return Err(ConfigError::GuestMac {
                    value: mac,
                    reason: "it is all zeros",
                });
            }
        }
        Ok(())
    }

    /// Derives slot `slot`'s network plan (see the module docs for the address plan).
    /// `routes` is normally [`HostRoutes::probe`]; it decides which families are active unless
    /// an explicit address activates a family regardless. No active family is not an error:
    /// see [`SlotConfig::is_offline`].
    ///
    /// # Errors
    /// Any [`NetworkConfig::validate`] error; [`ConfigError::SlotOutOfRange`],
    /// [`ConfigError::SlotOutsidePool`], [`ConfigError::GuestAddress`], [`ConfigError::GuestMac`]
    /// (explicit MAC equal to the gateway's), [`ConfigError::MtuTooSmallForIpv6`].
    pub fn derive(&self, slot: u32, routes: HostRoutes) -> Result<SlotConfig, ConfigError> {
        self.validate()?;
        let slot16 = u16::try_from(slot).map_err(|_| ConfigError::SlotOutOfRange { slot })?;
        let iface = &self.interface;

        let gateway_mac = MacAddr::for_slot(slot16, 0x01);
        let guest_mac = iface.mac.unwrap_or(MacAddr::for_slot(slot16, 0x02));
        if guest_mac == gateway_mac {
            return Err(ConfigError::GuestMac {
                value: guest_mac,
                reason: "it equals the gateway MAC of this slot",
            });
        }

        let ipv4 = match (iface.ipv4_address, routes.ipv4) {
            (Some(addr), _) => Some(explicit_ipv4(addr)?),
            (None, true) => Some(derive_ipv4(iface.ipv4_pool, slot)?),
            (None, false) => None,
        };
        let ipv6 = match (iface.ipv6_address, routes.ipv6) {
            (Some(addr), _) => Some(explicit_ipv6(addr)?),
            (None, true) => Some(derive_ipv6(iface.ipv6_pool, slot)?),
            (None, false) => None,
        };
        if ipv6.is_some() && iface.mtu < IPV6_MIN_MTU {
            return Err(ConfigError::MtuTooSmallForIpv6 { value: iface.mtu });
        }

        Ok(SlotConfig {
            slot: slot16,
            guest_mac,
            gateway_mac,
            mtu: iface.mtu,
            ipv4,
            ipv6,
            max_connections: self.max_connections,
            env_prefix: self.env_prefix.clone(),
            egress: self.egress.clone(),
            dns: self.dns.clone(),
            policy: self.policy.compile()?,
            max_inbound_connections: self.max_inbound_connections,
            max_udp_peers: self.max_udp_peers,
            ports: self.ports.clone(),
            autoconf: self.autoconf,
            secrets: Arc::new(Secrets::load(&self.secrets)?),
            tls: self.tls.clone(),
            sandbox: self.sandbox.clone(),
        })
    }
}

fn validate_env_prefix(prefix: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::EnvPrefix {
        value: prefix.to_owned(),
        reason,
    };
    let first = prefix.bytes().next().ok_or_else(|| bad("it is empty"))?;
    if first.is_ascii_digit() {
        return Err(bad("it starts with a digit"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad("only A-Z, 0-9 and '_' are allowed"));
    }
    Ok(())
}

mod dns;
mod mac;
mod ports;
mod slot;
#[cfg(test)]
mod tests;

pub use dns::{resolv_conf_servers, DnsConfig, DnsServer, HostAddrs};
use mac::display_fromstr;
pub use mac::MacAddr;
pub use ports::{ClientAddress, PortProto, PortSpec};
use slot::{derive_ipv4, derive_ipv6, explicit_ipv4, explicit_ipv6};
pub use slot::{Ipv4Slot, Ipv6Slot};
