#!/usr/bin/env python3
"""cpu_proxy: Cloud Run's "CPU only during requests" policy, simulated in front of `sluice serve` (for the
scale-to-zero test and bench/cost.py; not a test itself). Every request is forwarded to the server; the server
process is resumed (SIGCONT) when a request arrives and frozen (SIGSTOP) as soon as no request is in flight, so
it gets CPU only while it answers one, as a Cloud Run instance with cpu_idle = true does.

Usage: cpu_proxy.py READY_FILE TARGET_URL PID [STATS_FILE]
  READY_FILE  the proxy's base URL is written there once it listens (127.0.0.1, ephemeral port)
  TARGET_URL  the server's base URL (http://127.0.0.1:PORT)
  PID         the server's process id
  STATS_FILE  on SIGTERM, and after every request, {"requests": N, "by_path": {...}, "resumed_ms": MS} is written
              there: how many requests reached the server and how long it was resumed in all
The server is left running (SIGCONT) when the proxy stops.
"""
import http.client
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

READY, TARGET, PID = sys.argv[1], urlsplit(sys.argv[2]), int(sys.argv[3])
STATS = sys.argv[4] if len(sys.argv) > 4 else None

lock = threading.Lock()
state = {"inflight": 0, "requests": 0, "by_path": {}, "resumed_ms": 0.0, "resumed_at": None}


def write_stats():
    if STATS is None:
        return
    with lock:
        out = {"requests": state["requests"], "by_path": dict(state["by_path"]),
               "resumed_ms": round(state["resumed_ms"], 1)}
    tmp = STATS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, STATS)


def enter(path):
    with lock:
        state["requests"] += 1
        key = path.split("?")[0]
        state["by_path"][key] = state["by_path"].get(key, 0) + 1
        state["inflight"] += 1
        if state["inflight"] == 1:
            state["resumed_at"] = time.monotonic()
            os.kill(PID, signal.SIGCONT)


def leave():
    with lock:
        state["inflight"] -= 1
        if state["inflight"] == 0:
            os.kill(PID, signal.SIGSTOP)
            state["resumed_ms"] += (time.monotonic() - state["resumed_at"]) * 1000.0
    write_stats()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def forward(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host", "keep-alive")}
        headers["Connection"] = "close"
        enter(self.path)
        try:
            try:
                c = http.client.HTTPConnection(TARGET.hostname, TARGET.port, timeout=600)
                c.request(self.command, self.path, body=body, headers=headers)
                resp = c.getresponse()
                data = resp.read()
                status, rheaders = resp.status, resp.getheaders()
                c.close()
            except Exception as e:  # the sender sees a 502 and retries, as behind Cloud Run's front end
                status, rheaders, data = 502, [], ("cpu_proxy: %s\n" % e).encode()
        finally:
            leave()  # the server has answered: no CPU until the next request
        self.send_response(status)
        for k, v in rheaders:
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    srv.daemon_threads = True

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with lock:  # no request in flight: frozen from the start, as an instance between requests
        os.kill(PID, signal.SIGSTOP)
    tmp = READY + ".tmp"
    with open(tmp, "w") as f:
        f.write("http://127.0.0.1:%d\n" % srv.server_address[1])
    os.replace(tmp, READY)
    srv.serve_forever()
    try:
        os.kill(PID, signal.SIGCONT)
    except ProcessLookupError:
        pass
    write_stats()


if __name__ == "__main__":
    main()
