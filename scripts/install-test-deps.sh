#!/usr/bin/env bash
# Install the Debian packages ringnet's tests need. Idempotent and quiet: runs apt-get only
# when a package is missing (and `apt-get update` once before installing).
#   iproute2        ip netns / ip link (namespaces, ifb sink, veth)
#   iputils-ping    ping / ping -6 from the guest
#   iputils-arping  arping (ARP checks; the iputils flavour, whose output the tests parse)
#   python3         the client/server helpers in tests/helpers/
#   procps          sysctl (ping_group_range in the host namespace)
#   kmod            modprobe, so the kernel can auto-load ifb / tun when built as modules
#   coreutils       timeout and friends
#   dnsmasq-base    /usr/sbin/dnsmasq: the upstream DNS server of tests/dns.rs and tests/policy.rs
#                   (run in the foreground inside the test's host namespace; no service)
#   bind9-dnsutils  dig, the guest's DNS client in tests/dns.rs and tests/policy.rs
#   util-linux      unshare (a private mount namespace for `ringnet run` with its own
#                   /etc/resolv.conf in tests/dns.rs), nsenter, and setpriv (tests/run_rootless.rs
#                   runs `ringnet run` as nobody)
#   tshark          reads the `--pcap` capture in tests/observe_cli.rs (packet count, echo,
#                   TCP handshake); installed with DEBIAN_FRONTEND=noninteractive, so
#                   wireshark-common's setuid question takes its default (no)
#   python3-prometheus-client
#                   the Prometheus text parser tests/observe_cli.rs runs on `--metrics-addr`
#                   (with /usr/bin/python3, Debian's interpreter, whatever python3 is first
#                   on PATH)
#   qemu-system-x86 qemu-system-x86_64 -accel tcg for the VM tests (tests/vm_*.rs); the guest's
#                   kernel and busybox are not installed: tests/common/vmkit.rs fetches
#                   linux-image-amd64's kernel package and busybox-static with
#                   `apt-get download` and builds its initramfs under target/vmkit/
#   passt           the reference stream-netdev backend tests/vm_kit.rs checks the VM kit with
#   xz-utils zstd   decompress kernel modules when Debian ships them as .ko.xz / .ko.zst
#   g++             libFuzzer's C++ sources, built by libfuzzer-sys for the fuzz smoke run
#                   (scripts/fuzz.sh, the last step of scripts/test.sh)
#   curl            the guest's HTTPS client in tests/tls.rs (HTTP/1.1 and HTTP/2 through
#                   ringnet's TLS interception) and tests/tls_server_kit.rs
# dnsperf (perf/dns.sh only) is not needed by the tests; perf/dns.sh installs it itself.
set -euo pipefail

PACKAGES=(iproute2 iputils-ping iputils-arping python3 procps kmod coreutils dnsmasq-base
	bind9-dnsutils util-linux tshark python3-prometheus-client qemu-system-x86 passt xz-utils
	zstd curl g++)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "install-test-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
		cat "$log" >&2
		echo "install-test-deps: apt-get failed" >&2
		exit 1
	fi
fi

# The tests need a TAP-capable kernel; say so early rather than in every test.
if [ ! -e /dev/net/tun ]; then
	echo "install-test-deps: warning: /dev/net/tun is missing; namespace tests will skip (or fail under CI=true)" >&2
fi
echo "install-test-deps: ok (${PACKAGES[*]})"
