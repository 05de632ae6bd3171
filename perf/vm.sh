#!/usr/bin/env bash
# perf/vm.sh - QEMU guests on ringnet (stream, vhost-user) against passt and QEMU's own user
# networking, in one run with the same guest: bulk both ways and TCP RR.
#
# The work is tests/vm_perf.rs (an #[ignore]d test; its module docs are the theory of
# operation): per round, one fresh backend and one fresh QEMU/TCG guest (the VM kit:
# Debian kernel + busybox, tests/common/vmkit.rs) per backend, interleaved so drift hits
# all alike; in the guest a static perf/rrbench.c sends and receives VM_PERF_MB MiB to and
# from `rrbench bulk` (host-timed) and runs tcp_rr against `rrbench server`, both in the
# test's isolated host namespace (198.51.100.7). Under TCG the absolute numbers say little:
# compare the backends within one run.
#
# Environment (defaults in brackets):
#   VM_PERF_BACKENDS ["ringnet-stream ringnet-vhost-user passt user"]
#   VM_PERF_RUNS [3]          rounds (medians reported)
#   VM_PERF_MB [64]           MiB per bulk transfer, each way
#   VM_PERF_RR_SECONDS [5]    TCP RR length
#   VM_PERF_MTU [1500]        guest eth0 MTU; passt and ringnet get --mtu (QEMU user: 1500)
#   VM_PERF_OUT [perf/results] results directory
#   PERF_TAG                  results file stem (default YYYYMMDD-HHMM)
#   RINGNET_BIN               ringnet binary (default: the one cargo builds for the test)
#   PERF_NO_INSTALL=1         never apt-get install missing tools (qemu-system-x86, passt,
#                             gcc + libc6-dev for the static rrbench, dnsmasq, python3)
#
# Output: perf/results/<stamp>-<host>-vm.md (the table: medians, ratio to passt per
# column) and .jsonl (one line per boot); the log in perf/results/tmp/<stamp>-vm.log.
# A ringnet backend whose subcommand (`ringnet qemu`, `ringnet vhost-user`) is not in the
# binary fails the run before the first boot, naming it.
#
# Safety: the test harness spawns every process in its own process group and kills it by
# that id; the namespace it made is deleted by its exact name; a watchdog bounds the run.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}

[ "$(id -u)" = 0 ] || { echo "vm.sh: must run as root (namespaces)" >&2; exit 1; }

# shellcheck source=perf/install.sh
. "$HERE/install.sh"
mapfile -t need_pkgs < <(pkgs_missing qemu-system-x86_64:qemu-system-x86 gcc:gcc dnsmasq:dnsmasq-base \
	python3:python3 ip:iproute2 gzip:gzip)
case " ${VM_PERF_BACKENDS:-passt} " in
*" passt "*) command -v passt >/dev/null 2>&1 || need_pkgs+=(passt) ;;
esac
[ -e "/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/libc.a" ] ||
	need_pkgs+=(libc6-dev)
install_pkgs vm.sh "${need_pkgs[@]}"

mkdir -p "$HERE/results/tmp"
LOG=$HERE/results/tmp/$STAMP-vm.log
export VM_PERF_TAG=$STAMP
cd "$REPO"
echo "vm.sh: building (cargo test --release --test vm_perf --no-run); log $LOG" >&2
timeout 1800 cargo test --release --test vm_perf --no-run 2>&1 | tail -n 3 >&2
timeout 7200 cargo test --release --test vm_perf -- --ignored --nocapture --test-threads=1 \
	2>&1 | tee "$LOG"
