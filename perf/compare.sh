#!/usr/bin/env bash
# perf/compare.sh - compare ringnet with pasta, slirp4netns and a plain veth pair.
#
# One run measures every backend, each serving a fresh "guest" network namespace
# whose traffic goes to servers in an isolated "host" namespace made by this
# script (loopback + a dead-end ifb sink carrying the default routes; nothing
# leaves the namespaces made here):
#
#   veth           kernel limit: veth pair, host end 10.0.2.2, guest 10.0.2.100
#   pasta          pasta --config-net (guest 10.0.2.100, gw 10.0.2.2 -> host loopback)
#   slirp4netns    slirp4netns --configure (same addressing)
#   ringnet-uring  ringnet attach --egress uring (guest 172.16.0.2, gw 172.16.0.1 -> host loopback)
#   ringnet-epoll  ringnet attach --egress epoll
#   ringnet-base-uring / ringnet-base-epoll  the same with $RINGNET_BASE_BIN (a build to
#                  compare against, e.g. before a refactor: before/after ratios in one run)
#   ringnet-policy-uring / ringnet-policy-epoll  ringnet with a 50-rule policy loaded
#                  (49 rules that match none of the test flows, then allow group:host;
#                  egress default deny): every new flow walks all 50 rules. Compare with
#                  ringnet-uring / -epoll in the same run for the policy's cost.
#   ringnet-obs-uring / ringnet-obs-epoll  ringnet with --control and --metrics-addr on
#                  (no --pcap), and a poller asking the control socket for `stats` and
#                  `flows` (a flow-table snapshot) and scraping the metrics endpoint once a
#                  second throughout: the cost of observation, against ringnet-uring /
#                  -epoll in the same run (the issue's bound: bulk within 2 %).
#
# Tests (per backend session, cheap and fragile first, host->guest bulk last):
#   tcp_rr udp_rr  1-byte request/response, one flow: p50/p99/p99.9 and rate
#   tcp_crr        connect + 1-byte request/response + close, back to back
#   tcp_up_1/4     iperf3 TCP guest->host, 1 and 4 streams
#   udp_up         iperf3 UDP guest->host, -b 0 -l $PERF_UDP_LEN: receiver rate, loss
#   udp_paced      the same, paced: the highest rate (a doubling ladder from 250
#                  Mbit/s, then one bisection step) at which loss stays < 5 %;
#                  reports the receiver rate and loss at that rate
#   tcp_down_1/4   iperf3 TCP host->guest (-R), 1 and 4 streams
#   tcp_in_rr      inbound (published port): rrbench tcp_rr from a client in the host
#                  namespace to a server in the guest, through the backend's port
#                  forwarding (ringnet -p, pasta -t, slirp4netns add_hostfwd; veth: the
#                  guest's address directly); the client is non-loopback: it connects to
#                  the host namespace's sink address 10.254.0.1, which takes pasta's TAP
#                  path (what a VM gets)
#   tcp_in_1       inbound bulk: iperf3 -c from the host namespace (same address) to
#                  iperf3 -s in the guest, 1 stream, host->guest
#   tcp_in_rr_lo / tcp_in_1_lo  the same with a loopback client (127.0.0.1): pasta's
#                  splice path, ringnet's loopback client (seen as the gateway); not for veth
# plus, for every test, CPU seconds of the backend process (/proc/PID/stat
# utime+stime, all threads) and of the machine (/proc/stat busy, all CPUs).
#
# Environment (defaults in brackets):
#   PERF_SECONDS [5]      seconds per iperf3 test
#   PERF_RR_SECONDS [min(3,PERF_SECONDS)]  seconds per rr/crr test
#   PERF_RUNS [3]         repetitions (medians are reported)
#   PERF_MTUS ["65520 1500"]
#   PERF_BACKENDS ["veth pasta slirp4netns ringnet-uring ringnet-epoll"]
#   PERF_PIN [both]       both | pinned | unpinned ("pinned": taskset -c 0 for
#                         backend, servers and clients; ringnet also --cpu 0)
#   PERF_TESTS            subset of the tests above, in the order given
#   PERF_UDP_LEN [1400]   UDP payload (capped to MTU-28)
#   PERF_UDP_STEP_SECONDS [2]  seconds per udp_paced rate step
#   PERF_CPU [0]          the CPU used when pinned
#   RINGNET_BIN [target/release/ringnet]  (built with cargo when missing)
#   RINGNET_BASE_BIN  the binary the ringnet-base-* backends run (required for them)
#   PERF_NO_INSTALL=1     never apt-get/pip install missing tools
#   PERF_TAG              results file stem (default YYYYMMDD-HHMM)
#
# Output: perf/results/<stamp>-<host>.md (tables), .jsonl (one line per
# measurement), .csv (medians), perf/results/<stamp>.png (chart); logs and raw
# tool output under perf/results/tmp/<stamp>/.
#
# Safety: every process runs under `timeout` and is stopped by PID; the
# namespaces/links made here are deleted by their exact names on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
T=${PERF_SECONDS:-5}
RR_T=${PERF_RR_SECONDS:-$((T < 3 ? T : 3))}
RUNS=${PERF_RUNS:-3}
MTUS=${PERF_MTUS:-"65520 1500"}
BACKENDS=${PERF_BACKENDS:-"veth pasta slirp4netns ringnet-uring ringnet-epoll"}
PIN=${PERF_PIN:-both}
TESTS=${PERF_TESTS:-"tcp_rr udp_rr tcp_crr tcp_in_rr tcp_in_rr_lo tcp_up_1 tcp_up_4 udp_up udp_paced tcp_down_1 tcp_down_4 tcp_in_1 tcp_in_1_lo"}
UDP_LEN=${PERF_UDP_LEN:-1400}
UDP_STEP=${PERF_UDP_STEP_SECONDS:-2}
CPU=${PERF_CPU:-0}
RINGNET_BIN=${RINGNET_BIN:-$REPO/target/release/ringnet}
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}
HOST=$(hostname -s 2>/dev/null || echo host)
RESDIR=$HERE/results
WORK=$RESDIR/tmp/$STAMP
IPORT=5201
RPORT=7801
# Inbound (published ports): host ports forwarded to IPORT/RPORT in the guest; the
# non-loopback client address in the host namespace (its sink address, see lib.sh).
IN_IPORT=15201
IN_RPORT=17801
HOST_ADDR=10.254.0.1

case $PIN in
both) PINMODES="pinned unpinned" ;;
pinned | unpinned) PINMODES=$PIN ;;
*) echo "PERF_PIN must be both, pinned or unpinned" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "compare.sh: must run as root (namespaces, TAP)" >&2; exit 1; }

# ---------------------------------------------------------------- dependencies
# shellcheck source=perf/install.sh
. "$HERE/install.sh"
mapfile -t need_pkgs < <(pkgs_missing ip:iproute2 iperf3:iperf3 pasta:passt slirp4netns:slirp4netns gcc:gcc \
	taskset:util-linux timeout:coreutils sysctl:procps python3:python3 ss:iproute2)
[ ${#need_pkgs[@]} -eq 0 ] || need_pkgs+=(libc6-dev)
install_pkgs compare.sh "${need_pkgs[@]}"
[ -e /dev/net/tun ] || { echo "compare.sh: /dev/net/tun missing" >&2; exit 1; }
case " $BACKENDS " in
*" ringnet-base-"*)
	if [ ! -x "${RINGNET_BASE_BIN:-}" ]; then
		echo "compare.sh: the ringnet-base-* backends need RINGNET_BASE_BIN (an executable)" >&2
		exit 2
	fi
	;;
esac
case " $BACKENDS " in
*" ringnet-"*)
	if [ ! -x "$RINGNET_BIN" ]; then
		echo "compare.sh: building ringnet (cargo build --release)" >&2
		(cd "$REPO" && timeout 1200 cargo build --release) >&2
	fi
	;;
esac

mkdir -p "$WORK/raw"
LOG=$WORK/compare.log
: >"$LOG"
RRB=$WORK/rrbench
gcc -O2 -Wall -o "$RRB" "$HERE/rrbench.c"
RES=$RESDIR/$STAMP-$HOST.jsonl
: >"$RES"
CLK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- bookkeeping
TAG=rnp$$
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"

# ---------------------------------------------------------------- backends
# Each attach_* sets BPID (backend process, "" for veth), BWRAP (its timeout
# wrapper) and SERVER (the address the guest uses for host services), and for the
# inbound tests IN_ADDR/IN_IP/IN_RP (where a host-namespace client connects to reach the
# guest's iperf3/rrbench servers; IN_ADDR_LO the loopback variant, "" when there is none).
PFX=()       # taskset prefix when pinned
BPID="" BWRAP="" SERVER=""
IN_ADDR="" IN_ADDR_LO="" IN_IP=$IN_IPORT IN_RP=$IN_RPORT
in_forwarded() { IN_ADDR=$HOST_ADDR IN_ADDR_LO=127.0.0.1 IN_IP=$IN_IPORT IN_RP=$IN_RPORT; }

attach_veth() {
	local g=$1 mtu=$2
	ip -n "$HOSTNS" link add vh0 mtu "$mtu" type veth peer name eth0 netns "$g" mtu "$mtu"
	ip -n "$HOSTNS" addr add 10.0.2.2/24 dev vh0
	ip -n "$HOSTNS" link set vh0 up
	ip -n "$g" addr add 10.0.2.100/24 dev eth0
	ip -n "$g" link set eth0 up
	ip -n "$g" route add default via 10.0.2.2
	BPID="" BWRAP="" SERVER=10.0.2.2
	# inbound: no forwarding, the client connects to the guest's address directly
	IN_ADDR=10.0.2.100 IN_ADDR_LO="" IN_IP=$IPORT IN_RP=$RPORT
}
detach_veth() { ip -n "$HOSTNS" link del vh0 2>/dev/null || true; }

attach_pasta() {
	local g=$1 mtu=$2
	# Debian 12 pasta (0.0~git20230309): --runas 0 is needed with --netns;
	# -d segfaults it; -u/-T/-U none keep traffic on the tap path. -t forwards
	# the inbound tests' ports (host IN_* -> guest); a client from a non-loopback
	# address takes the tap path, a loopback one pasta's splice.
	bg "$LIFE" "$WORK/pasta.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
		pasta -f -4 --runas 0 --config-net -m "$mtu" -a 10.0.2.100 -n 24 \
		-g 10.0.2.2 -I tap0 -t "$IN_IPORT:$IPORT,$IN_RPORT:$RPORT" -u none -T none -U none \
		--netns "/run/netns/$g"
	BPID=$CHILD BWRAP=$BGPID SERVER=10.0.2.2
	in_forwarded
}

attach_slirp4netns() {
	local g=$1 mtu=$2 api=$WORK/slirp4netns.sock
	rm -f "$api"
	bg "$LIFE" "$WORK/slirp4netns.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
		slirp4netns --configure --mtu="$mtu" --api-socket "$api" \
		--netns-type=path "/run/netns/$g" tap0
	BPID=$CHILD BWRAP=$BGPID SERVER=10.0.2.2
	# inbound: host IN_* -> guest, through the API socket (it appears once slirp4netns runs)
	if slirp_hostfwd "$api" "$IN_IPORT" "$IPORT" && slirp_hostfwd "$api" "$IN_RPORT" "$RPORT"; then
		in_forwarded
	else
		log "slirp4netns: add_hostfwd failed; its inbound tests will fail"
	fi
}
slirp_hostfwd() { # API-SOCKET HOST-PORT GUEST-PORT: add_hostfwd on 0.0.0.0 (5 s to appear)
	timeout 10 python3 - "$@" <<'PY'
import json, os, socket, sys, time
path, hport, gport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
req = {"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0",
       "host_port": hport, "guest_addr": "10.0.2.100", "guest_port": gport}}
for _ in range(50):
    if os.path.exists(path):
        break
    time.sleep(0.1)
for _ in range(20):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(path)
        break
    except OSError:
        time.sleep(0.1)
s.sendall(json.dumps(req).encode())
s.shutdown(socket.SHUT_WR)
reply = s.recv(4096).decode()
print("slirp4netns add_hostfwd %d -> %d: %s" % (hport, gport, reply.strip()))
sys.exit(0 if '"return"' in reply else 1)
PY
}

attach_ringnet() { # GUEST MTU DRIVER [BINARY [EXTRA ARGS...]]
	local g=$1 mtu=$2 drv=$3 bin=${4:-$RINGNET_BIN} cpuopt=() pub=()
	shift $(($# < 4 ? $# : 4))
	[ "$PINMODE" = pinned ] && cpuopt=(--cpu "$CPU")
	# inbound: published ports on every host address (a build without -p has none)
	if "$bin" attach --help 2>/dev/null | grep -q -- '--publish'; then
		pub=(-p "0.0.0.0:$IN_IPORT:$IPORT" -p "0.0.0.0:$IN_RPORT:$RPORT")
	fi
	bg "$LIFE" "$WORK/ringnet-$drv.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
		"$bin" attach --netns "/run/netns/$g" --tap tap0 --configure \
		--mtu "$mtu" --egress "$drv" --stats "${cpuopt[@]}" "${pub[@]}" "$@"
	BPID=$CHILD BWRAP=$BGPID SERVER=172.16.0.1
	[ ${#pub[@]} -gt 0 ] && in_forwarded
	return 0
}
# The 50-rule policy of the ringnet-policy-* backends (written once per run).
policy50() {
	local f=$WORK/policy50.toml i
	if [ ! -f "$f" ]; then
		{
			echo 'default_egress = "deny"'
			echo 'rules = ['
			for i in $(seq 1 24); do echo "  \"deny tcp 203.0.113.$i port 1-1024\","; done
			for i in $(seq 1 25); do echo "  \"deny .blocked$i.example\","; done
			echo '  "allow group:host",'
			echo ']'
		} >"$f"
	fi
	echo "$f"
}
attach_ringnet-uring() { attach_ringnet "$1" "$2" uring; }
attach_ringnet-epoll() { attach_ringnet "$1" "$2" epoll; }
attach_ringnet-base-uring() { attach_ringnet "$1" "$2" uring "$RINGNET_BASE_BIN"; }
attach_ringnet-base-epoll() { attach_ringnet "$1" "$2" epoll "$RINGNET_BASE_BIN"; }
attach_ringnet-policy-uring() { attach_ringnet "$1" "$2" uring "$RINGNET_BIN" --policy "$(policy50)"; }
attach_ringnet-policy-epoll() { attach_ringnet "$1" "$2" epoll "$RINGNET_BIN" --policy "$(policy50)"; }
# Observation on, and read once a second while the tests run (the poller ends with ringnet).
attach_ringnet_obs() { # GUEST MTU DRIVER
	local sock=$WORK/ctl-$3.sock port=9187 keep
	rm -f "$sock"
	attach_ringnet "$1" "$2" "$3" "$RINGNET_BIN" --control "$sock" --metrics-addr "$port"
	keep=("$BPID" "$BWRAP" "$SERVER")
	bg "$LIFE" "$WORK/obs-poller-$3.log" bash -c "
		for i in \$(seq 50); do [ -S '$sock' ] && break; sleep 0.1; done
		while kill -0 ${keep[0]} 2>/dev/null; do
			'$RINGNET_BIN' ctl '$sock' stats >/dev/null
			'$RINGNET_BIN' ctl '$sock' flows >/dev/null
			ip netns exec '$HOSTNS' python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:$port/metrics\", timeout=2).read()'
			echo \"polled \$(date +%T)\"
			sleep 1
		done"
	BPID=${keep[0]} BWRAP=${keep[1]} SERVER=${keep[2]}
}
attach_ringnet-obs-uring() { attach_ringnet_obs "$1" "$2" uring; }
attach_ringnet-obs-epoll() { attach_ringnet_obs "$1" "$2" epoll; }

backend_alive() { [ -z "$BWRAP" ] || kill -0 "$BPID" 2>/dev/null; }

wait_ready() { # guest: until a TCP echo through the backend works (10 s)
	local g=$1 i
	for i in $(seq 40); do
		backend_alive || return 1
		if ip netns exec "$g" timeout 3 "$RRB" tcp_crr -H "$SERVER" -p $RPORT \
			-d 0.2 2>/dev/null | grep -q '"count":[1-9]'; then
			return 0
		fi
		sleep 0.25
	done
	return 1
}

# ---------------------------------------------------------------- measuring
proc_cpu() { # utime+stime (jiffies) of a whole process, "-" if none
	if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
		sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12+$13}'
	else
		echo -
	fi
}
# "busy steal busy-of-CPU$CPU" in jiffies; busy = user+nice+system+irq+softirq
sys_cpu() {
	awk -v c="cpu$CPU" '$1=="cpu"{b=$2+$3+$4+$7+$8; s=$9} $1==c{p=$2+$3+$4+$7+$8}
		END{print b, s, p}' /proc/stat
}

NDONE=0
record() { # TEST BACKEND RAWFILE RC bc0 bc1 s0 s1 t0 t1
	local alive=0
	backend_alive && alive=1
	python3 "$HERE/record.py" --test "$1" --backend "$2" --file "$3" --rc "$4" \
		--bcpu0 "$5" --bcpu1 "$6" --sys0 "$7" --sys1 "$8" --t0 "$9" --t1 "${10}" \
		--run "$RUN" --mtu "$MTU" --pin "$PINMODE" --clk "$CLK" --alive $alive \
		--load "$(cut -d' ' -f1 /proc/loadavg)" >>"$RES"
	NDONE=$((NDONE + 1))
	printf '[%d/%d]' "$NDONE" "$NTOTAL" | tee -a "$LOG" >&2
	tail -n1 "$RES" | python3 "$HERE/record.py" --line | tee -a "$LOG" >&2
}

# A fresh one-shot iperf3 server (sets srv, the caller's local); returns once it listens.
# In the host namespace, or in NS (the guest, for the inbound tests).
iperf_server() { # LIFETIME [NS]
	local ns=${2:-$HOSTNS} i
	bg "$1" "$WORK/iperf3-server.log" "${PFX[@]}" ip netns exec "$ns" iperf3 -s -1 -p $IPORT
	srv=$BGPID
	for i in $(seq 30); do
		ip netns exec "$ns" ss -Hltn "sport = :$IPORT" | grep -q . && break
		sleep 0.1
	done
}

# Inbound: until a TCP connect/request/close from the host namespace to ADDR:IN_RP reaches
# the guest's rrbench server through the backend's forwarding (5 s).
wait_inbound() { # ADDR
	local i
	for i in $(seq 20); do
		backend_alive || return 1
		if ip netns exec "$HOSTNS" timeout 3 "$RRB" tcp_crr -H "$1" -p "$IN_RP" \
			-d 0.2 2>/dev/null | grep -q '"count":[1-9]'; then
			return 0
		fi
		sleep 0.25
	done
	return 1
}

udp_loss() { # iperf3 -J file: loss % ("" when unparsable)
	python3 -c 'import json,sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    print((e.get("sum_received") or e.get("sum"))["lost_percent"])
except Exception:
    pass' "$1"
}

# udp_paced: one iperf3 client per rate; the server runs with -1 per client, so it is
# restarted between steps. Leaves the last rate with loss < 5 % in FILE (or the
# first step's result when even that lost more).
udp_sweep() { # GUEST FILE IPERF-ARGS...
	local g=$1 f=$2 rate=250 good=0 bad=0 step=$WORK/raw/udp-step.json loss rc=0 i
	shift 2
	while :; do
		if [ "$good" -gt 0 ] || [ "$bad" -gt 0 ]; then
			# the first server was started by run_test; later steps need their own
			iperf_server $((UDP_STEP + 30))
		fi
		: >"$step"
		"${PFX[@]}" ip netns exec "$g" timeout -k 3 $((UDP_STEP + 25)) iperf3 -c "$SERVER" \
			-p $IPORT --connect-timeout 3000 -J "$@" -b "${rate}M" >"$step" 2>>"$LOG" || rc=$?
		for i in $(seq 20); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
		stop_bg "$srv"
		loss=$(udp_loss "$step")
		log "  udp_paced $rate Mbit/s: loss ${loss:-?} %"
		if [ -n "$loss" ] && awk -v l="$loss" 'BEGIN{exit !(l < 5)}'; then
			good=$rate
			cp "$step" "$f"
		else
			[ "$good" -eq 0 ] && [ "$bad" -eq 0 ] && cp "$step" "$f"
			bad=$rate
		fi
		if [ "$bad" -eq 0 ]; then
			[ "$rate" -ge 64000 ] && break
			rate=$((rate * 2))
		elif [ "$good" -gt 0 ] && [ $((bad - good)) -gt $((good / 3)) ]; then
			rate=$(((good + bad) / 2))
		else
			break
		fi
	done
	srv=""
	return $rc
}

run_test() { # BACKEND GUEST TEST
	local b=$1 g=$2 t=$3 f rc=0 args=() bc0 bc1 s0 s1 t0 t1 srv="" ulen inaddr=""
	f=$WORK/raw/$PINMODE-$MTU-run$RUN-$b-$t.json
	: >"$f"
	# a loopback client has no path to a veth guest: no measurement (not a failure)
	[ "$b" = veth ] && [ "${t%_lo}" != "$t" ] && return
	if ! backend_alive; then
		record "$t" "$b" "$f" 99 - - "0 0 0" "0 0 0" 0 0
		return
	fi
	case $t in
	tcp_in_*_lo) inaddr=$IN_ADDR_LO ;;
	tcp_in_*) inaddr=$IN_ADDR ;;
	esac
	if [ "${t#tcp_in_}" != "$t" ]; then
		if [ -z "$inaddr" ]; then
			log "$b: no inbound forwarding set up; $t fails"
			record "$t" "$b" "$f" 97 - - "0 0 0" "0 0 0" 0 0
			return
		elif ! wait_inbound "$inaddr"; then
			log "$b: $inaddr:$IN_RP does not reach the guest within 5 s; $t fails"
			record "$t" "$b" "$f" 96 - - "0 0 0" "0 0 0" 0 0
			return
		fi
	fi
	ulen=$UDP_LEN
	[ "$ulen" -gt $((MTU - 28)) ] && ulen=$((MTU - 28))
	case $t in
	tcp_up_1) args=(-t "$T") ;;
	tcp_up_4) args=(-t "$T" -P 4) ;;
	tcp_down_1) args=(-t "$T" -R) ;;
	tcp_down_4) args=(-t "$T" -R -P 4) ;;
	udp_up) args=(-t "$T" -u -b 0 -l "$ulen") ;;
	udp_paced) args=(-t "$UDP_STEP" -u -l "$ulen") ;;
	tcp_in_1 | tcp_in_1_lo) args=(-t "$T") ;;
	tcp_rr | udp_rr | tcp_crr | tcp_in_rr | tcp_in_rr_lo) ;;
	*) log "unknown test $t"; return ;;
	esac
	if [ ${#args[@]} -gt 0 ]; then
		# a fresh one-shot iperf3 server per test: a wedged test cannot
		# leave a busy server behind for the next one (inbound: in the guest)
		if [ -n "$inaddr" ]; then
			iperf_server $((T + 40)) "$g"
		else
			iperf_server $((T + 40))
		fi
	fi
	bc0=$(proc_cpu "$BPID"); s0=$(sys_cpu); t0=$(date +%s.%N)
	if [ "$t" = udp_paced ]; then
		udp_sweep "$g" "$f" "${args[@]}" || rc=$?
	elif [ -n "$inaddr" ] && [ -n "$srv" ]; then
		# inbound bulk: the client in the host namespace, the server in the guest
		"${PFX[@]}" ip netns exec "$HOSTNS" timeout -k 3 $((T + 25)) iperf3 -c "$inaddr" \
			-p "$IN_IP" --connect-timeout 3000 -J "${args[@]}" >"$f" 2>>"$LOG" || rc=$?
	elif [ -n "$inaddr" ]; then
		# inbound request/response: rrbench tcp_rr from the host namespace
		"${PFX[@]}" ip netns exec "$HOSTNS" timeout -k 3 $((RR_T + 20)) "$RRB" tcp_rr \
			-H "$inaddr" -p "$IN_RP" -d "$RR_T" >"$f" 2>>"$LOG" || rc=$?
	elif [ -n "$srv" ]; then
		"${PFX[@]}" ip netns exec "$g" timeout -k 3 $((T + 25)) iperf3 -c "$SERVER" \
			-p $IPORT --connect-timeout 3000 -J "${args[@]}" >"$f" 2>>"$LOG" || rc=$?
	else
		"${PFX[@]}" ip netns exec "$g" timeout -k 3 $((RR_T + 20)) "$RRB" "$t" \
			-H "$SERVER" -p $RPORT -d "$RR_T" >"$f" 2>>"$LOG" || rc=$?
	fi
	bc1=$(proc_cpu "$BPID"); s1=$(sys_cpu); t1=$(date +%s.%N)
	if [ -n "$srv" ]; then
		# the one-shot server exits by itself once the client is done
		local i
		for i in $(seq 20); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
		stop_bg "$srv"
	fi
	record "$t" "$b" "$f" "$rc" "$bc0" "$bc1" "$s0" "$s1" "$t0" "$t1"
	sleep 0.3
}

session() { # BACKEND: one fresh guest, all tests
	local b=$1 g=${TAG}g t rsrv gsrv=""
	bg "$LIFE" "$WORK/rrbench-server.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
		"$RRB" server -p $RPORT -L "$LIFE"
	rsrv=$BGPID
	ip netns add "$g"
	MADE_NS+=("$g")
	ip -n "$g" link set lo up
	ns_sysctls "$g"
	BPID="" BWRAP="" SERVER=""
	IN_ADDR="" IN_ADDR_LO="" IN_IP=$IN_IPORT IN_RP=$IN_RPORT
	local why=""
	if ! "attach_$b" "$g" "$MTU" >>"$LOG" 2>&1; then
		why="attach failed"
	elif ! wait_ready "$g"; then
		why="guest cannot reach $SERVER:$RPORT within 10 s$(backend_alive || echo ' (backend exited)')"
	fi
	if [ -n "$why" ]; then
		log "$b: $why; recording failures for its tests"
		[ -n "$BWRAP" ] && stop_bg "$BWRAP"
		for t in $TESTS; do
			: >"$WORK/raw/empty"
			BPID="" BWRAP=dead
			record "$t" "$b" "$WORK/raw/empty" 98 - - "0 0 0" "0 0 0" 0 0
		done
		BWRAP=""
	else
		case " $TESTS " in
		*" tcp_in_"*)
			# the inbound tests' rrbench server, in the guest
			bg "$LIFE" "$WORK/rrbench-guest.log" "${PFX[@]}" ip netns exec "$g" \
				"$RRB" server -p $RPORT -L "$LIFE"
			gsrv=$BGPID
			;;
		esac
		for t in $TESTS; do run_test "$b" "$g" "$t"; done
	fi
	if [ -n "$BWRAP" ] && [ "$BWRAP" != dead ]; then
		backend_alive || log "$b: backend exited during the session"
		stop_bg "$BWRAP"
	fi
	[ -n "$gsrv" ] && stop_bg "$gsrv"
	[ "$b" = veth ] && detach_veth
	del_ns "$g"
	stop_bg "$rsrv"
	BPID="" BWRAP=""
}

# ---------------------------------------------------------------- main
ntests=$(wc -w <<<"$TESTS")
NTOTAL=$(($(wc -w <<<"$PINMODES") * $(wc -w <<<"$MTUS") * RUNS * $(wc -w <<<"$BACKENDS") * ntests))
case " $BACKENDS " in # veth has no loopback inbound path: its *_lo tests are not run
*" veth "*) NTOTAL=$((NTOTAL - $(wc -w <<<"$PINMODES") * $(wc -w <<<"$MTUS") * RUNS *
	$(tr ' ' '\n' <<<"$TESTS" | grep -c '_lo$' || true))) ;;
esac
LIFE=$(((T + 45) * ntests + 120)) # upper bound of one backend session
{
	echo "date: $(date -Is)  host: $HOST  kernel: $(uname -r)  cpus: $(nproc)"
	echo "ringnet: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) $("$RINGNET_BIN" --version 2>/dev/null || true)"
	echo "pasta: $(dpkg-query -W -f='${Version}' passt 2>/dev/null)  slirp4netns: $(slirp4netns --version 2>/dev/null | head -1)  iperf3: $(iperf3 --version | head -1)"
	echo "PERF_SECONDS=$T PERF_RR_SECONDS=$RR_T PERF_RUNS=$RUNS PERF_MTUS='$MTUS' PERF_PIN=$PIN PERF_UDP_LEN=$UDP_LEN"
	echo "backends: $BACKENDS"
	echo "tests: $TESTS"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews machine CPU and results)"
	echo "measurements: $NTOTAL (about $((NTOTAL / ntests * (5 * T + 3 * RR_T + 12) / 60 + 1)) min)"
} | tee "$WORK/env.txt" >&2

setup_host
for PINMODE in $PINMODES; do
	PFX=()
	[ "$PINMODE" = pinned ] && PFX=(taskset -c "$CPU")
	for MTU in $MTUS; do
		for RUN in $(seq 1 "$RUNS"); do
			for b in $BACKENDS; do
				log "== $PINMODE, MTU $MTU, run $RUN/$RUNS: $b"
				session "$b"
			done
		done
	done
done
cleanup

# the chart needs matplotlib: pip (PyPI), else Debian's python3-matplotlib
if ! python3 -c 'import matplotlib' 2>/dev/null && [ -z "${PERF_NO_INSTALL:-}" ]; then
	log "installing matplotlib"
	timeout 300 python3 -m pip install -q matplotlib >>"$LOG" 2>&1 ||
		{ apt-get install -y -qq python3-matplotlib >>"$LOG" 2>&1 || true; }
fi

python3 "$HERE/summarize.py" "$RES" \
	--md "$RESDIR/$STAMP-$HOST.md" --csv "$RESDIR/$STAMP-$HOST.csv" \
	--png "$RESDIR/$STAMP.png" --env "$WORK/env.txt" || log "summary failed"
cat "$RESDIR/$STAMP-$HOST.md" 2>/dev/null || true
log "results: $RESDIR/$STAMP-$HOST.md (.jsonl, .csv), chart $RESDIR/$STAMP.png, logs $WORK"
