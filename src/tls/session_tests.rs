//! A session between an in-memory rustls guest and an in-memory rustls server: handshakes,
//! verification, bypass, rewriting, all without sockets.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::session::{Kind, Session, SessionError, Shared};
use super::upstream::{provider, Upstream};
use super::{Ca, LeafCache, TlsConfig};
use crate::secrets::Secrets;

const PLACEHOLDER: &str = "$RINGNET_SECRET_API_KEY";
const VALUE: &str = "real-value-0123456789";

/// ringnet's CA (generation is slow in debug builds: once).
fn ringnet_ca() -> Arc<Ca> {
    static CA: OnceLock<Arc<Ca>> = OnceLock::new();
    CA.get_or_init(|| Arc::new(Ca::generate(SystemTime::now()).expect("CA").0))
        .clone()
}

/// A server's CA and a certificate for `names` signed by it: (CA PEM, chain, key).
fn server_identity(
    names: &[&str],
) -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    (ca_cert.pem(), vec![cert.der().clone()], key)
}

struct Bed {
    guest: ClientConnection,
    server: ServerConnection,
    session: Session,
    /// Bytes the session sent the server, as received (for the bypass check).
    to_server_raw: Vec<u8>,
    result: Result<(), String>,
    violation: bool,
    untrusted: bool,
    /// What the guest's rustls said when it failed.
    guest_error: Option<String>,
}

struct Setup {
    sni: Option<&'static str>,
    /// The server's certificate chains to the CA the session trusts.
    trusted: bool,
    bypass: Vec<String>,
    guest_alpn: Vec<&'static [u8]>,
    server_alpn: Vec<&'static [u8]>,
    pinned: Vec<String>,
    secrets: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sni: Some("api.test"),
            trusted: true,
            bypass: Vec::new(),
            guest_alpn: vec![b"h2", b"http/1.1"],
            server_alpn: vec![b"http/1.1"],
            pinned: vec!["api.test".into()],
            secrets: r#"
                [[secrets]]
                env_var = "API_KEY"
                value = "real-value-0123456789"
                hosts = ["api.test"]
                inject_in = ["headers", "body"]
            "#,
        }
    }
}

#[derive(serde::Deserialize)]
struct Doc {
    #[serde(default)]
    secrets: Vec<crate::secrets::SecretSpec>,
}

fn bed(s: Setup) -> Bed {
    let dir = crate::tls::ca::tests::temp_dir("session");
    std::fs::create_dir_all(&dir).unwrap();
    let (server_ca, chain, key) = server_identity(&["api.test", "other.test"]);
    let (other_ca, ..) = server_identity(&["x.test"]);
    let ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&ca_file, if s.trusted { &server_ca } else { &other_ca }).unwrap();
    let tls = TlsConfig {
        enabled: true,
        upstream_roots: Vec::new(),
        upstream_ca_files: vec![ca_file],
        bypass: s.bypass.clone(),
        ..TlsConfig::default()
    };
    let doc: Doc = toml::from_str(s.secrets).unwrap();
    let shared = Arc::new(Shared {
        upstream: Upstream::from_config(&tls).unwrap(),
        leaves: Mutex::new(LeafCache::new(ringnet_ca(), 16).unwrap()),
        secrets: Arc::new(Secrets::load(&doc.secrets).unwrap()),
        tls,
    });
    std::fs::remove_dir_all(&dir).unwrap();

    // The guest trusts ringnet's CA, and (for bypassed flows) the server's.
    let mut roots = RootCertStore::empty();
    roots.add(ringnet_ca().cert_der().clone()).unwrap();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut gc = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    gc.alpn_protocols = s.guest_alpn.iter().map(|p| p.to_vec()).collect();
    gc.enable_sni = s.sni.is_some();
    let name = ServerName::try_from(s.sni.unwrap_or("api.test")).unwrap();
    let guest = ClientConnection::new(Arc::new(gc), name.to_owned()).unwrap();

    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    sc.alpn_protocols = s.server_alpn.iter().map(|p| p.to_vec()).collect();
    let server = ServerConnection::new(Arc::new(sc)).unwrap();
    Bed {
        guest,
        server,
        session: Session::new(shared, s.pinned),
        to_server_raw: Vec::new(),
        result: Ok(()),
        violation: false,
        untrusted: false,
        guest_error: None,
    }
}

impl Bed {
    fn note(&mut self, r: Result<(), SessionError>) {
        if let Err(e) = r {
            self.violation |= e.violation().is_some();
            self.untrusted |= e.upstream_untrusted();
            if self.result.is_ok() {
                self.result = Err(e.to_string());
            }
        }
    }

    /// Moves bytes between the three until nothing moves; each hop in pieces of `chunk`.
    fn pump(&mut self, chunk: usize) {
        for _ in 0..200 {
            let mut moved = false;
            let mut out = Vec::new();
            while self.guest.wants_write() {
                self.guest.write_tls(&mut out).unwrap();
            }
            for piece in out.chunks(chunk) {
                let r = self.session.from_guest(piece, SystemTime::now());
                self.note(r);
                moved = true;
            }
            let to_host = std::mem::take(&mut self.session.to_host);
            if !to_host.is_empty() {
                moved = true;
                self.to_server_raw.extend_from_slice(&to_host);
                let mut rd = &to_host[..];
                while !rd.is_empty() {
                    if self.server.read_tls(&mut rd).is_err() {
                        break;
                    }
                    if self.server.process_new_packets().is_err() {
                        break;
                    }
                }
            }
            let mut out = Vec::new();
            while self.server.wants_write() {
                self.server.write_tls(&mut out).unwrap();
            }
            for piece in out.chunks(chunk) {
                let r = self.session.from_host(piece);
                self.note(r);
                moved = true;
            }
            let to_guest = std::mem::take(&mut self.session.to_guest);
            if !to_guest.is_empty() {
                moved = true;
                let mut rd = &to_guest[..];
                while !rd.is_empty() {
                    if self.guest.read_tls(&mut rd).is_err() {
                        break;
                    }
                    if let Err(e) = self.guest.process_new_packets() {
                        self.guest_error.get_or_insert(e.to_string());
                        break;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pump never settles");
    }

    fn server_plain(&mut self) -> Vec<u8> {
        read_all(self.server.reader())
    }

    fn guest_plain(&mut self) -> Vec<u8> {
        read_all(self.guest.reader())
    }
}

fn read_all(mut r: rustls::Reader<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn request(extra: &str) -> String {
    format!("GET /x HTTP/1.1\r\nHost: api.test\r\n{extra}\r\n")
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn tls_session_intercepts_substitutes_and_scrubs() {
    let mut b = bed(Setup::default());
    b.pump(usize::MAX);
    assert_eq!(b.result, Ok(()));
    assert_eq!(b.guest_error, None);
    assert!(!b.guest.is_handshaking(), "guest handshake done");
    assert_eq!(b.session.kind(), Kind::Intercepted);
    assert_eq!(
        b.guest.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the server's choice"
    );
    let req = request(&format!("X-Key: {PLACEHOLDER}\r\n"));
    b.guest.writer().write_all(req.as_bytes()).unwrap();
    b.pump(usize::MAX);
    let got = b.server_plain();
    assert!(
        contains(&got, &format!("X-Key: {VALUE}")),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(!contains(&got, PLACEHOLDER));
    let body = format!("echo {VALUE}");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    b.server.writer().write_all(resp.as_bytes()).unwrap();
    b.pump(usize::MAX);
    let seen = b.guest_plain();
    assert!(
        contains(&seen, PLACEHOLDER),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert!(!contains(&seen, VALUE), "the guest never sees the value");
    let st = b.session.take_stats();
    assert_eq!((st.substitutions, st.scrubbed), (1, 1));
}

#[test]
fn tls_session_placeholder_split_across_records_and_reads() {
    let mut b = bed(Setup::default());
    b.pump(usize::MAX);
    let req = request(&format!("X-Key: {PLACEHOLDER}\r\n"));
    let (a, c) = req.split_at(req.find("SECRET").unwrap());
    // Two writes are two TLS records; the session is fed 7 bytes at a time.
    b.guest.writer().write_all(a.as_bytes()).unwrap();
    b.pump(7);
    b.guest.writer().write_all(c.as_bytes()).unwrap();
    b.pump(7);
    assert_eq!(b.result, Ok(()));
    let got = b.server_plain();
    assert!(
        contains(&got, &format!("X-Key: {VALUE}")),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn tls_session_untrusted_server_fails_the_guest_handshake() {
    let mut b = bed(Setup {
        trusted: false,
        ..Setup::default()
    });
    b.pump(usize::MAX);
    assert!(b.untrusted, "{:?}", b.result);
    assert!(b.guest.is_handshaking(), "the guest never completes");
    let e = b.result.clone().unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    // The guest got a fatal alert (rustls sends access_denied), not a silent close.
    let g = b.guest_error.clone().expect("the guest saw the failure");
    assert!(g.contains("fatal alert"), "{g}");
}

#[test]
fn tls_session_bypass_relays_the_guests_own_hello() {
    for setup in [
        Setup {
            bypass: vec!["*.test".into()],
            ..Setup::default()
        },
        Setup {
            sni: None,
            ..Setup::default()
        },
    ] {
        let mut b = bed(setup);
        b.pump(usize::MAX);
        assert_eq!(b.result, Ok(()));
        assert_eq!(b.session.kind(), Kind::Bypassed);
        // The guest's handshake is with the server itself (it verified the server's own
        // certificate), and its bytes reached the server unchanged.
        assert!(!b.guest.is_handshaking());
        assert!(!b.server.is_handshaking());
        b.guest
            .writer()
            .write_all(request(&format!("X-Key: {PLACEHOLDER}\r\n")).as_bytes())
            .unwrap();
        b.pump(usize::MAX);
        assert!(contains(&b.server_plain(), PLACEHOLDER), "not rewritten");
    }
}

#[test]
fn tls_session_not_tls_is_spliced() {
    let mut b = bed(Setup::default());
    b.session
        .from_guest(b"GET / HTTP/1.1\r\n\r\n", SystemTime::now())
        .unwrap();
    assert_eq!(b.session.kind(), Kind::Bypassed);
    assert_eq!(b.session.to_host, b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn tls_session_violations_stop_the_flow_before_the_placeholder_leaves() {
    // Not pinned (the guest never resolved api.test through ringnet), so the agreement
    // rule fails; and a request for a host the secret is not for.
    for (pinned, host) in [
        (Vec::new(), "api.test"),
        (vec!["api.test".into()], "evil.test"),
    ] {
        let mut b = bed(Setup {
            pinned,
            ..Setup::default()
        });
        b.pump(usize::MAX);
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Key: {PLACEHOLDER}\r\n\r\n");
        b.guest.writer().write_all(req.as_bytes()).unwrap();
        b.pump(usize::MAX);
        assert!(b.violation, "{:?}", b.result);
        assert!(!contains(&b.server_plain(), PLACEHOLDER));
        assert!(!contains(&b.to_server_raw, VALUE));
        assert_eq!(b.session.take_stats().violations, 1);
        assert!(b.session.failed());
    }
}

#[test]
fn tls_session_hello_is_bounded() {
    let mut b = bed(Setup::default());
    // A TLS handshake record header announcing a huge hello, then filler.
    let mut junk = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    junk.resize(super::session::MAX_HELLO + 1, 0);
    let mut failed = false;
    for piece in junk.chunks(4096) {
        if b.session.from_guest(piece, SystemTime::now()).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed || b.session.kind() == Kind::Bypassed);
}
