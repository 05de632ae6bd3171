//! `Network::publish` / `unpublish` on a running network, end to end: a real TAP in a
//! guest namespace served in-process, a private host namespace (loopback only). A port
//! published at run time reaches an echo server in the guest; unpublishing it refuses new
//! clients while an open connection carries on; a port that cannot be bound is an error
//! naming it, and the network keeps running.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use ringnet::config::{NetworkConfig, PortSpec};

/// Guest echo server on 0.0.0.0:PORT (threads, any number of clients).
const ECHO: &str = r#"
import json, socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print(json.dumps({"ready": True}), flush=True)
def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn echo_once(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// A free loopback port of this namespace.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ports_published_and_unpublished_at_run_time() {
    require_privileges!("ip", "python3");
    let _wd = Watchdog::new(Duration::from_secs(90));
    in_private_netns(true, || {
        let InProcess { mut net, guest } = InProcess::start(&NetworkConfig::default());
        let mut server = guest.spawn(&["python3", "-u", "-c", ECHO, "7000"]);
        server.ready(Duration::from_secs(10));

        let host_port = free_port();
        let mut spec = PortSpec::tcp(host_port);
        spec.guest_port = Some(7000);
        assert!(
            connect(host_port).is_err(),
            "nothing listens before publish"
        );
        net.publish(spec.clone()).unwrap();
        let mut held = connect(host_port).expect("connect to the published port");
        echo_once(&mut held, b"hello through a port published at run time");

        // Published twice: an error naming it, the port keeps working.
        let e = net.publish(spec.clone()).unwrap_err().to_string();
        assert!(
            e.contains("published already") && e.contains(&host_port.to_string()),
            "{e}"
        );

        // A port someone else holds: the bind error, naming the port.
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let e = net.publish(PortSpec::tcp(busy)).unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{busy}")) && e.contains("in use"),
            "{e}"
        );
        assert!(net.is_running());

        // Unpublish: new clients are refused, the held connection carries on.
        net.unpublish(&spec).unwrap();
        let refused = connect(host_port).map(|_| ()).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        echo_once(&mut held, b"still here after unpublish");
        let e = net.unpublish(&spec).unwrap_err().to_string();
        assert!(e.contains("not published"), "{e}");

        // Published again (the port was released): works.
        net.publish(spec.clone()).unwrap();
        echo_once(&mut connect(host_port).unwrap(), b"again");
        let accepted = net
            .stats()
            .inbound_accepted
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(accepted, 2);
        drop(held);
        net.shutdown().unwrap();
        server.signal(libc::SIGTERM);
    })
    .expect("a private network namespace");
}
