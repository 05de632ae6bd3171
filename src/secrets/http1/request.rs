//! A request head: where its placeholders are, whether each may be replaced, its framing.

use zeroize::Zeroize;

use super::stream::{violation, Edit, Framing, Head, Held, Message, Sub};
use super::{Expect, RewriteError, Shared, Side, MAX_HEADERS};
use crate::secrets::scan::Scanner;
use crate::secrets::{base64, host_header_name, Place, ViolationReason};

/// Byte range of `part` (a subslice of `base`) in `base`.
fn range(base: &[u8], part: &[u8]) -> (usize, usize) {
    let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    (start, start + part.len())
}

fn malformed(what: impl Into<String>) -> RewriteError {
    RewriteError::Malformed {
        side: Side::FromGuest,
        what: what.into(),
    }
}

/// The authority of an absolute-form target (`http://host:port/path`), if it is one.
fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo is not allowed in http(s) URIs (RFC 9110 §4.2.4); judge the host after it.
    Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
}

/// The token range of `Authorization: Basic <token>` within `value` (absolute in `raw`).
fn basic_token(raw: &[u8], value: &[u8]) -> Option<(usize, usize)> {
    let (start, _) = range(raw, value);
    let scheme_len = value.iter().position(|&b| b == b' ')?;
    if !value[..scheme_len].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let spaces = value[scheme_len..]
        .iter()
        .take_while(|&&b| b == b' ')
        .count();
    let token = &value[scheme_len + spaces..];
    let len = token
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(token.len());
    let tok_start = start + scheme_len + spaces;
    (len > 0).then_some((tok_start, tok_start + len))
}

/// Analyzes a complete request head: returns it with its edits, what the paired response
/// should expect, and the number of placeholders replaced.
pub(super) fn analyze(sh: &Shared, raw: Vec<u8>) -> Result<(Head, Expect, u64), RewriteError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&raw) {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(_) => return Err(malformed("the head does not end where its empty line is")),
        Err(e) => return Err(malformed(e.to_string())),
    }
    // Both are set once parsing is complete.
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let method_range = range(&raw, method.as_bytes());
    let target_range = range(&raw, target.as_bytes());
    let query_range = target
        .find('?')
        .map(|q| (target_range.0 + q + 1, target_range.1));

    let named = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let hosts: Vec<&[u8]> = named("host").map(|h| h.value).collect();
    let host_value = match hosts.as_slice() {
        [one] => std::str::from_utf8(one).ok(),
        _ => None,
    };
    let report_host = host_value
        .map(str::to_owned)
        .or_else(|| sh.flow.sni.clone())
        .unwrap_or_default();
    let agreement: Result<String, ViolationReason> = match host_value {
        None => Err(ViolationReason::NoHost),
        Some(h) => match absolute_authority(target) {
            Some(a) if host_header_name(a) != host_header_name(h) => Err(ViolationReason::NoHost),
            _ => sh.flow.agree(h),
        },
    };
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
    let msg = Message {
        decisions: (0..secrets.len()).map(|i| decide(i, Place::Body)).collect(),
        host: report_host,
        opaque_after: named("upgrade").next().is_some(),
    };
    let mut sub = Sub::for_head(Side::FromGuest, sh, &msg);
    let mut edits = Vec::new();

    // Credentials of `Authorization: Basic`, decoded.
    let mut basic = Vec::new();
    for h in named("authorization") {
        let Some((start, end)) = basic_token(&raw, h.value) else {
            continue;
        };
        let Some(mut decoded) = base64::decode(&raw[start..end]) else {
            continue;
        };
        let found = sh.placeholders.find_all(&decoded);
        if !found.is_empty() {
            for &(_, idx) in &found {
                decide(idx, Place::BasicAuth).map_err(|r| violation(sh, idx, &msg.host, r))?;
            }
            let mut plain = Vec::with_capacity(decoded.len());
            Scanner::new().push(&sh.placeholders, &decoded, true, &mut plain, &mut |i, o| {
                sub.apply(i, o)
            })?;
            let with = base64::encode(&plain);
            plain.zeroize();
            sub.grow(with.len().saturating_sub(end - start))?;
            edits.push(Edit { start, end, with });
            basic.push((start, end));
        }
        decoded.zeroize();
    }

    // Literal placeholders anywhere in the head.
    let classify = |start: usize, end: usize| -> Result<Place, &'static str> {
        let inside = |(s, e): (usize, usize)| start >= s && end <= e;
        let overlaps = |(s, e): (usize, usize)| start < e && end > s;
        if overlaps(target_range) {
            return match query_range {
                Some(q) if inside(q) => Ok(Place::Query),
                _ => Err("request path"),
            };
        }
        if overlaps(method_range) {
            return Err("request line");
        }
        for h in req.headers.iter() {
            if overlaps(range(&raw, h.name.as_bytes())) {
                return Err("header name");
            }
            let value = range(&raw, h.value);
            if inside(value) {
                return Ok(Place::Headers);
            }
            if overlaps(value) {
                return Err("request head");
            }
        }
        Err("request head")
    };
    for (start, idx) in sh.placeholders.find_all(&raw) {
        let end = start + sh.placeholders.len_of(idx);
        if basic.iter().any(|&(s, e)| start >= s && end <= e) {
            // Inside credentials rewritten whole above.
            continue;
        }
        let place = classify(start, end)
            .map_err(|what| violation(sh, idx, &msg.host, ViolationReason::NeverInjected(what)))?;
        decide(idx, place).map_err(|r| violation(sh, idx, &msg.host, r))?;
        let mut with = Vec::new();
        sub.apply(idx, &mut with)?;
        edits.push(Edit { start, end, with });
    }
    let subs = sub.count;

    // Framing (RFC 9112 §6.1–6.3).
    let te: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    let cl: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
    let mut content_length = None;
    let framing = if method.eq_ignore_ascii_case("CONNECT") {
        Framing::OpaqueNow
    } else if let Some(last) = te.last() {
        if !cl.is_empty() {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        let coding = last.rsplit(|&b| b == b',').next().unwrap_or(last);
        if !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(malformed("Transfer-Encoding does not end in chunked"));
        }
        Framing::Chunked
    } else {
        match cl.as_slice() {
            [] => Framing::None,
            [one] => {
                let n = parse_length(one).ok_or_else(|| malformed("bad Content-Length"))?;
                let (start, end) = range(&raw, one);
                content_length = Some((start, end, n));
                Framing::Sized(n)
            }
            _ => return Err(malformed("several Content-Length fields")),
        }
    };
    let drop_when_buffered = named("expect")
        .find(|h| h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
        .map(|h| {
            let (start, _) = range(&raw, h.name.as_bytes());
            let (_, value_end) = range(&raw, h.value);
            let end = raw[value_end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(raw.len(), |p| value_end + p + 1);
            (start, end)
        });
    let expect = Expect {
        head: method.eq_ignore_ascii_case("HEAD"),
        connect: method.eq_ignore_ascii_case("CONNECT"),
    };
    let buffer_body = msg.decisions.iter().any(Result::is_ok);
    let head = Head {
        held: Held {
            raw,
            edits,
            content_length,
            drop_when_buffered,
        },
        framing,
        buffer_body,
        msg,
    };
    Ok((head, expect, subs))
}

/// A `Content-Length` value: 1 to 18 decimal digits.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}
