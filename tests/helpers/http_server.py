#!/usr/bin/env python3
"""HTTP server (python's http.server) serving GET /data: --size bytes of generated data.
Prints {"ready": true, "port": P, "sha256": ..., "bytes": N} once listening.
POST /upload (a body with Content-Length) is answered with the body's sha256 in hex and a
newline, and logged as a JSON line {"upload": SHA256, "bytes": N} on stdout."""
import argparse
import http.server
import socket
import socketserver

import rnhelp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    rnhelp.deadline(a.timeout, "http_server")
    body = b"".join(rnhelp.stream(a.size, 7))
    h = rnhelp.sha256()
    h.update(body)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path != "/data":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path != "/upload":
                self.send_error(404)
                return
            left = int(self.headers.get("Content-Length", "0"))
            up = rnhelp.sha256()
            got = 0
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                up.update(chunk)
                got += len(chunk)
                left -= len(chunk)
            reply = (up.hexdigest() + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            rnhelp.emit(upload=up.hexdigest(), bytes=got)

        def log_message(self, fmt, *args):
            rnhelp.log("http: " + fmt % args)

    class Server(http.server.ThreadingHTTPServer):
        address_family = rnhelp.family(a.bind)

        def server_bind(self):
            # HTTPServer.server_bind looks up the bound address's name (socket.getfqdn):
            # with no reachable DNS (every test namespace) that waits out the resolver's
            # timeout for any address not in /etc/hosts.
            socketserver.TCPServer.server_bind(self)
            self.server_name = a.bind
            self.server_port = self.server_address[1]

    srv = Server((a.bind, a.port), Handler)
    rnhelp.emit(ready=True, port=srv.server_address[1], bind=a.bind, bytes=len(body),
                sha256=h.hexdigest())
    srv.serve_forever()


if __name__ == "__main__":
    main()
