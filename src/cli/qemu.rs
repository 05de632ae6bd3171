//! `ringnet qemu`: serve a QEMU guest over its stream netdev
//! ([`ringnet::backend::stream::StreamPort`]).
//!
//! # Theory of operation
//!
//! `--socket PATH`: ringnet listens on a unix socket at PATH and QEMU connects to it
//! (`-netdev stream,…,server=off,addr.type=unix,addr.path=PATH`). A QEMU that disconnects
//! (quits, restarts) is counted, its guest's flows are closed, and the next connection is
//! served: ringnet itself runs until SIGINT / SIGTERM (exit 0; the socket file is removed).
//! `--fd N`: ringnet serves an already connected stream socket (one end of a socketpair
//! whose other end a VMM launcher handed QEMU, `addr.type=fd`); its hang-up is the guest
//! going away: exit 1, like a deleted TAP under `attach`.
//!
//! Everything else is `attach`'s: the same options (slot, MTU, config, policy, DNS, `-p`,
//! `--stats`, the observation services), errors as one line with exit 2. No root is needed:
//! no namespace or TAP is made. Start-up prints one line on stderr (the QEMU options to
//! use, with the slot's guest MAC); connects and disconnects are logged at info (`-v`), a
//! bad length prefix as a warning.
//!
//! The MTU is the configuration's (`interface.mtu`, 1500 by default, `--mtu`): frames from
//! the guest may be up to MTU + 14 bytes (QEMU's stream netdev carries up to 64 KiB, and
//! ringnet's DHCP tells the guest the MTU); a longer one ends the connection.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use ringnet::backend::stream::{SocketFile, StreamPort, ETHERNET_HEADER};
use ringnet::Network;

use crate::{
    block_signals, drop_privileges, finish, load_config, poll_thread_stopped, raise_fd_limit,
    wait_signal, Fail, Opts,
};

/// Where QEMU's stream comes from: exactly one of `--socket` and `--fd`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Listen on a unix socket at PATH for QEMU to connect to (a stale socket there is
    /// replaced; removed at exit); one QEMU at a time, reconnects served.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve the connected stream socket N (e.g. a socketpair end whose other end QEMU
    /// has); its hang-up stops ringnet with exit status 1.
    #[arg(long, value_name = "N")]
    pub fd: Option<RawFd>,
}

/// `ringnet qemu`: serve until a signal (exit 0), the `--fd` peer's hang-up (exit 1) or an
/// error (exit 2).
pub fn run(opts: &Opts, target: &Target) -> Result<ExitCode, Fail> {
    let sigs = block_signals();
    let cfg = load_config(opts)?;
    let mut net = Network::new(&cfg, opts.slot)?;
    raise_fd_limit(&net);
    let max_frame = net.config().mtu as usize + ETHERNET_HEADER;
    // Listen mode: the socket file, removed by this thread when `run` returns (after the
    // poll thread has stopped), not by the poll thread, whose filter allows no file calls.
    let _socket_file: Option<SocketFile>;
    let (port, serving) = match (&target.socket, target.fd) {
        (Some(path), None) => {
            let path = std::path::absolute(path)
                .map_err(|e| Fail::new(format!("--socket {}: {e}", path.display())))?;
            let mut port = StreamPort::listen(&path, max_frame)
                .map_err(|e| Fail::new(format!("--socket {e}")))?;
            _socket_file = port.take_socket_file();
            (port, Serving::Socket(path))
        }
        (None, Some(fd)) => {
            _socket_file = None;
            let port = StreamPort::from_fd(adopt_fd(fd)?, max_frame)
                .map_err(|e| Fail::new(format!("--fd: {e}")))?;
            (port, Serving::Fd(fd))
        }
        // clap's group makes it exactly one.
        _ => return Err(Fail::new("give exactly one of --socket PATH and --fd N")),
    };
    let _observers = crate::cli::Observers::start(&net, &opts.observe)?;
    net.start_port(Box::new(port))?;
    drop_privileges(&net, &[])?;
    eprintln!("ringnet: {}", serving.banner(&net));
    tracing::info!(
        slot = net.config().slot,
        mtu = net.config().mtu,
        "ringnet serving QEMU; {}",
        net.driver_note()
    );
    loop {
        if let Some(sig) = wait_signal(&sigs, Duration::from_millis(200)) {
            tracing::info!("signal {sig}: stopping");
            break;
        }
        if !net.is_running() {
            return Err(poll_thread_stopped(net, opts, &serving.gone()));
        }
    }
    finish(net, opts)?;
    Ok(ExitCode::SUCCESS)
}

/// What is served, for the start-up line and the hang-up message.
enum Serving {
    Socket(PathBuf),
    Fd(RawFd),
}

impl Serving {
    /// The start-up line: where, and the QEMU options that connect to it.
    fn banner(&self, net: &Network) -> String {
        let slot = net.config().slot;
        let device = format!("-device virtio-net-pci,netdev=n0,mac={}", net.guest_mac());
        match self {
            Serving::Socket(path) => {
                let p = path.display();
                format!(
                    "serving QEMU on {p} (slot {slot}); start QEMU with: -netdev \
                     stream,id=n0,server=off,addr.type=unix,addr.path={p} {device}"
                )
            }
            Serving::Fd(fd) => format!(
                "serving QEMU on fd {fd} (slot {slot}); QEMU takes the other end with: -netdev \
                 stream,id=n0,server=off,addr.type=fd,addr.str=ITS_FD {device}"
            ),
        }
    }

    /// Why ringnet stops when the port is gone.
    fn gone(&self) -> String {
        match self {
            Serving::Socket(p) => format!("the QEMU socket {} failed; stopping", p.display()),
            Serving::Fd(fd) => format!("QEMU's stream connection (fd {fd}) hung up; stopping"),
        }
    }
}

/// Take ownership of `--fd N` after checking it is open.
fn adopt_fd(fd: RawFd) -> Result<OwnedFd, Fail> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is safe to ask about.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Fail::new(format!("--fd {fd}: not an open file descriptor")));
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process with --fd for
    // ringnet to serve: nothing else in the process uses or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
