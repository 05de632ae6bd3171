//! Rootless namespaces: a user namespace owning the guest's network namespace, for `ringnet
//! run` started without root (as `pasta` and `slirp4netns` do it).
//!
//! # Theory of operation
//!
//! An unprivileged process may create a user namespace and, owning it, a network namespace
//! in which it holds `CAP_NET_ADMIN` and may create a TAP (when `/dev/net/tun` is
//! accessible to its uid: 0666 on most distros). It may not `setns(2)` back into that
//! network namespace from the parent user namespace, so the work splits in two processes:
//!
//! - A helper (the same binary, re-executed while single-threaded, as `unshare(2)` with
//!   `CLONE_NEWUSER` requires) calls [`enter`]: `unshare(CLONE_NEWUSER | CLONE_NEWNET)`,
//!   `setgroups` denied, and its own uid and gid mapped to 0 (a process may map exactly its
//!   own ids). Inside it creates and configures the TAP, then sends the TAP fd and its
//!   network namespace fd to ringnet over a `SOCK_SEQPACKET` socketpair ([`send`], with
//!   `SCM_RIGHTS`), waits for a go and execs the command.
//! - ringnet stays in the host namespaces ([`recv`] takes the fds), where its egress sockets
//!   and published ports live; holding the namespace fd keeps the TAP alive until ringnet
//!   exits, as in root mode.
//!
//! [`privileged`] decides which mode applies; [`check_tun`] tests `/dev/net/tun` up front so
//! that a refusal is one clear line instead of a failure deep inside the helper.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Errors of the rootless namespace plumbing.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("/dev/net/tun is not usable by uid {uid} ({reason}): ask your admin to make it 0666, as most distros ship it")]
    TunDenied { uid: u32, reason: String },
    #[error("/dev/net/tun is missing (load the tun module)")]
    TunMissing,
    #[error("opening /dev/net/tun failed: {0}")]
    TunOpen(io::Error),
    #[error("unprivileged user namespaces are disabled ({knobs}): creating one failed: {source}")]
    Disabled { knobs: String, source: io::Error },
    #[error("writing {file} of the new user namespace ({line:?}) failed: {source}{hint}")]
    Map {
        file: &'static str,
        line: String,
        source: io::Error,
        hint: String,
    },
    #[error("creating the socketpair to the namespace helper failed: {0}")]
    Socketpair(io::Error),
    #[error("sending to the namespace helper's peer failed: {0}")]
    Send(io::Error),
    #[error("receiving from the namespace helper's peer failed: {0}")]
    Recv(io::Error),
    #[error("no word from the namespace helper within {0:?}")]
    Timeout(Duration),
}

/// `CAP_NET_ADMIN` (TAP devices, addresses) and `CAP_SYS_ADMIN` (`unshare(CLONE_NEWNET)`,
/// `setns`): bit numbers in `/proc/self/status`'s `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process may make network namespaces and TAPs itself (root mode): it holds
/// `CAP_SYS_ADMIN` and `CAP_NET_ADMIN` in its user namespace. Euid 0 without them (a
/// container's root with capabilities dropped) is not privileged.
pub fn privileged() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    match eff {
        Some(eff) => [CAP_NET_ADMIN, CAP_SYS_ADMIN]
            .iter()
            .all(|bit| eff & (1 << bit) != 0),
        // No capability line (not Linux procfs?): fall back on the effective uid.
        None => ids().0 == 0,
    }
}

/// The effective uid and gid of this process.
pub fn ids() -> (u32, u32) {
    // SAFETY: geteuid(2) and getegid(2) have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Check that this user can open `/dev/net/tun` read-write (opening it creates nothing).
pub fn check_tun() -> Result<(), UsernsError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(UsernsError::TunMissing),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            Err(UsernsError::TunDenied {
                uid: ids().0,
                reason: "permission denied".into(),
            })
        }
        Err(e) => Err(UsernsError::TunOpen(e)),
    }
}

/// The kernel settings that forbid unprivileged user namespaces, as they are set here (for
/// the error message); a generic list when none of them is the culprit.
fn userns_knobs() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|v| v.trim().to_string())
    };
    let mut off = Vec::new();
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        off.push("kernel.unprivileged_userns_clone=0");
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        off.push("user.max_user_namespaces=0");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        off.push("kernel.apparmor_restrict_unprivileged_userns=1");
    }
    if off.is_empty() {
        "kernel.unprivileged_userns_clone=0 / user.max_user_namespaces=0, a seccomp filter \
         or a security module"
            .into()
    } else {
        off.join(", ")
    }
}

/// Write `text` to the `/proc/self` file `file` (a uid/gid map or `setgroups`).
fn write_proc_self(file: &'static str, text: &str) -> Result<(), UsernsError> {
    std::fs::write(format!("/proc/self/{file}"), text).map_err(|source| {
        let hint = if std::fs::read_to_string(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        )
        .is_ok_and(|v| v.trim() == "1")
        {
            " (kernel.apparmor_restrict_unprivileged_userns=1 leaves an unconfined program's user \
             namespace without capabilities)"
                .to_string()
        } else {
            String::new()
        };
        UsernsError::Map {
            file,
            line: text.trim_end().to_string(),
            source,
            hint,
        }
    })
}

/// Move this process into a new user namespace and a new network namespace owned by it,
/// with its effective uid and gid mapped to 0 (and `setgroups` denied, which an unprivileged
/// gid map requires). The process then holds every capability over the new namespaces
/// (none over the host's). Must be called while the process is single-threaded: the kernel
/// refuses `CLONE_NEWUSER` otherwise.
pub fn enter() -> Result<(), UsernsError> {
    let (uid, gid) = ids();
    // SAFETY: unshare(2) takes no pointers; the caller is single-threaded (see above).
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        // errno first: reading the knobs makes syscalls of its own.
        let source = io::Error::last_os_error();
        return Err(UsernsError::Disabled {
            knobs: userns_knobs(),
            source,
        });
    }
    write_proc_self("setgroups", "deny")?;
    write_proc_self("uid_map", &format!("0 {uid} 1\n"))?;
    write_proc_self("gid_map", &format!("0 {gid} 1\n"))?;
    Ok(())
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair(2) writes two descriptors into the live array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(UsernsError::Socketpair(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Set or clear `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl(2) F_SETFD takes an int and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// At most this many descriptors travel in one message.
const MAX_FDS: usize = 4;

/// The control buffer for up to [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Send one message `msg` with the descriptors `fds` (at most [`MAX_FDS`]) over `sock`.
pub fn send(sock: &OwnedFd, msg: &[u8], fds: &[RawFd]) -> Result<(), UsernsError> {
    assert!(fds.len() <= MAX_FDS, "send: at most {MAX_FDS} fds");
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: a zeroed msghdr is valid (null pointers, zero lengths); the pointers set
    // below point at live locals (`iov`, `cbuf`) for the duration of sendmsg, and the
    // CMSG_* macros stay within `cbuf`, whose 64 bytes hold CMSG_SPACE(4 * 4).
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if !fds.is_empty() {
            hdr.msg_control = cbuf.0.as_mut_ptr().cast();
            hdr.msg_controllen = libc::CMSG_SPACE(fd_bytes as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        }
        if libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) < 0 {
            return Err(UsernsError::Send(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Receive one message (up to 4 KiB) and the descriptors it carries, waiting up to
/// `timeout` (`None`: forever). An empty message is the peer's end (closed, or exec'd: the
/// socket is close-on-exec).
pub fn recv(
    sock: &OwnedFd,
    timeout: Option<Duration>,
) -> Result<(Vec<u8>, Vec<OwnedFd>), UsernsError> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: poll(2) on one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            // Only reached with a timeout: -1 waits forever.
            return Err(UsernsError::Timeout(timeout.unwrap_or_default()));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(UsernsError::Recv(e));
        }
    }
    let mut buf = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = CmsgBuf([0; 64]);
    let mut fds = Vec::new();
    // SAFETY: as in `send`: the msghdr points at live locals; recvmsg fills at most their
    // lengths; the CMSG_* walk stays within the `msg_controllen` bytes the kernel wrote,
    // and every descriptor received is owned by us from here on (MSG_CMSG_CLOEXEC).
    let n = unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.0.as_mut_ptr().cast();
        hdr.msg_controllen = cbuf.0.len() as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(UsernsError::Recv(io::Error::last_os_error()));
        }
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
        n as usize
    };
    buf.truncate(n);
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_with_their_message() {
        let (a, b) = socketpair().expect("socketpair");
        let file = std::fs::File::open("/proc/self/status").expect("open");
        send(&a, b"hello", &[file.as_raw_fd()]).expect("send");
        let (msg, fds) = recv(&b, Some(Duration::from_secs(5))).expect("recv");
        assert_eq!(msg, b"hello");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().expect("one fd"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut got, &mut text).expect("read");
        assert!(text.contains("CapEff:"));
        drop(a);
        let (end, fds) = recv(&b, Some(Duration::from_secs(5))).expect("recv end");
        assert!(end.is_empty() && fds.is_empty());
    }

    #[test]
    fn recv_times_out() {
        let (_a, b) = socketpair().expect("socketpair");
        assert!(matches!(
            recv(&b, Some(Duration::from_millis(20))),
            Err(UsernsError::Timeout(_))
        ));
    }
}
