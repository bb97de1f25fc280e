/* test_serve_shutdown: SIGTERM under load loses no acknowledged event. Four client threads push authenticated
 * events with unique message ids as fast as they can; the server gets SIGTERM in the middle; afterwards every
 * message id that was answered 2xx must be in the store (a replay of it is a duplicate), and the server must
 * have exited 0.
 * Also (issue 17, finding 7): SIGTERM while an API request has waited longer than --grace for the engine
 * aborted the process (exit 134: libmicrohttpd's "MHD_stop_daemon() called while we have suspended
 * connections"); it must exit 0 and answer that request 503. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "serve_harness.h"
#include "store.h"

#define N_THREADS 4
#define MAX_PER_THREAD 200000

typedef struct {
    int idx;
    const char *base;
    const char *auth;
    char (*acked)[48];
    size_t n_acked;
    size_t refused; /* 503 while draining, or transport errors */
} pusher;

static atomic_int total_acked;
static atomic_int stop_pushing;

static void *push_main(void *arg)
{
    pusher *p = arg;
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s/v1/events/pubsub", p->base);
    struct curl_slist *hl = curl_slist_append(NULL, p->auth);
    hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sh_sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    int errors_in_a_row = 0;
    for (long i = 0; i < MAX_PER_THREAD && errors_in_a_row < 20 && !atomic_load(&stop_pushing); i++) {
        char mid[48], jid[64];
        snprintf(mid, sizeof mid, "t%d-%ld", p->idx, i);
        snprintf(jid, sizeof jid, "2026-11-27_00_00_00-%d%08ld", p->idx, i);
        char *body = sh_push_body(mid, "my-job-1--shutdown-1", jid);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        free(body);
        if (status >= 200 && status < 300) {
            snprintf(p->acked[p->n_acked++], 48, "%s", mid);
            atomic_fetch_add(&total_acked, 1);
            errors_in_a_row = 0;
        } else {
            p->refused++;
            errors_in_a_row++;
        }
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return NULL;
}

static int enough_acked(void *arg)
{
    (void)arg;
    return atomic_load(&total_acked) >= 400;
}

static void test_sigterm_under_load(void **state)
{
    (void)state;
    serve_proc S;
    assert_int_equal(sh_start(&S, NULL), 0);
    char *t = sh_token(S.key, "k1", NULL);
    char *a = sh_auth(t);
    pusher ps[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        ps[i] = (pusher){.idx = i, .base = S.base, .auth = a, .acked = calloc(MAX_PER_THREAD, 48)};
        pthread_create(&th[i], NULL, push_main, &ps[i]);
    }
    assert_true(tu_poll(enough_acked, NULL, 30000));
    kill(S.pid, SIGTERM);
    int status = 0;
    assert_int_equal(waitpid(S.pid, &status, 0), S.pid);
    S.pid = 0;
    atomic_store(&stop_pushing, 1);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    store *st = NULL;
    assert_int_equal(store_open(S.store, NULL, &st, NULL), STORE_OK);
    size_t acked = 0, missing = 0, refused = 0;
    for (int i = 0; i < N_THREADS; i++) {
        for (size_t k = 0; k < ps[i].n_acked; k++) {
            store_event ev = {.message_id = ps[i].acked[k], .source = STORE_SRC_PUSH};
            if (store_inbox_put(st, &ev, NULL, NULL) != STORE_DUPLICATE) missing++;
            acked++;
        }
        refused += ps[i].refused;
        free(ps[i].acked);
    }
    fprintf(stderr, "%zu events acknowledged before/while draining, %zu refused or cut off, %zu missing\n", acked,
            refused, missing);
    store_close(st);
    assert_true(acked >= 400);
    assert_int_equal(missing, 0);
    free(t);
    free(a);
    sh_free(&S);
}

typedef struct {
    const char *base;
    long status;
} held_call;

static void *start_run_main(void *arg)
{
    held_call *h = arg;
    const char *hl[] = {"Authorization: Bearer optok", "Content-Type: application/json", NULL};
    const char *body = "{\"workflow\":\"example\"}";
    h->status = sh_send(h->base, "POST", "/v1/runs", hl, body, strlen(body), 0);
    return NULL;
}

/* The in-flight gauge counts the scrape itself: 2 means another request is open. */
static int one_more_in_flight(void *arg)
{
    serve_proc *s = arg;
    CURL *c = curl_easy_init();
    char url[256], *buf = NULL;
    size_t len = 0;
    snprintf(url, sizeof url, "%s/metrics", s->base);
    FILE *f = open_memstream(&buf, &len);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_perform(c);
    curl_easy_cleanup(c);
    fclose(f);
    const char *m = buf ? strstr(buf, "\nsluice_http_inflight_requests ") : NULL;
    int ok = m && atof(m + strlen("\nsluice_http_inflight_requests ")) >= 2;
    free(buf);
    return ok;
}

static int log_has(void *arg)
{
    const char **a = arg; /* {dir, text} */
    char path[800];
    snprintf(path, sizeof path, "%s/serve.log", a[0]);
    char *t = tu_read_file(path, NULL);
    int found = t && strstr(t, a[1]) != NULL;
    free(t);
    return found;
}

static void test_sigterm_with_answer_held_past_grace(void **state)
{
    (void)state;
    serve_proc S;
    const char *extra[] = {"--grace", "300ms", NULL};
    assert_int_equal(sh_start(&S, extra), 0);
    /* Hold the store's write lock, so the engine cannot start the run and the request waits for it. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(S.store, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    held_call h = {.base = S.base};
    pthread_t th;
    pthread_create(&th, NULL, start_run_main, &h);
    assert_true(tu_poll(one_more_in_flight, &S, 10000));
    kill(S.pid, SIGTERM);
    /* The grace passes with the request still waiting; then the server stops its HTTP side. */
    const char *when[] = {S.dir, "still open after"};
    assert_true(tu_poll(log_has, when, 10000));
    const char *closed[] = {S.dir, "POST /v1/runs 503"};
    int answered = tu_poll(log_has, closed, 5000);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    int status = 0;
    assert_int_equal(waitpid(S.pid, &status, 0), S.pid);
    S.pid = 0;
    pthread_join(th, NULL);
    if (WIFSIGNALED(status)) fprintf(stderr, "serve died of signal %d\n", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(answered);
    assert_int_equal(h.status, 503);
    sh_free(&S);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sigterm_under_load),
                                       cmocka_unit_test(test_sigterm_with_answer_held_past_grace)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
