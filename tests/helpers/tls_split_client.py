#!/usr/bin/env python3
"""TLS client (runs in the guest) that sends one HTTP/1.1 request in two TLS records, cut
at a given byte offset (so a placeholder can be split across records), then reads the
response until the server closes or 10 s pass. Prints one JSON line:
{"ok": bool, "records": 2, "response": "...", "error": "..."}.

  tls_split_client.py --connect IP --port P --sni NAME --cafile F --request TEXT --cut N
"""
import argparse
import json
import socket
import ssl
import time

p = argparse.ArgumentParser()
p.add_argument("--connect", required=True)
p.add_argument("--port", type=int, default=443)
p.add_argument("--sni", required=True)
p.add_argument("--cafile", required=True)
p.add_argument("--request", required=True)
p.add_argument("--cut", type=int, required=True)
a = p.parse_args()

req = a.request.encode().decode("unicode_escape").encode()
out = {"ok": False, "records": 2}
try:
    ctx = ssl.create_default_context(cafile=a.cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((a.connect, a.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=a.sni)
    # Two writes are two TLS records; a pause lets them travel apart.
    s.sendall(req[: a.cut])
    time.sleep(0.2)
    s.sendall(req[a.cut :])
    data = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(body) >= int(line.split(b":")[1]):
                        deadline = 0
    out["response"] = data.decode("latin-1")
    out["ok"] = data.startswith(b"HTTP/1.1 200")
except Exception as e:  # noqa: BLE001 - the result line says what failed
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
