#!/usr/bin/env bash
# perf/tls.sh - the cost of ringnet's TLS interception: the same clients against the same
# HTTPS server, directly and through ringnet, in one run.
#
# An isolated host namespace made here (lib.sh's setup_host: loopback + a dead-end ifb
# sink 10.254.0.1/24 carrying the default routes; nothing leaves) runs one https_echo
# (examples/https_echo.rs: rustls, HTTP/1.1 and h2, `GET /bytes/N`) on 10.254.0.1:443 with a
# certificate for perf.test from its own test CA. Two guest namespaces are each served by a
# `ringnet attach` in the host namespace:
#
#   via-ringnet  guest → ringnet with `[tls] enabled = true` (intercept_ports [443], trust
#                for the server: upstream_ca_files = [the test CA], upstream_roots = []) and
#                one secret for perf.test (so the HTTP/1.1 rewriter runs on the data path);
#                the client trusts ringnet's CA (`ringnet ca`). Every connection is two TLS
#                sessions: guest ⇄ ringnet (leaf for perf.test) and ringnet ⇄ server.
#   via-plain    guest → a second ringnet without [tls]: the same TCP relay, TLS end to end
#                (the client trusts the test CA). The baseline that separates ringnet's TCP
#                cost from its TLS cost.
#   direct       the client in the host namespace → the server: no ringnet.
#
# Both ringnets resolve perf.test from `[dns.hosts]` ("perf.test" = 10.254.0.1); before each
# via-ringnet measurement the guest asks the gateway once (`dig @172.16.0.1 perf.test`), so
# ringnet holds the DNS pin that secret substitution needs. Clients use curl --resolve /
# literal addresses. Tests, per run, each on all three paths in the order via-ringnet,
# via-plain, direct:
#
#   h1   curl --http1.1 downloads https://perf.test/bytes/TLS_BYTES to /dev/null, MiB/s
#        (speed_download); the request carries the secret's placeholder in a header, so
#        via-ringnet substitutes it (secret_substitutions counts the requests)
#   h2   the same with --http2
#   hs   perf/tlshs.c (built here, OpenSSL): new full TLS handshakes per second for
#        TLS_SECONDS (SNI perf.test, certificate and name verified, no session resumption,
#        then close_notify; the server closes first), one after the other: latency-bound.
#        Not `openssl s_time`: it sends no SNI, and ringnet splices TLS without SNI untouched
#   hsp  the same with TLS_HS_PARALLEL connections at a time: CPU-bound (capacity)
#   tcp  the same tool with -t: TCP connect, 9 bytes that are not TLS, the server's close,
#        per second (via-plain and direct only: port 443 of the via-ringnet guest is
#        intercepted). In every test the server closes first (see tlshs.c: ringnet's TCP
#        offers no timestamps, so TIME_WAIT in a guest would hold its ports for 60 s)
#
# For every measurement the script reads, before and after, /proc/PID/task/*/stat of the
# ringnet serving the path (utime and stime per thread: the poll thread `ringnet-poll-*`,
# the TLS workers `ringnet-tls-*`, the rest), the server's /proc/PID/stat (all its threads,
# ended ones included), the client's CPU time (bash `times` in a subshell) and /proc/stat
# (the machine's busy time, every CPU); machine - ringnets - server - client = the foreign
# load during the measurement (other work on the machine: noise). The table shows the medians of TLS_RUNS runs, the ratios,
# and ringnet's CPU seconds per GiB / per 1000 connections by thread. With `perf`
# installed (not installed here), one more untimed via-ringnet h1 download and hs run are
# profiled (`perf record -F 499 -p` ringnet) and their top symbols listed.
#
# Environment (defaults in brackets):
#   TLS_BYTES [1073741824]  bytes per download (h1, h2)
#   TLS_SECONDS [10]        seconds per hs / tcp measurement
#   TLS_RUNS [3]            repetitions (medians reported)
#   TLS_WORKERS [1]         ringnet's tls.workers
#   TLS_HS_PARALLEL [8]     handshakes in flight in hsp (tlshs -P)
#   TLS_MTU [1500]          the guests' MTU (ringnet --mtu)
#   TLS_TESTS ["h1 h2 hs hsp tcp"]
#   TLS_PROFILE [1]         0: no perf profile even when perf is installed
#   PERF_EGRESS [epoll]     ringnet --egress (both ringnets)
#   PERF_PIN [unpinned]     unpinned | pinned: both ringnets on PERF_RINGNET_CPU (every
#                           thread, TLS workers included, by taskset; and --cpu for the
#                           poll thread when that CPU is 0, see below); the server and
#                           every client on PERF_CPU
#   PERF_RINGNET_CPU [0]    ringnet's CPU when pinned
#   PERF_CPU [1]            the peers' CPU when pinned (0 on a 1-CPU machine)
#
# Why ringnet gets CPU 0: ringnet checks `--cpu N` against available_parallelism(), which
# counts the CPUs its affinity mask allows, so under `taskset -c 1` it refuses `--cpu 1`
# ("this machine has CPUs 0..1"). Under `taskset -c 0`, `--cpu 0` passes. With another
# PERF_RINGNET_CPU, taskset alone pins ringnet (--cpu is left out).
#   RINGNET_BIN [target/release/ringnet]  (built with cargo when missing)
#   RINGNET_REV             what the results call that binary (default: this tree's last
#                           commit of src/ for the default binary, else RINGNET_BIN's path)
#   HTTPS_ECHO_BIN [target/release/examples/https_echo]  (built when missing or older
#                           than tests/common/tls_server.rs)
#   PERF_NO_INSTALL=1       never apt-get install missing tools (openssl, curl,
#                           bind9-dnsutils, iproute2, gcc, libssl-dev, python3)
#   PERF_TAG                results file stem (default YYYYMMDD-HHMM)
#
# Output: perf/results/<stamp>-<host>-tls.md (tables) and .jsonl (one line per
# measurement); logs, raw tool output, CAs and profiles under perf/results/tmp/<stamp>-tls/.
#
# Safety: every process runs under `timeout` and is stopped by PID; the namespaces made
# here are deleted by their exact names on exit (lib.sh). No `pkill`. All traffic stays in
# the namespaces made here (10.254.0.1 is the isolated host namespace's own address).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BYTES=${TLS_BYTES:-1073741824}
SECS=${TLS_SECONDS:-10}
RUNS=${TLS_RUNS:-3}
WORKERS=${TLS_WORKERS:-1}
HS_PARALLEL=${TLS_HS_PARALLEL:-8}
MTU=${TLS_MTU:-1500}
TESTS=${TLS_TESTS:-h1 h2 hs hsp tcp}
PROFILE=${TLS_PROFILE:-1}
EGRESS=${PERF_EGRESS:-epoll}
PIN=${PERF_PIN:-unpinned}
NCPU=$(nproc)
CPU_DEFAULT=1
[ "$NCPU" -gt 1 ] || CPU_DEFAULT=0
CPU=${PERF_CPU:-$CPU_DEFAULT}
RCPU=${PERF_RINGNET_CPU:-0}
# What the results name as ringnet's version: RINGNET_REV, else this tree's last commit of
# src/ for the default binary, else the path of RINGNET_BIN.
if [ -n "${RINGNET_REV:-}" ]; then
	REV=$RINGNET_REV
elif [ -z "${RINGNET_BIN:-}" ]; then
	REV=$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml 2>/dev/null || echo unknown)
else
	REV=$RINGNET_BIN
fi
RINGNET_BIN=${RINGNET_BIN:-$REPO/target/release/ringnet}
ECHO_BIN=${HTTPS_ECHO_BIN:-$REPO/target/release/examples/https_echo}
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}
HOST=$(hostname -s 2>/dev/null || echo host)
RESDIR=$HERE/results
WORK=$RESDIR/tmp/$STAMP-tls
SERVER=10.254.0.1
GW=172.16.0.1
NAME=perf.test
# shellcheck disable=SC2016 # the secret's default placeholder, sent verbatim
PLACEHOLDER='$RINGNET_SECRET_PERF_KEY'
CURL_MAX=600                          # seconds per download at most

die() { echo "tls.sh: $*" >&2; exit 1; }
case $PIN in
pinned | unpinned) ;;
*) echo "tls.sh: PERF_PIN must be pinned or unpinned" >&2; exit 2 ;;
esac
for v in BYTES SECS RUNS WORKERS HS_PARALLEL MTU CPU RCPU; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "tls.sh: $v must be a number (got '${!v}')" >&2; exit 2; }
done
if [ "$CPU" -ge "$NCPU" ] || [ "$RCPU" -ge "$NCPU" ]; then
	die "PERF_CPU / PERF_RINGNET_CPU: this machine has CPUs 0..$((NCPU - 1))"
fi
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, TAP)"

# shellcheck source=perf/install.sh
. "$HERE/install.sh"
mapfile -t need_pkgs < <(pkgs_missing openssl:openssl curl:curl dig:bind9-dnsutils ip:iproute2 taskset:util-linux \
	timeout:coreutils python3:python3 gcc:gcc)
[ -e /usr/include/openssl/ssl.h ] || need_pkgs+=(libssl-dev)
install_pkgs tls.sh "${need_pkgs[@]}"
[ -e /dev/net/tun ] || die "/dev/net/tun missing"
if [ ! -x "$RINGNET_BIN" ]; then
	echo "tls.sh: building ringnet (cargo build --release)" >&2
	(cd "$REPO" && timeout 1200 cargo build --release) >&2
fi
if [ ! -x "$ECHO_BIN" ] || [ "$ECHO_BIN" -ot "$REPO/tests/common/tls_server.rs" ]; then
	[ -z "${HTTPS_ECHO_BIN:-}" ] || [ -x "$ECHO_BIN" ] || die "HTTPS_ECHO_BIN $ECHO_BIN is not executable"
	echo "tls.sh: building https_echo (cargo build --release --example https_echo)" >&2
	(cd "$REPO" && timeout 1200 cargo build --release --example https_echo) >&2
fi

mkdir -p "$WORK"
LOG=$WORK/tls.log
: >"$LOG"
OUTJ=$RESDIR/$STAMP-$HOST-tls.jsonl
OUTM=$RESDIR/$STAMP-$HOST-tls.md
TLSHS=$WORK/tlshs
gcc -O2 -Wall -o "$TLSHS" "$HERE/tlshs.c" -lssl -lcrypto -lpthread

TAG=rnt$$
GUEST=${TAG}g   # served by the intercepting ringnet
PLAIN=${TAG}p   # served by the ringnet without [tls]
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"

PFX=()    # server and clients
RPFX=()   # both ringnets
cpuopt=()
if [ "$PIN" = pinned ]; then
	PFX=(taskset -c "$CPU")
	RPFX=(taskset -c "$RCPU")
	[ "$RCPU" != 0 ] || cpuopt=(--cpu 0) # see "Why ringnet gets CPU 0" above
fi

# ------------------------------------------------------------------ set-up
setup_host
SRVCA=$WORK/server-ca
bg 7200 "$WORK/server.log" ip netns exec "$HOSTNS" "${PFX[@]}" "$ECHO_BIN" \
	--addr "$SERVER:443" --ca-dir "$SRVCA" --name "$NAME"
SRV=$BGPID SP=$CHILD
for i in $(seq 100); do
	grep -q '^listening on' "$WORK/server.log" 2>/dev/null && break
	kill -0 "$SP" 2>/dev/null || break
	sleep 0.1
done
grep -q '^listening on' "$WORK/server.log" || { tail -n 5 "$WORK/server.log" >&2; die "https_echo did not start"; }

DNS_CONF=$(printf '[dns]\nservers = ["%s:53"]   # nothing listens: perf.test is static\n[dns.hosts]\n"%s" = ["%s"]\n' \
	"$SERVER" "$NAME" "$SERVER")
CONF=$WORK/ringnet-tls.toml
PCONF=$WORK/ringnet-plain.toml
echo "$DNS_CONF" >"$PCONF"
cat >"$CONF" <<EOF
$DNS_CONF
[tls]
enabled = true
ca_dir = "$WORK/ringnet-ca"
workers = $WORKERS
intercept_ports = [443]
upstream_roots = []
upstream_ca_files = ["$SRVCA/ca.pem"]

[[secrets]]
env_var = "PERF_KEY"
value = "v-1234567890"
hosts = ["$NAME"]
inject_in = ["headers"]
EOF
RNCA=$WORK/ringnet-ca.pem
timeout 60 "$RINGNET_BIN" ca --config "$CONF" --out "$RNCA" >>"$LOG" 2>&1 || die "ringnet ca failed (see $LOG)"

for g in "$GUEST" "$PLAIN"; do
	ip netns add "$g"
	MADE_NS+=("$g")
	ip -n "$g" link set lo up
	ns_sysctls "$g"
done
bg 7200 "$WORK/ringnet-tls.log" ip netns exec "$HOSTNS" "${RPFX[@]}" "$RINGNET_BIN" attach \
	--netns "/run/netns/$GUEST" --tap eth0 --configure --egress "$EGRESS" --mtu "$MTU" \
	--config "$CONF" --stats "${cpuopt[@]}"
RW=$BGPID RP=$CHILD
bg 7200 "$WORK/ringnet-plain.log" ip netns exec "$HOSTNS" "${RPFX[@]}" "$RINGNET_BIN" attach \
	--netns "/run/netns/$PLAIN" --tap eth0 --configure --egress "$EGRESS" --mtu "$MTU" \
	--config "$PCONF" --stats "${cpuopt[@]}"
PW=$BGPID PP=$CHILD

alive() { kill -0 "$RP" 2>/dev/null && kill -0 "$PP" 2>/dev/null; }

# path PATH: sets ns (where the client runs) and ca (what it trusts)
path() {
	case $1 in
	via-ringnet) ns=$GUEST ca=$RNCA ;;
	via-plain) ns=$PLAIN ca=$SRVCA/ca.pem ;;
	direct) ns=$HOSTNS ca=$SRVCA/ca.pem ;;
	esac
}
pin() { # the guest resolves perf.test through ringnet's gateway DNS (the secret's pin)
	ip netns exec "$GUEST" dig @"$GW" +time=1 +tries=1 +short "$NAME" 2>/dev/null | grep -qx "$SERVER"
}
fetch() { # PATH N: one HTTP/1.1 GET of /bytes/N, quietly
	local ns ca
	path "$1"
	timeout 10 ip netns exec "$ns" curl -sS --http1.1 --max-time 5 --cacert "$ca" \
		--resolve "$NAME:443:$SERVER" -o /dev/null "https://$NAME/bytes/$2" 2>>"$LOG"
}

ready=0
for i in $(seq 100); do
	if pin && fetch via-ringnet 16 && fetch via-plain 16 && fetch direct 16; then
		ready=1
		break
	fi
	alive || break
	sleep 0.1
done
if [ $ready = 0 ]; then
	log "not ready: a path does not fetch (see $LOG, $WORK/ringnet-*.log, $WORK/server.log)"
	tail -n 5 "$WORK/ringnet-tls.log" "$WORK/ringnet-plain.log" >&2 || true
	exit 1
fi

# --------------------------------------------------------------- measuring
cpu_snap() { # FILE: per-thread stat of both ringnets, the server's stat, /proc/stat, time
	local t
	{
		for t in /proc/"$RP"/task/*/stat; do echo "via-ringnet $(cat "$t" 2>/dev/null)"; done
		for t in /proc/"$PP"/task/*/stat; do echo "via-plain $(cat "$t" 2>/dev/null)"; done
		echo "server $(cat "/proc/$SP/stat")"
		grep '^cpu ' /proc/stat
		echo "time $(date +%s.%N)"
	} >"$1" 2>/dev/null || true
}

# record TEST PATH RUN RAW RC: one JSON line from the raw output and the two snapshots
record() {
	python3 - "$@" "$BYTES" "$WORK/cpu-before" "$WORK/cpu-after" "$WORK/client-times" >>"$OUTJ" <<'EOF'
import json, os, re, sys
test, path, run, raw, rc, nbytes, before, after, times = sys.argv[1:10]
rc, nbytes = int(rc), int(nbytes)
clk = os.sysconf("SC_CLK_TCK")
text = open(raw, errors="replace").read()

def snap(fname):
    threads, out = {}, {}
    for line in open(fname):
        who, _, rest = line.partition(" ")
        if who in ("via-ringnet", "via-plain", "server"):
            if "(" not in rest:
                continue
            tid = rest.split(" ", 1)[0]
            comm = rest[rest.index("(") + 1:rest.rindex(")")]
            f = rest[rest.rindex(")") + 2:].split()
            # after the comm: state is field 3, utime 14, stime 15 (proc(5))
            threads[(who, tid)] = (comm, int(f[11]) / clk, int(f[12]) / clk)
        elif who == "cpu":
            v = [int(x) for x in rest.split()]
            out["busy"] = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clk
        elif who == "time":
            out["time"] = float(rest)
    return threads, out

(t0, m0), (t1, m1) = snap(before), snap(after)
wall = m1["time"] - m0["time"]
rec = {"test": test, "path": path, "run": int(run), "wall_s": round(wall, 3)}
if test in ("h1", "h2"):
    m = None
    for line in text.splitlines():
        mm = re.fullmatch(r"(\d{3}) (\d+) ([\d.]+) ([\d.]+) (\S+)", line.strip())
        if mm:
            m = mm
    if m and rc == 0 and m.group(1) == "200" and int(m.group(2)) == nbytes:
        rec.update(count=nbytes, seconds=float(m.group(3)),
                   mib_s=round(float(m.group(4)) / 2**20, 1), http_version=m.group(5))
    else:
        errs = [l for l in text.splitlines() if l.startswith("curl:")]
        rec["error"] = (errs[-1] if errs else
                        f"curl exit {rc}, got {text.strip().splitlines()[-1:] or 'nothing'}")[:200]
else:
    j = None
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                j = json.loads(line)
            except ValueError:
                pass
    if j and j.get("ok", 0) > 0:
        rec.update(count=j["ok"], seconds=j["seconds"], rate=j["rate"], errors=j["errors"])
        if j["errors"]:
            rec["first_error"] = j["first_error"]
    else:
        rec["error"] = ((j or {}).get("first_error") or
                        f"tlshs exit {rc}: {text.strip()[-150:]}")[:200]

# CPU of the ringnet serving this path, by thread kind
if path != "direct":
    cpu = {"poll_user": 0.0, "poll_sys": 0.0, "tls_user": 0.0, "tls_sys": 0.0, "other": 0.0}
    for (who, tid), (comm, u1, s1) in t1.items():
        if who != path:
            continue
        _, u0, s0 = t0.get((who, tid), (comm, 0.0, 0.0))
        du, ds = u1 - u0, s1 - s0
        if comm.startswith("ringnet-poll"):
            cpu["poll_user"] += du; cpu["poll_sys"] += ds
        elif comm.startswith("ringnet-tls"):
            cpu["tls_user"] += du; cpu["tls_sys"] += ds
        else:
            cpu["other"] += du + ds
    rec["ringnet_cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
def spent(who):
    return sum((u1 - t0.get(k, (c, 0.0, 0.0))[1]) + (s1 - t0.get(k, (c, 0.0, 0.0))[2])
               for k, (c, u1, s1) in t1.items() if k[0] in who)
# `times` in the client's subshell: line 2 is its children's user and system time
client = None
try:
    lines = open(times).read().split("\n")
    client = sum(int(m) * 60 + float(x) for m, x in re.findall(r"(\d+)m([\d.]+)s", lines[1]))
except (OSError, IndexError, ValueError):
    pass
rec["server_cpu_s"] = round(spent(("server",)), 2)
rec["client_cpu_s"] = None if client is None else round(client, 2)
rec["ringnets_cpu_s"] = round(spent(("via-ringnet", "via-plain")), 2)
rec["machine_busy_s"] = round(m1["busy"] - m0["busy"], 2)
if client is not None:
    rec["foreign_cpu_s"] = round(max(0.0, rec["machine_busy_s"] - rec["ringnets_cpu_s"]
                                     - rec["server_cpu_s"] - client), 2)
print(json.dumps(rec))
EOF
	log "  $1 $2 run $3: $(tail -1 "$OUTJ")"
}

timed() { # OUT CMD...: CMD's output to OUT, its CPU time (bash `times`) to client-times
	local out=$1
	shift
	(
		rc=0
		"$@" >"$out" 2>&1 || rc=$?
		times >"$WORK/client-times"
		exit $rc
	)
}

bulk() { # PROTO PATH RUN: one download of BYTES
	local proto=$1 p=$2 run=$3 raw ns ca flag=--http1.1 rc=0
	[ "$proto" = h2 ] && flag=--http2
	raw=$WORK/$proto-$p-$run.txt
	path "$p"
	[ "$p" != via-ringnet ] || pin || log "  (the gateway's DNS did not answer $NAME)"
	cpu_snap "$WORK/cpu-before"
	timed "$raw" timeout -k 3 $((CURL_MAX + 10)) ip netns exec "$ns" "${PFX[@]}" curl -sS "$flag" \
		--cacert "$ca" --resolve "$NAME:443:$SERVER" --max-time "$CURL_MAX" \
		-H "x-perf-key: $PLACEHOLDER" -o /dev/null \
		-w '%{http_code} %{size_download} %{time_total} %{speed_download} %{http_version}\n' \
		"https://$NAME/bytes/$BYTES" || rc=$?
	cpu_snap "$WORK/cpu-after"
	record "$proto" "$p" "$run" "$raw" "$rc"
}

conns() { # TEST PATH RUN: handshakes (hs: 1 at a time, hsp: HS_PARALLEL) or TCP connects (tcp) per second
	local t=$1 p=$2 run=$3 raw ns ca rc=0 mode=()
	raw=$WORK/$t-$p-$run.txt
	path "$p"
	case $t in
	tcp) mode=(-t) ;;
	hs) mode=(-n "$NAME" -C "$ca" -P 1) ;;
	hsp) mode=(-n "$NAME" -C "$ca" -P "$HS_PARALLEL") ;;
	esac
	[ "$p" != via-ringnet ] || pin || log "  (the gateway's DNS did not answer $NAME)"
	cpu_snap "$WORK/cpu-before"
	timed "$raw" timeout -k 3 $((SECS + 60)) ip netns exec "$ns" "${PFX[@]}" "$TLSHS" \
		-a "$SERVER" -p 443 -s "$SECS" "${mode[@]}" || rc=$?
	cpu_snap "$WORK/cpu-after"
	record "$t" "$p" "$run" "$raw" "$rc"
}

mkdir -p "$RESDIR"
: >"$OUTJ"
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
	log "run $run/$RUNS ($PIN, $TESTS; $BYTES bytes, ${SECS}s, workers $WORKERS)"
	for t in $TESTS; do
		for p in via-ringnet via-plain direct; do
			case $t in
			h1 | h2) bulk "$t" "$p" "$run" ;;
			hs | hsp) conns "$t" "$p" "$run" ;;
			tcp) [ "$p" = via-ringnet ] || conns tcp "$p" "$run" ;;
			*) die "unknown test $t in TLS_TESTS" ;;
			esac
			alive || die "a ringnet exited (see $WORK/ringnet-*.log)"
		done
	done
done
ELAPSED=$(($(date +%s) - T0))

# ----------------------------------------------- optional profile (untimed)
PROFS=()
profile() { # NAME CMD...: perf record of the intercepting ringnet while CMD runs
	local n=$1 pw
	shift
	bg 900 "$WORK/perf-$n.log" perf record -F 499 -p "$RP" -o "$WORK/perf-$n.data"
	pw=$BGPID
	sleep 1
	"$@" >"$WORK/perf-$n.out" 2>&1 || true
	stop_bg "$pw"
	perf report -i "$WORK/perf-$n.data" --no-children --sort comm,dso,sym --stdio -g none \
		2>/dev/null | grep -E '^ +[0-9.]+%' | head -15 >"$WORK/perf-$n.txt" || true
	[ -s "$WORK/perf-$n.txt" ] && PROFS+=("$n")
}
if [ "$PROFILE" != 0 ] && command -v perf >/dev/null 2>&1; then
	log "profiling ringnet (perf record -F 499, untimed): h1 download, $HS_PARALLEL-parallel handshakes"
	pin || true
	profile h1 timeout -k 3 $((CURL_MAX + 10)) ip netns exec "$GUEST" "${PFX[@]}" curl -sS --http1.1 \
		--cacert "$RNCA" --resolve "$NAME:443:$SERVER" --max-time "$CURL_MAX" \
		-H "x-perf-key: $PLACEHOLDER" -o /dev/null "https://$NAME/bytes/$BYTES"
	profile hs timeout -k 3 $((SECS + 60)) ip netns exec "$GUEST" "${PFX[@]}" "$TLSHS" -a "$SERVER" \
		-p 443 -s "$SECS" -n "$NAME" -C "$RNCA" -P "$HS_PARALLEL"
else
	log "no profile (perf not installed, or TLS_PROFILE=0)"
fi

stop_bg "$RW"
stop_bg "$PW"
stop_bg "$SRV"
grep -E '^(tls|secret)_[a-z_]+ ' "$WORK/ringnet-tls.log" >"$WORK/ringnet-stats.txt" || true
cleanup

INFO="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), \
Linux $(uname -r), load average $LOAD0 at start; $(openssl version | cut -d' ' -f1-2), \
curl $(curl --version | head -1 | cut -d' ' -f2); ${ELAPSED}s of measurements"
PLACE="unpinned (2 CPUs shared by everything)"
[ "$PIN" = unpinned ] || PLACE="pinned: both ringnets on CPU $RCPU (taskset, all threads${cpuopt[*]:+; ${cpuopt[*]}}), server and clients on CPU $CPU"
python3 - "$OUTJ" "$OUTM" "$STAMP" "$HOST" "$PLACE" "$EGRESS" "$BYTES" "$SECS" "$WORKERS" \
	"$HS_PARALLEL" "$MTU" "$REV" \
	"$WORK/ringnet-stats.txt" "$INFO" "$WORK" "${PROFS[*]}" <<'EOF'
import json, os, statistics, sys
(outj, outm, stamp, host, place, egress, nbytes, secs, workers, hs_parallel, mtu, rev,
 statsf, info, work, profs) = sys.argv[1:17]
rows = [json.loads(l) for l in open(outj) if l.strip()]
runs = max((r["run"] for r in rows), default=0)
paths = ["direct", "via-plain", "via-ringnet"]

def sel(test, path):
    return [r for r in rows if r["test"] == test and r["path"] == path]
def med(vals):
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None
def f(x, fmt):
    return "–" if x is None else format(x, fmt)
def value(r):
    return r.get("mib_s", r.get("rate")) if "error" not in r else None

gib = int(nbytes) / 2**30
out = [f"# ringnet TLS interception: throughput, handshakes, CPU ({stamp}, {host}, ringnet src {rev})", "",
       f"One https_echo (rustls, ECDSA P-256 certificate for perf.test from a test CA) on 10.254.0.1:443 "
       f"in an isolated host namespace. **direct**: the client in the host namespace. **via-plain**: "
       f"the client in a guest of a ringnet without `[tls]` (TCP relayed, TLS end to end). "
       f"**via-ringnet**: the client in a guest of a ringnet with `[tls] enabled` (workers = {workers}, "
       f"one secret for perf.test, so the HTTP/1.1 rewriter runs), trusting ringnet's CA. "
       f"{place}; ringnet --egress {egress}, guest MTU {mtu}. Medians of {runs} runs.", "",
       f"Machine: {info}.", "",
       "Median (min–max over the runs); ratios of the medians.", "",
       "| test | direct | via-plain | via-ringnet | via-ringnet ÷ direct | via-ringnet ÷ via-plain | via-plain ÷ direct |",
       "|---|---|---|---|---|---|---|"]
names = {"h1": f"HTTP/1.1 download of {gib:g} GiB, MiB/s",
         "h2": f"HTTP/2 download of {gib:g} GiB, MiB/s",
         "hs": "new TLS handshakes/s, one at a time",
         "hsp": f"new TLS handshakes/s, {hs_parallel} at a time",
         "tcp": "TCP connect + 9 bytes + close/s (no TLS)"}
errors = []
for t in ["h1", "h2", "hs", "hsp", "tcp"]:
    if not any(r["test"] == t for r in rows):
        continue
    m = {}
    for p in paths:
        rs = sel(t, p)
        m[p] = med([value(r) for r in rs])
        bad = sorted({r["error"] for r in rs if "error" in r})
        if bad:
            errors.append(f"- {t} {p}: {sum('error' in r for r in rs)}/{len(rs)} runs failed: "
                          + "; ".join(f"`{e}`" for e in bad))
    def cell(p):
        v = [value(r) for r in sel(t, p) if value(r) is not None]
        if not v:
            return "fails" if sel(t, p) else "–"
        spread = f" ({min(v):.0f}–{max(v):.0f})" if len(v) > 1 else ""
        return f"{m[p]:.0f}{spread}"
    ratio = lambda a, b: f(m[a] / m[b], ".2f") if m[a] and m[b] else "–"
    out.append(f"| {names[t]} | {cell('direct')} | {cell('via-plain')} | {cell('via-ringnet')} | "
               f"{ratio('via-ringnet', 'direct')} | {ratio('via-ringnet', 'via-plain')} | "
               f"{ratio('via-plain', 'direct')} |")
if errors:
    out += ["", "Failures:", ""] + errors

out += ["", "CPU seconds per GiB (downloads) or per 1000 connections (hs, hsp, tcp), medians. "
        "ringnet: the one serving the path, by thread (user / system; poll = `ringnet-poll-*`, "
        "TLS = `ringnet-tls-*` workers), and how busy those threads were (100 % = one core). "
        "server: https_echo, all threads. client: curl / tlshs. machine: busy time of every CPU; "
        "foreign = machine - ringnets - server - client, other work on the machine (noise, not "
        "ringnet's).", "",
        "| test | path | ringnet poll u / s | ringnet TLS u / s | ringnet total | poll busy | TLS busy | server | client | machine | foreign |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
for t in ["h1", "h2", "hs", "hsp", "tcp"]:
    for p in ["via-ringnet", "via-plain", "direct"]:
        rs = [r for r in sel(t, p) if "error" not in r]
        if not rs:
            continue
        unit = 2**30 if t in ("h1", "h2") else 1000
        def m(get):
            return med([None if (v := get(r)) is None else v / (r["count"] / unit) for r in rs])
        def cpu(*keys):
            return lambda r: None if r.get("ringnet_cpu_s") is None else sum(r["ringnet_cpu_s"][k] for k in keys)
        def busy(*keys):
            return med([None if r.get("ringnet_cpu_s") is None else
                        100 * sum(r["ringnet_cpu_s"][k] for k in keys) / r["wall_s"] for r in rs])
        pair = lambda a, b: "–" if a is None else f"{a:.2f} / {b:.2f}"
        pct = lambda x: "–" if x is None else f"{x:.0f} %"
        tls = p == "via-ringnet"
        out.append(
            f"| {t} | {p} | {pair(m(cpu('poll_user')), m(cpu('poll_sys')))} | "
            f"{pair(m(cpu('tls_user')), m(cpu('tls_sys'))) if tls else '–'} | "
            f"{f(m(cpu('poll_user', 'poll_sys', 'tls_user', 'tls_sys', 'other')), '.2f')} | "
            f"{pct(busy('poll_user', 'poll_sys'))} | {pct(busy('tls_user', 'tls_sys')) if tls else '–'} | "
            f"{f(m(lambda r: r['server_cpu_s']), '.2f')} | {f(m(lambda r: r.get('client_cpu_s')), '.2f')} | "
            f"{f(m(lambda r: r['machine_busy_s']), '.2f')} | {f(m(lambda r: r.get('foreign_cpu_s')), '.2f')} |")
for name in profs.split():
    what = {"h1": "one HTTP/1.1 download", "hs": f"{secs} s of handshakes, {hs_parallel} at a time"}[name]
    out += ["", f"perf profile of the intercepting ringnet during {what} (untimed pass; "
            "`perf report --no-children --sort comm,dso,sym`, top 15):", "", "```"]
    out += [l.rstrip() for l in open(os.path.join(work, f"perf-{name}.txt"))] + ["```"]
try:
    stats = open(statsf).read().strip()
except OSError:
    stats = ""
if stats:
    out += ["", "The intercepting ringnet's TLS and secret counters at exit (all runs and passes):",
            "", "```", stats, "```"]
open(outm, "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "results: $OUTM"
