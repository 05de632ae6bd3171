//! The policy's cost per new flow: `Policy::decide` over the 50-rule policy of
//! perf/compare.sh's `ringnet-policy-*` backends (24 CIDR+port denies, 25 domain-suffix
//! denies, then `allow group:host`), for a flow that walks all 50 rules, with and without
//! names pinned to its address; and a pin-table lookup. The policy is asked once per new
//! flow (never per packet), so these are the whole of its cost on a bulk transfer.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ringnet::policy::syntax::PolicyConfig;
use ringnet::policy::{Direction, Flow, Gateways, Pins, Proto};

fn policy50() -> ringnet::policy::Policy {
    let mut rules: Vec<String> = (1..=24)
        .map(|i| format!("\"deny tcp 203.0.113.{i} port 1-1024\""))
        .collect();
    rules.extend((1..=25).map(|i| format!("\"deny .blocked{i}.example\"")));
    rules.push("\"allow group:host\"".into());
    let text = format!(
        "default_egress = \"deny\"\nrules = [{}]\n",
        rules.join(", ")
    );
    let cfg: PolicyConfig = toml::from_str(&text).expect("the 50-rule policy parses");
    cfg.compile().expect("the 50-rule policy compiles")
}

fn bench_policy(c: &mut Criterion) {
    let p = policy50();
    assert_eq!(p.rules.len(), 50);
    let gw = Gateways {
        v4: Some(Ipv4Addr::new(172, 16, 0, 1)),
        v6: None,
    };
    let flow = Flow {
        direction: Direction::Egress,
        proto: Proto::Tcp,
        ip: IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
        port: 5201,
    };
    let mut g = c.benchmark_group("policy");
    g.measurement_time(Duration::from_secs(2));
    g.bench_function("decide_50_rules", |b| {
        b.iter(|| black_box(p.decide(black_box(&flow), &[], &gw)))
    });
    let names = ["www.example.test", "cdn.example.test"];
    g.bench_function("decide_50_rules_2_names", |b| {
        b.iter(|| black_box(p.decide(black_box(&flow), &names, &gw)))
    });
    let mut pins = Pins::new(4096);
    for i in 0..4000u32 {
        pins.insert(
            &format!("n{i}.test"),
            IpAddr::from(i.to_be_bytes()),
            300,
            Duration::ZERO,
        );
    }
    let ip = IpAddr::from(1234u32.to_be_bytes());
    g.bench_function("pins_names_4000", |b| {
        b.iter(|| black_box(pins.names(black_box(ip), Duration::from_secs(1)).len()))
    });
    g.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
