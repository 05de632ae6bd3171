#!/usr/bin/env python3
"""Host-side server for tests/tcp_lifecycle.rs: accepts any number of connections on
--bind (default 127.0.0.1), holds each one open, reads and discards what arrives, and
counts how connections end. Single-threaded (epoll via selectors), so 10,000 connections
cost one fd each.

Prints {"ready": true, "port": P} first, then a status line whenever the counts changed
(at most every 0.2 s): {"open": N, "accepted": A, "eof": E, "reset": R}.
Exits after --lifetime seconds.
"""
import argparse
import json
import resource
import selectors
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--lifetime", type=float, default=60)
ap.add_argument("--half-open", action="store_true")
args = ap.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((args.bind, 0))
srv.listen(4096)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ, None)
print(json.dumps({"ready": True, "port": srv.getsockname()[1]}), flush=True)

counts = {"open": 0, "accepted": 0, "eof": 0, "reset": 0}
half_open = []  # sockets whose peer sent FIN, watched for the end


def tcp_state(c):
    try:
        return c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return 7


TCP_CLOSE = 7
last = None
last_print = 0.0
deadline = time.time() + args.lifetime
while time.time() < deadline:
    for key, _ in sel.select(timeout=0.1):
        if key.data is None:
            while True:
                try:
                    c, _ = srv.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
                counts["open"] += 1
                counts["accepted"] += 1
            continue
        c = key.fileobj
        how = None
        try:
            if not c.recv(65536):
                how = "eof"
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            how = "reset"
        if how == "eof" and args.half_open:
            sel.unregister(c)
            half_open.append(c)
            counts["eof"] += 1
        elif how:
            sel.unregister(c)
            c.close()
            counts["open"] -= 1
            counts[how] += 1
    for c in [c for c in half_open if tcp_state(c) == TCP_CLOSE]:
        half_open.remove(c)
        c.close()
        counts["open"] -= 1
        counts["reset"] += 1
    now = time.time()
    if counts != last and now - last_print >= 0.2:
        print(json.dumps(counts), flush=True)
        last = dict(counts)
        last_print = now
