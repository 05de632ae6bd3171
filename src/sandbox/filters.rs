//! The allow-lists: which syscalls each [`Role`] may make, with their arguments where a
//! check is cheap and meaningful. See the module docs of [`super`] for why each is there.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::{Role, SandboxError};

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn cond(arg: u8, op: Op, value: u64) -> Result<Cond, SandboxError> {
    Cond::new(arg, Len::Qword, op, value).map_err(SandboxError::Build)
}

fn cond32(arg: u8, op: Op, value: u64) -> Result<Cond, SandboxError> {
    Cond::new(arg, Len::Dword, op, value).map_err(SandboxError::Build)
}

/// Allow `nr` whatever its arguments.
fn allow(r: &mut Rules, nr: libc::c_long) {
    r.insert(nr, Vec::new());
}

/// Allow `nr` when argument `arg` (32 bits) is one of `values`.
fn allow_arg_in(
    r: &mut Rules,
    nr: libc::c_long,
    arg: u8,
    values: &[u64],
) -> Result<(), SandboxError> {
    let mut rules = Vec::new();
    for &v in values {
        rules.push(SeccompRule::new(vec![cond32(arg, Op::Eq, v)?]).map_err(SandboxError::Build)?);
    }
    r.insert(nr, rules);
    Ok(())
}

/// Allow `nr` when argument `arg` has none of the bits of `mask`.
fn allow_arg_without(
    r: &mut Rules,
    nr: libc::c_long,
    arg: u8,
    mask: u64,
) -> Result<(), SandboxError> {
    let rule =
        SeccompRule::new(vec![cond(arg, Op::MaskedEq(mask), 0)?]).map_err(SandboxError::Build)?;
    r.insert(nr, vec![rule]);
    Ok(())
}

/// Every filtered thread: memory (malloc, thread stacks), locks, time, signals as the Rust
/// runtime uses them, randomness, ending the thread, and I/O on descriptors it already
/// holds (`read`/`write` of sockets, eventfds, the TAP, stderr for log lines).
fn base(r: &mut Rules) -> Result<(), SandboxError> {
    use libc::*;
    for nr in [
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_close,
        SYS_munmap,
        SYS_mremap,
        SYS_brk,
        SYS_madvise,
        // `mem::discard`: which pool pages are resident before giving them back.
        SYS_mincore,
        SYS_futex,
        SYS_sched_yield,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_gettid,
        SYS_getpid,
        SYS_getrandom,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
    ] {
        allow(r, nr);
    }
    // Memory never becomes executable.
    allow_arg_without(r, SYS_mmap, 2, PROT_EXEC as u64)?;
    allow_arg_without(r, SYS_mprotect, 2, PROT_EXEC as u64)?;
    Ok(())
}

/// Sockets: the families ringnet's flows use (TCP, UDP, ping sockets, the unix pairs and
/// listeners), and the calls on them.
fn sockets(r: &mut Rules, accepting: bool) -> Result<(), SandboxError> {
    use libc::*;
    let families = [AF_INET as u64, AF_INET6 as u64, AF_UNIX as u64];
    allow_arg_in(r, SYS_socket, 0, &families)?;
    allow_arg_in(r, SYS_socketpair, 0, &[AF_UNIX as u64])?;
    for nr in [
        SYS_connect,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_getsockname,
        SYS_getpeername,
        SYS_sendto,
        SYS_recvfrom,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_shutdown,
    ] {
        allow(r, nr);
    }
    if accepting {
        allow(r, SYS_accept4);
        allow(r, SYS_accept);
    }
    Ok(())
}

/// mio's and the epoll driver's event loop.
fn allow_epoll(r: &mut Rules) {
    use libc::*;
    #[cfg(target_arch = "x86_64")]
    allow(r, SYS_epoll_wait);
    allow(r, SYS_epoll_pwait);
    allow(r, SYS_epoll_ctl);
}

/// `fcntl` as std and mio use it: status and descriptor flags, `F_DUPFD_CLOEXEC`.
fn allow_fcntl(r: &mut Rules) -> Result<(), SandboxError> {
    use libc::*;
    allow_arg_in(
        r,
        SYS_fcntl,
        1,
        &[F_GETFL, F_SETFL, F_GETFD, F_SETFD, F_DUPFD_CLOEXEC].map(|c| c as u64),
    )
}

/// The rules of `role`.
fn rules(role: Role) -> Result<Rules, SandboxError> {
    use libc::*;
    let mut r = Rules::new();
    base(&mut r)?;
    // Answered ENOSYS by the prefilter.
    for nr in refused(role) {
        allow(&mut r, nr);
    }
    match role {
        Role::Poll => {
            sockets(&mut r, true)?;
            allow_epoll(&mut r);
            allow_fcntl(&mut r)?;
            // The io_uring driver's one wait: submit and reap. Not io_uring_setup (the ring
            // exists) nor io_uring_register (its restrictions are sealed).
            allow(&mut r, SYS_io_uring_enter);
            // Published ports added at run time (`ringnet ctl publish`).
            allow(&mut r, SYS_bind);
            allow(&mut r, SYS_listen);
            // Non-blocking mode of host sockets (`egress::sys`), a TAP's offloads renegotiated
            // by the guest (`backend::tap`), bytes queued (`FIONREAD`).
            allow_arg_in(
                &mut r,
                SYS_ioctl,
                1,
                &[FIONBIO, FIONREAD, TUNSETOFFLOAD, TUNSETVNETHDRSZ],
            )?;
            // Pinning itself to `egress.cpu` at the start of its loop.
            allow(&mut r, SYS_sched_setaffinity);
            allow(&mut r, SYS_sched_getaffinity);
        }
        Role::TlsWorker => {
            sockets(&mut r, false)?;
            allow_epoll(&mut r);
            allow_fcntl(&mut r)?;
            allow_arg_in(&mut r, SYS_ioctl, 1, &[FIONBIO])?;
        }
        Role::Pcap => {
            // The file is open; writing it is in `base`.
            allow(&mut r, SYS_fsync);
        }
        Role::Service => {
            sockets(&mut r, true)?;
            allow_fcntl(&mut r)?;
            allow_arg_in(&mut r, SYS_ioctl, 1, &[FIONBIO])?;
            #[cfg(target_arch = "x86_64")]
            allow(&mut r, SYS_poll);
            allow(&mut r, SYS_ppoll);
            // Threads of its own (a control client each): `clone` with `CLONE_THREAD` only
            // (no new process, no new namespace); `clone3`'s flags are in memory a filter
            // cannot read, so it is answered `ENOSYS` by the filter installed first
            // ([`prefilter`]) and glibc falls back to `clone`.
            let rule = SeccompRule::new(vec![
                cond(0, Op::MaskedEq(CLONE_THREAD as u64), CLONE_THREAD as u64)?,
                cond(
                    0,
                    Op::MaskedEq(
                        (CLONE_NEWNET
                            | CLONE_NEWNS
                            | CLONE_NEWUSER
                            | CLONE_NEWPID
                            | CLONE_NEWUTS
                            | CLONE_NEWIPC
                            | CLONE_NEWCGROUP) as u64,
                    ),
                    0,
                )?,
            ])
            .map_err(SandboxError::Build)?;
            r.insert(SYS_clone, vec![rule]);
            allow(&mut r, SYS_set_robust_list);
            allow(&mut r, SYS_rseq);
            // The new threads' names.
            allow_arg_in(&mut r, SYS_prctl, 0, &[PR_SET_NAME as u64])?;
            allow(&mut r, SYS_sched_getaffinity);
        }
    }
    Ok(r)
}

fn arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Arch(std::env::consts::ARCH))
}

/// The compiled allow-list of `role`: anything else is `on_violation`.
pub fn program(
    role: Role,
    on_violation: SeccompAction,
) -> Result<seccompiler::BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(rules(role)?, on_violation, SeccompAction::Allow, arch()?)
        .map_err(SandboxError::Build)?;
    filter.try_into().map_err(SandboxError::Build)
}

/// Syscalls refused with `ENOSYS` instead of killing: `open`/`openat` (glibc's malloc
/// reads `/proc/sys/vm/overcommit_memory` once per process, on the first shrink of a
/// thread's arena, and does without it), and for [`Role::Service`] `clone3` (glibc then
/// falls back to `clone`, whose flags the allow-list checks).
fn refused(role: Role) -> Vec<libc::c_long> {
    let mut v = vec![libc::SYS_openat];
    #[cfg(target_arch = "x86_64")]
    v.push(libc::SYS_open);
    if role == Role::Service {
        v.push(libc::SYS_clone3);
    }
    v
}

/// A filter that answers [`refused`] syscalls with `ENOSYS` and allows everything else;
/// installed before the role's allow-list, which allows them so that this one's answer
/// is what the thread gets (the kernel takes the strictest of all filters' actions).
pub fn prefilter(role: Role) -> Result<seccompiler::BpfProgram, SandboxError> {
    let mut r = Rules::new();
    for nr in refused(role) {
        allow(&mut r, nr);
    }
    let filter = SeccompFilter::new(
        r,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(SandboxError::Build)?;
    filter.try_into().map_err(SandboxError::Build)
}

/// How many syscalls `role` allows (for the docs and the start-up line).
pub fn count(role: Role) -> usize {
    rules(role).map_or(0, |r| r.len())
}
