//! Offloads on the embedding link and guest replacement, on the virtual-clock harness:
//! what a guest that negotiated checksum/TSO offloads receives, what headers from it are
//! accepted, and what `reset_guest` does to the old guest's flows.

use std::sync::atomic::Ordering;
use std::time::Duration;

use smoltcp::socket::tcp::State;

use crate::link::Offloads;
use crate::stack::harness::Harness;
use crate::wire::vnet;

const PORT: u16 = 8080;

/// An established guest connection through the gateway; returns (guest socket, host id).
fn established(h: &mut Harness) -> (smoltcp::iface::SocketHandle, u64) {
    let g = h.guest.connect(PORT);
    assert!(
        h.run_until(Duration::from_secs(2), |h| !h.host().ids().is_empty()),
        "the guest's SYN opened no host socket"
    );
    let id = *h.host().ids().last().expect("a socket");
    h.host().connect(id, Ok(()));
    let up = h.run_until(Duration::from_secs(2), |h| {
        h.guest.sock(g).state() == State::Established
    });
    assert!(up, "guest socket is {}", h.guest.sock(g).state());
    h.run_for(Duration::from_millis(20));
    (g, id)
}

/// The host sends `total` bytes of a pattern; the guest reads them all. Returns what the
/// guest read.
fn download(h: &mut Harness, g: smoltcp::iface::SocketHandle, id: u64, total: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    h.host().host_sends(id, &data);
    let mut got = Vec::new();
    let done = h.run_until(Duration::from_secs(10), |h| {
        let s = h.guest.sock(g);
        while s.can_recv() {
            let _ = s.recv(|b| {
                got.extend_from_slice(b);
                (b.len(), ())
            });
        }
        got.len() >= total
    });
    assert!(done, "the guest got {} of {total} bytes", got.len());
    assert_eq!(
        got, data,
        "the bytes the guest got differ from what the host sent"
    );
    got
}

/// TCP payload-carrying frames the engine sent (Ethernet + IPv4 + TCP, > 54 bytes).
fn data_frames(h: &Harness) -> Vec<(usize, vnet::VnetHdr)> {
    h.frames
        .iter()
        .zip(&h.headers)
        .filter(|(f, _)| f.len() > 54 && f.get(23) == Some(&6))
        .map(|(f, hdr)| (f.len(), vnet::VnetHdr::parse(hdr)))
        .collect()
}

#[test]
fn without_offloads_frames_are_plain_and_within_the_mtu() {
    let mut h = Harness::new("");
    let (g, id) = established(&mut h);
    h.keep_frames = true;
    download(&mut h, g, id, 200_000);
    let frames = data_frames(&h);
    assert!(!frames.is_empty());
    for (len, hdr) in frames {
        assert!(
            len <= 1514,
            "a {len}-byte frame to a guest without offloads"
        );
        assert_eq!(
            hdr,
            vnet::VnetHdr::default(),
            "a header to a guest without offloads"
        );
    }
}

#[test]
fn guest_with_tso_gets_super_frames_with_a_gso_header() {
    let mut h = Harness::new("");
    h.offload(Offloads {
        guest_csum: true,
        guest_tso4: true,
        ..Offloads::NONE
    });
    let (g, id) = established(&mut h);
    h.keep_frames = true;
    download(&mut h, g, id, 400_000);
    let frames = data_frames(&h);
    let big: Vec<_> = frames.iter().filter(|(len, _)| *len > 1514).collect();
    assert!(
        !big.is_empty(),
        "no super-frame among {} data frames",
        frames.len()
    );
    for (len, hdr) in &frames {
        assert_eq!(
            hdr.flags,
            vnet::flags::NEEDS_CSUM,
            "{len}-byte frame: {hdr:?}"
        );
        assert_eq!(hdr.csum_start, 34);
        assert_eq!(hdr.csum_offset, 16);
        if *len > 1514 {
            assert_eq!(hdr.gso_type, vnet::gso::TCPV4, "{len}-byte frame: {hdr:?}");
            assert_eq!(hdr.gso_size, 1460, "{len}-byte frame: {hdr:?}");
            assert_eq!(hdr.hdr_len, 54);
        }
        assert_eq!(hdr.num_buffers, 0);
    }
}

#[test]
fn checksum_offload_alone_sends_partial_checksums_within_the_mtu() {
    let mut h = Harness::new("");
    // TSO without the checksum feature is not valid virtio: dropped by `effective`.
    h.offload(Offloads {
        guest_csum: true,
        mrg_rxbuf: true,
        ..Offloads::NONE
    });
    let (g, id) = established(&mut h);
    h.keep_frames = true;
    download(&mut h, g, id, 100_000);
    for (len, hdr) in data_frames(&h) {
        assert!(len <= 1514, "a {len}-byte frame without TSO");
        assert_eq!(hdr.flags, vnet::flags::NEEDS_CSUM);
        assert_eq!(hdr.gso_type, vnet::gso::NONE);
        assert_eq!(
            hdr.num_buffers, 1,
            "mergeable receive buffers: num_buffers 1"
        );
    }
}

#[test]
fn tso_without_checksum_offload_is_not_used() {
    let mut h = Harness::new("");
    h.offload(Offloads {
        guest_tso4: true,
        guest_tso6: true,
        ..Offloads::NONE
    });
    let (g, id) = established(&mut h);
    h.keep_frames = true;
    download(&mut h, g, id, 100_000);
    for (len, hdr) in data_frames(&h) {
        assert!(len <= 1514);
        assert_eq!(hdr, vnet::VnetHdr::default());
    }
}

#[test]
fn gso_frames_from_a_guest_with_tso_are_taken_whole() {
    let mut h = Harness::new("");
    h.offload(Offloads::TSO);
    // Every frame from the guest says "partial checksum, TCPv4 GSO" (the harness guest
    // writes full checksums, which the engine does not read either way).
    let mut hdr = [0u8; 12];
    vnet::VnetHdr {
        flags: vnet::flags::NEEDS_CSUM,
        gso_type: vnet::gso::TCPV4,
        gso_size: 1460,
        ..vnet::VnetHdr::default()
    }
    .emit(&mut hdr);
    h.from_guest_hdr = hdr;
    let (g, id) = established(&mut h);
    let frames_before = h.link.from_guest.stats().frames.load(Ordering::Relaxed);
    let data: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    let sent = h.guest.sock(g).send_slice(&data).unwrap();
    assert_eq!(sent, data.len());
    let ok = h.run_until(Duration::from_secs(5), |h| {
        h.host().socks[&id].sent.len() == data.len()
    });
    assert!(ok, "host got {} bytes", h.host().socks[&id].sent.len());
    assert_eq!(h.host().socks[&id].sent, data);
    assert_eq!(h.stat("from_guest_bad_vnet"), 0);
    // 60,000 bytes in super-frames: a handful of frames (ACKs included), not 42+.
    let frames = h.link.from_guest.stats().frames.load(Ordering::Relaxed) - frames_before;
    assert!(
        frames < 20,
        "{frames} frames from the guest for 60,000 bytes"
    );
}

#[test]
fn headers_claiming_offloads_the_guest_did_not_negotiate_drop_the_frame() {
    let mut h = Harness::new("");
    // Checksum offload only: GSO frames are not the guest's to send.
    h.offload(Offloads {
        csum: true,
        ..Offloads::NONE
    });
    let mut hdr = [0u8; 12];
    vnet::VnetHdr {
        gso_type: vnet::gso::TCPV6,
        gso_size: 1440,
        ..vnet::VnetHdr::default()
    }
    .emit(&mut hdr);
    h.from_guest_hdr = hdr;
    let g = h.guest.connect(PORT);
    h.run_for(Duration::from_millis(200));
    assert!(
        h.host().ids().is_empty(),
        "a SYN with a bad header opened a host socket"
    );
    assert!(h.stat("from_guest_bad_vnet") >= 1);
    // The same guest with a plain header gets through.
    h.from_guest_hdr = [0; 12];
    let ok = h.run_until(Duration::from_secs(3), |h| !h.host().ids().is_empty());
    assert!(ok, "guest socket {}", h.guest.sock(g).state());
}

#[test]
fn reset_guest_ends_every_flow_of_the_old_guest() {
    let mut h = Harness::new("");
    let (_g1, a) = established(&mut h);
    let (_g2, b) = established(&mut h);
    assert_eq!(h.stat("tcp_active"), 2);
    h.link.reset_guest();
    h.host().wake_stop();
    h.run_for(Duration::from_millis(20));
    for id in [a, b] {
        assert_eq!(
            h.host().socks[&id].closed,
            Some(true),
            "host socket {id} of the old guest not reset"
        );
    }
    assert_eq!(h.stat("guest_resets"), 1);
    // The new guest (same addresses) connects afresh.
    let (_g3, c) = established(&mut h);
    assert_eq!(h.host().socks[&c].closed, None);
    assert_eq!(h.stat("tcp_active"), 1);
}

#[test]
fn offloads_negotiated_while_a_flow_is_open_keep_it_going() {
    let mut h = Harness::new("");
    let (g, id) = established(&mut h);
    download(&mut h, g, id, 50_000);
    h.offload(Offloads::TSO);
    h.keep_frames = true;
    download(&mut h, g, id, 300_000);
    let frames = data_frames(&h);
    assert!(frames
        .iter()
        .all(|(_, hdr)| hdr.flags == vnet::flags::NEEDS_CSUM));
    // The flow's MSS was agreed before: segments stay within it, super-frames or not.
    assert!(frames
        .iter()
        .all(|(_, hdr)| hdr.gso_size == 0 || hdr.gso_size == 1460));
    assert_eq!(h.host().socks[&id].closed, None);
}
