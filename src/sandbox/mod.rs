//! The sandbox: a seccomp allow-list per thread, and capabilities dropped.
//!
//! # Theory of operation
//!
//! Each of ringnet's long-lived threads, once its setup is done, calls [`enter`] with its
//! [`Role`]. That drops the thread's capabilities (but for what the role keeps, see
//! below), sets `no_new_privs`, and installs the role's seccomp filter on the calling
//! thread only (no `TSYNC`: the embedding VMM's threads, and `run`'s command, are never
//! touched). Threads the thread spawns afterwards inherit both. A syscall outside the list
//! kills the whole process (`SECCOMP_RET_KILL_PROCESS`, as passt does): a data-plane
//! thread making an unexpected syscall is compromised or broken, and an `EPERM` it would
//! have to handle is a path never tested. The kernel logs the kill (`type=1326` audit
//! line naming the syscall); `RINGNET_SECCOMP_LOG=1` in the environment turns every kill
//! into `SECCOMP_RET_LOG` (allowed and logged), to find what a change of code needs.
//!
//! | thread | role | where it enters |
//! |---|---|---|
//! | `ringnet-poll-N` | [`Role::Poll`] | [`crate::Network`]'s poll thread, before its loop: the egress driver (its io_uring ring or epoll instance), the TAP or stream, published ports' listeners, the TLS workers and their wakers already exist |
//! | `ringnet-tls-N` | [`Role::TlsWorker`] | each TLS worker ([`crate::egress::intercept`]), before its loop |
//! | `ringnet-pcap` | [`Role::Pcap`] | the capture writer ([`crate::pcap`]), the file open |
//! | `ringnet-control`, `ringnet-events`, `ringnet-metrics`, `ringnet-interval` | [`Role::Service`] | the CLI's service threads, their socket bound |
//! | `ringnet-terminate` | none | runs the embedder's termination hook, which may do anything (kill a VM, exec); it is started unfiltered before the poll thread (see [`crate::observe::term`]) |
//! | main thread | none | it spawns `run`'s command, runs `ip` for `attach --configure` (the CLI drops its capabilities instead: README "Sandboxing") |
//!
//! What each allow-list holds, by the module that needs it (`filters.rs` has the lists):
//!
//! - every role: memory for malloc and thread stacks (`mmap`/`mprotect` never with
//!   `PROT_EXEC`, `munmap`, `mremap`, `brk`, `madvise`: [`crate::mem`] discards pool pages
//!   and trims the heap), `futex`, `sched_yield`, clocks and sleeps, `getrandom` (rustls,
//!   hash seeds), `rt_sigprocmask`/`rt_sigreturn`/`sigaltstack` (Rust's thread exit),
//!   `gettid`/`getpid`, `exit`/`exit_group`, and `read`/`write`/`readv`/`writev`/`close`
//!   of descriptors it holds (sockets, eventfds, the TAP, the capture file, stderr);
//! - [`Role::Poll`]: sockets (`socket` only `AF_INET`/`AF_INET6`/`AF_UNIX`, `socketpair`
//!   only `AF_UNIX` for TLS pairs; `connect`, `bind`/`listen`/`accept4` for published
//!   ports, `set`/`getsockopt`, `getsockname`/`getpeername`, `send*`/`recv*`, `shutdown`:
//!   [`crate::egress`], [`crate::backend`]), `epoll_*` (the epoll driver, mio),
//!   `io_uring_enter` (the io_uring driver; never `io_uring_setup` nor
//!   `io_uring_register`), `fcntl` (flag reads and sets only), `ioctl` only `FIONBIO`,
//!   `FIONREAD`, `TUNSETOFFLOAD`, `TUNSETVNETHDRSZ`, `sched_setaffinity` (`egress.cpu`);
//!   no file system calls (`qemu --socket` removes its socket file on the main thread,
//!   [`crate::backend::stream::StreamPort::take_socket_file`]);
//! - [`Role::TlsWorker`]: sockets as above without `accept`, `epoll_*`, `fcntl`,
//!   `ioctl(FIONBIO)`;
//! - [`Role::Pcap`]: the base and `fsync`;
//! - [`Role::Service`]: sockets (accepting), `poll`, `fcntl`, `ioctl(FIONBIO)`,
//!   `prctl(PR_SET_NAME)` (its threads' names) and threads: `clone` only with `CLONE_THREAD` and no `CLONE_NEW*` flag,
//!   `clone3` answered `ENOSYS` by a first filter (its flags cannot be read by a filter;
//!   glibc falls back to `clone`).
//!
//! `open`/`openat` fail with `ENOSYS` (a first filter, installed before the allow-list):
//! no thread opens a file after start, but glibc's malloc reads
//! `/proc/sys/vm/overcommit_memory` once per process on the first shrink of a thread's
//! arena, whichever thread that is, and does without it when the open fails.
//!
//! Absent everywhere (fatal), among others: `execve`, `fork`/`vfork`, `unshare`, `setns`,
//! `mount`, `ptrace`, `io_uring_setup`, `io_uring_register`, `bpf`, `perf_event_open`,
//! `kill`.
//!
//! ## io_uring
//!
//! Operations submitted through an io_uring ring are not syscalls: seccomp never sees an
//! `IORING_OP_CONNECT` or `IORING_OP_OPENAT`. The io_uring driver therefore creates its
//! ring disabled (`IORING_SETUP_R_DISABLED`), registers restrictions allowing only the
//! opcodes it submits (`POLL_ADD`, `POLL_REMOVE`, `SEND`, `CONNECT`, `LINK_TIMEOUT`,
//! `ASYNC_CANCEL`), the `IOSQE_IO_LINK` flag and no register operation, then enables it
//! (`crate::egress` `uring/`). The kernel refuses any other opcode with `-EACCES` in its
//! CQE. What stays possible through the ring is what the filter allows as syscalls anyway
//! (connect and send on sockets ringnet holds, polls, cancels): opening files, accepting,
//! or registering buffers and files cannot be reached. On a kernel without restrictions
//! (before 5.10) the ring is created unrestricted and the driver's note says so.
//!
//! ## Capabilities
//!
//! [`enter`] clears the bounding, ambient and inheritable sets and keeps in the effective
//! and permitted sets only what the role needs: [`Role::Poll`] keeps
//! `CAP_NET_BIND_SERVICE` (a published port below 1024 added at run time with `ringnet
//! ctl publish` is bound by the poll thread), every other role nothing.
//!
//! ## Syscalls
//!
//! This module's own: `prctl`, `capget`/`capset`, `seccomp`, reading
//! `/proc/sys/kernel/cap_last_cap` (in [`enter`], before the filter is installed).

pub mod caps;
mod filters;

use serde::{Deserialize, Serialize};

/// What went wrong entering the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The filter could not be built (a bug in the lists).
    #[error("building the seccomp filter: {0}")]
    Build(seccompiler::BackendError),
    /// seccompiler has no filters for this architecture.
    #[error("no seccomp filter for architecture {0}")]
    Arch(&'static str),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Install(seccompiler::Error),
    /// Capabilities could not be dropped.
    #[error("dropping capabilities: {0}")]
    Caps(std::io::Error),
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
}

/// `[sandbox]`: seccomp filters and capabilities of ringnet's threads. Unset means the
/// library's default, off: an embedding VMM usually has a filter of its own for its threads
/// (a seccomp filter stacks: both apply). The `ringnet` binary turns both on unless told
/// otherwise (`--no-seccomp`, `seccomp = false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Install the per-thread seccomp allow-lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<bool>,
    /// Drop the capabilities of ringnet's threads (and, in the binary, of its main thread
    /// after start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_capabilities: Option<bool>,
}

impl SandboxConfig {
    pub fn is_default(&self) -> bool {
        *self == SandboxConfig::default()
    }

    /// Seccomp filters on (unset: off).
    pub fn seccomp(&self) -> bool {
        self.seccomp.unwrap_or(false)
    }

    /// Capabilities dropped (unset: off).
    pub fn drop_capabilities(&self) -> bool {
        self.drop_capabilities.unwrap_or(false)
    }
}

/// Which allow-list a thread gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The poll thread: guest frames, the gateway, host sockets.
    Poll,
    /// A TLS interception worker.
    TlsWorker,
    /// The pcap writer.
    Pcap,
    /// The CLI's control socket, metrics endpoint and rate line.
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Poll, Role::TlsWorker, Role::Pcap, Role::Service];

    /// Its name (the test knob's value, logs).
    pub fn name(self) -> &'static str {
        match self {
            Role::Poll => "poll",
            Role::TlsWorker => "tls",
            Role::Pcap => "pcap",
            Role::Service => "service",
        }
    }

    /// Capabilities it keeps.
    fn keeps(self) -> &'static [u32] {
        match self {
            Role::Poll => &[caps::CAP_NET_BIND_SERVICE],
            Role::TlsWorker | Role::Pcap | Role::Service => &[],
        }
    }

    /// Syscalls its allow-list names.
    pub fn allowed_syscalls(self) -> usize {
        filters::count(self)
    }
}

/// The environment variable that makes violations logged instead of fatal.
pub const LOG_ENV: &str = "RINGNET_SECCOMP_LOG";

/// Test knob: with this variable naming a role ([`Role::name`]), a thread of that role
/// makes a forbidden syscall (`setns(-1, 0)`, harmless if it were allowed) right after
/// entering the sandbox, which must kill the process with `SIGSYS` (tests/sandbox.rs).
pub const TEST_FORBIDDEN_ENV: &str = "RINGNET_TEST_FORBIDDEN_SYSCALL";

/// Enter the sandbox as `cfg` says for a thread of `role`: drop capabilities, then install
/// the seccomp filter. Call it on the thread itself, once its setup syscalls are done.
pub fn enter(role: Role, cfg: &SandboxConfig) -> Result<(), SandboxError> {
    if cfg.drop_capabilities() {
        caps::drop_all_but(role.keeps()).map_err(SandboxError::Caps)?;
        caps::no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    }
    if !cfg.seccomp() {
        return Ok(());
    }
    let log = std::env::var_os(LOG_ENV).is_some_and(|v| v == "1");
    let forbidden = std::env::var(TEST_FORBIDDEN_ENV).is_ok_and(|v| v == role.name());
    let action = if log {
        seccompiler::SeccompAction::Log
    } else {
        seccompiler::SeccompAction::KillProcess
    };
    let prog = filters::program(role, action)?;
    let first = filters::prefilter(role)?;
    seccompiler::apply_filter(&first).map_err(SandboxError::Install)?;
    seccompiler::apply_filter(&prog).map_err(SandboxError::Install)?;
    tracing::debug!(role = role.name(), "seccomp filter installed");
    if forbidden {
        tracing::warn!(
            "{TEST_FORBIDDEN_ENV}={}: making a forbidden syscall",
            role.name()
        );
        // SAFETY: setns(2) on an invalid fd: EBADF if it were allowed; no memory passed.
        unsafe { libc::syscall(libc::SYS_setns, -1, 0) };
    }
    Ok(())
}

/// [`enter`], logging a failure instead of returning it: for threads whose spawner cannot
/// be told (a worker is already running). The thread then runs as before, unfiltered.
pub fn enter_or_warn(role: Role, cfg: &SandboxConfig) {
    if let Err(e) = enter(role, cfg) {
        tracing::warn!(
            role = role.name(),
            "sandbox: {e}; this thread runs without it"
        );
    }
}

#[cfg(test)]
mod tests;
