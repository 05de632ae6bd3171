//! `ringnet run` without root: the command's namespaces are made by a helper process in a
//! user namespace of its own, as `pasta` and `slirp4netns` do it.
//!
//! # Theory of operation
//!
//! ringnet (unprivileged, and possibly running threads already, which rules out unsharing a
//! user namespace itself) starts a helper: itself again
//! (`/proc/self/exe rootless-guest`, a hidden subcommand), with one end of a `SOCK_SEQPACKET`
//! socketpair, the guest link's settings ([`GuestLink`]), the private resolv.conf, the
//! command's environment and the command. The helper, single-threaded:
//!
//! 1. enters a new user namespace and a network namespace owned by it
//!    ([`userns::enter`]: its uid and gid become 0 in there, with every capability over the
//!    new namespaces and none over the host's);
//! 2. opens the TAP `eth0` and configures it exactly as root mode does
//!    ([`NetNs::configure_link`]: lo up, MAC, MTU, queue, addresses and routes);
//! 3. sends `TAP <name>` with the TAP fd and its network namespace fd (`SCM_RIGHTS`), or
//!    `ERR <one line>`;
//! 4. waits for `GO`, then execs the command through [`NetNs::command_with_resolv_conf`]
//!    (a private mount namespace with the resolv.conf naming the gateway, signals
//!    unblocked). The socket is close-on-exec: ringnet reads its end as "the command runs";
//!    a failed exec comes back as `ERR`.
//!
//! ringnet ([`Guest`]) adopts the TAP, starts serving it from the host namespaces (egress
//! sockets and published ports are made there, as in root mode), says `GO` and from then
//! on waits for the helper's pid, which is the command's. Holding the namespace fd keeps
//! the TAP alive until ringnet exits, whatever the command leaves behind. When ringnet
//! fails before `GO`, dropping [`Guest`] kills the helper: the command never runs.
//!
//! What the command sees: uid and gid 0 (like `unshare -r`), its files' owner shown as
//! root and everything else as `nobody`; it may configure its own network (it holds
//! `CAP_NET_ADMIN` over its namespace) but not the host.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use clap::Args;

use ringnet::backend::netns::{GuestLink, NetNs, NetnsError};
use ringnet::backend::tap::{Tap, TapError};
use ringnet::backend::userns::{self, UsernsError};

/// How long the helper may take to make and configure the namespace (it runs `ip` a few
/// times), and then to exec the command.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

/// Errors of rootless `run`.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("starting the namespace helper (/proc/self/exe) failed: {0}")]
    Spawn(std::io::Error),
    /// The helper's own one-line error (it failed to make the namespace or run the command).
    #[error("{0}")]
    Helper(String),
    #[error("the namespace helper exited ({0}) before handing over the TAP")]
    HelperDied(String),
    #[error("the namespace helper sent {0:?} instead of a TAP and a namespace")]
    Protocol(String),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Whether `run` takes the rootless path: `Ok(true)` without `CAP_SYS_ADMIN` and
/// `CAP_NET_ADMIN`, once `/dev/net/tun` is known to be usable by this user.
///
/// # Errors
/// `/dev/net/tun` is missing, or this user may not open it.
pub fn needed() -> Result<bool, RootlessError> {
    if userns::privileged() {
        if !Path::new("/dev/net/tun").exists() {
            return Err(UsernsError::TunMissing.into());
        }
        return Ok(false);
    }
    userns::check_tun()?;
    Ok(true)
}

/// A published port's bind refused for want of privilege: say which ports need root.
pub fn port_hint(msg: String) -> String {
    if msg.starts_with("cannot publish") && msg.contains("ermission denied") {
        format!(
            "{msg} (without root, host ports below net.ipv4.ip_unprivileged_port_start, \
             1024 by default, cannot be bound)"
        )
    } else {
        msg
    }
}

/// The hidden `ringnet rootless-guest` subcommand: the helper's arguments.
#[derive(Args, Debug)]
pub struct GuestArgs {
    /// The helper's end of the socketpair to ringnet.
    #[arg(long)]
    fd: RawFd,
    /// The TAP to create.
    #[arg(long)]
    tap: String,
    /// Guest MAC.
    #[arg(long)]
    mac: String,
    #[arg(long)]
    mtu: u32,
    #[arg(long)]
    txqueuelen: usize,
    /// `ADDR/LEN,GATEWAY`.
    #[arg(long)]
    ipv4: Option<String>,
    /// `ADDR/LEN,GATEWAY`.
    #[arg(long)]
    ipv6: Option<String>,
    /// Bind-mounted over /etc/resolv.conf for the command.
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

impl GuestArgs {
    fn link(&self) -> GuestLink {
        let pair = |s: &Option<String>| {
            s.as_deref().map(|s| {
                let (addr, gw) = s.split_once(',').unwrap_or((s, ""));
                (addr.to_string(), gw.to_string())
            })
        };
        GuestLink {
            mac: self.mac.clone(),
            mtu: self.mtu,
            txqueuelen: self.txqueuelen,
            ipv4: pair(&self.ipv4),
            ipv6: pair(&self.ipv6),
        }
    }
}

/// The helper's namespaces, TAP and link: see the module docs, steps 1–2.
fn setup(args: &GuestArgs) -> Result<(Tap, NetNs), RootlessError> {
    let (uid, _) = userns::ids();
    userns::enter()?;
    let ns = NetNs::open(Path::new("/proc/self/ns/net"))?;
    let tap = Tap::open(&args.tap).map_err(|e| match e {
        TapError::Open(io) if io.raw_os_error() == Some(libc::EACCES) => {
            RootlessError::Userns(UsernsError::TunDenied {
                uid,
                reason: "permission denied".into(),
            })
        }
        e => e.into(),
    })?;
    ns.configure_link(tap.name(), &args.link())?;
    Ok((tap, ns))
}

/// Runs the helper (`ringnet rootless-guest`): see the module docs. Returns only on
/// failure (after telling ringnet, which reports it); on success the process is the
/// command.
pub fn guest(args: &GuestArgs) -> ExitCode {
    // SAFETY: ringnet passed this descriptor open across exec for us alone; it is checked
    // (F_SETFD fails on a bad fd) before any other use.
    let sock = unsafe { OwnedFd::from_raw_fd(args.fd) };
    if let Err(e) = userns::set_cloexec(sock.as_raw_fd(), true) {
        let _ = sock.into_raw_fd(); // not ours after all: do not close it
        eprintln!("ringnet: rootless-guest --fd {}: {e}", args.fd);
        return ExitCode::from(2);
    }
    let tell = |msg: String| {
        let _ = userns::send(&sock, format!("ERR {msg}").as_bytes(), &[]);
        ExitCode::from(2)
    };
    let ns = match setup(args) {
        Ok((tap, ns)) => {
            let hello = format!("TAP {}", tap.name());
            if userns::send(&sock, hello.as_bytes(), &[tap.fd(), ns.fd()]).is_err() {
                return ExitCode::from(2); // ringnet is gone
            }
            ns
        }
        Err(e) => return tell(e.to_string()),
    };
    match userns::recv(&sock, None) {
        Ok((m, _)) if m == b"GO" => {}
        // ringnet gave up (and says why) or went away: the command must not run.
        _ => return ExitCode::from(2),
    }
    let program = &args.command[0];
    let cmd = match &args.resolv_conf {
        Some(path) => ns.command_with_resolv_conf(program, path),
        None => Ok(ns.command(program)),
    };
    let mut cmd = match cmd {
        Ok(c) => c,
        Err(e) => return tell(e.to_string()),
    };
    let e = cmd.args(&args.command[1..]).exec();
    tell(format!("cannot run {program:?}: {e}"))
}

/// ringnet's side of the helper: see the module docs.
pub struct Guest {
    /// The helper; taken by [`Guest::go`] (then it is the command).
    child: Option<Child>,
    sock: OwnedFd,
}

impl Guest {
    /// Start the helper for `command` with `env` added to its environment, the TAP `tap`
    /// configured as `link`, `resolv_conf` mounted over /etc/resolv.conf, and
    /// `RLIMIT_NOFILE` set back to `nofile` (the limit ringnet was started with).
    ///
    /// # Errors
    /// The socketpair or the process cannot be made.
    pub fn spawn(
        link: &GuestLink,
        tap: &str,
        resolv_conf: Option<&Path>,
        command: &[String],
        env: &[(OsString, OsString)],
        nofile: Option<libc::rlimit>,
    ) -> Result<Guest, RootlessError> {
        let (mine, theirs) = userns::socketpair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("ringnet")
            .arg("rootless-guest")
            .args(["--fd", &fd.to_string(), "--tap", tap, "--mac", &link.mac])
            .args(["--mtu", &link.mtu.to_string()])
            .args(["--txqueuelen", &link.txqueuelen.to_string()]);
        for (flag, family) in [("--ipv4", &link.ipv4), ("--ipv6", &link.ipv6)] {
            if let Some((addr, gw)) = family {
                cmd.args([flag, &format!("{addr},{gw}")]);
            }
        }
        if let Some(path) = resolv_conf {
            cmd.arg("--resolv-conf").arg(path);
        }
        cmd.arg("--").args(command).envs(env.iter().cloned());
        // SAFETY: runs in the forked child before exec and makes only async-signal-safe
        // syscalls (fcntl, setrlimit) on plain values copied into the closure.
        unsafe {
            cmd.pre_exec(move || {
                userns::set_cloexec(fd, false)?;
                if let Some(lim) = nofile {
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(RootlessError::Spawn)?;
        drop(theirs);
        Ok(Guest {
            child: Some(child),
            sock: mine,
        })
    }

    /// Wait for the helper's TAP and namespace.
    ///
    /// # Errors
    /// The helper failed (its message), died, timed out or said something else.
    pub fn receive(&mut self) -> Result<(Tap, NetNs), RootlessError> {
        let (msg, fds) = userns::recv(&self.sock, Some(SETUP_LIMIT))?;
        let text = String::from_utf8_lossy(&msg).into_owned();
        if let Some(err) = text.strip_prefix("ERR ") {
            return Err(RootlessError::Helper(err.to_string()));
        }
        if msg.is_empty() {
            let status = match self.child.as_mut().map(Child::wait) {
                Some(Ok(st)) => st.to_string(),
                Some(Err(e)) => format!("status unknown: {e}"),
                None => "already reaped".into(),
            };
            return Err(RootlessError::HelperDied(status));
        }
        let name = text.strip_prefix("TAP ");
        let (Some(name), Ok([tap_fd, ns_fd])) = (name, <[OwnedFd; 2]>::try_from(fds)) else {
            return Err(RootlessError::Protocol(text));
        };
        let tap = Tap::adopt(tap_fd, name)?;
        // SAFETY: the helper sent its `/proc/self/ns/net` fd second; we own it from here.
        let ns = unsafe { NetNs::from_raw_fd(ns_fd.into_raw_fd()) };
        Ok((tap, ns))
    }

    /// Let the helper exec the command, and wait until it has (or has failed to).
    ///
    /// # Errors
    /// The command could not be started (the helper's message), or the helper did not
    /// answer in time.
    pub fn go(mut self) -> Result<Child, RootlessError> {
        userns::send(&self.sock, b"GO", &[])?;
        let (msg, _) = userns::recv(&self.sock, Some(SETUP_LIMIT))?;
        if !msg.is_empty() {
            let text = String::from_utf8_lossy(&msg);
            let err = text.strip_prefix("ERR ").unwrap_or(&text);
            return Err(RootlessError::Helper(err.to_string()));
        }
        // Present until `go` consumes self (only `Drop` and `go` take it).
        Ok(self.child.take().expect("the helper is taken only by go"))
    }
}

impl Drop for Guest {
    /// ringnet failed before `GO`: the helper (not yet the command) is killed and reaped.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
