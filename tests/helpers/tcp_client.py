#!/usr/bin/env python3
"""TCP test client (runs in the guest). Subcommands, each printing one JSON result line
with "ok" (the verdict) and details:

  connect    --target H --port P          connect, echo 1 KiB, check it; reports how a
                                          failure looked ("refused", "reset", "timeout",
                                          ...) and "seconds" until it happened
  bulk       --target H --port P --direction up|down --bytes N [--seed S]
                                          N bytes one way, sha256 of both ends compared
  bulk       ... --direction up --for-seconds T
                                          upload for T seconds (the 1 MiB block being sent
                                          then is finished), then EOF; the server (op
                                          sink) replies with its count and sha256
  echo-many  --target H --port P --conns C --size N
                                          C concurrent connections, each echoing its own
                                          N random bytes (asyncio)
  half-close --target H --port P --size N send N bytes, shutdown(SHUT_WR), then receive
                                          the server's full reply (op collect)
  max-conns  --target H --port P --hold K K held connections must work, connection K+1
                                          must be refused
  steady     --target H --port P --seconds T --size N
                                          one connection (op echo) for T seconds: send N
                                          random bytes, read them back, repeat; reports
                                          rounds, bytes and "max_stall_s", the longest
                                          round trip (an outage shows up there)
"""
import argparse
import asyncio
import errno
import json
import os
import socket

import rnhelp


def classify(e):
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, BrokenPipeError):
        return "broken-pipe"
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def dial(a, timeout):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((a.target, a.port))
    return s


def request(s, **req):
    s.sendall((json.dumps(req) + "\n").encode())


def cmd_connect(a):
    t0 = rnhelp.now()
    try:
        s = dial(a, a.connect_timeout)
        connected = rnhelp.now() - t0
        request(s, op="echo")
        data = os.urandom(1024)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        _, back = rnhelp.recv_all(s, keep=True)
        s.close()
        ok = back == data
        rnhelp.emit(ok=ok, connected_s=connected, seconds=rnhelp.now() - t0,
                    error=None if ok else "echo mismatch (%d bytes back)" % len(back))
    except Exception as e:
        rnhelp.emit(ok=False, error=classify(e), detail=str(e), seconds=rnhelp.now() - t0)


def cmd_bulk(a):
    t0 = rnhelp.now()
    s = dial(a, a.connect_timeout)
    s.settimeout(a.io_timeout)
    h = rnhelp.sha256()
    if a.direction == "up" and a.for_seconds:
        request(s, op="sink")
        n = 0
        for chunk in rnhelp.stream(1 << 50, a.seed):
            h.update(chunk)
            s.sendall(chunk)
            n += len(chunk)
            if rnhelp.now() - t0 >= a.for_seconds:
                break
        s.shutdown(socket.SHUT_WR)
        remote = json.loads(rnhelp.recv_line(s) or b"{}")
        a.bytes = n
    elif a.direction == "up":
        request(s, op="upload", bytes=a.bytes)
        n = 0
        for chunk in rnhelp.stream(a.bytes, a.seed):
            h.update(chunk)
            s.sendall(chunk)
            n += len(chunk)
        remote = json.loads(rnhelp.recv_line(s) or b"{}")
    else:
        request(s, op="download", bytes=a.bytes, seed=a.seed)
        n = rnhelp.recv_exact(s, a.bytes, h)
        remote = json.loads(rnhelp.recv_line(s) or b"{}")
    s.close()
    secs = rnhelp.now() - t0
    local = h.hexdigest()
    ok = n == a.bytes and remote.get("bytes") == a.bytes and remote.get("sha256") == local
    rnhelp.emit(ok=ok, direction=a.direction, bytes=n, remote_bytes=remote.get("bytes"),
                sha256_local=local, sha256_remote=remote.get("sha256"), seconds=secs,
                gbit_s=n * 8 / secs / 1e9)


def cmd_echo_many(a):
    async def one(i):
        data = os.urandom(a.size)
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.target, a.port),
                                          a.connect_timeout)
            w.write(b'{"op": "echo"}\n')

            async def send():
                for off in range(0, len(data), 16384):
                    w.write(data[off:off + 16384])
                    await w.drain()
                w.write_eof()

            async def recv():
                return await r.read(-1)

            _, back = await asyncio.gather(send(), recv())
            w.close()
            return None if back == data else "conn %d: %d of %d bytes back, mismatch" % (
                i, len(back), len(data))
        except Exception as e:
            return "conn %d: %s %s" % (i, classify(e), e)

    async def all_():
        return await asyncio.gather(*(one(i) for i in range(a.conns)))

    t0 = rnhelp.now()
    errs = [e for e in asyncio.run(all_()) if e]
    rnhelp.emit(ok=not errs, conns=a.conns, failed=len(errs), errors=errs[:5],
                seconds=rnhelp.now() - t0)


def cmd_half_close(a):
    t0 = rnhelp.now()
    s = dial(a, a.connect_timeout)
    s.settimeout(a.io_timeout)
    request(s, op="collect")
    data = os.urandom(a.size)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    head = json.loads(rnhelp.recv_line(s) or b"{}")
    _, back = rnhelp.recv_all(s, keep=True)
    s.close()
    want = rnhelp.sha256()
    want.update(data)
    ok = head.get("bytes") == len(data) and head.get("sha256") == want.hexdigest() and back == data
    rnhelp.emit(ok=ok, sent=len(data), server_saw=head.get("bytes"), received=len(back),
                seconds=rnhelp.now() - t0)


def cmd_max_conns(a):
    held, errors = [], []
    for i in range(a.hold):
        try:
            s = dial(a, a.connect_timeout)
            request(s, op="hold")
            line = rnhelp.recv_line(s)
            if json.loads(line or b"{}").get("ok") is not True:
                errors.append("conn %d: no ok line (%r)" % (i, line))
            held.append(s)
        except Exception as e:
            errors.append("conn %d: %s %s" % (i, classify(e), e))
    # One more: must not work while the others are held.
    t0 = rnhelp.now()
    try:
        s = dial(a, a.connect_timeout)
        request(s, op="hold")
        line = rnhelp.recv_line(s)
        extra = "accepted" if line else "closed"
        s.close()
    except Exception as e:
        extra = classify(e)
    extra_s = rnhelp.now() - t0
    for s in held:
        s.close()
    ok = not errors and len(held) == a.hold and extra in ("refused", "reset", "closed")
    rnhelp.emit(ok=ok, held=len(held), extra=extra, extra_seconds=extra_s, errors=errors[:5])


def cmd_steady(a):
    t0 = rnhelp.now()
    rounds = moved = 0
    max_stall = 0.0
    try:
        s = dial(a, a.connect_timeout)
        s.settimeout(a.io_timeout)
        request(s, op="echo")
        while rnhelp.now() - t0 < a.seconds:
            data = os.urandom(a.size)
            r0 = rnhelp.now()
            s.sendall(data)
            back = bytearray()
            while len(back) < len(data):
                chunk = s.recv(len(data) - len(back))
                if not chunk:
                    raise ConnectionError("eof after %d of %d bytes" % (len(back), len(data)))
                back += chunk
            max_stall = max(max_stall, rnhelp.now() - r0)
            if back != data:
                raise ValueError("echo mismatch in round %d" % rounds)
            rounds += 1
            moved += len(data)
        s.close()
        rnhelp.emit(ok=True, rounds=rounds, bytes=moved, max_stall_s=max_stall,
                    seconds=rnhelp.now() - t0)
    except Exception as e:
        # A stall that hit the io timeout counts as a stall of at least that long.
        stalled = max(max_stall, a.io_timeout if classify(e) == "timeout" else 0.0)
        rnhelp.emit(ok=False, error=classify(e), detail=str(e), rounds=rounds, bytes=moved,
                    max_stall_s=stalled, seconds=rnhelp.now() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["connect", "bulk", "echo-many", "half-close", "max-conns",
                                       "steady"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60, help="whole-run limit")
    ap.add_argument("--connect-timeout", type=float, default=10)
    ap.add_argument("--io-timeout", type=float, default=30, help="per recv/send")
    ap.add_argument("--direction", choices=["up", "down"], default="up")
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--for-seconds", type=float, default=0, help="bulk up: by time")
    ap.add_argument("--conns", type=int, default=500)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--hold", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10, help="steady: how long")
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "tcp_client " + a.cmd)
    try:
        {"connect": cmd_connect, "bulk": cmd_bulk, "echo-many": cmd_echo_many,
         "half-close": cmd_half_close, "max-conns": cmd_max_conns,
         "steady": cmd_steady}[a.cmd](a)
    except Exception as e:
        rnhelp.emit(ok=False, error=classify(e), detail=repr(e))
        raise SystemExit(4)


if __name__ == "__main__":
    main()
