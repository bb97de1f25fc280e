/* test_job_state: Dataflow's job state names, the terminal set and a user's spellings (src/gcp/job_state.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "job_state.h"

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int s = 0; s < JS_COUNT; s++) {
        const char *n = js_name((job_state)s);
        assert_non_null(n);
        assert_int_equal(strncmp(n, "JOB_STATE_", 10), 0);
        assert_int_equal(js_parse(n), s);
    }
    assert_string_equal(js_name(JS_DONE), "JOB_STATE_DONE");
    assert_string_equal(js_name(JS_RESOURCE_CLEANING_UP), "JOB_STATE_RESOURCE_CLEANING_UP");
    assert_string_equal(js_name((job_state)JS_COUNT), "JOB_STATE_UNKNOWN");
    assert_string_equal(js_name((job_state)-1), "JOB_STATE_UNKNOWN");
    assert_int_equal(js_parse(NULL), -1);
    assert_int_equal(js_parse("DONE"), -1); /* the wire name only */
    assert_int_equal(js_parse("job_state_done"), -1);
    assert_int_equal(js_parse("JOB_STATE_DONE "), -1);
}

/* Terminal: the five the API documents as final; a stopping or paused job is not. */
static void test_terminal(void **state)
{
    (void)state;
    const job_state term[] = {JS_DONE, JS_FAILED, JS_CANCELLED, JS_UPDATED, JS_DRAINED};
    int n = 0;
    for (int s = 0; s < JS_COUNT; s++) n += js_terminal((job_state)s);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < sizeof term / sizeof *term; i++) {
        assert_true(js_terminal(term[i]));
        assert_true(js_name_terminal(js_name(term[i])));
    }
    assert_false(js_name_terminal("JOB_STATE_CANCELLING"));
    assert_false(js_name_terminal("JOB_STATE_DRAINING"));
    assert_false(js_name_terminal("JOB_STATE_PAUSED"));
    assert_false(js_name_terminal("DONE"));
    assert_false(js_name_terminal(NULL));
    assert_true(js_name_is("JOB_STATE_RUNNING", JS_RUNNING));
    assert_false(js_name_is("JOB_STATE_RUNNING", JS_DONE));
    assert_false(js_name_is(NULL, JS_RUNNING));
}

static void test_user_spellings(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(js_normalize("DONE", buf, sizeof buf), "JOB_STATE_DONE");
    assert_string_equal(js_normalize("done", buf, sizeof buf), "JOB_STATE_DONE");
    assert_string_equal(js_normalize("JOB_STATE_FAILED", buf, sizeof buf), "JOB_STATE_FAILED");
    assert_string_equal(js_normalize("job_state_cancelled", buf, sizeof buf), "JOB_STATE_CANCELLED");
    assert_string_equal(js_normalize("nonsense", buf, sizeof buf), "JOB_STATE_NONSENSE");
    assert_string_equal(js_normalize("drained", buf, 14), "JOB_STATE_DRA"); /* truncated, terminated */
    assert_string_equal(js_normalize("drained", buf, 5), "JOB_");
    assert_int_equal(js_from_user("drained"), JS_DRAINED);
    assert_int_equal(js_from_user("Job_State_Paused"), JS_PAUSED);
    assert_int_equal(js_from_user("RESOURCE_CLEANING_UP"), JS_RESOURCE_CLEANING_UP);
    assert_int_equal(js_from_user("nonsense"), -1);
    assert_int_equal(js_from_user(""), -1);
    assert_int_equal(js_from_user(NULL), -1);
    char longer[200];
    memset(longer, 'A', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(js_from_user(longer), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_terminal),
        cmocka_unit_test(test_user_spellings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
