#!/usr/bin/env python3
"""pubsub_relay: the part of Google Cloud between Dataflow and a Pub/Sub topic, for the interop tests (not a
test itself). `sluice emulator` posts what a job's end produces; this publishes it to a topic of Google's
Pub/Sub emulator as the real producers would:

  POST /logsink   a wrapped push of a job-message LogEntry: published as a log sink does (data = the LogEntry,
                  attribute logging.googleapis.com/timestamp)
  POST /eventarc  a Dataflow statusChanged CloudEvent (binary mode): published with the CloudEvents Pub/Sub
                  binding (data = the event data, the ce-* headers as attributes)

It answers 204 once the emulator accepted the publish (503 otherwise, so the sender retries).
Usage: pubsub_relay.py READY_FILE TOPIC_URL   (TOPIC_URL = http://HOST:PORT/v1/projects/P/topics/T)
"""
import base64
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READY, TOPIC = sys.argv[1], sys.argv[2]


def publish(message):
    body = json.dumps({"messages": [message]}).encode()
    req = urllib.request.Request(TOPIC + ":publish", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status == 200


class Relay(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            if self.path.startswith("/logsink"):
                msg = json.loads(raw)["message"]
                ok = publish({"data": msg["data"], "attributes": msg.get("attributes", {})})
            elif self.path.startswith("/eventarc"):
                attrs = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
                attrs["content-type"] = "application/json"
                ok = publish({"data": base64.b64encode(raw).decode(), "attributes": attrs})
            else:
                self.send_response(404)
                self.end_headers()
                return
        except Exception as e:  # the sender retries
            sys.stderr.write("relay: %s\n" % e)
            ok = False
        self.send_response(204 if ok else 503)
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
with open(READY + ".tmp", "w") as f:
    f.write("http://127.0.0.1:%d\n" % server.server_address[1])
import os  # noqa: E402

os.rename(READY + ".tmp", READY)
server.serve_forever()
