/* test_serve_ingress: what ingress does with deliveries that authenticate but can never be about a job of ours,
 * against the real binary (serve_harness). Pins, from issue 17 finding 11: a push whose job name breaks Dataflow's
 * job-name rule (`my-job-1--'; DROP TABLE runs;--`) was recorded; it is now acknowledged (200, so Pub/Sub does not
 * redeliver it forever), counted as invalid_job_name and never written. A binary-mode CloudEvent without ce-type
 * was acknowledged 200; it is now malformed (400). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "serve_harness.h"
#include "store.h"

#define PUSH "/v1/events/pubsub"
#define EVA "/v1/events/eventarc"
#define JSON_CT "Content-Type: application/json"

static serve_proc S;

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    char **buf = ud;
    size_t have = *buf ? strlen(*buf) : 0;
    char *b = realloc(*buf, have + sz * n + 1);
    memcpy(b + have, p, sz * n);
    b[have + sz * n] = '\0';
    *buf = b;
    return sz * n;
}

/* POST body to path with the header lines (NULL-terminated); returns the status, *answer the body (caller frees). */
static long post(const char *path, const char *const *headers, const char *body, char **answer)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    for (int i = 0; headers[i]; i++) hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    char url[256], *buf = NULL;
    snprintf(url, sizeof url, "%s%s", S.base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    *answer = buf ? buf : strdup("");
    return status;
}

/* The value of one series on /metrics (0 when absent). */
static double metric(const char *series)
{
    char *text = NULL;
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", S.base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &text);
    curl_easy_perform(c);
    curl_easy_cleanup(c);
    double v = 0;
    size_t n = strlen(series);
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (strncmp(line, series, n) == 0 && line[n] == ' ') v = strtod(line + n + 1, NULL);
        line = next;
    }
    free(text);
    return v;
}

static void test_invalid_job_names_acked_not_recorded(void **state)
{
    (void)state;
    char *tok = sh_token(S.key, "k1", NULL), *auth = sh_auth(tok);
    const char *hl[] = {auth, JSON_CT, NULL};
    char long_name[1100] = "my-job-1--";
    memset(long_name + 10, 'a', 1015); /* 1025 characters: one over Dataflow's limit */
    long_name[1025] = '\0';
    const char *names[] = {"my-job-1--'; DROP TABLE runs;--", "My-Job-1--abc123-1", "my-job-1--abc123-1-",
                           "my-job-1--abc_123-1", long_name};
    size_t n = sizeof names / sizeof names[0];
    for (size_t i = 0; i < n; i++) {
        char mid[32], *answer = NULL;
        snprintf(mid, sizeof mid, "m-bad-%zu", i);
        char *body = sh_push_body(mid, names[i], "2026-11-27_00_00_00-7");
        long st = post(PUSH, hl, body, &answer);
        if (st != 200 || strstr(answer, "invalid_job_name") == NULL)
            fprintf(stderr, "name %zu: %ld %s\n", i, st, answer);
        assert_int_equal(st, 200); /* acknowledged: a redelivery could never succeed */
        assert_non_null(strstr(answer, "{\"outcome\":\"invalid_job_name\"}"));
        free(answer);
        free(body);
    }
    assert_true(metric("sluice_events_total{source=\"pubsub\",outcome=\"invalid_job_name\"}") == (double)n);
    assert_true(metric("sluice_inbox_batches_total") == 0); /* nothing was written */
    /* the control: a valid name of a loaded workflow is recorded */
    char *good = sh_push_body("m-good", "my-job-1--abc123-1", "2026-11-27_00_00_00-8"), *answer = NULL;
    assert_int_equal(post(PUSH, hl, good, &answer), 200);
    assert_non_null(strstr(answer, "\"outcome\":\"recorded\""));
    free(answer);
    free(good);
    free(tok);
    free(auth);
}

static void test_cloudevent_without_type_is_malformed(void **state)
{
    (void)state;
    char *tok = sh_token(S.key, "k1", NULL), *auth = sh_auth(tok);
    char *body = sh_push_body("m-ce", "my-job-2--abc123-1", "2026-11-27_00_00_00-9"), *answer = NULL;
    const char *no_type[] = {auth, JSON_CT, "ce-id: ce-1", "ce-source: //pubsub.googleapis.com/projects/p/topics/t",
                             "ce-specversion: 1.0", NULL};
    assert_int_equal(post(EVA, no_type, body, &answer), 400);
    assert_non_null(strstr(answer, "no ce-type"));
    free(answer);
    const char *full[] = {auth, JSON_CT, "ce-id: ce-2", "ce-source: //pubsub.googleapis.com/projects/p/topics/t",
                          "ce-specversion: 1.0", "ce-type: google.cloud.pubsub.topic.v1.messagePublished", NULL};
    assert_int_equal(post(EVA, full, body, &answer), 200);
    assert_non_null(strstr(answer, "\"outcome\":\"recorded\""));
    free(answer);
    free(body);
    free(tok);
    free(auth);
}

/* Issue 22: push-only setups never had a running time, because a RUNNING event was acknowledged as "nonterminal"
 * and dropped. Dataflow's RUNNING event is recorded now, with the event's own time of the change (checked in the
 * store below); other non-terminal states still are not. */
static const char *status_event(char *buf, size_t cap, const char *state)
{
    snprintf(buf, cap,
             "{\"@type\":\"type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData\",\"payload\":"
             "{\"id\":\"2026-11-27_00_00_00-11\",\"projectId\":\"p\",\"name\":\"my-job-2--abc123-1\","
             "\"currentState\":\"%s\",\"currentStateTime\":\"2026-11-27T00:00:01.500Z\",\"location\":\"r\"}}",
             state);
    return buf;
}

static void test_running_event_recorded(void **state)
{
    (void)state;
    char *tok = sh_token(S.key, "k1", NULL), *auth = sh_auth(tok), body[600], *answer = NULL;
    const char *running[] = {auth, JSON_CT, "ce-id: run-1", "ce-source: //dataflow.googleapis.com/projects/p/locations/r",
                             "ce-specversion: 1.0", "ce-type: google.cloud.dataflow.job.v1beta3.statusChanged",
                             "ce-subject: jobs/my-job-2--abc123-1", NULL};
    assert_int_equal(post(EVA, running, status_event(body, sizeof body, "JOB_STATE_RUNNING"), &answer), 200);
    assert_non_null(strstr(answer, "\"outcome\":\"recorded\""));
    free(answer);
    const char *pending[] = {auth, JSON_CT, "ce-id: pend-1", "ce-source: //dataflow.googleapis.com/projects/p/locations/r",
                             "ce-specversion: 1.0", "ce-type: google.cloud.dataflow.job.v1beta3.statusChanged",
                             "ce-subject: jobs/my-job-2--abc123-1", NULL};
    assert_int_equal(post(EVA, pending, status_event(body, sizeof body, "JOB_STATE_PENDING"), &answer), 200);
    assert_non_null(strstr(answer, "\"outcome\":\"nonterminal\""));
    free(answer);
    free(tok);
    free(auth);
}

/* Runs last: the store holds the two controls and none of the refused deliveries. */
static void test_store_holds_only_the_controls(void **state)
{
    (void)state;
    assert_int_equal(sh_stop(&S), 0);
    store *st = NULL;
    assert_int_equal(store_open(S.store, NULL, &st, NULL), STORE_OK);
    store_event ctl = {.message_id = "m-good", .source = STORE_SRC_PUSH};
    assert_int_equal(store_inbox_put(st, &ctl, NULL, NULL), STORE_DUPLICATE);
    /* the RUNNING event, with its time of the change (2026-11-27T00:00:01.500Z); the PENDING one is not there
     * (the engine may have consumed either since: processed or not, the row stays) */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(S.store, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT state, payload FROM inbox WHERE state IN"
                                            " ('JOB_STATE_RUNNING', 'JOB_STATE_PENDING')", -1, &q, NULL), SQLITE_OK);
    int running = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        assert_string_equal((const char *)sqlite3_column_text(q, 0), "JOB_STATE_RUNNING");
        assert_non_null(strstr((const char *)sqlite3_column_text(q, 1), "\"time_ms\":1795737601500"));
        running++;
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_int_equal(running, 1);
    for (int i = 0; i < 5; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "m-bad-%d", i);
        store_event e = {.message_id = mid, .source = STORE_SRC_PUSH};
        assert_int_equal(store_inbox_put(st, &e, NULL, NULL), STORE_OK); /* new: it was never recorded */
    }
    store_close(st);
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return sh_start(&S, NULL);
}

static int teardown(void **state)
{
    (void)state;
    sh_free(&S);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_job_names_acked_not_recorded),
        cmocka_unit_test(test_cloudevent_without_type_is_malformed),
        cmocka_unit_test(test_running_event_recorded),
        cmocka_unit_test(test_store_holds_only_the_controls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
