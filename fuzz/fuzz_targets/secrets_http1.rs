//! The secrets rewriter (`secrets::http1::Rewriter`) on arbitrary bytes from both sides:
//! - the first byte picks the flow (an SNI allowed for both secrets, for one, for none, or
//!   no SNI) and seeds the piece sizes; the rest is split in two at a point given by the
//!   second byte: guest bytes (decrypted requests), then host bytes (responses);
//! - each stream is fed in pieces of 1..=64 bytes to one rewriter and all at once to
//!   another: the outputs and the first errors must be identical (split invariance);
//! - after every call the bytes held back stay within `BUFFERED_MAX`.
//!
//! The placeholders are short (8 bytes) so that the fuzzer finds them.
//!
//! Any panic, a differing output or an exceeded bound is a bug.
//!
//! Run: `cargo +nightly fuzz run secrets_http1` from `fuzz/`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringnet::secrets::http1::{RewriteError, Rewriter, BUFFERED_MAX};
use ringnet::secrets::{FlowContext, OnViolation, Place, SecretSpec, SecretValue, Secrets};

fn spec(
    env_var: &str,
    placeholder: &str,
    value: &str,
    hosts: &[&str],
    inject_in: &[Place],
) -> SecretSpec {
    SecretSpec {
        env_var: env_var.to_owned(),
        value: Some(SecretValue::new(value.as_bytes().to_vec())),
        value_from_env: None,
        value_file: None,
        placeholder: Some(placeholder.to_owned()),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        inject_in: inject_in.to_vec(),
        on_violation: OnViolation::BlockAndLog,
    }
}

fn secrets() -> Arc<Secrets> {
    let specs = [
        spec(
            "ONE",
            "$SECRET1",
            "VALUE-ONE-LONGER",
            &["*.example.com"],
            &Place::ALL,
        ),
        spec(
            "TWO",
            "@TOKEN02",
            "v2",
            &["a.example.com"],
            &[Place::Headers],
        ),
    ];
    Arc::new(Secrets::load(&specs).expect("fixed secrets are valid"))
}

type Run = (Vec<u8>, Option<RewriteError>);

fn feed(rw: &mut Rewriter, from_guest: bool, data: &[u8], seed: &mut u32, whole: bool) -> Run {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = if whole {
            rest.len()
        } else {
            *seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (1 + (*seed >> 16) as usize % 64).min(rest.len())
        };
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let r = if from_guest {
            rw.from_guest(piece, &mut out)
        } else {
            rw.from_host(piece, &mut out)
        };
        assert!(
            rw.buffered() <= BUFFERED_MAX,
            "{} bytes held",
            rw.buffered()
        );
        if let Err(e) = r {
            return (out, Some(e));
        }
    }
    let r = if from_guest {
        rw.guest_closed(&mut out)
    } else {
        rw.host_closed(&mut out)
    };
    (out, r.err())
}

fuzz_target!(|data: &[u8]| {
    let [mode, cut, rest @ ..] = data else {
        return;
    };
    let sni = match mode & 3 {
        0 => Some("a.example.com"),
        1 => Some("b.example.com"),
        2 => Some("elsewhere.test"),
        _ => None,
    };
    let ctx = FlowContext {
        sni: sni.map(str::to_owned),
        pinned: sni.into_iter().map(str::to_owned).collect(),
    };
    let at = rest.len() * usize::from(*cut) / 256;
    let (guest, host) = rest.split_at(at);
    let secrets = secrets();
    let mut pieces = Rewriter::new(secrets.clone(), ctx.clone());
    let mut whole = Rewriter::new(secrets, ctx);
    let mut seed = u32::from(*mode);
    let a = feed(&mut pieces, true, guest, &mut seed, false);
    let b = feed(&mut whole, true, guest, &mut seed, true);
    assert_eq!(a, b, "guest bytes split differently give different results");
    if a.1.is_some() {
        return;
    }
    let a = feed(&mut pieces, false, host, &mut seed, false);
    let b = feed(&mut whole, false, host, &mut seed, true);
    assert_eq!(a, b, "host bytes split differently give different results");
    assert_eq!(pieces.stats(), whole.stats());
});
