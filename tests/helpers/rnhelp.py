"""Shared bits of ringnet's test helpers (imported by the sibling scripts).

Every helper bounds its own run time (SIGALRM), prints exactly one JSON line as its result
(servers: one "ready" line when listening) and exits 0 when it ran, whatever the verdict in
the JSON; exit 3 means the helper itself timed out, 4 an unexpected exception.
"""
import argparse
import hashlib
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import sys
import time

BLOCK = 1 << 20


def emit(**fields):
    """Print the one-line JSON result."""
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def deadline(seconds, what):
    """Exit with a JSON error line after `seconds`."""

    def fire(_sig, _frame):
        emit(ok=False, error="helper timeout", timeout_s=seconds, what=what)
        os._exit(3)

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(max(1, int(seconds)))


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def server(what, kind, timeout, sockopt):
    """The start of a server helper: parse --bind/--port/--timeout (default `timeout`), arm
    the deadline, bind a socket of `kind` with the SOL_SOCKET option `sockopt` (name, value)
    set (a SOCK_STREAM one also listens) and print the ready line; returns the socket."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=timeout)
    a = ap.parse_args()
    deadline(a.timeout, what)
    s = socket.socket(family(a.bind), kind)
    s.setsockopt(socket.SOL_SOCKET, *sockopt)
    s.bind((a.bind, a.port))
    if kind == socket.SOCK_STREAM:
        s.listen(4096)
    emit(ready=True, port=s.getsockname()[1], bind=a.bind)
    return s


def same_host(a, b):
    return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])


def stream(total, seed):
    """Deterministic, non-periodic data: 1 MiB blocks of a seeded random block, each rotated
    by a different offset and stamped with its index."""
    rnd = random.Random(seed)
    block = rnd.randbytes(BLOCK)
    i = 0
    sent = 0
    while sent < total:
        k = (i * 7919) % BLOCK
        chunk = struct.pack("<Q", i) + block[k + 8 :] + block[: k]
        n = min(len(chunk), total - sent)
        yield chunk[:n] if n < len(chunk) else chunk
        sent += n
        i += 1


def recv_line(sock, limit=65536):
    """Read one '\n'-terminated line byte by byte-ish (small, used for headers)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            break
        buf += b
        if len(buf) > limit:
            raise ValueError("line too long")
    return bytes(buf)


def recv_exact(sock, n, h=None, bufsize=BLOCK):
    """Receive n bytes (fewer on EOF), hashing into h; returns the count."""
    buf = bytearray(min(bufsize, max(n, 1)))
    view = memoryview(buf)
    got = 0
    while got < n:
        want = min(len(buf), n - got)
        r = sock.recv_into(view[:want], want)
        if r == 0:
            break
        if h is not None:
            h.update(view[:r])
        got += r
    return got


def recv_all(sock, h=None, keep=False, bufsize=BLOCK):
    """Receive until EOF; returns (count, bytes or None)."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    got = 0
    kept = bytearray() if keep else None
    while True:
        r = sock.recv_into(view)
        if r == 0:
            return got, (bytes(kept) if keep else None)
        if h is not None:
            h.update(view[:r])
        if keep:
            kept += view[:r]
        got += r


def sha256():
    return hashlib.sha256()


def now():
    return time.monotonic()
