//! `Network::publish` / `Network::unpublish` on a running network, end to end: a real TAP in
//! a guest namespace served in-process, a private host namespace (loopback only) where the
//! published port listens, the guest's probe server (tests/helpers/probe_server.py) on
//! 172.16.0.2:8000 and host clients (tests/helpers/ports_client.py) on 127.0.0.1:8080.
//!
//! Before `publish` nothing listens on 8080 (connect refused); after it a client reaches the
//! guest; publishing it again, or a port another process holds, is an error naming the
//! port; after `unpublish` new clients are refused while a connection opened before carries
//! on (another echo round trip after the unpublish works) until it ends.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use common::*;
use ringnet::backend::netns::NetNs;
use ringnet::backend::tap::Tap;
use ringnet::config::{HostRoutes, NetworkConfig, PortSpec};
use ringnet::Network;

/// Host client held across the unpublish: connect to 127.0.0.1:PORT, one echo round trip,
/// print "connected", wait 2 s, a second round trip, print how it went.
const HELD: &str = r#"
import json, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.settimeout(5)
def rt(msg):
    s.sendall(msg)
    back = b""
    while len(back) < len(msg):
        d = s.recv(len(msg) - len(back))
        if not d:
            break
        back += d
    return back == msg
print(json.dumps({"connected": rt(b"first\n")}), flush=True)
time.sleep(2)
try:
    ok = rt(b"second\n")
    print(json.dumps({"second": ok}), flush=True)
except OSError as e:
    print(json.dumps({"second": str(e)}), flush=True)
"#;

fn client(args: &[&str]) -> Output {
    let path = helper("ports_client.py");
    let mut cmd = Command::new("python3");
    cmd.args(["-B", "-u", &path]).args(args);
    run(&mut cmd, Duration::from_secs(30))
}

fn connect(port: &str) -> Json {
    client(&["connect", "--target", "127.0.0.1", "--port", port]).json()
}

fn json_line(bg: &Bg, what: &str) -> Json {
    let line = bg
        .next_line(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no {what} line from the held client: {}", bg.stderr()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {line:?}: {e}"))
}

fn spec(host_port: u16, guest_port: u16) -> PortSpec {
    PortSpec {
        host_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port,
        guest_port: Some(guest_port),
        ..PortSpec::tcp(host_port)
    }
}

#[test]
fn publish_and_unpublish_at_run_time() {
    require_privileges!("ip", "python3");
    let _wd = Watchdog::new(Duration::from_secs(90));
    in_private_netns(true, || {
        let guest = Netns::new("guest");
        let routes = HostRoutes {
            ipv4: true,
            ipv6: false,
        };
        let mut net = Network::with_routes(&NetworkConfig::default(), 0, routes).unwrap();
        let ns = NetNs::open(std::path::Path::new(&guest.path())).unwrap();
        let tap = ns.run(|| Tap::open("eth0")).unwrap().unwrap();
        ns.configure_guest("eth0", net.config()).unwrap();
        net.start_port(Box::new(tap)).unwrap();
        let (mut probe, _) = guest.spawn_helper(
            "probe_server.py",
            &["--bind", "172.16.0.2", "--port", "8000", "--idle", "60"],
        );

        // Not published yet: nothing listens.
        let r = connect("8080");
        assert_eq!(r["error"], "refused", "before publish: {r}");

        net.publish(spec(8080, 8000)).expect("publish 8080 -> 8000");
        let r = connect("8080");
        assert_eq!(r["ok"], true, "after publish: {r}");

        // Published twice: an error, and the first one keeps working.
        let e = net
            .publish(spec(8080, 8001))
            .expect_err("8080 published twice");
        assert!(e.to_string().contains("8080"), "{e}");
        // A port another process holds: an error naming it.
        let (_holder, _) = {
            let path = helper("tcp_server.py");
            let mut bg = Bg::spawn(Command::new("python3").args([
                "-B",
                "-u",
                &path,
                "--bind",
                "127.0.0.1",
                "--port",
                "8090",
            ]));
            let ready = bg.ready(Duration::from_secs(15));
            (bg, ready)
        };
        let e = net
            .publish(spec(8090, 8000))
            .expect_err("8090 is held by another process");
        let msg = e.to_string();
        assert!(
            msg.contains("127.0.0.1:8090") && msg.contains("in use"),
            "want the port and the reason: {msg}"
        );
        assert_eq!(
            connect("8080")["ok"],
            true,
            "8080 after the failed publishes"
        );

        // A connection held across the unpublish.
        let held = Bg::spawn(Command::new("python3").args(["-u", "-c", HELD, "8080"]));
        assert_eq!(json_line(&held, "connected")["connected"], true);
        net.unpublish(&spec(8080, 8000)).expect("unpublish 8080");
        let r = connect("8080");
        assert_eq!(r["error"], "refused", "after unpublish: {r}");
        let second = json_line(&held, "second");
        assert_eq!(
            second["second"], true,
            "the connection opened before the unpublish should carry on: {second}"
        );
        assert!(
            net.unpublish(&spec(8080, 8000)).is_err(),
            "unpublishing a port that is not published is an error"
        );

        // The guest saw the three connections that got through (after publish, after the
        // failed publishes, the held one) and no other.
        let mut accepts = 0;
        while let Some(l) = probe.next_line(Duration::from_millis(500)) {
            let v: Json = serde_json::from_str(&l).unwrap_or_default();
            if v["event"] == "accept" {
                accepts += 1;
            }
        }
        assert_eq!(accepts, 3, "connections the guest accepted");
        probe.assert_alive();
        net.shutdown().unwrap();
    })
    .expect("a private network namespace");
}
