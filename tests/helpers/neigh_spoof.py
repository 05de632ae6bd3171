#!/usr/bin/env python3
"""Inject spoofed neighbour frames on a guest interface (run inside the guest namespace, as
root: it opens a raw AF_PACKET socket). Every frame claims the guest's own address for a
foreign MAC, which is what poisoned the gateway's neighbour cache in issue #8 (point 3):

  arp-request  who-has GW4 tell GUEST4, sender hardware address FOREIGN (broadcast)
  arp-reply    GUEST4 is-at FOREIGN, to the gateway
  ndp-ns       NS for GW6 from GUEST6 with source link-layer address option FOREIGN
  ndp-na       NA (override flag) for GUEST6 from GUEST6, target link-layer option FOREIGN

Each kind is sent twice per round: once with Ethernet source FOREIGN, once with the guest's
real MAC as Ethernet source (only the ARP/NDP body lies). Rounds repeat every --interval
seconds for --seconds. Frames go straight out of the interface (to ringnet through the TAP);
the guest's own kernel never sees them.

Prints {"ok": true, "sent": {kind: count}, "rounds": N, "seconds": S} at the end.
"""
import argparse
import ipaddress
import socket
import struct
import time

import rnhelp

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


def mac(s):
    b = bytes(int(x, 16) for x in s.split(":"))
    assert len(b) == 6, s
    return b


def eth(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op, sha, spa, tha, tpa):
    # htype Ethernet, ptype IPv4, hlen 6, plen 4.
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmpv6(src, dst, msg):
    """IPv6 header (hop limit 255, as NDP requires) + ICMPv6 message with its checksum."""
    pseudo = src + dst + struct.pack("!I", len(msg)) + b"\0\0\0" + bytes([58])
    c = csum(pseudo + msg)
    msg = msg[:2] + struct.pack("!H", c) + msg[4:]
    hdr = struct.pack("!IHBB", 6 << 28, len(msg), 58, 255) + src + dst
    return hdr + msg


def solicited_node(addr):
    return ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + addr[13:]


def frames(a):
    foreign, guest, gw = mac(a.foreign_mac), mac(a.guest_mac), mac(a.gateway_mac)
    g4 = ipaddress.IPv4Address(a.guest4).packed
    gw4 = ipaddress.IPv4Address(a.gateway4).packed
    g6 = ipaddress.IPv6Address(a.guest6).packed
    gw6 = ipaddress.IPv6Address(a.gateway6).packed
    bcast = b"\xff" * 6
    out = []
    for src in (foreign, guest):
        out.append(("arp-request", eth(bcast, src, ETH_P_ARP, arp(1, foreign, g4, b"\0" * 6, gw4))))
        out.append(("arp-reply", eth(gw, src, ETH_P_ARP, arp(2, foreign, g4, gw, gw4))))
        # NS: type 135, reserved, target, option 1 (source link-layer address), 1 unit.
        sn = solicited_node(gw6)
        ns = struct.pack("!BBHI", 135, 0, 0, 0) + gw6 + bytes([1, 1]) + foreign
        out.append(("ndp-ns", eth(b"\x33\x33" + sn[12:], src, ETH_P_IPV6, icmpv6(g6, sn, ns))))
        # NA: type 136, flags O (override), target, option 2 (target link-layer address).
        na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + g6 + bytes([2, 1]) + foreign
        out.append(("ndp-na", eth(gw, src, ETH_P_IPV6, icmpv6(g6, gw6, na))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--guest-mac", required=True)
    ap.add_argument("--gateway-mac", required=True)
    ap.add_argument("--foreign-mac", default="02:de:ad:be:ef:01")
    ap.add_argument("--guest4", required=True)
    ap.add_argument("--gateway4", required=True)
    ap.add_argument("--guest6", required=True)
    ap.add_argument("--gateway6", required=True)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args()
    rnhelp.deadline(a.seconds + 10, "neigh_spoof")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    fs = frames(a)
    sent = {}
    rounds = 0
    t0 = rnhelp.now()
    while rnhelp.now() - t0 < a.seconds:
        for kind, f in fs:
            s.send(f)
            sent[kind] = sent.get(kind, 0) + 1
        rounds += 1
        time.sleep(a.interval)
    rnhelp.emit(ok=True, sent=sent, rounds=rounds, seconds=rnhelp.now() - t0)


if __name__ == "__main__":
    main()
