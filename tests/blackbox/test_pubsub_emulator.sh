#!/usr/bin/env bash
# test_pubsub_emulator: interop with Google's own Pub/Sub emulator (`gcloud beta emulators pubsub start`). The
# Dataflow emulator's job ends reach a topic as a log sink (or Eventarc) would publish them, through a small relay
# (pubsub_relay.py); Sluice reads them (a) by push — a push subscription whose endpoint is `sluice serve` (the
# emulator sends no OIDC token, so that serve runs --no-auth) — and (b) by pull: `sluice serve --subscription`
# with PUBSUB_EMULATOR_HOST, both log-sink LogEntries and CloudEvents-bound statusChanged events. The poll interval
# is 10 minutes, so only the messages move the runs. Checks: the example chain and the fan-out workflow succeed,
# one job per name; a nacked message is redelivered and then recorded; kill -9 of the pulling serve while messages
# are outstanding, then a restart on the same store: nothing lost, one job per name.
# Without gcloud (or Java) the test says so and is skipped (exit 77); under CI=true that is a failure.
WF="${SLUICE_SRC:?}/workflows"
RELAY="$(dirname "$0")/pubsub_relay.py"
OPTOK=operator-secret
PROJ=sluice-interop
source "$(dirname "$0")/pubsub_lib.sh"

# metric NAME{LABELS}: its value in $TMPD/metrics (0 when absent).
metric() { awk -v k="$1" '$1 == k {print $2; f=1} END {if (!f) print 0}' "$TMPD/metrics"; }

# start_runs: two runs each of the example chain and the fan-out workflow; their ids into RUNS.
start_runs() {
    RUNS=()
    for wf in example daily example daily; do
        local id
        id=$("$SLUICE_BIN" start "$wf" --server "$S" --token "$OPTOK" --param date=2026-11-27) || fail "$1: start $wf"
        RUNS+=("$id")
    done
}
runs_done() {
    for id in "${RUNS[@]}"; do
        sget "/v1/runs/$id" >/dev/null
        case "$(jget d.run.state)" in succeeded|failed|cancelled) ;; *) return 1 ;; esac
    done
}
check_runs() { # TAG EMULATOR_URL
    poll_until 90 runs_done || fail "$1: runs did not finish (the messages are not driving them?)"
    for id in "${RUNS[@]}"; do
        sget "/v1/runs/$id" >/dev/null
        expect_eq "$1: run $id state" "$(jget d.run.state)" succeeded
    done
    B=$2; req GET /emulator/stats >/dev/null
    expect_eq "$1: one job per name" "$(not_once jobs_created_by_name)" 0
    local n; n=$(jget 'len(d.jobs_created_by_name)')
    [ "$n" -ge 12 ] && ok "$1: $n jobs" || fail "$1: only $n jobs"
}

# setup_mode TAG KIND (push|pull) EVENTS (logsink|eventarc) [SUBSCRIPTION FIELDS]: a topic, a relay and a Dataflow
# emulator publishing to it, a subscription of the kind (with the extra JSON fields), and serve reading it.
setup_mode() {
    local tag=$1 kind=$2 events=$3 extra=${4:-}
    expect_eq "$tag: topic" "$(psreq PUT "/topics/events-$tag")" 200
    emu_start "emu-$tag" --no-auth --seed 11 --pending-ms 50 --running-ms 200
    E=$B
    rm -f "$TMPD/relay-$tag.ready"
    python3 "$RELAY" "$TMPD/relay-$tag.ready" "$PS/topics/events-$tag" 2>"$TMPD/relay-$tag.err" &
    EMU_PIDS+=("$!")
    poll_until 10 test -s "$TMPD/relay-$tag.ready" || { fail "$tag: relay not ready"; return 1; }
    local relay; relay=$(tr -d '\n' <"$TMPD/relay-$tag.ready")
    local url_key=push_url; [ "$events" = eventarc ] && url_key=eventarc_url
    B=$E; expect_eq "$tag: emulator events to the relay" "$(req POST /emulator/config "{\"events\":{\"$url_key\":\"$relay/$events\"}}")" 200
    if [ "$kind" = push ]; then
        serve_start "srv-$tag" --workflows "$WF" --store "$TMPD/$tag.db" --dataflow-url "$E" --dataflow-no-auth \
            --no-auth --poll-interval 10m
        local sub="{\"topic\":\"projects/$PROJ/topics/events-$tag\",\"ackDeadlineSeconds\":10,\"pushConfig\":{\"pushEndpoint\":\"$S/v1/events/pubsub\"}}"
        expect_eq "$tag: push subscription" "$(psreq PUT "/subscriptions/sub-$tag" "$sub")" 200
    else
        local sub="{\"topic\":\"projects/$PROJ/topics/events-$tag\",\"ackDeadlineSeconds\":10$extra}"
        expect_eq "$tag: pull subscription" "$(psreq PUT "/subscriptions/sub-$tag" "$sub")" 200
        SUB="projects/$PROJ/subscriptions/sub-$tag"
        serve_start "srv-$tag" --workflows "$WF" --store "$TMPD/$tag.db" --dataflow-url "$E" --dataflow-no-auth \
            --audience sluice-test --jwks-url "$E/oauth2/v3/certs" --operator-token "$OPTOK" --poll-interval 10m \
            --subscription "$SUB"
    fi
}

stop_serve() { # TAG
    local rc=0; kill -TERM "$SRV_PID"; wait "$SRV_PID" || rc=$?
    expect_eq "$1: serve exits 0 on SIGTERM" "$rc" 0
}

# (a) push: the emulator POSTs its own push bodies (escaped slashes, both id spellings, no token) to serve.
setup_mode push push logsink
start_runs push
check_runs push "$E"
curl -s "$S/metrics" >"$TMPD/metrics"
n=$(metric 'sluice_events_total{source="pubsub",outcome="recorded"}')
[ "$n" -ge 12 ] && ok "push: $n events recorded from the emulator's pushes" || fail "push: $n events recorded"
stop_serve push

# (b) pull of log-sink messages, the first two nacked (fault injection): redelivered, then recorded.
export SLUICE_FAULT_NACK_PULLED=2
setup_mode pull pull logsink
unset SLUICE_FAULT_NACK_PULLED
start_runs pull
check_runs pull "$E"
curl -s "$S/metrics" >"$TMPD/metrics"
L="subscription=\"$SUB\""
expect_eq "pull: two messages nacked" "$(metric "sluice_pubsub_nacked_total{$L,reason=\"fault\"}")" 2
n=$(metric "sluice_pubsub_redelivered_total{$L}")
[ "$n" -ge 2 ] && ok "pull: the nacked messages were redelivered ($n)" || fail "pull: $n redeliveries"
n=$(metric 'sluice_events_total{source="pull",outcome="recorded"}')
[ "$n" -ge 12 ] && ok "pull: $n events recorded from pulled messages" || fail "pull: $n events recorded"
# the last acknowledgements may still be on their way when the runs are seen finished: poll for them
all_acked() {
    curl -s "$S/metrics" >"$TMPD/metrics"
    [ "$(metric "sluice_pubsub_acked_total{$L}")" = "$(( $(metric "sluice_pubsub_pulled_total{$L}") - 2 ))" ]
}
poll_until 10 all_acked && ok "pull: every pulled message acknowledged but the nacked ones" \
    || fail "pull: $(metric "sluice_pubsub_acked_total{$L}") acknowledged of $(metric "sluice_pubsub_pulled_total{$L}") pulled (2 nacked)"
grep -q '^sluice_pubsub_ack_latency_seconds_count [1-9]' "$TMPD/metrics" && ok "pull: ack latency observed" \
    || fail "pull: no ack latency"
expect_eq "pull: the API still needs a token" "$(sreq POST /v1/runs '{"workflow":"example"}' -H 'Content-Type: application/json')" 401
stop_serve pull

# (b') pull of Eventarc statusChanged events (CloudEvents binding: ce-* attributes, data = the event).
setup_mode arc pull eventarc
start_runs arc
check_runs arc "$E"
curl -s "$S/metrics" >"$TMPD/metrics"
n=$(metric 'sluice_events_total{source="pull",outcome="recorded"}')
[ "$n" -ge 12 ] && ok "pull eventarc: $n events recorded" || fail "pull eventarc: $n events recorded"
stop_serve arc

# kill -9 while messages are outstanding: the first serve holds its first two pulled messages unanswered
# (SLUICE_FAULT_HOLD_PULLED, as a process stuck with them would), then is stopped (SIGSTOP) while more jobs end, so
# their messages are published and partly handed to its pending pull; then it is killed and started again on the
# same store. A dead-letter policy makes the emulator count deliveryAttempt, which the restarted serve reads: the
# held messages come back with an attempt above 1, whatever the timing of the rest.
expect_eq "crash: dead-letter topic" "$(psreq PUT /topics/dead-letters)" 200
SLUICE_FAULT_HOLD_PULLED=2 setup_mode crash pull logsink ",\"deadLetterPolicy\":{\"deadLetterTopic\":\"projects/$PROJ/topics/dead-letters\",\"maxDeliveryAttempts\":50}"
B=$E; req POST /emulator/config '{"job_defaults":{"running_ms":1500}}' >/dev/null
start_runs crash
launched() { B=$E; req GET /emulator/stats >/dev/null; [ "$(jget 'len(d.jobs_created_by_name or {})')" -ge 4 ]; }
poll_until 30 launched || fail "crash: the first jobs were not launched"
held() { curl -s "$S/metrics" >"$TMPD/metrics"; [ "$(metric "sluice_pubsub_pulled_total{subscription=\"$SUB\"}")" -ge 2 ]; }
poll_until 30 held || fail "crash: the first serve never pulled the two messages it holds"
kill -STOP "$SRV_PID"
# every job launched so far ends and its messages reach the topic while serve cannot acknowledge them
delivered() {
    B=$E; req GET /emulator/stats >/dev/null
    local q d; q=$(jget 'd.deliveries and d.deliveries.push and d.deliveries.push.queued or 0')
    d=$(jget 'd.deliveries and d.deliveries.push and d.deliveries.push.delivered or 0')
    [ "$q" -ge "$J" ] && [ "$q" = "$d" ]
}
B=$E; req GET /emulator/stats >/dev/null; J=$(jget 'len(d.jobs_created_by_name or {})') # serve launches no more
poll_until 30 delivered || fail "crash: the job ends were not published"
kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
serve_start "srv-crash2" --workflows "$WF" --store "$TMPD/crash.db" --dataflow-url "$E" --dataflow-no-auth \
    --audience sluice-test --jwks-url "$E/oauth2/v3/certs" --operator-token "$OPTOK" --poll-interval 10m \
    --subscription "$SUB"
check_runs crash "$E"
curl -s "$S/metrics" >"$TMPD/metrics"
n=$(metric "sluice_pubsub_redelivered_total{subscription=\"$SUB\"}")
[ "$n" -ge 1 ] && ok "crash: $n message(s) held by the killed serve were redelivered (deliveryAttempt > 1)" \
    || fail "crash: no redelivery after kill -9 (were messages outstanding?)"
stop_serve crash

ps_stop
finish
