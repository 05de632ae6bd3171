//! A response head: real values scrubbed back to placeholders, framing by the paired
//! request (RFC 9112 §6.3).

use std::collections::VecDeque;

use super::request::parse_length;
use super::stream::{Edit, Framing, Head, Held, Message, Sub};
use super::{Expect, RewriteError, Shared, Side, MAX_HEADERS};

fn malformed(what: impl Into<String>) -> RewriteError {
    RewriteError::Malformed {
        side: Side::FromHost,
        what: what.into(),
    }
}

/// Analyzes a complete response head, pairing it with the oldest outstanding request
/// (popped unless the response is an interim 1xx). Returns it with its edits and the number
/// of values scrubbed.
pub(super) fn analyze(
    sh: &Shared,
    raw: Vec<u8>,
    expect: &mut VecDeque<Expect>,
) -> Result<(Head, u64), RewriteError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(_) => return Err(malformed("the head does not end where its empty line is")),
        Err(e) => return Err(malformed(e.to_string())),
    }
    // Set once parsing is complete.
    let code = resp.code.unwrap_or(0);
    let interim = (100..200).contains(&code) && code != 101;
    let request = if interim {
        Expect::default()
    } else {
        expect.pop_front().unwrap_or_default()
    };

    let msg = Message::default();
    let mut sub = Sub::for_head(Side::FromHost, sh, &msg);
    let mut edits = Vec::new();
    for (start, idx) in sh.values.find_all(&raw) {
        let end = start + sh.values.len_of(idx);
        let mut with = Vec::new();
        sub.apply(idx, &mut with)?;
        edits.push(Edit { start, end, with });
    }
    let scrubbed = sub.count;

    let named = |name: &'static str| {
        resp.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    let te: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    let cl: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
    let mut content_length = None;
    let framing = if interim {
        Framing::None
    } else if code == 101 || (request.connect && (200..300).contains(&code)) {
        Framing::OpaqueNow
    } else if request.head || code == 204 || code == 304 {
        Framing::None
    } else if let Some(last) = te.last() {
        if !cl.is_empty() {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        let coding = last.rsplit(|&b| b == b',').next().unwrap_or(last);
        if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match cl.as_slice() {
            [] => Framing::UntilClose,
            [one] => {
                let n = parse_length(one).ok_or_else(|| malformed("bad Content-Length"))?;
                let start = (one.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
                content_length = Some((start, start + one.len(), n));
                Framing::Sized(n)
            }
            _ => return Err(malformed("several Content-Length fields")),
        }
    };
    let head = Head {
        held: Held {
            raw,
            edits,
            content_length,
            drop_when_buffered: None,
        },
        framing,
        buffer_body: true,
        msg,
    };
    Ok((head, scrubbed))
}
