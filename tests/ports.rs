//! Issue #11 "published ports": host clients reach services in the guest. ringnet (`attach`,
//! in the test's host namespace) listens on the published port there; servers run in the
//! guest namespace on the guest's own addresses (172.16.0.2, fd42:6d73:62::2); clients run
//! in the host namespace (tests/helpers/ports_client.py, or the suite's tcp/http clients).
//! The guest's probe server (tests/helpers/probe_server.py) reports every connection it
//! accepts with the peer's address and port, so "the guest sees the real client" and "the
//! guest saw nothing" are checked at the guest end.
//!
//! Cases:
//! - `http::{v4,v6}`: GET through `-p 8080:8000` (default bind 127.0.0.1) and
//!   `-p [::1]:8080:8000`, body sha256 equal (v6 client → the guest's IPv6 address).
//! - `bulk::{mtu1500,mtu65520}`: 1 GiB (env `RINGNET_TEST_BULK_BYTES` overrides) up to the
//!   guest and 1 GiB down from it through a published port, sha256 equal at both ends.
//! - `half_close`: the host client shuts down its write side and still gets the guest's
//!   whole reply (v4, v6).
//! - `resets_both_ways`: a host client's RST reaches the guest server as RST; a guest
//!   server's RST reaches the host client as RST.
//! - `client_address`: real addresses — a client bound to 198.51.100.8 / 2001:db8::8 in the
//!   host namespace, connecting to 198.51.100.7 / 2001:db8::7, is seen by the guest with its
//!   own address and port; loopback clients (127.0.0.1, ::1) are seen as the gateway.
//! - `client_gateway::{cli,config}`: `--client-address gateway`, and `client_address =
//!   "gateway"` in `[[ports]]` tables: every client is seen as the gateway of its family.
//! - `v4_client_to_v6_only_guest`: no IPv4 route in the host namespace (the guest gets
//!   IPv6 only): IPv4 clients, loopback and from a sink address, reach it and are seen as
//!   the IPv6 gateway.
//! - `run_publish`: `ringnet run -p 8080:8000 -- CMD`: a host client reaches the command's
//!   server (seen as the gateway), the run exits with the command's status.
//! - `publish_forms`: `-p 8100` (guest port = host port), the range `-p 8000-8002:9000-9002`
//!   (each host port reaches its own guest port), a `[[ports]]` table with only `host_port`.
//! - `udp_echo::{v4,v6}`: 3 host peers at once through `-p [BIND:]5353:5300/udp`, each
//!   getting exactly its own replies, from the published port; `udp_inbound_peers` 3.
//! - `udp_peers_at_start::{v4,v6}`: 10 peers at once right after start and a TCP connection
//!   of the other family, 3 fresh testbeds: no reply reaches another peer, every datagram
//!   is answered.
//! - `udp_peer_limit`: `max_udp_peers = 2`, three peers one after another all answered,
//!   `udp_inbound_evicted` counts the oldest.
//! - `concurrent_500::{uring,epoll}`: 500 inbound connections at once, each echoing its own
//!   64 KiB; `inbound_accepted` 500.
//! - `guest_refuses`: nothing listens on the guest port: the host client (v4 and v6) is reset
//!   within 1 s; `inbound_guest_refused` 2.
//! - `guest_blackholes`: the guest's SYN-ACKs are dropped (a blackhole route to the gateway
//!   in the guest): with `connect_timeout_ms = 1000` the host client is reset after about
//!   1 s (not before 0.7 s, not after 5 s); `inbound_guest_timeout` 1; the route removed, a
//!   new client gets through.
//! - `ingress_deny_tcp`: `--deny "ingress tcp 198.51.100.0/24"`: a client from .8 is reset
//!   and the guest sees nothing, a loopback client gets through; `policy_denied_tcp`,
//!   `policy_denied_rule` 1.
//! - `ingress_deny_udp`: the same for UDP: no reply to .8, replies to loopback;
//!   `policy_denied_udp`.
//! - `ingress_default_deny`: `[policy] default_ingress = "deny"` with `--allow "ingress tcp
//!   198.51.100.8"`: .8 gets through, .9 is reset; `policy_denied_default` 1.
//! - `inbound_limit`: `max_inbound_connections = 2`: two held connections echo, the third is
//!   reset (`inbound_refused_limit` 1); once they are closed a new one gets through.
//! - `unbindable::{tcp_in_use,udp_in_use,foreign_v4,foreign_v6,run_in_use}`: a port already
//!   bound by another process in the host namespace, or a BIND address the host does not
//!   have: exit status 2 and one line naming the port and the reason (`attach`, and `run`).
//! - `spec_errors`: malformed `-p` specs are one-line errors with exit status 2.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

test_cases!(http: v4(false), v6(true));
test_cases!(bulk: mtu1500(1500), mtu65520(65520));
test_cases!(client_gateway: cli(false), config(true));
test_cases!(udp_echo: v4(false), v6(true));
test_cases!(udp_peers_at_start: v4(false), v6(true));
test_cases!(concurrent_500: uring("uring"), epoll("epoll"));
test_cases!(
    unbindable: tcp_in_use(super::Unbindable::TcpInUse),
    udp_in_use(super::Unbindable::UdpInUse),
    foreign_v4(super::Unbindable::ForeignV4),
    foreign_v6(super::Unbindable::ForeignV6),
    run_in_use(super::Unbindable::RunInUse),
);

const CASE_LIMIT: Duration = Duration::from_secs(180);
const BULK_LIMIT: Duration = Duration::from_secs(900);
const CLIENT: Duration = Duration::from_secs(60);

/// The published host port and the guest port behind it (TCP); the same for UDP.
const HOST_PORT: &str = "8080";
const GUEST_PORT: &str = "8000";
const UDP_HOST_PORT: &str = "5353";
const UDP_GUEST_PORT: &str = "5300";
/// Extra client addresses on the host namespace's sink (the sink itself is .7 / ::7).
const C8: &str = "198.51.100.8";
const C9: &str = "198.51.100.9";
const C8_6: &str = "2001:db8::8";

/// ringnet with `--stats`, every `-p` in `publish`, then `extra`, and `config`.
fn start_with(publish: &[&str], extra: &[&str], config: Option<&str>, opts: Opts) -> Testbed {
    let mut opts = opts;
    if let Some(c) = config {
        opts.config = Some(c.to_string());
    }
    opts.extra = std::iter::once("--stats")
        .chain(publish.iter().flat_map(|p| ["-p", p]))
        .chain(extra.iter().copied())
        .map(String::from)
        .collect();
    Testbed::start(opts)
}

fn start(publish: &[&str], extra: &[&str], config: Option<&str>) -> Testbed {
    start_with(publish, extra, config, Opts::default())
}

/// `ports_client.py <cmd> --target T --port P <extra…>` in the host namespace.
fn client(tb: &Testbed, cmd: &str, target: &str, port: &str, extra: &[&str]) -> (Json, Output) {
    let limit = CLIENT.as_secs().to_string();
    let mut args = vec![cmd, "--target", target, "--port", port, "--timeout", &limit];
    args.extend_from_slice(extra);
    let out = tb
        .host
        .helper("ports_client.py", &args, CLIENT + Duration::from_secs(15));
    let j = out.json();
    (j, out)
}

/// A connection through the published port must work end to end (the guest echoed it).
fn assert_connects(tb: &Testbed, target: &str, port: &str, source: Option<&str>) -> Json {
    let mut extra = vec![];
    if let Some(s) = source {
        extra.extend(["--source", s]);
    }
    let (j, out) = client(tb, "connect", target, port, &extra);
    assert!(
        j["ok"] == true,
        "connect {target}:{port} from {source:?} should work: {out}"
    );
    j
}

/// Connect to the published port and wait (up to `wait` s) for what ringnet does with it:
/// the probe's outcome ("reset", "eof", "data", "timeout", "connect-…") and its seconds.
fn probe(
    tb: &Testbed,
    target: &str,
    port: &str,
    source: Option<&str>,
    wait: &str,
) -> (String, f64, Output) {
    let mut extra = vec!["--wait", wait];
    if let Some(s) = source {
        extra.extend(["--source", s]);
    }
    let (j, out) = client(tb, "probe", target, port, &extra);
    // A reset that arrives before connect(2) has returned to the client fails the connect
    // itself with ECONNRESET: a reset all the same.
    let outcome = match j["outcome"].as_str().unwrap_or("") {
        "connect-reset" => "reset",
        o => o,
    }
    .to_string();
    let secs = j["seconds"].as_f64().unwrap_or(f64::MAX);
    (outcome, secs, out)
}

/// A probe server (echo, reports every accept) in the guest.
struct GuestProbe {
    bg: Bg,
    seen: Vec<Json>,
}

impl GuestProbe {
    fn start(tb: &Testbed, binds: &[&str], port: &str) -> GuestProbe {
        let mut args: Vec<&str> = Vec::new();
        for b in binds {
            args.extend(["--bind", b]);
        }
        args.extend(["--port", port, "--idle", "60"]);
        let (bg, _ready) = tb.guest.spawn_helper("probe_server.py", &args);
        GuestProbe {
            bg,
            seen: Vec::new(),
        }
    }

    /// Read events until none comes for `quiet`.
    fn drain(&mut self, quiet: Duration) {
        while let Some(line) = self.bg.next_line(quiet) {
            if let Ok(j) = serde_json::from_str::<Json>(&line) {
                self.seen.push(j);
            }
        }
    }

    fn accepts(&mut self, quiet: Duration) -> Vec<Json> {
        self.drain(quiet);
        self.seen
            .iter()
            .filter(|e| e["event"] == "accept")
            .cloned()
            .collect()
    }
}

fn same_ip(v: &Json, ip: &str) -> bool {
    let s = v.as_str().unwrap_or("");
    s == ip || s.strip_prefix("::ffff:") == Some(ip)
}

/// Stop ringnet (it must still run, and exit cleanly); its `--stats` counters `names` (0 when
/// not printed) and its stderr.
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

// ---------------------------------------------------------------------------------------
// HTTP, bulk, 500 at once
// ---------------------------------------------------------------------------------------

fn http(v6: bool) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let spec = if v6 { "[::1]:8080:8000" } else { "8080:8000" };
    let mut tb = start(&[spec], &[], None);
    let s = tb.slot();
    let (guest_addr, client_target) = if v6 {
        (s.guest_v6.to_string(), "::1")
    } else {
        (s.guest_v4.to_string(), "127.0.0.1")
    };
    let (_srv, ready) = tb.guest.spawn_helper(
        "http_server.py",
        &[
            "--bind",
            &guest_addr,
            "--port",
            GUEST_PORT,
            "--size",
            "4194304",
        ],
    );
    let out = tb.host.helper(
        "http_client.py",
        &["--host", client_target, "--port", HOST_PORT],
        CLIENT,
    );
    let j = out.json();
    assert!(j["ok"] == true, "GET through -p {spec}: {out}");
    assert_eq!(j["sha256"], ready["sha256"], "{out}");
    assert_eq!(j["bytes"], ready["bytes"], "{out}");
    let (c, _) = stop(&mut tb, &["inbound_accepted"]);
    assert_eq!(c[0], 1, "inbound_accepted");
}

fn bulk_bytes() -> String {
    std::env::var("RINGNET_TEST_BULK_BYTES").unwrap_or_else(|_| (1u64 << 30).to_string())
}

fn bulk(mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(BULK_LIMIT);
    let mut tb = start_with(&["8080:8000"], &[], None, Opts::mtu(mtu));
    let guest = tb.slot().guest_v4.to_string();
    let (mut srv, _) = tb
        .guest
        .spawn_helper("tcp_server.py", &["--bind", &guest, "--port", GUEST_PORT]);
    let bytes = bulk_bytes();
    let limit = Duration::from_secs(400);
    for direction in ["up", "down"] {
        let secs = limit.as_secs().to_string();
        let out = tb.host.helper(
            "tcp_client.py",
            &[
                "bulk",
                "--target",
                "127.0.0.1",
                "--port",
                HOST_PORT,
                "--direction",
                direction,
                "--bytes",
                &bytes,
                "--io-timeout",
                "60",
                "--timeout",
                &secs,
            ],
            limit + Duration::from_secs(15),
        );
        let j = out.json();
        assert!(
            j["ok"] == true,
            "bulk {direction} (host → guest is up): {out}"
        );
        assert_eq!(j["sha256_local"], j["sha256_remote"], "{out}");
        eprintln!(
            "inbound mtu {mtu} {direction}: {bytes} bytes in {:.1} s ({:.2} Gbit/s)",
            j["seconds"].as_f64().unwrap_or(0.0),
            j["gbit_s"].as_f64().unwrap_or(0.0)
        );
        srv.assert_alive();
        tb.ringnet.assert_alive();
    }
    let (c, _) = stop(&mut tb, &["inbound_accepted"]);
    assert_eq!(c[0], 2, "inbound_accepted");
}

fn concurrent_500(driver: &'static str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start_with(&["8080:8000"], &[], None, Opts::default().egress(driver));
    let guest = tb.slot().guest_v4.to_string();
    let (_srv, _) = tb
        .guest
        .spawn_helper("tcp_server.py", &["--bind", &guest, "--port", GUEST_PORT]);
    let out = tb.host.helper(
        "tcp_client.py",
        &[
            "echo-many",
            "--target",
            "127.0.0.1",
            "--port",
            HOST_PORT,
            "--conns",
            "500",
            "--size",
            "65536",
            "--connect-timeout",
            "30",
            "--timeout",
            "120",
        ],
        Duration::from_secs(135),
    );
    let j = out.json();
    assert!(j["ok"] == true, "500 inbound echoes: {out}");
    let (c, _) = stop(&mut tb, &["inbound_accepted", "inbound_refused_limit"]);
    assert_eq!(c, [500, 0], "inbound_accepted / inbound_refused_limit");
}

/// Half-close through a published port: the host client shuts down its write side and
/// still receives the guest server's whole reply (op collect), v4 and v6.
#[test]
fn half_close() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["8080:8000", "[::1]:8080:8000"], &[], None);
    let s = tb.slot();
    for (guest, target) in [
        (s.guest_v4.to_string(), "127.0.0.1"),
        (s.guest_v6.to_string(), "::1"),
    ] {
        let (_srv, _) = tb
            .guest
            .spawn_helper("tcp_server.py", &["--bind", &guest, "--port", GUEST_PORT]);
        let out = tb.host.helper(
            "tcp_client.py",
            &[
                "half-close",
                "--target",
                target,
                "--port",
                HOST_PORT,
                "--size",
                "1048576",
                "--timeout",
                "60",
            ],
            CLIENT,
        );
        assert!(out.json()["ok"] == true, "half-close via {target}: {out}");
    }
    stop(&mut tb, &[]);
}

/// Guest server of `resets_both_ways`: reads a line, then closes with SO_LINGER 0 (RST).
const GUEST_RST: &str = r#"
import json, socket, struct, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); s.settimeout(60)
print(json.dumps({"ready": True}), flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(10)
    c.recv(100)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"#;

/// RST both ways: a host client that aborts its connection (SO_LINGER 0) is seen by the
/// guest server as a reset; a guest server that aborts is seen by the host client as one.
#[test]
fn resets_both_ways() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["8080:8000", "8081:8001"], &[], None);
    let g = tb.slot().guest_v4.to_string();
    let mut srv = GuestProbe::start(&tb, &[&g], GUEST_PORT);
    let (j, out) = client(&tb, "abort", "127.0.0.1", HOST_PORT, &[]);
    assert!(j["ok"] == true, "{out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        srv.drain(Duration::from_millis(200));
        if let Some(c) = srv.seen.iter().find(|e| e["event"] == "closed") {
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the guest server saw no end of the aborted connection within 5 s: {:?}",
            srv.seen
        );
    };
    assert_eq!(
        closed["how"], "reset",
        "the host client's RST should reach the guest as RST: {closed}"
    );
    let mut rst = tb
        .guest
        .spawn(&["python3", "-u", "-c", GUEST_RST, &g, "8001"]);
    rst.ready(Duration::from_secs(15));
    let (j, out) = client(
        &tb,
        "probe",
        "127.0.0.1",
        "8081",
        &["--wait", "5", "--send", "reset me"],
    );
    assert_eq!(
        j["outcome"], "reset",
        "the guest server's RST should reach the host client as RST: {out}"
    );
    stop(&mut tb, &[]);
}

// ---------------------------------------------------------------------------------------
// Who the guest sees
// ---------------------------------------------------------------------------------------

/// Publishes 0.0.0.0:8080 and [::]:8081 → guest 8000 (both families of the guest listen).
const ANY_BINDS: [&str; 2] = ["0.0.0.0:8080:8000", "[::]:8081:8000"];

/// (client source, target, published port, which guest family): the four clients of the
/// client-address cases. A None source is a loopback client.
fn clients() -> [(Option<&'static str>, &'static str, &'static str, bool); 4] {
    [
        (Some(C8), SINK_V4, "8080", false),
        (Some(C8_6), SINK_V6, "8081", true),
        (None, "127.0.0.1", "8080", false),
        (None, "::1", "8081", true),
    ]
}

/// Each client connects; the guest must see `expect(source, v6)` as the peer (and, for the
/// real address of a non-loopback client, the client's own port), on its address of the
/// client's family.
fn check_peers(tb: &Testbed, srv: &mut GuestProbe, gateway_only: bool) {
    let s = tb.slot();
    for (source, target, port, v6) in clients() {
        let before = srv.accepts(Duration::from_millis(50)).len();
        let j = assert_connects(tb, target, port, source);
        let accepts = srv.accepts(Duration::from_millis(300));
        assert_eq!(
            accepts.len(),
            before + 1,
            "the guest should have seen one connection from {source:?} to {target}:{port}: {:?}",
            srv.seen
        );
        let a = &accepts[before];
        let (guest, gw) = if v6 {
            (s.guest_v6.to_string(), s.gw_v6.to_string())
        } else {
            (s.guest_v4.to_string(), s.gw_v4.to_string())
        };
        assert!(
            same_ip(&a["local"], &guest),
            "client {source:?} → {target}:{port} reached the guest on {} (want {guest}): {a}",
            a["local"]
        );
        match source {
            Some(src) if !gateway_only => {
                assert!(
                    same_ip(&a["peer"], src),
                    "client {src} → {target}:{port}: the guest saw {} (want the real client \
                     {src}): {a}",
                    a["peer"]
                );
                assert_eq!(
                    a["peer_port"], j["local_port"],
                    "client {src} → {target}:{port}: the guest saw another port: {a}, client {j}"
                );
            }
            _ => assert!(
                same_ip(&a["peer"], &gw),
                "client {source:?} → {target}:{port}: the guest saw {} (want the gateway \
                 {gw}): {a}",
                a["peer"]
            ),
        }
    }
}

fn start_any_binds(extra: &[&str], config: Option<&str>, publish: bool) -> (Testbed, GuestProbe) {
    let publish: &[&str] = if publish { &ANY_BINDS } else { &[] };
    let tb = start(publish, extra, config);
    tb.host.add_sink_addr(C8);
    tb.host.add_sink_addr(C8_6);
    let s = tb.slot();
    let srv = GuestProbe::start(
        &tb,
        &[&s.guest_v4.to_string(), &s.guest_v6.to_string()],
        GUEST_PORT,
    );
    (tb, srv)
}

#[test]
fn client_address() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, mut srv) = start_any_binds(&[], None, true);
    check_peers(&tb, &mut srv, false);
    let (c, _) = stop(&mut tb, &["inbound_accepted"]);
    assert_eq!(c[0], 4, "inbound_accepted");
}

const GATEWAY_PORTS: &str = "[[ports]]\nhost_bind = \"0.0.0.0\"\nhost_port = 8080\nguest_port = \
                             8000\nclient_address = \"gateway\"\n\n[[ports]]\nhost_bind = \
                             \"::\"\nhost_port = 8081\nguest_port = 8000\nprotocol = \
                             \"tcp\"\nclient_address = \"gateway\"\n";

fn client_gateway(via_config: bool) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, mut srv) = if via_config {
        start_any_binds(&[], Some(GATEWAY_PORTS), false)
    } else {
        start_any_binds(&["--client-address", "gateway"], None, true)
    };
    check_peers(&tb, &mut srv, true);
    tb.ringnet.assert_alive();
    stop(&mut tb, &[]);
}

#[test]
fn publish_forms() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["8000-8002:9000-9002", "8100"],
        &[],
        Some("[[ports]]\nhost_port = 8200\n"),
    );
    let guest = tb.slot().guest_v4.to_string();
    let mut servers: Vec<(&str, &str, GuestProbe)> = [
        ("8000", "9000"),
        ("8001", "9001"),
        ("8002", "9002"),
        ("8100", "8100"),
        ("8200", "8200"),
    ]
    .into_iter()
    .map(|(h, g)| (h, g, GuestProbe::start(&tb, &[&guest], g)))
    .collect();
    for i in 0..servers.len() {
        let host_port = servers[i].0;
        assert_connects(&tb, "127.0.0.1", host_port, None);
        for (h, g, srv) in servers.iter_mut() {
            let want = usize::from(*h == host_port);
            assert_eq!(
                srv.accepts(Duration::from_millis(200)).len(),
                want,
                "after a client on 127.0.0.1:{host_port}, guest port {g} (published as {h}) \
                 saw: {:?}",
                srv.seen
            );
        }
        servers[i].2.seen.clear();
    }
    // Not published: 127.0.0.1:8003 (past the range) has no listener.
    let (outcome, _, out) = probe(&tb, "127.0.0.1", "8003", None, "2");
    assert_eq!(outcome, "connect-refused", "{out}");
    stop(&mut tb, &[]);
}

/// An IPv4 client reaches an IPv6-only guest (the host namespace has no IPv4 default route,
/// so ringnet gives the guest IPv6 only), seen as the guest family's gateway: a loopback
/// client and a client from a sink address alike.
#[test]
fn v4_client_to_v6_only_guest() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    host.ip(&["-4", "route", "del", "default"]);
    host.add_sink_addr(C8);
    let guest = Netns::new("guest");
    let path = guest.path();
    let bin = ringnet_bin();
    let mut rn = host.spawn(&[
        bin,
        "attach",
        "--netns",
        &path,
        "--tap",
        "eth0",
        "--configure",
        "--stats",
        "-p",
        "0.0.0.0:8080:8000",
    ]);
    let s = Slot::new(0);
    let v6 = format!("inet6 {}/64 ", s.guest_v6);
    let deadline = Instant::now() + ATTACH_READY;
    loop {
        rn.assert_alive();
        let addr = guest.ip_show("addr", "eth0");
        if addr
            .stdout
            .lines()
            .any(|l| l.contains(&v6) && !l.contains("tentative"))
        {
            assert!(
                !addr.stdout.contains(" inet "),
                "the guest got IPv4 although the host has no IPv4 route: {addr}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "guest eth0 without {v6}after {ATTACH_READY:?}: {addr}\n{}",
            rn.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let g6 = s.guest_v6.to_string();
    let (probe, _) = guest.spawn_helper(
        "probe_server.py",
        &["--bind", &g6, "--port", GUEST_PORT, "--idle", "60"],
    );
    let gw6 = s.gw_v6.to_string();
    for (source, target) in [(None, "127.0.0.1"), (Some(C8), SINK_V4)] {
        let mut args = vec![
            "connect",
            "--target",
            target,
            "--port",
            HOST_PORT,
            "--timeout",
            "30",
        ];
        if let Some(src) = source {
            args.extend(["--source", src]);
        }
        let out = host.helper("ports_client.py", &args, Duration::from_secs(45));
        assert!(
            out.json()["ok"] == true,
            "IPv4 client {source:?} → {target}:8080, IPv6-only guest: {out}"
        );
        let line = loop {
            let l = probe
                .next_line(Duration::from_secs(2))
                .expect("an accept event from the guest's probe server");
            let j: Json = serde_json::from_str(&l).unwrap_or_default();
            if j["event"] == "accept" {
                break j;
            }
        };
        assert!(
            same_ip(&line["peer"], &gw6),
            "IPv4 client {source:?}: the guest saw {} (want the IPv6 gateway {gw6}): {line}",
            line["peer"]
        );
    }
    rn.assert_alive();
}

/// The guest command of `run_publish`: listen on 0.0.0.0:8000 in ringnet run's namespace,
/// say ready, echo one connection, report the peer and exit.
const RUN_GUEST: &str = r#"
import json, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000)); s.listen(8); s.settimeout(30)
print(json.dumps({"ready": True, "port": 8000}), flush=True)
c, peer = s.accept()
c.settimeout(10)
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
c.close()
print(json.dumps({"served": True, "peer": peer[0]}), flush=True)
"#;

/// `ringnet run -p 8080:8000 -- CMD`: a host client reaches the command's server; the run
/// ends with the command's status.
#[test]
fn run_publish() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let bin = ringnet_bin();
    let mut rn = host.spawn(&[
        bin,
        "run",
        "--stats",
        "-p",
        "8080:8000",
        "--",
        "python3",
        "-u",
        "-c",
        RUN_GUEST,
    ]);
    rn.ready(Duration::from_secs(15));
    let out = host.helper(
        "ports_client.py",
        &[
            "connect",
            "--target",
            "127.0.0.1",
            "--port",
            HOST_PORT,
            "--timeout",
            "30",
        ],
        Duration::from_secs(45),
    );
    assert!(
        out.json()["ok"] == true,
        "client of `ringnet run -p 8080:8000`: {out}"
    );
    let served = rn
        .next_line(Duration::from_secs(10))
        .expect("the guest command's served line");
    let j: Json = serde_json::from_str(&served).unwrap_or_default();
    assert_eq!(j["served"], true, "{served}");
    assert_eq!(
        j["peer"], "172.16.0.1",
        "a loopback client is seen as the gateway: {served}"
    );
    let status = rn.wait_timeout(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ringnet run should exit with its command's status: {}",
        rn.stderr()
    );
    assert_eq!(
        stats_counter(&rn.stderr(), "inbound_accepted"),
        Some(1),
        "{}",
        rn.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------

fn udp_echo(v6: bool) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let spec = if v6 {
        "[::1]:5353:5300/udp"
    } else {
        "5353:5300/udp"
    };
    let mut tb = start(&[spec], &[], None);
    let s = tb.slot();
    let (guest, target) = if v6 {
        (s.guest_v6.to_string(), "::1")
    } else {
        (s.guest_v4.to_string(), "127.0.0.1")
    };
    let (_srv, _) = tb.guest.spawn_helper(
        "udp_echo_server.py",
        &["--bind", &guest, "--port", UDP_GUEST_PORT],
    );
    let (j, out) = client(
        &tb,
        "udp",
        target,
        UDP_HOST_PORT,
        &["--peers", "3", "--count", "200", "--size", "1200"],
    );
    assert!(j["ok"] == true, "3 UDP peers through -p {spec}: {out}");
    let (c, _) = stop(&mut tb, &["udp_inbound_peers", "udp_inbound_evicted"]);
    assert_eq!(c, [3, 0], "udp_inbound_peers / udp_inbound_evicted");
}

/// Ten host peers sending at once right after start and right after the first connection
/// of the other family (when ringnet may still be resolving the guest's address of this
/// one; once, a reply went to the wrong peer then), in three fresh testbeds: every reply
/// goes to the peer whose datagram it answers, and every datagram is answered.
fn udp_peers_at_start(v6: bool) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (udp, tcp, other) = if v6 {
        ("[::1]:5353:5300/udp", "8080:8000", "127.0.0.1")
    } else {
        ("5353:5300/udp", "[::1]:8080:8000", "::1")
    };
    for round in 0..3 {
        let mut tb = start(&[udp, tcp], &[], None);
        let s = tb.slot();
        let (guest, target) = if v6 {
            (s.guest_v6.to_string(), "::1")
        } else {
            (s.guest_v4.to_string(), "127.0.0.1")
        };
        let _probe = GuestProbe::start(
            &tb,
            &[&s.guest_v4.to_string(), &s.guest_v6.to_string()],
            GUEST_PORT,
        );
        let (_srv, _) = tb.guest.spawn_helper(
            "udp_echo_server.py",
            &["--bind", &guest, "--port", UDP_GUEST_PORT],
        );
        assert_connects(&tb, other, HOST_PORT, None);
        let (j, out) = client(
            &tb,
            "udp",
            target,
            UDP_HOST_PORT,
            &["--peers", "10", "--count", "3", "--size", "100"],
        );
        assert!(
            j["ok"] == true,
            "round {round}: 10 UDP peers at once through -p {udp}: {out}"
        );
        stop(&mut tb, &[]);
    }
}

#[test]
fn udp_peer_limit() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["5353:5300/udp"], &[], Some("max_udp_peers = 2\n"));
    let guest = tb.slot().guest_v4.to_string();
    let (_srv, _) = tb.guest.spawn_helper(
        "udp_echo_server.py",
        &["--bind", &guest, "--port", UDP_GUEST_PORT],
    );
    // Three peers (three sockets, three source ports), one after another.
    for i in 0..3 {
        let (j, out) = client(
            &tb,
            "udp",
            "127.0.0.1",
            UDP_HOST_PORT,
            &["--peers", "1", "--count", "5"],
        );
        assert!(j["ok"] == true, "peer {i} with max_udp_peers = 2: {out}");
    }
    let (c, _) = stop(&mut tb, &["udp_inbound_evicted"]);
    assert!(
        c[0] >= 1,
        "udp_inbound_evicted {c:?}: three peers, room for two"
    );
}

// ---------------------------------------------------------------------------------------
// Guest refuses, guest blackholes
// ---------------------------------------------------------------------------------------

#[test]
fn guest_refuses() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    // Nothing listens on 8000 in the guest.
    let mut tb = start(&["8080:8000", "[::1]:8080:8000"], &[], None);
    for target in ["127.0.0.1", "::1"] {
        let (outcome, secs, out) = probe(&tb, target, HOST_PORT, None, "10");
        assert_eq!(
            outcome, "reset",
            "guest refused {target}: want a reset: {out}"
        );
        // Not the connect timeout (5 s by default). The first connection of each family
        // may wait for neighbour discovery: `first_connect_fast` checks that separately.
        assert!(secs < 2.0, "reset only after {secs:.2} s: {out}");
    }
    let (c, _) = stop(&mut tb, &["inbound_guest_refused", "inbound_guest_timeout"]);
    assert_eq!(c, [2, 0], "inbound_guest_refused / inbound_guest_timeout");
}

/// The first inbound connection of each family to a fresh guest is as quick as the rest:
/// the guest is on a local link, nothing should wait a retransmission timeout.
#[test]
fn first_connect_fast() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["8080:8000", "[::1]:8080:8000"], &[], None);
    let s = tb.slot();
    let _srv = GuestProbe::start(
        &tb,
        &[&s.guest_v4.to_string(), &s.guest_v6.to_string()],
        GUEST_PORT,
    );
    let mut slow = Vec::new();
    for target in ["127.0.0.1", "::1", "127.0.0.1", "::1"] {
        let j = assert_connects(&tb, target, HOST_PORT, None);
        let secs = j["seconds"].as_f64().unwrap_or(f64::MAX);
        if secs >= 0.5 {
            slow.push(format!("{target}: {secs:.3} s"));
        }
    }
    assert!(
        slow.is_empty(),
        "inbound connect + 1 KiB echo took 0.5 s or more (first of each family, then a \
         second): {slow:?}"
    );
    stop(&mut tb, &[]);
}

#[test]
fn guest_blackholes() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["8080:8000"],
        &[],
        Some("[egress]\nconnect_timeout_ms = 1000\n"),
    );
    let s = tb.slot();
    let mut srv = GuestProbe::start(&tb, &[&s.guest_v4.to_string()], GUEST_PORT);
    // A loopback client appears as the gateway: the guest's SYN-ACKs to it go nowhere.
    let gw = format!("{}/32", s.gw_v4);
    tb.guest.ip(&["route", "add", "blackhole", &gw]);
    let (outcome, secs, out) = probe(&tb, "127.0.0.1", HOST_PORT, None, "15");
    assert_eq!(
        outcome, "reset",
        "guest never answered: want a reset: {out}"
    );
    assert!(
        (0.7..5.0).contains(&secs),
        "reset after {secs:.2} s, want about 1 s (connect_timeout_ms = 1000): {out}"
    );
    assert!(
        srv.accepts(Duration::from_millis(200)).is_empty(),
        "the guest accepted a connection whose SYN-ACK was dropped: {:?}",
        srv.seen
    );
    tb.guest.ip(&["route", "del", "blackhole", &gw]);
    assert_connects(&tb, "127.0.0.1", HOST_PORT, None);
    let (c, _) = stop(
        &mut tb,
        &[
            "inbound_guest_timeout",
            "inbound_guest_refused",
            "inbound_accepted",
        ],
    );
    assert_eq!(
        &c[..2],
        [1, 0],
        "inbound_guest_timeout / inbound_guest_refused"
    );
}

// ---------------------------------------------------------------------------------------
// Ingress policy
// ---------------------------------------------------------------------------------------

#[test]
fn ingress_deny_tcp() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let (mut tb, mut srv) = {
        let tb = start(
            &["0.0.0.0:8080:8000"],
            &["--deny", "ingress tcp 198.51.100.0/24"],
            None,
        );
        tb.host.add_sink_addr(C8);
        let g = tb.slot().guest_v4.to_string();
        let srv = GuestProbe::start(&tb, &[&g], GUEST_PORT);
        (tb, srv)
    };
    let (outcome, secs, out) = probe(&tb, SINK_V4, HOST_PORT, Some(C8), "5");
    assert_eq!(outcome, "reset", "denied client {C8}: want a reset: {out}");
    assert!(
        secs < 0.5,
        "denied client reset only after {secs:.2} s: {out}"
    );
    assert!(
        srv.accepts(Duration::from_millis(500)).is_empty(),
        "a denied client reached the guest: {:?}",
        srv.seen
    );
    assert_connects(&tb, "127.0.0.1", HOST_PORT, None);
    assert_eq!(
        srv.accepts(Duration::from_millis(300)).len(),
        1,
        "{:?}",
        srv.seen
    );
    let (c, stderr) = stop(
        &mut tb,
        &[
            "policy_denied_tcp",
            "policy_denied_rule",
            "policy_denied_default",
            "inbound_accepted",
        ],
    );
    assert_eq!(
        &c[..3],
        [1, 1, 0],
        "policy_denied_tcp / _rule / _default\n{stderr}"
    );
}

#[test]
fn ingress_deny_udp() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["0.0.0.0:5353:5300/udp"],
        &["--deny", "ingress udp 198.51.100.0/24"],
        None,
    );
    tb.host.add_sink_addr(C8);
    let guest = tb.slot().guest_v4.to_string();
    let (_srv, _) = tb.guest.spawn_helper(
        "udp_echo_server.py",
        &["--bind", &guest, "--port", UDP_GUEST_PORT],
    );
    let (j, out) = client(
        &tb,
        "udp",
        SINK_V4,
        UDP_HOST_PORT,
        &[
            "--peers", "1", "--count", "3", "--tries", "1", "--source", C8,
        ],
    );
    assert_eq!(
        j["peers"][0]["replied"], 0,
        "a denied peer got replies: {out}"
    );
    let (j, out) = client(
        &tb,
        "udp",
        "127.0.0.1",
        UDP_HOST_PORT,
        &["--peers", "1", "--count", "3"],
    );
    assert!(j["ok"] == true, "loopback peer: {out}");
    let (c, stderr) = stop(&mut tb, &["policy_denied_udp", "policy_denied_rule"]);
    assert!(
        c[0] >= 1 && c[1] >= 1,
        "policy_denied_udp / _rule {c:?}\n{stderr}"
    );
}

#[test]
fn ingress_default_deny() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(
        &["0.0.0.0:8080:8000"],
        &["--allow", "ingress tcp 198.51.100.8"],
        Some("[policy]\ndefault_ingress = \"deny\"\n"),
    );
    tb.host.add_sink_addr(C8);
    tb.host.add_sink_addr(C9);
    let g = tb.slot().guest_v4.to_string();
    let mut srv = GuestProbe::start(&tb, &[&g], GUEST_PORT);
    assert_connects(&tb, SINK_V4, HOST_PORT, Some(C8));
    let (outcome, _, out) = probe(&tb, SINK_V4, HOST_PORT, Some(C9), "5");
    assert_eq!(outcome, "reset", "default-denied client {C9}: {out}");
    let accepts = srv.accepts(Duration::from_millis(500));
    assert_eq!(
        accepts.len(),
        1,
        "only {C8} should reach the guest: {:?}",
        srv.seen
    );
    assert!(same_ip(&accepts[0]["peer"], C8), "{:?}", srv.seen);
    let (c, stderr) = stop(
        &mut tb,
        &[
            "policy_denied_tcp",
            "policy_denied_default",
            "policy_denied_rule",
        ],
    );
    assert_eq!(
        c,
        [1, 1, 0],
        "policy_denied_tcp / _default / _rule\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[test]
fn inbound_limit() {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(&["8080:8000"], &[], Some("max_inbound_connections = 2\n"));
    let g = tb.slot().guest_v4.to_string();
    let mut srv = GuestProbe::start(&tb, &[&g], GUEST_PORT);
    let (j, out) = client(
        &tb,
        "hold",
        "127.0.0.1",
        HOST_PORT,
        &["--hold", "2", "--wait", "5"],
    );
    assert!(j["ok"] == true, "two held connections: {out}");
    // A reset may fail the client's connect(2) itself ("connect-reset").
    assert!(
        j["extra"] == "reset" || j["extra"] == "connect-reset",
        "the third connection should be reset: {out}"
    );
    assert_eq!(
        srv.accepts(Duration::from_millis(300)).len(),
        2,
        "the guest should have seen only the two held: {:?}",
        srv.seen
    );
    // The held ones are closed now: a new client gets through (ringnet may need a moment
    // to see the closes; a retry refused meanwhile is one more over the limit).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused_retries = 0;
    loop {
        let (j, out) = client(&tb, "connect", "127.0.0.1", HOST_PORT, &[]);
        if j["ok"] == true {
            break;
        }
        if j["error"] == "reset" {
            refused_retries += 1;
        }
        assert!(
            Instant::now() < deadline,
            "no new connection within 5 s of closing the held ones: {out}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (c, _) = stop(&mut tb, &["inbound_refused_limit"]);
    assert_eq!(
        c[0],
        1 + refused_retries,
        "inbound_refused_limit: the third client, and {refused_retries} retries reset"
    );
}

// ---------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Unbindable {
    TcpInUse,
    UdpInUse,
    ForeignV4,
    ForeignV6,
    RunInUse,
}

fn unbindable(case: Unbindable) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    // Another process in the host namespace holds the port.
    let _holder = match case {
        Unbindable::TcpInUse | Unbindable::RunInUse => Some(
            host.spawn_helper("tcp_server.py", &["--bind", "127.0.0.1", "--port", "8080"])
                .0,
        ),
        Unbindable::UdpInUse => Some(
            host.spawn_helper(
                "udp_echo_server.py",
                &["--bind", "127.0.0.1", "--port", "5353"],
            )
            .0,
        ),
        _ => None,
    };
    let (spec, names, reason) = match case {
        Unbindable::TcpInUse | Unbindable::RunInUse => {
            ("8080", "127.0.0.1:8080/tcp", "Address already in use")
        }
        Unbindable::UdpInUse => ("5353/udp", "127.0.0.1:5353/udp", "Address already in use"),
        Unbindable::ForeignV4 => (
            "192.0.2.1:8080:80",
            "192.0.2.1:8080/tcp",
            "Cannot assign requested address",
        ),
        Unbindable::ForeignV6 => (
            "[2001:db8::99]:8080:80",
            "8080/tcp",
            "Cannot assign requested address",
        ),
    };
    let path = guest.path();
    let ran = TempFile::new("ran");
    let script = format!("echo ran > {}", ran.path_str());
    let args: Vec<&str> = match case {
        Unbindable::RunInUse => vec!["run", "-p", spec, "--", "sh", "-c", &script],
        _ => vec![
            "attach",
            "--netns",
            &path,
            "--tap",
            "eth0",
            "--configure",
            "-p",
            spec,
        ],
    };
    let out = host.ringnet(&args, Duration::from_secs(20));
    assert_eq!(
        out.code(),
        Some(2),
        "ringnet {args:?} with an unbindable port: {out}"
    );
    // Log lines (INFO) may come first; the error is one `ringnet: ` line, and nothing
    // else is wrong (no warning or error lines).
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ringnet: "))
        .collect();
    assert_eq!(lines.len(), 1, "want one `ringnet: ` line: {out}");
    assert!(
        lines[0].contains(names) && lines[0].contains(reason),
        "the line should name {names} and say {reason:?}: {out}"
    );
    assert!(
        !ran.path.exists(),
        "`ringnet run` started its command although a port could not be published: {out}"
    );
    assert!(
        !out.stderr.contains("WARN") && !out.stderr.contains("ERROR"),
        "a start-up error and nothing else wrong: {out}"
    );
    if let Unbindable::ForeignV6 = case {
        assert!(lines[0].contains("2001:db8::99"), "{out}");
    }
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn spec_errors() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    for (spec, needle) in [
        ("70000", "70000"),
        ("8000-8010:9000-9005", "8000-8010:9000-9005"),
        ("8010-8000", "8010-8000"),
        ("abc", "abc"),
        ("8080/sctp", "sctp"),
        ("::1:8080:80", "::1:8080:80"),
        ("1.2.3:8080", "1.2.3"),
    ] {
        let out = host.ringnet(&["run", "-p", spec, "--", "true"], Duration::from_secs(20));
        assert_eq!(out.code(), Some(2), "-p {spec:?}: {out}");
        let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "-p {spec:?}: want one line: {out}");
        assert!(
            lines[0].starts_with("ringnet: ") && lines[0].contains(needle),
            "-p {spec:?}: the line should name {needle:?}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}
