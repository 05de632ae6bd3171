//! The HTTP/2 rewriter on built frames (a small frame builder, loona-hpack's stateful
//! `Encoder` for the guest's and host's blocks, a `Decoder` reading what comes out), and
//! properties over generated connections: the fixtures here, the cases in `requests`,
//! `responses` and `props`.

mod props;
mod requests;
mod responses;

use std::sync::Arc;

use loona_hpack::{Decoder, Encoder};
use serde::Deserialize;

use super::frame::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PADDED, PRIORITY_FLAG,
    RST_STREAM, SETTINGS, WINDOW_UPDATE,
};
use super::*;
use crate::secrets::{AnyRewriter, OnViolation, Place, SecretSpec, Violation, ViolationReason};

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

// ---- building frames -------------------------------------------------------------------

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().to_be_bytes();
    let mut f = len[len.len() - 3..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn encode(enc: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// A request's fields: the pseudo-headers, then `extra`.
fn req_fields<'a>(
    authority: &'a str,
    path: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ];
    f.extend_from_slice(extra);
    f
}

/// A request's HEADERS frame (one frame, END_HEADERS).
fn request(
    enc: &mut Encoder<'_>,
    sid: u32,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
    end_stream: bool,
) -> Vec<u8> {
    let block = encode(enc, &req_fields(authority, path, extra));
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, sid, &block)
}

fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0])
}

fn window_update(sid: u32, inc: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, sid, &inc.to_be_bytes())
}

// ---- reading what comes out ------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Headers {
        sid: u32,
        fields: Vec<(String, String)>,
        flags: u8,
        /// HEADERS and CONTINUATION frames it took.
        frames: usize,
    },
    Data {
        sid: u32,
        data: Vec<u8>,
        end_stream: bool,
    },
    Other {
        ty: u8,
        flags: u8,
        sid: u32,
        payload: Vec<u8>,
    },
}

/// Reads one direction's output (frames only: the preface already removed).
struct Reader {
    dec: Decoder<'static>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            dec: Decoder::new(),
        }
    }

    fn read(&mut self, mut bytes: &[u8]) -> Vec<Ev> {
        let mut evs = Vec::new();
        let mut block: Option<(u32, u8, Vec<u8>, usize)> = None;
        while !bytes.is_empty() {
            let h = frame::FrameHeader::parse(bytes[..9].try_into().unwrap());
            assert!(h.len <= FRAME_OUT_MAX, "frame of {} bytes", h.len);
            let payload = &bytes[9..9 + h.len];
            bytes = &bytes[9 + h.len..];
            let mut p = payload;
            match h.ty {
                HEADERS | CONTINUATION => {
                    if h.ty == HEADERS {
                        assert!(block.is_none());
                        assert_eq!(h.flags & PADDED, 0, "the rewriter never pads");
                        if h.flags & PRIORITY_FLAG != 0 {
                            p = &p[5..];
                        }
                        block = Some((h.sid, h.flags, Vec::new(), 0));
                    }
                    let b = block.as_mut().expect("CONTINUATION after HEADERS");
                    assert_eq!(b.0, h.sid);
                    b.2.extend_from_slice(p);
                    b.3 += 1;
                    if h.flags & END_HEADERS != 0 {
                        let (sid, flags, raw, frames) = block.take().unwrap();
                        let fields = self
                            .dec
                            .decode(&raw)
                            .unwrap()
                            .into_iter()
                            .map(|(n, v)| {
                                (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                            })
                            .collect();
                        evs.push(Ev::Headers {
                            sid,
                            fields,
                            flags: flags & (END_STREAM | PRIORITY_FLAG),
                            frames,
                        });
                    }
                }
                DATA => {
                    assert_eq!(h.flags & PADDED, 0, "the rewriter never pads");
                    evs.push(Ev::Data {
                        sid: h.sid,
                        data: payload.to_vec(),
                        end_stream: h.flags & END_STREAM != 0,
                    });
                }
                ty => evs.push(Ev::Other {
                    ty,
                    flags: h.flags,
                    sid: h.sid,
                    payload: payload.to_vec(),
                }),
            }
        }
        assert!(block.is_none(), "a header block left open");
        evs
    }
}

fn fields_of(ev: &Ev) -> Vec<(&str, &str)> {
    match ev {
        Ev::Headers { fields, .. } => fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        other => panic!("expected headers, got {other:?}"),
    }
}

/// A stream's DATA, joined.
fn data_of(evs: &[Ev], stream: u32) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut ended = false;
    for ev in evs {
        if let Ev::Data {
            sid,
            data,
            end_stream,
        } = ev
        {
            if *sid == stream {
                all.extend_from_slice(data);
                ended = *end_stream;
            }
        }
    }
    (all, ended)
}

/// Feeds the preface and `frames` from the guest; returns the frames that came out.
fn guest(rw: &mut Rewriter, frames: &[u8]) -> Result<Vec<u8>, (RewriteError, Vec<u8>)> {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(frames);
    let mut out = Vec::new();
    match rw.from_guest(&input, &mut out) {
        Ok(()) => {
            assert_eq!(&out[..24], PREFACE);
            Ok(out.split_off(24))
        }
        Err(e) => Err((e, out)),
    }
}

fn violation_of(r: Result<Vec<u8>, (RewriteError, Vec<u8>)>) -> (Violation, Vec<u8>) {
    match r {
        Err((RewriteError::Violation(v), out)) => (v, out),
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
