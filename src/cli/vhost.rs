//! `ringnet vhost-user --socket PATH [--no-offload]`: serve a VMM's virtio-net device
//! (QEMU `-netdev vhost-user`, cloud-hypervisor `--net vhost_user=true`) through the
//! library's [`ringnet::backend::vhost_user::VhostUserNet`].
//!
//! # Theory of operation
//!
//! The network starts as for an embedding VMM (`Network::start` with the embedding link);
//! the vhost-user server runs on a thread of its own and serves one VMM after the other
//! (the guest's flows are closed when one disconnects). This thread waits for SIGINT /
//! SIGTERM (exit 0), a poll thread that stopped, or a server that failed (exit 2). The
//! socket is removed on the way out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use ringnet::backend::vhost_user::VhostUserNet;
use ringnet::link::Offloads;
use ringnet::Network;

use crate::{Fail, Opts};

/// `ringnet vhost-user`'s arguments.
#[derive(Args, Debug)]
pub struct VhostArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// The vhost-user socket to listen on (a stale socket there is replaced; removed at exit).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Offer no checksum or segmentation offload (mergeable RX buffers stay offered).
    #[arg(long)]
    pub no_offload: bool,
}

/// What the device offers: checksum + TSO both ways unless `no_offload`; mergeable RX
/// buffers always (frames up to the MTU in page-sized guest buffers).
fn offered(no_offload: bool) -> Offloads {
    let base = if no_offload {
        Offloads::NONE
    } else {
        Offloads::TSO
    };
    Offloads {
        mrg_rxbuf: true,
        ..base
    }
}

/// The start-up line: where to connect and the QEMU options that do.
fn banner(net: &Network, socket: &std::path::Path) -> String {
    let p = socket.display();
    format!(
        "ringnet: serving vhost-user on {p} (slot {}); start QEMU with: -object \
         memory-backend-memfd,id=mem,size=SIZE,share=on -machine memory-backend=mem -chardev \
         socket,id=c0,path={p} -netdev vhost-user,id=n0,chardev=c0 -device \
         virtio-net-pci,netdev=n0,mac={}",
        net.config().slot,
        net.guest_mac()
    )
}

/// Run `ringnet vhost-user`.
pub fn run(args: &VhostArgs) -> Result<ExitCode, Fail> {
    let opts = &args.opts;
    let sigs = crate::block_signals();
    let cfg = crate::load_config(opts)?;
    let mut net = Network::new(&cfg, opts.slot)?;
    crate::raise_fd_limit(&net);
    let _observers = crate::cli::Observers::start(&net, &opts.observe)?;
    // Plain frames until the guest acks its features (the device hands them to the link).
    let guest = net
        .take_link_with(Offloads::NONE)
        .ok_or_else(|| Fail::new("the network's link is taken already"))?;
    let mut server = VhostUserNet::bind(guest, &args.socket, offered(args.no_offload))?;
    net.start()?;
    tracing::info!(
        slot = net.config().slot,
        features = %format_args!("{:#x}", server.features()),
        "vhost-user device ready; {}",
        net.driver_note()
    );
    eprintln!("{}", banner(&net, &args.socket));
    let stop = server.stop_handle();
    // The vhost-user thread (the crate's, unfiltered: it maps the guest's memory from fds
    // the VMM sends) starts without capabilities.
    crate::drop_privileges(&net, &[])?;
    let thread = std::thread::Builder::new()
        .name("ringnet-vhost-user".into())
        .spawn(move || server.serve())
        .map_err(|e| Fail::new(format!("spawning the vhost-user thread failed: {e}")))?;
    let failure = loop {
        if let Some(sig) = crate::wait_signal(&sigs, Duration::from_millis(200)) {
            tracing::info!("signal {sig}: stopping");
            break None;
        }
        if !net.is_running() {
            break Some(Fail::new("the poll thread stopped"));
        }
        if thread.is_finished() {
            break Some(Fail::new("the vhost-user server stopped"));
        }
    };
    stop.stop();
    let served = thread
        .join()
        .map_err(|_| Fail::new("the vhost-user thread panicked"))?;
    let finished = crate::finish(net, opts);
    served?;
    finished?;
    match failure {
        Some(f) => Err(f),
        None => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_mergeable_buffers_with_and_without_offloads() {
        assert_eq!(
            offered(false),
            Offloads {
                mrg_rxbuf: true,
                ..Offloads::TSO
            }
        );
        assert_eq!(
            offered(true),
            Offloads {
                mrg_rxbuf: true,
                ..Offloads::NONE
            }
        );
    }
}
