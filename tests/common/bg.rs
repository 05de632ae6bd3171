//! Background processes (servers, `ringnet run` under a signal test): each in its own
//! process group, killed on drop; stdout read line by line, stderr kept in a temp file.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use super::cleanup::{kill_group, kill_pid, with_registry};
use super::process::{describe, tail, wait_until, TempFile};
use super::Json;

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
                    if let Ok(j) = serde_json::from_str::<Json>(&line) {
                        if j["ready"] == true {
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
