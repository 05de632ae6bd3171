//! Everything the poll thread does to a guest frame, on arbitrary bytes:
//! `[12-byte virtio-net header | frame]` → `VnetHdr::parse` → `from_guest_fixup` →
//! `classify`, plus the to-guest helpers on the same bytes. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run wire_guest_frame` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnet::wire::{self, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = VnetHdr::parse(data) {
        let mut frame = data[VNET_HDR_LEN..].to_vec();
        if wire::from_guest_fixup(&hdr, &mut frame).is_ok() {
            let _ = wire::classify(&frame);
        }
        let mss = hdr.gso_size;
        let mut f = frame.clone();
        let _ = wire::prepare_tso(&mut f, mss);
        let mut f = frame.clone();
        let _ = wire::finish_checksums(&mut f);
        let _ = wire::segment_tcp(&frame, mss, &mut Vec::new(), &mut |_| {});
    }
    let _ = wire::classify(data);
});
