"""notify_receiver: a webhook receiver for the notification tests (not a test itself). Listens on 127.0.0.1 (port
in argv[2], 0 = ephemeral, written to argv[3]), verifies X-Sluice-Signature (HMAC-SHA256 of the body under argv[1]),
answers 503 to the first argv[4] attempts of each event id, then 200, and appends one JSON line per attempt to
argv[5]: {id, type, subject, ok_sig, status, sha}."""
import hashlib, hmac, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

secret, port, port_file, fail_first, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
seen = {}

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        ok_sig = hmac.compare_digest(want, self.headers.get("X-Sluice-Signature", ""))
        ce = json.loads(body)
        n = seen.get(ce["id"], 0) + 1
        seen[ce["id"]] = n
        status = 503 if n <= fail_first else 200
        ctype = self.headers.get("Content-Type", "")
        with open(log_path, "a") as f:
            f.write(json.dumps({"id": ce["id"], "type": ce["type"], "subject": ce["subject"], "ok_sig": ok_sig,
                                "status": status, "sha": hashlib.sha256(body).hexdigest(),
                                "ctype": ctype.split(";")[0], "failure": ce["data"].get("failure"),
                                "spec": ce["specversion"], "source": ce["source"]}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

srv = HTTPServer(("127.0.0.1", port), H)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
