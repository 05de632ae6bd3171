//! [`InProcess`]: a [`Network`] serving a TAP in a fresh guest namespace from this process,
//! for tests of the library API on real sockets. Call it inside [`super::in_private_netns`]:
//! the thread's namespace is then the host side (loopback only).

use std::path::Path;

use ringnet::backend::netns::NetNs;
use ringnet::backend::tap::Tap;
use ringnet::config::{HostRoutes, NetworkConfig};
use ringnet::Network;

use super::ns::Netns;

/// Fields drop in declaration order: the network stops before its namespace goes.
pub struct InProcess {
    pub net: Network,
    pub guest: Netns,
}

impl InProcess {
    /// `cfg` for slot 0 with IPv4 on (a private namespace has no routes to probe): eth0 in
    /// a new guest namespace, configured, served by a started network.
    pub fn start(cfg: &NetworkConfig) -> InProcess {
        let guest = Netns::new("guest");
        let routes = HostRoutes {
            ipv4: true,
            ipv6: false,
        };
        let mut net = Network::with_routes(cfg, 0, routes).expect("network");
        let ns = NetNs::open(Path::new(&guest.path())).expect("guest namespace");
        let tap = ns
            .run(|| Tap::open("eth0"))
            .expect("netns thread")
            .expect("TAP");
        ns.configure_guest("eth0", net.config())
            .expect("configure eth0");
        net.start_port(Box::new(tap)).expect("start");
        InProcess { net, guest }
    }
}
