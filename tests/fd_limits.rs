//! Issue #8 point 5: running out of file descriptors is counted, warned about and survived.
//! Every case runs `ringnet run` inside an isolated host namespace (`common::HostNs`) under
//! `sh -c 'ulimit …; exec ringnet …'`.
//!
//! Cases:
//! - `exhaustion::{uring,epoll}`: `ulimit -n 64` (soft = hard, so ringnet cannot raise it):
//!   ringnet warns at start that 64 is below what its flow limits need. The guest
//!   (`tests/helpers/fd_exhaust.py`, which inherits the same hard limit) holds 30 TCP
//!   connections, sends from one UDP socket to 60 ports (60 flows, one host socket each: more
//!   than fit) and then opens 10 more TCP connections (refused). `--stats` shows
//!   `host_fd_exhausted` and `udp_open_failed` > 0; stderr has the runtime warning naming
//!   `ulimit -n`, at most one per 5 s; after everything is closed and the UDP flows have
//!   expired (3 s idle timeout), a new TCP connection and a new UDP flow echo again.
//! - `soft_limit_raised_for_ringnet_not_for_its_command`: soft 256, hard above what the
//!   flow limits need: no warning, ringnet runs with soft = hard, its command sees 256.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A `--stats` counter from ringnet's stderr (0 when not printed: only non-zero ones are).
fn counter(out: &Output, name: &str) -> u64 {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("counter value"))
        .unwrap_or(0)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

mod exhaustion {
    #[test]
    fn uring() {
        super::exhaustion("uring")
    }
    #[test]
    fn epoll() {
        super::exhaustion("epoll")
    }
}

fn exhaustion(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let (_tcp, tcp_ready) = host.spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let (_udp, udp_ready) = host.spawn_helper("udp_echo_server.py", &["--bind", "127.0.0.1"]);
    let port = |j: &Json| j["port"].as_u64().expect("port").to_string();
    let cfg = TempFile::with_contents("fdcfg", "[egress]\nudp_idle_timeout_ms = 3000\n");
    let client = helper("fd_exhaust.py");
    let (tcp_port, udp_port) = (port(&tcp_ready), port(&udp_ready));
    let guest_cmd = [
        "python3",
        "-B",
        "-u",
        client.as_str(),
        "--target",
        "172.16.0.1",
        "--tcp-port",
        &tcp_port,
        "--udp-port",
        &udp_port,
        "--hold",
        "30",
        "--udp-flows",
        "60",
        "--extra",
        "10",
        "--settle",
        "4",
    ];
    let ringnet = [
        ringnet_bin(),
        "run",
        "--stats",
        "--egress",
        driver,
        "--config",
        cfg.path_str(),
        "--",
    ];
    let words: Vec<String> = ringnet
        .iter()
        .chain(guest_cmd.iter())
        .map(|w| sh_quote(w))
        .collect();
    let script = format!("ulimit -n 64 && exec {}", words.join(" "));
    let out = host.sh_timeout(&script, RUN_LIMIT);
    assert!(out.success(), "{out}");
    let res = out.json();
    assert!(res["ok"] == true, "ringnet stopped working: {out}");

    // The start-up warning: one line naming the limit and what it should be.
    let startup: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("RLIMIT_NOFILE, hard limit 64"))
        .collect();
    assert_eq!(startup.len(), 1, "start-up warning: {out}");
    assert!(
        startup[0].contains("WARN") && startup[0].contains("ulimit -n"),
        "{out}"
    );

    // The guest really ran out: all 30 held, the UDP echo flow (opened first) answered,
    // the extra connections were refused.
    assert_eq!(res["held"].as_u64(), Some(30), "{out}");
    assert_eq!(res["udp_echoed"].as_bool(), Some(true), "{out}");
    assert_eq!(res["extra_held"].as_u64(), Some(0), "{out}");
    assert_eq!(res["extra_failures"]["refused"].as_u64(), Some(10), "{out}");

    // Counted…
    let exhausted = counter(&out, "host_fd_exhausted");
    let udp_failed = counter(&out, "udp_open_failed");
    assert!(exhausted > 0, "host_fd_exhausted not counted: {out}");
    assert!(udp_failed > 0, "udp_open_failed not counted: {out}");
    assert!(udp_failed <= exhausted, "{out}");
    assert!(counter(&out, "udp_dropped") >= udp_failed, "{out}");
    // …and warned about, rate-limited.
    let warnings = out
        .stderr
        .lines()
        .filter(|l| l.contains("too many open files (EMFILE)") && l.contains("ulimit -n"))
        .count();
    let most = 1 + out.elapsed.as_secs() / 5;
    assert!(
        (1..=most).contains(&(warnings as u64)),
        "{warnings} EMFILE warnings in {:?} for {exhausted} failures: {out}",
        out.elapsed
    );
}

#[test]
fn soft_limit_raised_for_ringnet_not_for_its_command() {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    // Small flow limits: 16 + 16 + 128 descriptors wanted, below any usual hard limit.
    let cfg = TempFile::with_contents(
        "fdcfg",
        "max_connections = 16\n[egress]\nmax_udp_flows = 16\n",
    );
    let script = format!(
        "ulimit -Sn 100 && echo hard $(ulimit -Hn) && exec {} run --config {} -- sh -c \
         'grep \"open files\" /proc/$PPID/limits /proc/self/limits'",
        sh_quote(ringnet_bin()),
        sh_quote(cfg.path_str())
    );
    let out = host.sh_timeout(&script, RUN_LIMIT);
    assert!(out.success(), "{out}");
    let hard = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("hard "))
        .expect("hard limit line")
        .trim()
        .to_string();
    assert!(
        hard.parse::<u64>().is_ok_and(|h| h >= 160),
        "the hard limit here is too low for this test: {out}"
    );
    // grep prints `/proc/PID/limits:Max open files  SOFT  HARD  files`.
    let soft_hard = |is_self: bool| {
        let l = out
            .stdout
            .lines()
            .find(|l| l.contains("limits:") && l.starts_with("/proc/self/") == is_self)
            .unwrap_or_else(|| panic!("no limits line (self: {is_self}): {out}"));
        let w: Vec<&str> = l.split_whitespace().collect();
        (w[w.len() - 3].to_string(), w[w.len() - 2].to_string())
    };
    let (command, ringnet) = (soft_hard(true), soft_hard(false));
    assert_eq!(
        ringnet,
        (hard.clone(), hard.clone()),
        "ringnet's limit: {out}"
    );
    assert_eq!(
        command,
        ("100".to_string(), hard),
        "the command's limit: {out}"
    );
    assert!(!out.stderr.contains("RLIMIT_NOFILE"), "{out}");
}
