//! Issue #8 point 6: a guest that goes away under `ringnet attach`, and one whose TAP goes
//! down and up again. ringnet runs in an isolated host namespace (`common::HostNs`) serving
//! a guest namespace the test made; every wait has a deadline.
//!
//! Cases:
//! - `namespace_deleted`: `ip netns del GUEST` while served: ringnet exits with status 1
//!   within 2 s, its one `ringnet: …` line saying the namespace was deleted.
//! - `tap_deleted::{uring,epoll}`: `ip link del eth0` in the guest: the same, saying the TAP
//!   was deleted.
//! - `down_up_restores_configuration`: during a 2 GB download from the host, the guest sets
//!   eth0 down for 3 s and up again. ringnet stays up and says so at info level (no
//!   warning, no error); the TAP writes that failed meanwhile are counted as `to_guest`
//!   drops; within 5 s of `up` the guest has its IPv4/IPv6 addresses and default routes
//!   back (put back by `--configure`); pings of both gateways and a new TCP connection work,
//!   and the download completes intact.

mod common;

use common::*;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// What ringnet must do when the guest goes away: exit by itself within 2 s of `since`,
/// with status 1 and exactly one `ringnet: ` line that contains `want`.
fn assert_gone(rn: &mut Ringnet, since: Instant, want: &str) {
    let status: Option<ExitStatus> = rn.wait_exit(Duration::from_secs(2));
    let stderr = rn.stderr();
    let took = since.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!("ringnet still serving {took:?} after the guest went away:\n{stderr}")
    });
    assert_eq!(status.code(), Some(1), "exit status {status}:\n{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ringnet: "))
        .collect();
    assert_eq!(lines.len(), 1, "one `ringnet: ` line wanted:\n{stderr}");
    assert!(lines[0].contains(want), "want {want:?}:\n{stderr}");
}

#[test]
fn namespace_deleted() {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let path = guest.path();
    let mut rn = Ringnet::attach(&host, &guest, &[]);
    let t = Instant::now();
    guest.delete();
    assert_gone(
        &mut rn,
        t,
        &format!("the guest namespace {path} was deleted"),
    );
}

mod tap_deleted {
    #[test]
    fn uring() {
        super::tap_deleted("uring")
    }
    #[test]
    fn epoll() {
        super::tap_deleted("epoll")
    }
}

fn tap_deleted(driver: &str) {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let mut rn = Ringnet::attach(&host, &guest, &["--egress", driver]);
    let t = Instant::now();
    guest.ip(&["link", "del", "eth0"]);
    assert_gone(&mut rn, t, "the guest's TAP eth0 was deleted");
}

/// Poll until the guest's eth0 has both addresses (IPv6 not tentative) and both default
/// routes via the gateways; panics after `timeout` with what it saw.
fn wait_restored(guest: &Netns, s: Slot, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let addr = guest.ip(&["-o", "addr", "show", "dev", "eth0"]);
        let r4 = guest.ip(&["-4", "route", "show", "default"]);
        let r6 = guest.ip(&["-6", "route", "show", "default"]);
        let ok = addr.contains(&format!("inet {}/30 ", s.guest_v4))
            && addr.lines().any(|l| {
                l.contains(&format!("inet6 {}/64 ", s.guest_v6)) && !l.contains("tentative")
            })
            && r4.contains(&format!("via {} dev eth0", s.gw_v4))
            && r6.contains(&format!("via {} dev eth0", s.gw_v6));
        if ok {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "guest configuration not restored within {timeout:?}:\n{addr}{r4}{r6}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn down_up_restores_configuration() {
    require_privileges!("ping", "python3", "ss");
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let mut rn = Ringnet::attach(&host, &guest, &["--stats"]);
    let s = rn.slot;
    let (_srv, ready) = host.spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let port = ready["port"].as_u64().expect("port").to_string();
    let gw4 = s.gw_v4.to_string();
    let client = helper("tcp_client.py");
    let tcp_client = |cmd: &str, extra: &[&str]| {
        let mut args = vec![
            "python3",
            "-B",
            "-u",
            client.as_str(),
            cmd,
            "--target",
            gw4.as_str(),
            "--port",
            port.as_str(),
            "--timeout",
            "100",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    // A download in flight across the down period: ringnet's writes to the down TAP fail.
    let bulk_args = tcp_client("bulk", &["--direction", "down", "--bytes", "2000000000"]);
    let bulk_args: Vec<&str> = bulk_args.iter().map(String::as_str).collect();
    let mut bulk = guest.spawn(&bulk_args);
    // Under load the client may take a while to start: wait for its connection.
    let filter = format!("( dport = :{port} )");
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest
        .exec(&["ss", "-Htn", "state", "established", &filter], SHORT)
        .stdout
        .trim()
        .is_empty()
    {
        bulk.assert_alive();
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    bulk.assert_alive();

    guest.ip(&["link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_secs(3));
    rn.assert_alive();
    let addr = guest.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(
        !addr.contains(&s.guest_v6.to_string()),
        "down removes the IPv6 address (else this test shows nothing): {addr}"
    );
    guest.ip(&["link", "set", "eth0", "up"]);
    let took = wait_restored(&guest, s, Duration::from_secs(5));
    eprintln!("configuration restored {took:?} after `up`");

    for (family, gw) in [("-4", s.gw_v4.to_string()), ("-6", s.gw_v6.to_string())] {
        let out = guest.exec(&["ping", family, "-c", "2", "-W", "2", &gw], SHORT);
        assert!(out.success() && out.stdout.contains("2 received"), "{out}");
    }
    let connect_args = tcp_client("connect", &[]);
    let connect_args: Vec<&str> = connect_args.iter().map(String::as_str).collect();
    let out = guest.exec(&connect_args, SHORT);
    assert!(out.json()["ok"] == true, "{out}");

    let line = bulk
        .next_line(Duration::from_secs(90))
        .expect("the download's result line");
    let res = serde_json::from_str::<Json>(&line).expect("JSON result");
    assert!(res["ok"] == true, "download across down/up: {line}");

    let status = rn.stop();
    assert!(status.success(), "{status}");
    let stderr = rn.stderr();
    assert!(
        stderr.contains("the guest set eth0 down") && stderr.contains("eth0 is up again"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "nothing but info lines: {stderr}"
    );
    let drops = stderr
        .lines()
        .find_map(|l| l.strip_prefix("to_guest frames "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|d| d.parse::<u64>().ok())
        .expect("to_guest counters");
    assert!(drops > 0, "writes to the down TAP not counted: {stderr}");
    assert!(stderr.contains("to_guest_dropped "), "{stderr}");
}
