#!/usr/bin/env bash
# perf/floods.sh - a legit upload's throughput while the guest floods its own eth0 with raw
# frames, ringnet and pasta side by side in one run (the perf side of tests/floods.rs,
# which measures ringnet alone and asserts its accounting, not its speed).
#
# An isolated host namespace made here (lib.sh's setup_host: loopback + a dead-end ifb sink
# carrying both default routes; nothing leaves) also gets the test suite's sink addresses
# 198.51.100.7/24 and 2001:db8::7/64 on sink0 (the `syn_refused` flood's targets), one
# dnsmasq on 198.51.100.7:53 and [2001:db8::7]:53 answering every *.flood.test from its
# configuration, and an `rrbench server` (the "new connection" check). For every backend in
# FLOOD_BACKENDS and every kind in FLOOD_KINDS, in that order, a fresh guest namespace and
# a fresh backend:
#
#   1. unloaded: `iperf3 -c GATEWAY -t FLOOD_SECONDS` guest -> gateway -> the host
#      namespace's loopback (one stream), Gbit/s received;
#   2. loaded: tests/helpers/flood.py --kind KIND (AF_PACKET on the guest's eth0, qdisc
#      bypassed, as fast as python goes; at least the kind's count from tests/floods.rs
#      times FLOOD_SCALE, and until the upload is over: --until-signal) and the same upload
#      under it, started once the flooder is sending; ratio = loaded / unloaded;
#   3. during the loaded window: the backend's CPU (utime+stime of /proc/PID/stat, all
#      threads), its peak RSS (VmHWM, reset through /proc/PID/clear_refs when the flood
#      starts, and VmRSS sampled every 0.1 s), the flood's frames tried and those the
#      guest's TAP queue refused (flood.py's result line: attempts, tx_dropped);
#   4. afterwards: the backend process alive, a ping to both of its gateways (2 echoes each,
#      3 s), and a new TCP connection with a 1-byte echo (`rrbench tcp_rr`, 0.3 s); if any
#      of these fails, they are retried once a second for up to FLOOD_RECOVER s and the
#      time until all three pass is recorded ("recovered after");
#   5. ringnet only: its `--stats` counters at exit, into the JSON line.
#
# Kinds (see flood.py): syn (SYNs to distinct addresses/ports routed into the sink: pending
# host connects), syn_refused (SYNs to closed ports of 198.51.100.7 / 2001:db8::7: refused
# at once), udp (10,000 destinations), malformed, neigh (ARP/NDP), dns (queries to the
# gateway's resolver). Both backends get the same upstream for `dns`: ringnet
# `--dns 198.51.100.7:53`; pasta `--dns-forward GW4 --dns-forward GW6`, which sends queries
# to its gateway addresses to the first resolver of the host's /etc/resolv.conf: the script
# writes /etc/netns/<host namespace>/resolv.conf (nameserver 198.51.100.7 and 2001:db8::7),
# which `ip netns exec` mounts over /etc/resolv.conf, and deletes that directory on exit.
# (This pasta's `-D ADDR` does not set the forwarding target: with it, queries went to
# 0.0.0.0 / :: and no answer came back.) A backend whose gateway does not answer a test
# query before the flood gets the kind skipped, with the reason in the report.
#
# Backends:
#   ringnet  `ringnet attach --configure --stats --dns 198.51.100.7:53` (default limits);
#            guest 172.16.0.2, gateways 172.16.0.1 / fd42:6d73:62::1 (slot 0)
#   pasta    Debian 12's (as perf/compare.sh: --runas 0, -t/-u/-T/-U none), both families:
#            guest 10.0.2.100 / fd00:2::100, gateways 10.0.2.2 / fd00:2::2 (mapped to the
#            host's loopback). pasta answers a guest's echo request by sending one from a
#            ping socket to the same address on the host, so the host namespace allows ping
#            sockets (net.ipv4.ping_group_range) and holds 10.0.2.2/32 and fd00:2::2/128 on
#            its loopback: its gateway ping is a round trip through pasta's ICMP relay.
#
# Pinned (default): the backend, iperf3 client and server on FLOOD_CPU; the flooder on
# FLOOD_FLOODER_CPU (a guest floods from its own vCPU). Unpinned, this pasta stalls on
# single-stream uploads (see rss.sh); with 2 CPUs, everything shares them.
#
# Environment (defaults in brackets):
#   FLOOD_BACKENDS ["ringnet pasta"]
#   FLOOD_KINDS ["syn syn_refused udp malformed neigh dns"]
#   FLOOD_SECONDS [6]        each upload window (iperf3 -t), unloaded and loaded
#   FLOOD_SCALE [1]          multiplies each kind's minimum frame count (tests/floods.rs's:
#                            100,000; udp 10,000; dns 50,000)
#   FLOOD_MTU [65520]        the guest's MTU (both backends)
#   FLOOD_EGRESS [auto]      ringnet --egress
#   FLOOD_PIN [pinned]       pinned | unpinned
#   FLOOD_CPU [0]            backend, iperf3 (and ringnet --cpu) when pinned
#   FLOOD_FLOODER_CPU [1]    the flooder when pinned
#   FLOOD_RECOVER [15]       seconds to wait for a backend that does not answer after a flood
#   FLOOD_NOFILE             open-files limit (ulimit -n) for everything started here; default:
#                            the inherited one, recorded in the report (pasta opens a host
#                            socket per UDP source port and per connecting SYN, and stops
#                            opening any at this limit)
#   RINGNET_BIN [target/release/ringnet]  (built with cargo when missing)
#   RINGNET_REV              the name the report gives that binary (default: the repo's last
#                            commit touching src/ or Cargo.toml)
#   PERF_NO_INSTALL=1        never apt-get install missing tools (iperf3, passt, dnsmasq-base,
#                            bind9-dnsutils, iputils-ping, gcc, ...)
#   PERF_TAG                 results file stem (default YYYYMMDD-HHMM)
#
# 20-60 s per (backend, kind) at the defaults (a backend that stops answering costs the
# most): ~5 min for the full run.
# Output: perf/results/<stamp>-<host>-floods.md (tables) and .jsonl (one line per backend
# and kind); logs and raw output under perf/results/tmp/<stamp>-floods/.
#
# Safety: every process runs under `timeout` and is stopped by PID; the namespaces made here
# are deleted by their exact names on exit (lib.sh). No `pkill`.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BACKENDS=${FLOOD_BACKENDS:-"ringnet pasta"}
KINDS=${FLOOD_KINDS:-"syn syn_refused udp malformed neigh dns"}
SECS=${FLOOD_SECONDS:-6}
SCALE=${FLOOD_SCALE:-1}
MTU=${FLOOD_MTU:-65520}
EGRESS=${FLOOD_EGRESS:-auto}
PIN=${FLOOD_PIN:-pinned}
CPU=${FLOOD_CPU:-0}
FCPU=${FLOOD_FLOODER_CPU:-1}
RECOVER=${FLOOD_RECOVER:-15}
NOFILE=${FLOOD_NOFILE:-}
RINGNET_BIN=${RINGNET_BIN:-$REPO/target/release/ringnet}
RINGNET_REV=${RINGNET_REV:-$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml 2>/dev/null || echo "?")}
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}
HOST=$(hostname -s 2>/dev/null || echo host)
RESDIR=$HERE/results
WORK=$RESDIR/tmp/$STAMP-floods
FLOOD_PY=$REPO/tests/helpers/flood.py
IPORT=5211 # iperf3, in the host namespace (every address)
RPORT=7821 # rrbench server, in the host namespace
SINK4=198.51.100.7
SINK6=2001:db8::7
DNS_ANSWER=198.51.100.9
PASTA_G4=10.0.2.2 PASTA_G6=fd00:2::2

for b in $BACKENDS; do
	case $b in ringnet | pasta) ;; *) echo "floods.sh: unknown backend $b" >&2; exit 2 ;; esac
done
for k in $KINDS; do
	case $k in syn | syn_refused | udp | malformed | neigh | dns) ;;
	*) echo "floods.sh: unknown kind $k" >&2; exit 2 ;;
	esac
done
case $PIN in pinned | unpinned) ;; *) echo "floods.sh: FLOOD_PIN must be pinned or unpinned" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "floods.sh: must run as root (namespaces, TAP)" >&2; exit 1; }

# shellcheck source=perf/install.sh
. "$HERE/install.sh"
mapfile -t need_pkgs < <(pkgs_missing ip:iproute2 iperf3:iperf3 gcc:gcc dnsmasq:dnsmasq-base dig:bind9-dnsutils \
	ping:iputils-ping taskset:util-linux timeout:coreutils sysctl:procps python3:python3)
case " $BACKENDS " in *" pasta "*) command -v pasta >/dev/null 2>&1 || need_pkgs+=(passt) ;; esac
[ ${#need_pkgs[@]} -eq 0 ] || need_pkgs+=(libc6-dev)
install_pkgs floods.sh "${need_pkgs[@]}"
[ -e /dev/net/tun ] || { echo "floods.sh: /dev/net/tun missing" >&2; exit 1; }
case " $BACKENDS " in
*" ringnet "*)
	if [ ! -x "$RINGNET_BIN" ]; then
		echo "floods.sh: building ringnet (cargo build --release)" >&2
		(cd "$REPO" && timeout 1200 cargo build --release) >&2
	fi
	;;
esac

[ -z "$NOFILE" ] || ulimit -n "$NOFILE"
NOFILE=$(ulimit -n)

mkdir -p "$WORK"
LOG=$WORK/floods.log
: >"$LOG"
RRB=$WORK/rrbench
gcc -O2 -Wall -o "$RRB" "$HERE/rrbench.c"
OUTJ=$RESDIR/$STAMP-$HOST-floods.jsonl
OUTM=$RESDIR/$STAMP-$HOST-floods.md
: >"$OUTJ"
CLK=$(getconf CLK_TCK)
PASTA_VER=$(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo "?")

TAG=rnf$$
GUEST=${TAG}g
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"
# pasta's DNS forwarding target: the host namespace's /etc/resolv.conf, i.e. this file
# (ip netns exec mounts it); deleted on exit with everything lib.sh made
ETC_NETNS=/etc/netns/$HOSTNS
MADE_ETC_NETNS=0
[ -d /etc/netns ] || MADE_ETC_NETNS=1
floods_cleanup() {
	cleanup
	rm -rf "$ETC_NETNS"
	[ $MADE_ETC_NETNS = 0 ] || rmdir /etc/netns 2>/dev/null || true
}
trap floods_cleanup EXIT

PFX=() FPFX=() cpuopt=()
if [ "$PIN" = pinned ]; then
	PFX=(taskset -c "$CPU")
	FPFX=(taskset -c "$FCPU")
	cpuopt=(--cpu "$CPU")
fi

# ------------------------------------------------------------ the host namespace
setup_host
ip -n "$HOSTNS" addr add "$SINK4/24" dev sink0
ip -n "$HOSTNS" -6 addr add "$SINK6/64" dev sink0 nodad
ip -n "$HOSTNS" addr add "$PASTA_G4/32" dev lo
ip -n "$HOSTNS" -6 addr add "$PASTA_G6/128" dev lo nodad
ip netns exec "$HOSTNS" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
mkdir -p "$ETC_NETNS"
printf 'nameserver %s\nnameserver %s\n' "$SINK4" "$SINK6" >"$ETC_NETNS/resolv.conf"
bg 3600 "$WORK/dnsmasq.log" ip netns exec "$HOSTNS" dnsmasq --keep-in-foreground \
	--conf-file=/dev/null --no-resolv --no-hosts --no-poll --bind-interfaces \
	--listen-address="$SINK4" --listen-address="$SINK6" --port=53 --user=root --group=root \
	--pid-file= --cache-size=0 --local-ttl=300 --address=/flood.test/"$DNS_ANSWER"
DNSMASQ=$BGPID
bg 3600 "$WORK/rrbench-server.log" ip netns exec "$HOSTNS" "$RRB" server -p $RPORT -L 3500
RRSRV=$BGPID

# ------------------------------------------------------------ helpers
cpu_ticks() { # utime+stime of a process, all threads (ticks)
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	awk '{print $12 + $13}' <<<"$s"
}
status_kib() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
secs_of() { awk -v t="$1" -v c="$CLK" 'BEGIN{printf "%.2f", t / c}'; }
now() { date +%s.%N; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

count_of() { # the kind's minimum count in tests/floods.rs, times FLOOD_SCALE
	local n
	case $1 in udp) n=10000 ;; dns) n=50000 ;; *) n=100000 ;; esac
	awk -v n="$n" -v s="$SCALE" 'BEGIN{v = int(n * s); print (v < 1 ? 1 : v)}'
}

reachable() { # NETNS SERVER: a new connection and a 1-byte echo
	ip netns exec "$1" timeout 5 "$RRB" tcp_rr -H "$2" -p $RPORT -d 0.3 2>/dev/null | grep -q '"count":[1-9]'
}

# attach BACKEND: start it for $GUEST; sets BPID, BWRAP, GW4, GW6
attach() {
	case $1 in
	ringnet)
		bg 600 "$WORK/$SESSION.backend.log" "${PFX[@]}" ip netns exec "$HOSTNS" "$RINGNET_BIN" attach \
			--netns "/run/netns/$GUEST" --tap eth0 --configure --mtu "$MTU" --egress "$EGRESS" \
			--dns "$SINK4:53" --stats "${cpuopt[@]}"
		;;
	pasta)
		bg 600 "$WORK/$SESSION.backend.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
			pasta -f --runas 0 --config-net -m "$MTU" -a 10.0.2.100 -n 24 -g "$PASTA_G4" \
			-a fd00:2::100 -g "$PASTA_G6" -I eth0 -t none -u none -T none -U none \
			--dns-forward "$PASTA_G4" --dns-forward "$PASTA_G6" \
			--netns "/run/netns/$GUEST"
		;;
	esac
	BWRAP=$BGPID BPID=$CHILD
}

# iperf_up LABEL [SAMPLE-PID]: one upload guest -> GW4, iperf3 -J to $WORK/$SESSION.LABEL.json;
# sets GBPS ("" on error), IPERR, IPWALL (s); with SAMPLE-PID also PEAK (VmRSS KiB, 0.1 s)
iperf_up() {
	local label=$1 spid=${2:-} out srv cpid t0 r
	out=$WORK/$SESSION.$label.json
	bg $((SECS + 90)) "$WORK/$SESSION.iperf3-server.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
		iperf3 -s -1 -p $IPORT
	srv=$BGPID
	for _ in $(seq 50); do
		ip netns exec "$HOSTNS" ss -Hltn "sport = :$IPORT" 2>/dev/null | grep -q . && break
		sleep 0.1
	done
	PEAK=0
	t0=$(now)
	timeout -k 3 $((SECS + 25)) "${PFX[@]}" ip netns exec "$GUEST" iperf3 -c "$GW4" -p $IPORT \
		-t "$SECS" -J --connect-timeout 20000 >"$out" 2>>"$LOG" &
	cpid=$!
	while kill -0 "$cpid" 2>/dev/null; do
		if [ -n "$spid" ]; then
			r=$(status_kib "$spid" VmRSS)
			[ "${r:-0}" -gt "$PEAK" ] && PEAK=$r
		fi
		sleep 0.1
	done
	wait "$cpid" 2>/dev/null || true
	IPWALL=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b - a}')
	stop_bg "$srv"
	read -r GBPS IPERR < <(python3 - "$out" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception as e:
    print("-", "no iperf3 JSON:", str(e)[:80].replace("\n", " "))
    sys.exit()
s = j.get("end", {}).get("sum_received", {}).get("bits_per_second")
if j.get("error") or s is None:
    print("-", str(j.get("error", "no result"))[:120].replace("\n", " "))
else:
    print(f"{s / 1e9:.3f}", "")
EOF
)
	[ "$GBPS" = "-" ] && GBPS=""
	return 0
}

# ------------------------------------------------------------ one backend x kind
session() {
	local b=$1 kind=$2 rec ok=0 g4 g6 mac count fl flpid flw gw res reason
	local un_gbps un_err un_cpu c0 c1 m0 m1 t0 t1 hwm alive p4 p6 conn rec_s ta p4b p6b fds nofile
	SESSION=$b-$kind
	log "$b, $kind"
	ip netns add "$GUEST"
	MADE_NS+=("$GUEST")
	ip -n "$GUEST" link set lo up
	attach "$b"
	GW4="" GW6=""
	for _ in $(seq 60); do
		GW4=$(ip -n "$GUEST" -4 route show default 2>/dev/null | awk '{print $3; exit}')
		if [ -n "$GW4" ] && reachable "$GUEST" "$GW4"; then ok=1; break; fi
		kill -0 "$BPID" 2>/dev/null || break
		sleep 0.25
	done
	rec="{\"backend\":\"$b\",\"kind\":\"$kind\",\"seconds\":$SECS,\"mtu\":$MTU,\"pin\":\"$PIN\""
	[ "$b" = ringnet ] && rec+=",\"ringnet\":$(jstr "$RINGNET_REV"),\"egress\":\"$EGRESS\""
	[ "$b" = pasta ] && rec+=",\"pasta\":$(jstr "$PASTA_VER")"
	if [ $ok = 0 ]; then
		log "  $b not ready (see $WORK/$SESSION.backend.log)"
		echo "$rec,\"error\":\"backend not ready\"}" >>"$OUTJ"
		stop_bg "$BWRAP"
		del_ns "$GUEST"
		return
	fi
	GW6=$(ip -n "$GUEST" -6 route show default 2>/dev/null | awk '{print $3; exit}')
	g4=$(ip -n "$GUEST" -4 addr show dev eth0 scope global | awk '/inet /{sub("/.*", "", $2); print $2; exit}')
	g6=$(ip -n "$GUEST" -6 addr show dev eth0 scope global | awk '/inet6 /{sub("/.*", "", $2); print $2; exit}')
	mac=$(ip -n "$GUEST" neigh show "$GW4" dev eth0 | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1); exit}')
	rec+=",\"guest4\":\"$g4\",\"gateway4\":\"$GW4\",\"guest6\":\"$g6\",\"gateway6\":\"$GW6\",\"gateway_mac\":\"$mac\""
	reason=""
	[ -n "$g6" ] && [ -n "$GW6" ] && [ -n "$mac" ] || reason="no IPv6 address/gateway or no gateway MAC in the guest"
	if [ -z "$reason" ] && [ "$kind" = dns ]; then
		for gw in "$GW4" "$GW6"; do
			if ! ip netns exec "$GUEST" dig @"$gw" +time=2 +tries=2 +short check.flood.test 2>/dev/null | grep -q "$DNS_ANSWER"; then
				reason="the gateway $gw does not answer DNS (upstream dnsmasq $SINK4:53)"
			fi
		done
	fi
	if [ -n "$reason" ]; then
		log "  skipped: $reason"
		echo "$rec,\"skipped\":$(jstr "$reason")}" >>"$OUTJ"
		stop_bg "$BWRAP"
		del_ns "$GUEST"
		return
	fi

	# the same checks as afterwards, as a baseline
	p4b=0 p6b=0
	ip netns exec "$GUEST" ping -4 -c 1 -W 2 "$GW4" >/dev/null 2>&1 && p4b=1
	ip netns exec "$GUEST" ping -6 -c 1 -W 2 "$GW6" >/dev/null 2>&1 && p6b=1
	rec+=",\"ping4_before\":$p4b,\"ping6_before\":$p6b"

	# 1. unloaded
	c0=$(cpu_ticks "$BPID")
	iperf_up unloaded
	un_gbps=$GBPS un_err=$IPERR
	un_cpu=$(secs_of $(($(cpu_ticks "$BPID") - c0)))
	log "  unloaded: ${un_gbps:-error} Gbit/s $un_err (backend ${un_cpu} CPU-s)"

	# 2. loaded
	count=$(count_of "$kind")
	fl=$WORK/$SESSION.flood.log
	: >"$fl"
	bg $((SECS * 3 + 120)) "$fl" "${FPFX[@]}" ip netns exec "$GUEST" python3 -B -u "$FLOOD_PY" \
		--kind "$kind" --count "$count" --until-signal --gateway-mac "$mac" \
		--guest4 "$g4" --gateway4 "$GW4" --guest6 "$g6" --gateway6 "$GW6" --timeout $((SECS * 3 + 100))
	flpid=$CHILD flw=$BGPID
	for _ in $(seq 150); do
		grep -q '"ready"' "$fl" && break
		kill -0 "$flpid" 2>/dev/null || break
		sleep 0.1
	done
	echo 5 >"/proc/$BPID/clear_refs" 2>/dev/null || true # VmHWM := VmRSS now
	c0=$(cpu_ticks "$BPID") m0=$(busy_ticks) t0=$(now)
	iperf_up loaded "$BPID"
	kill -USR1 "$flpid" 2>/dev/null || true
	c1=$(cpu_ticks "$BPID") m1=$(busy_ticks) t1=$(now)
	hwm=$(status_kib "$BPID" VmHWM)
	# open files (threads may have unshared their fd tables: the largest) and the limit
	fds=$(for t in /proc/"$BPID"/task/*; do find "$t/fd/" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; done | sort -n | tail -1)
	nofile=$(awk '/^Max open files/{print $4}' "/proc/$BPID/limits" 2>/dev/null)
	for _ in $(seq 600); do # flood.py stops once it tried at least its count (at most 60 s)
		grep -q '"attempts"\|"error"' "$fl" && break
		kill -0 "$flpid" 2>/dev/null || break
		sleep 0.1
	done
	res=$(grep -m1 '"attempts"\|"error"' "$fl" || true)
	[ -n "$res" ] || res="{\"ok\":false,\"error\":\"no result line\"}"
	stop_bg "$flw"
	log "  loaded:   ${GBPS:-error} Gbit/s $IPERR; flood $res"

	# 3. afterwards
	alive=0 p4=0 p6=0 conn=0
	kill -0 "$BPID" 2>/dev/null && alive=1
	ip netns exec "$GUEST" ping -4 -c 2 -W 3 "$GW4" 2>/dev/null | grep -q " 2 received" && p4=1
	ip netns exec "$GUEST" ping -6 -c 2 -W 3 "$GW6" 2>/dev/null | grep -q " 2 received" && p6=1
	reachable "$GUEST" "$GW4" && conn=1
	kill -0 "$BPID" 2>/dev/null || alive=0
	log "  after: alive $alive, ping4 $p4, ping6 $p6, new connection $conn; VmHWM ${hwm} KiB (sampled $PEAK); $fds fds open (limit $nofile)"
	# answering = what answered before the flood answers again
	rec_s=0
	if [ $alive = 1 ] && { [ $conn = 0 ] || [ $p4 -lt $p4b ] || [ $p6 -lt $p6b ]; }; then
		rec_s=null
		ta=$(now)
		while kill -0 "$BPID" 2>/dev/null &&
			awk -v a="$ta" -v b="$(now)" -v r="$RECOVER" 'BEGIN{exit !(b - a < r)}'; do
			if { [ $p4b = 0 ] || ip netns exec "$GUEST" ping -4 -c 1 -W 1 "$GW4" >/dev/null 2>&1; } &&
				{ [ $p6b = 0 ] || ip netns exec "$GUEST" ping -6 -c 1 -W 1 "$GW6" >/dev/null 2>&1; } &&
				reachable "$GUEST" "$GW4"; then
				rec_s=$(awk -v a="$ta" -v b="$(now)" 'BEGIN{printf "%.1f", b - a}')
				break
			fi
			sleep 1
		done
		log "  recovered after: ${rec_s} s (null: not within ${RECOVER} s)"
	fi

	rec+=",\"count\":$count,\"unloaded_gbps\":${un_gbps:-null},\"unloaded_error\":$(jstr "$un_err")"
	rec+=",\"unloaded_cpu_s\":$un_cpu,\"loaded_gbps\":${GBPS:-null},\"loaded_error\":$(jstr "$IPERR")"
	rec+=",\"loaded_wall_s\":$IPWALL,\"flood_window_s\":$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}')"
	rec+=",\"cpu_s\":$(secs_of $((c1 - c0))),\"machine_busy_s\":$(secs_of $((m1 - m0)))"
	rec+=",\"vmhwm_kib\":${hwm:-0},\"vmrss_peak_kib\":$PEAK,\"fds\":${fds:-0},\"nofile\":$(jstr "${nofile:-?}"),\"flood\":$res"
	rec+=",\"alive\":$alive,\"ping4\":$p4,\"ping6\":$p6,\"connect\":$conn,\"recovered_s\":$rec_s"
	stop_bg "$BWRAP" # ringnet prints its counters (--stats) on exit
	if [ "$b" = ringnet ]; then
		rec+=",\"egress_driver\":$(jstr "$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$SESSION.backend.log" |
			grep -o -m1 'egress driver: [^ ]*' | cut -d' ' -f3)")"
		rec+=",\"stats\":$(python3 - "$WORK/$SESSION.backend.log" <<'EOF'
import json, re, sys
st = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^([a-z][a-z0-9_]*) (\d+)$", line.strip())
    if m:
        st[m.group(1)] = int(m.group(2))
    m = re.match(r"^(\w+) frames (\d+) bytes (\d+) drops (\d+)$", line.strip())
    if m:
        st[m.group(1) + "_frames"] = int(m.group(2))
        st[m.group(1) + "_drops"] = int(m.group(4))
print(json.dumps(st, sort_keys=True))
EOF
)"
	fi
	echo "$rec}" >>"$OUTJ"
	del_ns "$GUEST"
}

T_START=$(date +%s)
log "floods: backends [$BACKENDS], kinds [$KINDS], ${SECS} s windows, $PIN, MTU $MTU, ulimit -n $NOFILE; ringnet $RINGNET_REV ($RINGNET_BIN), pasta $PASTA_VER"
for b in $BACKENDS; do
	for k in $KINDS; do
		session "$b" "$k"
	done
done
stop_bg "$RRSRV"
stop_bg "$DNSMASQ"
cleanup
WALL=$(($(date +%s) - T_START))
log "measured in ${WALL} s"

python3 - "$OUTJ" "$OUTM" "$STAMP" "$HOST" "$RINGNET_REV" "$PASTA_VER" "$SECS" "$PIN" "$MTU" "$EGRESS" "$WALL" "$RECOVER" "$NOFILE" <<'EOF'
import json, sys
(outj, outm, stamp, host, rev, pver, secs, pin, mtu, egress, wall, recover, nofile) = sys.argv[1:14]
rows = [json.loads(l) for l in open(outj) if l.strip()]
backends = list(dict.fromkeys(r["backend"] for r in rows))
kinds = list(dict.fromkeys(r["kind"] for r in rows))
by = {(r["backend"], r["kind"]): r for r in rows}

def g(x):
    return "–" if x is None else f"{x:.2f}"

def ratio(r):
    if not r or r.get("loaded_gbps") is None or not r.get("unloaded_gbps"):
        return None
    return r["loaded_gbps"] / r["unloaded_gbps"]

def cell(r):
    if r is None:
        return "–"
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "error: " + r["error"]
    q = ratio(r)
    if r.get("loaded_gbps") is None and r.get("unloaded_gbps"):
        s = f"{g(r['unloaded_gbps'])} → failed (**0**)"
    else:
        s = f"{g(r.get('unloaded_gbps'))} → {g(r.get('loaded_gbps'))} ({'–' if q is None else f'**{q:.2f}**'})"
    if not r.get("alive"):
        s += " DIED"
    return s

drivers = sorted({r["egress_driver"] for r in rows if r.get("egress_driver")})
if drivers:
    egress += f" ({', '.join(drivers)})"
out = [f"# Legit upload under guest floods ({stamp}, {host}; ringnet {rev}, pasta {pver})", "",
       f"One iperf3 upload (guest → gateway → the host namespace's loopback, 1 stream, {secs} s, "
       f"MTU {mtu}) without and then under a flood of raw frames the guest writes to its own eth0 "
       f"(tests/helpers/flood.py), a fresh backend per cell; {pin} (backend and iperf3 on one CPU, "
       f"the flooder on the other); ringnet --egress {egress}, default limits; open-files limit "
       f"{nofile} for both. Cells: unloaded → loaded Gbit/s (loaded / unloaded); \"failed\": the "
       f"loaded upload moved nothing (iperf3 could not connect, or stalled and was stopped). Last "
       f"column: ringnet's loaded rate / pasta's (and unloaded). Both backends use the same "
       f"dnsmasq upstream for `dns` (ringnet --dns, pasta --dns-forward of its gateway addresses); "
       f"pasta answers a guest's ping through its ICMP relay to the host namespace, which holds "
       f"pasta's gateway addresses. Run time {wall} s.", ""]
both = "ringnet" in backends and "pasta" in backends
out.append("| kind | " + " | ".join(backends) + (" | ringnet / pasta, loaded (unloaded) |" if both else " |"))
out.append("|---" * (len(backends) + 1 + (1 if both else 0)) + "|")
for k in kinds:
    line = f"| {k} | " + " | ".join(cell(by.get((b, k))) for b in backends)
    if both:
        rn, pa = by.get(("ringnet", k)), by.get(("pasta", k))
        x = y = None
        if rn and pa and rn.get("loaded_gbps") is not None and pa.get("loaded_gbps"):
            x = g(rn["loaded_gbps"] / pa["loaded_gbps"])
        elif rn and pa and rn.get("loaded_gbps") and pa.get("unloaded_gbps") and pa.get("loaded_gbps") is None:
            x = "pasta's failed"
        if rn and pa and rn.get("unloaded_gbps") is not None and pa.get("unloaded_gbps"):
            y = rn["unloaded_gbps"] / pa["unloaded_gbps"]
        line += f" | {x or '–'} ({g(y)})"
    out.append(line + " |")

out += ["", "During the loaded window: the backend's CPU (utime+stime, all threads; % of the window), "
        "its peak RSS (VmHWM, reset when the flood started), the flood's frames tried (per s) and "
        "those the guest's TAP queue refused (eth0 tx_dropped: the backend did not read them in "
        "time). After it: backend alive, ping to both gateways, a new TCP connection with an echo.", "",
        "| kind | backend | CPU-s (%) | peak RSS MiB | frames tried (/s) | dropped by TAP queue | alive / ping4 / ping6 / connect | notes |",
        "|---|---|---|---|---|---|---|---|"]
yn = lambda v: "yes" if v else "**no**"
for k in kinds:
    for b in backends:
        r = by.get((b, k))
        if r is None:
            continue
        if "skipped" in r or "error" in r:
            out.append(f"| {k} | {b} | | | | | | {r.get('skipped') or r.get('error')} |")
            continue
        fl = r.get("flood", {})
        w = r.get("flood_window_s") or 0
        cpu = r.get("cpu_s", 0)
        pct = f"{100 * cpu / w:.0f}" if w else "–"
        tried = fl.get("attempts")
        drop = fl.get("tx_dropped")
        notes = []
        for key in ("unloaded_error", "loaded_error"):
            if r.get(key):
                notes.append(f"{key.split('_')[0]}: {r[key]}")
        if fl.get("error") or fl.get("ok") is False:
            notes.append(f"flooder: {fl.get('error', 'send errors')}")
        if r.get("loaded_wall_s") and r["loaded_wall_s"] > float(secs) + 3:
            notes.append(f"loaded iperf3 took {r['loaded_wall_s']} s")
        if r.get("fds"):
            notes.append(f"{r['fds']:,} fds open at the end (limit {r.get('nofile', '?')})")
        if r.get("alive") and r.get("recovered_s") is None:
            notes.append(f"**still not answering {recover} s later**")
        elif r.get("recovered_s"):
            notes.append(f"answered again {r['recovered_s']} s later")
        st = r.get("stats") or {}
        keys = {"syn": ["tcp_opened", "tcp_syn_shed", "tcp_connect_evicted", "tcp_refused_limit"],
                "syn_refused": ["tcp_opened", "tcp_syn_shed", "tcp_connect_failed"],
                "udp": ["udp_opened", "udp_flow_shed", "udp_evicted"],
                "malformed": ["malformed", "unsupported"],
                "neigh": ["arp_filtered", "ndp_filtered", "neigh_spoofed"],
                "dns": ["dns_queries", "dns_shed", "dns_answered", "dns_dropped"]}[k]
        keys = ["from_guest_frames", "from_guest_drops"] + keys
        if st:
            notes.append(", ".join(f"{x} {st[x]:,}" for x in keys if x in st))
        frames = "–" if tried is None else f"{tried:,} ({fl.get('fps', 0):,.0f})"
        dropped = "–" if drop is None else (f"{drop:,} ({100 * drop / tried:.0f} %)" if tried else f"{drop:,}")
        def ping(fam):
            if r.get(f"ping{fam}_before") == 0:
                return "no (nor before)" if not r.get(f"ping{fam}") else "yes (not before)"
            return yn(r.get(f"ping{fam}"))
        out.append(f"| {k} | {b} | {cpu:.2f} ({pct}) | {r.get('vmhwm_kib', 0) / 1024:.1f} | {frames} | {dropped} | "
                   f"{yn(r.get('alive'))} / {ping('4')} / {ping('6')} / {yn(r.get('connect'))} | "
                   f"{'; '.join(notes)} |")
open(outm, "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "results: $OUTM"
