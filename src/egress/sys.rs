//! Socket syscalls shared by both drivers.
//!
//! Syscalls used here (for a seccomp allow-list): `socket`, `connect`, `bind`, `listen`,
//! `setsockopt` (`SO_LINGER`, `TCP_NODELAY`, `SO_REUSEADDR`, `SO_REUSEPORT`), `getsockopt`
//! (`SO_ERROR`), `ioctl` (`FIONBIO`), `recv`, `send`, `shutdown`, `close` (via `OwnedFd`);
//! `listen.rs` adds `accept4` and `recvfrom` through std. A failed syscall becomes an `io::Error` only in [`cvt`].

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::SockKind;

/// The one place where a failed syscall (`-1` + errno) becomes an `io::Error`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for the `ssize_t` returning calls.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// A `sockaddr` for `connect(2)`, stored by value so it can outlive the call that built it.
#[derive(Copy, Clone)]
pub struct SockAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl SockAddr {
    pub fn new(addr: &SocketAddr) -> SockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY:
                // - sockaddr_storage is larger than and suitably aligned for sockaddr_in;
                // - the write covers only that prefix of `storage`, which we own.
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY:
                // - sockaddr_storage is larger than and suitably aligned for sockaddr_in6;
                // - the write covers only that prefix of `storage`, which we own.
                unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            // sockaddr_in6 is 28 bytes: always fits.
            len: len as libc::socklen_t,
        }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }
}

/// `socket(2)` for `kind` in the family of `remote`, always `SOCK_CLOEXEC`.
/// Ping sockets fail with `EACCES` when `net.ipv4.ping_group_range` excludes our group.
pub fn socket(kind: SockKind, remote: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let v6 = remote.is_ipv6();
    let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let (ty, proto) = match kind {
        SockKind::Tcp => (libc::SOCK_STREAM, libc::IPPROTO_TCP),
        SockKind::Udp => (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        SockKind::Ping if v6 => (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
        SockKind::Ping => (libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
    };
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(domain, ty | flags, proto) })?;
    // SAFETY: `fd` was just returned by socket(2), is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `connect(2)`; a nonblocking stream socket fails with `EINPROGRESS`.
pub fn connect(fd: RawFd, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: `addr` points to an initialised sockaddr of `addr.len` bytes, valid for the call.
    cvt(unsafe { libc::connect(fd, addr.as_ptr(), addr.len) }).map(drop)
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live, initialised T and the length passed is exactly its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `SO_LINGER {1, 0}`: the following close(2) sends RST and drops unsent data.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &l)
}

/// `TCP_NODELAY`: the guest's own stack already decided segment boundaries (it runs Nagle);
/// delaying again on the host side only adds latency.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, &1 as &libc::c_int)
}

/// `getsockopt(SO_ERROR)`: the pending socket error, cleared by reading it.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut val: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live locals of the sizes the kernel expects for SO_ERROR.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut val).cast(),
            &mut len,
        )
    })?;
    Ok((val != 0).then(|| io::Error::from_raw_os_error(val)))
}

/// `recv(2)` with `MSG_DONTWAIT` into `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the whole call.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// `send(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL` (a reset peer yields `EPIPE`, not SIGPIPE).
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is a live, readable slice of `buf.len()` bytes for the whole call.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
}

/// `shutdown(fd, SHUT_WR)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) takes no pointers.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}

/// `ioctl(FIONBIO)`: make `fd` nonblocking or blocking.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let mut v: libc::c_int = on.into();
    // SAFETY: FIONBIO reads one c_int from the live local `v`.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut v) }).map(drop)
}

/// `listen(2)` with `backlog` (again on a listening socket: sets the new backlog).
pub fn listen(fd: RawFd, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: listen(2) takes no pointers.
    cvt(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// A UDP socket bound to `local` with `SO_REUSEADDR` and `SO_REUSEPORT` (so sockets
/// connected to single peers can share the port), connected to `peer` when given.
pub fn udp_reuseport(
    local: &SocketAddr,
    peer: Option<&SocketAddr>,
    nonblocking: bool,
) -> io::Result<OwnedFd> {
    let fd = socket(SockKind::Udp, local, nonblocking)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    setsockopt(
        raw,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &1 as &libc::c_int,
    )?;
    setsockopt(
        raw,
        libc::SOL_SOCKET,
        libc::SO_REUSEPORT,
        &1 as &libc::c_int,
    )?;
    let addr = SockAddr::new(local);
    // SAFETY: `addr` points to an initialised sockaddr of `addr.len` bytes, valid for the call.
    cvt(unsafe { libc::bind(raw, addr.as_ptr(), addr.len) })?;
    if let Some(peer) = peer {
        connect(raw, &SockAddr::new(peer))?;
    }
    Ok(fd)
}
