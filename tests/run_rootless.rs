//! Issue #15 "Hardening": `ringnet run` without root. ringnet runs as `nobody` (setpriv)
//! inside an isolated host namespace; its command gets a user namespace and a network
//! namespace of its own (uid 0 in there), and reaches the host namespace's servers
//! through ringnet: DNS through the gateway resolver (dnsmasq upstream), a TCP transfer
//! each way with sha256 compared, ping (gateway and sink, both families) and UDP echo.
//!
//! Set-up (as root, which CI is): a [`HostNs`] (sink addresses 198.51.100.7 / 2001:db8::7,
//! ping sockets for every group), dnsmasq and the python servers bound to the sink address;
//! ringnet's binary, the python helpers and the config are copied into a 0755 directory
//! `nobody` can read ([`Stage`], removed afterwards); `/dev/net/tun` is made 0666 for the
//! test ([`TunMode`] restores the original mode on drop, on panic, and at its own deadline
//! before the [`Watchdog`]'s, which exits without unwinding).
//!
//! Cases (one test, one host namespace):
//! - with `/dev/net/tun` at its original 0600 (when it is), `ringnet run` as nobody fails
//!   with the one-line "/dev/net/tun is not usable by uid 65534" error;
//! - `-p 127.0.0.1:80:80` (below 1024) as nobody fails with a one-line error naming the
//!   1024 limit, and the command never runs;
//! - the main run: ringnet's own uid (from `/proc/PID/status`, outside) is 65534 and it is
//!   in the host namespace; the command's network and user namespaces are new ones, `id -u`
//!   inside is 0; its resolv.conf names the gateway; DNS, TCP both ways, ping, UDP work;
//!   the CA bundle variable names a readable bundle (TLS interception on, CA stored in a
//!   `ca_dir` nobody owns); `-p 127.0.0.1:18080:8080` (nobody binds it in the host
//!   namespace) reaches a server of the command; exit status 0; no named namespace was
//!   created.
//!
//! `userns_disabled_is_one_line`: with `user.max_user_namespaces=0` (set in a user namespace
//! of root's own, where the limit applies to this process only), the rootless path says
//! which setting disables it, in one line.
//!
//! Unprivileged user namespaces must be allowed (`kernel.unprivileged_userns_clone`,
//! `user.max_user_namespaces`, `kernel.apparmor_restrict_unprivileged_userns`): otherwise
//! SKIP, or fail under `CI=true`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(180);
/// One `ringnet run` as nobody.
const RUN_LIMIT: Duration = Duration::from_secs(90);
const NOBODY: u32 = 65534;
const NAME: &str = "allowed.test";
const NAME_V4: &str = "198.51.100.8";
const NAME_V6: &str = "2001:db8::8";
const BYTES: u64 = 8 << 20;
/// `-p 127.0.0.1:HOST_PORT:GUEST_PORT` of the main run.
const HOST_PORT: u16 = 18080;
const GUEST_PORT: u16 = 8080;

/// Kernel settings that forbid unprivileged user namespaces here (empty: none does).
fn userns_blockers() -> Vec<String> {
    let read = |p: &str| fs::read_to_string(p).ok().map(|v| v.trim().to_string());
    let mut v = Vec::new();
    for (path, bad, what) in [
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "0",
            "kernel.unprivileged_userns_clone=0",
        ),
        (
            "/proc/sys/user/max_user_namespaces",
            "0",
            "user.max_user_namespaces=0",
        ),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "kernel.apparmor_restrict_unprivileged_userns=1",
        ),
    ] {
        if read(path).as_deref() == Some(bad) {
            v.push(format!(
                "unprivileged user namespaces are disabled ({what})"
            ));
        }
    }
    v
}

/// `/dev/net/tun`'s mode, changed for the test and restored on drop, or at `deadline` by a
/// thread of its own (the watchdog exits the process without running destructors).
struct TunMode {
    original: u32,
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const TUN: &str = "/dev/net/tun";

fn chmod(path: &str, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {path}: {e}"));
}

impl TunMode {
    fn original() -> u32 {
        fs::metadata(TUN).expect("stat /dev/net/tun").mode() & 0o7777
    }

    fn set(mode: u32, deadline: Duration) -> TunMode {
        let original = TunMode::original();
        chmod(TUN, mode);
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                let _ = fs::set_permissions(TUN, fs::Permissions::from_mode(original));
                eprintln!("run_rootless: deadline passed; /dev/net/tun restored to {original:o}");
            }
        });
        TunMode {
            original,
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TunMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions(TUN, fs::Permissions::from_mode(self.original));
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A 0755 directory nobody can read: ringnet's binary, the python helpers, the config, and
/// the directories `ca` (the CA's) and `rw` (the command's files) owned by nobody. Removed on
/// drop.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    fn new() -> Stage {
        // /tmp, not $TMPDIR: every ancestor must be searchable by nobody.
        let dir = Path::new("/tmp").join(unique_name("rootless"));
        let stage = Stage { dir };
        fs::create_dir(&stage.dir).expect("creating the stage directory");
        chmod(stage.path("."), 0o755);
        fs::copy(ringnet_bin(), stage.path("ringnet")).expect("copying ringnet");
        chmod(stage.path("ringnet"), 0o755);
        fs::create_dir(stage.path("helpers")).expect("mkdir helpers");
        chmod(stage.path("helpers"), 0o755);
        for h in [
            "rnhelp.py",
            "tcp_client.py",
            "tcp_server.py",
            "udp_client.py",
        ] {
            let to = format!("helpers/{h}");
            fs::copy(helper(h), stage.path(&to)).expect("copying a helper");
            chmod(stage.path(&to), 0o644);
        }
        fs::create_dir(stage.path("ca")).expect("mkdir ca");
        std::os::unix::fs::chown(stage.path("ca"), Some(NOBODY), Some(NOBODY)).expect("chown ca");
        fs::create_dir(stage.path("rw")).expect("mkdir rw");
        std::os::unix::fs::chown(stage.path("rw"), Some(NOBODY), Some(NOBODY)).expect("chown rw");
        stage
    }

    fn path(&self, name: &str) -> &'static str {
        // Leaked: a handful of short strings per test, for `&str` arguments.
        Box::leak(
            self.dir
                .join(name)
                .to_str()
                .expect("utf-8 temp path")
                .to_string()
                .into_boxed_str(),
        )
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `setpriv … env -i PATH=… ringnet ARGS` as nobody (own environment: root's PATH may name
/// directories nobody cannot enter).
fn as_nobody<'a>(stage: &Stage, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "env",
        "-i",
        "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/",
        "LANG=C",
        stage.path("ringnet"),
    ];
    v.extend_from_slice(args);
    v
}

/// Named namespaces other than the test harness's own (`rn-PID-N-TAG`, made by this and by
/// any other test process running meanwhile).
fn unharnessed(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| !n.starts_with("rn-"))
        .collect()
}

/// The `Uid:` line of `/proc/PID/status` (real, effective, saved, fs).
fn uids(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace `kind` (`net`, `user`) of `pid`, as `readlink /proc/PID/ns/KIND` says it.
fn ns_of(pid: &str, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
}

/// The value after `tag ` on the command's output line starting with it.
fn tagged<'a>(lines: &'a [String], tag: &str) -> &'a str {
    let prefix = format!("{tag} ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{tag}` line in the command's output: {lines:#?}"))
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert_eq!(out.code(), Some(2), "{out}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ringnet: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line wanted: {out}");
    assert!(errors[0].contains(needle), "{needle:?} wanted: {out}");
}

#[test]
fn rootless_run() {
    require_privileges!("setpriv", "dig", "dnsmasq", "python3", "ping");
    match decide(in_ci(), &userns_blockers()) {
        Decision::Run => {}
        Decision::Skip(reason) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: rootless_run: {reason}");
            return;
        }
        Decision::Fail(reason) => panic!("CI=true and this test cannot run: {reason}"),
    }
    let start = Instant::now();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let dns = Dnsmasq::new(SINK_V4)
        .host(NAME, &[NAME_V4, NAME_V6])
        .start(&host);
    let (_tcp, tcp_ready) = host.spawn_helper("tcp_server.py", &["--bind", SINK_V4]);
    let (_udp, udp_ready) = host.spawn_helper("udp_echo_server.py", &["--bind", SINK_V4]);
    let (tcp_port, udp_port) = (port(&tcp_ready), port(&udp_ready));
    let stage = Stage::new();
    let config = stage.path("config.toml");
    let tls = format!("[tls]\nenabled = true\nca_dir = \"{}\"\n", stage.path("ca"));
    fs::write(config, dns_config(&["198.51.100.7:53"], &[], &tls)).expect("writing the config");
    chmod(config, 0o644);
    let netns_before = unharnessed(netns_list());
    let slot = Slot::new(0);

    // 1. /dev/net/tun as this machine has it: a clear refusal when nobody may not use it.
    let original = TunMode::original();
    if original & 0o006 != 0o006 {
        let out = host.exec(&as_nobody(&stage, &["run", "--", "true"]), RUN_LIMIT);
        assert_one_line_error(&out, "/dev/net/tun is not usable by uid 65534");
    }
    let left = LIMIT.saturating_sub(start.elapsed() + Duration::from_secs(10));
    let _tun = TunMode::set(0o666, left);

    // 2. A published port below 1024: refused in one line, the command never runs.
    let ran = stage.path("ran");
    let script = format!("echo ran > {ran}");
    let out = host.exec(
        &as_nobody(
            &stage,
            &["run", "-p", "127.0.0.1:80:80", "--", "sh", "-c", &script],
        ),
        RUN_LIMIT,
    );
    assert_one_line_error(&out, "1024");
    assert!(!Path::new(ran).exists(), "the command ran: {out}");

    // 3. The real thing.
    let go = stage.path("go");
    let helpers = stage.path("helpers");
    let (gw4, gw6) = (slot.gw_v4.to_string(), slot.gw_v6.to_string());
    let ready = stage.path("rw/server-ready");
    let script = format!(
        r#"
python3 -B -u {helpers}/tcp_server.py --bind 0.0.0.0 --port {GUEST_PORT} --timeout 80 > {ready} &
server=$!
i=0; while [ ! -s {ready} ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
echo "pids $PPID $$"
i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "uid $(id -u) $(id -g)"
echo "resolv $(grep nameserver /etc/resolv.conf | tr '\n' ' ')"
echo "dns_a $(dig +short +time=3 +tries=2 {NAME} A | tr '\n' ' ')"
echo "dns_aaaa $(dig @{gw6} +short +time=3 +tries=2 {NAME} AAAA | tr '\n' ' ')"
ping -c 2 -W 5 {gw4} >/dev/null 2>&1; echo "ping_gw4 $?"
ping -c 2 -W 5 {SINK_V4} >/dev/null 2>&1; echo "ping_sink4 $?"
ping -6 -c 2 -W 5 {gw6} >/dev/null 2>&1; echo "ping_gw6 $?"
ping -6 -c 2 -W 5 {SINK_V6} >/dev/null 2>&1; echo "ping_sink6 $?"
echo "tcp_down $(python3 -B -u {helpers}/tcp_client.py bulk --target {SINK_V4} --port {tcp_port} --direction down --bytes {BYTES} --timeout 40)"
echo "tcp_up $(python3 -B -u {helpers}/tcp_client.py bulk --target {SINK_V4} --port {tcp_port} --direction up --bytes {BYTES} --timeout 40)"
echo "udp $(python3 -B -u {helpers}/udp_client.py --target {SINK_V4} --port {udp_port} --count 50 --max-size 1400 --timeout 40)"
echo "ca $(grep -c 'BEGIN CERTIFICATE' "$SSL_CERT_FILE")"
kill $server
echo "done"
"#
    );
    let publish = format!("127.0.0.1:{HOST_PORT}:{GUEST_PORT}");
    let cmd = as_nobody(
        &stage,
        &[
            "run", "--config", config, "-p", &publish, "--", "sh", "-c", &script,
        ],
    );
    let mut rn = host.spawn(&cmd);
    let first = rn
        .next_line(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no output from `{}`: {}", rn.what, rn.stderr()));
    let pids: Vec<&str> = first
        .strip_prefix("pids ")
        .unwrap_or_else(|| panic!("first line {first:?}; stderr: {}", rn.stderr()))
        .split_whitespace()
        .collect();
    let (ringnet_pid, cmd_pid) = (pids[0], pids[1]);
    let ringnet_pid_n: u32 = ringnet_pid.parse().expect("ringnet's pid");
    let cmd_pid_n: u32 = cmd_pid.parse().expect("the command's pid");
    let _guard = PidGuard(cmd_pid_n);
    // ringnet: nobody, in the host namespace; the command: nobody outside, in namespaces of
    // its own.
    assert_eq!(uids(ringnet_pid_n), [NOBODY; 4], "ringnet's uids");
    assert_eq!(uids(cmd_pid_n), [NOBODY; 4], "the command's uids");
    let host_net = fs::metadata(host.path()).expect("host netns").ino();
    let ringnet_net = fs::metadata(format!("/proc/{ringnet_pid}/ns/net"))
        .expect("ringnet's netns")
        .ino();
    assert_eq!(
        ringnet_net, host_net,
        "ringnet is not in the host namespace"
    );
    assert_ne!(ns_of(cmd_pid, "net"), ns_of(ringnet_pid, "net"));
    assert_ne!(ns_of(cmd_pid, "user"), ns_of(ringnet_pid, "user"));
    // A published port above 1024, bound by nobody in the host namespace, reaches the
    // command's server.
    let port = HOST_PORT.to_string();
    let out = host.helper(
        "tcp_client.py",
        &["connect", "--target", "127.0.0.1", "--port", &port],
        Duration::from_secs(30),
    );
    assert_eq!(out.json()["ok"], true, "-p {publish}: {out}");
    fs::write(go, "").expect("the go file");

    let mut lines = Vec::new();
    let deadline = Instant::now() + RUN_LIMIT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rn.next_line(left) {
            Some(l) => {
                let end = l == "done";
                lines.push(l);
                if end {
                    break;
                }
            }
            None => break,
        }
    }
    let status = rn.wait_timeout(Duration::from_secs(20));
    let story = format!("output: {lines:#?}\nstderr: {}", rn.stderr());
    assert!(
        status.is_some_and(|s| s.success()),
        "ringnet run as nobody: {status:?}\n{story}"
    );

    assert_eq!(tagged(&lines, "uid"), "0 0", "{story}");
    assert_eq!(
        tagged(&lines, "resolv").trim(),
        format!("nameserver {gw4} nameserver {gw6}"),
        "{story}"
    );
    assert_eq!(tagged(&lines, "dns_a").trim(), NAME_V4, "{story}");
    assert_eq!(tagged(&lines, "dns_aaaa").trim(), NAME_V6, "{story}");
    assert!(dns.asked(NAME), "dnsmasq was not asked: {}", dns.log());
    for p in ["ping_gw4", "ping_sink4", "ping_gw6", "ping_sink6"] {
        assert_eq!(tagged(&lines, p), "0", "{p}: {story}");
    }
    for dir in ["tcp_down", "tcp_up"] {
        let j: Json = serde_json::from_str(tagged(&lines, dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}: {story}"));
        assert_eq!(j["ok"], true, "{dir}: {j}");
        assert_eq!(j["bytes"], BYTES, "{dir}: {j}");
        assert!(j["sha256_local"].is_string(), "{dir}: {j}");
        assert_eq!(j["sha256_local"], j["sha256_remote"], "{dir}: {j}");
    }
    let udp: Json =
        serde_json::from_str(tagged(&lines, "udp")).unwrap_or_else(|e| panic!("udp: {e}: {story}"));
    assert_eq!(udp["ok"], true, "{udp}");
    assert_eq!(udp["replied"], 50, "{udp}");
    let certs: u32 = tagged(&lines, "ca").trim().parse().unwrap_or(0);
    assert!(certs >= 1, "no CA in the bundle: {story}");
    assert_eq!(
        unharnessed(netns_list()),
        netns_before,
        "a named namespace appeared"
    );
}

/// With unprivileged user namespaces disabled, `run` without capabilities says so in one
/// line. Made safely for this one process: root's own user namespace (`unshare -U -r`) gets
/// `user.max_user_namespaces=0` (the limit is per user namespace), and ringnet runs there
/// as uid 0 with no capabilities at all (setpriv), so it takes the rootless path.
#[test]
fn userns_disabled_is_one_line() {
    require_privileges!("unshare", "setpriv");
    let _wd = Watchdog::new(Duration::from_secs(60));
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && \
         exec setpriv --bounding-set=-all --inh-caps=-all {} run -- true",
        ringnet_bin()
    );
    let out = run_args(
        &[
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "sh",
            "-c",
            &script,
        ],
        Duration::from_secs(30),
    );
    assert_one_line_error(
        &out,
        "unprivileged user namespaces are disabled (user.max_user_namespaces=0)",
    );
}
