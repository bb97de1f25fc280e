/* test_store_durability: two handles on one store (a writer thread against engine transactions) and
 * SIGKILL at random moments while a child commits launches: every acknowledged commit survives and no
 * half-written launch exists. Each test runs on SQLite and on PostgreSQL (store_fixture.h); how a second
 * writer waits differs (SQLite: one write lock taken at BEGIN; PostgreSQL: row locks) and is tested per backend. */
#include "store_fixture.h"

/* ---- two handles ---- */

typedef struct {
    const char *path;
    int n, failures, first_rc;
    char first_err[256];
} writer_arg;

static void *event_writer(void *p)
{
    writer_arg *a = p;
    store *s = NULL;
    char *err = NULL;
    store_options o = {.busy_timeout_ms = 10000};
    int rc = store_open(a->path, &o, &s, &err);
    for (int i = 0; rc == STORE_OK && i < a->n; i++) {
        char mid[32];
        snprintf(mid, sizeof mid, "w-%d", i);
        store_event ev = {.message_id = mid, .source = STORE_SRC_PUSH, .job_id = mid, .state = "JOB_STATE_RUNNING"};
        rc = store_inbox_put(s, &ev, NULL, &err);
        if (rc == STORE_OK && i % 50 == 0) { /* reads while the other handle holds the write lock */
            store_event_list l;
            rc = store_inbox_fetch(s, 5, &l, &err);
            store_event_list_free(&l);
        }
    }
    if (rc != STORE_OK) {
        a->failures++;
        a->first_rc = rc;
        snprintf(a->first_err, sizeof a->first_err, "%s", err ? err : "");
    }
    free(err);
    store_close(s);
    return NULL;
}

static void test_two_handles(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    writer_arg a = {.path = f->url, .n = 400};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, event_writer, &a), 0);
    /* Meanwhile the engine runs transactions that hold the write lock for a few ms each. */
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "run-%d", i);
        OK(store_begin(f->s, &g_err));
        make_run(f->s, id, "etl", NULL);
        make_step(f->s, id, "a");
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
        OK(store_commit(f->s, &g_err));
    }
    pthread_join(th, NULL);
    if (a.failures) fail_msg("writer failed: %d %s", a.first_rc, a.first_err);

    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_by_state(f->s, counts, &g_err));
    assert_int_equal(counts[STORE_RUN_PENDING], 40);
    store_event_list l;
    OK(store_inbox_fetch(f->s, 10000, &l, &g_err));
    assert_int_equal(l.count, 400);
    store_event_list_free(&l);

    /* Isolation: the second handle does not see an uncommitted run, then sees it after commit. */
    store *s2 = open_store(f, 0);
    OK(store_begin(f->s, &g_err));
    make_run(f->s, "hidden", "etl", NULL);
    store_run r;
    EXPECT(STORE_NOTFOUND, store_run_get(s2, "hidden", &r, &g_err));
    /* And its writes wait for the lock: with a short timeout it reports BUSY, not a crash or a hang. */
    store_options quick = {.busy_timeout_ms = 50};
    store *s3 = NULL;
    OK(store_open(f->url, &quick, &s3, &g_err));
    store_event ev = {.message_id = "late", .source = STORE_SRC_PUSH};
    if (is_pg(f)) {
        /* PostgreSQL locks rows, not the store: a write to another row goes ahead at once, a write to a row
         * the open transaction changed waits busy_timeout_ms and reports BUSY, and s3's own transaction
         * survives that failure. */
        OK(store_run_set_state(f->s, "run-0", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
        OK(store_inbox_put(s3, &ev, NULL, &g_err));
        OK(store_begin(s3, &g_err));
        EXPECT(STORE_BUSY, store_run_set_state(s3, "run-0", STORE_RUN_ANY, STORE_RUN_FAILED, NULL, &g_err));
        assert_non_null(strstr(g_err, "lock"));
        assert_true(store_in_transaction(s3));
        OK(store_run_set_state(s3, "run-1", STORE_RUN_PENDING, STORE_RUN_CANCELLED, NULL, &g_err));
        OK(store_commit(s3, &g_err));
    } else if (is_fs(f)) {
        /* Firestore locks documents, not the store: a write to another document goes ahead at once. */
        OK(store_inbox_put(s3, &ev, NULL, &g_err));
    } else {
        EXPECT(STORE_BUSY, store_inbox_put(s3, &ev, NULL, &g_err));
        EXPECT(STORE_BUSY, store_begin(s3, &g_err));
        assert_false(store_in_transaction(s3));
    }
    /* Reads are never blocked by the writer. */
    OK(store_run_get(s3, "run-0", &r, &g_err));
    assert_int_equal(r.state, STORE_RUN_PENDING); /* not the uncommitted "running" */
    store_run_free(&r);
    OK(store_commit(f->s, &g_err));
    if (!is_pg(f) && !is_fs(f)) OK(store_inbox_put(s3, &ev, NULL, &g_err));
    OK(store_run_get(s2, "hidden", &r, &g_err));
    store_run_free(&r);
    OK(store_run_get(s2, "run-1", &r, &g_err));
    assert_int_equal(r.state, is_pg(f) ? STORE_RUN_CANCELLED : STORE_RUN_PENDING);
    store_run_free(&r);
    store_close(s3);
    store_close(s2);
}

/* ---- crash durability ---- */

#define CRASH_PAD 3000

/* The child plays the engine for run i in three commits, acking each committed (i * 3 + phase) on `fd`:
 *   phase 0: one transaction: create run r<i>, step s1, s1's launch intent, the job's inbox event;
 *   phase 1: set_job on s1 (autocommit);
 *   phase 2: one transaction: finish s1 succeeded + insert s2 + s2's intent.
 * It starts at (start, phase), so after a kill it resumes the half-done run as the engine would. */
static void crash_child(const char *path, int start, int phase, int fd, int sync)
{
    store *s = NULL;
    char *err = NULL;
    store_options o = {.synchronous = sync ? STORE_SYNC_NORMAL : STORE_SYNC_FULL};
    if (store_open(path, &o, &s, &err) != STORE_OK) _exit(3);
    if (start == 0 && phase == 0 && store_script_put(s, HASH_A, "wf", "src", &err) != STORE_OK) _exit(4);
    int busy_retries = 0;
    char *pad = malloc(CRASH_PAD + 1);
    memset(pad, 'p', CRASH_PAD);
    pad[CRASH_PAD] = '\0';
    for (int i = start;; i++, phase = 0) {
        char id[32], jn1[32], jn2[32], jid[32], req[CRASH_PAD + 128], res[64];
        snprintf(id, sizeof id, "r%07d", i);
        snprintf(jn1, sizeof jn1, "job-%07d-1", i);
        snprintf(jn2, sizeof jn2, "job-%07d-2", i);
        snprintf(jid, sizeof jid, "jid-%07d", i);
        snprintf(req, sizeof req, "{\"i\":%d,\"pad\":\"%s\"}", i, pad);
        snprintf(res, sizeof res, "{\"i\":%d}", i);
        for (; phase < 3; phase++) {
            int rc = STORE_OK;
            if (phase == 0) {
                store_run r = {.id = id, .workflow = "wf", .script_hash = HASH_A, .state = STORE_RUN_RUNNING};
                store_intent in = {.attempt = 1, .job_name = jn1, .request_json = req, .next_check_at = 1};
                store_event ev = {.message_id = jn1, .source = STORE_SRC_PUSH, .job_id = jid, .state = "JOB_STATE_DONE"};
                if ((rc = store_begin(s, &err)) || (rc = store_run_create(s, &r, &err)) ||
                    (rc = store_step_insert(s, &(store_step){.run_id = id, .name = "s1"}, &err)) ||
                    (rc = store_step_record_intent(s, id, "s1", STORE_STEP_PENDING, 1, &in, &err)) ||
                    (rc = store_inbox_put(s, &ev, NULL, &err)) || (rc = store_commit(s, &err)))
                    (void)0;
            } else if (phase == 1) {
                rc = store_step_set_job(s, id, "s1", 1, jid, "JOB_STATE_RUNNING", 2, &err);
            } else {
                store_intent in = {.attempt = 1, .job_name = jn2, .request_json = req, .next_check_at = 3};
                if ((rc = store_begin(s, &err)) ||
                    (rc = store_step_finish(s, id, "s1", 1, STORE_STEP_SUCCEEDED, "JOB_STATE_DONE", res, NULL, &err)) ||
                    (rc = store_step_insert(s, &(store_step){.run_id = id, .name = "s2"}, &err)) ||
                    (rc = store_step_record_intent(s, id, "s2", STORE_STEP_PENDING, 1, &in, &err)) || (rc = store_commit(s, &err)))
                    (void)0;
            }
            /* A transaction that lost a race (Firestore: the emulator still holds the killed child's locks until
             * its transaction expires) is retried, as the engine retries STORE_BUSY. */
            if (rc == STORE_BUSY && busy_retries++ < 200) {
                store_rollback(s, NULL);
                free(err);
                err = NULL;
                struct timespec pause = {0, 50 * 1000 * 1000};
                nanosleep(&pause, NULL);
                phase--;
                continue;
            }
            if (rc != STORE_OK) {
                fprintf(stderr, "crash child: run %d phase %d failed: %s\n", i, phase, err ? err : "?");
                _exit(5);
            }
            int ack = i * 3 + phase;
            if (write(fd, &ack, sizeof ack) != sizeof ack) _exit(6);
        }
    }
}

static void check_request(const store_step *st, int i)
{
    assert_non_null(st->request_json);
    json_t *req = json_loads(st->request_json, 0, NULL);
    assert_non_null(req);
    assert_int_equal(json_integer_value(json_object_get(req, "i")), i);
    assert_int_equal(strlen(json_string_value(json_object_get(req, "pad"))), CRASH_PAD);
    json_decref(req);
}

/* Checks the invariant over the whole file: runs are exactly r0..rN-1; every run but the last has
 * finished phase 2; the last is exactly at the end of phase 0, 1 or 2 (never in between); each run has
 * one in-flight step and one inbox event; every acknowledged commit is there. Returns N and the phases
 * done by the last run (1..3) in *last_phase. */
static int crash_check(fixture *f, int acked, int *last_phase)
{
    if (!is_pg(f) && !is_fs(f)) assert_raw(f->path, "PRAGMA integrity_check", "ok");
    store *s = open_store(f, 0);
    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_by_state(s, counts, &g_err));
    int n = (int)counts[STORE_RUN_RUNNING], phases = 0;
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) {
        char id[32], jn[32], jid[32], res[64];
        snprintf(id, sizeof id, "r%07d", i);
        snprintf(jid, sizeof jid, "jid-%07d", i);
        snprintf(res, sizeof res, "{\"i\":%d}", i);
        store_step_list l;
        OK(store_step_list_run(s, id, &l, &g_err));
        assert_true(l.count == 1 || l.count == 2);
        store_step *s1 = &l.items[0];
        assert_string_equal(s1->name, "s1");
        snprintf(jn, sizeof jn, "job-%07d-1", i);
        assert_non_null(s1->job_name); /* a half-written run must fail the test, not crash it */
        assert_string_equal(s1->job_name, jn);
        assert_int_equal(s1->attempt, 1);
        check_request(s1, i);
        if (l.count == 2) { /* phase 2 done: s1 succeeded with its result, s2 launching */
            phases = 3;
            assert_int_equal(s1->state, STORE_STEP_SUCCEEDED);
            assert_non_null(s1->job_id);
            assert_non_null(s1->job_state);
            assert_non_null(s1->result_json);
            assert_string_equal(s1->job_id, jid);
            assert_string_equal(s1->job_state, "JOB_STATE_DONE");
            assert_string_equal(s1->result_json, res);
            store_step *s2 = &l.items[1];
            assert_string_equal(s2->name, "s2");
            snprintf(jn, sizeof jn, "job-%07d-2", i);
            assert_non_null(s2->job_name);
            assert_string_equal(s2->job_name, jn);
            assert_int_equal(s2->state, STORE_STEP_LAUNCHING);
            check_request(s2, i);
        } else if (s1->job_id != NULL) { /* phase 1 done */
            phases = 2;
            assert_string_equal(s1->job_id, jid);
            assert_int_equal(s1->state, STORE_STEP_RUNNING);
            assert_null(s1->result_json);
        } else { /* phase 0 done */
            phases = 1;
            assert_int_equal(s1->state, STORE_STEP_LAUNCHING);
            assert_null(s1->job_state);
        }
        if (i < n - 1) assert_int_equal(phases, 3);
        store_step_list_free(&l);
    }
    /* Every acknowledged commit survived. */
    int ack_run = acked / 3, ack_phases = acked % 3 + 1;
    assert_true(ack_run < n);
    if (ack_run == n - 1) assert_true(phases >= ack_phases);
    store_step_list due;
    OK(store_step_due(s, INT64_MAX, 10000, &due, &g_err));
    assert_int_equal(due.count, (size_t)n); /* exactly one in-flight step per run */
    store_step_list_free(&due);
    store_event_list ev;
    OK(store_inbox_fetch(s, 10000, &ev, &g_err));
    assert_int_equal(ev.count, (size_t)n);
    store_event_list_free(&ev);
    store_close(s);
    *last_phase = phases;
    return n;
}

static void crash_rounds(fixture *f, int sync)
{
    store_close(f->s);
    f->s = NULL;
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8) ^ (sync ? 0x9e3779b9u : 0u);
    srand(seed);
    print_message("crash test seed %u (%s)\n", seed, sync ? "NORMAL" : "FULL");
    int next_run = 0, next_phase = 0, commits = 0;
    for (int round = 0; round < 8; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(f->url, next_run, next_phase, fds[1], sync);
            _exit(0);
        }
        close(fds[1]);
        /* Let it commit at least once, then kill it at a random moment within the next ~150 ms. */
        int acked = -1, v;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        assert_true(poll(&pfd, 1, 10000) == 1);
        int wait_ms = rand() % 150;
        struct timespec ts = {0, (long)wait_ms * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* killed, not exited with an error */
        while (read(fds[0], &v, sizeof v) == sizeof v) acked = v;
        close(fds[0]);
        assert_true(acked >= next_run * 3 + next_phase);
        int phases = 0, n = crash_check(f, acked, &phases);
        print_message("round %d: killed after %d ms; last ack run %d phase %d; found %d runs, last at phase %d\n",
                      round, wait_ms, acked / 3, acked % 3, n, phases);
        commits += acked - (next_run * 3 + next_phase) + 1;
        next_run = phases == 3 ? n : n - 1;
        next_phase = phases == 3 ? 0 : phases;
    }
    assert_true(commits >= 8);
}

static void test_crash_durability_full(void **state) { crash_rounds(*state, 0); }
static void test_crash_durability_normal(void **state) { crash_rounds(*state, 1); }


/* ---- racing processes ---- */

#define RACE_STEPS 200
#define RACE_PROCS 4

/* A child tries to launch every step; the compare-and-set lets exactly one process win each. Exits with
 * the number it won, or 255 on any store error (e.g. BUSY past the timeout). */
static void race_child(const char *path, int me)
{
    store *s = NULL;
    char *err = NULL;
    int won = 0;
    if (store_open(path, NULL, &s, &err) != STORE_OK) _exit(255);
    for (int i = 0; i < RACE_STEPS; i++) {
        char name[32], jn[48];
        snprintf(name, sizeof name, "s%03d", i);
        snprintf(jn, sizeof jn, "job-%03d-by-%d", i, me);
        store_intent in = {.attempt = 1, .job_name = jn, .request_json = "{}"};
        int rc = store_step_record_intent(s, "run-1", name, STORE_STEP_PENDING, 1, &in, &err);
        free(err);
        err = NULL;
        if (rc == STORE_OK) won++;
        else if (rc != STORE_CONFLICT) _exit(255);
    }
    store_close(s);
    _exit(won);
}

static void test_racing_processes_launch_once(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    OK(store_begin(f->s, &g_err));
    for (int i = 0; i < RACE_STEPS; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%03d", i);
        make_step(f->s, "run-1", name);
    }
    OK(store_commit(f->s, &g_err));
    pid_t pids[RACE_PROCS];
    for (int c = 0; c < RACE_PROCS; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) race_child(f->url, c);
    }
    int total = 0, won[RACE_PROCS];
    for (int c = 0; c < RACE_PROCS; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        won[c] = WEXITSTATUS(status);
        assert_int_not_equal(won[c], 255);
        total += won[c];
    }
    assert_int_equal(total, RACE_STEPS);
    /* Each step carries the job name of the one process that won it, and the tallies agree. */
    int by[RACE_PROCS] = {0};
    store_step_list l;
    OK(store_step_list_run(f->s, "run-1", &l, &g_err));
    assert_int_equal(l.count, RACE_STEPS);
    for (size_t i = 0; i < l.count; i++) {
        assert_int_equal(l.items[i].state, STORE_STEP_LAUNCHING);
        const char *p = strstr(l.items[i].job_name, "-by-");
        assert_non_null(p);
        int c = atoi(p + 4);
        assert_true(c >= 0 && c < RACE_PROCS);
        by[c]++;
    }
    store_step_list_free(&l);
    for (int c = 0; c < RACE_PROCS; c++) assert_int_equal(by[c], won[c]);
}

/* Several processes creating the same new store at once: all open it, migrations run once. */
static void test_racing_first_open(void **state)
{
    fixture *f = *state;
    char *p = fixture_new_url(f, "fresh.db");
    assert_non_null(p);
    pid_t pids[RACE_PROCS];
    for (int c = 0; c < RACE_PROCS; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            store *s = NULL;
            char *err = NULL;
            int rc = store_open(p, NULL, &s, &err);
            if (rc == STORE_OK) rc = store_script_put(s, HASH_A, "wf", "src", &err);
            if (rc != STORE_OK) fprintf(stderr, "child %d: %s\n", c, err ? err : "");
            store_close(s);
            _exit(rc == STORE_OK ? 0 : 100 - rc);
        }
    }
    for (int c = 0; c < RACE_PROCS; c++) {
        int status = 0;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    if (is_fs(f)) { /* no SQL to read the schema back with: every child's open and write succeeding is the check */
        free(p);
        return;
    }
    char *v = raw_query_at(f, p, version_sql(f));
    assert_non_null(v);
    char latest[16];
    snprintf(latest, sizeof latest, "%d", store_schema_latest());
    assert_string_equal(v, latest);
    free(v);
    v = raw_query_at(f, p, "SELECT count(*) FROM scripts");
    assert_non_null(v);
    assert_string_equal(v, "1");
    free(v);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_two_handles),
        STORE_TEST(test_crash_durability_full),
        STORE_TEST(test_crash_durability_normal),
        STORE_TEST(test_racing_processes_launch_once),
        STORE_TEST(test_racing_first_open),
    };
    return STORE_RUN_TESTS(tests);
}
