//! A real guest (QEMU/TCG, the VM kit's Debian kernel and busybox) on `ringnet vhost-user`:
//! QEMU's vhost-user netdev on ringnet's listening socket, guest RAM in a shared memfd
//! (`-object memory-backend-memfd,share=on -machine memory-backend=mem`), everything inside
//! the test's host namespace (tests/common/vm.rs).
//!
//! Cases (one boot each):
//! - `guest_end_to_end_offloads`: default offloads. The guest script of
//!   tests/vm_stream.rs (DHCP, SLAAC, DNS, 4 MiB each way, pings); the guest negotiated
//!   CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6 and MRG_RXBUF
//!   (`/sys/bus/virtio/devices/*/features`), and its eth0 counters show frames larger than
//!   an Ethernet MTU in both directions (bytes / packets over 1514: TSO from the guest, big
//!   frames to it).
//! - `no_offload`: `--no-offload`. None of those bits is negotiated, no frame exceeds 1514
//!   bytes, and the same transfers work.

mod common;

use std::time::Duration;

use common::virtio_net::*;
use common::*;

const SUB: &str = "vhost-user";

/// Largest frame without offloads: MTU 1500 + 14 bytes of Ethernet header.
const MAX_PLAIN_FRAME: u64 = 1514;

const OFFLOAD_BITS: &[(usize, &str)] = &[
    (CSUM, "CSUM"),
    (GUEST_CSUM, "GUEST_CSUM"),
    (GUEST_TSO4, "GUEST_TSO4"),
    (GUEST_TSO6, "GUEST_TSO6"),
    (HOST_TSO4, "HOST_TSO4"),
    (HOST_TSO6, "HOST_TSO6"),
    (MRG_RXBUF, "MRG_RXBUF"),
];

/// The names of the offload bits that are (`want` true) or are not set in `features`.
fn bits(features: &str, want: bool) -> Vec<&'static str> {
    OFFLOAD_BITS
        .iter()
        .filter(|(b, _)| feature_bit(features, *b) == want)
        .map(|(_, n)| *n)
        .collect()
}

#[test]
fn guest_end_to_end_offloads() {
    if !vm_test_can_run(SUB, &["tshark"]) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let mut rn = VmmBackend::start(&world, SUB, &[]);
    let plan = world.ringnet_plan(1500);
    let out = boot(
        &world.host,
        &net_vhost_user(&rn.socket),
        &plan.script(),
        VM_TIMEOUT,
    );
    rn.assert_alive();
    out.assert_ok("QEMU + ringnet vhost-user", &plan.expected_checks());
    world.assert_upload(&out);
    let stderr = rn.stop();
    let context = format!("{out}\n--- ringnet stderr ---\n{stderr}");

    let features = out.detail("virtio-features").unwrap_or_default();
    assert!(
        bits(&features, false).is_empty(),
        "the guest did not negotiate {:?} (features {features})\n{context}",
        bits(&features, false)
    );
    let stats = out.detail("eth0-stats").unwrap_or_default();
    let (rx_avg, tx_avg) = frame_averages(&stats);
    assert!(
        rx_avg > MAX_PLAIN_FRAME && tx_avg > MAX_PLAIN_FRAME,
        "offloads negotiated but the guest's eth0 saw no frames over {MAX_PLAIN_FRAME} \
         bytes on average (rx {rx_avg}, tx {tx_avg} bytes/frame: {stats})\n{context}"
    );
    assert_autoconf_capture(&rn.pcap, 1500, &context);
}

#[test]
fn no_offload() {
    if !vm_test_can_run(SUB, &[]) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let mut rn = VmmBackend::start(&world, SUB, &["--no-offload"]);
    let plan = world
        .plan()
        .set("STEPS", "dhcp download upload features")
        .set("EXPECT_IP", "172.16.0.2");
    let out = boot(
        &world.host,
        &net_vhost_user(&rn.socket),
        &plan.script(),
        VM_TIMEOUT,
    );
    rn.assert_alive();
    out.assert_ok(
        "QEMU + ringnet vhost-user --no-offload",
        &plan.expected_checks(),
    );
    world.assert_upload(&out);
    let stderr = rn.stop();
    let context = format!("{out}\n--- ringnet stderr ---\n{stderr}");
    let features = out.detail("virtio-features").unwrap_or_default();
    let on: Vec<_> = bits(&features, true)
        .into_iter()
        .filter(|b| *b != "MRG_RXBUF")
        .collect();
    assert!(
        on.is_empty(),
        "--no-offload, yet the guest negotiated {on:?} (features {features})\n{context}"
    );
    let stats = out.detail("eth0-stats").unwrap_or_default();
    let (rx_avg, tx_avg) = frame_averages(&stats);
    assert!(
        rx_avg <= MAX_PLAIN_FRAME && tx_avg <= MAX_PLAIN_FRAME,
        "--no-offload, yet frames average over {MAX_PLAIN_FRAME} bytes \
         (rx {rx_avg}, tx {tx_avg}: {stats})\n{context}"
    );
}
