//! Listening sockets of published ports: where host clients arrive.
//!
//! # Theory of operation
//!
//! A [`Listener`] owns one host socket bound to a published port. The poll thread watches
//! its fd with [`super::Driver::watch`] and, when it is readable, takes what is waiting
//! in a bounded batch — never blocking, the socket is nonblocking:
//! - TCP: [`Listener::accept`] returns an accepted connection, which the driver then
//!   adopts ([`super::Driver::adopt`]) as an open stream socket like any other;
//! - UDP: [`Listener::recv_from`] returns a datagram of a peer not mapped yet; the poll
//!   thread then makes that peer its own socket with [`Listener::peer_socket`] — bound to
//!   the same address and port (`SO_REUSEPORT`) and connected to the peer, so the kernel
//!   delivers the peer's next datagrams to it, and replies leave from the published port.
//!
//! Syscalls: `socket`, `setsockopt`, `bind`, `listen`, `accept4`, `recvfrom`, `ioctl`.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{sys, SockKind};

/// Connections a TCP listener queues in the kernel before accept.
pub const BACKLOG: i32 = 1024;

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// The host socket of one published port.
pub struct Listener {
    sock: Sock,
    local: SocketAddr,
}

impl Listener {
    /// Bind `addr` for `kind` (`Tcp` or `Udp`); nonblocking.
    ///
    /// # Errors
    /// The bind's error (address in use, address not available, permission denied).
    pub fn bind(kind: SockKind, addr: SocketAddr) -> io::Result<Listener> {
        let sock = match kind {
            SockKind::Tcp => {
                // std sets SO_REUSEADDR; the listen backlog is raised to ours.
                let l = TcpListener::bind(addr)?;
                sys::listen(l.as_raw_fd(), BACKLOG)?;
                l.set_nonblocking(true)?;
                Sock::Tcp(l)
            }
            _ => {
                let fd = sys::udp_reuseport(&addr, None, true)?;
                Sock::Udp(UdpSocket::from(fd))
            }
        };
        let local = match &sock {
            Sock::Tcp(l) => l.local_addr()?,
            Sock::Udp(u) => u.local_addr()?,
        };
        Ok(Listener { sock, local })
    }

    /// The address it listens on (the bound port, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fd to watch.
    pub fn fd(&self) -> RawFd {
        match &self.sock {
            Sock::Tcp(l) => l.as_raw_fd(),
            Sock::Udp(u) => u.as_raw_fd(),
        }
    }

    /// The next waiting connection (TCP): `Ok(None)` when none is waiting.
    ///
    /// # Errors
    /// accept(2)'s error (`EMFILE` when out of descriptors: the connection stays queued).
    pub fn accept(&self) -> io::Result<Option<(OwnedFd, SocketAddr)>> {
        let Sock::Tcp(l) = &self.sock else {
            return Ok(None);
        };
        match l.accept() {
            Ok((s, peer)) => Ok(Some((OwnedFd::from(s), peer))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next waiting datagram (UDP) into `buf`: its length and sender; `Ok(None)` when
    /// none is waiting.
    ///
    /// # Errors
    /// recvfrom(2)'s error.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        let Sock::Udp(u) = &self.sock else {
            return Ok(None);
        };
        match u.recv_from(buf) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Refuse an accepted connection: close it with RST (`SO_LINGER` 0).
    pub fn reject(fd: OwnedFd) {
        if let Err(e) = sys::set_linger_zero(fd.as_raw_fd()) {
            tracing::debug!(error = %e, "SO_LINGER on a refused client failed");
        }
    }

    /// A UDP socket of this port for `peer` alone (see the module docs).
    ///
    /// # Errors
    /// socket, bind or connect errors.
    pub fn peer_socket(&self, peer: SocketAddr) -> io::Result<OwnedFd> {
        sys::udp_reuseport(&self.local, Some(&peer), true)
    }
}
