# The VM tests' guest script (busybox sh), run as /test.sh by the kit's /init. The test
# prepends its settings as shell assignments (tests/common/vm.rs `GuestPlan`):
#   STEPS         which checks to run, in order (dhcp slaac dns download upload ping features
#                 renew hold)
#   EXPECT_IP EXPECT_ROUTER EXPECT_DNS EXPECT_MTU
#                 what the DHCPv4 lease must carry (empty: not checked, only reported)
#   V6_PREFIX     the start of the SLAAC address, e.g. "fd42:6d73:62:" (empty: any global)
#   DNS_SERVER    where nslookup asks; DNS_NAMES "name=address …" it must resolve
#   HTTP          base URL of tests/helpers/http_server.py; BLOB_SHA the sha256 of GET /data
#   UPLOAD_BYTES  size of the random file POSTed to /upload (its sha256 must come back;
#                 bytes 1..=255 only: busybox wget sends a --post-file up to its first NUL)
#   PING4 PING6   addresses that must answer ping
# Every result is one line: "RINGNET-VM ok NAME DETAILS", "RINGNET-VM fail NAME DETAILS" or
# "RINGNET-VM info NAME DETAILS".

ok() { echo "RINGNET-VM ok $*"; }
fail() { echo "RINGNET-VM fail $*"; }
info() { echo "RINGNET-VM info $*"; }
# Seconds since boot, centisecond resolution.
now() { cut -d' ' -f1 /proc/uptime; }
# "BYTES in SECONDS s (RATE KiB/s)" between two `now` readings.
rate() { awk -v b="$1" -v a="$2" -v z="$3" 'BEGIN { d = z - a; if (d <= 0) d = 0.01;
	printf "%d bytes in %.2f s (%d KiB/s)", b, d, b / d / 1024 }'; }

step_dhcp() {
	cat >/tmp/udhcpc.sh <<'EOF'
#!/bin/sh
# udhcpc event script: configure eth0 from the lease and record the lease.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
	for r in $router; do
		ip -4 route add default via "$r" dev "$interface"
		break
	done
	echo "$1" >>/tmp/events
	echo "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid" >/tmp/lease
	;;
esac
EOF
	chmod +x /tmp/udhcpc.sh
	rm -f /tmp/lease
	if ! udhcpc -i eth0 -n -q -t 5 -T 2 -O mtu -s /tmp/udhcpc.sh >/tmp/udhcpc.log 2>&1; then
		fail dhcp "udhcpc found no lease: $(tr '\n' ' ' </tmp/udhcpc.log)"
		return
	fi
	lease=$(cat /tmp/lease 2>/dev/null)
	info lease "$lease"
	bad=""
	for kv in "ip=$EXPECT_IP" "router=$EXPECT_ROUTER" "dns=$EXPECT_DNS" "mtu=$EXPECT_MTU"; do
		k=${kv%%=*}
		want=${kv#*=}
		[ -z "$want" ] && continue
		got=$(echo "$lease" | tr ' ' '\n' | grep "^$k=" | cut -d= -f2-)
		[ "$got" = "$want" ] || bad="$bad $k=$got(want $want)"
	done
	if [ -n "$bad" ]; then
		fail dhcp "lease differs:$bad; lease: $lease"
	else
		ok dhcp "$lease"
	fi
	info mtu "eth0 mtu $(cat /sys/class/net/eth0/mtu)"
}

step_slaac() {
	n=0
	addr=""
	while [ $n -lt 100 ]; do
		addr=$(ip -6 -o addr show dev eth0 scope global | grep "inet6 $V6_PREFIX" |
			grep -v tentative | awk '{ print $4 }' | head -n 1)
		[ -n "$addr" ] && break
		sleep 0.1
		n=$((n + 1))
	done
	if [ -n "$addr" ]; then
		ok slaac "$addr after $((n / 10)).$((n % 10)) s"
	else
		fail slaac "no non-tentative global address ${V6_PREFIX}… within 10 s: $(ip -6 -o addr show dev eth0 | tr '\n' ';')"
	fi
	route=$(ip -6 route show default | head -n 1)
	case "$route" in
	*via*) ok ra-route "$route" ;;
	*) fail ra-route "no IPv6 default route from the RA: $(ip -6 route show | tr '\n' ';')" ;;
	esac
	info ra-mtu "$(cat /proc/sys/net/ipv6/conf/eth0/mtu)"
}

step_dns() {
	for nv in $DNS_NAMES; do
		name=${nv%%=*}
		want=${nv#*=}
		out=$(nslookup "$name" "$DNS_SERVER" 2>&1)
		if echo "$out" | grep -q "^Address:[[:space:]]*$want\$"; then
			ok "dns:$name" "$want"
		else
			fail "dns:$name" "want $want from $DNS_SERVER, nslookup said: $(echo "$out" | tr '\n\t' '; ')"
		fi
	done
}

step_download() {
	t0=$(now)
	if ! wget -q -O /tmp/blob "$HTTP/data" 2>/tmp/wget.log; then
		fail download "wget $HTTP/data failed: $(tr '\n' ' ' </tmp/wget.log); got $(wc -c </tmp/blob 2>/dev/null) bytes"
		return
	fi
	t1=$(now)
	size=$(wc -c </tmp/blob)
	got=$(sha256sum /tmp/blob | cut -d' ' -f1)
	if [ "$got" = "$BLOB_SHA" ]; then
		ok download "$(rate "$size" "$t0" "$t1") sha256 $got"
	else
		fail download "sha256 $got, want $BLOB_SHA ($size bytes)"
	fi
	rm -f /tmp/blob
}

step_upload() {
	# No NUL bytes: busybox wget sends --post-file with strlen(), so a NUL would cut it.
	dd if=/dev/urandom bs=65536 count=$((UPLOAD_BYTES / 65536)) 2>/dev/null | tr '\000' '\001' >/tmp/up
	want=$(sha256sum /tmp/up | cut -d' ' -f1)
	size=$(wc -c </tmp/up)
	t0=$(now)
	if ! wget -q -O /tmp/upres --post-file=/tmp/up "$HTTP/upload" 2>/tmp/wget.log; then
		fail upload "wget --post-file $HTTP/upload failed: $(tr '\n' ' ' </tmp/wget.log)"
		return
	fi
	t1=$(now)
	got=$(cat /tmp/upres)
	if [ "$got" = "$want" ]; then
		ok upload "$(rate "$size" "$t0" "$t1") sha256 $got"
	else
		fail upload "server saw sha256 '$got', sent $want ($size bytes)"
	fi
	rm -f /tmp/up
}

step_ping() {
	for a in $PING4; do
		if out=$(ping -c 2 -w 8 "$a" 2>&1); then
			ok "ping:$a" "$(echo "$out" | tail -n 1)"
		else
			fail "ping:$a" "$(echo "$out" | tr '\n' ';')"
		fi
	done
	for a in $PING6; do
		if out=$(ping6 -c 2 -w 8 "$a" 2>&1); then
			ok "ping:$a" "$(echo "$out" | tail -n 1)"
		else
			fail "ping:$a" "$(echo "$out" | tr '\n' ';')"
		fi
	done
}

# The negotiated virtio feature bits (a string of 0/1, bit 0 first) and eth0's counters.
step_features() {
	for d in /sys/bus/virtio/devices/*; do
		[ -d "$d/net" ] && info virtio-features "$(cat "$d/features")"
	done
	s=/sys/class/net/eth0/statistics
	info eth0-stats "rx_bytes=$(cat $s/rx_bytes) rx_packets=$(cat $s/rx_packets) tx_bytes=$(cat $s/tx_bytes) tx_packets=$(cat $s/tx_packets)"
}

# A unicast renewal (RFC 2131 §4.3.2 RENEWING: REQUEST from the leased address, ciaddr
# set, to the server): a background udhcpc takes a lease, SIGUSR1 makes it renew.
# Seen with busybox 1.35 on ringnet: the unicast ACK comes back within microseconds and the
# kernel hands it to udhcpc's short-lived *sending* socket (bound to LEASE:68 and connected
# to the server, a better match than its 0.0.0.0:68 listener), which is closed unread; after
# -T 2 s udhcpc rebinds by broadcast and takes that ACK. So "renew" takes about 2 s and
# proves the broadcast REQUEST with ciaddr set (and the unicast ACK to it) works.
step_renew() {
	rm -f /tmp/events
	udhcpc -i eth0 -f -t 5 -T 2 -O mtu -s /tmp/udhcpc.sh >/tmp/udhcpc2.log 2>&1 &
	pid=$!
	n=0
	while ! grep -q bound /tmp/events 2>/dev/null && [ $n -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	kill -USR1 $pid
	n=0
	while ! grep -q renew /tmp/events 2>/dev/null && [ $n -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	kill $pid
	if grep -q renew /tmp/events 2>/dev/null; then
		ok renew "$(cat /tmp/lease)"
	else
		fail renew "no renewed lease within 10 s of SIGUSR1; events: $(tr '\n' ' ' </tmp/events 2>/dev/null); udhcpc: $(tr '\n' ' ' </tmp/udhcpc2.log)"
	fi
}

# Stay up (connected) until the test kills the VM.
step_hold() {
	info hold "waiting to be killed"
	sleep 600
}

for s in $STEPS; do
	"step_$s"
done
echo "RINGNET-VM done"
