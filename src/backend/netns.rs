//! Network namespaces: create or open one, open a TAP inside it, configure its guest side.
//!
//! # Theory of operation
//!
//! Namespaces are held by file descriptor. A new namespace is made by a short-lived thread
//! that calls `unshare(CLONE_NEWNET)` and opens `/proc/thread-self/ns/net`; the namespace
//! is anonymous and lives exactly as long as that fd and the processes inside it, so
//! nothing named is ever left behind. Work inside a namespace (opening the TAP, running
//! `ip`, starting the guest command) happens on a thread or in a child that first calls
//! `setns(2)`; the ringnet process itself stays in its own namespace, where its egress
//! sockets live.
//!
//! Without root, the namespace is made by a helper process in a user namespace of its own
//! (`userns`), which configures it with the same [`NetNs::configure_link`] and hands ringnet
//! the TAP and the namespace fd.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::SlotConfig;

/// Errors handling network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("creating a network namespace (unshare CLONE_NEWNET) failed: {0} (ringnet needs root or CAP_SYS_ADMIN)")]
    Unshare(io::Error),
    #[error("entering the network namespace (setns) failed: {0}")]
    Setns(io::Error),
    #[error("running `ip {args}` failed: {detail}")]
    Ip { args: String, detail: String },
    #[error("a helper thread failed: {0}")]
    Thread(String),
    #[error("fstat of the network namespace fd failed: {0}")]
    Fstat(io::Error),
}

/// The guest's TAP transmit queue: frames the guest may send ahead of ringnet's reads.
/// The kernel default (1,000) is below the burst of a guest that writes to many flows at
/// once (one segment each): the TAP drops the rest and the guest waits for retransmission
/// timeouts (10,000 flows echoing at once: 31,825 drops, replies up to 7 s late). One slot
/// per allowed flow plus headroom, at most 65,536 (a slot is a pointer; the queued frames
/// are bounded by the guest's socket buffers).
pub fn tap_tx_queue(max_connections: usize) -> usize {
    max_connections.saturating_add(1024).clamp(1000, 65_536)
}

/// A network namespace held open by fd.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    label: String,
}

fn setns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a namespace fd we hold; no memory is passed.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl NetNs {
    /// Open an existing namespace by path (e.g. `/run/netns/NAME`, `/proc/PID/ns/net`).
    pub fn open(path: &Path) -> Result<NetNs, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(NetNs {
            fd: file.into(),
            label: path.display().to_string(),
        })
    }

    /// Create a new, anonymous namespace.
    pub fn create() -> Result<NetNs, NetnsError> {
        let handle = std::thread::Builder::new()
            .name("ringnet-unshare".into())
            .spawn(|| -> Result<OwnedFd, NetnsError> {
                // SAFETY: unshare(2) affects only this short-lived thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                    return Err(NetnsError::Unshare(io::Error::last_os_error()));
                }
                let file =
                    File::open("/proc/thread-self/ns/net").map_err(|source| NetnsError::Open {
                        path: "/proc/thread-self/ns/net".into(),
                        source,
                    })?;
                Ok(file.into())
            })
            .map_err(|e| NetnsError::Thread(e.to_string()))?;
        let fd = handle
            .join()
            .map_err(|_| NetnsError::Thread("unshare thread panicked".into()))??;
        Ok(NetNs {
            fd,
            label: "new namespace".into(),
        })
    }

    /// The namespace fd.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The namespace's identity: device and inode of its nsfs file (what `ip netns
    /// identify` compares).
    pub fn identity(&self) -> Result<(u64, u64), NetnsError> {
        // SAFETY: a zeroed `stat` is a valid out-buffer; fstat(2) fills it for the fd we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `st` is live for the call.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } < 0 {
            return Err(NetnsError::Fstat(io::Error::last_os_error()));
        }
        Ok((st.st_dev, st.st_ino))
    }

    /// Whether `path` names the namespace whose [`NetNs::identity`] is `id`: `Err` says why
    /// not, to follow the path in a sentence ("was deleted", "names another namespace now").
    pub fn check_path(path: &Path, id: (u64, u64)) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == id => Ok(()),
            Ok(_) => Err("names another namespace now".into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err("was deleted".into()),
            // A /proc/PID/ns/net path of a process with more capabilities than ringnet
            // keeps after start: unknowable, not gone (a dead process's path is NotFound).
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(format!("cannot be looked at: {e}")),
        }
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs {
            fd: self.fd.try_clone()?,
            label: self.label.clone(),
        })
    }

    /// Run `f` on a thread inside this namespace and return its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let fd = self.fd.try_clone().map_err(NetnsError::Setns)?;
        let handle = std::thread::Builder::new()
            .name("ringnet-netns".into())
            .spawn(move || -> Result<T, NetnsError> {
                setns(fd.as_raw_fd()).map_err(NetnsError::Setns)?;
                Ok(f())
            })
            .map_err(|e| NetnsError::Thread(e.to_string()))?;
        handle
            .join()
            .map_err(|_| NetnsError::Thread("netns thread panicked".into()))?
    }

    /// A `Command` whose child enters this namespace before `exec`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe syscalls (setns, sigprocmask); `fd` stays open across fork
        // (no CLOEXEC effect until exec).
        unsafe {
            cmd.pre_exec(move || {
                setns(fd)?;
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        cmd
    }

    /// As [`NetNs::command`], and the child also gets a private mount namespace in which
    /// the file `resolv_conf` is bind-mounted over `/etc/resolv.conf` (the host's file is
    /// untouched; the mount goes away with the child's mount namespace). `resolv_conf`
    /// must exist until the child has started (`spawn` returned).
    pub fn command_with_resolv_conf(
        &self,
        program: impl AsRef<OsStr>,
        resolv_conf: &std::path::Path,
    ) -> Result<Command, NetnsError> {
        use std::os::unix::ffi::OsStrExt;
        let cstr = |p: &[u8]| {
            std::ffi::CString::new(p).map_err(|_| NetnsError::Thread("path with a NUL byte".into()))
        };
        let src = cstr(resolv_conf.as_os_str().as_bytes())?;
        let dst = cstr(b"/etc/resolv.conf")?;
        let root = cstr(b"/")?;
        let mut cmd = self.command(program);
        // SAFETY: runs in the forked child before exec (after `command`'s own pre_exec),
        // making only async-signal-safe syscalls (unshare, mount) on C strings allocated
        // before the fork and moved into the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Keep our mounts from propagating back to the host's mount namespace.
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                let none = std::ptr::null();
                if libc::mount(none, root.as_ptr(), none, flags, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Run `ip ARGS` inside the namespace; an error carries ip's stderr.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let out = self
            .command("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NetnsError::Ip {
                args: args.join(" "),
                detail: format!("cannot run ip (is iproute2 installed?): {e}"),
            })?;
        if !out.status.success() {
            return Err(NetnsError::Ip {
                args: args.join(" "),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// `net.ipv6.conf.TAP.accept_ra = 0` inside the namespace (the guest is configured
    /// statically by [`NetNs::configure_guest`]).
    fn ignore_router_adverts(&self, tap: &str) -> Result<(), NetnsError> {
        let path = format!("/proc/sys/net/ipv6/conf/{tap}/accept_ra");
        let written = self.run(move || std::fs::write(&path, "0"))?;
        written.map_err(|e| NetnsError::Ip {
            args: format!("sysctl net.ipv6.conf.{tap}.accept_ra=0"),
            detail: e.to_string(),
        })
    }

    /// Configure the guest side of `tap` in this namespace from `cfg`: lo up, the guest MAC,
    /// MTU and transmit queue ([`tap_tx_queue`]), addresses and default routes for the
    /// active families (none for an offline slot: the link only).
    pub fn configure_guest(&self, tap: &str, cfg: &SlotConfig) -> Result<(), NetnsError> {
        self.configure_link(tap, &GuestLink::of(cfg))
    }

    /// Configure the guest side of `tap` in this namespace as `link` says (what
    /// [`NetNs::configure_guest`] does for a slot).
    pub fn configure_link(&self, tap: &str, link: &GuestLink) -> Result<(), NetnsError> {
        let mtu = link.mtu.to_string();
        let qlen = link.txqueuelen.to_string();
        self.ip(&["link", "set", "lo", "up"])?;
        self.ip(&[
            "link",
            "set",
            tap,
            "address",
            &link.mac,
            "mtu",
            &mtu,
            "txqueuelen",
            &qlen,
            "up",
        ])?;
        if let Some((addr, gateway)) = &link.ipv4 {
            self.ip(&["-4", "addr", "replace", addr, "dev", tap])?;
            self.ip(&[
                "-4", "route", "replace", "default", "via", gateway, "dev", tap,
            ])?;
        }
        if let Some((addr, gateway)) = &link.ipv6 {
            // Configured statically here: the gateway's router advertisements (autoconf)
            // must not add a SLAAC address and a second default route next to these.
            self.ignore_router_adverts(tap)?;
            self.ip(&["-6", "addr", "replace", addr, "dev", tap, "nodad"])?;
            self.ip(&[
                "-6", "route", "replace", "default", "via", gateway, "dev", tap,
            ])?;
        }
        Ok(())
    }
}

/// The guest side of a TAP as [`NetNs::configure_link`] sets it up, in `ip`'s words: what a
/// slot's configuration amounts to, and what `ringnet run` without root hands its namespace
/// helper on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLink {
    /// The guest MAC (`02:6d:73:…`).
    pub mac: String,
    pub mtu: u32,
    /// The TAP's transmit queue length ([`tap_tx_queue`]).
    pub txqueuelen: usize,
    /// `ADDR/LEN` and the default gateway, for an active IPv4.
    pub ipv4: Option<(String, String)>,
    /// `ADDR/LEN` and the default gateway, for an active IPv6.
    pub ipv6: Option<(String, String)>,
}

impl GuestLink {
    /// The link of slot configuration `cfg`.
    pub fn of(cfg: &SlotConfig) -> GuestLink {
        GuestLink {
            mac: cfg.guest_mac.to_string(),
            mtu: cfg.mtu,
            txqueuelen: tap_tx_queue(cfg.max_connections),
            ipv4: cfg.ipv4.as_ref().map(|v4| {
                (
                    format!("{}/{}", v4.guest, v4.prefix_len),
                    v4.gateway.to_string(),
                )
            }),
            ipv6: cfg.ipv6.as_ref().map(|v6| {
                (
                    format!("{}/{}", v6.guest, v6.prefix_len),
                    v6.gateway.to_string(),
                )
            }),
        }
    }
}

impl FromRawFd for NetNs {
    /// # Safety
    /// `fd` must be an open network-namespace fd owned by the caller.
    unsafe fn from_raw_fd(fd: RawFd) -> NetNs {
        NetNs {
            // SAFETY: forwarded from the caller's contract.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            label: format!("fd {fd}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tap_tx_queue;

    #[test]
    fn tap_queue_follows_the_flow_limit_within_bounds() {
        assert_eq!(tap_tx_queue(1), 1025);
        assert_eq!(tap_tx_queue(1024), 2048);
        assert_eq!(tap_tx_queue(20_000), 21_024);
        assert_eq!(tap_tx_queue(usize::MAX), 65_536);
    }
}
