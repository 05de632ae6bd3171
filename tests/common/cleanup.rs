//! What is alive, for the [`Watchdog`]: every process group and namespace the harness made
//! is registered while it lives, so a hung test can be cleaned up by exact id and name.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use super::process::test_name;

#[derive(Default)]
pub(super) struct Registry {
    pub(super) pgids: HashSet<i32>,
    pub(super) netns: HashSet<String>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

pub(super) fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = registry().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

pub(super) fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group we created (the
        // child was spawned with process_group(0), so its pgid is its pid); no memory is
        // involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

pub(super) fn kill_pid(pid: i32, sig: i32) {
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
