//! Self-tests of the namespace harness (`tests/common`) and the python helpers; none of them
//! needs the ringnet binary.
//!
//! Cases:
//! - `decide_*`: the run / skip / fail-under-CI decision.
//! - `json_*`: the result-line reader (serde_json) on a helper's line, the ready line's port,
//!   ringnet's `--stats` counters.
//! - `host_ns_is_isolated_and_removed`: HostNs has lo, the ifb sink with both documentation
//!   addresses, default routes of both families into the sink, ping sockets enabled, connects
//!   to unanswered sink addresses time out; it is gone after drop.
//! - `netns_removed_on_panic`: Drop cleans up during unwinding.
//! - `timeout_kills_process_group`: a command past its deadline is killed with its children.
//! - `dnsmasq_server_and_dig`: [`DnsServer`] answers its records on IPv4 and IPv6 over UDP
//!   and TCP, truncates the big TXT answer over UDP, logs the names it was asked; [`dig`]'s
//!   output is parsed (status, flags, answers, transport); it is gone after drop.
//! - `helpers_over_veth_standin`: every python helper, run across a veth pair that stands in
//!   for ringnet (the guest/gateway addresses of slot 0 on both ends).

mod common;

use common::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

#[test]
fn decide_runs_skips_or_fails() {
    assert_eq!(decide(false, &[]), Decision::Run);
    assert_eq!(decide(true, &[]), Decision::Run);
    let missing = vec!["not root".to_string(), "no `arping` in PATH".to_string()];
    assert_eq!(
        decide(false, &missing),
        Decision::Skip("not root; no `arping` in PATH".into())
    );
    assert_eq!(
        decide(true, &missing),
        Decision::Fail("not root; no `arping` in PATH".into())
    );
}

#[test]
fn json_reads_helper_lines() {
    let parse = serde_json::from_str::<Json>;
    let j = parse(
        r#"{"ok": true, "bytes": 1073741824, "sha256": "ab\"c", "errors": ["x"], "n": null, "f": -1.5e0}"#,
    )
    .unwrap();
    assert!(j["ok"] == true);
    assert_eq!(j["bytes"].as_u64(), Some(1 << 30));
    assert_eq!(j["sha256"].as_str(), Some("ab\"c"));
    assert_eq!(j["errors"], serde_json::json!(["x"]));
    assert_eq!(j["n"], Json::Null);
    assert_eq!(j["f"].as_f64(), Some(-1.5));
    assert_eq!(j["absent"], Json::Null);
    assert!(parse("{\"a\": 1} x").is_err());
    assert!(parse("{\"a\": }").is_err());
}

#[test]
fn json_ready_port_and_stats_counters() {
    let ready: Json =
        serde_json::from_str(r#"{"bind": "::1", "port": 40123, "ready": true}"#).unwrap();
    assert_eq!(port(&ready), "40123");
    let stats = "tcp_opened 3\ntcp_opened_v6 9\nneigh_spoofed 12\n";
    assert_eq!(stats_counter(stats, "tcp_opened"), Some(3));
    assert_eq!(stats_counter(stats, "neigh_spoofed"), Some(12));
    assert_eq!(stats_counter(stats, "tcp_connect_failed"), None);
}

#[test]
fn host_ns_is_isolated_and_removed() {
    require_privileges!("python3");
    let _wd = Watchdog::new(Duration::from_secs(60));
    let name;
    {
        let host = HostNs::new();
        name = host.name().to_string();
        assert!(netns_list().contains(&name));

        let links = host.links();
        assert_eq!(links, vec!["lo".to_string(), SINK_DEV.to_string()]);
        let lo = host.ip(&["-o", "link", "show", "dev", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
        let sink = host.ip(&["-o", "link", "show", "dev", SINK_DEV]);
        assert!(sink.contains(",UP") && sink.contains("NOARP"), "{sink}");
        let addrs = host.ip(&["-o", "addr", "show", "dev", SINK_DEV]);
        assert!(addrs.contains("inet 198.51.100.7/24"), "{addrs}");
        assert!(addrs.contains("inet6 2001:db8::7/64"), "{addrs}");
        assert!(!addrs.contains("tentative"), "{addrs}");
        let r4 = host.ip(&["-4", "route", "show", "default"]);
        let r6 = host.ip(&["-6", "route", "show", "default"]);
        assert!(r4.contains("default dev sink0"), "{r4}");
        assert!(r6.contains("default dev sink0"), "{r6}");
        // Anything not local is routed into the sink (route lookup only, nothing is sent).
        let get = host.ip(&["route", "get", "192.0.2.55"]);
        assert!(get.contains("dev sink0"), "{get}");
        let get6 = host.ip(&["-6", "route", "get", "2001:db8:1::1"]);
        assert!(get6.contains("dev sink0"), "{get6}");
        let pgr = host.exec(&["sysctl", "-n", "net.ipv4.ping_group_range"], SHORT);
        assert_eq!(
            pgr.ok().stdout.split_whitespace().collect::<Vec<_>>(),
            ["0", "2147483647"]
        );
        // Ping sockets work there (unprivileged ICMP, as ringnet's echo relay uses them).
        let ping = host.helper("ping_socket.py", &["--target", SINK_V4], SHORT);
        assert!(ping.json()["ok"] == true, "{ping}");
        let ping6 = host.helper("ping_socket.py", &["--target", SINK_V6], SHORT);
        assert!(ping6.json()["ok"] == true, "{ping6}");
        // The blackhole premise of the egress tests: a connect to an unanswered address on
        // the sink times out (ifb is NOARP and drops everything; no "unreachable" comes back).
        for target in ["198.51.100.99", "2001:db8::99"] {
            let out = host.helper(
                "tcp_client.py",
                &[
                    "connect",
                    "--target",
                    target,
                    "--port",
                    "80",
                    "--connect-timeout",
                    "1",
                ],
                SHORT,
            );
            assert_eq!(out.json()["error"].as_str(), Some("timeout"), "{out}");
        }
    }
    assert!(!netns_list().contains(&name), "{name} left behind");
}

#[test]
fn netns_removed_on_panic() {
    require_privileges!();
    let _wd = Watchdog::new(Duration::from_secs(60));
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let host = HostNs::new();
        let guest = Netns::new("guest");
        tx.send((host.name().to_string(), guest.name().to_string()))
            .unwrap();
        panic!("deliberate");
    });
    assert!(r.is_err());
    let (h, g) = rx.recv().unwrap();
    let list = netns_list();
    assert!(
        !list.contains(&h) && !list.contains(&g),
        "left behind: {list:?}"
    );
}

#[test]
fn timeout_kills_process_group() {
    require_privileges!();
    let _wd = Watchdog::new(Duration::from_secs(60));
    let ns = Netns::new("t");
    let t0 = Instant::now();
    let out = ns.exec(
        &["sh", "-c", "sleep 30 & echo $!; sleep 30"],
        Duration::from_millis(500),
    );
    assert!(out.timed_out, "{out}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{out}");
    let bg_pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("pid of the background sleep");
    // The background sleep was in the killed group: gone (or a zombie awaiting reaping).
    assert!(
        wait_pid_gone(bg_pid, Duration::from_secs(5)),
        "pid {bg_pid} still running"
    );
}

/// A kernel stand-in for ringnet: a veth pair whose host end carries the gateway addresses.
/// Servers bind the gateway addresses directly (with ringnet they bind host loopback).
fn veth_standin(host: &HostNs, guest: &Netns, mtu: u32) {
    let s = Slot::new(0);
    let mtu = mtu.to_string();
    host.ip(&[
        "link",
        "add",
        "gw0",
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        guest.name(),
    ]);
    let addrs = |ns: &Netns, dev: &str, v4: Ipv4Addr, v6: Ipv6Addr| {
        ns.ip(&["addr", "add", &format!("{v4}/30"), "dev", dev]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
    };
    addrs(host, "gw0", s.gw_v4, s.gw_v6);
    host.ip(&["link", "set", "gw0", "up"]);
    guest.ip(&["link", "set", "eth0", "mtu", &mtu]);
    addrs(guest, "eth0", s.guest_v4, s.guest_v6);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.ip(&["-4", "route", "add", "default", "via", &s.gw_v4.to_string()]);
    guest.ip(&["-6", "route", "add", "default", "via", &s.gw_v6.to_string()]);
}

#[test]
fn helpers_over_veth_standin() {
    require_privileges!("python3", "ping");
    let _wd = Watchdog::new(Duration::from_secs(240));
    let host = HostNs::new();
    let guest = Netns::new("guest");
    veth_standin(&host, &guest, 1500);
    let s = Slot::new(0);
    let (gw4, gw6) = (s.gw_v4.to_string(), s.gw_v6.to_string());

    guest
        .exec(&["ping", "-c", "1", "-W", "2", &gw4], SHORT)
        .ok();

    // HTTP, both families.
    for gw in [&gw4, &gw6] {
        let (_srv, ready) = host.spawn_helper("http_server.py", &["--bind", gw]);
        let out = guest.helper(
            "http_client.py",
            &["--host", gw, "--port", &port(&ready)],
            SHORT,
        );
        let j = out.json();
        assert!(j["ok"] == true, "{out}");
        assert_eq!(j["sha256"], ready["sha256"], "{out}");
    }

    let (mut tcp, ready) = host.spawn_helper("tcp_server.py", &["--bind", &gw4]);
    let p = port(&ready);
    let client = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--target", gw4.as_str(), "--port", p.as_str()]);
        guest.helper("tcp_client.py", &full, Duration::from_secs(120))
    };
    for args in [
        &["connect"][..],
        &["bulk", "--direction", "up", "--bytes", "67108864"],
        &["bulk", "--direction", "down", "--bytes", "67108864"],
        &["bulk", "--direction", "down", "--bytes", "1000"],
        &["half-close", "--size", "300000"],
        &["echo-many", "--conns", "500", "--size", "65536"],
    ] {
        let out = client(args);
        assert!(out.json()["ok"] == true, "{out}");
    }
    // Without a limit, the connection after ten held ones is accepted: the client says so.
    let out = client(&["max-conns", "--hold", "10"]);
    let j = out.json();
    assert!(j["ok"] != true, "{out}");
    assert_eq!(j["held"].as_u64(), Some(10), "{out}");
    assert_eq!(j["extra"].as_str(), Some("accepted"), "{out}");
    tcp.assert_alive();

    // A closed port is refused at once.
    let out = guest.helper(
        "tcp_client.py",
        &["connect", "--target", &gw4, "--port", "9"],
        SHORT,
    );
    let j = out.json();
    assert_eq!(j["error"].as_str(), Some("refused"), "{out}");
    assert!(j["seconds"].as_f64().unwrap() < 1.0, "{out}");

    // UDP echo, both families, up to the largest unfragmented datagram.
    for (gw, max) in [(&gw4, "1472"), (&gw6, "1452")] {
        let (_srv, ready) = host.spawn_helper("udp_echo_server.py", &["--bind", gw]);
        let out = guest.helper(
            "udp_client.py",
            &[
                "--target",
                gw,
                "--port",
                &port(&ready),
                "--count",
                "1000",
                "--max-size",
                max,
            ],
            Duration::from_secs(120),
        );
        assert!(out.json()["ok"] == true, "{out}");
    }
}

#[test]
fn dnsmasq_server_and_dig() {
    require_privileges!("dnsmasq", "dig");
    let _wd = Watchdog::new(Duration::from_secs(60));
    let host = HostNs::new();
    let dns = Dnsmasq::new(SINK_V4)
        .listen(SINK_V6)
        .port(5300)
        .ttl(7)
        .host("a.test", &["198.51.100.8", "2001:db8::8"])
        .address("rebind.test", "10.1.2.3")
        .cname("alias.test", "a.test")
        .big_txt("big.test")
        .start(&host);
    assert_eq!(dns.server(), "198.51.100.7:5300");
    let t = Duration::from_secs(5);
    for server in [SINK_V4, SINK_V6] {
        let a = dig(&host, server, 5300, &["a.test", "A"], t);
        a.expect_status("NOERROR");
        assert_eq!(a.data("A"), ["198.51.100.8"], "{}", a.out);
        assert_eq!(a.answers[0].ttl, 7, "{}", a.out);
        assert!(a.has_flag("qr") && a.has_flag("aa"), "{}", a.out);
        assert_eq!(a.transport.as_deref(), Some("UDP"), "{}", a.out);
        let aaaa = dig(&host, server, 5300, &["+tcp", "a.test", "AAAA"], t);
        assert_eq!(aaaa.data("AAAA"), ["2001:db8::8"], "{}", aaaa.out);
        assert_eq!(aaaa.transport.as_deref(), Some("TCP"), "{}", aaaa.out);
    }
    let sub = dig(&host, SINK_V4, 5300, &["x.rebind.test"], t);
    assert_eq!(sub.data("A"), ["10.1.2.3"], "{}", sub.out);
    let cname = dig(&host, SINK_V4, 5300, &["alias.test"], t);
    assert_eq!(cname.data("CNAME"), ["a.test."], "{}", cname.out);
    let trunc = dig(&host, SINK_V4, 5300, &["+ignore", "big.test", "TXT"], t);
    assert!(trunc.has_flag("tc"), "{}", trunc.out);
    assert!(trunc.data("TXT").len() < BIG_TXT_RECORDS, "{}", trunc.out);
    let full = dig(&host, SINK_V4, 5300, &["big.test", "TXT"], t);
    assert!(full.retried_tcp, "{}", full.out);
    assert_eq!(full.data("TXT").len(), BIG_TXT_RECORDS, "{}", full.out);
    assert!(full.data("TXT")[0].len() > 200, "{}", full.out);
    let none = dig(
        &host,
        "198.51.100.99",
        53,
        &["a.test"],
        Duration::from_secs(2),
    );
    assert!(!none.answered(), "{}", none.out);
    assert!(dns.asked("a.test") && dns.asked("rebind.test") && dns.asked("big.test"));
    assert!(!dns.asked("never.test"));
    assert!(
        dns.queries().iter().any(|q| q == "x.rebind.test"),
        "{:?}",
        dns.queries()
    );
    let config = dns_config(
        &[&dns.server(), "[2001:db8::7]:5300"],
        &["timeout_ms = 1000"],
        "",
    );
    assert_eq!(
        config,
        "[dns]\nservers = [\"198.51.100.7:5300\", \"[2001:db8::7]:5300\"]\ntimeout_ms = 1000\n"
    );
    drop(dns);
    let gone = dig(&host, SINK_V4, 5300, &["a.test"], Duration::from_secs(2));
    assert!(
        !gone.answered(),
        "dnsmasq still answers after drop: {}",
        gone.out
    );
}
