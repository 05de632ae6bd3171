//! `Network::set_policy` on a running network, end to end: a real TAP in a guest namespace
//! served in-process, a host namespace of its own (a private one: loopback only), a guest
//! connection held open to a host server through the gateway. Swapping in a policy that
//! denies the gateway resets that connection at once (the guest sees RST, the server
//! sees it end), and new connects are refused; a policy that allows it again admits them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ringnet::config::NetworkConfig;
use ringnet::policy::{Preset, Rule};

/// Guest client: connect to the gateway's PORT, say "connected", then block reading until
/// the connection ends and say how ("reset" or "eof").
const HOLD: &str = r#"
import json, socket, sys
s = socket.create_connection(("172.16.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"x")
print(json.dumps({"connected": True}), flush=True)
s.settimeout(20)
try:
    d = s.recv(1)
    print(json.dumps({"end": "eof" if not d else "data"}), flush=True)
except ConnectionResetError:
    print(json.dumps({"end": "reset"}), flush=True)
except OSError as e:
    print(json.dumps({"end": str(e)}), flush=True)
"#;

/// Guest client: one connect to the gateway's PORT; prints how it went.
const ONCE: &str = r#"
import json, socket, sys, time
t = time.monotonic()
try:
    socket.create_connection(("172.16.0.1", int(sys.argv[1])), timeout=5).close()
    r = "ok"
except ConnectionRefusedError:
    r = "refused"
except OSError as e:
    r = str(e)
print(json.dumps({"result": r, "seconds": time.monotonic() - t}), flush=True)
"#;

fn json_line(bg: &Bg, what: &str) -> Json {
    let line = bg
        .next_line(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no {what} line from the guest client: {}", bg.stderr()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {line:?}: {e}"))
}

fn connect_once(guest: &Netns, port: &str) -> Json {
    let out = guest.exec(&["python3", "-c", ONCE, port], Duration::from_secs(15));
    out.json()
}

#[test]
fn a_swapped_policy_resets_a_now_denied_flow() {
    require_privileges!("ip", "python3");
    let _wd = Watchdog::new(Duration::from_secs(90));
    in_private_netns(true, || {
        let mut server = Bg::spawn(Command::new("python3").args([
            "-B",
            "-u",
            &helper("hold_server.py"),
            "--lifetime",
            "60",
        ]));
        let port = common::port(&server.ready(Duration::from_secs(15)));
        let InProcess { mut net, guest } = InProcess::start(&NetworkConfig::default());

        let client = guest.spawn(&["python3", "-u", "-c", HOLD, &port]);
        assert_eq!(json_line(&client, "connected")["connected"], true);

        let mut deny = Preset::AllowAll.policy();
        deny.rules
            .push(Rule::parse_with_action("deny tcp group:host").unwrap());
        let t = Instant::now();
        net.set_policy(deny);
        let end = json_line(&client, "end");
        let took = t.elapsed();
        assert_eq!(end["end"], "reset", "the held connection ends with RST");
        assert!(took < Duration::from_secs(2), "reset after {took:?}");
        let stats = net.stats();
        let revoked = stats
            .policy_revoked
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(revoked, 1);

        // New connects are refused at once, without reaching the server.
        let r = connect_once(&guest, &port);
        assert_eq!(r["result"], "refused", "{r}");
        assert!(r["seconds"].as_f64().unwrap() < 0.5, "{r}");
        let denied = stats
            .policy_denied_tcp
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(denied >= 1);

        // The server saw the first connection end and no other.
        let mut accepted = 0;
        while let Some(l) = server.next_line(Duration::from_millis(500)) {
            let v: Json = serde_json::from_str(&l).unwrap();
            accepted = v["accepted"].as_u64().unwrap_or(accepted);
        }
        assert_eq!(accepted, 1, "the server accepted only the first connection");

        // Back to allow-all: connects work again.
        net.set_policy(Preset::AllowAll.policy());
        std::thread::sleep(Duration::from_millis(50));
        let r = connect_once(&guest, &port);
        assert_eq!(r["result"], "ok", "{r}");
        net.shutdown().unwrap();
        server.signal(libc::SIGTERM);
    })
    .expect("a private network namespace");
}
