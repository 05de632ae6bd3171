//! TCP edge behaviour through ringnet, per egress driver: a host RST reaches the guest as
//! RST, a guest RST reaches the host as RST, a SYN retransmitted while the host connect
//! is pending opens no second host socket, and flows that reuse a finished flow's socket
//! (and its dirty buffers) carry their own bytes only.

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
    let out = host.run_python(
        driver,
        Some("[egress]\nconnect_timeout_ms = 2500\n"),
        CLIENT,
        &[&port(&ready)],
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

/// Sequential connections, each echoing its own random bytes (sizes around and above the
/// 256 KiB socket buffers, so reused buffers hold an earlier flow's data), closed by the
/// guest first or by the host first (its reply ends with EOF before the guest closes).
const REUSE_CLIENT: &str = r#"
import hashlib, os, socket, sys
port = int(sys.argv[1])
bad = 0
for i in range(40):
    size = [1, 1000, 70000, 300000][i % 4] + i
    data = os.urandom(size)
    s = socket.create_connection(("172.16.0.1", port), timeout=10)
    s.sendall(b'{"op": "echo"}\n' + data)
    if i % 2:
        s.shutdown(socket.SHUT_WR)  # the server closes after echoing
    got = b""
    while len(got) < size:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    if got != data:
        bad += 1
        print("flow %d: %d of %d bytes, equal prefix %s" % (i, len(got), size, got == data[:len(got)]))
    s.close()
print("reuse: %d bad of 40" % bad)
"#;

fn reuse(driver: &str) {
    require_privileges!("python3");
    let _wd = Watchdog::new(LIMIT * 2);
    let host = HostNs::new();
    let (_srv, ready) = host.spawn_helper("tcp_server.py", &["--bind", "127.0.0.1"]);
    let out = host.run_python(driver, None, REUSE_CLIENT, &[&port(&ready)], LIMIT);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("reuse: 0 bad of 40"), "{out}");
    assert!(out.stderr.contains("tcp_opened 40\n"), "{out}");
    let reused = stats_counter(&out.stderr, "tcp_sockets_reused")
        .expect("tcp_sockets_reused counter printed");
    // Every flow after the first can find a finished one's socket (a flow is reaped when
    // both sides have closed, which the client's next connect usually follows).
    assert!(
        reused >= 20,
        "only {reused} of 40 flows reused a socket: {out}"
    );
}

#[test]
fn socket_reuse_uring() {
    reuse("uring");
}

#[test]
fn socket_reuse_epoll() {
    reuse("epoll");
}
