//! The HTTP/2 secrets rewriter (`secrets::http2::Rewriter`) on arbitrary bytes from both
//! sides:
//! - the first byte picks the flow (an SNI allowed for both secrets, for one, for none, or
//!   no SNI) and seeds the piece sizes; the rest is split in two at a point given by the
//!   second byte: guest bytes (after the client preface, which is prepended so the fuzzer
//!   reaches the frames), then host bytes;
//! - each stream is fed in pieces of 1..=64 bytes to one rewriter and all at once to
//!   another: the outputs and the first errors must be identical (split invariance);
//! - after every call the bytes held back stay within `BUFFERED_MAX`;
//! - the guest's output never holds a placeholder: it is replaced or the flow stopped.
//!
//! The placeholders are short (8 bytes) so that the fuzzer finds them.
//!
//! Any panic, a differing output or an exceeded bound is a bug.
//!
//! Run: `cargo +nightly fuzz run secrets_http2` from `fuzz/`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringnet::secrets::http2::{RewriteError, Rewriter, BUFFERED_MAX, PREFACE};
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
    let guest = [PREFACE.as_slice(), guest].concat();
    let secrets = secrets();
    let mut pieces = Rewriter::new(secrets.clone(), ctx.clone());
    let mut whole = Rewriter::new(secrets, ctx);
    let mut seed = u32::from(*mode);
    let a = feed(&mut pieces, true, &guest, &mut seed, false);
    let b = feed(&mut whole, true, &guest, &mut seed, true);
    assert_eq!(a, b, "guest bytes split differently give different results");
    for p in [&b"$SECRET1"[..], b"@TOKEN02"] {
        assert!(clean(&a.0, p), "a placeholder went out");
    }
    if a.1.is_some() {
        return;
    }
    let a = feed(&mut pieces, false, host, &mut seed, false);
    let b = feed(&mut whole, false, host, &mut seed, true);
    assert_eq!(a, b, "host bytes split differently give different results");
    assert_eq!(pieces.stats(), whole.stats());
});

/// True when no payload the rewriter scans holds `p` in the guest's output. A placeholder
/// may go out only where nothing is scanned: header block frames (their fields are judged
/// decoded, not their bytes), SETTINGS, PING, PRIORITY, RST_STREAM and WINDOW_UPDATE
/// payloads, the first 8 bytes of GOAWAY, or across frame boundaries.
fn clean(out: &[u8], p: &[u8]) -> bool {
    let mut rest = &out[PREFACE.len().min(out.len())..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let ty = rest[3];
        // The last frame may be cut short by an error (a scanned payload up to the match).
        let payload = &rest[9..(9 + len).min(rest.len())];
        let scanned = match ty {
            0x7 => payload.get(8..).unwrap_or(&[]),
            0x1..=0x6 | 0x8 | 0x9 => &[][..],
            // DATA (never padded as the rewriter writes it), frames of unknown type.
            _ => payload,
        };
        if scanned.windows(p.len()).any(|w| w == p) {
            return false;
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    true
}
