//! In-process data-path benchmarks: a guest TCP stack (smoltcp) drives ringnet through the
//! embedding API (`Network::start` + `GuestLink`), with a host loopback TCP server on the
//! far side. No root, no TAP; only 127.0.0.1 is touched on the host.
//!
//! ```text
//!  bench thread                      ringnet poll thread              host server threads
//!  guest smoltcp ─ GuestLink::send ─► gateway smoltcp ─ egress ─► 127.0.0.1:<port> (sink)
//!  guest smoltcp ◄─ GuestLink::recv ◄─ gateway smoltcp ◄─ egress ◄─ (source, echo)
//! ```
//!
//! Cases, for each egress driver (`epoll`, then `uring`) and link (`mtu1500`, `mtu65520`:
//! plain frames; `mtu1500-tso`: MTU 1500 with the virtio-net offloads a Linux guest
//! negotiates, `Offloads::TSO` — partial checksums and 64 KiB TCP super-frames both ways,
//! each frame with its virtio-net header):
//! - `datapath/<driver>/mtu<M>/guest_to_host`: the guest writes 64 MiB on one connection;
//!   timed until the host sink has read all of it (throughput in bytes).
//! - `datapath/<driver>/mtu<M>/host_to_guest`: the guest asks the host source for 64 MiB
//!   and reads it all (throughput in bytes).
//! - `datapath/<driver>/mtu<M>/rr_1byte`: one byte to a host echo server and back, time per
//!   round trip. When idle the guest spins ~20 µs, then sleeps in `poll(2)` on `notify_fd`.
//!
//! Frames/s: after each bulk case a line `frames:` gives the link frames per transfer in
//! each direction and the frame rate over every timed transfer (from `GuestLink::counters`).
//!
//! Integrity: both byte streams carry a period-251 byte pattern (byte at stream offset `i`
//! is `i % 251`); the receiver compares a 64-byte window every 4 KiB of each chunk and the
//! chunk's tail, and the byte counts must match exactly. Before each case is registered it
//! runs once untimed (64 MiB, or 100 round trips); a case that fails (wrong bytes, stall
//! past the timeout) is reported as `BROKEN` on stderr and skipped, and the other cases of
//! the pair (each on its own connection) still run; a driver that cannot start skips the
//! pair. A failure inside a timed run panics with the reason.
//! Every wait is bounded ([`XFER_TIMEOUT`], [`STEP_TIMEOUT`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ringnet::config::EgressDriver;
use ringnet::link::Offloads;
use ringnet::{GuestLink, HostRoutes, Network, NetworkConfig, RxFrame};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

/// Bytes per bulk transfer (one timed iteration).
const BULK: u64 = 64 << 20;
/// Bytes per direction in the preflight (one full transfer: a 4 MiB preflight let the
/// uring host→guest corruption through).
const PREFLIGHT_BULK: u64 = BULK;
/// Guest socket buffers, each direction.
const GUEST_BUF: usize = 1 << 20;
/// Longest a whole bulk transfer may take.
const XFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a connect or one round trip may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Busy-poll this long before sleeping on `notify_fd`; `RINGNET_BENCH_SPIN_US` overrides it
/// (0 sleeps at once). 20 µs measured as good as or better than 0 for bulk on 2 vCPUs.
const SPIN: Duration = Duration::from_micros(20);

fn spin_budget() -> Duration {
    std::env::var("RINGNET_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SPIN, Duration::from_micros)
}

const PERIOD: usize = 251;
const MODE_SINK: u8 = b'S';
const MODE_SOURCE: u8 = b'G';
const MODE_ECHO: u8 = b'E';

/// `PERIOD`-periodic bytes, long enough to copy up to `PERIOD * 1024` bytes from any phase.
fn pattern() -> Arc<[u8]> {
    (0..PERIOD * 1025).map(|i| (i % PERIOD) as u8).collect()
}

fn phase(pos: u64) -> usize {
    (pos % PERIOD as u64) as usize
}

/// Check `data`, found at stream offset `pos`, against the pattern on a sample: a 64-byte
/// window every 4 KiB plus the last 64 bytes.
fn check(pat: &[u8], data: &[u8], pos: u64) -> Result<(), String> {
    let tail = data.len().saturating_sub(64);
    let windows = (0..data.len()).step_by(4096).chain(std::iter::once(tail));
    for off in windows {
        let end = (off + 64).min(data.len());
        let p = phase(pos + off as u64);
        if data[off..end] != pat[p..p + end - off] {
            let i = (off..end)
                .find(|&i| data[i] != pat[phase(pos + i as u64)])
                .unwrap_or(off);
            return Err(format!(
                "byte at stream offset {} is {:#04x}, expected {:#04x}",
                pos + i as u64,
                data[i],
                pat[phase(pos + i as u64)]
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Host side: a loopback server; the first byte of a connection picks its role.

struct HostServer {
    addr: SocketAddr,
    /// Bytes the sink connection has read (after its mode byte).
    sunk: Arc<AtomicU64>,
    /// First integrity or I/O error seen by a server thread.
    error: Arc<Mutex<Option<String>>>,
}

impl HostServer {
    fn start() -> HostServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let sunk = Arc::new(AtomicU64::new(0));
        let error = Arc::new(Mutex::new(None));
        let (s, e) = (sunk.clone(), error.clone());
        // The accept thread lives until the process exits (it holds only the listener).
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (s, e) = (s.clone(), e.clone());
                std::thread::spawn(move || {
                    if let Err(msg) = serve(stream, &s) {
                        e.lock().unwrap().get_or_insert(msg);
                    }
                });
            }
        });
        HostServer { addr, sunk, error }
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }
}

/// One host connection; returns when the peer closes (or on an error, described).
fn serve(mut s: TcpStream, sunk: &AtomicU64) -> Result<(), String> {
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let pat = pattern();
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).is_err() {
        return Ok(());
    }
    match mode[0] {
        MODE_SINK => {
            let mut buf = vec![0u8; 256 << 10];
            let mut pos = 0u64;
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => n,
                };
                check(&pat, &buf[..n], pos).map_err(|e| format!("guest→host: {e}"))?;
                pos += n as u64;
                sunk.store(pos, Ordering::Release);
            }
        }
        MODE_SOURCE => {
            let mut pos = 0u64;
            let mut req = [0u8; 8];
            while s.read_exact(&mut req).is_ok() {
                let mut left = u64::from_le_bytes(req);
                while left > 0 {
                    let n = left.min((PERIOD * 1024) as u64) as usize;
                    let p = phase(pos);
                    if s.write_all(&pat[p..p + n]).is_err() {
                        return Ok(());
                    }
                    pos += n as u64;
                    left -= n as u64;
                }
            }
            Ok(())
        }
        MODE_ECHO => {
            let mut buf = [0u8; 64];
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => n,
                };
                if s.write_all(&buf[..n]).is_err() {
                    return Ok(());
                }
            }
        }
        other => Err(format!("unknown mode byte {other:#04x}")),
    }
}

// ---------------------------------------------------------------------------------------
// Guest side: a smoltcp Device over the VMM end of the link.

/// Transmit state: smoltcp writes a frame into `buf`, which is then copied into the link.
/// A frame the link refused (ring full, pool empty) stays `pending` and is retried before
/// anything else is sent — back-pressure like a full virtqueue instead of a lost segment
/// (smoltcp's minimum RTO is one second).
struct Tx {
    buf: Vec<u8>,
    pending: Option<usize>,
    /// The virtio-net header of the pending frame (offload mode).
    hdr: Option<[u8; 12]>,
    /// Offload mode: TCP frames leave with a header (partial checksum, GSO from smoltcp's
    /// segmentation metadata).
    offload: bool,
    frames: u64,
    retries: u64,
}

impl Tx {
    /// Try to send the pending frame; true when nothing is pending any more.
    fn flush(&mut self, link: &GuestLink) -> bool {
        let Some(len) = self.pending else {
            return true;
        };
        if link.send(self.hdr.as_ref(), &self.buf[..len]) {
            self.pending = None;
            self.frames += 1;
            true
        } else {
            self.retries += 1;
            false
        }
    }
}

struct LinkDevice {
    link: GuestLink,
    caps: DeviceCapabilities,
    tx: Tx,
    rx_frames: u64,
}

struct RxTok<'a>(RxFrame<'a>);

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxTok<'a> {
    link: &'a GuestLink,
    tx: &'a mut Tx,
    meta: phy::PacketMeta,
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.tx.buf.len() < len {
            self.tx.buf.resize(len, 0);
        }
        let r = f(&mut self.tx.buf[..len]);
        self.tx.hdr = None;
        if self.tx.offload {
            // What the guest's virtio-net driver does: the pseudo-header sum in the TCP
            // checksum field, NEEDS_CSUM, and for a super-segment its GSO type and size.
            let mss = self
                .meta
                .segmentation_offload_size
                .map_or(u16::MAX, |m| m.get());
            if let Ok(h) = ringnet::wire::prepare_tso(&mut self.tx.buf[..len], mss) {
                let mut hdr = [0u8; 12];
                h.emit(&mut hdr);
                self.tx.hdr = Some(hdr);
            }
        }
        self.tx.pending = Some(len);
        self.tx.flush(self.link);
        r
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.meta = meta;
    }
}

impl phy::Device for LinkDevice {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _ts: SmolInstant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        if !self.tx.flush(&self.link) {
            return None;
        }
        let frame = self.link.recv()?;
        self.rx_frames += 1;
        Some((
            RxTok(frame),
            TxTok {
                link: &self.link,
                tx: &mut self.tx,
                meta: phy::PacketMeta::default(),
            },
        ))
    }

    fn transmit(&mut self, _ts: SmolInstant) -> Option<TxTok<'_>> {
        if !self.tx.flush(&self.link) {
            return None;
        }
        Some(TxTok {
            link: &self.link,
            tx: &mut self.tx,
            meta: phy::PacketMeta::default(),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// The guest's capabilities: those ringnet gives its own side of the link (plain: checksums
/// computed on transmit, not verified on receive, no segmentation; with offloads: TCP
/// checksums left partial and 64 KiB super-segments, as a Linux guest with TSO sends them).
fn guest_caps(mtu: u32, offloads: Offloads) -> DeviceCapabilities {
    // IPv4 bits only: this guest speaks IPv4, and ringnet's IPv6 TSO workaround (declaring
    // the largest MTU) would make it advertise a 64 KiB MSS, which a Linux guest never does.
    let v4 = Offloads {
        host_tso6: false,
        guest_tso6: false,
        ..offloads
    };
    ringnet::stack::device::capabilities(mtu, v4)
}

/// One ringnet network, its guest stack, a host server and three open connections.
struct Env {
    name: String,
    // Field order matters for drop: the guest device (and its `GuestLink`) before `net`.
    dev: LinkDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    net: Network,
    host: HostServer,
    gateway: IpAddress,
    epoch: Instant,
    next_port: u16,
    pat: Arc<[u8]>,
    sink: SocketHandle,
    source: SocketHandle,
    echo: SocketHandle,
    /// Stream offsets already written to the sink / read from the source.
    to_host_pos: u64,
    from_host_pos: u64,
    rr_seq: u8,
    /// Busy-poll budget of [`Env::wait`].
    spin: Duration,
}

impl Env {
    fn new(driver: EgressDriver, mtu: u32, offloads: Offloads) -> Result<Env, String> {
        let name = format!("datapath/{}/{}", driver.name(), link_name(mtu, offloads));
        let mut cfg = NetworkConfig::default();
        cfg.interface.mtu = mtu;
        cfg.egress.driver = driver;
        let routes = HostRoutes {
            ipv4: true,
            ipv6: false,
        };
        let mut net = Network::with_routes(&cfg, 0, routes).map_err(|e| e.to_string())?;
        let link = net
            .take_link_with(offloads)
            .ok_or("take_link returned None")?;
        net.start().map_err(|e| format!("start: {e}"))?;
        let v4 = net.config().ipv4.ok_or("no IPv4 slot")?;
        let mut dev = LinkDevice {
            link,
            caps: guest_caps(mtu, offloads),
            tx: Tx {
                buf: vec![0; 65_536],
                pending: None,
                hdr: None,
                offload: offloads != Offloads::NONE,
                frames: 0,
                retries: 0,
            },
            rx_frames: 0,
        };
        let hw = HardwareAddress::Ethernet(EthernetAddress(net.guest_mac().0));
        let mut icfg = Config::new(hw);
        icfg.random_seed = u64::from(std::process::id()) ^ 0x5eed;
        let mut iface = Interface::new(icfg, &mut dev, SmolInstant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(v4.guest), v4.prefix_len))
                .expect("room for one address");
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(v4.gateway)
            .map_err(|e| format!("default route: {e:?}"))?;
        let mut env = Env {
            name,
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            net,
            host: HostServer::start(),
            gateway: IpAddress::Ipv4(v4.gateway),
            epoch: Instant::now(),
            next_port: 40_000,
            pat: pattern(),
            sink: SocketHandle::default(),
            source: SocketHandle::default(),
            echo: SocketHandle::default(),
            to_host_pos: 0,
            from_host_pos: 0,
            rr_seq: 0,
            spin: spin_budget(),
        };
        env.sink = env.connect(MODE_SINK)?;
        env.source = env.connect(MODE_SOURCE)?;
        env.echo = env.connect(MODE_ECHO)?;
        Ok(env)
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// One guest stack turn; true when frames moved either way.
    fn pump(&mut self) -> bool {
        let before = (self.dev.rx_frames, self.dev.tx.frames);
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        before != (self.dev.rx_frames, self.dev.tx.frames)
    }

    /// Idle: spin briefly for frames from the gateway, then sleep on `notify_fd` until
    /// frames arrive, a guest timer is due, or `max` passed.
    fn wait(&mut self, max: Duration) {
        let delay = self
            .iface
            .poll_delay(self.now(), &self.sockets)
            .map_or(max, |d| Duration::from_micros(d.total_micros()).min(max));
        if delay.is_zero() || self.dev.tx.pending.is_some() {
            return;
        }
        let arrived = |d: &LinkDevice| d.link.counters().to_guest_frames > d.rx_frames;
        let spin_until = Instant::now() + self.spin.min(delay);
        while Instant::now() < spin_until {
            if arrived(&self.dev) {
                return;
            }
            std::hint::spin_loop();
        }
        self.dev.link.clear_notify();
        if arrived(&self.dev) {
            return;
        }
        let ms = delay.as_millis().clamp(1, 1000) as u64;
        self.dev.link.wait(Duration::from_millis(ms));
    }

    fn fail(&self, what: &str) -> String {
        let mut msg = format!("{}: {what}", self.name);
        if let Some(e) = self.host.error() {
            msg += &format!("; host server: {e}");
        }
        if !self.net.is_running() {
            msg += "; the ringnet poll thread has stopped";
        }
        let c = self.dev.link.counters();
        msg += &format!(
            "; link drops from/to guest {}/{}, guest tx retries {}",
            c.from_guest_drops, c.to_guest_drops, self.dev.tx.retries
        );
        msg
    }

    /// Open a guest connection to the gateway (= host loopback) and send the mode byte.
    fn connect(&mut self, mode: u8) -> Result<SocketHandle, String> {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; GUEST_BUF]),
            tcp::SocketBuffer::new(vec![0; GUEST_BUF]),
        );
        sock.set_nagle_enabled(false);
        let h = self.sockets.add(sock);
        let remote = IpEndpoint::new(self.gateway, self.host.addr.port());
        let local = self.next_port;
        self.next_port += 1;
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, remote, local)
            .map_err(|e| format!("connect: {e}"))?;
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            self.pump();
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            match s.state() {
                tcp::State::Established => break,
                tcp::State::SynSent | tcp::State::SynReceived => {}
                other => return Err(self.fail(&format!("connect ended in state {other}"))),
            }
            if Instant::now() > deadline {
                return Err(self.fail("connect timed out"));
            }
            self.wait(Duration::from_millis(1));
        }
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .send_slice(&[mode])
            .map_err(|e| format!("send: {e}"))?;
        self.pump();
        Ok(h)
    }

    /// Guest → host: write `n` bytes to the sink, return once the host has read them all.
    fn bulk_to_host(&mut self, n: u64) -> Result<Duration, String> {
        let start = Instant::now();
        let end = self.to_host_pos + n;
        let mut pos = self.to_host_pos;
        loop {
            let mut progress = false;
            let sock = self.sockets.get_mut::<tcp::Socket>(self.sink);
            while pos < end {
                let pat = &self.pat;
                let sent = sock
                    .send(|buf| {
                        let k = buf.len().min((end - pos) as usize).min(PERIOD * 1024);
                        let p = phase(pos);
                        buf[..k].copy_from_slice(&pat[p..p + k]);
                        (k, k)
                    })
                    .map_err(|e| format!("send: {e}"))?;
                if sent == 0 {
                    break;
                }
                pos += sent as u64;
                progress = true;
            }
            progress |= self.pump();
            if self.host.sunk.load(Ordering::Acquire) >= end {
                break;
            }
            if let Some(e) = self.host.error() {
                return Err(self.fail(&e));
            }
            if start.elapsed() > XFER_TIMEOUT {
                let got = self.host.sunk.load(Ordering::Acquire) - self.to_host_pos;
                return Err(self.fail(&format!("guest→host stalled: host read {got} of {n} bytes")));
            }
            if !progress {
                self.wait(Duration::from_millis(1));
            }
        }
        let elapsed = start.elapsed();
        let sunk = self.host.sunk.load(Ordering::Acquire);
        if sunk != end {
            return Err(self.fail(&format!("host read {sunk} bytes in all, guest wrote {end}")));
        }
        self.to_host_pos = end;
        Ok(elapsed)
    }

    /// Host → guest: ask the source for `n` bytes and read them all.
    fn bulk_from_host(&mut self, n: u64) -> Result<Duration, String> {
        let start = Instant::now();
        self.sockets
            .get_mut::<tcp::Socket>(self.source)
            .send_slice(&n.to_le_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let end = self.from_host_pos + n;
        let mut pos = self.from_host_pos;
        while pos < end {
            let mut progress = self.pump();
            let sock = self.sockets.get_mut::<tcp::Socket>(self.source);
            let pat = &self.pat;
            let mut bad = None;
            while sock.can_recv() {
                let got = sock
                    .recv(|buf| {
                        if let Err(e) = check(pat, buf, pos) {
                            bad = Some(e);
                        }
                        (buf.len(), buf.len())
                    })
                    .map_err(|e| format!("recv: {e}"))?;
                if let Some(e) = bad.take() {
                    return Err(self.fail(&format!("host→guest: {e}")));
                }
                pos += got as u64;
                progress = true;
            }
            if pos > end {
                return Err(self.fail(&format!("host→guest: {} bytes more than asked", pos - end)));
            }
            if !sock.may_recv() && pos < end {
                let state = sock.state();
                return Err(self.fail(&format!(
                    "host→guest: connection {state} after {} of {n} bytes",
                    pos - self.from_host_pos
                )));
            }
            if start.elapsed() > XFER_TIMEOUT {
                let got = pos - self.from_host_pos;
                return Err(self.fail(&format!(
                    "host→guest stalled: guest read {got} of {n} bytes"
                )));
            }
            if !progress {
                self.wait(Duration::from_millis(1));
            }
        }
        self.from_host_pos = end;
        Ok(start.elapsed())
    }

    /// One byte to the echo server and back.
    fn round_trip(&mut self) -> Result<(), String> {
        let start = Instant::now();
        self.rr_seq = self.rr_seq.wrapping_add(1);
        let seq = self.rr_seq;
        self.sockets
            .get_mut::<tcp::Socket>(self.echo)
            .send_slice(&[seq])
            .map_err(|e| format!("send: {e}"))?;
        loop {
            let progress = self.pump();
            let sock = self.sockets.get_mut::<tcp::Socket>(self.echo);
            let mut b = [0u8; 1];
            if sock.recv_slice(&mut b).map_err(|e| format!("recv: {e}"))? == 1 {
                if b[0] != seq {
                    return Err(self.fail(&format!("echo returned {:#04x}, sent {seq:#04x}", b[0])));
                }
                return Ok(());
            }
            if start.elapsed() > STEP_TIMEOUT {
                return Err(self.fail("round trip timed out"));
            }
            if !progress {
                self.wait(Duration::from_millis(10));
            }
        }
    }

    /// Run `case` once untimed (one full bulk transfer, or 100 round trips).
    fn preflight(&mut self, case: Case) -> Result<(), String> {
        match case {
            Case::ToHost => self.bulk_to_host(PREFLIGHT_BULK).map(drop),
            Case::FromHost => self.bulk_from_host(PREFLIGHT_BULK).map(drop),
            Case::RoundTrip => (0..100).try_for_each(|_| self.round_trip()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    ToHost,
    FromHost,
    RoundTrip,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::ToHost => "guest_to_host",
            Case::FromHost => "host_to_guest",
            Case::RoundTrip => "rr_1byte",
        }
    }
}

/// Frames and time accumulated over the timed transfers of one case.
#[derive(Default)]
struct FrameTally {
    transfers: u64,
    from_guest: u64,
    to_guest: u64,
    time: Duration,
}

impl FrameTally {
    fn report(&self, name: &str) {
        if self.transfers == 0 || self.time.is_zero() {
            return;
        }
        let secs = self.time.as_secs_f64();
        let t = self.transfers as f64;
        eprintln!(
            "frames: {name}: per 64 MiB {:.0} from guest + {:.0} to guest; {:.3} Mframes/s \
             ({:.3} M from guest, {:.3} M to guest) over {} transfers",
            self.from_guest as f64 / t,
            self.to_guest as f64 / t,
            (self.from_guest + self.to_guest) as f64 / secs / 1e6,
            self.from_guest as f64 / secs / 1e6,
            self.to_guest as f64 / secs / 1e6,
            self.transfers,
        );
    }
}

fn timed_bulk(env: &mut Env, tally: &mut FrameTally, to_host: bool) -> Duration {
    let c0 = env.dev.link.counters();
    let r = if to_host {
        env.bulk_to_host(BULK)
    } else {
        env.bulk_from_host(BULK)
    };
    let elapsed = r.unwrap_or_else(|e| panic!("{e}"));
    let c1 = env.dev.link.counters();
    tally.transfers += 1;
    tally.from_guest += c1.from_guest_frames - c0.from_guest_frames;
    tally.to_guest += c1.to_guest_frames - c0.to_guest_frames;
    tally.time += elapsed;
    elapsed
}

/// `mtu<M>`, with `-tso` when the guest negotiated offloads.
fn link_name(mtu: u32, offloads: Offloads) -> String {
    if offloads == Offloads::NONE {
        format!("mtu{mtu}")
    } else {
        format!("mtu{mtu}-tso")
    }
}

fn bench_datapath(c: &mut Criterion) {
    let links = [
        (1500u32, Offloads::NONE),
        (65520, Offloads::NONE),
        (1500, Offloads::TSO),
    ];
    for driver in [EgressDriver::Epoll, EgressDriver::Uring] {
        for (mtu, offloads) in links {
            let mut env = match Env::new(driver, mtu, offloads) {
                Ok(env) => env,
                Err(e) => {
                    let name = format!("datapath/{}/{}", driver.name(), link_name(mtu, offloads));
                    let e = if e.starts_with(&name) {
                        e
                    } else {
                        format!("{name}: {e}")
                    };
                    eprintln!("BROKEN: {e} — all cases skipped");
                    continue;
                }
            };
            let name = env.name.clone();
            for case in [Case::ToHost, Case::FromHost, Case::RoundTrip] {
                // Each connection carries one case, so a broken case leaves the others usable.
                if let Err(e) = env.preflight(case) {
                    let e = e.strip_prefix(&format!("{name}: ")).unwrap_or(&e);
                    eprintln!("BROKEN: {name}/{}: {e} — case skipped", case.name());
                    continue;
                }
                let mut g = c.benchmark_group(&name);
                if case == Case::RoundTrip {
                    g.throughput(Throughput::Elements(1));
                    g.bench_function(case.name(), |b| {
                        b.iter_custom(|iters| {
                            let start = Instant::now();
                            for _ in 0..iters {
                                env.round_trip().unwrap_or_else(|e| panic!("{e}"));
                            }
                            start.elapsed()
                        })
                    });
                } else {
                    g.sample_size(10);
                    g.sampling_mode(SamplingMode::Flat);
                    g.throughput(Throughput::Bytes(BULK));
                    let to_host = case == Case::ToHost;
                    let mut tally = FrameTally::default();
                    g.bench_function(case.name(), |b| {
                        b.iter_custom(|iters| {
                            (0..iters)
                                .map(|_| timed_bulk(&mut env, &mut tally, to_host))
                                .sum()
                        })
                    });
                    tally.report(&format!("{name}/{}", case.name()));
                }
                g.finish();
            }
            let c = env.dev.link.counters();
            if c.from_guest_drops + c.to_guest_drops > 0 || env.dev.tx.retries > 0 {
                eprintln!(
                    "note: {name}: link drops from/to guest {}/{}, guest tx retries {}",
                    c.from_guest_drops, c.to_guest_drops, env.dev.tx.retries
                );
            }
        }
    }
}

criterion_group!(benches, bench_datapath);
criterion_main!(benches);
