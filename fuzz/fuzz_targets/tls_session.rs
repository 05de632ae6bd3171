//! An intercepted TLS session (`tls::session::Session`) fed arbitrary bytes from the guest
//! (a ClientHello and what follows) and from the server, interleaved:
//! - the first byte picks piece sizes and the interleaving; the rest is split in two at a
//!   point given by the second byte: guest bytes, then server bytes;
//! - sessions that fail stop being fed (every error is final);
//! - the outputs stay bounded: what the session holds for either side never exceeds what
//!   it was given plus one TLS flight (64 KiB).
//!
//! Any panic or an exceeded bound is a bug. The CA is generated once per process.
//!
//! Run: `cargo +nightly fuzz run tls_session` from `fuzz/`.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use ringnet::secrets::Secrets;
use ringnet::tls::config::RootSource;
use ringnet::tls::session::{Session, Shared};
use ringnet::tls::upstream::Upstream;
use ringnet::tls::{Ca, LeafCache, TlsConfig};

fn shared() -> Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let ca = Arc::new(Ca::generate(SystemTime::now()).expect("CA").0);
            let tls = TlsConfig {
                enabled: true,
                upstream_roots: vec![RootSource::Webpki],
                bypass: vec!["*.bypass.test".into()],
                ..TlsConfig::default()
            };
            Arc::new(Shared {
                upstream: Upstream::from_config(&tls).expect("webpki roots"),
                leaves: Mutex::new(LeafCache::new(ca, 8).expect("leaf cache")),
                secrets: Arc::new(Secrets::default()),
                tls,
            })
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (seed, split) = (data[0], usize::from(data[1]));
    let rest = &data[2..];
    let cut = rest.len() * split / 256;
    let (guest, host) = rest.split_at(cut);
    let mut s = Session::new(shared(), vec!["example.com".into()]);
    let piece = 1 + usize::from(seed % 61);
    let (mut g, mut h) = (guest, host);
    let mut fed = 0usize;
    while !g.is_empty() || !h.is_empty() {
        if !g.is_empty() {
            let n = piece.min(g.len());
            if s.from_guest(&g[..n], SystemTime::now()).is_err() {
                return;
            }
            fed += n;
            g = &g[n..];
        }
        if seed & 0x80 != 0 && !h.is_empty() {
            let n = piece.min(h.len());
            if s.from_host(&h[..n]).is_err() {
                return;
            }
            fed += n;
            h = &h[n..];
        } else if g.is_empty() {
            h = &[];
        }
        assert!(
            s.to_host.len() <= fed + 64 * 1024,
            "to_host {} after {fed}",
            s.to_host.len()
        );
        assert!(
            s.to_guest.len() <= fed + 64 * 1024,
            "to_guest {} after {fed}",
            s.to_guest.len()
        );
        s.to_host.clear();
        s.to_guest.clear();
    }
    let _ = s.guest_eof();
    let _ = s.host_eof();
});
