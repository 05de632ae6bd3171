//! The VM kit itself (tests/common/vmkit.rs, tests/common/vm.rs, tests/vm/guest.sh) against
//! two networks that are not ringnet: QEMU's own slirp (`-netdev user`) and passt over a
//! stream netdev. They show that the kernel, the initramfs and the guest script work, so a
//! failure in tests/vm_stream.rs or tests/vm_vhost_user.rs is ringnet's.
//!
//! Cases:
//! - `cpio_layout`: the newc writer's header, padding and trailer (no root needed);
//! - `slirp`: DHCP (10.0.2.15 via 10.0.2.2), SLAAC in the prefix given to slirp, DNS
//!   through the host namespace's dnsmasq, 4 MiB down and up with sha256 checks, ping;
//! - `passt`: the same through `passt --foreground --socket PATH` (DHCP, NDP, its DNS
//!   option pointing at dnsmasq).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn cpio_layout() {
    let mut c = Cpio::default();
    c.file("a", 0o644, b"xyz");
    let b = c.finish();
    assert_eq!(&b[..6], b"070701");
    // header 110 + "a\0" = 112 (aligned), data 3 → padded to 4: the trailer starts at 116.
    assert_eq!(&b[116..122], b"070701");
    assert_eq!(&b[112..115], b"xyz");
    assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
    assert_eq!(b.len() % 4, 0);
    // filesize field (7th) of the first entry is 3
    assert_eq!(&b[6 + 6 * 8..6 + 7 * 8], b"00000003");
}

fn kit_tools() -> Vec<&'static str> {
    VM_TOOLS.to_vec()
}

#[test]
fn slirp() {
    if !privileged(&kit_tools()) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let plan = world
        .plan()
        .set("STEPS", "dhcp slaac dns download upload ping")
        .set("EXPECT_IP", "10.0.2.15")
        .set("EXPECT_ROUTER", "10.0.2.2")
        .set("EXPECT_DNS", "10.0.2.3")
        .set("V6_PREFIX", "fd00:5:")
        .set("DNS_SERVER", SINK_V4)
        .set("DNS_NAMES", format!("{UPSTREAM_NAME}={UPSTREAM_ADDR}"))
        .set("PING4", "10.0.2.2");
    let net = net_user("ipv6-prefix=fd00:5::,ipv6-prefixlen=64");
    let out = boot(&world.host, &net, &plan.script(), VM_TIMEOUT);
    out.assert_ok("QEMU -netdev user", &plan.expected_checks());
    world.assert_upload(&out);
    eprintln!("{out}");
}

#[test]
fn passt() {
    if !privileged(&[kit_tools(), vec!["passt"]].concat()) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let sock = world.dir.join("passt.sock");
    let sock_s = sock.to_str().expect("utf-8 path").to_string();
    let mut passt = world.host.spawn(&[
        "passt",
        "--foreground",
        "--stderr",
        "--socket",
        &sock_s,
        "-a",
        "10.0.2.15",
        "-n",
        "24",
        "-g",
        "10.0.2.2",
        "-a",
        "2001:db8::15",
        "-g",
        "2001:db8::1",
        "-D",
        SINK_V4,
        "-m",
        "1500",
    ]);
    assert!(
        wait_path(&sock, Duration::from_secs(10)),
        "passt made no socket at {sock_s}; stderr:\n{}",
        passt.stderr()
    );
    let plan = world
        .plan()
        .set("STEPS", "dhcp slaac dns download upload ping")
        .set("EXPECT_IP", "10.0.2.15")
        .set("EXPECT_ROUTER", "10.0.2.2")
        .set("EXPECT_DNS", SINK_V4)
        .set("EXPECT_MTU", "1500")
        .set("V6_PREFIX", "2001:db8::")
        .set("DNS_SERVER", SINK_V4)
        .set("DNS_NAMES", format!("{UPSTREAM_NAME}={UPSTREAM_ADDR}"))
        .set("PING4", SINK_V4);
    let out = boot(&world.host, &net_stream(&sock), &plan.script(), VM_TIMEOUT);
    passt.assert_alive();
    out.assert_ok("QEMU + passt", &plan.expected_checks());
    world.assert_upload(&out);
    eprintln!("{out}");
}
