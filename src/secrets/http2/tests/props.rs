//! Properties over generated connections.

use loona_hpack::Encoder;
use proptest::prelude::*;

use super::*;

/// Text: ordinary bytes, whole placeholders and their prefixes.
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

/// Text where a GITHUB_TOKEN placeholder (a violation on this flow) is rare.
fn mostly_allowed() -> impl Strategy<Value = String> {
    prop_oneof![9 => text().prop_map(|t| t.replace(GH, KEY)), 1 => text()]
}

/// One frame of a generated connection: a request on stream `sid`, a DATA frame on it
/// (padded by `pad` when some), a WINDOW_UPDATE.
#[derive(Clone, Debug)]
enum Gen {
    Request {
        query: String,
        header: String,
        split: bool,
    },
    Data {
        text: String,
        pad: Option<u8>,
        end: bool,
    },
    Window(u32),
}

fn gen() -> impl Strategy<Value = Vec<(u8, Gen)>> {
    let one = prop_oneof![
        (mostly_allowed(), mostly_allowed(), any::<bool>()).prop_map(|(query, header, split)| {
            Gen::Request {
                query,
                header,
                split,
            }
        }),
        (
            mostly_allowed(),
            proptest::option::of(0u8..4),
            any::<bool>()
        )
            .prop_map(|(text, pad, end)| Gen::Data { text, pad, end }),
        (1u32..1000).prop_map(Gen::Window),
    ];
    proptest::collection::vec((0u8..3, one), 1..10)
}

/// The guest's bytes for `frames` (stream `1 + 2 * s`).
fn build(frames: &[(u8, Gen)]) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut out = PREFACE.to_vec();
    let mut open = [false; 3];
    for (s, g) in frames {
        let sid = 1 + 2 * u32::from(*s);
        let open = &mut open[usize::from(*s)];
        if matches!(g, Gen::Data { .. }) && !*open {
            // DATA goes on a request stream (see `trailers_control_frames_and_closed_streams`
            // for the others).
            let block = encode(&mut enc, &req_fields("api.example.com", "/", &[]));
            out.extend(frame(HEADERS, END_HEADERS, sid, &block));
        }
        *open = match g {
            Gen::Request { .. } => true,
            Gen::Data { end, .. } => !end,
            Gen::Window(_) => *open,
        };
        match g {
            Gen::Request {
                query,
                header,
                split,
            } => {
                let path = format!("/p?q={}", query.replace(' ', "+"));
                let header = header.trim().to_owned();
                let block = encode(
                    &mut enc,
                    &req_fields(
                        "api.example.com",
                        &path,
                        &[("x-h", &header), ("content-length", "3")],
                    ),
                );
                if *split && block.len() > 2 {
                    let (a, b) = block.split_at(block.len() / 2);
                    out.extend(frame(HEADERS, 0, sid, a));
                    out.extend(frame(CONTINUATION, END_HEADERS, sid, b));
                } else {
                    out.extend(frame(HEADERS, END_HEADERS, sid, &block));
                }
            }
            Gen::Data { text, pad, end } => {
                let flags = if *end { END_STREAM } else { 0 };
                match pad {
                    Some(p) => {
                        let mut payload = vec![*p];
                        payload.extend_from_slice(text.as_bytes());
                        payload.extend(std::iter::repeat_n(0, usize::from(*p)));
                        out.extend(frame(DATA, flags | PADDED, sid, &payload));
                    }
                    None => out.extend(frame(DATA, flags, sid, text.as_bytes())),
                }
            }
            Gen::Window(inc) => out.extend(window_update(sid, *inc)),
        }
    }
    out
}

type Run = (Vec<u8>, Option<RewriteError>, SecretStats);

/// Feeds `data` from the guest cut at `cuts`, then `host` from the host in one piece.
fn feed_cut(data: &[u8], cuts: &[usize], host: &[u8]) -> (Run, Vec<u8>) {
    let mut rw = rewriter("api.example.com");
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut err = None;
    for c in cuts {
        if let Err(e) = rw.from_guest(&data[last..c], &mut out) {
            err = Some(e);
            break;
        }
        assert!(rw.buffered() <= BUFFERED_MAX);
        last = c;
    }
    let mut back = Vec::new();
    if err.is_none() {
        rw.from_host(host, &mut back).unwrap();
    }
    ((out, err, rw.stats()), back)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_gives_the_same_output(
        frames in gen(),
        cuts in proptest::collection::vec(0usize..3000, 0..12),
    ) {
        let data = build(&frames);
        // The host's WINDOW_UPDATEs for every stream and the connection.
        let host: Vec<u8> = (0..4u32).flat_map(|s| window_update(if s == 3 { 0 } else { 1 + 2 * s }, 500)).collect();
        let whole = feed_cut(&data, &[], &host);
        prop_assert_eq!(&feed_cut(&data, &cuts, &host), &whole);
        let every: Vec<usize> = (0..data.len()).collect();
        prop_assert_eq!(&feed_cut(&data, &every, &host), &whole);
        let (run, _) = &whole;
        // No placeholder ever leaves (GITHUB_TOKEN's is a violation here, API_KEY's is
        // replaced everywhere it was generated), and what left is well-formed.
        prop_assert!(!contains(&run.0, KEY) && !contains(&run.0, GH));
        Reader::new().read(&run.0[24.min(run.0.len())..]);
    }

    #[test]
    fn streams_without_placeholders_keep_their_data(
        frames in gen(),
        cuts in proptest::collection::vec(0usize..3000, 0..12),
    ) {
        let frames: Vec<(u8, Gen)> = frames
            .into_iter()
            .map(|(s, g)| {
                let clean = |t: &String| t.replace('$', "#");
                let g = match g {
                    Gen::Request { query, header, split } => Gen::Request { query: clean(&query), header: clean(&header), split },
                    Gen::Data { text, end, .. } => Gen::Data { text: clean(&text), pad: None, end },
                    w => w,
                };
                (s, g)
            })
            .collect();
        let data = build(&frames);
        let ((out, err, _), _) = feed_cut(&data, &cuts, &[]);
        prop_assert_eq!(err, None);
        // Blocks are re-encoded (content-length goes) and DATA re-framed: compare contents.
        let want = Reader::new().read(&data[24..]);
        let got = Reader::new().read(&out[24..]);
        let norm = |evs: Vec<Ev>| -> Vec<Ev> {
            evs.into_iter().filter(|e| !matches!(e, Ev::Data { data, end_stream: false, .. } if data.is_empty())).collect()
        };
        let (want, got) = (norm(want), norm(got));
        let headers = |evs: &[Ev]| evs.iter().filter(|e| matches!(e, Ev::Headers { .. })).count();
        prop_assert_eq!(headers(&want), headers(&got));
        for s in 0..3 {
            prop_assert_eq!(data_of(&want, 1 + 2 * s).0, data_of(&got, 1 + 2 * s).0);
        }
    }

    #[test]
    fn substitution_then_scrub_round_trips(body in text(), cut in 0usize..400) {
        let body = body.replace(GH, "");
        let mut rw = rewriter("api.example.com");
        let mut input = request(&mut Encoder::new(), 1, "api.example.com", "/", &[], false);
        input.extend(frame(DATA, END_STREAM, 1, body.as_bytes()));
        let sent = guest(&mut rw, &input).unwrap();
        let evs = Reader::new().read(&sent);
        let (echoed, _) = data_of(&evs, 1);
        prop_assert!(!contains(&echoed, KEY));
        // An echo server returns the body it got, in two pieces.
        let head = encode(&mut Encoder::new(), &[(":status", "200")]);
        let mut resp = frame(HEADERS, END_HEADERS, 1, &head);
        resp.extend(frame(DATA, END_STREAM, 1, &echoed));
        let cut = cut.min(resp.len());
        let mut back = Vec::new();
        rw.from_host(&resp[..cut], &mut back).unwrap();
        rw.from_host(&resp[cut..], &mut back).unwrap();
        let evs = Reader::new().read(&back);
        prop_assert_eq!(data_of(&evs, 1), (body.into_bytes(), true));
    }
}
