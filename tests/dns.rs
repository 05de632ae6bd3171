//! Issue "dns": the gateway's DNS service. The guest asks `dig @GATEWAY` (UDP port 53, or
//! TCP with `+tcp`); ringnet answers the host alias and `[dns.hosts]` itself and forwards
//! everything else to the upstream servers of `[dns] servers`: here a dnsmasq
//! ([`DnsServer`]) in the isolated host namespace, whose query log tells what reached it.
//! Per-family cases run once through the IPv4 gateway (`v4`) and once through the IPv6
//! gateway (`v6`).
//!
//! Cases:
//! - `lookup::{udp,tcp}_{v4,v6}`: A and AAAA of a name dnsmasq knows, forwarded (dnsmasq
//!   logs it) and answered over the transport the guest used.
//! - `truncation::{v4,v6}`: a TXT answer of ~1750 bytes comes back with TC set over UDP
//!   (`dig +ignore`) and complete over TCP (dig's own retry); a ~650-byte answer is whole
//!   for a query with EDNS (1232) and truncated for one without (512).
//! - `truncation_by_ringnet::{v4,v6}`: a careless upstream (tests/helpers/dns_big_server.py)
//!   answers ~1.7 KB over UDP whatever the query allows and never sets TC: ringnet itself
//!   sends the UDP guest a TC reply without records (`dns_truncated`); over TCP it is whole.
//! - `failover::{blackhole,refused}`: the first server is dead (a sink address where the
//!   ifb device drops everything, or a closed port of the host namespace), `timeout_ms =
//!   1000`: the second server answers.
//! - `host_alias::{v4,v6}`: `host.ringnet.internal` is the gateway's A and AAAA, answered
//!   locally (dnsmasq never asked).
//! - `static_hosts`: `[dns.hosts]` answered locally, A and AAAA.
//! - `rebind_protection::{blocked,allowed}`: an upstream answer of 10.1.2.3 becomes
//!   NXDOMAIN (`dns_rebind_blocked`), unless `--allow 10.0.0.0/8` names that address.
//! - `denied_name`: with `--deny .blocked.test`, the name and its subdomains are NXDOMAIN
//!   and never reach dnsmasq (`dns_denied`).
//! - `formerr`: a query with two questions, and one with none, get FORMERR with the
//!   query's ID (tests/helpers/dns_raw.py; dig cannot send either).
//! - `cli_servers::{v4_bare,v6_port}`: `--dns SERVER` replaces the config's server list
//!   (there a blackhole with a 5 s timeout, which dig's 3 s would not outlast): `198.51.100.7`
//!   (port 53 implied) and `[2001:db8::7]:53` (an IPv6 upstream).
//! - `disabled_family`: a host without IPv6 (no IPv6 address or route in the host
//!   namespace, so ringnet's IPv6 is inactive; `ringnet run`): AAAA queries, for the host
//!   alias and for an upstream name, get an empty NOERROR; A still works.
//! - `max_pending`: with `max_pending = 2` and a blackholed upstream, five queries at once:
//!   at least three are dropped (`dns_dropped`), and ringnet keeps serving.
//! - `direct_upstream`: without a policy, the guest may still ask a resolver of its own
//!   choice (here the same dnsmasq at 198.51.100.7) over UDP and TCP: those are ordinary
//!   flows, relayed like any other (the raw-query helper is checked here too).
//! - `run_resolv_conf`: `ringnet run -- getent hosts NAME` with the host's resolv.conf
//!   naming a loopback resolver (127.0.0.53, a dnsmasq in the host namespace): the command
//!   sees a resolv.conf naming the gateway, resolves through ringnet, and the host's file is
//!   untouched. ringnet runs under `unshare -m` with a bind-mounted resolv.conf, so the
//!   machine's own /etc/resolv.conf is never touched.

mod common;

use common::*;
use std::time::Duration;

test_cases!(lookup: udp_v4(super::Fam::V4, false), tcp_v4(super::Fam::V4, true), udp_v6(super::Fam::V6, false), tcp_v6(super::Fam::V6, true));
test_cases!(truncation: v4(super::Fam::V4), v6(super::Fam::V6));
test_cases!(truncation_by_ringnet: v4(super::Fam::V4), v6(super::Fam::V6));
test_cases!(failover: blackhole("198.51.100.99:53"), refused("198.51.100.7:5399"));
test_cases!(host_alias: v4(super::Fam::V4), v6(super::Fam::V6));
test_cases!(rebind_protection: blocked(false), allowed(true));
test_cases!(cli_servers: v4_bare("198.51.100.7"), v6_port("[2001:db8::7]:53"));

const CASE_LIMIT: Duration = Duration::from_secs(120);
/// dig's deadline (its own per-try timeout is a second less).
const DIG: Duration = Duration::from_secs(6);

/// The names the upstream dnsmasq serves (A / AAAA), its listen address being the sink's.
const NAME: &str = "allowed.test";
const NAME_V4: &str = "198.51.100.8";
const NAME_V6: &str = "2001:db8::8";

#[derive(Clone, Copy, Debug)]
enum Fam {
    V4,
    V6,
}

/// The gateway address of `fam`, which the guest sends its queries to.
fn gateway(tb: &Testbed, fam: Fam) -> String {
    let s = tb.slot();
    match fam {
        Fam::V4 => s.gw_v4.to_string(),
        Fam::V6 => s.gw_v6.to_string(),
    }
}

/// The usual upstream: dnsmasq on 198.51.100.7:53 knowing [`NAME`].
fn upstream(host: &HostNs) -> DnsServer {
    Dnsmasq::new(SINK_V4)
        .host(NAME, &[NAME_V4, NAME_V6])
        .big_txt("big.test")
        .arg(&format!("--txt-record=mid.test,{}", big_txt_string(0)))
        .arg(&format!("--txt-record=mid.test,{}", big_txt_string(1)))
        .arg(&format!("--txt-record=mid.test,{}", big_txt_string(2)))
        .start(host)
}

/// A testbed whose ringnet forwards to `servers` (`[dns]` with `extra` lines, then `tail`)
/// and prints its counters at exit (`--stats`); `args` are further command-line arguments.
fn start(servers: &[&str], extra: &[&str], tail: &str, args: &[&str]) -> Testbed {
    let mut opts = Opts::default().config(&dns_config(servers, extra, tail));
    opts.extra = std::iter::once("--stats")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    Testbed::start(opts)
}

/// A testbed and its upstream in the same host namespace: the host namespace exists only
/// inside the testbed, so the server starts after it (and stops first: declared later).
fn with_upstream(extra: &[&str], tail: &str, args: &[&str]) -> (Testbed, DnsServer) {
    let tb = start(&["198.51.100.7:53"], extra, tail, args);
    let dns = upstream(&tb.host);
    (tb, dns)
}

/// `dig @GATEWAY <args…>` from the guest.
fn ask(tb: &Testbed, fam: Fam, args: &[&str]) -> Dig {
    dig(&tb.guest, &gateway(tb, fam), 53, args, DIG)
}

/// Stop ringnet (it must exit cleanly) and return its `--stats` counter `name` (0 when not
/// printed).
fn stop_counter(tb: &mut Testbed, names: &[&str]) -> Vec<u64> {
    tb.ringnet.assert_alive();
    tb.ringnet.stop();
    let stats = tb.ringnet.stderr();
    names
        .iter()
        .map(|n| stats_counter(&stats, n).unwrap_or(0))
        .collect()
}

fn lookup(fam: Fam, tcp: bool) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, dns) = with_upstream(&[], "", &[]);
    let mode = if tcp { "+tcp" } else { "+notcp" };
    let a = ask(&tb, fam, &[mode, NAME, "A"]);
    a.expect_status("NOERROR");
    assert_eq!(a.data("A"), [NAME_V4], "{}", a.out);
    assert_eq!(
        a.transport.as_deref(),
        Some(if tcp { "TCP" } else { "UDP" }),
        "{}",
        a.out
    );
    let aaaa = ask(&tb, fam, &[mode, NAME, "AAAA"]);
    aaaa.expect_status("NOERROR");
    assert_eq!(aaaa.data("AAAA"), [NAME_V6], "{}", aaaa.out);
    // An unknown name: dnsmasq has no upstream of its own and answers REFUSED or NXDOMAIN
    // or SERVFAIL; whatever it is, ringnet passes a status back (no timeout).
    let unknown = ask(&tb, fam, &[mode, "unknown.test", "A"]);
    assert!(unknown.answered(), "{}", unknown.out);
    assert!(unknown.data("A").is_empty(), "{}", unknown.out);
    assert!(dns.asked(NAME), "dnsmasq never asked; log:\n{}", dns.log());
    let c = stop_counter(&mut tb, &["dns_queries", "dns_forwarded", "dns_answered"]);
    assert!(
        c[0] >= 3 && c[1] >= 2 && c[2] >= 2,
        "dns_queries/forwarded/answered {c:?}"
    );
}

fn truncation(fam: Fam) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, _dns) = with_upstream(&[], "", &[]);
    // UDP only: the answer does not fit the 1232 bytes dig offers.
    let udp = ask(&tb, fam, &["+ignore", "big.test", "TXT"]);
    udp.expect_status("NOERROR");
    assert!(udp.has_flag("tc"), "no TC flag: {}", udp.out);
    assert_eq!(udp.transport.as_deref(), Some("UDP"), "{}", udp.out);
    assert!(
        udp.data("TXT").len() < BIG_TXT_RECORDS,
        "a truncated answer with all {BIG_TXT_RECORDS} records: {}",
        udp.out
    );
    // dig's default: retry over TCP, which carries all of it.
    let full = ask(&tb, fam, &["big.test", "TXT"]);
    full.expect_status("NOERROR");
    assert!(full.retried_tcp, "dig did not retry over TCP: {}", full.out);
    assert_eq!(full.transport.as_deref(), Some("TCP"), "{}", full.out);
    assert!(!full.has_flag("tc"), "{}", full.out);
    let mut txt: Vec<String> = full
        .data("TXT")
        .iter()
        .map(|t| t.trim_matches('"').to_string())
        .collect();
    txt.sort();
    let want: Vec<String> = (0..BIG_TXT_RECORDS).map(big_txt_string).collect();
    assert_eq!(txt, want, "{}", full.out);
    // ~650 bytes: whole with EDNS (1232), truncated without (512).
    let edns = ask(&tb, fam, &["+ignore", "mid.test", "TXT"]);
    edns.expect_status("NOERROR");
    assert!(!edns.has_flag("tc"), "{}", edns.out);
    assert_eq!(edns.data("TXT").len(), 3, "{}", edns.out);
    let plain = ask(&tb, fam, &["+ignore", "+noedns", "mid.test", "TXT"]);
    plain.expect_status("NOERROR");
    assert!(
        plain.has_flag("tc"),
        "a 650-byte answer to a query without EDNS, not truncated: {}",
        plain.out
    );
    // dnsmasq truncated these itself (ringnet forwards the guest's EDNS size), so
    // `dns_truncated` (ringnet's own truncations) is left to `truncation_by_ringnet`.
    tb.ringnet.assert_alive();
}

fn truncation_by_ringnet(fam: Fam) {
    require_privileges!("dig", "python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["198.51.100.7:5353"], &[], "", &[]);
    let (_srv, _) = tb
        .host
        .spawn_helper("dns_big_server.py", &["--bind", SINK_V4, "--port", "5353"]);
    let udp = ask(&tb, fam, &["+ignore", "careless.test", "TXT"]);
    udp.expect_status("NOERROR");
    assert!(
        udp.has_flag("tc"),
        "an oversized answer passed to a UDP guest: {}",
        udp.out
    );
    assert!(udp.data("TXT").is_empty(), "{}", udp.out);
    let plain = ask(&tb, fam, &["+ignore", "+noedns", "careless.test", "TXT"]);
    assert!(plain.has_flag("tc"), "{}", plain.out);
    // Over TCP the whole answer goes through.
    let full = ask(&tb, fam, &["careless.test", "TXT"]);
    full.expect_status("NOERROR");
    assert_eq!(full.transport.as_deref(), Some("TCP"), "{}", full.out);
    assert_eq!(full.data("TXT").len(), 8, "{}", full.out);
    let c = stop_counter(&mut tb, &["dns_truncated"]);
    assert!(c[0] >= 3, "dns_truncated {c:?}");
}

fn failover(dead: &str) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&[dead, "198.51.100.7:53"], &["timeout_ms = 1000"], "", &[]);
    let _dns = upstream(&tb.host);
    for fam in [Fam::V4, Fam::V6] {
        let a = ask(&tb, fam, &[NAME, "A"]);
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), [NAME_V4], "{}", a.out);
    }
    let c = stop_counter(&mut tb, &["dns_answered", "dns_servfail"]);
    assert!(c[0] >= 2, "dns_answered {c:?}");
    assert_eq!(c[1], 0, "dns_servfail {c:?}");
}

fn host_alias(fam: Fam) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, dns) = with_upstream(&[], "", &[]);
    let s = tb.slot();
    for tcp in ["+notcp", "+tcp"] {
        let a = ask(&tb, fam, &[tcp, "host.ringnet.internal", "A"]);
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), [s.gw_v4.to_string()], "{}", a.out);
        let aaaa = ask(&tb, fam, &[tcp, "host.ringnet.internal", "AAAA"]);
        aaaa.expect_status("NOERROR");
        assert_eq!(aaaa.data("AAAA"), [s.gw_v6.to_string()], "{}", aaaa.out);
    }
    assert!(
        !dns.asked("host.ringnet.internal"),
        "the host alias was forwarded:\n{}",
        dns.log()
    );
    let c = stop_counter(&mut tb, &["dns_local"]);
    assert!(c[0] >= 4, "dns_local {c:?}");
}

#[test]
fn static_hosts() {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let hosts = "[dns.hosts]\n\"db.internal\" = [\"198.51.100.9\", \"2001:db8::9\"]\n";
    let (mut tb, dns) = with_upstream(&[], hosts, &[]);
    for fam in [Fam::V4, Fam::V6] {
        let a = ask(&tb, fam, &["db.internal", "A"]);
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), ["198.51.100.9"], "{}", a.out);
        let aaaa = ask(&tb, fam, &["DB.Internal.", "AAAA"]);
        aaaa.expect_status("NOERROR");
        assert_eq!(aaaa.data("AAAA"), ["2001:db8::9"], "{}", aaaa.out);
    }
    assert!(!dns.asked("db.internal"), "forwarded:\n{}", dns.log());
    let c = stop_counter(&mut tb, &["dns_local"]);
    assert!(c[0] >= 4, "dns_local {c:?}");
}

fn rebind_protection(allow: bool) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let args: &[&str] = if allow {
        &["--allow", "10.0.0.0/8"]
    } else {
        &[]
    };
    let mut tb = start(&["198.51.100.7:53"], &[], "", args);
    let dns = Dnsmasq::new(SINK_V4)
        .address("rebind.test", "10.1.2.3")
        .address("rebind6.test", "fd00::1234")
        .host(NAME, &[NAME_V4])
        .start(&tb.host);
    let a = ask(&tb, Fam::V4, &["rebind.test", "A"]);
    let six = ask(&tb, Fam::V4, &["rebind6.test", "AAAA"]);
    // A public answer is never touched.
    let public = ask(&tb, Fam::V4, &[NAME, "A"]);
    public.expect_status("NOERROR");
    assert_eq!(public.data("A"), [NAME_V4], "{}", public.out);
    assert!(dns.asked("rebind.test"), "{}", dns.log());
    if allow {
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), ["10.1.2.3"], "{}", a.out);
    } else {
        a.expect_status("NXDOMAIN");
        assert!(a.answers.is_empty(), "{}", a.out);
    }
    // fd00::/8 (unique local) is not in 10.0.0.0/8: blocked either way.
    six.expect_status("NXDOMAIN");
    let c = stop_counter(&mut tb, &["dns_rebind_blocked"]);
    assert_eq!(c[0], if allow { 1 } else { 2 }, "dns_rebind_blocked");
}

#[test]
fn denied_name() {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["198.51.100.7:53"], &[], "", &["--deny", ".blocked.test"]);
    let dns = Dnsmasq::new(SINK_V4)
        .address("blocked.test", NAME_V4)
        .host(NAME, &[NAME_V4])
        .start(&tb.host);
    for (fam, name, tcp) in [
        (Fam::V4, "blocked.test", "+notcp"),
        (Fam::V4, "www.blocked.test", "+tcp"),
        (Fam::V6, "a.b.BLOCKED.test.", "+notcp"),
    ] {
        let d = ask(&tb, fam, &[tcp, name, "A"]);
        d.expect_status("NXDOMAIN");
        assert!(d.answers.is_empty(), "{}", d.out);
    }
    // Not a subdomain: a name that merely ends the same way.
    let other = ask(&tb, Fam::V4, &["notblocked.test", "A"]);
    assert!(other.answered(), "{}", other.out);
    let ok = ask(&tb, Fam::V4, &[NAME, "A"]);
    ok.expect_status("NOERROR");
    assert!(dns.asked(NAME), "{}", dns.log());
    assert!(dns.asked("notblocked.test"), "{}", dns.log());
    assert!(
        !dns.asked("blocked.test"),
        "a denied name reached the upstream:\n{}",
        dns.log()
    );
    let c = stop_counter(&mut tb, &["dns_denied"]);
    assert_eq!(c[0], 3, "dns_denied");
}

#[test]
fn formerr() {
    require_privileges!("dnsmasq", "dig", "python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, dns) = with_upstream(&[], "", &[]);
    for fam in [Fam::V4, Fam::V6] {
        let gw = gateway(&tb, fam);
        for q in ["2", "0"] {
            let out = tb.guest.helper(
                "dns_raw.py",
                &["--server", &gw, "--questions", q],
                Duration::from_secs(30),
            );
            let j = out.json();
            assert_eq!(j["ok"], true, "{out}");
            assert_eq!(j["qr"], true, "{out}");
            assert_eq!(j["rcode_name"], "FORMERR", "{q} questions: {out}");
        }
        // The same helper with one question is a normal query (the helper itself works).
        let out = tb.guest.helper(
            "dns_raw.py",
            &["--server", &gw, "--questions", "1"],
            Duration::from_secs(30),
        );
        assert_eq!(out.json()["ok"], true, "{out}");
        assert_ne!(out.json()["rcode_name"], "FORMERR", "{out}");
    }
    assert!(
        !dns.asked("q1.test"),
        "a malformed query was forwarded:\n{}",
        dns.log()
    );
    let c = stop_counter(&mut tb, &["dns_formerr"]);
    assert_eq!(c[0], 4, "dns_formerr");
}

#[test]
fn run_resolv_conf() {
    require_privileges!("dnsmasq", "dig", "unshare", "mount", "getent");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let dns = Dnsmasq::new("127.0.0.53")
        .host(NAME, &[NAME_V4, NAME_V6])
        .start(&host);
    let machine_before = std::fs::read("/etc/resolv.conf").ok();
    let fake = "# the host's resolv.conf of this test\nnameserver 127.0.0.53\noptions edns0\n";
    let host_resolv = TempFile::with_contents("resolv.conf", fake);
    // A private mount namespace (inside the host namespace's) where /etc/resolv.conf is the
    // file above; ringnet reads it for its default servers and gives the command its own.
    let script = format!(
        "mount --bind {f} /etc/resolv.conf && exec {bin} run --stats -- sh -c \
         'echo ---; cat /etc/resolv.conf; echo ---; getent hosts {NAME}'",
        f = host_resolv.path_str(),
        bin = ringnet_bin(),
    );
    let out = host.exec(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        Duration::from_secs(60),
    );
    assert!(out.success(), "{out}");
    let s = Slot::new(0);
    let seen = out.stdout.split("---").nth(1).unwrap_or("");
    assert!(
        seen.contains(&format!("nameserver {}", s.gw_v4)),
        "the command's resolv.conf does not name the gateway: {out}"
    );
    assert!(!seen.contains("127.0.0.53"), "{out}");
    let resolved = out.stdout.split("---").nth(2).unwrap_or("");
    assert!(
        resolved.contains(NAME_V4) || resolved.contains(NAME_V6),
        "getent hosts {NAME}: {out}"
    );
    assert!(dns.asked(NAME), "dnsmasq never asked:\n{}", dns.log());
    assert_eq!(host_resolv.read(), fake, "the host's resolv.conf changed");
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        machine_before,
        "the machine's /etc/resolv.conf changed"
    );
    assert!(
        stats_counter(&out.stderr, "dns_forwarded").unwrap_or(0) >= 1,
        "{out}"
    );
}

#[test]
fn direct_upstream() {
    require_privileges!("dnsmasq", "dig", "python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let tb = Testbed::start(Opts::default());
    let dns = upstream(&tb.host);
    for mode in ["+notcp", "+tcp"] {
        let a = dig(&tb.guest, SINK_V4, 53, &[mode, NAME, "A"], DIG);
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), [NAME_V4], "{}", a.out);
    }
    let out = tb.guest.helper(
        "dns_raw.py",
        &["--server", SINK_V4, "--questions", "1"],
        Duration::from_secs(30),
    );
    let j = out.json();
    assert_eq!(j["ok"], true, "{out}");
    assert_eq!(j["qr"], true, "{out}");
    assert!(dns.asked("q0.test"), "{}", dns.log());
}

fn cli_servers(server: &str) {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["198.51.100.99:53"],
        &["timeout_ms = 5000"],
        "",
        &["--dns", server],
    );
    let dns = Dnsmasq::new(SINK_V4)
        .listen(SINK_V6)
        .host(NAME, &[NAME_V4, NAME_V6])
        .start(&tb.host);
    let d = dig(
        &tb.guest,
        &gateway(&tb, Fam::V4),
        53,
        &[NAME, "A"],
        Duration::from_secs(4),
    );
    d.expect_status("NOERROR");
    assert_eq!(d.data("A"), [NAME_V4], "{}", d.out);
    assert!(dns.asked(NAME), "{}", dns.log());
    let c = stop_counter(&mut tb, &["dns_upstream_failed"]);
    assert_eq!(c[0], 0, "the config's (dead) server was tried");
}

#[test]
fn disabled_family() {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    // No IPv6 address or route: ringnet's routing probe finds IPv6 unroutable.
    host.ip(&["-6", "route", "del", "default"]);
    host.ip(&["addr", "del", "2001:db8::7/64", "dev", SINK_DEV]);
    let dns = Dnsmasq::new(SINK_V4)
        .host(NAME, &[NAME_V4, NAME_V6])
        .start(&host);
    let cfg = TempFile::with_contents("config.toml", &dns_config(&["198.51.100.7:53"], &[], ""));
    let gw = format!("@{}", Slot::new(0).gw_v4);
    let ask = |name: &str, rtype: &str| {
        let out = host.ringnet(
            &[
                "run",
                "--config",
                cfg.path_str(),
                "--",
                "dig",
                &gw,
                "+time=3",
                "+tries=1",
                name,
                rtype,
            ],
            Duration::from_secs(30),
        );
        assert!(out.success(), "{out}");
        parse_dig(out)
    };
    for name in ["host.ringnet.internal", NAME] {
        let aaaa = ask(name, "AAAA");
        aaaa.expect_status("NOERROR");
        assert!(
            aaaa.answers.is_empty(),
            "AAAA of {name} with IPv6 inactive: {}",
            aaaa.out
        );
    }
    let a = ask(NAME, "A");
    a.expect_status("NOERROR");
    assert_eq!(a.data("A"), [NAME_V4], "{}", a.out);
    let alias = ask("host.ringnet.internal", "A");
    assert_eq!(
        alias.data("A"),
        [Slot::new(0).gw_v4.to_string()],
        "{}",
        alias.out
    );
    assert!(dns.asked(NAME), "{}", dns.log());
}

#[test]
fn max_pending() {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["198.51.100.99:53"],
        &["timeout_ms = 3000", "max_pending = 2"],
        "",
        &[],
    );
    let gw = gateway(&tb, Fam::V4);
    let script =
        format!("for i in 1 2 3 4 5; do dig @{gw} +time=2 +tries=1 n$i.pending.test & done; wait");
    let out = tb.guest.sh_timeout(&script, Duration::from_secs(30));
    assert!(!out.stdout.contains("status: NOERROR"), "{out}");
    // Still serving: the host alias is answered locally.
    let a = ask(&tb, Fam::V4, &["host.ringnet.internal", "A"]);
    a.expect_status("NOERROR");
    let c = stop_counter(&mut tb, &["dns_dropped"]);
    assert!(c[0] >= 3, "dns_dropped {c:?}");
}
