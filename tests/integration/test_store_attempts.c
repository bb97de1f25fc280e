/* test_store_attempts: every attempt of a step is kept (store_attempts.c), on SQLite, PostgreSQL and Firestore
 * (store_fixture.h; on Firestore it pins that attempts were not kept at all there). Pins issue 22's first bug: a retried step kept only its last attempt, so attempts 1 and 2,
 * their job ids, states and times were lost. Checks: each step write copies its attempt in the same transaction
 * (a rolled-back transition leaves no attempt row), a retry ends the attempt as failed with its error and cause,
 * the next launch gets a row of its own, running time from any source keeps the earliest, and a run's attempts
 * go with the run. */
#include "store_fixture.h"

static store_intent intent(int attempt, const char *job_name)
{
    return (store_intent){.attempt = attempt, .job_name = job_name, .project = "p", .region = "r",
                          .request_json = "{\"jobName\":\"x\"}"};
}

static void test_attempts_kept_across_retries(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    make_step(f->s, "r1", "load");
    /* attempt 1: launched, job known, seen running, fails; a retry follows */
    store_intent in = intent(1, "load-1");
    f->now = 1000;
    OK(store_step_record_intent(f->s, "r1", "load", STORE_STEP_PENDING, 1, &in, &g_err));
    f->now = 1100;
    OK(store_step_set_job(f->s, "r1", "load", 1, "job-1", "JOB_STATE_PENDING", 0, &g_err));
    f->now = 1500;
    OK(store_step_set_check(f->s, "r1", "load", 1, 0, 0, "JOB_STATE_RUNNING", &g_err));
    f->now = 2000;
    OK(store_begin(f->s, &g_err));
    OK(store_step_set_state(f->s, "r1", "load", STORE_STEP_RUNNING, 1, STORE_STEP_PENDING, &g_err));
    OK(store_step_set_check(f->s, "r1", "load", 1, 5000, 0, "JOB_STATE_FAILED", &g_err));
    OK(store_attempt_end(f->s, "r1", "load", 1, STORE_STEP_FAILED, "job failed", &g_err));
    OK(store_commit(f->s, &g_err));
    /* the cause comes after the step moved on: it still lands on attempt 1 */
    EXPECT(STORE_CONFLICT, store_step_set_cause(f->s, "r1", "load", 2, "OOM", &g_err));
    OK(store_step_set_cause(f->s, "r1", "load", 1, "OOM in worker", &g_err));
    /* attempt 2: launched and succeeds */
    in = intent(2, "load-2");
    f->now = 5000;
    OK(store_step_record_intent(f->s, "r1", "load", STORE_STEP_PENDING, 1, &in, &g_err));
    f->now = 5100;
    OK(store_step_set_job(f->s, "r1", "load", 2, "job-2", NULL, 0, &g_err));
    f->now = 6000;
    OK(store_step_finish(f->s, "r1", "load", 2, STORE_STEP_SUCCEEDED, "JOB_STATE_DONE", NULL, NULL, &g_err));

    store_attempt_list l;
    OK(store_attempt_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 2);
    store_attempt *a = &l.items[0];
    assert_string_equal(a->step, "load");
    assert_int_equal(a->attempt, 1);
    assert_string_equal(a->job_name, "load-1");
    assert_string_equal(a->job_id, "job-1");
    assert_string_equal(a->request_json, "{\"jobName\":\"x\"}");
    assert_int_equal(a->state, STORE_STEP_FAILED);
    assert_string_equal(a->job_state, "JOB_STATE_FAILED");
    assert_string_equal(a->error, "job failed");
    assert_string_equal(a->failure_cause, "OOM in worker");
    assert_int_equal(a->launched_at, 1000);
    assert_int_equal(a->running_at, 1500);
    assert_int_equal(a->ended_at, 2000);
    a = &l.items[1];
    assert_int_equal(a->attempt, 2);
    assert_string_equal(a->job_id, "job-2");
    assert_int_equal(a->state, STORE_STEP_SUCCEEDED);
    assert_null(a->error);
    assert_null(a->failure_cause);
    assert_int_equal(a->launched_at, 5000);
    assert_int_equal(a->running_at, 0);
    assert_int_equal(a->ended_at, 6000);
    store_attempt_list_free(&l);

    /* running time from another source (an event, the job's own times): the earliest is kept */
    OK(store_attempt_set_running(f->s, "r1", "load", 2, 5600, &g_err));
    OK(store_attempt_set_running(f->s, "r1", "load", 2, 5800, &g_err));
    store_attempt one;
    OK(store_attempt_get(f->s, "r1", "load", 2, &one, &g_err));
    assert_int_equal(one.running_at, 5600);
    store_attempt_free(&one);
    EXPECT(STORE_NOTFOUND, store_attempt_set_running(f->s, "r1", "load", 7, 1, &g_err));
    EXPECT(STORE_NOTFOUND, store_attempt_get(f->s, "r1", "load", 7, &one, &g_err));
}

static void test_attempt_written_with_its_transition(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    make_step(f->s, "r1", "a");
    make_step(f->s, "r1", "hook");
    store_intent in = intent(1, "a-1");
    /* rolled back with the launch intent: no attempt */
    OK(store_begin(f->s, &g_err));
    OK(store_step_record_intent(f->s, "r1", "a", STORE_STEP_PENDING, 1, &in, &g_err));
    OK(store_rollback(f->s, &g_err));
    store_attempt_list l;
    OK(store_attempt_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 0);
    store_attempt_list_free(&l);
    /* a step that never launched a job (a hook) has no attempt */
    OK(store_step_finish(f->s, "r1", "hook", STORE_ATTEMPT_ANY, STORE_STEP_SUCCEEDED, NULL, NULL, NULL, &g_err));
    /* a failed write copies nothing and leaves no transaction open */
    EXPECT(STORE_CONFLICT, store_step_set_job(f->s, "r1", "a", 1, "j", NULL, 0, &g_err));
    assert_int_equal(store_in_transaction(f->s), 0);
    OK(store_step_record_intent(f->s, "r1", "a", STORE_STEP_PENDING, 1, &in, &g_err));
    OK(store_step_set_job(f->s, "r1", "a", 1, "j", "JOB_STATE_RUNNING", 0, &g_err));
    /* an in-flight note is not the attempt's error */
    OK(store_step_set_note(f->s, "r1", "a", 1, "retrying: connection refused", &g_err));
    OK(store_step_set_check(f->s, "r1", "a", 1, 0, 0, "JOB_STATE_RUNNING", &g_err));
    OK(store_attempt_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_int_equal(l.items[0].state, STORE_STEP_RUNNING);
    assert_int_equal(l.items[0].running_at, f->now);
    assert_null(l.items[0].error);
    assert_int_equal(l.items[0].ended_at, 0);
    store_attempt_list_free(&l);
    /* a redrive puts the failed step back to pending: its attempt stays failed, with its error */
    OK(store_step_finish(f->s, "r1", "a", 1, STORE_STEP_FAILED, "JOB_STATE_FAILED", NULL, "boom", &g_err));
    OK(store_step_set_state(f->s, "r1", "a", STORE_STEP_FAILED, 1, STORE_STEP_PENDING, &g_err));
    OK(store_attempt_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_int_equal(l.items[0].state, STORE_STEP_FAILED);
    assert_string_equal(l.items[0].error, "boom");
    store_attempt_list_free(&l);
    /* a step launched before schema 9 (no attempt row) and put back by a redrive: its row says how it ended
     * (SQL only: no Firestore store predates attempts, and no SQL reaches under its API) */
    if (!is_fs(f)) {
        make_step(f->s, "r1", "old");
        store_intent oin = intent(1, "old-1");
        OK(store_step_record_intent(f->s, "r1", "old", STORE_STEP_PENDING, 1, &oin, &g_err));
        OK(store_step_finish(f->s, "r1", "old", 1, STORE_STEP_SUCCEEDED, "JOB_STATE_DONE", NULL, NULL, &g_err));
        free(raw_query(f, "DELETE FROM attempts WHERE step = 'old'"));
        OK(store_step_set_state(f->s, "r1", "old", STORE_STEP_SUCCEEDED, 1, STORE_STEP_WAITING, &g_err));
        store_attempt one;
        OK(store_attempt_get(f->s, "r1", "old", 1, &one, &g_err));
        assert_int_equal(one.state, STORE_STEP_SUCCEEDED);
        store_attempt_free(&one);
    }
    /* the attempts go with their run */
    OK(store_run_set_state(f->s, "r1", STORE_RUN_ANY, STORE_RUN_FAILED, NULL, &g_err));
    int64_t deleted = 0;
    OK(store_run_prune(f->s, f->now + 1, 10, &deleted, &g_err));
    assert_int_equal(deleted, 1);
    OK(store_attempt_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 0);
    store_attempt_list_free(&l);
    if (!is_fs(f)) assert_query(f, "SELECT count(*) FROM attempts", "0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_attempts_kept_across_retries),
        STORE_TEST(test_attempt_written_with_its_transition),
    };
    return STORE_RUN_TESTS(tests);
}
