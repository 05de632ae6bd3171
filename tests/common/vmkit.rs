//! The VM kit: a Debian kernel and a busybox initramfs for booting a real guest under QEMU
//! (TCG), built once from Debian packages and cached under `target/vmkit/`.
//!
//! # Theory of operation
//!
//! [`kit`] returns the kernel and the base initramfs, building them on first use:
//!
//! 1. The key: the candidate versions of `linux-image-amd64` (and the versioned
//!    `linux-image-6.*` package it depends on) and of `busybox-static`
//!    (`apt-cache show --no-all-versions`), plus a hash of what this file puts into the
//!    initramfs ([`KIT_FORMAT`], `tests/vm/init.sh`, the module list). A cached kit under
//!    `target/vmkit/<key>/` is used as it is.
//! 2. Otherwise, under an exclusive `flock(2)` on `target/vmkit/.lock` (test binaries and
//!    the threads of one binary build it at most once; the loser of the race finds the
//!    winner's kit when it gets the lock), in `target/vmkit/build-<pid>/`: `apt-get
//!    download` both packages, `dpkg -x` them, take `boot/vmlinuz-*`, the virtio/net modules
//!    ([`MODULES`], decompressed when Debian ships them as `.ko.xz` / `.ko.zst`) and
//!    `bin/busybox`, write the initramfs as a newc cpio ([`Cpio`]) compressed with
//!    `gzip -n`, and rename the finished directory to `target/vmkit/<key>/` (atomic: a
//!    reader sees a whole kit or none). The build directory is removed whatever happens.
//!    When a download fails (package lists missing or stale) it runs `apt-get update` once
//!    and tries again.
//!
//! The initramfs: `/bin/busybox` with a symlink per applet (`busybox --list-full`, run on
//! the build machine: the static binary runs there), `/dev/console`, the modules in
//! `/lib/modules/NAME.ko` with their load order in `/etc/modules`, and `/init`
//! (`tests/vm/init.sh`): it mounts proc/sys/dev/tmp, insmods the modules in order, brings
//! up `lo` and `eth0`, runs `/test.sh` and powers off. A test adds its `/test.sh` in a
//! second cpio appended to this one ([`Kit::initrd_with`]); the kernel unpacks
//! concatenated archives, compressed or not, into one rootfs (`init/initramfs.c`, each
//! archive starting on a 4-byte boundary).
//!
//! Takes about 10 s cold (a 70 MB download and `dpkg -x` of the kernel package) and
//! prints a progress line to stderr.

use std::fs;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{run, Output};

/// Bump when the layout of the initramfs changes in a way the hashed inputs do not show.
const KIT_FORMAT: u32 = 1;

/// The `/init` of the initramfs.
const INIT_SH: &str = include_str!("../vm/init.sh");

/// The modules `/init` loads, in dependency order (virtio-net over virtio-pci).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// How long one apt/dpkg step may take.
const STEP: Duration = Duration::from_secs(300);

/// A built kit: the kernel and the base initramfs.
#[derive(Clone, Debug)]
pub struct Kit {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The cache key (package versions and format hash), for messages.
    pub key: String,
}

/// The kit, built on first use (see the module docs). Panics with the failing step's
/// output when it cannot be built.
pub fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| build_or_load().unwrap_or_else(|e| panic!("VM kit: {e}")))
}

/// `target/vmkit/`, or `$RINGNET_VMKIT_DIR`.
pub fn kit_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RINGNET_VMKIT_DIR") {
        return PathBuf::from(d);
    }
    // CARGO_TARGET_TMPDIR is <target>/tmp for integration tests.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("vmkit")
}

fn build_or_load() -> Result<Kit, String> {
    let dir = kit_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let versions = match Versions::query() {
        Ok(v) => v,
        Err(_) => {
            apt_update()?;
            Versions::query()?
        }
    };
    let key = versions.key();
    let done = dir.join(&key);
    if let Some(k) = load(&done, &key) {
        return Ok(k);
    }
    let lock = fs::File::create(dir.join(".lock")).map_err(|e| format!("lock file: {e}"))?;
    // SAFETY: flock(2) on a file descriptor we own for the duration of the call; it blocks
    // until the lock is ours and is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", std::io::Error::last_os_error()));
    }
    if let Some(k) = load(&done, &key) {
        return Ok(k); // another test binary built it while we waited
    }
    let start = Instant::now();
    let _ = writeln!(
        std::io::stderr(),
        "vmkit: building the VM kit {key} in {} (once; downloads ~75 MB)",
        dir.display()
    );
    let build = dir.join(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&build);
    let res = build_in(&build, &versions).and_then(|()| {
        fs::rename(build.join("kit"), &done).map_err(|e| format!("rename into place: {e}"))
    });
    let _ = fs::remove_dir_all(&build);
    res?;
    let _ = writeln!(
        std::io::stderr(),
        "vmkit: built {} in {:.1?}",
        done.display(),
        start.elapsed()
    );
    load(&done, &key).ok_or_else(|| format!("{} incomplete after building", done.display()))
}

fn load(dir: &Path, key: &str) -> Option<Kit> {
    let kit = Kit {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio.gz"),
        key: key.to_string(),
    };
    (kit.kernel.is_file() && kit.initrd.is_file()).then_some(kit)
}

/// The packages a kit is made of, as apt sees them now.
struct Versions {
    /// `linux-image-6.1.0-57-amd64`
    kernel_pkg: String,
    /// `6.1.192-3`
    kernel_version: String,
    busybox_version: String,
}

impl Versions {
    fn query() -> Result<Versions, String> {
        let meta = apt_show("linux-image-amd64")?;
        let depends = field(&meta, "Depends").ok_or("linux-image-amd64 has no Depends")?;
        // "linux-image-6.1.0-57-amd64 (= 6.1.192-3)"
        let dep = depends
            .split(',')
            .map(str::trim)
            .find(|d| d.starts_with("linux-image-6"))
            .ok_or_else(|| format!("no linux-image-6.* in Depends: {depends}"))?;
        let (pkg, version) = dep
            .split_once(" (= ")
            .ok_or_else(|| format!("unversioned dependency {dep}"))?;
        let bb = apt_show("busybox-static")?;
        Ok(Versions {
            kernel_pkg: pkg.to_string(),
            kernel_version: version.trim_end_matches(')').to_string(),
            busybox_version: field(&bb, "Version")
                .ok_or("busybox-static has no Version")?
                .to_string(),
        })
    }

    /// The cache directory's name: readable versions and a hash of the kit's own inputs.
    fn key(&self) -> String {
        let mut h = Fnv::default();
        h.add(&KIT_FORMAT.to_le_bytes());
        h.add(INIT_SH.as_bytes());
        for m in MODULES {
            h.add(m.as_bytes());
        }
        let raw = format!(
            "{}_{}-busybox_{}-{:08x}",
            self.kernel_pkg, self.kernel_version, self.busybox_version, h.0 as u32
        );
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// FNV-1a, 64 bit: a stable hash for the cache key (std's hasher is not stable).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn apt_show(pkg: &str) -> Result<String, String> {
    let out = step(
        Command::new("apt-cache").args(["show", "--no-all-versions", pkg]),
        "apt-cache show",
    )?;
    Ok(out.stdout)
}

/// The value of `Name: value` in a Debian control record.
fn field<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn apt_update() -> Result<(), String> {
    let _ = writeln!(std::io::stderr(), "vmkit: apt-get update");
    step(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
    .map(drop)
}

/// Run one build step with a deadline; its output, or an error carrying it.
fn step(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = run(cmd, STEP);
    if out.success() {
        Ok(out)
    } else {
        Err(format!("{what} failed: {out}"))
    }
}

/// `apt-get download PKG=VERSION…` into `dir` (one `apt-get update` and retry on failure).
fn download(dir: &Path, pkgs: &[String]) -> Result<(), String> {
    let get = || {
        step(
            Command::new("apt-get")
                .current_dir(dir)
                .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
                .args(pkgs),
            "apt-get download",
        )
    };
    if get().is_err() {
        apt_update()?;
        get()?;
    }
    Ok(())
}

fn build_in(build: &Path, v: &Versions) -> Result<(), String> {
    let debs = build.join("debs");
    let root = build.join("x");
    let kit = build.join("kit");
    for d in [&debs, &root, &kit] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    download(
        &debs,
        &[
            format!("{}={}", v.kernel_pkg, v.kernel_version),
            format!("busybox-static={}", v.busybox_version),
        ],
    )?;
    let entries = fs::read_dir(&debs).map_err(|e| format!("reading {}: {e}", debs.display()))?;
    for deb in entries.flatten() {
        step(
            Command::new("dpkg").arg("-x").arg(deb.path()).arg(&root),
            "dpkg -x",
        )?;
    }
    let vmlinuz = find_file(&root.join("boot"), |n| n.starts_with("vmlinuz-"))
        .ok_or("no boot/vmlinuz-* in the kernel package")?;
    fs::copy(&vmlinuz, kit.join("vmlinuz")).map_err(|e| format!("copying vmlinuz: {e}"))?;

    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "lib",
        "lib/modules",
        "run",
    ] {
        cpio.dir(d, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    let busybox = root.join("bin/busybox");
    let bb = fs::read(&busybox).map_err(|e| format!("reading busybox: {e}"))?;
    cpio.file("bin/busybox", 0o755, &bb);
    let list = step(
        Command::new(&busybox).arg("--list-full"),
        "busybox --list-full",
    )?;
    for applet in list.stdout.lines().map(str::trim) {
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        cpio.symlink(applet, &target);
    }
    let modules = root.join("lib/modules");
    for m in MODULES {
        let ko = module_bytes(&modules, m)?;
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &ko);
    }
    cpio.file(
        "etc/modules",
        0o644,
        format!("{}\n", MODULES.join("\n")).as_bytes(),
    );
    cpio.file("init", 0o755, INIT_SH.as_bytes());
    let raw = kit.join("initrd.cpio");
    fs::write(&raw, cpio.finish()).map_err(|e| format!("writing initrd: {e}"))?;
    step(Command::new("gzip").args(["-n", "-6"]).arg(&raw), "gzip")?;
    Ok(())
}

/// The module `name` (`.ko`, `.ko.xz` or `.ko.zst`) anywhere under `modules`, decompressed.
fn module_bytes(modules: &Path, name: &str) -> Result<Vec<u8>, String> {
    for (ext, tool) in [
        (".ko", None),
        (".ko.xz", Some("xz")),
        (".ko.zst", Some("zstd")),
    ] {
        let file = format!("{name}{ext}");
        if let Some(p) = find_file(modules, |n| n == file) {
            return match tool {
                None => fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display())),
                Some(t) => {
                    let out = Command::new(t)
                        .args(["-d", "-c"])
                        .arg(&p)
                        .output()
                        .map_err(|e| format!("running {t} (install it): {e}"))?;
                    if !out.status.success() {
                        return Err(format!("{t} -d {}: {}", p.display(), out.status));
                    }
                    Ok(out.stdout)
                }
            };
        }
    }
    Err(format!("module {name} not in the kernel package"))
}

/// The first file under `dir` (recursively) whose name satisfies `pred`.
fn find_file(dir: &Path, pred: impl Fn(&str) -> bool + Copy) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, pred) {
                return Some(f);
            }
        } else if pred(&e.file_name().to_string_lossy()) {
            return Some(p);
        }
    }
    None
}

impl Kit {
    /// The base initramfs with a second, uncompressed cpio appended that holds `files`
    /// (path without leading `/`, mode, contents), written to `out`.
    pub fn initrd_with(&self, files: &[(&str, u32, &[u8])], out: &Path) {
        let mut bytes = fs::read(&self.initrd)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.initrd.display()));
        // The next archive must start on a 4-byte boundary; the kernel skips zero padding.
        while !bytes.len().is_multiple_of(4) {
            bytes.push(0);
        }
        let mut cpio = Cpio::default();
        for (path, mode, contents) in files {
            cpio.file(path, *mode, contents);
        }
        bytes.extend_from_slice(&cpio.finish());
        fs::write(out, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    }
}

// ---------------------------------------------------------------------------------------
// newc cpio
// ---------------------------------------------------------------------------------------

/// A cpio archive in the "newc" format the kernel's initramfs unpacker reads
/// (`Documentation/driver-api/early-userspace/buffer-format.rst`): per entry a 110-byte
/// ASCII header (magic `070701`, 13 fields of 8 hex digits), the NUL-terminated name padded
/// to 4 bytes, the data padded to 4 bytes; a `TRAILER!!!` entry ends it.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let namesize = u32::try_from(name.len() + 1).expect("short name");
        let filesize = u32::try_from(data.len()).expect("file under 4 GiB");
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}
