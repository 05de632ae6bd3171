#!/usr/bin/env python3
"""Host-side server for tests/tcp_lifecycle.rs: resets every connection it accepts
(SO_LINGER 0 close), after reading --after bytes (0: at once, before reading anything).
Single-threaded, on --bind (default 127.0.0.1).

Prints {"ready": true, "port": P}. Exits after --lifetime seconds.
"""
import argparse
import json
import socket
import struct
import time

ap = argparse.ArgumentParser()
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--after", type=int, default=0)
ap.add_argument("--lifetime", type=float, default=60)
args = ap.parse_args()

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((args.bind, 0))
srv.listen(1024)
srv.settimeout(0.2)
print(json.dumps({"ready": True, "port": srv.getsockname()[1]}), flush=True)

deadline = time.time() + args.lifetime
while time.time() < deadline:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    c.settimeout(5)
    try:
        left = args.after
        while left > 0:
            b = c.recv(left)
            if not b:
                break
            left -= len(b)
    except OSError:
        pass
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
