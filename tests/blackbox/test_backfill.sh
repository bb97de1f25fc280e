#!/usr/bin/env bash
# test_backfill: `sluice backfill` and /v1/backfills. A daily schedule (03:00 Europe/Amsterdam) backfilled over 365
# days starts exactly 365 runs with the right logical times (02:00Z in winter, 01:00Z in summer, the interval the
# day before); issuing it again starts none; --dry-run lists the same 365 times first, and none afterwards. A
# workflow without a schedule gets one run per day. Bad requests get a clear 400.
source "$(dirname "$0")/serve_lib.sh"
W="${SLUICE_SRC:?}/tests/blackbox/backfill_workflows"
OPTOK=op-token
emu_start emu --no-auth --pending-ms 20 --running-ms 1000
E=$B
serve_start srv --workflows "$W" --store "$TMPD/bf.db" --dataflow-url "$E" --dataflow-no-auth \
    --project p --no-auth --schedule-tick 200ms --poll-interval 200ms
export SLUICE_SERVER=$S SLUICE_OPERATOR_TOKEN=$OPTOK
"$SLUICE_BIN" backfill nightly --from 2025-01-01 --to 2025-12-31 --dry-run >"$TMPD/dry1" || fail "dry run"
expect_eq "the dry run lists 365 times" "$(wc -l <"$TMPD/dry1")" 365
expect_eq "the first is 1 January, 03:00 CET" "$(head -1 "$TMPD/dry1")" "2025-01-01T02:00:00.000Z"
expect_eq "the last is 31 December" "$(tail -1 "$TMPD/dry1")" "2025-12-31T02:00:00.000Z"
grep -q '^2025-07-01T01:00:00.000Z$' "$TMPD/dry1" && ok "summer times are 03:00 CEST" || fail "no 2025-07-01T01:00Z"
"$SLUICE_BIN" backfill nightly --from 2025-01-01 --to 2025-12-31 --json >"$TMPD/bf1.json" || fail "backfill"
cp "$TMPD/bf1.json" "$TMPD/body"
expect_eq "365 runs started" "$(jget d.backfill.started)" 365
expect_eq "none existed" "$(jget d.backfill.existing)" 0
# (serve ticks the schedules meanwhile: a run of today's 03:00 may join; only the 2025 ones are counted)
y2025='filter(d.runs, function(r) return (r.request_key or ""):find(":2025%-") ~= nil end)'
all_done() { sget "/v1/runs?workflow=nightly&limit=1000" >/dev/null; [ "$(jget "count($y2025, function(r) return r.state == 'succeeded' end)")" -eq 365 ]; }
poll_until 120 all_done && ok "the 365 runs succeeded" || fail "runs: $(jget 'len(d.runs)')"
expect_eq "exactly 365 runs of nightly" "$(jget "len($y2025)")" 365
# the logical times the API shows are the dry run's, one each
jget "table.concat(map($y2025, function(r) return r.request_key:match('^schedule:nightly:(.*)$') end), '\n')" | sort >"$TMPD/keys"
sort "$TMPD/dry1" >"$TMPD/dry1.sorted"
cmp -s "$TMPD/keys" "$TMPD/dry1.sorted" && ok "the runs' times are the dry run's" || fail "runs and dry run differ"
id=$(jget 'filter(d.runs, function(r) return r.request_key == "schedule:nightly:2025-03-30T01:00:00.000Z" end)[1].id')
sget "/v1/runs/$id" >/dev/null
expect_eq "the DST day's logical time" "$(jget d.run.logical_time)" "2025-03-30T01:00:00.000Z"
expect_eq "its interval starts the day before" "$(jget d.run.interval.start)" "2025-03-29T02:00:00.000Z"
expect_eq "the hook saw the same (ctx.run.interval)" "$(jget 'd.run.steps[1].result.output.day')" "2025-03-29"
# again: nothing new
"$SLUICE_BIN" backfill nightly --from 2025-01-01 --to 2025-12-31 --json >"$TMPD/body" || fail "backfill again"
expect_eq "again: none started" "$(jget d.backfill.started)" 0
expect_eq "again: 365 had a run" "$(jget d.backfill.existing)" 365
"$SLUICE_BIN" backfill nightly --from 2025-01-01 --to 2025-12-31 --dry-run >"$TMPD/dry2" || fail "dry run again"
expect_eq "the dry run lists nothing now" "$(wc -l <"$TMPD/dry2")" 0
sget "/v1/runs?workflow=nightly&limit=1000" >/dev/null
expect_eq "still 365 runs" "$(jget "len($y2025)")" 365
# progress in the API
bid=$(cp "$TMPD/bf1.json" "$TMPD/body"; jget d.backfill.id)
sget "/v1/backfills/$bid" >/dev/null
expect_eq "its progress: 365 runs succeeded" "$(jget d.backfill.runs.succeeded)" 365
expect_eq "its state" "$(jget d.backfill.state)" done
sget /v1/backfills >/dev/null
expect_eq "the list has both" "$(jget 'len(d.backfills)')" 2
# no schedule: one run per day
"$SLUICE_BIN" backfill daily_plain --from 2025-02-27 --to 2025-03-01 --dry-run >"$TMPD/dry3"
expect_eq "a day each, midnight UTC" "$(tr '\n' ' ' <"$TMPD/dry3")" "2025-02-27T00:00:00.000Z 2025-02-28T00:00:00.000Z 2025-03-01T00:00:00.000Z "
# bad input
code=$(sreq POST /v1/backfills '{"workflow":"nightly","from":"2025-13-01","to":"2025-12-31"}' -H 'Content-Type: application/json')
expect_eq "a bad date is a 400" "$code" 400
code=$(sreq POST /v1/backfills '{"workflow":"nightly","from":"2025-01-01","to":"2025-12-31","rerun":"some"}' -H 'Content-Type: application/json')
expect_eq "a bad rerun is a 400" "$code" 400
code=$(sreq POST /v1/backfills '{"workflow":"nope","from":"2025-01-01","to":"2025-12-31"}' -H 'Content-Type: application/json')
expect_eq "an unknown workflow is a 404" "$code" 404
rc=0; "$SLUICE_BIN" backfill nightly --from 2025-01-01 2>/dev/null || rc=$?
expect_eq "the CLI wants --to" "$rc" 2
# --max-active 2 over 6 days of a workflow with a Dataflow job: never more than 2 of its jobs at once (sampled by
# the emulator), all 6 succeed; then a cancelled one is redriven by --rerun failed, and only that one.
"$SLUICE_BIN" backfill daily_job --from 2025-06-01 --to 2025-06-06 --max-active 2 --json >"$TMPD/body" || fail "backfill daily_job"
bj=$(jget d.backfill.id)
expect_eq "max-active: 2 started at once" "$(jget d.backfill.started)" 2
six_done() { sget "/v1/backfills/$bj" >/dev/null; [ "$(jget d.backfill.runs.succeeded)" = 6 ]; }
poll_until 60 six_done && ok "max-active: all 6 runs succeeded" || fail "max-active: $(jget d.backfill.runs)"
expect_eq "max-active: the backfill is done" "$(jget d.backfill.state)" done
B=$E; req GET /emulator/stats >/dev/null
max=$(jget d.active_jobs.max)
[ "$max" -le 2 ] && ok "max-active: at most $max jobs at once" || fail "max-active: $max jobs at once"
B=$E; req POST /emulator/config '{"job_defaults":{"running_ms":600000}}' >/dev/null
"$SLUICE_BIN" backfill daily_job --from 2025-06-07 --to 2025-06-07 --json >"$TMPD/body" || fail "backfill one day"
sget "/v1/runs?workflow=daily_job&limit=1000" >/dev/null
cid=$(jget 'filter(d.runs, function(r) return r.request_key == "schedule:daily_job:2025-06-07T06:00:00.000Z" end)[1].id')
one_running() { sget "/v1/runs/$cid" >/dev/null; [ "$(jget 'd.run.steps[1].state')" = running ]; }
poll_until 20 one_running || fail "the 7 June run does not run"
"$SLUICE_BIN" cancel "$cid" >/dev/null || fail "cancel"
cancelled() { sget "/v1/runs/$cid" >/dev/null; [ "$(jget d.run.state)" = cancelled ]; }
poll_until 20 cancelled || fail "the run was not cancelled"
"$SLUICE_BIN" backfill daily_job --from 2025-06-01 --to 2025-06-07 --rerun failed --dry-run >"$TMPD/dry4"
expect_eq "rerun failed, dry run: only the cancelled one" "$(cat "$TMPD/dry4")" "rerun 2025-06-07T06:00:00.000Z run $cid (cancelled)"
"$SLUICE_BIN" backfill daily_job --from 2025-06-01 --to 2025-06-07 --rerun failed --json >"$TMPD/body"
expect_eq "rerun failed: one redriven" "$(jget d.backfill.rerun)" 1
expect_eq "rerun failed: six left alone" "$(jget d.backfill.existing)" 6
sget "/v1/runs/$cid" >/dev/null
expect_eq "the cancelled run runs again" "$(jget d.run.state)" running
[ "$FAILS" -eq 0 ] || exit 1
