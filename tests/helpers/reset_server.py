"""Host-side server for tests/tcp_edges.rs, on 127.0.0.1, one JSON line per event.

Every accepted connection reads one line: "reset" -> close with SO_LINGER 0 (RST to the
client); "wait" -> read until the peer goes away and report how (eof / reset).
Prints {"ready": true, "port": P} first. Exits after --lifetime seconds.
"""
import json, socket, struct, sys, threading, time

lifetime = float(sys.argv[sys.argv.index("--lifetime") + 1]) if "--lifetime" in sys.argv else 30
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
srv.settimeout(0.2)
print(json.dumps({"ready": True, "port": srv.getsockname()[1]}), flush=True)


def serve(c):
    c.settimeout(10)
    try:
        line = b""
        while not line.endswith(b"\n"):
            b = c.recv(1)
            if not b:
                break
            line += b
        if line.strip() == b"reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            print(json.dumps({"event": "reset_sent"}), flush=True)
            return
        try:
            while c.recv(65536):
                pass
            how = "eof"
        except ConnectionResetError:
            how = "reset"
        except socket.timeout:
            how = "timeout"
        print(json.dumps({"event": "peer_gone", "how": how}), flush=True)
    finally:
        c.close()


deadline = time.time() + lifetime
while time.time() < deadline:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
