//! The QEMU stream protocol's framer (`backend::stream::frame`) on arbitrary bytes, as the
//! port reads them: the first two input bytes pick the largest frame (an MTU + 14) and a
//! read size, the rest is the stream, fed to a `Deframer` in reads of that size (and of
//! sizes the stream's own bytes vary), frames taken out after each read as the port does.
//! What comes out must equal a straightforward parse of the whole stream: the same frames
//! in order, then the same bad length (if any) at the same point, never a panic.
//!
//! Run: `cargo +nightly fuzz run stream_frames` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnet::backend::stream::frame::{split, Deframer, Split, PREFIX_BYTES};

/// Every frame of `stream` in order, and the bad length that stopped the parse (if any).
fn reference(stream: &[u8], max: usize) -> (Vec<&[u8]>, Option<u32>) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        match split(&stream[at..], max) {
            Split::Frame(len) => {
                frames.push(&stream[at + PREFIX_BYTES..at + PREFIX_BYTES + len]);
                at += PREFIX_BYTES + len;
            }
            Split::Partial => return (frames, None),
            Split::BadLength(len) => return (frames, Some(len)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else {
        return;
    };
    // Small maxima make bad lengths and big records likely from short inputs; 14 + 576
    // .. 14 + 65520 covers ringnet's MTU range too.
    let max = match a % 4 {
        0 => 14 + usize::from(*a),
        1 => 14 + 576,
        2 => 14 + 1500,
        _ => 14 + 65520,
    };
    let step = usize::from(*b).max(1);
    let (want, want_bad) = reference(stream, max);
    // A small buffer: compaction happens often.
    let mut d = Deframer::new(0, max);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut bad = None;
    let mut fed = 0;
    let mut round = 0usize;
    'feed: while fed < stream.len() {
        let spare = d.spare();
        assert!(
            !spare.is_empty(),
            "no room with only an incomplete record buffered"
        );
        // Vary the read size with the stream's bytes: 1..=step.
        let size = 1 + (usize::from(stream[(fed + round) % stream.len()]) % step);
        let n = size.min(spare.len()).min(stream.len() - fed);
        spare[..n].copy_from_slice(&stream[fed..fed + n]);
        d.filled(n);
        fed += n;
        round += 1;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    got.push(f.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e.0);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_slice(), *w);
    }
    assert_eq!(bad, want_bad);
});
