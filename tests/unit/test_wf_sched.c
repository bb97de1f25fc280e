/* test_wf_sched: the workflow fields max_active_runs and schedule (wf_sched.h): defaults, the string form, and a
 * clear message naming the field for each bad value (cron, zone, catchup, overlap, unknown key, limit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wf_sched.h"

static int load(const char *json, int *mar, wf_schedule *sc, const char **field, char *why)
{
    json_error_t je;
    json_t *d = json_loads(json, 0, &je);
    assert_non_null(d);
    int rc = wf_sched_load(d, mar, sc, field, why, 300);
    json_decref(d);
    return rc;
}

static void test_good(void **state)
{
    (void)state;
    int mar;
    wf_schedule sc;
    const char *field = NULL;
    char why[300];
    assert_int_equal(load("{\"max_active_runs\": 3, \"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": "
                          "\"Europe/Amsterdam\", \"catchup\": \"3d\", \"overlap\": \"buffer_one\"}}",
                          &mar, &sc, &field, why), 0);
    assert_int_equal(mar, 3);
    assert_string_equal(sc.cron, "0 3 * * *");
    assert_string_equal(sc.timezone, "Europe/Amsterdam");
    assert_int_equal(sc.catchup_ms, 3LL * 86400 * 1000);
    assert_int_equal(sc.overlap, WF_OVERLAP_BUFFER_ONE);
    wf_sched_clear(&sc);
    assert_int_equal(load("{\"schedule\": \"@daily\"}", &mar, &sc, &field, why), 0);
    assert_int_equal(mar, 0);
    assert_string_equal(sc.timezone, "UTC");
    assert_int_equal(sc.catchup_ms, WF_CATCHUP_DEFAULT_MS);
    assert_int_equal(sc.overlap, WF_OVERLAP_SKIP);
    wf_sched_clear(&sc);
    assert_int_equal(load("{}", &mar, &sc, &field, why), 0);
    assert_null(sc.cron);
}

static void test_bad(void **state)
{
    (void)state;
    static const struct {
        const char *json, *field, *msg;
    } cases[] = {
        {"{\"max_active_runs\": 0}", "max_active_runs", "whole number"},
        {"{\"max_active_runs\": 1.5}", "max_active_runs", "whole number"},
        {"{\"schedule\": 5}", "schedule", "cron string or a table"},
        {"{\"schedule\": {\"timezone\": \"UTC\"}}", "schedule", "cron is required"},
        {"{\"schedule\": {\"cron\": \"61 * * * *\"}}", "schedule", "bad minute field"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"timezone\": \"Europe/Atlantis\"}}", "schedule", "unknown zone"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"catchup\": \"soon\"}}", "schedule", "catchup must be a duration"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"overlap\": \"queue\"}}", "schedule", "overlap must be"},
        {"{\"schedule\": {\"cron\": \"0 3 * * *\", \"tz\": \"UTC\"}}", "schedule", "unknown field 'tz'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int mar;
        wf_schedule sc;
        const char *field = NULL;
        char why[300] = "";
        if (load(cases[i].json, &mar, &sc, &field, why) == 0) fail_msg("%s loaded", cases[i].json);
        assert_string_equal(field, cases[i].field);
        if (strstr(why, cases[i].msg) == NULL) fail_msg("%s: '%s' lacks '%s'", cases[i].json, why, cases[i].msg);
        wf_sched_clear(&sc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_good), cmocka_unit_test(test_bad)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
