//! Issue "observe" on the command line, end to end (a `ringnet attach` testbed; servers in
//! the isolated host namespace, nothing leaves the machine):
//!
//! - `control_socket_and_metrics_endpoint`: `--control` and `--metrics-addr`: a guest
//!   connection held open after sending 1,000 bytes is listed by `ringnet ctl PATH flows`
//!   (`--json` and the table) with the guest's and the gateway's addresses and its byte
//!   counts; a connect to a denied address shows up in `ringnet ctl PATH events` with the
//!   rule that denied it (table and `--json`); `stats` counts the connect, its latency and
//!   the policy drops; the socket is mode 0600; the Prometheus text of `--metrics-addr`
//!   parses with the `prometheus_client` parser (Debian's python3-prometheus-client) and
//!   carries the same numbers; `--stats-interval 1` prints rate lines.
//! - `pcap_of_ping_and_transfer`: `--pcap FILE` during 3 pings of the gateway and a 1 MiB
//!   upload: `tx_bytes` grew by 1 MiB within the frame-overhead bound; tshark reads the
//!   file; it holds exactly as many frames as both rings counted
//!   (`--stats`), 3 echo requests and 3 replies, and the upload's TCP handshake (SYN,
//!   SYN-ACK, ACK).
//! - `publish_through_the_control_socket`: `ringnet ctl PATH publish 18080:8080` makes a
//!   guest server reachable from the host namespace, a second publish of it is an error
//!   naming the port, `unpublish` makes it refuse again.
//! - `flag_errors_are_one_line`: `--stats-interval 0`, `ringnet ctl` to a missing socket,
//!   an unknown `terminate_on` event, a bad `--metrics-addr`, a `--control` path that is a
//!   regular file: one line on stderr, exit status 2 (the last three as root only: they come
//!   after the privilege check).

mod common;

use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(120);
const CMD: Duration = Duration::from_secs(20);

/// Guest client: connect to the gateway's PORT, send 1,000 bytes, say so, then hold the
/// connection until the server closes it or 30 s pass.
const HOLD: &str = r#"
import json, socket, sys
s = socket.create_connection(("172.16.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"x" * 1000)
print(json.dumps({"connected": True, "port": s.getsockname()[1]}), flush=True)
s.settimeout(30)
try:
    s.recv(1)
except OSError:
    pass
"#;

/// Guest client: one connect to ADDR:PORT; prints how it went.
const CONNECT: &str = r#"
import json, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    r = "ok"
except ConnectionRefusedError:
    r = "refused"
except OSError as e:
    r = str(e)
print(json.dumps({"result": r}), flush=True)
"#;

/// Host side: scrape the metrics endpoint and parse it with prometheus_client; prints
/// `[[sample name, labels, value], …]`.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + "/metrics", timeout=5).read().decode()
out = []
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

fn ctl(sock: &str, args: &[&str]) -> Output {
    let mut full = vec![ringnet_bin(), "ctl", sock];
    full.extend_from_slice(args);
    run_args(&full, CMD)
}

fn ctl_json(sock: &str, args: &[&str]) -> Json {
    let mut a = args.to_vec();
    a.push("--json");
    ctl(sock, &a).ok().json()
}

/// The sample `name` with label `key=value` (or the only one).
fn sample(samples: &Json, name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && label.is_none_or(|(k, v)| s[1][k].as_str() == Some(v)))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

#[test]
fn control_socket_and_metrics_endpoint() {
    require_privileges!("ip", "python3");
    let _wd = Watchdog::new(LIMIT);
    let sock = TempFile::new("ctl.sock");
    let extra = [
        "--control",
        sock.path_str(),
        "--metrics-addr",
        "9187",
        "--stats-interval",
        "1",
        "--deny",
        "tcp 198.51.100.9",
    ];
    let mut tb = Testbed::start(Opts {
        extra: extra.map(String::from).to_vec(),
        ..Opts::default()
    });
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock.path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");
    let (_srv, ready) = tb
        .host
        .spawn_helper("hold_server.py", &["--lifetime", "60"]);
    let port = common::port(&ready);
    let hold = tb.guest.spawn(&["python3", "-u", "-c", HOLD, &port]);
    let line = hold.next_line(CMD).expect("the guest connected");
    let guest_port = serde_json::from_str::<Json>(&line).unwrap()["port"].clone();
    let guest = format!("{}:{guest_port}", tb.slot().guest_v4);
    let host = format!("{}:{port}", tb.slot().gw_v4);

    // flows: the held connection, once its 1,000 bytes reached the host socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let flow = loop {
        let v = ctl_json(sock.path_str(), &["flows"]);
        let found = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["guest"] == guest.as_str())
            .cloned();
        if let Some(f) = found.filter(|f| f["from_guest_bytes"] == 1000) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no flow {guest} with 1000 bytes: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(flow["proto"], "tcp");
    assert_eq!(flow["host"], host.as_str());
    assert_eq!(flow["state"], "established");
    assert_eq!(flow["to_guest_bytes"], 0);
    assert!(flow["rule"].as_str().unwrap().contains("default"), "{flow}");
    let table = ctl(sock.path_str(), &["flows"]).ok().stdout.clone();
    let row = table
        .lines()
        .find(|l| l.contains(&guest))
        .unwrap_or_else(|| panic!("no row for {guest}:\n{table}"));
    for want in ["tcp", host.as_str(), "established", "1000"] {
        assert!(row.contains(want), "{want} not in {row:?}");
    }
    assert!(table.starts_with("PROTO"), "{table}");

    // events: a denied connect, then its event with the rule (table, then JSON).
    let denied = |n: usize| {
        let out = tb
            .guest
            .exec(&["python3", "-c", CONNECT, "198.51.100.9", "80"], CMD);
        assert_eq!(out.json()["result"], "refused", "connect {n}: {out}");
    };
    denied(1);
    let out = ctl(sock.path_str(), &["events", "--count", "1"]);
    let text = out.ok().stdout.trim();
    assert!(
        text.contains("denied tcp")
            && text.contains("198.51.100.9:80")
            && text.contains("rule 1 (deny"),
        "{text}"
    );
    denied(2);
    let e = ctl_json(sock.path_str(), &["events", "--count", "1"]);
    assert_eq!(e["reason"], "rule");
    assert_eq!(e["proto"], "tcp");
    assert_eq!(e["dst"], "198.51.100.9:80");
    assert_eq!(e["guest"], tb.slot().guest_v4.to_string());
    assert!(e["rule"].as_str().unwrap().contains("198.51.100.9"), "{e}");

    // stats
    let s = ctl_json(sock.path_str(), &["stats"]);
    assert!(s["host_connects"]["ok"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        s["latency"]["connect"]["count"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert_eq!(s["drops"]["policy"], 2, "{s}");
    assert_eq!(s["flows"]["tcp"], 1, "{s}");
    assert!(s["tx_bytes"].as_u64().unwrap() > 1000, "{s}");
    let table = ctl(sock.path_str(), &["stats"]).ok().stdout.clone();
    assert!(
        table.contains("host connects") && table.contains("drops policy"),
        "{table}"
    );
    let bad = ctl(sock.path_str(), &["nonsense"]);
    assert_eq!(bad.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("unknown command"), "{bad}");

    // The Prometheus endpoint, parsed by prometheus_client.
    let out = tb
        .host
        .exec(&["/usr/bin/python3", "-c", SCRAPE, "9187"], CMD);
    let m = out.json();
    assert!(sample(&m, "ringnet_tx_bytes_total", None) > 1000.0);
    assert!(sample(&m, "ringnet_rx_bytes_total", None) > 0.0);
    assert_eq!(
        sample(&m, "ringnet_flows_open", Some(("proto", "tcp"))),
        1.0
    );
    assert_eq!(
        sample(&m, "ringnet_drops_total", Some(("reason", "policy"))),
        2.0
    );
    assert!(sample(&m, "ringnet_host_connect_seconds_count", None) >= 1.0);
    let p99 = sample(
        &m,
        "ringnet_host_connect_seconds",
        Some(("quantile", "0.99")),
    );
    assert!(p99 > 0.0 && p99 < 5.0, "{p99}");
    assert!(sample(&m, "ringnet_tcp_opened_total", None) >= 1.0);

    tb.ringnet.stop();
    let err = tb.ringnet.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("Gbit/s") && l.contains("flows tcp")),
        "no --stats-interval line:\n{err}"
    );
    assert!(!sock.path.exists(), "the control socket is removed on exit");
}

/// The `frames` (`field` 2) or `bytes` (4) of ringnet's `--stats` output line
/// `prefix frames N bytes M drops D`.
fn link_stat(stats: &str, prefix: &str, field: usize) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{stats}"));
    line.split_whitespace().nth(field).unwrap().parse().unwrap()
}

fn frames(stats: &str, prefix: &str) -> u64 {
    link_stat(stats, prefix, 2)
}

/// Frames of the capture matching the display filter `filter`.
fn tshark_count(pcap: &str, filter: &str) -> usize {
    let mut args = vec![
        "tshark",
        "-n",
        "-r",
        pcap,
        "-T",
        "fields",
        "-e",
        "frame.number",
    ];
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    let out = run_args(&args, CMD);
    out.ok();
    out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn pcap_of_ping_and_transfer() {
    require_privileges!("ip", "python3", "ping", "tshark");
    let _wd = Watchdog::new(LIMIT);
    let pcap = TempFile::new("capture.pcap");
    let mut tb = Testbed::start(Opts {
        extra: ["--stats", "--pcap", pcap.path_str()]
            .map(String::from)
            .to_vec(),
        ..Opts::default()
    });
    let gw = tb.slot().gw_v4.to_string();
    tb.guest
        .exec(&["ping", "-n", "-c", "3", "-i", "0.2", &gw], CMD)
        .ok();
    let (_srv, ready) = tb
        .host
        .spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let port = common::port(&ready);
    let up = tb.guest.helper(
        "tcp_client.py",
        &[
            "bulk",
            "--target",
            &gw,
            "--port",
            &port,
            "--direction",
            "up",
            "--bytes",
            "1048576",
        ],
        CMD,
    );
    assert_eq!(up.json()["ok"], true, "{up}");
    tb.ringnet.stop();
    let err = tb.ringnet.stderr();
    let crossed = frames(&err, "from_guest") + frames(&err, "to_guest");
    // tx (guest → ringnet) moved by the upload within the documented frame overhead: at
    // most 114 bytes per frame (Ethernet 14 + IPv6 40 + TCP 60; every other frame of this
    // test — ping, ARP, NDP — is shorter), plus the client's request line.
    const UP: u64 = 1 << 20;
    let (tx, tx_frames) = (link_stat(&err, "from_guest", 4), frames(&err, "from_guest"));
    assert!(
        tx >= UP && tx <= UP + 114 * tx_frames + 1024,
        "tx_bytes {tx} in {tx_frames} frames for a 1 MiB upload"
    );
    assert!(
        err.contains("pcap: ") && err.contains("(0 left out"),
        "the capture lost frames:\n{err}"
    );

    let file = pcap.path_str();
    assert_eq!(
        tshark_count(file, "") as u64,
        crossed,
        "every frame, both directions"
    );
    let echo = |t: u8| format!("icmp.type == {t} && (ip.src == {gw} || ip.dst == {gw})");
    assert_eq!(tshark_count(file, &echo(8)), 3, "echo requests");
    assert_eq!(tshark_count(file, &echo(0)), 3, "echo replies");
    let tcp = format!("tcp.port == {port}");
    let syn = tshark_count(
        file,
        &format!("{tcp} && tcp.flags.syn == 1 && tcp.flags.ack == 0"),
    );
    let synack = tshark_count(
        file,
        &format!("{tcp} && tcp.flags.syn == 1 && tcp.flags.ack == 1"),
    );
    let ack = tshark_count(
        file,
        &format!(
            "{tcp} && tcp.flags.syn == 0 && tcp.flags.ack == 1 && tcp.seq == 1 && tcp.len == 0"
        ),
    );
    assert_eq!((syn, synack), (1, 1), "one SYN and one SYN-ACK");
    assert!(ack >= 1, "the handshake's ACK");
    let data = tshark_count(
        file,
        &format!("{tcp} && tcp.len > 0 && tcp.dstport == {port}"),
    );
    assert!(data >= 1, "the upload's data segments");
}

/// ringnet `args`: exit status 2 and one `ringnet: …` line containing `needle` (checked only
/// as root when it starts with `!`: those errors come after the privilege check).
fn one_line_error(args: &[&str], needle: &str) {
    let out = run_args(&[&[ringnet_bin()], args].concat(), CMD);
    let err = out.stderr.trim_end();
    assert_eq!(out.code(), Some(2), "{out}");
    assert_eq!(err.lines().count(), 1, "{out}");
    assert!(err.starts_with("ringnet: "), "{out}");
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root || !needle.starts_with('!') {
        assert!(
            err.contains(needle.trim_start_matches('!')),
            "{out} lacks {needle}"
        );
    }
}

#[test]
fn flag_errors_are_one_line() {
    let _wd = Watchdog::new(LIMIT);
    one_line_error(
        &["run", "--stats-interval", "0", "--", "true"],
        "--stats-interval",
    );
    one_line_error(
        &["ctl", "/nonexistent/ringnet.sock", "stats"],
        "cannot connect",
    );
    let cfg = TempFile::with_contents("observe.toml", "[observe]\nterminate_on = [\"bogus\"]\n");
    one_line_error(&["run", "--config", cfg.path_str(), "--", "true"], "!bogus");
    one_line_error(
        &["run", "--metrics-addr", "nowhere", "--", "true"],
        "!--metrics-addr nowhere",
    );
    let file = TempFile::with_contents("not-a-socket", "");
    one_line_error(
        &["run", "--control", file.path_str(), "--", "true"],
        "!not a socket",
    );
}

/// Guest server: accept connections on 0.0.0.0:PORT and greet each with "hi".
const GREETER: &str = r#"
import json, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
print(json.dumps({"ready": True}), flush=True)
srv.settimeout(60)
while True:
    c, _ = srv.accept()
    c.sendall(b"hi")
    c.close()
"#;

/// Host client: connect to 127.0.0.1:PORT and read what comes.
const GREETED: &str = r#"
import json, socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    s.settimeout(3)
    r = s.recv(16).decode()
except OSError as e:
    r = type(e).__name__
print(json.dumps({"got": r}), flush=True)
"#;

#[test]
fn publish_through_the_control_socket() {
    require_privileges!("ip", "python3");
    let _wd = Watchdog::new(LIMIT);
    let sock = TempFile::new("ctl.sock");
    let tb = Testbed::start(Opts {
        extra: vec!["--control".into(), sock.path_str().into()],
        ..Opts::default()
    });
    let greeter = tb.guest.spawn(&["python3", "-u", "-c", GREETER, "8080"]);
    assert!(greeter.next_line(CMD).is_some(), "the guest server started");
    let greet = || {
        tb.host
            .exec(&["python3", "-c", GREETED, "18080"], CMD)
            .json()["got"]
            .clone()
    };
    assert_eq!(greet(), "ConnectionRefusedError", "not published yet");

    let out = ctl(sock.path_str(), &["publish", "18080:8080"]);
    assert!(
        out.ok().stdout.contains("published: 127.0.0.1:18080"),
        "{out}"
    );
    assert_eq!(greet(), "hi");
    let again = ctl(sock.path_str(), &["publish", "18080:8080"]);
    assert_eq!(again.code(), Some(2), "{again}");
    assert!(again.stderr.contains("18080"), "{again}");
    let v = ctl_json(sock.path_str(), &["unpublish", "18080:8080"]);
    assert_eq!(
        v["unpublish"][0].as_str().map(|s| s.contains("18080")),
        Some(true),
        "{v}"
    );
    assert_eq!(greet(), "ConnectionRefusedError", "unpublished");
}
