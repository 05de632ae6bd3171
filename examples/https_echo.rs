//! A standalone HTTPS echo server: the test kit's server (`tests/common/tls_server.rs`)
//! for perf scripts and manual runs.
//!
//! ```text
//! https_echo [--addr ADDR] (--cert CHAIN.pem --key KEY.pem | --ca-dir DIR [--name N]…)
//!            [--netns NAME] [--client-cert]
//! ```
//!
//! - `--addr`: where to listen (default `127.0.0.1:8443`; port 0 picks one).
//! - `--cert`/`--key`: the server's chain and key.
//! - `--ca-dir DIR`: make a test CA, write its certificate to `DIR/ca.pem` (the client's
//!   `--cacert`), and serve a certificate from it for every `--name` (DNS names or IP
//!   literals; default `localhost`).
//! - `--netns NAME`: bind inside the named network namespace.
//! - `--client-cert`: ask for an optional client certificate (from the `--ca-dir` CA).
//!
//! Prints `listening on ADDR` once bound, then serves until killed: `GET /bytes/N` answers
//! N bytes of `x`, anything else gets its request echoed (see the module).

#[allow(dead_code)] // the tests use more of the module than this example
#[path = "../tests/common/tls_server.rs"]
mod tls_server;

use std::io::Write;
use std::path::PathBuf;
use std::process::exit;

use tls_server::{CertChoice, ServerOpts, TestCa, TlsServer};

fn usage(why: &str) -> ! {
    eprintln!("https_echo: {why}");
    eprintln!(
        "usage: https_echo [--addr ADDR] (--cert CHAIN.pem --key KEY.pem | --ca-dir DIR [--name N]...) [--netns NAME] [--client-cert]"
    );
    exit(2);
}

fn main() {
    let mut addr = "127.0.0.1:8443".to_string();
    let (mut cert, mut key, mut ca_dir) = (None, None, None::<PathBuf>);
    let mut names: Vec<String> = Vec::new();
    let mut netns = None;
    let mut client_cert = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--addr" => addr = value(),
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            "--ca-dir" => ca_dir = Some(value().into()),
            "--name" => names.push(value()),
            "--netns" => netns = Some(value()),
            "--client-cert" => client_cert = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if names.is_empty() {
        names.push("localhost".to_string());
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let read = |p: &str| {
        std::fs::read_to_string(p).unwrap_or_else(|e| usage(&format!("reading {p}: {e}")))
    };
    let ca = TestCa::new("https_echo test CA");
    let choice = match (cert, key, &ca_dir) {
        (Some(c), Some(k), None) => CertChoice::Pem {
            chain: read(&c),
            key: read(&k),
        },
        (None, None, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| usage(&format!("creating {}: {e}", dir.display())));
            let path = dir.join("ca.pem");
            std::fs::write(&path, ca.cert_pem())
                .unwrap_or_else(|e| usage(&format!("writing {}: {e}", path.display())));
            CertChoice::FromCa
        }
        _ => usage("give either --cert and --key, or --ca-dir"),
    };
    if client_cert && ca_dir.is_none() {
        usage("--client-cert needs --ca-dir (client certificates are checked against its CA)");
    }
    let server = TlsServer::start(ServerOpts {
        netns,
        cert: choice,
        request_client_cert: client_cert,
        ..ServerOpts::new(&ca, &addr, &name_refs)
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
