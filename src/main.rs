//! `ringnet`: serve a guest network namespace through a TAP device, or a QEMU guest
//! through its stream netdev.
//!
//! - `ringnet run [OPTIONS] -- CMD [ARGS…]`: a new network namespace with a TAP `eth0`,
//!   configured from the slot's derived addresses, CMD run inside it with a private
//!   `/etc/resolv.conf` naming the gateway (bind-mounted in a mount namespace of its own;
//!   the host's file is untouched); exits with CMD's status and leaves nothing behind (the
//!   namespace is anonymous). Without root, a helper makes the namespaces inside a user
//!   namespace of its own and CMD runs as uid 0 there (`cli/rootless.rs`).
//! - `ringnet attach --netns PATH [--tap NAME] [--configure]`: serve an existing namespace
//!   until SIGINT / SIGTERM, or until the guest goes away (the namespace is deleted, the TAP
//!   is deleted): then exit status 1. A TAP set down and up again keeps being served; with
//!   `--configure` it gets its addresses and routes back.
//! - `ringnet qemu [OPTIONS] --socket PATH | --fd N`: serve a QEMU guest over its stream
//!   netdev (`cli/qemu.rs`); needs no root.
//!
//! - `ringnet vhost-user --socket PATH [--no-offload]`: serve a VMM's virtio-net device
//!   over vhost-user (QEMU, cloud-hypervisor) until SIGINT / SIGTERM (`cli/vhost.rs`).
//! - `ringnet ca --out FILE [--config FILE]`: write the TLS interception CA certificate
//!   (`cli/ca.rs`).
//!
//! All take the policy (`--policy`, `--allow`, `--deny`) and the DNS upstreams (`--dns`)
//! on top of the config file.
//!
//! Every error is one line on stderr: exit status 1 when the guest went away, 2 otherwise.
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit (the command of `run` gets
//! the limit ringnet was started with), with a warning when even the hard limit is below
//! what the configured flow limits need.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use ringnet::backend::netns::{GuestLink, NetNs};
use ringnet::backend::tap::Tap;
use ringnet::backend::watch::{GuestEvent, GuestWatch};
use ringnet::config::{EgressDriver, NetworkConfig};
use ringnet::link::PortError;
use ringnet::stack::StackError;
use ringnet::{Network, NetworkError};

#[path = "cli/mod.rs"]
mod cli;

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
    /// Serve an existing network namespace until SIGINT/SIGTERM (exit 0) or until it goes
    /// away (exit 1).
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
    /// Serve a QEMU guest over its stream netdev (a unix socket QEMU connects to, or a
    /// connected socket fd) until SIGINT/SIGTERM (exit 0) or, with --fd, its hang-up
    /// (exit 1).
    Qemu {
        #[command(flatten)]
        opts: Opts,
        #[command(flatten)]
        target: cli::qemu::Target,
    },
    /// Serve a VMM's virtio-net device over a vhost-user socket (QEMU, cloud-hypervisor)
    /// until SIGINT/SIGTERM; one VMM at a time, reconnects welcome.
    #[cfg(feature = "vhost-user")]
    VhostUser(cli::vhost::VhostArgs),
    /// Ask a running ringnet's control socket (--control PATH): stats, flows, events.
    Ctl(cli::ctl::CtlArgs),
    /// Write the TLS interception CA certificate a guest must trust (generating and storing
    /// the CA in tls.ca_dir on first use).
    Ca(cli::ca::CaArgs),
    /// Internal: the namespace helper of `run` without root (`cli/rootless.rs`).
    #[command(name = "rootless-guest", hide = true)]
    RootlessGuest(cli::rootless::GuestArgs),
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
    /// The policy: a preset (allow-all, none, safe) or a TOML file with the keys of the
    /// config's [policy] table; replaces the config file's [policy].
    #[arg(long, value_name = "FILE|PRESET")]
    policy: Option<String>,
    /// Allow flows matching RULE, before the policy's own rules (first match wins; with
    /// --deny, in command-line order). RULE: [egress|ingress|both] [tcp,udp,icmp] DEST
    /// [port P[-Q],…] with DEST any, an IP or CIDR, a domain, .domain (and subdomains) or
    /// group:NAME (host, metadata, loopback, private, link-local, multicast, public).
    #[arg(long, value_name = "RULE")]
    allow: Vec<String>,
    /// Deny flows matching RULE (syntax as --allow).
    #[arg(long, value_name = "RULE")]
    deny: Vec<String>,
    /// Upstream DNS server (IP or IP:PORT), repeatable: replaces dns.servers and the
    /// host's /etc/resolv.conf.
    #[arg(long = "dns", value_name = "SERVER")]
    dns: Vec<String>,
    /// Publish a port: host clients of [BIND:]HOST_PORT reach the guest's GUEST_PORT
    /// (repeatable; ranges HOST-END[:GUEST-END]; BIND an IPv4 address or [IPv6], default
    /// 127.0.0.1; /udp for UDP).
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[BIND:]HOST_PORT[:GUEST_PORT][/udp]"
    )]
    publish: Vec<String>,
    /// How the guest sees the clients of -p ports: real (their own address and port;
    /// loopback clients as the gateway) or gateway (always the gateway).
    #[arg(long, value_name = "real|gateway")]
    client_address: Option<String>,
    /// --allow and --deny in command-line order (filled from the matches, not by clap).
    #[arg(skip)]
    rules: Vec<(ringnet::policy::Action, String)>,
    /// Print counters on exit.
    #[arg(long)]
    stats: bool,
    /// Run ringnet's threads without their seccomp allow-lists (they are on by default;
    /// also `[sandbox] seccomp = false`). Capabilities are dropped either way (`[sandbox]
    /// drop_capabilities = false` keeps them).
    #[arg(long)]
    no_seccomp: bool,
    #[command(flatten)]
    observe: cli::ObserveOpts,
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

/// A one-line failure: printed as `ringnet: …`, exit status `code`.
struct Fail {
    msg: String,
    code: u8,
}

/// Exit status: the guest went away (its namespace or TAP was deleted).
const EXIT_GUEST_GONE: u8 = 1;
/// Exit status: any other error (usage, configuration, setup, a failed poll thread).
const EXIT_ERROR: u8 = 2;

impl Fail {
    fn new(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: EXIT_ERROR,
        }
    }

    fn guest_gone(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: EXIT_GUEST_GONE,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail::new(e.to_string())
    }
}

fn main() -> ExitCode {
    // Per-flow socket buffers are large and zero-initialised. A fixed mmap threshold keeps
    // them mmap-backed: zero pages on demand and returned on close. With glibc's default
    // dynamic threshold, the first freed buffer raises the threshold and every later flow
    // would memset its buffers from the heap.
    // SAFETY: mallopt(3) only adjusts allocator tuning; called before any other thread runs.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let cli = match parsed {
        Ok((c, m)) => {
            let mut c = c;
            if let Some((_, sub)) = m.subcommand() {
                match &mut c.cmd {
                    Cmd::Run { opts, .. } | Cmd::Attach { opts, .. } | Cmd::Qemu { opts, .. } => {
                        opts.rules = ordered_rules(sub);
                    }
                    #[cfg(feature = "vhost-user")]
                    Cmd::VhostUser(args) => args.opts.rules = ordered_rules(sub),
                    Cmd::Ctl(_) | Cmd::Ca(_) | Cmd::RootlessGuest(_) => {}
                }
            }
            c
        }
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
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match &cli.cmd {
        Cmd::Run { opts, .. } => init_logging(opts.verbose, false),
        Cmd::Attach { opts, .. } => init_logging(opts.verbose, true),
        Cmd::Qemu { opts, .. } => init_logging(opts.verbose, false),
        #[cfg(feature = "vhost-user")]
        Cmd::VhostUser(args) => init_logging(args.opts.verbose, true),
        Cmd::Ctl(_) | Cmd::Ca(_) | Cmd::RootlessGuest(_) => init_logging(0, false),
    }
    let result = match cli.cmd {
        Cmd::Run { opts, command } => run(&opts, &command),
        Cmd::Attach {
            opts,
            netns,
            tap,
            configure,
        } => attach(&opts, &netns, &tap, configure),
        Cmd::Qemu { opts, target } => cli::qemu::run(&opts, &target),
        #[cfg(feature = "vhost-user")]
        Cmd::VhostUser(args) => cli::vhost::run(&args),
        Cmd::Ctl(args) => cli::ctl::run(&args).map_err(Fail::new),
        Cmd::Ca(args) => cli::ca::run(&args).map_err(Fail::new),
        Cmd::RootlessGuest(args) => Ok(cli::rootless::guest(&args)),
    };
    match result {
        Ok(code) => code,
        Err(Fail { msg, code }) => {
            eprintln!("ringnet: {msg}");
            ExitCode::from(code)
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

/// `--allow` and `--deny` values in command-line order.
fn ordered_rules(m: &ArgMatches) -> Vec<(ringnet::policy::Action, String)> {
    use ringnet::policy::Action;
    let mut rules: Vec<(usize, Action, String)> = Vec::new();
    for (id, action) in [("allow", Action::Allow), ("deny", Action::Deny)] {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_many::<String>(id)) {
            rules.extend(idx.zip(vals).map(|(i, v)| (i, action, v.clone())));
        }
    }
    rules.sort_by_key(|r| r.0);
    rules.into_iter().map(|(_, a, v)| (a, v)).collect()
}

/// Apply `--policy`, `--allow`, `--deny`, `-p`, `--client-address` and `--dns` to `cfg`.
fn network_flags(opts: &Opts, cfg: &mut NetworkConfig) -> Result<(), Fail> {
    use ringnet::policy::syntax::{PolicyConfig, RuleConfig};
    use ringnet::policy::{Preset, Rule};
    if let Some(p) = &opts.policy {
        cfg.policy = if Preset::from_name(p).is_ok() {
            PolicyConfig {
                preset: Some(p.clone()),
                ..PolicyConfig::default()
            }
        } else {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Fail::new(format!(
                    "--policy {p}: not a preset (allow-all, none, safe) and not a readable file: {e}"
                ))
            })?;
            toml::from_str::<PolicyConfig>(&text).map_err(|e| {
                let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
                Fail::new(format!("--policy {p}: {msg}"))
            })?
        };
    }
    let mut flags = Vec::new();
    for (action, text) in &opts.rules {
        let flag = ringnet::policy::syntax::action_name(*action);
        let rule = Rule::parse(*action, text).map_err(|e| Fail::new(format!("--{flag}: {e}")))?;
        flags.push(RuleConfig::Text(rule.to_string()));
    }
    cfg.policy.rules.splice(0..0, flags);
    let client_address = match &opts.client_address {
        Some(c) => c
            .parse()
            .map_err(|e| Fail::new(format!("--client-address: {e}")))?,
        None => ringnet::config::ClientAddress::Real,
    };
    for arg in &opts.publish {
        let specs = ringnet::config::PortSpec::parse_list(arg)
            .map_err(|e| Fail::new(format!("-p: {e}")))?;
        cfg.ports.extend(specs.into_iter().map(|mut s| {
            s.client_address = client_address;
            s
        }));
    }
    if !opts.dns.is_empty() {
        cfg.dns.servers = opts
            .dns
            .iter()
            .map(|s| s.parse().map_err(|e| Fail::new(format!("--dns: {e}"))))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
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
            return Err(Fail::new(format!(
                "--cpu {cpu}: this machine has CPUs 0..{cpus}"
            )));
        }
        cfg.egress.cpu = Some(cpu);
    }
    if let Some(driver) = opts.egress {
        cfg.egress.driver = driver;
    }
    network_flags(opts, &mut cfg)?;
    // The binary's defaults: sandboxed (the library's: not).
    if opts.no_seccomp {
        cfg.sandbox.seccomp = Some(false);
    }
    cfg.sandbox.seccomp.get_or_insert(true);
    cfg.sandbox.drop_capabilities.get_or_insert(true);
    cfg.validate()?;
    Ok(cfg)
}

/// After start: drop the main thread's capabilities but `keep` (and with them those of the
/// threads it starts later) and set `no_new_privs`, when `[sandbox] drop_capabilities`.
/// Not for `run`, whose main thread starts the command.
fn drop_privileges(net: &Network, keep: &[u32]) -> Result<(), Fail> {
    use ringnet::sandbox::caps;
    if !net.config().sandbox.drop_capabilities() {
        return Ok(());
    }
    let dropped =
        caps::drop_all_but(keep).map_err(|e| Fail::new(format!("dropping capabilities: {e}")))?;
    caps::no_new_privs().map_err(|e| Fail::new(format!("setting no_new_privs: {e}")))?;
    tracing::debug!(
        ?keep,
        bounding_set_cleared = dropped.bounding,
        "capabilities dropped"
    );
    Ok(())
}

fn check_privileges() -> Result<(), Fail> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Fail::new(
            "attach must run as root (it enters an existing network namespace and opens a TAP \
             there); `ringnet run` works without root",
        ));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Fail::new("/dev/net/tun is missing (load the tun module)"));
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

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (every guest flow is a host socket) and
/// warn, in one line, when even that is below `wanted`. Returns the limit as it was, for
/// the command `run` starts (a program may rely on its inherited soft limit, e.g. for
/// `select(2)`).
fn raise_fd_limit(net: &Network) -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        tracing::warn!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    let original = lim;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit(2) reads the live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::debug!("raising RLIMIT_NOFILE to {} failed: {e}", lim.rlim_max);
        }
    }
    let wanted = net.fds_wanted();
    if lim.rlim_cur < wanted {
        let c = net.config();
        tracing::warn!(
            "open files limit {} (RLIMIT_NOFILE, hard limit {}) is below the {wanted} that \
             max_connections {} + max_udp_flows {} + {} for closing sockets and ringnet's own \
             files need: guest connections beyond it are refused and datagrams dropped \
             (counted in host_fd_exhausted); raise `ulimit -n`",
            lim.rlim_cur,
            lim.rlim_max,
            c.max_connections,
            c.egress.max_udp_flows,
            wanted - (c.max_connections + c.egress.max_udp_flows) as u64,
        );
    }
    Some(original)
}

/// A started network serving a TAP.
struct Serving {
    net: Network,
    /// The TAP's name in the guest namespace.
    tap: String,
    /// Control socket, metrics endpoint, rate line, capture: stopped when dropped (after
    /// the network).
    observers: cli::Observers,
}

/// The configured network, not started yet, and `RLIMIT_NOFILE` as ringnet was started with
/// it (the limit is raised here).
fn open_network(opts: &Opts) -> Result<(Network, Option<libc::rlimit>), Fail> {
    let cfg = load_config(opts)?;
    let net = Network::new(&cfg, opts.slot)?;
    let nofile = raise_fd_limit(&net);
    Ok((net, nofile))
}

/// Open (and with `configure`, configure) the TAP in `ns` and serve it.
fn start(opts: &Opts, ns: &NetNs, tap_name: &str, configure: bool) -> Result<Serving, Fail> {
    let (net, _) = open_network(opts)?;
    let name = tap_name.to_string();
    let tap = ns.run(move || Tap::open(&name))??;
    if configure {
        ns.configure_guest(tap.name(), net.config())?;
    }
    serve(opts, net, tap)
}

/// Start the observers and the poll thread serving `tap`.
fn serve(opts: &Opts, mut net: Network, tap: Tap) -> Result<Serving, Fail> {
    let tap_name = tap.name().to_string();
    let observers = cli::Observers::start(&net, &opts.observe)?;
    net.start_port(Box::new(tap))?;
    let c = net.config();
    let family = |f: Option<(std::net::IpAddr, std::net::IpAddr)>| {
        f.map_or_else(|| "off".to_string(), |(g, gw)| format!("{g} via {gw}"))
    };
    tracing::info!(
        slot = c.slot,
        mtu = c.mtu,
        ipv4 = %family(c.ipv4.map(|s| (s.guest.into(), s.gateway.into()))),
        ipv6 = %family(c.ipv6.map(|s| (s.guest.into(), s.gateway.into()))),
        dns = %dns_note(c),
        policy = %policy_note(&c.policy),
        ports = c.ports.len(),
        "ringnet serving; {}",
        net.driver_note()
    );
    Ok(Serving {
        net,
        tap: tap_name,
        observers,
    })
}

/// The DNS upstreams for the start-up line.
fn dns_note(c: &ringnet::SlotConfig) -> String {
    if c.dns.servers.is_empty() {
        return "no upstream".into();
    }
    let v: Vec<String> = c.dns.servers.iter().map(ToString::to_string).collect();
    v.join(",")
}

/// The policy for the start-up line.
fn policy_note(p: &ringnet::policy::Policy) -> String {
    use ringnet::policy::syntax::action_name;
    if p.allows_all() {
        return "allow-all".into();
    }
    format!(
        "{} rules, default egress {} ingress {}",
        p.rules.len(),
        action_name(p.default_egress),
        action_name(p.default_ingress)
    )
}

fn finish(mut net: Network, opts: &Opts) -> Result<(), NetworkError> {
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
    r
}

/// The poll thread has stopped on its own: shut down and say why, as the error to exit
/// with (the port gone — `gone` says how — is the guest going away).
fn poll_thread_stopped(net: Network, opts: &Opts, gone: &str) -> Fail {
    if let Some(event) = net.termination().fired() {
        let _ = finish(net, opts);
        return Fail::new(format!("terminated on {event}"));
    }
    match finish(net, opts) {
        Err(NetworkError::Stack(StackError::Port(PortError::Gone(_)))) => Fail::guest_gone(gone),
        Err(e) => Fail::from(e),
        Ok(()) => Fail::new("the poll thread stopped unexpectedly"),
    }
}

fn run(opts: &Opts, command: &[String]) -> Result<ExitCode, Fail> {
    let rootless = cli::rootless::needed()?;
    let sigs = block_signals();
    let (net, nofile) = open_network(opts)?;
    let resolv = GuestResolvConf::write(&net);
    let resolv_path = resolv.as_ref().map(|r| r.path.as_path());
    // Kept until the command ended: it may read the bundle at any time.
    let ca_bundle = cli::ca::GuestCaBundle::write(&net).map_err(Fail::new)?;
    let mut env: Vec<(OsString, OsString)> = net
        .guest_env_vars()
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    if let Some(b) = &ca_bundle {
        env.extend(b.env().map(|(k, p)| (k.into(), p.into())));
    }
    // The namespace: held until ringnet exits, so the TAP outlives whatever the command
    // leaves behind.
    let (_ns, serving, mut child) = if rootless {
        let link = GuestLink::of(net.config());
        let mut guest =
            cli::rootless::Guest::spawn(&link, "eth0", resolv_path, command, &env, nofile)?;
        let (tap, ns) = guest.receive()?;
        let serving = serve(opts, net, tap).map_err(|f| Fail {
            msg: cli::rootless::port_hint(f.msg),
            code: f.code,
        })?;
        (ns, serving, guest.go()?)
    } else {
        let ns = NetNs::create()?;
        let tap = ns.run(|| Tap::open("eth0"))??;
        ns.configure_guest(tap.name(), net.config())?;
        let serving = serve(opts, net, tap)?;
        let mut cmd = match resolv_path {
            Some(path) => ns.command_with_resolv_conf(&command[0], path)?,
            None => ns.command(&command[0]),
        };
        cmd.args(&command[1..]).envs(env);
        if let Some(lim) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the forked child before exec and only calls setrlimit(2),
            // which is async-signal-safe; `lim` is a copied plain value.
            unsafe {
                cmd.pre_exec(move || {
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| Fail::new(format!("cannot run {:?}: {e}", command[0])))?;
        (ns, serving, child)
    };
    let Serving {
        net,
        tap,
        observers: _observers,
    } = serving;
    // Mounted in the child's own mount namespace by now: the file can go.
    drop(resolv);
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
            let gone = format!("the guest's TAP {tap} was deleted; stopping");
            return Err(poll_thread_stopped(net, opts, &gone));
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

/// The resolv.conf `run` gives its command: the gateway addresses as nameservers.
struct GuestResolvConf {
    path: PathBuf,
}

impl GuestResolvConf {
    /// Write it to a private temporary file; `None` (with a warning) when the guest has no
    /// address family or the host has no /etc/resolv.conf to mount over.
    fn write(net: &Network) -> Option<GuestResolvConf> {
        let c = net.config();
        let gateways: Vec<String> = [
            c.ipv4.map(|s| s.gateway.to_string()),
            c.ipv6.map(|s| s.gateway.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if gateways.is_empty() {
            return None;
        }
        if std::fs::metadata("/etc/resolv.conf").is_err() {
            tracing::warn!(
                "/etc/resolv.conf is missing (or a dangling link): the command keeps the \
                 host's resolver settings; point it at {} yourself",
                gateways.join(" or ")
            );
            return None;
        }
        let mut text = String::from("# ringnet run: the gateway answers DNS\n");
        for g in &gateways {
            text.push_str(&format!("nameserver {g}\n"));
        }
        let path = std::env::temp_dir().join(format!(
            "ringnet-{}-{}-resolv.conf",
            std::process::id(),
            c.slot
        ));
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => Some(GuestResolvConf { path }),
            Err(e) => {
                tracing::warn!(
                    "cannot write {}: {e}; the command keeps the host's resolver settings",
                    path.display()
                );
                None
            }
        }
    }
}

impl Drop for GuestResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
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
    let Serving {
        net,
        tap,
        observers: _observers,
        ..
    } = start(opts, &ns, tap, configure)?;
    let mut watch = Some(GuestWatch::new(&ns, Some(netns), &tap)?);
    // The TAP is open and the watch's netlink socket made inside the namespace: nothing
    // needs a capability any more, but `--configure`, which runs `ip` inside the namespace
    // again when the guest sets its TAP up (entering it needs CAP_SYS_ADMIN, `ip`
    // CAP_NET_ADMIN).
    {
        use ringnet::sandbox::caps::{CAP_NET_ADMIN, CAP_SYS_ADMIN};
        let keep: &[u32] = if configure {
            &[CAP_NET_ADMIN, CAP_SYS_ADMIN]
        } else {
            &[]
        };
        drop_privileges(&net, keep)?;
    }
    loop {
        if let Some(sig) = wait_signal(&sigs, Duration::from_millis(200)) {
            tracing::info!("signal {sig}: stopping");
            break;
        }
        if !net.is_running() {
            let gone = format!("the guest's TAP {tap} was deleted; stopping");
            return Err(poll_thread_stopped(net, opts, &gone));
        }
        let event = match watch.as_mut().map(GuestWatch::check) {
            None | Some(Ok(None)) => continue,
            Some(Err(e)) => {
                tracing::warn!("{e}; no longer watching the guest");
                watch = None;
                continue;
            }
            Some(Ok(Some(event))) => event,
        };
        let gone = match event {
            GuestEvent::NamespaceGone(why) => {
                format!("the guest namespace {} {why}; stopping", netns.display())
            }
            GuestEvent::LinkGone => {
                format!("the guest's TAP {tap} was deleted; stopping")
            }
            GuestEvent::LinkDown => {
                tracing::info!("the guest set {tap} down; frames to it are dropped until it is up");
                continue;
            }
            GuestEvent::LinkUp => {
                if !configure {
                    tracing::info!("the guest set {tap} up again");
                } else if let Err(e) = ns.configure_guest(&tap, net.config()) {
                    tracing::warn!("{tap} is up again, but configuring it failed: {e}");
                } else {
                    let what = if net.config().is_offline() {
                        "link settings restored (offline: no addresses)"
                    } else {
                        "addresses and routes restored"
                    };
                    tracing::info!("{tap} is up again: {what}");
                }
                continue;
            }
        };
        if net.termination().fired().is_some() {
            // The network was terminated (its poll thread closed the TAP, which the watch
            // saw first): say why, not "deleted".
            return Err(poll_thread_stopped(net, opts, &gone));
        }
        net.termination()
            .trigger(ringnet::observe::TermEvent::GuestGone);
        // Dropping the namespace and TAP fds lets the kernel free a deleted namespace. The
        // poll thread may have stopped on the deleted TAP meanwhile: the line above says it.
        if let Err(e) = finish(net, opts) {
            tracing::debug!("poll thread: {e}");
        }
        return Err(Fail::guest_gone(gone));
    }
    finish(net, opts)?;
    Ok(ExitCode::SUCCESS)
}
