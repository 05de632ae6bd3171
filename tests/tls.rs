//! Issue "TLS interception and secret injection": a guest's HTTPS through ringnet's TLS
//! interception, against a real HTTPS server with its own test CA.
//!
//! The host namespace runs dnsmasq (api.test, other.test and bypass.test → 198.51.100.7)
//! and the test kit's rustls server ([`TlsServer`], HTTP/1.1 and HTTP/2, which records every
//! request and connection) on 198.51.100.7:443. ringnet (`attach`) intercepts port 443 and
//! verifies the server against the test CA (`upstream_ca_files`); its own CA is generated
//! into a temporary `ca_dir` and fetched with `ringnet ca`, which the guest's curl trusts.
//! The guest resolves names through ringnet's DNS (`dig @GATEWAY`: the DNS pin the
//! agreement rule needs) and connects with `curl --resolve`.
//!
//! Cases:
//! - `header`: placeholders in two headers (HTTP/1.1) reach the server as the real value;
//!   the server's echo (body and a response header) comes back with the placeholder.
//! - `http2_header`: the same over HTTP/2 (HPACK).
//! - `body_query_chunked`: a sized body, the query string and a chunked body.
//! - `split_records`: a placeholder split across two TLS records (a python client).
//! - `violation`: a placeholder towards a host the secret is not for: the request never
//!   arrives, the flow is closed, the violation counted and reported as a denial event.
//! - `terminate`: the same with `block-and-terminate`: ringnet stops, once.
//! - `disagreement`: Host differing from the SNI, and an SNI never resolved through
//!   ringnet: no substitution, violations counted.
//! - `bypass`: a bypassed name: the server sees the guest's own handshake (its client
//!   certificate) and the bytes untouched.
//! - `untrusted_upstream`: a server with a self-signed certificate: the guest's handshake
//!   fails, nothing reaches the server.
//! - `ca_persists`: the CA survives a restart (`ringnet ca` twice, and a second ringnet
//!   whose leaves the first CA file verifies).
//! - `quic_blocked`: UDP to port 443 is refused while interception is on.
//!
//! The leaf cache's bound under 10,000 names is a unit test (`src/tls/leaf/tests.rs`).

mod common;

use common::*;
use std::time::Duration;

const CASE_LIMIT: Duration = Duration::from_secs(120);
const CMD: Duration = Duration::from_secs(20);
const DIG: Duration = Duration::from_secs(6);
const SERVER: &str = SINK_V4;
const PH: &str = "$RINGNET_SECRET_API_KEY";
const VALUE: &str = "real-key-5f3a9c0d7e";

/// What a case changes from the defaults.
struct Setup {
    inject_in: &'static str,
    on_violation: &'static str,
    bypass: &'static str,
    server_cert: CertChoice,
    client_cert: bool,
    extra_args: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            inject_in: r#"["headers"]"#,
            on_violation: "block-and-log",
            bypass: "[]",
            server_cert: CertChoice::FromCa,
            client_cert: false,
            extra_args: Vec::new(),
        }
    }
}

/// Fields drop in declaration order: the server and dnsmasq before the testbed (which owns
/// the host namespace).
struct Bed {
    srv: TlsServer,
    _dns: DnsServer,
    tb: Testbed,
    /// ringnet's CA certificate, which the guest trusts.
    ca: TempFile,
    /// The server's test CA (for bypassed flows the guest trusts it directly).
    test_ca: TestCa,
    test_ca_file: TempFile,
    config: TempFile,
    _ca_dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(String);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_text(s: &Setup, ca_dir: &str, upstream_ca: &str) -> String {
    format!(
        r#"
[dns]
servers = ["{SERVER}:53"]

[tls]
enabled = true
ca_dir = "{ca_dir}"
upstream_roots = []
upstream_ca_files = ["{upstream_ca}"]
bypass = {bypass}

[[secrets]]
env_var = "API_KEY"
value = "{VALUE}"
hosts = ["api.test"]
inject_in = {inject_in}
on_violation = "{on_violation}"
"#,
        bypass = s.bypass,
        inject_in = s.inject_in,
        on_violation = s.on_violation,
    )
}

fn bed(s: Setup) -> Bed {
    let ca_dir = std::env::temp_dir().join(unique_name("tls-ca"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca_dir = TempDir(ca_dir.to_string_lossy().into_owned());
    let test_ca = TestCa::new("ringnet tests upstream CA");
    let test_ca_file = TempFile::with_contents("upstream-ca.pem", &test_ca.cert_pem());
    bed_with(s, ca_dir, test_ca, test_ca_file)
}

fn bed_with(s: Setup, ca_dir: TempDir, test_ca: TestCa, test_ca_file: TempFile) -> Bed {
    let text = config_text(&s, &ca_dir.0, test_ca_file.path_str());
    let config = TempFile::with_contents("tls.toml", &text);
    let mut opts = Opts::default().config(&text);
    opts.extra = std::iter::once("--stats".to_string())
        .chain(s.extra_args.iter().cloned())
        .collect();
    let tb = Testbed::start(opts);
    let dns = Dnsmasq::new(SERVER)
        .host("api.test", &[SERVER])
        .host("other.test", &[SERVER])
        .host("bypass.test", &[SERVER])
        .ttl(600)
        .start(&tb.host);
    let srv = TlsServer::start(ServerOpts {
        netns: Some(tb.host.name().to_string()),
        cert: s.server_cert,
        request_client_cert: s.client_cert,
        ..ServerOpts::new(
            &test_ca,
            &format!("{SERVER}:443"),
            &["api.test", "other.test", "bypass.test"],
        )
    });
    let ca = TempFile::new("ringnet-ca.pem");
    tb.host
        .ringnet(
            &["ca", "--config", config.path_str(), "--out", ca.path_str()],
            CMD,
        )
        .ok();
    assert!(ca.read().contains("BEGIN CERTIFICATE"), "{}", ca.read());
    Bed {
        srv,
        _dns: dns,
        tb,
        ca,
        test_ca,
        test_ca_file,
        config,
        _ca_dir: ca_dir,
    }
}

impl Bed {
    /// `dig @GATEWAY name` from the guest: ringnet pins the name to the server's address.
    fn resolve(&self, name: &str) {
        let gw = self.tb.slot().gw_v4.to_string();
        let d = dig(&self.tb.guest, &gw, 53, &[name, "A"], DIG);
        d.expect_status("NOERROR");
        assert_eq!(d.data("A"), [SERVER], "{}", d.out);
    }

    /// curl in the guest to `https://NAME…` (NAME resolved to the server by `--resolve`),
    /// trusting ringnet's CA; `args` are curl's further arguments (single-quote-safe).
    fn curl(&self, name: &str, args: &str) -> Output {
        let script = format!(
            "curl -sS --max-time 10 --cacert {ca} --resolve {name}:443:{SERVER} {args}",
            ca = self.ca.path_str(),
        );
        self.tb.guest.sh_timeout(&script, CMD)
    }

    /// Stop ringnet (cleanly) and return its `--stats` counters `names`.
    fn counters(&mut self, names: &[&str]) -> Vec<u64> {
        self.tb.ringnet.assert_alive();
        self.tb.ringnet.stop();
        let stats = self.tb.ringnet.stderr();
        names
            .iter()
            .map(|n| stats_counter(&stats, n).unwrap_or(0))
            .collect()
    }

    /// No request the server received carries the placeholder or was refused: every one
    /// it got is listed for the message.
    fn server_never_saw(&self, what: &str) {
        for r in self.srv.requests() {
            let text = String::from_utf8_lossy(&r.echo()).into_owned();
            assert!(!text.contains(what), "{what} reached the server: {text}");
        }
    }
}

fn header() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup::default());
    b.resolve("api.test");
    let out = b.curl(
        "api.test",
        &format!(
            "--http1.1 -D - -H 'Authorization: Bearer {PH}' -H 'X-Api-Key: {PH}' https://api.test/h1"
        ),
    );
    out.ok();
    let reqs = b.srv.wait_requests(1, CMD);
    let r = &reqs[0];
    assert_eq!(r.http, "1.1");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert_eq!(r.header("x-api-key"), Some(VALUE));
    // The guest sees its placeholder in the echo (body and header), never the value.
    assert!(
        !out.stdout.contains(VALUE),
        "the value reached the guest:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("x-api-key: {PH}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.to_ascii_lowercase().contains(&format!(
            "x-echo-authorization: bearer {}",
            PH.to_ascii_lowercase()
        )),
        "{}",
        out.stdout
    );
    let c = b.counters(&[
        "tls_intercepted",
        "secret_substitutions",
        "secret_scrubbed",
        "tls_leaf_issued",
    ]);
    assert_eq!(c[0], 1, "tls_intercepted {c:?}");
    assert_eq!(c[1], 2, "secret_substitutions {c:?}");
    assert!(c[2] >= 2, "secret_scrubbed {c:?}");
    assert_eq!(c[3], 1, "tls_leaf_issued {c:?}");
}

fn http2_header() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup::default());
    b.resolve("api.test");
    let out = b.curl(
        "api.test",
        &format!("--http2 -H 'X-Api-Key: {PH}' https://api.test/h2"),
    );
    out.ok();
    let reqs = b.srv.wait_requests(1, CMD);
    assert_eq!(reqs[0].http, "2", "HTTP/2 end to end: {:?}", reqs[0]);
    assert_eq!(reqs[0].header("x-api-key"), Some(VALUE));
    assert!(!out.stdout.contains(VALUE), "{}", out.stdout);
    assert!(out.stdout.contains(PH), "{}", out.stdout);
    let conns = b.srv.connections();
    assert_eq!(conns[0].alpn.as_deref(), Some("h2"), "{conns:?}");
    let c = b.counters(&["secret_substitutions"]);
    assert_eq!(c[0], 1, "{c:?}");
}

fn body_query_chunked() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup {
        inject_in: r#"["headers", "query", "body"]"#,
        ..Setup::default()
    });
    b.resolve("api.test");
    b.curl(
        "api.test",
        &format!("--data-binary 'token={PH}&x=1' https://api.test/sized"),
    )
    .ok();
    b.curl("api.test", &format!("'https://api.test/q?key={PH}&y=2'"))
        .ok();
    let body = TempFile::with_contents(
        "chunked-body",
        &format!("{}{PH}{}", "a".repeat(5000), "b".repeat(3000)),
    );
    b.curl(
        "api.test",
        &format!(
            "-H 'Transfer-Encoding: chunked' --data-binary @{} https://api.test/chunked",
            body.path_str()
        ),
    )
    .ok();
    let reqs = b.srv.wait_requests(3, CMD);
    let by_path = |p: &str| {
        reqs.iter()
            .find(|r| r.path.starts_with(p))
            .unwrap_or_else(|| panic!("no request for {p}: {reqs:?}"))
    };
    assert_eq!(by_path("/sized").body_str(), format!("token={VALUE}&x=1"));
    assert_eq!(by_path("/q").path, format!("/q?key={VALUE}&y=2"));
    let chunked = by_path("/chunked");
    assert_eq!(
        chunked.body_str(),
        format!("{}{VALUE}{}", "a".repeat(5000), "b".repeat(3000))
    );
    let c = b.counters(&["secret_substitutions", "secret_violations"]);
    assert_eq!(c, [3, 0]);
}

fn split_records() {
    require_privileges!("dnsmasq", "dig", "python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup::default());
    b.resolve("api.test");
    let req = format!("GET /split HTTP/1.1\\r\\nHost: api.test\\r\\nX-Api-Key: {PH}\\r\\nConnection: close\\r\\n\\r\\n");
    // The cut falls inside the placeholder.
    let cut = req.find("SECRET").unwrap().to_string();
    let out = b.tb.guest.helper(
        "tls_split_client.py",
        &[
            "--connect",
            SERVER,
            "--sni",
            "api.test",
            "--cafile",
            b.ca.path_str(),
            "--request",
            &req,
            "--cut",
            &cut,
        ],
        CMD,
    );
    let j = out.json();
    assert_eq!(j["ok"], true, "{out}");
    let reqs = b.srv.wait_requests(1, CMD);
    assert_eq!(reqs[0].header("x-api-key"), Some(VALUE));
    assert!(!j["response"].as_str().unwrap().contains(VALUE), "{j}");
    let c = b.counters(&["secret_substitutions"]);
    assert_eq!(c[0], 1);
}

fn violation() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let sock = TempFile::new("control.sock");
    let mut b = bed(Setup {
        extra_args: vec!["--control".into(), sock.path_str().into()],
        ..Setup::default()
    });
    b.resolve("other.test");
    let out = b.curl(
        "other.test",
        &format!("-H 'X-Api-Key: {PH}' https://other.test/v"),
    );
    assert!(!out.success(), "the request went through: {out}");
    // A clean request on the same kind of flow still works afterwards.
    b.curl("other.test", "https://other.test/clean").ok();
    b.srv.wait_requests(1, CMD);
    b.server_never_saw(PH);
    b.server_never_saw(VALUE);
    let ev = run_args(
        &[
            ringnet_bin(),
            "ctl",
            sock.path_str(),
            "events",
            "--count",
            "1",
            "--json",
        ],
        CMD,
    );
    let e = ev.ok().json();
    assert_eq!(e["reason"], "secret_violation", "{e}");
    assert_eq!(e["dst"], format!("{SERVER}:443"), "{e}");
    assert!(e["rule"].as_str().unwrap().contains("API_KEY"), "{e}");
    assert!(!e.to_string().contains(VALUE), "{e}");
    let c = b.counters(&["secret_violations", "secret_substitutions"]);
    assert_eq!(c, [1, 0]);
}

fn terminate() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup {
        on_violation: "block-and-terminate",
        ..Setup::default()
    });
    b.resolve("other.test");
    let out = b.curl(
        "other.test",
        &format!("-H 'X-Api-Key: {PH}' https://other.test/t"),
    );
    assert!(!out.success(), "{out}");
    let status = b.tb.ringnet.wait_exit(Duration::from_secs(10));
    let status = status.expect("ringnet stops on a block-and-terminate violation");
    assert!(!status.success(), "{status:?}");
    let err = b.tb.ringnet.stderr();
    assert_eq!(err.matches("terminating: secret").count(), 1, "{err}");
    assert!(err.contains("terminated on secret"), "{err}");
    b.server_never_saw(PH);
}

fn disagreement() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup::default());
    // 1. api.test never resolved through ringnet: no pin, so no agreement.
    let out = b.curl(
        "api.test",
        &format!("-H 'X-Api-Key: {PH}' https://api.test/nopin"),
    );
    assert!(!out.success(), "{out}");
    // 2. Pinned, but Host names another server than the SNI.
    b.resolve("api.test");
    let out = b.curl(
        "api.test",
        &format!("-H 'Host: other.test' -H 'X-Api-Key: {PH}' https://api.test/host"),
    );
    assert!(!out.success(), "{out}");
    b.server_never_saw(PH);
    b.server_never_saw(VALUE);
    let c = b.counters(&["secret_violations", "secret_substitutions"]);
    assert_eq!(c, [2, 0]);
}

fn bypass() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup {
        bypass: r#"["bypass.test"]"#,
        client_cert: true,
        ..Setup::default()
    });
    let (cert, key) = b.test_ca.issue_client("guest client");
    let cert_file = TempFile::with_contents("client.pem", &cert);
    let key_file = TempFile::with_contents("client.key", &key);
    b.resolve("bypass.test");
    // The guest verifies the server's own certificate (the test CA), not a leaf of
    // ringnet's, and presents its client certificate to the server itself.
    let script = format!(
        "curl -sS --max-time 10 --cacert {} --cert {} --key {} --resolve bypass.test:443:{SERVER} -H 'X-Api-Key: {PH}' https://bypass.test/b",
        b.test_ca_file.path_str(),
        cert_file.path_str(),
        key_file.path_str()
    );
    let out = b.tb.guest.sh_timeout(&script, CMD);
    out.ok();
    let reqs = b.srv.wait_requests(1, CMD);
    assert_eq!(reqs[0].header("x-api-key"), Some(PH), "untouched");
    let conns = b.srv.connections();
    assert_eq!(conns[0].sni.as_deref(), Some("bypass.test"));
    assert_eq!(
        conns[0].client_cert.as_deref(),
        Some(&pem_to_der(&cert)[..]),
        "the guest's own certificate"
    );
    let c = b.counters(&["tls_bypassed", "tls_intercepted", "secret_substitutions"]);
    assert_eq!(c, [1, 0, 0]);
}

fn untrusted_upstream() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup {
        server_cert: CertChoice::SelfSigned,
        ..Setup::default()
    });
    b.resolve("api.test");
    let out = b.curl("api.test", "https://api.test/u");
    // curl: 35 (handshake failed: the alert), never a successful response.
    assert_eq!(out.code(), Some(35), "{out}");
    assert!(b.srv.requests().is_empty(), "{:?}", b.srv.requests());
    let c = b.counters(&["tls_upstream_untrusted", "tls_intercepted"]);
    assert_eq!(c, [1, 0]);
}

fn ca_persists() {
    require_privileges!("dnsmasq", "dig", "curl");
    let _wd = Watchdog::new(CASE_LIMIT);
    let first = bed(Setup::default());
    let pem = first.ca.read();
    let again = TempFile::new("ca-again.pem");
    first
        .tb
        .host
        .ringnet(
            &[
                "ca",
                "--config",
                first.config.path_str(),
                "--out",
                again.path_str(),
            ],
            CMD,
        )
        .ok();
    assert_eq!(again.read(), pem, "the same CA on a second ask");
    // A second ringnet on the same ca_dir: the first CA file verifies its leaves.
    let Bed {
        srv,
        _dns,
        tb,
        ca,
        test_ca,
        test_ca_file,
        config: _config,
        _ca_dir,
    } = first;
    drop(srv);
    drop(_dns);
    drop(tb);
    let second = bed_with(Setup::default(), _ca_dir, test_ca, test_ca_file);
    assert_eq!(second.ca.read(), pem, "the CA persisted");
    second.resolve("api.test");
    let script = format!(
        "curl -sS --max-time 10 --cacert {} --resolve api.test:443:{SERVER} https://api.test/again",
        ca.path_str()
    );
    second.tb.guest.sh_timeout(&script, CMD).ok();
}

fn quic_blocked() {
    require_privileges!("dnsmasq", "python3");
    let _wd = Watchdog::new(CASE_LIMIT);
    let mut b = bed(Setup::default());
    let send = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         [s.sendto(b'quic', ('{SERVER}', p)) for p in (443, 443, 4433)]"
    );
    b.tb.guest.exec(&["python3", "-c", &send], CMD).ok();
    std::thread::sleep(Duration::from_millis(300));
    let c = b.counters(&["tls_quic_blocked"]);
    assert_eq!(c, [2], "both datagrams to 443 refused, 4433 relayed");
}

#[test]
fn tls_header() {
    header();
}
#[test]
fn tls_http2_header() {
    http2_header();
}
#[test]
fn tls_body_query_chunked() {
    body_query_chunked();
}
#[test]
fn tls_split_records() {
    split_records();
}
#[test]
fn tls_violation() {
    violation();
}
#[test]
fn tls_terminate() {
    terminate();
}
#[test]
fn tls_disagreement() {
    disagreement();
}
#[test]
fn tls_bypass() {
    bypass();
}
#[test]
fn tls_untrusted_upstream() {
    untrusted_upstream();
}
#[test]
fn tls_ca_persists() {
    ca_persists();
}
#[test]
fn tls_quic_blocked() {
    quic_blocked();
}
