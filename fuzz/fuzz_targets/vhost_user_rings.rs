//! The vhost-user backend's TX and RX passes (`backend::vhost_user`) on a split queue whose
//! descriptor table (and an indirect table), avail ring and index are the input's, as a
//! hostile guest may write them: loops, chains through the indirect table, addresses at
//! and past the end of guest memory, zero and huge lengths, device-writable TX buffers.
//! `hostile::survive` checks that no pass panics, each does bounded work, and no pool
//! slot is leaked; the property test `hostile_rings_are_survived` runs the same check on
//! proptest's inputs. Addresses are biased towards the buffer area and the end of memory
//! so that chains often reach real bytes.
//!
//! Run: `cargo fuzz run vhost_user_rings` from `fuzz/` (see fuzz/README.md).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ringnet::backend::vhost_user::hostile::{survive, Hostile, RawDesc, BUFS, MEM_BYTES};
use ringnet::link::Link;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// Inside the buffer area (offset).
    Buf(u16),
    /// Around the end of guest memory (offset from 64 bytes before it).
    End(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Desc {
    addr: Addr,
    len: u32,
    flags: u8,
    next: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    descs: [Desc; 16],
    indirect: [Desc; 8],
    heads: [u8; 16],
    avail_idx: u16,
    event_idx: bool,
    mrg: bool,
    frame_len: u16,
}

fn raw(d: Desc) -> RawDesc {
    let addr = match d.addr {
        Addr::Buf(o) => BUFS + u64::from(o),
        Addr::End(o) => MEM_BYTES as u64 - 64 + u64::from(o),
        Addr::Raw(a) => a,
    };
    // NEXT, WRITE, INDIRECT in any combination; `next` a little beyond the table too.
    (addr, d.len, u16::from(d.flags % 8), u16::from(d.next % 24))
}

/// One link for all inputs: `survive` checks it is left as it was found.
fn link() -> &'static Arc<Link> {
    static LINK: OnceLock<Arc<Link>> = OnceLock::new();
    LINK.get_or_init(|| Arc::new(Link::new().expect("a link")))
}

fuzz_target!(|input: Input| {
    let h = Hostile {
        descs: input.descs.map(raw),
        indirect: input.indirect.map(raw),
        heads: input.heads.map(|h| u16::from(h % 20)),
        avail_idx: input.avail_idx,
        event_idx: input.event_idx,
        mrg: input.mrg,
        frame_len: usize::from(input.frame_len),
    };
    if let Err(e) = survive(&h, link()) {
        panic!("{e}");
    }
});
