//! Guest autoconfiguration on arbitrary bytes: the input is a guest frame, run through
//! `wire::classify` and `autoconf::route` for slot 0 (default config, both families), and
//! every request is answered as the poll thread would (`dhcp4::answer`, `dhcp6::answer`,
//! the RA builder, the frame emitters). The same bytes also go straight to both DHCP
//! parsers as a UDP payload, so the parsers see inputs the classifier would not route. Any
//! panic is a bug.
//!
//! Run: `cargo +nightly fuzz run autoconf` from `fuzz/`.
#![no_main]

use std::hint::black_box;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringnet::autoconf::{self, dhcp4, dhcp6, ra, Request};
use ringnet::config::{HostRoutes, NetworkConfig};
use ringnet::stack::Addrs;
use ringnet::wire;

fn addrs() -> &'static Addrs {
    static ADDRS: OnceLock<Addrs> = OnceLock::new();
    ADDRS.get_or_init(|| {
        let routes = HostRoutes {
            ipv4: true,
            ipv6: true,
        };
        let cfg = NetworkConfig::default()
            .derive(0, routes)
            .expect("the default config derives slot 0");
        Addrs::of(&cfg)
    })
}

fuzz_target!(|data: &[u8]| {
    let a = addrs();
    let mut out = [0u8; 600];
    let _ = black_box(dhcp4::answer(data, a, &mut out));
    let _ = black_box(dhcp6::answer(data, a, &mut out));
    let Ok(class) = wire::classify(data) else {
        return;
    };
    let mut eth_src = [0u8; 6];
    eth_src.copy_from_slice(&data[6..12]);
    let macs = (a.gw_mac, a.guest_mac);
    match autoconf::route(&class, eth_src, a) {
        Some(Request::Dhcp4 { payload }) => {
            let msg = &data[payload];
            let mut reply = [0u8; 400];
            if let dhcp4::Outcome::Reply { len, dst, .. } = dhcp4::answer(msg, a, &mut reply) {
                let src = (a.gw4.expect("routed only with IPv4"), 67).into();
                let _ = autoconf::emit_udp_with(&mut out, macs, (src, (dst, 68).into()), |b| {
                    b.get_mut(..len)?.copy_from_slice(&reply[..len]);
                    Some(len)
                });
            }
        }
        Some(Request::Dhcp6 { src, payload }) => {
            let msg = &data[payload];
            let ll = a.gw6_link_local().expect("routed only with IPv6");
            let _ = autoconf::emit_udp_with(&mut out, macs, ((ll, 547).into(), src), |b| {
                dhcp6::answer(msg, a, b)
            });
        }
        Some(Request::RouterSolicit) => {
            let ll = a.gw6_link_local().expect("routed only with IPv6");
            let _ = autoconf::emit_ndp_with(&mut out, macs, (ll, autoconf::ALL_NODES), |b| {
                ra::advert(a, b)
            });
        }
        Some(Request::Ignored) | None => {}
    }
});
