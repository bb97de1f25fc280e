/* events: every reference sample decoded field by field, structured CloudEvents, irrelevant inputs, and a
 * list of bad inputs that must each give the right status and a message (and no leak under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "job_state.h"
#include "testutil.h"

#define JOB_ID "2026-11-30_02_00_13-8812734509127735501"
#define JOB_NAME "my-job-1--r7f3k2-1"
#define T_LOG 1796004867318LL /* 2026-11-30T02:14:27.318204551Z */
#define T_STATE 1796004866751LL /* 2026-11-30T02:14:26.751Z */
#define SAMPLE_LABELS "{\"sluice-workflow\":\"example\",\"sluice-run\":\"r7f3k2\",\"sluice-step\":\"step1\"}"
#define WORKER_POOL_STOPPED "Worker pool stopped."

typedef struct {
    const char *source, *message_id, *job_id, *job_name, *project, *region, *state;
    int confirmed;
    const char *log_text, *labels;
    int64_t time_ms;
    int attempt;
} want_ev;

static void str_field(const char *what, const char *got, const char *want)
{
    if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
        fprintf(stderr, "%s: got %s%s%s, want %s%s%s\n", what, got ? "'" : "", got ? got : "NULL", got ? "'" : "",
                want ? "'" : "", want ? want : "NULL", want ? "'" : "");
    if (want == NULL)
        assert_null(got);
    else {
        assert_non_null(got);
        assert_string_equal(got, want);
    }
}

static void check(const ev_job_event *ev, const want_ev *w)
{
    str_field("source", ev->source, w->source);
    str_field("message_id", ev->message_id, w->message_id);
    str_field("job_id", ev->job_id, w->job_id);
    str_field("job_name", ev->job_name, w->job_name);
    str_field("project", ev->project, w->project);
    str_field("region", ev->region, w->region);
    str_field("state", ev->state, w->state);
    str_field("log_text", ev->log_text, w->log_text);
    if (ev->state_confirmed != w->confirmed) fprintf(stderr, "state_confirmed: got %d want %d\n", ev->state_confirmed, w->confirmed);
    assert_int_equal(ev->state_confirmed, w->confirmed);
    if (ev->event_time_ms != w->time_ms)
        fprintf(stderr, "event_time_ms: got %lld want %lld\n", (long long)ev->event_time_ms, (long long)w->time_ms);
    assert_int_equal(ev->event_time_ms, w->time_ms);
    if (ev->delivery_attempt != w->attempt) fprintf(stderr, "delivery_attempt: got %d want %d\n", ev->delivery_attempt, w->attempt);
    assert_int_equal(ev->delivery_attempt, w->attempt);
    if (w->labels == NULL) {
        assert_null(ev->labels);
    } else {
        json_t *want = json_loads(w->labels, 0, NULL);
        if (!json_equal(ev->labels, want)) {
            char *g = ev->labels ? json_dumps(ev->labels, JSON_SORT_KEYS) : NULL;
            fprintf(stderr, "labels: got %s want %s\n", g ? g : "NULL", w->labels);
            free(g);
        }
        assert_true(json_equal(ev->labels, want));
        json_decref(want);
    }
}

static void decode_sample(const char *name, const want_ev *w)
{
    char *path = tu_sample_path(name);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    if (text == NULL) fprintf(stderr, "cannot read %s\n", path);
    assert_non_null(text);
    ev_job_event ev;
    char err[256] = "";
    ev_status st = ev_decode_file_text(text, len, &ev, err, sizeof err);
    if (st != EV_OK) fprintf(stderr, "%s: status %d: %s\n", name, st, err);
    assert_int_equal(st, EV_OK);
    check(&ev, w);
    ev_job_event_free(&ev);
    free(text);
    free(path);
}

/* ---- the reference samples ---- */

static void test_push_wrapped(void **s)
{
    (void)s;
    want_ev w = {"pubsub", "13309271754608121", JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0,
                 WORKER_POOL_STOPPED, NULL, T_LOG, 0};
    decode_sample("pubsub-push-wrapped-logentry.json", &w);
}

static void test_push_wrapped_redelivery(void **s)
{
    (void)s;
    want_ev w = {"pubsub", "13309271754608121", JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0,
                 WORKER_POOL_STOPPED, NULL, T_LOG, 3};
    decode_sample("pubsub-push-wrapped-logentry-redelivery.json", &w);
}

static void test_push_unwrapped_metadata(void **s)
{
    (void)s;
    want_ev w = {"pubsub", "13309271754608121", JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0,
                 WORKER_POOL_STOPPED, NULL, T_LOG, 0};
    decode_sample("pubsub-push-unwrapped-with-metadata.http", &w);
}

static void test_eventarc_status_changed(void **s)
{
    (void)s;
    want_ev w = {"eventarc-dataflow", "//dataflow.googleapis.com/projects/my-project/locations/europe-west4/5c0b8e7a19d24f6e8a3b27c4d1e09f52",
                 JOB_ID, JOB_NAME, "my-project", "europe-west4", "JOB_STATE_DONE", 1, NULL, SAMPLE_LABELS, T_STATE, 0};
    decode_sample("eventarc-dataflow-status-changed.http", &w);
}

static void test_eventarc_message_published(void **s)
{
    (void)s;
    want_ev w = {"eventarc-pubsub", "//pubsub.googleapis.com/projects/my-project/topics/sluice-dataflow-events/13309271754608122",
                 JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0, WORKER_POOL_STOPPED, NULL, T_LOG, 0};
    decode_sample("eventarc-pubsub-message-published.http", &w);
}

static void test_logentry_worker_pool_stopped(void **s)
{
    (void)s;
    want_ev w = {"logentry", NULL, JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0, WORKER_POOL_STOPPED, NULL, T_LOG, 0};
    decode_sample("logentry-worker-pool-stopped.json", &w);
}

static void test_logentry_workflow_failed(void **s)
{
    (void)s;
    want_ev w = {"logentry", NULL, JOB_ID, JOB_NAME, "my-project", "europe-west4", "JOB_STATE_FAILED", 0,
                 "Workflow failed. Causes: S04:ReadOrders+ParseOrders failed., The job failed because a work item has failed 4 times.",
                 NULL, T_LOG, 0};
    decode_sample("logentry-workflow-failed.json", &w);
}

static void test_job_get(void **s)
{
    (void)s;
    want_ev w = {"job", NULL, JOB_ID, JOB_NAME, "my-project", "europe-west4", "JOB_STATE_DONE", 1, NULL, SAMPLE_LABELS, T_STATE, 0};
    decode_sample("dataflow-job-get-done.json", &w);
    w.state = "JOB_STATE_FAILED";
    decode_sample("dataflow-job-get-failed.json", &w);
}

/* Regression: a launch response (a Job with no currentState) decoded with state NULL, which events.h
 * defines as "the job ended", so `sluice plan --event dataflow-flex-launch-response.json` treated the
 * just-launched my-job-2 as DONE and planned my-job-3, and its dedupe identity "<id>/ENDED" would collide with
 * the real end. It is now JOB_STATE_UNKNOWN (non-terminal), unconfirmed. */
static void test_launch_response(void **s)
{
    (void)s;
    want_ev w = {"job", NULL, "2026-11-30_02_14_33-4410982236571180463", "my-job-2--r7f3k2-1", "my-project", "europe-west4",
                 "JOB_STATE_UNKNOWN", 0, NULL, NULL, 0, 0};
    decode_sample("dataflow-flex-launch-response.json", &w);
}

/* ---- structured CloudEvents and headers given directly ---- */

static const char *const JOB_DONE =
    "{\"id\":\"j1\",\"name\":\"a--r1-1\",\"projectId\":\"p\",\"location\":\"r\",\"currentState\":\"JOB_STATE_DONE\","
    "\"currentStateTime\":\"2026-11-30T02:14:26.751Z\",\"labels\":{\"sluice-run\":\"r1\"}}";

static void test_structured_cloudevents(void **s)
{
    (void)s;
    char body[2048];
    snprintf(body, sizeof body,
             "{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"//dataflow.googleapis.com/projects/p/locations/r\","
             "\"type\":\"google.cloud.dataflow.job.v1beta3.statusChanged\",\"data\":{\"payload\":%s}}", JOB_DONE);
    ev_header h[] = {{"Content-Type", "application/cloudevents+json; charset=utf-8"}};
    ev_job_event ev;
    char err[256];
    assert_int_equal(ev_decode(h, 1, body, strlen(body), &ev, err, sizeof err), EV_OK);
    want_ev w = {"eventarc-dataflow", "//dataflow.googleapis.com/projects/p/locations/r/e1", "j1", "a--r1-1", "p", "r",
                 "JOB_STATE_DONE", 1, NULL, "{\"sluice-run\":\"r1\"}", T_STATE, 0};
    check(&ev, &w);
    char id[128];
    assert_string_equal(ev_identity(&ev, id, sizeof id), "j1/JOB_STATE_DONE");
    ev_job_event_free(&ev);

    /* structured messagePublished wrapping a push body */
    char *path = tu_sample_path("pubsub-push-wrapped-logentry.json");
    char *push = tu_read_file(path, NULL);
    assert_non_null(push);
    char *b2 = NULL;
    assert_true(asprintf(&b2, "{\"specversion\":\"1.0\",\"id\":\"e2\",\"source\":\"//pubsub\",\"type\":"
                              "\"google.cloud.pubsub.topic.v1.messagePublished\",\"data\":%s}", push) > 0);
    assert_int_equal(ev_decode(h, 1, b2, strlen(b2), &ev, err, sizeof err), EV_OK);
    want_ev w2 = {"eventarc-pubsub", "//pubsub/e2", JOB_ID, JOB_NAME, "my-project", "europe-west4", NULL, 0, WORKER_POOL_STOPPED,
                  NULL, T_LOG, 0};
    check(&ev, &w2);
    assert_string_equal(ev_identity(&ev, id, sizeof id), JOB_ID "/ENDED");
    ev_job_event_free(&ev);
    free(b2);
    free(push);
    free(path);

    /* structured without data */
    const char *nodata = "{\"specversion\":\"1.0\",\"id\":\"e3\",\"type\":\"google.cloud.dataflow.job.v1beta3.statusChanged\"}";
    assert_int_equal(ev_decode(h, 1, nodata, strlen(nodata), &ev, err, sizeof err), EV_ERR_SHAPE);
    assert_string_equal(err, "structured CloudEvent needs 'type' and 'data'");
}

static void test_terminal_states(void **s)
{
    (void)s;
    assert_true(js_name_terminal("JOB_STATE_DONE"));
    assert_true(js_name_terminal("JOB_STATE_FAILED"));
    assert_true(js_name_terminal("JOB_STATE_CANCELLED"));
    assert_true(js_name_terminal("JOB_STATE_UPDATED"));
    assert_true(js_name_terminal("JOB_STATE_DRAINED"));
    assert_false(js_name_terminal("JOB_STATE_RUNNING"));
    assert_false(js_name_terminal("JOB_STATE_DRAINING"));
    assert_false(js_name_terminal("JOB_STATE_SOMETHING_NEW"));
    assert_false(js_name_terminal(NULL));
}

/* ---- irrelevant and bad inputs ---- */

typedef struct {
    const char *what;
    const char *ce_type;       /* binary-mode ce-type header, or NULL */
    const char *body;          /* NULL: use body_len bytes of `bin` */
    const char *bin;
    size_t bin_len;
    ev_status want;
    const char *want_err;      /* exact message, or NULL for "any non-empty" */
} bad_case;

static void run_case(const bad_case *c)
{
    ev_header h[4] = {{"ce-type", c->ce_type}, {"ce-id", "x"}, {"ce-source", "//test"}, {"ce-specversion", "1.0"}};
    ev_job_event ev;
    memset(&ev, 0xAB, sizeof ev);
    char err[256] = "";
    const char *body = c->body ? c->body : c->bin;
    size_t len = c->body ? strlen(c->body) : c->bin_len;
    ev_status st = ev_decode(c->ce_type ? h : NULL, c->ce_type ? 4 : 0, body, len, &ev, err, sizeof err);
    if (st != c->want || err[0] == '\0' || (c->want_err && strcmp(err, c->want_err) != 0))
        fprintf(stderr, "case '%s': status %d (want %d), message '%s' (want '%s')\n", c->what, st, c->want, err,
                c->want_err ? c->want_err : "(any)");
    assert_int_equal(st, c->want);
    assert_true(err[0] != '\0');
    if (c->want_err) assert_string_equal(err, c->want_err);
    /* a failed decode leaves nothing to free */
    assert_null(ev.job_id);
    assert_null(ev.labels);
    ev_job_event_free(&ev);
}

/* base64 of `text` (standard alphabet, padded) wrapped in a push body; caller frees. */
static char *push_of(const char *text)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(text), o = 0;
    char *b = malloc(n / 3 * 4 + 8);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)text[i] << 16;
        if (i + 1 < n) v |= (unsigned char)text[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)text[i + 2];
        b[o++] = tbl[(v >> 18) & 63];
        b[o++] = tbl[(v >> 12) & 63];
        b[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        b[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    b[o] = '\0';
    char *out = NULL;
    if (asprintf(&out, "{\"message\":{\"data\":\"%s\",\"messageId\":\"1\"},\"subscription\":\"s\"}", b) < 0) out = NULL;
    free(b);
    return out;
}

#define LE_PREFIX "{\"resource\":{\"type\":\"dataflow_step\",\"labels\":{\"job_id\":\"j\",\"job_name\":\"n\"}},\"textPayload\":"

static void test_irrelevant(void **s)
{
    (void)s;
    const bad_case cases[] = {
        {"other resource type", NULL, "{\"resource\":{\"type\":\"gce_instance\"},\"textPayload\":\"x\"}", NULL, 0, EV_IRRELEVANT,
         "LogEntry resource.type is not dataflow_step"},
        {"other log line", NULL, LE_PREFIX "\"Starting 1 workers\"}", NULL, 0, EV_IRRELEVANT,
         "log line does not mark the end of a job"},
        {"jsonPayload only", NULL, "{\"resource\":{\"type\":\"dataflow_step\",\"labels\":{\"job_id\":\"j\",\"job_name\":\"n\"}},\"jsonPayload\":{}}",
         NULL, 0, EV_IRRELEVANT, "log line does not mark the end of a job"},
        {"other CloudEvent type", "google.cloud.storage.object.v1.finalized", "{\"bucket\":\"b\"}", NULL, 0, EV_IRRELEVANT,
         "CloudEvent type google.cloud.storage.object.v1.finalized is not handled"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    char *p = push_of("{\"resource\":{\"type\":\"cloud_run_revision\"},\"textPayload\":\"Worker pool stopped.\"}");
    bad_case c = {"push of another resource", NULL, p, NULL, 0, EV_IRRELEVANT, "LogEntry resource.type is not dataflow_step"};
    run_case(&c);
    free(p);
}

static void test_bad_inputs(void **s)
{
    (void)s;
    char deep[200];
    memset(deep, '[', 40);
    memset(deep + 40, ']', 40);
    deep[80] = '\0';
    char deep_obj[400] = "";
    for (int i = 0; i < 40; i++) strcat(deep_obj, "{\"a\":");
    strcat(deep_obj, "1");
    for (int i = 0; i < 40; i++) strcat(deep_obj, "}");
    static const char nul_body[] = "{\"message\":{\"data\":\"e30=\"}\0}";
    static const char latin1[] = "{\"textPayload\":\"caf\xe9\",\"resource\":{}}";
    static const char overlong[] = "{\"a\":\"\xc0\xaf\"}";
    const bad_case cases[] = {
        {"empty body", NULL, "", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"whitespace only", NULL, "  \n", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"malformed JSON", NULL, "{\"message\":", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"trailing garbage", NULL, "{} x", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"duplicate keys", NULL, "{\"a\":1,\"a\":2}", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"array body", NULL, "[1,2]", NULL, 0, EV_ERR_SHAPE, "body is not a JSON object"},
        {"string body", NULL, "\"x\"", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"empty object", NULL, "{}", NULL, 0, EV_ERR_SHAPE, "not a Pub/Sub push, LogEntry, CloudEvent or Dataflow job"},
        {"deep array", NULL, deep, NULL, 0, EV_ERR_SYNTAX, "JSON nested deeper than 32 levels"},
        {"deep object", NULL, deep_obj, NULL, 0, EV_ERR_SYNTAX, "JSON nested deeper than 32 levels"},
        {"NUL byte in body", NULL, NULL, nul_body, sizeof nul_body - 1, EV_ERR_SYNTAX, NULL},
        {"escaped NUL", NULL, "{\"textPayload\":\"a\\u0000b\"}", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"latin-1 byte", NULL, latin1, NULL, 0, EV_ERR_SYNTAX, NULL},
        {"overlong UTF-8", NULL, overlong, NULL, 0, EV_ERR_SYNTAX, NULL},
        {"message not object", NULL, "{\"message\":\"x\"}", NULL, 0, EV_ERR_SHAPE, "'message' is not an object"},
        {"message without data", NULL, "{\"message\":{\"messageId\":\"1\"}}", NULL, 0, EV_ERR_SHAPE, "message has no base64 'data'"},
        {"data not string", NULL, "{\"message\":{\"data\":42}}", NULL, 0, EV_ERR_SHAPE, "message has no base64 'data'"},
        {"bad base64 chars", NULL, "{\"message\":{\"data\":\"!!!!\"}}", NULL, 0, EV_ERR_SYNTAX, "message.data is not valid base64"},
        {"bad base64 length", NULL, "{\"message\":{\"data\":\"e30\"}}", NULL, 0, EV_ERR_SYNTAX, "message.data is not valid base64"},
        {"base64url alphabet", NULL, "{\"message\":{\"data\":\"e3-_\"}}", NULL, 0, EV_ERR_SYNTAX, "message.data is not valid base64"},
        {"padding in the middle", NULL, "{\"message\":{\"data\":\"e3==e30=\"}}", NULL, 0, EV_ERR_SYNTAX, "message.data is not valid base64"},
        {"empty data", NULL, "{\"message\":{\"data\":\"\"}}", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"base64 of non-JSON", NULL, "{\"message\":{\"data\":\"aGVsbG8=\"}}", NULL, 0, EV_ERR_SYNTAX, NULL},
        {"base64 of an array", NULL, "{\"message\":{\"data\":\"WzFd\"}}", NULL, 0, EV_ERR_SHAPE, "message.data is not a LogEntry object"},
        {"base64 of {}", NULL, "{\"message\":{\"data\":\"e30=\"}}", NULL, 0, EV_ERR_SHAPE, "LogEntry has no resource"},
        {"resource not object", NULL, "{\"resource\":5,\"logName\":\"x\"}", NULL, 0, EV_ERR_SHAPE, "LogEntry has no resource"},
        {"no job labels", NULL, "{\"resource\":{\"type\":\"dataflow_step\"},\"textPayload\":\"Worker pool stopped.\"}", NULL, 0,
         EV_ERR_SHAPE, "dataflow_step LogEntry has no job_id/job_name labels"},
        {"job_id not string", NULL, "{\"resource\":{\"type\":\"dataflow_step\",\"labels\":{\"job_id\":1,\"job_name\":\"n\"}},"
         "\"textPayload\":\"Worker pool stopped.\"}", NULL, 0, EV_ERR_SHAPE, "dataflow_step LogEntry has no job_id/job_name labels"},
        {"textPayload not string", NULL, LE_PREFIX "[\"Worker pool stopped.\"]}", NULL, 0, EV_ERR_SHAPE, "textPayload is not a string"},
        {"job without name", NULL, "{\"id\":\"j\",\"currentState\":\"JOB_STATE_DONE\"}", NULL, 0, EV_ERR_SHAPE,
         "job has no string 'id' and 'name'"},
        {"job id number", NULL, "{\"id\":5,\"name\":\"n\"}", NULL, 0, EV_ERR_SHAPE, "job has no string 'id' and 'name'"},
        {"state not string", NULL, "{\"id\":\"j\",\"name\":\"n\",\"currentState\":7}", NULL, 0, EV_ERR_SHAPE,
         "job currentState is not a string"},
        {"launch response job not object", NULL, "{\"job\":[]}", NULL, 0, EV_ERR_SHAPE,
         "not a Pub/Sub push, LogEntry, CloudEvent or Dataflow job"},
        {"statusChanged without payload", "google.cloud.dataflow.job.v1beta3.statusChanged", "{\"@type\":\"x\"}", NULL, 0,
         EV_ERR_SHAPE, "statusChanged event has no payload object"},
        {"statusChanged payload not a job", "google.cloud.dataflow.job.v1beta3.statusChanged", "{\"payload\":{\"id\":\"j\"}}",
         NULL, 0, EV_ERR_SHAPE, "job has no string 'id' and 'name'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    assert_true(sizeof cases / sizeof cases[0] >= 20);

    /* base64 of a non-UTF-8 LogEntry */
    char *p = push_of("{\"textPayload\":\"caf\xe9\"}");
    bad_case c = {"base64 of latin-1", NULL, p, NULL, 0, EV_ERR_SYNTAX, NULL};
    run_case(&c);
    free(p);
    /* a huge string: decoded fine when it is a valid event, and the message of a bad one stays bounded */
    size_t big = 4u << 20;
    char *huge = malloc(big + 64);
    snprintf(huge, 64, "{\"x\":\"");
    size_t o = strlen(huge);
    memset(huge + o, 'a', big);
    strcpy(huge + o + big, "\"}");
    bad_case hc = {"huge string", NULL, huge, NULL, 0, EV_ERR_SHAPE, "not a Pub/Sub push, LogEntry, CloudEvent or Dataflow job"};
    run_case(&hc);
    huge[o + big] = '\0'; /* unterminated string */
    bad_case hu = {"huge unterminated string", NULL, huge, NULL, 0, EV_ERR_SYNTAX, NULL};
    run_case(&hu);
    free(huge);
    /* ev_decode_file_text on a non-JSON, non-HTTP text */
    ev_job_event ev;
    char err[256] = "";
    assert_int_equal(ev_decode_file_text("hello", 5, &ev, err, sizeof err), EV_ERR_SHAPE);
    assert_string_equal(err, "neither JSON nor an HTTP request");
    assert_int_equal(ev_decode_file_text("POST / HTTP/1.1\nce-type: x\n\n", 28, &ev, err, sizeof err), EV_ERR_SYNTAX);
    assert_true(err[0] != '\0');
    /* a tiny error buffer is truncated, never overflowed */
    char small[8];
    assert_int_equal(ev_decode(NULL, 0, "{}", 2, &ev, small, sizeof small), EV_ERR_SHAPE);
    assert_string_equal(small, "not a P");
}

/* Regression (found by fuzz/fuzz_cloudevent.c, input: the empty file): ev_decode_file_text returned "neither
 * JSON nor an HTTP request" for a text without a newline before touching *ev, while every other failure (through
 * ev_decode) leaves *ev zeroed; a caller freeing the event after a failure, as it may after ev_decode, freed
 * whatever the variable held. Every failure now leaves *ev empty. */
static void test_file_text_failure_leaves_event_empty(void **s)
{
    (void)s;
    static const char *const texts[] = {"", "no newline", "GET / HTTP/1.1", "POST / HTTP/1.1\n\n{}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ev_job_event ev;
        memset(&ev, 0xA5, sizeof ev); /* what an uninitialised variable may hold */
        char err[256] = "";
        assert_int_not_equal(ev_decode_file_text(texts[i], strlen(texts[i]), &ev, err, sizeof err), EV_OK);
        assert_true(err[0] != '\0');
        assert_null(ev.message_id);
        assert_null(ev.job_id);
        assert_null(ev.job_name);
        assert_null(ev.state);
        assert_null(ev.log_text);
        assert_null(ev.labels);
        ev_job_event_free(&ev); /* a no-op */
    }
}

/* Regression, issue 17 finding 11: a binary-mode CloudEvent without ce-type was decoded as a plain Pub/Sub push and
 * acknowledged 200. CloudEvents 1.0 requires id, source, specversion and type: an event that gives any of them must
 * give all (binary headers or structured members), with specversion 1.0; otherwise it is malformed (400). */
static void test_cloudevent_required_attributes(void **s)
{
    (void)s;
    char *path = tu_src_path("fuzz/corpus/cloudevent/eventarc-pubsub-message-published.http");
    char *dump = tu_read_file(path, NULL);
    assert_non_null(dump);
    const char *body = strstr(dump, "\n\n");
    assert_non_null(body);
    body += 2;
    static const char *const names[] = {"ce-id", "ce-source", "ce-specversion", "ce-type"};
    static const char *const values[] = {"2070443601311541", "//pubsub.googleapis.com/projects/p/topics/t", "1.0",
                                         "google.cloud.pubsub.topic.v1.messagePublished"};
    ev_job_event ev;
    char err[256];
    for (int skip = -1; skip < 4; skip++) {
        ev_header h[5] = {{"Content-Type", "application/json"}};
        size_t n = 1;
        for (int i = 0; i < 4; i++)
            if (i != skip) h[n++] = (ev_header){names[i], values[i]};
        ev_status st = ev_decode(h, n, body, strlen(body), &ev, err, sizeof err);
        if (skip < 0) {
            assert_int_equal(st, EV_OK); /* all four: decoded */
            ev_job_event_free(&ev);
            continue;
        }
        if (st != EV_ERR_SHAPE) fprintf(stderr, "without %s: status %d, '%s'\n", names[skip], st, err);
        assert_int_equal(st, EV_ERR_SHAPE);
        assert_non_null(strstr(err, names[skip]));
        assert_null(ev.job_id);
    }
    /* only ce-type missing, as reported: the rest of the binary-mode headers */
    ev_header no_type[] = {{"ce-id", "1"}, {"ce-source", "//x"}, {"ce-specversion", "1.0"}};
    assert_int_equal(ev_decode(no_type, 3, body, strlen(body), &ev, err, sizeof err), EV_ERR_SHAPE);
    assert_string_equal(err, "binary-mode CloudEvent has no ce-type (required: id, source, specversion, type)");
    ev_header v2[] = {{"ce-id", "1"}, {"ce-source", "//x"}, {"ce-specversion", "2.0"},
                      {"ce-type", "google.cloud.pubsub.topic.v1.messagePublished"}};
    assert_int_equal(ev_decode(v2, 4, body, strlen(body), &ev, err, sizeof err), EV_ERR_SHAPE);
    /* structured mode: the envelope's members */
    char *env = NULL;
    assert_true(asprintf(&env, "{\"specversion\":\"1.0\",\"id\":\"e1\",\"type\":"
                               "\"google.cloud.pubsub.topic.v1.messagePublished\",\"data\":%s}", body) > 0);
    ev_header st_h[] = {{"Content-Type", "application/cloudevents+json"}};
    assert_int_equal(ev_decode(st_h, 1, env, strlen(env), &ev, err, sizeof err), EV_ERR_SHAPE);
    assert_string_equal(err, "structured CloudEvent has no source (required: id, source, specversion, type)");
    /* structured mode, an unsupported specversion: the message quotes the version, which lives in the envelope
     * (libFuzzer found it printed after the envelope was freed: a use-after-free ASan reports here) */
    char *v2env = NULL;
    assert_true(asprintf(&v2env, "{\"specversion\":\"2.0\",\"id\":\"e1\",\"source\":\"//x\",\"type\":"
                                 "\"google.cloud.pubsub.topic.v1.messagePublished\",\"data\":%s}", body) > 0);
    assert_int_equal(ev_decode(st_h, 1, v2env, strlen(v2env), &ev, err, sizeof err), EV_ERR_SHAPE);
    assert_string_equal(err, "CloudEvents specversion 2.0 is not supported (1.0 is)");
    free(v2env);
    /* a plain push (no CloudEvent attribute at all) is still a push */
    assert_int_equal(ev_decode(NULL, 0, body, strlen(body), &ev, err, sizeof err), EV_OK);
    ev_job_event_free(&ev);
    free(env);
    free(dump);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_wrapped),
        cmocka_unit_test(test_push_wrapped_redelivery),
        cmocka_unit_test(test_push_unwrapped_metadata),
        cmocka_unit_test(test_eventarc_status_changed),
        cmocka_unit_test(test_eventarc_message_published),
        cmocka_unit_test(test_logentry_worker_pool_stopped),
        cmocka_unit_test(test_logentry_workflow_failed),
        cmocka_unit_test(test_job_get),
        cmocka_unit_test(test_launch_response),
        cmocka_unit_test(test_structured_cloudevents),
        cmocka_unit_test(test_terminal_states),
        cmocka_unit_test(test_irrelevant),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_file_text_failure_leaves_event_empty),
        cmocka_unit_test(test_cloudevent_required_attributes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
