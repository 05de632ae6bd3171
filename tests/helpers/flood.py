#!/usr/bin/env python3
"""Guest-side flooder for tests/floods.rs and perf/floods.sh: raw frames written straight
out of the guest's interface (AF_PACKET, PACKET_QDISC_BYPASS: no qdisc, so a frame the TAP
cannot queue is counted in the interface's tx_dropped, never silently lost in a qdisc).
Run inside the guest namespace as root. Every frame is addressed to the gateway's MAC; all
IP destinations are the gateway or documentation addresses (198.51.100.0/24 and
2001:db8::/32) that the test's host namespace routes into its `ifb` sink.

Kinds (frame i of the flood, alternating IPv4 / IPv6 where both exist):
  syn        TCP SYNs, every one to a distinct (address, port): 198.51.100.X (X in 1..=255
             but 7, the sink's own address) and 2001:db8:0:1::X, ports 1, 2, ... per address
  syn_refused  TCP SYNs to the sink's own addresses (198.51.100.7, 2001:db8::7), where
             nothing listens: every host connect is refused at once (RST), so no flow stays
             pending; distinct (source port, port) pairs, ports 1..=65535 cycling
  udp        one datagram per destination, cycling over --destinations distinct ones
             (198.51.100.X and 2001:db8:0:2::X, ports 10000.. per address), all from one
             source port: one flow per destination
  malformed  frames ringnet's classifier must reject: IPv4 header cut short, IPv4 IHL < 5,
             IPv4 total length beyond the frame, IPv6 payload length beyond the frame, TCP
             data offset < 5, UDP length beyond the IP payload
  neigh      ARP requests for non-gateway addresses, NDP NS for non-gateway targets, and
             spoofed ARP replies / NDP NAs claiming the guest's address for a foreign MAC
  dns        A queries for q<i>.flood.test to the gateway's port 53 (v4 and v6), distinct
             ids and source ports

Prints {"ready": true} once the socket is open, then tries to send --count frames, and
keeps going (new frames, continuing the sequence) until --min-seconds have passed too and,
with --until-signal, SIGUSR1 came. A send the TAP's full queue refuses fails (ENOBUFS) and
the kernel counts it in the interface's tx_dropped; it is not retried. Result line:
{"ok", "attempts", "sent", "send_errors", "seconds", "fps", "tx_dropped", "tx_packets"},
"ok" being false only if a send failed otherwise; tx_dropped and tx_packets are the
interface's counter deltas over the run (they include any other traffic of the guest).
"""
import argparse
import errno
import ipaddress
import signal
import socket
import struct

import rnhelp

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
HOSTS = [x for x in range(1, 256) if x != 7][:250]
FOREIGN = bytes.fromhex("02deadbeef01")


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class Builder:
    def __init__(self, a):
        self.gw = mac(a.gateway_mac)
        self.me = mac(open("/sys/class/net/%s/address" % a.iface).read().strip())
        self.g4 = ipaddress.IPv4Address(a.guest4).packed
        self.gw4 = ipaddress.IPv4Address(a.gateway4).packed
        self.g6 = ipaddress.IPv6Address(a.guest6).packed
        self.gw6 = ipaddress.IPv6Address(a.gateway6).packed
        self.destinations = a.destinations

    def eth(self, ethertype, payload, dst=None, src=None):
        return (dst or self.gw) + (src or self.me) + struct.pack("!H", ethertype) + payload

    def ip4(self, dst, proto, l4, src=None, total=None):
        src = src or self.g4
        n = total if total is not None else 20 + len(l4)
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, n, 0, 0x4000, 64, proto, 0, src, dst)
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        return self.eth(ETH_P_IP, h + l4)

    def ip6(self, dst, nh, l4, src=None, plen=None, hops=64, edst=None):
        src = src or self.g6
        n = plen if plen is not None else len(l4)
        h = struct.pack("!IHBB", 6 << 28, n, nh, hops) + src + dst
        return self.eth(ETH_P_IPV6, h + l4, dst=edst)

    @staticmethod
    def l4sum(src, dst, proto, seg):
        if len(src) == 4:
            pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
        else:
            pseudo = src + dst + struct.pack("!I", len(seg)) + b"\0\0\0" + bytes([proto])
        return csum(pseudo + seg)

    def tcp(self, v6, dst, sport, dport, seq, off=5):
        seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, off << 4, 0x02, 64240, 0, 0)
        src = self.g6 if v6 else self.g4
        c = self.l4sum(src, dst, 6, seg)
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
        return self.ip6(dst, 6, seg) if v6 else self.ip4(dst, 6, seg)

    def udp(self, v6, dst, sport, dport, payload, ulen=None):
        n = ulen if ulen is not None else 8 + len(payload)
        seg = struct.pack("!HHHH", sport, dport, n, 0) + payload
        src = self.g6 if v6 else self.g4
        c = self.l4sum(src, dst, 17, seg) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", c) + seg[8:]
        return self.ip6(dst, 17, seg) if v6 else self.ip4(dst, 17, seg)

    @staticmethod
    def v6(sub, x):
        return ipaddress.IPv6Address("2001:db8:0:%x::%x" % (sub, x)).packed

    # --- the kinds ---

    def syn(self, i):
        v6, j = i % 2 == 1, i // 2
        host, port = HOSTS[j % 250], 1 + (j // 250) % 65535
        dst = self.v6(1, host) if v6 else bytes([198, 51, 100, host])
        return self.tcp(v6, dst, 1024 + j % 60000, port, (j * 2654435761) & 0xFFFFFFFF)

    def syn_refused(self, i):
        v6, j = i % 2 == 1, i // 2
        dst = ipaddress.IPv6Address("2001:db8::7").packed if v6 else bytes([198, 51, 100, 7])
        port = 1 + j % 65535
        return self.tcp(v6, dst, 1024 + j % 60000, port, (j * 2654435761) & 0xFFFFFFFF)

    def udp_flood(self, i):
        d = i % self.destinations
        v6, k = d % 2 == 1, d // 2
        host, port = HOSTS[k % 250], 10000 + k // 250
        dst = self.v6(2, host) if v6 else bytes([198, 51, 100, host])
        return self.udp(v6, dst, 40000, port, b"flood %08d" % i)

    def malformed(self, i):
        kind = i % 6
        dst4 = bytes([198, 51, 100, HOSTS[i % 250]])
        if kind == 0:  # IPv4 header cut short
            return self.ip4(dst4, 17, b"")[: 14 + 12]
        if kind == 1:  # IHL 4
            f = bytearray(self.ip4(dst4, 17, b"\0" * 16))
            f[14] = 0x44
            return bytes(f)
        if kind == 2:  # total length beyond the frame
            return self.ip4(dst4, 17, b"\0" * 16, total=1400)
        if kind == 3:  # IPv6 payload length beyond the frame
            return self.ip6(self.v6(3, HOSTS[i % 250]), 17, b"\0" * 16, plen=1200)
        if kind == 4:  # TCP data offset 3
            return self.tcp(False, dst4, 1000 + i % 50000, 80, i, off=3)
        # UDP length beyond the IP payload
        return self.udp(False, dst4, 1000 + i % 50000, 53, b"x" * 8, ulen=900)

    def neigh(self, i):
        kind, x = i % 4, 3 + (i // 4) % 250
        if kind == 0:  # who-has a non-gateway address, from the guest itself
            tpa = bytes([172, 16, (i // 4) % 256, x])
            body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + self.me + self.g4 + b"\0" * 6 + tpa
            return self.eth(ETH_P_ARP, body, dst=b"\xff" * 6)
        if kind == 1:  # NS for a non-gateway target
            target = bytearray(self.gw6)
            target[-2:] = struct.pack("!H", 0x1000 + x)
            target = bytes(target)
            sn = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + target[13:]
            msg = struct.pack("!BBHI", 135, 0, 0, 0) + target + bytes([1, 1]) + self.me
            return self.icmp6(sn, msg, edst=b"\x33\x33" + sn[12:])
        if kind == 2:  # ARP reply: the guest's address is at a foreign MAC
            body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + FOREIGN + self.g4 + self.gw + self.gw4
            return self.eth(ETH_P_ARP, body)
        # NA (override): the guest's address at a foreign MAC
        msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + self.g6 + bytes([2, 1]) + FOREIGN
        return self.icmp6(self.gw6, msg)

    def icmp6(self, dst, msg, edst=None):
        c = self.l4sum(self.g6, dst, 58, msg)
        msg = msg[:2] + struct.pack("!H", c) + msg[4:]
        return self.ip6(dst, 58, msg, hops=255, edst=edst)

    def dns(self, i):
        v6 = i % 2 == 1
        labels = [b"q%d" % i, b"flood", b"test"]
        name = b"".join(bytes([len(l)]) + l for l in labels) + b"\0"
        q = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
        dst = self.gw6 if v6 else self.gw4
        return self.udp(v6, dst, 20000 + (i // 2) % 40000, 53, q)


def counters(iface):
    d = "/sys/class/net/%s/statistics/" % iface
    return [int(open(d + n).read()) for n in ("tx_dropped", "tx_packets")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--kind", required=True, choices=["syn", "syn_refused", "udp", "malformed", "neigh", "dns"])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--until-signal", action="store_true")
    ap.add_argument("--min-seconds", type=float, default=0)
    ap.add_argument("--destinations", type=int, default=10000)
    ap.add_argument("--gateway-mac", required=True)
    ap.add_argument("--guest4", required=True)
    ap.add_argument("--gateway4", required=True)
    ap.add_argument("--guest6", required=True)
    ap.add_argument("--gateway6", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "flood")
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    b = Builder(a)
    make = {"syn": b.syn, "syn_refused": b.syn_refused, "udp": b.udp_flood,
            "malformed": b.malformed, "neigh": b.neigh, "dns": b.dns}[a.kind]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    s.bind((a.iface, 0))
    before = counters(a.iface)
    rnhelp.emit(ready=True)
    t0 = rnhelp.now()
    sent = errors = other = i = 0
    send = s.send
    end = t0 + a.min_seconds

    def more():
        if i < a.count or (a.until_signal and not stop):
            return True
        return rnhelp.now() < end

    while more():
        try:
            send(make(i))
            sent += 1
        except OSError as e:
            errors += 1
            if e.errno != errno.ENOBUFS:
                other += 1
        i += 1
    secs = rnhelp.now() - t0
    after = counters(a.iface)
    rnhelp.emit(ok=other == 0, kind=a.kind, attempts=i, sent=sent, send_errors=errors,
                other_errors=other, seconds=secs, fps=i / secs if secs else 0,
                tx_dropped=after[0] - before[0], tx_packets=after[1] - before[1])


if __name__ == "__main__":
    main()
