//! Structure-aware robustness test: a stream of valid, mutated and random guest frames
//! through the embedding API must never stop the poll thread, leak pool slots or make it
//! stop answering.
//!
//! The poll thread runs inside a fresh, empty network namespace (the test thread unshares
//! before starting it, and new threads inherit it), so the connects, datagrams and pings
//! the random frames ask for fail at once with "network unreachable": nothing leaves the
//! machine. Needs root for that; skips (fails under CI=true) otherwise.

#[macro_use]
mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::frames::{self, GUEST, GW, GW_MAC};
use ringnet::config::EgressDriver;
use ringnet::{GuestLink, HostRoutes, Network, NetworkConfig};
use smoltcp::wire::*;

/// xorshift64*: deterministic, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ipv4_frame(rng: &mut Rng, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let dst = match rng.below(3) {
        0 => GW,
        1 => Ipv4Addr::new(198, 51, 100, rng.below(255) as u8),
        _ => Ipv4Addr::from(rng.next() as u32),
    };
    let src = if rng.below(8) == 0 {
        Ipv4Addr::from(rng.next() as u32)
    } else {
        GUEST
    };
    frames::ipv4(src, dst, proto, l4)
}

fn tcp_segment(rng: &mut Rng) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + rng.below(64) as usize];
    let mut t = TcpPacket::new_unchecked(&mut l4[..]);
    t.set_src_port(40000 + rng.below(8) as u16);
    t.set_dst_port(1 + rng.below(4) as u16);
    t.set_seq_number(TcpSeqNumber(rng.next() as i32));
    t.set_ack_number(TcpSeqNumber(rng.next() as i32));
    t.set_header_len(20);
    let flags = rng.next() as u8;
    t.set_syn(flags & 1 != 0 || rng.below(2) == 0);
    t.set_ack(flags & 2 != 0);
    t.set_fin(flags & 4 != 0);
    t.set_rst(flags & 8 != 0);
    t.set_psh(flags & 16 != 0);
    t.set_window_len(rng.next() as u16);
    l4
}

fn udp_datagram(rng: &mut Rng) -> Vec<u8> {
    let len = 8 + rng.below(100) as usize;
    let mut l4 = vec![0u8; len];
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(5000 + rng.below(16) as u16);
    u.set_dst_port(1 + rng.below(1024) as u16);
    u.set_len(len as u16);
    l4
}

fn echo(rng: &mut Rng) -> Vec<u8> {
    let data = vec![0x5a; rng.below(64) as usize];
    let (ident, seq_no) = (rng.next() as u16, rng.next() as u16);
    frames::icmpv4_echo(ident, seq_no, &data)
}

fn arp(rng: &mut Rng) -> Vec<u8> {
    let op = if rng.below(2) == 0 {
        ArpOperation::Request
    } else {
        ArpOperation::Reply
    };
    let target = Ipv4Addr::new(172, 16, 0, rng.below(4) as u8);
    frames::arp(EthernetAddress(GW_MAC), op, target)
}

fn ipv6_frame(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(80) as usize;
    let mut buf = frames::ethernet(EthernetAddress(GW_MAC), EthernetProtocol::Ipv6, 40 + len);
    let mut p = Ipv6Packet::new_unchecked(&mut buf[14..]);
    p.set_version(6);
    p.set_payload_len(len as u16);
    p.set_next_header(match rng.below(5) {
        0 => IpProtocol::Tcp,
        1 => IpProtocol::Udp,
        2 => IpProtocol::Icmpv6,
        3 => IpProtocol::Ipv6Frag,
        _ => IpProtocol::HopByHop,
    });
    p.set_hop_limit(255);
    p.set_src_addr("fd42:6d73:62::2".parse().unwrap());
    p.set_dst_addr(if rng.below(2) == 0 {
        "fd42:6d73:62::1".parse().unwrap()
    } else {
        "2001:db8::7".parse().unwrap()
    });
    for b in &mut buf[54..] {
        *b = rng.next() as u8;
    }
    buf
}

fn frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = match rng.below(7) {
        0 => arp(rng),
        1 => {
            let l4 = tcp_segment(rng);
            ipv4_frame(rng, IpProtocol::Tcp, &l4)
        }
        2 => {
            let l4 = udp_datagram(rng);
            ipv4_frame(rng, IpProtocol::Udp, &l4)
        }
        3 => {
            let l4 = echo(rng);
            ipv4_frame(rng, IpProtocol::Icmp, &l4)
        }
        4 => ipv6_frame(rng),
        5 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        _ => {
            let l4 = tcp_segment(rng);
            ipv4_frame(rng, IpProtocol::Tcp, &l4)
        }
    };
    // Mutate: flip bytes, truncate, or extend.
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(4) {
                if !f.is_empty() {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] ^= rng.next() as u8 | 1;
                }
            }
        }
        1 => {
            let n = rng.below(f.len() as u64 + 1) as usize;
            f.truncate(n);
        }
        2 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        _ => {}
    }
    f
}

fn drain(link: &GuestLink) -> usize {
    link.clear_notify();
    let mut n = 0;
    while let Some(f) = link.recv() {
        n += f.len().min(1);
    }
    n
}

fn arp_answered(link: &GuestLink) -> bool {
    let req = frames::arp(EthernetAddress(GW_MAC), ArpOperation::Request, GW);
    drain(link);
    // After a storm the from_guest ring may still be full: wait for room so the request
    // itself is not dropped (that would test the ring, not the gateway).
    let deadline = Instant::now() + Duration::from_secs(2);
    while !link.send(None, &req) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        drain(link);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        link.wait(left);
        link.clear_notify();
        while let Some(f) = link.recv() {
            if f.len() >= 14 && f[12..14] == [0x08, 0x06] {
                return true;
            }
        }
    }
    false
}

fn fuzz(driver: EgressDriver, seed: u64) {
    let mut cfg = NetworkConfig::default();
    cfg.egress.driver = driver;
    cfg.max_connections = 64;
    cfg.egress.max_udp_flows = 32;
    cfg.egress.connect_timeout_ms = 500;
    let routes = HostRoutes {
        ipv4: true,
        ipv6: true,
    };
    let mut net = Network::with_routes(&cfg, 0, routes).unwrap();
    net.start().unwrap();
    let link = net.take_link().unwrap();
    assert!(arp_answered(&link), "gateway answers before the storm");
    let mut rng = Rng(seed);
    for i in 0..30_000u32 {
        let f = frame(&mut rng);
        link.send(None, &f);
        if i % 64 == 0 {
            drain(&link);
        }
    }
    drain(&link);
    assert!(net.is_running(), "the poll thread survived");
    assert!(arp_answered(&link), "gateway still answers after the storm");
    let s = net.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        load(&s.malformed) + load(&s.unsupported) > 0,
        "{}",
        s.render()
    );
    assert!(load(&s.tcp_active) <= 64, "{}", s.render());
    assert!(load(&s.udp_active) <= 32, "{}", s.render());
    // Give connect failures and aborts time to settle, then every slot must be back.
    std::thread::sleep(Duration::from_millis(800));
    drain(&link);
    net.shutdown().unwrap();
    drain(&link);
    drop(link);
    assert_eq!(net.pool_free(), net.pool_capacity(), "no pool slot leaked");
}

/// `f` on a thread in a new, empty network namespace (`lo` down: nothing is reachable).
fn in_empty_netns(f: impl FnOnce() + Send + 'static) {
    common::in_private_netns(false, f).expect("unshare(CLONE_NEWNET)");
}

#[test]
fn guest_frame_storm_uring() {
    require_privileges!();
    in_empty_netns(|| fuzz(EgressDriver::Uring, 0x9e37_79b9_7f4a_7c15));
}

#[test]
fn guest_frame_storm_epoll() {
    require_privileges!();
    in_empty_netns(|| fuzz(EgressDriver::Epoll, 0x2545_f491_4f6c_dd1d));
}
