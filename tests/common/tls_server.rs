//! An HTTPS server with its own test CA that records exactly what it received: the
//! "upstream" of the TLS interception tests.
//!
//! # Theory of operation
//!
//! ```text
//!   TestCa ──issue_server(names)──> leaf (SANs = names) ─┐
//!          ──issue_client(cn)─────> client cert           │  ServerOpts { addr, netns, cert, … }
//!                                                          v
//!   TlsServer::start ── spawns the accept thread ──> [setns(/run/netns/NAME)] bind listen
//!        ^                                             │ reports Ok(bound addr) / Err(why)
//!        └──────────── channel ────────────────────────┘ then accepts, waiting in
//!                                                      │ poll(2) up to 20 ms at a time
//!                                                      │ one thread per connection:
//!                                                      │ TLS handshake → ConnInfo
//!                                                      │ ALPN "h2" → h2::serve, else h1::serve
//!                                                      v
//!                       every complete request → Request (recorded before the response)
//! ```
//!
//! Invariants:
//! - The listener is bound (or `start` has panicked naming the address and namespace) when
//!   `start` returns; a test may connect at once.
//! - A request is recorded before its response is written, so once a client has the
//!   response, [`TlsServer::requests`] holds the request. A connection is recorded when its
//!   handshake ends, successfully or not ([`ConnInfo::error`]); a client that gave up on the
//!   certificate may exit before that, hence [`TlsServer::wait_connections`].
//! - Every socket read and write has a 10 s timeout ([`IO_TIMEOUT`]): a stuck client ends
//!   its connection's thread, never the test.
//! - [`TlsServer::stop`] (or drop) ends the accept loop within 20 ms, shuts down every live
//!   connection's socket (waking its thread) and joins every thread: nothing outlives the
//!   server.
//! - The namespace switch (`setns(2)` with `CLONE_NEWNET`) affects only the accept thread
//!   (and the connection threads it spawns); the test thread stays where it was.
//!
//! Responses (both HTTP versions): `200`, `content-type: text/plain`, `content-length`, and
//! `x-echo-authorization` carrying the request's `authorization` value when it had one. The
//! body is [`Request::echo`]: `METHOD PATH\n`, one `name: value\n` per header, `\n`, the
//! request body. `GET /bytes/N` instead answers N bytes of `x`, written 64 KiB at a time
//! (HTTP/2: as the client's flow-control windows allow), for throughput runs.
//!
//! HTTP/1.1 (RFC 9112): keep-alive until `connection: close` or EOF; bodies by
//! `content-length` or `transfer-encoding: chunked` (chunk extensions and trailers skipped);
//! `expect: 100-continue` gets its interim `100 Continue`. Heads up to 64 KiB.
//!
//! HTTP/2 (RFC 9113), enough for curl/nghttp2: preface, our empty SETTINGS, ACKs of the
//! client's SETTINGS and PINGs; HEADERS (+ CONTINUATION, padding, priority fields) decoded
//! with HPACK (RFC 7541, `loona-hpack`); DATA collected per stream, each received DATA frame
//! returned to the client's windows at once (WINDOW_UPDATE on the connection, and on the
//! stream unless it ended); any number of streams per connection, interleaved. Responses are
//! sent within the client's windows (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE) and
//! SETTINGS_MAX_FRAME_SIZE. Our header blocks use only literals without indexing, so the
//! client's HPACK table size never matters. Not done: server push, priorities, trailers
//! (decoded and dropped), stream-level errors (a protocol error ends the connection).
//!
//! Limits: bodies are kept whole in memory (fine for tests; an upload benchmark would want
//! a discard mode). The module depends only on the crate's dependencies and `loona-hpack`
//! (a dev-dependency), so `examples/https_echo.rs` includes it by path.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// Read and write timeout of every accepted socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loop looks at its stop flag (it waits in poll(2) for a connection,
/// so a connection is accepted at once, not on the next tick).
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// How long `start` waits for the accept thread to report its bind.
const BIND_WAIT: Duration = Duration::from_secs(10);
/// Largest HTTP/1.1 head (or chunk-size / trailer line) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Write size of `/bytes/N` over HTTP/1.1.
const BYTES_CHUNK: usize = 64 * 1024;
/// The SAN of [`CertChoice::WrongName`] certificates.
pub const WRONG_NAME: &str = "wrong-name.invalid";

static XS: [u8; BYTES_CHUNK] = [b'x'; BYTES_CHUNK];

// ---------------------------------------------------------------------------------------
// The test CA
// ---------------------------------------------------------------------------------------

/// A throwaway CA (ECDSA P-256): issues server and client certificates. Cheap to clone
/// (the signing key is shared).
#[derive(Clone)]
pub struct TestCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Arc<Issuer<'static, KeyPair>>,
}

/// Validity of issued certificates: from an hour ago (clock skew) for 30 days.
fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let now = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .expect("the clock reads a representable time");
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(30),
    )
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generating a P-256 key")
}

/// Parameters of a server leaf for `names` (IP literals become IP SANs).
fn server_params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans)
        .unwrap_or_else(|e| panic!("server certificate names {names:?}: {e}"));
    params.distinguished_name = common_name(names.first().copied().unwrap_or("test server"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity();
    params
}

impl TestCa {
    /// A new CA with subject `CN=<name>`, valid from an hour ago for 30 days.
    pub fn new(name: &str) -> TestCa {
        let key = new_key();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity();
        let cert = params.self_signed(&key).expect("self-signing the test CA");
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Arc::new(Issuer::new(params, key)),
        }
    }

    /// The CA certificate, PEM (what a client's `--cacert` takes).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// A server certificate for `names` (DNS names or IP literals, all as SANs; the first
    /// is also the CN) and its PKCS#8 key, both PEM. The chain is the leaf alone: the CA is
    /// the client's trust anchor.
    pub fn issue_server(&self, names: &[&str]) -> (String, String) {
        self.sign(server_params(names))
    }

    /// Like [`TestCa::issue_server`], but expired yesterday (valid for a day a month ago).
    pub fn issue_expired(&self, names: &[&str]) -> (String, String) {
        let mut params = server_params(names);
        let (from, _) = validity();
        params.not_before = from - time::Duration::days(30);
        params.not_after = from - time::Duration::days(1);
        self.sign(params)
    }

    /// A client certificate (`CN=<cn>`, extended key usage clientAuth) and its key, PEM.
    pub fn issue_client(&self, cn: &str) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity();
        self.sign(params)
    }

    /// A server certificate for `names` signed by its own key (no CA vouches for it) and
    /// that key, PEM: what "the upstream certificate is invalid" looks like.
    pub fn self_signed_server(names: &[&str]) -> (String, String) {
        let key = new_key();
        let cert = server_params(names)
            .self_signed(&key)
            .expect("self-signing a server certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = new_key();
        let cert = params
            .signed_by(&key, &*self.issuer)
            .expect("signing with the test CA");
        (cert.pem(), key.serialize_pem())
    }
}

/// The DER of the first certificate of a PEM text (e.g. to compare with
/// [`ConnInfo::client_cert`]).
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap_or_else(|e| panic!("no PEM certificate: {e}"))
        .to_vec()
}

// ---------------------------------------------------------------------------------------
// Options and records
// ---------------------------------------------------------------------------------------

/// Which certificate the server presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertChoice {
    /// Issued by [`ServerOpts::ca`] for [`ServerOpts::names`]: valid.
    FromCa,
    /// Self-signed for the names: no CA vouches for it.
    SelfSigned,
    /// Issued by the CA, but for [`WRONG_NAME`] only.
    WrongName,
    /// Issued by the CA for the names, expired yesterday.
    Expired,
    /// These PEM texts (a chain, leaf first; a PKCS#8, SEC1 or PKCS#1 key).
    Pem { chain: String, key: String },
}

/// What [`TlsServer::start`] builds.
#[derive(Clone)]
pub struct ServerOpts {
    /// Where to listen (port 0: any free port; [`TlsServer::addr`] tells which).
    pub addr: SocketAddr,
    /// A named network namespace (`/run/netns/NAME`), or a path to a namespace file, to
    /// bind in; `None`: the caller's.
    pub netns: Option<String>,
    /// Signs the server certificate and verifies client certificates.
    pub ca: TestCa,
    /// The certificate's SANs (DNS names or IP literals).
    pub names: Vec<String>,
    pub cert: CertChoice,
    /// Ask for a client certificate (optional for the client; one sent must chain to `ca`).
    pub request_client_cert: bool,
    /// ALPN protocols offered, in preference order (default `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
}

impl ServerOpts {
    /// A server on `addr` (`"127.0.0.1:0"`, `"[2001:db8::7]:443"`) presenting a certificate
    /// from `ca` for `names`, offering h2 and http/1.1, without client certificates.
    pub fn new(ca: &TestCa, addr: &str, names: &[&str]) -> ServerOpts {
        ServerOpts {
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("server address {addr:?}: {e}")),
            netns: None,
            ca: ca.clone(),
            names: names.iter().map(|n| n.to_string()).collect(),
            cert: CertChoice::FromCa,
            request_client_cert: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// One complete request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Index of its connection in [`TlsServer::connections`].
    pub conn: usize,
    /// `"1.1"` (or `"1.0"`) or `"2"`.
    pub http: String,
    pub method: String,
    /// The request target with its query (`:path` for HTTP/2).
    pub path: String,
    /// Lowercased names, in received order. Pseudo-headers are left out except
    /// `:authority` (HTTP/2), kept where it came.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The response body for this request: `METHOD PATH\n`, `name: value\n` per header,
    /// `\n`, the body.
    pub fn echo(&self) -> Vec<u8> {
        let mut out = format!("{} {}\n", self.method, self.path).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// N for `/bytes/N` (any method, query ignored).
    fn bytes_len(&self) -> Option<u64> {
        let rest = self.path.strip_prefix("/bytes/")?;
        rest.split('?').next()?.parse().ok()
    }
}

/// One accepted connection, recorded when its handshake ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The SNI the client sent (none for an IP literal).
    pub sni: Option<String>,
    /// The negotiated ALPN protocol (`"h2"`, `"http/1.1"`).
    pub alpn: Option<String>,
    /// The client's end-entity certificate, DER.
    pub client_cert: Option<Vec<u8>>,
    /// `"TLSv1_3"`, `"TLSv1_2"`.
    pub tls_version: Option<String>,
    /// Why the handshake failed (e.g. `received fatal alert: UnknownCA`); `None`: it worked
    /// as far as the server can tell (curl/OpenSSL checks the name only after the
    /// handshake and then just closes).
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    conns: Mutex<Vec<ConnInfo>>,
    /// A clone of every live connection's socket, to shut down on stop.
    live: Mutex<HashMap<u64, TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running server; stopped and joined on drop.
pub struct TlsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TlsServer {
    /// Build the certificate and TLS config, bind (in `opts.netns` if given) and serve.
    /// Returns once the listener is bound; panics naming the address and namespace when
    /// entering the namespace or binding fails.
    pub fn start(opts: ServerOpts) -> TlsServer {
        let place = match &opts.netns {
            Some(ns) => format!("{} in netns {ns}", opts.addr),
            None => opts.addr.to_string(),
        };
        let config = Arc::new(server_config(&opts));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (addr, netns) = (opts.addr, opts.netns.clone());
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let accept = thread::Builder::new()
            .name(format!("tls-server {place}"))
            .spawn(move || {
                let listener = match bind(addr, netns.as_deref()) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(
                    listener
                        .local_addr()
                        .map_err(|e| format!("local_addr: {e}")),
                );
                accept_loop(listener, config, stop2, shared2);
            })
            .expect("spawning the accept thread");
        let addr = match rx.recv_timeout(BIND_WAIT) {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let _ = accept.join();
                panic!("TlsServer on {place}: {e}");
            }
            Err(e) => panic!("TlsServer on {place}: the accept thread did not report: {e}"),
        };
        TlsServer {
            addr,
            stop,
            shared,
            accept: Some(accept),
        }
    }

    /// The bound address (with the real port when `opts.addr` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://<addr><path>` (IPv6 bracketed).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Every complete request so far, in completion order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Every connection whose handshake has ended, in that order.
    pub fn connections(&self) -> Vec<ConnInfo> {
        lock(&self.shared.conns).clone()
    }

    /// [`TlsServer::connections`] once there are at least `n`, or whatever there is after
    /// `timeout`.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> Vec<ConnInfo> {
        wait_for(timeout, || self.connections(), n)
    }

    /// [`TlsServer::requests`] once there are at least `n`, or whatever there is after
    /// `timeout`.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Request> {
        wait_for(timeout, || self.requests(), n)
    }

    /// Stop accepting, shut down live connections, join every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            if h.join().is_err() && !thread::panicking() {
                panic!("TlsServer on {}: the accept thread panicked", self.addr);
            }
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wait_for<T>(timeout: Duration, f: impl Fn() -> Vec<T>, n: usize) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = f();
        if v.len() >= n || Instant::now() >= deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn server_config(opts: &ServerOpts) -> ServerConfig {
    let names: Vec<&str> = opts.names.iter().map(String::as_str).collect();
    let (chain, key) = match &opts.cert {
        CertChoice::FromCa => opts.ca.issue_server(&names),
        CertChoice::SelfSigned => TestCa::self_signed_server(&names),
        CertChoice::WrongName => opts.ca.issue_server(&[WRONG_NAME]),
        CertChoice::Expired => opts.ca.issue_expired(&names),
        CertChoice::Pem { chain, key } => (chain.clone(), key.clone()),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("server certificate chain PEM: {e}"));
    assert!(
        !chain.is_empty(),
        "server certificate chain PEM: no certificate"
    );
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .unwrap_or_else(|e| panic!("server key PEM: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let builder = if opts.request_client_cert {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(opts.ca.cert_der()))
            .expect("the test CA as a root");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .expect("client certificate verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .unwrap_or_else(|e| panic!("server certificate and key: {e}"));
    config.alpn_protocols = opts.alpn.clone();
    config
}

/// Enter the network namespace `netns` (a name under /run/netns, or a path): affects only
/// the calling thread.
fn enter_netns(netns: &str) -> Result<(), String> {
    let path = if netns.contains('/') {
        netns.to_string()
    } else {
        format!("/run/netns/{netns}")
    };
    let f = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    // SAFETY: setns(2) with a namespace fd we hold open; it changes only this thread's
    // network namespace and touches no memory of ours.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns({path}): {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn bind(addr: SocketAddr, netns: Option<&str>) -> Result<TcpListener, String> {
    if let Some(ns) = netns {
        enter_netns(ns)?;
    }
    let l = TcpListener::bind(addr).map_err(|e| format!("binding {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("nonblocking listener: {e}"))?;
    Ok(l)
}

fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((sock, peer)) => {
                workers.retain(|h| !h.is_finished());
                let id = next_id;
                next_id += 1;
                match sock.try_clone() {
                    Ok(c) => {
                        lock(&shared.live).insert(id, c);
                    }
                    Err(e) => {
                        eprintln!("tls_server: cloning the socket of {peer}: {e}");
                        continue;
                    }
                }
                let (config, shared2, stop) = (config.clone(), shared.clone(), stop.clone());
                let spawned = thread::Builder::new()
                    .name(format!("tls-conn {peer}"))
                    .spawn(move || {
                        serve_conn(sock, peer, config, &shared2, &stop);
                        lock(&shared2.live).remove(&id);
                    });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => {
                        eprintln!("tls_server: spawning a thread for {peer}: {e}");
                        lock(&shared.live).remove(&id);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_acceptable(&listener),
            Err(e) => {
                eprintln!("tls_server: accept: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
    drop(listener);
    for s in lock(&shared.live).values() {
        let _ = s.shutdown(Shutdown::Both);
    }
    for h in workers {
        let _ = h.join();
    }
}

/// Waits until `listener` has a connection to accept or [`ACCEPT_POLL`] has passed.
fn wait_acceptable(listener: &TcpListener) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(ACCEPT_POLL.as_millis()).unwrap_or(20);
    // SAFETY: poll(2) on one pollfd we own, valid for the call; it writes only `revents`.
    // A failure (EINTR) just returns early: the caller tries accept again.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn serve_conn(
    mut sock: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
) {
    let setup = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| sock.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| sock.set_nodelay(true));
    if let Err(e) = setup {
        eprintln!("tls_server: socket options for {peer}: {e}");
        return;
    }
    let mut tls = match ServerConnection::new(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tls_server: new TLS connection: {e}");
            return;
        }
    };
    let mut handshake = Ok(());
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut sock) {
            handshake = Err(e);
            break;
        }
    }
    let info = ConnInfo {
        peer,
        sni: tls.server_name().map(str::to_string),
        alpn: tls
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_cert: tls
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec()),
        tls_version: tls.protocol_version().map(|v| format!("{v:?}")),
        error: handshake.err().map(|e| e.to_string()),
    };
    let failed = info.error.is_some();
    let h2 = info.alpn.as_deref() == Some("h2");
    let idx = {
        let mut conns = lock(&shared.conns);
        conns.push(info);
        conns.len() - 1
    };
    if failed {
        return;
    }
    let mut conn = Conn {
        tls: StreamOwned::new(tls, sock),
        buf: Vec::new(),
        idx,
        shared: shared.clone(),
    };
    let served = if h2 {
        h2::serve(&mut conn)
    } else {
        h1::serve(&mut conn)
    };
    match served {
        Ok(()) => {
            conn.tls.conn.send_close_notify();
            let _ = conn.tls.flush();
        }
        Err(e) if !stop.load(Ordering::SeqCst) && !quiet(&e) => {
            eprintln!("tls_server: connection {idx} from {peer}: {e}");
        }
        Err(_) => {}
    }
}

/// Errors that are just a client going away or going quiet.
fn quiet(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | BrokenPipe | WouldBlock | TimedOut | ConnectionAborted
    )
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A served TLS connection: the stream, bytes read but not yet consumed, the records.
struct Conn {
    tls: StreamOwned<ServerConnection, TcpStream>,
    buf: Vec<u8>,
    idx: usize,
    shared: Arc<Shared>,
}

impl Conn {
    /// Read more plaintext into `buf`; false at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.tls.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n > 0)
    }

    /// Make `buf` hold at least `n` bytes; EOF first is an error.
    fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Remove and return the first `n` bytes of `buf`.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// The next CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let l = self.take(i + 2);
                return Ok(String::from_utf8_lossy(&l[..i]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line longer than 64 KiB"));
            }
            if !self.fill()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn record(&self, req: Request) {
        lock(&self.shared.requests).push(req);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------------------

mod h1 {
    use super::*;

    pub(super) fn serve(conn: &mut Conn) -> io::Result<()> {
        loop {
            let head_len = loop {
                if let Some(i) = find(&conn.buf, b"\r\n\r\n") {
                    break i + 4;
                }
                if conn.buf.len() > MAX_HEAD {
                    return bad_request(conn, "head longer than 64 KiB");
                }
                if !conn.fill()? {
                    return Ok(()); // EOF between requests
                }
            };
            let head = conn.take(head_len);
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Request::new(&mut slots);
            match parsed.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {}
                Ok(httparse::Status::Partial) => return bad_request(conn, "partial head"),
                Err(e) => return bad_request(conn, &format!("bad head: {e}")),
            }
            let http10 = parsed.version == Some(0);
            let mut req = Request {
                conn: conn.idx,
                http: if http10 { "1.0" } else { "1.1" }.to_string(),
                method: parsed.method.unwrap_or("").to_string(),
                path: parsed.path.unwrap_or("").to_string(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
                body: Vec::new(),
            };
            if has_token(&req, "expect", "100-continue") {
                conn.tls.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                conn.tls.flush()?;
            }
            if has_token(&req, "transfer-encoding", "chunked") {
                req.body = read_chunked(conn)?;
            } else if let Some(len) = req.header("content-length") {
                let Ok(len) = len.trim().parse::<usize>() else {
                    return bad_request(conn, "bad content-length");
                };
                conn.need(len)?;
                req.body = conn.take(len);
            }
            let close = has_token(&req, "connection", "close")
                || (http10 && !has_token(&req, "connection", "keep-alive"));
            conn.record(req.clone());
            respond(conn, &req, close)?;
            if close {
                return Ok(());
            }
        }
    }

    /// Header `name` (all its values) lists `token` (case-insensitive, comma-separated).
    fn has_token(req: &Request, name: &str, token: &str) -> bool {
        req.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A chunked body (RFC 9112 §7.1): sizes in hex, extensions and trailers skipped.
    fn read_chunked(conn: &mut Conn) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = conn.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|e| invalid(format!("chunk size {size:?}: {e}")))?;
            if size == 0 {
                while !conn.line()?.is_empty() {}
                return Ok(body);
            }
            conn.need(size + 2)?;
            let chunk = conn.take(size + 2);
            if &chunk[size..] != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF"));
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    fn respond(conn: &mut Conn, req: &Request, close: bool) -> io::Result<()> {
        let bytes = req.bytes_len();
        let echo = if bytes.is_none() {
            req.echo()
        } else {
            Vec::new()
        };
        let len = bytes.unwrap_or(echo.len() as u64);
        let mut head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n");
        if let Some(auth) = req.header("authorization") {
            head.push_str(&format!("x-echo-authorization: {auth}\r\n"));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        conn.tls.write_all(head.as_bytes())?;
        if req.method != "HEAD" {
            match bytes {
                Some(mut left) => {
                    while left > 0 {
                        let n = usize::try_from(left).map_or(BYTES_CHUNK, |l| l.min(BYTES_CHUNK));
                        conn.tls.write_all(&XS[..n])?;
                        left -= n as u64;
                    }
                }
                None => conn.tls.write_all(&echo)?,
            }
        }
        conn.tls.flush()
    }

    fn bad_request(conn: &mut Conn, why: &str) -> io::Result<()> {
        let body = format!("{why}\n");
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.tls.write_all(resp.as_bytes())?;
        conn.tls.flush()?;
        Err(invalid(why.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2
// ---------------------------------------------------------------------------------------

mod h2 {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    // Frame types (RFC 9113 §6).
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const WINDOW_UPDATE: u8 = 0x8;
    const CONTINUATION: u8 = 0x9;

    // Flags.
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;

    // Settings (RFC 9113 §6.5.2).
    const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
    const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

    /// The default initial window and largest frame, both directions (we announce none).
    const DEFAULT_WINDOW: i64 = 65_535;
    const DEFAULT_MAX_FRAME: usize = 16_384;

    /// A received frame: type, flags, stream, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    /// A request stream still receiving.
    struct StreamIn {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    /// A response body still to send.
    struct Outgoing {
        stream: u32,
        body: Body,
    }

    enum Body {
        /// An echo: the bytes and how many are sent.
        Echo(Vec<u8>, usize),
        /// `/bytes/N`: how many `x` are left.
        Xs(u64),
    }

    impl Body {
        fn left(&self) -> u64 {
            match self {
                Body::Echo(b, sent) => (b.len() - sent) as u64,
                Body::Xs(n) => *n,
            }
        }
    }

    struct H2 {
        decoder: loona_hpack::Decoder<'static>,
        streams: HashMap<u32, StreamIn>,
        /// Our send window per stream we may still send on (RFC 9113 §6.9).
        window_to_client: HashMap<u32, i64>,
        conn_window_to_client: i64,
        client_initial_window: i64,
        client_max_frame: usize,
        out: VecDeque<Outgoing>,
        /// A header block waiting for CONTINUATION: stream, END_STREAM, bytes so far.
        partial: Option<(u32, bool, Vec<u8>)>,
        goaway: bool,
    }

    pub(super) fn serve(conn: &mut Conn) -> io::Result<()> {
        conn.need(PREFACE.len())?;
        if conn.take(PREFACE.len()) != PREFACE {
            return Err(invalid("no HTTP/2 preface"));
        }
        write_frame(conn, SETTINGS, 0, 0, &[])?;
        let mut h2 = H2 {
            decoder: loona_hpack::Decoder::new(),
            streams: HashMap::new(),
            window_to_client: HashMap::new(),
            conn_window_to_client: DEFAULT_WINDOW,
            client_initial_window: DEFAULT_WINDOW,
            client_max_frame: DEFAULT_MAX_FRAME,
            out: VecDeque::new(),
            partial: None,
            goaway: false,
        };
        loop {
            h2.send_bodies(conn)?;
            conn.tls.flush()?;
            if h2.goaway && h2.out.is_empty() {
                return Ok(());
            }
            let Some((ty, flags, stream, payload)) = read_frame(conn)? else {
                return Ok(());
            };
            h2.handle(conn, ty, flags, stream, payload)?;
        }
    }

    /// The next frame, or `None` at EOF on a frame boundary.
    fn read_frame(conn: &mut Conn) -> io::Result<Option<Frame>> {
        while conn.buf.len() < 9 {
            if !conn.fill()? {
                if conn.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let b = &conn.buf;
        let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
        let (ty, flags) = (b[3], b[4]);
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
        if len > DEFAULT_MAX_FRAME {
            return Err(invalid(format!("frame of {len} bytes (max 16384)")));
        }
        conn.need(9 + len)?;
        let frame = conn.take(9 + len);
        Ok(Some((ty, flags, stream, frame[9..].to_vec())))
    }

    fn write_frame(
        conn: &mut Conn,
        ty: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .expect("frame fits")
            .to_be_bytes();
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len[1..]);
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        conn.tls.write_all(&f)
    }

    /// The payload without its padding (and priority fields): RFC 9113 §6.1, §6.2.
    fn unpad(flags: u8, mut p: Vec<u8>, priority: bool) -> io::Result<Vec<u8>> {
        let mut start = 0;
        let mut end = p.len();
        if flags & PADDED != 0 {
            let pad = usize::from(
                *p.first()
                    .ok_or_else(|| invalid("padded frame without a pad length"))?,
            );
            start = 1;
            end = end
                .checked_sub(pad)
                .filter(|e| *e >= start)
                .ok_or_else(|| invalid("padding longer than the frame"))?;
        }
        if priority && flags & PRIORITY != 0 {
            start += 5;
            if start > end {
                return Err(invalid("HEADERS too short for its priority fields"));
            }
        }
        p.truncate(end);
        p.drain(..start);
        Ok(p)
    }

    fn window_update(conn: &mut Conn, stream: u32, n: usize) -> io::Result<()> {
        let n = u32::try_from(n).expect("a frame's length fits in u32");
        write_frame(conn, WINDOW_UPDATE, 0, stream, &n.to_be_bytes())
    }

    impl H2 {
        fn handle(
            &mut self,
            conn: &mut Conn,
            ty: u8,
            flags: u8,
            stream: u32,
            p: Vec<u8>,
        ) -> io::Result<()> {
            if self.partial.is_some() && ty != CONTINUATION {
                return Err(invalid("header block interrupted"));
            }
            match ty {
                DATA => {
                    if stream == 0 {
                        return Err(invalid("DATA on stream 0"));
                    }
                    let received = p.len();
                    let data = unpad(flags, p, false)?;
                    let end = flags & END_STREAM != 0;
                    if received > 0 {
                        window_update(conn, 0, received)?;
                        if !end {
                            window_update(conn, stream, received)?;
                        }
                    }
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.body.extend_from_slice(&data);
                    }
                    if end {
                        self.finish(conn, stream)?;
                    }
                }
                HEADERS => {
                    if stream == 0 {
                        return Err(invalid("HEADERS on stream 0"));
                    }
                    let block = unpad(flags, p, true)?;
                    let end_stream = flags & END_STREAM != 0;
                    if flags & END_HEADERS != 0 {
                        self.header_block(conn, stream, end_stream, &block)?;
                    } else {
                        self.partial = Some((stream, end_stream, block));
                    }
                }
                CONTINUATION => {
                    let Some((s, end_stream, mut block)) = self.partial.take() else {
                        return Err(invalid("CONTINUATION without HEADERS"));
                    };
                    if s != stream {
                        return Err(invalid("CONTINUATION on another stream"));
                    }
                    block.extend_from_slice(&p);
                    if flags & END_HEADERS != 0 {
                        self.header_block(conn, stream, end_stream, &block)?;
                    } else {
                        self.partial = Some((s, end_stream, block));
                    }
                }
                RST_STREAM => {
                    self.streams.remove(&stream);
                    self.window_to_client.remove(&stream);
                    self.out.retain(|o| o.stream != stream);
                }
                SETTINGS if flags & ACK == 0 => {
                    if !p.len().is_multiple_of(6) {
                        return Err(invalid("SETTINGS length not a multiple of 6"));
                    }
                    for s in p.chunks_exact(6) {
                        let id = u16::from_be_bytes([s[0], s[1]]);
                        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        match id {
                            SETTINGS_INITIAL_WINDOW_SIZE => {
                                let delta = i64::from(value) - self.client_initial_window;
                                self.client_initial_window = i64::from(value);
                                for w in self.window_to_client.values_mut() {
                                    *w += delta;
                                }
                            }
                            SETTINGS_MAX_FRAME_SIZE => {
                                self.client_max_frame =
                                    usize::try_from(value).unwrap_or(DEFAULT_MAX_FRAME);
                            }
                            _ => {}
                        }
                    }
                    write_frame(conn, SETTINGS, ACK, 0, &[])?;
                }
                PING if flags & ACK == 0 => write_frame(conn, PING, ACK, 0, &p)?,
                GOAWAY => self.goaway = true,
                WINDOW_UPDATE => {
                    let b: [u8; 4] = p
                        .as_slice()
                        .try_into()
                        .map_err(|_| invalid("WINDOW_UPDATE length not 4"))?;
                    let incr = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
                    if stream == 0 {
                        self.conn_window_to_client += incr;
                    } else if let Some(w) = self.window_to_client.get_mut(&stream) {
                        *w += incr;
                    }
                }
                _ => {} // PRIORITY, SETTINGS/PING acks, unknown types
            }
            Ok(())
        }

        /// A complete header block: a new request, or trailers (decoded, dropped).
        fn header_block(
            &mut self,
            conn: &mut Conn,
            stream: u32,
            end_stream: bool,
            block: &[u8],
        ) -> io::Result<()> {
            let fields = self
                .decoder
                .decode(block)
                .map_err(|e| invalid(format!("HPACK: {e:?}")))?;
            if let Entry::Vacant(slot) = self.streams.entry(stream) {
                let mut s = StreamIn {
                    method: String::new(),
                    path: String::new(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                for (n, v) in fields {
                    let n = String::from_utf8_lossy(&n).to_ascii_lowercase();
                    let v = String::from_utf8_lossy(&v).into_owned();
                    match n.as_str() {
                        ":method" => s.method = v,
                        ":path" => s.path = v,
                        ":authority" => s.headers.push((n, v)),
                        _ if n.starts_with(':') => {}
                        _ => s.headers.push((n, v)),
                    }
                }
                slot.insert(s);
                self.window_to_client
                    .insert(stream, self.client_initial_window);
            }
            if end_stream {
                self.finish(conn, stream)?;
            }
            Ok(())
        }

        /// The client ended `stream`: record the request, send the response's HEADERS and
        /// queue its body.
        fn finish(&mut self, conn: &mut Conn, stream: u32) -> io::Result<()> {
            let Some(s) = self.streams.remove(&stream) else {
                return Ok(());
            };
            let req = Request {
                conn: conn.idx,
                http: "2".to_string(),
                method: s.method,
                path: s.path,
                headers: s.headers,
                body: s.body,
            };
            conn.record(req.clone());
            let body = match req.bytes_len() {
                Some(n) => Body::Xs(n),
                None => Body::Echo(req.echo(), 0),
            };
            let len = body.left();
            let mut block = vec![0x88]; // :status 200, static table index 8
            literal(&mut block, b"content-type", b"text/plain");
            literal(&mut block, b"content-length", len.to_string().as_bytes());
            if let Some(auth) = req.header("authorization") {
                literal(&mut block, b"x-echo-authorization", auth.as_bytes());
            }
            let no_body = len == 0 || req.method == "HEAD";
            let end = if no_body { END_STREAM } else { 0 };
            let mut chunks = block.chunks(self.client_max_frame).peekable();
            let mut ty = HEADERS;
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                let flags =
                    (if ty == HEADERS { end } else { 0 }) | (if last { END_HEADERS } else { 0 });
                write_frame(conn, ty, flags, stream, c)?;
                ty = CONTINUATION;
            }
            if no_body {
                self.window_to_client.remove(&stream);
            } else {
                self.out.push_back(Outgoing { stream, body });
            }
            Ok(())
        }

        /// Send queued bodies as far as the client's windows allow.
        fn send_bodies(&mut self, conn: &mut Conn) -> io::Result<()> {
            let mut i = 0;
            while i < self.out.len() {
                let o = &mut self.out[i];
                let w = self.window_to_client.entry(o.stream).or_insert(0);
                while o.body.left() > 0 {
                    let room = (*w).min(self.conn_window_to_client);
                    if room <= 0 {
                        break;
                    }
                    let room = u64::try_from(room).unwrap_or(0);
                    let n = o.body.left().min(room).min(self.client_max_frame as u64);
                    let n_usize = usize::try_from(n).expect("at most a frame");
                    let last = n == o.body.left();
                    let flags = if last { END_STREAM } else { 0 };
                    match &mut o.body {
                        Body::Echo(b, sent) => {
                            write_frame(conn, DATA, flags, o.stream, &b[*sent..*sent + n_usize])?;
                            *sent += n_usize;
                        }
                        Body::Xs(left) => {
                            write_frame(conn, DATA, flags, o.stream, &XS[..n_usize])?;
                            *left -= n;
                        }
                    }
                    let n = i64::try_from(n).expect("at most a frame");
                    *w -= n;
                    self.conn_window_to_client -= n;
                }
                if o.body.left() == 0 {
                    let stream = o.stream;
                    self.window_to_client.remove(&stream);
                    self.out.remove(i);
                } else {
                    i += 1;
                }
            }
            Ok(())
        }
    }

    /// An HPACK literal header field without indexing, new name, no Huffman (RFC 7541
    /// §6.2.2).
    fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x00);
        string(out, name);
        string(out, value);
    }

    /// An HPACK string literal (H = 0) with its 7-bit-prefix length (RFC 7541 §5.1, §5.2).
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        let mut len = s.len();
        if len < 127 {
            out.push(len as u8);
        } else {
            out.push(127);
            len -= 127;
            while len >= 128 {
                out.push((len % 128) as u8 | 0x80);
                len /= 128;
            }
            out.push(len as u8);
        }
        out.extend_from_slice(s);
    }
}
