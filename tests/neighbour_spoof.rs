//! Issue #8 point 3: one spoofed neighbour frame used to cut the guest off for ~40 s.
//!
//! An ARP request or reply, or an NDP NS/NA, claiming the guest's own address for a foreign
//! MAC repointed ringnet's (smoltcp's) neighbour cache entry for the guest: every frame
//! smoltcp sent to the guest (TCP, echo replies from the gateway) went to the foreign MAC
//! and the guest's NIC dropped it until the entry was refreshed (35–49 s seen).
//!
//! `spoofing_does_not_cut_the_guest_off`: while a TCP echo stream per family (guest →
//! gateway → the host namespace's loopback) and a ping of each gateway address run for
//! ~10 s, `tests/helpers/neigh_spoof.py` injects spoofed ARP requests and replies and NDP
//! NS and NA (sender = the guest's address, link-layer address = a foreign MAC; Ethernet
//! source foreign or genuine) on the guest's eth0 for 6 s, every 20 ms. Asserted: both
//! streams finish with no round trip above [`MAX_STALL_S`], at least 90 % of the pings of
//! each family are answered, and `--stats` shows `neigh_spoofed` > 0.

mod common;

use common::*;
use std::thread;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
/// How long the traffic runs; the spoofing starts 1 s in and lasts [`SPOOF_SECONDS`].
const TRAFFIC_SECONDS: u32 = 10;
const SPOOF_SECONDS: &str = "6";
/// The longest echo round trip tolerated: a lost segment or two may cost a retransmission
/// timeout, an outage costs the whole spoofing window.
const MAX_STALL_S: f64 = 3.0;
/// Ping interval (root may go below 1 s).
const PING_INTERVAL_S: f64 = 0.2;

/// `ping` output: (transmitted, received).
fn ping_counts(out: &Output) -> (u64, u64) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {out}"));
    let num = |what: &str| {
        line.split(',')
            .find(|p| p.contains(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no `{what}` count in {line:?}"))
    };
    (num("transmitted"), num("received"))
}

#[test]
fn spoofing_does_not_cut_the_guest_off() {
    require_privileges!("ping", "python3");
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let guest = Netns::new("guest");
    let (_srv4, r4) = host.spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let (_srv6, r6) = host.spawn_helper("tcp_server.py", &["--bind", "::1"]);
    let (port4, port6) = (port(&r4), port(&r6));
    let mut rn = Ringnet::attach(&host, &guest, &["--stats"]);
    let s = rn.slot;
    let (gw4, gw6) = (s.gw_v4.to_string(), s.gw_v6.to_string());
    let (guest4, guest6) = (s.guest_v4.to_string(), s.guest_v6.to_string());

    // Both sides know each other before the spoofing starts.
    for gw in [&gw4, &gw6] {
        guest.exec(&["ping", "-c", "1", "-W", "2", gw], SHORT).ok();
    }

    let secs = TRAFFIC_SECONDS.to_string();
    let count = ((f64::from(TRAFFIC_SECONDS) / PING_INTERVAL_S) as u32).to_string();
    let interval = PING_INTERVAL_S.to_string();
    let io_timeout = "8";
    let traffic_limit = Duration::from_secs(u64::from(TRAFFIC_SECONDS) + 30);
    let steady = |gw: &str, port: &str| {
        let args = [
            "steady",
            "--target",
            gw,
            "--port",
            port,
            "--seconds",
            &secs,
            "--size",
            "16384",
            "--io-timeout",
            io_timeout,
            "--timeout",
            "60",
        ];
        guest.helper("tcp_client.py", &args, traffic_limit)
    };
    let ping = |gw: &str| {
        let args = ["ping", "-i", &interval, "-c", &count, "-W", "1", gw];
        guest.exec(&args, traffic_limit)
    };
    let (steady, ping) = (&steady, &ping);
    let (tcp, pings, spoof) = thread::scope(|sc| {
        let (gw4, gw6, port4, port6) = (&gw4, &gw6, &port4, &port6);
        let t4 = sc.spawn(move || steady(gw4, port4));
        let t6 = sc.spawn(move || steady(gw6, port6));
        let p4 = sc.spawn(move || ping(gw4));
        let p6 = sc.spawn(move || ping(gw6));
        thread::sleep(Duration::from_secs(1));
        let spoof = guest.helper(
            "neigh_spoof.py",
            &[
                "--iface",
                "eth0",
                "--guest-mac",
                GUEST_MAC,
                "--gateway-mac",
                GATEWAY_MAC,
                "--guest4",
                &guest4,
                "--gateway4",
                gw4,
                "--guest6",
                &guest6,
                "--gateway6",
                gw6,
                "--seconds",
                SPOOF_SECONDS,
                "--interval",
                "0.02",
            ],
            Duration::from_secs(30),
        );
        let join = |h: thread::ScopedJoinHandle<'_, Output>| h.join().expect("traffic thread");
        ([join(t4), join(t6)], [join(p4), join(p6)], spoof)
    });
    rn.assert_alive();
    rn.stop();
    let stats = rn.stderr();

    let spoofed = stats_counter(&stats, "neigh_spoofed").unwrap_or(0);
    let tcp_json: Vec<Json> = tcp.iter().map(Output::json).collect();
    let ping_n: Vec<(u64, u64)> = pings.iter().map(ping_counts).collect();
    let stall = |j: &Json| j["max_stall_s"].as_f64().unwrap_or(f64::NAN);
    let summary = format!(
        "tcp v4: ok {:?} rounds {:?} max stall {:.3} s; tcp v6: ok {:?} rounds {:?} max stall \
         {:.3} s; ping v4 {}/{} answered; ping v6 {}/{} answered (lost ≈ {:.1} s / {:.1} s); \
         neigh_spoofed {spoofed}; spoofer sent {}",
        tcp_json[0]["ok"].as_bool(),
        tcp_json[0]["rounds"].as_f64(),
        stall(&tcp_json[0]),
        tcp_json[1]["ok"].as_bool(),
        tcp_json[1]["rounds"].as_f64(),
        stall(&tcp_json[1]),
        ping_n[0].1,
        ping_n[0].0,
        ping_n[1].1,
        ping_n[1].0,
        (ping_n[0].0 - ping_n[0].1) as f64 * PING_INTERVAL_S,
        (ping_n[1].0 - ping_n[1].1) as f64 * PING_INTERVAL_S,
        spoof.stdout.trim(),
    );
    // Shown with --nocapture, and in every failure below.
    eprintln!("neighbour_spoof: {summary}");

    spoof.ok();
    let sent = spoof.json();
    for kind in ["arp-request", "arp-reply", "ndp-ns", "ndp-na"] {
        let n = sent["sent"][kind].as_f64().unwrap_or(0.0);
        assert!(n > 0.0, "spoofer sent no {kind}: {spoof}");
    }
    for (out, j) in tcp.iter().zip(&tcp_json) {
        assert_eq!(
            j["ok"].as_bool(),
            Some(true),
            "TCP stream broken by spoofed neighbour frames: {summary}\n{out}"
        );
        assert!(
            stall(j) < MAX_STALL_S,
            "TCP stream stalled {:.3} s: {summary}",
            stall(j)
        );
    }
    for (out, (sent, got)) in pings.iter().zip(&ping_n) {
        assert!(*sent > 0, "{out}");
        assert!(
            *got * 10 >= *sent * 9,
            "only {got} of {sent} pings answered: {summary}\n{out}"
        );
    }
    assert!(
        spoofed > 0,
        "no neigh_spoofed counter: {summary}\n--- stats ---\n{stats}"
    );
}
