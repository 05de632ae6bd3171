//! Privileges: whether a namespace test can run here, and what it does when it cannot
//! (print `SKIP: <reason>` and return; under `CI=true`, fail).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::process::test_name;

pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("TRUE") | Ok("True")
    )
}

/// What to do given whether we are in CI and what is missing.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
    Fail(String),
}

pub fn decide(ci: bool, missing: &[String]) -> Decision {
    if missing.is_empty() {
        Decision::Run
    } else if ci {
        Decision::Fail(missing.join("; "))
    } else {
        Decision::Skip(missing.join("; "))
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// What keeps a namespace test from running here (empty: nothing).
pub fn missing_privileges(tools: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not root".to_string());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("no /dev/net/tun".to_string());
    }
    for tool in std::iter::once(&"ip").chain(tools) {
        if which(tool).is_none() {
            missing.push(format!("no `{tool}` in PATH"));
        }
    }
    missing
}

/// True when the test may run. Otherwise prints `SKIP: <test>: <reason>` on the real stderr
/// and returns false — or panics when `CI=true`.
pub fn privileged(tools: &[&str]) -> bool {
    match decide(in_ci(), &missing_privileges(tools)) {
        Decision::Run => true,
        Decision::Skip(reason) => {
            // Written to fd 2 directly: libtest captures eprintln!, and a skip must show.
            let _ = writeln!(std::io::stderr(), "SKIP: {}: {reason}", test_name());
            false
        }
        Decision::Fail(reason) => panic!("CI=true and this test cannot run: {reason}"),
    }
}

/// `require_privileges!("ping", "python3")`: return from the test (after a printed SKIP)
/// unless root, /dev/net/tun, `ip` and the named tools are there; under `CI=true`, fail.
#[macro_export]
macro_rules! require_privileges {
    ($($tool:expr),* $(,)?) => {
        if !$crate::common::privileged(&[$($tool),*]) {
            return;
        }
    };
}
