//! Every TCP flow ends in bounded time whatever the guest (or the host) does, per egress
//! driver:
//! - 10,000 connects the guest abandons at once (its RST answers the SYN-ACK): every flow
//!   is reaped, ringnet's fd count returns to its baseline, the host server sees every
//!   connection closed, and a new connection works;
//! - the guest resets in each state it can reach (connecting, established, half-closed by
//!   either side): reaped at once, the host side reset;
//! - the host resets (SO_LINGER 0) before or after reading the first byte, during small
//!   and large uploads: the guest sees a reset every time, 100 of 100 per combination;
//! - 1,024 connects to a blackholed destination do not keep a legitimate connect from
//!   succeeding (the connecting cap evicts the oldest);
//! - a guest that vanishes (its link goes down) loses its flows after the configured
//!   guest timeout (keep-alive probes unanswered).
//!
//! The guest scripts find ringnet's process as their parent (`ringnet run` spawns them) and
//! count its open fds in /proc.

#[macro_use]
mod common;

use common::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// A blackholed address: a permanent neighbour entry on the sink, which drops every frame.
const BLACKHOLE: &str = "198.51.100.99";

fn blackhole(host: &HostNs) {
    host.ip(&[
        "neigh",
        "replace",
        BLACKHOLE,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        SINK_DEV,
        "nud",
        "permanent",
    ]);
}

/// Python shared by the guest scripts: ringnet's fd count, a wait for it to settle, and
/// raw TCP segments (for states the socket API cannot reach).
const PRELUDE: &str = r#"
import os, socket, struct, sys, time
RN = os.getppid()
def fds():
    return len(os.listdir("/proc/%d/fd" % RN))
def settle(base, limit):
    t = time.time()
    while time.time() - t < limit and fds() > base:
        time.sleep(0.05)
    return fds(), time.time() - t
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
def raw_tcp(dst, sport, dport, seq, flags):
    src = "172.16.0.2"
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    hdr = hdr[:16] + struct.pack("!H", csum(ph + hdr)) + hdr[18:]
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    r.sendto(hdr, (dst, 0))
    r.close()
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

/// The last status line of `hold_server.py` seen within `wait`, polled until `open` is
/// `want` or the time is up.
fn server_open_settles(srv: &Bg, want: u64, wait: Duration) -> Option<u64> {
    let deadline = Instant::now() + wait;
    let mut open = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match srv.next_line(left) {
            Some(line) => {
                if let Ok(j) = serde_json::from_str::<Json>(&line) {
                    if let Some(o) = j["open"].as_u64() {
                        open = Some(o);
                        if o == want {
                            break;
                        }
                    }
                }
            }
            None => break,
        }
    }
    open
}

fn stat(out: &Output, name: &str) -> u64 {
    stats_counter(&out.stderr, name).unwrap_or(0)
}

fn ringnet_run(host: &HostNs, driver: &str, config: &str, body: &str, args: &[&str]) -> Output {
    host.run_python(driver, Some(config), &script(body), args, LIMIT)
}

const ABANDON: &str = r#"
port, n = int(sys.argv[1]), int(sys.argv[2])
time.sleep(0.3)
base = fds()
t0 = time.time()
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("172.16.0.1", port))
    s.close()
    if i % 250 == 249:
        time.sleep(0.02)
print("flood %d in %.2f s" % (n, time.time() - t0))
after, took = settle(base, 20)
print("fds base %d after %d settled in %.2f s" % (base, after, took))
s = socket.create_connection(("172.16.0.1", port), timeout=5)
s.sendall(b"x")
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print("new connection ok")
"#;

fn abandoned(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    let (srv, ready) = host.spawn_helper("hold_server.py", &["--lifetime", "200"]);
    let port = port(&ready);
    let out = ringnet_run(&host, driver, "", ABANDON, &[&port, "10000"]);
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("new connection ok"), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fds base"))
        .expect("fd line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(nums[1] <= nums[0], "ringnet's fds did not return: {line}");
    assert_eq!(stat(&out, "tcp_active"), 0, "{out}");
    assert!(stat(&out, "tcp_opened") >= 1000, "{out}");
    // Every host connection was closed again.
    assert_eq!(
        server_open_settles(&srv, 0, Duration::from_secs(5)),
        Some(0),
        "host connections left open"
    );
}

#[test]
fn abandoned_connects_uring() {
    abandoned("uring");
}

#[test]
fn abandoned_connects_epoll() {
    abandoned("epoll");
}

const GUEST_RESETS: &str = r#"
port = int(sys.argv[1])
time.sleep(0.3)
base = fds()
def linger0(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
for state in ["established", "guest-half-closed", "connecting"]:
    for i in range(20):
        if state == "connecting":
            # The host connect to the blackhole is pending (SYN-ACK held) when the RST comes.
            sport, seq = 40000 + i, 1000 + i * 7919
            raw_tcp("198.51.100.99", sport, 9, seq, 0x02)
            time.sleep(0.02)
            raw_tcp("198.51.100.99", sport, 9, seq + 1, 0x04)
            continue
        s = socket.create_connection(("172.16.0.1", port), timeout=5)
        s.sendall(b"data" * 1000)
        if state == "guest-half-closed":
            s.shutdown(socket.SHUT_WR)
        time.sleep(0.02)
        linger0(s)
    after, took = settle(base, 5)
    print("%s: fds base %d after %d settled in %.2f s" % (state, base, after, took))
"#;

fn guest_resets(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    blackhole(&host);
    let (srv, ready) = host.spawn_helper("hold_server.py", &["--half-open", "--lifetime", "200"]);
    let port = port(&ready);
    let out = ringnet_run(&host, driver, "", GUEST_RESETS, &[&port]);
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    for state in ["established", "guest-half-closed", "connecting"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{state}:")))
            .unwrap_or_else(|| panic!("no line for {state}: {out}"));
        let nums: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(nums[1] <= nums[0], "{state}: flows not reaped: {line}");
        // Reaped because of the RST, not because the 10 s connect timeout ran out.
        assert!(nums[2] < 3.0, "{state}: slow to reap: {line}");
    }
    assert_eq!(stat(&out, "tcp_opened"), 60, "{out}");
    assert_eq!(stat(&out, "tcp_guest_reset"), 60, "{out}");
    // The host side saw all 40 reset (the 20 half-closed ones usually read the guest's FIN
    // as EOF first, unless the RST lands before the server reads it).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(line) = srv.next_line(left) else {
            break;
        };
        last = line;
        if last.contains("\"open\": 0, \"accepted\": 40") && last.contains("\"reset\": 40") {
            break;
        }
    }
    assert!(
        last.contains("\"open\": 0, \"accepted\": 40") && last.contains("\"reset\": 40"),
        "host side: {last}"
    );
}

#[test]
fn guest_resets_uring() {
    guest_resets("uring");
}

#[test]
fn guest_resets_epoll() {
    guest_resets("epoll");
}

/// Connect, upload `size` bytes, then read: every way the guest can learn of the reset
/// counts (on send, on recv, or as a refused connect); a clean EOF or a stall does not.
const HOST_RESETS: &str = r#"
runs = int(sys.argv[3])
outcomes = {}
for port in (int(sys.argv[1]), int(sys.argv[2])):
    for size in (1000, 8 << 20):
        data = b"u" * size
        for i in range(runs):
            how, s = None, None
            try:
                s = socket.create_connection(("172.16.0.1", port), timeout=5)
                s.settimeout(5)
                s.sendall(data)
                got = s.recv(100)
                how = "eof" if got == b"" else "data"
            except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
                how = "reset"
            except socket.timeout:
                how = "stall"
            except OSError as e:
                how = "error %s" % e.errno
            if s:
                s.close()
            key = "port%d-size%d" % (port, size)
            outcomes.setdefault(key, {}).setdefault(how, 0)
            outcomes[key][how] += 1
        print(key, " ".join("%s=%d" % kv for kv in sorted(outcomes[key].items())), flush=True)
"#;

fn host_resets(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 3);
    let host = HostNs::new();
    let (_now, ready) = host.spawn_helper("rst_server.py", &["--lifetime", "300"]);
    let now_port = port(&ready);
    let (_after, ready) =
        host.spawn_helper("rst_server.py", &["--after", "1", "--lifetime", "300"]);
    let after_port = port(&ready);
    let out = ringnet_run(
        &host,
        driver,
        "",
        HOST_RESETS,
        &[&now_port, &after_port, "100"],
    );
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("port"))
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    for l in lines {
        assert!(
            l.ends_with(" reset=100"),
            "not every host reset reached the guest: {l}"
        );
    }
    assert_eq!(stat(&out, "tcp_active"), 0, "{out}");
}

#[test]
fn host_resets_uring() {
    host_resets("uring");
}

#[test]
fn host_resets_epoll() {
    host_resets("epoll");
}

/// 1,024 connects to a blackhole (left pending), then a connect to a reachable host.
const FLOOD: &str = r#"
port = int(sys.argv[1])
pending = []
for i in range(1024):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("198.51.100.99", 1 + i))
    pending.append(s)
    if i % 128 == 127:
        time.sleep(0.02)
time.sleep(0.5)
t = time.time()
try:
    s = socket.create_connection(("172.16.0.1", port), timeout=5)
    s.sendall(b"hello")
    s.close()
    print("legit connect ok in %.3f s" % (time.time() - t))
except OSError as e:
    print("legit connect failed: %s" % e)
"#;

fn connect_flood(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    blackhole(&host);
    let (_srv, ready) = host.spawn_helper("hold_server.py", &["--lifetime", "200"]);
    let port = port(&ready);
    let out = ringnet_run(&host, driver, "", FLOOD, &[&port]);
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("legit connect ok"), "{out}");
    assert!(stat(&out, "tcp_connect_evicted") > 0, "{out}");
}

#[test]
fn connect_flood_uring() {
    connect_flood("uring");
}

#[test]
fn connect_flood_epoll() {
    connect_flood("epoll");
}

/// Open a flow, then take the guest's link down: the guest can answer nothing any more.
const VANISH: &str = r#"
import subprocess
port = int(sys.argv[1])
time.sleep(0.3)
base = fds()
s = socket.create_connection(("172.16.0.1", port), timeout=5)
s.sendall(b"hello")
time.sleep(0.5)
subprocess.run(["ip", "link", "set", "eth0", "down"], check=True)
after, took = settle(base, float(sys.argv[2]))
print("vanished: fds base %d after %d settled in %.2f s" % (base, after, took))
"#;

fn vanished_guest(driver: &str) {
    require_privileges!("python3", "ip");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    let (_srv, ready) = host.spawn_helper("hold_server.py", &["--lifetime", "200"]);
    let port = port(&ready);
    // Guest timeout 2 s: the flow must be gone well within the script's 10 s.
    let out = ringnet_run(
        &host,
        driver,
        "[egress]\ntcp_guest_timeout_ms = 2000\n",
        VANISH,
        &[&port, "10"],
    );
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("vanished:"))
        .expect("result line");
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        nums[1] <= nums[0],
        "flow of the vanished guest kept: {line}"
    );
    assert!(nums[2] < 6.0, "{line}");
    assert!(stat(&out, "tcp_guest_timeout") >= 1, "{out}");
}

#[test]
fn vanished_guest_uring() {
    vanished_guest("uring");
}

#[test]
fn vanished_guest_epoll() {
    vanished_guest("epoll");
}
