//! Conformance suite for the egress drivers: every case runs against io_uring and epoll.
//!
//! Cases: connect ok (v4, v6); connect refused; connect timeout (listener with a full
//! accept queue); 8 MiB echo with content check; rx backpressure (reader stops: the host
//! socket stops being read, driver memory stays within `rx_buffer`); tx backpressure;
//! half-close; peer reset; UDP echo (v4, v6); watched eventfd (level-triggered); stale
//! SockId; 200 concurrent sockets; ping sockets (v4, v6) and the EACCES path inside a
//! private network namespace (root only; skipped with a message otherwise, failing when
//! `CI=true`).
//!
//! Only loopback addresses are used; nothing leaves the machine.

#[macro_use]
mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringnet::egress::{
    Driver, EgressError, EpollDriver, Event, Limits, Recv, SockId, SockKind, Token, UringDriver,
};

const T: Duration = Duration::from_secs(5);

fn limits() -> Limits {
    Limits {
        tx_buffer: 64 * 1024,
        rx_buffer: 64 * 1024,
        ..Limits::default()
    }
}

fn v4() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn v6() -> SocketAddr {
    (Ipv6Addr::LOCALHOST, 0).into()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Wait until an event matches `pred`; returns it. Panics after `T`.
fn wait_event<D: Driver>(d: &mut D, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let end = Instant::now() + T;
    let mut evs = Vec::new();
    loop {
        evs.clear();
        d.wait(Some(Duration::from_millis(100)), &mut evs).unwrap();
        if let Some(i) = evs.iter().position(&mut pred) {
            return evs.swap_remove(i);
        }
        assert!(Instant::now() < end, "timed out waiting for an event");
    }
}

fn connect<D: Driver>(d: &mut D, addr: SocketAddr, tok: u64) -> SockId {
    let id = d.open(SockKind::Tcp, addr, T, Token(tok)).unwrap();
    match wait_event(
        d,
        |e| matches!(e, Event::Connected { token, .. } if *token == Token(tok)),
    ) {
        Event::Connected { result, .. } => result.unwrap(),
        _ => unreachable!(),
    }
    id
}

/// Read everything up to EOF (or an error), checking against `expect`, calling `wait` when
/// nothing is buffered. `pump` runs before each wait (e.g. to send more).
fn read_all<D: Driver>(
    d: &mut D,
    id: SockId,
    expect: &[u8],
    mut pump: impl FnMut(&mut D),
) -> Result<usize, io::Error> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    let mut evs = Vec::new();
    loop {
        pump(d);
        loop {
            let mut off = got;
            match d.recv(id, &mut |b| {
                assert!(off + b.len() <= expect.len(), "more data than expected");
                assert_eq!(b, &expect[off..off + b.len()], "content mismatch at {off}");
                off += b.len();
                b.len()
            }) {
                Ok(n) => got += n,
                Err(Recv::Empty) => break,
                Err(Recv::Eof) => return Ok(got),
                Err(Recv::Error(e)) => return Err(e),
            }
        }
        evs.clear();
        d.wait(Some(Duration::from_millis(200)), &mut evs).unwrap();
        assert!(Instant::now() < end, "read_all timed out at {got} bytes");
    }
}

fn connect_ok<D: Driver>(mut d: D) {
    for addr in [v4(), v6()] {
        let l = TcpListener::bind(addr).unwrap();
        let id = connect(&mut d, l.local_addr().unwrap(), 1);
        let (mut s, _) = l.accept().unwrap();
        assert_eq!(d.send(id, b"ping"), 4);
        let mut buf = [0; 4];
        d.wait(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        d.close(id, false);
    }
}

fn connect_refused<D: Driver>(mut d: D) {
    let addr = TcpListener::bind(v4()).unwrap().local_addr().unwrap(); // closed on drop
    let t0 = Instant::now();
    d.open(SockKind::Tcp, addr, T, Token(7)).unwrap();
    match wait_event(&mut d, |e| matches!(e, Event::Connected { .. })) {
        Event::Connected { result, token } => {
            assert_eq!(token, Token(7));
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        }
        _ => unreachable!(),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "refusal must be prompt"
    );
}

/// A loopback listener with backlog 0 that is never accepted from, and its accept queue
/// filled: further SYNs are dropped, so a connect can only time out.
fn full_listener() -> (SocketAddr, Vec<TcpStream>, libc::c_int) {
    let l = TcpListener::bind(v4()).unwrap();
    let addr = l.local_addr().unwrap();
    let fd = l.as_raw_fd();
    // SAFETY: `fd` is the listener's open socket; listen(2) takes no pointers.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let mut held = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => {
                std::mem::forget(l); // keep it listening; closed with the test process
                return (addr, held, fd);
            }
        }
    }
    panic!("could not fill the accept queue of a backlog-0 listener");
}

fn connect_timeout<D: Driver>(mut d: D) {
    let (addr, _held, _fd) = full_listener();
    let t0 = Instant::now();
    d.open(SockKind::Tcp, addr, Duration::from_millis(300), Token(3))
        .unwrap();
    match wait_event(&mut d, |e| matches!(e, Event::Connected { .. })) {
        Event::Connected { result, .. } => {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut)
        }
        _ => unreachable!(),
    }
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(250) && el < Duration::from_secs(3),
        "{el:?}"
    );
}

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind(v4()).unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut buf = vec![0; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

fn echo_8mib<D: Driver>(mut d: D) {
    const N: usize = 8 << 20;
    let data = pattern(N, 0x5a);
    let id = connect(&mut d, echo_server(), 1);
    let mut sent = 0;
    let got = read_all(&mut d, id, &data, |d| {
        while sent < N {
            let n = d.send(id, &data[sent..(sent + 100_000).min(N)]);
            if n == 0 {
                break;
            }
            sent += n;
        }
        if sent == N {
            d.shutdown_write(id);
        }
        assert!(d.send_pending(id) <= limits().tx_buffer);
    })
    .unwrap();
    assert_eq!(got, N);
    d.close(id, false);
}

fn rx_backpressure<D: Driver>(mut d: D) {
    const N: usize = 32 << 20;
    let data = Arc::new(pattern(N, 7));
    let written = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind(v4()).unwrap();
    let addr = l.local_addr().unwrap();
    let (data2, written2) = (data.clone(), written.clone());
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        for c in data2.chunks(65536) {
            if s.write_all(c).is_err() {
                return;
            }
            written2.fetch_add(c.len(), Ordering::SeqCst);
        }
    });
    let id = connect(&mut d, addr, 1);
    // Stall: keep waiting without consuming.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        d.wait(Some(Duration::from_millis(50)), &mut Vec::new())
            .unwrap();
    }
    assert!(
        written.load(Ordering::SeqCst) < N,
        "the server could write everything: the driver did not push back"
    );
    // Streams are read on demand: while the caller does not consume, the bytes wait in the
    // kernel, and one call hands over at most one ring (rx_buffer) of them.
    let mut off = 0;
    let n = d
        .recv(id, &mut |b| {
            assert_eq!(b, &data[off..off + b.len()]);
            off += b.len();
            b.len()
        })
        .expect("data is waiting");
    assert!(
        n > 0 && n <= limits().rx_buffer,
        "one recv handed {n} bytes"
    );
    // Into the caller's memory: at most what it offers, in order.
    let mut buf = vec![0u8; 1000];
    let k = d.recv_into(id, &mut buf).expect("data is waiting");
    assert!(k > 0 && k <= buf.len());
    assert_eq!(&buf[..k], &data[n..n + k]);
    let rest = read_all(&mut d, id, &data[n + k..], |_| {}).unwrap();
    assert_eq!(n + k + rest, N);
}

fn tx_backpressure<D: Driver>(mut d: D) {
    let l = TcpListener::bind(v4()).unwrap();
    let id = connect(&mut d, l.local_addr().unwrap(), 1);
    let (_peer, _) = l.accept().unwrap(); // never reads
    let chunk = vec![1u8; 1 << 20];
    let mut zero_rounds = 0;
    let mut total = 0;
    let t0 = Instant::now();
    while zero_rounds < 5 && t0.elapsed() < Duration::from_secs(20) {
        let n = d.send(id, &chunk);
        total += n;
        if n == 0 {
            zero_rounds += 1;
        }
        d.wait(Some(Duration::from_millis(20)), &mut Vec::new())
            .unwrap();
    }
    assert_eq!(
        zero_rounds, 5,
        "send never pushed back ({total} bytes taken)"
    );
    assert!(d.send_pending(id) <= limits().tx_buffer);
    assert_eq!(d.send_space(id), limits().tx_buffer - d.send_pending(id));
    d.close(id, true);
}

fn half_close<D: Driver>(mut d: D) {
    let l = TcpListener::bind(v4()).unwrap();
    let addr = l.local_addr().unwrap();
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap(); // EOF from the client's shutdown_write
        s.write_all(b"reply after eof").unwrap();
        got
    });
    let id = connect(&mut d, addr, 1);
    assert_eq!(d.send(id, b"hello"), 5);
    d.shutdown_write(id);
    assert_eq!(
        read_all(&mut d, id, b"reply after eof", |_| {}).unwrap(),
        15
    );
    assert_eq!(srv.join().unwrap(), b"hello");
    d.close(id, false);
}

/// SO_LINGER 0: dropping `s` sends RST.
fn reset_when_dropped(s: &std::net::TcpStream) {
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `lg` is a live linger struct and the length is its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const lg).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

fn peer_reset<D: Driver>(mut d: D) {
    let l = TcpListener::bind(v4()).unwrap();
    let id = connect(&mut d, l.local_addr().unwrap(), 1);
    let (s, _) = l.accept().unwrap();
    reset_when_dropped(&s);
    drop(s); // RST
    let e = read_all(&mut d, id, b"", |_| {}).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    d.close(id, false);
}

fn udp_echo<D: Driver>(mut d: D) {
    for bind in [v4(), v6()] {
        let srv = UdpSocket::bind(bind).unwrap();
        let addr = srv.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = [0; 65536];
            while let Ok((n, from)) = srv.recv_from(&mut buf) {
                let _ = srv.send_to(&buf[..n], from);
            }
        });
        let id = d.open(SockKind::Udp, addr, T, Token(9)).unwrap();
        let sizes = [1usize, 100, 1472, 9000, 30000];
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(d.send(id, &pattern(n, i as u8)), n);
        }
        let mut got = Vec::new();
        let end = Instant::now() + T;
        while got.len() < sizes.len() {
            match d.recv(id, &mut |b| {
                got.push(b.to_vec());
                b.len()
            }) {
                Ok(_) => {}
                Err(Recv::Empty) => {
                    d.wait(Some(Duration::from_millis(100)), &mut Vec::new())
                        .unwrap();
                }
                Err(e) => panic!("{e:?}"),
            }
            assert!(Instant::now() < end);
        }
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(got[i], pattern(n, i as u8));
        }
        d.close(id, false);
    }
}

/// More datagrams arrive at once than the driver queues per socket (`rx_datagrams`): the
/// rest wait in the kernel and must be read once the caller has made room, without a new
/// datagram arriving to wake the socket.
fn udp_queue_full<D: Driver>(mut d: D) {
    let peer = UdpSocket::bind(v4()).unwrap();
    let id = d
        .open(SockKind::Udp, peer.local_addr().unwrap(), T, Token(9))
        .unwrap();
    // Learn the driver socket's address from a first datagram.
    assert_eq!(d.send(id, b"hi"), 2);
    d.wait(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    let mut buf = [0; 16];
    let (_, ours) = peer.recv_from(&mut buf).unwrap();
    let n = limits().rx_datagrams * 3;
    for i in 0..n {
        peer.send_to(&(i as u32).to_be_bytes(), ours).unwrap();
    }
    let mut got = Vec::new();
    let end = Instant::now() + T;
    while got.len() < n {
        match d.recv(id, &mut |b| {
            got.push(u32::from_be_bytes(b.try_into().unwrap()));
            b.len()
        }) {
            Ok(_) => {}
            Err(Recv::Empty) => {
                assert!(Instant::now() < end, "{} of {n} datagrams read", got.len());
                d.wait(Some(Duration::from_millis(100)), &mut Vec::new())
                    .unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got, (0..n as u32).collect::<Vec<_>>());
    d.close(id, false);
}

fn watch_eventfd<D: Driver>(mut d: D) {
    // SAFETY: eventfd(2) takes no pointers; the result is checked.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(efd >= 0);
    d.watch(efd, Token(42)).unwrap();
    let mut evs = Vec::new();
    d.wait(Some(Duration::from_millis(50)), &mut evs).unwrap();
    assert!(evs.is_empty(), "{evs:?}");
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live array to our eventfd.
    assert_eq!(unsafe { libc::write(efd, one.as_ptr().cast(), 8) }, 8);
    wait_event(&mut d, |e| matches!(e, Event::Wake { token: Token(42) }));
    // Not drained: level-triggered, so reported again.
    wait_event(&mut d, |e| matches!(e, Event::Wake { token: Token(42) }));
    let mut buf = [0u8; 8];
    // SAFETY: reads 8 bytes into a live array from our eventfd.
    assert_eq!(unsafe { libc::read(efd, buf.as_mut_ptr().cast(), 8) }, 8);
    // One more report may be in flight from before the drain; after that, silence.
    evs.clear();
    d.wait(Some(Duration::from_millis(50)), &mut evs).unwrap();
    evs.clear();
    d.wait(Some(Duration::from_millis(100)), &mut evs).unwrap();
    assert!(evs.is_empty(), "{evs:?}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::write(efd, one.as_ptr().cast(), 8) }, 8);
    wait_event(&mut d, |e| matches!(e, Event::Wake { token: Token(42) }));
    // SAFETY: closing our own eventfd.
    unsafe { libc::close(efd) };
}

/// Like `read_all`, through `recv_into` with buffer sizes from `sizes` in turn; waits for
/// a `Readable` event whenever it gets `Empty` (the event rules hold for `recv_into` too).
fn read_all_into<D: Driver>(
    d: &mut D,
    id: SockId,
    expect: &[u8],
    sizes: &[usize],
) -> Result<usize, io::Error> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    let mut buf = vec![0u8; sizes.iter().copied().max().unwrap_or(1)];
    let mut i = 0;
    loop {
        let want = sizes[i % sizes.len()];
        i += 1;
        match d.recv_into(id, &mut buf[..want]) {
            Ok(n) => {
                assert!(n > 0 && n <= want, "recv_into gave {n} of {want}");
                assert!(got + n <= expect.len(), "more data than expected");
                assert_eq!(
                    &buf[..n],
                    &expect[got..got + n],
                    "content mismatch at {got}"
                );
                got += n;
            }
            Err(Recv::Empty) => {
                let ev = wait_event(d, |e| matches!(e, Event::Readable { .. }));
                assert!(matches!(ev, Event::Readable { .. }));
            }
            Err(Recv::Eof) => return Ok(got),
            Err(Recv::Error(e)) => return Err(e),
        }
        assert!(
            Instant::now() < end,
            "read_all_into timed out at {got} bytes"
        );
    }
}

fn recv_into_stream<D: Driver>(mut d: D) {
    const N: usize = 8 << 20;
    let data = Arc::new(pattern(N, 3));
    let l = TcpListener::bind(v4()).unwrap();
    let addr = l.local_addr().unwrap();
    let data2 = data.clone();
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        for c in data2.chunks(100_000) {
            s.write_all(c).unwrap();
            thread::sleep(Duration::from_micros(200)); // let the reader run dry now and then
        }
        // dropped: FIN after the data
    });
    let id = connect(&mut d, addr, 1);
    let sizes = [1, 1000, 65536, 300_000, 7];
    assert_eq!(read_all_into(&mut d, id, &data, &sizes).unwrap(), N);
    srv.join().unwrap();
    // After EOF it stays EOF; an empty buffer takes nothing.
    assert!(matches!(d.recv_into(id, &mut [0u8; 16]), Err(Recv::Eof)));
    d.close(id, false);

    // A reset reaches recv_into as ECONNRESET.
    let l = TcpListener::bind(v4()).unwrap();
    let id = connect(&mut d, l.local_addr().unwrap(), 2);
    let (s, _) = l.accept().unwrap();
    reset_when_dropped(&s);
    drop(s);
    let e = read_all_into(&mut d, id, b"", &[4096]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    d.close(id, false);
    // A closed socket's id: NotFound.
    assert!(matches!(
        d.recv_into(id, &mut [0u8; 16]),
        Err(Recv::Error(e)) if e.kind() == io::ErrorKind::NotFound
    ));
}

fn stale_sockid<D: Driver>(mut d: D) {
    let addr = echo_server();
    let old = connect(&mut d, addr, 1);
    d.close(old, false);
    let new = connect(&mut d, addr, 2);
    assert_ne!(old, new);
    assert_eq!(d.send(old, b"x"), 0);
    assert_eq!(d.send_space(old), 0);
    assert_eq!(d.send_pending(old), 0);
    assert!(matches!(d.recv(old, &mut |b| b.len()), Err(Recv::Error(_))));
    d.shutdown_write(old);
    d.close(old, true);
    // The new socket is unaffected.
    assert_eq!(d.send(new, b"still here"), 10);
    d.shutdown_write(new);
    assert_eq!(read_all(&mut d, new, b"still here", |_| {}).unwrap(), 10);
    d.close(new, false);
    let end = Instant::now() + T;
    while d.open_sockets() > 0 {
        d.wait(Some(Duration::from_millis(20)), &mut Vec::new())
            .unwrap();
        assert!(Instant::now() < end, "{} sockets left", d.open_sockets());
    }
}

fn many_sockets<D: Driver>(mut d: D) {
    const N: u64 = 200;
    let addr = echo_server();
    let ids: Vec<SockId> = (0..N)
        .map(|i| d.open(SockKind::Tcp, addr, T, Token(i)).unwrap())
        .collect();
    assert_eq!(d.open_sockets(), N as usize);
    let mut connected = 0;
    let mut done = vec![false; N as usize];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); N as usize];
    let msg = |i: u64| format!("flow {i} says hello").into_bytes();
    let end = Instant::now() + Duration::from_secs(20);
    let mut evs = Vec::new();
    while done.iter().any(|d| !d) {
        evs.clear();
        d.wait(Some(Duration::from_millis(100)), &mut evs).unwrap();
        for e in evs.drain(..) {
            match e {
                Event::Connected { token, result } => {
                    result.unwrap();
                    connected += 1;
                    let id = ids[token.0 as usize];
                    let m = msg(token.0);
                    assert_eq!(d.send(id, &m), m.len());
                    d.shutdown_write(id);
                }
                Event::Readable { token } => {
                    let i = token.0 as usize;
                    loop {
                        match d.recv(ids[i], &mut |b| {
                            got[i].extend_from_slice(b);
                            b.len()
                        }) {
                            Ok(_) => {}
                            Err(Recv::Eof) => {
                                done[i] = true;
                                break;
                            }
                            Err(Recv::Empty) => break,
                            Err(Recv::Error(e)) => panic!("{e}"),
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(Instant::now() < end, "{connected} connected");
    }
    for i in 0..N {
        assert_eq!(got[i as usize], msg(i));
        d.close(ids[i as usize], false);
    }
}

fn ping<D: Driver + 'static>(make: fn(Limits) -> D) {
    require_privileges!();
    common::in_private_netns(true, move || {
        let mut d = make(limits());
        // Default ping_group_range "1 0": refused, reported as a socket error.
        match d.open(SockKind::Ping, (Ipv4Addr::LOCALHOST, 0).into(), T, Token(1)) {
            Err(EgressError::Socket { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EACCES))
            }
            other => panic!("expected EACCES, got {other:?}"),
        }
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
        let cases: [(SocketAddr, u8, u8); 2] = [
            ((Ipv4Addr::LOCALHOST, 0).into(), 8, 0),
            ((Ipv6Addr::LOCALHOST, 0).into(), 128, 129),
        ];
        for (addr, req, reply) in cases {
            let id = d.open(SockKind::Ping, addr, T, Token(2)).unwrap();
            let mut echo = vec![req, 0, 0, 0, 0, 0, 0, 1];
            echo.extend_from_slice(b"ringnet ping payload");
            assert_eq!(d.send(id, &echo), echo.len());
            let mut got = None;
            let end = Instant::now() + T;
            while got.is_none() {
                match d.recv(id, &mut |b| {
                    got = Some(b.to_vec());
                    b.len()
                }) {
                    Ok(_) => {}
                    Err(Recv::Empty) => d
                        .wait(Some(Duration::from_millis(100)), &mut Vec::new())
                        .unwrap(),
                    Err(e) => panic!("{e:?}"),
                }
                assert!(Instant::now() < end, "no echo reply from {addr}");
            }
            let got = got.unwrap();
            assert_eq!(got[0], reply, "{got:?}");
            assert_eq!(&got[6..8], &[0, 1], "sequence");
            assert_eq!(&got[8..], b"ringnet ping payload");
            d.close(id, false);
        }
    })
    .expect("a private network namespace with lo up");
}

macro_rules! suite {
    ($m:ident, $make:expr) => {
        mod $m {
            use super::*;
            fn make(l: Limits) -> impl Driver + 'static {
                $make(l)
            }
            #[test]
            fn connect_ok() {
                super::connect_ok(make(limits()))
            }
            #[test]
            fn connect_refused() {
                super::connect_refused(make(limits()))
            }
            #[test]
            fn connect_timeout() {
                super::connect_timeout(make(limits()))
            }
            #[test]
            fn echo_8mib() {
                super::echo_8mib(make(limits()))
            }
            #[test]
            fn recv_into_stream() {
                super::recv_into_stream(make(limits()))
            }
            #[test]
            fn rx_backpressure() {
                super::rx_backpressure(make(limits()))
            }
            #[test]
            fn tx_backpressure() {
                super::tx_backpressure(make(limits()))
            }
            #[test]
            fn half_close() {
                super::half_close(make(limits()))
            }
            #[test]
            fn peer_reset() {
                super::peer_reset(make(limits()))
            }
            #[test]
            fn udp_echo() {
                super::udp_echo(make(limits()))
            }
            #[test]
            fn udp_queue_full() {
                super::udp_queue_full(make(limits()))
            }
            #[test]
            fn watch_eventfd() {
                super::watch_eventfd(make(limits()))
            }
            #[test]
            fn stale_sockid() {
                super::stale_sockid(make(limits()))
            }
            #[test]
            fn many_sockets() {
                super::many_sockets(make(limits()))
            }
            #[test]
            fn ping_netns() {
                super::ping(make)
            }
        }
    };
}

suite!(egress_uring, |l| UringDriver::new(l).unwrap());
suite!(egress_epoll, |l| EpollDriver::new(l).unwrap());

#[test]
fn egress_select() {
    use ringnet::config::EgressDriver;
    use ringnet::egress::select;
    let (d, why) = select(EgressDriver::Auto, limits()).unwrap();
    assert_eq!(d.kind(), EgressDriver::Uring);
    assert!(why.starts_with("io_uring ("), "{why}");
    let (d, why) = select(EgressDriver::Epoll, limits()).unwrap();
    assert_eq!(
        (d.kind(), why.as_str()),
        (EgressDriver::Epoll, "epoll (requested)")
    );
}
