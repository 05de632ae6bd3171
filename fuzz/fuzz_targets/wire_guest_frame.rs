//! What the poll thread runs on the bytes of a guest frame (`stack::Engine::ingest`), on
//! arbitrary bytes: `wire::classify`, then `stack::gateway::verdict` for the addresses of
//! slot 0 (default config, both families), then the slicing of the payload or message range
//! a UDP or echo verdict hands the relays. The poll thread reads no virtio-net header, so
//! the input is the Ethernet frame alone. `wire::prepare_tso` also runs on the same bytes:
//! it only ever sees frames smoltcp built, but it parses them with the same code and must
//! not panic on any input either. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run wire_guest_frame` from `fuzz/`.
#![no_main]

use std::hint::black_box;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringnet::config::{HostRoutes, NetworkConfig};
use ringnet::stack::gateway::{verdict, Verdict};
use ringnet::stack::Addrs;
use ringnet::wire;

/// Slot 0's addresses, as `Engine::new` builds them from its `SlotConfig`.
fn addrs() -> &'static Addrs {
    static ADDRS: OnceLock<Addrs> = OnceLock::new();
    ADDRS.get_or_init(|| {
        let routes = HostRoutes {
            ipv4: true,
            ipv6: true,
        };
        let cfg = NetworkConfig::default()
            .derive(0, routes)
            .expect("the default config derives slot 0");
        Addrs::of(&cfg)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(class) = wire::classify(data) {
        match verdict(&class, addrs()) {
            Verdict::Udp { payload, .. } => {
                black_box(&data[payload]);
            }
            Verdict::Echo { msg, .. } => {
                black_box(&data[msg]);
            }
            Verdict::Smoltcp | Verdict::Tcp { .. } | Verdict::Drop(_) => {}
        }
    }
    for mss in [1, 1460] {
        let mut frame = data.to_vec();
        let _ = wire::prepare_tso(&mut frame, mss);
    }
});
