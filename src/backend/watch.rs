//! Watching the guest side of a namespace + TAP backend: is it still there, did its link
//! come back up.
//!
//! # Theory of operation
//!
//! A guest can go away under ringnet without ringnet's TAP noticing: `ip netns del NAME`
//! only unmounts `/run/netns/NAME` (ringnet's own namespace fd keeps the namespace, and
//! with it the TAP, alive), and a guest may delete its TAP or set it down and up again
//! (which removes its IPv6 addresses and every route through it). [`GuestWatch::check`],
//! called from the `attach` loop a few times a second, reports these as [`GuestEvent`]s:
//!
//! - The namespace: the path it was opened from must still name it, i.e. `stat(2)` of the
//!   path gives the device and inode of `fstat(2)` of ringnet's namespace fd. Missing or
//!   different: [`GuestEvent::NamespaceGone`].
//! - The TAP: a `NETLINK_ROUTE` socket made inside the namespace and subscribed to
//!   `RTMGRP_LINK` receives every change of every link there (see `rtnetlink(7)`). The TAP is
//!   followed by interface index, so a rename does not matter. `RTM_DELLINK` (deleted, or
//!   moved to another namespace): [`GuestEvent::LinkGone`]; `RTM_NEWLINK` with `IFF_UP`
//!   after one without: [`GuestEvent::LinkUp`]; the other way round: [`GuestEvent::LinkDown`].
//!   The kernel queues the events between checks, so a down/up quicker than the check
//!   interval is still seen.
//! - If the socket's queue overflowed (`ENOBUFS`: events were lost), the link's state is
//!   asked for afresh (`RTM_GETLINK`) and a link found up is reported as
//!   [`GuestEvent::LinkUp`]: it may have bounced, and whoever configures it again does no
//!   harm (the configuration is idempotent).
//!
//! Syscalls: `stat`, `fstat`, `socket(AF_NETLINK)`, `bind`, `send`, `recv` (non-blocking),
//! and `if_nametoindex` once, inside the namespace.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::netns::{NetNs, NetnsError};

/// Errors setting up or reading the guest watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    Netns(#[from] NetnsError),
    #[error("the TAP {name:?} is not in the guest namespace: {source}")]
    NoLink { name: String, source: io::Error },
    #[error("creating the rtnetlink socket in the guest namespace failed: {0}")]
    Socket(io::Error),
    #[error("reading link events of the guest namespace failed: {0}")]
    Recv(io::Error),
    #[error("asking for the state of the guest's TAP failed: {0}")]
    Send(io::Error),
}

/// What changed on the guest side since the last check (the most significant change when
/// several happened: gone before up before down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// The namespace path no longer names the namespace ringnet serves; the string says why
    /// ("was deleted", "names another namespace now").
    NamespaceGone(String),
    /// The TAP was deleted or moved out of the namespace.
    LinkGone,
    /// The TAP was set up again after being down (or may have been: events were lost).
    LinkUp,
    /// The TAP was set down.
    LinkDown,
}

/// Watches one guest namespace and its TAP.
#[derive(Debug)]
pub struct GuestWatch {
    /// The path the namespace was opened from and the identity it had then.
    ns_path: Option<(PathBuf, (u64, u64))>,
    /// `NETLINK_ROUTE` socket bound to `RTMGRP_LINK` in the guest namespace (non-blocking).
    nl: OwnedFd,
    ifindex: i32,
    /// `IFF_UP` as last seen.
    up: bool,
    /// Sequence number of the last `RTM_GETLINK` request.
    seq: u32,
    buf: Vec<u8>,
}

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const NLMSG_ERROR: u16 = 2;

/// What one batch of netlink messages said about our link.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    gone: bool,
    came_up: bool,
    went_down: bool,
}

impl GuestWatch {
    /// Watch `ns` (opened from `path`, if it has one: an anonymous namespace cannot be
    /// deleted under us) and its TAP `tap`, which must exist now.
    pub fn new(ns: &NetNs, path: Option<&Path>, tap: &str) -> Result<GuestWatch, WatchError> {
        let ns_path = match path {
            Some(p) => Some((p.to_path_buf(), ns.identity()?)),
            None => None,
        };
        let name = tap.to_string();
        let (ifindex, nl) = ns.run(move || -> Result<(i32, OwnedFd), WatchError> {
            let no_link = |source| WatchError::NoLink {
                name: name.clone(),
                source,
            };
            let cname = CString::new(name.clone())
                .map_err(|_| no_link(io::Error::from(io::ErrorKind::InvalidInput)))?;
            // SAFETY: a valid NUL-terminated name; 0 means failure (errno set).
            let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if idx == 0 {
                return Err(no_link(io::Error::last_os_error()));
            }
            Ok((idx as i32, link_socket().map_err(WatchError::Socket)?))
        })??;
        let mut w = GuestWatch {
            ns_path,
            nl,
            ifindex,
            up: false,
            seq: 0,
            buf: vec![0; 64 * 1024],
        };
        // The reply is queued before send returns; read it now so that the state the link
        // is in at start is not reported as a change.
        w.request_state()?;
        w.drain()?;
        Ok(w)
    }

    /// What happened since the last call (None: nothing that matters).
    pub fn check(&mut self) -> Result<Option<GuestEvent>, WatchError> {
        if let Some((path, id)) = &self.ns_path {
            if let Err(why) = NetNs::check_path(path, *id) {
                return Ok(Some(GuestEvent::NamespaceGone(why)));
            }
        }
        let seen = self.drain()?;
        Ok(if seen.gone {
            Some(GuestEvent::LinkGone)
        } else if seen.came_up {
            Some(GuestEvent::LinkUp)
        } else if seen.went_down {
            Some(GuestEvent::LinkDown)
        } else {
            None
        })
    }

    /// Send `RTM_GETLINK` for our link; the answer is an `RTM_NEWLINK` (or an error).
    fn request_state(&mut self) -> Result<(), WatchError> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDR + IFINFOMSG];
        req[0..4].copy_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
        req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // ifinfomsg: family AF_UNSPEC, index.
        req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&self.ifindex.to_ne_bytes());
        // SAFETY: sends `req.len()` bytes from the live array; the kernel is the default
        // destination of an unconnected netlink socket.
        let r = unsafe { libc::send(self.nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(WatchError::Send(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Read every queued message; update `up`.
    fn drain(&mut self) -> Result<Seen, WatchError> {
        let mut seen = Seen::default();
        loop {
            // SAFETY: receives at most `buf.len()` bytes into the live buffer.
            let n = unsafe {
                libc::recv(
                    self.nl.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(seen),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        // Events were lost: whatever the link did, ask where it is now and
                        // count "up" as having come up.
                        self.up = false;
                        self.request_state()?;
                        continue;
                    }
                    _ => return Err(WatchError::Recv(e)),
                }
            }
            let n = n as usize;
            parse(
                &self.buf[..n],
                self.ifindex,
                self.seq,
                &mut self.up,
                &mut seen,
            );
        }
    }
}

/// A non-blocking `NETLINK_ROUTE` socket subscribed to link events, in the calling thread's
/// namespace.
fn link_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero is a valid sockaddr_nl (padding included); fields set below.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: `sa` is a live, initialised sockaddr_nl and its exact size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Walk one datagram of netlink messages (`netlink(7)`: headers 4-byte aligned), noting
/// what happened to link `ifindex`; `seq` is our last request (whose error means the link
/// is not there). Malformed input ends the walk; it never panics.
fn parse(mut b: &[u8], ifindex: i32, seq: u32, up: &mut bool, seen: &mut Seen) {
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDR || len > b.len() {
            return;
        }
        let (ty, msg_seq) = (u16_at(b, 4), u32_at(b, 8));
        let body = &b[NLMSG_HDR..len];
        let ours = body.len() >= IFINFOMSG && u32_at(body, 4) as i32 == ifindex;
        match ty {
            libc::RTM_DELLINK if ours => seen.gone = true,
            libc::RTM_NEWLINK if ours => {
                let now_up = u32_at(body, 8) & libc::IFF_UP as u32 != 0;
                seen.came_up |= now_up && !*up;
                seen.went_down |= !now_up && *up;
                *up = now_up;
            }
            // struct nlmsgerr: a negative errno (0 is an ACK) for our request.
            NLMSG_ERROR
                if body.len() >= 4 && msg_seq == seq && u32_at(body, 0) as i32 == -libc::ENODEV =>
            {
                seen.gone = true;
            }
            _ => {}
        }
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message: header (type, seq) and body.
    fn msg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDR + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn link(ty: u16, index: i32, flags: u32) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG];
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        // An attribute (IFLA_IFNAME "eth0\0", padded) as real messages carry.
        body.extend_from_slice(&[9, 0, 3, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]);
        msg(ty, 0, &body)
    }

    const UP: u32 = libc::IFF_UP as u32;

    fn run(input: &[u8], up: &mut bool) -> Seen {
        let mut seen = Seen::default();
        parse(input, 7, 1, up, &mut seen);
        seen
    }

    #[test]
    fn down_then_up_in_one_batch_is_seen_as_up() {
        let mut up = true;
        let mut b = link(libc::RTM_NEWLINK, 7, 0);
        b.extend(link(libc::RTM_NEWLINK, 7, UP));
        let seen = run(&b, &mut up);
        assert!(seen.came_up && seen.went_down && !seen.gone);
        assert!(up);
    }

    #[test]
    fn other_links_and_unchanged_state_are_ignored() {
        let mut up = true;
        let mut b = link(libc::RTM_NEWLINK, 8, 0);
        b.extend(link(libc::RTM_DELLINK, 9, 0));
        b.extend(link(libc::RTM_NEWLINK, 7, UP));
        assert_eq!(run(&b, &mut up), Seen::default());
    }

    #[test]
    fn dellink_and_enodev_for_our_request_mean_gone() {
        let mut up = true;
        assert!(run(&link(libc::RTM_DELLINK, 7, UP), &mut up).gone);
        let enodev = (-libc::ENODEV).to_ne_bytes();
        assert!(run(&msg(NLMSG_ERROR, 1, &enodev), &mut up).gone);
        // An error for another request, or an ACK, is not.
        assert!(!run(&msg(NLMSG_ERROR, 2, &enodev), &mut up).gone);
        assert!(!run(&msg(NLMSG_ERROR, 1, &0i32.to_ne_bytes()), &mut up).gone);
    }

    #[test]
    fn malformed_input_never_panics() {
        let mut up = false;
        let good = link(libc::RTM_NEWLINK, 7, UP);
        for cut in 0..good.len() {
            run(&good[..cut], &mut up);
        }
        let mut bad_len = good.clone();
        bad_len[0..4].copy_from_slice(&3u32.to_ne_bytes());
        run(&bad_len, &mut up);
        bad_len[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        run(&bad_len, &mut up);
        // A short body is skipped, the next message still counts.
        let mut b = msg(libc::RTM_NEWLINK, 0, &[0; 8]);
        b.extend(link(libc::RTM_NEWLINK, 7, UP));
        let mut up = false;
        assert!(run(&b, &mut up).came_up);
    }
}
