//! Issue "policy": the network policy end to end. Servers listen on documentation
//! addresses added to the host namespace's sink (198.51.100.8/.9, 2001:db8::8/::9, and
//! 169.254.169.254 standing in for a metadata service) and report every connection they
//! see (tests/helpers/probe_server.py), so "denied" is proven at both ends: the guest's
//! connect fails with ECONNREFUSED within 100 ms (a RST at once; a blackholed SYN would
//! take seconds) and the server saw no connection. The upstream DNS server is a dnsmasq
//! on 198.51.100.7:53 mapping allowed.test → 198.51.100.8 / 2001:db8::8.
//!
//! Cases:
//! - `cidr::{v4,v6}`: `--allow tcp <.8>` before `--deny tcp <the /24 or /64>`: .8 connects,
//!   .9 is refused and unseen; `policy_denied_tcp`, `policy_denied_rule`; one log line
//!   naming the rule.
//! - `domain_pin`: `--policy none`, `--allow tcp allowed.test port 8080`: refused before
//!   the guest resolved the name; after `dig`, the resolved address (A and AAAA) connects on
//!   8080 but not on 8081, and .9 / ::9 (on the same server, named by no answer) stay refused;
//!   `policy_denied_default`.
//! - `pin_expires`: the same with a 2 s TTL: allowed right after the lookup, refused once
//!   the TTL has passed.
//! - `pin_table_full`: `max_pins = 1`, `--allow tcp .test port 8080`: resolving a second
//!   name evicts the first pin (the one that expires first): its address is refused again,
//!   the new one connects (`dns_pins_evicted`).
//! - `port_ranges::{cli,config_table,policy_file}`: `port 8000-8010` allows 8000, 8005 and
//!   8010, not 7999 or 8011, nor another address on 8005 (default deny); the rule given as
//!   `--allow`, as a `[policy]` table in `--config`, and in a `--policy FILE`.
//! - `precedence`: `--deny`/`--allow` in command-line order come before the config's rules;
//!   the first match wins.
//! - `sni::{matching,other}`: port 443 admitted by `allowed.test`: a ClientHello for
//!   allowed.test reaches the server; one for other.test is reset before the server gets a
//!   byte (`policy_sni_mismatch`).
//! - `udp_denied::{v4,v6}`: datagrams to a denied address are dropped (no echo; the guest's
//!   connected socket sees the ICMP administratively-prohibited error), another address
//!   still echoes; `policy_denied_udp`.
//! - `icmp_denied`: ping to a denied address fails with "Packet filtered" (ICMP
//!   administratively prohibited), to another works; `policy_denied_icmp`.
//! - `run_policy`: `ringnet run --deny …` applies to the command's flows as `attach` does.
//! - `safe_preset`: the metadata address and a private address are refused (the metadata
//!   server sees nothing), a foreign resolver is unreachable over UDP and TCP (dnsmasq never
//!   sees those queries) while the gateway's DNS answers, a public address and the host
//!   (gateway → loopback) connect.
//! - `no_policy_allows_all`: without any policy option nothing is denied: both addresses
//!   connect, a ClientHello with any SNI reaches the server, UDP echoes, ping answers, a
//!   foreign resolver answers; no `policy_denied_*` counter moves.
//! - `invalid_rules`: a bad CIDR, a port over 65535, an unknown protocol or preset: exit
//!   status 2, one line on stderr naming the rule.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

test_cases!(cidr: v4("198.51.100.8", "198.51.100.9", "198.51.100.0/24"), v6("2001:db8::8", "2001:db8::9", "2001:db8::/64"));
test_cases!(port_ranges: cli(super::RuleVia::Cli), config_table(super::RuleVia::ConfigTable), policy_file(super::RuleVia::PolicyFile));
test_cases!(sni: matching("allowed.test", true), other("other.test", false));
test_cases!(udp_denied: v4("198.51.100.8", "198.51.100.9"), v6("2001:db8::8", "2001:db8::9"));

const CASE_LIMIT: Duration = Duration::from_secs(120);
const CLIENT: Duration = Duration::from_secs(30);
/// The longest a denied connect may take: a RST at once, no host connect in between.
const RST_BOUND: f64 = 0.1;
/// How long a server is watched for a connection that must not come.
const QUIET: Duration = Duration::from_millis(700);

const NAME: &str = "allowed.test";
const A: &str = "198.51.100.8";
const A6: &str = "2001:db8::8";
const B: &str = "198.51.100.9";
const B6: &str = "2001:db8::9";
/// Lets the guest reach the gateway's DNS under a default-deny policy.
const ALLOW_DNS: &str = "udp,tcp group:host port 53";

/// ringnet config: the upstream DNS server, then `tail`.
fn config(tail: &str) -> String {
    dns_config(&["198.51.100.7:53"], &[], tail)
}

/// A testbed with ringnet started with `--stats <args…>` and `config`, the sink carrying
/// .8, .9, ::8, ::9, and dnsmasq answering allowed.test with TTL `ttl`.
fn start(args: &[&str], config_toml: &str, ttl: u32) -> (Testbed, DnsServer) {
    let mut opts = Opts::default().config(config_toml);
    opts.extra = std::iter::once("--stats")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let tb = Testbed::start(opts);
    for addr in [A, B, A6, B6] {
        tb.host.add_sink_addr(addr);
    }
    let dns = Dnsmasq::new(SINK_V4)
        .ttl(ttl)
        .host(NAME, &[A, A6])
        .host("other.test", &[B, B6])
        .start(&tb.host);
    (tb, dns)
}

/// A probe server (tests/helpers/probe_server.py) in the host namespace.
struct Probe {
    bg: Bg,
    port: String,
    seen: Vec<Json>,
}

impl Probe {
    fn start(host: &HostNs, binds: &[&str], port: u16) -> Probe {
        let mut args: Vec<&str> = Vec::new();
        for b in binds {
            args.extend(["--bind", b]);
        }
        let p = port.to_string();
        args.extend(["--port", &p, "--idle", "2"]);
        let (bg, ready) = host.spawn_helper("probe_server.py", &args);
        Probe {
            bg,
            port: common::port(&ready),
            seen: Vec::new(),
        }
    }

    /// Events arriving within `quiet` of each other (all of them, also earlier ones).
    fn events(&mut self, quiet: Duration) -> &[Json] {
        while let Some(line) = self.bg.next_line(quiet) {
            if let Ok(j) = serde_json::from_str::<Json>(&line) {
                self.seen.push(j);
            }
        }
        &self.seen
    }

    /// Connections accepted on `local` so far (waiting `quiet` for stragglers).
    fn accepted(&mut self, local: &str, quiet: Duration) -> usize {
        self.events(quiet)
            .iter()
            .filter(|e| e["event"] == "accept" && same_ip(&e["local"], local))
            .count()
    }
}

fn same_ip(v: &Json, ip: &str) -> bool {
    let s = v.as_str().unwrap_or("");
    s == ip || s.strip_prefix("::ffff:") == Some(ip)
}

/// `policy_client.py connect` from the guest.
fn connect(tb: &Testbed, target: &str, port: &str) -> Json {
    let out = tb.guest.helper(
        "policy_client.py",
        &["connect", "--target", target, "--port", port],
        CLIENT,
    );
    let j = out.json();
    assert!(j.get("ok").is_some(), "{out}");
    j
}

/// Connect must work end to end (the echo came back) and the server must have seen it.
fn assert_connects(tb: &Testbed, srv: &mut Probe, target: &str, port: &str) {
    let before = srv.accepted(target, Duration::from_millis(50));
    let j = connect(tb, target, port);
    assert_eq!(j["ok"], true, "connect {target}:{port} should work: {j}");
    assert_eq!(
        srv.accepted(target, Duration::from_millis(300)),
        before + 1,
        "the server did not see the connection to {target}:{port}: {:?}",
        srv.seen
    );
}

/// Connect must be refused at once (RST within [`RST_BOUND`]) and the server must not see
/// a connection.
fn assert_refused(tb: &Testbed, srv: &mut Probe, target: &str, port: &str) {
    let before = srv.accepted(target, Duration::from_millis(50));
    let j = connect(tb, target, port);
    assert_eq!(
        j["error"], "refused",
        "connect {target}:{port} should be refused: {j}"
    );
    let secs = j["seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(
        secs < RST_BOUND,
        "connect {target}:{port} refused only after {secs:.3} s: {j}"
    );
    assert_eq!(
        srv.accepted(target, QUIET),
        before,
        "a denied connection to {target}:{port} reached the server: {:?}",
        srv.seen
    );
}

/// Stop ringnet (it must exit cleanly); its `--stats` counters `names` (0 when not printed)
/// and its stderr.
fn stop(tb: &mut Testbed, names: &[&str]) -> (Vec<u64>, String) {
    tb.ringnet.assert_alive();
    tb.ringnet.stop();
    let stderr = tb.ringnet.stderr();
    let c = names
        .iter()
        .map(|n| stats_counter(&stderr, n).unwrap_or(0))
        .collect();
    (c, stderr)
}

/// `dig @GATEWAY NAME TYPE` from the guest; the addresses answered.
fn resolve(tb: &Testbed, name: &str, rtype: &str) -> Dig {
    let gw = tb.slot().gw_v4.to_string();
    let d = dig(&tb.guest, &gw, 53, &[name, rtype], Duration::from_secs(6));
    d.expect_status("NOERROR");
    d
}

fn cidr(allowed: &str, denied: &str, net: &str) {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let allow = format!("tcp {allowed}");
    let deny = format!("tcp {net}");
    let (mut tb, _dns) = start(&["--allow", &allow, "--deny", &deny], &config(""), 60);
    let mut srv = Probe::start(&tb.host, &[allowed, denied], 0);
    let port = srv.port.clone();
    assert_connects(&tb, &mut srv, allowed, &port);
    assert_refused(&tb, &mut srv, denied, &port);
    assert_connects(&tb, &mut srv, allowed, &port);
    let (c, stderr) = stop(
        &mut tb,
        &[
            "policy_denied_tcp",
            "policy_denied_rule",
            "policy_denied_default",
        ],
    );
    assert_eq!(c, [1, 1, 0], "policy_denied_tcp/rule/default");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(denied)).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one log line for the denied flow to {denied}:\n{stderr}"
    );
    assert!(
        lines[0].contains(net),
        "the log line does not name the rule ({net}): {}",
        lines[0]
    );
}

#[test]
fn domain_pin() {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let rule = format!("tcp {NAME} port 8080");
    let (mut tb, _dns) = start(
        &["--policy", "none", "--allow", ALLOW_DNS, "--allow", &rule],
        &config(""),
        60,
    );
    let mut srv = Probe::start(&tb.host, &[A, B, A6, B6], 8080);
    let mut other_port = Probe::start(&tb.host, &[A, A6], 8081);
    // Not resolved yet: nothing pins A to allowed.test.
    assert_refused(&tb, &mut srv, A, "8080");
    let a = resolve(&tb, NAME, "A");
    assert_eq!(a.data("A"), [A], "{}", a.out);
    let aaaa = resolve(&tb, NAME, "AAAA");
    assert_eq!(aaaa.data("AAAA"), [A6], "{}", aaaa.out);
    assert_connects(&tb, &mut srv, A, "8080");
    assert_connects(&tb, &mut srv, A6, "8080");
    // Same server, addresses no answer named; the pinned address on another port.
    assert_refused(&tb, &mut srv, B, "8080");
    assert_refused(&tb, &mut srv, B6, "8080");
    assert_refused(&tb, &mut other_port, A, "8081");
    // Resolving another name to B does not pin B to allowed.test.
    let other = resolve(&tb, "other.test", "A");
    assert_eq!(other.data("A"), [B], "{}", other.out);
    assert_refused(&tb, &mut srv, B, "8080");
    let (c, _) = stop(&mut tb, &["policy_denied_tcp", "policy_denied_default"]);
    assert_eq!(c[0], 5, "policy_denied_tcp");
    assert!(c[1] >= 1, "policy_denied_default {c:?}");
}

#[test]
fn pin_expires() {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let rule = format!("tcp {NAME} port 8080");
    let (mut tb, _dns) = start(
        &["--policy", "none", "--allow", ALLOW_DNS, "--allow", &rule],
        &config(""),
        2,
    );
    let mut srv = Probe::start(&tb.host, &[A], 8080);
    let a = resolve(&tb, NAME, "A");
    let resolved = Instant::now();
    assert_eq!(a.data("A"), [A], "{}", a.out);
    let ttl = a.answers[0].ttl;
    assert!(
        (1..=2).contains(&ttl),
        "TTL {ttl} (dnsmasq gave 2): {}",
        a.out
    );
    assert_connects(&tb, &mut srv, A, "8080");
    // The pin lives for the TTL (at least 1 s); well past it, a new flow is refused.
    let past = Duration::from_secs(u64::from(ttl)) + Duration::from_millis(1500);
    if let Some(left) = past.checked_sub(resolved.elapsed()) {
        thread::sleep(left);
    }
    assert_refused(&tb, &mut srv, A, "8080");
    // Resolving again pins it again.
    resolve(&tb, NAME, "A");
    assert_connects(&tb, &mut srv, A, "8080");
    let (c, _) = stop(&mut tb, &["policy_denied_tcp"]);
    assert_eq!(c[0], 1, "policy_denied_tcp");
}

#[test]
fn pin_table_full() {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let cfg = dns_config(&["198.51.100.7:53"], &["max_pins = 1"], "");
    let (mut tb, _dns) = start(
        &[
            "--policy",
            "none",
            "--allow",
            ALLOW_DNS,
            "--allow",
            "tcp .test port 8080",
        ],
        &cfg,
        60,
    );
    let mut srv = Probe::start(&tb.host, &[A, B], 8080);
    resolve(&tb, NAME, "A");
    assert_connects(&tb, &mut srv, A, "8080");
    assert_refused(&tb, &mut srv, B, "8080");
    let other = resolve(&tb, "other.test", "A");
    assert_eq!(other.data("A"), [B], "{}", other.out);
    assert_connects(&tb, &mut srv, B, "8080");
    assert_refused(&tb, &mut srv, A, "8080");
    let (c, _) = stop(&mut tb, &["dns_pins_evicted", "policy_denied_tcp"]);
    assert!(c[0] >= 1, "dns_pins_evicted {c:?}");
    assert_eq!(c[1], 2, "policy_denied_tcp");
}

#[derive(Clone, Copy, Debug)]
enum RuleVia {
    Cli,
    ConfigTable,
    PolicyFile,
}

fn port_ranges(via: RuleVia) {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let policy_file = TempFile::with_contents(
        "policy.toml",
        &format!("preset = \"none\"\nrules = [\"allow egress tcp {A} port 8000-8010\"]\n"),
    );
    let table = format!(
        "[policy]\ndefault_egress = \"deny\"\nrules = [\n  {{ action = \"allow\", direction = \
         \"egress\", destination = \"{A}/32\", protocols = [\"tcp\"], ports = [\"8000-8010\"] }},\n]\n"
    );
    let allow = format!("tcp {A} port 8000-8010");
    let (args, cfg): (Vec<&str>, String) = match via {
        RuleVia::Cli => (vec!["--policy", "none", "--allow", &allow], config("")),
        RuleVia::ConfigTable => (vec![], config(&table)),
        RuleVia::PolicyFile => (vec!["--policy", policy_file.path_str()], config("")),
    };
    let (mut tb, _dns) = start(&args, &cfg, 60);
    let mut servers: Vec<(u16, Probe)> = [7999, 8000, 8005, 8010, 8011]
        .into_iter()
        .map(|p| (p, Probe::start(&tb.host, &[A, B], p)))
        .collect();
    for (port, srv) in &mut servers {
        let p = port.to_string();
        if (8000..=8010).contains(port) {
            assert_connects(&tb, srv, A, &p);
        } else {
            assert_refused(&tb, srv, A, &p);
        }
    }
    assert_refused(&tb, &mut servers[2].1, B, "8005");
    let (c, _) = stop(&mut tb, &["policy_denied_tcp", "policy_denied_default"]);
    assert_eq!(c, [3, 3], "policy_denied_tcp/default");
}

#[test]
fn precedence() {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    // Config: deny everything to A. Command line, first match wins: deny A:8006, allow A.
    let cfg = config(&format!(
        "[policy]\nrules = [\"deny tcp {A}\", \"allow tcp {B}\"]\n"
    ));
    let deny = format!("egress tcp {A} port 8006");
    let allow = format!("tcp {A}");
    let (mut tb, _dns) = start(&["--deny", &deny, "--allow", &allow], &cfg, 60);
    let mut s8005 = Probe::start(&tb.host, &[A, B], 8005);
    let mut s8006 = Probe::start(&tb.host, &[A, B], 8006);
    assert_connects(&tb, &mut s8005, A, "8005");
    assert_refused(&tb, &mut s8006, A, "8006");
    assert_connects(&tb, &mut s8006, B, "8006");
    let (c, _) = stop(&mut tb, &["policy_denied_tcp", "policy_denied_rule"]);
    assert_eq!(c, [1, 1], "policy_denied_tcp/rule");
}

fn sni(server_name: &str, admitted: bool) {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let rule = format!("tcp {NAME} port 443");
    let (mut tb, _dns) = start(
        &["--policy", "none", "--allow", ALLOW_DNS, "--allow", &rule],
        &config(""),
        60,
    );
    let mut srv = Probe::start(&tb.host, &[A], 443);
    resolve(&tb, NAME, "A");
    let out = tb.guest.helper(
        "policy_client.py",
        &[
            "tls",
            "--target",
            A,
            "--port",
            "443",
            "--sni",
            server_name,
            "--io-timeout",
            "10",
        ],
        CLIENT,
    );
    let j = out.json();
    assert_eq!(j["ok"], false, "no TLS server there, yet: {out}");
    // The server closes an idle connection after 2 s; wait for its report.
    let events = srv.events(Duration::from_secs(4)).to_vec();
    let got: u64 = events
        .iter()
        .filter(|e| e["event"] == "closed")
        .filter_map(|e| e["bytes"].as_u64())
        .sum();
    let (c, _) = stop(&mut tb, &["policy_sni_mismatch"]);
    if admitted {
        assert_ne!(j["error"], "reset", "{out}");
        let hello = events
            .iter()
            .any(|e| e["event"] == "closed" && e["first"] == 0x16 && e["bytes"].as_u64() > Some(0));
        assert!(
            hello,
            "the server did not get the ClientHello: {events:?}; client {out}"
        );
        assert_eq!(c[0], 0, "policy_sni_mismatch");
    } else {
        assert_eq!(j["error"], "reset", "{out}");
        assert_eq!(
            got, 0,
            "the server got bytes of a mismatched ClientHello: {events:?}"
        );
        assert_eq!(c[0], 1, "policy_sni_mismatch");
    }
}

fn udp_denied(denied: &str, other: &str) {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let deny = format!("udp {denied}");
    let (mut tb, _dns) = start(&["--deny", &deny], &config(""), 60);
    let (_s1, r1) = tb
        .host
        .spawn_helper("udp_echo_server.py", &["--bind", denied]);
    let (_s2, r2) = tb
        .host
        .spawn_helper("udp_echo_server.py", &["--bind", other]);
    let run = |target: &str, port: &str| {
        let out = tb.guest.helper(
            "policy_client.py",
            &["udp", "--target", target, "--port", port, "--count", "3"],
            CLIENT,
        );
        let j = out.json();
        assert!(j.get("replies").is_some(), "{out}");
        j
    };
    let ok = run(other, &port(&r2));
    assert_eq!(ok["replies"], 3, "{ok}");
    let no = run(denied, &port(&r1));
    assert_eq!(no["replies"], 0, "a denied UDP flow was answered: {no}");
    let errors: Vec<&str> = no["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| ["EHOSTUNREACH", "EACCES", "ECONNREFUSED", "ENETUNREACH"].contains(e)),
        "no ICMP unreachable reached the guest's socket (only timeouts): {no}"
    );
    let (c, _) = stop(&mut tb, &["policy_denied_udp", "policy_denied_rule"]);
    assert!(c[0] >= 1 && c[1] >= 1, "policy_denied_udp/rule {c:?}");
}

#[test]
fn icmp_denied() {
    require_privileges!("ping", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let deny = format!("icmp {A}");
    let (mut tb, _dns) = start(&["--deny", &deny], &config(""), 60);
    let ok = tb.guest.sh(&format!("ping -c 2 -W 2 {B}"));
    assert!(ok.success(), "{ok}");
    let no = tb.guest.sh(&format!("ping -c 2 -W 1 {A}"));
    assert!(!no.success(), "ping to a denied address answered: {no}");
    assert!(!no.stdout.contains("bytes from"), "{no}");
    // iputils ping reports ICMP "communication administratively prohibited" (type 3 code 13)
    // as "Packet filtered".
    assert!(
        no.stdout.contains("Packet filtered"),
        "no administratively-prohibited error came back: {no}"
    );
    let (c, _) = stop(&mut tb, &["policy_denied_icmp"]);
    assert!(c[0] >= 1, "policy_denied_icmp {c:?}");
}

#[test]
fn safe_preset() {
    require_privileges!("python3", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, dns) = start(&["--policy", "safe"], &config(""), 60);
    let metadata = "169.254.169.254";
    tb.host.add_sink_addr(metadata);
    let mut meta = Probe::start(&tb.host, &[metadata], 80);
    let mut public = Probe::start(&tb.host, &[A], 8080);
    let mut local = Probe::start(&tb.host, &["127.0.0.1"], 0);
    let gw = tb.slot().gw_v4.to_string();
    assert_refused(&tb, &mut meta, metadata, "80");
    // A private address: refused at once by the policy (the sink would only blackhole it).
    let private = connect(&tb, "10.1.2.3", "80");
    assert_eq!(private["error"], "refused", "{private}");
    assert!(
        private["seconds"].as_f64().unwrap_or(9.0) < RST_BOUND,
        "{private}"
    );
    assert_connects(&tb, &mut public, A, "8080");
    // The host (gateway → the host namespace's loopback) is group:host, allowed.
    let lport = local.port.clone();
    let j = connect(&tb, &gw, &lport);
    assert_eq!(j["ok"], true, "gateway → loopback: {j}");
    assert_eq!(local.accepted("127.0.0.1", Duration::from_millis(300)), 1);
    // A foreign resolver: UDP dropped, TCP refused; dnsmasq never sees the queries.
    let t = Duration::from_secs(3);
    let udp = dig(&tb.guest, SINK_V4, 53, &["+notcp", "foreign-udp.test"], t);
    assert!(
        !udp.answered(),
        "foreign resolver answered over UDP: {}",
        udp.out
    );
    let tcp = dig(&tb.guest, SINK_V4, 53, &["+tcp", "foreign-tcp.test"], t);
    assert!(
        !tcp.answered(),
        "foreign resolver answered over TCP: {}",
        tcp.out
    );
    // The gateway's DNS works, through the same dnsmasq.
    let a = resolve(&tb, NAME, "A");
    assert_eq!(a.data("A"), [A], "{}", a.out);
    thread::sleep(Duration::from_millis(200));
    assert!(dns.asked(NAME), "{}", dns.log());
    assert!(
        !dns.asked("foreign-udp.test") && !dns.asked("foreign-tcp.test"),
        "a query to a foreign resolver got through:\n{}",
        dns.log()
    );
    let (c, _) = stop(
        &mut tb,
        &["policy_denied_tcp", "policy_denied_udp", "dns_forwarded"],
    );
    assert!(c[0] >= 3, "policy_denied_tcp {c:?}");
    assert!(c[1] >= 1, "policy_denied_udp {c:?}");
    assert!(c[2] >= 1, "dns_forwarded {c:?}");
}

#[test]
fn invalid_rules() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let guest_path = guest.path();
    for (args, needle) in [
        (&["--allow", "tcp 10.0.0.0/33"][..], "10.0.0.0/33"),
        (&["--deny", "tcp example.test port 70000"], "70000"),
        (&["--allow", "sctp 198.51.100.8"], "sctp"),
        (&["--deny", "tcp 198.51.100.8 port 9-3"], "9-3"),
        (&["--policy", "bogus-preset"], "bogus-preset"),
    ] {
        for cmd in ["run", "attach"] {
            let mut full = vec![cmd];
            if cmd == "attach" {
                full.extend(["--netns", &guest_path, "--tap", "eth0", "--configure"]);
            }
            full.extend_from_slice(args);
            if cmd == "run" {
                full.extend(["--", "true"]);
            }
            let out = host.ringnet(&full, Duration::from_secs(20));
            assert_eq!(out.code(), Some(2), "{out}");
            let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
            assert_eq!(lines.len(), 1, "want one line: {out}");
            assert!(
                lines[0].contains(needle),
                "the error does not name {needle:?}: {out}"
            );
            assert!(!out.stderr.contains("panicked"), "{out}");
        }
    }
}

#[test]
fn no_policy_allows_all() {
    require_privileges!("python3", "ping", "dnsmasq", "dig");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts {
        extra: vec!["--stats".into()],
        ..Opts::default()
    });
    for addr in [A, B, A6, B6] {
        tb.host.add_sink_addr(addr);
    }
    let dns = Dnsmasq::new(SINK_V4).host(NAME, &[A]).start(&tb.host);
    let mut srv = Probe::start(&tb.host, &[A, B, A6, B6], 0);
    let p = srv.port.clone();
    for target in [A, B, A6, B6] {
        assert_connects(&tb, &mut srv, target, &p);
    }
    let out = tb.guest.helper(
        "policy_client.py",
        &["tls", "--target", B, "--port", &p, "--sni", "other.test"],
        CLIENT,
    );
    assert_ne!(out.json()["error"], "reset", "{out}");
    let hello = srv
        .events(Duration::from_secs(3))
        .iter()
        .any(|e| e["event"] == "closed" && e["first"] == 0x16);
    assert!(hello, "no ClientHello at the server: {:?}; {out}", srv.seen);
    let (_u, ready) = tb.host.spawn_helper("udp_echo_server.py", &["--bind", A]);
    let out = tb.guest.helper(
        "policy_client.py",
        &["udp", "--target", A, "--port", &port(&ready)],
        CLIENT,
    );
    assert_eq!(out.json()["ok"], true, "{out}");
    tb.guest.sh(&format!("ping -c 1 -W 2 {A}")).ok();
    let d = dig(&tb.guest, SINK_V4, 53, &[NAME], Duration::from_secs(5));
    d.expect_status("NOERROR");
    assert_eq!(d.data("A"), [A], "{}", d.out);
    assert!(dns.asked(NAME));
    let (_, stderr) = stop(&mut tb, &[]);
    assert!(
        !stderr.lines().any(|l| l.starts_with("policy_denied")),
        "{stderr}"
    );
}

#[test]
fn run_policy() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    for addr in [A, B] {
        host.add_sink_addr(addr);
    }
    let mut srv = Probe::start(&host, &[A, B], 0);
    let client = helper("policy_client.py");
    let script = format!(
        "python3 -B {client} connect --target {A} --port {p}; \
         python3 -B {client} connect --target {B} --port {p}",
        p = srv.port
    );
    let deny = format!("tcp {A}");
    let out = host.ringnet(
        &["run", "--stats", "--deny", &deny, "--", "sh", "-c", &script],
        Duration::from_secs(60),
    );
    assert!(out.success(), "{out}");
    let results: Vec<Json> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(results.len(), 2, "{out}");
    assert_eq!(results[0]["error"], "refused", "{out}");
    assert!(
        results[0]["seconds"].as_f64().unwrap_or(9.0) < RST_BOUND,
        "{out}"
    );
    assert_eq!(results[1]["ok"], true, "{out}");
    assert_eq!(srv.accepted(A, QUIET), 0, "{:?}", srv.seen);
    assert_eq!(
        srv.accepted(B, Duration::from_millis(50)),
        1,
        "{:?}",
        srv.seen
    );
    assert_eq!(
        stats_counter(&out.stderr, "policy_denied_tcp"),
        Some(1),
        "{out}"
    );
}
