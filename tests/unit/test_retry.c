/* test_retry: the retry policy with an injected clock and RNG: classification, full-jitter bounds, attempt
 * counts, the deadline, Retry-After (seconds and HTTP dates) and RetryInfo durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "retry.h"

/* An RNG that returns a scripted value. */
static double fixed_rng(void *ud) { return *(double *)ud; }

static void test_classify_idempotent(void **state)
{
    (void)state;
    long again[] = {408, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof again / sizeof again[0]; i++)
        assert_int_equal(retry_classify(1, RETRY_T_NONE, again[i], NULL), RETRY_AGAIN);
    long stop[] = {200, 400, 401, 403, 404, 501, 412};
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++)
        assert_int_equal(retry_classify(1, RETRY_T_NONE, stop[i], NULL), RETRY_STOP);
    assert_int_equal(retry_classify(1, RETRY_T_NONE, 409, "ABORTED"), RETRY_AGAIN);
    assert_int_equal(retry_classify(1, RETRY_T_NONE, 409, "ALREADY_EXISTS"), RETRY_STOP);
    assert_int_equal(retry_classify(1, RETRY_T_NONE, 409, NULL), RETRY_STOP);
    assert_int_equal(retry_classify(1, RETRY_T_CONNECT, 0, NULL), RETRY_AGAIN);
    assert_int_equal(retry_classify(1, RETRY_T_TIMEOUT, 0, NULL), RETRY_AGAIN);
    assert_int_equal(retry_classify(1, RETRY_T_RESET, 0, NULL), RETRY_AGAIN);
    assert_int_equal(retry_classify(1, RETRY_T_OTHER, 0, NULL), RETRY_STOP);
}

static void test_classify_launch(void **state)
{
    (void)state;
    /* Nothing was created: re-sending is safe. */
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 429, "RESOURCE_EXHAUSTED"), RETRY_AGAIN);
    assert_int_equal(retry_classify(0, RETRY_T_CONNECT, 0, NULL), RETRY_AGAIN);
    /* Outcome unknown: look before re-sending. */
    assert_int_equal(retry_classify(0, RETRY_T_TIMEOUT, 0, NULL), RETRY_UNKNOWN);
    assert_int_equal(retry_classify(0, RETRY_T_RESET, 0, NULL), RETRY_UNKNOWN);
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 500, NULL), RETRY_UNKNOWN);
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 503, "UNAVAILABLE"), RETRY_UNKNOWN);
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 409, "ABORTED"), RETRY_UNKNOWN);
    /* Final. */
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 409, "ALREADY_EXISTS"), RETRY_STOP);
    assert_int_equal(retry_classify(0, RETRY_T_NONE, 400, "INVALID_ARGUMENT"), RETRY_STOP);
}

static void test_backoff_full_jitter_bounds(void **state)
{
    (void)state;
    retry_policy p = {.initial_ms = 500, .multiplier = 2.0, .cap_ms = 8000, .max_attempts = 0, .deadline_ms = 0};
    double r = 0.0;
    for (int n = 1; n <= 10; n++) {
        int64_t ceiling = 500LL << (n - 1);
        if (ceiling > 8000) ceiling = 8000;
        r = 0.0;
        assert_int_equal(retry_backoff_ms(&p, n, fixed_rng, &r), 0);
        r = 0.999999999999;
        assert_int_equal(retry_backoff_ms(&p, n, fixed_rng, &r), ceiling);
        r = 0.5;
        int64_t mid = retry_backoff_ms(&p, n, fixed_rng, &r);
        assert_true(mid >= ceiling / 2 - 1 && mid <= ceiling / 2 + 1);
    }
    /* With the real RNG every value lies in [0, ceiling] and the spread covers the interval. */
    int64_t lo = INT64_MAX, hi = -1;
    for (int i = 0; i < 20000; i++) {
        int64_t d = retry_backoff_ms(&p, 3, NULL, NULL);
        assert_true(d >= 0 && d <= 2000);
        if (d < lo) lo = d;
        if (d > hi) hi = d;
    }
    assert_true(lo < 100);
    assert_true(hi > 1900);
}

static void test_attempts_and_deadline(void **state)
{
    (void)state;
    double r = 0.999999999999; /* always the ceiling */
    retry_policy p = {.initial_ms = 1000, .multiplier = 2.0, .cap_ms = 4000, .max_attempts = 5, .deadline_ms = 0};
    retry_state s;
    int64_t now = 1000000, d = -1;
    retry_begin(&s, &p, now, fixed_rng, &r);
    int64_t expect[] = {1000, 2000, 4000, 4000};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(retry_next(&s, now, -1, &d), 1);
        assert_int_equal(d, expect[i]);
        now += d;
    }
    assert_int_equal(retry_next(&s, now, -1, &d), 0); /* 5 attempts made */
    assert_int_equal(s.attempts, 5);

    /* The deadline: 1000 + 2000 = 3000 fit in 3500 ms; the next 4000 would not. */
    p.max_attempts = 0;
    p.deadline_ms = 3500;
    now = 0;
    retry_begin(&s, &p, now, fixed_rng, &r);
    assert_int_equal(retry_next(&s, now, -1, &d), 1);
    now += d;
    assert_int_equal(retry_next(&s, now, -1, &d), 1);
    now += d;
    assert_int_equal(now, 3000);
    assert_int_equal(retry_next(&s, now, -1, &d), 0);
}

static void test_server_delay_honoured(void **state)
{
    (void)state;
    double r = 0.0; /* jitter would say 0 */
    retry_policy p = {.initial_ms = 1000, .multiplier = 2.0, .cap_ms = 1000, .max_attempts = 10, .deadline_ms = 10000};
    retry_state s;
    int64_t d = -1;
    retry_begin(&s, &p, 0, fixed_rng, &r);
    assert_int_equal(retry_next(&s, 0, 2000, &d), 1);
    assert_int_equal(d, 2000); /* above the cap: the server's word wins */
    assert_int_equal(retry_next(&s, 2000, 0, &d), 1);
    assert_int_equal(d, 0);
    /* A hint beyond the deadline ends the operation instead of sleeping past it. */
    assert_int_equal(retry_next(&s, 2000, 9000, &d), 0);
}

static void test_retry_after(void **state)
{
    (void)state;
    int64_t d = -1;
    assert_int_equal(retry_parse_retry_after("120", 0, &d), 0);
    assert_int_equal(d, 120000);
    assert_int_equal(retry_parse_retry_after("0", 0, &d), 0);
    assert_int_equal(d, 0);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    int64_t now = 784111777LL * 1000 - 5000;
    assert_int_equal(retry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now, &d), 0);
    assert_int_equal(d, 5000);
    assert_int_equal(retry_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now, &d), 0);
    assert_int_equal(d, 5000);
    assert_int_equal(retry_parse_retry_after("Sun Nov  6 08:49:37 1994", now, &d), 0);
    assert_int_equal(d, 5000);
    /* A date in the past means "now". */
    assert_int_equal(retry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 60000, &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(retry_parse_retry_after("soon", 0, &d), -1);
    assert_int_equal(retry_parse_retry_after("-5", 0, &d), -1);
    assert_int_equal(retry_parse_retry_after("1.5", 0, &d), -1);
    assert_int_equal(retry_parse_retry_after("", 0, &d), -1);
    assert_int_equal(retry_parse_retry_after(NULL, 0, &d), -1);
}

static void test_duration(void **state)
{
    (void)state;
    int64_t ms = -1;
    assert_int_equal(retry_parse_duration("2s", &ms), 0);
    assert_int_equal(ms, 2000);
    assert_int_equal(retry_parse_duration("1.5s", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(retry_parse_duration("0.000000001s", &ms), 0);
    assert_int_equal(ms, 1); /* rounded up: never earlier than asked */
    assert_int_equal(retry_parse_duration("30.250s", &ms), 0);
    assert_int_equal(ms, 30250);
    const char *bad[] = {"2", "s", "-1s", "1.s", "1.5ms", "1.0000000001s", "2s ", " 2s", "abc", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(retry_parse_duration(bad[i], &ms), -1);
}

/* An HTTP client's transport failure as the retry policy reads it: only a refused connection is certainly unsent. */
static void test_transport_of(void **state)
{
    (void)state;
    assert_int_equal(retry_transport_of(HC_OK), RETRY_T_NONE);
    assert_int_equal(retry_transport_of(HC_ERR_CONNECT), RETRY_T_CONNECT);
    assert_int_equal(retry_transport_of(HC_ERR_TIMEOUT), RETRY_T_TIMEOUT);
    assert_int_equal(retry_transport_of(HC_ERR_RESET), RETRY_T_RESET);
    assert_int_equal(retry_transport_of(HC_ERR_TOO_LARGE), RETRY_T_OTHER);
    assert_int_equal(retry_transport_of(HC_ERR_CANCELLED), RETRY_T_OTHER);
    assert_int_equal(retry_transport_of(HC_ERR_OTHER), RETRY_T_OTHER);
    /* what that means for a launch: a refused connection may be re-sent, a timeout must be looked up first */
    assert_int_equal(retry_classify(0, retry_transport_of(HC_ERR_CONNECT), 0, NULL), RETRY_AGAIN);
    assert_int_equal(retry_classify(0, retry_transport_of(HC_ERR_TIMEOUT), 0, NULL), RETRY_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_idempotent), cmocka_unit_test(test_classify_launch),
        cmocka_unit_test(test_backoff_full_jitter_bounds), cmocka_unit_test(test_attempts_and_deadline),
        cmocka_unit_test(test_server_delay_honoured), cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_duration), cmocka_unit_test(test_transport_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
