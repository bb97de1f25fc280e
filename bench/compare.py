#!/usr/bin/python3
"""compare: Sluice against the Cloud Function peer (bench/peers/cloudfunction) in one run, on one machine, against
the same emulator binary, with the same event streams; prints one Markdown table and, with --docs FILE, writes it
between the `<!-- bench:begin -->` / `<!-- bench:end -->` markers of FILE (docs/benchmarks.md).

Usage: bench/compare.py BUILD_DIR [--docs docs/benchmarks.md] [--quick] [--only push,cold,launches,once,latency]
(--quick: fewer chains; --only: those phases, raw figures as JSON instead of the table)
Debian's python3 standard library only (the peer's own packages are imported by gunicorn, not here).
Every phase starts its own processes on 127.0.0.1 and stops them; nothing leaves the machine.
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_DIR = os.path.join(SRC, "bench", "peers", "cloudfunction")
GUNICORN = "/usr/bin/gunicorn"
AUD = "https://sluice.example/push"
OPTOK = "bench-operator"
PROJECT, REGION = "my-project", "europe-west4"
CLK = os.sysconf("SC_CLK_TCK")
WRK = ["-t2", "-c64", "-d5s"]

results = {}  # key -> value, filled by the phases, rendered by table()
commands = []  # (what, command line) for the table's notes


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- small HTTP client ----

def http(method, url, body=None, headers=None, timeout=30):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, raw.decode(errors="replace")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(fn, limit, step=0.02):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return None


# ---- processes ----

class Procs:
    """Every process a phase started; stop() ends them by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.items = []

    def spawn(self, name, argv, cwd=None, env=None):
        out = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.items.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.items:
            self.items.remove(p)

    def stop_all(self):
        for p in list(self.items):
            self.stop(p)


def ready_file(path, proc, limit=15):
    def check():
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[:2]} exited with {proc.returncode}")
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError:
            return None
    v = wait_until(check, limit, 0.005)
    if not v:
        raise RuntimeError(f"no ready file {path}")
    return v


class Bench:
    def __init__(self, build):
        self.bin = os.path.join(build, "sluice")
        self.build = build
        self.tmp = tempfile.mkdtemp(prefix="compare.")
        self.procs = Procs(self.tmp)
        self.n = 0
        self.lock = threading.Lock()

    def name(self, what):
        with self.lock:
            self.n += 1
            return f"{what}{self.n}"

    def emulator(self, *args):
        n = self.name("emu")
        rf = os.path.join(self.tmp, n + ".url")
        p = self.procs.spawn(n, [self.bin, "emulator", "--port", "0", "--ready-file", rf, "--no-auth", *args])
        return p, ready_file(rf, p)

    def sluice(self, emu, *args):
        n = self.name("serve")
        rf = os.path.join(self.tmp, n + ".url")
        env = dict(os.environ, SLUICE_LOG_LEVEL="warning")
        p = self.procs.spawn(n, [self.bin, "serve", "--listen", "127.0.0.1", "--port", "0", "--ready-file", rf,
                                 "--workflows", os.path.join(SRC, "workflows"),
                                 "--store", os.path.join(self.tmp, n + ".db"), "--audience", AUD,
                                 "--jwks-url", emu + "/oauth2/v3/certs", "--dataflow-url", emu, "--dataflow-no-auth",
                                 "--poll-interval", "10m", "--operator-token", OPTOK, *args], env=env)
        base = ready_file(rf, p)
        if wait_until(lambda: http("GET", base + "/readyz")[0] == 200, 10) is None:
            raise RuntimeError("serve not ready")
        return p, base

    def peer(self, emu, sleep_s):
        port = free_port()
        env = dict(os.environ, PEER_DATAFLOW_URL=emu, PEER_SLEEP_S=str(sleep_s))
        name = self.name("peer")
        p = self.procs.spawn(name, [GUNICORN, "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "main:app"],
                             cwd=PEER_DIR, env=env)
        p.logname = name
        base = f"http://127.0.0.1:{port}"

        def up():
            if p.poll() is not None:
                raise RuntimeError("peer exited")
            try:
                return http("GET", base + "/", timeout=2)[0] == 200
            except OSError:
                return False
        if not wait_until(up, 20, 0.01):
            raise RuntimeError("peer not answering")
        return p, base

    def token(self, emu):
        req = urllib.request.Request(
            f"{emu}/computeMetadata/v1/instance/service-accounts/default/identity?audience={AUD}",
            headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(req) as r:
            return r.read().decode().strip()


# ---- /proc accounting: a process and its children (gunicorn: master + worker) ----

def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def cpu_s(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total / CLK


def rss_mb(pid):
    kb = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def settle_cpu(pid, limit=10):
    """Waits until the process tree is quiet (< 5 ms of CPU in 0.5 s) or limit s pass; returns its CPU time."""
    end = time.monotonic() + limit
    prev = cpu_s(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = cpu_s(pid)
        if now - prev < 0.005:
            return now
        prev = now
    return prev


# ---- wrk ----

def wrk(url, token, prefix, job_id=None, pid=None, rss_peak=None):
    args = ["wrk", *WRK, "-s", os.path.join(SRC, "bench", "serve_push.lua"), url, "--", token, prefix]
    if job_id:
        args.append(job_id)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            rss_peak[0] = max(rss_peak[0], rss_mb(pid))
    th = threading.Thread(target=sample, daemon=True)
    c0 = cpu_s(pid)
    th.start()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    stop.set()
    th.join()
    c1 = settle_cpu(pid)
    m = re.search(r"(\d+) requests in", out)
    reqs = int(m.group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p = re.search(r"p50 ([\d.]+) ms, p90 [\d.]+ ms, p99 ([\d.]+) ms.*non-2xx (\d+), errors (\d+)", out)
    return {"rps": rps, "p50": float(p.group(1)), "p99": float(p.group(2)), "non2xx": int(p.group(3)),
            "errors": int(p.group(4)), "reqs": reqs, "cpu_ms": (c1 - c0) * 1000 / max(reqs, 1)}


# ---- emulator helpers ----

def launch(emu, name):
    return http("POST", f"{emu}/v1b3/projects/{PROJECT}/locations/{REGION}/flexTemplates:launch",
                {"launchParameter": {"jobName": name, "containerSpecGcsPath": f"gs://my-bucket/{name}.json"}})


def jobs(emu):
    return http("GET", emu + "/emulator/jobs")[1].get("jobs", [])


def done_job(emu, name):
    st, body = launch(emu, name)
    assert st == 200, body
    jid = body["job"]["id"]
    ok = wait_until(lambda: any(j["id"] == jid and j.get("currentState") == "JOB_STATE_DONE" for j in jobs(emu)), 15)
    assert ok, "job did not finish"
    return jid


def ms(ts):
    """RFC 3339 (UTC, optional fraction) -> epoch ms."""
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(?:\.(\d+))?Z", ts)
    y, mo, d, h, mi, s, frac = m.groups()
    import calendar
    t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
    return t * 1000 + (int((frac + "000")[:3]) if frac else 0)


def step_of(name):
    m = re.match(r"my-job-(\d)--(.*)$", name)
    return (int(m.group(1)), m.group(2)) if m else (None, None)


# ---- phases ----

def phase_push(b):
    """Push throughput/latency, CPU per event, idle and loaded RSS, for both (one instant emulator)."""
    emu_p, emu = b.emulator()
    tok = b.token(emu)
    did = done_job(emu, "my-job-1--wrk")
    for who in ("sluice", "peer"):
        p, base = b.sluice(emu) if who == "sluice" else b.peer(emu, 0)
        time.sleep(1)
        results[f"{who}.rss_idle"] = rss_mb(p.pid)
        peak = [0.0]
        log(f"== {who}: foreign pushes (wrk {' '.join(WRK)})")
        results[f"{who}.foreign"] = wrk(base, tok, "someone-elses-job", pid=p.pid, rss_peak=peak)
        log(f"   {results[f'{who}.foreign']}")
        log(f"== {who}: relevant pushes")
        # Sluice: every event new (unique job id), OIDC-verified and group-committed before its 200. The peer:
        # every event names one finished my-job-1 job, so each does its jobs.get and its launch.
        results[f"{who}.relevant"] = wrk(base, tok, "my-job-1", job_id=None if who == "sluice" else did,
                                         pid=p.pid, rss_peak=peak)
        log(f"   {results[f'{who}.relevant']}")
        results[f"{who}.rss_loaded"] = peak[0]
        b.procs.stop(p)
    b.procs.stop(emu_p)
    commands.append(("push rows", f"wrk {' '.join(WRK)} -s bench/serve_push.lua URL -- TOKEN someone-elses-job | "
                                  "my-job-1 [JOB_ID]"))


def phase_cold(b):
    emu_p, emu = b.emulator()
    log("== sluice: cold start (bench_serve_start, the 2 shipped workflows)")
    out = subprocess.run([os.path.join(b.build, "bench_serve_start"), b.bin, os.path.join(SRC, "workflows"), b.tmp,
                          emu], capture_output=True, text=True, check=True).stdout
    m = re.search(r"fresh store: median ([\d.]+) ms", out)
    results["sluice.cold"] = float(m.group(1))
    log("== peer: cold start (5 gunicorn starts, process start to the first 200)")
    ts = []
    for _ in range(5):
        port = free_port()
        env = dict(os.environ, PEER_DATAFLOW_URL=emu, PEER_SLEEP_S="0")
        t0 = time.monotonic()
        p = b.procs.spawn(b.name("peerstart"), [GUNICORN, "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}",
                                                "main:app"], cwd=PEER_DIR, env=env)

        def up():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        if wait_until(up, 20, 0.001):
            ts.append((time.monotonic() - t0) * 1000)
        b.procs.stop(p)
    results["peer.cold"] = statistics.median(ts)
    b.procs.stop(emu_p)
    commands.append(("cold start", "build/bench_serve_start build/sluice workflows TMP EMU; peer: 5 x gunicorn, "
                                   "polling GET / every 1 ms"))


def push_body(job, seq):
    """The wrapped Pub/Sub push of the log sink's "Worker pool stopped." entry for a finished job."""
    entry = {"textPayload": "Worker pool stopped.", "severity": "INFO", "timestamp": job["currentStateTime"],
             "logName": f"projects/{PROJECT}/logs/dataflow.googleapis.com%2Fjob-message",
             "resource": {"type": "dataflow_step", "labels": {"job_id": job["id"], "job_name": job["name"],
                                                               "region": REGION, "project_id": "123456789012", "step_id": ""}}}
    return {"message": {"data": base64.b64encode(json.dumps(entry).encode()).decode(), "messageId": f"relay-{seq}",
                        "publishTime": job["currentStateTime"]}, "subscription": "projects/p/subscriptions/relay"}


class Relay:
    """Pub/Sub for the peer with its 30 s sleep: the emulator delivers one push at a time (one thread, 5 s timeout),
    while Pub/Sub pushes concurrently with an ack deadline that a deployment with a 30 s sleep sets above 30 s.
    Polls the emulator's jobs every 20 ms and posts each newly finished job's push on its own thread (120 s timeout).
    The polling adds up to ~20 ms to the peer's figure."""

    def __init__(self, emu, url):
        self.emu, self.url, self.seen, self.stop = emu, url, set(), threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        seq = 0
        while not self.stop.wait(0.02):
            for j in jobs(self.emu):
                if j["id"] not in self.seen and j.get("currentState") in ("JOB_STATE_DONE", "JOB_STATE_FAILED"):
                    self.seen.add(j["id"])
                    seq += 1
                    body = push_body(j, seq)
                    threading.Thread(target=lambda b_=body: http("POST", self.url, b_, timeout=120), daemon=True).start()

    def close(self):
        self.stop.set()
        self.th.join()


def chains(b, who, n, spacing, lag_ms, sleep_s, hops, wait_s):
    """n chains started `spacing` s apart against an emulator that pushes every end to the system under test
    (through Relay for the peer with its sleep); returns (hop latencies in ms: next job's createTime - previous
    job's end, next jobs launched, expected, the peer's "not triggering" count)."""
    emu_p, emu = b.emulator("--pending-ms", "100", "--running-ms", "500", "--lag-ms", str(lag_ms), "--lag-mode", "stale")
    p, base = b.sluice(emu) if who == "sluice" else b.peer(emu, sleep_s)
    push = base + "/v1/events/pubsub" if who == "sluice" else base + "/"
    relay = Relay(emu, push) if sleep_s > 0 else None
    cfg = {"events": {"push_url": None if relay else push, "audience": AUD}}
    if hops == 1:  # stop after the measured hop: the next job runs on
        cfg["jobs"] = [{"match": "my-job-2--*", "running_ms": 600000}]
    assert http("POST", emu + "/emulator/config", cfg)[0] == 200
    for i in range(n):
        if who == "sluice":
            st, body = http("POST", base + "/v1/runs", {"workflow": "example"},
                            {"Authorization": "Bearer " + OPTOK})
            assert st == 201, body
        else:
            assert launch(emu, f"my-job-1--chain{i}")[0] == 200
        if i + 1 < n:
            time.sleep(spacing)
    want = n * hops

    def enough():
        return sum(1 for j in jobs(emu) if (step_of(j["name"])[0] or 0) >= 2) >= want
    wait_until(enough, wait_s, 0.1)
    js = jobs(emu)
    lat = []
    launched = 0
    for k in range(1, hops + 1):
        prev = [j for j in js if step_of(j["name"])[0] == k and j.get("currentState") == "JOB_STATE_DONE"]
        nxt = [j for j in js if step_of(j["name"])[0] == k + 1]
        launched += len(nxt)
        if who == "sluice":  # pair by run id: my-job-K--<run>-<attempt>
            by = {step_of(j["name"])[1].rsplit("-", 1)[0]: j for j in nxt}
            for j in prev:
                r = step_of(j["name"])[1].rsplit("-", 1)[0]
                if r in by:
                    lat.append(ms(by[r]["createTime"]) - ms(j["currentStateTime"]))
        elif len(prev) == len(nxt):  # the peer's names carry no run: pair in order (chains are spaced apart)
            for a, c in zip(sorted(prev, key=lambda j: ms(j["currentStateTime"])), sorted(nxt, key=lambda j: ms(j["createTime"]))):
                lat.append(ms(c["createTime"]) - ms(a["currentStateTime"]))
    if relay:
        relay.close()
    b.procs.stop(p)
    b.procs.stop(emu_p)
    skipped = 0
    if who == "peer":
        with open(os.path.join(b.tmp, p.logname + ".log")) as f:
            skipped = sum(1 for line in f if "not triggering" in line)
    return sorted(lat), launched, want, skipped


def phase_latency(b, quick):
    n = 4 if quick else 8
    for who in ("sluice", "peer"):
        log(f"== {who}: event -> next launch, instant API ({n} chains of 3 jobs, 1.2 s apart)")
        results[f"{who}.lat_instant"] = chains(b, who, n, 1.2, 0, 0, 2, 20)
        log(f"   {results[f'{who}.lat_instant']}")
        log(f"== {who}: event -> next launch, stale lag 3 s")
        results[f"{who}.lat_stale"] = chains(b, who, n, 1.2, 3000, 0, 2, 25 if who == "sluice" else 12)
        log(f"   {results[f'{who}.lat_stale']}")
    # One after the other: started together from two threads, one of the two emulators once never wrote its ready
    # file (2026-12-01, load average 11); sequential costs ~35 s more and stays well inside the 10 minutes.
    for key, lag, what in (("peer.lat_sleep_instant", 0, "instant API"), ("peer.lat_sleep", 3000, "stale lag 3 s")):
        log(f"== peer with its 30 s sleep: event -> next launch, {what} (3 chains, first hop)")
        results[key] = chains(b, "peer", 3, 1.2, lag, 30, 1, 45)
        log(f"   {results[key]}")
    commands.append(("latency rows", "bench/compare.py: chains started 1.2 s apart; the emulator pushes every job's end "
                                     "(--pending-ms 100 --running-ms 500 [--lag-ms 3000 --lag-mode stale]); "
                                     "latency = next job's createTime - previous job's end, from GET /emulator/jobs"))


def phase_launches(b):
    log("== sluice: launches/s, emulator latency 50 ms (bench_engine --mode launch --runs 3000)")
    done = subprocess.run([os.path.join(b.build, "bench_engine"), "--sluice", b.bin, "--mode", "launch", "--runs", "3000"],
                          capture_output=True, text=True)
    if done.returncode not in (0, 3):  # 3: the figure is past its target; it is still the figure
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    out = done.stdout
    results["sluice.lps"] = float(re.search(r"= (\d+) launches/s", out).group(1))
    log("== peer: launches/s, emulator latency 50 ms (wrk pushes naming one finished my-job-1 job)")
    emu_p, emu = b.emulator("--latency-ms", "50")
    did = done_job(emu, "my-job-1--lps")
    p, base = b.peer(emu, 0)
    before = http("GET", emu + "/emulator/stats")[1]["requests"].get("flexTemplates.launch", {})  # my-job-1's own
    r = wrk(base, b.token(emu), "my-job-1", job_id=did, pid=p.pid, rss_peak=[0.0])
    st = http("GET", emu + "/emulator/stats")[1]
    statuses = {k: v - before.get(k, 0) for k, v in st["requests"].get("flexTemplates.launch", {}).items()
                if v - before.get(k, 0)}
    created = sum(v for k, v in st.get("jobs_created_by_name", {}).items() if k.startswith("my-job-2--"))
    secs = float(WRK[2][2:-1])
    results["peer.lps"] = {"requests": sum(statuses.values()) / secs, "created": created / secs,
                           "statuses": statuses, "events": r["rps"]}
    log(f"   {results['peer.lps']}")
    b.procs.stop(p)
    b.procs.stop(emu_p)
    commands.append(("launches/s", "build/bench_engine --sluice build/sluice --mode launch --runs 3000; peer: sluice "
                                   "emulator --latency-ms 50, wrk " + " ".join(WRK) + " of pushes naming one DONE job"))


def once(b, who, n, spacing, dup):
    """n chains, started `spacing` s apart (0: at once, so their jobs end in the same second), every push delivered
    twice when dup; waits until quiet and counts the jobs per step on the emulator."""
    emu_p, emu = b.emulator("--pending-ms", "100", "--running-ms", "500")
    p, base = b.sluice(emu) if who == "sluice" else b.peer(emu, 0)
    push = base + "/v1/events/pubsub" if who == "sluice" else base + "/"
    cfg = {"events": {"push_url": push, "audience": AUD, "duplicate_rate": 1.0 if dup else 0.0, "backoff_ms": 1000,
                      "max_attempts": 5}}
    assert http("POST", emu + "/emulator/config", cfg)[0] == 200
    for i in range(n):
        if who == "sluice":
            assert http("POST", base + "/v1/runs", {"workflow": "example"}, {"Authorization": "Bearer " + OPTOK})[0] == 201
        else:
            assert launch(emu, f"my-job-1--once{i}")[0] == 200
        if spacing and i + 1 < n:
            time.sleep(spacing)
    # quiet: nothing queued for delivery, every job terminal, no new job for 3 s (the redeliveries of a nack come
    # after 1, 2, 4 and 8 s)
    last = [None, time.monotonic()]

    def quiet():
        js = jobs(emu)
        sig = (len(js), sum(1 for j in js if j.get("currentState") == "JOB_STATE_DONE"))
        st = http("GET", emu + "/emulator/stats")[1]
        if sig != last[0]:
            last[0], last[1] = sig, time.monotonic()
        return st["delivery_queue"]["length"] == 0 and sig[0] == sig[1] and time.monotonic() - last[1] > 3.0
    wait_until(quiet, 45, 0.25)
    js = jobs(emu)
    st = http("GET", emu + "/emulator/stats")[1]
    r = {"n": n, "jobs": {k: len([j for j in js if step_of(j["name"])[0] == k]) for k in (1, 2, 3)},
         "launch_status": st["requests"].get("flexTemplates.launch", {}), "deliveries": st["deliveries"].get("push", {})}
    if who == "sluice":
        runs = {}
        for j in js:
            k, rest = step_of(j["name"])
            if k:
                runs.setdefault((k, rest.rsplit("-", 1)[0]), []).append(j)
        r["max_per_step_run"] = max(len(v) for v in runs.values())
    b.procs.stop(p)
    b.procs.stop(emu_p)
    return r


def phase_once(b, quick):
    n = 5 if quick else 10
    for key, spacing, dup, what in (("dup", 1.2, True, "every push delivered twice, chains 1.2 s apart"),
                                    ("same", 0, False, "chains started at once (their jobs end in the same second)")):
        for who in ("sluice", "peer"):
            log(f"== {who}: {n} chains, {what}")
            results[f"{who}.once_{key}"] = once(b, who, n, spacing, dup)
            log(f"   {results[f'{who}.once_{key}']}")
    commands.append(("exactly-once rows", "bench/compare.py: N chains of the 3-job example; emulator "
                                          "events.duplicate_rate 1 (every push twice) or chains started together; "
                                          "a nack is redelivered after 1, 2, 4, 8 s (max_attempts 5); jobs per step "
                                          "counted with GET /emulator/jobs"))


# ---- the table ----

def fmt(v, unit="", digits=None):
    if v is None:
        return "—"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:,.{digits}f}{unit}"


def ratio(sluice, peer, higher_better):
    if not sluice or not peer:
        return "—"
    r = sluice / peer if higher_better else peer / sluice
    return f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×" if r >= 1 else f"{r:.2f}×"


def lat_text(lat):
    vals, launched, want, skipped = lat
    if not vals:
        if skipped:
            return (f"no next job launched: each of the {skipped} pushes was acknowledged as not DONE (jobs.get still "
                    f"said RUNNING), so every chain stopped after its first job")
        return f"{launched} of {want} next jobs launched"
    p50 = statistics.median(vals)
    return f"{p50 / 1000:.2f} s p50, {vals[-1] / 1000:.2f} s max ({len(vals)} hops)" if p50 >= 1000 else \
        f"{p50:.0f} ms p50, {vals[-1]:.0f} ms max ({len(vals)} hops)"


def table(duration_s, load_before, load_after):
    R = results
    rows = []
    for kind, label in (("foreign", "foreign events (not in the workflows)"),
                        ("relevant", "relevant events")):
        s, p = R["sluice." + kind], R["peer." + kind]

        def note(r):  # answers that were not a 2xx, and wrk's socket errors (connect, read, write, timeout)
            parts = [f"{r['non2xx']:,} of {r['reqs']:,} answered 500"] if r["non2xx"] else []
            parts += [f"{r['errors']:,} wrk socket errors"] if r["errors"] else []
            return f" ({'; '.join(parts)})" if parts else ""
        rows.append((f"push throughput, {label}", f"{fmt(s['rps'])}/s" + note(s), f"{fmt(p['rps'])}/s" + note(p),
                     ratio(s["rps"], p["rps"], True)))
        rows.append((f"push latency p50 / p99, {label}", f"{fmt(s['p50'])} / {fmt(s['p99'])} ms",
                     f"{fmt(p['p50'])} / {fmt(p['p99'])} ms", ratio(s["p99"], p["p99"], False) + " (p99)"))
        rows.append((f"CPU time per event, {label}", f"{fmt(s['cpu_ms'], digits=3)} ms", f"{fmt(p['cpu_ms'], digits=3)} ms",
                     ratio(s["cpu_ms"], p["cpu_ms"], False)))

    def lat_row(label, s, p):
        sv, pv = (statistics.median(x[0]) if x and x[0] else None for x in (s, p))
        rows.append((label, lat_text(s) if s else "—", lat_text(p), ratio(sv, pv, False) if sv and pv else "—"))
    lat_row("event → next launch, instant API (peer without its sleep)", R["sluice.lat_instant"], R["peer.lat_instant"])
    lat_row("event → next launch, API stale for 3 s (peer without its sleep)", R["sluice.lat_stale"], R["peer.lat_stale"])
    lat_row("event → next launch, instant API (peer with its 30 s sleep)", R["sluice.lat_instant"],
            R["peer.lat_sleep_instant"])
    lat_row("event → next launch, API stale for 3 s (peer with its 30 s sleep)", R["sluice.lat_stale"], R["peer.lat_sleep"])
    rows.append(("cold start: process start → first successful answer", f"{fmt(R['sluice.cold'])} ms",
                 f"{fmt(R['peer.cold'])} ms", ratio(R["sluice.cold"], R["peer.cold"], False)))
    rows.append(("RSS idle (peer: gunicorn master + worker)", f"{fmt(R['sluice.rss_idle'])} MB",
                 f"{fmt(R['peer.rss_idle'])} MB", ratio(R["sluice.rss_idle"], R["peer.rss_idle"], False)))
    rows.append(("RSS loaded (peak while under the push load)", f"{fmt(R['sluice.rss_loaded'])} MB",
                 f"{fmt(R['peer.rss_loaded'])} MB", ratio(R["sluice.rss_loaded"], R["peer.rss_loaded"], False)))
    pl = R["peer.lps"]
    rows.append(("launches/s, emulator latency 50 ms", f"{fmt(R['sluice.lps'])} /s (jobs created)",
                 f"{fmt(pl['created'])} jobs created/s of {fmt(pl['requests'])} launch requests/s "
                 f"({', '.join(f'{v:,} × {k}' for k, v in sorted(pl['statuses'].items()))})",
                 ratio(R["sluice.lps"], pl["created"], True)))
    def once_text(o):
        j, st = o["jobs"], o["launch_status"]
        gu = o["deliveries"].get("given_up", 0)
        t = (f"my-job-2: {j[2]} jobs for {j[1]} finished my-job-1; my-job-3: {j[3]} for {j[2]} finished my-job-2; "
             f"launch answers {', '.join(f'{v} × {k}' for k, v in sorted(st.items()))}; {gu} pushes given up")
        if "max_per_step_run" in o:
            t += f"; at most {o['max_per_step_run']} job per step and run"
        return t

    def off(o):  # jobs missing plus jobs extra against N correct chains: N my-job-2 and N my-job-3
        j = o["jobs"]
        return abs(j[2] - o["n"]) + abs(j[3] - o["n"])

    def rate(o):  # the failure rate: off() over the 2 N follow-on launches that N correct chains make
        return f"{100 * off(o) / (2 * o['n']):.0f}%"
    for key, what in (("dup", "chains 1.2 s apart, every push delivered twice"),
                      ("same", "chains whose jobs end in the same second, each push once")):
        so, po = R[f"sluice.once_{key}"], R[f"peer.once_{key}"]
        rows.append((f"launches per finished job: {so['n']} {what}", once_text(so), once_text(po),
                     f"{off(so)} vs {off(po)} jobs missing or extra (failure rate {rate(so)} vs {rate(po)} of the "
                     f"{2 * so['n']} follow-on launches)"))
    out = ["| measurement | Sluice | Cloud Function peer | Sluice's advantage |", "|---|---|---|---|"]
    out += [f"| {a} | {b_} | {c} | {d} |" for a, b_, c, d in rows]
    out.append("")
    out.append(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
               f"(`bench/compare.sh build`) in {duration_s:.0f} s on this machine ({os.cpu_count()} vCPU shared with other "
               f"work; `uptime` before: `{load_before}`, after: `{load_after}`). Commands:")
    out.append("")
    for what, cmd in commands:
        out.append(f"- {what}: `{cmd}`")
    return "\n".join(out)


def loadavg():
    """`uptime`'s line (the load averages the figures were measured under)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def update_docs(path, text):
    with open(path) as f:
        doc = f.read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        raise RuntimeError(f"{path} lacks the {begin} / {end} markers")
    doc = doc[:i + len(begin)] + "\n" + text + "\n" + doc[j:]
    with open(path, "w") as f:
        f.write(doc)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    build = args[0]
    docs = args[args.index("--docs") + 1] if "--docs" in args else None
    quick = "--quick" in args
    for tool in (GUNICORN, shutil.which("wrk")):
        if not tool or not os.path.exists(tool):
            log("missing gunicorn or wrk: run scripts/deps.sh")
            return 1
    b = Bench(build)
    t0 = time.monotonic()
    l0 = loadavg()
    only = args[args.index("--only") + 1].split(",") if "--only" in args else None
    phases = [("push", lambda: phase_push(b)), ("cold", lambda: phase_cold(b)), ("launches", lambda: phase_launches(b)),
              ("once", lambda: phase_once(b, quick)), ("latency", lambda: phase_latency(b, quick))]
    try:
        for name, fn in phases:
            if only is None or name in only:
                fn()
    finally:
        b.procs.stop_all()
        shutil.rmtree(b.tmp, ignore_errors=True)
    if only:  # a partial run (for working on one phase): the raw figures, no table
        print(json.dumps(results, indent=1, default=str))
        return 0
    text = table(time.monotonic() - t0, l0, loadavg())
    print(text)
    if docs:
        update_docs(docs, text)
        log(f"wrote the table into {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
