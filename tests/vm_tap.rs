//! A real guest (QEMU/TCG with the VM kit) on `ringnet attach`'s TAP backend, bridged: the
//! guest namespace holds ringnet's TAP `eth0` and QEMU's TAP `qtap` in a bridge, so the
//! VM's virtio-net frames reach ringnet unchanged. This exercises ringnet's
//! autoconfiguration (DHCPv4, router advertisements) and gateway DNS with a stock Linux
//! guest and busybox tools, independently of the VMM backends (tests/vm_stream.rs,
//! tests/vm_vhost_user.rs run the same guest script on those).
//!
//! ```text
//!   host ns: ringnet attach --netns GUEST --tap eth0 (no --configure), servers
//!   guest ns: br0 ── eth0 (ringnet's TAP, MAC changed so the bridge forwards the guest MAC)
//!                └─ qtap (QEMU -netdev tap) ── VM eth0 02:6d:73:00:00:02
//! ```
//!
//! Case `bridged_guest`: the full guest script (DHCP with MTU, SLAAC + RA route, DNS for
//! `host.ringnet.internal` and an upstream name, 4 MiB down and up, pings), then the
//! capture's RA (prefix, RDNSS, MTU) and DHCP ACK options.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn bridged_guest() {
    if !privileged(&[VM_TOOLS, &["tshark"]].concat()) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let guest = Netns::new("vmguest");
    // Only the VM speaks IPv6 here: not ringnet's TAP, not qtap, not the bridge (their
    // router solicitations and DAD would reach ringnet from MACs other than the guest's).
    guest.sysctl(&["net.ipv6.conf.default.disable_ipv6=1"]);
    let pcap = world.dir.join("tap.pcap");
    let dns = format!("{SINK_V4}:53");
    let netns = guest.path();
    let mtu = "1400";
    let mut rn = world.host.spawn(&[
        ringnet_bin(),
        "attach",
        "--netns",
        &netns,
        "--tap",
        "eth0",
        "--mtu",
        mtu,
        "--stats",
        "--dns",
        &dns,
        "--pcap",
        pcap.to_str().expect("utf-8 path"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guest.links().iter().any(|l| l == "eth0") {
        rn.assert_alive();
        assert!(Instant::now() < deadline, "ringnet made no eth0 in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    guest.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    guest.ip(&["link", "set", "eth0", "mtu", mtu]);
    guest.ip(&["link", "add", "br0", "type", "bridge"]);
    guest.ip(&["tuntap", "add", "qtap", "mode", "tap"]);
    for dev in ["eth0", "qtap"] {
        guest.ip(&["link", "set", dev, "master", "br0"]);
        guest.ip(&["link", "set", dev, "up"]);
    }
    guest.ip(&["link", "set", "br0", "up"]);

    let net: Vec<String> = [
        "-netdev",
        "tap,id=n0,ifname=qtap,script=no,downscript=no",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={VM_MAC},romfile="),
    ]
    .map(String::from)
    .to_vec();
    let plan = world.ringnet_plan(mtu.parse().expect("mtu"));
    let out = boot(&guest, &net, &plan.script(), VM_TIMEOUT);
    rn.assert_alive();
    out.assert_ok(
        "QEMU tap + bridge + ringnet attach",
        &plan.expected_checks(),
    );
    world.assert_upload(&out);
    rn.signal(libc::SIGTERM);
    let status = rn.wait_timeout(Duration::from_secs(5));
    let context = format!("{out}\n--- ringnet stderr ---\n{}", rn.stderr());
    assert!(
        status.is_some_and(|s| s.success()),
        "ringnet attach did not exit 0 on SIGTERM: {status:?}\n{context}"
    );
    if let Ok(keep) = std::env::var("RINGNET_TEST_KEEP_PCAP") {
        std::fs::copy(&pcap, keep).expect("copy pcap");
    }
    assert_autoconf_capture(&pcap, 1400, &context);
}
