#!/usr/bin/env bash
# perf/rss.sh - memory of ringnet: with 0, 1,000 and 10,000 established idle TCP
# connections ("idle" scenario), and before, during and after a bulk transfer,
# against pasta measured the same way ("bulk" scenario).
#
# idle: for every egress driver and every count N: a fresh guest namespace served by
# `ringnet attach` (run inside an isolated host namespace made here, with a
# dead-end ifb sink carrying the default routes), an rrbench server on the host
# side that accepts and holds connections, and `rrbench hold -n N` in the guest
# opening N connections to the gateway 172.16.0.1 (each proven end to end by a
# 1-byte echo) and keeping them idle.  Once all are open and a settle time has
# passed, VmRSS / VmHWM / threads / open fds of ringnet are read from /proc.
# KiB per flow = (VmRSS(N) - VmRSS(0)) / N.
#
# bulk: for every backend (ringnet with each egress driver, pasta): a fresh guest
# namespace, an `rrbench bulk` server in the host namespace (sink on RPORT+10,
# source on RPORT+11), then, reading the backend's /proc/PID/status:
#   idle    VmRSS RSS_BULK_IDLE s after the guest first reached the host (one
#           tcp_rr; the guest kernel's own IPv6 start-up chatter, router
#           solicitations every 4 s, is traffic too, so ringnet's first trim
#           comes a few seconds later);
#   up      `rrbench tcp_up -b RSS_BULK_BYTES` guest -> host: VmRSS sampled every
#           0.1 s while it runs, the peak reported ("during");
#   after   VmRSS RSS_BULK_AFTER s after the transfer ended (ringnet's idle trim,
#           egress.idle_trim_ms, runs 2 s after the last traffic);
#   down    the same host -> guest (`rrbench tcp_down`), then "after" again;
# plus VmHWM, and RssAnon / RssFile / RssShmem of every "after" reading (what stays
# resident). pasta runs as in perf/compare.sh (Debian 12's: --runas 0, -t/-u/-T/-U
# none keep traffic on its tap path; guest 10.0.2.100, gateway 10.0.2.2 = the host
# namespace's loopback); ringnet as `ringnet attach --configure` (gateway 172.16.0.1).
# Pinned by default (taskset -c RSS_CPU for backend, server and clients): unpinned,
# this pasta stalls on single-stream uploads here (see /work/shared/peers/README.md).
#
# Environment:
#   RSS_SCENARIOS ["idle bulk"]
#   RSS_COUNTS ["0 1000 10000"]   RSS_EGRESS ["epoll uring"]   RSS_MTU [65520]
#   RSS_SETTLE [3] seconds between "all open" (idle) / "reachable" (bulk) and reading /proc
#   RSS_BULK_BACKENDS ["ringnet pasta"]: ringnet runs once per RSS_EGRESS driver
#   RSS_BULK_BYTES [1073741824] bytes per transfer (each direction)
#   RSS_BULK_IDLE [10] seconds between "reachable" and the idle reading
#   RSS_BULK_PIN [pinned] | unpinned   RSS_CPU [0] the CPU when pinned
#   RSS_BULK_AFTER [5] seconds between the end of a transfer and the "after" reading
#   RINGNET_BIN [target/release/ringnet]   PERF_TAG (file stem, YYYYMMDD-HHMM)
# ringnet's default max_connections is 1024, so it runs with a config file
# setting max_connections = 20000.
# Output: perf/results/<stamp>-<host>-rss.md and .jsonl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SCENARIOS=${RSS_SCENARIOS:-"idle bulk"}
COUNTS=${RSS_COUNTS:-"0 1000 10000"}
BULK_BACKENDS=${RSS_BULK_BACKENDS:-"ringnet pasta"}
BULK_BYTES=${RSS_BULK_BYTES:-1073741824}
BULK_AFTER=${RSS_BULK_AFTER:-5}
BULK_IDLE=${RSS_BULK_IDLE:-10}
BULK_PIN=${RSS_BULK_PIN:-pinned}
CPU=${RSS_CPU:-0}
PFX=()
case $BULK_PIN in
pinned) PFX=(taskset -c "$CPU") ;;
unpinned) ;;
*) echo "RSS_BULK_PIN must be pinned or unpinned" >&2; exit 2 ;;
esac
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
need=(ip gcc timeout python3)
case " $SCENARIOS " in *" bulk "*) case " $BULK_BACKENDS " in *" pasta "*) need+=(pasta) ;; esac ;; esac
for c in "${need[@]}"; do
	command -v "$c" >/dev/null || { echo "rss.sh: missing $c (see perf/compare.sh, which installs it)" >&2; exit 1; }
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

idle_scenario() {
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
		rec="{\"scenario\":\"idle\",\"driver\":\"$drv\",\"requested\":$n,\"mtu\":$MTU"
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
}

# ---- bulk: idle, during and after a transfer each way, ringnet and pasta
BPORT=$((RPORT + 10)) # rrbench bulk: sink BPORT, source BPORT+1

# "Rss Anon File Shmem" of a process, KiB (from /proc/PID/status)
rss_parts() {
	echo "$(status_kib "$1" VmRSS) $(status_kib "$1" RssAnon) $(status_kib "$1" RssFile) $(status_kib "$1" RssShmem)"
}

# Run a bulk client in the guest while sampling the backend's VmRSS every 0.1 s;
# sets PEAK (KiB) and CLIENT (its JSON line, or {} when it printed none).
bulk_sampled() { # GUEST BACKEND-PID SERVER MODE
	local g=$1 pid=$2 srv=$3 mode=$4 out=$WORK/bulk-$4.json cpid r
	: >"$out"
	PEAK=0
	timeout -k 3 120 "${PFX[@]}" ip netns exec "$g" "$RRB" "$mode" -H "$srv" -p "$([ "$mode" = tcp_up ] && echo $BPORT || echo $((BPORT + 1)))" \
		-b "$BULK_BYTES" >"$out" 2>>"$LOG" &
	cpid=$!
	while kill -0 "$cpid" 2>/dev/null; do
		r=$(status_kib "$pid" VmRSS)
		[ "${r:-0}" -gt "$PEAK" ] && PEAK=$r
		sleep 0.1
	done
	wait "$cpid" 2>/dev/null || true
	CLIENT=$(grep -m1 '"mode"' "$out" 2>/dev/null || true)
	[ -n "$CLIENT" ] || CLIENT='{}'
}

bulk_one() { # BACKEND-LABEL
	local b=$1 srv pid wrap ok=0 idle hwm rec r1 a1 f1 s1 r2 a2 f2 s2
	log "bulk: $b, $BULK_BYTES bytes each way"
	ip netns add "$GUEST"
	MADE_NS+=("$GUEST")
	ip -n "$GUEST" link set lo up
	ns_sysctls "$GUEST"
	case $b in
	pasta)
		bg 900 "$WORK/pasta.log" "${PFX[@]}" ip netns exec "$HOSTNS" \
			pasta -f -4 --runas 0 --config-net -m "$MTU" -a 10.0.2.100 -n 24 \
			-g 10.0.2.2 -I tap0 -t none -u none -T none -U none --netns "/run/netns/$GUEST"
		srv=10.0.2.2
		;;
	ringnet-*)
		bg 900 "$WORK/ringnet-bulk-${b#ringnet-}.log" "${PFX[@]}" ip netns exec "$HOSTNS" "$RINGNET_BIN" attach \
			--netns "/run/netns/$GUEST" --tap tap0 --configure --mtu "$MTU" \
			--egress "${b#ringnet-}" --stats
		srv=172.16.0.1
		;;
	esac
	wrap=$BGPID pid=$CHILD
	for _ in $(seq 40); do
		if ip netns exec "$GUEST" timeout 3 "$RRB" tcp_rr -H "$srv" -p $RPORT -d 0.1 \
			2>/dev/null | grep -q '"count":[1-9]'; then ok=1; break; fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.25
	done
	rec="{\"scenario\":\"bulk\",\"backend\":\"$b\",\"bytes\":$BULK_BYTES,\"mtu\":$MTU,\"after_s\":$BULK_AFTER"
	rec+=",\"idle_s\":$BULK_IDLE,\"pin\":\"$BULK_PIN\""
	if [ $ok = 0 ]; then
		log "  $b not ready (see $WORK)"
		rec+=",\"error\":\"not ready\"}"
	else
		sleep "$BULK_IDLE"
		idle=$(status_kib "$pid" VmRSS)
		bulk_sampled "$GUEST" "$pid" "$srv" tcp_up
		local up_peak=$PEAK up=$CLIENT
		sleep "$BULK_AFTER"
		read -r r1 a1 f1 s1 <<<"$(rss_parts "$pid")"
		bulk_sampled "$GUEST" "$pid" "$srv" tcp_down
		local down_peak=$PEAK down=$CLIENT
		sleep "$BULK_AFTER"
		read -r r2 a2 f2 s2 <<<"$(rss_parts "$pid")"
		hwm=$(status_kib "$pid" VmHWM)
		local alive=0
		kill -0 "$pid" 2>/dev/null && alive=1
		local smaps=$WORK/smaps-$b.txt
		cat "/proc/$pid/smaps" >"$smaps" 2>/dev/null || true
		rec+=",\"alive\":$alive,\"idle_kib\":${idle:-0},\"up_peak_kib\":$up_peak"
		rec+=",\"after_up_kib\":$r1,\"after_up_anon_kib\":$a1,\"after_up_file_kib\":$f1,\"after_up_shmem_kib\":$s1"
		rec+=",\"down_peak_kib\":$down_peak,\"after_down_kib\":$r2,\"after_down_anon_kib\":$a2"
		rec+=",\"after_down_file_kib\":$f2,\"after_down_shmem_kib\":$s2,\"vmhwm_kib\":${hwm:-0}"
		rec+=",\"up\":$up,\"down\":$down"
		log "  idle $idle KiB; up: peak $up_peak, after $r1; down: peak $down_peak, after $r2; HWM $hwm (KiB)"
		if [ "${b#ringnet}" != "$b" ]; then
			stop_bg "$wrap" # ringnet prints its counters (--stats) on exit
			local k v
			while read -r k v; do
				rec+=",\"$k\":$v"
				log "  ringnet $k $v"
			done < <(grep -E '^(idle_trims|idle_trim_pool_bytes) [0-9]+$' "$WORK/ringnet-bulk-${b#ringnet-}.log" || true)
		fi
		rec+="}"
	fi
	echo "$rec" >>"$OUTJ"
	stop_bg "$wrap"
	del_ns "$GUEST"
}

bulk_scenario() {
	bg 3600 "$WORK/bulk-server.log" "${PFX[@]}" ip netns exec "$HOSTNS" "$RRB" bulk -p $BPORT -b "$BULK_BYTES" -L 3500
	local bsrv=$BGPID b drv
	for b in $BULK_BACKENDS; do
		case $b in
		ringnet) for drv in $DRIVERS; do bulk_one "ringnet-$drv"; done ;;
		pasta) bulk_one pasta ;;
		*) log "unknown bulk backend $b" ;;
		esac
	done
	stop_bg "$bsrv"
}

for sc in $SCENARIOS; do
	case $sc in
	idle) idle_scenario ;;
	bulk) bulk_scenario ;;
	*) log "unknown scenario $sc" ;;
	esac
done
stop_bg "$SRV"
cleanup

python3 - "$OUTJ" "$OUTM" "$STAMP" "$HOST" "$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml 2>/dev/null)" "$WORK" <<'EOF'
import json, os, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
idle = [r for r in rows if r.get("scenario", "idle") == "idle"]
bulk = [r for r in rows if r.get("scenario") == "bulk"]
out = [f"# ringnet memory ({sys.argv[3]}, {sys.argv[4]}, ringnet src {sys.argv[5]})", ""]
if idle:
    out += ["## Idle connections", "",
       "Guest opens N TCP connections to a host-side server through ringnet (each checked with a "
       "1-byte echo) and holds them idle; VmRSS/VmHWM of the ringnet process from /proc/PID/status. "
       "KiB/flow = (VmRSS(N) − VmRSS(0)) / N; config max_connections = 20000. RSS is read RSS_SETTLE s "
       "after the last connection opened; then the guest checks every connection: closed by peer "
       "(FIN/RST arrived while idle) and echo ok (answers a 1-byte echo within 5 s).", "",
       "| egress | N requested | N open | setup s | VmRSS KiB | VmHWM KiB | KiB/flow (RSS) | KiB/flow (HWM) | ringnet fds | threads | closed by peer / echo ok, at s |",
       "|---|---|---|---|---|---|---|---|---|---|---|"]
base = {}
for r in idle:
    if r["requested"] == 0 and "vmrss_kib" in r:
        base[r["driver"]] = r
for r in idle:
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


def mib(k):
    return f"{k / 1024:.1f}"


def rate(t):
    if "mib_s" not in t:
        return "–"
    return f"{t['mib_s']:.0f}" + (" (error)" if t.get("error") else "")


if bulk:
    if idle:
        out.append("")
    gib = bulk[0]["bytes"] / 2**30
    after = bulk[0]["after_s"]
    out += ["## Before, during and after a bulk transfer", "",
        f"One guest, one backend process ({bulk[0].get('pin', 'unpinned')}): VmRSS (MiB) idle "
        f"({bulk[0].get('idle_s', '?')} s after the guest first reached the host), the peak "
        f"while the guest sends {gib:g} GiB to the host (up, `rrbench tcp_up`) and while it receives "
        f"{gib:g} GiB (down, `rrbench tcp_down`), sampled every 0.1 s, and {after} s after each "
        f"transfer ended; VmHWM at the end; what stays resident after the second transfer "
        f"(RssAnon / RssFile / RssShmem). Transfer rates for reference.", "",
        "| backend | idle | during up (peak) | after up | during down (peak) | after down | VmHWM | after: anon / file / shmem | up / down MiB/s | idle trims |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in bulk:
        if "error" in r:
            out.append(f"| {r['backend']} | error: {r['error']} | | | | | | | | |")
            continue
        note = "" if r.get("alive") else " (died)"
        out.append(f"| {r['backend']}{note} | {mib(r['idle_kib'])} | {mib(r['up_peak_kib'])} | "
                   f"{mib(r['after_up_kib'])} | {mib(r['down_peak_kib'])} | {mib(r['after_down_kib'])} | "
                   f"{mib(r['vmhwm_kib'])} | {mib(r['after_down_anon_kib'])} / "
                   f"{mib(r['after_down_file_kib'])} / {mib(r['after_down_shmem_kib'])} | "
                   f"{rate(r.get('up', {}))} / {rate(r.get('down', {}))} | {r.get('idle_trims', '–')} |")
    # what stays resident: the backend's mappings after the last transfer (/proc/PID/smaps)
    parts = []
    for r in bulk:
        f = os.path.join(sys.argv[6], f"smaps-{r['backend']}.txt")
        if "error" in r or not os.path.exists(f):
            continue
        rss, name = {}, "?"
        for line in open(f):
            m = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if m:
                name = os.path.basename(m.group(1).strip()) or "[anon]"
            elif line.startswith("Rss:"):
                rss[name] = rss.get(name, 0) + int(line.split()[1])
        top = sorted(((v, k) for k, v in rss.items() if v > 0), reverse=True)
        parts.append(f"- {r['backend']}: " + ", ".join(f"{k} {v / 1024:.1f}" for v, k in top[:8]))
    if parts:
        out += ["", "Resident after the down transfer, by mapping (MiB, /proc/PID/smaps Rss):", ""] + parts
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
log "results: $OUTM"
