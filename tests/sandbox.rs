//! Issue #15 "Hardening": the seccomp jail and the capabilities `ringnet attach` drops
//! (README "Sandboxing", `src/sandbox/`). Every case runs ringnet inside an isolated host
//! namespace (`common::HostNs`) serving a guest namespace the test made; nothing leaves
//! them.
//!
//! Cases:
//! - `forbidden_syscall_kills_the_process`: with `RINGNET_TEST_FORBIDDEN_SYSCALL=poll` the
//!   poll thread makes `setns(-1, 0)` right after entering its filter: ringnet dies of
//!   SIGSYS (kill-process), for both egress drivers.
//! - `forbidden_syscall_without_seccomp_is_harmless`: the same knob with `--no-seccomp`:
//!   ringnet keeps serving, its poll thread has no filter.
//! - `attach_drops_capabilities`: `attach` without `--configure` (and with every
//!   observer thread: pcap, control socket, metrics, rate line): the main thread has no
//!   capability left (effective, permitted, bounding), `NoNewPrivs: 1`; every ringnet
//!   thread but the main one and the termination hook's has a seccomp filter; the poll
//!   thread keeps only `CAP_NET_BIND_SERVICE`; the guest is still served (ping the
//!   gateway), and a control-socket client works (its thread is spawned filtered).
//! - `attach_configure_keeps_net_and_sys_admin`: with `--configure`, exactly
//!   `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` stay on the main thread (it runs `ip` in the
//!   namespace when the guest sets its TAP up again), and that still works.

mod common;

use common::*;
use std::time::Duration;

const CASE_LIMIT: Duration = Duration::from_secs(90);

const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// A field of a `/proc/.../status` file.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
        .trim()
        .to_string()
}

fn hex(status: &str, field: &str) -> u64 {
    u64::from_str_radix(&status_field(status, field), 16).expect("hex capability set")
}

/// Every thread of `pid`: (name, status).
fn threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let dir = e.expect("task entry").path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        out.push((comm.trim().to_string(), status));
    }
    out
}

fn thread<'a>(all: &'a [(String, String)], name: &str) -> &'a str {
    all.iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            panic!("no thread {name} among {names:?}")
        })
}

/// `ringnet attach` of `guest` without `--configure` (the test configures nothing: only
/// the process is looked at), with `env` set and `args` added; returns once it said it
/// serves.
fn attach_plain(host: &HostNs, guest: &Netns, env: &[&str], args: &[&str]) -> Ringnet {
    let path = guest.path();
    let mut full = vec!["env"];
    full.extend_from_slice(env);
    full.extend([ringnet_bin(), "attach", "--netns", &path, "--tap", "eth0"]);
    full.extend_from_slice(args);
    Ringnet::spawn(host, &full, guest.name(), None)
}

test_cases!(forbidden_syscall_kills_the_process: uring("uring"), epoll("epoll"));

fn forbidden_syscall_kills_the_process(driver: &str) {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let mut rn = attach_plain(
        &host,
        &guest,
        &["RINGNET_TEST_FORBIDDEN_SYSCALL=poll"],
        &["--egress", driver],
    );
    let st = rn
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("ringnet still runs\n{}", rn.stderr()));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGSYS),
        "{st}\n--- stderr ---\n{}",
        rn.stderr()
    );
    assert!(
        rn.stderr().contains("making a forbidden syscall"),
        "{}",
        rn.stderr()
    );
}

#[test]
fn forbidden_syscall_without_seccomp_is_harmless() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let mut rn = attach_plain(
        &host,
        &guest,
        &["RINGNET_TEST_FORBIDDEN_SYSCALL=poll"],
        &["--no-seccomp"],
    );
    rn.wait_stderr("ringnet serving", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    rn.assert_alive();
    let all = threads(rn.pid());
    let poll = thread(&all, "ringnet-poll-0");
    assert_eq!(status_field(poll, "Seccomp"), "0", "{poll}");
    // Capabilities are dropped all the same.
    assert_eq!(hex(poll, "CapEff"), CAP_NET_BIND_SERVICE, "{poll}");
    let st = rn.stop();
    assert!(st.success(), "{st}");
}

#[test]
fn attach_drops_capabilities() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let pcap = TempFile::new("sandbox.pcap");
    let control = TempFile::new("sandbox.sock");
    let mut rn = attach_plain(
        &host,
        &guest,
        &[],
        &[
            "--pcap",
            pcap.path_str(),
            "--control",
            control.path_str(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--stats-interval",
            "1",
        ],
    );
    rn.wait_stderr("ringnet serving", Duration::from_secs(10));
    // The caps are dropped after the start-up line: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let pid = rn.pid();
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for set in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(hex(&main, set), 0, "main thread {set}\n{main}");
    }
    assert_eq!(status_field(&main, "NoNewPrivs"), "1", "{main}");
    // The guest is served: configure it by hand and ping the gateway (through the TAP).
    let s = Slot::new(0);
    guest.ip(&["link", "set", "eth0", "address", GUEST_MAC]);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.ip(&["addr", "add", &format!("{}/30", s.guest_v4), "dev", "eth0"]);
    // The TAP just came up (ringnet sees it within its watch interval): a few tries.
    let gw = s.gw_v4.to_string();
    let mut ping = None;
    for _ in 0..10 {
        let out = guest
            .cmd(&["ping", "-c", "1", "-W", "1", &gw])
            .output()
            .expect("ping");
        let ok = out.status.success();
        ping = Some(out);
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let ping = ping.expect("at least one try");
    assert!(ping.status.success(), "{ping:?}");
    // A control client: its thread is spawned by the filtered accept thread.
    let ctl = host
        .cmd(&[ringnet_bin(), "ctl", control.path_str(), "stats"])
        .output()
        .expect("ringnet ctl");
    assert!(ctl.status.success(), "{ctl:?}");
    rn.assert_alive();
    let all = threads(pid);
    let poll = thread(&all, "ringnet-poll-0");
    assert_eq!(status_field(poll, "Seccomp"), "2", "{poll}");
    assert_eq!(hex(poll, "CapEff"), CAP_NET_BIND_SERVICE, "{poll}");
    assert_eq!(hex(poll, "CapBnd"), CAP_NET_BIND_SERVICE, "{poll}");
    for name in [
        "ringnet-pcap",
        "ringnet-control",
        "ringnet-events",
        "ringnet-metrics",
        "ringnet-stats",
    ] {
        let t = thread(&all, name);
        assert_eq!(status_field(t, "Seccomp"), "2", "{name}\n{t}");
        assert!(
            status_field(t, "Seccomp_filters").parse::<u32>().unwrap() >= 1,
            "{name}\n{t}"
        );
        assert_eq!(hex(t, "CapEff"), 0, "{name}\n{t}");
        assert_eq!(status_field(t, "NoNewPrivs"), "1", "{name}\n{t}");
    }
    let st = rn.stop();
    assert!(st.success(), "{st}\n{}", rn.stderr());
}

#[test]
fn attach_configure_keeps_net_and_sys_admin() {
    require_privileges!();
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::default());
    std::thread::sleep(Duration::from_millis(300));
    let pid = tb.ringnet.pid();
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(
        hex(&main, "CapEff"),
        CAP_NET_ADMIN | CAP_SYS_ADMIN,
        "{main}"
    );
    assert_eq!(
        hex(&main, "CapBnd"),
        CAP_NET_ADMIN | CAP_SYS_ADMIN,
        "{main}"
    );
    assert_eq!(status_field(&main, "NoNewPrivs"), "1", "{main}");
    // Down and up: ringnet configures the TAP again with what it kept.
    tb.guest.ip(&["link", "set", "eth0", "down"]);
    tb.guest.ip(&["link", "set", "eth0", "up"]);
    tb.ringnet
        .wait_stderr("addresses and routes restored", Duration::from_secs(10));
    let addr = tb.guest.ip(&["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&tb.slot().guest_v4.to_string()), "{addr}");
    tb.ringnet.assert_alive();
}
