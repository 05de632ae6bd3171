#!/usr/bin/env bash
# perf/rss.sh - memory of ringnet with 0, 1,000 and 10,000 established idle TCP
# connections.
#
# For every egress driver and every count N: a fresh guest namespace served by
# `ringnet attach` (run inside an isolated host namespace made here, with a
# dead-end ifb sink carrying the default routes), an rrbench server on the host
# side that accepts and holds connections, and `rrbench hold -n N` in the guest
# opening N connections to the gateway 172.16.0.1 (each proven end to end by a
# 1-byte echo) and keeping them idle.  Once all are open and a settle time has
# passed, VmRSS / VmHWM / threads / open fds of ringnet are read from /proc.
# KiB per flow = (VmRSS(N) - VmRSS(0)) / N.
#
# Environment:
#   RSS_COUNTS ["0 1000 10000"]   RSS_EGRESS ["epoll uring"]   RSS_MTU [65520]
#   RSS_SETTLE [3] seconds between "all open" and reading /proc
#   RINGNET_BIN [target/release/ringnet]   PERF_TAG (file stem, YYYYMMDD-HHMM)
# ringnet's default max_connections is 1024, so it runs with a config file
# setting max_connections = 20000.
# Output: perf/results/<stamp>-<host>-rss.md and .jsonl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
COUNTS=${RSS_COUNTS:-"0 1000 10000"}
DRIVERS=${RSS_EGRESS:-"epoll uring"}
MTU=${RSS_MTU:-65520}
SETTLE=${RSS_SETTLE:-3}
RINGNET_BIN=${RINGNET_BIN:-$REPO/target/release/ringnet}
STAMP=${PERF_TAG:-$(date +%Y%m%d-%H%M)}
HOST=$(hostname -s 2>/dev/null || echo host)
RESDIR=$HERE/results
WORK=$RESDIR/tmp/$STAMP-rss
RPORT=7811

[ "$(id -u)" = 0 ] || { echo "rss.sh: must run as root" >&2; exit 1; }
for c in ip gcc timeout python3; do
	command -v $c >/dev/null || { echo "rss.sh: missing $c (see perf/compare.sh, which installs it)" >&2; exit 1; }
done
if [ ! -x "$RINGNET_BIN" ]; then
	(cd "$REPO" && timeout 1200 cargo build --release) >&2
fi
# 10,000 flows = 10,000 fds in each of client, server and ringnet
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$WORK"
LOG=$WORK/rss.log
: >"$LOG"
RRB=$WORK/rrbench
gcc -O2 -Wall -o "$RRB" "$HERE/rrbench.c"
CONF=$WORK/ringnet.toml
echo "max_connections = 20000" >"$CONF"
OUTJ=$RESDIR/$STAMP-$HOST-rss.jsonl
OUTM=$RESDIR/$STAMP-$HOST-rss.md
: >"$OUTJ"

TAG=rnr$$
GUEST=${TAG}g
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"

status_kib() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

setup_host
bg 3600 "$WORK/server.log" ip netns exec "$HOSTNS" "$RRB" server -p $RPORT -L 3500
SRV=$BGPID

for drv in $DRIVERS; do
	for n in $COUNTS; do
		log "ringnet --egress $drv, $n idle connections"
		ip netns add "$GUEST"
		MADE_NS+=("$GUEST")
		ip -n "$GUEST" link set lo up
		ns_sysctls "$GUEST"
		bg 600 "$WORK/ringnet-$drv-$n.log" ip netns exec "$HOSTNS" "$RINGNET_BIN" attach \
			--netns "/run/netns/$GUEST" --tap tap0 --configure --mtu "$MTU" \
			--egress "$drv" --config "$CONF" --stats
		RW=$BGPID RP=$CHILD
		ok=0
		for i in $(seq 40); do
			if ip netns exec "$GUEST" timeout 3 "$RRB" tcp_rr -H 172.16.0.1 -p $RPORT -d 0.1 \
				2>/dev/null | grep -q '"count":[1-9]'; then ok=1; break; fi
			kill -0 "$RP" 2>/dev/null || break
			sleep 0.25
		done
		rec="{\"driver\":\"$drv\",\"requested\":$n,\"mtu\":$MTU"
		if [ $ok = 0 ]; then
			log "  ringnet not ready (see $WORK/ringnet-$drv-$n.log)"
			rec+=",\"error\":\"not ready\"}"
		else
			hold_out=$WORK/hold-$drv-$n.json
			: >"$hold_out" # bg appends
			bg 400 "$hold_out" ip netns exec "$GUEST" "$RRB" hold -H 172.16.0.1 -p $RPORT -n "$n" -d 300 -s "$SETTLE.5"
			HW=$BGPID
			for i in $(seq 1800); do # until it reports (at most 180 s)
				grep -q '"open"' "$hold_out" 2>/dev/null && break
				kill -0 "$HW" 2>/dev/null || break
				sleep 0.1
			done
			sleep "$SETTLE"
			alive=0
			kill -0 "$RP" 2>/dev/null && alive=1
			rss=$(status_kib "$RP" VmRSS); hwm=$(status_kib "$RP" VmHWM)
			thr=$(status_kib "$RP" Threads)
			# threads may have unshared their fd tables: take the largest
			fds=$(for t in /proc/"$RP"/task/*; do ls "$t/fd" 2>/dev/null | wc -l; done | sort -n | tail -1)
			# then: did the connections survive, do they still answer?
			for i in $(seq 150); do
				grep -q '"verify"' "$hold_out" 2>/dev/null && break
				kill -0 "$HW" 2>/dev/null || break
				sleep 0.1
			done
			held=$(grep -m1 '"hold"' "$hold_out" 2>/dev/null || true)
			[ -n "$held" ] || held='{"open":0,"errors":-1}'
			ver=$(grep -m1 '"verify"' "$hold_out" 2>/dev/null || true)
			[ -n "$ver" ] || ver='{}'
			rec+=",\"alive\":$alive,\"vmrss_kib\":${rss:-0},\"vmhwm_kib\":${hwm:-0}"
			rec+=",\"threads\":${thr:-0},\"fds\":$fds,\"hold\":$held,\"verify\":$ver}"
			log "  $held -> VmRSS ${rss} KiB, VmHWM ${hwm} KiB, $fds fds, alive=$alive; $ver"
			stop_bg "$HW"
		fi
		echo "$rec" >>"$OUTJ"
		stop_bg "$RW"
		del_ns "$GUEST"
	done
done
stop_bg "$SRV"
cleanup

python3 - "$OUTJ" "$OUTM" "$STAMP" "$HOST" "$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml 2>/dev/null)" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = [f"# ringnet memory with idle connections ({sys.argv[3]}, {sys.argv[4]}, ringnet src {sys.argv[5]})", "",
       "Guest opens N TCP connections to a host-side server through ringnet (each checked with a "
       "1-byte echo) and holds them idle; VmRSS/VmHWM of the ringnet process from /proc/PID/status. "
       "KiB/flow = (VmRSS(N) − VmRSS(0)) / N; config max_connections = 20000. RSS is read RSS_SETTLE s "
       "after the last connection opened; then the guest checks every connection: closed by peer "
       "(FIN/RST arrived while idle) and echo ok (answers a 1-byte echo within 5 s).", "",
       "| egress | N requested | N open | setup s | VmRSS KiB | VmHWM KiB | KiB/flow (RSS) | KiB/flow (HWM) | ringnet fds | threads | closed by peer / echo ok, at s |",
       "|---|---|---|---|---|---|---|---|---|---|---|"]
base = {}
for r in rows:
    if r["requested"] == 0 and "vmrss_kib" in r:
        base[r["driver"]] = r
for r in rows:
    if "error" in r:
        out.append(f"| {r['driver']} | {r['requested']} | error: {r['error']} | | | | | | | | |")
        continue
    h = r.get("hold", {})
    v = r.get("verify", {})
    b = base.get(r["driver"])
    n = h.get("open", 0)
    per = per_h = "–"
    if b and n:
        per = f"{(r['vmrss_kib'] - b['vmrss_kib']) / n:.1f}"
        per_h = f"{(r['vmhwm_kib'] - b['vmhwm_kib']) / n:.1f}"
    note = "" if r.get("alive") else " (ringnet died)"
    out.append(f"| {r['driver']} | {r['requested']} | {n}{note} | {h.get('setup_seconds', '–')} | "
               f"{r['vmrss_kib']} | {r['vmhwm_kib']} | {per} | {per_h} | {r['fds']} | {r['threads']} | "
               f"{v.get('closed_by_peer', '–')} / {v.get('echo_ok', '–')}, {v.get('after_seconds', '–')} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "results: $OUTM"
