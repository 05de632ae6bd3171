//! Booting a real guest: QEMU (TCG) with the kit's kernel and initramfs ([`super::vmkit`])
//! inside a test's network namespace, a guest script, and what the guest reported.
//!
//! # Theory of operation
//!
//! ```text
//!   HostNs "rn-<pid>-<n>-host"
//!   ├─ http_server.py 198.51.100.7:P  (GET /data 4 MiB, POST /upload → sha256)
//!   ├─ dnsmasq 198.51.100.7:53        (vm.example → 198.51.100.42)
//!   ├─ the network backend: ringnet qemu / vhost-user, passt, or QEMU's own slirp
//!   └─ qemu-system-x86_64 -accel tcg … -device virtio-net-pci  (serial on stdout)
//!         guest: /init (tests/vm/init.sh) → /test.sh (tests/vm/guest.sh + GuestPlan)
//! ```
//!
//! QEMU runs under `ip netns exec HOST`, so whatever its netdev reaches is the test's host
//! namespace (loopback, the sink addresses) and nothing else. The guest's results are lines
//! on the serial console, `RINGNET-VM ok|fail|info NAME DETAILS` ([`Check`]), then
//! `RINGNET-VM done` (the script ran to its end) and `RINGNET-VM end STATUS` (from /init,
//! just before `poweroff -f`). [`VmOutput::assert_ok`] checks them and prints the whole
//! serial log on failure.
//!
//! Bounds: a [`Vm`] is a [`Bg`] (own process group, killed on drop); [`Vm::wait`] kills it
//! at its deadline. A TCG boot to `/test.sh` takes about 6 s here; the full guest script
//! about 15–25 s more.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::bg::Bg;
use super::dns::{DnsServer, Dnsmasq};
use super::ns::{HostNs, Netns};
use super::process::{tail, unique_name, TempFile};
use super::vmkit::kit;
use super::{Json, SINK_V4};

/// The guest's MAC for ringnet's slot 0.
pub const VM_MAC: &str = super::GUEST_MAC;
/// Guest RAM; the vhost-user memfd backend must have the same size.
pub const VM_MEM_MB: u32 = 256;
/// The shared guest script.
const GUEST_SH: &str = include_str!("../vm/guest.sh");
/// Size of the download and the upload.
pub const VM_BULK_BYTES: usize = 4 << 20;
/// A name only the upstream dnsmasq knows, and its address.
pub const UPSTREAM_NAME: &str = "vm.example";
pub const UPSTREAM_ADDR: &str = "198.51.100.42";
/// The default deadline of one full guest run.
pub const VM_TIMEOUT: Duration = Duration::from_secs(120);

/// Tools a VM test needs besides `ip` (for `require_privileges!`).
pub const VM_TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "apt-get",
    "dpkg",
    "gzip",
    "python3",
    "dnsmasq",
];

// ---------------------------------------------------------------------------------------
// netdevs
// ---------------------------------------------------------------------------------------

fn device(mac: &str) -> String {
    // romfile= : no iPXE option ROM (nothing boots from the network; saves boot time).
    format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")
}

/// QEMU's own user-mode network (slirp) with `opts` appended to `user,id=n0`.
pub fn net_user(opts: &str) -> Vec<String> {
    let mut nd = "user,id=n0".to_string();
    if !opts.is_empty() {
        nd.push(',');
        nd.push_str(opts);
    }
    ["-netdev".into(), nd, "-device".into(), device(VM_MAC)].to_vec()
}

/// A stream netdev connecting to the unix socket `path` (ringnet qemu, passt).
pub fn net_stream(path: &Path) -> Vec<String> {
    [
        "-netdev".into(),
        format!(
            "stream,id=n0,server=off,addr.type=unix,addr.path={}",
            path.display()
        ),
        "-device".into(),
        device(VM_MAC),
    ]
    .to_vec()
}

/// A vhost-user netdev on the unix socket `path`, guest RAM in a shared memfd.
pub fn net_vhost_user(path: &Path) -> Vec<String> {
    [
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={VM_MEM_MB}M,share=on"),
        "-machine".into(),
        "memory-backend=mem".into(),
        "-chardev".into(),
        format!("socket,id=c0,path={}", path.display()),
        "-netdev".into(),
        "vhost-user,id=n0,chardev=c0".into(),
        "-device".into(),
        // vectors=0 (INTx, no MSI-X): QEMU 7.2 under TCG crashes (SIGSEGV in
        // msix_set_vector_notifiers, from vhost_net_start) when the guest's virtio_net
        // driver starts a vhost-user device with MSI-X vectors.
        format!("{},vectors=0", device(VM_MAC)),
    ]
    .to_vec()
}

// ---------------------------------------------------------------------------------------
// The guest script
// ---------------------------------------------------------------------------------------

/// The settings of `tests/vm/guest.sh` (see its header), written as shell assignments in
/// front of it.
#[derive(Clone, Debug, Default)]
pub struct GuestPlan {
    vars: Vec<(&'static str, String)>,
}

impl GuestPlan {
    pub fn set(mut self, key: &'static str, value: impl Into<String>) -> GuestPlan {
        self.vars.retain(|(k, _)| *k != key);
        self.vars.push((key, value.into()));
        self
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The whole `/test.sh`.
    pub fn script(&self) -> String {
        self.script_with("")
    }

    /// The whole `/test.sh` with `functions` (more `step_*`, e.g. `tests/vm/perf.sh`)
    /// between the settings and the guest script.
    pub fn script_with(&self, functions: &str) -> String {
        let mut s = String::new();
        for (k, v) in &self.vars {
            assert!(!v.contains('\''), "{k}: no single quotes in guest settings");
            s.push_str(&format!("{k}='{v}'\n"));
        }
        s.push_str(functions);
        s.push_str(GUEST_SH);
        s
    }

    /// The checks the script reports for its STEPS (what [`VmOutput::assert_ok`] wants).
    pub fn expected_checks(&self) -> Vec<String> {
        let mut want = Vec::new();
        for step in self.get("STEPS").split_whitespace() {
            match step {
                "dhcp" => want.push("dhcp".to_string()),
                "slaac" => want.extend(["slaac".to_string(), "ra-route".to_string()]),
                "dns" => want.extend(
                    self.get("DNS_NAMES")
                        .split_whitespace()
                        .map(|nv| format!("dns:{}", nv.split('=').next().unwrap_or(nv))),
                ),
                "download" | "upload" | "renew" => want.push(step.to_string()),
                "ping" => want.extend(
                    format!("{} {}", self.get("PING4"), self.get("PING6"))
                        .split_whitespace()
                        .map(|a| format!("ping:{a}")),
                ),
                _ => {}
            }
        }
        want
    }
}

// ---------------------------------------------------------------------------------------
// Running QEMU
// ---------------------------------------------------------------------------------------

/// A running QEMU; killed (its process group) on drop.
pub struct Vm {
    bg: Bg,
    serial: String,
    started: Instant,
    _initrd: TempFile,
}

impl Vm {
    /// Start QEMU inside `ns` with the kit, `net` (e.g. [`net_stream`]) and `script` as
    /// `/test.sh`.
    pub fn spawn(ns: &Netns, net: &[String], script: &str) -> Vm {
        Vm::spawn_with(ns, net, script, &[])
    }

    /// [`Vm::spawn`] with more files in the test's cpio (path without leading `/`, mode,
    /// contents), e.g. a static benchmark binary.
    pub fn spawn_with(
        ns: &Netns,
        net: &[String],
        script: &str,
        files: &[(&str, u32, &[u8])],
    ) -> Vm {
        let kit = kit();
        let initrd = TempFile::new("initrd");
        let mut all: Vec<(&str, u32, &[u8])> = vec![("test.sh", 0o755, script.as_bytes())];
        all.extend_from_slice(files);
        kit.initrd_with(&all, &initrd.path);
        let mem = VM_MEM_MB.to_string();
        let mut args: Vec<&str> = vec![
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            &mem,
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            kit.kernel.to_str().expect("utf-8 path"),
            "-initrd",
            initrd.path_str(),
            "-append",
            "console=ttyS0 quiet panic=-1",
        ];
        args.extend(net.iter().map(String::as_str));
        Vm {
            bg: ns.spawn(&args),
            serial: String::new(),
            started: Instant::now(),
            _initrd: initrd,
        }
    }

    pub fn pid(&self) -> u32 {
        self.bg.pid()
    }

    /// Read serial lines until one contains `needle` (true), QEMU exits or `timeout`
    /// passes (false).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.serial.contains(needle) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.bg.next_line(left.min(Duration::from_millis(200))) {
                Some(l) => {
                    self.serial.push_str(&l);
                    self.serial.push('\n');
                    if l.contains(needle) {
                        return true;
                    }
                }
                None => {
                    if let Some(_s) = self.bg.wait_timeout(Duration::ZERO) {
                        self.drain();
                        return self.serial.contains(needle);
                    }
                }
            }
        }
        false
    }

    fn drain(&mut self) {
        while let Some(l) = self.bg.next_line(Duration::from_millis(100)) {
            self.serial.push_str(&l);
            self.serial.push('\n');
        }
    }

    /// Wait until the guest powers off (or `timeout` passes: QEMU is killed).
    pub fn wait(mut self, timeout: Duration) -> VmOutput {
        let powered_off = self.wait_for("RINGNET-VM end ", timeout);
        let left = Duration::from_secs(if powered_off { 10 } else { 0 });
        let status = self.bg.wait_timeout(left);
        self.finish(status, !powered_off && status.is_none())
    }

    /// Kill QEMU now (SIGKILL, as a crashing VMM would go) and return what it printed.
    pub fn kill(mut self) -> VmOutput {
        self.drain();
        self.bg.signal(libc::SIGKILL);
        let status = self.bg.wait_timeout(Duration::from_secs(5));
        self.finish(status, false)
    }

    fn finish(mut self, status: Option<ExitStatus>, timed_out: bool) -> VmOutput {
        self.drain();
        VmOutput {
            serial: std::mem::take(&mut self.serial),
            qemu_stderr: self.bg.stderr(),
            status,
            timed_out,
            elapsed: self.started.elapsed(),
        }
        // Dropping `self.bg` kills what is left of the process group.
    }
}

/// Boot once: [`Vm::spawn`] then [`Vm::wait`].
pub fn boot(ns: &Netns, net: &[String], script: &str, timeout: Duration) -> VmOutput {
    Vm::spawn(ns, net, script).wait(timeout)
}

/// One guest result line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// `ok`, `fail` or `info`.
    pub kind: String,
    pub name: String,
    pub detail: String,
}

/// What a VM run printed.
pub struct VmOutput {
    pub serial: String,
    pub qemu_stderr: String,
    pub status: Option<ExitStatus>,
    /// Killed at the deadline.
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl VmOutput {
    /// Every `RINGNET-VM ok|fail|info NAME DETAILS` line, in order.
    pub fn checks(&self) -> Vec<Check> {
        self.serial
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("RINGNET-VM ")? + "RINGNET-VM ".len()..];
                let mut it = rest.trim_end_matches('\r').splitn(3, ' ');
                let kind = it.next()?;
                if !matches!(kind, "ok" | "fail" | "info") {
                    return None;
                }
                Some(Check {
                    kind: kind.to_string(),
                    name: it.next().unwrap_or("").to_string(),
                    detail: it.next().unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    /// The details of the last check or info line called `name`.
    pub fn detail(&self, name: &str) -> Option<String> {
        self.checks()
            .into_iter()
            .rev()
            .find(|c| c.name == name)
            .map(|c| c.detail)
    }

    /// The guest script ran to its end.
    pub fn done(&self) -> bool {
        self.serial.contains("RINGNET-VM done")
    }

    /// Panics (with the whole serial log) unless the script finished, reported no failure
    /// and reported every check in `want` as ok.
    pub fn assert_ok<S: AsRef<str>>(&self, what: &str, want: &[S]) {
        self.assert_checks(what, want, true);
    }

    /// [`VmOutput::assert_ok`] for a VM that was killed before its script ended
    /// (`need_done` false).
    pub fn assert_checks<S: AsRef<str>>(&self, what: &str, want: &[S], need_done: bool) {
        let checks = self.checks();
        let mut problems: Vec<String> = checks
            .iter()
            .filter(|c| c.kind == "fail")
            .map(|c| format!("FAIL {}: {}", c.name, c.detail))
            .collect();
        for w in want {
            let w = w.as_ref();
            if !checks.iter().any(|c| c.kind != "info" && c.name == w) {
                problems.push(format!("MISSING {w} (the guest never reported it)"));
            }
        }
        if need_done && !self.done() {
            problems.push("the guest script did not finish (no `RINGNET-VM done`)".to_string());
        }
        assert!(
            problems.is_empty(),
            "{what}: the guest saw:\n  {}\n{self}",
            problems.join("\n  ")
        );
    }
}

impl fmt::Display for VmOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--- QEMU {} after {:.1?}{} ---\n--- serial log ---\n{}\n--- QEMU stderr ---\n{}",
            self.status
                .map_or("still running (killed)".to_string(), |s| s.to_string()),
            self.elapsed,
            if self.timed_out {
                " (DEADLINE PASSED, killed)"
            } else {
                ""
            },
            self.serial,
            tail(&self.qemu_stderr, 4000)
        )
    }
}

// ---------------------------------------------------------------------------------------
// The world a VM test runs in
// ---------------------------------------------------------------------------------------

/// A directory in the temp dir, removed (recursively) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// Mode 0777: passt drops to `nobody` and must be able to create its socket here.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The host namespace of a VM test with its servers: the HTTP server and dnsmasq on the
/// sink address, and a scratch directory for sockets and captures.
pub struct VmWorld {
    pub dir: TempDir,
    pub http: Bg,
    /// `http://198.51.100.7:PORT`
    pub http_url: String,
    pub blob_sha: String,
    pub dns: DnsServer,
    pub host: HostNs,
}

impl VmWorld {
    pub fn new() -> VmWorld {
        let host = HostNs::new();
        let size = VM_BULK_BYTES.to_string();
        let (http, ready) = host.spawn_helper(
            "http_server.py",
            &["--bind", SINK_V4, "--size", &size, "--timeout", "600"],
        );
        let blob_sha = ready["sha256"].as_str().expect("sha256").to_string();
        let http_url = format!("http://{SINK_V4}:{}", super::port(&ready));
        let dns = Dnsmasq::new(SINK_V4)
            .host(UPSTREAM_NAME, &[UPSTREAM_ADDR])
            .start(&host);
        VmWorld {
            dir: TempDir::new("vm"),
            http,
            http_url,
            blob_sha,
            dns,
            host,
        }
    }

    /// The plan every backend shares: download, upload, ping `ping4`; STEPS and the
    /// expectations of the backend's own addressing are set by the caller.
    pub fn plan(&self) -> GuestPlan {
        GuestPlan::default()
            .set("HTTP", self.http_url.clone())
            .set("BLOB_SHA", self.blob_sha.clone())
            .set("UPLOAD_BYTES", VM_BULK_BYTES.to_string())
    }

    /// The full plan against ringnet (slot 0, MTU `mtu`): every step, every expectation.
    pub fn ringnet_plan(&self, mtu: u32) -> GuestPlan {
        self.plan()
            .set(
                "STEPS",
                "dhcp renew slaac dns download upload ping features",
            )
            .set("EXPECT_IP", "172.16.0.2")
            .set("EXPECT_ROUTER", "172.16.0.1")
            .set("EXPECT_DNS", "172.16.0.1")
            .set("EXPECT_MTU", mtu.to_string())
            .set("V6_PREFIX", "fd42:6d73:62:")
            .set("DNS_SERVER", "172.16.0.1")
            .set(
                "DNS_NAMES",
                format!("host.ringnet.internal=172.16.0.1 {UPSTREAM_NAME}={UPSTREAM_ADDR}"),
            )
            .set("PING4", "172.16.0.1")
            .set("PING6", "fd42:6d73:62::1")
    }

    /// The upload lines the HTTP server logged so far (`{"upload": SHA, "bytes": N}`).
    pub fn uploads(&self) -> Vec<Json> {
        let mut v = Vec::new();
        while let Some(l) = self.http.next_line(Duration::from_millis(50)) {
            if let Ok(j) = serde_json::from_str::<Json>(&l) {
                if j.get("upload").is_some() {
                    v.push(j);
                }
            }
        }
        v
    }
}

impl VmWorld {
    /// Panics unless the HTTP server received exactly the upload the guest reported ok
    /// ([`VM_BULK_BYTES`] bytes, the same sha256).
    pub fn assert_upload(&self, out: &VmOutput) {
        let detail = out.detail("upload").unwrap_or_default();
        let sha = detail.rsplit(' ').next().unwrap_or("");
        let ups = self.uploads();
        assert!(
            ups.iter()
                .any(|u| u["upload"] == sha && u["bytes"] == VM_BULK_BYTES as u64),
            "the HTTP server did not receive the guest's upload ({detail}); it logged {ups:?}\n{out}"
        );
    }
}

impl Default for VmWorld {
    fn default() -> Self {
        VmWorld::new()
    }
}

/// Wait up to `timeout` for `path` to exist (a backend's listening socket).
pub fn wait_path(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The virtio feature bit `bit` in `/sys/bus/virtio/devices/*/features` (a string of
/// `0`/`1`, bit 0 first).
pub fn feature_bit(features: &str, bit: usize) -> bool {
    features.as_bytes().get(bit) == Some(&b'1')
}

/// virtio-net feature bits (virtio 1.2 §5.1.3).
pub mod virtio_net {
    pub const CSUM: usize = 0;
    pub const GUEST_CSUM: usize = 1;
    pub const GUEST_TSO4: usize = 7;
    pub const GUEST_TSO6: usize = 8;
    pub const HOST_TSO4: usize = 11;
    pub const HOST_TSO6: usize = 12;
    pub const MRG_RXBUF: usize = 15;
}

/// `rx_bytes=… rx_packets=… tx_bytes=… tx_packets=…` (the guest's `eth0-stats` info) as
/// (rx bytes per packet, tx bytes per packet).
pub fn frame_averages(stats: &str) -> (u64, u64) {
    let get = |k: &str| -> u64 {
        stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        get("rx_bytes") / get("rx_packets").max(1),
        get("tx_bytes") / get("tx_packets").max(1),
    )
}

// ---------------------------------------------------------------------------------------
// ringnet as the VMM's network backend
// ---------------------------------------------------------------------------------------

/// Why `ringnet SUBCOMMAND` cannot be tested with this binary (None: it can): the binary
/// does not know the subcommand (`ringnet SUBCOMMAND --help` fails).
pub fn missing_subcommand(sub: &str) -> Option<String> {
    let out = super::process::run_args(&[super::ringnet_bin(), sub, "--help"], super::SHORT);
    (!out.success()).then(|| format!("`ringnet {sub}` is not in this ringnet binary"))
}

/// `privileged(VM_TOOLS + tools)` and `ringnet SUBCOMMAND` exists: run, skip or (CI) fail.
pub fn vm_test_can_run(sub: &str, tools: &[&str]) -> bool {
    let mut all: Vec<&str> = VM_TOOLS.to_vec();
    all.extend_from_slice(tools);
    let mut missing = super::missing_privileges(&all);
    missing.extend(missing_subcommand(sub));
    match super::decide(super::in_ci(), &missing) {
        super::Decision::Run => true,
        super::Decision::Skip(reason) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: {}: {reason}", super::test_name());
            false
        }
        super::Decision::Fail(reason) => panic!("CI=true and this test cannot run: {reason}"),
    }
}

/// A running `ringnet qemu|vhost-user … --socket PATH` in a [`VmWorld`]'s host namespace,
/// with `--stats`, `--dns` the world's dnsmasq and a capture (`--pcap`) in the world's
/// directory. Killed on drop; [`VmmBackend::stop`] is the orderly end.
pub struct VmmBackend {
    bg: Bg,
    pub socket: PathBuf,
    pub pcap: PathBuf,
}

impl VmmBackend {
    /// Start `ringnet SUB --stats --dns 198.51.100.7:53 --pcap … ARGS --socket …` and wait
    /// (≤ 10 s) for the socket to appear.
    pub fn start(world: &VmWorld, sub: &str, args: &[&str]) -> VmmBackend {
        VmmBackend::start_with(world, sub, args, true)
    }

    /// [`VmmBackend::start`] without `--stats` and `--pcap` (`capture` false): what a
    /// measurement wants, a capture costs per frame.
    pub fn start_with(world: &VmWorld, sub: &str, args: &[&str], capture: bool) -> VmmBackend {
        let socket = world.dir.join(&format!("{sub}.sock"));
        let pcap = world.dir.join(&format!("{sub}.pcap"));
        let _ = fs::remove_file(&socket); // a previous instance's, in a reused world
        let dns = format!("{SINK_V4}:53");
        let mut full = vec![super::ringnet_bin(), sub, "--dns", &dns];
        if capture {
            full.extend(["--stats", "--pcap", pcap.to_str().expect("utf-8 path")]);
        }
        full.extend_from_slice(args);
        if std::env::var_os("RINGNET_TEST_VERBOSE").is_some() {
            full.push("-v");
        }
        full.extend(["--socket", socket.to_str().expect("utf-8 path")]);
        let mut bg = world.host.spawn(&full);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            bg.assert_alive();
            assert!(
                Instant::now() < deadline,
                "`{}` made no socket within 10 s; stderr:\n{}",
                bg.what,
                bg.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        VmmBackend { bg, socket, pcap }
    }

    pub fn pid(&self) -> u32 {
        self.bg.pid()
    }

    pub fn stderr(&self) -> String {
        self.bg.stderr()
    }

    /// Panics (with ringnet's stderr) if it has exited.
    pub fn assert_alive(&mut self) {
        self.bg.assert_alive();
    }

    /// SIGTERM; ringnet must exit 0 within 5 s. Returns its stderr (with the `--stats`
    /// counters, read with [`super::stats_counter`]).
    pub fn stop(&mut self) -> String {
        self.bg.signal(libc::SIGTERM);
        let status = self.bg.wait_timeout(Duration::from_secs(5));
        let stderr = self.bg.stderr();
        assert!(
            status.is_some_and(|s| s.success()),
            "`{}` did not exit 0 within 5 s of SIGTERM ({status:?}); stderr:\n{}",
            self.bg.what,
            tail(&stderr, 6000)
        );
        stderr
    }
}

// ---------------------------------------------------------------------------------------
// Captures
// ---------------------------------------------------------------------------------------

/// `tshark -r PCAP -Y FILTER -T fields -e F…`: one row per matching frame, one column per
/// field (multiple values of a field joined by `,`).
pub fn pcap_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "tshark",
        "-n",
        "-r",
        pcap.to_str().expect("utf-8 path"),
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ];
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = super::process::run_args(&args, super::SHORT);
    assert!(out.success(), "tshark failed: {out}");
    out.stdout
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// What the capture at the guest boundary shows of autoconfiguration: the RA's prefix
/// (on-link, autonomous), RDNSS and MTU; the DHCP ACK's router, DNS and MTU options.
/// Panics with `context` (the VM's output, ringnet's stderr) otherwise.
pub fn assert_autoconf_capture(pcap: &Path, mtu: u32, context: &str) {
    let ras = pcap_fields(
        pcap,
        "icmpv6.type == 134",
        &[
            "icmpv6.opt.prefix",
            "icmpv6.opt.prefix.flag.l",
            "icmpv6.opt.prefix.flag.a",
            "icmpv6.opt.rdnss",
            "icmpv6.opt.mtu",
            "icmpv6.nd.ra.flag.o",
        ],
    );
    let ctx = || format!("\n{context}");
    assert!(
        !ras.is_empty(),
        "no router advertisement in the capture{}",
        ctx()
    );
    let ra = &ras[0];
    assert_eq!(
        ra[0],
        "fd42:6d73:62::",
        "RA prefix; RA fields {ra:?}{}",
        ctx()
    );
    assert!(
        ra[1] == "1" || ra[1] == "True",
        "RA prefix not on-link: {ra:?}"
    );
    assert!(
        ra[2] == "1" || ra[2] == "True",
        "RA prefix not autonomous: {ra:?}"
    );
    assert_eq!(ra[3], "fd42:6d73:62::1", "RA RDNSS: {ra:?}{}", ctx());
    assert_eq!(ra[4], mtu.to_string(), "RA MTU option: {ra:?}");
    let acks = pcap_fields(
        pcap,
        "dhcp.option.dhcp == 5",
        &[
            "dhcp.option.router",
            "dhcp.option.domain_name_server",
            "dhcp.option.interface_mtu",
        ],
    );
    assert!(!acks.is_empty(), "no DHCP ACK in the capture{}", ctx());
    assert_eq!(
        acks[0],
        ["172.16.0.1", "172.16.0.1", &mtu.to_string()],
        "DHCP ACK router, DNS, MTU{}",
        ctx()
    );
}
