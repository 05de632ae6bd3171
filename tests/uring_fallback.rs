//! With io_uring disabled by sysctl, `--egress auto` falls back to epoll and says why, and
//! `--egress uring` is a clear error. Its own test binary: test binaries run one at a time,
//! so flipping the global sysctl here cannot disturb another test; the previous value is
//! restored on drop, also on panic.

#[macro_use]
mod common;

use common::*;
use std::time::Duration;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_disabled() {
    require_privileges!();
    let Ok(old) = std::fs::read_to_string(SYSCTL) else {
        // Kernels before 6.6 have no switch; nothing to test there, and CI runs 6.x.
        assert!(!in_ci(), "{SYSCTL} missing on the CI kernel");
        eprintln!("SKIP: {SYSCTL} missing");
        return;
    };
    let _restore = Restore(old);
    std::fs::write(SYSCTL, "2").expect("disable io_uring");
    let host = HostNs::new();
    let limit = Duration::from_secs(30);
    let out = host.ringnet(
        &[
            "run",
            "-v",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "172.16.0.1",
        ],
        limit,
    );
    assert!(out.success(), "{out}");
    assert!(out.stderr.contains("epoll (io_uring unavailable"), "{out}");
    let out = host.ringnet(&["run", "--egress", "uring", "--", "true"], limit);
    assert_eq!(out.code(), Some(2), "{out}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert!(out.stderr.contains("io_uring"), "{out}");
    std::fs::write(SYSCTL, "0").expect("enable io_uring");
    let out = host.ringnet(&["run", "-v", "--", "true"], limit);
    assert!(out.success(), "{out}");
    assert!(out.stderr.contains("egress driver: io_uring"), "{out}");
}
