//! The stream port over `socketpair(2)` and a listening socket in the temp dir: framing
//! across reads, bad lengths, partial writes under a small send buffer, reconnects, the
//! fd mode's end, and the socket file's life.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

const MTU: usize = 1500;
const MAX: usize = MTU + ETHERNET_HEADER;

fn link() -> Link {
    Link::new().expect("link")
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A frame of `len` bytes whose bytes derive from `seq` (first two bytes: `seq`).
fn frame_bytes(seq: u16, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seq as u8)
        .collect();
    f[..2].copy_from_slice(&seq.to_be_bytes());
    f
}

fn record(frame: &[u8]) -> Vec<u8> {
    let mut r = frame::prefix(frame.len()).to_vec();
    r.extend_from_slice(frame);
    r
}

/// The frames on `from_guest`, in order.
fn received(link: &Link) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| link.from_guest.pop())
        .map(|f| f.bytes().to_vec())
        .collect()
}

/// Queue `frame` to the guest.
fn queue(link: &Link, frame: &[u8]) {
    let mut f = link.pool.lease().expect("slot");
    f.capacity_mut()[..frame.len()].copy_from_slice(frame);
    f.set_len(frame.len());
    assert!(link.to_guest.push(f));
}

fn pair() -> (StreamPort, UnixStream) {
    let (ours, peer) = UnixStream::pair().expect("socketpair");
    let port = StreamPort::from_fd(OwnedFd::from(ours), MAX).expect("port");
    (port, peer)
}

fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

static N: AtomicU32 = AtomicU32::new(0);

/// A socket path of its own in the temp dir, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new() -> TempPath {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("ringnet-stream-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Receive until `want` frames are on `from_guest` or a second passes.
fn receive_until(port: &mut StreamPort, link: &Link, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        port.receive(link, 64).expect("receive");
        got.extend(received(link));
    }
    got
}

#[test]
fn frames_split_at_every_byte_position() {
    let link = link();
    let (mut port, mut peer) = pair();
    let (a, b) = (frame_bytes(1, 60), frame_bytes(2, MAX));
    let mut stream = record(&a);
    stream.extend(record(&b));
    for cut in 0..=stream.len() {
        peer.write_all(&stream[..cut]).unwrap();
        let first = port.receive(&link, 64).unwrap();
        let mut got = received(&link);
        assert_eq!(first, got.len(), "cut {cut}");
        peer.write_all(&stream[cut..]).unwrap();
        port.receive(&link, 64).unwrap();
        got.extend(received(&link));
        assert_eq!(got, vec![a.clone(), b.clone()], "cut {cut}");
    }
    assert_eq!(port.deframer.buffered(), 0);
}

#[test]
fn several_frames_in_one_read_and_the_budget() {
    let link = link();
    let (mut port, mut peer) = pair();
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| frame_bytes(i, 14 + 100 * i as usize))
        .collect();
    let stream: Vec<u8> = frames.iter().flat_map(|f| record(f)).collect();
    peer.write_all(&stream).unwrap();
    // Budget 3: 3, 3, 3, then 1 (fewer: drained).
    assert_eq!(port.receive(&link, 3).unwrap(), 3);
    assert_eq!(port.receive(&link, 3).unwrap(), 3);
    assert_eq!(port.receive(&link, 3).unwrap(), 3);
    assert_eq!(port.receive(&link, 3).unwrap(), 1);
    assert_eq!(port.receive(&link, 3).unwrap(), 0);
    assert_eq!(received(&link), frames);
}

#[test]
fn an_empty_pool_drops_the_frame_on_the_ring() {
    let link = link();
    let (mut port, mut peer) = pair();
    let held: Vec<Frame> = std::iter::from_fn(|| link.pool.lease()).collect();
    peer.write_all(&record(&frame_bytes(1, 64))).unwrap();
    assert_eq!(port.receive(&link, 64).unwrap(), 1);
    assert!(link.from_guest.is_empty());
    assert_eq!(counter(&link.from_guest.stats().drops), 1);
    drop(held);
    // The stream goes on.
    peer.write_all(&record(&frame_bytes(2, 64))).unwrap();
    assert_eq!(receive_until(&mut port, &link, 1), vec![frame_bytes(2, 64)]);
}

/// Listen on a fresh path; returns the port, its path and a connected client (accepted).
fn listening(link: &Link) -> (StreamPort, TempPath, UnixStream) {
    let path = TempPath::new();
    let mut port = StreamPort::listen(&path.0, MAX).expect("listen");
    assert!(!readable(port.ready_fd().unwrap(), 0));
    let client = UnixStream::connect(&path.0).expect("connect");
    assert!(
        readable(port.ready_fd().unwrap(), 1000),
        "a connection makes the port ready"
    );
    assert_eq!(port.receive(link, 64).unwrap(), 0);
    assert!(port.connected());
    (port, path, client)
}

#[test]
fn bad_lengths_end_the_connection_and_the_next_client_is_served() {
    let bad: [u32; 4] = [0, 13, (MAX + 1) as u32, u32::MAX];
    for (i, len) in bad.into_iter().enumerate() {
        let link = link();
        let (mut port, path, mut client) = listening(&link);
        let good = frame_bytes(1, 100);
        let mut bytes = record(&good);
        bytes.extend(len.to_be_bytes());
        bytes.extend([0u8; 20]);
        client.write_all(&bytes).unwrap();
        assert_eq!(
            receive_until(&mut port, &link, 1),
            vec![good],
            "length {len}"
        );
        assert!(!port.connected(), "length {len}");
        assert_eq!(counter(&link.stats.stream_bad_length), 1);
        assert_eq!(counter(&link.stats.stream_disconnects), 1);
        assert!(link.take_reset());
        client
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "closed after length {len}"
        );
        // The next client works.
        let mut next = UnixStream::connect(&path.0).unwrap();
        next.write_all(&record(&frame_bytes(2, 60))).unwrap();
        assert_eq!(receive_until(&mut port, &link, 1), vec![frame_bytes(2, 60)]);
        assert_eq!(counter(&link.stats.stream_connections), 2, "case {i}");
    }
}

#[test]
fn a_bad_length_in_fd_mode_is_an_error() {
    let link = link();
    let (mut port, mut peer) = pair();
    peer.write_all(&13u32.to_be_bytes()).unwrap();
    match port.receive(&link, 64) {
        Err(PortError::Io(msg)) => assert!(msg.contains("13"), "{msg}"),
        other => panic!("want an Io error, got {other:?}"),
    }
    assert_eq!(counter(&link.stats.stream_bad_length), 1);
}

#[test]
fn fd_mode_reports_gone_when_the_peer_hangs_up() {
    let link = link();
    let (mut port, peer) = pair();
    // A record cut short by the hang-up: its bytes go with the connection.
    (&peer).write_all(&[0, 0, 0, 60, 1, 2]).unwrap();
    drop(peer);
    match port.receive(&link, 64) {
        Err(PortError::Gone(what)) => assert_eq!(what, FD_GONE),
        other => panic!("want Gone, got {other:?}"),
    }
    assert!(received(&link).is_empty());
    // And stays gone.
    assert!(matches!(port.receive(&link, 64), Err(PortError::Gone(_))));
    // Frames for the guest are dropped and counted.
    queue(&link, &frame_bytes(1, 60));
    port.transmit(&link, 1);
    assert_eq!(counter(&link.stats.to_guest_dropped), 1);
}

#[test]
fn fd_mode_a_failed_write_leaves_the_end_to_receive() {
    let link = link();
    let (mut port, peer) = pair();
    drop(peer);
    queue(&link, &frame_bytes(1, 60));
    port.transmit(&link, 1);
    assert_eq!(counter(&link.stats.to_guest_dropped), 1);
    assert!(port.write_failed);
    // The hang-up still makes the port ready, and receive reports it.
    assert!(readable(port.ready_fd().unwrap(), 1000));
    assert!(matches!(port.receive(&link, 64), Err(PortError::Gone(_))));
}

#[test]
fn fd_mode_refuses_what_is_not_a_stream_connection() {
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let e = StreamPort::from_fd(OwnedFd::from(dgram), MAX).unwrap_err();
    assert!(e.to_string().contains("not SOCK_STREAM"), "{e}");
    let path = TempPath::new();
    let listener = UnixListener::bind(&path.0).unwrap();
    let e = StreamPort::from_fd(OwnedFd::from(listener), MAX).unwrap_err();
    assert!(e.to_string().contains("listening"), "{e}");
}

/// Read whole records from `peer` (non-blocking) into `frames`; `buf` keeps a partial one.
fn read_records(peer: &mut UnixStream, buf: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>, max: usize) {
    let mut chunk = vec![0u8; max];
    match peer.read(&mut chunk) {
        Ok(n) => buf.extend_from_slice(&chunk[..n]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("read: {e}"),
    }
    while let frame::Split::Frame(len) = frame::split(buf, MAX) {
        frames.push(buf[PREFIX_BYTES..PREFIX_BYTES + len].to_vec());
        buf.drain(..PREFIX_BYTES + len);
    }
}

#[test]
fn partial_writes_resume_and_frames_arrive_intact_in_order() {
    let link = link();
    let (ours, mut peer) = UnixStream::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let raw = ours.as_raw_fd();
    let mut port = StreamPort::from_fd(OwnedFd::from(ours), MAX).unwrap();
    // Shrink the send buffer after the port grew it: partial writes are the point.
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt(2) reads the live local of the size passed.
    let r = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    let total = 600u16;
    let sent: Vec<Vec<u8>> = (0..total)
        .map(|i| frame_bytes(i, 14 + (usize::from(i) * 37) % (MAX - 13)))
        .collect();
    let (mut next, mut buf, mut got) = (0usize, Vec::new(), Vec::new());
    let (mut refused, mut woken) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} frames",
            got.len(),
            sent.len()
        );
        while next < sent.len() && link.to_guest.len() < crate::link::RING_SLOTS {
            queue(&link, &sent[next]);
            next += 1;
        }
        if !port.make_room(&link) {
            refused += 1;
            assert!(port.want_write, "a full socket arms EPOLLOUT");
            assert!(!readable(port.ready_fd().unwrap(), 0), "ready while full");
            // Draining the peer makes the port's fd ready (EPOLLOUT through its epoll).
            while !readable(port.ready_fd().unwrap(), 0) {
                assert!(Instant::now() < deadline, "never writable again");
                read_records(&mut peer, &mut buf, &mut got, 3000);
            }
            woken += 1;
        } else {
            read_records(&mut peer, &mut buf, &mut got, 3000);
        }
        port.transmit(&link, 0);
    }
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "frame {i}");
    }
    assert!(refused > 0, "the small send buffer never filled");
    assert!(woken > 0, "the port's fd never became ready for writing");
    assert_eq!(counter(&link.stats.to_guest_dropped), 0);
    assert!(port.out.is_empty() && !port.want_write);
    assert_eq!(link.pool.available(), link.pool.capacity());
}

#[test]
fn reconnect_resets_the_guest_and_drops_its_queued_frames() {
    let link = link();
    let (mut port, path, mut client) = listening(&link);
    assert_eq!(counter(&link.stats.stream_connections), 1);
    client.write_all(&record(&frame_bytes(1, 80))).unwrap();
    assert_eq!(receive_until(&mut port, &link, 1), vec![frame_bytes(1, 80)]);
    // To the guest: arrives with its prefix.
    queue(&link, &frame_bytes(9, 70));
    port.transmit(&link, 1);
    let mut buf = [0u8; 74];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(buf[..4], 70u32.to_be_bytes());
    assert_eq!(buf[4..], frame_bytes(9, 70)[..]);
    assert!(!link.take_reset());

    drop(client);
    queue(&link, &frame_bytes(10, 70));
    assert!(
        readable(port.ready_fd().unwrap(), 1000),
        "EOF makes the port ready"
    );
    assert_eq!(port.receive(&link, 64).unwrap(), 0);
    assert!(!port.connected());
    assert!(link.take_reset(), "a disconnect resets the guest");
    assert_eq!(counter(&link.stats.stream_disconnects), 1);
    assert_eq!(counter(&link.stats.to_guest_dropped), 1, "the queued frame");
    // Without a connection, frames to the guest are dropped and counted.
    queue(&link, &frame_bytes(11, 70));
    port.transmit(&link, 1);
    assert_eq!(counter(&link.stats.to_guest_dropped), 2);

    let mut second = UnixStream::connect(&path.0).unwrap();
    assert!(readable(port.ready_fd().unwrap(), 1000));
    second.write_all(&record(&frame_bytes(2, 90))).unwrap();
    assert_eq!(receive_until(&mut port, &link, 1), vec![frame_bytes(2, 90)]);
    assert_eq!(counter(&link.stats.stream_connections), 2);
    queue(&link, &frame_bytes(12, 60));
    port.transmit(&link, 1);
    let mut buf = [0u8; 64];
    second.read_exact(&mut buf).unwrap();
    assert_eq!(buf[4..], frame_bytes(12, 60)[..]);
    assert!(!link.take_reset());
}

#[test]
fn a_client_waiting_in_the_backlog_is_served_next() {
    let link = link();
    let (mut port, path, first) = listening(&link);
    let mut waiting = UnixStream::connect(&path.0).expect("queued in the backlog");
    waiting.write_all(&record(&frame_bytes(3, 50))).unwrap();
    port.receive(&link, 64).unwrap();
    assert!(
        received(&link).is_empty(),
        "the waiting client is not served yet"
    );
    drop(first);
    assert_eq!(receive_until(&mut port, &link, 1), vec![frame_bytes(3, 50)]);
    assert_eq!(counter(&link.stats.stream_connections), 2);
    assert_eq!(counter(&link.stats.stream_disconnects), 1);
}

#[test]
fn the_socket_path_stale_live_foreign_and_removal() {
    // A regular file is refused and left alone.
    let path = TempPath::new();
    std::fs::write(&path.0, b"x").unwrap();
    let e = StreamPort::listen(&path.0, MAX).unwrap_err();
    assert!(matches!(e, StreamError::NotASocket(_)), "{e}");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&path.0).unwrap(), b"x");
    std::fs::remove_file(&path.0).unwrap();

    // A stale socket (its listener gone) is replaced; the file goes with the port.
    drop(UnixListener::bind(&path.0).unwrap());
    assert!(path.0.exists());
    let port = StreamPort::listen(&path.0, MAX).expect("stale socket replaced");
    assert_eq!(port.path(), Some(path.0.as_path()));

    // A live one is refused.
    let e = StreamPort::listen(&path.0, MAX).unwrap_err();
    assert!(matches!(e, StreamError::InUse(_)), "{e}");
    drop(port);
    assert!(!path.0.exists(), "removed with the port");

    // A file put there by someone else after us is not ours to remove.
    let port = StreamPort::listen(&path.0, MAX).unwrap();
    std::fs::remove_file(&path.0).unwrap();
    std::fs::write(&path.0, b"theirs").unwrap();
    drop(port);
    assert_eq!(std::fs::read(&path.0).unwrap(), b"theirs");
}
