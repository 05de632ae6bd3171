//! The policy's parsers and the SNI reader on arbitrary bytes:
//! - the first byte picks the target; the rest is the input;
//! - rule text (`policy::Rule::parse_with_action`, the `--allow`/`--deny` and config
//!   string syntax): a rule that parses must print (`Display`) as text that parses back to
//!   the same rule;
//! - a `[policy]` TOML document (`PolicyConfig`, then `compile`);
//! - a whole config file (`NetworkConfig::from_toml_str`: every section, validated), and
//!   when it loads, the derivation of a slot's addresses (`derive`, slots 0 and the
//!   input's last byte × 2^24, both address families);
//! - `policy::sni::client_hello_sni` on the first bytes of a guest TCP flow (guest input:
//!   what the poll thread peeks at on port 443 before admitting bytes to the host).
//!
//! Any panic or a failed round trip is a bug.
//!
//! Run: `cargo fuzz run policy_and_sni` from `fuzz/` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnet::config::{HostRoutes, NetworkConfig};
use ringnet::policy::sni::client_hello_sni;
use ringnet::policy::syntax::PolicyConfig;
use ringnet::policy::Rule;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(rule) = Rule::parse_with_action(&text) {
                let printed = rule.to_string();
                let again = Rule::parse_with_action(&printed)
                    .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
                assert_eq!(again, rule, "{text:?} printed as {printed:?}");
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(cfg) = toml::from_str::<PolicyConfig>(&text) {
                let _ = cfg.compile();
            }
        }
        2 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(cfg) = NetworkConfig::from_toml_str(&text) {
                let routes = HostRoutes {
                    ipv4: true,
                    ipv6: true,
                };
                let last = u32::from(rest.last().copied().unwrap_or(0));
                for slot in [0, last << 24, u32::MAX] {
                    let _ = cfg.derive(slot, routes);
                }
            }
        }
        _ => {
            let _ = client_hello_sni(rest);
        }
    }
});
