#!/usr/bin/env python3
"""Guest side of tests/soak.rs: mixed traffic through the gateway for --seconds, one thread
per kind, then one JSON result line with per-kind counts and errors.

  bulk   (--bulk-threads) uploads and downloads of --bulk-bytes in turn against
         tcp_server.py (ops upload / download), sha256 of every flow compared at both ends,
         --bulk-pause seconds between a thread's flows (CPU: CI has two cores)
  rr     one connection (op echo): 64-byte request, 64-byte reply, in a loop
  crr    connect, echo 256 bytes, close, in a loop
  udp    200-byte datagrams to udp_echo_server.py, each waited for (1 s)
  dns    A queries for n<i>.soak.test to the gateway's resolver (raw UDP)
  churn  short-lived flows: a datagram to a new port each time (ports nobody listens on:
         a new UDP flow that expires) and a TCP connect to a closed port (refused)

"ok" is true when no bulk flow lost, duplicated or corrupted a byte (sha256 and count
equal), and rr, crr and churn saw no unexpected error; lost datagrams and unanswered
queries are counted, not failures (UDP may drop under load).
"""
import argparse
import json
import os
import random
import socket
import struct
import threading
import time

import rnhelp

stop = threading.Event()
lock = threading.Lock()
R = {}


def add(kind, key, n=1):
    with lock:
        d = R.setdefault(kind, {})
        d[key] = d.get(key, 0) + n


def err(kind, e):
    add(kind, "errors")
    with lock:
        d = R.setdefault(kind, {})
        if len(d.setdefault("first_errors", [])) < 3:
            d["first_errors"].append("%s: %s" % (type(e).__name__, e))


def request(s, **req):
    s.sendall((json.dumps(req) + "\n").encode())


def bulk(a, idx):
    i = 0
    while not stop.is_set():
        up = i % 2 == 0
        seed = idx * 100000 + i
        try:
            s = socket.create_connection((a.target, a.tcp_port), timeout=10)
            s.settimeout(30)
            h = rnhelp.sha256()
            if up:
                request(s, op="upload", bytes=a.bulk_bytes)
                n = 0
                for chunk in rnhelp.stream(a.bulk_bytes, seed):
                    h.update(chunk)
                    s.sendall(chunk)
                    n += len(chunk)
            else:
                request(s, op="download", bytes=a.bulk_bytes, seed=seed)
                n = rnhelp.recv_exact(s, a.bulk_bytes, h)
            remote = json.loads(rnhelp.recv_line(s) or b"{}")
            s.close()
            if n == a.bulk_bytes and remote.get("bytes") == n and remote.get("sha256") == h.hexdigest():
                add("bulk", "flows")
                add("bulk", "bytes", n)
            else:
                add("bulk", "mismatch")
        except Exception as e:
            err("bulk", e)
        i += 1
        stop.wait(a.bulk_pause)


def rr(a):
    while not stop.is_set():
        try:
            s = socket.create_connection((a.target, a.tcp_port), timeout=10)
            s.settimeout(10)
            request(s, op="echo")
            while not stop.is_set():
                m = os.urandom(64)
                s.sendall(m)
                back = b""
                while len(back) < 64:
                    c = s.recv(64 - len(back))
                    if not c:
                        raise ConnectionError("eof")
                    back += c
                if back != m:
                    raise ValueError("rr mismatch")
                add("rr", "rounds")
                time.sleep(0.002)
            s.close()
        except Exception as e:
            err("rr", e)
            time.sleep(0.1)


def crr(a):
    while not stop.is_set():
        try:
            s = socket.create_connection((a.target, a.tcp_port), timeout=10)
            s.settimeout(10)
            request(s, op="echo")
            m = os.urandom(256)
            s.sendall(m)
            s.shutdown(socket.SHUT_WR)
            _, back = rnhelp.recv_all(s, keep=True)
            s.close()
            if back != m:
                raise ValueError("crr mismatch")
            add("crr", "flows")
        except Exception as e:
            err("crr", e)
        time.sleep(0.01)


def udp(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1)
    while not stop.is_set():
        m = os.urandom(200)
        u.sendto(m, (a.target, a.udp_port))
        add("udp", "sent")
        try:
            while True:
                back, _ = u.recvfrom(2048)
                if back == m:
                    add("udp", "echoed")
                    break
        except socket.timeout:
            add("udp", "lost")
        time.sleep(0.005)


def dns(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    i = 0
    while not stop.is_set():
        qid = i & 0xFFFF
        name = b"".join(bytes([len(l)]) + l for l in [b"n%d" % i, b"soak", b"test"]) + b"\0"
        q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
        u.sendto(q, (a.target, 53))
        add("dns", "queries")
        try:
            while True:
                r, _ = u.recvfrom(4096)
                if struct.unpack("!H", r[:2])[0] == qid:
                    add("dns", "answered" if r[3] & 0xF == 0 else "rcode_not_noerror")
                    break
        except socket.timeout:
            add("dns", "unanswered")
        i += 1
        time.sleep(0.02)


def churn(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    i = 0
    while not stop.is_set():
        u.sendto(b"churn", (a.target, 20000 + i % 20000))
        add("churn", "udp_flows")
        if i % 4 == 0:
            try:
                socket.create_connection((a.target, 9), timeout=5).close()
                add("churn", "tcp_connected?!")
            except ConnectionRefusedError:
                add("churn", "tcp_refused")
            except Exception as e:
                err("churn", e)
        i += 1
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--tcp-port", type=int, required=True)
    ap.add_argument("--udp-port", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--bulk-threads", type=int, default=2)
    ap.add_argument("--bulk-bytes", type=int, default=16 << 20)
    ap.add_argument("--bulk-pause", type=float, default=0.5, help="between a thread's flows")
    a = ap.parse_args()
    rnhelp.deadline(a.seconds + 60, "soak_client")
    random.seed(1)
    ts = [threading.Thread(target=bulk, args=(a, i), daemon=True) for i in range(a.bulk_threads)]
    ts += [threading.Thread(target=f, args=(a,), daemon=True) for f in (rr, crr, udp, dns, churn)]
    t0 = rnhelp.now()
    for t in ts:
        t.start()
    time.sleep(a.seconds)
    stop.set()
    for t in ts:
        t.join(40)
    with lock:
        res = json.loads(json.dumps(R))
    b = res.get("bulk", {})
    ok = (b.get("flows", 0) > 0 and not b.get("mismatch") and not b.get("errors")
          and not res.get("rr", {}).get("errors") and not res.get("crr", {}).get("errors")
          and not res.get("churn", {}).get("errors") and not res.get("churn", {}).get("tcp_connected?!"))
    rnhelp.emit(ok=ok, seconds=rnhelp.now() - t0, **res)


if __name__ == "__main__":
    main()
