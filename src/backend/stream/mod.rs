//! QEMU's stream netdev as a guest port: Ethernet frames over a stream socket, each after
//! its length as a 32-bit big-endian integer (`-netdev stream`, QEMU ≥ 7.2; passt speaks
//! the same protocol). No virtio-net header travels: the port offers [`Offloads::NONE`].
//!
//! # Theory of operation
//!
//! Two modes ([`StreamPort::listen`], [`StreamPort::from_fd`]):
//! - **listen**: ringnet binds a unix socket at a path (a stale socket file nobody listens
//!   on is replaced; a live one or any other file is an error; the file is removed when the
//!   port drops, if it is still the one bound). One connection is served at a time; while
//!   it lasts, the listener is not watched and further connections wait in the kernel's
//!   backlog (their `connect(2)` succeeds; they are served in turn once the current one
//!   ends — a restarted QEMU that connects before the old connection's end was seen is
//!   not refused). When the connection ends (EOF, `ECONNRESET`, `EPIPE`, a bad length),
//!   it is counted (`stream_disconnects`), [`Link::reset_guest`] tells the poll thread to
//!   close the old guest's flows, the frames queued to the guest are dropped (counted in
//!   `to_guest_dropped`) and the next connection is accepted.
//! - **fd**: an already connected stream socket (e.g. one end of a `socketpair(2)` whose
//!   other end the VMM gave QEMU). Its end is the guest going away: `receive` fails with
//!   [`PortError::Gone`]; a bad length ends it with [`PortError::Io`]. A failed write only
//!   makes later frames to the guest drops: the fd stays registered, and the hang-up that
//!   caused it reads as EOF or `ECONNRESET`, which `receive` reports (only `receive` can
//!   stop the poll thread, and only readiness makes the engine call it).
//!
//! Readiness: the engine watches [`GuestPort::ready_fd`] once, at start, but the
//! connection's fd changes with every reconnect. So the port owns an epoll instance (a
//! `mio::Poll` whose fd is itself pollable: readable while one of its registered fds is
//! ready) and hands out that fd. Registered in it at any time: the listener (only while no
//! connection is open), the connection for reading, and the connection for writing only
//! while frames wait for socket space. Nothing that stays ready without being consumed is
//! registered, so the epoll fd never reads as ready forever (an io_uring poll on it would
//! spin). The port never `epoll_wait`s on it: readiness only makes the engine call
//! [`GuestPort::receive`] (which reads until drained) and the turn's
//! [`GuestPort::transmit`] (which writes until the socket is full).
//!
//! From the guest (`receive`): one `read(2)` of up to [`STAGING_BYTES`] into the
//! [`frame::Deframer`]'s staging buffer, then each whole frame is copied into a leased pool
//! slot and pushed onto `from_guest`. That copy (one `memcpy` per frame, cache-hot) buys one
//! syscall per 256 KiB instead of two per frame (prefix, then frame) that reading straight
//! into slots would need; a record split across reads stays buffered. Reads go on until
//! `EAGAIN` (or the budget): a short read does not prove the socket drained, as the peer's
//! EOF may follow its last bytes, and with an edge-triggered watch nothing would announce
//! that EOF again. A length of 0, below
//! [`frame::MIN_FRAME`] or above the link MTU + 14 ends the connection (counted in
//! `stream_bad_length`, one warning line). An empty pool drops the frame (counted on the
//! ring, as the TAP does).
//!
//! To the guest (`transmit`, `make_room`): frames are taken off `to_guest` up to
//! [`WRITE_BATCH`] at a time and written with one `sendmsg(2)` (`MSG_NOSIGNAL`: a vanished
//! peer is `EPIPE`, not a signal) of one iovec each: the 4-byte prefix is written into the
//! last 4 bytes of the slot's virtio-net header area, right before the frame (the header is
//! unused with [`Offloads::NONE`] and the frame is ours once popped), so prefix and frame
//! are contiguous and nothing is copied. A partial write keeps the frames taken and the
//! offset into the first one: the unwritten remainder stays in its slot (no copy; at most
//! [`WRITE_BATCH`] slots held, the first partly written) and goes first on the next try.
//! Then the port waits for `EPOLLOUT` and `make_room` returns false, so the engine leaves
//! work for later instead of dropping frames; TCP flows stop reading their host sockets
//! and the host's windows close (backpressure end to end). Without a connection, frames to
//! the guest are dropped and counted (`to_guest_dropped`).
//!
//! Syscalls: `read`, `sendmsg`, `accept4`, `epoll_ctl`, `close`; at setup `socket`,
//! `bind`, `listen`, `connect` (stale-socket probe), `unlink`, `getsockopt`, `fcntl`.

pub mod frame;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use crate::link::{GuestPort, Link, Offloads, PortError};
use crate::metrics::Stats;
use crate::pool::{Frame, HDR_BYTES};
use frame::{BadLength, Deframer, PREFIX_BYTES};

/// Bytes of the receive staging buffer (one `read(2)` fills at most this).
pub const STAGING_BYTES: usize = 256 * 1024;
/// Frames per `sendmsg(2)` to the guest (one iovec each).
pub const WRITE_BATCH: usize = 64;
/// Ethernet header bytes: a frame may be this much longer than the MTU.
pub const ETHERNET_HEADER: usize = 14;

/// What the fd-mode connection is called when it goes away (`PortError::Gone`).
pub const FD_GONE: &str = "QEMU stream connection";

const LISTENER: Token = Token(0);
const CONN: Token = Token(1);

/// Errors setting a stream port up.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Something other than a socket is at the path.
    #[error("{0}: exists and is not a socket (refusing to replace it)")]
    NotASocket(PathBuf),
    /// A live socket is at the path.
    #[error("{0}: another process is listening on this socket")]
    InUse(PathBuf),
    /// Looking at the path failed.
    #[error("{path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    /// Probing or removing a stale socket failed.
    #[error("{path}: cannot replace the stale socket: {source}")]
    Stale { path: PathBuf, source: io::Error },
    /// Binding or listening failed.
    #[error("{path}: cannot listen: {source}")]
    Bind { path: PathBuf, source: io::Error },
    /// The fd handed over is not a connected stream socket.
    #[error("fd {fd} is not a stream socket: {why}")]
    NotAStream { fd: RawFd, why: String },
    /// Making the fd non-blocking / close-on-exec failed.
    #[error("fd {fd}: {source}")]
    FdSetup { fd: RawFd, source: io::Error },
    /// Creating the port's epoll instance or registering in it failed.
    #[error("stream port epoll: {0}")]
    Poll(io::Error),
}

/// Where connections come from.
#[derive(Debug)]
enum Mode {
    /// A listening unix socket at `path`; `file` removes it when dropped (unless a caller
    /// took it with [`StreamPort::take_socket_file`] to remove it on its own thread).
    Listen {
        listener: UnixListener,
        path: PathBuf,
        file: Option<SocketFile>,
    },
    /// One connection handed over; its end is the guest's.
    Fd,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The peer closed it (EOF).
    Eof,
    /// A read or write failed (`ECONNRESET`, `EPIPE`, …).
    Failed(io::Error),
    /// A length prefix out of range.
    BadLength(BadLength),
}

/// How a batch of reads ended.
enum Pumped {
    /// The budget is spent (more may be buffered or waiting).
    Budget,
    /// The socket is drained.
    Drained,
    /// The connection is over.
    Ended(End),
}

/// QEMU's stream netdev, served by the poll thread (see the module docs).
#[derive(Debug)]
pub struct StreamPort {
    mode: Mode,
    /// The connection being served.
    conn: Option<OwnedFd>,
    /// The port's readiness: listener, connection (see the module docs).
    poll: Poll,
    deframer: Deframer,
    /// Frames taken off `to_guest` and not yet wholly written, in order; the first has
    /// `out_off` bytes (prefix included) written.
    out: VecDeque<Frame>,
    out_off: usize,
    /// The connection is registered for writability.
    want_write: bool,
    /// Fd mode: the connection ended (why, for `receive` to report).
    ended: Option<PortError>,
    /// Fd mode: a write failed; frames to the guest are dropped until `receive` sees the
    /// connection's end (the fd stays registered so that end wakes the poll thread).
    write_failed: bool,
}

impl StreamPort {
    /// Listen on a unix socket at `path` for QEMU (`server=off`) to connect, taking frames
    /// of up to `max_frame` bytes (the link MTU + [`ETHERNET_HEADER`]).
    pub fn listen(path: &Path, max_frame: usize) -> Result<StreamPort, StreamError> {
        let listener = bind_listener(path)?;
        let meta = std::fs::symlink_metadata(path).map_err(|source| StreamError::Stat {
            path: path.to_path_buf(),
            source,
        })?;
        let port = StreamPort::new(
            Mode::Listen {
                listener,
                path: path.to_path_buf(),
                file: Some(SocketFile {
                    path: path.to_path_buf(),
                    ident: (meta.dev(), meta.ino()),
                }),
            },
            None,
            max_frame,
        )?;
        port.watch_listener(true).map_err(StreamError::Poll)?;
        Ok(port)
    }

    /// Serve one connected stream socket (`fd` mode), taking frames of up to `max_frame`
    /// bytes. Its end stops the port ([`PortError::Gone`]).
    pub fn from_fd(fd: OwnedFd, max_frame: usize) -> Result<StreamPort, StreamError> {
        let raw = fd.as_raw_fd();
        check_stream_socket(raw)?;
        set_nonblocking_cloexec(raw).map_err(|source| StreamError::FdSetup { fd: raw, source })?;
        grow_socket_buffers(raw);
        let port = StreamPort::new(Mode::Fd, Some(fd), max_frame)?;
        port.register_conn().map_err(StreamError::Poll)?;
        Ok(port)
    }

    fn new(mode: Mode, conn: Option<OwnedFd>, max_frame: usize) -> Result<StreamPort, StreamError> {
        // A frame must fit a pool slot.
        let max_frame = max_frame.min(crate::pool::MAX_FRAME);
        Ok(StreamPort {
            mode,
            conn,
            poll: Poll::new().map_err(StreamError::Poll)?,
            deframer: Deframer::new(STAGING_BYTES, max_frame),
            out: VecDeque::with_capacity(WRITE_BATCH),
            out_off: 0,
            want_write: false,
            ended: None,
            write_failed: false,
        })
    }

    /// Listen mode: the socket file's removal, for the caller to drop on a thread of its
    /// choice (the port then leaves the file alone). The `qemu` command keeps it on its
    /// main thread, so the poll thread's seccomp filter need not allow `stat`/`unlink`.
    pub fn take_socket_file(&mut self) -> Option<SocketFile> {
        match &mut self.mode {
            Mode::Listen { file, .. } => file.take(),
            Mode::Fd => None,
        }
    }

    /// The socket path in listen mode.
    pub fn path(&self) -> Option<&Path> {
        match &self.mode {
            Mode::Listen { path, .. } => Some(path),
            Mode::Fd => None,
        }
    }

    /// True while a connection is being served.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Watch the listener (no connection) or stop watching it (connected).
    fn watch_listener(&self, on: bool) -> io::Result<()> {
        let Mode::Listen { listener, .. } = &self.mode else {
            return Ok(());
        };
        let fd = listener.as_raw_fd();
        let reg = self.poll.registry();
        if on {
            reg.register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)
        } else {
            reg.deregister(&mut SourceFd(&fd))
        }
    }

    fn register_conn(&self) -> io::Result<()> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let fd = conn.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), CONN, Interest::READABLE)
    }

    /// Register the connection for writability too (`on`), or for reading only.
    fn want_write(&mut self, on: bool) {
        if self.want_write == on {
            return;
        }
        let Some(conn) = &self.conn else {
            return;
        };
        let fd = conn.as_raw_fd();
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .poll
            .registry()
            .reregister(&mut SourceFd(&fd), CONN, interest)
        {
            Ok(()) => self.want_write = on,
            // Cannot happen for a registered fd; the next turn's transmit retries anyway.
            Err(e) => tracing::debug!("stream port: epoll_ctl(MOD) failed: {e}"),
        }
    }

    /// Listen mode, no connection: accept the next one. False when none is waiting.
    fn accept(&mut self, link: &Link) -> Result<bool, PortError> {
        let Mode::Listen { listener, path, .. } = &self.mode else {
            return Ok(false);
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("QEMU connection on {}: {e}; closed it", path.display());
                        continue;
                    }
                    tracing::info!("QEMU connected on {}", path.display());
                    grow_socket_buffers(stream.as_raw_fd());
                    self.conn = Some(OwnedFd::from(stream));
                    self.deframer.clear();
                    Stats::inc(&link.stats.stream_connections);
                    self.watch_listener(false)
                        .and_then(|()| self.register_conn())
                        .map_err(|e| PortError::Io(format!("stream port epoll: {e}")))?;
                    return Ok(true);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(false),
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    // Out of descriptors or memory: the client waits in the backlog and is
                    // accepted on the listener's next readiness.
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        tracing::warn!(
                            "accepting QEMU on {} failed: {e}; it waits in the backlog",
                            path.display()
                        );
                        return Ok(false);
                    }
                    _ => {
                        return Err(PortError::Io(format!(
                            "accepting on {} failed: {e}",
                            path.display()
                        )))
                    }
                },
            }
        }
    }

    /// Read and deliver up to `budget` frames from the connection.
    fn pump(&mut self, link: &Link, budget: usize, n: &mut usize) -> Pumped {
        let Some(fd) = self.conn.as_ref().map(AsRawFd::as_raw_fd) else {
            return Pumped::Drained;
        };
        loop {
            while *n < budget {
                match self.deframer.next_frame() {
                    Ok(Some(bytes)) => {
                        deliver(link, bytes);
                        *n += 1;
                    }
                    Ok(None) => break,
                    Err(bad) => return Pumped::Ended(End::BadLength(bad)),
                }
            }
            if *n >= budget {
                return Pumped::Budget;
            }
            let spare = self.deframer.spare();
            let want = spare.len();
            // SAFETY: reads at most `spare.len()` bytes into the live, exclusively borrowed
            // slice; `fd` is the open connection owned by `self.conn`.
            let r = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Pumped::Drained,
                    Some(libc::EINTR) => continue,
                    _ => return Pumped::Ended(End::Failed(e)),
                }
            }
            // Non-negative: checked above.
            #[allow(clippy::cast_sign_loss)]
            let r = r as usize;
            if r == 0 {
                // `want` is never 0 here: an incomplete record is buffered at most, and
                // the buffer holds a whole record of the largest frame.
                return Pumped::Ended(End::Eof);
            }
            self.deframer.filled(r);
        }
    }

    /// The connection is over: in listen mode count it, reset the guest, drop what was
    /// queued for it and watch for the next one; in fd mode remember why (the port is
    /// gone).
    fn end(&mut self, link: &Link, why: End) {
        let max = self.deframer.max_frame();
        if let End::BadLength(BadLength(len)) = why {
            Stats::inc(&link.stats.stream_bad_length);
            tracing::warn!(
                "QEMU sent a frame length of {len} (allowed {}..={max}); closing its connection",
                frame::MIN_FRAME
            );
        }
        if let Some(conn) = self.conn.take() {
            let fd = conn.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.want_write = false;
        self.deframer.clear();
        self.drop_to_guest(link);
        match &self.mode {
            Mode::Fd => {
                self.ended = Some(match why {
                    End::BadLength(BadLength(len)) => PortError::Io(format!(
                        "{FD_GONE}: frame length {len} out of range ({}..={max}); closed it",
                        frame::MIN_FRAME
                    )),
                    End::Eof | End::Failed(_) => PortError::Gone(FD_GONE.to_string()),
                });
            }
            Mode::Listen { path, .. } => {
                match &why {
                    End::Eof => tracing::info!("QEMU disconnected from {}", path.display()),
                    End::Failed(e) => {
                        tracing::info!("QEMU connection on {} ended: {e}", path.display())
                    }
                    End::BadLength(_) => {}
                }
                Stats::inc(&link.stats.stream_disconnects);
                link.reset_guest();
                if let Err(e) = self.watch_listener(true) {
                    self.ended = Some(PortError::Io(format!("stream port epoll: {e}")));
                }
            }
        }
    }

    /// Drop (and count) every frame for the guest: held ones and those on `to_guest`.
    fn drop_to_guest(&mut self, link: &Link) {
        let held = self.out.drain(..).map(drop).count();
        self.out_off = 0;
        let queued = std::iter::from_fn(|| link.to_guest.pop()).count();
        for _ in 0..held + queued {
            Stats::inc(&link.stats.to_guest_dropped);
            link.to_guest.count_drop();
        }
    }

    /// Write what is queued for the guest until done or the socket is full. True when
    /// nothing is left (written, or dropped for want of a connection).
    fn flush(&mut self, link: &Link) -> bool {
        loop {
            let fd = match &self.conn {
                Some(conn) if !self.write_failed => conn.as_raw_fd(),
                _ => {
                    self.drop_to_guest(link);
                    return true;
                }
            };
            while self.out.len() < WRITE_BATCH {
                let Some(mut f) = link.to_guest.pop() else {
                    break;
                };
                let len = f.len();
                f.hdr_mut()[HDR_BYTES - PREFIX_BYTES..].copy_from_slice(&frame::prefix(len));
                self.out.push_back(f);
            }
            if self.out.is_empty() {
                self.want_write(false);
                return true;
            }
            let mut iov = [IoSlice::new(&[]); WRITE_BATCH];
            let mut total = 0;
            for (i, (slot, f)) in iov.iter_mut().zip(&self.out).enumerate() {
                let skip = if i == 0 { self.out_off } else { 0 };
                let bytes = &f.slot()[HDR_BYTES - PREFIX_BYTES + skip..HDR_BYTES + f.len()];
                total += bytes.len();
                *slot = IoSlice::new(bytes);
            }
            let iovcnt = self.out.len();
            match send_vectored(fd, &iov[..iovcnt]) {
                Ok(n) => {
                    self.consume(n);
                    if n < total {
                        // The socket is full: wait for room.
                        self.want_write(true);
                        return false;
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        self.want_write(true);
                        return false;
                    }
                    Some(libc::EINTR) => {}
                    _ => match self.mode {
                        Mode::Listen { .. } => self.end(link, End::Failed(e)),
                        // Only `receive` may report the end; closing the fd here would
                        // leave nothing to wake the poll thread for it.
                        Mode::Fd => {
                            tracing::debug!("{FD_GONE}: write failed: {e}");
                            self.want_write(false);
                            self.write_failed = true;
                        }
                    },
                },
            }
        }
    }

    /// `n` bytes of the held frames were written: release the whole ones, advance into
    /// the next.
    fn consume(&mut self, mut n: usize) {
        while let Some(f) = self.out.front() {
            let left = PREFIX_BYTES + f.len() - self.out_off;
            if n < left {
                self.out_off += n;
                return;
            }
            n -= left;
            self.out_off = 0;
            self.out.pop_front();
        }
    }
}

/// Copy one frame from the staging buffer into a pool slot on `from_guest`; an empty pool
/// drops it (counted on the ring).
fn deliver(link: &Link, bytes: &[u8]) {
    let Some(mut f) = link.pool.lease() else {
        link.from_guest.count_drop();
        return;
    };
    f.capacity_mut()[..bytes.len()].copy_from_slice(bytes);
    f.set_len(bytes.len());
    link.from_guest.push(f);
}

/// `sendmsg(2)` of `iov` with `MSG_NOSIGNAL`; the bytes written.
fn send_vectored(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std's documented guarantee); the
    // kernel only reads through the pointer.
    msg.msg_iov = iov.as_ptr().cast_mut().cast();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov.len()` iovecs describing live, borrowed buffers for the
    // duration of the call; `fd` is an open socket.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // Non-negative: checked above.
    #[allow(clippy::cast_sign_loss)]
    Ok(r as usize)
}

/// Bind a listening unix socket at `path`, replacing a stale socket file (one nobody
/// listens on). A live socket or any other file there is an error.
fn bind_listener(path: &Path) -> Result<UnixListener, StreamError> {
    let owned = || path.to_path_buf();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // Non-blocking: a live listener with a full backlog answers EAGAIN instead of
            // blocking us.
            match mio::net::UnixStream::connect(path) {
                Ok(_) => return Err(StreamError::InUse(owned())),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    std::fs::remove_file(path).map_err(|source| StreamError::Stale {
                        path: owned(),
                        source,
                    })?;
                    tracing::info!("{}: replaced a stale socket", path.display());
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    return Err(StreamError::InUse(owned()))
                }
                Err(source) => {
                    return Err(StreamError::Stale {
                        path: owned(),
                        source,
                    })
                }
            }
        }
        Ok(_) => return Err(StreamError::NotASocket(owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StreamError::Stat {
                path: owned(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| StreamError::Bind {
        path: owned(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StreamError::Bind {
            path: owned(),
            source,
        })?;
    Ok(listener)
}

/// An integer socket option of `fd`.
fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// `fd` must be a stream socket (`SO_TYPE` = `SOCK_STREAM`) that is not listening.
fn check_stream_socket(fd: RawFd) -> Result<(), StreamError> {
    let not = |why: String| StreamError::NotAStream { fd, why };
    let ty = sockopt_int(fd, libc::SO_TYPE).map_err(|e| not(e.to_string()))?;
    if ty != libc::SOCK_STREAM {
        return Err(not(format!("socket type {ty}, not SOCK_STREAM")));
    }
    if sockopt_int(fd, libc::SO_ACCEPTCONN).map_err(|e| not(e.to_string()))? != 0 {
        return Err(not("it is a listening socket, not a connection".into()));
    }
    Ok(())
}

/// Bytes asked for each direction's socket buffer (the kernel caps them at
/// `net.core.wmem_max` / `rmem_max`, 208 KiB by default, and doubles what it grants).
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// Ask for large socket buffers on the connection: the guest drains its receive side in
/// bursts (a vCPU scheduled out, a full virtio ring), and with the default ~200 KiB the
/// socket fills before a TCP window's worth of frames is in flight. Best effort: a refusal
/// leaves the defaults.
fn grow_socket_buffers(fd: RawFd) {
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let v = SOCKET_BUFFER_BYTES;
        // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from `v`, a live local; `fd`
        // is an open socket the caller owns.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!("stream socket buffer: {}", io::Error::last_os_error());
        }
    }
}

fn set_nonblocking_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on an fd we own, plain integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd_fl = libc::fcntl(fd, libc::F_GETFD);
        if fd_fl < 0 || libc::fcntl(fd, libc::F_SETFD, fd_fl | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A listening socket's file, removed on drop if it is still the one bound: not a file a
/// successor put at the same path meanwhile (same device and inode).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    ident: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.ident);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The poll thread drives the stream itself: it reads when the port's epoll fd is ready
/// and writes every turn; frames carry no virtio-net header.
impl GuestPort for StreamPort {
    fn ready_fd(&self) -> Option<RawFd> {
        Some(self.poll.as_raw_fd())
    }

    fn offloads(&self) -> Offloads {
        Offloads::NONE
    }

    fn receive(&mut self, link: &Link, budget: usize) -> Result<usize, PortError> {
        let mut n = 0;
        loop {
            if let Some(e) = self.ended.take() {
                return Err(e);
            }
            if self.conn.is_none() {
                if matches!(self.mode, Mode::Fd) {
                    return Err(PortError::Gone(FD_GONE.to_string()));
                }
                if !self.accept(link)? {
                    return Ok(n);
                }
            }
            match self.pump(link, budget, &mut n) {
                Pumped::Budget | Pumped::Drained => return Ok(n),
                Pumped::Ended(why) => self.end(link, why),
            }
        }
    }

    fn transmit(&mut self, link: &Link, _queued: usize) {
        self.flush(link);
    }

    fn make_room(&mut self, link: &Link) -> bool {
        self.flush(link)
    }
}
