//! Guest frames of every kind, behind a virtio-net header, through the whole poll-thread
//! engine on the virtual-clock harness (`stack::harness`): the ingress path after the
//! classifier (ARP, NDP, ICMP and ICMPv6 echo, UDP relays, DNS, DHCPv4/v6, router
//! solicitations, the TCP listener), the offload checks on the header, and what the
//! engine answers.
//!
//! Each frame's bytes come from the input, optionally repaired so that it gets past the
//! cheap checks: Ethernet addresses set to the guest's and the gateway's (or broadcast),
//! IP addresses set to the guest's and the gateway's (or a remote host), lengths made to
//! match and the IP and L4 checksums computed. The virtio-net header is the input's raw
//! bytes or none; the negotiated offloads change with the input too. `wire_guest_frame`
//! covers the classifier alone at a much higher rate; this one finds what only a whole
//! engine turn does with an accepted frame.
//!
//! Any panic is a bug.
//!
//! Run: `cargo fuzz run guest_stack` from `fuzz/` (see fuzz/README.md).
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ringnet::config::HostRoutes;
use ringnet::stack::harness::{offloads_from_bits, Harness};
use ringnet::stack::Addrs;
use ringnet::wire::csum;

/// The default config without the idle trim: after the last step virtual time jumps far
/// enough that every input would end in a trim of the whole pool, which costs more than the
/// rest of the input and parses nothing of the guest's.
const CONFIG: &str = "[egress]\nidle_trim_ms = 0\n";
/// Frames per input at most.
const FRAMES_MAX: usize = 32;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit per field of `Offloads`.
    offloads: u8,
    frames: Vec<Frame>,
}

#[derive(Arbitrary, Debug)]
struct Frame {
    bytes: Vec<u8>,
    hdr: Option<[u8; 12]>,
    /// 0: as is; 1: addresses; 2: addresses and lengths; 3: also checksums.
    repair: u8,
    /// The destination: the gateway, broadcast/multicast, or a remote host.
    to: u8,
    /// Virtual milliseconds before this frame (times 8).
    wait: u8,
}

/// Set the frame's addresses, lengths and checksums as far as `repair` asks.
fn repair(f: &mut [u8], level: u8, to: u8, a: &Addrs) {
    if level == 0 || f.len() < 14 {
        return;
    }
    let dst_mac = match to % 3 {
        0 => a.gw_mac,
        1 => [0xff; 6],
        _ => [0x33, 0x33, 0, 0, 0, 2],
    };
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&a.guest_mac);
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    match ethertype {
        0x0800 if f.len() >= 34 => repair_v4(f, level, to, a),
        0x86dd if f.len() >= 54 => repair_v6(f, level, to, a),
        _ => {}
    }
}

fn repair_v4(f: &mut [u8], level: u8, to: u8, a: &Addrs) {
    let (Some(src), Some(gw)) = (a.guest4, a.gw4) else {
        return;
    };
    let dst = match to % 4 {
        0 | 1 => gw,
        2 => Ipv4Addr::BROADCAST,
        _ => Ipv4Addr::new(198, 51, 100, 7),
    };
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if level < 2 || ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[14] = 0x40 | (f[14] & 0x0f);
    let total = (f.len() - 14).min(0xffff);
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    if level < 3 {
        return;
    }
    f[24..26].fill(0);
    let sum = csum::to_field(csum::sum(&f[14..14 + ihl]));
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    let l4 = 14 + ihl;
    let proto = f[23];
    let at = match proto {
        6 => 16,
        17 => 6,
        1 => 2,
        _ => return,
    };
    if f.len() < l4 + at + 2 {
        return;
    }
    if proto == 17 {
        let len = (f.len() - l4) as u16;
        f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
    }
    f[l4 + at..l4 + at + 2].fill(0);
    let pseudo = if proto == 1 {
        0
    } else {
        csum::pseudo_v4(src, dst, proto, (f.len() - l4) as u16)
    };
    let sum = csum::to_field(csum::combine(pseudo, csum::sum(&f[l4..])));
    f[l4 + at..l4 + at + 2].copy_from_slice(&sum.to_be_bytes());
}

fn repair_v6(f: &mut [u8], level: u8, to: u8, a: &Addrs) {
    let Some(gw) = a.gw6 else {
        return;
    };
    let src = match to % 2 {
        0 => a.guest6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        _ => Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    };
    let dst = match to % 4 {
        0 | 1 => gw,
        2 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        _ => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7),
    };
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    if level < 2 {
        return;
    }
    f[14] = 0x60 | (f[14] & 0x0f);
    let plen = (f.len() - 54).min(0xffff);
    f[18..20].copy_from_slice(&(plen as u16).to_be_bytes());
    if level < 3 {
        return;
    }
    let proto = f[20];
    let at = match proto {
        6 => 16,
        17 => 6,
        58 => 2,
        _ => return,
    };
    let l4 = 54;
    if f.len() < l4 + at + 2 {
        return;
    }
    if proto == 17 {
        let len = (f.len() - l4).min(0xffff) as u16;
        f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
    }
    f[l4 + at..l4 + at + 2].fill(0);
    let pseudo = csum::pseudo_v6(src, dst, proto, (f.len() - l4) as u32);
    let sum = csum::to_field(csum::combine(pseudo, csum::sum(&f[l4..])));
    f[l4 + at..l4 + at + 2].copy_from_slice(&sum.to_be_bytes());
}

fuzz_target!(|input: Input| {
    let mut h = Harness::with_routes(
        CONFIG,
        HostRoutes {
            ipv4: true,
            ipv6: true,
        },
    );
    h.guest.link_up = false;
    let a = h.addrs();
    if input.offloads != 0 {
        h.link
            .set_offloads(offloads_from_bits(input.offloads));
    }
    for frame in input.frames.into_iter().take(FRAMES_MAX) {
        let mut bytes = frame.bytes;
        repair(&mut bytes, frame.repair % 4, frame.to, &a);
        h.inject_with_hdr(&frame.hdr.unwrap_or([0; 12]), &bytes);
        h.clock
            .advance(Duration::from_millis(u64::from(frame.wait) * 8));
        h.turn();
    }
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(30));
        h.turn();
    }
});
