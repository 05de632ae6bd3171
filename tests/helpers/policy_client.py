#!/usr/bin/env python3
"""Client for the policy tests (runs in the guest). Subcommands, each printing one JSON
result line with "ok" and details:

  connect --target H --port P     connect, send 6 bytes, shut down the write side, read the
                                  echo until EOF; "error" says how a failure looked
                                  ("refused", "reset", "timeout", ...), "seconds" when it
                                  happened
  tls     --target H --port P --sni NAME
                                  a TLS handshake (python's ssl, a real ClientHello with
                                  SNI NAME) against a server that answers nothing: "error"
                                  is "reset" when the connection was reset, "eof" when the
                                  server closed it (it got the ClientHello), "timeout"
  udp     --target H --port P [--count N]
                                  N datagrams on a connected socket, each waited for 1 s:
                                  "replies", and "errors" (errno names: an ICMP unreachable
                                  shows as EHOSTUNREACH / EACCES / ECONNREFUSED)
"""
import argparse
import errno
import socket
import ssl

import rnhelp


def classify(e):
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "eof"
    if isinstance(e, ssl.SSLError):
        return "ssl: %s" % (e.reason or e)
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def dial(a):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_STREAM)
    s.settimeout(a.connect_timeout)
    s.connect((a.target, a.port))
    return s


def cmd_connect(a):
    t0 = rnhelp.now()
    try:
        s = dial(a)
        connected = rnhelp.now() - t0
        s.settimeout(a.io_timeout)
        s.sendall(b"hello\n")
        s.shutdown(socket.SHUT_WR)
        _, back = rnhelp.recv_all(s, keep=True)
        s.close()
        ok = back == b"hello\n"
        rnhelp.emit(ok=ok, connected_s=connected, seconds=rnhelp.now() - t0,
                    error=None if ok else "echo mismatch: %r" % back)
    except Exception as e:
        rnhelp.emit(ok=False, error=classify(e), detail=str(e), seconds=rnhelp.now() - t0)


def cmd_tls(a):
    t0 = rnhelp.now()
    ctx = ssl.create_default_context()
    connected = None
    try:
        raw = dial(a)
        connected = rnhelp.now() - t0
        raw.settimeout(a.io_timeout)
        with ctx.wrap_socket(raw, server_hostname=a.sni) as s:
            s.do_handshake()
        rnhelp.emit(ok=True, error=None, connected_s=connected, seconds=rnhelp.now() - t0)
    except Exception as e:
        rnhelp.emit(ok=False, error=classify(e), detail=str(e), connected_s=connected,
                    seconds=rnhelp.now() - t0)


def cmd_udp(a):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect((a.target, a.port))
    replies, errors = 0, []
    for i in range(a.count):
        try:
            s.send(b"datagram %d" % i)
            if s.recv(65536):
                replies += 1
        except Exception as e:
            errors.append(classify(e))
    rnhelp.emit(ok=replies == a.count, replies=replies, sent=a.count, errors=errors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["connect", "tls", "udp"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni", default="")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60, help="whole-run limit")
    ap.add_argument("--connect-timeout", type=float, default=5)
    ap.add_argument("--io-timeout", type=float, default=5)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "policy_client " + a.cmd)
    {"connect": cmd_connect, "tls": cmd_tls, "udp": cmd_udp}[a.cmd](a)


if __name__ == "__main__":
    main()
