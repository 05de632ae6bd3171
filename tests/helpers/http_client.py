#!/usr/bin/env python3
"""HTTP GET (http.client, no proxies). Prints {"ok": status == 200, "status", "bytes",
"sha256", "seconds"}."""
import argparse
import http.client

import rnhelp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/data")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "http_client")
    t0 = rnhelp.now()
    try:
        c = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
        c.request("GET", a.path)
        r = c.getresponse()
        body = r.read()
        h = rnhelp.sha256()
        h.update(body)
        rnhelp.emit(ok=r.status == 200, status=r.status, bytes=len(body),
                    sha256=h.hexdigest(), seconds=rnhelp.now() - t0)
    except Exception as e:
        rnhelp.emit(ok=False, error=type(e).__name__, detail=str(e), seconds=rnhelp.now() - t0)


if __name__ == "__main__":
    main()
