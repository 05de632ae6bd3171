//! Issue "egress": guest TCP/UDP/ICMP-echo flows relayed to real sockets in ringnet's (host)
//! namespace. Every case runs once per egress driver (`--egress uring`, `--egress epoll`);
//! `per_driver_mtu!` cases also at MTU 1500 and 65520. Servers are the python helpers in
//! `tests/helpers/`, started in the isolated host namespace; clients run in the guest.
//!
//! Cases:
//! - `http_get_via_gateway`: GET from 172.16.0.1 → 127.0.0.1 and [fd42:6d73:62::1] → [::1].
//! - `tcp_to_sink_addresses`: echo with servers bound to 198.51.100.7 and [2001:db8::7].
//! - `closed_port_refused`: a closed port on the gateway addresses is refused within 1 s.
//! - `blackhole_connect_times_out`: 198.51.100.99 / 2001:db8::99 (dropped by the ifb sink)
//!   fail after `connect_timeout_ms = 2000`, not before 1.5 s and not at the client's own
//!   timeout.
//! - `bulk_up` / `bulk_down`: 1 GiB (env `RINGNET_TEST_BULK_BYTES` overrides) one way, sha256
//!   equal at both ends.
//! - `concurrent_500`: 500 connections at once, each echoing its own 64 KiB.
//! - `half_close`: the guest shuts down its write side and still receives the full reply.
//! - `udp_echo`: 1000 datagrams of 1..=MTU-28 (IPv4) / MTU-48 (IPv6) bytes, every reply
//!   intact and from the gateway address.
//! - `ping_sink_address`: echo to 198.51.100.7 / 2001:db8::7 answered (host ping socket).
//! - `max_connections`: with `max_connections = 10`, ten held connections work and the
//!   eleventh is refused.

mod common;

use common::*;
use std::time::Duration;

/// `name::uring`, `name::epoll` (MTU 1500).
macro_rules! per_driver {
    ($($name:ident),* $(,)?) => {$(
        test_cases!($name: uring("uring", 1500), epoll("epoll", 1500));
    )*};
}

/// `name::{uring,epoll}_mtu{1500,65520}`.
macro_rules! per_driver_mtu {
    ($($name:ident),* $(,)?) => {$(
        test_cases!(
            $name: uring_mtu1500("uring", 1500),
            uring_mtu65520("uring", 65520),
            epoll_mtu1500("epoll", 1500),
            epoll_mtu65520("epoll", 65520),
        );
    )*};
}

per_driver!(
    http_get_via_gateway,
    tcp_to_sink_addresses,
    closed_port_refused,
    blackhole_connect_times_out,
    concurrent_500,
    half_close,
    ping_sink_address,
    max_connections,
);
per_driver_mtu!(bulk_up, bulk_down, udp_echo);
per_driver!(bulk_v6);

const CASE_LIMIT: Duration = Duration::from_secs(180);
const BULK_LIMIT: Duration = Duration::from_secs(900);
const CLIENT: Duration = Duration::from_secs(60);

/// Config for the blackhole case. The key layout is this suite's assumption of the config
/// format (table `[egress]`); adjust here if `config.rs` settles on other names.
const CONFIG_CONNECT_TIMEOUT: &str = "[egress]\nconnect_timeout_ms = 2000\n";
/// Config for the connection-limit case (same assumption).
const CONFIG_MAX_CONNECTIONS: &str = "max_connections = 10\n";

fn start(driver: &'static str, mtu: u32) -> Testbed {
    Testbed::start(Opts::mtu(mtu).egress(driver))
}

/// Run `tcp_client.py <cmd> --target T --port P <extra…>` in the guest.
fn tcp_client(tb: &Testbed, cmd: &str, target: &str, port: &str, extra: &[&str]) -> Output {
    tcp_client_limit(tb, cmd, target, port, extra, CLIENT)
}

fn tcp_client_limit(
    tb: &Testbed,
    cmd: &str,
    target: &str,
    port: &str,
    extra: &[&str],
    limit: Duration,
) -> Output {
    let helper_limit = limit.as_secs().to_string();
    let mut args = vec![
        cmd,
        "--target",
        target,
        "--port",
        port,
        "--timeout",
        &helper_limit,
    ];
    args.extend_from_slice(extra);
    // The helper stops itself at `limit`; the harness's deadline is a backstop.
    tb.guest
        .helper("tcp_client.py", &args, limit + Duration::from_secs(15))
}

fn assert_ok(out: &Output) -> Json {
    let j = out.json();
    assert!(j["ok"] == true, "{out}");
    j
}

/// For IPv4, then IPv6: the host loopback address a server binds and the gateway address
/// the guest reaches it by.
fn loopback_via_gateway(tb: &Testbed) -> [(&'static str, String); 2] {
    let s = tb.slot();
    [
        ("127.0.0.1", s.gw_v4.to_string()),
        ("::1", s.gw_v6.to_string()),
    ]
}

fn http_get_via_gateway(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    for (bind, gw) in loopback_via_gateway(&tb) {
        let (_srv, ready) = tb.host.spawn_helper("http_server.py", &["--bind", bind]);
        let out = tb.guest.helper(
            "http_client.py",
            &["--host", &gw, "--port", &port(&ready)],
            CLIENT,
        );
        let j = assert_ok(&out);
        assert_eq!(j["sha256"], ready["sha256"], "{out}");
    }
    tb.ringnet.assert_alive();
}

fn tcp_to_sink_addresses(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    for addr in [SINK_V4, SINK_V6] {
        let (_srv, ready) = tb.host.spawn_helper("tcp_server.py", &["--bind", addr]);
        assert_ok(&tcp_client(&tb, "connect", addr, &port(&ready), &[]));
    }
    tb.ringnet.assert_alive();
}

fn closed_port_refused(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    let s = tb.slot();
    // Nothing listens on port 9 in the fresh host namespace.
    for gw in [s.gw_v4.to_string(), s.gw_v6.to_string()] {
        let out = tcp_client(&tb, "connect", &gw, "9", &["--connect-timeout", "5"]);
        let j = out.json();
        assert_eq!(j["error"].as_str(), Some("refused"), "{out}");
        let secs = j["seconds"].as_f64().unwrap_or(f64::MAX);
        assert!(secs < 1.0, "refused only after {secs} s: {out}");
    }
    tb.ringnet.assert_alive();
}

fn blackhole_connect_times_out(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu).egress(driver).config(CONFIG_CONNECT_TIMEOUT));
    // On the sink's subnets, nothing answers: the ifb device drops the SYNs.
    for target in ["198.51.100.99", "2001:db8::99"] {
        let out = tcp_client(&tb, "connect", target, "80", &["--connect-timeout", "15"]);
        let j = out.json();
        assert!(j["ok"] != true, "{out}");
        assert_ne!(
            j["error"].as_str(),
            Some("timeout"),
            "ringnet never gave up: {out}"
        );
        let secs = j["seconds"].as_f64().unwrap_or(f64::MAX);
        assert!(
            (1.5..8.0).contains(&secs),
            "failed after {secs} s, want about 2 s: {out}"
        );
    }
    tb.ringnet.assert_alive();
}

fn bulk_bytes() -> String {
    std::env::var("RINGNET_TEST_BULK_BYTES").unwrap_or_else(|_| (1u64 << 30).to_string())
}

fn bulk(driver: &'static str, mtu: u32, direction: &str) {
    bulk_via(driver, mtu, direction, false, &bulk_bytes());
}

/// 256 MiB each way over IPv6 at MTU 1500: TCPv6 super-segments to the guest.
fn bulk_v6(driver: &'static str, mtu: u32) {
    for direction in ["up", "down"] {
        bulk_via(driver, mtu, direction, true, &(256u64 << 20).to_string());
    }
}

fn bulk_via(driver: &'static str, mtu: u32, direction: &str, v6: bool, bytes: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(BULK_LIMIT);
    let mut tb = start(driver, mtu);
    let [v4_pair, v6_pair] = loopback_via_gateway(&tb);
    let (bind, gw) = if v6 { v6_pair } else { v4_pair };
    let (mut srv, ready) = tb.host.spawn_helper("tcp_server.py", &["--bind", bind]);
    let bytes = bytes.to_string();
    let out = tcp_client_limit(
        &tb,
        "bulk",
        &gw,
        &port(&ready),
        &[
            "--direction",
            direction,
            "--bytes",
            &bytes,
            "--io-timeout",
            "60",
        ],
        BULK_LIMIT - Duration::from_secs(60),
    );
    let j = assert_ok(&out);
    assert_eq!(j["sha256_local"], j["sha256_remote"], "{out}");
    eprintln!(
        "{driver} mtu {mtu} {direction}: {bytes} bytes in {:.1} s ({:.2} Gbit/s)",
        j["seconds"].as_f64().unwrap_or(0.0),
        j["gbit_s"].as_f64().unwrap_or(0.0)
    );
    srv.assert_alive();
    tb.ringnet.assert_alive();
}

fn bulk_up(driver: &'static str, mtu: u32) {
    bulk(driver, mtu, "up")
}

fn bulk_down(driver: &'static str, mtu: u32) {
    bulk(driver, mtu, "down")
}

fn concurrent_500(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    let gw = tb.slot().gw_v4.to_string();
    let (_srv, ready) = tb
        .host
        .spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let out = tcp_client_limit(
        &tb,
        "echo-many",
        &gw,
        &port(&ready),
        &[
            "--conns",
            "500",
            "--size",
            "65536",
            "--connect-timeout",
            "30",
        ],
        Duration::from_secs(120),
    );
    assert_ok(&out);
    tb.ringnet.assert_alive();
}

fn half_close(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    for (bind, gw) in loopback_via_gateway(&tb) {
        let (_srv, ready) = tb.host.spawn_helper("tcp_server.py", &["--bind", bind]);
        assert_ok(&tcp_client(
            &tb,
            "half-close",
            &gw,
            &port(&ready),
            &["--size", "1048576"],
        ));
    }
    tb.ringnet.assert_alive();
}

fn udp_echo(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    // IPv4 + UDP headers: 28 bytes; IPv6 + UDP: 48.
    for ((bind, gw), overhead) in loopback_via_gateway(&tb).into_iter().zip([28, 48]) {
        let (_srv, ready) = tb
            .host
            .spawn_helper("udp_echo_server.py", &["--bind", bind]);
        let max = (mtu - overhead).to_string();
        let out = tb.guest.helper(
            "udp_client.py",
            &[
                "--target",
                &gw,
                "--port",
                &port(&ready),
                "--count",
                "1000",
                "--max-size",
                &max,
                "--timeout",
                "100",
            ],
            Duration::from_secs(115),
        );
        assert_ok(&out);
    }
    tb.ringnet.assert_alive();
}

fn ping_sink_address(driver: &'static str, mtu: u32) {
    require_privileges!("ping");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = start(driver, mtu);
    for args in [
        &["ping", "-c", "3", "-W", "2", SINK_V4][..],
        &["ping", "-6", "-c", "3", "-W", "2", SINK_V6],
    ] {
        let out = tb.guest.exec(args, SHORT);
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("3 received"), "{out}");
    }
    tb.ringnet.assert_alive();
}

fn max_connections(driver: &'static str, mtu: u32) {
    require_privileges!("python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut tb = Testbed::start(Opts::mtu(mtu).egress(driver).config(CONFIG_MAX_CONNECTIONS));
    let gw = tb.slot().gw_v4.to_string();
    let (_srv, ready) = tb
        .host
        .spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let out = tcp_client(
        &tb,
        "max-conns",
        &gw,
        &port(&ready),
        &["--hold", "10", "--connect-timeout", "5"],
    );
    assert_ok(&out);
    tb.ringnet.assert_alive();
}
