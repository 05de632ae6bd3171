//! A real guest (QEMU/TCG, the VM kit's Debian kernel and busybox) on `ringnet qemu`: QEMU's
//! stream netdev (`-netdev stream,server=off,addr.type=unix`) connected to ringnet's
//! listening socket, everything inside the test's host namespace (tests/common/vm.rs).
//!
//! Cases (one boot each, except where said):
//! - `guest_end_to_end`: with `--mtu 1400`, the guest takes a DHCPv4 lease (address,
//!   router, DNS, MTU 1400), forms a SLAAC address from the RA and gets its default route,
//!   resolves `host.ringnet.internal` (answered by ringnet) and a name only the upstream
//!   dnsmasq knows, downloads 4 MiB and uploads 4 MiB (sha256 checked on both ends), pings
//!   both gateway addresses. The capture then shows the RA's prefix (autonomous) and
//!   RDNSS option and the DHCP ACK's options.
//! - `second_qemu_after_kill` (two boots): QEMU is SIGKILLed while connected; a second
//!   QEMU connects to the same ringnet and gets a lease and a download.
//! - `oversized_length_prefix`: a client sends a frame length of 1 MiB (larger than any
//!   MTU); ringnet disconnects it and a following QEMU works.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;

const SUB: &str = "qemu";

#[test]
fn guest_end_to_end() {
    if !vm_test_can_run(SUB, &["tshark"]) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let mut rn = VmmBackend::start(&world, SUB, &["--mtu", "1400"]);
    let plan = world.ringnet_plan(1400);
    let out = boot(
        &world.host,
        &net_stream(&rn.socket),
        &plan.script(),
        VM_TIMEOUT,
    );
    rn.assert_alive();
    out.assert_ok("QEMU + ringnet qemu", &plan.expected_checks());
    world.assert_upload(&out);
    assert_eq!(
        out.detail("ra-mtu").as_deref(),
        Some("1400"),
        "the guest's IPv6 MTU is not the RA's 1400\n{out}"
    );
    let stderr = rn.stop();
    assert_autoconf_capture(
        &rn.pcap,
        1400,
        &format!("{out}\n--- ringnet stderr ---\n{stderr}"),
    );
}

#[test]
fn second_qemu_after_kill() {
    if !vm_test_can_run(SUB, &[]) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(300));
    let world = VmWorld::new();
    let mut rn = VmmBackend::start(&world, SUB, &[]);
    let first = world.plan().set("STEPS", "dhcp download hold");
    let mut vm = Vm::spawn(&world.host, &net_stream(&rn.socket), &first.script());
    let held = vm.wait_for("RINGNET-VM info hold", VM_TIMEOUT);
    let out = vm.kill();
    assert!(held, "the first guest never got to `hold`\n{out}");
    out.assert_checks("first QEMU", &["dhcp", "download"], false);
    rn.assert_alive();

    let second = world.plan().set("STEPS", "dhcp download");
    let out2 = boot(
        &world.host,
        &net_stream(&rn.socket),
        &second.script(),
        VM_TIMEOUT,
    );
    rn.assert_alive();
    out2.assert_ok(
        "second QEMU on the same ringnet, after the first was killed",
        &second.expected_checks(),
    );
    rn.stop();
}

#[test]
fn oversized_length_prefix() {
    if !vm_test_can_run(SUB, &[]) {
        return;
    }
    let _w = Watchdog::new(Duration::from_secs(240));
    let world = VmWorld::new();
    let mut rn = VmmBackend::start(&world, SUB, &[]);

    // QEMU's stream framing: a 4-byte big-endian length, then the frame.
    let mut s = UnixStream::connect(&rn.socket).expect("connecting to ringnet's socket");
    let mut msg = 0x0010_0000u32.to_be_bytes().to_vec();
    msg.extend_from_slice(&[0xa5; 64]);
    // ringnet may close as soon as it has read the length; a failed write is fine too.
    let _ = s.write_all(&msg);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let verdict = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok("closed"),
            Ok(_) => continue, // a frame ringnet sent before noticing (an RA): keep reading
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break Ok("reset"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break Err(format!("still connected after {:.1?}", start.elapsed()))
            }
            Err(e) => break Err(format!("read error {e}")),
        }
    };
    assert!(
        verdict.is_ok(),
        "ringnet did not disconnect a client announcing a 1 MiB frame: {verdict:?}\n\
         --- ringnet stderr ---\n{}",
        rn.stderr()
    );
    drop(s);
    rn.assert_alive();

    let plan = world.plan().set("STEPS", "dhcp download");
    let out = boot(
        &world.host,
        &net_stream(&rn.socket),
        &plan.script(),
        VM_TIMEOUT,
    );
    rn.assert_alive();
    out.assert_ok(
        "QEMU after a client with a bad length prefix",
        &plan.expected_checks(),
    );
    let stderr = rn.stop();
    // The counter's name is not fixed yet; show what there is.
    let counters: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("length") || l.contains("stream"))
        .collect();
    eprintln!("ringnet counters about the stream: {counters:?}");
}
