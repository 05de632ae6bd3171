//! Namespace/TAP end-to-end harness for ringnet's integration tests.
//!
//! # Theory of operation
//!
//! Every test builds its own little world and tears it down again:
//!
//! ```text
//!   HostNs "rn-<pid>-<n>-host"                     Netns "rn-<pid>-<n>-guest"
//!   lo 127.0.0.1 ::1  (servers listen here)          eth0 (TAP, opened/created by ringnet)
//!   sink0 (ifb) 198.51.100.7/24 2001:db8::7/64       172.16.0.2/30  fd42:6d73:62::2/64
//!   default routes v4+v6 -> sink0 (ifb drops all)     default via 172.16.0.1 / fd42:6d73:62::1
//!   ringnet attach --netns /run/netns/<guest> ...  <==== TAP frames ====>
//! ```
//!
//! Nothing can leave: the only non-loopback interface of the host namespace is an `ifb`
//! device, which drops whatever is sent to it (this kernel has no `dummy` driver). The only
//! addresses tests ever target are the gateway addresses, the documentation addresses on the
//! sink, and unroutable TEST-NET addresses that end in the sink.
//!
//! Invariants:
//! - Names are unique per process and per object: `rn-<pid>-<counter>-<tag>`. Tests of one
//!   binary run in parallel threads of one process; the counter keeps them apart.
//! - Everything is removed by its exact name or by the process-group id the harness made
//!   (every child is spawned in its own process group) — never by pattern.
//! - Cleanup runs in `Drop`, so it also runs when a test panics. A [`Watchdog`] bounds each
//!   test: past its deadline it kills every registered process group, deletes every
//!   registered namespace and exits the test process (a hung test must not hang CI).
//! - Every wait on a child has a deadline ([`run`], [`Bg::next_line`], [`Ringnet`]'s stop).
//!
//! Privileges: [`privileged`] (and the [`require_privileges!`] macro) decide whether a test
//! can run. Without root, `/dev/net/tun` or a needed tool, a test prints `SKIP: <reason>` to
//! the real stderr (not captured by libtest) and returns — unless `CI=true`, where it panics.
#![allow(dead_code)] // each test binary uses a different subset of the harness

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod json;
pub use json::Json;

/// Default deadline for a short command (ip, sysctl, ping…).
pub const SHORT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Names, paths
// ---------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `rn-<pid>-<n>-<tag>`: unique within this machine while this process lives.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("rn-{}-{}-{}", std::process::id(), n, tag)
}

/// The ringnet binary cargo built for this test run, or `$RINGNET_BIN` when set (to test
/// an installed binary, or a stand-in while debugging the suite itself).
pub fn ringnet_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RINGNET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringnet").to_string())
    })
}

/// Absolute path of a helper program in `tests/helpers/`.
pub fn helper(name: &str) -> String {
    format!("{}/tests/helpers/{}", env!("CARGO_MANIFEST_DIR"), name)
}

/// Name of the running test (libtest names the thread after it).
pub fn test_name() -> String {
    thread::current().name().unwrap_or("?").to_string()
}

/// A file in the temp dir, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        TempFile {
            path: std::env::temp_dir().join(unique_name(tag)),
        }
    }

    pub fn with_contents(tag: &str, contents: &str) -> TempFile {
        let f = TempFile::new(tag);
        fs::write(&f.path, contents).expect("writing temp file");
        f
    }

    pub fn read(&self) -> String {
        fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Addresses (the CLI spec's slot plan)
// ---------------------------------------------------------------------------------------

/// Addresses of one ringnet slot: IPv4 /30 `172.16.0.0 + 4·slot`, IPv6 `fd42:6d73:62:slot::/64`.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub slot: u16,
    pub guest_v4: Ipv4Addr,
    pub gw_v4: Ipv4Addr,
    pub guest_v6: Ipv6Addr,
    pub gw_v6: Ipv6Addr,
}

impl Slot {
    pub fn new(slot: u16) -> Slot {
        let base = u32::from(Ipv4Addr::new(172, 16, 0, 0)) + 4 * u32::from(slot);
        Slot {
            slot,
            guest_v4: Ipv4Addr::from(base + 2),
            gw_v4: Ipv4Addr::from(base + 1),
            guest_v6: Ipv6Addr::new(0xfd42, 0x6d73, 0x62, slot, 0, 0, 0, 2),
            gw_v6: Ipv6Addr::new(0xfd42, 0x6d73, 0x62, slot, 0, 0, 0, 1),
        }
    }
}

pub const GUEST_MAC: &str = "02:6d:73:00:00:02";
pub const GATEWAY_MAC: &str = "02:6d:73:00:00:01";
pub const SINK_V4: &str = "198.51.100.7";
pub const SINK_V6: &str = "2001:db8::7";

// ---------------------------------------------------------------------------------------
// Privileges: run, skip, or (under CI) fail
// ---------------------------------------------------------------------------------------

pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("True")
    )
}

/// What to do given whether we are in CI and what is missing.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
    Fail(String),
}

pub fn decide(ci: bool, missing: &[String]) -> Decision {
    if missing.is_empty() {
        Decision::Run
    } else if ci {
        Decision::Fail(missing.join("; "))
    } else {
        Decision::Skip(missing.join("; "))
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// What keeps a namespace test from running here (empty: nothing).
pub fn missing_privileges(tools: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not root".to_string());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("no /dev/net/tun".to_string());
    }
    for tool in std::iter::once(&"ip").chain(tools) {
        if which(tool).is_none() {
            missing.push(format!("no `{tool}` in PATH"));
        }
    }
    missing
}

/// True when the test may run. Otherwise prints `SKIP: <test>: <reason>` on the real stderr
/// and returns false — or panics when `CI=true`.
pub fn privileged(tools: &[&str]) -> bool {
    match decide(in_ci(), &missing_privileges(tools)) {
        Decision::Run => true,
        Decision::Skip(reason) => {
            // Written to fd 2 directly: libtest captures eprintln!, and a skip must show.
            let _ = writeln!(std::io::stderr(), "SKIP: {}: {reason}", test_name());
            false
        }
        Decision::Fail(reason) => panic!("CI=true and this test cannot run: {reason}"),
    }
}

/// `require_privileges!("ping", "python3")`: return from the test (after a printed SKIP)
/// unless root, /dev/net/tun, `ip` and the named tools are there; under `CI=true`, fail.
#[macro_export]
macro_rules! require_privileges {
    ($($tool:expr),* $(,)?) => {
        if !$crate::common::privileged(&[$($tool),*]) {
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Registry of live resources (for the watchdog)
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Registry {
    pgids: HashSet<i32>,
    netns: HashSet<String>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = registry().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group we created (the
        // child was spawned with process_group(0), so its pgid is its pid); no memory is
        // involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn kill_pid(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) on a pid we spawned; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Bounds a test's wall time. Past the deadline it prints what happened, kills every
/// process group and deletes every namespace the harness registered (of all tests in this
/// process: the process is about to die anyway) and exits with status 101.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let name = test_name();
        thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                let _ = writeln!(
                    std::io::stderr(),
                    "WATCHDOG: {name} still running after {limit:?}; cleaning up and exiting"
                );
                let (pgids, netns) = with_registry(|r| {
                    (
                        r.pgids.iter().copied().collect::<Vec<_>>(),
                        r.netns.iter().cloned().collect::<Vec<_>>(),
                    )
                });
                for p in &pgids {
                    kill_group(*p, libc::SIGKILL);
                }
                thread::sleep(Duration::from_millis(200));
                for n in &netns {
                    let _ = Command::new("ip").args(["netns", "del", n]).status();
                }
                std::process::exit(101);
            }
        });
        Watchdog { done: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running commands with deadlines
// ---------------------------------------------------------------------------------------

/// A finished (or killed) command.
#[derive(Debug)]
pub struct Output {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    /// Exit code; None when killed by a signal or timed out.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn success(&self) -> bool {
        !self.timed_out && self.code() == Some(0)
    }

    /// Panics with the whole story unless the command exited 0 in time.
    pub fn ok(&self) -> &Output {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// The last non-empty stdout line parsed as JSON (the helpers' result line).
    pub fn json(&self) -> Json {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no result line: {self}"));
        Json::parse(line).unwrap_or_else(|e| panic!("bad JSON result line ({e}): {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match (self.timed_out, self.status) {
            (true, _) => "TIMED OUT (killed)".to_string(),
            (false, Some(s)) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => format!("{s:?}"),
            },
            (false, None) => "no status".to_string(),
        };
        write!(
            f,
            "`{}`: {status} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.elapsed,
            tail(&self.stdout, 4000),
            tail(&self.stderr, 4000)
        )
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn reader_thread(mut r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Wait for `child` until `deadline`; None when the deadline passed.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Run `cmd` (stdin closed, own process group) for at most `timeout`. On timeout the whole
/// process group is killed. Afterwards any leftover member of the group is killed too, so
/// nothing the command started outlives it.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let what = describe(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{what}`: {e}"));
    let pgid = child.id() as i32;
    with_registry(|r| r.pgids.insert(pgid));
    let out_rx = reader_thread(child.stdout.take().expect("piped stdout"));
    let err_rx = reader_thread(child.stderr.take().expect("piped stderr"));
    let mut status = wait_until(&mut child, start + timeout);
    let timed_out = status.is_none();
    kill_group(pgid, libc::SIGKILL);
    if timed_out {
        status = wait_until(&mut child, Instant::now() + Duration::from_secs(5));
    }
    with_registry(|r| r.pgids.remove(&pgid));
    let elapsed = start.elapsed();
    let grace = Duration::from_secs(2);
    Output {
        what,
        status: if timed_out { None } else { status },
        stdout: out_rx.recv_timeout(grace).unwrap_or_default(),
        stderr: err_rx.recv_timeout(grace).unwrap_or_default(),
        timed_out,
        elapsed,
    }
}

/// `run` on a command line given as words.
pub fn run_args(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    run(&mut cmd, timeout)
}

/// Run a command that must succeed (panics with its output otherwise); returns stdout.
pub fn must(args: &[&str]) -> String {
    run_args(args, SHORT).ok().stdout.clone()
}

/// Names of the named network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    must(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Background processes
// ---------------------------------------------------------------------------------------

/// A background process (a server) in its own process group; killed on drop.
pub struct Bg {
    pub what: String,
    child: Child,
    pgid: i32,
    lines: Receiver<String>,
    stderr: TempFile,
}

impl Bg {
    pub fn spawn(cmd: &mut Command) -> Bg {
        let what = describe(cmd);
        let stderr = TempFile::new("bg-stderr");
        let errf = fs::File::create(&stderr.path).expect("creating stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errf))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{what}`: {e}"));
        let pgid = child.id() as i32;
        with_registry(|r| r.pgids.insert(pgid));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Bg {
            what,
            child,
            pgid,
            lines,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next stdout line, waiting at most `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Wait for the helper's `{"ready": true, ...}` line and return it.
    pub fn ready(&mut self, timeout: Duration) -> Json {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(j) = Json::parse(&line) {
                        if j.get("ready").as_bool() == Some(true) {
                            return j;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        let status = self.child.try_wait().ok().flatten();
        panic!(
            "`{}` not ready within {timeout:?} (status {status:?}); stderr:\n{}",
            self.what,
            tail(&self.stderr.read(), 4000)
        );
    }

    pub fn stderr(&self) -> String {
        self.stderr.read()
    }

    /// Send `sig` to the process (not its group).
    pub fn signal(&self, sig: i32) {
        kill_pid(self.pgid, sig);
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(&mut self.child, Instant::now() + timeout)
    }

    /// Panics (with its stderr) if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!(
                "`{}` exited early ({s}); stderr:\n{}",
                self.what,
                tail(&self.stderr.read(), 4000)
            );
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        kill_group(self.pgid, libc::SIGTERM);
        if wait_until(&mut self.child, Instant::now() + Duration::from_secs(2)).is_none() {
            kill_group(self.pgid, libc::SIGKILL);
            let _ = wait_until(&mut self.child, Instant::now() + Duration::from_secs(5));
        }
        kill_group(self.pgid, libc::SIGKILL);
        with_registry(|r| r.pgids.remove(&self.pgid));
        if thread::panicking() {
            eprintln!(
                "--- stderr of `{}` ---\n{}",
                self.what,
                tail(&self.stderr.read(), 4000)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------

/// A named network namespace (`/run/netns/<name>`) with `lo` up; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique_name(tag);
        must(&["ip", "netns", "add", &name]);
        with_registry(|r| r.netns.insert(name.clone()));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delete the namespace now (`ip netns del`, which must succeed), as its owner would
    /// while ringnet serves it; `Drop` then has nothing left to do.
    pub fn delete(mut self) {
        let name = std::mem::take(&mut self.name);
        must(&["ip", "netns", "del", &name]);
        with_registry(|r| r.netns.remove(&name));
    }

    /// `/run/netns/<name>`, what `ringnet attach --netns` takes.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip netns exec <name> <args…>` (not yet run).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Run `args` inside the namespace with a deadline.
    pub fn exec(&self, args: &[&str], timeout: Duration) -> Output {
        run(&mut self.cmd(args), timeout)
    }

    /// `sh -c script` inside the namespace, 30 s deadline.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script], SHORT)
    }

    pub fn sh_timeout(&self, script: &str, timeout: Duration) -> Output {
        self.exec(&["sh", "-c", script], timeout)
    }

    /// `ip -n <name> <args…>`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// `sysctl -qw key=value…` inside the namespace (must succeed).
    pub fn sysctl(&self, settings: &[&str]) {
        let mut args = vec!["sysctl", "-qw"];
        args.extend_from_slice(settings);
        self.exec(&args, SHORT).ok();
    }

    /// Interface names (`ip -o link`).
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }

    /// Start a background process in the namespace.
    pub fn spawn(&self, args: &[&str]) -> Bg {
        Bg::spawn(&mut self.cmd(args))
    }

    /// Start a python helper from `tests/helpers/` in the background and wait for its ready
    /// line (which carries e.g. the bound port).
    pub fn spawn_helper(&self, script: &str, args: &[&str]) -> (Bg, Json) {
        let path = helper(script);
        let mut full = vec!["python3", "-B", "-u", path.as_str()];
        full.extend_from_slice(args);
        let mut bg = self.spawn(&full);
        let ready = bg.ready(Duration::from_secs(15));
        (bg, ready)
    }

    /// Run a python helper to completion (deadline `timeout`) and return its output; its
    /// result is `out.json()`.
    pub fn helper(&self, script: &str, args: &[&str], timeout: Duration) -> Output {
        let path = helper(script);
        let mut full = vec!["python3", "-B", "-u", path.as_str()];
        full.extend_from_slice(args);
        self.exec(&full, timeout)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return; // deleted already
        }
        let out = run_args(&["ip", "netns", "del", &self.name], SHORT);
        if !out.success() {
            eprintln!("cleanup: deleting netns {} failed: {out}", self.name);
        }
        with_registry(|r| r.netns.remove(&self.name));
    }
}

/// The isolated "host" namespace ringnet runs in: lo up, an `ifb` sink `sink0` carrying
/// 198.51.100.7/24 and 2001:db8::7/64 (nodad), default routes of both families into the
/// sink, ping sockets enabled for every group.
pub struct HostNs {
    pub ns: Netns,
}

pub const SINK_DEV: &str = "sink0";

impl HostNs {
    pub fn new() -> HostNs {
        let ns = Netns::new("host");
        ns.ip(&["link", "add", SINK_DEV, "type", "ifb"]);
        ns.ip(&["addr", "add", "198.51.100.7/24", "dev", SINK_DEV]);
        ns.ip(&["addr", "add", "2001:db8::7/64", "dev", SINK_DEV, "nodad"]);
        ns.ip(&["link", "set", SINK_DEV, "up"]);
        ns.ip(&["-4", "route", "add", "default", "dev", SINK_DEV]);
        ns.ip(&["-6", "route", "add", "default", "dev", SINK_DEV]);
        ns.sysctl(&["net.ipv4.ping_group_range=0 2147483647"]);
        HostNs { ns }
    }

    /// `ringnet <args…>` run to completion inside the host namespace.
    pub fn ringnet(&self, args: &[&str], timeout: Duration) -> Output {
        let mut full = vec![ringnet_bin()];
        full.extend_from_slice(args);
        self.ns.exec(&full, timeout)
    }
}

impl Default for HostNs {
    fn default() -> Self {
        HostNs::new()
    }
}

impl std::ops::Deref for HostNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

// ---------------------------------------------------------------------------------------
// ringnet attach
// ---------------------------------------------------------------------------------------

/// A running `ringnet attach` inside a host namespace, serving a guest namespace.
/// Drop: SIGTERM, wait up to 5 s, then SIGKILL the process group.
pub struct Ringnet {
    child: Child,
    pgid: i32,
    pub what: String,
    pub slot: Slot,
    guest: String,
    stderr: TempFile,
    stdout: TempFile,
    exited: Option<ExitStatus>,
}

/// How long ringnet may take to bring the guest's eth0 up with its addresses.
pub const ATTACH_READY: Duration = Duration::from_secs(10);

impl Ringnet {
    /// `ip netns exec HOST ringnet attach --netns /run/netns/GUEST --tap eth0 --configure
    /// <args…>`; returns once the guest's eth0 is up with its IPv4 address and a
    /// non-tentative IPv6 address (panics after [`ATTACH_READY`] or if ringnet exits).
    pub fn attach(host: &HostNs, guest: &Netns, args: &[&str]) -> Ringnet {
        let slot = args
            .iter()
            .position(|a| *a == "--slot")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.parse().expect("--slot N"))
            .unwrap_or(0);
        let path = guest.path();
        let mut full = vec![
            ringnet_bin(),
            "attach",
            "--netns",
            &path,
            "--tap",
            "eth0",
            "--configure",
        ];
        full.extend_from_slice(args);
        if std::env::var_os("RINGNET_TEST_VERBOSE").is_some() {
            full.push("-v");
        }
        let mut cmd = host.cmd(&full);
        let what = describe(&cmd);
        let stderr = TempFile::new("ringnet-stderr");
        let stdout = TempFile::new("ringnet-stdout");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout.path).expect("stdout file"))
            .stderr(fs::File::create(&stderr.path).expect("stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{what}`: {e}"));
        let pgid = child.id() as i32;
        with_registry(|r| r.pgids.insert(pgid));
        let mut rn = Ringnet {
            child,
            pgid,
            what,
            slot: Slot::new(slot),
            guest: guest.name().to_string(),
            stderr,
            stdout,
            exited: None,
        };
        rn.wait_configured(guest, ATTACH_READY);
        rn
    }

    fn wait_configured(&mut self, guest: &Netns, timeout: Duration) {
        let v4 = format!("inet {}/30 ", self.slot.guest_v4);
        let v6 = format!("inet6 {}/64 ", self.slot.guest_v6);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                panic!(
                    "ringnet exited ({s}) before the guest was configured: `{}`\n--- stderr ---\n{}",
                    self.what,
                    tail(&self.stderr.read(), 4000)
                );
            }
            let link = run_args(
                &[
                    "ip",
                    "-n",
                    guest.name(),
                    "-o",
                    "link",
                    "show",
                    "dev",
                    "eth0",
                ],
                SHORT,
            );
            let addr = run_args(
                &[
                    "ip",
                    "-n",
                    guest.name(),
                    "-o",
                    "addr",
                    "show",
                    "dev",
                    "eth0",
                ],
                SHORT,
            );
            let last = format!("{}{}", link.stdout, addr.stdout);
            let up = link.success() && link_flags(&link.stdout).iter().any(|f| f == "UP");
            let has_v4 = addr.stdout.contains(&v4);
            let has_v6 = addr
                .stdout
                .lines()
                .any(|l| l.contains(&v6) && !l.contains("tentative"));
            if up && has_v4 && has_v6 {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "guest eth0 not up with {v4}and {v6}within {timeout:?}; last seen:\n{last}\n\
                     --- ringnet stderr ---\n{}",
                    tail(&self.stderr.read(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.read()
    }

    pub fn stdout(&self) -> String {
        self.stdout.read()
    }

    /// Panics (with ringnet's stderr) if ringnet has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            self.exited = Some(s);
            panic!(
                "ringnet exited ({s}) while serving {}\n--- stderr ---\n{}",
                self.guest,
                tail(&self.stderr.read(), 4000)
            );
        }
    }

    /// Wait up to `timeout` for ringnet to exit by itself (no signal sent); its status, or
    /// None while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_until(&mut self.child, Instant::now() + timeout);
        }
        self.exited
    }

    /// Send `sig` and wait up to `timeout` for the exit; None if it did not exit (it is then
    /// killed). Used by [`Drop`] with SIGTERM and 5 s.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        if let Ok(Some(s)) = self.child.try_wait() {
            self.exited = Some(s);
            return Some(s);
        }
        kill_pid(self.pgid, sig);
        let got = wait_until(&mut self.child, Instant::now() + timeout);
        if got.is_none() {
            kill_group(self.pgid, libc::SIGKILL);
            self.exited = wait_until(&mut self.child, Instant::now() + Duration::from_secs(5));
        } else {
            self.exited = got;
        }
        kill_group(self.pgid, libc::SIGKILL);
        got
    }

    /// SIGTERM and wait: ringnet must exit within 5 s; returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        match self.signal_and_wait(libc::SIGTERM, Duration::from_secs(5)) {
            Some(s) => s,
            None => panic!(
                "ringnet did not exit within 5 s of SIGTERM (killed)\n--- stderr ---\n{}",
                tail(&self.stderr.read(), 4000)
            ),
        }
    }
}

fn link_flags(link_line: &str) -> Vec<String> {
    link_line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .map(|f| f.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

impl Drop for Ringnet {
    fn drop(&mut self) {
        let clean = self.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
        with_registry(|r| r.pgids.remove(&self.pgid));
        if thread::panicking() || clean.is_none() {
            eprintln!(
                "--- ringnet ({}) exit {:?}{} ---\n--- stderr ---\n{}",
                self.what,
                self.exited,
                if clean.is_none() {
                    " (needed SIGKILL)"
                } else {
                    ""
                },
                tail(&self.stderr.read(), 8000)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Testbed: host + guest + ringnet in one value
// ---------------------------------------------------------------------------------------

/// How to start ringnet for a test.
#[derive(Clone, Debug)]
pub struct Opts {
    pub mtu: u32,
    /// `--egress` value; None leaves the default.
    pub egress: Option<&'static str>,
    /// TOML written to a temp file and passed as `--config`.
    pub config: Option<String>,
    pub extra: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mtu: 1500,
            egress: None,
            config: None,
            extra: Vec::new(),
        }
    }
}

impl Opts {
    pub fn mtu(mtu: u32) -> Opts {
        Opts {
            mtu,
            ..Opts::default()
        }
    }

    pub fn egress(mut self, driver: &'static str) -> Opts {
        self.egress = Some(driver);
        self
    }

    pub fn config(mut self, toml: &str) -> Opts {
        self.config = Some(toml.to_string());
        self
    }
}

/// Fields drop in declaration order: ringnet stops before the namespaces go.
pub struct Testbed {
    pub ringnet: Ringnet,
    pub guest: Netns,
    pub host: HostNs,
    pub opts: Opts,
    _config: Option<TempFile>,
}

impl Testbed {
    pub fn start(opts: Opts) -> Testbed {
        let host = HostNs::new();
        let guest = Netns::new("guest");
        let config = opts
            .config
            .as_deref()
            .map(|t| TempFile::with_contents("config.toml", t));
        let mtu = opts.mtu.to_string();
        let mut args: Vec<&str> = vec!["--mtu", &mtu];
        if let Some(e) = opts.egress {
            args.extend(["--egress", e]);
        }
        if let Some(c) = &config {
            args.extend(["--config", c.path_str()]);
        }
        args.extend(opts.extra.iter().map(String::as_str));
        let ringnet = Ringnet::attach(&host, &guest, &args);
        Testbed {
            ringnet,
            guest,
            host,
            opts,
            _config: config,
        }
    }

    pub fn slot(&self) -> Slot {
        self.ringnet.slot
    }
}

// ---------------------------------------------------------------------------------------
// Processes by pid
// ---------------------------------------------------------------------------------------

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !stat.is_empty() && state != Some("Z")
}

/// Wait up to `timeout` for `pid` to be gone; true if it is.
pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILLs a pid learnt from a child's output (not one of our process groups) on drop, if
/// it is still alive: a test that asserts "the child is gone" still cleans up when it isn't.
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if pid_alive(self.0) {
            kill_pid(self.0 as i32, libc::SIGKILL);
        }
    }
}
