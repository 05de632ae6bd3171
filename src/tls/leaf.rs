//! Per-host leaf certificates signed by the interception CA, in a bounded LRU cache.
//!
//! # Theory of operation
//!
//! The TLS session ([`super::session`]) asks [`LeafCache::get`] for the certificate to present
//! to the guest for the server name in its ClientHello (SNI). The cache answers a
//! [`rustls::sign::CertifiedKey`] ready for a rustls `ResolvesServerCert`, from the cache when
//! it holds a fresh entry for the name, else issued now and inserted. Sans-IO: the caller
//! passes the wall-clock time in; no syscall.
//!
//! ## The certificate
//!
//! | field            | value                                                           |
//! |------------------|-----------------------------------------------------------------|
//! | subject          | `CN=<name>` (names of at most 64 bytes, RFC 5280 `ub-common-name`), else empty |
//! | subjectAltName   | `dNSName <name>`, or `iPAddress` for an IP literal (RFC 6066 §3 forbids IP literals in SNI, but a caller may ask for one) |
//! | validity         | `now − 1 h` ([`super::ca::BACKDATE`], against guest clock skew) to `now + 24 h` ([`LEAF_VALIDITY`]) |
//! | key              | ECDSA P-256, one key per [`LeafCache`] (see below)               |
//! | extensions       | basic constraints `cA = FALSE`, key usage `digitalSignature`, extended key usage `serverAuth`, authority key identifier of the CA |
//! | serial           | random, 128 bits (never reused under one issuer: Firefox rejects reuse) |
//!
//! Names are normalized before lookup and issue: ASCII lowercase, one trailing dot removed.
//! A name that is neither a valid DNS name (RFC 1035 syntax as `rustls-pki-types` checks it)
//! nor an IP literal is refused ([`TlsError::LeafName`]), so nothing a guest puts in SNI
//! reaches the certificate unchecked.
//!
//! **One leaf key per cache, not one per leaf.** Every leaf's private key lives in this
//! process next to the CA key, so per-leaf keys would isolate nothing: whoever reads one reads
//! them all, and the CA key too. A shared key halves the work of a miss (no key generation;
//! ECDSA keygen costs about as much as the signature), shares one `Arc<dyn SigningKey>`
//! among all entries, and keeps entries small. The key is generated when the cache is built,
//! held only in memory, and replaced with the process. Serials stay unique per leaf.
//!
//! ## The cache
//!
//! At most `capacity` entries (`tls.leaf_cache`); inserting beyond it evicts the least
//! recently used. An entry is *fresh* from `issued − 1 h` to `issued + 20 h`
//! ([`LEAF_REUSE`]): a stale entry is re-issued on its next ask, while the certificate it
//! replaces still has 4 h to run (a guest clock up to 4 h fast still accepts it). A host
//! clock that steps back more than an hour also makes entries stale, so no certificate is
//! handed out before its `not_before`. Lookup and insert are `O(log n)` (a hash map from name
//! to entry, and a B-tree from last-use stamp to name for the LRU order).
//!
//! [`LeafStats`] counts hits, misses, certificates issued, LRU evictions and stale
//! re-issues; the TLS layer will add them to [`crate::metrics::Stats`]
//! (`tls_leaf_issued`, `tls_leaf_evicted`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};

use super::ca::{random_serial, Ca, BACKDATE};
use super::{unix_time, TlsError};

/// How long a leaf is valid after it is issued (its `not_before` is an hour earlier).
pub const LEAF_VALIDITY: time::Duration = time::Duration::hours(24);

/// How long a cached leaf is served after it was issued; then it is re-issued.
pub const LEAF_REUSE: std::time::Duration = std::time::Duration::from_secs(20 * 3600);

/// Longest common name (RFC 5280 `ub-common-name`).
const MAX_CN: usize = 64;

/// A normalized server name a leaf is issued for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, ASCII lowercase, without a trailing dot.
    Dns(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl LeafName {
    /// Normalizes `name` (see the module docs).
    ///
    /// # Errors
    /// [`TlsError::LeafName`] when it is neither a DNS name nor an IP literal.
    pub fn parse(name: &str) -> Result<LeafName, TlsError> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(LeafName::Ip(ip));
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.is_empty()
            || lower.contains('*')
            || rustls::pki_types::DnsName::try_from(lower.as_str()).is_err()
        {
            return Err(TlsError::LeafName {
                name: name.escape_debug().to_string(),
            });
        }
        Ok(LeafName::Dns(lower))
    }

    fn key(&self) -> String {
        match self {
            LeafName::Dns(name) => name.clone(),
            LeafName::Ip(ip) => ip.to_string(),
        }
    }
}

/// The cache's counters since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Asks answered from the cache.
    pub hits: u64,
    /// Asks that issued a certificate (not cached, or stale).
    pub misses: u64,
    /// Certificates issued (misses that succeeded).
    pub issued: u64,
    /// Entries dropped to stay within the capacity (least recently used first).
    pub evicted: u64,
    /// Entries replaced because they were stale (a subset of `misses`).
    pub expired: u64,
}

struct Entry {
    leaf: Arc<CertifiedKey>,
    issued: SystemTime,
    stamp: u64,
}

/// Leaf certificates by server name, bounded, least recently used evicted first.
pub struct LeafCache {
    ca: Arc<Ca>,
    key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    capacity: usize,
    entries: HashMap<String, Entry>,
    /// Last-use stamp → name; the first is the least recently used.
    lru: BTreeMap<u64, String>,
    next_stamp: u64,
    stats: LeafStats,
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl LeafCache {
    /// An empty cache of at most `capacity` leaves (at least 1) signed by `ca`, with a fresh
    /// leaf key.
    ///
    /// # Errors
    /// [`TlsError::Rcgen`] / [`TlsError::SigningKey`] when the leaf key cannot be made.
    pub fn new(ca: Arc<Ca>, capacity: usize) -> Result<LeafCache, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| TlsError::SigningKey(e.to_string()))?;
        Ok(LeafCache {
            ca,
            key,
            signing_key,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_stamp: 0,
            stats: LeafStats::default(),
        })
    }

    /// The leaf for `server_name` at wall-clock time `now`: cached when fresh, else issued
    /// (evicting the least recently used entry when full).
    ///
    /// # Errors
    /// [`TlsError::LeafName`] for a name that is neither a DNS name nor an IP literal (not
    /// counted); [`TlsError::Rcgen`] when signing fails.
    pub fn get(
        &mut self,
        server_name: &str,
        now: SystemTime,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let name = LeafName::parse(server_name)?;
        let key = name.key();
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            if is_fresh(entry.issued, now) {
                self.lru.remove(&entry.stamp);
                entry.stamp = stamp;
                self.lru.insert(stamp, key);
                self.stats.hits += 1;
                return Ok(entry.leaf.clone());
            }
            self.stats.expired += 1;
        }
        self.stats.misses += 1;
        let leaf = Arc::new(self.issue(&name, now)?);
        self.stats.issued += 1;
        let entry = Entry {
            leaf: leaf.clone(),
            issued: now,
            stamp,
        };
        if let Some(old) = self.entries.insert(key.clone(), entry) {
            self.lru.remove(&old.stamp);
        }
        self.lru.insert(stamp, key);
        while self.entries.len() > self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
            self.stats.evicted += 1;
        }
        Ok(leaf)
    }

    /// Issues a leaf for `name` valid at `now`, uncached.
    ///
    /// # Errors
    /// [`TlsError::Rcgen`] when the certificate cannot be built or signed.
    pub fn issue(&self, name: &LeafName, now: SystemTime) -> Result<CertifiedKey, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let (san, cn) = match name {
            LeafName::Dns(dns) => (
                SanType::DnsName(dns.as_str().try_into()?),
                (dns.len() <= MAX_CN).then(|| dns.clone()),
            ),
            LeafName::Ip(ip) => (SanType::IpAddress(*ip), Some(ip.to_string())),
        };
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = unix_time(now);
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&self.key, &self.ca.issuer)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone()],
            self.signing_key.clone(),
        ))
    }

    /// The counters since the cache was built.
    #[must_use]
    pub fn stats(&self) -> LeafStats {
        self.stats
    }

    /// Entries cached now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most entries kept.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The CA the leaves are signed by.
    #[must_use]
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }
}

/// Fresh from an hour before `issued` (the certificate's `not_before`) until [`LEAF_REUSE`]
/// after it.
fn is_fresh(issued: SystemTime, now: SystemTime) -> bool {
    let backdate = std::time::Duration::from_secs(3600);
    match now.duration_since(issued) {
        Ok(age) => age < LEAF_REUSE,
        Err(e) => e.duration() <= backdate,
    }
}

#[cfg(test)]
mod tests;
