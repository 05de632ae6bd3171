//! Namespace/TAP end-to-end harness for ringnet's integration tests.
//!
//! # Theory of operation
//!
//! Every test builds its own little world and tears it down again:
//!
//! ```text
//!   HostNs "rn-<pid>-<n>-host"                     Netns "rn-<pid>-<n>-guest"
//!   lo 127.0.0.1 ::1  (servers listen here)          eth0 (TAP, opened/created by ringnet)
//!   sink0 (ifb) 198.51.100.7/24 2001:db8::7/64       172.16.0.2/30  fd42:6d73:62::2/64
//!   default routes v4+v6 -> sink0 (ifb drops all)     default via 172.16.0.1 / fd42:6d73:62::1
//!   ringnet attach --netns /run/netns/<guest> ...  <==== TAP frames ====>
//! ```
//!
//! Nothing can leave: the only non-loopback interface of the host namespace is an `ifb`
//! device, which drops whatever is sent to it (this kernel has no `dummy` driver). The only
//! addresses tests ever target are the gateway addresses, the documentation addresses on the
//! sink, and unroutable TEST-NET addresses that end in the sink.
//!
//! Invariants:
//! - Names are unique per process and per object: `rn-<pid>-<counter>-<tag>`. Tests of one
//!   binary run in parallel threads of one process; the counter keeps them apart.
//! - Everything is removed by its exact name or by the process-group id the harness made
//!   (every child is spawned in its own process group) — never by pattern.
//! - Cleanup runs in `Drop`, so it also runs when a test panics. A [`Watchdog`] bounds each
//!   test: past its deadline it kills every registered process group, deletes every
//!   registered namespace and exits the test process (a hung test must not hang CI).
//! - Every wait on a child has a deadline ([`run`], [`Bg::next_line`], [`Ringnet`]'s stop).
//!
//! Privileges: [`privileged`] (and the [`require_privileges!`] macro) decide whether a test
//! can run. Without root, `/dev/net/tun` or a needed tool, a test prints `SKIP: <reason>` to
//! the real stderr (not captured by libtest) and returns — unless `CI=true`, where it panics.
//!
//! Layout (all but `frames` is re-exported here, so a test says `use common::*;`):
//! - `process.rs`: names and paths, [`TempFile`], [`run`] with a deadline and its
//!   [`Output`], processes by pid;
//! - `bg.rs`: background processes ([`Bg`]) and the helpers' ready line;
//! - `cleanup.rs`: the registry of live process groups and namespaces, the [`Watchdog`];
//! - `privileges.rs`: run, skip or fail ([`require_privileges!`]);
//! - `ns.rs`: [`Netns`], [`HostNs`], and [`in_private_netns`] for in-process tests;
//! - `attach.rs`: the slot plan ([`Slot`]), `ringnet attach` ([`Ringnet`]), `ringnet run`
//!   with a python guest script, ringnet's `--stats` counters;
//! - `testbed.rs`: [`Testbed`] (host + guest + ringnet) and its [`Opts`];
//! - `procstat.rs`: a process's VmRSS/VmHWM and fd count from /proc, a [`Sampler`] of both
//!   on a thread, a least-squares [`slope`], and the `--stats` ring lines ([`link_counters`]);
//! - `inprocess.rs`: [`InProcess`], a `Network` serving a guest TAP from the test process;
//! - `dns.rs`: an upstream DNS server in the host namespace ([`DnsServer`], dnsmasq, built
//!   by [`Dnsmasq`]), ringnet's `[dns]` config ([`dns_config`]) and the guest's [`dig`];
//! - `vmkit.rs`: the VM kit ([`kit`]): a Debian kernel and a busybox initramfs built from
//!   Debian packages, cached under `target/vmkit/`;
//! - `vm.rs`: QEMU (TCG) booting the kit inside a host namespace ([`Vm`], [`boot`]), the
//!   netdevs ([`net_stream`], [`net_vhost_user`], [`net_user`]), the shared guest script
//!   `tests/vm/guest.sh` ([`GuestPlan`]) and what the guest reported ([`VmOutput`]);
//!   [`VmWorld`] is a host namespace with an HTTP server and dnsmasq for it;
//! - `tls_server.rs`: an HTTPS server with its own test CA ([`TestCa`], [`TlsServer`],
//!   [`ServerOpts`]), optionally inside a namespace, recording every [`Request`] and
//!   connection ([`ConnInfo`]): the upstream of the TLS interception tests;
//! - `frames.rs` ([`frames`], by path): the Ethernet/ARP/IPv4 frames a test guest sends
//!   through a `GuestLink`.
//!
//! Results: the python helpers print JSON lines, read as [`Json`] (`serde_json::Value`):
//! `out.json()["ok"] == true`, [`port`]`(&ready)`.
#![allow(dead_code)] // each test binary uses a different subset of the harness

mod attach;
mod bg;
mod cleanup;
mod dns;
pub mod frames;
mod inprocess;
mod ns;
mod privileges;
mod process;
mod procstat;
mod testbed;
mod tls_server;
mod vm;
mod vmkit;

// Re-exported for `use common::*;` (unused in the binaries that need only some of them).
#[allow(unused_imports)]
pub use {
    attach::*, bg::*, cleanup::*, dns::*, inprocess::*, ns::*, privileges::*, process::*,
    procstat::*, testbed::*, tls_server::*, vm::*, vmkit::*,
};

/// A JSON line printed by a python helper (its ready line or its result line).
pub type Json = serde_json::Value;

/// The `port` of a helper's ready line, as a command-line argument.
pub fn port(ready: &Json) -> String {
    ready["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no port in ready line {ready}"))
        .to_string()
}

/// `test_cases!(name: a(args…), b(args…));` runs the case function `name` as the tests
/// `name::a`, `name::b`, … with those arguments (per MTU, per egress driver).
#[macro_export]
macro_rules! test_cases {
    ($name:ident: $($case:ident($($arg:expr),* $(,)?)),+ $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $case() {
                    super::$name($($arg),*)
                }
            )+
        }
    };
}
