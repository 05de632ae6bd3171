//! Structure-aware: sequences of guest TCP segments against one flow (and a few others),
//! through the whole poll-thread engine on the virtual-clock harness (`stack::harness`).
//!
//! The input decodes (`arbitrary`) into a list of steps. A segment step names its flags,
//! its sequence and acknowledgement numbers *relative to the flow's state* (the next byte
//! the guest owes, the next byte the engine sent — or raw values), window, TCP options,
//! payload, a virtio-net header (none, a valid TSO/checksum one, or raw bytes), and which
//! flow it belongs to; the harness builds a well-formed Ethernet/IPv4/TCP frame with a
//! correct checksum unless the step asks for a bad one. Other steps script the host side
//! (connect result, data, EOF, reset), move virtual time, or change the negotiated
//! offloads. So the fuzzer spends its time in the TCP state machine, the flow table, the
//! DNS-over-TCP and gateway paths and the offload checks rather than in the classifier's
//! early drops (which `wire_guest_frame` covers).
//!
//! Any panic is a bug, in ringnet or in the harness' own expectations (an engine turn
//! that returns an error, a pool that runs dry while frames are only ever taken by the
//! engine's turn).
//!
//! Run: `cargo fuzz run tcp_flow` from `fuzz/` (see fuzz/README.md for stable toolchains).
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ringnet::stack::harness::{offloads_from_bits, Harness};
use ringnet::wire::csum;
use ringnet::wire::vnet::{flags, gso, VnetHdr};

/// The default config without the idle trim: after the last step virtual time jumps far
/// enough that every input would end in a trim of the whole pool, which costs more than the
/// rest of the input and parses nothing of the guest's.
const CONFIG: &str = "[egress]\nidle_trim_ms = 0\n";
/// The guest's initial sequence number on every flow.
const ISN: u32 = 0x1000_0000;
/// Payload bytes per segment at most (a TSO super-frame may be larger than the MTU).
const PAYLOAD_MAX: usize = 9000;
/// Steps per input at most: bounds the time one input takes.
const STEPS_MAX: usize = 64;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Rel {
    /// Exactly what the receiver expects.
    Next,
    /// Off by a small amount either way (retransmits, overlaps, gaps).
    Delta(i16),
    /// A raw value.
    Raw(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dest {
    /// A host beyond the gateway (a host socket through the fake driver).
    Remote,
    /// The gateway's DNS over TCP.
    GatewayDns,
    /// The gateway's address at another port (forwarded to the host's loopback).
    Gateway,
}

#[derive(Arbitrary, Debug)]
enum Hdr {
    None,
    /// A header a well-behaved guest with offloads would write for this frame.
    Offload {
        tso: bool,
        gso_size: u16,
    },
    Raw([u8; 12]),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    /// Which of four flows (source ports) the segment belongs to.
    flow: u8,
    dest: Dest,
    /// FIN SYN RST PSH ACK URG ECE CWR.
    flags: u8,
    seq: Rel,
    ack: Rel,
    window: u16,
    urgent: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
    /// Extra filler bytes after `payload`, for large segments from short inputs.
    fill: u16,
    hdr: Hdr,
    bad_csum: bool,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Segment(Segment),
    /// The host side of the newest host socket: connect result.
    HostConnect(bool),
    HostSends(u16),
    HostEof,
    HostReset,
    /// Virtual time moves on by this many milliseconds (times 16), then one turn.
    Advance(u16),
    /// The guest (re)negotiates offloads: bit per field of `Offloads`.
    Offloads(u8),
}

/// What the target knows of one flow.
#[derive(Default, Clone, Copy)]
struct Flow {
    /// The next sequence number the guest would send.
    guest_next: u32,
    /// The next sequence number the engine would send (from its last segment).
    engine_next: Option<u32>,
    dest_port: u16,
}

fn resolve(rel: Rel, next: u32) -> u32 {
    match rel {
        Rel::Next => next,
        Rel::Delta(d) => next.wrapping_add(d as i32 as u32),
        Rel::Raw(v) => v,
    }
}

/// Ethernet + IPv4 + TCP for `seg` of flow `f`, and its virtio-net header.
fn build(
    h: &Harness,
    seg: &Segment,
    src_port: u16,
    f: &Flow,
    dst: Ipv4Addr,
) -> (Vec<u8>, [u8; 12], usize) {
    let a = h.addrs();
    let src = a.guest4.expect("the harness guest has IPv4");
    let mut opts: Vec<u8> = seg.options.iter().copied().take(40).collect();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    let mut payload: Vec<u8> = seg.payload.iter().copied().take(PAYLOAD_MAX).collect();
    let fill = usize::from(seg.fill).min(PAYLOAD_MAX - payload.len());
    payload.extend((0..fill).map(|i| i as u8));
    let tcp_len = 20 + opts.len() + payload.len();
    let ip_len = 20 + tcp_len;
    let mut b = Vec::with_capacity(14 + ip_len);
    b.extend_from_slice(&a.gw_mac);
    b.extend_from_slice(&a.guest_mac);
    b.extend_from_slice(&[0x08, 0x00]);
    // IPv4: no options, DF, TTL 64.
    b.extend_from_slice(&[0x45, 0]);
    b.extend_from_slice(&(ip_len.min(0xffff) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    let ip_sum = csum::to_field(csum::sum(&b[14..34]));
    b[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP.
    let engine_next = f.engine_next.unwrap_or(0);
    b.extend_from_slice(&src_port.to_be_bytes());
    b.extend_from_slice(&f.dest_port.to_be_bytes());
    b.extend_from_slice(&resolve(seg.seq, f.guest_next).to_be_bytes());
    b.extend_from_slice(&resolve(seg.ack, engine_next).to_be_bytes());
    b.push(((20 + opts.len()) / 4 << 4) as u8);
    b.push(seg.flags);
    b.extend_from_slice(&seg.window.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&seg.urgent.to_be_bytes());
    b.extend_from_slice(&opts);
    b.extend_from_slice(&payload);
    let pseudo = csum::pseudo_v4(src, dst, 6, tcp_len as u16);
    let partial = matches!(seg.hdr, Hdr::Offload { .. });
    let sum = if partial {
        // A partial checksum: the pseudo-header sum, not complemented (virtio-net).
        pseudo
    } else {
        csum::to_field(csum::combine(pseudo, csum::sum(&b[34..])))
    };
    let sum = if seg.bad_csum { sum ^ 0x5a5a } else { sum };
    b[50..52].copy_from_slice(&sum.to_be_bytes());
    let mut hdr = [0u8; 12];
    match &seg.hdr {
        Hdr::None => {}
        Hdr::Raw(raw) => hdr = *raw,
        Hdr::Offload { tso, gso_size } => {
            let v = VnetHdr {
                flags: flags::NEEDS_CSUM,
                gso_type: if *tso { gso::TCPV4 } else { gso::NONE },
                hdr_len: (54 + opts.len()) as u16,
                gso_size: if *tso { (*gso_size).max(1) } else { 0 },
                csum_start: 34,
                csum_offset: 16,
                num_buffers: 0,
            };
            v.emit(&mut hdr);
        }
    }
    (b, hdr, payload.len())
}

/// Update the flows' `engine_next` from the engine's frames since the last call.
fn observe(h: &mut Harness, flows: &mut [Flow; 4]) {
    for f in h.frames.drain(..) {
        // Ethernet + IPv4 (no options) + TCP towards the guest.
        if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 || f[14] != 0x45 {
            continue;
        }
        let dst_port = u16::from_be_bytes([f[36], f[37]]);
        let Some(i) = dst_port.checked_sub(40000).map(usize::from) else {
            continue;
        };
        if i >= flows.len() {
            continue;
        }
        let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let off = usize::from(f[46] >> 4) * 4;
        let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
        let flag = f[47];
        let len = ip_len.saturating_sub(20 + off) as u32
            + u32::from(flag & 0x02 != 0)
            + u32::from(flag & 0x01 != 0);
        flows[i].engine_next = Some(seq.wrapping_add(len));
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut h = Harness::new(CONFIG);
    h.keep_frames = true;
    // The harness' own smoltcp guest stays silent: every guest frame is the input's.
    h.guest.link_up = false;
    let gw = h.addrs().gw4.expect("the harness has IPv4");
    let remote = Ipv4Addr::new(198, 51, 100, 7);
    let mut flows = [Flow {
        guest_next: ISN,
        ..Flow::default()
    }; 4];
    for step in steps.into_iter().take(STEPS_MAX) {
        match step {
            Step::Segment(seg) => {
                let i = usize::from(seg.flow % 4);
                let (dst, port) = match seg.dest {
                    Dest::Remote => (remote, 80),
                    Dest::GatewayDns => (gw, 53),
                    Dest::Gateway => (gw, 8080),
                };
                flows[i].dest_port = port;
                let (frame, hdr, len) = build(&h, &seg, 40000 + i as u16, &flows[i], dst);
                let consumed = len as u32
                    + u32::from(seg.flags & 0x02 != 0)
                    + u32::from(seg.flags & 0x01 != 0);
                if matches!(seg.seq, Rel::Next) {
                    flows[i].guest_next = flows[i].guest_next.wrapping_add(consumed);
                }
                h.inject_with_hdr(&hdr, &frame);
            }
            Step::HostConnect(ok) => {
                let id = h.host().ids().last().copied();
                if let Some(id) = id {
                    let result = if ok {
                        Ok(())
                    } else {
                        Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                    };
                    h.host().connect(id, result);
                }
            }
            Step::HostSends(n) => {
                let id = h.host().ids().last().copied();
                if let Some(id) = id {
                    let data: Vec<u8> = (0..usize::from(n)).map(|i| i as u8).collect();
                    h.host().host_sends(id, &data);
                }
            }
            Step::HostEof => {
                let id = h.host().ids().last().copied();
                if let Some(id) = id {
                    h.host().host_eof(id);
                }
            }
            Step::HostReset => {
                let id = h.host().ids().last().copied();
                if let Some(id) = id {
                    h.host().host_reset(id);
                }
            }
            Step::Advance(ms) => {
                h.clock.advance(Duration::from_millis(u64::from(ms) * 16));
            }
            Step::Offloads(bits) => h.link.set_offloads(offloads_from_bits(bits)),
        }
        h.turn();
        observe(&mut h, &mut flows);
    }
    // Let every timer run out: flows end, nothing panics on the way.
    for _ in 0..8 {
        h.clock.advance(Duration::from_secs(30));
        h.turn();
    }
});
