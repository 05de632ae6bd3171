#!/usr/bin/env python3
"""UDP echo server: every datagram goes back to its sender unchanged.
Prints {"ready": true, "port": P} once bound."""
import argparse
import socket

import rnhelp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "udp_echo_server")
    s = socket.socket(rnhelp.family(a.bind), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((a.bind, a.port))
    rnhelp.emit(ready=True, port=s.getsockname()[1], bind=a.bind)
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


if __name__ == "__main__":
    main()
