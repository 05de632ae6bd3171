//! The ringnet binary under test: the slot plan ([`Slot`]), a running `ringnet attach` or
//! any other long-running subcommand ([`Ringnet`]), `ringnet run` with a python guest script, and ringnet's `--stats` counters.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::cleanup::{kill_group, kill_pid, with_registry};
use super::ns::{link_flags, HostNs, Netns};
use super::process::{describe, tail, wait_until, Output, TempFile};

/// The ringnet binary cargo built for this test run, or `$RINGNET_BIN` when set (to test
/// an installed binary, or a stand-in while debugging the suite itself).
pub fn ringnet_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RINGNET_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringnet").to_string())
    })
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
        let mut rn = Ringnet::spawn(host, &full, guest.name(), None);
        rn.slot = Slot::new(slot);
        rn.wait_configured(guest, ATTACH_READY);
        rn
    }

    /// `ip netns exec HOST <full…>` (`full[0]` the ringnet binary) started in the
    /// background, serving `what_for` (for messages); nothing is waited for. `pass_fd`: a
    /// descriptor the child gets as its fd 3 (e.g. a socketpair end).
    pub fn spawn(
        host: &HostNs,
        full: &[&str],
        what_for: &str,
        pass_fd: Option<std::os::fd::RawFd>,
    ) -> Ringnet {
        let mut full = full.to_vec();
        if std::env::var_os("RINGNET_TEST_VERBOSE").is_some() {
            full.push("-v");
        }
        let mut cmd = host.cmd(&full);
        let what = describe(&cmd);
        let stderr = TempFile::new("ringnet-stderr");
        let stdout = TempFile::new("ringnet-stdout");
        if let Some(fd) = pass_fd {
            // SAFETY: runs in the forked child before exec and only calls dup(2) and
            // dup2(2), which are async-signal-safe; the copy at 3 has no FD_CLOEXEC.
            unsafe {
                cmd.pre_exec(move || {
                    let copy = libc::dup(fd);
                    if copy < 0 || libc::dup2(copy, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout.path).expect("stdout file"))
            .stderr(fs::File::create(&stderr.path).expect("stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{what}`: {e}"));
        let pgid = child.id() as i32;
        with_registry(|r| r.pgids.insert(pgid));
        Ringnet {
            child,
            pgid,
            what,
            slot: Slot::new(0),
            guest: what_for.to_string(),
            stderr,
            stdout,
            exited: None,
        }
    }

    /// Wait up to `timeout` for `needle` in ringnet's stderr (panics if ringnet exits or
    /// the time passes).
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let when = format!("before saying {needle:?}: `{}`", self.what);
        while !self.stderr.read().contains(needle) {
            self.panic_if_exited(&when);
            if Instant::now() >= deadline {
                panic!(
                    "ringnet did not say {needle:?} within {timeout:?}\n--- stderr ---\n{}",
                    tail(&self.stderr.read(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_configured(&mut self, guest: &Netns, timeout: Duration) {
        let v4 = format!("inet {}/30 ", self.slot.guest_v4);
        let v6 = format!("inet6 {}/64 ", self.slot.guest_v6);
        let exited = format!("before the guest was configured: `{}`", self.what);
        let deadline = Instant::now() + timeout;
        loop {
            self.panic_if_exited(&exited);
            let link = guest.ip_show("link", "eth0");
            let addr = guest.ip_show("addr", "eth0");
            let last = format!("{}{}", link.stdout, addr.stdout);
            let up = link.success() && link_flags(&link.stdout).contains(&"UP");
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
        let what = format!("while serving {}", self.guest);
        self.panic_if_exited(&what);
    }

    /// Panics with "ringnet exited (STATUS) WHEN" and ringnet's stderr if it has exited.
    fn panic_if_exited(&mut self, when: &str) {
        if let Ok(Some(s)) = self.child.try_wait() {
            self.exited = Some(s);
            panic!(
                "ringnet exited ({s}) {when}\n--- stderr ---\n{}",
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
// ringnet run with a python guest script; --stats
// ---------------------------------------------------------------------------------------

impl HostNs {
    /// `ringnet run --stats --egress DRIVER [--config FILE] -- python3 -c CODE ARGS…` run to
    /// completion (deadline `timeout`) inside the host namespace; `config` is TOML written to
    /// a temp file. The `--stats` counters are in the output's stderr ([`stats_counter`]).
    pub fn run_python(
        &self,
        driver: &str,
        config: Option<&str>,
        code: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Output {
        let cfg = config.map(|toml| TempFile::with_contents("config.toml", toml));
        let mut full = vec!["run", "--stats", "--egress", driver];
        if let Some(cfg) = &cfg {
            full.extend(["--config", cfg.path_str()]);
        }
        full.extend(["--", "python3", "-c", code]);
        full.extend_from_slice(args);
        self.ringnet(&full, timeout)
    }
}

/// The value of counter `name` in ringnet's `--stats` output (None when it is not printed:
/// only non-zero counters are).
pub fn stats_counter(stats: &str, name: &str) -> Option<u64> {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
