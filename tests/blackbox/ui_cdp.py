"""ui_cdp: drives headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: requests on
fd 3, answers on fd 4, each a JSON text ended by NUL), standard library only. Used by ui_check.py.

Why the protocol and not --dump-dom / --screenshot: the pages load their data after the load event and keep
polling, so a one-shot dump races them; the protocol lets the test wait for a condition in the DOM, collect
every console error and uncaught exception as an event, set the viewport (1280 and 390 px), and press keys —
so an action is driven through the real page by keyboard, with no test hook in the UI."""
import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, binary=None):
        binary = binary or shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
        self.profile = tempfile.mkdtemp(prefix="sluice-ui-chromium.")
        to_r, self.to_w = os.pipe()      # we write, Chromium reads on fd 3
        self.from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read

        def child_fds():
            # Through fresh copies: the pipe may already sit on fd 3 or 4, and dup2 onto itself would keep its
            # close-on-exec flag.
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--user-data-dir=" + self.profile, "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--hide-scrollbars", "--mute-audio", "--font-render-hinting=none", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(os.environ.get("SLUICE_CHROMIUM_LOG", os.devnull), "ab"))
        os.close(to_r)
        os.close(from_w)
        self.next_id = 0
        self.buf = b""
        self.events = []
        self.session = None

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_w, self.from_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("timed out waiting for Chromium")
            r, _, _ = select.select([self.from_r], [], [], left)
            if not r:
                continue
            chunk = os.read(self.from_r, 1 << 20)
            if not chunk:
                raise CdpError("Chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise CdpError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def pump(self, seconds):
        """Collects events for a while (no call in flight)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                m = self._read_message(deadline)
                if "method" in m:
                    self.events.append(m)
        except CdpError as e:
            if "timed out" not in str(e):
                raise

    def open_tab(self):
        t = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        a = self.call("Target.attachToTarget", {"targetId": t["targetId"], "flatten": True}, session=False)
        self.session = a["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(m)

    def viewport(self, width, height=900, mobile=False):
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def navigate(self, url):
        self.call("Page.navigate", {"url": url})

    def eval(self, expr, timeout=30):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                      timeout=timeout)
        if "exceptionDetails" in r:
            raise CdpError("evaluate %r: %s" % (expr, r["exceptionDetails"].get("text")))
        return r.get("result", {}).get("value")

    def wait_for(self, expr, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval("!!(" + expr + ")"):
                    return True
            except CdpError:
                pass
            time.sleep(0.1)
        return False

    def key(self, key, code=None, keycode=0, shift=False):
        mods = 8 if shift else 0
        base = {"key": key, "code": code or key, "windowsVirtualKeyCode": keycode, "modifiers": mods}
        self.call("Input.dispatchKeyEvent", dict(base, type="rawKeyDown"))
        if key == "Enter":
            self.call("Input.dispatchKeyEvent", dict(base, type="char", text="\r"))
        self.call("Input.dispatchKeyEvent", dict(base, type="keyUp"))

    def tab(self, shift=False):
        self.key("Tab", "Tab", 9, shift)

    def enter(self):
        self.key("Enter", "Enter", 13)

    def screenshot(self, path, width):
        """A full-page PNG at `width` CSS pixels."""
        self.viewport(width, 900, mobile=width < 600)
        time.sleep(0.3)
        h = self.eval("Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))") or 900
        self.viewport(width, min(int(h), 6000), mobile=width < 600)
        time.sleep(0.3)
        r = self.call("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def take_errors(self):
        """Console errors, uncaught exceptions and failed loads seen since the last call, as strings."""
        out = []
        for m in self.events:
            p = m.get("params", {})
            if m["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("uncaught: %s %s" % (d.get("text"), (d.get("exception") or {}).get("description", "")))
            elif m["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(str(a.get("value", a.get("description")))
                                                                    for a in p.get("args", []))))
            elif m["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
        self.events = []
        return out
