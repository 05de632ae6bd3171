//! `[tls]` through the whole configuration, and the CA through [`crate::Network`].

use std::path::PathBuf;

use crate::config::{ConfigError, HostRoutes, NetworkConfig};
use crate::Network;

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("ringnet-tls-net-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const ROUTES: HostRoutes = HostRoutes {
    ipv4: true,
    ipv6: false,
};

#[test]
fn tls_section_parses_with_defaults_and_rejects_unknown_keys() {
    let c = NetworkConfig::from_toml_str("").expect("empty");
    assert_eq!(c.tls, TlsConfig::default());
    assert!(!c.tls.enabled);
    assert_eq!(c.tls.leaf_cache, 1024);
    assert_eq!(c.tls.intercept_ports, vec![443]);
    assert!(!c.tls.trust_host_cas);

    let c = NetworkConfig::from_toml_str(
        r#"
        [tls]
        enabled = true
        ca_cert = "/etc/ringnet/ca.pem"
        ca_key = "/etc/ringnet/ca.key"
        leaf_cache = 10
        intercept_ports = [443, 8443]
        bypass = ["pinned.example.com", "*.bank.example"]
        trust_host_cas = true
        "#,
    )
    .expect("full section");
    assert!(c.tls.enabled && c.tls.trust_host_cas);
    assert_eq!(c.tls.ca_cert, Some(PathBuf::from("/etc/ringnet/ca.pem")));
    assert_eq!(c.tls.intercept_ports, vec![443, 8443]);
    assert!(c.tls.bypasses("www.bank.example"));

    let e = NetworkConfig::from_toml_str("[tls]\nca_key = \"k\"\n").expect_err("half pair");
    assert!(
        matches!(e, ConfigError::Tls(TlsConfigError::CaPair { .. })),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "tls.ca_key is set but tls.ca_cert is not: give both (your own CA) or neither \
         (a CA generated and kept in tls.ca_dir)"
    );
    let e = NetworkConfig::from_toml_str("[tls]\nenable = true\n").expect_err("unknown key");
    assert!(e.to_string().contains("enable"), "{e}");
}

#[test]
fn tls_section_round_trips_and_is_omitted_when_default() {
    let c = NetworkConfig::default();
    let text = toml::to_string(&c).expect("serialize");
    assert!(!text.contains("[tls]"), "{text}");
    let mut c = NetworkConfig::default();
    c.tls.enabled = true;
    c.tls.bypass = vec!["*.example".into()];
    let text = toml::to_string(&c).expect("serialize");
    assert_eq!(NetworkConfig::from_toml_str(&text).expect("parse"), c);
}

#[test]
fn tls_network_builds_the_ca_before_start_and_keeps_it() {
    let dir = temp_dir("net");
    let mut config = NetworkConfig::default();
    let off = Network::with_routes(&config, 0, ROUTES).expect("network");
    assert_eq!(off.ca_cert_pem(), None);
    assert_eq!(off.host_cas_cert_pem(), None);
    assert!(!dir.exists(), "nothing generated while disabled");

    config.tls.enabled = true;
    config.tls.ca_dir = Some(dir.clone());
    let net = Network::with_routes(&config, 0, ROUTES).expect("network");
    let pem = net.ca_cert_pem().expect("CA when enabled");
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).expect("stored"), pem);
    assert_eq!(net.host_cas_cert_pem(), None, "trust_host_cas is off");
    // Another slot (another process, or a restart) gets the same CA.
    let again = Network::with_routes(&config, 1, ROUTES).expect("network");
    assert_eq!(again.ca_cert_pem(), Some(pem));

    config.tls.trust_host_cas = true;
    let trusting = Network::with_routes(&config, 2, ROUTES).expect("network");
    assert_eq!(trusting.host_cas_cert_pem(), host_ca_bundle());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn tls_network_fails_on_a_bad_ca_file() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut config = NetworkConfig::default();
    config.tls.enabled = true;
    config.tls.ca_cert = Some(dir.join("nope.pem"));
    config.tls.ca_key = Some(dir.join("nope.key"));
    let e = Network::with_routes(&config, 0, ROUTES).expect_err("unreadable");
    let msg = e.to_string();
    assert!(
        msg.starts_with("tls: cannot read ") && msg.contains("nope.pem"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn tls_default_ca_dir_follows_xdg() {
    // Only reads the environment: the test asserts the shape, whatever it is set to.
    if let Some(dir) = default_ca_dir() {
        assert!(dir.is_absolute());
        assert!(dir.ends_with("ringnet"));
    }
}

#[test]
fn tls_ca_and_cache_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Ca>();
    send::<LeafCache>();
    send::<Network>();
}
