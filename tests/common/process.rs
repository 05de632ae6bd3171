//! Running commands: unique names and paths, temp files, [`run`] with a deadline (the whole
//! process group is killed when it passes) and its [`Output`], processes by pid.

use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::cleanup::{kill_group, kill_pid, with_registry};
use super::Json;

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
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON result line ({e}): {self}"))
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

pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

pub(super) fn describe(cmd: &Command) -> String {
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
pub(super) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
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
