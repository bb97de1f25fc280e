"""token_proxy: a stand-in for `gcloud run services proxy --token T`: listens on 127.0.0.1 (an ephemeral port,
written to PORT_FILE), forwards every request to TARGET with `Authorization: Bearer <the token in TOKEN_FILE>`
added (replacing any the client sent), and relays the answer. Standard library only; one thread per request.
Usage: token_proxy.py TARGET TOKEN_FILE PORT_FILE."""
import http.server
import os
import sys
import urllib.error
import urllib.request

TARGET, TOKEN_FILE, PORT_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
       "proxy-authenticate", "host", "content-length", "authorization"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        req = urllib.request.Request(TARGET + self.path, data=body, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in HOP:
                req.add_header(k, v)
        req.add_header("Authorization", "Bearer " + open(TOKEN_FILE).read().strip())
        try:
            resp = urllib.request.urlopen(req, timeout=30)
        except urllib.error.HTTPError as e:
            resp = e
        data = resp.read()
        self.send_response(resp.status if hasattr(resp, "status") else resp.code)
        for k, v in resp.headers.items():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = forward

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))

os.rename(PORT_FILE + ".tmp", PORT_FILE)
srv.serve_forever()
