#!/usr/bin/env python3
"""TCP server that reports every connection (runs in the host namespace), for the policy
tests: did a connection reach the host at all, and what did it carry?

Listens on every --bind address (same --port; 0 picks one port, shared by all binds when
possible). Prints {"ready": true, "port": P, "binds": [...]} first, then one JSON line per
event:
  {"event": "accept", "local": ADDR, "local_port": P, "peer": ADDR, "peer_port": P}
  {"event": "closed", "local": ADDR, "bytes": N, "first": BYTE or null, "how": "eof" | "idle"
   | "reset"}
Each connection echoes what it receives until EOF, or is closed by the server after --idle
seconds without data (a TLS ClientHello waits for an answer that never comes).
Exits after --timeout seconds.
"""
import argparse
import json
import socket
import sys
import threading

import rnhelp

LOCK = threading.Lock()


def event(**fields):
    with LOCK:
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
        sys.stdout.flush()


def serve(conn, local, idle):
    n = 0
    first = None
    how = "eof"
    conn.settimeout(idle)
    try:
        while True:
            try:
                data = conn.recv(65536)
            except (socket.timeout, TimeoutError):
                how = "idle"
                break
            if not data:
                break
            if first is None:
                first = data[0]
            n += len(data)
            conn.sendall(data)
    except ConnectionResetError:
        how = "reset"
    except OSError as e:
        how = "error: %s" % e
    finally:
        event(event="closed", local=local, bytes=n, first=first, how=how)
        conn.close()


def accept_loop(srv, idle):
    while True:
        conn, peer = srv.accept()
        me = conn.getsockname()
        local = me[0]
        event(event="accept", local=local, local_port=me[1], peer=peer[0], peer_port=peer[1])
        threading.Thread(target=serve, args=(conn, local, idle), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", action="append", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--idle", type=float, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "probe_server")
    port = a.port
    socks = []
    for b in a.bind:
        s = socket.socket(rnhelp.family(b), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((b, port))
        s.listen(128)
        port = s.getsockname()[1]
        socks.append(s)
    for s in socks:
        threading.Thread(target=accept_loop, args=(s, a.idle), daemon=True).start()
    rnhelp.emit(ready=True, port=port, binds=a.bind)
    threading.Event().wait()


if __name__ == "__main__":
    main()
