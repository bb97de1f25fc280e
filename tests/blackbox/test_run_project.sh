#!/usr/bin/env bash
# Which project `sluice run` launches into when the workflow names none (issue 8 item 10: the credentials were
# never consulted): the service-account key's project_id, the metadata server's project/project-id (ADC with no
# key and no gcloud file), --project and SLUICE_PROJECT over the credentials, the workflow's over all of them;
# with none at all the launch fails with a message naming every way to set one. The project is read from the
# emulator's launch log (/emulator/launches).
source "$(dirname "$0")/emu_lib.sh"

cat >"$TMPD/noproject.lua" <<'LUA'
return {
  name = "noproject", region = "europe-west4", start = "A",
  steps = { A = { job_name = "noproject-a", template = "gs://bucket/a.json" } },
}
LUA
sed 's/name = "noproject",/name = "noproject", project = "wf-project",/' "$TMPD/noproject.lua" >"$TMPD/withproject.lua"

# run WORKFLOW DB ARGS...: sluice run against the emulator; exit code on stdout, output in $TMPD/run.{out,err}
run() {
    local wf=$1 db=$2; shift 2
    local rc=0
    SLUICE_LOG_LEVEL=info timeout 60 "$SLUICE_BIN" run "$TMPD/$wf.lua" --store "$TMPD/$db" --dataflow-url "$B" \
        --poll-interval 100ms --quiet "$@" >"$TMPD/run.out" 2>"$TMPD/run.err" || rc=$?
    echo "$rc"
}
# the project of the last launch the emulator recorded
last_project() { req GET /emulator/launches >/dev/null; jget 'd.launches[#d.launches] and d.launches[#d.launches].project'; }

emu_start proj --write-credentials "$TMPD/creds" --project key-project --pending-ms 20 --running-ms 50
KEY="$TMPD/creds/service-account.json"
unset SLUICE_PROJECT GOOGLE_APPLICATION_CREDENTIALS

# 1. the key file's project_id
rc=$(run noproject a.db --credentials "$KEY")
expect_eq "run with only a key file succeeds" "$rc" 0
expect_eq "launched into the key file's project" "$(last_project)" key-project
grep -q 'default project key-project from the credentials (the service-account key' "$TMPD/run.err" \
    && ok "the source is logged" || { cat "$TMPD/run.err"; fail "no log line naming the key file"; }

# 2. --project and SLUICE_PROJECT win over the credentials; --project over SLUICE_PROJECT
rc=$(SLUICE_PROJECT=env-project run noproject b.db --credentials "$KEY")
expect_eq "SLUICE_PROJECT over the key file" "$rc/$(last_project)" 0/env-project
rc=$(SLUICE_PROJECT=env-project run noproject c.db --credentials "$KEY" --project flag-project)
expect_eq "--project over SLUICE_PROJECT" "$rc/$(last_project)" 0/flag-project
# 3. the workflow's project over everything (GOOGLE_CLOUD_PROJECT is not a source at all)
rc=$(GOOGLE_CLOUD_PROJECT=gcp-env run withproject d.db --credentials "$KEY" --project flag-project)
expect_eq "the workflow's project over --project" "$rc/$(last_project)" 0/wf-project
rc=$(GOOGLE_CLOUD_PROJECT=gcp-env run noproject e.db --token static-token)
expect_eq "GOOGLE_CLOUD_PROJECT is ignored: no project, the run fails" "$rc" 1

# 4. no project anywhere (a static token names none): the step fails, naming every way to set one
grep -q "no project: set project on the step or the workflow, pass --project, set SLUICE_PROJECT, or use credentials that name one" \
    "$TMPD/run.out" && ok "the failure names every way to set a project" || { cat "$TMPD/run.out" "$TMPD/run.err"; fail "no-project message"; }
grep -q '"severity":"WARNING".*no default project' "$TMPD/run.err" && ok "a warning at start-up" || { cat "$TMPD/run.err"; fail "no start-up warning"; }

# Regression (issue 17, finding 16): `sluice run` warned "no default project" when every step names one.
rc=$(run withproject g.db --credentials "$KEY")
expect_eq "a workflow that names its project runs without --project" "$rc/$(last_project)" 0/wf-project
grep -q 'no default project' "$TMPD/run.err" && { cat "$TMPD/run.err"; fail "warned 'no default project' though every step names one"; } \
    || ok "no 'no default project' warning when every step names its project"

# 5. ADC without a key file or gcloud file: the metadata server's project/project-id
mkdir -p "$TMPD/nogcloud"
before=$(req GET /emulator/launches >/dev/null; jget '#d.launches')
rc=$(HOME="$TMPD/nogcloud" CLOUDSDK_CONFIG="$TMPD/nogcloud" GCE_METADATA_HOST="${B#http://}" run noproject f.db)
expect_eq "run with the metadata server succeeds" "$rc" 0
expect_eq "launched into the metadata server's project" "$(last_project)" key-project
expect_eq "one more launch" "$(req GET /emulator/launches >/dev/null; jget '#d.launches')" "$((before + 1))"
grep -q "default project key-project from the credentials (the metadata server's project/project-id)" "$TMPD/run.err" \
    && ok "the metadata source is logged" || { cat "$TMPD/run.err"; fail "no log line naming the metadata server"; }

emu_stop "$EMU_PID"
finish
