//! The rewriter on byte fixtures, and properties over generated request streams.

use std::sync::Arc;

use proptest::prelude::*;
use serde::Deserialize;

use super::*;
use crate::secrets::{OnViolation, Place, SecretSpec, Secrets, ViolationReason};

const GH: &str = "$RINGNET_SECRET_GITHUB_TOKEN";
const GH_VALUE: &str = "ghp_0123456789abcdef";
const KEY: &str = "$RINGNET_SECRET_API_KEY";
const KEY_VALUE: &str = "key-REAL-VALUE-which-is-long";

#[derive(Deserialize)]
struct Doc {
    secrets: Vec<SecretSpec>,
}

fn secrets() -> Arc<Secrets> {
    let doc: Doc = toml::from_str(&format!(
        r#"
        [[secrets]]
        env_var = "GITHUB_TOKEN"
        value = "{GH_VALUE}"
        hosts = ["api.github.com"]

        [[secrets]]
        env_var = "API_KEY"
        value = "{KEY_VALUE}"
        hosts = ["*.example.com"]
        inject_in = ["headers", "basic_auth", "query", "body"]
        on_violation = "block-and-terminate"
        "#
    ))
    .unwrap();
    Arc::new(Secrets::load(&doc.secrets).unwrap())
}

fn flow(sni: &str) -> FlowContext {
    FlowContext {
        sni: Some(sni.to_owned()),
        pinned: vec![sni.to_owned()],
    }
}

fn rewriter(sni: &str) -> Rewriter {
    Rewriter::new(secrets(), flow(sni))
}

/// Feeds `input` from the guest in one piece.
fn guest(rw: &mut Rewriter, input: &str) -> Result<String, (RewriteError, String)> {
    let mut out = Vec::new();
    match rw.from_guest(input.as_bytes(), &mut out) {
        Ok(()) => Ok(String::from_utf8(out).unwrap()),
        Err(e) => Err((e, String::from_utf8(out).unwrap())),
    }
}

fn host(rw: &mut Rewriter, input: &str) -> Result<String, RewriteError> {
    let mut out = Vec::new();
    rw.from_host(input.as_bytes(), &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn violation_of(r: Result<String, (RewriteError, String)>) -> (Violation, String) {
    match r {
        Err((RewriteError::Violation(v), out)) => (v, out),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_header_placeholder_is_replaced() {
    let mut rw = rewriter("api.github.com");
    let out = guest(
        &mut rw,
        &format!("GET /user HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer {GH}\r\nAccept: */*\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(
        out,
        format!("GET /user HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer {GH_VALUE}\r\nAccept: */*\r\n\r\n")
    );
    assert_eq!(rw.stats().substitutions, 1);
    assert_eq!(rw.buffered(), 0);
}

#[test]
fn nothing_is_output_before_the_head_is_complete() {
    let mut rw = rewriter("api.github.com");
    let mut out = Vec::new();
    rw.from_guest(
        format!("GET / HTTP/1.1\r\nHost: api.github.com\r\nX: {GH}").as_bytes(),
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    rw.guest_closed(&mut out).unwrap();
    assert!(out.is_empty(), "an incomplete head is never forwarded");
}

#[test]
fn requests_disagreeing_with_the_flow_are_violations() {
    let req = |host: &str| {
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GH}\r\n\r\n")
    };
    let (v, out) = violation_of(guest(&mut rewriter("api.github.com"), &req("evil.example")));
    assert_eq!(v.reason, ViolationReason::HostMismatch);
    assert_eq!(v.env_var, "GITHUB_TOKEN");
    assert_eq!(v.host, "evil.example");
    assert_eq!(v.on_violation, OnViolation::BlockAndLog);
    assert_eq!(out, "");

    // Host and SNI agree, but neither is the secret's.
    let (v, _) = violation_of(guest(&mut rewriter("evil.example"), &req("evil.example")));
    assert_eq!(v.reason, ViolationReason::HostNotAllowed);

    // The SNI was never resolved to this destination.
    let mut rw = Rewriter::new(
        secrets(),
        FlowContext {
            sni: Some("api.github.com".into()),
            pinned: vec!["evil.example".into()],
        },
    );
    assert_eq!(
        violation_of(guest(&mut rw, &req("api.github.com")))
            .0
            .reason,
        ViolationReason::NotPinned
    );
    let mut rw = Rewriter::new(
        secrets(),
        FlowContext {
            sni: None,
            pinned: vec!["api.github.com".into()],
        },
    );
    assert_eq!(
        violation_of(guest(&mut rw, &req("api.github.com")))
            .0
            .reason,
        ViolationReason::NoSni
    );

    // No Host, two Hosts, an absolute target naming another host.
    for bad in [
        format!("GET / HTTP/1.1\r\nX: {GH}\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: api.github.com\r\nHost: api.github.com\r\nX: {GH}\r\n\r\n"
        ),
        format!("GET https://evil.example/ HTTP/1.1\r\nHost: api.github.com\r\nX: {GH}\r\n\r\n"),
    ] {
        let (v, _) = violation_of(guest(&mut rewriter("api.github.com"), &bad));
        assert_eq!(v.reason, ViolationReason::NoHost, "{bad}");
    }
    // An absolute target naming the same host is fine.
    guest(
        &mut rewriter("api.github.com"),
        &format!(
            "GET https://API.github.com:443/x HTTP/1.1\r\nHost: api.github.com\r\nX: {GH}\r\n\r\n"
        ),
    )
    .unwrap();
}

#[test]
fn places_outside_inject_in_are_violations() {
    let at = |req: String| {
        violation_of(guest(&mut rewriter("api.github.com"), &req))
            .0
            .reason
    };
    assert_eq!(
        at(format!(
            "GET /?t={GH} HTTP/1.1\r\nHost: api.github.com\r\n\r\n"
        )),
        ViolationReason::PlaceNotAllowed(Place::Query)
    );
    assert_eq!(
        at(format!(
            "POST / HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: {}\r\n\r\n{GH}",
            GH.len()
        )),
        ViolationReason::PlaceNotAllowed(Place::Body)
    );
    let basic = crate::secrets::base64::encode(format!("user:{GH}").as_bytes());
    assert_eq!(
        at(format!(
            "GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Basic {}\r\n\r\n",
            String::from_utf8(basic).unwrap()
        )),
        ViolationReason::PlaceNotAllowed(Place::BasicAuth)
    );
    assert_eq!(
        at(format!(
            "GET /{GH} HTTP/1.1\r\nHost: api.github.com\r\n\r\n"
        )),
        ViolationReason::NeverInjected("request path")
    );
    assert_eq!(
        at(format!(
            "GET / HTTP/1.1\r\nHost: api.github.com\r\nX-{GH}: 1\r\n\r\n"
        )),
        ViolationReason::NeverInjected("header name")
    );
}

#[test]
fn query_basic_auth_and_body_substitution() {
    let mut rw = rewriter("api.example.com");
    let basic = String::from_utf8(crate::secrets::base64::encode(
        format!("me:{KEY}").as_bytes(),
    ))
    .unwrap();
    let body = format!("{{\"key\":\"{KEY}\"}}");
    let out = guest(
        &mut rw,
        &format!(
            "POST /v1?key={KEY}&x=1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic {basic}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    let want_basic = String::from_utf8(crate::secrets::base64::encode(
        format!("me:{KEY_VALUE}").as_bytes(),
    ))
    .unwrap();
    let want_body = format!("{{\"key\":\"{KEY_VALUE}\"}}");
    assert_eq!(
        out,
        format!(
            "POST /v1?key={KEY_VALUE}&x=1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic {want_basic}\r\nContent-Length: {}\r\n\r\n{want_body}",
            want_body.len()
        )
    );
    assert_eq!(rw.stats().substitutions, 3);
}

#[test]
fn a_placeholder_split_across_chunks_and_calls_is_found() {
    let mut rw = rewriter("api.example.com");
    let (a, b) = KEY.split_at(7);
    let input = format!(
        "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};ext=1\r\nhello {a}\r\n{:x}\r\n{b}!\r\n0\r\nX-Trailer: yes\r\n\r\n",
        6 + a.len(),
        b.len() + 1
    );
    let whole = guest(&mut rw, &input).unwrap();
    let want_data = format!("hello {KEY_VALUE}!");
    assert_eq!(
        whole,
        format!(
            "POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n\
             6\r\nhello \r\n{:x}\r\n{KEY_VALUE}!\r\n0\r\nX-Trailer: yes\r\n\r\n",
            KEY_VALUE.len() + 1
        )
    );
    assert!(whole.contains(&want_data[6..]));
    // Byte by byte: the same.
    let mut rw = rewriter("api.example.com");
    let mut out = Vec::new();
    for b in input.as_bytes() {
        rw.from_guest(std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(String::from_utf8(out).unwrap(), whole);
}

#[test]
fn placeholders_in_chunk_framing_and_trailers_are_violations() {
    let (v, out) = violation_of(guest(
        &mut rewriter("api.example.com"),
        &format!("POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n1;{KEY}\r\nx\r\n0\r\n\r\n"),
    ));
    assert_eq!(v.reason, ViolationReason::NeverInjected("chunk extension"));
    assert_eq!(v.on_violation, OnViolation::BlockAndTerminate);
    assert!(!out.contains(KEY));
    let (v, out) = violation_of(guest(
        &mut rewriter("api.example.com"),
        &format!("POST / HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {KEY}\r\n\r\n"),
    ));
    assert_eq!(v.reason, ViolationReason::NeverInjected("trailers"));
    assert!(!out.contains(KEY));
}

#[test]
fn pipelined_requests_stop_at_the_violation() {
    let first = format!("GET /a HTTP/1.1\r\nHost: api.github.com\r\nX: {GH}\r\n\r\n");
    let second = format!("GET /b?{GH} HTTP/1.1\r\nHost: api.github.com\r\n\r\n");
    let mut rw = rewriter("api.github.com");
    let (_, out) = violation_of(guest(&mut rw, &format!("{first}{second}")));
    assert_eq!(
        out,
        format!("GET /a HTTP/1.1\r\nHost: api.github.com\r\nX: {GH_VALUE}\r\n\r\n")
    );
    assert_eq!(rw.stats().violations, 1);
    assert_eq!(guest(&mut rw, "GET").unwrap_err().0, RewriteError::Stopped);
}

#[test]
fn requests_without_placeholders_pass_unchanged() {
    let input = "\r\nGET / HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: keep-alive\r\n\r\n\
                 POST /u HTTP/1.1\r\nHost: elsewhere.example\r\nContent-Length: 5\r\n\r\nhello\
                 PUT /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
                 0A;name=v\r\n0123456789\r\n000\r\nT: 1\r\n\r\n";
    assert_eq!(
        guest(&mut rewriter("api.github.com"), input).unwrap(),
        input
    );
}

#[test]
fn bounds() {
    let mut rw = rewriter("api.github.com");
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(HEAD_MAX));
    assert_eq!(
        guest(&mut rw, &big).unwrap_err().0,
        RewriteError::HeadTooLarge {
            side: Side::FromGuest
        }
    );
    assert_eq!(rw.stats().heads_too_large, 1);

    // A body above BODY_MAX streams; a placeholder in it cannot change length.
    let mut rw = rewriter("api.example.com");
    let len = BODY_MAX + 1;
    let mut out = Vec::new();
    let head = format!("POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: {len}\r\n\r\n");
    rw.from_guest(head.as_bytes(), &mut out).unwrap();
    assert_eq!(out, head.as_bytes(), "a large body's head goes first");
    rw.from_guest(&vec![b'x'; 1000], &mut out).unwrap();
    let e = rw.from_guest(KEY.as_bytes(), &mut out).unwrap_err();
    assert!(
        matches!(e, RewriteError::BodyTooLarge { len: l, .. } if l == len as u64),
        "{e:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains(KEY));
}

#[test]
fn malformed_framing_is_refused() {
    for bad in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy",
        "GET / HTTP/1.1 extra\r\n\r\n",
    ] {
        let e = guest(&mut rewriter("a"), bad).unwrap_err().0;
        assert!(
            matches!(e, RewriteError::Malformed { .. }),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn upgraded_streams_are_opaque() {
    let mut rw = rewriter("api.example.com");
    guest(
        &mut rw,
        "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes",
    )
    .unwrap();
    let (v, _) = violation_of(guest(&mut rw, &format!("..{KEY}..")));
    assert_eq!(
        v.reason,
        ViolationReason::NeverInjected("upgraded or tunnelled stream")
    );
}

// ---- responses -------------------------------------------------------------------------

#[test]
fn responses_are_scrubbed() {
    let mut rw = rewriter("api.example.com");
    assert!(rw.scrubs());
    guest(
        &mut rw,
        "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\nHEAD / HTTP/1.1\r\nHost: api.example.com\r\n\r\n\
         GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .unwrap();
    let body = format!("you sent {KEY_VALUE}");
    let scrubbed = format!("you sent {KEY}");
    // Sized: buffered, Content-Length fixed; the echo in a header too.
    let out = host(
        &mut rw,
        &format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Echo: {KEY_VALUE}\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    )
    .unwrap();
    assert_eq!(
        out,
        format!("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Echo: {KEY}\r\nContent-Length: {}\r\n\r\n{scrubbed}", scrubbed.len())
    );
    // HEAD: Content-Length without a body, untouched.
    let head_resp = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    assert_eq!(host(&mut rw, head_resp).unwrap(), head_resp);
    // Chunked: re-chunked.
    let out = host(
        &mut rw,
        &format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
    )
    .unwrap();
    assert_eq!(
        out,
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{scrubbed}\r\n0\r\n\r\n",
            scrubbed.len()
        )
    );
    // Until close.
    let mut out = Vec::new();
    let (a, b) = body.split_at(body.len() - 3);
    rw.from_host(format!("HTTP/1.1 200 OK\r\n\r\n{a}").as_bytes(), &mut out)
        .unwrap();
    rw.from_host(b.as_bytes(), &mut out).unwrap();
    rw.host_closed(&mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("HTTP/1.1 200 OK\r\n\r\n{scrubbed}")
    );
    assert_eq!(rw.stats().scrubbed, 4);
}

#[test]
fn responses_without_a_scrub_set_pass_unparsed() {
    let mut rw = rewriter("elsewhere.example");
    assert!(!rw.scrubs());
    let garbage = format!("not http {KEY_VALUE} at all");
    assert_eq!(host(&mut rw, &garbage).unwrap(), garbage);
}

#[test]
fn no_body_statuses() {
    let mut rw = rewriter("api.example.com");
    guest(
        &mut rw,
        "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .unwrap();
    let two =
        "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    assert_eq!(host(&mut rw, two).unwrap(), two);
    assert_eq!(rw.buffered(), 0);
}

// ---- properties ------------------------------------------------------------------------

/// Body text: ordinary bytes, whole placeholders and their prefixes.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => "[a-z0-9 ]{1,8}",
            1 => Just(KEY.to_owned()),
            1 => Just(KEY[..9].to_owned()),
            1 => Just("$".to_owned()),
            1 => Just(GH.to_owned()),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

/// One request: a query, a header value, and a body (none, sized or chunked).
fn request() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("HEAD")],
        text(),
        text(),
        0u8..3,
        proptest::collection::vec(text(), 0..4),
    )
        .prop_map(|(method, query, header, kind, chunks)| {
            let query = query.replace(' ', "+");
            let mut r = format!(
                "{method} /p?q={query} HTTP/1.1\r\nHost: api.example.com\r\nX-H: {}\r\n",
                header.trim()
            );
            let body = chunks.concat();
            match kind {
                0 => r.push_str("\r\n"),
                1 => r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len())),
                _ => {
                    r.push_str("Transfer-Encoding: chunked\r\n\r\n");
                    for c in chunks.iter().filter(|c| !c.is_empty()) {
                        r.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
                    }
                    r.push_str("0\r\n\r\n");
                }
            }
            r
        })
}

/// Feeds `data` cut at `cuts`; returns the output and the first error.
fn feed_cut(data: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<RewriteError>, SecretStats) {
    let mut rw = rewriter("api.example.com");
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    for c in cuts {
        if let Err(e) = rw.from_guest(&data[last..c], &mut out) {
            return (out, Some(e), rw.stats());
        }
        assert!(rw.buffered() <= BUFFERED_MAX);
        last = c;
    }
    (out, None, rw.stats())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_gives_the_same_output(
        reqs in proptest::collection::vec(request(), 1..4),
        cuts in proptest::collection::vec(0usize..2000, 0..12),
    ) {
        let data = reqs.concat().into_bytes();
        let whole = feed_cut(&data, &[]);
        prop_assert_eq!(&feed_cut(&data, &cuts), &whole);
        let every: Vec<usize> = (0..data.len()).collect();
        prop_assert_eq!(&feed_cut(&data, &every), &whole);
        // No placeholder ever leaves: a GITHUB_TOKEN one would be a violation here.
        let out = String::from_utf8_lossy(&whole.0);
        prop_assert!(!out.contains(KEY) && !out.contains(GH));
    }

    #[test]
    fn requests_without_placeholders_are_byte_identical(
        reqs in proptest::collection::vec(request(), 1..4),
        cuts in proptest::collection::vec(0usize..2000, 0..12),
    ) {
        let data = reqs.concat().replace('$', "#").into_bytes();
        let (out, err, _) = feed_cut(&data, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(out, data);
    }

    #[test]
    fn substitution_then_scrub_round_trips(body in text(), cut in 0usize..400) {
        let body = body.replace(GH, "");
        let mut rw = rewriter("api.example.com");
        let req = format!("POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let mut sent = Vec::new();
        rw.from_guest(req.as_bytes(), &mut sent).unwrap();
        let at = sent.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let echoed = &sent[at..];
        prop_assert!(!String::from_utf8_lossy(echoed).contains(KEY));
        // An echo server returns the body it got, in two pieces.
        let resp = [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", echoed.len()).as_bytes(), echoed].concat();
        let cut = cut.min(resp.len());
        let mut back = Vec::new();
        rw.from_host(&resp[..cut], &mut back).unwrap();
        rw.from_host(&resp[cut..], &mut back).unwrap();
        let want = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        prop_assert_eq!(String::from_utf8(back).unwrap(), want);
    }
}
