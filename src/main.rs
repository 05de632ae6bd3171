//! `ringnet`: serve a guest network namespace through a TAP device.
//!
//! - `ringnet run [OPTIONS] -- CMD [ARGS…]`: a new network namespace with a TAP `eth0`,
//!   configured from the slot's derived addresses, CMD run inside it; exits with CMD's
//!   status and leaves nothing behind (the namespace is anonymous).
//! - `ringnet attach --netns PATH [--tap NAME] [--configure]`: serve an existing namespace
//!   until SIGINT / SIGTERM.
//!
//! Every error is one line on stderr and exit status 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use ringnet::backend::netns::NetNs;
use ringnet::backend::tap::Tap;
use ringnet::config::{EgressDriver, NetworkConfig};
use ringnet::Network;

#[derive(Parser, Debug)]
#[command(
    name = "ringnet",
    version,
    about = "Userspace network data plane for microVMs and sandboxes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run CMD in a new network namespace served by ringnet.
    Run {
        #[command(flatten)]
        opts: Opts,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Serve an existing network namespace until SIGINT/SIGTERM.
    Attach {
        #[command(flatten)]
        opts: Opts,
        /// The namespace, e.g. /run/netns/NAME or /proc/PID/ns/net.
        #[arg(long)]
        netns: PathBuf,
        /// TAP device to open (created when missing).
        #[arg(long, default_value = "eth0")]
        tap: String,
        /// Configure addresses, routes and MTU of the TAP inside the namespace.
        #[arg(long)]
        configure: bool,
    },
}

#[derive(Args, Debug)]
struct Opts {
    /// Sandbox slot: selects MAC and addresses (0..=65535).
    #[arg(long, default_value_t = 0)]
    slot: u32,
    /// Guest MTU (576..=65520); overrides the config file.
    #[arg(long)]
    mtu: Option<u32>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Pin the poll thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Egress driver.
    #[arg(long, value_parser = egress_driver_parser())]
    egress: Option<EgressDriver>,
    /// Print counters on exit.
    #[arg(long)]
    stats: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// `--egress`: one of the names of [`EgressDriver::ALL`] (clap lists them in `--help` and in
/// the error for any other value), parsed by `EgressDriver`'s `FromStr`.
fn egress_driver_parser() -> impl TypedValueParser<Value = EgressDriver> {
    PossibleValuesParser::new(EgressDriver::ALL.map(EgressDriver::name))
        .try_map(|name| name.parse::<EgressDriver>())
}

/// A one-line failure: printed as `ringnet: …`, exit status 2.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    // Per-flow socket buffers are large and zero-initialised. A fixed mmap threshold keeps
    // them mmap-backed: zero pages on demand and returned on close. With glibc's default
    // dynamic threshold, the first freed buffer raises the threshold and every later flow
    // would memset its buffers from the heap.
    // SAFETY: mallopt(3) only adjusts allocator tuning; called before any other thread runs.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message, up to its blank line before "Usage:", on one line.
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("ringnet: {first} (see ringnet --help)");
            return ExitCode::from(2);
        }
    };
    match &cli.cmd {
        Cmd::Run { opts, .. } => init_logging(opts.verbose, false),
        Cmd::Attach { opts, .. } => init_logging(opts.verbose, true),
    }
    let result = match cli.cmd {
        Cmd::Run { opts, command } => run(&opts, &command),
        Cmd::Attach {
            opts,
            netns,
            tap,
            configure,
        } => attach(&opts, &netns, &tap, configure),
    };
    match result {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("ringnet: {msg}");
            ExitCode::from(2)
        }
    }
}

/// `attach` is a service: its start-up line (addresses, egress driver and why) is shown by
/// default. `run` wraps a command and stays quiet unless asked.
fn init_logging(verbose: u8, service: bool) {
    let level = match verbose + u8::from(service) {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn load_config(opts: &Opts) -> Result<NetworkConfig, Fail> {
    let mut cfg = match &opts.config {
        Some(path) => NetworkConfig::load(path)?,
        None => NetworkConfig::default(),
    };
    if let Some(mtu) = opts.mtu {
        cfg.interface.mtu = mtu;
    }
    if let Some(cpu) = opts.cpu {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpu >= cpus {
            return Err(Fail(format!(
                "--cpu {cpu}: this machine has CPUs 0..{cpus}"
            )));
        }
        cfg.egress.cpu = Some(cpu);
    }
    if let Some(driver) = opts.egress {
        cfg.egress.driver = driver;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn check_privileges() -> Result<(), Fail> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Fail(
            "must run as root (it creates network namespaces and TAP devices)".into(),
        ));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Fail("/dev/net/tun is missing (load the tun module)".into()));
    }
    Ok(())
}

/// Block the termination signals in this thread (and the threads it spawns later) so they
/// are taken with `sigtimedwait`; children unblock them before exec.
fn block_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before use; the calls take
    // pointers to this live local only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait up to `timeout` for one of the blocked signals; returns it.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are live; a null siginfo pointer is allowed.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

fn start(opts: &Opts, ns: &NetNs, tap_name: &str, configure: bool) -> Result<Network, Fail> {
    let cfg = load_config(opts)?;
    let mut net = Network::new(&cfg, opts.slot)?;
    let name = tap_name.to_string();
    let tap = ns.run(move || Tap::open(&name))??;
    if configure {
        ns.configure_guest(tap.name(), net.config())?;
    }
    net.start_tap(tap)?;
    let c = net.config();
    tracing::info!(
        slot = c.slot,
        mtu = c.mtu,
        ipv4 = ?c.ipv4.map(|s| (s.guest, s.gateway)),
        ipv6 = ?c.ipv6.map(|s| (s.guest, s.gateway)),
        "ringnet serving; {}",
        net.driver_note()
    );
    Ok(net)
}

fn finish(mut net: Network, opts: &Opts) -> Result<(), Fail> {
    let r = net.shutdown();
    if opts.stats {
        let c = net.link_counters();
        eprintln!(
            "from_guest frames {} bytes {} drops {}\nto_guest frames {} bytes {} drops {}",
            c.from_guest_frames,
            c.from_guest_bytes,
            c.from_guest_drops,
            c.to_guest_frames,
            c.to_guest_bytes,
            c.to_guest_drops
        );
        eprint!("{}", net.stats().render());
    }
    r.map_err(Fail::from)
}

fn run(opts: &Opts, command: &[String]) -> Result<ExitCode, Fail> {
    check_privileges()?;
    let sigs = block_signals();
    let ns = NetNs::create()?;
    let net = start(opts, &ns, "eth0", true)?;
    let mut child = ns
        .command(&command[0])
        .args(&command[1..])
        .envs(net.guest_env_vars())
        .spawn()
        .map_err(|e| Fail(format!("cannot run {:?}: {e}", command[0])))?;
    let pid = child.id() as libc::pid_t;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if let Some(sig) = wait_signal(&sigs, Duration::from_millis(50)) {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(pid, sig) };
        }
        if !net.is_running() {
            // The poll thread died: stop the command and report the error.
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
            finish(net, opts)?;
            return Err(Fail("the poll thread stopped unexpectedly".into()));
        }
    };
    finish(net, opts)?;
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn attach(
    opts: &Opts,
    netns: &std::path::Path,
    tap: &str,
    configure: bool,
) -> Result<ExitCode, Fail> {
    check_privileges()?;
    let sigs = block_signals();
    let ns = NetNs::open(netns)?;
    let net = start(opts, &ns, tap, configure)?;
    loop {
        if let Some(sig) = wait_signal(&sigs, Duration::from_millis(200)) {
            tracing::info!("signal {sig}: stopping");
            break;
        }
        if !net.is_running() {
            finish(net, opts)?;
            return Err(Fail("the poll thread stopped unexpectedly".into()));
        }
    }
    finish(net, opts)?;
    Ok(ExitCode::SUCCESS)
}
