//! Issue #9: an offline host — no route for either family — still starts the guest, as the
//! system ringnet reproduces does: a warning, eth0 up with its MAC and MTU but no addresses,
//! and only the base variables (`RINGNET_NET`, `RINGNET_HOST_ALIAS`). An explicit address
//! still turns its family on.
//!
//! The host here is a bare namespace from `Netns::new`: loopback only, no sink, no routes
//! (unlike `HostNs`), so both route probes fail.
//!
//! Cases:
//! - `run_offline_gives_a_link_without_addresses`: `ringnet run` exits 0 with one warning
//!   line; eth0 up, no IPv4 and no global IPv6 address, no default route; the environment
//!   has the two base variables only.
//! - `run_offline_with_explicit_ipv4_address`: `ipv4_address` in a config file: eth0 has it,
//!   the default route goes via its gateway, the gateway answers ping, `RINGNET_NET_IPV4` is
//!   set and IPv6 stays off; no warning.
//! - `attach_offline_serves_and_survives_down_up`: `attach --configure` starts with the
//!   warning, brings eth0 up without addresses, configures it again after a down/up (the
//!   watcher's path) and stops on SIGTERM with status 0.
//! - `embedded_offline_network_answers_nothing` (no root): the embedding API with neither
//!   family starts; ARP and echo for the would-be gateway and echo to elsewhere get no answer
//!   and open no flow; it shuts down cleanly with every pool slot back.

mod common;

use common::frames;
use common::*;
use ringnet::{HostRoutes, Network, NetworkConfig};
use smoltcp::wire::IpProtocol;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CASE_LIMIT: Duration = Duration::from_secs(120);
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// What the guest's command prints: eth0's addresses and link, both routing tables, and the
/// ringnet variables (not the test harness's own `RINGNET_TEST_*` knobs, which `run` passes on).
const SCRIPT: &str = "ip -o addr show eth0; ip -o link show eth0; echo ROUTES; ip route; \
                      ip -6 route; env | grep ^RINGNET_ | grep -v ^RINGNET_TEST_ | sort";

const WARNING: &str = "no host route for IPv4 or IPv6";

/// A host namespace with loopback only: no route of either family beyond `lo`'s own.
fn offline_host() -> Netns {
    let host = Netns::new("offline");
    for family in ["-4", "-6"] {
        let routes = host.ip(&[family, "route", "show"]);
        assert!(!routes.contains("default"), "{family} routes: {routes}");
    }
    host
}

/// `ringnet ARGS…` run to completion inside `host`.
fn ringnet(host: &Netns, args: &[&str]) -> Output {
    let mut full = vec![ringnet_bin()];
    full.extend_from_slice(args);
    host.exec(&full, RUN_LIMIT)
}

/// eth0 has no IPv4 address and no IPv6 address beyond link-local in `ip -o addr` output.
fn assert_no_addresses(addrs: &str, context: &str) {
    for line in addrs.lines().filter(|l| l.contains(" eth0 ")) {
        assert!(!line.contains(" inet "), "IPv4 address on eth0: {context}");
        if line.contains(" inet6 ") {
            assert!(
                line.contains("scope link"),
                "global IPv6 address on eth0: {context}"
            );
        }
    }
}

#[test]
fn run_offline_gives_a_link_without_addresses() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = offline_host();
    let out = ringnet(&host, &["run", "--", "sh", "-c", SCRIPT]);
    assert_eq!(out.code(), Some(0), "{out}");
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "want one stderr line: {out}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains(WARNING),
        "{out}"
    );
    let (iface, routes) = out.stdout.split_once("ROUTES").expect("script output");
    let link = iface
        .lines()
        .find(|l| l.contains(" eth0: ") && l.contains("link/ether"))
        .unwrap_or_else(|| panic!("no eth0 link line: {out}"));
    assert!(link_flags(link).contains(&"UP"), "eth0 not up: {out}");
    assert!(link.contains("mtu 1500 "), "{out}");
    assert!(link.contains("link/ether 02:6d:73:00:00:02 "), "{out}");
    assert_no_addresses(iface, &out.to_string());
    assert!(!routes.contains("default"), "{out}");
    assert!(
        out.stdout
            .contains("RINGNET_NET=iface=eth0,mac=02:6d:73:00:00:02,mtu=1500\n"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("RINGNET_HOST_ALIAS=host.ringnet.internal\n"),
        "{out}"
    );
    let vars: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("RINGNET_"))
        .collect();
    assert_eq!(vars.len(), 2, "want the two base variables only: {out}");
}

#[test]
fn run_offline_with_explicit_ipv4_address() {
    require_privileges!("ping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = offline_host();
    let cfg = TempFile::with_contents("v4cfg", "[interface]\nipv4_address = \"172.16.0.2\"\n");
    let script = format!("{SCRIPT}; ping -c 1 -W 5 172.16.0.1");
    let out = ringnet(
        &host,
        &["run", "--config", cfg.path_str(), "--", "sh", "-c", &script],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains(WARNING), "{out}");
    assert!(out.stdout.contains("inet 172.16.0.2/30 "), "{out}");
    assert!(out.stdout.contains("default via 172.16.0.1 "), "{out}");
    assert!(out.stdout.contains("1 received"), "{out}");
    assert!(
        out.stdout
            .contains("RINGNET_NET_IPV4=addr=172.16.0.2/30,gw=172.16.0.1,dns=172.16.0.1\n"),
        "{out}"
    );
    assert!(!out.stdout.contains("RINGNET_NET_IPV6"), "{out}");
    assert!(!out.stdout.contains("fd42:"), "{out}");
}

/// Polls `check` every 50 ms until it returns true; false after `timeout`.
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attach_offline_serves_and_survives_down_up() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = offline_host();
    let guest = Netns::new("guest");
    let path = guest.path();
    let mut rn = host.spawn(&[
        ringnet_bin(),
        "attach",
        "--netns",
        &path,
        "--tap",
        "eth0",
        "--configure",
    ]);
    assert!(
        eventually(Duration::from_secs(10), || guest.link_is_up("eth0")),
        "guest eth0 not up; ringnet stderr:\n{}",
        rn.stderr()
    );
    rn.assert_alive();
    let stderr = rn.stderr();
    assert!(stderr.contains(WARNING), "{stderr}");
    assert!(stderr.contains("ringnet serving"), "{stderr}");
    assert_no_addresses(&guest.ip(&["-o", "addr", "show", "dev", "eth0"]), &stderr);

    guest.ip(&["link", "set", "eth0", "down"]);
    assert!(
        eventually(Duration::from_secs(5), || rn
            .stderr()
            .contains("set eth0 down")),
        "down not noticed: {}",
        rn.stderr()
    );
    guest.ip(&["link", "set", "eth0", "up"]);
    assert!(
        eventually(Duration::from_secs(5), || rn
            .stderr()
            .contains("eth0 is up again")),
        "up not noticed (or configuring failed): {}",
        rn.stderr()
    );
    rn.assert_alive();
    assert!(
        !rn.stderr().contains("configuring it failed"),
        "{}",
        rn.stderr()
    );
    assert_no_addresses(
        &guest.ip(&["-o", "addr", "show", "dev", "eth0"]),
        &rn.stderr(),
    );
    assert!(!guest.ip(&["route", "show"]).contains("default"));

    rn.signal(libc::SIGTERM);
    let status = rn.wait_timeout(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ringnet attach after SIGTERM: {:?}; stderr:\n{}",
        status,
        rn.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// The embedding API offline (no root)
// ---------------------------------------------------------------------------------------

/// An ICMPv4 echo request from the guest to `dst`.
fn echo_request(dst: Ipv4Addr) -> Vec<u8> {
    let icmp = frames::icmpv4_echo(0x4242, 1, b"offline");
    frames::ipv4(frames::GUEST, dst, IpProtocol::Icmp, &icmp)
}

#[test]
fn embedded_offline_network_answers_nothing() {
    let mut net = Network::with_routes(&NetworkConfig::default(), 0, HostRoutes::default())
        .expect("an offline network starts");
    assert!(net.config().is_offline());
    let names: Vec<String> = net.guest_env_vars().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["RINGNET_NET", "RINGNET_HOST_ALIAS"]);
    net.start().expect("start");
    let link = net.take_link().expect("link");
    for frame in [
        frames::arp_request(frames::GW),
        echo_request(frames::GW),
        echo_request(Ipv4Addr::new(192, 0, 2, 1)),
    ] {
        assert!(link.send(None, &frame));
    }
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut answered = 0;
    while Instant::now() < deadline {
        link.clear_notify();
        while link.recv().is_some() {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(net.is_running(), "the poll thread runs offline");
    assert_eq!(answered, 0, "an offline gateway answers nothing");
    assert_eq!(link.counters().from_guest_frames, 3);
    let stats = net.stats();
    assert_eq!(stats.arp_filtered.load(Ordering::Relaxed), 1);
    assert_eq!(stats.icmp_relayed.load(Ordering::Relaxed), 0);
    drop(link);
    net.shutdown().expect("shutdown");
    assert_eq!(net.pool_free(), net.pool_capacity());
}
