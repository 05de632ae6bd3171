#!/usr/bin/env python3
"""UDP echo server: every datagram goes back to its sender unchanged.
Prints {"ready": true, "port": P} once bound."""
import socket

import rnhelp


def main():
    s = rnhelp.server("udp_echo_server", socket.SOCK_DGRAM, 600, (socket.SO_RCVBUF, 4 << 20))
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


if __name__ == "__main__":
    main()
