#!/usr/bin/env python3
"""Guest side of tests/faults.rs (talks to tcp_server.py). Prints one JSON result line.

  stuck  --op stall|slow --conns K --seconds S
         K connections asking the server to stall (never read) or read 1 byte/s for S + 3
         seconds (then it closes, resetting: data unread); each
         writes non-blocking for S seconds: how many bytes each could hand over before its
         sender blocked, and how many made progress in the last 2 s. Then all are closed.
  resets --conns K --bytes N
         K concurrent downloads the server resets after N bytes: how each ended ("reset"
         is right; "eof" would be a reset turned into a clean close) and bytes received.
"""
import argparse
import json
import socket
import threading
import time

import rnhelp
from tcp_client import classify


def stuck(a):
    conns = []
    for _ in range(a.conns):
        s = socket.create_connection((a.target, a.port), timeout=10)
        s.sendall((json.dumps({"op": a.op, "seconds": a.seconds + 3}) + "\n").encode())
        s.setblocking(False)
        conns.append(s)
    sent = [0] * len(conns)
    last = [0.0] * len(conns)
    chunk = b"s" * 65536
    t0 = rnhelp.now()
    while rnhelp.now() - t0 < a.seconds:
        for i, s in enumerate(conns):
            try:
                n = s.send(chunk)
                if n:
                    sent[i] += n
                    last[i] = rnhelp.now() - t0
            except BlockingIOError:
                pass
        time.sleep(0.01)
    moving = sum(1 for x in last if x > a.seconds - 2)
    for s in conns:
        s.close()
    rnhelp.emit(ok=True, op=a.op, conns=len(conns), max_sent=max(sent), min_sent=min(sent),
                total_sent=sum(sent), moving_last_2s=moving)


def resets(a):
    out = [None] * a.conns

    def one(i):
        got = 0
        try:
            s = socket.create_connection((a.target, a.port), timeout=10)
            s.settimeout(20)
            s.sendall((json.dumps({"op": "reset-after", "bytes": a.bytes}) + "\n").encode())
            while True:
                b = s.recv(65536)
                if not b:
                    out[i] = ("eof", got)
                    break
                got += len(b)
            s.close()
        except Exception as e:
            out[i] = (classify(e), got)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(a.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    how = {}
    for h, _ in out:
        how[h] = how.get(h, 0) + 1
    rnhelp.emit(ok=how.get("reset") == a.conns, ended=how,
                max_received=max(g for _, g in out), min_received=min(g for _, g in out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["stuck", "resets"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--op", choices=["stall", "slow"], default="stall")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=90)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "fault_client")
    {"stuck": stuck, "resets": resets}[a.cmd](a)


if __name__ == "__main__":
    main()
