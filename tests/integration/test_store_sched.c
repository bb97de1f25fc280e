/* test_store_sched: capacity, schedules and backfills in the store (store_sched.c), on SQLite, PostgreSQL and
 * Firestore (store_fixture.h). Pins that these calls failed on a Firestore store (the engine logged a WARNING at
 * every job end, and pools, max_active_runs, schedules and backfills did not work there), and on Firestore that two
 * replicas counting a pool (or a workflow's runs) in overlapping transactions cannot both admit (the second commit
 * loses, as PostgreSQL's row lock makes the second wait and recount), while one that only counts conflicts with
 * nobody (three replicas sharing a pool stalled when every job end took the lock). Checks: waiting keeps the first
 * wait's time, a wake takes the oldest waiters first and only steps still parked, a launching step that waits
 * forgets its intent (its job name can be taken again), the run queue's order and counts, logical times written
 * once, the schedule mark only moves forward, backfills listed newest first, and a pruned run takes its times and
 * waits along. */
#include "store_fixture.h"

static store_intent intent(int attempt, const char *job_name)
{
    return (store_intent){.attempt = attempt, .job_name = job_name, .project = "p", .region = "r",
                          .request_json = "{\"jobName\":\"x\"}"};
}

static int attempt_of(fixture *f, const char *run_id, const char *name)
{
    store_step st;
    OK(store_step_get(f->s, run_id, name, &st, &g_err));
    int a = st.attempt;
    store_step_free(&st);
    return a < 1 ? 1 : a;
}

static int64_t next_check(fixture *f, const char *run_id, const char *name)
{
    store_step st;
    OK(store_step_get(f->s, run_id, name, &st, &g_err));
    int64_t t = st.next_check_at;
    store_step_free(&st);
    return t;
}

static int64_t pool_count(store *s)
{
    int64_t n = -1;
    OK(store_begin(s, &g_err));
    OK(store_pool_active(s, "p", "r", &n, &g_err));
    OK(store_commit(s, &g_err));
    return n;
}

static void test_pool_waits_and_wakes(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    make_step(f->s, "r1", "a");
    make_step(f->s, "r1", "b");
    make_step(f->s, "r1", "c");
    int64_t n = 0;
    EXPECT(STORE_INVALID, store_pool_active(f->s, "p", "r", &n, &g_err));
    assert_int_equal(pool_count(f->s), 0);
    store_intent in = intent(attempt_of(f, "r1", "a"), "a-1");
    OK(store_step_record_intent(f->s, "r1", "a", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &in, &g_err));
    assert_int_equal(pool_count(f->s), 1);

    f->now = 1000;
    OK(store_step_wait_capacity(f->s, "r1", "b", STORE_STEP_PENDING, attempt_of(f, "r1", "b"), "p", "r", 90000,
                                "pool full", &g_err));
    f->now = 2000;
    OK(store_step_wait_capacity(f->s, "r1", "c", STORE_STEP_PENDING, attempt_of(f, "r1", "c"), "p", "r", 90000,
                                "pool full", &g_err));
    f->now = 3000; /* a second wait keeps the first wait's time */
    OK(store_step_wait_capacity(f->s, "r1", "b", STORE_STEP_PENDING, attempt_of(f, "r1", "b"), "p", "r", 90000,
                                "pool full", &g_err));
    int64_t since = 0;
    OK(store_step_wait_since(f->s, "r1", "b", &since, &g_err));
    assert_int_equal(since, 1000);
    OK(store_step_wait_since(f->s, "r1", "c", &since, &g_err));
    assert_int_equal(since, 2000);
    EXPECT(STORE_CONFLICT, store_step_wait_capacity(f->s, "r1", "b", STORE_STEP_LAUNCHING, attempt_of(f, "r1", "b"),
                                                    "p", "r", 90000, "x", &g_err));
    /* the oldest waiter first, due at its first wait's time; only steps still parked */
    int woken = -1;
    OK(store_pool_wake(f->s, "p", "r", 1, &woken, &g_err));
    assert_int_equal(woken, 1);
    assert_int_equal(next_check(f, "r1", "b"), 1000);
    assert_int_equal(next_check(f, "r1", "c"), 90000);
    OK(store_pool_wake(f->s, "p", "r", 5, &woken, &g_err));
    assert_int_equal(woken, 1);
    assert_int_equal(next_check(f, "r1", "c"), 2000);
    OK(store_pool_wake(f->s, "other", "r", 5, &woken, &g_err));
    assert_int_equal(woken, 0);
    OK(store_step_wait_clear(f->s, "r1", "b", &g_err));
    OK(store_step_wait_since(f->s, "r1", "b", &since, &g_err));
    assert_int_equal(since, 0);

    /* a launch refused for quota: the launching step waits, forgets its intent, and the same job name goes again */
    OK(store_step_wait_capacity(f->s, "r1", "a", STORE_STEP_LAUNCHING, in.attempt, "p", "r", 90000, "quota",
                                &g_err));
    store_step st;
    OK(store_step_get(f->s, "r1", "a", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_PENDING);
    assert_null(st.job_name);
    assert_string_equal(st.error, "quota");
    store_step_free(&st);
    assert_int_equal(pool_count(f->s), 0);
    OK(store_step_record_intent(f->s, "r1", "a", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &in, &g_err));
    assert_int_equal(pool_count(f->s), 1);

    /* a pruned run takes its waits along */
    OK(store_run_set_state(f->s, "r1", STORE_RUN_ANY, STORE_RUN_FAILED, NULL, &g_err));
    int64_t deleted = 0;
    OK(store_run_prune(f->s, f->now + 1, 10, &deleted, &g_err));
    assert_int_equal(deleted, 1);
    OK(store_step_wait_since(f->s, "r1", "c", &since, &g_err));
    assert_int_equal(since, 0);
}

/* Two replicas admit into one pool of one slot, and into one workflow of max_active_runs 1, in overlapping
 * transactions: only one commits. Firestore only: on SQLite the second transaction cannot start (the write lock)
 * and on PostgreSQL its count waits for the first's row lock, which one thread cannot interleave. */
static void test_admission_one_winner(void **state)
{
    fixture *f = *state;
    if (!is_fs(f)) skip();
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    make_run(f->s, "r2", "wf", NULL);
    make_step(f->s, "r1", "x");
    make_step(f->s, "r1", "y");
    store *s2 = open_store(f, 0);
    int64_t n1 = -1, n2 = -1;
    OK(store_begin(f->s, &g_err));
    OK(store_begin(s2, &g_err));
    OK(store_pool_active(f->s, "p", "r", &n1, &g_err));
    OK(store_pool_active(s2, "p", "r", &n2, &g_err));
    assert_int_equal(n1, 0);
    assert_int_equal(n2, 0);
    store_intent ix = intent(1, "x-1"), iy = intent(1, "y-1");
    OK(store_step_record_intent(f->s, "r1", "x", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &ix, &g_err));
    OK(store_step_record_intent(s2, "r1", "y", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &iy, &g_err));
    OK(store_commit(f->s, &g_err));
    EXPECT(STORE_BUSY, store_commit(s2, &g_err));
    assert_int_equal(pool_count(s2), 1);
    store_step st;
    OK(store_step_get(s2, "r1", "y", &st, &g_err));
    assert_int_equal(st.state, STORE_STEP_PENDING);
    store_step_free(&st);
    /* a transaction that only counts (a job end choosing how many to wake) takes no lock from one that admits */
    OK(store_begin(f->s, &g_err));
    OK(store_begin(s2, &g_err));
    OK(store_pool_active(f->s, "p", "r", &n1, &g_err));
    OK(store_pool_active(s2, "p", "r", &n2, &g_err));
    OK(store_step_set_note(s2, "r1", "x", 1, "counted", &g_err));
    OK(store_step_record_intent(f->s, "r1", "y", STORE_STEP_PENDING, STORE_ATTEMPT_ANY, &iy, &g_err));
    OK(store_commit(s2, &g_err));
    OK(store_commit(f->s, &g_err));
    assert_int_equal(pool_count(s2), 2);

    OK(store_begin(f->s, &g_err));
    OK(store_begin(s2, &g_err));
    OK(store_run_slots(f->s, "wf", &n1, &g_err));
    OK(store_run_slots(s2, "wf", &n2, &g_err));
    assert_int_equal(n1, 0);
    assert_int_equal(n2, 0);
    OK(store_run_set_state(f->s, "r1", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    OK(store_run_set_state(s2, "r2", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    OK(store_commit(f->s, &g_err));
    EXPECT(STORE_BUSY, store_commit(s2, &g_err));
    int64_t active = 0, queued = 0;
    OK(store_run_count_active(s2, "wf", &active, &queued, &g_err));
    assert_int_equal(active, 1);
    assert_int_equal(queued, 1);
    store_close(s2);
}

static void test_queue_times_marks_backfills(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    f->now = 1000;
    make_run(f->s, "r3", "wf", NULL);
    f->now = 2000;
    make_run(f->s, "r1", "wf", NULL);
    make_run(f->s, "r2", "wf", NULL);
    make_run(f->s, "o1", "other", NULL);
    char **ids = NULL;
    size_t n = 0;
    OK(store_run_queued(f->s, "wf", 10, &ids, &n, &g_err));
    assert_int_equal(n, 3);
    assert_string_equal(ids[0], "r3");
    assert_string_equal(ids[1], "r1");
    assert_string_equal(ids[2], "r2");
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    OK(store_run_queued(f->s, "wf", 1, &ids, &n, &g_err));
    assert_int_equal(n, 1);
    free(ids[0]);
    free(ids);
    OK(store_run_set_state(f->s, "r3", STORE_RUN_PENDING, STORE_RUN_RUNNING, NULL, &g_err));
    int64_t active = 0, queued = 0;
    OK(store_run_count_active(f->s, "wf", &active, &queued, &g_err));
    assert_int_equal(active, 1);
    assert_int_equal(queued, 2);
    OK(store_begin(f->s, &g_err));
    OK(store_run_slots(f->s, "wf", &active, &g_err));
    OK(store_commit(f->s, &g_err));
    assert_int_equal(active, 1);
    int64_t counts[STORE_RUN_STATE_COUNT];
    OK(store_run_count_origin(f->s, "wf", "api", counts, &g_err));
    assert_int_equal(counts[STORE_RUN_PENDING], 2);
    assert_int_equal(counts[STORE_RUN_RUNNING], 1);
    OK(store_run_count_origin(f->s, "wf", "schedule", counts, &g_err));
    assert_int_equal(counts[STORE_RUN_PENDING], 0);

    /* logical times: written once */
    int64_t lt, st, en;
    OK(store_run_times_put(f->s, "r3", 10, 5, 10, &g_err));
    OK(store_run_times_put(f->s, "r3", 99, 98, 99, &g_err));
    OK(store_run_times_get(f->s, "r3", &lt, &st, &en, &g_err));
    assert_int_equal(lt, 10);
    assert_int_equal(st, 5);
    assert_int_equal(en, 10);
    assert_int_equal(store_run_times_get(f->s, "r1", &lt, &st, &en, NULL), STORE_NOTFOUND);

    /* the schedule mark: the first sight, then only forward */
    int64_t mark = 0;
    OK(store_schedule_mark(f->s, "wf", 100, 0, &mark, &g_err));
    assert_int_equal(mark, 100);
    OK(store_schedule_mark(f->s, "wf", 500, 200, &mark, &g_err));
    assert_int_equal(mark, 200);
    OK(store_schedule_mark(f->s, "wf", 500, 150, &mark, &g_err));
    assert_int_equal(mark, 200);
    OK(store_schedule_mark(f->s, "other", 700, 0, &mark, &g_err));
    assert_int_equal(mark, 700);

    /* backfills: newest first */
    f->now = 5000;
    OK(store_backfill_put(f->s, "b1", "wf", "running", "{\"n\":1}", &g_err));
    f->now = 6000;
    OK(store_backfill_put(f->s, "b2", "wf", "done", "{\"n\":2}", &g_err));
    OK(store_backfill_put(f->s, "b1", "wf", "running", "{\"n\":3}", &g_err));
    char *bs = NULL, *bd = NULL;
    OK(store_backfill_get(f->s, "b1", &bs, &bd, &g_err));
    assert_string_equal(bs, "running");
    assert_string_equal(bd, "{\"n\":3}");
    free(bs);
    free(bd);
    EXPECT(STORE_NOTFOUND, store_backfill_get(f->s, "nope", &bs, &bd, &g_err));
    OK(store_backfill_list(f->s, 0, 10, &ids, &n, &g_err));
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "b2");
    assert_string_equal(ids[1], "b1");
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    OK(store_backfill_list(f->s, 1, 10, &ids, &n, &g_err));
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "b1");
    free(ids[0]);
    free(ids);

    /* a pruned run takes its times along */
    OK(store_run_set_state(f->s, "r3", STORE_RUN_ANY, STORE_RUN_FAILED, NULL, &g_err));
    int64_t deleted = 0;
    OK(store_run_prune(f->s, f->now + 1, 10, &deleted, &g_err));
    assert_int_equal(deleted, 1);
    assert_int_equal(store_run_times_get(f->s, "r3", &lt, &st, &en, NULL), STORE_NOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_pool_waits_and_wakes),
        STORE_TEST(test_admission_one_winner),
        STORE_TEST(test_queue_times_marks_backfills),
    };
    return STORE_RUN_TESTS(tests);
}
