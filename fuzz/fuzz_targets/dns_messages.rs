//! The DNS resolver (`dns::Resolver`) driven by arbitrary input: a sequence of guest
//! queries (UDP and TCP), upstream UDP and TCP answers, transport failures, expiries and
//! forgotten connections, each step's bytes taken from the input. Answers are either raw
//! input bytes or a query the resolver sent upstream turned into a response (QR set) with
//! input bytes appended, so the matching and reply paths are reached too. After each step:
//! at most `max_pending` queries in flight; at the end, after every deadline passed,
//! nothing in flight. Any panic is a bug.
//!
//! Run: `cargo +nightly fuzz run dns_messages` from `fuzz/`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringnet::dns::{Client, Exchange, Judge, Out, Resolver, ResolverConfig};
use ringnet::metrics::Stats;

const MAX_PENDING: usize = 8;

/// Denies names starting with "deny", allows 10.0.0.0/8 explicitly, counts pins.
struct FuzzJudge {
    pins: usize,
}

impl Judge for FuzzJudge {
    fn deny_name(&self, name: &str) -> Option<String> {
        name.starts_with("deny").then(|| "fuzz".to_owned())
    }
    fn allows_explicitly(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
    }
    fn pin(&mut self, _name: &str, _ip: IpAddr, _ttl: u32, _now: Duration) {
        self.pins += 1;
    }
}

/// Reads the input front to back; empty reads once it is used up.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// A length byte, then that many bytes (or what is left).
    fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte().unwrap_or(0)).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn config(flags: u8) -> ResolverConfig {
    ResolverConfig {
        servers: (0..(flags % 4))
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 53))
            .collect(),
        timeout: Duration::from_millis(u64::from(flags >> 4) * 100),
        hosts: vec![(
            "static.test".to_owned(),
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        )],
        gateway4: (flags & 4 != 0).then_some(Ipv4Addr::new(172, 16, 0, 1)),
        gateway6: (flags & 8 != 0).then_some(Ipv6Addr::new(0xfd42, 0, 0, 0, 0, 0, 0, 1)),
        rebind_protection: flags & 2 != 0,
        max_pending: MAX_PENDING,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut resolver = Resolver::new(config(input.byte().unwrap_or(0)), 7);
    let mut judge = FuzzJudge { pins: 0 };
    let stats = Stats::default();
    let udp = Client::Udp {
        guest: "172.16.0.2:5353".parse().expect("a literal socket address"),
        gateway: "172.16.0.1:53".parse().expect("a literal socket address"),
    };
    let mut now = Duration::ZERO;
    let mut exchanges: Vec<Exchange> = vec![Exchange(0)];
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    while let Some(op) = input.byte() {
        let pick = usize::from(op >> 3);
        match op & 7 {
            0 => resolver.query(udp, input.chunk(), now, &mut judge, &stats, &mut out),
            1 => {
                let client = Client::Tcp {
                    conn: u64::from(op >> 6),
                };
                resolver.query(client, input.chunk(), now, &mut judge, &stats, &mut out);
            }
            2 | 3 => {
                let tail = input.chunk();
                let bytes = match sent.get(pick % sent.len().max(1)) {
                    Some(query) if op & 1 == 1 => {
                        let mut b = [query.as_slice(), tail].concat();
                        if let Some(flags) = b.get_mut(2) {
                            *flags |= 0x80;
                        }
                        b
                    }
                    _ => tail.to_vec(),
                };
                let server = pick % 4;
                resolver.udp_answer(server, &bytes, now, &mut judge, &stats, &mut out);
            }
            4 => {
                let ex = exchanges[pick % exchanges.len()];
                let tail = input.chunk();
                let bytes = match sent.last() {
                    Some(query) if op & 0x80 != 0 => {
                        let mut b = [query.as_slice(), tail].concat();
                        if let Some(flags) = b.get_mut(2) {
                            *flags |= 0x80;
                        }
                        b
                    }
                    _ => tail.to_vec(),
                };
                resolver.tcp_answer(ex, &bytes, now, &mut judge, &stats, &mut out);
            }
            5 => resolver.failed(exchanges[pick % exchanges.len()], now, &stats, &mut out),
            6 => {
                now += Duration::from_millis(u64::from(op >> 3) * 50);
                if let Some(left) = resolver.next_deadline(now) {
                    assert!(left <= Duration::from_secs(2));
                }
                resolver.expire(now, &stats, &mut out);
            }
            _ => resolver.forget_conn(u64::from(op >> 6)),
        }
        for o in out.drain(..) {
            match o {
                Out::Udp {
                    exchange, query, ..
                }
                | Out::Tcp {
                    exchange, query, ..
                } => {
                    exchanges.push(exchange);
                    sent.push(query);
                }
                Out::Reply { bytes, .. } => assert!(bytes.len() >= 12),
            }
        }
        assert!(resolver.pending() <= MAX_PENDING);
    }
    // Every try ends by its deadline: after enough of them, nothing is in flight.
    for _ in 0..4 {
        now += Duration::from_secs(10);
        resolver.expire(now, &stats, &mut out);
    }
    assert_eq!(resolver.pending(), 0);
    assert_eq!(resolver.next_deadline(now), None);
});
