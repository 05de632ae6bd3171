//! Requests: substitution, violations, DATA, flow control, framing, bounds.

use loona_hpack::Encoder;

use super::*;
use crate::secrets::base64;

#[test]
fn a_header_placeholder_is_replaced() {
    let mut rw = rewriter("api.github.com");
    let mut enc = Encoder::new();
    let mut input = settings();
    input.extend(request(
        &mut enc,
        1,
        "api.github.com",
        "/user",
        &[
            ("authorization", &format!("Bearer {GH}")),
            ("accept", "*/*"),
        ],
        true,
    ));
    let out = guest(&mut rw, &input).unwrap();
    let evs = Reader::new().read(&out);
    assert_eq!(evs[0], Reader::new().read(&settings())[0]);
    let mut want = req_fields("api.github.com", "/user", &[]);
    let bearer = format!("Bearer {GH_VALUE}");
    want.extend([("authorization", bearer.as_str()), ("accept", "*/*")]);
    assert_eq!(fields_of(&evs[1]), want);
    assert!(matches!(
        evs[1],
        Ev::Headers {
            flags: END_STREAM,
            sid: 1,
            ..
        }
    ));
    assert_eq!(evs.len(), 2);
    assert_eq!(rw.stats().substitutions, 1);
    assert_eq!(rw.buffered(), 0);
}

#[test]
fn query_and_basic_auth_substitution() {
    let mut rw = rewriter("api.example.com");
    let basic = String::from_utf8(base64::encode(format!("me:{KEY}").as_bytes())).unwrap();
    let mut enc = Encoder::new();
    let input = request(
        &mut enc,
        1,
        "api.example.com:443",
        &format!("/v1?key={KEY}&x=1"),
        &[("authorization", &format!("Basic {basic}"))],
        true,
    );
    let evs = Reader::new().read(&guest(&mut rw, &input).unwrap());
    let want_basic =
        String::from_utf8(base64::encode(format!("me:{KEY_VALUE}").as_bytes())).unwrap();
    let auth = format!("Basic {want_basic}");
    let path = format!("/v1?key={KEY_VALUE}&x=1");
    assert_eq!(
        fields_of(&evs[0]),
        req_fields("api.example.com:443", &path, &[("authorization", &auth)])
    );
    assert_eq!(rw.stats().substitutions, 2);
}

#[test]
fn placeholders_where_they_may_not_go_are_violations() {
    let at = |sni: &str, authority: &str, path: &str, extra: &[(&str, &str)]| {
        let mut rw = rewriter(sni);
        let input = request(&mut Encoder::new(), 1, authority, path, extra, true);
        let (v, out) = violation_of(guest(&mut rw, &input));
        assert_eq!(out, PREFACE, "nothing of the request went out");
        assert_eq!(rw.stats().violations, 1);
        assert_eq!(
            rw.from_guest(b"", &mut Vec::new()),
            Err(RewriteError::Stopped)
        );
        v
    };
    let name = format!("x-{KEY}");
    let v = at("api.example.com", "api.example.com", "/", &[(&name, "1")]);
    assert_eq!(v.reason, ViolationReason::NeverInjected("header name"));
    assert_eq!(v.env_var, "API_KEY");
    assert_eq!(v.on_violation, OnViolation::BlockAndTerminate);
    let v = at(
        "api.example.com",
        "api.example.com",
        &format!("/{KEY}?a=1"),
        &[],
    );
    assert_eq!(v.reason, ViolationReason::NeverInjected("request path"));
    let v = at(
        "api.example.com",
        "api.example.com",
        "/",
        &[(":protocol", KEY)],
    );
    assert_eq!(v.reason, ViolationReason::NeverInjected("pseudo-header"));
    // Query is not in GITHUB_TOKEN's inject_in.
    let v = at(
        "api.github.com",
        "api.github.com",
        &format!("/?t={GH}"),
        &[],
    );
    assert_eq!(v.reason, ViolationReason::PlaceNotAllowed(Place::Query));
    // The flow agrees with itself, but the host is not the secret's.
    let v = at("evil.example", "evil.example", "/", &[("x", GH)]);
    assert_eq!(v.reason, ViolationReason::HostNotAllowed);
    assert_eq!(v.host, "evil.example");
}

#[test]
fn authority_disagreeing_with_the_flow_is_a_violation() {
    let mut rw = rewriter("api.github.com");
    let mut enc = Encoder::new();
    let input = request(&mut enc, 1, "evil.example", "/", &[("x", GH)], true);
    let (v, out) = violation_of(guest(&mut rw, &input));
    assert_eq!(v.reason, ViolationReason::HostMismatch);
    assert_eq!(v.host, "evil.example");
    assert!(!contains(&out, GH_VALUE));
    assert_eq!(rw.stats().substitutions, 0);
    // `:authority` and `host` naming different hosts; neither.
    for extra in [
        vec![("host", "evil.example"), ("x", GH)],
        vec![
            ("host", "api.github.com"),
            ("host", "api.github.com"),
            ("x", GH),
        ],
    ] {
        let mut rw = rewriter("api.github.com");
        let input = request(&mut Encoder::new(), 1, "api.github.com", "/", &extra, true);
        assert_eq!(
            violation_of(guest(&mut rw, &input)).0.reason,
            ViolationReason::NoHost
        );
    }
    let mut rw = rewriter("api.github.com");
    let block = encode(
        &mut Encoder::new(),
        &[(":method", "GET"), (":path", "/"), ("x", GH)],
    );
    let input = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
    assert_eq!(
        violation_of(guest(&mut rw, &input)).0.reason,
        ViolationReason::NoHost
    );
    // `host` alone, agreeing, is enough.
    let mut rw = rewriter("api.github.com");
    let block = encode(
        &mut Encoder::new(),
        &[
            (":method", "GET"),
            (":path", "/"),
            ("host", "api.github.com"),
            ("x", GH),
        ],
    );
    let out = guest(
        &mut rw,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block),
    )
    .unwrap();
    assert!(contains(&out, GH_VALUE));
}

#[test]
fn data_placeholders_split_across_frames_and_feeds() {
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    let (a, b) = KEY.split_at(9);
    let mut input = PREFACE.to_vec();
    input.extend(request(
        &mut enc,
        1,
        "api.example.com",
        "/",
        &[("content-length", "99"), ("content-type", "text/plain")],
        false,
    ));
    input.extend(frame(DATA, 0, 1, format!("hello {a}").as_bytes()));
    input.extend(frame(DATA, END_STREAM, 1, format!("{b}!").as_bytes()));
    let mut out = Vec::new();
    let cut = input.len() - 5; // inside the second DATA frame
    rw.from_guest(&input[..cut], &mut out).unwrap();
    assert!(rw.buffered() > 0);
    rw.from_guest(&input[cut..], &mut out).unwrap();
    assert_eq!(rw.buffered(), 0);
    let evs = Reader::new().read(&out[24..]);
    // content-length went: the body changed length.
    assert_eq!(
        fields_of(&evs[0]),
        req_fields("api.example.com", "/", &[("content-type", "text/plain")])
    );
    let (data, ended) = data_of(&evs, 1);
    assert_eq!(data, format!("hello {KEY_VALUE}!").as_bytes());
    assert!(ended);
    assert_eq!(rw.stats().substitutions, 1);

    // Byte by byte: the same.
    let mut rw = rewriter("api.example.com");
    let mut bytes = Vec::new();
    for b in &input {
        rw.from_guest(std::slice::from_ref(b), &mut bytes).unwrap();
    }
    assert_eq!(bytes, out);
}

#[test]
fn content_length_stays_when_the_body_cannot_change() {
    // GITHUB_TOKEN may not go into bodies: the request passes as it is.
    let mut rw = rewriter("api.github.com");
    let mut enc = Encoder::new();
    let mut input = request(
        &mut enc,
        1,
        "api.github.com",
        "/",
        &[("content-length", "5")],
        false,
    );
    input.extend(frame(DATA, END_STREAM, 1, b"hello"));
    assert_eq!(guest(&mut rw, &input).unwrap(), input);
    // A body placeholder there is a violation.
    let mut rw = rewriter("api.github.com");
    let mut input = request(&mut Encoder::new(), 3, "api.github.com", "/", &[], false);
    input.extend(frame(DATA, END_STREAM, 3, GH.as_bytes()));
    let (v, out) = violation_of(guest(&mut rw, &input));
    assert_eq!(v.reason, ViolationReason::PlaceNotAllowed(Place::Body));
    assert!(!contains(&out, GH));
}

#[test]
fn window_updates_carry_the_length_differences() {
    let grow = (KEY_VALUE.len() - KEY.len()) as u32;
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    let mut input = request(&mut enc, 1, "api.example.com", "/", &[], false);
    // One DATA frame with a placeholder: grows by `grow` upstream.
    input.extend(frame(DATA, 0, 1, format!("k={KEY}").as_bytes()));
    guest(&mut rw, &input).unwrap();
    let wu = |rw: &mut Rewriter, sid: u32, inc: u32| {
        let mut out = Vec::new();
        rw.from_host(&window_update(sid, inc), &mut out).unwrap();
        Reader::new().read(&out)
    };
    let inc_of = |evs: &[Ev]| match evs {
        [] => None,
        [Ev::Other {
            ty: WINDOW_UPDATE,
            payload,
            ..
        }] => Some(u32::from_be_bytes(payload[..4].try_into().unwrap())),
        other => panic!("{other:?}"),
    };
    // Withheld: the first update too small to forward at all, then the rest.
    assert_eq!(inc_of(&wu(&mut rw, 1, 2)), None);
    assert_eq!(inc_of(&wu(&mut rw, 1, 100)), Some(100 - (grow - 2)));
    assert_eq!(inc_of(&wu(&mut rw, 1, 100)), Some(100));
    assert_eq!(inc_of(&wu(&mut rw, 0, 1000)), Some(1000 - grow));
    assert_eq!(inc_of(&wu(&mut rw, 0, 1000)), Some(1000));
    // Other streams are not touched.
    assert_eq!(inc_of(&wu(&mut rw, 9, 7)), Some(7));

    // Padding stripped: the guest spent more than went upstream; granted back.
    let mut rw = rewriter("api.example.com");
    let mut input = request(&mut Encoder::new(), 1, "api.example.com", "/", &[], false);
    let mut padded = vec![10u8];
    padded.extend_from_slice(b"plain");
    padded.extend_from_slice(&[0; 10]);
    input.extend(frame(DATA, PADDED, 1, &padded));
    let evs = Reader::new().read(&guest(&mut rw, &input).unwrap());
    assert_eq!(data_of(&evs, 1), (b"plain".to_vec(), false));
    assert_eq!(inc_of(&wu(&mut rw, 1, 100)), Some(111));
    assert_eq!(inc_of(&wu(&mut rw, 0, 100)), Some(111));

    // Bytes held in the carry are not settled until sent.
    let mut rw = rewriter("api.example.com");
    let mut input = request(&mut Encoder::new(), 1, "api.example.com", "/", &[], false);
    input.extend(frame(DATA, 0, 1, format!("x{}", &KEY[..5]).as_bytes()));
    let evs = Reader::new().read(&guest(&mut rw, &input).unwrap());
    assert_eq!(data_of(&evs, 1), (b"x".to_vec(), false));
    assert_eq!(inc_of(&wu(&mut rw, 1, 100)), Some(100));
    assert_eq!(rw.buffered(), 5);
}

#[test]
fn continuation_frames_are_joined_and_checked() {
    let mut rw = rewriter("api.example.com");
    let block = encode(
        &mut Encoder::new(),
        &req_fields(
            "api.example.com",
            "/",
            &[("x-key", KEY), ("x-pad", &"p".repeat(40_000))],
        ),
    );
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(20_000);
    let mut input = frame(HEADERS, END_STREAM, 1, a);
    input.extend(frame(CONTINUATION, 0, 1, b));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    let evs = Reader::new().read(&guest(&mut rw, &input).unwrap());
    let pad = "p".repeat(40_000);
    assert_eq!(
        fields_of(&evs[0]),
        req_fields(
            "api.example.com",
            "/",
            &[("x-key", KEY_VALUE), ("x-pad", &pad)]
        )
    );
    assert!(matches!(
        evs[0],
        Ev::Headers {
            frames: 3,
            flags: END_STREAM,
            ..
        }
    ));

    let malformed = |input: Vec<u8>| {
        let mut rw = rewriter("api.example.com");
        match guest(&mut rw, &input) {
            Err((
                RewriteError::Malformed {
                    side: Side::FromGuest,
                    ..
                },
                out,
            )) => out,
            other => panic!("{other:?}"),
        }
    };
    // Another stream, another frame type in between, CONTINUATION alone.
    let open = frame(HEADERS, 0, 1, a);
    for next in [
        frame(CONTINUATION, END_HEADERS, 3, b),
        frame(DATA, 0, 1, b"x"),
        settings(),
    ] {
        let out = malformed([open.clone(), next].concat());
        assert_eq!(out, PREFACE);
    }
    malformed(frame(CONTINUATION, END_HEADERS, 1, a));
}

#[test]
fn padding_is_stripped_and_priority_kept() {
    let mut rw = rewriter("api.example.com");
    let block = encode(
        &mut Encoder::new(),
        &req_fields("api.example.com", "/", &[("k", KEY)]),
    );
    let mut payload = vec![3u8];
    payload.extend_from_slice(&[0x80, 0, 0, 1, 200]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 3]);
    let mut input = frame(HEADERS, PADDED | PRIORITY_FLAG | END_HEADERS, 5, &payload);
    let mut data = vec![2u8];
    data.extend_from_slice(KEY.as_bytes());
    data.extend_from_slice(&[0, 0]);
    input.extend(frame(DATA, PADDED | END_STREAM, 5, &data));
    let out = guest(&mut rw, &input).unwrap();
    assert_eq!(&out[3..5], &[HEADERS, PRIORITY_FLAG | END_HEADERS]);
    assert_eq!(&out[9..14], &[0x80, 0, 0, 1, 200]);
    let evs = Reader::new().read(&out);
    assert_eq!(
        fields_of(&evs[0]),
        req_fields("api.example.com", "/", &[("k", KEY_VALUE)])
    );
    assert_eq!(data_of(&evs, 5), (KEY_VALUE.as_bytes().to_vec(), true));

    // Padding longer than the frame.
    let mut rw = rewriter("api.example.com");
    let input = frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 0x82]);
    assert!(matches!(
        guest(&mut rw, &input),
        Err((RewriteError::Malformed { .. }, _))
    ));
}

#[test]
fn header_blocks_are_bounded() {
    // One frame over the bound: refused at its header.
    let mut rw = rewriter("api.example.com");
    let mut out = Vec::new();
    let big = frame(HEADERS, END_HEADERS, 1, &vec![0; HEAD_MAX]);
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&big[..9]);
    let e = rw.from_guest(&input, &mut out).unwrap_err();
    assert_eq!(
        e,
        RewriteError::HeadTooLarge {
            side: Side::FromGuest
        }
    );
    assert_eq!(rw.stats().heads_too_large, 1);
    // CONTINUATION frames without end.
    let mut rw = rewriter("api.example.com");
    let mut input = frame(HEADERS, 0, 1, &[0x82]);
    for _ in 0..HEAD_MAX / 9 {
        input.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    assert_eq!(
        guest(&mut rw, &input).unwrap_err().0,
        RewriteError::HeadTooLarge {
            side: Side::FromGuest
        }
    );
    // A small block expanding to a large header list through the dynamic table.
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    let big = "v".repeat(3000);
    let fields: Vec<(&str, &str)> = (0..30).map(|_| ("x-big", big.as_str())).collect();
    let block = encode(&mut enc, &fields);
    assert!(block.len() < 3100);
    let input = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
    assert_eq!(
        guest(&mut rw, &input).unwrap_err().0,
        RewriteError::HeadTooLarge {
            side: Side::FromGuest
        }
    );
}

#[test]
fn unchanged_blocks_pass_until_one_changes_then_all_are_reencoded() {
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    // New names: the encoder indexes them.
    let common = [("x-client", "test/1.0"), ("x-want", "*/*")];
    let first = request(&mut enc, 1, "api.example.com", "/a", &common, true);
    let with_key = [("x-client", "test/1.0"), ("x-want", "*/*"), ("x-key", KEY)];
    let second = request(&mut enc, 3, "api.example.com", "/b", &with_key, true);
    // Refers to dynamic table entries the guest's encoder made in the first two.
    let third = request(&mut enc, 5, "api.example.com", "/a", &common, true);
    assert!(third.len() < first.len());
    let out = guest(&mut rw, &first).unwrap();
    assert_eq!(out, first, "a block that needs no change passes as it is");
    let mut out2 = Vec::new();
    rw.from_guest(&[second, third.clone()].concat(), &mut out2)
        .unwrap();
    assert!(
        !out2.ends_with(&third),
        "after a change every block is re-encoded"
    );
    let mut reader = Reader::new();
    let evs = reader.read(&[out, out2].concat());
    assert_eq!(
        fields_of(&evs[0]),
        req_fields("api.example.com", "/a", &common)
    );
    let want = [
        ("x-client", "test/1.0"),
        ("x-want", "*/*"),
        ("x-key", KEY_VALUE),
    ];
    assert_eq!(
        fields_of(&evs[1]),
        req_fields("api.example.com", "/b", &want)
    );
    assert_eq!(
        fields_of(&evs[2]),
        req_fields("api.example.com", "/a", &common)
    );
}

#[test]
fn trailers_control_frames_and_closed_streams() {
    // A placeholder in trailers.
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    let mut input = request(&mut enc, 1, "api.example.com", "/", &[], false);
    input.extend(frame(DATA, 0, 1, b"body"));
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &encode(&mut enc, &[("x-t", KEY)]),
    ));
    let (v, out) = violation_of(guest(&mut rw, &input));
    assert_eq!(v.reason, ViolationReason::NeverInjected("trailers"));
    assert!(!contains(&out, KEY));
    // In GOAWAY debug data, in a frame of unknown type.
    for (ty, what) in [(GOAWAY, "GOAWAY frame"), (0xbb, "frame of unknown type")] {
        let mut rw = rewriter("api.example.com");
        let mut payload = vec![0; 8];
        payload.extend_from_slice(format!("debug {KEY}").as_bytes());
        let (v, out) = violation_of(guest(&mut rw, &frame(ty, 0, 0, &payload)));
        assert_eq!(v.reason, ViolationReason::NeverInjected(what));
        assert!(!contains(&out, KEY));
    }
    // A stream reset by the host has no state: a placeholder in DATA still on its way is
    // a violation, and the state is gone.
    let mut rw = rewriter("api.example.com");
    let input = request(&mut Encoder::new(), 1, "api.example.com", "/", &[], false);
    guest(&mut rw, &input).unwrap();
    let mut out = Vec::new();
    rw.from_host(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]), &mut out)
        .unwrap();
    assert_eq!(out, frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    let e = rw
        .from_guest(&frame(DATA, 0, 1, KEY.as_bytes()), &mut out)
        .unwrap_err();
    assert!(
        matches!(&e, RewriteError::Violation(v) if v.reason == ViolationReason::NeverInjected("DATA on a closed stream")),
        "{e:?}"
    );
    // DATA without a placeholder on a closed stream passes.
    let mut rw = rewriter("api.example.com");
    let input = frame(DATA, END_STREAM, 7, b"late");
    assert_eq!(guest(&mut rw, &input).unwrap(), input);
}

#[test]
fn streams_are_bounded_and_forgotten() {
    let mut rw = rewriter("api.example.com");
    let mut enc = Encoder::new();
    let mut input = Vec::new();
    for i in 0..MAX_STREAMS as u32 {
        input.extend(request(
            &mut enc,
            1 + 2 * i,
            "api.example.com",
            "/",
            &[],
            false,
        ));
    }
    guest(&mut rw, &input).unwrap();
    // Ending one makes room for another.
    let mut more = frame(DATA, END_STREAM, 1, b"");
    more.extend(request(&mut enc, 1001, "api.example.com", "/", &[], false));
    rw.from_guest(&more, &mut Vec::new()).unwrap();
    let next = request(&mut enc, 1003, "api.example.com", "/", &[], false);
    assert_eq!(
        rw.from_guest(&next, &mut Vec::new()),
        Err(RewriteError::TooManyStreams)
    );
}

#[test]
fn an_incomplete_frame_is_dropped_at_close() {
    let mut rw = rewriter("api.example.com");
    let input = request(
        &mut Encoder::new(),
        1,
        "api.example.com",
        "/",
        &[("k", KEY)],
        true,
    );
    let mut out = Vec::new();
    rw.from_guest(
        &[PREFACE.as_slice(), &input[..input.len() - 1]].concat(),
        &mut out,
    )
    .unwrap();
    rw.guest_closed(&mut out).unwrap();
    assert_eq!(out, PREFACE);
    assert_eq!(rw.buffered(), 0);
    assert!(matches!(
        rw.from_guest(b"x", &mut out),
        Err(RewriteError::Malformed { .. })
    ));
}

#[test]
fn not_a_preface_is_malformed() {
    let mut rw = rewriter("api.example.com");
    let e = rw
        .from_guest(b"GET / HTTP/1.1\r\n", &mut Vec::new())
        .unwrap_err();
    assert!(matches!(e, RewriteError::Malformed { .. }));
}
