//! Responses, ALPN choice, no secrets.

use loona_hpack::{Decoder, Encoder};

use super::*;

#[test]
fn responses_are_scrubbed() {
    let mut rw = rewriter("api.example.com");
    assert!(rw.scrubs());
    guest(
        &mut rw,
        &request(&mut Encoder::new(), 1, "api.example.com", "/", &[], true),
    )
    .unwrap();
    let mut enc = Encoder::new();
    let body = format!("you sent {KEY_VALUE}.");
    let (a, b) = body.split_at(15);
    let head = encode(
        &mut enc,
        &[
            (":status", "200"),
            ("x-echo", KEY_VALUE),
            ("content-length", &body.len().to_string()),
        ],
    );
    let mut input = frame(HEADERS, END_HEADERS, 1, &head);
    input.extend(frame(DATA, 0, 1, a.as_bytes()));
    input.extend(frame(DATA, END_STREAM, 1, b.as_bytes()));
    let mut out = Vec::new();
    rw.from_host(&input, &mut out).unwrap();
    let evs = Reader::new().read(&out);
    assert_eq!(fields_of(&evs[0]), [(":status", "200"), ("x-echo", KEY)]);
    assert_eq!(
        data_of(&evs, 1),
        (format!("you sent {KEY}.").into_bytes(), true)
    );
    assert_eq!(rw.stats().scrubbed, 2);
    assert!(!contains(&out, KEY_VALUE));
    assert_eq!(rw.buffered(), 0);

    // The guest's WINDOW_UPDATE for the connection gives back what the scrub removed.
    let shrink = (KEY_VALUE.len() - KEY.len()) as u32;
    let mut out = Vec::new();
    rw.from_guest(&window_update(0, 50), &mut out).unwrap();
    assert_eq!(out, window_update(0, 50 + shrink));
}

#[test]
fn responses_without_a_scrub_set_pass_unchanged() {
    let mut rw = rewriter("elsewhere.example");
    assert!(!rw.scrubs());
    // Not even HPACK: only frame headers are read.
    let mut input = frame(HEADERS, END_HEADERS, 1, b"\xff\xff garbage");
    input.extend(frame(DATA, END_STREAM, 1, KEY_VALUE.as_bytes()));
    input.extend(window_update(0, 10));
    let mut out = Vec::new();
    rw.from_host(&input, &mut out).unwrap();
    assert_eq!(out, input);
}

#[test]
fn push_promises_are_scrubbed_and_refused_from_the_client() {
    let mut rw = rewriter("api.example.com");
    let block = encode(
        &mut Encoder::new(),
        &[(":path", &format!("/p?{KEY_VALUE}"))],
    );
    let mut payload = vec![0, 0, 0, 2];
    payload.extend_from_slice(&block);
    let mut out = Vec::new();
    rw.from_host(&frame(0x5, END_HEADERS, 1, &payload), &mut out)
        .unwrap();
    assert_eq!(&out[3..9], &[0x5, END_HEADERS, 0, 0, 0, 1]);
    assert_eq!(&out[9..13], &[0, 0, 0, 2]);
    let fields = Decoder::new().decode(&out[13..]).unwrap();
    assert_eq!(
        fields,
        [(b":path".to_vec(), format!("/p?{KEY}").into_bytes())]
    );

    let mut rw = rewriter("api.example.com");
    assert!(matches!(
        guest(&mut rw, &frame(0x5, END_HEADERS, 1, &payload)),
        Err((RewriteError::Malformed { .. }, _))
    ));
}

#[test]
fn any_rewriter_follows_alpn() {
    let h2 = AnyRewriter::for_alpn(Some(b"h2"), secrets(), flow("api.example.com"));
    assert!(matches!(h2, AnyRewriter::Http2(_)));
    for alpn in [None, Some(&b"http/1.1"[..]), Some(b"h2c"), Some(b"")] {
        let rw = AnyRewriter::for_alpn(alpn, secrets(), flow("api.example.com"));
        assert!(matches!(rw, AnyRewriter::Http1(_)), "{alpn:?}");
    }
    let mut rw = AnyRewriter::for_alpn(Some(b"h2"), secrets(), flow("api.example.com"));
    let input = request(
        &mut Encoder::new(),
        1,
        "api.example.com",
        "/",
        &[("k", KEY)],
        true,
    );
    let mut out = Vec::new();
    rw.from_guest(&[PREFACE.as_slice(), &input].concat(), &mut out)
        .unwrap();
    rw.guest_closed(&mut out).unwrap();
    assert!(contains(&out, KEY_VALUE));
    assert_eq!(rw.stats().substitutions, 1);
    assert!(rw.scrubs());
    assert!(rw.buffered() <= AnyRewriter::BUFFERED_MAX);
}

#[test]
fn without_secrets_everything_passes() {
    let mut rw = Rewriter::new(Arc::new(Secrets::default()), flow("api.example.com"));
    let mut out = Vec::new();
    rw.from_guest(b"anything at all", &mut out).unwrap();
    rw.from_host(b" both ways", &mut out).unwrap();
    assert_eq!(out, b"anything at all both ways");
}
