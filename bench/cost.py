#!/usr/bin/env python3
"""cost: what one run of each shipped workflow costs Sluice scaled to zero, in the units Google bills
(docs/cost.md), and how long a cold start takes (docs/benchmarks.md, "Cold start").

`sluice serve --process-in-request 25s --tick 10m --poll-interval 10m` runs behind tests/blackbox/cpu_proxy.py
(CPU only while a request is in flight, as Cloud Run with cpu_idle = true), against `sluice emulator` (jobs of
0.3 s, jobs.get stale for 1 s after each end); the emulator pushes every job message through the proxy. RUNS runs
of `example` (3 jobs) and then of `daily` (workflows/fanout.lua, 5 jobs) are started and awaited; per run it prints
  requests      requests that reached the server (the run's start, the pushes)
  pushes        Pub/Sub push deliveries (each one message; billed as at least 1000 bytes)
  resumed_s     seconds the server had CPU (a request in flight): Cloud Run's billable instance time
  cpu_s         CPU-seconds the server's process used (/proc/PID/stat utime + stime)
  fs_reads, fs_writes, fs_deletes
                Firestore documents read, written and deleted, counted by a metering proxy in front of Google's
                emulator (only with --store firestore://... and FIRESTORE_EMULATOR_HOST set): a GET is 1 read, a
                query or batchGet the documents it returns (at least 1), a commit's writes are writes and its
                deletes deletes, as Firestore bills them
and then the same for one idle POST /v1/reconcile (the Cloud Scheduler tick of the serverless shape).

--cold-start N: N times, a fresh `sluice serve` (frozen between requests) on a store holding a run whose job is
running; the job's end is pushed; prints process start -> ready (ready file), push sent -> push answered (the
event recorded and acted on), and process start -> next launch seen at the emulator, in ms (median and max).

Usage: bench/cost.py [BUILD_DIR] [--store URL] [--runs N] [--cold-start N]
  --store URL   default: a new SQLite file; firestore://PROJECT[/DB] with FIRESTORE_EMULATOR_HOST for Firestore
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import http.client as httpclient  # `http` below is this file's request helper

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(SRC, "tests", "blackbox", "cpu_proxy.py")


def http(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(fn, limit, step=0.02):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if fn():
            return True
        time.sleep(step)
    return False


class FirestoreMeter:
    """Counts billed document operations on their way to Google's Firestore emulator."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.counts = {"reads": 0, "writes": 0, "deletes": 0}
        self.lock = threading.Lock()
        meter = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def fwd(self):
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n) if n else None
                c = httpclient.HTTPConnection(host, int(port), timeout=120)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                meter.count(self.command, self.path, body, r.status, data)
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                c.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = fwd

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.host = "127.0.0.1:%d" % self.srv.server_address[1]

    def count(self, method, path, body, status, data):
        r = w = d = 0
        p = path.split("?")[0]
        try:
            if p.endswith(":commit"):
                for wr in json.loads(body or b"{}").get("writes", []):
                    if "delete" in wr:
                        d += 1
                    else:
                        w += 1
                if status != 200:
                    w = d = 0
            elif p.endswith(":runQuery") or p.endswith(":batchGet"):
                res = json.loads(data or b"[]")
                r = max(1, sum(1 for x in res if "document" in x or "found" in x)) if status == 200 else 0
            elif method == "GET" and "/documents/" in p:
                r = 1
            elif method == "DELETE" and "/documents/" in p:
                d = 1
            elif method == "PATCH" and "/documents/" in p:
                w = 1
        except ValueError:
            pass
        with self.lock:
            self.counts["reads"] += r
            self.counts["writes"] += w
            self.counts["deletes"] += d

    def snapshot(self):
        with self.lock:
            return dict(self.counts)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, build, store):
        self.bin = os.path.join(build, "sluice")
        self.tmp = tempfile.mkdtemp(prefix="sluice-cost.")
        self.procs = []
        self.store = store or os.path.join(self.tmp, "cost.db")
        self.env = dict(os.environ)
        self.meter = None
        if self.store.startswith("firestore://") and os.environ.get("FIRESTORE_EMULATOR_HOST"):
            self.meter = FirestoreMeter(os.environ["FIRESTORE_EMULATOR_HOST"])
            self.env["FIRESTORE_EMULATOR_HOST"] = self.meter.host
        self.wf = os.path.join(self.tmp, "workflows")
        os.makedirs(self.wf)
        for f in ("example.lua", "fanout.lua"):
            shutil.copy(os.path.join(SRC, "workflows", f), self.wf)

    def spawn(self, argv, env=None):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "log"), "a"),
                             env=env or self.env)
        self.procs.append(p)
        return p

    def ready(self, path, limit=30):
        assert wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, limit), path
        return open(path).read().strip()

    def emulator(self):
        path = os.path.join(self.tmp, "emu.ready")
        self.spawn([self.bin, "emulator", "--port", "0", "--ready-file", path, "--no-auth", "--pending-ms", "50",
                    "--running-ms", "300", "--lag-ms", "1000", "--lag-mode", "stale"])
        return self.ready(path)

    def serve(self, emu, name):
        path = os.path.join(self.tmp, name + ".ready")
        t0 = time.monotonic()
        p = self.spawn([self.bin, "serve", "--listen", "127.0.0.1", "--port", "0", "--ready-file", path,
                        "--workflows", self.wf, "--store", self.store, "--dataflow-url", emu, "--dataflow-no-auth",
                        "--project", "bench-project", "--no-auth", "--poll-interval", "10m", "--tick", "10m",
                        "--process-in-request", "25s"])
        url = self.ready(path)
        return p, url, (time.monotonic() - t0) * 1000.0

    def proxy(self, url, pid, name):
        ready, stats = os.path.join(self.tmp, name + ".pready"), os.path.join(self.tmp, name + ".json")
        self.spawn([sys.executable, PROXY, ready, url, str(pid), stats])
        return self.ready(ready), stats

    def run_state(self, run_id):
        """The run as the store has it, without a request to the (frozen) server."""
        store = self.store
        if "://" not in store:  # a copy: the frozen server may hold the live file's WAL read marks
            snap = os.path.join(self.tmp, "snap.db")
            shutil.copy(store, snap)
            if os.path.exists(store + "-wal"):
                shutil.copy(store + "-wal", snap + "-wal")
            elif os.path.exists(snap + "-wal"):
                os.remove(snap + "-wal")
            store = snap
        env = dict(os.environ)  # the reader bypasses the meter
        out = subprocess.run([self.bin, "status", run_id, "--store", store, "--json"], capture_output=True,
                             text=True, env=env)
        return json.loads(out.stdout).get("state") if out.returncode == 0 else None

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
                p.wait(timeout=10)
            except Exception:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def counts(b, srv, stats):
    s = json.load(open(stats)) if os.path.exists(stats) else {"requests": 0, "by_path": {}, "resumed_ms": 0}
    out = {"requests": s["requests"], "pushes": s["by_path"].get("/v1/events/pubsub", 0),
           "resumed_s": s["resumed_ms"] / 1000.0, "cpu_s": cpu_seconds(srv.pid)}
    if b.meter:
        out.update({"fs_" + k: v for k, v in b.meter.snapshot().items()})
    return out


def per_run(before, after, n):
    return {k: (after[k] - before[k]) / n for k in after}


def show(label, c):
    cols = ["requests", "pushes", "resumed_s", "cpu_s"] + [k for k in ("fs_reads", "fs_writes", "fs_deletes") if k in c]
    print("%-22s " % label + "  ".join("%s=%s" % (k, ("%.3f" % c[k]) if isinstance(c[k], float) else c[k])
                                        for k in cols), flush=True)


def cost(b, runs):
    emu = b.emulator()
    srv, url, _ = b.serve(emu, "srv")
    purl, stats = b.proxy(url, srv.pid, "proxy")
    assert http("POST", emu + "/emulator/config", {"events": {"push_url": purl + "/v1/events/pubsub",
                                                               "timeout_ms": 30000}})[0] == 200
    print("store: %s%s" % (b.store, " (Firestore counts metered)" if b.meter else " (no Firestore counts)"))
    time.sleep(0.5)
    for wf, params in (("example", {}), ("daily", {"date": "2026-12-07"})):
        before = counts(b, srv, stats)
        ids = []
        for _ in range(runs):
            st, body = http("POST", purl + "/v1/runs", {"workflow": wf, "params": params})
            assert st in (200, 201), (st, body)
            ids.append(body["run"]["id"])
        assert wait_until(lambda: all(b.run_state(i) == "succeeded" for i in ids), 60 + 10 * runs, 0.5), \
            "%s runs did not succeed" % wf
        time.sleep(0.3)  # the last answer's proxy bookkeeping
        show("per run of %s" % wf, per_run(before, counts(b, srv, stats), runs))
    before = counts(b, srv, stats)
    st, _ = http("POST", purl + "/v1/reconcile?budget_ms=5000", {})
    assert st == 200, st
    time.sleep(0.3)
    show("per idle reconcile", per_run(before, counts(b, srv, stats), 1))


def cold_start(b, n):
    emu = b.emulator()
    assert http("POST", emu + "/emulator/config", {"lag": {"window_ms": 0},
                                                   "jobs": [{"match": "my-job-1--*", "running_ms": 600000}]})[0] == 200
    ready_ms, answer_ms, launch_ms = [], [], []

    def jobs():
        return http("GET", emu + "/emulator/jobs")[1].get("jobs", [])

    def delivered():
        return http("GET", emu + "/emulator/stats")[1].get("deliveries", {}).get("push", {}).get("delivered", 0)

    for i in range(n):
        # a run whose first job runs, recorded by a server that then stops (the instance scaled to zero)
        srv, url, _ = b.serve(emu, "warm%d" % i)
        st, body = http("POST", url + "/v1/runs", {"workflow": "example"})
        assert st == 201, (st, body)
        run = body["run"]["id"]
        assert wait_until(lambda: any(j["name"].startswith("my-job-1--" + run) for j in jobs()), 20)
        srv.terminate()
        srv.wait()
        job = [j for j in jobs() if j["name"].startswith("my-job-1--" + run)][0]
        # the cold start: a new process; the job's end is pushed to it as soon as it listens
        t0 = time.monotonic()
        srv, url, rd = b.serve(emu, "cold%d" % i)
        ready_ms.append(rd)
        seen = delivered()
        http("POST", emu + "/emulator/config", {"events": {"push_url": url + "/v1/events/pubsub", "timeout_ms": 30000}})
        assert http("POST", emu + "/emulator/jobs/%s:finish" % job["id"], {"state": "JOB_STATE_DONE"})[0] in (200, 204)
        assert wait_until(lambda: delivered() > seen, 30, 0.005), "the push was not answered"
        answer_ms.append((time.monotonic() - t0) * 1000.0)
        assert wait_until(lambda: any(j["name"].startswith("my-job-2--" + run) for j in jobs()), 30, 0.005), \
            "no next launch"
        launch_ms.append((time.monotonic() - t0) * 1000.0)
        srv.terminate()
        srv.wait()
        http("POST", emu + "/emulator/config", {"events": {"push_url": ""}})

    def med(v):
        v = sorted(v)
        return v[len(v) // 2]
    print("cold start, %d times (ms, median / max):" % n)
    print("  process start -> ready                   %7.1f / %7.1f" % (med(ready_ms), max(ready_ms)))
    print("  process start -> first push answered     %7.1f / %7.1f" % (med(answer_ms), max(answer_ms)))
    print("  process start -> next launch at emulator %7.1f / %7.1f" % (med(launch_ms), max(launch_ms)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--store")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-start", type=int, default=0)
    a = ap.parse_args()
    b = Bench(a.build, a.store)
    try:
        if a.cold_start:
            cold_start(b, a.cold_start)
        else:
            cost(b, a.runs)
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
