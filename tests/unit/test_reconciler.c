/* test_reconciler: the reconciler's pure decisions with concrete values: what to do with a due step (look a launch
 * up, get the job, stop it, nothing), the default policy, the short schedule of a job that should be ending
 * (hint age / 8 clamped to hint_first_ms..hint_max_ms, for lag_window_ms), the poll interval, the doubling per
 * failed check up to poll_max_ms, and a running step's deadline as the latest next check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "reconciler.h"

#define NOW INT64_C(1700000000000) /* a clock in ms since the epoch */

static char JOB_ID[] = "2024-01-01_00_00_00-1234567890";

/* A step in `state` with job id `job_id` (NULL: none yet), deadline_at and hint_at; every other field zero. */
static store_step step(store_step_state state, char *job_id, int64_t deadline_at, int64_t hint_at)
{
    store_step st = {0};
    st.state = state;
    st.attempt = 1;
    st.job_id = job_id;
    st.deadline_at = deadline_at;
    st.hint_at = hint_at;
    return st;
}

/* The next check of a running step without a deadline, on the default policy, as a delay from NOW. */
static int64_t delay(int64_t hint_at, int failures)
{
    rec_policy p = rec_policy_default();
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, hint_at);
    return rec_next_check(&p, &st, failures, NOW) - NOW;
}

static void test_policy_default(void **state)
{
    (void)state;
    rec_policy p = rec_policy_default();
    assert_int_equal(p.poll_ms, 15000);
    assert_int_equal(p.poll_max_ms, 300000);
    assert_int_equal(p.lease_ms, 60000);
    assert_int_equal(p.hint_first_ms, 200);
    assert_int_equal(p.hint_max_ms, 1000);
    assert_int_equal(p.lag_window_ms, 120000);
}

/* A launch intent (launching), or a running or cancelling step whose job id is not known: look the name up, even
 * when the run is stopping or the deadline has passed (nothing can be stopped before it is found). */
static void test_decide_find(void **state)
{
    (void)state;
    store_step st = step(STORE_STEP_LAUNCHING, NULL, 0, 0);
    assert_int_equal(rec_decide(&st, 0, NOW), REC_FIND);
    assert_int_equal(rec_decide(&st, 1, NOW), REC_FIND);
    st = step(STORE_STEP_LAUNCHING, JOB_ID, NOW - 1, 0); /* launching is always a look-up */
    assert_int_equal(rec_decide(&st, 1, NOW), REC_FIND);
    st = step(STORE_STEP_RUNNING, NULL, 0, 0);
    assert_int_equal(rec_decide(&st, 0, NOW), REC_FIND);
    st = step(STORE_STEP_RUNNING, NULL, NOW - 1, 0);
    assert_int_equal(rec_decide(&st, 1, NOW), REC_FIND);
    st = step(STORE_STEP_CANCELLING, NULL, 0, 0);
    assert_int_equal(rec_decide(&st, 1, NOW), REC_FIND);
}

/* A running job before its deadline, on a run that goes on, and a cancelling job: ask for the state. */
static void test_decide_get(void **state)
{
    (void)state;
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, 0); /* no deadline */
    assert_int_equal(rec_decide(&st, 0, NOW), REC_GET);
    st = step(STORE_STEP_RUNNING, JOB_ID, NOW + 1, 0); /* 1 ms before the deadline */
    assert_int_equal(rec_decide(&st, 0, NOW), REC_GET);
    st = step(STORE_STEP_RUNNING, JOB_ID, 0, NOW - 500); /* a hint changes what to ask, not whether */
    assert_int_equal(rec_decide(&st, 0, NOW), REC_GET);
    st = step(STORE_STEP_CANCELLING, JOB_ID, NOW - 1, 0); /* already being stopped: only watched */
    assert_int_equal(rec_decide(&st, 1, NOW), REC_GET);
}

/* A running job whose run is stopping, or whose deadline has come (at it exactly, or after): stop it. */
static void test_decide_stop(void **state)
{
    (void)state;
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, 0);
    assert_int_equal(rec_decide(&st, 1, NOW), REC_STOP);
    st = step(STORE_STEP_RUNNING, JOB_ID, NOW + 60000, 0); /* stopping wins over a deadline still ahead */
    assert_int_equal(rec_decide(&st, 1, NOW), REC_STOP);
    st = step(STORE_STEP_RUNNING, JOB_ID, NOW, 0);
    assert_int_equal(rec_decide(&st, 0, NOW), REC_STOP);
    st = step(STORE_STEP_RUNNING, JOB_ID, NOW - 3600000, 0);
    assert_int_equal(rec_decide(&st, 0, NOW), REC_STOP);
}

/* Steps with no job in flight: nothing to ask, whatever the run or the deadline. */
static void test_decide_none(void **state)
{
    (void)state;
    store_step_state idle[] = {STORE_STEP_PENDING,   STORE_STEP_WAITING,   STORE_STEP_SUCCEEDED,
                               STORE_STEP_FAILED,    STORE_STEP_CANCELLED, STORE_STEP_SKIPPED};
    for (size_t i = 0; i < sizeof idle / sizeof idle[0]; i++) {
        store_step st = step(idle[i], JOB_ID, NOW - 1, 0);
        assert_int_equal(rec_decide(&st, 1, NOW), REC_NONE);
        st = step(idle[i], NULL, 0, 0);
        assert_int_equal(rec_decide(&st, 0, NOW), REC_NONE);
    }
}

/* The short schedule lasts lag_window_ms (120 s) from the hint: at age 0 and 119999 ms, not at 120000 ms, and not
 * without a hint. */
static void test_expecting_end_window(void **state)
{
    (void)state;
    rec_policy p = rec_policy_default();
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, 0);
    assert_int_equal(rec_expecting_end(&p, &st, NOW), 0);
    assert_int_equal(rec_expecting_end(&p, &st, 1000), 0); /* hint_at 0 is "none", even 1 s after the epoch */
    st.hint_at = NOW;
    assert_int_equal(rec_expecting_end(&p, &st, NOW), 1);
    assert_int_equal(rec_expecting_end(&p, &st, NOW + 119999), 1);
    assert_int_equal(rec_expecting_end(&p, &st, NOW + 120000), 0);
    assert_int_equal(rec_expecting_end(&p, &st, NOW + 500000), 0);
    p.lag_window_ms = 5000; /* the window is the policy's */
    assert_int_equal(rec_expecting_end(&p, &st, NOW + 4999), 1);
    assert_int_equal(rec_expecting_end(&p, &st, NOW + 5000), 0);
}

/* Without a hint, or once the lag window has passed: the poll interval, 15 s. */
static void test_next_check_poll(void **state)
{
    (void)state;
    assert_int_equal(delay(0, 0), 15000);
    assert_int_equal(delay(NOW - 120000, 0), 15000); /* the window's end */
    assert_int_equal(delay(NOW - 119999, 0), 1000); /* 1 ms before it: still the short schedule */
    rec_policy p = rec_policy_default();
    p.poll_ms = 7000;
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, 0);
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 7000);
    p.poll_ms = 0; /* never at once: at least 1 ms later */
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 1);
}

/* On the short schedule: the hint's age / 8, no sooner than hint_first_ms (200) nor later than hint_max_ms (1000). */
static void test_next_check_short_schedule(void **state)
{
    (void)state;
    assert_int_equal(delay(NOW, 0), 200); /* age 0 -> 0 -> 200 */
    assert_int_equal(delay(NOW - 800, 0), 200); /* 100 -> 200 */
    assert_int_equal(delay(NOW - 1600, 0), 200); /* 200 exactly */
    assert_int_equal(delay(NOW - 1608, 0), 201); /* 201 */
    assert_int_equal(delay(NOW - 4000, 0), 500); /* 500 */
    assert_int_equal(delay(NOW - 7999, 0), 999); /* 999.875, rounded down */
    assert_int_equal(delay(NOW - 8000, 0), 1000); /* 1000 exactly */
    assert_int_equal(delay(NOW - 8008, 0), 1000); /* 1001 -> 1000 */
    assert_int_equal(delay(NOW - 100000, 0), 1000); /* 12500 -> 1000 */
    rec_policy p = rec_policy_default();
    p.hint_first_ms = 50;
    p.hint_max_ms = 3000;
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, NOW - 80);
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 50); /* 10 -> 50 */
    st.hint_at = NOW - 16000;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 2000);
    st.hint_at = NOW - 40000;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 3000); /* 5000 -> 3000 */
}

/* After failed checks the interval doubles per failure, up to poll_max_ms (300 s). */
static void test_next_check_backoff(void **state)
{
    (void)state;
    assert_int_equal(delay(0, 1), 30000);
    assert_int_equal(delay(0, 2), 60000);
    assert_int_equal(delay(0, 3), 120000);
    assert_int_equal(delay(0, 4), 240000);
    assert_int_equal(delay(0, 5), 300000); /* 480000 -> 300000 */
    assert_int_equal(delay(0, 40), 300000);
    assert_int_equal(delay(0, 1000), 300000); /* a long outage's count: no overflow past the cap */
    /* the short schedule's interval doubles too */
    assert_int_equal(delay(NOW - 4000, 1), 1000);
    assert_int_equal(delay(NOW - 4000, 3), 4000);
    assert_int_equal(delay(NOW, 2), 800);
    /* the cap holds when it is below the poll interval, but only after a failure */
    rec_policy p = rec_policy_default();
    p.poll_max_ms = 10000;
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, 0, 0);
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 15000);
    assert_int_equal(rec_next_check(&p, &st, 1, NOW), NOW + 10000);
}

/* Never later than a running step's deadline (and never before now); other states' deadlines do not count. */
static void test_next_check_deadline(void **state)
{
    (void)state;
    rec_policy p = rec_policy_default();
    store_step st = step(STORE_STEP_RUNNING, JOB_ID, NOW + 5000, 0);
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 5000); /* before the 15 s poll */
    assert_int_equal(rec_next_check(&p, &st, 4, NOW), NOW + 5000); /* before the 240 s backoff */
    st.deadline_at = NOW + 15000;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 15000); /* at it exactly */
    st.deadline_at = NOW + 15001;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 15000); /* after the poll: the poll */
    st.deadline_at = NOW + 100000;
    assert_int_equal(rec_next_check(&p, &st, 3, NOW), NOW + 100000); /* 120 s of backoff -> 100 s */
    st.deadline_at = NOW + 300;
    st.hint_at = NOW - 8000;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW + 300); /* before the short schedule's 1000 */
    st.hint_at = 0;
    st.deadline_at = NOW - 10000;
    assert_int_equal(rec_next_check(&p, &st, 0, NOW), NOW); /* passed: now, not in the past */
    store_step_state others[] = {STORE_STEP_LAUNCHING, STORE_STEP_CANCELLING};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        store_step o = step(others[i], JOB_ID, NOW + 5000, 0);
        assert_int_equal(rec_next_check(&p, &o, 0, NOW), NOW + 15000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_default),
        cmocka_unit_test(test_decide_find),
        cmocka_unit_test(test_decide_get),
        cmocka_unit_test(test_decide_stop),
        cmocka_unit_test(test_decide_none),
        cmocka_unit_test(test_expecting_end_window),
        cmocka_unit_test(test_next_check_poll),
        cmocka_unit_test(test_next_check_short_schedule),
        cmocka_unit_test(test_next_check_backoff),
        cmocka_unit_test(test_next_check_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
