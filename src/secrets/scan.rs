//! A streaming multi-pattern finder and replacer.
//!
//! # Theory of operation
//!
//! [`Patterns`] is a fixed set of non-empty byte strings (placeholders on requests, real
//! values on responses). Matching is leftmost-longest and non-overlapping: at each position
//! the longest pattern that matches wins, and scanning resumes after it.
//!
//! [`Scanner`] applies that to a stream delivered in arbitrary pieces. Each call outputs
//! every byte that can no longer be part of a match, replacing each match through a
//! callback, and keeps back the *carry*: the bytes from the first position whose suffix is
//! still a proper prefix of some pattern (so the decision there needs bytes not yet seen).
//! The decision at a position depends only on the bytes from it up to the longest pattern's
//! length, and is taken only once those bytes are known (or the stream has ended), so the
//! output does not depend on how the input was split: byte by byte gives what all at once
//! gives (property-tested).
//!
//! Invariant: `carry.len() < Patterns::max_len()`. A pattern that starts in the carry is
//! resolved from the carry plus at most `max_len` bytes of the next input, copied into a
//! small buffer; everything else is scanned in place, with a 256-entry table of first bytes
//! to skip positions where no pattern can start.

/// A fixed set of patterns, each identified by its index in the list given to
/// [`Patterns::new`].
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    /// `(index, bytes)`, longest first.
    by_len: Vec<(usize, Box<[u8]>)>,
    first: Box<[bool]>,
    /// The distinct first bytes (for a memchr jump to the next candidate position).
    firsts: Vec<u8>,
    max_len: usize,
}

/// What the scan sees at one position.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum At {
    /// Pattern `idx` (of length `len`) matches here.
    Match {
        idx: usize,
        len: usize,
    },
    /// The bytes to the end are a proper prefix of a pattern: undecided.
    Pending,
    None,
}

impl Patterns {
    /// The set of `patterns`; empty ones are ignored (never match).
    #[must_use]
    pub fn new<P: AsRef<[u8]>>(patterns: impl IntoIterator<Item = P>) -> Patterns {
        let mut by_len: Vec<(usize, Box<[u8]>)> = patterns
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.as_ref().is_empty())
            .map(|(i, p)| (i, Box::from(p.as_ref())))
            .collect();
        by_len.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut first = vec![false; 256].into_boxed_slice();
        for (_, p) in &by_len {
            first[usize::from(p[0])] = true;
        }
        let max_len = by_len.first().map_or(0, |(_, p)| p.len());
        let firsts = (0..=255u8).filter(|&b| first[usize::from(b)]).collect();
        Patterns {
            by_len,
            first,
            firsts,
            max_len,
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }

    /// The longest pattern's length (0 when empty).
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The first position at or after `from` where some pattern could start (`buf.len()`
    /// when none): memchr for up to three distinct first bytes, else a table scan.
    fn next_start(&self, buf: &[u8], from: usize) -> usize {
        let rest = &buf[from.min(buf.len())..];
        let found = match self.firsts[..] {
            [a] => memchr::memchr(a, rest),
            [a, b] => memchr::memchr2(a, b, rest),
            [a, b, c] => memchr::memchr3(a, b, c, rest),
            _ => rest.iter().position(|&x| self.first[usize::from(x)]),
        };
        found.map_or(buf.len(), |j| from + j)
    }

    fn at(&self, buf: &[u8], i: usize, at_end: bool) -> At {
        if !self.first[usize::from(buf[i])] {
            return At::None;
        }
        let rest = &buf[i..];
        for (idx, p) in &self.by_len {
            if rest.len() >= p.len() {
                if rest[..p.len()] == **p {
                    return At::Match {
                        idx: *idx,
                        len: p.len(),
                    };
                }
            } else if !at_end && p.starts_with(rest) {
                return At::Pending;
            }
        }
        At::None
    }

    /// Every match in the complete `buf`: `(start, index)`, in order.
    #[must_use]
    pub fn find_all(&self, buf: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        if self.is_empty() {
            return found;
        }
        let mut i = self.next_start(buf, 0);
        while i < buf.len() {
            match self.at(buf, i, true) {
                At::Match { idx, len } => {
                    found.push((i, idx));
                    i = self.next_start(buf, i + len);
                }
                _ => i = self.next_start(buf, i + 1),
            }
        }
        found
    }

    /// The length of pattern `idx` (0 when unknown).
    #[must_use]
    pub fn len_of(&self, idx: usize) -> usize {
        self.by_len
            .iter()
            .find(|(i, _)| *i == idx)
            .map_or(0, |(_, p)| p.len())
    }
}

/// The replacement callback of [`Scanner::push`]: appends pattern `index`'s replacement.
pub type Replace<'r, E> = dyn FnMut(usize, &mut Vec<u8>) -> Result<(), E> + 'r;

/// The streaming state: the carry.
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    carry: Vec<u8>,
}

impl Scanner {
    #[must_use]
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Bytes held back now (always less than the longest pattern).
    #[must_use]
    pub fn carried(&self) -> usize {
        self.carry.len()
    }

    /// Scans `input` after the carry. Appends to `out` every byte decided, calling
    /// `replace(index, out)` for each match instead of copying the pattern (it appends the
    /// replacement, or refuses with an error, which ends the call: `out` then holds what
    /// preceded the match, and the scanner must not be used again). With `at_end`, the
    /// stream ends after `input`: nothing is carried.
    ///
    /// Returns the number of matches.
    ///
    /// # Errors
    /// The first error of `replace`.
    pub fn push<E>(
        &mut self,
        pats: &Patterns,
        input: &[u8],
        at_end: bool,
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<u64, E> {
        if pats.is_empty() {
            out.append(&mut self.carry);
            out.extend_from_slice(input);
            return Ok(0);
        }
        let mut matches = 0;
        let mut start = 0;
        if !self.carry.is_empty() {
            let carried = self.carry.len();
            let take = input.len().min(pats.max_len);
            let mut tmp = std::mem::take(&mut self.carry);
            tmp.extend_from_slice(&input[..take]);
            let tmp_end = at_end && take == input.len();
            let mut i = 0;
            while i < carried {
                match pats.at(&tmp, i, tmp_end) {
                    At::Match { idx, len } => {
                        replace(idx, out)?;
                        matches += 1;
                        i += len;
                    }
                    At::Pending => {
                        // Only when `tmp` holds all of `input` (else it reaches past the
                        // longest pattern): keep it all.
                        tmp.drain(..i);
                        self.carry = tmp;
                        return Ok(matches);
                    }
                    At::None => {
                        out.push(tmp[i]);
                        i += 1;
                    }
                }
            }
            start = i - carried;
        }
        let mut emitted = start;
        let mut i = pats.next_start(input, start);
        while i < input.len() {
            match pats.at(input, i, at_end) {
                At::None => i = pats.next_start(input, i + 1),
                At::Match { idx, len } => {
                    out.extend_from_slice(&input[emitted..i]);
                    replace(idx, out)?;
                    matches += 1;
                    i += len;
                    emitted = i;
                    i = pats.next_start(input, i);
                }
                At::Pending => {
                    out.extend_from_slice(&input[emitted..i]);
                    self.carry.extend_from_slice(&input[i..]);
                    return Ok(matches);
                }
            }
        }
        out.extend_from_slice(&input[emitted.min(input.len())..]);
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(pats: &Patterns, pieces: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        let mut n = 0;
        let mut rep = |idx: usize, out: &mut Vec<u8>| -> Result<(), ()> {
            out.extend_from_slice(format!("<{idx}>").as_bytes());
            Ok(())
        };
        for p in pieces {
            n += s.push(pats, p, false, &mut out, &mut rep).unwrap();
            assert!(s.carried() < pats.max_len().max(1));
        }
        n += s.push(pats, &[], true, &mut out, &mut rep).unwrap();
        assert_eq!(s.carried(), 0);
        (out, n)
    }

    #[test]
    fn finds_and_replaces() {
        let pats = Patterns::new(["$SECRET_A", "$SECRET_BB"]);
        let (out, n) = run(&pats, &[b"x $SECRET_A y $SECRET_BB z $SECRET_"]);
        assert_eq!(out, b"x <0> y <1> z $SECRET_");
        assert_eq!(n, 2);
    }

    #[test]
    fn split_across_pieces() {
        let pats = Patterns::new(["$SECRET_A"]);
        let (out, _) = run(&pats, &[b"ab$SEC", b"RE", b"T_A!"]);
        assert_eq!(out, b"ab<0>!");
    }

    #[test]
    fn longest_wins_even_when_pending() {
        let pats = Patterns::new(["abc", "abcdef"]);
        assert_eq!(run(&pats, &[b"abcd", b"ef"]).0, b"<1>");
        assert_eq!(run(&pats, &[b"abcd", b"eX"]).0, b"<0>deX");
        assert_eq!(run(&pats, &[b"abcd"]).0, b"<0>d");
    }

    #[test]
    fn carry_holds_only_prefixes() {
        let pats = Patterns::new(["$SECRET_A"]);
        let mut s = Scanner::new();
        let mut out = Vec::new();
        let mut rep = |_: usize, _: &mut Vec<u8>| -> Result<(), ()> { Ok(()) };
        s.push(&pats, b"hello $SE", false, &mut out, &mut rep)
            .unwrap();
        assert_eq!(out, b"hello ");
        assert_eq!(s.carried(), 3);
        s.push(&pats, b"X", false, &mut out, &mut rep).unwrap();
        assert_eq!(out, b"hello $SEX");
        assert_eq!(s.carried(), 0);
    }

    #[test]
    fn replace_error_stops() {
        let pats = Patterns::new(["$SECRET_A"]);
        let mut s = Scanner::new();
        let mut out = Vec::new();
        let r = s.push(&pats, b"ok $SECRET_A no", false, &mut out, &mut |_, _| {
            Err("x")
        });
        assert_eq!(r, Err("x"));
        assert_eq!(out, b"ok ");
    }

    #[test]
    fn find_all_in_a_slice() {
        let pats = Patterns::new(["aa", "b"]);
        assert_eq!(pats.find_all(b"aaab b"), vec![(0, 0), (3, 1), (5, 1)]);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_output(
            data in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let pats = Patterns::new([&b"abca"[..], b"ab", b"cab", b"bbbbbb"]);
            let whole = run(&pats, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&data[last..c]);
                last = c;
            }
            pieces.push(&data[last..]);
            prop_assert_eq!(&run(&pats, &pieces), &whole);
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            prop_assert_eq!(&run(&pats, &bytes), &whole);
            // The streaming result equals the one-shot matcher's.
            let found = pats.find_all(&data);
            prop_assert_eq!(whole.1, found.len() as u64);
        }
    }
}
