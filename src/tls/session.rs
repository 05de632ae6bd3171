//! One intercepted TLS flow, sans-IO: ciphertext in from either side, ciphertext out to
//! either side, decisions on the way.
//!
//! # Theory of operation
//!
//! The I/O layer ([`crate::egress::intercept`]) has already connected the upstream TCP
//! socket when a session starts; it feeds what it reads with [`Session::from_guest`] /
//! [`Session::from_host`], writes out [`Session::to_guest`] / [`Session::to_host`], and
//! reports ends of stream. A session goes through these states:
//!
//! ```text
//! Hello ──ClientHello with SNI, not bypassed──→ Upstream ──upstream verified──→ Relay
//!   │                                             │ (our ClientHello carries the guest's
//!   │                                             │  SNI and ALPN offers)
//!   ├──no SNI, bypassed name, not TLS──→ Bypass   └──verification or handshake failed──→
//!   │   (the guest's own bytes, the ClientHello       alert to the guest, Failed
//!   │    included, go upstream untouched)
//!   └──hello larger than MAX_HELLO──→ Failed
//! ```
//!
//! - **Hello.** rustls' `Acceptor` reads the guest's ClientHello; a copy of the raw bytes is
//!   kept (at most [`MAX_HELLO`]) in case the flow is bypassed.
//! - **Upstream.** ringnet's own handshake with the server, verified by
//!   [`super::upstream::Upstream`] against the SNI, offering the guest's ALPN protocols
//!   that ringnet can read (`h2`, `http/1.1`). Nothing of the guest's handshake is answered
//!   before the server is verified: the guest learns the server's chosen protocol from our
//!   ServerHello, and a server that fails verification costs the guest its handshake (an
//!   alert), never an unverified relay.
//! - **Relay.** The guest's handshake completes with a leaf for the SNI from the
//!   [`super::LeafCache`]. Plaintext from the guest passes through the secrets rewriter
//!   ([`crate::secrets::AnyRewriter`], by the negotiated ALPN) when secrets are configured,
//!   then is encrypted towards the server; the way back likewise.
//!
//! ## Bounds
//!
//! The caller reads a side only while the opposite output is below its own limit, and each
//! read is bounded, so a session holds at most: the hello copy ([`MAX_HELLO`]), guest bytes
//! that arrive before the relay starts ([`MAX_EARLY`]), the two outputs (the caller's limit
//! plus what one read expands to), rustls' own record buffers, and the rewriter's
//! ([`crate::secrets::http1::BUFFERED_MAX`]).
//!
//! ## Errors
//!
//! Every [`SessionError`] is final: the caller flushes what is in [`Session::to_guest`]
//! (an alert, when one was made) and closes both sides, resetting the upstream one.

use std::io::{self, BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use rustls::server::{Accepted, Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

use super::upstream::{provider, Upstream};
use super::{LeafCache, TlsConfig};
use crate::secrets::http1::Side;
use crate::secrets::{AnyRewriter, FlowContext, SecretStats, Secrets};

/// Largest ClientHello (all records up to it) kept for a bypass.
pub const MAX_HELLO: usize = 64 * 1024;

/// Guest bytes held while the upstream handshake runs (the guest normally sends nothing
/// then; a TLS 1.3 client may send a few records).
pub const MAX_EARLY: usize = 64 * 1024;

/// The ALPN protocols ringnet can read, in its order of preference.
const ALPN_READABLE: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What every session of a network shares.
pub struct Shared {
    pub upstream: Upstream,
    pub leaves: Mutex<LeafCache>,
    pub secrets: Arc<Secrets>,
    pub tls: TlsConfig,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// Why a session ended early. Messages are one line and never hold a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The guest's ClientHello exceeded [`MAX_HELLO`].
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    HelloTooLarge,
    /// The guest's TLS failed (a bad record, a refused handshake).
    #[error("guest TLS: {0}")]
    Guest(rustls::Error),
    /// The server's TLS failed; with `InvalidCertificate` the server was not trusted.
    #[error("upstream TLS for {name}: {error}")]
    Upstream { name: String, error: rustls::Error },
    /// The server closed before its handshake finished.
    #[error("upstream {name} closed during the handshake")]
    UpstreamClosed { name: String },
    /// The guest sent more than [`MAX_EARLY`] bytes before the relay started.
    #[error("guest sent more than {MAX_EARLY} bytes before the handshake")]
    TooEarly,
    /// No leaf certificate could be made for the server name.
    #[error("leaf certificate: {0}")]
    Leaf(super::TlsError),
    /// rustls refused more input (its record buffer full): a bug, not the peer's doing.
    #[error("TLS record buffer: {0}")]
    Buffer(String),
    /// The secrets rewriter stopped the flow.
    #[error("{0}")]
    Rewrite(crate::secrets::http1::RewriteError),
}

impl SessionError {
    /// The violation that stopped the flow, if that is what happened.
    #[must_use]
    pub fn violation(&self) -> Option<&crate::secrets::Violation> {
        match self {
            SessionError::Rewrite(crate::secrets::http1::RewriteError::Violation(v)) => Some(v),
            _ => None,
        }
    }

    /// True when the server's certificate was refused.
    #[must_use]
    pub fn upstream_untrusted(&self) -> bool {
        matches!(
            self,
            SessionError::Upstream {
                error: rustls::Error::InvalidCertificate(_),
                ..
            }
        )
    }
}

enum State {
    Hello {
        acceptor: Box<Acceptor>,
        raw: Vec<u8>,
    },
    Upstream {
        accepted: Box<Accepted>,
        client: Box<ClientConnection>,
        sni: String,
        early: Vec<u8>,
    },
    Relay {
        server: Box<ServerConnection>,
        client: Box<ClientConnection>,
        rewriter: Option<Box<AnyRewriter>>,
    },
    Bypass,
    Failed,
}

/// How the flow was classified, once known.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Still reading the ClientHello or handshaking upstream.
    Pending,
    /// Decrypted and relayed.
    Intercepted,
    /// Spliced untouched.
    Bypassed,
}

/// One flow (see the module docs).
pub struct Session {
    shared: Arc<Shared>,
    state: State,
    /// The names the guest resolved to the flow's destination through ringnet's DNS.
    pinned: Vec<String>,
    /// Ciphertext for the guest.
    pub to_guest: Vec<u8>,
    /// Ciphertext (or spliced bytes) for the server.
    pub to_host: Vec<u8>,
    /// Our side towards the guest is finished: shut its write side once `to_guest` is out.
    pub guest_done: bool,
    /// Likewise towards the server.
    pub host_done: bool,
    /// Rewriter counters already reported ([`Session::take_stats`]), and the last known
    /// (kept when the rewriter goes with a failure).
    reported: SecretStats,
    latest: SecretStats,
    /// When the ClientHello was read (the leaf's clock).
    hello_at: SystemTime,
    rewritten: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("kind", &self.kind())
            .field("to_guest", &self.to_guest.len())
            .field("to_host", &self.to_host.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a flow to a destination the guest resolved as `pinned`.
    #[must_use]
    pub fn new(shared: Arc<Shared>, pinned: Vec<String>) -> Session {
        Session {
            shared,
            state: State::Hello {
                acceptor: Box::default(),
                raw: Vec::new(),
            },
            pinned,
            to_guest: Vec::new(),
            to_host: Vec::new(),
            guest_done: false,
            host_done: false,
            reported: SecretStats::default(),
            latest: SecretStats::default(),
            hello_at: SystemTime::UNIX_EPOCH,
            rewritten: Vec::new(),
        }
    }

    /// What the flow turned out to be.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self.state {
            State::Hello { .. } | State::Upstream { .. } | State::Failed => Kind::Pending,
            State::Relay { .. } => Kind::Intercepted,
            State::Bypass => Kind::Bypassed,
        }
    }

    /// Ciphertext from the guest.
    ///
    /// # Errors
    /// Any [`SessionError`]; final.
    pub fn from_guest(&mut self, data: &[u8], now: SystemTime) -> Result<(), SessionError> {
        let r = self.guest_input(data, now);
        self.fail_on(r)
    }

    /// Ciphertext from the server.
    ///
    /// # Errors
    /// Any [`SessionError`]; final.
    pub fn from_host(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let r = self.host_input(data);
        self.fail_on(r)
    }

    /// The guest closed its write side.
    ///
    /// # Errors
    /// As [`Session::from_guest`].
    pub fn guest_eof(&mut self) -> Result<(), SessionError> {
        let r = self.guest_closed();
        self.fail_on(r)
    }

    /// The server closed its write side.
    ///
    /// # Errors
    /// As [`Session::from_host`].
    pub fn host_eof(&mut self) -> Result<(), SessionError> {
        let r = self.host_closed();
        self.fail_on(r)
    }

    /// The rewriter's counters since the last call.
    pub fn take_stats(&mut self) -> SecretStats {
        let now = match &self.state {
            State::Relay {
                rewriter: Some(rw), ..
            } => rw.stats(),
            _ => self.latest,
        };
        let delta = SecretStats {
            substitutions: now.substitutions - self.reported.substitutions,
            scrubbed: now.scrubbed - self.reported.scrubbed,
            violations: now.violations - self.reported.violations,
            heads_too_large: now.heads_too_large - self.reported.heads_too_large,
        };
        self.reported = now;
        delta
    }

    fn fail_on(&mut self, r: Result<(), SessionError>) -> Result<(), SessionError> {
        if r.is_err() {
            // Keep the counters of the rewriter that stopped (the violation) for the caller.
            if let State::Relay {
                rewriter: Some(rw), ..
            } = &self.state
            {
                self.latest = rw.stats();
            }
            self.state = State::Failed;
            self.to_host.clear();
        }
        r
    }

    fn guest_input(&mut self, data: &[u8], now: SystemTime) -> Result<(), SessionError> {
        match &mut self.state {
            State::Hello { acceptor, raw } => {
                if raw.len() + data.len() > MAX_HELLO {
                    return Err(SessionError::HelloTooLarge);
                }
                raw.extend_from_slice(data);
                let mut rd = data;
                while !rd.is_empty() {
                    if acceptor.read_tls(&mut rd).is_err() {
                        break;
                    }
                }
                match acceptor.accept() {
                    Ok(None) => Ok(()),
                    Ok(Some(accepted)) => self.hello(Box::new(accepted), now),
                    // Not TLS (or a ClientHello rustls refuses): the guest's bytes go as
                    // they are; nothing in them is read or rewritten.
                    Err(_) => self.bypass(),
                }
            }
            State::Upstream { early, .. } => {
                if early.len() + data.len() > MAX_EARLY {
                    return Err(SessionError::TooEarly);
                }
                early.extend_from_slice(data);
                Ok(())
            }
            State::Relay { .. } => self.relay_from_guest(data),
            State::Bypass => {
                self.to_host.extend_from_slice(data);
                Ok(())
            }
            State::Failed => Ok(()),
        }
    }

    /// The ClientHello is complete: bypass, or start the upstream handshake.
    fn hello(&mut self, accepted: Box<Accepted>, now: SystemTime) -> Result<(), SessionError> {
        let hello = accepted.client_hello();
        let Some(sni) = hello.server_name().map(str::to_ascii_lowercase) else {
            return self.bypass();
        };
        if self.shared.tls.bypasses(&sni) {
            return self.bypass();
        }
        let Ok(name) = ServerName::try_from(sni.clone()) else {
            return self.bypass();
        };
        let offered = offered_alpn(&hello);
        let mut config = (**self.shared.upstream.config_for(&sni)).clone();
        config.alpn_protocols = offered;
        let mut client = ClientConnection::new(Arc::new(config), name).map_err(|error| {
            SessionError::Upstream {
                name: sni.clone(),
                error,
            }
        })?;
        // What is written is encrypted and handed out at once; the caller bounds it.
        client.set_buffer_limit(None);
        // Issue (or find) the leaf now, so that a name no leaf can be made for fails before
        // anything goes upstream.
        self.hello_at = now;
        self.leaf(&sni, now)?;
        flush(&mut client, &mut self.to_host);
        self.state = State::Upstream {
            accepted,
            client: Box::new(client),
            sni,
            early: Vec::new(),
        };
        Ok(())
    }

    fn leaf(&self, sni: &str, now: SystemTime) -> Result<Arc<CertifiedKey>, SessionError> {
        self.shared
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sni, now)
            .map_err(SessionError::Leaf)
    }

    fn bypass(&mut self) -> Result<(), SessionError> {
        if let State::Hello { raw, .. } = &mut self.state {
            self.to_host.append(raw);
        }
        self.state = State::Bypass;
        Ok(())
    }

    fn host_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        match &mut self.state {
            // The server speaks first only after our ClientHello: nothing legitimate can
            // arrive yet; keep it for the bypass it might become (bounded by the caller's
            // read size and output limit).
            State::Hello { .. } => {
                self.to_guest.extend_from_slice(data);
                Ok(())
            }
            State::Upstream { client, sni, .. } => {
                let mut rd = data;
                while !rd.is_empty() {
                    match client.read_tls(&mut rd) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(SessionError::Buffer(e.to_string())),
                    }
                    if let Err(error) = client.process_new_packets() {
                        flush(client, &mut self.to_host);
                        let name = sni.clone();
                        self.alert_guest();
                        return Err(SessionError::Upstream { name, error });
                    }
                }
                flush(client, &mut self.to_host);
                if client.is_handshaking() {
                    return Ok(());
                }
                self.start_relay()
            }
            State::Relay { .. } => self.relay_from_host(data),
            State::Bypass => {
                self.to_guest.extend_from_slice(data);
                Ok(())
            }
            State::Failed => Ok(()),
        }
    }

    /// The server is verified: answer the guest's hello with a leaf for the SNI and the
    /// protocol the server chose.
    fn start_relay(&mut self) -> Result<(), SessionError> {
        let State::Upstream {
            accepted,
            client,
            sni,
            early,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Ok(());
        };
        let leaf = self.leaf(&sni, self.hello_at)?;
        let alpn = client.alpn_protocol().map(<[u8]>::to_vec);
        let config = server_config(Some(leaf), alpn.clone());
        let mut server = match accepted.into_connection(config) {
            Ok(s) => s,
            Err((error, mut alert)) => {
                let _ = alert.write_all(&mut self.to_guest);
                return Err(SessionError::Guest(error));
            }
        };
        server.set_buffer_limit(None);
        flush(&mut server, &mut self.to_guest);
        let rewriter = (!self.shared.secrets.is_empty()).then(|| {
            Box::new(AnyRewriter::for_alpn(
                alpn.as_deref(),
                self.shared.secrets.clone(),
                FlowContext {
                    sni: Some(sni.clone()),
                    pinned: self.pinned.clone(),
                },
            ))
        });
        self.state = State::Relay {
            server: Box::new(server),
            client,
            rewriter,
        };
        self.relay_from_host(&[])?;
        if early.is_empty() {
            Ok(())
        } else {
            self.relay_from_guest(&early)
        }
    }

    /// Refuse the guest's pending handshake with an alert (the server was not verified).
    fn alert_guest(&mut self) {
        if let State::Upstream { .. } = self.state {
            let State::Upstream { accepted, .. } =
                std::mem::replace(&mut self.state, State::Failed)
            else {
                return;
            };
            if let Err((_, mut alert)) = accepted.into_connection(server_config(None, None)) {
                let _ = alert.write_all(&mut self.to_guest);
            }
        }
    }

    fn relay_from_guest(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let State::Relay {
            server,
            client,
            rewriter,
            ..
        } = &mut self.state
        else {
            return Ok(());
        };
        let closed = relay(
            (&mut ***server, &mut self.to_guest),
            (&mut ***client, &mut self.to_host),
            data,
            (rewriter.as_deref_mut(), Side::FromGuest),
            &mut self.rewritten,
            SessionError::Guest,
        )?;
        if closed {
            self.guest_closed()?;
        }
        Ok(())
    }

    fn relay_from_host(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let State::Relay {
            server,
            client,
            rewriter,
            ..
        } = &mut self.state
        else {
            return Ok(());
        };
        let closed = relay(
            (&mut ***client, &mut self.to_host),
            (&mut ***server, &mut self.to_guest),
            data,
            (rewriter.as_deref_mut(), Side::FromHost),
            &mut self.rewritten,
            |error| SessionError::Upstream {
                name: String::new(),
                error,
            },
        )?;
        if closed {
            self.host_closed()?;
        }
        Ok(())
    }

    fn guest_closed(&mut self) -> Result<(), SessionError> {
        match &mut self.state {
            State::Relay {
                client, rewriter, ..
            } => {
                if !self.host_done {
                    self.host_done = true;
                    let rw = rewriter.as_deref_mut().map(|rw| (rw, Side::FromGuest));
                    close_towards(client, &mut self.to_host, rw, &mut self.rewritten)?;
                }
                Ok(())
            }
            State::Bypass => {
                self.host_done = true;
                Ok(())
            }
            // Gone before the relay: nothing to finish.
            _ => {
                self.state = State::Failed;
                self.host_done = true;
                self.guest_done = true;
                Ok(())
            }
        }
    }

    fn host_closed(&mut self) -> Result<(), SessionError> {
        match &mut self.state {
            State::Relay {
                server, rewriter, ..
            } => {
                if !self.guest_done {
                    self.guest_done = true;
                    let rw = rewriter.as_deref_mut().map(|rw| (rw, Side::FromHost));
                    close_towards(server, &mut self.to_guest, rw, &mut self.rewritten)?;
                }
                Ok(())
            }
            State::Bypass => {
                self.guest_done = true;
                Ok(())
            }
            State::Upstream { sni, .. } => {
                let name = sni.clone();
                self.alert_guest();
                Err(SessionError::UpstreamClosed { name })
            }
            _ => {
                self.state = State::Failed;
                self.host_done = true;
                self.guest_done = true;
                Ok(())
            }
        }
    }

    /// True when the session wants no more input from the guest (failed).
    #[must_use]
    pub fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }
}

/// The guest's ALPN offers that ringnet can read, in the guest's order.
fn offered_alpn(hello: &ClientHello<'_>) -> Vec<Vec<u8>> {
    hello.alpn().map_or_else(Vec::new, |offers| {
        offers
            .filter(|p| ALPN_READABLE.contains(p))
            .map(<[u8]>::to_vec)
            .collect()
    })
}

/// One direction of the relay: ciphertext `data` into `from` (its peer's connection, with
/// what it must send back going to `from_out`); the plaintext it yields, without being
/// copied out first, through the rewriter into `to`, encrypted into `to_out`. Also with no
/// input: plaintext decrypted with the handshake's last flight (an HTTP/2 server's
/// SETTINGS) is handed on now, not at the peer's next record. True when `from`'s peer
/// closed (close_notify, or the stream ended uncleanly).
fn relay<F, T>(
    (from, from_out): (&mut ConnectionCommon<F>, &mut Vec<u8>),
    (to, to_out): (&mut ConnectionCommon<T>, &mut Vec<u8>),
    data: &[u8],
    (mut rw, side): (Option<&mut AnyRewriter>, Side),
    scratch: &mut Vec<u8>,
    tls_err: impl Fn(rustls::Error) -> SessionError,
) -> Result<bool, SessionError> {
    let mut rd = data;
    let mut closed = false;
    loop {
        if !rd.is_empty() {
            match from.read_tls(&mut rd) {
                Ok(0) => rd = &[],
                Ok(_) => {}
                Err(e) => return Err(SessionError::Buffer(e.to_string())),
            }
            if let Err(e) = from.process_new_packets() {
                flush(from, from_out);
                return Err(tls_err(e));
            }
        }
        closed |= pass_plain(
            from.reader(),
            rw.as_deref_mut(),
            side,
            scratch,
            &mut to.writer(),
        )?;
        if rd.is_empty() {
            break;
        }
    }
    flush(from, from_out);
    flush(to, to_out);
    Ok(closed)
}

/// Moves every plaintext byte `reader` holds, without copying it out first, through `rw`
/// (when secrets are configured) into `to` (the other connection's writer, which encrypts
/// at once); true when the peer sent close_notify (or the stream ended uncleanly).
fn pass_plain(
    mut reader: rustls::Reader<'_>,
    mut rw: Option<&mut AnyRewriter>,
    side: Side,
    scratch: &mut Vec<u8>,
    to: &mut rustls::Writer<'_>,
) -> Result<bool, SessionError> {
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) => return Ok(true),
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(_) => return Ok(true),
        };
        let n = chunk.len();
        let out = match rw.as_deref_mut() {
            Some(rw) => {
                scratch.clear();
                match side {
                    Side::FromGuest => rw.from_guest(chunk, scratch),
                    Side::FromHost => rw.from_host(chunk, scratch),
                }
                .map_err(SessionError::Rewrite)?;
                &scratch[..]
            }
            None => chunk,
        };
        // Cannot fail: the connection's buffer is unbounded (`set_buffer_limit(None)`); the
        // caller bounds what it reads.
        let _ = to.write_all(out);
        reader.consume(n);
    }
}

/// One side closed: what the rewriter still holds for that direction goes out, then
/// close_notify, on `to` (the other connection), encrypted into `to_out`.
fn close_towards<T>(
    to: &mut ConnectionCommon<T>,
    to_out: &mut Vec<u8>,
    rw: Option<(&mut AnyRewriter, Side)>,
    scratch: &mut Vec<u8>,
) -> Result<(), SessionError> {
    if let Some((rw, side)) = rw {
        scratch.clear();
        match side {
            Side::FromGuest => rw.guest_closed(scratch),
            Side::FromHost => rw.host_closed(scratch),
        }
        .map_err(SessionError::Rewrite)?;
        // Cannot fail: the buffer is unbounded (`set_buffer_limit(None)`).
        let _ = to.writer().write_all(scratch);
    }
    to.send_close_notify();
    flush(to, to_out);
    Ok(())
}

/// Appends every TLS record `c` has to send to `out`.
fn flush<D>(c: &mut ConnectionCommon<D>, out: &mut Vec<u8>) {
    while c.wants_write() {
        if c.write_tls(out).is_err() {
            break;
        }
    }
}

/// Serves one fixed leaf (`None`: refuses every handshake, which makes the alert).
#[derive(Debug)]
struct FixedLeaf(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for FixedLeaf {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}

fn server_config(leaf: Option<Arc<CertifiedKey>>, alpn: Option<Vec<u8>>) -> Arc<ServerConfig> {
    // The default protocol versions are always consistent with the ring provider.
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedLeaf(leaf)));
    config.alpn_protocols = alpn.into_iter().collect();
    Arc::new(config)
}
