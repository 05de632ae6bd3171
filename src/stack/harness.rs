//! A virtual-clock harness for the poll thread (unit tests and fuzz targets only).
//!
//! - The guest is a second smoltcp interface (`Guest`) with real TCP client sockets; its
//!   frames go onto `from_guest` and it receives whatever the engine puts on `to_guest`
//!   (or nothing, while `Guest::link_up` is false: a vanished guest).
//! - The host is [`FakeDriver`]: every socket it "opens" is scripted by the test (connect
//!   result, data, EOF, reset) and records what the engine did with it (bytes sent,
//!   `shutdown`, `close` and whether it was a reset).
//! - Time is a [`VirtualClock`] the test advances; `Harness::run_for` steps the engine and
//!   the guest through it in small increments, so smoltcp's timers (retransmission,
//!   keep-alive, the guest timeout) fire exactly as they would, in microseconds of real
//!   time.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::{Clock, Engine};
use crate::config::EgressDriver;
use crate::config::{HostRoutes, NetworkConfig, SlotConfig};
use crate::egress::{Driver, EgressError, Event, Recv, SockId, SockKind, Token};
use crate::link::{Link, RingPort};
use crate::slab::Key;

/// Time under the test's control.
#[derive(Clone, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

impl Clock for VirtualClock {
    fn elapsed(&self) -> Duration {
        self.now()
    }
}

/// One scripted host socket.
#[derive(Debug)]
pub struct FakeSock {
    pub token: Token,
    #[allow(dead_code)] // for tests that check what kind of socket was opened
    pub kind: SockKind,
    pub remote: SocketAddr,
    /// Bytes the engine sent to the host.
    pub sent: Vec<u8>,
    /// `shutdown(SHUT_WR)` was asked.
    pub shut: bool,
    /// `close` was called: `Some(reset)`.
    pub closed: Option<bool>,
    /// Bytes the host has for the engine.
    pub rx: VecDeque<u8>,
    pub eof: bool,
    pub error: Option<io::ErrorKind>,
}

/// The host side of the harness: the sockets the test scripts.
#[derive(Default)]
pub struct FakeHost {
    pub socks: HashMap<u64, FakeSock>,
    next: u64,
    events: Vec<Event>,
    /// When set, every `open` fails with this (a refused ping socket, no route, EMFILE).
    pub fail_opens: Option<io::ErrorKind>,
}

/// The [`Driver`] over a [`FakeHost`] the test holds too.
pub struct FakeDriver(Arc<Mutex<FakeHost>>);

impl FakeDriver {
    fn host(&self) -> MutexGuard<'_, FakeHost> {
        self.0.lock().expect("fake host lock")
    }
}

impl FakeHost {
    fn sock(&mut self, id: u64) -> &mut FakeSock {
        self.socks.get_mut(&id).expect("a socket the engine opened")
    }

    pub fn connect(&mut self, id: u64, result: io::Result<()>) {
        let token = self.sock(id).token;
        self.events.push(Event::Connected { token, result });
    }

    pub fn host_sends(&mut self, id: u64, data: &[u8]) {
        let s = self.sock(id);
        s.rx.extend(data);
        let token = s.token;
        self.events.push(Event::Readable { token });
    }

    /// The stop eventfd's wake-up (the fake driver watches no fds): a new policy is taken.
    pub fn wake_stop(&mut self) {
        let token = Token(Key::fixed(super::WAKE_STOP).pack(super::T_WAKE));
        self.events.push(Event::Wake { token });
    }

    pub fn host_eof(&mut self, id: u64) {
        let s = self.sock(id);
        s.eof = true;
        let token = s.token;
        self.events.push(Event::Readable { token });
    }

    pub fn host_reset(&mut self, id: u64) {
        let s = self.sock(id);
        s.error = Some(io::ErrorKind::ConnectionReset);
        let token = s.token;
        self.events.push(Event::Readable { token });
    }

    /// Ids of the sockets opened so far, in order.
    pub fn ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.socks.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn live(&mut self, sock: SockId) -> Option<&mut FakeSock> {
        self.socks
            .get_mut(&u64::from(sock.0.index()))
            .filter(|s| s.closed.is_none())
    }
}

impl Driver for FakeDriver {
    fn kind(&self) -> EgressDriver {
        EgressDriver::Epoll
    }

    fn open(
        &mut self,
        kind: SockKind,
        remote: SocketAddr,
        _connect_timeout: Duration,
        token: Token,
    ) -> Result<SockId, EgressError> {
        let mut h = self.host();
        if let Some(e) = h.fail_opens {
            return Err(EgressError::Socket {
                kind,
                remote,
                source: e.into(),
            });
        }
        h.next += 1;
        let id = h.next;
        h.socks.insert(
            id,
            FakeSock {
                token,
                kind,
                remote,
                sent: Vec::new(),
                shut: false,
                closed: None,
                rx: VecDeque::new(),
                eof: false,
                error: None,
            },
        );
        // Ids stay far below u32::MAX in a test.
        #[allow(clippy::cast_possible_truncation)]
        Ok(SockId(Key::fixed(id as u32)))
    }

    fn adopt(
        &mut self,
        _fd: std::os::fd::OwnedFd,
        kind: SockKind,
        peer: SocketAddr,
        token: Token,
    ) -> Result<SockId, EgressError> {
        self.open(kind, peer, Duration::ZERO, token)
    }

    fn unwatch(&mut self, _fd: std::os::fd::RawFd) {}

    fn send(&mut self, sock: SockId, data: &[u8]) -> usize {
        match self.host().live(sock) {
            Some(s) if s.error.is_none() && !s.shut => {
                s.sent.extend_from_slice(data);
                data.len()
            }
            _ => 0,
        }
    }

    fn send_space(&self, _sock: SockId) -> usize {
        usize::MAX
    }

    fn send_pending(&self, _sock: SockId) -> usize {
        0
    }

    fn recv(&mut self, sock: SockId, f: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, Recv> {
        let mut buf = vec![0; 65536];
        let n = self.recv_into(sock, &mut buf)?;
        Ok(f(&buf[..n]))
    }

    fn recv_into(&mut self, sock: SockId, buf: &mut [u8]) -> Result<usize, Recv> {
        let mut h = self.host();
        let Some(s) = h.live(sock) else {
            return Err(Recv::Error(io::ErrorKind::NotFound.into()));
        };
        if !s.rx.is_empty() && !buf.is_empty() {
            let n = buf.len().min(s.rx.len());
            for (b, v) in buf.iter_mut().zip(s.rx.drain(..n)) {
                *b = v;
            }
            return Ok(n);
        }
        if let Some(k) = s.error {
            return Err(Recv::Error(k.into()));
        }
        if s.eof {
            return Err(Recv::Eof);
        }
        Err(Recv::Empty)
    }

    fn shutdown_write(&mut self, sock: SockId) {
        if let Some(s) = self.host().live(sock) {
            s.shut = true;
        }
    }

    fn close(&mut self, sock: SockId, reset: bool) {
        if let Some(s) = self.host().live(sock) {
            s.closed = Some(reset);
        }
    }

    fn watch(&mut self, _fd: std::os::fd::RawFd, _token: Token) -> Result<(), EgressError> {
        Ok(())
    }

    fn wait(
        &mut self,
        _timeout: Option<Duration>,
        events: &mut Vec<Event>,
    ) -> Result<(), EgressError> {
        events.append(&mut self.host().events);
        Ok(())
    }

    fn open_sockets(&self) -> usize {
        self.host()
            .socks
            .values()
            .filter(|s| s.closed.is_none())
            .count()
    }
}

/// The guest's end of the wire: frames in both directions, as plain byte vectors.
#[derive(Default)]
struct Wire {
    /// The guest negotiated offloads ([`Harness::offload`]).
    offloaded: bool,
    to_engine: VecDeque<Vec<u8>>,
    from_engine: VecDeque<Vec<u8>>,
}

impl phy::Device for Wire {
    type RxToken<'a> = GuestRx;
    type TxToken<'a> = GuestTx<'a>;

    fn receive(&mut self, _t: SmolInstant) -> Option<(GuestRx, GuestTx<'_>)> {
        let f = self.from_engine.pop_front()?;
        Some((GuestRx(f), GuestTx(&mut self.to_engine)))
    }

    fn transmit(&mut self, _t: SmolInstant) -> Option<GuestTx<'_>> {
        Some(GuestTx(&mut self.to_engine))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        if self.offloaded {
            // A guest with checksum offload and LRO-like receive: partial checksums are
            // not verified, and super-frames are taken whole (smoltcp checks no frame
            // size on receive); it sends segments up to the MSS the engine advertises.
            caps.checksum.tcp = smoltcp::phy::Checksum::Tx;
            caps.max_transmission_unit = 65_535;
        }
        caps
    }
}

struct GuestRx(Vec<u8>);
impl phy::RxToken for GuestRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct GuestTx<'a>(&'a mut VecDeque<Vec<u8>>);
impl phy::TxToken for GuestTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0; len];
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

/// The harness guest's interface on `wire`: `cidrs`, a default IPv4 route via the gateway.
fn guest_iface(
    wire: &mut Wire,
    hw: HardwareAddress,
    cidrs: &[IpCidr],
    seed: u64,
    now: SmolInstant,
) -> Interface {
    let mut icfg = Config::new(hw);
    icfg.random_seed = seed;
    let mut iface = Interface::new(icfg, wire, now);
    iface.update_ip_addrs(|a| a.extend(cidrs.iter().copied()));
    let _ = iface.routes_mut().add_default_ipv4_route(GW);
    iface
}

/// The guest: one smoltcp interface with TCP client sockets.
pub struct Guest {
    iface: Interface,
    wire: Wire,
    pub sockets: SocketSet<'static>,
    next_port: u16,
    /// While false, frames in either direction are lost (the guest vanished).
    pub link_up: bool,
}

pub const GW: Ipv4Address = Ipv4Address::new(172, 16, 0, 1);

impl Guest {
    fn new(cfg: &SlotConfig) -> Guest {
        let mut wire = Wire::default();
        let hw = HardwareAddress::Ethernet(EthernetAddress(cfg.guest_mac.0));
        let v4 = cfg.ipv4.expect("harness config has IPv4");
        let cidr = IpCidr::new(IpAddress::Ipv4(v4.guest), v4.prefix_len);
        let iface = guest_iface(&mut wire, hw, &[cidr], 7, SmolInstant::from_millis(0));
        Guest {
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
            link_up: true,
        }
    }

    /// A client socket connecting to the gateway at `port`.
    pub fn connect(&mut self, port: u16) -> SocketHandle {
        self.connect_to(IpAddress::Ipv4(GW), port)
    }

    /// A client socket connecting to `ip` at `port` (through the gateway).
    pub fn connect_to(&mut self, ip: IpAddress, port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        self.next_port += 1;
        s.connect(self.iface.context(), (ip, port), self.next_port)
            .expect("connect");
        self.sockets.add(s)
    }

    /// A socket listening on `port` of the guest's address.
    pub fn listen(&mut self, port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        s.listen(port).expect("listen");
        self.sockets.add(s)
    }

    pub fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn poll(&mut self, now: SmolInstant) {
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }
}

/// Offloads from one bit per field, in declaration order (fuzz targets pick them so).
pub fn offloads_from_bits(bits: u8) -> crate::link::Offloads {
    crate::link::Offloads {
        csum: bits & 1 != 0,
        guest_csum: bits & 2 != 0,
        host_tso4: bits & 4 != 0,
        host_tso6: bits & 8 != 0,
        guest_tso4: bits & 16 != 0,
        guest_tso6: bits & 32 != 0,
        mrg_rxbuf: bits & 64 != 0,
    }
}

/// Engine + guest + fake host + virtual clock.
pub struct Harness {
    /// Every frame the engine sent to the guest, when `keep_frames` is set.
    pub frames: Vec<Vec<u8>>,
    /// The virtio-net header of each of `frames`.
    pub headers: Vec<[u8; 12]>,
    /// The virtio-net header put in front of every frame from the guest.
    pub from_guest_hdr: [u8; 12],
    pub keep_frames: bool,
    pub engine: Engine,
    host: Arc<Mutex<FakeHost>>,
    pub link: Arc<Link>,
    pub guest: Guest,
    pub clock: VirtualClock,
}

/// Step of virtual time per harness turn.
const STEP: Duration = Duration::from_millis(5);

impl Harness {
    /// A harness for `toml` (a config file's text; IPv4 only).
    pub fn new(toml: &str) -> Harness {
        Harness::with_routes(
            toml,
            HostRoutes {
                ipv4: true,
                ipv6: false,
            },
        )
    }

    /// A harness for `toml` with the families `routes` active (IPv4 among them: the
    /// harness guest speaks IPv4).
    pub fn with_routes(toml: &str, routes: HostRoutes) -> Harness {
        let cfg: NetworkConfig = toml::from_str(toml).expect("harness config");
        let slot = cfg.derive(0, routes).expect("derive");
        let link = Arc::new(Link::new().expect("link"));
        let clock = VirtualClock::default();
        let host = Arc::new(Mutex::new(FakeHost::default()));
        let engine = Engine::new(
            &slot,
            link.clone(),
            Box::new(FakeDriver(host.clone())),
            Box::new(RingPort::default()),
            Box::new(clock.clone()),
            1,
        )
        .expect("engine");
        Harness {
            frames: Vec::new(),
            headers: Vec::new(),
            from_guest_hdr: [0; 12],
            keep_frames: false,
            engine,
            host,
            link,
            guest: Guest::new(&slot),
            clock,
        }
    }

    /// The scripted host (do not hold the guard across `turn`).
    pub fn host(&self) -> MutexGuard<'_, FakeHost> {
        self.host.lock().expect("fake host lock")
    }

    /// One engine turn and one guest poll at the current virtual time, moving frames.
    pub fn turn(&mut self) {
        let now = SmolInstant::from_micros(self.clock.now().as_micros() as i64);
        self.guest.poll(now);
        while let Some(bytes) = self.guest.wire.to_engine.pop_front() {
            if std::env::var_os("HARNESS_TRACE").is_some() {
                eprintln!("{:?} g->e {}", self.clock.now(), trace(&bytes));
            }
            if !self.guest.link_up {
                continue;
            }
            let mut f = self.link.pool.lease().expect("harness pool has room");
            f.capacity_mut()[..bytes.len()].copy_from_slice(&bytes);
            f.set_len(bytes.len());
            f.hdr_mut().copy_from_slice(&self.from_guest_hdr);
            assert!(self.link.from_guest.push(f), "from_guest full");
        }
        self.engine.turn().expect("engine turn");
        while let Some(f) = self.link.to_guest.pop() {
            if std::env::var_os("HARNESS_TRACE").is_some() {
                eprintln!("{:?} e->g {}", self.clock.now(), trace(f.bytes()));
            }
            if self.keep_frames {
                self.frames.push(f.bytes().to_vec());
                let mut hdr = [0; 12];
                hdr.copy_from_slice(f.hdr());
                self.headers.push(hdr);
            }
            if self.guest.link_up {
                self.guest.wire.from_engine.push_back(f.bytes().to_vec());
            }
        }
        self.guest.poll(now);
    }

    /// The guest negotiated `offloads`: the engine is told (through the link's mailbox and
    /// a stop-fd wake-up), and the harness guest stops verifying TCP checksums and takes
    /// super-frames when it takes partial checksums.
    pub fn offload(&mut self, offloads: crate::link::Offloads) {
        self.link.set_offloads(offloads);
        self.host().wake_stop();
        self.guest.wire.offloaded = offloads.guest_csum;
        // smoltcp reads the device's capabilities when its interface is built.
        let hw = self.guest.iface.hardware_addr();
        let cidrs: Vec<IpCidr> = self.guest.iface.ip_addrs().to_vec();
        let now = SmolInstant::from_micros(self.clock.now().as_micros() as i64);
        self.guest.iface = guest_iface(&mut self.guest.wire, hw, &cidrs, 8, now);
        self.turn();
    }

    /// Put a raw frame from the guest on `from_guest` (it is taken by the next turn).
    pub fn inject(&mut self, bytes: &[u8]) {
        assert!(
            self.inject_with_hdr(&[0; 12], bytes),
            "the harness pool has room and from_guest has space"
        );
    }

    /// Put a raw frame from the guest on `from_guest` behind virtio-net header `hdr`.
    /// Returns false (and drops the frame) when it is larger than a pool slot or
    /// `from_guest` is full, as a port would.
    pub fn inject_with_hdr(&mut self, hdr: &[u8; 12], bytes: &[u8]) -> bool {
        let Some(mut f) = self.link.pool.lease() else {
            return false;
        };
        if bytes.len() > f.capacity_mut().len() {
            return false;
        }
        f.capacity_mut()[..bytes.len()].copy_from_slice(bytes);
        f.set_len(bytes.len());
        f.hdr_mut().copy_from_slice(hdr);
        self.link.from_guest.push(f)
    }

    /// Turns while virtual time advances by `d` in steps of 5 ms.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.clock.now() + d;
        while self.clock.now() < end {
            self.turn();
            self.clock.advance(STEP);
        }
        self.turn();
    }

    /// Run until `cond` holds (checked after every turn), at most `limit` of virtual time.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&mut Harness) -> bool,
    ) -> bool {
        let end = self.clock.now() + limit;
        loop {
            self.turn();
            if cond(self) {
                return true;
            }
            if self.clock.now() >= end {
                return false;
            }
            self.clock.advance(STEP);
        }
    }

    /// A UDP datagram from the guest's IPv4 address at `src_port` to `dst`, carrying
    /// `payload`, as the guest would put it on the wire (to the gateway's MAC).
    pub fn guest_udp(&self, src_port: u16, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        use crate::wire::classify::{emit_udp, udp_payload_offset};
        let a = self.engine.addrs;
        let guest4 = a.guest4.expect("the harness guest has IPv4");
        let src = SocketAddr::new(std::net::IpAddr::V4(guest4), src_port);
        let off = udp_payload_offset(false);
        let mut buf = vec![0u8; off + payload.len()];
        buf[off..].copy_from_slice(payload);
        let n = emit_udp(&mut buf, a.guest_mac, a.gw_mac, src, dst, payload.len())
            .expect("a buffer sized for the datagram");
        buf.truncate(n);
        buf
    }

    /// The engine's addresses (gateway, guest, MACs).
    pub fn addrs(&self) -> super::Addrs {
        self.engine.addrs
    }

    /// A counter of the engine's stats.
    pub fn stat(&self, name: &str) -> u64 {
        self.link
            .stats
            .snapshot()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| v)
    }
}

/// One line about a frame (for `HARNESS_TRACE=1`).
fn trace(bytes: &[u8]) -> String {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
    let Ok(eth) = EthernetFrame::new_checked(bytes) else {
        return "runt".into();
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return format!("{}", eth.ethertype());
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return "bad ipv4".into();
    };
    if ip.next_header() != IpProtocol::Tcp {
        return format!("{}", ip.next_header());
    }
    match TcpPacket::new_checked(ip.payload()) {
        Ok(t) => format!(
            "{}:{} > {}:{} syn={} ack={} fin={} rst={} seq={} ackno={} len={}",
            ip.src_addr(),
            t.src_port(),
            ip.dst_addr(),
            t.dst_port(),
            t.syn(),
            t.ack(),
            t.fin(),
            t.rst(),
            t.seq_number(),
            t.ack_number(),
            t.payload().len()
        ),
        Err(_) => "bad tcp".into(),
    }
}
