//! Tests for the configuration module: parsing, validation, slot derivation, env vars.

use super::*;
use proptest::prelude::*;

const BOTH: HostRoutes = HostRoutes {
    ipv4: true,
    ipv6: true,
};
const V4_ONLY: HostRoutes = HostRoutes {
    ipv4: true,
    ipv6: false,
};
const V6_ONLY: HostRoutes = HostRoutes {
    ipv4: false,
    ipv6: true,
};
const NEITHER: HostRoutes = HostRoutes {
    ipv4: false,
    ipv6: false,
};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test literal")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("test literal")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test literal")
}

fn with_v4_pool(pool: &str) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.interface.ipv4_pool = pool.parse().expect("test literal");
    config
}

fn with_v6_pool(pool: &str) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.interface.ipv6_pool = pool.parse().expect("test literal");
    config
}

fn parse_err(text: &str) -> String {
    NetworkConfig::from_toml_str(text)
        .expect_err("configuration should be rejected")
        .to_string()
}

fn derive_err(config: &NetworkConfig, slot: u32, routes: HostRoutes) -> String {
    config
        .derive(slot, routes)
        .expect_err("derivation should fail")
        .to_string()
}

// ---- loading ---------------------------------------------------------------------------

#[test]
fn empty_file_gives_defaults() {
    let config = NetworkConfig::from_toml_str("").unwrap();
    assert_eq!(config, NetworkConfig::default());
    assert_eq!(config.interface.mtu, 1500);
    assert_eq!(config.interface.ipv4_pool.to_string(), "172.16.0.0/12");
    assert_eq!(config.interface.ipv6_pool.to_string(), "fd42:6d73:62::/48");
    assert_eq!(config.max_connections, 1024);
    assert_eq!(config.env_prefix, "RINGNET");
    assert_eq!(config.egress.driver, EgressDriver::Auto);
    assert_eq!(config.egress.connect_timeout_ms, 10_000);
    assert_eq!(config.egress.udp_idle_timeout_ms, 60_000);
    assert_eq!(config.egress.max_udp_flows, 1024);
    assert_eq!(config.egress.tcp_buffer_bytes, 262_144);
    assert_eq!(config.egress.tcp_to_guest_buffer_bytes, 1_048_576);
    assert_eq!(config.egress.idle_trim_ms, 2000);
    assert_eq!(config.egress.cpu, None);
}

const FULL: &str = r#"
max_connections = 10
env_prefix = "VM_1"

[interface]
mac = "02-AA-bb-00-00-07"
mtu = 9000
ipv4_address = "10.9.0.6"
ipv4_pool = "10.0.0.0/16"
ipv6_address = "fd00:1:2:3::10"
ipv6_pool = "fd00:1::/32"

[egress]
driver = "epoll"
connect_timeout_ms = 500
udp_idle_timeout_ms = 2000
max_udp_flows = 7
tcp_buffer_bytes = 65536
tcp_to_guest_buffer_bytes = 131072
idle_trim_ms = 5000
cpu = 3
"#;

#[test]
fn full_file_parses_and_round_trips() {
    let config = NetworkConfig::from_toml_str(FULL).unwrap();
    assert_eq!(config.max_connections, 10);
    assert_eq!(config.env_prefix, "VM_1");
    assert_eq!(config.interface.mac, Some(mac("02:aa:bb:00:00:07")));
    assert_eq!(config.interface.mtu, 9000);
    assert_eq!(config.interface.ipv4_address, Some(v4("10.9.0.6")));
    assert_eq!(config.interface.ipv4_pool.to_string(), "10.0.0.0/16");
    assert_eq!(config.interface.ipv6_address, Some(v6("fd00:1:2:3::10")));
    assert_eq!(config.interface.ipv6_pool.to_string(), "fd00:1::/32");
    assert_eq!(config.egress.driver, EgressDriver::Epoll);
    assert_eq!(config.egress.connect_timeout_ms, 500);
    assert_eq!(config.egress.udp_idle_timeout_ms, 2000);
    assert_eq!(config.egress.max_udp_flows, 7);
    assert_eq!(config.egress.tcp_buffer_bytes, 65536);
    assert_eq!(config.egress.tcp_to_guest_buffer_bytes, 131072);
    assert_eq!(config.egress.idle_trim_ms, 5000);
    assert_eq!(config.egress.cpu, Some(3));

    let text = toml::to_string(&config).unwrap();
    assert_eq!(NetworkConfig::from_toml_str(&text).unwrap(), config);
    let defaults = toml::to_string(&NetworkConfig::default()).unwrap();
    assert_eq!(
        NetworkConfig::from_toml_str(&defaults).unwrap(),
        NetworkConfig::default()
    );
}

#[test]
fn load_reads_a_file_and_names_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("ringnet-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringnet.toml");
    std::fs::write(&path, "[interface]\nmtu = 1400\n").unwrap();
    assert_eq!(NetworkConfig::load(&path).unwrap().interface.mtu, 1400);

    std::fs::write(&path, "[interface]\nmtu = 70000\n").unwrap();
    let msg = NetworkConfig::load(&path).unwrap_err().to_string();
    assert!(msg.contains("interface.mtu = 70000"), "{msg}");

    std::fs::write(&path, "mtu = 1400\n").unwrap();
    let msg = NetworkConfig::load(&path).unwrap_err().to_string();
    assert!(msg.contains("ringnet.toml") && msg.contains("mtu"), "{msg}");

    std::fs::remove_dir_all(&dir).unwrap();
    let msg = NetworkConfig::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("cannot read") && msg.contains("ringnet.toml"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_rejected_in_every_section() {
    for (text, key) in [
        ("bogus = 1", "bogus"),
        ("[interface]\nmtuu = 1500", "mtuu"),
        ("[egress]\ndriverr = \"auto\"", "driverr"),
        ("[dns]\nserver = \"1.1.1.1\"", "server"),
        ("[policy]\nrule = []", "rule"),
        ("[[ports]]\nhost_port = 80\nbogus = 1", "bogus"),
    ] {
        let msg = parse_err(text);
        assert!(msg.contains(key), "{text:?}: {msg}");
    }
}

#[test]
fn unknown_driver_is_rejected() {
    let msg = parse_err("[egress]\ndriver = \"dpdk\"");
    assert!(msg.contains("driver") && msg.contains("dpdk"), "{msg}");
    for (name, driver) in [
        ("auto", EgressDriver::Auto),
        ("uring", EgressDriver::Uring),
        ("epoll", EgressDriver::Epoll),
    ] {
        let config =
            NetworkConfig::from_toml_str(&format!("[egress]\ndriver = \"{name}\"")).unwrap();
        assert_eq!(config.egress.driver, driver);
    }
    for driver in EgressDriver::ALL {
        assert_eq!(driver.to_string().parse::<EgressDriver>().unwrap(), driver);
    }
    let e = "fast".parse::<EgressDriver>().unwrap_err().to_string();
    assert!(e.contains("\"fast\"") && e.contains("epoll"), "{e}");
}

#[test]
fn bad_values_name_field_and_value() {
    for (text, field, value) in [
        (
            "[interface]\nmac = \"02:6d:73:00:00\"",
            "mac",
            "02:6d:73:00:00",
        ),
        (
            "[interface]\nipv4_address = \"10.0.0.256\"",
            "ipv4_address",
            "10.0.0.256",
        ),
        (
            "[interface]\nipv6_address = \"fd00::g\"",
            "ipv6_address",
            "fd00::g",
        ),
        (
            "[interface]\nipv4_pool = \"10.0.0.0/33\"",
            "ipv4_pool",
            "10.0.0.0/33",
        ),
        (
            "[interface]\nipv6_pool = \"fd00::/129\"",
            "ipv6_pool",
            "fd00::/129",
        ),
        (
            "[interface]\nipv6_pool = \"10.0.0.0/8\"",
            "ipv6_pool",
            "10.0.0.0/8",
        ),
        ("[interface]\nmtu = \"big\"", "mtu", "big"),
        ("max_connections = -1", "max_connections", "-1"),
    ] {
        let msg = parse_err(text);
        assert!(
            msg.contains(field) && msg.contains(value),
            "{text:?}: {msg}"
        );
    }
}

#[test]
fn mtu_out_of_range() {
    assert_eq!(
        parse_err("[interface]\nmtu = 70000"),
        "interface.mtu = 70000 is out of range (576..=65520)"
    );
    assert!(parse_err("[interface]\nmtu = 575").contains("interface.mtu = 575"));
    for ok in [576, 65520] {
        let config = NetworkConfig::from_toml_str(&format!("[interface]\nmtu = {ok}")).unwrap();
        assert_eq!(config.interface.mtu, ok);
    }
}

#[test]
fn env_prefix_is_checked() {
    for bad in ["", "ringnet", "1VM", "RING-NET", "RÏNG"] {
        let msg = parse_err(&format!("env_prefix = \"{bad}\""));
        assert!(
            msg.contains("env_prefix") && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
    }
    for ok in ["A", "_X", "VM_01", "R2D2"] {
        let config = NetworkConfig::from_toml_str(&format!("env_prefix = \"{ok}\"")).unwrap();
        assert_eq!(config.env_prefix, ok);
    }
}

#[test]
fn zero_limits_are_rejected() {
    for (text, field) in [
        ("max_connections = 0", "max_connections"),
        (
            "[egress]\nconnect_timeout_ms = 0",
            "egress.connect_timeout_ms",
        ),
        (
            "[egress]\nudp_idle_timeout_ms = 0",
            "egress.udp_idle_timeout_ms",
        ),
        ("[egress]\nmax_udp_flows = 0", "egress.max_udp_flows"),
        ("[egress]\ntcp_buffer_bytes = 0", "egress.tcp_buffer_bytes"),
        (
            "[egress]\ntcp_to_guest_buffer_bytes = 0",
            "egress.tcp_to_guest_buffer_bytes",
        ),
    ] {
        let msg = parse_err(text);
        assert_eq!(
            msg,
            format!("{field} = 0 is invalid: it must be at least 1")
        );
    }
}

#[test]
fn idle_trim_is_zero_or_in_range() {
    for ok in [0, 100, 2000, 3_600_000] {
        let text = format!("[egress]\nidle_trim_ms = {ok}");
        let config = NetworkConfig::from_toml_str(&text).unwrap();
        assert_eq!(config.egress.idle_trim_ms, ok);
    }
    for bad in [1, 99, 3_600_001] {
        let msg = parse_err(&format!("[egress]\nidle_trim_ms = {bad}"));
        assert_eq!(
            msg,
            format!("egress.idle_trim_ms = {bad} is out of range: 0 (never) or 100..=3600000")
        );
    }
}

#[test]
fn uring_entries_in_range() {
    assert_eq!(NetworkConfig::default().egress.uring_entries, 4096);
    for ok in [8, 100, 32768] {
        let text = format!("[egress]\nuring_entries = {ok}");
        let config = NetworkConfig::from_toml_str(&text).unwrap();
        assert_eq!(config.egress.uring_entries, ok);
    }
    for bad in [0, 7, 32769] {
        let msg = parse_err(&format!("[egress]\nuring_entries = {bad}"));
        assert_eq!(
            msg,
            format!("egress.uring_entries = {bad} is out of range: 8..=32768")
        );
    }
}

#[test]
fn unusable_guest_mac_is_rejected() {
    let msg = parse_err("[interface]\nmac = \"01:00:5e:00:00:01\"");
    assert!(msg.contains("interface.mac = 01:00:5e:00:00:01") && msg.contains("multicast"));
    let msg = parse_err("[interface]\nmac = \"ff:ff:ff:ff:ff:ff\"");
    assert!(msg.contains("interface.mac = ff:ff:ff:ff:ff:ff"), "{msg}");
    let msg = parse_err("[interface]\nmac = \"00:00:00:00:00:00\"");
    assert!(msg.contains("interface.mac = 00:00:00:00:00:00"), "{msg}");
}

// ---- MAC addresses ---------------------------------------------------------------------

#[test]
fn mac_parse_and_display() {
    let expected = MacAddr([0x02, 0x6d, 0x73, 0x00, 0x00, 0x02]);
    assert_eq!(mac("02:6d:73:00:00:02"), expected);
    assert_eq!(mac("02-6D-73-00-00-02"), expected);
    assert_eq!(mac("02:6D:73:00:00:02").to_string(), "02:6d:73:00:00:02");
    assert_eq!(format!("{expected:?}"), "MacAddr(02:6d:73:00:00:02)");
    for bad in [
        "",
        "02:6d:73:00:00",
        "02:6d:73:00:00:02:03",
        "02:6d:73-00:00:02",
        "2:6d:73:00:00:02",
        "002:6d:73:00:00:02",
        "02:6d:73:00:00:0g",
        "+2:6d:73:00:00:02",
        "02:6d:73:00:00:02:",
        "026d73000002",
    ] {
        let err = bad.parse::<MacAddr>().unwrap_err();
        assert!(matches!(err, ConfigError::MacSyntax { .. }), "{bad}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

// ---- slot derivation -------------------------------------------------------------------

#[test]
fn ipv4_slot_0_and_1() {
    let config = NetworkConfig::default();
    let s0 = config.derive(0, BOTH).unwrap().ipv4.unwrap();
    assert_eq!(
        (s0.guest, s0.gateway, s0.prefix_len),
        (v4("172.16.0.2"), v4("172.16.0.1"), 30)
    );
    let s1 = config.derive(1, BOTH).unwrap().ipv4.unwrap();
    assert_eq!((s1.guest, s1.gateway), (v4("172.16.0.6"), v4("172.16.0.5")));
    assert_eq!(s1.subnet().to_string(), "172.16.0.4/30");
}

#[test]
fn ipv4_small_pool_capacity() {
    let config = with_v4_pool("172.31.240.0/24");
    assert_eq!(
        config.derive(0, V4_ONLY).unwrap().ipv4.unwrap().guest,
        v4("172.31.240.2")
    );
    let last = config.derive(63, V4_ONLY).unwrap().ipv4.unwrap();
    assert_eq!(
        (last.guest, last.gateway),
        (v4("172.31.240.254"), v4("172.31.240.253"))
    );
    assert_eq!(
        derive_err(&config, 64, V4_ONLY),
        "interface.ipv4_pool 172.31.240.0/24 holds 64 slots (/30 blocks); slot 64 is outside it"
    );
}

#[test]
fn ipv4_pool_smaller_than_a_slot() {
    let config = with_v4_pool("10.0.0.0/31");
    assert_eq!(
        derive_err(&config, 0, V4_ONLY),
        "interface.ipv4_pool 10.0.0.0/31 holds 0 slots (/30 blocks); slot 0 is outside it"
    );
    let exact = with_v4_pool("10.0.0.8/30");
    assert_eq!(
        exact.derive(0, V4_ONLY).unwrap().ipv4.unwrap().guest,
        v4("10.0.0.10")
    );
    assert!(exact.derive(1, V4_ONLY).is_err());
}

#[test]
fn pool_base_is_the_network_address() {
    let config = with_v4_pool("172.31.240.77/24");
    assert_eq!(
        config.derive(1, V4_ONLY).unwrap().ipv4.unwrap().guest,
        v4("172.31.240.6")
    );
    let config = with_v6_pool("fd7a:115c:a1e0:1ff::99/56");
    assert_eq!(
        config.derive(3, V6_ONLY).unwrap().ipv6.unwrap().guest,
        v6("fd7a:115c:a1e0:103::2")
    );
}

#[test]
fn ipv6_slot_0_and_small_pool() {
    let s0 = NetworkConfig::default()
        .derive(0, BOTH)
        .unwrap()
        .ipv6
        .unwrap();
    assert_eq!(
        (s0.guest, s0.gateway, s0.prefix_len),
        (v6("fd42:6d73:62:0::2"), v6("fd42:6d73:62:0::1"), 64)
    );
    let config = with_v6_pool("fd7a:115c:a1e0:100::/56");
    let s3 = config.derive(3, V6_ONLY).unwrap().ipv6.unwrap();
    assert_eq!(
        (s3.guest, s3.gateway),
        (v6("fd7a:115c:a1e0:103::2"), v6("fd7a:115c:a1e0:103::1"))
    );
    assert_eq!(s3.subnet().to_string(), "fd7a:115c:a1e0:103::/64");
    assert!(config.derive(255, V6_ONLY).is_ok());
    assert_eq!(
        derive_err(&config, 256, V6_ONLY),
        "interface.ipv6_pool fd7a:115c:a1e0:100::/56 holds 256 slots (/64 blocks); slot 256 is outside it"
    );
}

#[test]
fn ipv6_pool_smaller_than_a_slot() {
    let config = with_v6_pool("fd00::/80");
    let msg = derive_err(&config, 0, V6_ONLY);
    assert!(
        msg.contains("interface.ipv6_pool fd00::/80 holds 0 slots"),
        "{msg}"
    );
    let huge = with_v6_pool("::/0");
    let s = huge.derive(65535, V6_ONLY).unwrap().ipv6.unwrap();
    assert_eq!(s.guest, v6("0:0:0:ffff::2"));
}

#[test]
fn macs_per_slot() {
    let config = NetworkConfig::default();
    let s0 = config.derive(0, BOTH).unwrap();
    assert_eq!(s0.guest_mac.to_string(), "02:6d:73:00:00:02");
    assert_eq!(s0.gateway_mac.to_string(), "02:6d:73:00:00:01");
    let s = config.derive(0x1234, BOTH).unwrap();
    assert_eq!(s.slot, 0x1234);
    assert_eq!(s.guest_mac.to_string(), "02:6d:73:12:34:02");
    assert_eq!(s.gateway_mac.to_string(), "02:6d:73:12:34:01");
    assert!(config.derive(65535, BOTH).is_ok());
}

#[test]
fn slot_out_of_range() {
    let config = NetworkConfig::default();
    assert_eq!(
        derive_err(&config, 65536, BOTH),
        "slot 65536 is out of range (0..=65535)"
    );
    assert!(matches!(
        config.derive(u32::MAX, BOTH),
        Err(ConfigError::SlotOutOfRange { slot: u32::MAX })
    ));
}

#[test]
fn explicit_mac_overrides_guest_only() {
    let mut config = NetworkConfig::default();
    config.interface.mac = Some(mac("02:aa:bb:cc:dd:ee"));
    let s = config.derive(5, BOTH).unwrap();
    assert_eq!(s.guest_mac.to_string(), "02:aa:bb:cc:dd:ee");
    assert_eq!(s.gateway_mac.to_string(), "02:6d:73:00:05:01");

    config.interface.mac = Some(mac("02:6d:73:00:05:01"));
    let msg = derive_err(&config, 5, BOTH);
    assert!(
        msg.contains("interface.mac = 02:6d:73:00:05:01") && msg.contains("gateway"),
        "{msg}"
    );
}

#[test]
fn explicit_ipv4_address_and_its_gateway() {
    let mut config = NetworkConfig::default();
    for (guest, gateway) in [("10.1.2.6", "10.1.2.5"), ("10.1.2.5", "10.1.2.6")] {
        config.interface.ipv4_address = Some(v4(guest));
        let s = config.derive(7, V4_ONLY).unwrap().ipv4.unwrap();
        assert_eq!(
            (s.guest, s.gateway, s.prefix_len),
            (v4(guest), v4(gateway), 30)
        );
    }
    for bad in ["10.1.2.4", "10.1.2.7", "0.0.0.0"] {
        config.interface.ipv4_address = Some(v4(bad));
        let msg = derive_err(&config, 7, V4_ONLY);
        assert!(
            msg.contains(&format!("interface.ipv4_address = {bad}")),
            "{msg}"
        );
    }
    // An explicit address ignores the pool, even one too small for the slot.
    let mut config = with_v4_pool("10.0.0.0/30");
    config.interface.ipv4_address = Some(v4("192.168.7.2"));
    assert_eq!(
        config.derive(9, V4_ONLY).unwrap().ipv4.unwrap().gateway,
        v4("192.168.7.1")
    );
}

#[test]
fn explicit_ipv6_address_and_its_gateway() {
    let mut config = NetworkConfig::default();
    for (guest, gateway) in [
        ("fd00:1:2:3::10", "fd00:1:2:3::1"),
        ("fd00:1:2:3::2", "fd00:1:2:3::1"),
        ("fd00:1:2:3::1", "fd00:1:2:3::2"),
        ("fd00:1:2:3:ffff:ffff:ffff:ffff", "fd00:1:2:3::1"),
    ] {
        config.interface.ipv6_address = Some(v6(guest));
        let s = config.derive(7, V6_ONLY).unwrap().ipv6.unwrap();
        assert_eq!(
            (s.guest, s.gateway, s.prefix_len),
            (v6(guest), v6(gateway), 64)
        );
    }
    config.interface.ipv6_address = Some(v6("fd00:1:2:3::"));
    let msg = derive_err(&config, 7, V6_ONLY);
    assert!(msg.contains("interface.ipv6_address = fd00:1:2:3::") && msg.contains("anycast"));
}

// ---- address families ------------------------------------------------------------------

#[test]
fn families_follow_host_routes() {
    let config = NetworkConfig::default();
    let both = config.derive(0, BOTH).unwrap();
    assert!(both.ipv4.is_some() && both.ipv6.is_some());
    let v4_only = config.derive(0, V4_ONLY).unwrap();
    assert!(v4_only.ipv4.is_some() && v4_only.ipv6.is_none());
    let v6_only = config.derive(0, V6_ONLY).unwrap();
    assert!(v6_only.ipv4.is_none() && v6_only.ipv6.is_some());
    let offline = config.derive(0, NEITHER).unwrap();
    assert!(offline.ipv4.is_none() && offline.ipv6.is_none());
    assert!(offline.is_offline() && !both.is_offline() && !v4_only.is_offline());
}

/// An offline host (no route for either family) still derives a slot: MAC and MTU, no
/// addresses; an MTU below the IPv6 minimum is fine then.
#[test]
fn offline_host_derives_a_link_without_addresses() {
    let mut config = NetworkConfig::default();
    config.interface.mtu = 576;
    let s = config.derive(3, NEITHER).unwrap();
    assert_eq!(s.slot, 3);
    assert_eq!(s.guest_mac, mac("02:6d:73:00:03:02"));
    assert_eq!(s.gateway_mac, mac("02:6d:73:00:03:01"));
    assert_eq!(s.mtu, 576);
    assert_eq!((s.ipv4, s.ipv6), (None, None));
    assert!(s.is_offline());
}

#[test]
fn explicit_address_overrides_failed_probe() {
    let mut config = NetworkConfig::default();
    config.interface.ipv4_address = Some(v4("10.0.0.2"));
    let s = config.derive(0, NEITHER).unwrap();
    assert_eq!(s.ipv4.unwrap().guest, v4("10.0.0.2"));
    assert!(s.ipv6.is_none());

    let mut config = NetworkConfig::default();
    config.interface.ipv6_address = Some(v6("fd00::2"));
    let s = config.derive(0, V4_ONLY).unwrap();
    assert_eq!(s.ipv6.unwrap().guest, v6("fd00::2"));
    assert_eq!(s.ipv4.unwrap().guest, v4("172.16.0.2"));
}

#[test]
fn ipv6_needs_mtu_1280() {
    let mut config = NetworkConfig::default();
    config.interface.mtu = 1000;
    assert_eq!(config.derive(0, V4_ONLY).unwrap().mtu, 1000);
    let msg = derive_err(&config, 0, BOTH);
    assert!(
        msg.contains("interface.mtu = 1000") && msg.contains("IPv6"),
        "{msg}"
    );
    config.interface.mtu = 1280;
    assert!(config.derive(0, V6_ONLY).is_ok());
}

#[test]
fn derive_revalidates_hand_built_config() {
    let mut config = NetworkConfig::default();
    config.interface.mtu = 70000;
    assert!(matches!(
        config.derive(0, BOTH),
        Err(ConfigError::MtuOutOfRange { value: 70000 })
    ));
}

#[test]
fn slot_config_copies_the_rest() {
    let config = NetworkConfig::from_toml_str(FULL).unwrap();
    let s = config.derive(2, NEITHER).unwrap();
    assert_eq!(s.mtu, 9000);
    assert_eq!(s.max_connections, 10);
    assert_eq!(s.env_prefix, "VM_1");
    assert_eq!(s.egress, config.egress);
}

// ---- guest environment -----------------------------------------------------------------

fn env(config: &NetworkConfig, slot: u32, routes: HostRoutes) -> Vec<(String, String)> {
    config.derive(slot, routes).unwrap().guest_env_vars()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_vars_both_families() {
    assert_eq!(
        env(&NetworkConfig::default(), 1, BOTH),
        pairs(&[
            ("RINGNET_NET", "iface=eth0,mac=02:6d:73:00:01:02,mtu=1500"),
            ("RINGNET_HOST_ALIAS", "host.ringnet.internal"),
            (
                "RINGNET_NET_IPV4",
                "addr=172.16.0.6/30,gw=172.16.0.5,dns=172.16.0.5"
            ),
            (
                "RINGNET_NET_IPV6",
                "addr=fd42:6d73:62:1::2/64,gw=fd42:6d73:62:1::1,dns=fd42:6d73:62:1::1"
            ),
        ])
    );
}

#[test]
fn env_vars_single_family_and_prefix() {
    let config = NetworkConfig {
        env_prefix: "VM".to_owned(),
        ..NetworkConfig::default()
    };
    assert_eq!(
        env(&config, 0, V4_ONLY),
        pairs(&[
            ("VM_NET", "iface=eth0,mac=02:6d:73:00:00:02,mtu=1500"),
            ("VM_HOST_ALIAS", HOST_ALIAS),
            (
                "VM_NET_IPV4",
                "addr=172.16.0.2/30,gw=172.16.0.1,dns=172.16.0.1"
            ),
        ])
    );
    assert_eq!(
        env(&config, 0, V6_ONLY),
        pairs(&[
            ("VM_NET", "iface=eth0,mac=02:6d:73:00:00:02,mtu=1500"),
            ("VM_HOST_ALIAS", HOST_ALIAS),
            (
                "VM_NET_IPV6",
                "addr=fd42:6d73:62::2/64,gw=fd42:6d73:62::1,dns=fd42:6d73:62::1"
            ),
        ])
    );
}

#[test]
fn env_vars_end_with_the_secret_placeholders_in_order() {
    let config = NetworkConfig::from_toml_str(
        r#"
        [[secrets]]
        env_var = "GITHUB_TOKEN"
        value = "ghp_real_value_1"
        hosts = ["api.github.com"]

        [[secrets]]
        env_var = "NPM_TOKEN"
        value = "npm_real_value_2"
        placeholder = "npm-placeholder"
        hosts = ["registry.npmjs.org"]
        "#,
    )
    .unwrap();
    let vars = env(&config, 0, V4_ONLY);
    assert_eq!(
        vars,
        pairs(&[
            ("RINGNET_NET", "iface=eth0,mac=02:6d:73:00:00:02,mtu=1500"),
            ("RINGNET_HOST_ALIAS", HOST_ALIAS),
            (
                "RINGNET_NET_IPV4",
                "addr=172.16.0.2/30,gw=172.16.0.1,dns=172.16.0.1"
            ),
            ("GITHUB_TOKEN", "$RINGNET_SECRET_GITHUB_TOKEN"),
            ("NPM_TOKEN", "npm-placeholder"),
        ])
    );
    assert!(!format!("{vars:?}").contains("real_value"));
    let slot = config.derive(0, V4_ONLY).unwrap();
    assert!(!format!("{slot:?}").contains("real_value"));
    assert_eq!(
        env(&config, 0, NEITHER)[2..],
        pairs(&[
            ("GITHUB_TOKEN", "$RINGNET_SECRET_GITHUB_TOKEN"),
            ("NPM_TOKEN", "npm-placeholder"),
        ])
    );
}

#[test]
fn env_vars_offline_are_the_base_variables_only() {
    assert_eq!(
        env(&NetworkConfig::default(), 0, NEITHER),
        pairs(&[
            ("RINGNET_NET", "iface=eth0,mac=02:6d:73:00:00:02,mtu=1500"),
            ("RINGNET_HOST_ALIAS", "host.ringnet.internal"),
        ])
    );
}

// ---- properties ------------------------------------------------------------------------

/// An IPv4 pool (random base, prefix 14..=30) and two distinct slots inside it.
fn v4_pool_and_slots() -> impl Strategy<Value = (Ipv4Network, u32, u32)> {
    (any::<u32>(), 14u8..=30).prop_flat_map(|(base, prefix)| {
        let pool = Ipv4Network::new_checked(Ipv4Addr::from(base), prefix).expect("prefix <= 32");
        let capacity = (1u32 << (30 - prefix)).min(65536);
        (Just(pool), 0..capacity, 0..capacity)
    })
}

/// An IPv6 pool (random base, prefix 40..=64) and two slots inside it.
fn v6_pool_and_slots() -> impl Strategy<Value = (Ipv6Network, u32, u32)> {
    (any::<u128>(), 40u8..=64).prop_flat_map(|(base, prefix)| {
        let pool = Ipv6Network::new_checked(Ipv6Addr::from(base), prefix).expect("prefix <= 128");
        let capacity = (1u32 << (64 - prefix).min(16)).min(65536);
        (Just(pool), 0..capacity, 0..capacity)
    })
}

proptest! {
    #[test]
    fn ipv4_slots_are_disjoint_subnets((pool, a, b) in v4_pool_and_slots()) {
        let mut config = NetworkConfig::default();
        config.interface.ipv4_pool = pool;
        let sa = config.derive(a, V4_ONLY).unwrap();
        let va = sa.ipv4.unwrap();
        prop_assert_ne!(va.guest, va.gateway);
        prop_assert!(va.subnet().contains(va.gateway));
        prop_assert!(pool.contains(va.guest) && pool.contains(va.gateway));
        prop_assert_ne!(va.guest, va.subnet().network());
        prop_assert_ne!(va.guest, va.subnet().broadcast());
        let sb = config.derive(b, V4_ONLY).unwrap();
        let vb = sb.ipv4.unwrap();
        if a != b {
            prop_assert_ne!(va.subnet(), vb.subnet());
            prop_assert_ne!(sa.guest_mac, sb.guest_mac);
            prop_assert_ne!(sa.gateway_mac, sb.gateway_mac);
        }
        prop_assert_ne!(sa.guest_mac, sb.gateway_mac);
    }

    #[test]
    fn ipv6_slots_are_disjoint_subnets((pool, a, b) in v6_pool_and_slots()) {
        let mut config = NetworkConfig::default();
        config.interface.ipv6_pool = pool;
        let va = config.derive(a, V6_ONLY).unwrap().ipv6.unwrap();
        prop_assert_ne!(va.guest, va.gateway);
        prop_assert!(va.subnet().contains(va.gateway));
        prop_assert!(pool.contains(va.guest) && pool.contains(va.gateway));
        let vb = config.derive(b, V6_ONLY).unwrap().ipv6.unwrap();
        if a != b {
            prop_assert_ne!(va.subnet(), vb.subnet());
            prop_assert_ne!(va.guest, vb.guest);
        }
    }

    #[test]
    fn explicit_addresses_share_a_subnet_with_their_gateway(bits4 in any::<u32>(), bits6 in any::<u128>()) {
        if let Ok(s) = explicit_ipv4(Ipv4Addr::from(bits4)) {
            prop_assert_ne!(s.guest, s.gateway);
            prop_assert!(s.subnet().contains(s.guest) && s.subnet().contains(s.gateway));
        }
        if let Ok(s) = explicit_ipv6(Ipv6Addr::from(bits6)) {
            prop_assert_ne!(s.guest, s.gateway);
            prop_assert!(s.subnet().contains(s.guest) && s.subnet().contains(s.gateway));
        }
    }

    #[test]
    fn mac_display_parse_round_trip(bytes in any::<[u8; 6]>()) {
        let m = MacAddr(bytes);
        prop_assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        prop_assert_eq!(m.to_string().replace(':', "-").parse::<MacAddr>().unwrap(), m);
    }
}

#[test]
fn huge_tcp_buffers_are_rejected() {
    assert_eq!(
        parse_err("[egress]\ntcp_to_guest_buffer_bytes = 1099511627776"),
        "egress.tcp_to_guest_buffer_bytes = 1099511627776 is too large: at most 67108864"
    );
    assert_eq!(
        parse_err("[egress]\ntcp_buffer_bytes = 67108865"),
        "egress.tcp_buffer_bytes = 67108865 is too large: at most 67108864"
    );
    let ok = NetworkConfig::from_toml_str("[egress]\ntcp_buffer_bytes = 67108864").unwrap();
    assert_eq!(ok.egress.tcp_buffer_bytes, 64 << 20);
}

#[test]
fn dns_and_policy_sections() {
    let c = NetworkConfig::from_toml_str(
        r#"
        [dns]
        servers = ["127.0.0.53", "[2001:db8::53]:5353"]
        timeout_ms = 1000
        [dns.hosts]
        "DB.internal." = ["198.51.100.9", "2001:db8::9"]
        "one.internal" = "198.51.100.10"
        [policy]
        preset = "safe"
        rules = ["deny tcp 198.51.100.0/24 port 22"]
        "#,
    )
    .unwrap();
    let servers: Vec<String> = c.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["127.0.0.53:53", "[2001:db8::53]:5353"]);
    let hosts = c.dns.static_hosts();
    assert_eq!(hosts[0].0, "db.internal");
    assert_eq!(hosts[0].1.len(), 2);
    assert_eq!(hosts[1].1, ["198.51.100.10".parse::<IpAddr>().unwrap()]);
    let slot = c
        .derive(
            0,
            HostRoutes {
                ipv4: true,
                ipv6: true,
            },
        )
        .unwrap();
    assert_eq!(
        slot.policy.rules[0].to_string(),
        "deny egress tcp 198.51.100.0/24 port 22"
    );
    for (text, want) in [
        (
            "[dns]\nservers = [\"dns.example\"]",
            "invalid DNS server \"dns.example\"",
        ),
        ("[dns]\ntimeout_ms = 0", "dns.timeout_ms = 0"),
        (
            "[dns.hosts]\n\"bad name\" = \"198.51.100.1\"",
            "\"bad name\" is not a domain name",
        ),
        (
            "[policy]\nrules = [\"allow tcp 10.0.0.0/33\"]",
            "allow tcp 10.0.0.0/33",
        ),
        ("[policy]\npreset = \"strict\"", "unknown policy preset"),
    ] {
        let msg = parse_err(text);
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}
