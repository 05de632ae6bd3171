#!/usr/bin/env python3
"""Raw DNS over UDP (runs in the guest): one hand-built query that dig cannot send, one
answer read back. Prints {"ok", "rcode", "rcode_name", "id_match", "qr", "qdcount",
"ancount", "bytes", "seconds"}; "ok" is true when an answer with this query's ID came back
(the rcode is the test's verdict), false with "error" on timeout.

  --questions N   questions in the query (0, 1, 2, ...), each "qN.test IN A"
"""
import argparse
import random
import socket
import struct

import rnhelp

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def qname(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--wait", type=float, default=5, help="seconds to wait for the answer")
    ap.add_argument("--timeout", type=float, default=30, help="whole-run limit")
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "dns_raw")
    qid = random.randrange(1, 0xFFFF)
    # ID, flags RD, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (RFC 1035 §4.1.1)
    msg = struct.pack(">HHHHHH", qid, 0x0100, a.questions, 0, 0, 0)
    for i in range(a.questions):
        msg += qname("q%d.test" % i) + struct.pack(">HH", 1, 1)
    s = socket.socket(rnhelp.family(a.server), socket.SOCK_DGRAM)
    s.settimeout(a.wait)
    t0 = rnhelp.now()
    s.sendto(msg, (a.server, a.port))
    try:
        while True:
            data, _ = s.recvfrom(65536)
            if len(data) >= 12:
                break
    except (socket.timeout, TimeoutError):
        rnhelp.emit(ok=False, error="timeout", seconds=rnhelp.now() - t0)
        return
    except OSError as e:
        rnhelp.emit(ok=False, error="oserror", detail=str(e), seconds=rnhelp.now() - t0)
        return
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    rcode = flags & 0xF
    rnhelp.emit(ok=rid == qid, rcode=rcode, rcode_name=RCODES.get(rcode, str(rcode)),
                id_match=rid == qid, qr=bool(flags & 0x8000), qdcount=qd, ancount=an,
                bytes=len(data), seconds=rnhelp.now() - t0)


if __name__ == "__main__":
    main()
