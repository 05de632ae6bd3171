//! Command-line errors: one line on stderr, exit status 2, never a panic. Needs no root for
//! the argument errors; the configuration cases run after the privilege check, so they are
//! checked only when the privilege check passes (root) — otherwise that one line is the
//! privilege error, which is asserted the same way.

use std::process::Command;

fn ringnet(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringnet"))
        .args(args)
        .output()
        .expect("run ringnet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, stderr) = ringnet(args);
    assert_eq!(code, Some(2), "ringnet {args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "ringnet {args:?}: {stderr}"
    );
    assert!(
        stderr.starts_with("ringnet: "),
        "ringnet {args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "ringnet {args:?}: {stderr}");
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root || !needle.starts_with('!') {
        let needle = needle.trim_start_matches('!');
        assert!(
            stderr.contains(needle),
            "ringnet {args:?}: {stderr} lacks {needle:?}"
        );
    }
}

#[test]
fn argument_errors_are_one_line() {
    assert_one_line_error(&["run", "--bogus"], "--bogus");
    assert_one_line_error(&["attach"], "--netns");
    assert_one_line_error(&["run"], "COMMAND");
    assert_one_line_error(&["run", "--egress", "fast", "--", "true"], "fast");
    assert_one_line_error(&["frobnicate"], "frobnicate");
    assert_one_line_error(&["qemu"], "--socket");
    assert_one_line_error(
        &["qemu", "--socket", "/x", "--fd", "3"],
        "cannot be used with",
    );
}

/// `ringnet qemu` needs no root: its setup errors are checked as any user.
#[test]
fn qemu_setup_errors_are_one_line() {
    assert_one_line_error(
        &["qemu", "--fd", "999"],
        "--fd 999: not an open file descriptor",
    );
    let file = std::env::temp_dir().join(format!("ringnet-cli-qemu-{}", std::process::id()));
    std::fs::write(&file, "not a socket").unwrap();
    let p = file.to_string_lossy().into_owned();
    assert_one_line_error(&["qemu", "--socket", &p], "exists and is not a socket");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn configuration_errors_are_one_line() {
    let dir = std::env::temp_dir().join(format!("ringnet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let unknown = write("unknown.toml", "bogus = 1\n");
    let badtype = write("badtype.toml", "[interface]\nmtu = \"x\"\n");
    let badmtu = write("badmtu.toml", "[interface]\nmtu = 70000\n");
    let badpool = write("badpool.toml", "[interface]\nipv4_pool = \"not-a-net\"\n");
    assert_one_line_error(&["run", "--config", &unknown, "--", "true"], "!bogus");
    assert_one_line_error(&["run", "--config", &badtype, "--", "true"], "!line 2");
    assert_one_line_error(&["run", "--config", &badmtu, "--", "true"], "!70000");
    assert_one_line_error(&["run", "--config", &badpool, "--", "true"], "!ipv4_pool");
    assert_one_line_error(
        &["run", "--config", "/nonexistent/x.toml", "--", "true"],
        "!/nonexistent/x.toml",
    );
    assert_one_line_error(&["run", "--mtu", "70000", "--", "true"], "!70000");
    assert_one_line_error(&["run", "--slot", "65536", "--", "true"], "!65536");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ringnet ca`: writes the CA certificate (generating and storing the CA once, then the
/// same one), and its errors are one line. Needs no root.
#[test]
fn ca_writes_the_stored_ca_and_errors_are_one_line() {
    let dir = std::env::temp_dir().join(format!("ringnet-cli-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = dir.join("ringnet.toml");
    let ca_dir = dir.join("state");
    std::fs::write(
        &config,
        format!("[tls]\nca_dir = \"{}\"\n", ca_dir.display()),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let out1 = dir.join("one.pem");
    let out2 = dir.join("two.pem");
    for out in [&out1, &out2] {
        let (code, stderr) = ringnet(&[
            "ca",
            "--config",
            config,
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(code, Some(0), "{stderr}");
    }
    let pem = std::fs::read_to_string(&out1).expect("written");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert!(!pem.contains("PRIVATE"));
    assert_eq!(
        std::fs::read_to_string(&out2).expect("written"),
        pem,
        "the same CA"
    );
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("ca.pem")).expect("stored"),
        pem
    );

    assert_one_line_error(&["ca"], "--out");
    let missing = dir.join("nope/out.pem");
    assert_one_line_error(
        &[
            "ca",
            "--config",
            config,
            "--out",
            missing.to_str().expect("utf-8"),
        ],
        "nope/out.pem",
    );
    let half = dir.join("half.toml");
    std::fs::write(&half, "[tls]\nca_cert = \"/x.pem\"\n").expect("write config");
    assert_one_line_error(
        &[
            "ca",
            "--config",
            half.to_str().expect("utf-8"),
            "--out",
            "-",
        ],
        "tls.ca_cert is set but tls.ca_key is not",
    );
    let files = dir.join("files.toml");
    std::fs::write(
        &files,
        "[tls]\nca_cert = \"/nonexistent/ca.pem\"\nca_key = \"/nonexistent/ca.key\"\n",
    )
    .expect("write config");
    assert_one_line_error(
        &[
            "ca",
            "--config",
            files.to_str().expect("utf-8"),
            "--out",
            "-",
        ],
        "cannot read /nonexistent/ca.pem",
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
