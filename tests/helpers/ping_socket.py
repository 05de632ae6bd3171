#!/usr/bin/env python3
"""Echo through an unprivileged ping socket (SOCK_DGRAM + IPPROTO_ICMP/ICMPV6), the kind
ringnet's echo relay uses; works only where net.ipv4.ping_group_range admits our group.
Prints {"ok", "rtt_ms"} or {"ok": false, "error"}."""
import argparse
import socket
import struct

import rnhelp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "ping_socket")
    v6 = ":" in a.target
    fam, proto, typ = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP, 8)
    )
    try:
        s = socket.socket(fam, socket.SOCK_DGRAM, proto)
        s.settimeout(2)
        payload = b"ringnet-test"
        t0 = rnhelp.now()
        s.sendto(struct.pack("!BBHHH", typ, 0, 0, 0, 1) + payload, (a.target, 0))
        data, _ = s.recvfrom(2048)
        ok = data[8:] == payload
        rnhelp.emit(ok=ok, rtt_ms=(rnhelp.now() - t0) * 1e3, type=data[0])
    except Exception as e:
        rnhelp.emit(ok=False, error=type(e).__name__, detail=str(e))


if __name__ == "__main__":
    main()
