//! Issue "foundation": ringnet as the guest's gateway (ARP, NDP, ICMP echo) and the `run` /
//! `attach` command lines. Every case runs ringnet inside an isolated host namespace
//! (`common::HostNs`); nothing leaves the namespaces the test made.
//!
//! Cases (each `per_mtu!` case runs at MTU 1500 and 65520):
//! - `guest_configured`: eth0 has the slot-0 MAC, MTU, both addresses, default routes via
//!   both gateways.
//! - `ping_gateway_v4` / `ping_gateway_v6`: echo from the gateway; the guest's neighbour
//!   entry for it carries the gateway MAC.
//! - `ping_gateway_large`: `-s 1400` at 1500, `-s 60000` at 65520, both families.
//! - `arp_only_for_gateway`: ARP for the gateway is answered; for other addresses (the /30
//!   broadcast, slot 1's gateway, a TEST-NET address) and for the guest's own address
//!   (duplicate address detection) it is not.
//! - `no_echo_for_other_addresses`: pings to 192.0.2.55 / 2001:db8:ffff::55 (routed into the
//!   host's ifb sink if relayed) get no reply.
//! - `run_exit_status`: `ringnet run -- true|false|sh -c 'exit 7'` exit 0|1|7.
//! - `run_configures_guest`: inside `run`, eth0 has 172.16.0.2/30, the IPv6 address, the MTU.
//! - `run_leaves_nothing_behind`: no namespace and no link of the host namespace is left.
//! - `run_cleans_up_on_sigterm` / `_sigint`: ringnet exits within 5 s, its command is gone,
//!   nothing is left.
//! - `run_rejects_mtu_above_65520`, `attach_rejects_missing_netns`: exit 2, one stderr line.

mod common;

use common::*;
use std::sync::Mutex;
use std::time::Duration;

/// Run one case at MTU 1500 and at 65520: `name::mtu1500`, `name::mtu65520`.
macro_rules! per_mtu {
    ($($name:ident),* $(,)?) => {$(
        test_cases!($name: mtu1500(1500), mtu65520(65520));
    )*};
}

per_mtu!(
    guest_configured,
    ping_gateway_v4,
    ping_gateway_v6,
    ping_gateway_large,
    arp_only_for_gateway,
    no_echo_for_other_addresses,
    run_configures_guest,
);

const CASE_LIMIT: Duration = Duration::from_secs(120);

fn guest_configured(mtu: u32) {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu));
    let s = tb.slot();
    let link = tb.guest.ip(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(&format!("mtu {mtu} ")), "{link}");
    assert!(link.to_lowercase().contains(GUEST_MAC), "{link}");
    // Transmit queue: one slot per allowed flow (1,024 by default) plus 1,024.
    assert!(link.contains("qlen 2048"), "{link}");
    let addr = tb.guest.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {}/30 ", s.guest_v4)), "{addr}");
    assert!(
        addr.contains(&format!("inet6 {}/64 ", s.guest_v6)),
        "{addr}"
    );
    let r4 = tb.guest.ip(&["-4", "route", "show", "default"]);
    assert!(r4.contains(&format!("via {} dev eth0", s.gw_v4)), "{r4}");
    let r6 = tb.guest.ip(&["-6", "route", "show", "default"]);
    assert!(r6.contains(&format!("via {} dev eth0", s.gw_v6)), "{r6}");
    let lo = tb.guest.ip(&["-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    tb.ringnet.assert_alive();
}

fn ping(tb: &Testbed, args: &[&str]) -> Output {
    let mut full = vec!["ping"];
    full.extend_from_slice(args);
    tb.guest.exec(&full, SHORT)
}

fn ping_gateway_v4(mtu: u32) {
    ping_gateway(mtu, false)
}

fn ping_gateway_v6(mtu: u32) {
    ping_gateway(mtu, true)
}

/// Echo from the gateway of one family; the guest's neighbour entry for it carries the
/// gateway MAC.
fn ping_gateway(mtu: u32, v6: bool) {
    require_privileges!("ping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu));
    let s = tb.slot();
    let (family, gw) = if v6 {
        ("-6", s.gw_v6.to_string())
    } else {
        ("-4", s.gw_v4.to_string())
    };
    let mut args = if v6 { vec!["-6"] } else { vec![] };
    args.extend(["-c", "3", "-W", "2", gw.as_str()]);
    let out = ping(&tb, &args);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("3 received"), "{out}");
    let neigh = tb.guest.ip(&[family, "neigh", "show", "dev", "eth0", &gw]);
    assert!(neigh.to_lowercase().contains(GATEWAY_MAC), "{neigh}");
    tb.ringnet.assert_alive();
}

fn ping_gateway_large(mtu: u32) {
    require_privileges!("ping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu));
    let size = if mtu >= 65520 { "60000" } else { "1400" };
    let (gw4, gw6) = (tb.slot().gw_v4.to_string(), tb.slot().gw_v6.to_string());
    for args in [
        vec!["-c", "3", "-W", "2", "-s", size, gw4.as_str()],
        vec!["-6", "-c", "3", "-W", "2", "-s", size, gw6.as_str()],
    ] {
        let out = ping(&tb, &args);
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("3 received"), "{out}");
    }
    tb.ringnet.assert_alive();
}

/// iputils arping; `-s` pins the source (arping's route probe refuses broadcast targets).
fn arping(tb: &Testbed, extra: &[&str], target: &str) -> Output {
    let src = tb.slot().guest_v4.to_string();
    let mut args = vec!["arping", "-c", "2", "-w", "3", "-I", "eth0"];
    args.extend_from_slice(extra);
    if !extra.contains(&"-D") {
        args.extend(["-s", src.as_str()]);
    }
    args.push(target);
    tb.guest.exec(&args, SHORT)
}

fn arp_only_for_gateway(mtu: u32) {
    require_privileges!("arping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu));
    let s = tb.slot();

    let out = arping(&tb, &[], &s.gw_v4.to_string());
    assert!(out.success(), "ARP for the gateway unanswered: {out}");
    assert!(out.stdout.to_lowercase().contains(GATEWAY_MAC), "{out}");

    // Not ringnet's to answer: the /30 broadcast, slot 1's gateway, a TEST-NET address.
    for target in ["172.16.0.3", "172.16.0.5", "192.0.2.55"] {
        let out = arping(&tb, &[], target);
        assert_eq!(out.code(), Some(1), "ARP for {target} answered? {out}");
        assert!(out.stdout.contains("Received 0 response"), "{out}");
    }

    // Duplicate address detection for the guest's own address: nobody may claim it
    // (exit 0 = no reply).
    let out = arping(&tb, &["-D"], &s.guest_v4.to_string());
    assert!(
        out.success(),
        "someone answered DAD for the guest's address: {out}"
    );
    assert!(out.stdout.contains("Received 0 response"), "{out}");
    tb.ringnet.assert_alive();
}

fn no_echo_for_other_addresses(mtu: u32) {
    require_privileges!("ping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu));
    // Both are documentation addresses routed into the host namespace's ifb sink: even a
    // relayed echo (issue "egress") is dropped there, so no reply may ever come.
    for args in [
        &["-c", "2", "-W", "1", "-w", "4", "192.0.2.55"][..],
        &["-6", "-c", "2", "-W", "1", "-w", "4", "2001:db8:ffff::55"],
    ] {
        let out = ping(&tb, args);
        assert!(!out.timed_out, "{out}");
        assert_eq!(
            out.code(),
            Some(1),
            "reply from a non-gateway address? {out}"
        );
        assert!(out.stdout.contains(" 0 received"), "{out}");
    }
    tb.ringnet.assert_alive();
}

// ---------------------------------------------------------------------------------------
// ringnet run / command-line errors
// ---------------------------------------------------------------------------------------

/// Held by every case that compares `ip netns list` before and after, so that the `run`s of
/// parallel cases don't show up in each other's snapshots. (Namespaces named `rn-*` are the
/// harness's own and are ignored.)
static RUN_LOCK: Mutex<()> = Mutex::new(());

fn run_lock() -> std::sync::MutexGuard<'static, ()> {
    RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn foreign_netns() -> Vec<String> {
    let mut v: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| !n.starts_with("rn-"))
        .collect();
    v.sort();
    v
}

/// What `ringnet run` could leave behind: named namespaces, links in the host namespace.
struct Snapshot {
    netns: Vec<String>,
    links: Vec<String>,
}

impl Snapshot {
    fn take(host: &HostNs) -> Snapshot {
        Snapshot {
            netns: foreign_netns(),
            links: host.links(),
        }
    }

    fn assert_same(&self, host: &HostNs, after_what: &str) {
        let now = Snapshot::take(host);
        let new_ns: Vec<_> = now
            .netns
            .iter()
            .filter(|n| !self.netns.contains(n))
            .collect();
        assert!(
            new_ns.is_empty(),
            "namespaces left after {after_what}: {new_ns:?}"
        );
        assert_eq!(self.links, now.links, "host links changed by {after_what}");
    }
}

const RUN_LIMIT: Duration = Duration::from_secs(30);

fn assert_one_line_error(out: &Output) {
    assert_eq!(out.code(), Some(2), "{out}");
    let e = out.stderr.trim_end();
    assert!(
        !e.is_empty() && !e.contains('\n'),
        "want one stderr line: {out}"
    );
}

#[test]
fn run_exit_status() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let _l = run_lock();
    let before = Snapshot::take(&host);
    for (cmd, code) in [
        (&["true"][..], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 7"], 7),
    ] {
        let mut args = vec!["run", "--"];
        args.extend_from_slice(cmd);
        let out = host.ringnet(&args, RUN_LIMIT);
        assert_eq!(out.code(), Some(code), "{out}");
        before.assert_same(&host, &format!("ringnet run -- {}", cmd.join(" ")));
    }
}

fn run_configures_guest(mtu: u32) {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let s = Slot::new(0);
    let mtu_s = mtu.to_string();
    let _l = run_lock();
    let before = Snapshot::take(&host);
    let out = host.ringnet(
        &[
            "run",
            "--mtu",
            &mtu_s,
            "--",
            "sh",
            "-c",
            "ip -o addr show eth0; ip -o link show eth0; ip route; ip -6 route",
        ],
        RUN_LIMIT,
    );
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("172.16.0.2/30"), "{out}");
    assert!(out.stdout.contains(&format!("{}/64", s.guest_v6)), "{out}");
    assert!(out.stdout.contains(&format!("mtu {mtu} ")), "{out}");
    assert!(out.stdout.contains("qlen 2048"), "{out}");
    assert!(
        out.stdout.contains(&format!("default via {}", s.gw_v4)),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("default via {}", s.gw_v6)),
        "{out}"
    );
    before.assert_same(&host, "ringnet run");
}

#[test]
fn run_leaves_nothing_behind() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let _l = run_lock();
    let before = Snapshot::take(&host);
    for _ in 0..3 {
        let out = host.ringnet(&["run", "--", "true"], RUN_LIMIT);
        assert!(out.success(), "{out}");
    }
    let out = host.ringnet(&["run", "--", "false"], RUN_LIMIT);
    assert_eq!(out.code(), Some(1), "{out}");
    before.assert_same(&host, "four runs of ringnet run");
}

fn run_cleans_up_on_signal(sig: i32) {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let _l = run_lock();
    let before = Snapshot::take(&host);
    let bin = ringnet_bin();
    let mut rn = host.spawn(&[bin, "run", "--", "sh", "-c", "echo $$; exec sleep 60"]);
    let line = rn
        .next_line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no output from `{}`: {}", rn.what, rn.stderr()));
    let cmd_pid: u32 = line.trim().parse().expect("pid printed by the command");
    let _guard = PidGuard(cmd_pid);
    assert!(pid_alive(cmd_pid));
    rn.signal(sig);
    let status = rn.wait_timeout(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "ringnet run still running 5 s after signal {sig}; stderr: {}",
        rn.stderr()
    );
    assert!(
        wait_pid_gone(cmd_pid, Duration::from_secs(5)),
        "the command (pid {cmd_pid}) outlived ringnet run"
    );
    before.assert_same(&host, &format!("ringnet run killed by signal {sig}"));
}

#[test]
fn run_cleans_up_on_sigterm() {
    run_cleans_up_on_signal(libc::SIGTERM);
}

#[test]
fn run_cleans_up_on_sigint() {
    run_cleans_up_on_signal(libc::SIGINT);
}

#[test]
fn run_rejects_mtu_above_65520() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let _l = run_lock();
    let before = Snapshot::take(&host);
    let out = host.ringnet(&["run", "--mtu", "70000", "--", "true"], RUN_LIMIT);
    assert_one_line_error(&out);
    before.assert_same(&host, "ringnet run --mtu 70000");
}

#[test]
fn attach_rejects_missing_netns() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let missing = format!("/run/netns/{}", unique_name("absent"));
    let out = host.ringnet(&["attach", "--netns", &missing], RUN_LIMIT);
    assert_one_line_error(&out);
}

/// A family the host cannot route is left out of the guest entirely: no address, no route,
/// no environment variable. (Neither family routable, and explicit addresses then:
/// `tests/offline.rs`.)
#[test]
fn inactive_families_are_left_out() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let script = "ip -o addr show eth0; ip route; ip -6 route; env | grep ^RINGNET_ | sort";
    for (drop_family, present, absent) in [
        (
            "-6",
            "RINGNET_NET_IPV4=addr=172.16.0.2/30",
            "RINGNET_NET_IPV6",
        ),
        (
            "-4",
            "RINGNET_NET_IPV6=addr=fd42:6d73:62::2/64",
            "RINGNET_NET_IPV4",
        ),
    ] {
        let host = HostNs::new();
        // The sink's documentation prefix is an on-link route too (198.51.100.0/24 does not
        // cover the probe's 192.0.2.1, but 2001:db8::/64 covers 2001:db8::1): flush both.
        host.ip(&[drop_family, "route", "del", "default"]);
        host.ip(&[drop_family, "addr", "flush", "dev", SINK_DEV]);
        let out = host.ringnet(&["run", "--", "sh", "-c", script], RUN_LIMIT);
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains(present), "{out}");
        assert!(!out.stdout.contains(absent), "{out}");
        if drop_family == "-6" {
            assert!(!out.stdout.contains("fd42:6d73:62::2"), "{out}");
        } else {
            assert!(!out.stdout.contains("172.16.0.2"), "{out}");
        }
    }
}
