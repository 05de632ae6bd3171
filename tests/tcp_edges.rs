//! TCP edge behaviour through ringnet, per egress driver: a host RST reaches the guest as
//! RST, a guest RST reaches the host as RST, and a SYN retransmitted while the host connect
//! is pending opens no second host socket.

#[macro_use]
mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

const CLIENT: &str = r#"
import socket, struct, sys, time
port = int(sys.argv[1])
# 1: the host resets: the guest must see ECONNRESET, not EOF.
s = socket.create_connection(("172.16.0.1", port), timeout=5)
s.sendall(b"reset\n")
try:
    got = s.recv(10)
    print("host-reset:", "eof" if got == b"" else "data")
except ConnectionResetError:
    print("host-reset: reset")
s.close()
# 2: the guest resets: SO_LINGER 0 close.
s = socket.create_connection(("172.16.0.1", port), timeout=5)
s.sendall(b"wait\n")
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
time.sleep(0.5)
# 3: a blackholed destination: the guest's SYN is retransmitted (after ~1 s) while the
# 2.5 s host connect is pending; the connect fails once, with RST.
t = time.time()
try:
    socket.create_connection(("198.51.100.99", 9), timeout=8)
    print("blackhole: connected?!")
except ConnectionRefusedError:
    print("blackhole: refused after %.1f s" % (time.time() - t))
except OSError as e:
    print("blackhole: %s" % e)
"#;

fn edges(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    let (srv, ready) = host.spawn_helper("reset_server.py", &["--lifetime", "30"]);
    let port = ready.get("port").as_f64().expect("port") as u64;
    let cfg = TempFile::with_contents("edges", "[egress]\nconnect_timeout_ms = 2500\n");
    let port_s = port.to_string();
    let out = host.ringnet(
        &[
            "run",
            "--stats",
            "--egress",
            driver,
            "--config",
            cfg.path_str(),
            "--",
            "python3",
            "-c",
            CLIENT,
            &port_s,
        ],
        LIMIT,
    );
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("host-reset: reset"), "{out}");
    let refused = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("blackhole: refused after "))
        .and_then(|s| s.trim_end_matches(" s").parse::<f64>().ok());
    assert!(
        refused.is_some_and(|t| (2.0..6.0).contains(&t)),
        "blackholed connect should be refused at the 2.5 s connect timeout: {out}"
    );
    // Three guest connections, three host sockets: the retransmitted SYN opened none.
    assert!(out.stderr.contains("tcp_opened 3\n"), "{out}");
    assert!(out.stderr.contains("tcp_connect_failed 1\n"), "{out}");
    // The server saw the guest's reset as a reset.
    let mut how = None;
    while let Some(line) = srv.next_line(Duration::from_secs(3)) {
        if line.contains("peer_gone") {
            how = Some(line);
            break;
        }
    }
    let how = how.expect("server reported the second connection's end");
    assert!(
        how.contains("\"reset\""),
        "guest RST reached the host as {how}"
    );
}

#[test]
fn tcp_edges_uring() {
    edges("uring");
}

#[test]
fn tcp_edges_epoll() {
    edges("epoll");
}
