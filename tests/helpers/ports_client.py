#!/usr/bin/env python3
"""Host-side client for tests/ports.rs (published ports): runs in the test's host namespace
and connects to a port ringnet publishes there. Subcommands, each printing one JSON result
line with "ok" and details:

  connect --target H --port P [--source S] [--size N]
        connect (from source address S when given), send N random bytes, shut down the
        write side, read the echo until EOF (the guest runs probe_server.py, which echoes);
        "local"/"local_port" are the client's own address and port, "error" says how a
        failure looked ("refused", "reset", "timeout", ...), "seconds" when it happened
  probe   --target H --port P [--source S] [--wait T] [--send TEXT]
        connect and send nothing (or TEXT and a newline); "outcome" is what came within T
        seconds: "reset" (RST),
        "eof" (FIN), "data", "timeout", or "connect-<error>" when the connect itself failed;
        "seconds" from the connect until then
  abort   --target H --port P
        connect, one echoed round trip, then close with SO_LINGER 0 (an RST to the server)
  hold    --target H --port P --hold K [--source S] [--wait T]
        K connections, each with one echoed round trip through to the guest, held open; then
        one more connection, probed as above ("extra", "extra_seconds"); then all closed
  udp     --target H --port P --peers N --count C [--size S] [--source S] [--tries K]
          [--reply-timeout T]
        N sockets (N host peers, each its own source port) at once, each sending C
        datagrams of S bytes that carry its peer number and sequence number, resending up to
        K-1 times after T seconds without the reply. Every reply must come from
        --target:--port and be one of that peer's own datagrams ("foreign" counts replies
        carrying another peer's datagram; "wrong_source" replies from elsewhere).
"""
import argparse
import errno
import os
import socket
import struct
import threading

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


def dial(a):
    s = socket.socket(rnhelp.family(a.target), socket.SOCK_STREAM)
    if a.source:
        s.bind((a.source, 0))
    s.settimeout(a.connect_timeout)
    s.connect((a.target, a.port))
    return s


def probe(s, wait):
    """What comes on connected socket `s` within `wait` seconds (nothing is sent)."""
    s.settimeout(wait)
    try:
        d = s.recv(1)
        return "data" if d else "eof"
    except Exception as e:  # noqa: BLE001
        return classify(e)


def cmd_connect(a):
    t0 = rnhelp.now()
    local = (None, None)
    try:
        s = dial(a)
        local = s.getsockname()[:2]
        connected = rnhelp.now() - t0
        s.settimeout(a.io_timeout)
        data = os.urandom(a.size)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        _, back = rnhelp.recv_all(s, keep=True)
        s.close()
        ok = back == data
        rnhelp.emit(ok=ok, connected_s=connected, seconds=rnhelp.now() - t0, local=local[0],
                    local_port=local[1],
                    error=None if ok else "echo mismatch (%d of %d bytes back)" % (
                        len(back), len(data)))
    except Exception as e:  # noqa: BLE001
        rnhelp.emit(ok=False, error=classify(e), detail=str(e), seconds=rnhelp.now() - t0,
                    local=local[0], local_port=local[1])


def cmd_probe(a):
    t0 = rnhelp.now()
    try:
        s = dial(a)
    except Exception as e:  # noqa: BLE001
        rnhelp.emit(ok=False, outcome="connect-" + classify(e), detail=str(e),
                    seconds=rnhelp.now() - t0)
        return
    t1 = rnhelp.now()
    if a.send is not None:
        s.sendall(a.send.encode() + b"\n")
    outcome = probe(s, a.wait)
    secs = rnhelp.now() - t1
    s.close()
    rnhelp.emit(ok=True, outcome=outcome, seconds=secs, connect_s=t1 - t0)


def cmd_abort(a):
    try:
        s = dial(a)
        s.settimeout(a.io_timeout)
        msg = b"abort me\n"
        s.sendall(msg)
        back = b""
        while len(back) < len(msg):
            d = s.recv(len(msg) - len(back))
            if not d:
                break
            back += d
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        rnhelp.emit(ok=back == msg, echoed=len(back))
    except Exception as e:  # noqa: BLE001
        rnhelp.emit(ok=False, error=classify(e), detail=str(e))


def cmd_hold(a):
    held, errors = [], []
    for i in range(a.hold):
        try:
            s = dial(a)
            s.settimeout(a.io_timeout)
            msg = b"hold %d\n" % i
            s.sendall(msg)
            back = b""
            while len(back) < len(msg):
                chunk = s.recv(len(msg) - len(back))
                if not chunk:
                    break
                back += chunk
            if back != msg:
                errors.append("conn %d: echo %r, want %r" % (i, back, msg))
            held.append(s)
        except Exception as e:  # noqa: BLE001
            errors.append("conn %d: %s %s" % (i, classify(e), e))
    t0 = rnhelp.now()
    try:
        s = dial(a)
        extra = probe(s, a.wait)
        s.close()
    except Exception as e:  # noqa: BLE001
        extra = "connect-" + classify(e)
    extra_s = rnhelp.now() - t0
    for s in held:
        s.close()
    rnhelp.emit(ok=not errors and len(held) == a.hold, held=len(held), extra=extra,
                extra_seconds=extra_s, errors=errors[:5])


def cmd_udp(a):
    fam = rnhelp.family(a.target)
    results = [None] * a.peers
    size = max(a.size, 8)

    def datagram(peer, seq):
        head = struct.pack("<II", peer, seq)
        body = bytes(((peer * 131 + seq * 7 + j) & 0xFF) for j in range(min(size - 8, 256)))
        return (head + body * (size // max(1, len(body)) + 1))[:size]

    def peer_run(peer, sock):
        replied = foreign = wrong = bad = resends = 0
        problems = []
        for seq in range(a.count):
            data = datagram(peer, seq)
            got = False
            for attempt in range(a.tries):
                if attempt:
                    resends += 1
                sock.sendto(data, (a.target, a.port))
                try:
                    while True:
                        back, src = sock.recvfrom(65536)
                        if not (rnhelp.same_host(src[0], a.target) and src[1] == a.port):
                            wrong += 1
                            problems.append("peer %d: reply from %r" % (peer, src[:2]))
                            continue
                        if len(back) < 8:
                            bad += 1
                            continue
                        p, q = struct.unpack("<II", back[:8])
                        if p != peer:
                            foreign += 1
                            problems.append("peer %d got peer %d's datagram %d" % (peer, p, q))
                            continue
                        if back == data:
                            got = True
                            break
                        if q < seq and back == datagram(peer, q):
                            continue  # a late reply to an earlier resend
                        bad += 1
                        problems.append("peer %d datagram %d: %d bytes back, want %d" % (
                            peer, seq, len(back), len(data)))
                        break
                except socket.timeout:
                    continue
                if got:
                    break
            if got:
                replied += 1
        results[peer] = dict(peer=peer, local_port=sock.getsockname()[1], replied=replied,
                             foreign=foreign, wrong_source=wrong, bad=bad, resends=resends,
                             problems=problems[:3])

    socks = []
    for _ in range(a.peers):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((a.source or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), 0))
        s.settimeout(a.reply_timeout)
        socks.append(s)
    threads = [threading.Thread(target=peer_run, args=(i, s)) for i, s in enumerate(socks)]
    t0 = rnhelp.now()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = all(r and r["replied"] == a.count and not (r["foreign"] or r["wrong_source"] or r["bad"])
             for r in results)
    rnhelp.emit(ok=ok, peers=results, count=a.count, size=size, seconds=rnhelp.now() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["connect", "probe", "abort", "hold", "udp"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--source")
    ap.add_argument("--timeout", type=float, default=60, help="whole-run limit")
    ap.add_argument("--connect-timeout", type=float, default=10)
    ap.add_argument("--io-timeout", type=float, default=10)
    ap.add_argument("--wait", type=float, default=10, help="probe: how long to wait")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--send")
    ap.add_argument("--hold", type=int, default=2)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--tries", type=int, default=4)
    ap.add_argument("--reply-timeout", type=float, default=1.0)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "ports_client " + a.cmd)
    try:
        {"connect": cmd_connect, "probe": cmd_probe, "abort": cmd_abort, "hold": cmd_hold,
         "udp": cmd_udp}[a.cmd](a)
    except Exception as e:  # noqa: BLE001
        rnhelp.emit(ok=False, error=classify(e), detail=repr(e))
        raise SystemExit(4)


if __name__ == "__main__":
    main()
