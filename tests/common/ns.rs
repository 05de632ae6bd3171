//! Network namespaces: named ones for namespace/TAP tests ([`Netns`], [`HostNs`]), each
//! deleted on drop, and [`in_private_netns`] for tests that run ringnet in-process.

use std::io;
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::attach::ringnet_bin;
use super::bg::Bg;
use super::cleanup::with_registry;
use super::process::{helper, must, run, run_args, unique_name, Output, SHORT};
use super::Json;

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

    /// `ip -o DEV-show` of `what` ("link" or "addr") for device `dev` in this namespace.
    pub fn ip_show(&self, what: &str, dev: &str) -> Output {
        run_args(
            &["ip", "-n", &self.name, "-o", what, "show", "dev", dev],
            SHORT,
        )
    }

    /// `dev` exists here and is administratively up.
    pub fn link_is_up(&self, dev: &str) -> bool {
        let link = self.ip_show("link", dev);
        link.success() && link_flags(&link.stdout).contains(&"UP")
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

    /// Add `addr` to the sink as a host address (/32, /128 without DAD): traffic to it is
    /// local to this namespace, so servers can listen on it (e.g. 198.51.100.8, 2001:db8::8,
    /// or 169.254.169.254 standing in for a metadata service).
    pub fn add_sink_addr(&self, addr: &str) {
        if addr.contains(':') {
            let a = format!("{addr}/128");
            self.ns.ip(&["addr", "add", &a, "dev", SINK_DEV, "nodad"]);
        } else {
            let a = format!("{addr}/32");
            self.ns.ip(&["addr", "add", &a, "dev", SINK_DEV]);
        }
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

/// Names of the named network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    must(&["ip", "netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Run `f` on a new thread inside a fresh, unnamed network namespace (`unshare(2)` with
/// `CLONE_NEWNET`; the threads `f` spawns inherit it). Only `lo` exists there, down unless
/// `lo_up`. `Err` when the namespace cannot be made (no root); a panic in `f` is passed on.
pub fn in_private_netns<R: Send + 'static>(
    lo_up: bool,
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    let h = thread::spawn(move || -> io::Result<R> {
        // SAFETY: unshare(2) takes no pointers; it moves only this thread to a new netns.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if lo_up {
            set_lo_up()?;
        }
        Ok(f())
    });
    match h.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Bring `lo` of the calling thread's namespace up (SIOCSIFFLAGS; no `ip` needed).
fn set_lo_up() -> io::Result<()> {
    // SAFETY: socket(2) with no pointers; checked below, closed at the end.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: `ifr` is a live ifreq naming "lo"; the ioctls read/write only it.
    let r = unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            -1
        } else {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr)
        }
    };
    let e = io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(s) };
    if r < 0 {
        Err(e)
    } else {
        Ok(())
    }
}

/// The flags of an `ip -o link show` line (`<BROADCAST,MULTICAST,UP,LOWER_UP>`).
pub fn link_flags(link_line: &str) -> Vec<&str> {
    link_line
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .map(|f| f.split(',').collect())
        .unwrap_or_default()
}
