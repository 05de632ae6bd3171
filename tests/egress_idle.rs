//! Memory of idle flows in the egress drivers: its own test binary, because it measures the
//! process's RSS and other tests allocating in parallel would spoil the measurement.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use ringnet::egress::{Driver, EpollDriver, Event, Limits, SockKind, Token, UringDriver};

fn v4() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn rss_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 2,000 established flows (`IDLE_FLOWS`, at most 10,000 and what RLIMIT_NOFILE allows), each having moved a few bytes both ways, then idle: driver
/// memory per flow (process RSS growth, excluding the test's own server-side sockets'
/// user memory, which is nil); must stay under 8 KiB per flow.
fn idle_10k<D: Driver>(mut d: D) {
    // The two cases measure the same process: one at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit struct, written by getrlimit and read by setrlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    // Two fds per flow (ours and the server's), plus slack.
    let n = (lim.rlim_cur as usize).saturating_sub(200) / 2;
    let n = n.min(10_000).min(
        std::env::var("IDLE_FLOWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
    );
    let l = TcpListener::bind(v4()).unwrap();
    // SAFETY: the listener's own fd; listen(2) takes no pointers.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 4096) }, 0);
    let addr = l.local_addr().unwrap();
    let acc = thread::spawn(move || (0..n).map(|_| l.accept().unwrap().0).collect::<Vec<_>>());
    let before = rss_kib();
    let mut ids = Vec::new();
    let mut evs = Vec::new();
    let mut connected = 0;
    let mut count = |evs: &mut Vec<Event>| {
        for e in evs.drain(..) {
            if let Event::Connected { result, .. } = e {
                result.unwrap();
                connected += 1;
            }
        }
        connected
    };
    for i in 0..n {
        let t = Token(i as u64);
        ids.push(
            d.open(SockKind::Tcp, addr, Duration::from_secs(60), t)
                .unwrap(),
        );
        if i % 500 == 0 {
            d.wait(Some(Duration::ZERO), &mut evs).unwrap();
            count(&mut evs);
        }
    }
    let end_c = Instant::now() + Duration::from_secs(40);
    while count(&mut evs) < n {
        assert!(
            Instant::now() < end_c,
            "not all connected, open {}",
            d.open_sockets()
        );
        d.wait(Some(Duration::from_millis(100)), &mut evs).unwrap();
    }
    let mut peers = acc.join().unwrap();
    for &id in &ids {
        assert_eq!(d.send(id, b"hi"), 2);
    }
    for p in &mut peers {
        let mut b = [0; 2];
        d.wait(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        p.read_exact(&mut b).unwrap();
        p.write_all(b"yo").unwrap();
    }
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while got < 2 * n {
        d.wait(Some(Duration::from_millis(50)), &mut Vec::new())
            .unwrap();
        for &id in &ids {
            while let Ok(n) = d.recv(id, &mut |b| b.len()) {
                got += n;
            }
        }
        assert!(Instant::now() < end);
    }
    d.wait(Some(Duration::from_millis(50)), &mut Vec::new())
        .unwrap();
    let after = rss_kib();
    let per_flow = after.saturating_sub(before) * 1024 / n;
    eprintln!(
        "{:?}: {n} idle flows: RSS +{} KiB = {per_flow} bytes/flow",
        d.kind(),
        after.saturating_sub(before),
    );
    // The budget for a whole idle flow is 16 KiB; the driver's share must be a
    // small part of it.
    assert!(per_flow < 8 * 1024, "{per_flow} bytes per idle flow");
}

#[test]
fn egress_uring_idle_flows() {
    idle_10k(UringDriver::new(Limits::default()).unwrap());
}

#[test]
fn egress_epoll_idle_flows() {
    idle_10k(EpollDriver::new(Limits::default()).unwrap());
}
