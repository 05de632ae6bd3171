#!/usr/bin/env python3
"""A careless upstream DNS server (UDP, host namespace): answers every query with eight
200-byte TXT records (~1.7 KB), whatever size the query's EDNS record (or its absence)
allows, and never sets TC. ringnet must truncate such an answer for a UDP guest itself.
Prints {"ready": true, "port": P} once bound; each answer's size goes to stderr."""
import socket
import struct

import rnhelp

RECORDS = 8
LEN = 200


def question_end(msg):
    """Offset just past the first question (name labels, type, class)."""
    i = 12
    while msg[i] != 0:
        i += 1 + msg[i]
    return i + 1 + 4


def answer(query):
    qid = struct.unpack(">H", query[:2])[0]
    q = query[12:question_end(query)]
    out = struct.pack(">HHHHHH", qid, 0x8180, 1, RECORDS, 0, 0) + q
    for n in range(RECORDS):
        text = (str(n) + "x" * LEN)[:LEN].encode()
        rdata = bytes([len(text)]) + text
        # name: pointer to the question's name (offset 12); TXT IN, TTL 60
        out += struct.pack(">HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata
    return out


def main():
    s = rnhelp.server("dns_big_server", socket.SOCK_DGRAM, 600, (socket.SO_REUSEADDR, 1))
    while True:
        data, peer = s.recvfrom(65536)
        try:
            reply = answer(data)
        except (IndexError, struct.error):
            continue
        s.sendto(reply, peer)
        rnhelp.log("answered %d bytes to %r" % (len(reply), peer))


if __name__ == "__main__":
    main()
