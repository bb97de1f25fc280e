#!/usr/bin/env python3
"""pull: benchmarks of Pub/Sub pull ingress against Google's Pub/Sub emulator (docs/benchmarks.md, "Pub/Sub pull").

  1. recorded events/s through pull: N log-sink messages (a "Worker pool stopped." LogEntry of a new my-job-1 job
     each, so every one is recorded) are published to a topic first; then `sluice serve --subscription` starts and
     the clock runs from its ready file to the N-th acknowledgement (sluice_pubsub_acked_total).
  2. event -> next launch through pull vs push: chains of the example workflow, the Dataflow emulator's job ends
     published to a topic as a log sink would (tests/blackbox/pubsub_relay.py), read once by a push subscription
     whose endpoint is serve (--no-auth: the emulator sends no token) and once by serve --subscription. The
     figure is the next job's createTime minus the previous job's end, per hop, from GET /emulator/jobs.

Usage: bench/pull.py [BUILD_DIR] [--messages N] [--chains N]   (needs gcloud with the Pub/Sub emulator, Java)
"""
import argparse
import base64
import calendar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJ = "bench-project"


def http(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(fn, limit, step=0.02):
    end = time.time() + limit
    while time.time() < end:
        if fn():
            return True
        time.sleep(step)
    return False


def ms(ts):
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(?:\.(\d+))?Z", ts)
    y, mo, d, h, mi, s, frac = m.groups()
    t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
    return t * 1000 + (int((frac + "000")[:3]) if frac else 0)


class Bench:
    def __init__(self, build):
        self.bin = os.path.join(build, "sluice")
        self.tmp = tempfile.mkdtemp(prefix="pull-bench.")
        self.procs = []
        self.n = 0

    def spawn(self, argv, env=None, session=False):
        self.n += 1
        log = open(os.path.join(self.tmp, f"p{self.n}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=session)
        self.procs.append((p, session))
        return p

    def ready(self, path, limit=30):
        assert wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, limit), "no " + path
        return open(path).read().strip()

    def stop_all(self):
        for p, session in reversed(self.procs):
            try:
                if session:
                    os.killpg(p.pid, signal.SIGTERM)
                else:
                    p.terminate()
                p.wait(timeout=15)
            except Exception:
                try:
                    os.killpg(p.pid, signal.SIGKILL) if session else p.kill()
                except Exception:
                    pass

    def pubsub(self):
        port = free_port()
        self.ps_host = f"127.0.0.1:{port}"
        os.makedirs(os.path.join(self.tmp, "ps"), exist_ok=True)
        self.spawn(["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.ps_host}", f"--project={PROJ}",
                    f"--data-dir={self.tmp}/ps"], session=True)

        def up():
            try:
                return urllib.request.urlopen(f"http://{self.ps_host}/", timeout=1).status == 200
            except Exception:
                return False
        assert wait_until(up, 120, 0.2), "Google's Pub/Sub emulator did not start"
        self.ps = f"http://{self.ps_host}/v1/projects/{PROJ}"

    def emulator(self, *args):
        path = os.path.join(self.tmp, f"emu{self.n}.ready")
        self.spawn([self.bin, "emulator", "--port", "0", "--ready-file", path, "--no-auth", *args])
        return self.ready(path)

    def serve(self, emu, *args):
        path = os.path.join(self.tmp, f"srv{self.n}.ready")
        env = dict(os.environ, PUBSUB_EMULATOR_HOST=self.ps_host, SLUICE_LOG_LEVEL="warning")
        p = self.spawn([self.bin, "serve", "--listen", "127.0.0.1", "--port", "0", "--ready-file", path,
                        "--workflows", os.path.join(SRC, "workflows"), "--store", os.path.join(self.tmp, f"s{self.n}.db"),
                        "--dataflow-url", emu, "--dataflow-no-auth", "--no-auth", "--poll-interval", "10m", *args], env=env)
        return p, self.ready(path)

    def relay(self, topic):
        path = os.path.join(self.tmp, f"relay{self.n}.ready")
        self.spawn([sys.executable, os.path.join(SRC, "tests", "blackbox", "pubsub_relay.py"), path, f"{self.ps}/topics/{topic}"])
        return self.ready(path)


def metric(base, name):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key == name or ("{" not in name and key.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def logsink_data(i):
    entry = {"textPayload": "Worker pool stopped.", "insertId": f"i{i}", "severity": "INFO",
             "resource": {"type": "dataflow_step", "labels": {"job_id": f"2026-12-01_00_00_00-{i}", "step_id": "",
                                                             "job_name": f"my-job-1--bench{i}-1", "project_id": "1",
                                                             "region": "europe-west4"}},
             "timestamp": "2026-12-01T00:00:00.000Z",
             "logName": "projects/p/logs/dataflow.googleapis.com%2Fjob-message"}
    return base64.b64encode(json.dumps(entry).encode()).decode()


def throughput(b, n):
    assert http("PUT", f"{b.ps}/topics/bench-tp")[0] == 200
    assert http("PUT", f"{b.ps}/subscriptions/bench-tp-pull", {"topic": f"projects/{PROJ}/topics/bench-tp", "ackDeadlineSeconds": 60})[0] == 200
    for at in range(0, n, 500):
        msgs = [{"data": logsink_data(i), "attributes": {"logging.googleapis.com/timestamp": "2026-12-01T00:00:00Z"}}
                for i in range(at, min(n, at + 500))]
        st, body = http("POST", f"{b.ps}/topics/bench-tp:publish", {"messages": msgs})
        assert st == 200, body
    emu = b.emulator()
    t0 = time.time()
    p, base = b.serve(emu, "--subscription", f"projects/{PROJ}/subscriptions/bench-tp-pull")
    t_ready = time.time()
    assert wait_until(lambda: metric(base, "sluice_pubsub_acked_total") >= n, 300, 0.02), "not all acknowledged"
    t1 = time.time()
    rec = metric(base, 'sluice_events_total{source="pull",outcome="recorded"}')
    print(f"recorded events/s through pull: {n / (t1 - t_ready):.0f} ({n} messages acknowledged in {t1 - t_ready:.2f} s "
          f"after serve was ready, {t_ready - t0:.2f} s start-up; {rec:.0f} events recorded)")


def chains(b, mode, n):
    topic = f"lat-{mode}"
    assert http("PUT", f"{b.ps}/topics/{topic}")[0] == 200
    emu = b.emulator("--pending-ms", "100", "--running-ms", "500")
    relay = b.relay(topic)
    if mode == "push":
        p, base = b.serve(emu)
        sub = {"topic": f"projects/{PROJ}/topics/{topic}", "ackDeadlineSeconds": 10,
               "pushConfig": {"pushEndpoint": base + "/v1/events/pubsub"}}
        assert http("PUT", f"{b.ps}/subscriptions/{topic}-sub", sub)[0] == 200
    else:
        sub = {"topic": f"projects/{PROJ}/topics/{topic}", "ackDeadlineSeconds": 10}
        assert http("PUT", f"{b.ps}/subscriptions/{topic}-sub", sub)[0] == 200
        p, base = b.serve(emu, "--subscription", f"projects/{PROJ}/subscriptions/{topic}-sub")
    assert http("POST", emu + "/emulator/config", {"events": {"push_url": relay + "/logsink"}})[0] == 200
    for i in range(n):
        st, body = http("POST", base + "/v1/runs", {"workflow": "example"})
        assert st == 201, body
        if i + 1 < n:
            time.sleep(1.2)

    def jobs():
        return http("GET", emu + "/emulator/jobs")[1].get("jobs", [])

    def step(name):
        m = re.match(r"my-job-(\d)--(.*)-\d+$", name)
        return (int(m.group(1)), m.group(2)) if m else (None, None)
    wait_until(lambda: sum(1 for j in jobs() if (step(j["name"])[0] or 0) >= 2) >= 2 * n, 60, 0.1)
    js = jobs()
    lat = []
    for k in (1, 2):
        nxt = {step(j["name"])[1]: j for j in js if step(j["name"])[0] == k + 1}
        for j in js:
            if step(j["name"])[0] == k and j.get("currentState") == "JOB_STATE_DONE" and step(j["name"])[1] in nxt:
                lat.append(ms(nxt[step(j["name"])[1]]["createTime"]) - ms(j["currentStateTime"]))
    lat.sort()
    if not lat:
        print(f"event -> next launch through {mode}: no hops measured")
        return
    med = lat[len(lat) // 2]
    p90 = lat[min(len(lat) - 1, int(len(lat) * 0.9))]
    print(f"event -> next launch through {mode}: median {med} ms, p90 {p90} ms, max {lat[-1]} ms ({len(lat)} hops)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=os.path.join(SRC, "build"))
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--chains", type=int, default=8)
    a = ap.parse_args()
    b = Bench(a.build)
    try:
        b.pubsub()
        throughput(b, a.messages)
        for mode in ("push", "pull"):
            chains(b, mode, a.chains)
    finally:
        b.stop_all()
        subprocess.run(["rm", "-rf", b.tmp])


if __name__ == "__main__":
    main()
