/* test_notify: the pure parts of run notifications, checked against independent vectors (issue 20):
 * - notify_signature: "sha256=" + hex HMAC-SHA256 of the exact body bytes under the secret. The expected values
 *   were computed outside this code base with Python's hmac module (the command is quoted beside each constant),
 *   over a body with multi-byte UTF-8 and an escaped character, so a signer that re-serialises, trims or
 *   re-encodes the body fails;
 * - rev_cloudevent / rev_emit (run_events.c) on a SQLite store: the CloudEvent's context attributes
 *   (specversion 1.0, id, source, type dev.sluice.run.<t>, subject, time, datacontenttype) and data (the run's view,
 *   its failed step, error and Dataflow cause), the id "<run>-<event>-<n>" and the sinks' `on` filter;
 * - notify_pubsub_body: the publish request {"messages":[{data: base64(event bytes), attributes: ce-*,
 *   orderingKey: the run id}]}, decoded again with OpenSSL's base64 decoder and compared byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notify.h"
#include "run_events.h"
#include "store.h"
#include "testutil.h"

/* The body the vectors are over: {"specversion":"1.0","id":"r1-failed-1","data":{"note":"café \u00e9"}} (the é of
 * café as UTF-8 bytes C3 A9; the second one as the JSON escape, six ASCII bytes). */
static const char VEC_BODY[] = "{\"specversion\":\"1.0\",\"id\":\"r1-failed-1\",\"data\":{\"note\":\"caf\xc3\xa9 \\u00e9\"}}";
/* python3 -c 'import hmac,hashlib; print(hmac.new(b"test-secret-123", BODY, hashlib.sha256).hexdigest())' */
#define VEC_SIG "sha256=69d99eb8e8256565e0b20a4aac8cb7b032b1ab3d6bc1df283d2c3210d1023871"
/* the same over BODY[:-1] (the closing brace dropped): one byte changes the whole signature */
#define VEC_SIG_SHORT "sha256=e11fb85341338213377a0c71eb623a304b8c47801d9364bfa124e96fafa41ffc"
/* RFC 4231-style sanity vector: hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", sha256) */
#define VEC_FOX "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"

static void test_signature_vectors(void **state)
{
    (void)state;
    char out[80];
    assert_string_equal(notify_signature("test-secret-123", VEC_BODY, strlen(VEC_BODY), out, sizeof out), VEC_SIG);
    assert_string_equal(notify_signature("test-secret-123", VEC_BODY, strlen(VEC_BODY) - 1, out, sizeof out),
                        VEC_SIG_SHORT);
    const char *fox = "The quick brown fox jumps over the lazy dog";
    assert_string_equal(notify_signature("key", fox, strlen(fox), out, sizeof out), VEC_FOX);
    /* another secret, another signature */
    notify_signature("test-secret-124", VEC_BODY, strlen(VEC_BODY), out, sizeof out);
    assert_string_not_equal(out, VEC_SIG);
    /* too small a buffer: an empty string, never a truncated signature */
    char small[40] = "x";
    assert_string_equal(notify_signature("key", fox, strlen(fox), small, sizeof small), "");
}

/* ---- a store with one failed run ---- */

typedef struct {
    char *dir;
    store *s;
} fx;

#define HASH "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const int64_t T0 = 1767225600000; /* 2026-01-01T00:00:00Z */

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    char *path = NULL, *err = NULL;
    assert_true(asprintf(&path, "%s/n.db", f->dir) > 0);
    store_options o = {.busy_timeout_ms = 5000};
    assert_int_equal(store_open(path, &o, &f->s, &err), STORE_OK);
    free(path);
    assert_int_equal(store_script_put(f->s, HASH, "wf", "return {}", &err), STORE_OK);
    store_run r = {.id = "r1", .workflow = "nwf", .script_hash = HASH, .params_json = "{\"date\":\"2026-01-01\"}",
                   .state = STORE_RUN_PENDING, .origin = "api"};
    assert_int_equal(store_run_create(f->s, &r, &err), STORE_OK);
    store_step st = {.run_id = "r1", .name = "Load", .state = STORE_STEP_PENDING};
    assert_int_equal(store_step_insert(f->s, &st, &err), STORE_OK);
    store_intent in = {.attempt = 1, .job_name = "load--r1-1", .project = "p", .region = "europe-west4",
                       .request_json = "{}"};
    assert_int_equal(store_step_record_intent(f->s, "r1", "Load", STORE_STEP_ANY, STORE_ATTEMPT_ANY, &in, &err),
                     STORE_OK);
    assert_int_equal(store_step_set_job(f->s, "r1", "Load", 1, "2026-01-01_00_00_00-123", "JOB_STATE_RUNNING", 0, &err),
                     STORE_OK);
    assert_int_equal(store_step_finish(f->s, "r1", "Load", 1, STORE_STEP_FAILED, "JOB_STATE_FAILED", NULL,
                                       "job ended JOB_STATE_FAILED", &err),
                     STORE_OK);
    assert_int_equal(store_step_set_cause(f->s, "r1", "Load", 1, "disk full on worker-3", &err), STORE_OK);
    assert_int_equal(store_run_set_state(f->s, "r1", STORE_RUN_PENDING, STORE_RUN_FAILED, "step Load failed", &err),
                     STORE_OK);
    free(err);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static const char *jstr(json_t *o, const char *path)
{
    /* "a.b.c" through objects */
    char buf[200];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = o;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && cur; k = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, k);
    return json_string_value(cur);
}

static void test_cloudevent_shape(void **state)
{
    fx *f = *state;
    json_t *ce = rev_cloudevent(f->s, "r1", WF_EV_FAILED, "r1-failed-1", T0 + 1500, NULL, 0);
    assert_non_null(ce);
    assert_string_equal(jstr(ce, "specversion"), "1.0");
    assert_string_equal(jstr(ce, "id"), "r1-failed-1");
    assert_string_equal(jstr(ce, "source"), "//sluice/nwf");
    assert_string_equal(jstr(ce, "type"), "dev.sluice.run.failed");
    assert_string_equal(jstr(ce, "subject"), "r1");
    assert_non_null(jstr(ce, "time"));
    assert_int_equal(strncmp(jstr(ce, "time"), "2026-01-01T00:00:01", 19), 0);
    assert_string_equal(jstr(ce, "datacontenttype"), "application/json");
    /* data: the run's API view, with the transition and the failure */
    assert_string_equal(jstr(ce, "data.event"), "failed");
    assert_string_equal(jstr(ce, "data.id"), "r1");
    assert_string_equal(jstr(ce, "data.state"), "failed");
    assert_string_equal(jstr(ce, "data.workflow"), "nwf");
    assert_true(json_is_array(json_object_get(json_object_get(ce, "data"), "steps")));
    assert_null(json_object_get(json_object_get(ce, "data"), "notifications"));
    assert_string_equal(jstr(ce, "data.failure.step"), "Load");
    assert_string_equal(jstr(ce, "data.failure.error"), "job ended JOB_STATE_FAILED");
    assert_string_equal(jstr(ce, "data.failure.cause"), "disk full on worker-3");
    assert_string_equal(jstr(ce, "data.failure.job_id"), "2026-01-01_00_00_00-123");
    assert_string_equal(jstr(ce, "data.failure.job_name"), "load--r1-1");
    json_decref(ce);

    /* a deadline_missed event names its scope, step and due time; no failure block on it */
    ce = rev_cloudevent(f->s, "r1", WF_EV_DEADLINE_MISSED, "r1-deadline_missed-1", T0, "Load", T0 - 1000);
    assert_non_null(ce);
    assert_string_equal(jstr(ce, "type"), "dev.sluice.run.deadline_missed");
    assert_string_equal(jstr(ce, "data.deadline.scope"), "step");
    assert_string_equal(jstr(ce, "data.deadline.step"), "Load");
    assert_int_equal(strncmp(jstr(ce, "data.deadline.due_at"), "2025-12-31T23:59:59", 19), 0);
    assert_null(json_object_get(json_object_get(ce, "data"), "failure"));
    json_decref(ce);

    /* no such run: no event */
    assert_null(rev_cloudevent(f->s, "nope", WF_EV_FAILED, "x", T0, NULL, 0));
}

static void test_emit_ids_and_filter(void **state)
{
    fx *f = *state;
    char *err = NULL;
    rev_sinks server = {.webhook = "http://127.0.0.1:9/h", .topic = "projects/p/topics/t"}; /* on: the default */
    /* started is not in the default `on`: nothing written */
    assert_int_equal(store_begin(f->s, &err), STORE_OK);
    assert_int_equal(rev_emit(f->s, NULL, &server, "r1", WF_EV_STARTED, T0, 0, NULL, 0, &err), STORE_OK);
    assert_int_equal(rev_emit(f->s, NULL, &server, "r1", WF_EV_FAILED, T0, 0, NULL, 0, &err), STORE_OK);
    assert_int_equal(store_commit(f->s, &err), STORE_OK);
    assert_int_equal(store_begin(f->s, &err), STORE_OK);
    assert_int_equal(rev_emit(f->s, NULL, &server, "r1", WF_EV_FAILED, T0 + 10, 0, NULL, 0, &err), STORE_OK);
    assert_int_equal(store_commit(f->s, &err), STORE_OK);
    store_note_list l = {0};
    assert_int_equal(store_outbox_list_run(f->s, "r1", &l, &err), STORE_OK);
    assert_int_equal(l.count, 4); /* two failed events x two sinks */
    int n1 = 0, n2 = 0, web = 0, ps = 0;
    for (size_t i = 0; i < l.count; i++) {
        assert_string_equal(l.items[i].type, "failed");
        if (strcmp(l.items[i].id, "r1-failed-1") == 0) n1++;
        if (strcmp(l.items[i].id, "r1-failed-2") == 0) n2++;
        if (strcmp(l.items[i].sink, "webhook:http://127.0.0.1:9/h") == 0) web++;
        if (strcmp(l.items[i].sink, "pubsub:projects/p/topics/t") == 0) ps++;
        json_t *ce = json_loads(l.items[i].event_json, 0, NULL);
        assert_non_null(ce);
        assert_string_equal(jstr(ce, "id"), l.items[i].id);
        json_decref(ce);
    }
    assert_int_equal(n1, 2);
    assert_int_equal(n2, 2);
    assert_int_equal(web, 2);
    assert_int_equal(ps, 2);
    /* both sinks of one event get the same bytes */
    for (size_t i = 0; i < l.count; i++)
        for (size_t j = 0; j < l.count; j++)
            if (strcmp(l.items[i].id, l.items[j].id) == 0)
                assert_string_equal(l.items[i].event_json, l.items[j].event_json);
    store_note_list_free(&l);
    free(err);
}

static void test_pubsub_body(void **state)
{
    fx *f = *state;
    json_t *ce = rev_cloudevent(f->s, "r1", WF_EV_FAILED, "r1-failed-1", T0, NULL, 0);
    char *event = json_dumps(ce, JSON_COMPACT);
    json_decref(ce);
    char *body = notify_pubsub_body(event);
    assert_non_null(body);
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    json_t *msgs = json_object_get(b, "messages");
    assert_int_equal(json_array_size(msgs), 1);
    json_t *m = json_array_get(msgs, 0);
    /* data: standard base64 (padded) of the event's exact bytes */
    const char *data = json_string_value(json_object_get(m, "data"));
    assert_non_null(data);
    size_t dl = strlen(data);
    assert_int_equal(dl % 4, 0);
    unsigned char *raw = malloc(dl);
    int rl = EVP_DecodeBlock(raw, (const unsigned char *)data, (int)dl);
    assert_true(rl >= 0);
    while (rl > 0 && dl > 0 && data[dl - 1] == '=') rl--, dl--; /* EVP_DecodeBlock counts the padding */
    assert_int_equal((size_t)rl, strlen(event));
    assert_memory_equal(raw, event, strlen(event));
    free(raw);
    /* attributes: the ce-* context attributes, nothing else, all strings */
    json_t *a = json_object_get(m, "attributes");
    assert_string_equal(json_string_value(json_object_get(a, "ce-id")), "r1-failed-1");
    assert_string_equal(json_string_value(json_object_get(a, "ce-type")), "dev.sluice.run.failed");
    assert_string_equal(json_string_value(json_object_get(a, "ce-source")), "//sluice/nwf");
    assert_string_equal(json_string_value(json_object_get(a, "ce-subject")), "r1");
    assert_string_equal(json_string_value(json_object_get(a, "ce-specversion")), "1.0");
    assert_string_equal(json_string_value(json_object_get(a, "ce-datacontenttype")), "application/json");
    assert_non_null(json_string_value(json_object_get(a, "ce-time")));
    assert_int_equal(json_object_size(a), 7);
    assert_string_equal(json_string_value(json_object_get(m, "orderingKey")), "r1");
    json_decref(b);
    free(body);
    free(event);
    /* not a CloudEvent object: no body */
    assert_null(notify_pubsub_body("[1,2]"));
    assert_null(notify_pubsub_body("{not json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_vectors),
        cmocka_unit_test_setup_teardown(test_cloudevent_shape, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_emit_ids_and_filter, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_body, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
