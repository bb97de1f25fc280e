#!/usr/bin/env bash
# test_ui_proxy: opening the web UI the way docs/ui.md ("Opening the UI on Cloud Run") tells an operator to on
# Cloud Run, as far as it can be done here (issue 22): `gcloud run services proxy --token T` is stood in for by
# token_proxy.py, which adds a Google ID token (the emulator's metadata server issues it for its service account,
# with the service's audience) to every request; serve accepts that identity on the API through --api-allow-email
# only (no operator token). In headless Chromium through the proxy: the pages load without a token and say
# "Signed in by the proxy", a run is started from the workflow's form and cancelled from its page (both POSTs
# through the proxy), and the emulator's job is cancelled. Without the proxy the same API answers 401.
source "$(dirname "$0")/serve_lib.sh"
command -v chromium >/dev/null || { echo "chromium is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
WF="${SLUICE_SRC:?}/tests/blackbox/ui_workflows"
SA=sluice-emulator@emulator-project.iam.gserviceaccount.com
emu_start emu --write-credentials "$TMPD/creds" --pending-ms 40 --running-ms 250
E=$B
expect_eq "emulator config" "$(req POST /emulator/config '{"jobs":[{"match":"slow-work--*","running_ms":600000}]}')" 200
curl -sf -H 'Metadata-Flavor: Google' \
    "$E/computeMetadata/v1/instance/service-accounts/default/identity?audience=sluice-ui-proxy" >"$TMPD/token" \
    || fail "no identity token from the emulator"
serve_start srv --workflows "$WF" --store "$TMPD/p.db" --dataflow-url "$E" \
    --credentials "$TMPD/creds/service-account.json" --audience sluice-ui-proxy --jwks-url "$E/oauth2/v3/certs" \
    --allow-email pubsub-push@emulator.iam.gserviceaccount.com --api-allow-email "$SA" --poll-interval 200ms
python3 "$(dirname "$0")/token_proxy.py" "$S" "$TMPD/token" "$TMPD/pport" &
EMU_PIDS+=($!)
poll_until 10 test -s "$TMPD/pport" || fail "the token proxy did not start"
P="http://127.0.0.1:$(cat "$TMPD/pport")"

expect_eq "the API without the proxy: 401" "$(sreq GET /v1/runs)" 401
expect_eq "the API through the proxy: 200" "$(curl -s -o /dev/null -w '%{http_code}' "$P/v1/runs")" 200
expect_eq "the UI through the proxy" "$(curl -s -o /dev/null -w '%{http_code}' "$P/ui/")" 200

cat >"$TMPD/cfg.json" <<JSON
{"proxy": "$P", "emulator": "$E", "shots": "$TMPD"}
JSON
if python3 - "$TMPD/cfg.json" <<'PY'; then ok "browser through the proxy"; else fail "browser through the proxy"; fi
import json, os, sys, time, urllib.request
sys.path.insert(0, os.path.join(os.environ["SLUICE_SRC"], "tests", "blackbox"))
from ui_cdp import Browser
cfg = json.load(open(sys.argv[1]))
fails = 0
def check(cond, msg):
    global fails
    print(("ok: " if cond else "FAIL: ") + msg)
    fails += 0 if cond else 1
b = Browser()
try:
    b.open_tab()
    b.viewport(1280)
    b.navigate(cfg["proxy"] + "/ui/#/runs")
    check(b.wait_for("document.querySelector('#runs tbody tr')"), "the runs page loads without a token")
    check(b.wait_for("document.getElementById('auth-state').textContent == 'Signed in by the proxy'"), "it says the proxy signed in")
    check(b.eval("document.getElementById('token-form').hidden"), "it asks for no token")
    b.navigate(cfg["proxy"] + "/ui/#/workflows/slow")
    card = "document.querySelector('.workflow[data-workflow=\"slow\"]')"
    check(b.wait_for(card + " && !" + card + ".querySelector('form.start button').disabled"), "the start form is offered")
    b.eval(card + ".querySelector('form.start input').focus()")
    b.enter()
    check(b.wait_for("location.hash.startsWith('#/runs/') && document.getElementById('run-meta')"), "a run started from the form")
    run = b.eval("decodeURIComponent(location.hash.slice(7))")
    check(b.wait_for("document.getElementById('cancel') && !document.getElementById('cancel').disabled", 20), "cancel offered")
    b.eval("document.getElementById('cancel').focus()")
    b.enter()
    check(b.wait_for("document.activeElement && document.activeElement.id == 'cancel-confirm'"), "asked to confirm")
    b.enter()
    check(b.wait_for("document.getElementById('run-meta').dataset.state == 'cancelled'", 30), "the run is cancelled")
    with urllib.request.urlopen(cfg["emulator"] + "/emulator/jobs") as r:
        jobs = json.load(r)["jobs"]
    job = next((j for j in jobs if j["name"].startswith("slow-work--" + run)), None)
    check(job is not None and job.get("currentState") in ("JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"),
          "the emulator's job was cancelled: %s" % (job and job.get("currentState")))
    errs = b.take_errors()
    check(not errs, "no console errors %s" % errs)
finally:
    b.close()
sys.exit(1 if fails else 0)
PY
finish
