#!/usr/bin/env python3
"""Guest side of the fd-exhaustion test: more flows than ringnet has file descriptors for,
then proof that ringnet still works once they are gone. Prints one JSON result line.

The guest inherits ringnet's hard RLIMIT_NOFILE (and may not raise it), so it makes most
of ringnet's host sockets with few descriptors of its own: UDP flows are keyed by
(source, destination), so one guest socket sending to many ports opens many flows.

  1. --hold TCP connections to --target:--tcp-port, each asking the server to hold it
     (tcp_server.py op "hold"), kept open.
  2. From one UDP socket, one datagram to each of --udp-flows ports: --udp-port (the echo
     server) and the ports after it (nobody listens; ringnet still opens a host socket per
     flow). Counts the echo seen within 2 s.
  3. --extra more TCP connections while all that is open; counts how they failed.
  4. Closes everything, waits --settle seconds (ringnet's UDP idle timeout), then (retrying
     for up to 10 s) one TCP connection must echo 1 KiB and one UDP flow must echo a
     datagram.
"""
import argparse
import json
import os
import socket
import time

import rnhelp
from tcp_client import classify


def hold(a):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect((a.target, a.tcp_port))
        s.sendall(b'{"op": "hold"}\n')
        line = rnhelp.recv_line(s)
        if json.loads(line or b"{}").get("ok") is not True:
            s.close()
            return None, "closed"
        return s, None
    except Exception as e:
        s.close()
        return None, classify(e)


def open_many(a, n):
    held, failures = [], {}
    for _ in range(n):
        s, err = hold(a)
        if s:
            held.append(s)
        else:
            failures[err] = failures.get(err, 0) + 1
    return held, failures


def udp_flows(a, n):
    """One datagram to each of n ports from one socket; True if the echo port answered."""
    u = socket.socket(rnhelp.family(a.target), socket.SOCK_DGRAM)
    u.settimeout(2)
    try:
        for i in range(n):
            u.sendto(b"flow %d" % i, (a.target, a.udp_port + i))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                _, peer = u.recvfrom(100)
            except (socket.timeout, ConnectionRefusedError):
                continue
            if peer[1] == a.udp_port:
                return True
        return False
    finally:
        u.close()


def echo_once(a):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((a.target, a.tcp_port))
        s.sendall(b'{"op": "echo"}\n')
        data = os.urandom(1024)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        _, back = rnhelp.recv_all(s, keep=True)
        return "ok" if back == data else "mismatch"
    except Exception as e:
        return classify(e)
    finally:
        s.close()


def retry(f):
    end = time.monotonic() + 10
    tries = []
    while True:
        r = f()
        tries.append(r)
        if r == "ok" or time.monotonic() > end:
            return r, tries[-5:]
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--tcp-port", type=int, required=True)
    ap.add_argument("--udp-port", type=int, required=True)
    ap.add_argument("--hold", type=int, required=True)
    ap.add_argument("--udp-flows", type=int, required=True)
    ap.add_argument("--extra", type=int, required=True)
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--timeout", type=float, default=100)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "fd_exhaust")

    held, hold_failures = open_many(a, a.hold)
    udp_echoed = udp_flows(a, a.udp_flows)
    extra, extra_failures = open_many(a, a.extra)
    for s in held + extra:
        s.close()
    time.sleep(a.settle)

    final_tcp, tcp_tries = retry(lambda: echo_once(a))
    final_udp, udp_tries = retry(lambda: "ok" if udp_flows(a, 1) else "no echo")
    rnhelp.emit(ok=final_tcp == "ok" and final_udp == "ok", held=len(held),
                hold_failures=hold_failures, udp_echoed=udp_echoed, extra_held=len(extra),
                extra_failures=extra_failures, final_tcp=final_tcp,
                final_tcp_tries=tcp_tries, final_udp=final_udp, final_udp_tries=udp_tries)


if __name__ == "__main__":
    main()
