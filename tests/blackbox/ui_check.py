"""ui_check: the browser half of test_ui.sh. Argument: a JSON file {base, token, emulator, shots, and the run ids
by kind}. Prints ok:/FAIL: lines; exits 1 when any check failed. Every page is checked for console errors,
uncaught exceptions and failed loads; each is photographed at 1280 and 390 px into `shots`."""
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_cdp import Browser  # noqa: E402

cfg = json.load(open(sys.argv[1]))
BASE, SHOTS = cfg["base"], cfg["shots"]
fails = 0


def ok(msg):
    print("ok: " + msg)


def fail(msg):
    global fails
    fails += 1
    print("FAIL: " + msg)


def check(cond, msg):
    ok(msg) if cond else fail(msg)


def js(s):
    return json.dumps(s)


b = Browser()
try:
    b.open_tab()
    b.viewport(1280)

    # Without a token the page asks for one (the API's 401 is expected here, and only here).
    b.navigate(BASE + "/ui/")
    check(b.wait_for("!document.getElementById('token-form').hidden"), "without a token the page shows the token form")
    check(b.wait_for("document.getElementById('status').textContent.includes('operator token')"),
          "and says why")
    errs = [e for e in b.take_errors() if "401" not in e]
    check(not errs, "no errors before signing in besides the 401: %s" % errs)

    # Paste the token by keyboard: focus the field, type, Enter.
    b.eval("document.getElementById('token-input').focus()")
    b.call("Input.insertText", {"text": cfg["token"]})
    b.enter()
    check(b.wait_for("document.querySelectorAll('#runs tbody tr[data-run]').length >= 7"), "runs page lists the runs")
    check(b.eval("sessionStorage.getItem('sluice-token')") == cfg["token"], "the token is kept in sessionStorage")

    def page(name, hash_, ready, widths=(1280, 390)):
        b.viewport(1280)
        b.navigate(BASE + "/ui/" + hash_)
        good = b.wait_for(ready, 25)
        check(good, "%s: page ready (%s)" % (name, ready))
        b.pump(0.5)
        for w in widths:
            b.screenshot(os.path.join(SHOTS, "%s-%d.png" % (name, w)), w)
            overflow = b.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            check(overflow is not None and overflow <= 1, "%s at %d px: no horizontal page scroll (%s)" % (name, w, overflow))
        b.viewport(1280)
        errs = b.take_errors()
        check(not errs, "%s: no console errors %s" % (name, errs))
        return good

    # ---- runs ----
    page("runs", "#/runs", "document.querySelectorAll('#runs tbody tr[data-run]').length >= 7")
    states = set(b.eval("[...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.state)"))
    for st in ("running", "succeeded", "failed", "cancelled"):
        check(st in states, "runs page shows a %s run" % st)
    check(b.eval("!!document.querySelector('#runs a[href=\"#/runs/%s\"]')" % cfg["recovered"]), "runs link to their pages")
    # issue 22: a recovered run has its own badge; a failed run's row names the step that failed first
    check(b.eval("!!document.querySelector('#runs tr[data-run=\"%s\"] .badge.s-recovered')" % cfg["recovered"]),
          "runs page: the recovered run has its badge")
    check("Bad" in (b.eval("document.querySelector('#runs tr[data-run=\"%s\"] td.err').textContent" % cfg["failed"]) or ""),
          "runs page: the failed run's row names the step that failed first")
    check(b.eval("document.querySelector('#runs tr[data-run=\"%s\"]').children.length" % cfg["ok"]) == 7,
          "runs page: duration and params columns")
    page("runs-recovered", "#/runs?recovered=1", "document.querySelectorAll('#runs tbody tr[data-run]').length == 1",
         widths=(1280,))
    check(b.eval("document.querySelector('#runs tbody tr').dataset.run") == cfg["recovered"], "recovered filter")
    page("runs-failed-step", "#/runs?failed=1&workflow=uitest", "document.querySelectorAll('#runs tbody tr[data-run]').length == 2",
         widths=(1280,))
    got = sorted(b.eval("[...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)"))
    check(got == sorted([cfg["recovered"], cfg["failed"]]), "any-failed-step filter: %s" % got)
    check(b.eval("document.getElementById('f-failed').checked"), "the filter form shows the filter")
    page("runs-search", "#/runs?q=" + cfg["ok"][:6], "document.querySelectorAll('#runs tbody tr[data-run]').length == 1",
         widths=(1280,))
    check(b.eval("document.querySelector('#runs tbody tr').dataset.run") == cfg["ok"], "search by run id")

    # ---- workflows ----
    page("workflows", "#/workflows", "document.querySelectorAll('.workflow .dag g.node').length >= 11")
    card = "document.querySelector('.workflow[data-workflow=\"uitest\"]')"
    check(b.eval(card + ".querySelectorAll('path.edge.on_failure').length") == 2, "on_failure edges drawn distinctly")
    check(b.eval(card + ".querySelectorAll('path.edge.choice').length") == 3, "choice edges drawn dashed")
    check(b.eval("getComputedStyle(%s.querySelector('path.edge.choice')).strokeDasharray" % card) not in ("none", ""),
          "choice edges are dashed")
    check(b.eval(card + ".querySelector('g.node.start').dataset.step") == "Start", "the start step is marked")
    check(b.eval(card + ".querySelectorAll('path.edge[data-from=\"Load\"]').length") == 2, "fan-out from Load")
    check(b.eval(card + ".querySelectorAll('path.edge[data-to=\"Join\"]').length") == 2, "join at Join")
    check("broken.lua:8:" in b.eval("document.getElementById('load-errors').textContent"), "load errors with file:line")
    check(b.eval(card + ".querySelector('input[id$=\"-mode\"]').required") is True, "the start form marks required params")
    check(b.eval(card + ".querySelector('input[id$=\"-day\"]').value") == "2026-05-01", "and fills defaults")
    check(len(b.eval(card + ".querySelector('dd.mono').title")) == 64, "the version is shown")
    b.eval(card + ".querySelector('details').open = true")
    check(b.wait_for(card + ".querySelector('pre.source').textContent.includes('name = \"uitest\"')"), "the source is shown")

    # Start a run from the form (an action through the page): type the required param, submit.
    b.eval(card + ".querySelector('input[id$=\"-mode\"]').focus()")
    b.call("Input.insertText", {"text": "quick"})
    b.enter()
    check(b.wait_for("location.hash.startsWith('#/runs/') && document.getElementById('run-meta')"), "start form started a run")
    new_id = b.eval("decodeURIComponent(location.hash.slice(7))")
    check(b.wait_for("document.getElementById('run-meta').dataset.state == 'succeeded'", 40), "the started run succeeded")
    check(not b.take_errors(), "no errors starting a run")

    # ---- run pages ----
    def step_row(step, what):
        return b.eval("(() => { const r = document.querySelector('#steps tr[data-step=\"%s\"]'); return r && %s; })()"
                      % (step, what))

    page("run-failed", "#/runs/" + cfg["failed"], "document.querySelector('#steps tr[data-step=\"Bad\"]')")
    check(step_row("Bad", "r.dataset.state") == "failed", "failed run: step Bad failed")
    check("Workflow failed. Causes: S07:Report/Write failed." in
          (b.eval("document.querySelector('#steps tr[data-error-of=\"Bad\"]').textContent") or ""),
          "failed run: Dataflow's failure cause is shown under its step")
    href = step_row("Bad", "r.querySelector('a').href") or ""
    check(href.startswith("https://console.cloud.google.com/dataflow/jobs/europe-west1/") and href.endswith("?project=ui-project"),
          "job linked to the Dataflow console: %s" % href)
    check(b.eval("document.querySelector('.dag g.node[data-step=\"Bad\"]').dataset.state") == "failed", "DAG coloured: Bad failed")
    check(b.eval("document.querySelector('.dag g.node[data-step=\"Load\"]').dataset.state") == "succeeded", "DAG coloured: Load succeeded")
    check(b.eval("!!document.getElementById('redrive')"), "a failed run offers redrive")
    rc = b.eval("(document.getElementById('root-cause') || {}).textContent") or ""
    check(rc.startswith("Bad") and "S07:Report/Write failed." in rc, "failed run: headline names the step that failed first and its cause: %s" % rc)
    for w in (1280, 390):
        b.viewport(w)
        b.pump(0.3)
        clip = b.eval("(() => { const e = document.querySelector('#steps tr.step-error .err-inner'); const r = e.getBoundingClientRect();"
                      " const wr = document.querySelector('#steps').parentElement.getBoundingClientRect();"
                      " return [r.right <= wr.right + 1, document.getElementById('root-cause').getBoundingClientRect().right <= innerWidth]; })()")
        check(clip == [True, True], "failed run at %d px: error, cause and headline not cut off (%s)" % (w, clip))
    b.viewport(1280)
    check(b.eval("document.querySelectorAll('#gantt rect[data-seg=\"running\"]').length") >= 5, "Gantt of the steps")
    # Notifications: one row per event and sink, with its delivery state and attempts
    rows = b.eval("[...document.querySelectorAll('#notifications tbody tr')].map(r => [r.dataset.sink, r.children[1].textContent,"
                  " r.dataset.state, r.children[2].textContent, +r.children[3].textContent])") or []
    check(["webhook", "failed", "delivered", "delivered", 1] in rows, "failed run: webhook row delivered, 1 attempt: %s" % rows)
    check(any(r[0] == "pubsub" and r[1] == "failed" and r[2] == "retrying" and r[3] == "retrying" and r[4] >= 1 for r in rows),
          "failed run: Pub/Sub row retrying: %s" % rows)
    check(b.eval("document.getElementById('notify-h').textContent") == "Notifications", "Notifications heading")

    page("run-recovered", "#/runs/" + cfg["recovered"], "document.getElementById('recovered')")
    check(not b.eval("document.getElementById('notifications')"), "a run without events has no Notifications section")
    note = b.eval("document.getElementById('recovered').textContent")
    check("Full" in note and "ui-full--" in note, "recovered note names the failed step and why: %s" % note)
    check(step_row("Notify", "r.dataset.state") == "succeeded", "on_failure step ran")
    check(b.eval("document.querySelector('.dag g.node[data-step=\"Quick\"]').dataset.state") == "none", "not reached: uncoloured")

    check(b.eval("!!document.querySelector('#run-meta .badge.s-recovered')"), "recovered run: its badge on the run page")

    page("run-redriven", "#/runs/" + cfg["redriven"], "document.querySelector('#steps tr[data-step=\"Bad\"]')", widths=(1280,))
    check(step_row("Bad", "r.dataset.state") == "succeeded" and step_row("Bad", "r.dataset.attempt") == "2",
          "redriven run: Bad succeeded at attempt 2")

    # ---- a step retried twice: three attempts in the table and three bars in the timeline (issue 22) ----
    page("run-retried", "#/runs/" + cfg["retried"], "document.querySelector('#steps tr[data-step=\"Flaky\"] .attempts-toggle')")
    check(b.eval("document.querySelectorAll('#steps tr.attempt-row[data-step=\"Flaky\"]:not([hidden])').length") == 0,
          "attempts are folded at first")
    b.eval("document.querySelector('#steps tr[data-step=\"Flaky\"] .attempts-toggle').focus()")
    b.enter()
    check(b.wait_for("document.querySelectorAll('#steps tr.attempt-row[data-step=\"Flaky\"]:not([hidden])').length == 3"),
          "Enter on the toggle shows three attempts")
    atts = b.eval("[...document.querySelectorAll('#steps tr.attempt-row[data-step=\"Flaky\"]')].map(r => [r.dataset.attempt,"
                  " r.dataset.state, r.dataset.jobId, r.textContent.includes(r.dataset.jobId)])") or []
    check([a[:2] for a in atts] == [["1", "failed"], ["2", "failed"], ["3", "succeeded"]], "attempts 1, 2 failed, 3 succeeded: %s" % atts)
    check(len({a[2] for a in atts}) == 3 and all(a[2] and a[3] for a in atts), "each attempt shows its own job id: %s" % atts)
    check("worker lost again" in (b.eval("document.querySelector('#steps tr.attempt-row[data-attempt=\"2\"]').textContent") or ""),
          "attempt 2's cause is shown on its row")
    segs = b.eval("[...document.querySelectorAll('#gantt g[data-step=\"Flaky\"] rect[data-seg=\"running\"]')].map(r => r.dataset.attempt)")
    check(segs == ["1", "2", "3"], "the timeline draws one bar per attempt: %s" % segs)
    check(b.eval("document.querySelectorAll('#gantt g[data-step=\"Flaky\"] rect[data-seg=\"pending\"][data-attempt=\"2\"]').length") == 1,
          "and the backoff before attempt 2")
    for w in (1280, 390):
        b.screenshot(os.path.join(SHOTS, "run-retried-attempts-%d.png" % w), w)
        overflow = b.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        check(overflow is not None and overflow <= 1, "attempts shown at %d px: no horizontal page scroll (%s)" % (w, overflow))
    b.viewport(1280)

    # ---- the runs x steps grid: a failing streak at a glance ----
    page("workflow-grid", "#/workflows/flaky", "document.querySelectorAll('#grid td a.cell').length >= 8")
    streak = b.eval("[...document.querySelectorAll('#grid tr[data-step=\"Broken\"] td')].map(td => td.dataset.state || '')")
    runs_cols = b.eval("[...document.querySelectorAll('#grid th.grid-run')].map(th => th.dataset.run)")
    check("failed,failed,failed" in ",".join(streak) and sorted(runs_cols[-3:]) == sorted(cfg["broken"]),
          "grid: Broken failed in the three newest runs, side by side: %s" % streak)
    rows = b.eval("[...document.querySelectorAll('#grid tbody tr')].map(r => r.dataset.step)")
    check(rows[0] == "Prep", "grid: rows from the start step along the graph: %s" % rows)
    tip = b.eval("document.querySelector('#grid tr[data-step=\"Flaky\"] a.cell').title") or ""
    check("3 attempts" in tip and "succeeded" in tip, "grid: a cell's hover names its state and attempts: %s" % tip)
    href = b.eval("document.querySelector('#grid tr[data-step=\"Broken\"] td[data-state=\"failed\"] a').getAttribute('href')") or ""
    check(href.startswith("#/runs/"), "grid: a cell links to its run: %s" % href)
    page("run-cancelled", "#/runs/" + cfg["cancelled"], "document.getElementById('run-meta')", widths=(1280,))
    check(b.eval("document.getElementById('run-meta').dataset.state") == "cancelled", "cancelled run")

    page("run-running", "#/runs/" + cfg["running"], "document.querySelector('#gantt rect[data-seg=\"running\"]')")
    w1 = b.eval("+document.querySelector('#gantt g[data-step=\"Work\"] rect[data-seg=\"running\"]').getAttribute('width')")
    check(b.eval("document.getElementById('run-meta').dataset.state") == "running", "running run")
    check(b.eval("!!document.getElementById('cancel')"), "a running run offers cancel")
    check(step_row("Work", "r.children[5].textContent") not in ("", "—"), "running time shown for a running job")
    time.sleep(2.5)
    w2 = b.eval("+document.querySelector('#gantt g[data-step=\"Work\"] rect[data-seg=\"running\"]').getAttribute('width')")
    check(w2 > w1 or w1 > 0, "the Gantt is drawn while the run is in progress (%s -> %s)" % (w1, w2))

    # ---- cancel from the page, by keyboard ----
    b.navigate(BASE + "/ui/#/runs/" + cfg["ui_cancel"])
    check(b.wait_for("document.getElementById('cancel') && !document.getElementById('cancel').disabled"), "cancel button")
    b.eval("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    for _ in range(60):
        b.tab()
        if b.eval("document.activeElement && document.activeElement.id") == "cancel":
            break
    check(b.eval("document.activeElement.id") == "cancel", "the cancel button is reachable by Tab")
    b.enter()
    check(b.wait_for("document.activeElement && document.activeElement.id == 'cancel-confirm'"), "Enter asks to confirm")
    b.enter()
    check(b.wait_for("['cancelling','cancelled'].includes(document.getElementById('run-meta').dataset.state)", 20),
          "the page shows the run cancelling")
    job = None
    deadline = time.time() + 20
    while time.time() < deadline:
        with urllib.request.urlopen(cfg["emulator"] + "/emulator/jobs") as r:
            jobs = json.load(r)["jobs"]
        job = next((j for j in jobs if j["name"].startswith("slow-work--" + cfg["ui_cancel"])), None)
        if job and job.get("currentState") in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"):
            break
        time.sleep(0.2)
    check(job is not None and job.get("currentState") in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"),
          "the emulator's job was cancelled: %s" % (job and job.get("currentState")))
    check(b.wait_for("document.getElementById('run-meta').dataset.state == 'cancelled'", 20), "and the page updates live")
    errs = b.take_errors()
    check(not errs, "cancel: no console errors %s" % errs)
finally:
    b.close()
print("%d browser check(s) failed" % fails if fails else "all browser checks passed")
sys.exit(1 if fails else 0)
