#!/usr/bin/env bash
# perf/dns.sh - DNS queries per second through ringnet's gateway DNS, against the same
# upstream asked directly, in one run.
#
# An isolated host namespace made here (lib.sh's setup_host: loopback + a dead-end ifb
# sink 10.254.0.1/24, fd00:fe::1/64 carrying the default routes; nothing leaves) runs one
# dnsmasq on 10.254.0.1:53 answering every name under perf.test with 198.51.100.8 from its
# configuration (--address; no logging, no upstream of its own). A guest namespace is
# served by `ringnet attach` with `[dns] servers = ["10.254.0.1:53"]`. dnsperf (UDP)
# then runs, per repetition:
#
#   via-ringnet  in the guest, against the gateway 172.16.0.1:53: ringnet forwards each
#                query to dnsmasq and relays the answer
#   direct       in the host namespace, against 10.254.0.1:53: the same dnsmasq, no ringnet
#   local        in the guest, against the gateway, for host.ringnet.internal: answered by
#                ringnet itself (its own ceiling, no upstream)
#
# and the table shows the medians, and via-ringnet / direct. The query file is
# DNS_NAMES distinct names (nN.perf.test A), replayed for DNS_SECONDS.
#
# Environment (defaults in brackets):
#   DNS_SECONDS [10]        dnsperf -l, per measurement
#   DNS_RUNS [3]            repetitions (medians reported)
#   DNS_CLIENTS [1]         dnsperf -c (client sockets)
#   DNS_OUTSTANDING [100]   dnsperf -q (queries in flight)
#   DNS_NAMES [1000]        distinct names in the query file
#   DNS_EGRESS [epoll]      ringnet --egress
#   PERF_PIN [unpinned]     unpinned | pinned ("pinned": dnsmasq, ringnet (--cpu) and
#                           dnsperf all on PERF_CPU: one core's worth of work each way)
#   PERF_CPU [0]
#   RINGNET_BIN [target/release/ringnet]  (built with cargo when missing)
#   PERF_NO_INSTALL=1       never apt-get install missing tools (dnsperf, dnsmasq-base,
#                           bind9-dnsutils)
#   PERF_TAG                results file stem (default YYYYMMDD-HHMM)
#
# dnsperf is installed here (Debian `dnsperf`), not by scripts/install-test-deps.sh: the
# test suite does not need it. This script is not run by the test suite.
#
# Output: perf/results/<stamp>-<host>-dns.md (table) and .jsonl (one line per
# measurement); logs and dnsperf's raw output under perf/results/tmp/<stamp>-dns/.
#
# Safety: every process runs under `timeout` and is stopped by PID; the namespaces made
# here are deleted by their exact names on exit (lib.sh). No `pkill`.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SECS=${DNS_SECONDS:-10}
RUNS=${DNS_RUNS:-3}
CLIENTS=${DNS_CLIENTS:-1}
OUTSTANDING=${DNS_OUTSTANDING:-100}
NAMES=${DNS_NAMES:-1000}
EGRESS=${DNS_EGRESS:-epoll}
PIN=${PERF_PIN:-unpinned}
CPU=${PERF_CPU:-0}
RINGNET_BIN=${RINGNET_BIN:-$REPO/target/release/ringnet}
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}
HOST=$(hostname -s 2>/dev/null || echo host)
RESDIR=$HERE/results
WORK=$RESDIR/tmp/$STAMP-dns
UPSTREAM=10.254.0.1
GW=172.16.0.1

case $PIN in
pinned | unpinned) ;;
*) echo "dns.sh: PERF_PIN must be pinned or unpinned" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "dns.sh: must run as root (namespaces, TAP)" >&2; exit 1; }

# shellcheck source=perf/install.sh
. "$HERE/install.sh"
mapfile -t need_pkgs < <(pkgs_missing dnsperf:dnsperf dnsmasq:dnsmasq-base dig:bind9-dnsutils ip:iproute2 \
	taskset:util-linux timeout:coreutils python3:python3)
install_pkgs dns.sh "${need_pkgs[@]}"
[ -e /dev/net/tun ] || { echo "dns.sh: /dev/net/tun missing" >&2; exit 1; }
if [ ! -x "$RINGNET_BIN" ]; then
	echo "dns.sh: building ringnet (cargo build --release)" >&2
	(cd "$REPO" && timeout 1200 cargo build --release) >&2
fi

mkdir -p "$WORK"
LOG=$WORK/dns.log
: >"$LOG"
OUTJ=$RESDIR/$STAMP-$HOST-dns.jsonl
OUTM=$RESDIR/$STAMP-$HOST-dns.md

TAG=rnd$$
GUEST=${TAG}g
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"

PFX=()
cpuopt=()
if [ "$PIN" = pinned ]; then
	PFX=(taskset -c "$CPU")
	cpuopt=(--cpu "$CPU")
fi

# Query files: distinct names under perf.test (forwarded), the host alias (local).
QFILE=$WORK/queries.txt
LFILE=$WORK/local.txt
for i in $(seq "$NAMES"); do echo "n$i.perf.test A"; done >"$QFILE"
echo "host.ringnet.internal A" >"$LFILE"
CONF=$WORK/ringnet.toml
printf '[dns]\nservers = ["%s:53"]\n' "$UPSTREAM" >"$CONF"

setup_host
bg 3600 "$WORK/dnsmasq.log" ip netns exec "$HOSTNS" "${PFX[@]}" dnsmasq --keep-in-foreground \
	--conf-file=/dev/null --no-resolv --no-hosts --no-poll --bind-interfaces \
	--listen-address="$UPSTREAM" --port=53 --user=root --group=root --pid-file= \
	--cache-size=0 --local-ttl=300 --address=/perf.test/198.51.100.8
DNSMASQ=$BGPID

ip netns add "$GUEST"
MADE_NS+=("$GUEST")
ip -n "$GUEST" link set lo up
bg 3600 "$WORK/ringnet.log" ip netns exec "$HOSTNS" "${PFX[@]}" "$RINGNET_BIN" attach \
	--netns "/run/netns/$GUEST" --tap eth0 --configure --egress "$EGRESS" \
	--config "$CONF" --stats "${cpuopt[@]}"
RW=$BGPID RP=$CHILD

# ready: dnsmasq answers directly, and ringnet's gateway answers both kinds of name
ready=0
for i in $(seq 100); do
	if ip netns exec "$HOSTNS" dig @"$UPSTREAM" +time=1 +tries=1 +short n1.perf.test 2>/dev/null | grep -q 198.51.100.8 &&
		ip netns exec "$GUEST" dig @"$GW" +time=1 +tries=1 +short n1.perf.test 2>/dev/null | grep -q 198.51.100.8 &&
		ip netns exec "$GUEST" dig @"$GW" +time=1 +tries=1 +short host.ringnet.internal 2>/dev/null | grep -q "$GW"; then
		ready=1
		break
	fi
	kill -0 "$RP" 2>/dev/null || break
	sleep 0.1
done
if [ $ready = 0 ]; then
	log "not ready: dnsmasq direct or ringnet's gateway DNS does not answer (see $WORK/ringnet.log)"
	tail -20 "$WORK/ringnet.log" >&2 || true
	exit 1
fi

# measure NAME NETNS SERVER QUERYFILE RUN: one dnsperf run, one JSON line
measure() {
	local name=$1 ns=$2 server=$3 qf=$4 run=$5 raw
	raw=$WORK/$name-$run.txt
	timeout -k 3 $((SECS + 30)) ip netns exec "$ns" "${PFX[@]}" dnsperf -s "$server" -d "$qf" \
		-l "$SECS" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 >"$raw" 2>&1 || true
	python3 - "$raw" "$name" "$run" >>"$OUTJ" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def num(pat):
    m = re.search(pat, text)
    return float(m.group(1)) if m else None
rec = {"test": sys.argv[2], "run": int(sys.argv[3]),
       "qps": num(r"Queries per second:\s+([\d.]+)"),
       "sent": num(r"Queries sent:\s+(\d+)"),
       "completed": num(r"Queries completed:\s+(\d+)"),
       "lost": num(r"Queries lost:\s+(\d+)"),
       "latency_avg_s": num(r"Average Latency \(s\):\s+([\d.]+)"),
       "latency_stddev_s": num(r"Latency StdDev \(s\):\s+([\d.]+)"),
       "noerror": num(r"NOERROR (\d+)")}
if rec["qps"] is None:
    rec["error"] = (text.strip().splitlines() or ["no output"])[-1][:200]
print(json.dumps(rec))
EOF
	log "  $name run $run: $(tail -1 "$OUTJ")"
}

mkdir -p "$RESDIR"
: >"$OUTJ"
for run in $(seq "$RUNS"); do
	log "run $run/$RUNS ($PIN, ${SECS}s, -c $CLIENTS -q $OUTSTANDING)"
	measure via-ringnet "$GUEST" "$GW" "$QFILE" "$run"
	measure direct "$HOSTNS" "$UPSTREAM" "$QFILE" "$run"
	measure local "$GUEST" "$GW" "$LFILE" "$run"
done

stop_bg "$RW"
stop_bg "$DNSMASQ"
grep -E '^dns_[a-z_]+ ' "$WORK/ringnet.log" >"$WORK/ringnet-stats.txt" || true
cleanup

python3 - "$OUTJ" "$OUTM" "$STAMP" "$HOST" "$PIN" "$EGRESS" "$SECS" "$CLIENTS" "$OUTSTANDING" \
	"$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml 2>/dev/null)" "$WORK/ringnet-stats.txt" <<'EOF'
import json, statistics, sys
(outj, outm, stamp, host, pin, egress, secs, clients, outstanding, rev, statsf) = sys.argv[1:12]
rows = [json.loads(l) for l in open(outj) if l.strip()]
def med(test, key):
    v = [r[key] for r in rows if r["test"] == test and r.get(key) is not None]
    return statistics.median(v) if v else None
def f(x, fmt):
    return "–" if x is None else format(x, fmt)
out = [f"# ringnet gateway DNS: queries per second ({stamp}, {host}, ringnet src {rev})", "",
       f"dnsperf (UDP, {secs} s per run, -c {clients} -q {outstanding}, distinct names) against one "
       f"dnsmasq (answers from its configuration) in an isolated host namespace; {pin}, ringnet "
       f"--egress {egress}. Medians of {max((r['run'] for r in rows), default=0)} runs. "
       "via-ringnet: guest → gateway 172.16.0.1:53 → ringnet forwards to dnsmasq. direct: "
       "dnsperf in the host namespace → dnsmasq. local: guest → gateway, host.ringnet.internal "
       "(answered by ringnet, no upstream).", "",
       "| path | queries/s | avg latency ms | lost | errors |", "|---|---|---|---|---|"]
for t in ["via-ringnet", "direct", "local"]:
    errs = sorted({r["error"] for r in rows if r["test"] == t and "error" in r})
    lat = med(t, "latency_avg_s")
    out.append(f"| {t} | {f(med(t, 'qps'), '.0f')} | {f(lat and lat * 1000, '.3f')} | "
               f"{f(med(t, 'lost'), '.0f')} | {'; '.join(errs) or ''} |")
via, direct = med("via-ringnet", "qps"), med("direct", "qps")
ratio = via / direct if via and direct else None
out += ["", f"via-ringnet / direct: **{f(ratio, '.2f')}**"]
try:
    stats = open(statsf).read().strip()
except OSError:
    stats = ""
if stats:
    out += ["", "ringnet's DNS counters at exit (all runs):", "", "```", stats, "```"]
open(outm, "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "results: $OUTM"
