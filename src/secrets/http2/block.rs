//! Decoded header blocks: where a request's placeholders are and whether each may be
//! replaced, trailers, responses scrubbed; and [`Swap`], the replacement rule of a DATA
//! segment or control frame.

use zeroize::Zeroize;

use super::frame::{Field, Fields};
use super::{RewriteError, Shared, Side, GROWTH_MAX};
use crate::secrets::{base64, host_header_name, Place, Violation, ViolationReason};

/// What a request's header block decided for its stream's DATA.
#[derive(Debug, Default)]
pub(super) struct Message {
    /// Per secret, whether its value may go into this stream's DATA.
    pub decisions: Vec<Result<(), ViolationReason>>,
    /// The host as the request named it (for violations).
    pub host: String,
}

/// The outcome of a header block analysis.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Some field was rewritten or dropped.
    pub changed: bool,
    /// Placeholders replaced (requests) or values scrubbed (responses).
    pub count: u64,
}

/// The violation of secret `idx` towards `host`.
pub(super) fn violation(
    sh: &Shared,
    idx: usize,
    host: &str,
    reason: ViolationReason,
) -> RewriteError {
    let s = &sh.secrets.list()[idx];
    RewriteError::Violation(Violation {
        env_var: s.env_var.clone(),
        host: host.to_owned(),
        reason,
        on_violation: s.on_violation,
    })
}

/// Growth accounting of one block or segment.
#[derive(Debug)]
struct Growth {
    side: Side,
    added: usize,
}

impl Growth {
    fn add(&mut self, more: usize) -> Result<(), RewriteError> {
        self.added += more;
        if self.added > GROWTH_MAX {
            return Err(RewriteError::Expansion { side: self.side });
        }
        Ok(())
    }
}

/// A replacement in `text`: `with` instead of `text[start..end]`.
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

impl Drop for Edit {
    fn drop(&mut self) {
        self.with.zeroize();
    }
}

/// `text` with `edits` (sorted, disjoint) applied.
fn render(text: &[u8], edits: &mut [Edit]) -> Vec<u8> {
    edits.sort_by_key(|e| e.start);
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for e in edits.iter() {
        out.extend_from_slice(&text[at..e.start]);
        out.extend_from_slice(&e.with);
        at = e.end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

/// The token range of `Basic <token>` in an `authorization` value.
fn basic_token(value: &[u8]) -> Option<(usize, usize)> {
    let scheme_len = value.iter().position(|&b| b == b' ')?;
    if !value[..scheme_len].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let start = scheme_len
        + value[scheme_len..]
            .iter()
            .take_while(|&&b| b == b' ')
            .count();
    let len = value[start..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len() - start);
    (len > 0).then_some((start, start + len))
}

/// Analyzes a request's header block (the first of its stream) and rewrites its fields in
/// place. Returns the outcome and what it decided for the stream's DATA.
pub(super) fn request(
    sh: &Shared,
    fields: &mut Fields,
    end_stream: bool,
) -> Result<(Outcome, Message), RewriteError> {
    let named = |name: &'static [u8]| {
        fields
            .0
            .iter()
            .filter(move |(n, _)| n.as_slice() == name)
            .map(|(_, v)| std::str::from_utf8(v).ok())
    };
    let authorities: Vec<Option<&str>> = named(b":authority").collect();
    let hosts: Vec<Option<&str>> = named(b"host").collect();
    // `:authority` and `host` must name the same host when both are present
    // (RFC 9113 §8.3.1); several of either, or neither, names none.
    let host_value = match (authorities.as_slice(), hosts.as_slice()) {
        ([Some(a)], []) | ([], [Some(a)]) => Some(*a),
        ([Some(a)], [Some(h)]) if host_header_name(a) == host_header_name(h) => Some(*a),
        _ => None,
    };
    let report_host = host_value
        .map(str::to_owned)
        .or_else(|| sh.flow.sni.clone())
        .unwrap_or_default();
    let agreement = host_value.map_or(Err(ViolationReason::NoHost), |h| sh.flow.agree(h));
    let tunnel = named(b":method").any(|m| m == Some("CONNECT"));
    let secrets = sh.secrets.list();
    let decide = |idx: usize, place: Place| -> Result<(), ViolationReason> {
        let s = &secrets[idx];
        let host = agreement.as_ref().map_err(|r| *r)?;
        if !s.allows_host(host) {
            return Err(ViolationReason::HostNotAllowed);
        }
        if !s.injects_in(place) {
            return Err(ViolationReason::PlaceNotAllowed(place));
        }
        Ok(())
    };
    let decisions: Vec<Result<(), ViolationReason>> = (0..secrets.len())
        .map(|i| {
            if tunnel {
                Err(ViolationReason::NeverInjected("tunnelled stream"))
            } else {
                decide(i, Place::Body)
            }
        })
        .collect();
    let fail = |idx: usize, reason: ViolationReason| violation(sh, idx, &report_host, reason);
    let pats = &sh.placeholders;
    let mut growth = Growth {
        side: Side::FromGuest,
        added: 0,
    };
    let mut outcome = Outcome::default();
    let mut rewritten: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, (name, value)) in fields.0.iter().enumerate() {
        if let Some(&(_, idx)) = pats.find_all(name).first() {
            return Err(fail(idx, ViolationReason::NeverInjected("header name")));
        }
        let mut edits = Vec::new();
        // Credentials of `authorization: Basic`, decoded.
        let mut basic = None;
        if name.as_slice() == b"authorization" {
            if let Some((start, end)) = basic_token(value) {
                if let Some(mut decoded) = base64::decode(&value[start..end]) {
                    let found = pats.find_all(&decoded);
                    if !found.is_empty() {
                        let mut inner = Vec::new();
                        for &(at, idx) in &found {
                            decide(idx, Place::BasicAuth).map_err(|r| fail(idx, r))?;
                            let with = secrets[idx].value.expose().to_vec();
                            growth.add(with.len().saturating_sub(pats.len_of(idx)))?;
                            inner.push(Edit {
                                start: at,
                                end: at + pats.len_of(idx),
                                with,
                            });
                        }
                        let mut plain = render(&decoded, &mut inner);
                        let with = base64::encode(&plain);
                        plain.zeroize();
                        growth.add(with.len().saturating_sub(end - start))?;
                        edits.push(Edit { start, end, with });
                        basic = Some((start, end));
                        outcome.count += found.len() as u64;
                    }
                    decoded.zeroize();
                }
            }
        }
        // Literal placeholders anywhere in the value.
        for (start, idx) in pats.find_all(value) {
            let end = start + pats.len_of(idx);
            if basic.is_some_and(|(s, e)| start >= s && end <= e) {
                continue;
            }
            let place = if name.as_slice() == b":path" {
                match value.iter().position(|&b| b == b'?') {
                    Some(q) if start > q => Place::Query,
                    _ => {
                        return Err(fail(idx, ViolationReason::NeverInjected("request path")));
                    }
                }
            } else if name.first() == Some(&b':') {
                return Err(fail(idx, ViolationReason::NeverInjected("pseudo-header")));
            } else {
                Place::Headers
            };
            decide(idx, place).map_err(|r| fail(idx, r))?;
            let with = secrets[idx].value.expose().to_vec();
            growth.add(with.len().saturating_sub(end - start))?;
            edits.push(Edit { start, end, with });
            outcome.count += 1;
        }
        if !edits.is_empty() {
            rewritten.push((i, render(value, &mut edits)));
        }
    }
    for (i, mut value) in rewritten {
        std::mem::swap(&mut fields.0[i].1, &mut value);
        value.zeroize();
        outcome.changed = true;
    }
    // The body may change length: its declared length goes.
    let body_may_change = !end_stream
        && decisions
            .iter()
            .zip(&sh.len_differs)
            .any(|(d, &differs)| d.is_ok() && differs);
    if body_may_change {
        outcome.changed |= drop_content_length(&mut fields.0);
    }
    Ok((
        outcome,
        Message {
            decisions,
            host: report_host,
        },
    ))
}

/// Checks trailers (a later header block of a request stream): no placeholder anywhere.
pub(super) fn trailers(sh: &Shared, fields: &Fields, host: &str) -> Result<(), RewriteError> {
    for (name, value) in &fields.0 {
        for text in [name, value] {
            if let Some(&(_, idx)) = sh.placeholders.find_all(text).first() {
                return Err(violation(
                    sh,
                    idx,
                    host,
                    ViolationReason::NeverInjected("trailers"),
                ));
            }
        }
    }
    Ok(())
}

/// Scrubs a response (or PUSH_PROMISE) header block in place: real values in names and
/// values become placeholders; `content-length` goes when `body_follows` and a value may
/// change length.
pub(super) fn response(
    sh: &Shared,
    fields: &mut Fields,
    body_follows: bool,
) -> Result<Outcome, RewriteError> {
    let mut growth = Growth {
        side: Side::FromHost,
        added: 0,
    };
    let mut outcome = Outcome::default();
    let secrets = sh.secrets.list();
    for (name, value) in &mut fields.0 {
        for text in [name, value] {
            let found = sh.values.find_all(text);
            if found.is_empty() {
                continue;
            }
            let mut edits = Vec::with_capacity(found.len());
            for (start, idx) in found {
                let with = secrets[idx].placeholder.as_bytes().to_vec();
                let end = start + sh.values.len_of(idx);
                growth.add(with.len().saturating_sub(end - start))?;
                edits.push(Edit { start, end, with });
                outcome.count += 1;
            }
            let mut old = std::mem::take(text);
            *text = render(&old, &mut edits);
            old.zeroize();
            outcome.changed = true;
        }
    }
    if body_follows && sh.scrub_len_differs {
        outcome.changed |= drop_content_length(&mut fields.0);
    }
    Ok(outcome)
}

/// Removes every `content-length` field; true when there was one.
fn drop_content_length(fields: &mut Vec<Field>) -> bool {
    let before = fields.len();
    fields.retain(|(n, _)| n.as_slice() != b"content-length");
    fields.len() != before
}

/// Whose rule a DATA segment's (or a control frame's) replacements follow.
#[derive(Copy, Clone, Debug)]
pub(super) enum Rule<'a> {
    /// A request stream's decisions, and its host for reports.
    Decided {
        decisions: &'a [Result<(), ViolationReason>],
        host: &'a str,
    },
    /// Nothing is ever replaced here (named): a placeholder is a violation, a value
    /// [`RewriteError::SecretEchoed`].
    Never(&'static str),
    /// Responses: every value found is scrubbed.
    Scrub,
}

/// The scanner callback's state for one segment or control frame.
pub(super) struct Swap<'a> {
    sh: &'a Shared,
    side: Side,
    rule: Rule<'a>,
    growth: Growth,
    pub count: u64,
}

impl<'a> Swap<'a> {
    pub(super) fn new(sh: &'a Shared, side: Side, rule: Rule<'a>) -> Swap<'a> {
        Swap {
            sh,
            side,
            rule,
            growth: Growth { side, added: 0 },
            count: 0,
        }
    }

    /// Appends the replacement of pattern `idx`, or refuses.
    pub(super) fn apply(&mut self, idx: usize, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let s = &self.sh.secrets.list()[idx];
        let (from, to) = match (self.side, self.rule) {
            (Side::FromGuest, Rule::Decided { decisions, host }) => {
                match decisions.get(idx) {
                    Some(Ok(())) => {}
                    Some(Err(reason)) => return Err(violation(self.sh, idx, host, *reason)),
                    None => {
                        let reason = ViolationReason::NeverInjected("request");
                        return Err(violation(self.sh, idx, host, reason));
                    }
                }
                (s.placeholder.as_bytes(), s.value.expose())
            }
            (Side::FromGuest, Rule::Never(what)) => {
                let host = self.sh.flow.sni.as_deref().unwrap_or("");
                let reason = ViolationReason::NeverInjected(what);
                return Err(violation(self.sh, idx, host, reason));
            }
            (Side::FromHost, Rule::Never(_)) => {
                return Err(RewriteError::SecretEchoed {
                    env_var: s.env_var.clone(),
                })
            }
            (Side::FromHost, _) => (s.value.expose(), s.placeholder.as_bytes()),
            (Side::FromGuest, Rule::Scrub) => {
                let host = self.sh.flow.sni.as_deref().unwrap_or("");
                let reason = ViolationReason::NeverInjected("request");
                return Err(violation(self.sh, idx, host, reason));
            }
        };
        self.growth.add(to.len().saturating_sub(from.len()))?;
        out.extend_from_slice(to);
        self.count += 1;
        Ok(())
    }
}
