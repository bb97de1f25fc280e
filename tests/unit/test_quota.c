/* test_quota: which failed launches count as refused for quota (quota.h). The shapes are Dataflow's as seen in the
 * wild: 429 RESOURCE_EXHAUSTED with RetryInfo, 403 QUOTA_FOR_INSTANCES, the 400 jobs-per-project text; a plain
 * 400 or 403 is not quota. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "quota.h"

static void test_status_fields(void **state)
{
    (void)state;
    assert_true(quota_refused(429, "RESOURCE_EXHAUSTED", NULL, "Quota exceeded for quota metric 'Job management requests'"));
    assert_true(quota_refused(429, NULL, NULL, NULL));
    assert_true(quota_refused(400, "RESOURCE_EXHAUSTED", NULL, "whatever"));
    assert_true(quota_refused(403, "PERMISSION_DENIED", "QUOTA_FOR_INSTANCES", NULL));
    assert_true(quota_refused(403, NULL, "rateLimitExceeded", NULL));
}

static void test_text_last_resort(void **state)
{
    (void)state;
    assert_true(quota_refused(400, "FAILED_PRECONDITION", NULL,
                              "Dataflow quota error for jobs-per-project quota. Project p is running 25 out of 25 "
                              "jobs. Please wait for a workflow to finish"));
    assert_true(quota_refused(403, NULL, NULL, "Exceeded limit 'QUOTA_FOR_INSTANCES' on resource 'x'"));
    assert_true(quota_refused(400, NULL, NULL, "insufficient quota(s) ... Quota summary (required/available): 1/0 CPUs"));
    assert_true(quota_refused(400, NULL, NULL, "RESOURCE_EXHAUSTED: ZONE_RESOURCE_POOL_EXHAUSTED"));
}

static void test_not_quota(void **state)
{
    (void)state;
    assert_false(quota_refused(400, "INVALID_ARGUMENT", NULL, "The template parameters are invalid."));
    assert_false(quota_refused(403, "PERMISSION_DENIED", "forbidden", "Permission denied on resource"));
    assert_false(quota_refused(500, "INTERNAL", NULL, "quota error")); /* text counts only for 400/403 */
    assert_false(quota_refused(409, "ALREADY_EXISTS", NULL, NULL));
    assert_false(quota_refused(0, NULL, NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_fields),
        cmocka_unit_test(test_text_last_resort),
        cmocka_unit_test(test_not_quota),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
