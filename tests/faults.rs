//! Issue #15 (hardening), faults: host peers that reset mid-stream, stall or read 1 byte/s,
//! a guest that vanishes mid-transfer, and running out of file descriptors
//! (RLIMIT_NOFILE = 256), each under `ringnet attach --stats` (default driver: io_uring).
//! Every case measures ringnet's fd count and RSS at a warm baseline (after one connection
//! and an idle trim, `idle_trim_ms = 200`) and asserts that afterwards both are back near
//! it (fds ≤ baseline; RSS ≤ baseline + [`RSS_SLACK_KIB`]), that no panic is on its
//! stderr and that ringnet still serves a new connection.
//!
//! Already covered elsewhere and not repeated: host resets in every state, 100/100
//! (`tcp_lifecycle.rs`, `tcp_edges.rs`); TAP deleted / namespace deleted / TAP down and up
//! during a download (`guest_gone.rs`); `ulimit -n 64` under `ringnet run`
//! (`fd_limits.rs`). Cases here:
//!
//! - `reset_mid_stream`: 20 concurrent downloads the host resets after 1 MiB (SO_LINGER 0)
//!   while a 64 MiB upload runs: every download ends in ECONNRESET (never a clean EOF), the
//!   upload's sha256 matches, `tcp_host_reset` ≥ 20.
//! - `stalled_peers` / `slow_peers`: 16 connections to a host peer that never reads (or
//!   reads 1 byte/s) write for 8 s while a 64 MiB upload runs: the stuck senders block
//!   (bounded bytes handed over, no stalled one still moving), the upload completes
//!   intact, and ringnet's peak RSS stays under baseline + the frame pool + 16 flows'
//!   buffers (2 × `tcp_buffer_bytes` each) + 8 MiB. The peer gives up 3 s after the
//!   writes stop (its close resets: data unread), and everything is reaped.
//! - `guest_vanishes`: 4 downloads running, the guest sets eth0 down (the VMM's TAP gone
//!   quiet): after `tcp_guest_timeout_ms` (3 s) the flows are reset (`tcp_guest_timeout`),
//!   fds and RSS return to the baseline while the TAP is still down; eth0 up again, a new
//!   connection works.
//! - `fd_exhaustion_256`: ringnet's RLIMIT_NOFILE set to 256 (soft and hard, `prlimit
//!   --pid`) while it runs; the guest holds 300 connections: the ones beyond the limit are
//!   refused (RST), `host_fd_exhausted` counts them, one warning names `ulimit -n`; once
//!   they are closed a new TCP connection and a UDP flow work again.
//! - `uring_sq_full`: `[egress] uring_entries = 8` (`--egress uring`), 200 connections
//!   echoing 64 KiB each at once: the SQ overflows again and again (`uring_sq_full` > 0),
//!   the driver submits and retries, every echo comes back intact (no lost completion).

#[macro_use]
mod common;

use common::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const CONFIG: &str =
    "[egress]\nidle_trim_ms = 200\ntcp_guest_timeout_ms = 3000\nudp_idle_timeout_ms = 2000\n";
/// RSS allowed above the baseline once a fault is over and the idle trim ran: heap
/// structures sized for the peak (flow table, slab) are kept.
const RSS_SLACK_KIB: u64 = 4096;
/// The frame pool, every slot touched: 1,024 × (64 KiB + a header page).
const POOL_KIB: u64 = 1024 * 68;

struct Bed {
    tb: Testbed,
    pid: u32,
    port: String,
    gw: String,
    fds0: u64,
    rss0: u64,
    _srv: Bg,
}

fn start() -> Bed {
    start_with("", &[])
}

/// [`CONFIG`] followed by `more` (keys of `[egress]`), ringnet with `args` too.
fn start_with(more: &str, args: &[&str]) -> Bed {
    let mut opts = Opts::default().config(&format!("{CONFIG}{more}"));
    opts.extra = std::iter::once("--stats")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let tb = Testbed::start(opts);
    let pid = tb.ringnet.pid();
    assert_eq!(comm(pid), "ringnet");
    let (srv, ready) = tb
        .host
        .spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let port = port(&ready);
    let gw = tb.slot().gw_v4.to_string();
    let mut bed = Bed {
        tb,
        pid,
        port,
        gw,
        fds0: 0,
        rss0: 0,
        _srv: srv,
    };
    bed.connect_ok("warm-up");
    std::thread::sleep(Duration::from_millis(1500));
    bed.fds0 = fd_count(pid);
    bed.rss0 = rss_kib(pid);
    bed
}

impl Bed {
    fn connect_ok(&self, when: &str) {
        let out = self.tb.guest.helper(
            "tcp_client.py",
            &["connect", "--target", &self.gw, "--port", &self.port],
            SHORT,
        );
        assert!(out.json()["ok"] == true, "connection {when}: {out}");
    }

    fn fault_client(&self, args: &[&str]) -> Bg {
        let path = helper("fault_client.py");
        let mut full = vec!["python3", "-B", "-u", path.as_str()];
        full.extend_from_slice(args);
        full.extend(["--target", &self.gw, "--port", &self.port]);
        self.tb.guest.spawn(&full)
    }

    fn upload(&self, bytes: &str) -> Bg {
        let path = helper("tcp_client.py");
        self.tb.guest.spawn(&[
            "python3",
            "-B",
            "-u",
            &path,
            "bulk",
            "--target",
            &self.gw,
            "--port",
            &self.port,
            "--direction",
            "up",
            "--bytes",
            bytes,
            "--timeout",
            "90",
        ])
    }

    /// After the fault: fds and RSS back at the baseline (waiting up to `within`), a new
    /// connection works; prints the numbers.
    fn back_to_baseline(&mut self, case: &str, within: Duration) {
        let t = Instant::now();
        let fds_ok = wait_fds_at_most(self.pid, self.fds0, within);
        let fds = fd_count(self.pid);
        let fds_s = t.elapsed().as_secs_f64();
        let rss_ok = wait_rss_at_most(self.pid, self.rss0 + RSS_SLACK_KIB, within);
        let rss = rss_kib(self.pid);
        eprintln!(
            "faults: {case}: fds {} at baseline, {fds} after ({fds_s:.1} s); RSS {} KiB at \
             baseline, {rss} KiB after, VmHWM {} KiB",
            self.fds0,
            self.rss0,
            hwm_kib(self.pid)
        );
        assert!(
            fds_ok,
            "fds {fds} not back to {} within {within:?}",
            self.fds0
        );
        assert!(
            rss_ok,
            "RSS {rss} KiB not back to {} + {RSS_SLACK_KIB} KiB",
            self.rss0
        );
        self.tb.ringnet.assert_alive();
        self.connect_ok("after the fault");
    }

    /// Stop ringnet (clean exit) and return its stderr with the counters.
    fn finish(&mut self) -> String {
        self.tb.ringnet.assert_alive();
        let status = self.tb.ringnet.stop();
        let stderr = self.tb.ringnet.stderr();
        assert!(status.success(), "exit {status}:\n{}", tail(&stderr, 4000));
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

fn result(bg: &mut Bg, what: &str, timeout: Duration) -> Json {
    let line = bg
        .next_line(timeout)
        .unwrap_or_else(|| panic!("no result from {what}; stderr:\n{}", bg.stderr()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
}

fn counter(stderr: &str, name: &str) -> u64 {
    stats_counter(stderr, name).unwrap_or(0)
}

#[test]
fn reset_mid_stream() {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT);
    let mut b = start();
    let mut up = b.upload(&(64u64 << 20).to_string());
    let mut rs = b.fault_client(&["resets", "--conns", "20", "--bytes", "1048576"]);
    let r = result(&mut rs, "resets", Duration::from_secs(60));
    let u = result(&mut up, "upload", Duration::from_secs(90));
    assert!(r["ok"] == true, "every download must end in a reset: {r}");
    assert!(u["ok"] == true, "upload beside the resets: {u}");
    eprintln!("faults: reset_mid_stream: {r}");
    b.back_to_baseline("reset_mid_stream", Duration::from_secs(15));
    let stderr = b.finish();
    assert!(counter(&stderr, "tcp_host_reset") >= 20, "{stderr}");
}

fn stuck(op: &str) {
    let _wd = Watchdog::new(LIMIT);
    let mut b = start();
    let sampler = Sampler::start(b.pid, Duration::from_millis(100));
    let mut st = b.fault_client(&["stuck", "--op", op, "--conns", "16", "--seconds", "8"]);
    // Let the stuck flows fill their buffers first, then the legit upload runs beside them.
    std::thread::sleep(Duration::from_secs(2));
    let mut up = b.upload(&(64u64 << 20).to_string());
    let u = result(&mut up, "upload", Duration::from_secs(90));
    let s = result(&mut st, "stuck", Duration::from_secs(60));
    let peak = sampler
        .finish()
        .iter()
        .map(|x| x.rss_kib)
        .max()
        .unwrap_or(0);
    let bound = b.rss0 + POOL_KIB + 16 * 2 * 256 + 8192;
    eprintln!("faults: {op}: {s}; upload {u}; RSS peak {peak} KiB, bound {bound} KiB");
    assert!(u["ok"] == true, "upload beside {op} peers: {u}");
    assert!(peak <= bound, "RSS peak {peak} KiB over {bound} KiB");
    // Each sender blocked: what it handed over is bounded by the buffers on the way (the
    // guest's socket, ringnet's 2 × 256 KiB, the host socket's receive buffer).
    let max = s["max_sent"].as_u64().expect("max_sent");
    assert!(max < 32 << 20, "a {op} peer took {max} bytes: not blocked");
    if op == "stall" {
        assert_eq!(s["moving_last_2s"].as_u64(), Some(0), "{s}");
    }
    // The guest closed with data unsent, its kernel still trying to deliver it: the flows
    // live until the peer gives up 3 s later (closing with data unread: RST).
    b.back_to_baseline(op, Duration::from_secs(25));
    b.finish();
}

#[test]
fn stalled_peers() {
    require_privileges!("python3");
    stuck("stall");
}

#[test]
fn slow_peers() {
    require_privileges!("python3");
    stuck("slow");
}

#[test]
fn guest_vanishes() {
    require_privileges!("python3", "ss");
    let _wd = Watchdog::new(LIMIT);
    let mut b = start();
    let path = helper("tcp_client.py");
    let downs: Vec<Bg> = (0..4)
        .map(|i| {
            let seed = i.to_string();
            b.tb.guest.spawn(&[
                "python3",
                "-B",
                "-u",
                &path,
                "bulk",
                "--target",
                &b.gw,
                "--port",
                &b.port,
                "--direction",
                "down",
                "--bytes",
                "20000000000",
                "--seed",
                &seed,
                "--timeout",
                "100",
            ])
        })
        .collect();
    let filter = format!("( dport = :{} )", b.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ss =
            b.tb.guest
                .exec(&["ss", "-Htn", "state", "established", &filter], SHORT);
        if ss.stdout.lines().count() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "downloads did not start: {ss}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = fd_count(b.pid);
    b.tb.guest.ip(&["link", "set", "eth0", "down"]);
    // tcp_guest_timeout_ms = 3000: the flows go, the TAP still down.
    b.tb.ringnet.assert_alive();
    let t = Instant::now();
    let gone = wait_fds_at_most(b.pid, b.fds0, Duration::from_secs(20));
    eprintln!(
        "faults: guest_vanishes: fds {during} during the downloads, {} {:.1} s after eth0 down",
        fd_count(b.pid),
        t.elapsed().as_secs_f64()
    );
    assert!(gone, "flows of the vanished guest not reaped");
    drop(downs);
    b.tb.guest.ip(&["link", "set", "eth0", "up"]);
    // `--configure` puts the addresses back; wait for the IPv4 one and the route.
    let v4 = format!("inet {}/30 ", b.tb.slot().guest_v4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(b
        .tb
        .guest
        .ip(&["-o", "addr", "show", "dev", "eth0"])
        .contains(&v4)
        && b.tb
            .guest
            .ip(&["-4", "route", "show", "default"])
            .contains("via"))
    {
        assert!(Instant::now() < deadline, "eth0 not configured again");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.back_to_baseline("guest_vanishes", Duration::from_secs(15));
    let stderr = b.finish();
    assert!(counter(&stderr, "tcp_guest_timeout") >= 4, "{stderr}");
}

#[test]
fn fd_exhaustion_256() {
    require_privileges!("python3", "prlimit");
    let _wd = Watchdog::new(LIMIT);
    let mut b = start();
    let (_udp, udp_ready) =
        b.tb.host
            .spawn_helper("udp_echo_server.py", &["--bind", "127.0.0.1"]);
    let pid = b.pid.to_string();
    must(&["prlimit", "--pid", &pid, "--nofile=256:256"]);
    let udp_port = port(&udp_ready);
    let out = b.tb.guest.helper(
        "fd_exhaust.py",
        &[
            "--target",
            &b.gw,
            "--tcp-port",
            &b.port,
            "--udp-port",
            &udp_port,
            "--hold",
            "300",
            "--udp-flows",
            "1",
            "--extra",
            "10",
            "--settle",
            "1",
            "--timeout",
            "90",
        ],
        Duration::from_secs(100),
    );
    let res = out.json();
    eprintln!("faults: fd_exhaustion_256: {res}");
    assert!(res["ok"] == true, "new flows after exhaustion: {out}");
    let held = res["held"].as_u64().expect("held");
    assert!(held < 256, "{held} held with 256 descriptors: {out}");
    assert!(
        res["extra_failures"]["refused"].as_u64().unwrap_or(0) == 10,
        "the extra connections must be refused (RST): {out}"
    );
    b.back_to_baseline("fd_exhaustion_256", Duration::from_secs(15));
    let stderr = b.finish();
    assert!(counter(&stderr, "host_fd_exhausted") > 0, "{stderr}");
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("EMFILE") && l.contains("ulimit -n"))
        .count();
    assert!(warnings >= 1, "no EMFILE warning: {stderr}");
}

#[test]
fn uring_sq_full() {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT);
    // The smallest submission queue: 200 flows echoing 64 KiB each at once overflow it.
    let mut b = start_with("uring_entries = 8\n", &["--egress", "uring"]);
    let out = b.tb.guest.helper(
        "tcp_client.py",
        &[
            "echo-many",
            "--target",
            &b.gw,
            "--port",
            &b.port,
            "--conns",
            "200",
            "--size",
            "65536",
            "--connect-timeout",
            "30",
            "--timeout",
            "90",
        ],
        Duration::from_secs(100),
    );
    assert!(
        out.json()["ok"] == true,
        "every echo intact with an 8-entry SQ: {out}"
    );
    b.back_to_baseline("uring_sq_full", Duration::from_secs(15));
    let stderr = b.finish();
    let full = counter(&stderr, "uring_sq_full");
    eprintln!("faults: uring_sq_full: the SQ was full {full} times");
    assert!(full > 0, "the SQ never filled: {stderr}");
    assert!(!stderr.contains("io_uring submit failed"), "{stderr}");
}
