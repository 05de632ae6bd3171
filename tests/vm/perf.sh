# The perf steps of tests/vm_perf.rs (busybox sh). The test writes its settings, then this
# file, then tests/vm/guest.sh (for ok/fail/info, step_dhcp and the STEPS loop), into
# /test.sh; /rrbench is perf/rrbench.c linked statically, in the same cpio.
#   PERF_HOST        the host namespace's address of the servers (198.51.100.7)
#   PERF_BULK_PORT   `rrbench bulk` there: sink on the port, source on port + 1
#   PERF_RR_PORT     `rrbench server` there
#   PERF_BYTES       bytes per bulk transfer
#   PERF_RR_SECONDS  length of the TCP RR test
#   PERF_MTU         eth0's MTU for the measurement
# Per test the guest prints "RINGNET-VM info begin NAME", waits PERF_SETTLE seconds (the
# host reads the backend's CPU time then), runs the client and prints
# "RINGNET-VM ok|fail perf-NAME JSON" with rrbench's JSON line.

step_perf_mtu() {
	ip link set dev eth0 mtu "$PERF_MTU" 2>/dev/null
	got=$(cat /sys/class/net/eth0/mtu)
	if [ "$got" = "$PERF_MTU" ]; then
		ok perf-mtu "$got"
	else
		fail perf-mtu "eth0 mtu $got, want $PERF_MTU"
	fi
}

# perf_run NAME ARGS…: one rrbench client run, reported as perf-NAME.
perf_run() {
	name=$1
	shift
	info begin "$name"
	sleep "${PERF_SETTLE:-0.3}"
	out=$(/rrbench "$@" 2>/tmp/rrbench.err)
	rc=$?
	line=$(echo "$out" | grep '^{' | tail -n 1)
	if [ $rc -eq 0 ] && [ -n "$line" ]; then
		ok "perf-$name" "$line"
	else
		fail "perf-$name" "rrbench $* exited $rc: $line $(tr '\n' ' ' </tmp/rrbench.err)"
	fi
}

step_perf_up() {
	perf_run up tcp_up -H "$PERF_HOST" -p "$PERF_BULK_PORT" -b "$PERF_BYTES"
}

step_perf_down() {
	perf_run down tcp_down -H "$PERF_HOST" -p "$((PERF_BULK_PORT + 1))" -b "$PERF_BYTES"
}

step_perf_rr() {
	perf_run rr tcp_rr -H "$PERF_HOST" -p "$PERF_RR_PORT" -d "$PERF_RR_SECONDS"
}
