//! `ringnet qemu` end to end without a VM: the test is QEMU. ringnet runs in an isolated
//! host namespace (`common::HostNs`: nothing can leave the machine); the test connects to
//! its unix socket (a path in the temp dir: reachable across network namespaces) and
//! speaks the stream netdev protocol, a 32-bit big-endian length before each frame.
//!
//! Cases:
//! - `socket_serves_reconnects::{uring,epoll}`: ARP for the gateway, an ICMP echo to it and a DHCPDISCOVER
//!   from 0.0.0.0 are answered (ARP reply, echo reply, OFFER of 172.16.0.2), each reply
//!   length-prefixed; after a disconnect a second connection is served the same way; at
//!   SIGTERM ringnet exits 0, removes its socket and `--stats` says `stream_connections 2`.
//! - `bad_length_drops_that_client`: a length prefix of 0xffffffff closes that client's
//!   connection (one warning line, `stream_bad_length 1`); the next client is served.
//! - `fd_hangup_exits_1::{uring,epoll}`: `--fd 3` on a socketpair end: served, and when the test closes
//!   its end ringnet exits with status 1 within 2 s, saying the connection hung up.
//!
//! Every wait has a deadline; ringnet is stopped by PID (its process group) on drop.

mod common;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::frames::{self, GUEST, GUEST_MAC, GW};
use common::*;
use smoltcp::wire::IpProtocol;

const LIMIT: Duration = Duration::from_secs(120);
const REPLY: Duration = Duration::from_secs(5);

/// The test's stand-in for QEMU: one stream connection and its partial input.
struct FakeQemu {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl FakeQemu {
    fn connect(path: &Path) -> FakeQemu {
        let sock = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        FakeQemu::over(sock)
    }

    fn over(sock: UnixStream) -> FakeQemu {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        FakeQemu {
            sock,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, frame: &[u8]) {
        let mut rec = (frame.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(frame);
        self.sock.write_all(&rec).expect("writing a frame");
    }

    /// The next whole frame, or None at EOF or after `timeout`.
    fn next_frame(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                assert!(
                    (14..=1514).contains(&len),
                    "ringnet sent a frame length of {len}"
                );
                if self.buf.len() >= 4 + len {
                    let frame = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Some(frame);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading from ringnet: {e}"),
            }
        }
    }

    /// Read frames until one satisfies `want` (returned); panics after [`REPLY`] with a
    /// summary of the frames seen.
    fn expect(&mut self, what: &str, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + REPLY;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next_frame(left) {
                Some(f) if want(&f) => return f,
                Some(f) => seen.push(format!("{} bytes, type {:02x?}", f.len(), &f[12..14])),
                None => break,
            }
        }
        panic!("no {what} from ringnet within {REPLY:?}; other frames: {seen:?}");
    }

    /// True when ringnet closes the connection within `timeout` (frames before the EOF are
    /// skipped).
    fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// An ARP reply from the gateway to the guest, about the gateway.
fn is_arp_reply(f: &[u8]) -> bool {
    f.len() >= 42
        && ethertype(f) == 0x0806
        && f[..6] == GUEST_MAC
        && f[20..22] == [0, 2]
        && f[28..32] == GW.octets()
        && f[32..38] == GUEST_MAC
}

/// The IPv4 packet's (protocol, source, destination, payload) of an Ethernet frame.
fn ipv4(f: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, &[u8])> {
    if f.len() < 34 || ethertype(f) != 0x0800 {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((ip[9], src, dst, ip.get(ihl..total)?))
}

/// An echo reply from the gateway to the guest with `ident` and `seq`.
fn is_echo_reply(f: &[u8], ident: u16, seq: u16) -> bool {
    matches!(ipv4(f), Some((1, src, dst, icmp))
        if src == GW && dst == GUEST && icmp.len() >= 8 && icmp[0] == 0
            && icmp[4..6] == ident.to_be_bytes() && icmp[6..8] == seq.to_be_bytes())
}

/// A DHCPv4 OFFER (UDP 67 → 68) of `addr`.
fn is_offer_of(f: &[u8], addr: Ipv4Addr) -> bool {
    let Some((17, _, _, udp)) = ipv4(f) else {
        return false;
    };
    if udp.len() < 8 + 240 || udp[0..2] != [0, 67] || udp[2..4] != [0, 68] {
        return false;
    }
    let bootp = &udp[8..];
    let mut opts = &bootp[240..];
    let mut offer = false;
    while opts.len() >= 2 && opts[0] != 255 {
        if opts[0] == 0 {
            opts = &opts[1..];
            continue;
        }
        let len = usize::from(opts[1]);
        if opts[0] == 53 && len == 1 && opts.get(2) == Some(&2) {
            offer = true;
        }
        opts = opts.get(2 + len..).unwrap_or(&[]);
    }
    bootp[0] == 2 && bootp[16..20] == addr.octets() && offer
}

/// A DHCPDISCOVER from 0.0.0.0 (UDP 68 → 67, broadcast), RFC 2131 §2 / RFC 2132.
fn dhcp_discover() -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[..3].copy_from_slice(&[1, 1, 6]); // BOOTREQUEST, Ethernet, 6-byte addresses
    bootp[4..8].copy_from_slice(&[0x52, 0x4e, 0x51, 0x31]); // xid
    bootp[10] = 0x80; // broadcast flag
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp.extend_from_slice(&[0x63, 0x82, 0x53, 0x63, 53, 1, 1, 61, 7, 1]);
    bootp.extend_from_slice(&GUEST_MAC);
    bootp.extend_from_slice(&[55, 4, 1, 3, 6, 26, 255]);
    bootp.resize(300, 0);
    let (src, dst) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let mut udp = vec![0, 68, 0, 67];
    udp.extend_from_slice(&((8 + bootp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&bootp);
    let sum = udp_checksum(src, dst, &udp);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut f = frames::ipv4(src, dst, IpProtocol::Udp, &udp);
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

/// The UDP checksum over the IPv4 pseudo-header and `udp` (checksum field zero).
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 17]);
    add(&(udp.len() as u16).to_be_bytes());
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        s => s,
    }
}

/// ARP for the gateway and an echo to it, answered on `q`.
fn gateway_answers(q: &mut FakeQemu, seq: u16) {
    q.send(&frames::arp_request(GW));
    q.expect("ARP reply for the gateway", is_arp_reply);
    let echo = frames::icmpv4_echo(0x5157, seq, b"stream netdev");
    q.send(&frames::ipv4(GUEST, GW, IpProtocol::Icmp, &echo));
    q.expect("echo reply from the gateway", |f| {
        is_echo_reply(f, 0x5157, seq)
    });
}

/// `ringnet qemu --socket PATH --stats ARGS…` in `host`, once its start-up line is out.
fn serve_socket(host: &HostNs, path: &Path, args: &[&str]) -> Ringnet {
    let p = path.to_str().expect("utf-8 path");
    let mut full = vec![ringnet_bin(), "qemu", "--socket", p, "--stats"];
    full.extend_from_slice(args);
    let mut rn = Ringnet::spawn(host, &full, p, None);
    let line = format!(
        "ringnet: serving QEMU on {p} (slot 0); start QEMU with: -netdev \
         stream,id=n0,server=off,addr.type=unix,addr.path={p} -device \
         virtio-net-pci,netdev=n0,mac={}",
        common::GUEST_MAC
    );
    rn.wait_stderr(&line, Duration::from_secs(10));
    assert!(path.exists(), "no socket at {}", path.display());
    rn
}

/// A socket path of the test's own in the temp dir (removed on drop if still there).
struct SocketPath(PathBuf);

impl SocketPath {
    fn new() -> SocketPath {
        SocketPath(std::env::temp_dir().join(format!("{}.sock", unique_name("qemu"))))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SIGTERM: exit 0 within 5 s; returns ringnet's stderr.
fn stop_ok(rn: &mut Ringnet) -> String {
    let status = rn.stop();
    let stderr = rn.stderr();
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{stderr}");
    stderr
}

test_cases!(socket_serves_reconnects: uring("uring"), epoll("epoll"));

fn socket_serves_reconnects(driver: &str) {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let path = SocketPath::new();
    let mut rn = serve_socket(&host, &path.0, &["--egress", driver]);

    let mut q = FakeQemu::connect(&path.0);
    gateway_answers(&mut q, 1);
    q.send(&dhcp_discover());
    q.expect("DHCPOFFER of 172.16.0.2", |f| is_offer_of(f, GUEST));
    drop(q);

    let mut q = FakeQemu::connect(&path.0);
    gateway_answers(&mut q, 2);
    drop(q);
    rn.assert_alive();

    let stderr = stop_ok(&mut rn);
    assert!(!path.0.exists(), "socket left behind:\n{stderr}");
    assert_eq!(
        stats_counter(&stderr, "stream_connections"),
        Some(2),
        "{stderr}"
    );
    assert!(
        stats_counter(&stderr, "dhcp_replies").unwrap_or(0) >= 1,
        "{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn bad_length_drops_that_client() {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let path = SocketPath::new();
    let mut rn = serve_socket(&host, &path.0, &[]);

    let mut bad = FakeQemu::connect(&path.0);
    gateway_answers(&mut bad, 1);
    bad.sock.write_all(&u32::MAX.to_be_bytes()).unwrap();
    // ringnet may close the connection as soon as it reads the prefix: this write may meet
    // EPIPE, which is the behaviour under test, not a failure.
    let _ = bad.sock.write_all(&[0u8; 64]);
    assert!(
        bad.closed_within(Duration::from_secs(2)),
        "connection still open after a bad length:\n{}",
        rn.stderr()
    );

    let mut good = FakeQemu::connect(&path.0);
    gateway_answers(&mut good, 2);
    drop(good);

    let stderr = stop_ok(&mut rn);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("4294967295"), "{stderr}");
    assert_eq!(
        stats_counter(&stderr, "stream_bad_length"),
        Some(1),
        "{stderr}"
    );
    assert_eq!(
        stats_counter(&stderr, "stream_connections"),
        Some(2),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

test_cases!(fd_hangup_exits_1: uring("uring"), epoll("epoll"));

fn fd_hangup_exits_1(driver: &str) {
    require_privileges!();
    let _wd = Watchdog::new(LIMIT);
    let host = HostNs::new();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let full = [ringnet_bin(), "qemu", "--fd", "3", "--egress", driver];
    let mut rn = Ringnet::spawn(&host, &full, "a socketpair", Some(theirs.as_raw_fd()));
    drop(theirs);
    rn.wait_stderr(
        "ringnet: serving QEMU on fd 3 (slot 0)",
        Duration::from_secs(10),
    );
    let mut q = FakeQemu::over(ours);
    gateway_answers(&mut q, 1);
    let t = Instant::now();
    drop(q);
    let status = rn.wait_exit(Duration::from_secs(2));
    let stderr = rn.stderr();
    let status = status.unwrap_or_else(|| {
        panic!(
            "ringnet still serving {:?} after the hang-up:\n{stderr}",
            t.elapsed()
        )
    });
    assert_eq!(status.code(), Some(1), "exit status {status}:\n{stderr}");
    let last = stderr.lines().rfind(|l| l.starts_with("ringnet: "));
    assert!(
        last.is_some_and(|l| l.contains("(fd 3) hung up")),
        "{stderr}"
    );
}
