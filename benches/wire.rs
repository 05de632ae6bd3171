//! Wire-format micro-benchmarks.
//!
//! Cases:
//! - `classify/{tcp_syn,udp,arp}`: `wire::classify` on a 74-byte TCP SYN, a 71-byte UDP
//!   datagram and a 42-byte ARP request.
//! - `csum/{64,1500,65536}`: `wire::csum::sum` over 64 B, 1500 B and 64 KiB (throughput in
//!   bytes).
//! - `prepare_tso/64k`: `wire::prepare_tso` on a 65,549-byte IPv4 TCP super-frame, mss 1460.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringnet::wire::{self, csum};

const GMAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HMAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xfe, 0x01];

/// Ethernet + IPv4 + TCP (20 bytes of options) + payload. Checksums are left zero: `classify`
/// verifies none and `prepare_tso` writes its own.
fn tcp_frame(payload_len: usize, flags: u8) -> Vec<u8> {
    let tcp_len = 40 + payload_len;
    let mut f = vec![0u8; 34 + tcp_len];
    f[0..6].copy_from_slice(&HMAC);
    f[6..12].copy_from_slice(&GMAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    f[20] = 0x40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 2, 15]);
    f[30..34].copy_from_slice(&[93, 184, 216, 34]);
    f[34..36].copy_from_slice(&45678u16.to_be_bytes());
    f[36..38].copy_from_slice(&443u16.to_be_bytes());
    f[38..42].copy_from_slice(&0x6c3e_2a01u32.to_be_bytes());
    f[46] = 10 << 4;
    f[47] = flags;
    f[48..50].copy_from_slice(&64240u16.to_be_bytes());
    f[54..74].copy_from_slice(&[
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 1, 0xe2, 0x40, 0, 0, 0, 0, 1, 3, 3, 7,
    ]);
    for (i, b) in f[74..].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    f
}

fn udp_frame() -> Vec<u8> {
    let mut buf = vec![0u8; 71];
    let off = wire::udp_payload_offset(false);
    buf[off..].fill(0x61);
    let src: SocketAddr = "10.0.2.15:53124".parse().unwrap();
    let dst: SocketAddr = "10.0.2.3:53".parse().unwrap();
    let n = wire::emit_udp(&mut buf, GMAC, HMAC, src, dst, 71 - off).unwrap();
    buf.truncate(n);
    buf
}

fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&GMAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GMAC);
    f.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
    f
}

fn bench_classify(c: &mut Criterion) {
    let syn = tcp_frame(0, 0x02);
    let udp = udp_frame();
    let arp = arp_frame();
    let mut g = c.benchmark_group("classify");
    for (name, frame) in [("tcp_syn", &syn), ("udp", &udp), ("arp", &arp)] {
        assert!(wire::classify(frame).is_ok());
        g.bench_function(name, |b| b.iter(|| wire::classify(black_box(frame))));
    }
    g.finish();
}

fn bench_csum(c: &mut Criterion) {
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 256) as u8).collect();
    let mut g = c.benchmark_group("csum");
    for len in [64usize, 1500, 65536] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(len.to_string(), |b| {
            b.iter(|| csum::sum(black_box(&data[..len])))
        });
    }
    g.finish();
}

fn bench_prepare_tso(c: &mut Criterion) {
    let mut frame = tcp_frame(65535 - 20 - 40, 0x18);
    assert_eq!(frame.len(), 65549);
    let mut g = c.benchmark_group("prepare_tso");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("64k", |b| {
        b.iter(|| wire::prepare_tso(black_box(&mut frame), 1460).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_classify, bench_csum, bench_prepare_tso);
criterion_main!(benches);
