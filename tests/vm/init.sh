#!/bin/sh
# /init of the VM kit's initramfs (tests/common/vmkit.rs builds it; busybox sh runs it).
# Loads the virtio-net modules, brings up lo and eth0, runs the test's /test.sh (appended to
# the initramfs by the test) and powers off. Every line meant for the test starts with
# "RINGNET-VM " on the serial console: "RINGNET-VM boot", "RINGNET-VM ok|fail|info NAME …"
# from the script, and "RINGNET-VM end STATUS" last.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
for m in $(cat /etc/modules); do
	insmod "/lib/modules/$m.ko" || echo "RINGNET-VM fail insmod $m"
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do
	sleep 0.1
	n=$((n + 1))
done
ip link set eth0 up || echo "RINGNET-VM fail eth0 no eth0 after loading virtio_net"
echo "RINGNET-VM boot $(uname -r)"
if [ -f /test.sh ]; then
	sh /test.sh
	echo "RINGNET-VM end $?"
else
	echo "RINGNET-VM end no-test-script"
fi
poweroff -f
