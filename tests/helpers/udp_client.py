#!/usr/bin/env python3
"""UDP echo client: --count datagrams, sizes spread evenly from 1 to --max-size bytes, each
with its own content, sent one at a time (resent up to 3 times after 1 s without reply).
Every reply must equal the datagram and come from --target:--port.
Prints {"ok", "sent", "replied", "bad", "wrong_source", "resends", "max_size"}."""
import argparse
import socket
import struct

import rnhelp


def payload(i, size):
    head = struct.pack("<I", i)
    body = bytes((i * 31 + j) & 0xFF for j in range(min(size, 256)))
    data = (head + body * (size // max(1, len(body)) + 1))[:size]
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--max-size", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "udp_client")
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(1.0)
    replied = bad = wrong = resends = 0
    problems = []
    for i in range(a.count):
        size = 1 if a.count == 1 else 1 + (i * (a.max_size - 1)) // (a.count - 1)
        data = payload(i, size)
        got = False
        for attempt in range(4):
            if attempt:
                resends += 1
            s.sendto(data, (a.target, a.port))
            try:
                while True:
                    back, peer = s.recvfrom(65536)
                    if not (rnhelp.same_host(peer[0], a.target) and peer[1] == a.port):
                        wrong += 1
                        problems.append("reply from %r" % (peer,))
                        continue
                    if back == data:
                        got = True
                        break
                    # a late reply to an earlier resent datagram is not an error
                    if len(back) >= 4 and struct.unpack("<I", back[:4])[0] < i:
                        continue
                    bad += 1
                    problems.append("datagram %d: %d bytes back, want %d" % (i, len(back), size))
                    break
            except socket.timeout:
                continue
            if got:
                break
        if got:
            replied += 1
        elif len(problems) < 20:
            problems.append("datagram %d (%d bytes): no reply" % (i, size))
    ok = replied == a.count and bad == 0 and wrong == 0
    rnhelp.emit(ok=ok, sent=a.count, replied=replied, bad=bad, wrong_source=wrong,
                resends=resends, max_size=a.max_size, problems=problems[:5])


if __name__ == "__main__":
    main()
