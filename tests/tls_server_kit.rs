//! The HTTPS test server kit (`tests/common/tls_server.rs`) against curl: what the TLS
//! interception tests will rely on, checked on both sides (the server's records and curl's
//! output). All but `in_netns` need no root and run on 127.0.0.1 with a free port.
//!
//! Cases:
//! - `h1_get`: HTTP/1.1 GET with SNI (`--resolve`), an `authorization` and a custom header;
//!   the echo body, `x-echo-authorization`, ALPN `http/1.1`; a second URL in the same curl
//!   reuses the connection (keep-alive).
//! - `h1_post_chunked`: a 200 KB binary body sent chunked is recorded de-chunked; a body
//!   with `expect: 100-continue` and `content-length` arrives whole.
//! - `h2_get`: HTTP/2 GET (`:authority` kept, first), two parallel requests multiplexed on
//!   one connection (`-Z`).
//! - `h2_post`: a 300 KB body over HTTP/2, beyond the 64 KiB initial window, so the
//!   server's WINDOW_UPDATEs are needed.
//! - `client_cert`: with `request_client_cert`, a client certificate from the test CA is
//!   recorded byte for byte; a client without one is still served.
//! - `invalid_cert::{self_signed,wrong_name,expired}`: curl refuses the server (exit 60),
//!   the server records the connection (for the untrusted chains, its failed handshake)
//!   and no request.
//! - `h2_flow_control_and_framing`: a hand-made HTTP/2 client with a 1000-byte stream
//!   window, granting more only when a window is empty: the server never oversends and
//!   finishes `/bytes/100000`; PING is answered; a header block split over a padded HEADERS
//!   with priority fields and a CONTINUATION, and a padded DATA frame, make one request.
//! - `bytes::{h1,h2}`: `/bytes/1048576` downloads exactly 1 MiB of `x`.
//! - `stop_is_prompt`: stop with an idle connection mid-handshake returns at once, and the
//!   port is closed afterwards.
//! - `bind_error`: an address that is not local panics naming it.
//! - `in_netns`: the server bound inside a fresh namespace (v4 and v6 on `lo`), reached
//!   with `ip netns exec … curl` (root; skipped with a reason otherwise, never under CI).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(90);
const CURL_DEADLINE: Duration = Duration::from_secs(20);

/// A CA, its certificate in a file for `--cacert`.
struct Kit {
    ca: TestCa,
    ca_file: TempFile,
}

impl Kit {
    fn new() -> Kit {
        let ca = TestCa::new("tls_server_kit test CA");
        let ca_file = TempFile::with_contents("ca.pem", &ca.cert_pem());
        Kit { ca, ca_file }
    }

    fn opts(&self, names: &[&str]) -> ServerOpts {
        ServerOpts::new(&self.ca, "127.0.0.1:0", names)
    }

    /// `curl -sS --max-time 10 --cacert CA <args…>`.
    fn curl(&self, args: &[&str]) -> Output {
        run_args(&self.curl_args(args), CURL_DEADLINE)
    }

    fn curl_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            self.ca_file.path_str(),
        ];
        full.extend_from_slice(args);
        full
    }
}

/// Binary test data with CR, LF and NUL bytes in it.
fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn binary_file(tag: &str, bytes: &[u8]) -> TempFile {
    let f = TempFile::new(tag);
    fs::write(&f.path, bytes).expect("writing test data");
    f
}

#[test]
fn h1_get() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["upstream.test"]));
    let port = server.port();
    let resolve = format!("upstream.test:{port}:127.0.0.1");
    let url = format!("https://upstream.test:{port}/path?q=1");
    let headers = TempFile::new("headers");
    let out = kit.curl(&[
        "--http1.1",
        "--resolve",
        &resolve,
        "-H",
        "Authorization: Bearer PLACEHOLDER_1",
        "-H",
        "X-Test: one two",
        "-D",
        headers.path_str(),
        &url,
    ]);
    out.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!(
        (r.http.as_str(), r.method.as_str(), r.path.as_str()),
        ("1.1", "GET", "/path?q=1")
    );
    assert_eq!(
        r.header("host"),
        Some(format!("upstream.test:{port}").as_str())
    );
    assert_eq!(r.header("Authorization"), Some("Bearer PLACEHOLDER_1"));
    assert_eq!(r.header("x-test"), Some("one two"));
    assert!(r.body.is_empty());
    assert_eq!(out.stdout.as_bytes(), r.echo().as_slice());
    assert!(out
        .stdout
        .starts_with("GET /path?q=1\nhost: upstream.test:"));
    assert!(out
        .stdout
        .contains("\nauthorization: Bearer PLACEHOLDER_1\n"));
    let head = headers.read().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("x-echo-authorization: bearer placeholder_1\r\n"),
        "{head}"
    );
    let conns = server.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].sni.as_deref(), Some("upstream.test"));
    assert_eq!(conns[0].alpn.as_deref(), Some("http/1.1"));
    assert_eq!(conns[0].client_cert, None);
    assert_eq!(conns[0].error, None);

    // Keep-alive: two URLs, one connection.
    let a = format!("https://upstream.test:{port}/a");
    let b = format!("https://upstream.test:{port}/b");
    kit.curl(&["--http1.1", "--resolve", &resolve, &a, &b]).ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!((reqs[1].path.as_str(), reqs[2].path.as_str()), ("/a", "/b"));
    assert_eq!(
        reqs[1].conn, reqs[2].conn,
        "keep-alive reuses the connection"
    );
    assert_eq!(server.connections().len(), 2);
}

#[test]
fn h1_post_chunked() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["127.0.0.1"]));
    let body = data(200_000);
    let file = binary_file("chunked-body", &body);
    let at = format!("@{}", file.path_str());
    let out = kit.curl(&[
        "--http1.1",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &server.url("/upload"),
    ]);
    out.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/upload"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert!(
        r.body == body,
        "chunked body differs ({} bytes)",
        r.body.len()
    );
    // curl's stdout is text; compare the head of the echo and its length.
    assert!(out.stdout.starts_with("POST /upload\n"));
    assert!(out.stdout.contains("\ntransfer-encoding: chunked\n"));

    // expect: 100-continue with a content-length.
    let small = binary_file("small-body", b"a=1&secret=PLACEHOLDER_2");
    let at = format!("@{}", small.path_str());
    let out = kit.curl(&[
        "--http1.1",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &at,
        &server.url("/form"),
    ]);
    out.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[1];
    assert_eq!(r.header("expect"), Some("100-continue"));
    assert_eq!(r.header("content-length"), Some("24"));
    assert_eq!(r.body_str(), "a=1&secret=PLACEHOLDER_2");
    assert_eq!(out.stdout.as_bytes(), r.echo().as_slice());
    assert!(out.stdout.ends_with("\n\na=1&secret=PLACEHOLDER_2"));
}

#[test]
fn h2_get() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["localhost"]));
    let url = format!("https://localhost:{}/h2?x=y", server.port());
    let headers = TempFile::new("headers");
    let out = kit.curl(&[
        "--http2",
        "-H",
        "Authorization: token PLACEHOLDER_3",
        "-H",
        "X-Test: two",
        "-D",
        headers.path_str(),
        &url,
    ]);
    out.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.http.as_str(), r.method.as_str(), r.path.as_str()),
        ("2", "GET", "/h2?x=y")
    );
    let authority = format!("localhost:{}", server.port());
    assert_eq!(r.headers[0], (":authority".to_string(), authority));
    assert!(r
        .headers
        .iter()
        .all(|(n, _)| n == ":authority" || !n.starts_with(':')));
    assert_eq!(r.header("authorization"), Some("token PLACEHOLDER_3"));
    assert_eq!(r.header("x-test"), Some("two"));
    assert_eq!(out.stdout.as_bytes(), r.echo().as_slice());
    let head = headers.read();
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(
        head.contains("x-echo-authorization: token PLACEHOLDER_3\r\n"),
        "{head}"
    );
    let conns = server.connections();
    assert_eq!(conns[0].alpn.as_deref(), Some("h2"));
    assert_eq!(conns[0].sni.as_deref(), Some("localhost"));

    // Two streams on one connection.
    let a = format!("https://localhost:{}/s1", server.port());
    let b = format!("https://localhost:{}/s2", server.port());
    let out = kit.curl(&["--http2", "-Z", "-w", "%{http_version}\n", &a, &b]);
    out.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    let mut paths: Vec<&str> = reqs[1..].iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/s1", "/s2"]);
    assert_eq!(reqs[1].conn, reqs[2].conn, "both streams on one connection");
    assert_eq!(out.stdout.lines().filter(|l| *l == "2").count(), 2, "{out}");
}

#[test]
fn h2_post() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["127.0.0.1"]));
    let body = data(300_000);
    let file = binary_file("h2-body", &body);
    let at = format!("@{}", file.path_str());
    let echo = TempFile::new("echo");
    let out = kit.curl(&[
        "--http2",
        "--data-binary",
        &at,
        "-H",
        "Content-Type: application/octet-stream",
        "-o",
        echo.path_str(),
        "-w",
        "%{http_version}",
        &server.url("/up?h2"),
    ]);
    out.ok();
    assert_eq!(out.stdout, "2");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.http.as_str(), r.method.as_str(), r.path.as_str()),
        ("2", "POST", "/up?h2")
    );
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == body, "h2 body differs ({} bytes)", r.body.len());
    assert!(fs::read(&echo.path).expect("echo file") == r.echo());
}

#[test]
fn client_cert() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(ServerOpts {
        request_client_cert: true,
        ..kit.opts(&["127.0.0.1"])
    });
    let (cert, key) = kit.ca.issue_client("guest-42");
    let cert_file = TempFile::with_contents("client.pem", &cert);
    let key_file = TempFile::with_contents("client.key", &key);
    kit.curl(&[
        "--cert",
        cert_file.path_str(),
        "--key",
        key_file.path_str(),
        &server.url("/mtls"),
    ])
    .ok();
    // Without a certificate: still served (the certificate is optional).
    kit.curl(&[&server.url("/anonymous")]).ok();
    let conns = server.connections();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].client_cert, Some(pem_to_der(&cert)));
    assert_eq!(conns[1].client_cert, None);
    assert!(conns.iter().all(|c| c.error.is_none()), "{conns:#?}");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/mtls", "/anonymous"]);
}

fn invalid_cert(choice: CertChoice) {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(ServerOpts {
        cert: choice.clone(),
        ..kit.opts(&["localhost"])
    });
    let url = format!("https://localhost:{}/never", server.port());
    let out = kit.curl(&[&url]);
    assert_eq!(
        out.code(),
        Some(60),
        "curl must refuse the certificate: {out}"
    );
    let conns = server.wait_connections(1, Duration::from_secs(5));
    assert_eq!(conns.len(), 1);
    // curl (OpenSSL) fails the handshake on an untrusted chain, but checks the name only
    // after it: the server then sees a good handshake, and EOF.
    if choice != CertChoice::WrongName {
        assert!(conns[0].error.is_some(), "{conns:#?}");
    }
    assert!(server.requests().is_empty());
}

test_cases!(invalid_cert: self_signed(super::CertChoice::SelfSigned), wrong_name(super::CertChoice::WrongName), expired(super::CertChoice::Expired));

fn bytes(http: &str) {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["127.0.0.1"]));
    let file = TempFile::new("bytes");
    let out = kit.curl(&[
        http,
        "-o",
        file.path_str(),
        "-w",
        "%{http_version} %{size_download}",
        &server.url("/bytes/1048576"),
    ]);
    out.ok();
    let want = if http == "--http2" { "2" } else { "1.1" };
    assert_eq!(out.stdout, format!("{want} 1048576"));
    let got = fs::read(&file.path).expect("download");
    assert_eq!(got.len(), 1 << 20);
    assert!(got.iter().all(|b| *b == b'x'));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/bytes/1048576");
}

test_cases!(bytes: h1("--http1.1"), h2("--http2"));

#[test]
fn stop_is_prompt() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["127.0.0.1"]));
    let addr = server.addr();
    // A client that connects and says nothing: its thread waits in the handshake.
    let idle = std::net::TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is still open"
    );
    drop(idle);
}

#[test]
fn bind_error() {
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    // TEST-NET-1: no interface here has it.
    let opts = ServerOpts::new(&kit.ca, "192.0.2.1:443", &["x.test"]);
    let err =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || TlsServer::start(opts)))
            .err()
            .expect("binding a foreign address must fail");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| format!("{err:?}"));
    assert!(msg.contains("192.0.2.1:443"), "{msg}");
}

fn netns_of_thread() -> std::path::PathBuf {
    fs::read_link("/proc/thread-self/ns/net").expect("/proc/thread-self/ns/net")
}

#[test]
fn in_netns() {
    require_privileges!("curl");
    let _w = Watchdog::new(LIMIT);
    let before = netns_of_thread();
    let kit = Kit::new();
    let ns = Netns::new("tlssrv");
    ns.ip(&["addr", "add", "198.51.100.7/32", "dev", "lo"]);
    ns.ip(&["addr", "add", "2001:db8::7/128", "dev", "lo", "nodad"]);
    let names = ["upstream.test", "198.51.100.7", "2001:db8::7"];
    let v4 = TlsServer::start(ServerOpts {
        netns: Some(ns.name().to_string()),
        ..ServerOpts::new(&kit.ca, "198.51.100.7:443", &names)
    });
    let v6 = TlsServer::start(ServerOpts {
        netns: Some(ns.name().to_string()),
        ..ServerOpts::new(&kit.ca, "[2001:db8::7]:443", &names)
    });
    let out = ns.exec(
        &kit.curl_args(&[
            "--http1.1",
            "--resolve",
            "upstream.test:443:198.51.100.7",
            "https://upstream.test/v4",
        ]),
        CURL_DEADLINE,
    );
    out.ok();
    assert!(out.stdout.starts_with("GET /v4\n"), "{out}");
    let out = ns.exec(
        &kit.curl_args(&["--http2", "https://[2001:db8::7]/v6"]),
        CURL_DEADLINE,
    );
    out.ok();
    assert!(out.stdout.starts_with("GET /v6\n"), "{out}");
    let (r4, r6) = (v4.requests(), v6.requests());
    assert_eq!((r4.len(), r6.len()), (1, 1));
    assert_eq!((r4[0].http.as_str(), r6[0].http.as_str()), ("1.1", "2"));
    assert_eq!(v4.connections()[0].sni.as_deref(), Some("upstream.test"));
    assert_eq!(v6.connections()[0].sni, None, "no SNI for an IP literal");
    // Only the servers' threads entered the namespace, never the test thread.
    assert_eq!(
        netns_of_thread(),
        before,
        "the test thread changed namespace"
    );
    drop((v4, v6));
    drop(ns);
}

// ---------------------------------------------------------------------------------------
// A hand-made HTTP/2 client: what curl never does (small windows, padding, CONTINUATION)
// ---------------------------------------------------------------------------------------

type ClientStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

fn h2_client(ca: &TestCa, addr: std::net::SocketAddr) -> ClientStream {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.cert_der()))
        .expect("CA root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let name = "localhost".try_into().expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client connection");
    let sock = std::net::TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, sock)
}

fn send_frame(s: &mut ClientStream, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    use std::io::Write;
    let len = u32::try_from(payload.len()).expect("length").to_be_bytes();
    let mut f = len[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    s.write_all(&f).expect("writing a frame");
    s.flush().expect("flush");
}

fn recv_frame(s: &mut ClientStream) -> (u8, u8, u32, Vec<u8>) {
    use std::io::Read;
    let mut h = [0u8; 9];
    s.read_exact(&mut h).expect("reading a frame header");
    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).expect("reading a frame payload");
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    (h[3], h[4], stream, p)
}

#[test]
fn h2_flow_control_and_framing() {
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const WINDOW_UPDATE: u8 = 8;
    const CONTINUATION: u8 = 9;
    let _w = Watchdog::new(LIMIT);
    let kit = Kit::new();
    let server = TlsServer::start(kit.opts(&["localhost"]));
    let mut s = h2_client(&kit.ca, server.addr());
    use std::io::Write;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    // SETTINGS_INITIAL_WINDOW_SIZE = 1000.
    send_frame(&mut s, SETTINGS, 0, 0, &[0, 4, 0, 0, 0x03, 0xe8]);
    send_frame(&mut s, PING, 0, 0, b"pingpong");
    let mut enc = loona_hpack::Encoder::new();
    // Stream 1: GET /bytes/100000 (more than the connection's 65535-byte window).
    let block = enc.encode([
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", b"https"),
        (b":path", b"/bytes/100000"),
        (b":authority", b"localhost"),
    ]);
    send_frame(&mut s, HEADERS, 0x1 | 0x4, 1, &block);
    // Stream 3: a POST whose header block is split over HEADERS (padded, with priority
    // fields) and CONTINUATION, and whose body comes in a padded DATA frame.
    let block = enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"https"),
        (b":path", b"/padded"),
        (b":authority", b"localhost"),
        (b"x-split", b"yes"),
    ]);
    let (first, rest) = block.split_at(block.len() / 2);
    let mut headers = vec![3u8]; // pad length
    headers.extend_from_slice(&[0, 0, 0, 0, 16]); // exclusive/dependency, weight
    headers.extend_from_slice(first);
    headers.extend_from_slice(&[0; 3]);
    send_frame(&mut s, HEADERS, 0x8 | 0x20, 3, &headers); // PADDED | PRIORITY
    send_frame(&mut s, CONTINUATION, 0x4, 3, rest);
    let mut data = vec![2u8];
    data.extend_from_slice(b"hello");
    data.extend_from_slice(&[0; 2]);
    send_frame(&mut s, DATA, 0x1 | 0x8, 3, &data); // END_STREAM | PADDED

    let (mut stream_left, mut conn_left) = (1000i64, 65_535i64);
    let (mut got1, mut echo3) = (0usize, Vec::new());
    let (mut done1, mut done3, mut pong) = (false, false, false);
    while !(done1 && done3 && pong) {
        let (ty, flags, stream, p) = recv_frame(&mut s);
        match (ty, stream) {
            (DATA, 1) => {
                let n = i64::try_from(p.len()).expect("len");
                assert!(
                    n <= stream_left && n <= conn_left,
                    "DATA of {n} with windows stream {stream_left} conn {conn_left}"
                );
                assert!(p.iter().all(|b| *b == b'x'));
                (stream_left, conn_left) = (stream_left - n, conn_left - n);
                got1 += p.len();
                done1 = flags & 0x1 != 0;
                if stream_left == 0 {
                    send_frame(&mut s, WINDOW_UPDATE, 0, 1, &3000u32.to_be_bytes());
                    stream_left += 3000;
                }
                if conn_left == 0 {
                    send_frame(&mut s, WINDOW_UPDATE, 0, 0, &10_000u32.to_be_bytes());
                    conn_left += 10_000;
                }
            }
            (DATA, 3) => {
                conn_left -= i64::try_from(p.len()).expect("len");
                echo3.extend_from_slice(&p);
                done3 = flags & 0x1 != 0;
            }
            (PING, 0) if flags & 0x1 != 0 => {
                assert_eq!(p, b"pingpong");
                pong = true;
            }
            _ => {} // SETTINGS, its ACK, HEADERS, WINDOW_UPDATE
        }
    }
    assert_eq!(got1, 100_000);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let post = reqs.iter().find(|r| r.path == "/padded").expect("the POST");
    assert_eq!(post.method, "POST");
    assert_eq!(post.header("x-split"), Some("yes"));
    assert_eq!(post.body_str(), "hello");
    assert_eq!(echo3, post.echo());
}
