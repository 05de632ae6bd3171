# perf/lib.sh - shared by the perf scripts (sourced, not run).
#
# The caller sets LOG (log file) and TAG (name stem), then sources this file.
# It gets: log, bg/stop_bg (background processes under `timeout`, stopped by
# PID), del_ns, ns_sysctls, setup_host (the isolated host namespace), and an
# EXIT trap that stops every background process and deletes every namespace
# made here, by the exact names it made. No `pkill`.

HOSTNS=${TAG}h
MADE_NS=()   # namespaces made here (deleted by exact name)
BG=()        # PIDs of `timeout` wrappers of everything started in background

log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }

cleanup() {
	set +e
	local p n
	for p in "${BG[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
	for p in "${BG[@]}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
	BG=()
	for n in "${MADE_NS[@]}"; do [ -n "$n" ] && ip netns del "$n" 2>/dev/null; done
	MADE_NS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# bg LIFETIME_S LOGFILE CMD... : start CMD under timeout; sets BGPID (the
# timeout wrapper, which forwards SIGTERM) and CHILD (the command itself:
# taskset and `ip netns exec` exec, so it is the real server/backend PID).
bg() {
	local life=$1 logf=$2 i
	shift 2
	timeout -k 3 "$life" "$@" >>"$logf" 2>&1 &
	BGPID=$!
	BG+=("$BGPID")
	CHILD=""
	for i in $(seq 50); do
		CHILD=$(cat "/proc/$BGPID/task/$BGPID/children" 2>/dev/null | awk '{print $1}')
		[ -n "$CHILD" ] && break
		sleep 0.02
	done
}

stop_bg() { # stop one wrapper by PID (up to 10 s) and forget it
	local p=$1 i
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null || true
	for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	wait "$p" 2>/dev/null || true
	for i in "${!BG[@]}"; do [ "${BG[$i]}" = "$p" ] && unset 'BG[i]'; done
	BG=("${BG[@]}")
}

del_ns() { # delete one namespace made here and forget it
	local n=$1 i
	ip netns del "$n" 2>/dev/null || true
	for i in "${!MADE_NS[@]}"; do [ "${MADE_NS[$i]}" = "$n" ] && unset 'MADE_NS[i]'; done
	MADE_NS=("${MADE_NS[@]}")
}

ns_sysctls() { # many short connections back to back
	ip netns exec "$1" sysctl -qw net.ipv4.tcp_tw_reuse=1 \
		net.ipv4.ip_local_port_range="10000 65001" >/dev/null
}

# The isolated "host" namespace: loopback, plus a dead-end sink with default
# routes for both families (pasta wants a template interface with a default
# route; ringnet activates a family only when the host can route it).  ifb
# drops what it is given: nothing leaves this namespace.
setup_host() {
	ip netns add "$HOSTNS"
	MADE_NS+=("$HOSTNS")
	ip -n "$HOSTNS" link set lo up
	ip -n "$HOSTNS" link add sink0 type ifb
	ip -n "$HOSTNS" link set sink0 up
	ip -n "$HOSTNS" addr add 10.254.0.1/24 dev sink0
	ip -n "$HOSTNS" -6 addr add fd00:fe::1/64 dev sink0 nodad
	ip -n "$HOSTNS" route add default via 10.254.0.2 dev sink0
	ip -n "$HOSTNS" -6 route add default via fd00:fe::2 dev sink0
	ns_sysctls "$HOSTNS"
}
