use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::RootCertStore;

use super::*;

/// One CA for every test here (generation is the slow part in debug builds).
fn ca() -> Arc<Ca> {
    static CA: OnceLock<Arc<Ca>> = OnceLock::new();
    CA.get_or_init(|| Arc::new(Ca::generate(SystemTime::now()).expect("CA").0))
        .clone()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

const T0: u64 = 1_800_000_000;

fn verify(ca: &Ca, leaf: &CertifiedKey, name: &str, now: SystemTime) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der().clone())
        .map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    verifier
        .verify_server_cert(
            &leaf.cert[0],
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(since),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn tls_leaf_verifies_for_its_name_only() {
    let ca = ca();
    let now = SystemTime::now();
    let mut cache = LeafCache::new(ca.clone(), 16).expect("cache");
    let leaf = cache.get("API.Example.com.", now).expect("leaf");
    assert!(leaf.keys_match().is_ok());
    verify(&ca, &leaf, "api.example.com", now).expect("verifies for its name");
    let err = verify(&ca, &leaf, "other.example.com", now).expect_err("another name");
    assert!(err.contains("not valid for name"), "{err}");
    let err = verify(&ca, &leaf, "example.com", now).expect_err("the parent");
    assert!(err.contains("not valid for name"), "{err}");

    // Another CA does not vouch for it.
    let (other, _) = Ca::generate(now).expect("CA");
    assert!(verify(&other, &leaf, "api.example.com", now).is_err());

    // An IP literal gets an IP SAN.
    let leaf = cache.get("192.0.2.7", now).expect("ip leaf");
    verify(&ca, &leaf, "192.0.2.7", now).expect("verifies for its IP");
    assert!(verify(&ca, &leaf, "192.0.2.8", now).is_err());
    let leaf = cache.get("2001:db8::1", now).expect("ip6 leaf");
    verify(&ca, &leaf, "2001:db8::1", now).expect("verifies for its IPv6");
}

#[test]
fn tls_leaf_validity_window() {
    let ca = ca();
    let cache = LeafCache::new(ca.clone(), 4).expect("cache");
    let name = LeafName::parse("example.com").expect("name");
    let leaf = cache.issue(&name, at(T0)).expect("leaf");
    let (_, x) = x509_parser::parse_x509_certificate(&leaf.cert[0]).expect("parse");
    assert_eq!(x.validity().not_before.timestamp(), (T0 - 3600) as i64);
    assert_eq!(x.validity().not_after.timestamp(), (T0 + 24 * 3600) as i64);
    assert!(
        !x.basic_constraints()
            .expect("bc")
            .expect("present")
            .value
            .ca
    );
    assert_eq!(x.raw_serial().len(), 16);
    // A guest clock an hour slow, or 23 h fast, still accepts it; past the window it fails.
    verify(&ca, &leaf, "example.com", at(T0 - 3500)).expect("an hour slow");
    verify(&ca, &leaf, "example.com", at(T0 + 23 * 3600)).expect("23 h later");
    assert!(verify(&ca, &leaf, "example.com", at(T0 + 25 * 3600)).is_err());
    assert!(verify(&ca, &leaf, "example.com", at(T0 - 7200)).is_err());
    // Serials differ between leaves sharing the key.
    let again = cache.issue(&name, at(T0)).expect("leaf");
    let (_, y) = x509_parser::parse_x509_certificate(&again.cert[0]).expect("parse");
    assert_ne!(x.raw_serial(), y.raw_serial());
}

#[test]
fn tls_leaf_second_ask_is_a_hit() {
    let mut cache = LeafCache::new(ca(), 8).expect("cache");
    let a = cache.get("example.com", at(T0)).expect("leaf");
    let b = cache.get("EXAMPLE.COM.", at(T0 + 60)).expect("leaf");
    assert!(Arc::ptr_eq(&a, &b), "served from the cache");
    assert_eq!(
        cache.stats(),
        LeafStats {
            hits: 1,
            misses: 1,
            issued: 1,
            evicted: 0,
            expired: 0
        }
    );
}

#[test]
fn tls_leaf_entries_expire_before_their_certificate() {
    let mut cache = LeafCache::new(ca(), 8).expect("cache");
    let a = cache.get("example.com", at(T0)).expect("leaf");
    let b = cache
        .get("example.com", at(T0 + 20 * 3600 - 1))
        .expect("leaf");
    assert!(Arc::ptr_eq(&a, &b), "fresh until 20 h");
    let c = cache.get("example.com", at(T0 + 20 * 3600)).expect("leaf");
    assert!(!Arc::ptr_eq(&a, &c), "re-issued at 20 h");
    assert_eq!(cache.stats().expired, 1);
    assert_eq!(cache.len(), 1);
    // A host clock stepped back more than the backdating also re-issues.
    let d = cache
        .get("example.com", at(T0 + 20 * 3600 - 3600))
        .expect("leaf");
    assert!(
        Arc::ptr_eq(&c, &d),
        "an hour back is still within not_before"
    );
    let e = cache.get("example.com", at(T0)).expect("leaf");
    assert!(!Arc::ptr_eq(&c, &e), "20 h back is before not_before");
    assert_eq!(cache.stats().expired, 2);
}

#[test]
fn tls_leaf_cache_stays_at_its_bound_and_evicts_lru() {
    const CAP: usize = 64;
    const NAMES: usize = 10_000;
    let mut cache = LeafCache::new(ca(), CAP).expect("cache");
    cache.get("keep.example", at(T0)).expect("leaf");
    for i in 0..NAMES {
        cache
            .get(&format!("host-{i}.example.com"), at(T0))
            .expect("leaf");
        assert!(cache.len() <= CAP);
        // Touching it keeps it the most recently used.
        if i % 16 == 0 {
            cache.get("keep.example", at(T0)).expect("leaf");
        }
    }
    assert_eq!(cache.len(), CAP);
    assert_eq!(cache.lru.len(), CAP, "the LRU index matches the map");
    let s = cache.stats();
    assert_eq!(s.misses, NAMES as u64 + 1);
    assert_eq!(s.issued, NAMES as u64 + 1);
    assert_eq!(s.evicted, (NAMES + 1 - CAP) as u64);
    assert_eq!(s.hits, NAMES.div_ceil(16) as u64);
    let before = cache.stats().hits;
    cache.get("keep.example", at(T0)).expect("leaf");
    cache
        .get(&format!("host-{}.example.com", NAMES - 1), at(T0))
        .expect("leaf");
    assert_eq!(cache.stats().hits, before + 2, "recent names stayed");
    cache.get("host-0.example.com", at(T0)).expect("leaf");
    assert_eq!(cache.stats().misses, NAMES as u64 + 2, "the oldest went");
}

#[test]
fn tls_leaf_names_are_checked() {
    let mut cache = LeafCache::new(ca(), 4).expect("cache");
    for bad in [
        "",
        ".",
        "*.example.com",
        "exa mple.com",
        "a\nb",
        "-bad-.com\u{0}",
    ] {
        let e = cache.get(bad, at(T0)).expect_err(bad).to_string();
        assert!(e.contains("not a DNS name or IP"), "{e}");
        assert!(!e.contains('\n'), "{e:?}");
    }
    assert_eq!(cache.stats(), LeafStats::default());
    assert_eq!(
        LeafName::parse("Foo.Example.").expect("ok"),
        LeafName::Dns("foo.example".into())
    );
    let long = format!("{}.example.com", "a".repeat(60));
    let leaf = cache.get(&long, at(T0)).expect("long name, no CN");
    verify(&ca(), &leaf, &long, at(T0)).expect("SAN is what counts");
}

/// CAs made by OpenSSL (test-only keys in `src/tls/testdata`, valid for 100 years):
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -days 36500
/// -subj "/C=DE/O=Example Org/CN=Example P-384 Root" -addext
/// "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"`, and
/// `-newkey rsa:2048 -subj "/CN=Example RSA Root"` (OpenSSL's default v3_ca extensions).
/// Leaves must chain to them byte for byte (issuer name with its string types, AKI).
#[test]
fn tls_leaf_signed_by_an_openssl_ca_verifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tls/testdata");
    for stem in ["openssl-p384", "openssl-rsa"] {
        let ca = Ca::from_files(
            &dir.join(format!("{stem}.pem")),
            &dir.join(format!("{stem}.key")),
        )
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert!(ca.subject().contains("Example"), "{}", ca.subject());
        let ca = Arc::new(ca);
        let mut cache = LeafCache::new(ca.clone(), 4).expect("cache");
        let now = SystemTime::now();
        let leaf = cache.get("www.example.org", now).expect("leaf");
        verify(&ca, &leaf, "www.example.org", now).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert!(verify(&ca, &leaf, "example.org", now).is_err());
    }
    let e = Ca::from_files(
        &dir.join("openssl-p384.pem"),
        &dir.join("openssl-p384-sec1.key"),
    )
    .expect_err("SEC1 key")
    .to_string();
    assert!(
        e.contains("openssl-p384-sec1.key") && e.contains("openssl pkcs8 -topk8"),
        "{e}"
    );
}
