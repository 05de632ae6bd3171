//! QEMU guests on ringnet against passt and QEMU's own user networking, in one run with the
//! same guest (the VM kit, tests/common/vmkit.rs). Perf only: `#[ignore]`d, run by
//! `perf/vm.sh` (`cargo test --release --test vm_perf -- --ignored --nocapture`).
//!
//! # Theory of operation
//!
//! ```text
//!   HostNs (VmWorld: sink0 198.51.100.7, dnsmasq)         one for the whole run
//!   ├─ rrbench bulk   198.51.100.7:15001 sink, :15002 source (VM_PERF_MB MiB)
//!   ├─ rrbench server 198.51.100.7:7801 (TCP echo)
//!   └─ per boot: the backend + qemu-system-x86_64 (TCG, 1 vCPU, 256 MiB)
//!        guest /test.sh = settings + tests/vm/perf.sh + tests/vm/guest.sh, /rrbench static
//!        dhcp → perf_mtu → perf_up → perf_down → perf_rr → features
//! ```
//!
//! Backends (`VM_PERF_BACKENDS`, default all four, in this order):
//! - `ringnet-stream`: `ringnet qemu --mtu M --socket S`, `-netdev stream`
//!   (`VM_PERF_RINGNET_ARGS`: more arguments for both ringnet backends, split at spaces);
//! - `ringnet-vhost-user`: `ringnet vhost-user --mtu M --socket S`, `-netdev vhost-user`
//!   (guest RAM in a shared memfd; offloads as ringnet negotiates them);
//! - `passt`: Debian's passt, `--mtu M` (its DHCP offers 65520 otherwise), `-netdev stream`;
//! - `user`: QEMU's own slirp (`-netdev user`; no MTU option: the guest stays at 1500).
//!
//! ringnet runs without `--pcap` and `--stats` (a capture costs per frame). A ringnet
//! backend whose subcommand the binary lacks (`RINGNET_BIN`, default the one cargo built)
//! fails the test before the first boot, naming it.
//!
//! One run = `VM_PERF_RUNS` rounds; each round boots one fresh guest and one fresh backend
//! per backend, in order, so drift (thermal, a noisy neighbour) hits all backends alike.
//! Per boot the guest sets eth0's MTU to `VM_PERF_MTU` and runs three rrbench clients
//! (perf/rrbench.c, `gcc -static -O2`, in the test's cpio):
//! - `up`: `tcp_up`, VM_PERF_MB MiB of zeros from one static buffer to the sink, then
//!   shutdown and wait for the sink's close;
//! - `down`: `tcp_down`, the same amount from the source until EOF;
//! - `rr`: `tcp_rr`, 1-byte ping-pong for VM_PERF_RR_SECONDS s (p50/p99, transactions/s).
//!
//! Bulk rates are timed on the host, by the bulk server (from accept to EOF for `up`, from
//! accept to the guest's close after EOF for `down`): the host's monotonic clock, not the
//! TCG guest's; the guest's own timing is kept in the JSON lines as a cross-check. RR is
//! timed by the client in the guest (every transaction, CLOCK_MONOTONIC). C clients, not
//! `dd | nc`: under TCG the guest's CPU is the bottleneck, and a pipe and a second copy
//! would flatten the differences between backends.
//!
//! CPU: before each client the guest prints `info begin NAME` and sleeps 0.3 s; the test
//! reads the CPU time of the backend's process tree (all threads: `schedstat`, ns; else
//! utime+stime) and of QEMU's then, and again at the client's result line. For `user` the
//! network is inside QEMU, so it has no backend CPU column.
//!
//! Output: one markdown table (medians; per cell the ratio to passt oriented so > 1 is
//! better: rates x/passt, latencies and CPU passt/x) in
//! `perf/results/<stamp>-<host>-vm.md` (`VM_PERF_OUT` another directory, `VM_PERF_TAG`
//! another stamp; perf/vm.sh passes `PERF_TAG` as it), one JSON line per
//! boot in `…-vm.jsonl`, both also printed. A failed boot is recorded and the rounds go on;
//! the test fails at the end if any boot failed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PERF_SH: &str = include_str!("vm/perf.sh");
const BULK_PORT: u16 = 15001;
const RR_PORT: u16 = 7801;
/// One boot's deadline: boot, DHCP, both bulk transfers at a few MiB/s, RR.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const ALL_BACKENDS: &[&str] = &["ringnet-stream", "ringnet-vhost-user", "passt", "user"];

/// The knobs (environment), with their defaults.
#[derive(Clone, Debug)]
struct Knobs {
    backends: Vec<String>,
    runs: u32,
    mib: u64,
    rr_seconds: f64,
    mtu: u32,
    out: PathBuf,
    tag: Option<String>,
}

impl Knobs {
    fn from_env() -> Knobs {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
                _ => default,
            }
        }
        let backends: Vec<String> = std::env::var("VM_PERF_BACKENDS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map_or_else(
                || ALL_BACKENDS.iter().map(|s| s.to_string()).collect(),
                |v| v.split_whitespace().map(str::to_string).collect(),
            );
        for b in &backends {
            assert!(
                ALL_BACKENDS.contains(&b.as_str()),
                "VM_PERF_BACKENDS: unknown backend {b} (known: {})",
                ALL_BACKENDS.join(" ")
            );
        }
        Knobs {
            backends,
            runs: var("VM_PERF_RUNS", 3u32).max(1),
            mib: var("VM_PERF_MB", 64u64).max(1),
            rr_seconds: var("VM_PERF_RR_SECONDS", 5.0f64),
            mtu: var("VM_PERF_MTU", 1500u32),
            out: std::env::var_os("VM_PERF_OUT").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/results"),
                PathBuf::from,
            ),
            tag: std::env::var("VM_PERF_TAG").ok().filter(|t| !t.is_empty()),
        }
    }

    fn bytes(&self) -> u64 {
        self.mib << 20
    }
}

/// The ringnet subcommand of a backend (None: not ringnet).
fn ringnet_sub(backend: &str) -> Option<&'static str> {
    match backend {
        "ringnet-stream" => Some("qemu"),
        "ringnet-vhost-user" => Some("vhost-user"),
        _ => None,
    }
}

/// Why this run cannot start (empty: it can).
fn preflight(k: &Knobs) -> Vec<String> {
    let mut tools: Vec<&str> = VM_TOOLS.to_vec();
    tools.push("gcc");
    if k.backends.iter().any(|b| b == "passt") {
        tools.push("passt");
    }
    let mut missing = missing_privileges(&tools);
    for b in &k.backends {
        if let Some(sub) = ringnet_sub(b) {
            if let Some(why) = missing_subcommand(sub) {
                missing.push(format!(
                    "{b}: {why} ({}); leave {b} out of VM_PERF_BACKENDS or point RINGNET_BIN \
                     at a build that has it",
                    ringnet_bin()
                ));
            }
        }
    }
    missing
}

/// `gcc -static -O2 perf/rrbench.c` (static: the guest has no libc).
fn build_rrbench() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm_perf");
    fs::create_dir_all(&dir).expect("mkdir vm_perf");
    let bin = dir.join("rrbench");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/rrbench.c");
    let out = run(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(&src),
        SHORT,
    );
    assert!(
        out.success(),
        "gcc -static perf/rrbench.c failed (libc6-dev has the static libc): {out}"
    );
    fs::read(&bin).expect("reading rrbench")
}

// ---------------------------------------------------------------------------------------
// CPU time
// ---------------------------------------------------------------------------------------

/// CPU time in ms of `pid` and all its descendants: the sum over their threads of
/// `/proc/PID/task/TID/schedstat`'s first field (ns on the CPU; `proc(5)`), or of
/// utime+stime from `/proc/PID/stat` (clock ticks) where schedstat is missing. A process or
/// thread that exited meanwhile is not counted (backends keep theirs for the whole run).
fn tree_cpu_ms(pid: u32) -> f64 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(f) = stat_fields(&e.path().join("stat")) {
            parent.insert(p, f[1].parse().unwrap_or(0));
        }
    }
    let in_tree = |mut p: u32| {
        for _ in 0..64 {
            if p == pid {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 && pp != p => p = pp,
                _ => return false,
            }
        }
        false
    };
    parent
        .keys()
        .filter(|p| in_tree(**p))
        .map(|p| process_cpu_ms(*p))
        .sum()
}

/// The fields of a `/proc/…/stat` after `comm` (the first is field 3, state).
fn stat_fields(path: &Path) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    (f.len() > 12).then_some(f)
}

fn process_cpu_ms(pid: u32) -> f64 {
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let mut ns = 0u64;
    let mut any = false;
    for t in fs::read_dir(&task).into_iter().flatten().flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("schedstat")) {
            if let Some(v) = s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e6;
    }
    // utime and stime are fields 14 and 15, counted for all threads.
    let Some(f) = stat_fields(&PathBuf::from(format!("/proc/{pid}/stat"))) else {
        return 0.0;
    };
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 * 1000.0 / hz
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// A started backend: the netdev QEMU gets and the process (None for `user`).
enum Running {
    Ringnet(VmmBackend),
    Passt(Bg),
    User,
}

impl Running {
    fn start(backend: &str, world: &VmWorld, mtu: u32) -> (Running, Vec<String>) {
        let mtu_s = mtu.to_string();
        match backend {
            "ringnet-stream" | "ringnet-vhost-user" => {
                let sub = ringnet_sub(backend).expect("ringnet backend");
                let extra = std::env::var("VM_PERF_RINGNET_ARGS").unwrap_or_default();
                let mut args = vec!["--mtu", &mtu_s];
                args.extend(extra.split_whitespace());
                let rn = VmmBackend::start_with(world, sub, &args, false);
                let net = if sub == "qemu" {
                    net_stream(&rn.socket)
                } else {
                    net_vhost_user(&rn.socket)
                };
                (Running::Ringnet(rn), net)
            }
            "passt" => {
                let sock = world.dir.join("passt.sock");
                let _ = fs::remove_file(&sock);
                let sock_s = sock.to_str().expect("utf-8 path").to_string();
                let mut bg = world.host.spawn(&[
                    "passt",
                    "--foreground",
                    "--stderr",
                    "--socket",
                    &sock_s,
                    "-a",
                    "10.0.2.15",
                    "-n",
                    "24",
                    "-g",
                    "10.0.2.2",
                    "-a",
                    "2001:db8::15",
                    "-g",
                    "2001:db8::1",
                    "-D",
                    SINK_V4,
                    "-m",
                    &mtu_s,
                ]);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !sock.exists() {
                    bg.assert_alive();
                    assert!(
                        Instant::now() < deadline,
                        "passt made no socket within 10 s; stderr:\n{}",
                        bg.stderr()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                (Running::Passt(bg), net_stream(&sock))
            }
            "user" => (Running::User, net_user("")),
            other => panic!("unknown backend {other}"),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Running::Ringnet(rn) => Some(rn.pid()),
            Running::Passt(bg) => Some(bg.pid()),
            Running::User => None,
        }
    }

    fn stderr(&self) -> String {
        match self {
            Running::Ringnet(rn) => rn.stderr(),
            Running::Passt(bg) => bg.stderr(),
            Running::User => String::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One boot
// ---------------------------------------------------------------------------------------

/// The three tests of a boot.
const TESTS: &[&str] = &["up", "down", "rr"];

/// What one boot measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// rrbench's JSON per test (guest side).
    guest: BTreeMap<String, Json>,
    /// The bulk server's JSON for up (`sink`) and down (`source`).
    host: BTreeMap<String, Json>,
    backend_cpu_ms: BTreeMap<String, f64>,
    qemu_cpu_ms: BTreeMap<String, f64>,
    eth0_mtu: String,
    features: String,
    elapsed_s: f64,
}

impl Sample {
    /// Host-timed MiB/s of a bulk test (`up`/`down`).
    fn bulk(&self, test: &str) -> Option<f64> {
        let key = if test == "up" { "sink" } else { "source" };
        let j = self.host.get(key)?;
        (j["error"] == 0).then(|| j["mib_s"].as_f64()).flatten()
    }

    fn rr(&self, field: &str) -> Option<f64> {
        self.guest.get("rr")?[field].as_f64()
    }

    /// Backend CPU ms per MiB of a bulk test, or µs per RR transaction.
    fn cpu_per_unit(&self, test: &str, mib: u64) -> Option<f64> {
        let ms = *self.backend_cpu_ms.get(test)?;
        if test == "rr" {
            let n = self.rr("count")?;
            (n > 0.0).then(|| ms * 1000.0 / n)
        } else {
            Some(ms / mib as f64)
        }
    }
}

/// The MTU the guest sets: `mtu`, but 1500 on QEMU user (slirp's own MTU; QEMU has no
/// option for it).
fn guest_mtu(backend: &str, mtu: u32) -> u32 {
    if backend == "user" {
        1500
    } else {
        mtu
    }
}

fn measure(
    backend: &str,
    world: &VmWorld,
    bulk: &Bg,
    rrbench: &[u8],
    k: &Knobs,
) -> Result<Sample, String> {
    while bulk.next_line(Duration::from_millis(10)).is_some() {} // a failed boot's leftovers
    let (running, net) = Running::start(backend, world, k.mtu);
    let plan = GuestPlan::default()
        .set("STEPS", "dhcp perf_mtu perf_up perf_down perf_rr features")
        .set("PERF_HOST", SINK_V4)
        .set("PERF_BULK_PORT", BULK_PORT.to_string())
        .set("PERF_RR_PORT", RR_PORT.to_string())
        .set("PERF_BYTES", k.bytes().to_string())
        .set("PERF_RR_SECONDS", k.rr_seconds.to_string())
        .set("PERF_MTU", guest_mtu(backend, k.mtu).to_string());
    let started = Instant::now();
    let deadline = started + BOOT_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut vm = Vm::spawn_with(
        &world.host,
        &net,
        &plan.script_with(PERF_SH),
        &[("rrbench", 0o755, rrbench)],
    );
    let mut s = Sample::default();
    let mut lost = None;
    for t in TESTS {
        if !vm.wait_for(&format!("RINGNET-VM info begin {t}"), left()) {
            lost = Some(format!("the guest never began `{t}`"));
            break;
        }
        let (b0, q0) = (running.pid().map(tree_cpu_ms), tree_cpu_ms(vm.pid()));
        if !vm.wait_for(&format!(" perf-{t} "), left()) {
            lost = Some(format!("no result for `{t}`"));
            break;
        }
        if let (Some(b0), Some(pid)) = (b0, running.pid()) {
            s.backend_cpu_ms
                .insert(t.to_string(), tree_cpu_ms(pid) - b0);
        }
        s.qemu_cpu_ms
            .insert(t.to_string(), tree_cpu_ms(vm.pid()) - q0);
    }
    let out = vm.wait(left());
    s.elapsed_s = started.elapsed().as_secs_f64();
    let context = || {
        format!(
            "{out}\n--- {backend} stderr ---\n{}",
            tail(&running.stderr(), 4000)
        )
    };
    if let Some(why) = lost {
        return Err(format!("{backend}: {why}\n{}", context()));
    }
    let fails: Vec<String> = out
        .checks()
        .into_iter()
        .filter(|c| c.kind == "fail")
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if !fails.is_empty() || !out.done() {
        return Err(format!(
            "{backend}: the guest reported {fails:?}{}\n{}",
            if out.done() {
                ""
            } else {
                " and did not finish"
            },
            context()
        ));
    }
    for t in TESTS {
        let d = out.detail(&format!("perf-{t}")).unwrap_or_default();
        let j: Json = serde_json::from_str(&d)
            .map_err(|e| format!("{backend}: perf-{t} is not JSON ({e}): {d}"))?;
        s.guest.insert(t.to_string(), j);
    }
    for _ in 0..2 {
        let line = bulk
            .next_line(Duration::from_secs(5))
            .ok_or_else(|| format!("{backend}: the bulk server printed no result"))?;
        let j: Json = serde_json::from_str(&line)
            .map_err(|e| format!("{backend}: bulk server line {line}: {e}"))?;
        let mode = j["mode"].as_str().unwrap_or("?").to_string();
        s.host.insert(mode, j);
    }
    s.eth0_mtu = out.detail("perf-mtu").unwrap_or_default();
    s.features = out.detail("virtio-features").unwrap_or_default();
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A table column: header, the value of a sample, higher is better.
struct Column {
    header: &'static str,
    value: fn(&Sample, u64) -> Option<f64>,
    higher_better: bool,
}

const COLUMNS: &[Column] = &[
    Column {
        header: "up MiB/s",
        value: |s, _| s.bulk("up"),
        higher_better: true,
    },
    Column {
        header: "down MiB/s",
        value: |s, _| s.bulk("down"),
        higher_better: true,
    },
    Column {
        header: "RR trans/s",
        value: |s, _| s.rr("rate"),
        higher_better: true,
    },
    Column {
        header: "RR p50 µs",
        value: |s, _| s.rr("p50_us"),
        higher_better: false,
    },
    Column {
        header: "RR p99 µs",
        value: |s, _| s.rr("p99_us"),
        higher_better: false,
    },
    Column {
        header: "CPU up ms/MiB",
        value: |s, mib| s.cpu_per_unit("up", mib),
        higher_better: false,
    },
    Column {
        header: "CPU down ms/MiB",
        value: |s, mib| s.cpu_per_unit("down", mib),
        higher_better: false,
    },
    Column {
        header: "CPU RR µs/trans",
        value: |s, mib| s.cpu_per_unit("rr", mib),
        higher_better: false,
    },
];

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The markdown table and, per ringnet backend, the columns where it is behind passt.
fn table(k: &Knobs, results: &[(String, Result<Sample, String>)]) -> String {
    let mut md = String::new();
    // Per backend, per column: every successful run's value.
    let values: Vec<(String, Vec<Vec<f64>>)> = k
        .backends
        .iter()
        .map(|b| {
            let ok: Vec<&Sample> = results
                .iter()
                .filter(|(n, _)| n == b)
                .filter_map(|(_, r)| r.as_ref().ok())
                .collect();
            let cols = COLUMNS
                .iter()
                .map(|c| ok.iter().filter_map(|s| (c.value)(s, k.mib)).collect())
                .collect();
            (b.clone(), cols)
        })
        .collect();
    let medians: Vec<(String, usize, Vec<Option<f64>>)> = values
        .iter()
        .map(|(b, cols)| {
            let n = results.iter().filter(|(n, r)| n == b && r.is_ok()).count();
            (
                b.clone(),
                n,
                cols.iter().map(|v| median(v.clone())).collect(),
            )
        })
        .collect();
    let passt = medians
        .iter()
        .find(|(b, _, _)| b == "passt")
        .map(|(_, _, c)| c.clone());
    let _ = write!(md, "| backend | runs |");
    for c in COLUMNS {
        let _ = write!(md, " {} |", c.header);
    }
    let _ = write!(md, "\n|---|---|");
    for _ in COLUMNS {
        md.push_str("---|");
    }
    md.push('\n');
    let mut behind = Vec::new();
    for (b, n, cols) in &medians {
        let _ = write!(md, "| {b} | {n}/{} |", k.runs);
        let mut worse = Vec::new();
        for (i, (c, v)) in COLUMNS.iter().zip(cols).enumerate() {
            let base = passt.as_ref().and_then(|p| p[i]);
            let Some(v) = v else {
                md.push_str(" — |");
                if base.is_some() {
                    worse.push(format!("{} (no value)", c.header));
                }
                continue;
            };
            match base {
                Some(p) if b != "passt" && *v > 0.0 && p > 0.0 => {
                    let r = if c.higher_better { v / p } else { p / v };
                    let _ = write!(md, " {} ({r:.2}×) |", fmt_num(*v));
                    if (r * 100.0).round() < 100.0 {
                        // behind as printed: 0.997 shows as 1.00× and is not flagged
                        worse.push(format!("{} {r:.2}×", c.header));
                    }
                }
                _ => {
                    let _ = write!(md, " {} |", fmt_num(*v));
                }
            }
        }
        md.push('\n');
        if b.starts_with("ringnet") && passt.is_some() {
            behind.push(if *n == 0 {
                format!("- {b}: no successful run")
            } else if worse.is_empty() {
                format!("- {b}: ≥ passt in every column")
            } else {
                format!("- {b}: behind passt in {}", worse.join(", "))
            });
        }
    }
    md.push_str(
        "\nMedians over the runs; (×) = ratio to passt, oriented so > 1 is better than \
         passt (rates x/passt; latency and CPU passt/x). CPU: the backend's process \
         tree's CPU time during the test (`user` runs inside QEMU: none).\n",
    );
    let _ = write!(md, "\nSpread (min–max over the runs):\n\n| backend |");
    for c in COLUMNS {
        let _ = write!(md, " {} |", c.header);
    }
    md.push_str("\n|---|");
    for _ in COLUMNS {
        md.push_str("---|");
    }
    md.push('\n');
    for (b, cols) in &values {
        let _ = write!(md, "| {b} |");
        for v in cols {
            let lo = v.iter().copied().reduce(f64::min);
            let hi = v.iter().copied().reduce(f64::max);
            match (lo, hi) {
                (Some(lo), Some(hi)) => {
                    let _ = write!(md, " {}–{} |", fmt_num(lo), fmt_num(hi));
                }
                _ => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    if !behind.is_empty() {
        let _ = write!(
            md,
            "\nGoal (ringnet ≥ passt in every column):\n{}\n",
            behind.join("\n")
        );
    }
    md
}

fn sh(args: &[&str]) -> String {
    let out = run_args(args, SHORT);
    out.stdout.lines().next().unwrap_or("").trim().to_string()
}

fn json_line(
    k: &Knobs,
    stamp: &str,
    run_no: u32,
    backend: &str,
    r: &Result<Sample, String>,
) -> Json {
    let mut j = serde_json::json!({
        "stamp": stamp, "run": run_no, "backend": backend, "mtu": k.mtu,
        "bytes": k.bytes(), "rr_seconds": k.rr_seconds,
    });
    match r {
        Ok(s) => {
            let o = j.as_object_mut().expect("object");
            for c in COLUMNS {
                o.insert(c.header.to_string(), serde_json::json!((c.value)(s, k.mib)));
            }
            o.insert("guest".into(), serde_json::json!(s.guest));
            o.insert("host".into(), serde_json::json!(s.host));
            o.insert("backend_cpu_ms".into(), serde_json::json!(s.backend_cpu_ms));
            o.insert("qemu_cpu_ms".into(), serde_json::json!(s.qemu_cpu_ms));
            o.insert("eth0_mtu".into(), serde_json::json!(s.eth0_mtu));
            o.insert("virtio_features".into(), serde_json::json!(s.features));
            o.insert("boot_seconds".into(), serde_json::json!(s.elapsed_s));
        }
        Err(e) => {
            j["error"] = serde_json::json!(tail(e, 2000));
        }
    }
    j
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "perf only (QEMU/TCG guests, minutes): run perf/vm.sh"]
fn vm_perf() {
    let k = Knobs::from_env();
    let missing = preflight(&k);
    assert!(
        missing.is_empty(),
        "vm_perf cannot run here:\n  {}",
        missing.join("\n  ")
    );
    let boots = u64::from(k.runs) * k.backends.len() as u64;
    let _w = Watchdog::new(BOOT_TIMEOUT * boots as u32 + Duration::from_secs(300));
    let wall = Instant::now();
    let stamp = k
        .tag
        .clone()
        .unwrap_or_else(|| sh(&["date", "+%Y%m%d-%H%M"]));
    let host = sh(&["hostname", "-s"]);
    let rrbench = build_rrbench();
    let rrbench_host = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm_perf/rrbench");
    let rrb = rrbench_host.to_str().expect("utf-8 path");
    // Build (or load) the kit before the clock of the first boot starts.
    let _ = kit();

    let world = VmWorld::new();
    let life = (BOOT_TIMEOUT.as_secs() * (boots + 1)).to_string();
    let bulk_port = BULK_PORT.to_string();
    let bytes = k.bytes().to_string();
    let rr_port = RR_PORT.to_string();
    let bulk = world
        .host
        .spawn(&[rrb, "bulk", "-p", &bulk_port, "-b", &bytes, "-L", &life]);
    let _rr = world
        .host
        .spawn(&[rrb, "server", "-p", &rr_port, "-L", &life]);
    std::thread::sleep(Duration::from_millis(200));

    let progress = |msg: String| {
        let _ = writeln!(std::io::stderr(), "vm_perf: {msg}");
    };
    progress(format!(
        "{} runs × {:?}, {} MiB each way, RR {} s, MTU {}, ringnet {}",
        k.runs,
        k.backends,
        k.mib,
        k.rr_seconds,
        k.mtu,
        ringnet_bin()
    ));
    let mut results: Vec<(String, Result<Sample, String>)> = Vec::new();
    let mut lines = Vec::new();
    for run_no in 1..=k.runs {
        for b in &k.backends {
            let r = catch_unwind(AssertUnwindSafe(|| measure(b, &world, &bulk, &rrbench, &k)))
                .unwrap_or_else(|p| {
                    Err(p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".to_string()))
                });
            match &r {
                Ok(s) => progress(format!(
                    "run {run_no} {b}: up {:.1} MiB/s, down {:.1} MiB/s, RR {:.0}/s p50 {:.0} µs \
                     ({:.0} s)",
                    s.bulk("up").unwrap_or(0.0),
                    s.bulk("down").unwrap_or(0.0),
                    s.rr("rate").unwrap_or(0.0),
                    s.rr("p50_us").unwrap_or(0.0),
                    s.elapsed_s
                )),
                Err(e) => progress(format!("run {run_no} {b}: FAILED: {}", tail(e, 3000))),
            }
            lines.push(json_line(&k, &stamp, run_no, b, &r));
            results.push((b.clone(), r));
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();

    let mut md = format!(
        "# QEMU guest networking: ringnet vs passt vs QEMU user ({stamp}, {host})\n\n\
         Same guest for all (VM kit {}: TCG, 1 vCPU, {VM_MEM_MB} MiB), {} runs interleaved \
         by run, {} MiB per bulk transfer (host-timed), TCP RR {} s, guest MTU {}{}. \
         Wall time {:.0} s.\n\n",
        kit().key,
        k.runs,
        k.mib,
        k.rr_seconds,
        k.mtu,
        if k.mtu != 1500 && k.backends.iter().any(|b| b == "user") {
            " (user: 1500)"
        } else {
            ""
        },
        wall_s
    );
    md.push_str(&table(&k, &results));
    let _ = write!(
        md,
        "\nringnet `{}` ({}); git {}; {}; {}; kernel {}.\n",
        ringnet_bin(),
        sh(&[ringnet_bin(), "--version"]),
        sh(&[
            "git",
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty"
        ]),
        sh(&["qemu-system-x86_64", "--version"]),
        if k.backends.iter().any(|b| b == "passt") {
            format!(
                "passt {}",
                sh(&["dpkg-query", "-W", "-f", "${Version}", "passt"])
            )
        } else {
            "no passt".to_string()
        },
        sh(&["uname", "-r"]),
    );
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        // "BACKEND: what" and QEMU's exit line; the whole error is in the log and the JSON.
        .map(|e| e.lines().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    if !failures.is_empty() {
        let _ = write!(md, "\nFailed boots:\n- {}\n", failures.join("\n- "));
    }

    fs::create_dir_all(&k.out).expect("creating the results directory");
    let stem = k.out.join(format!("{stamp}-{host}-vm"));
    let md_path = stem.with_extension("md");
    let jsonl_path = stem.with_extension("jsonl");
    fs::write(&md_path, &md).expect("writing the markdown");
    let jsonl: String = lines.iter().map(|j| format!("{j}\n")).collect();
    fs::write(&jsonl_path, &jsonl).expect("writing the JSON lines");
    let _ = writeln!(
        std::io::stdout(),
        "\n{md}\nwritten: {}\n         {}",
        md_path.display(),
        jsonl_path.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {boots} boots failed (see above)",
        failures.len()
    );
}
