/* workflow: one bad workflow per validation rule (exact "file:line: message"), naming, labels, launch
 * building, successors, hooks, the function context and graph rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcp_names.h"
#include "testutil.h"
#include "wf_context.h"
#include "wf_graph.h"
#include "workflow.h"

static lh_limits lim = {.mem_limit = 16u << 20, .instr_limit = 2000000, .time_limit = 1.0};

/* Loads `src` as w.lua and expects it to fail with `want` among the diagnostics (exact text). */
static void expect_diag(const char *src, const char *want)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source("w.lua", src, strlen(src), &lim, &d);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        if (strcmp(d.items[i], want) == 0) found = 1;
    if (wf != NULL || !found) {
        fprintf(stderr, "source:\n%s\nwant: %s\ngot (%zu, wf %s):\n", src, want, d.n, wf ? "loaded" : "NULL");
        for (size_t i = 0; i < d.n; i++) fprintf(stderr, "  %s\n", d.items[i]);
    }
    wf_free(wf);
    wf_diags_free(&d);
    assert_null(wf);
    assert_true(found);
}

static wf_workflow *load_ok(const char *src)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source("w.lua", src, strlen(src), &lim, &d);
    if (wf == NULL)
        for (size_t i = 0; i < d.n; i++) fprintf(stderr, "unexpected: %s\n", d.items[i]);
    wf_diags_free(&d);
    assert_non_null(wf);
    return wf;
}

/* The context of `step` in a run where nothing has finished yet. */
static json_t *ctx_of(const wf_workflow *wf, const wf_step *step, const char *run_id, json_t *params,
                      int64_t started_ms, int attempt)
{
    wf_ctx_run run = {.id = run_id, .params = params, .started_ms = started_ms};
    return wf_step_context(wf, step, &run, attempt, NULL, 0);
}

static void assert_json_eq(json_t *got, const char *want_json)
{
    json_error_t je;
    json_t *want = json_loads(want_json, JSON_DECODE_ANY, &je);
    if (want == NULL) fprintf(stderr, "bad expected JSON: %s\n", je.text);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_ENCODE_ANY | JSON_SORT_KEYS);
        fprintf(stderr, "got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
    }
    assert_true(json_equal(got, want));
    json_decref(want);
}

static void assert_str_eq(const char *got, const char *want)
{
    if (got == NULL || strcmp(got, want) != 0) fprintf(stderr, "got:  %s\nwant: %s\n", got ? got : "(null)", want);
    assert_non_null(got);
    assert_string_equal(got, want);
}

/* A header shared by the bad workflows: lines 1-5, steps start on line 6. */
#define HEAD "return {\n  name = \"w\",\n  region = \"europe-west4\",\n  start = \"A\",\n  steps = {\n"
#define TPL "template = \"gs://bucket/t.json\""
#define TAIL "  },\n}\n"

/* ---- one bad workflow per rule ---- */

static void test_bad_unknown_step_field(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", nxt = \"A\" },\n" TAIL, "w.lua:6: step 'A': unknown field 'nxt'");
}

static void test_bad_unknown_workflow_field(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  regoin = \"x\",\n  region = \"r\",\n  start = \"A\",\n"
                "  steps = { A = { job_name = \"a\" } },\n}\n",
                "w.lua:3: unknown workflow field 'regoin'");
}

static void test_bad_missing_name(void **s)
{
    (void)s;
    expect_diag("return {\n  region = \"r\",\n  start = \"A\",\n  steps = { A = { job_name = \"a\" } },\n}\n",
                "w.lua:1: the workflow needs a name");
}

static void test_bad_invalid_name(void **s)
{
    (void)s;
    expect_diag("return {\n  region = \"r\",\n  name = \"My Flow\",\n  start = \"A\",\n  steps = { A = {} },\n}\n",
                "w.lua:3: workflow name 'My Flow' must be a valid label value: lowercase letters, digits, '_' and "
                "'-', at most 63");
}

static void test_bad_missing_start(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  steps = { A = {} },\n}\n",
                "w.lua:4: the workflow needs 'start', the name of its first step");
}

static void test_bad_unknown_start(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  start = \"Nope\",\n  steps = { A = {} },\n}\n",
                "w.lua:4: start step 'Nope' does not exist");
}

static void test_bad_empty_steps(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  start = \"A\",\n  steps = {},\n}\n",
                "w.lua:5: the workflow needs a non-empty 'steps' table");
}

static void test_bad_step_not_table(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = \"launch it\",\n" TAIL, "w.lua:6: step 'A' must be a table, not a string");
}

static void test_bad_job_name_missing(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { " TPL " },\n" TAIL, "w.lua:6: step 'A': job_name is required");
}

static void test_bad_job_name_rule(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"My_Job\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': job_name 'My_Job' breaks Dataflow's rule [a-z]([-a-z0-9]*[a-z0-9])?");
    expect_diag(HEAD "    A = { job_name = \"job-\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': job_name 'job-' breaks Dataflow's rule [a-z]([-a-z0-9]*[a-z0-9])?");
    expect_diag(HEAD "    A = { job_name = \"1job\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': job_name '1job' breaks Dataflow's rule [a-z]([-a-z0-9]*[a-z0-9])?");
}

static void test_bad_job_name_double_dash(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"my--job\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': job_name 'my--job' must not contain '--' (it separates the run suffix)");
}

static void test_bad_job_name_too_long(void **s)
{
    (void)s;
    char name[962];
    memset(name, 'a', 961);
    name[961] = '\0';
    char src[2048];
    snprintf(src, sizeof src, HEAD "    A = { job_name = \"%s\", " TPL " },\n" TAIL, name);
    expect_diag(src, "w.lua:6: step 'A': job_name is longer than 960 characters");
    name[960] = '\0'; /* 960 is allowed */
    snprintf(src, sizeof src, HEAD "    A = { job_name = \"%s\", " TPL " },\n" TAIL, name);
    wf_free(load_ok(src));
}

static void test_bad_job_name_duplicate(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = \"B\" },\n    B = { job_name = \"a\", " TPL " },\n" TAIL,
                "w.lua:7: steps 'A' and 'B' share job_name 'a' (finished jobs could not be told apart)");
}

static void test_bad_template_not_gs(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", template = \"/local/t.json\" },\n" TAIL,
                "w.lua:6: step 'A': template '/local/t.json' must be a gs:// path");
}

static void test_bad_both_templates(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", classic_template = \"gs://bucket/c\" },\n" TAIL,
                "w.lua:6: step 'A': give either template (Flex) or classic_template, not both");
}

static void test_bad_launch_fields_on_hook(void **s)
{
    (void)s;
    static const char *const fields[] = {"parameters = {}", "environment = {}", "retry = 2", "timeout = 60",
                                         "success = \"DONE\"", "on_cancel = \"drain\""};
    static const char *const keys[] = {"parameters", "environment", "retry", "timeout", "success", "on_cancel"};
    for (size_t i = 0; i < 6; i++) {
        char src[512], want[256];
        snprintf(src, sizeof src, HEAD "    A = { job_name = \"a\", %s },\n" TAIL, fields[i]);
        snprintf(want, sizeof want,
                 "w.lua:6: step 'A' has '%s' but no template: a launch step needs template or classic_template", keys[i]);
        expect_diag(src, want);
    }
}

static void test_bad_function_not_defined(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", [\"function\"] = \"params\" },\n" TAIL,
                "w.lua:6: step 'A': function 'params' is not defined in the script");
}

static void test_bad_function_wrong_type(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", [\"function\"] = 42 },\n" TAIL,
                "w.lua:6: step 'A': function must be a function or the name of one, not a number");
}

static void test_bad_next_unknown(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = \"Z\" },\n" TAIL,
                "w.lua:6: step 'A': next step 'Z' does not exist");
}

static void test_bad_on_failure_unknown(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", on_failure = \"Z\" },\n" TAIL,
                "w.lua:6: step 'A': on_failure step 'Z' does not exist");
}

static void test_bad_next_fn_without_choices(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = function(ctx) return nil end },\n" TAIL,
                "w.lua:6: step 'A': next is a function, so list the steps it may return in 'choices'");
}

static void test_bad_choices_without_fn(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = \"B\", choices = { \"B\" } },\n"
                     "    B = { job_name = \"b\" },\n" TAIL,
                "w.lua:6: step 'A': 'choices' only goes with a next function");
}

/* Regression: next = { "B", "B" } (or repeated choices) validated and made B a join on A twice, and plan
 * launched B twice; a choice function returning { "C", "C" } also launched C twice. Repeats are now a
 * validation error, and a repeated name from a choice function is one successor. */
static void test_bad_repeated_successor(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = { \"B\", \"B\" } },\n    B = { job_name = \"b\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': next lists 'B' twice");
    expect_diag(HEAD "    A = { next = function() end, choices = { \"B\", \"B\" } },\n    B = { job_name = \"b\", " TPL " },\n" TAIL,
                "w.lua:6: step 'A': choices lists 'B' twice");
    wf_workflow *wf = load_ok(HEAD "    A = { next = function() return { \"B\", \"B\" } end, choices = { \"B\" } },\n"
                              "    B = { job_name = \"b\", " TPL " },\n" TAIL);
    assert_int_equal(wf->steps[wf_step_index(wf, "B")].n_preds, 1);
    const wf_step *a = &wf->steps[wf_step_index(wf, "A")];
    json_t *ctx = ctx_of(wf, a, "r7", NULL, 0, 1), *names = NULL;
    char *err = NULL;
    assert_int_equal(wf_successors(wf, a, ctx, &names, &err), 0);
    assert_json_eq(names, "[\"B\"]");
    json_decref(names);
    json_decref(ctx);
    wf_free(wf);
}

/* Regression (found by fuzz/fuzz_workflow.c): a choice function that failed (a Lua error, the instruction
 * budget, out of memory) made wf_successors return the error but leak the names array it had already created:
 * one leak in the engine per failing choice. On failure *names is now NULL; under ASan the leak check pins the
 * rest. */
static void test_failed_choice_leaves_no_names(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(HEAD "    A = { next = function(ctx) if ctx.run.params.loop then while true do end end\n"
                              "                               return ctx.nothing.here end, choices = { \"B\" } },\n"
                              "    B = { job_name = \"b\", " TPL " },\n" TAIL);
    const wf_step *a = &wf->steps[wf_step_index(wf, "A")];
    json_t *params = json_pack("{s:b}", "loop", 0);
    for (int loop = 0; loop < 2; loop++) {
        json_object_set_new(params, "loop", json_boolean(loop));
        json_t *ctx = ctx_of(wf, a, "r7", params, 0, 1), *names = json_true();
        char *err = NULL;
        int rc = wf_successors(wf, a, ctx, &names, &err);
        assert_int_equal(rc, loop ? -2 : -1); /* a Lua error; the budget */
        assert_null(names);
        assert_non_null(err);
        if (!loop) assert_non_null(strstr(err, "w.lua:7:"));
        free(err);
        json_decref(ctx);
    }
    json_decref(params);
    wf_free(wf);
}

static void test_bad_unreachable(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL " },\n    B = { job_name = \"b\", " TPL " },\n" TAIL,
                "w.lua:7: step 'B' is unreachable from start step 'A'");
}

static void test_bad_cycle(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = \"B\" },\n    B = { job_name = \"b\", " TPL ", next = \"A\" },\n" TAIL,
                "w.lua:7: cycle: step 'B' leads back to 'A' (a run launches each step once)");
}

static void test_bad_cycle_via_on_failure(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", next = \"B\" },\n"
                     "    B = { job_name = \"b\", " TPL ", on_failure = \"A\" },\n" TAIL,
                "w.lua:7: cycle: step 'B' leads back to 'A' (a run launches each step once)");
}

static void test_bad_retry(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = \"3\" },\n" TAIL,
                "w.lua:6: step 'A': retry must be a number of attempts or a table, not a string");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = 0 },\n" TAIL,
                "w.lua:6: step 'A': retry.attempts must be between 1 and 100");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 101 } },\n" TAIL,
                "w.lua:6: step 'A': retry.attempts must be between 1 and 100");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 2.5 } },\n" TAIL,
                "w.lua:6: step 'A': retry.attempts must be a whole number");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 2, backoff = \"soon\" } },\n" TAIL,
                "w.lua:6: step 'A': retry.backoff must be a duration (30, \"30s\", \"5m\")");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 2, backoff = -1 } },\n" TAIL,
                "w.lua:6: step 'A': retry.backoff must be a duration (30, \"30s\", \"5m\")");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 2, max_backoff = \"1y\" } },\n" TAIL,
                "w.lua:6: step 'A': retry.max_backoff must be a duration");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 2, delay = 5 } },\n" TAIL,
                "w.lua:6: step 'A': unknown retry field 'delay'");
}

/* Regression: retry attempts were cast to int before the 1..100 range check, so retry = 4294967297 wrapped
 * to 1 and retry = { attempts = -4294967295 } to 1, and both workflows validated. */
static void test_bad_retry_attempts_overflow(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = 4294967297 },\n" TAIL,
                "w.lua:6: step 'A': retry.attempts must be between 1 and 100");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = -4294967295 } },\n" TAIL,
                "w.lua:6: step 'A': retry.attempts must be between 1 and 100");
}

static void test_bad_timeout(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", timeout = \"2 hours\" },\n" TAIL,
                "w.lua:6: step 'A': timeout must be a duration (3600, \"90m\", \"2h\")");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", timeout = true },\n" TAIL,
                "w.lua:6: step 'A': timeout must be a duration (3600, \"90m\", \"2h\")");
}

static void test_bad_success_state(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", success = { \"DONE\", \"FAILED\" } },\n" TAIL,
                "w.lua:6: step 'A': 'FAILED' cannot count as success (use DONE, DRAINED, UPDATED, CANCELLED or RUNNING)");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", success = \"FINISHED\" },\n" TAIL,
                "w.lua:6: step 'A': 'FINISHED' cannot count as success (use DONE, DRAINED, UPDATED, CANCELLED or RUNNING)");
}

static void test_bad_on_cancel(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", on_cancel = \"stop\" },\n" TAIL,
                "w.lua:6: step 'A': on_cancel must be \"cancel\" or \"drain\"");
}

static void test_bad_missing_region(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  start = \"A\",\n  steps = {\n    A = { job_name = \"a\", " TPL " },\n  },\n}\n",
                "w.lua:5: step 'A': no region (set it on the workflow or the step)");
}

static void test_bad_workflow_labels(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  labels = { Team = \"x\" },\n  start = \"A\",\n  steps = { A = {} },\n}\n",
                "w.lua:4: labels: label key 'Team' is invalid: 1-63 characters, starting with a lowercase letter, "
                "only lowercase letters, digits, '_' and '-'");
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  labels = { team = \"Data Eng\" },\n  start = \"A\",\n  steps = { A = {} },\n}\n",
                "w.lua:4: labels: label 'team' has invalid value 'Data Eng': at most 63 lowercase letters, digits, '_' and '-'");
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  labels = { team = 5 },\n  start = \"A\",\n  steps = { A = {} },\n}\n",
                "w.lua:4: labels: label 'team' must be a string");
    expect_diag("return {\n  name = \"w\",\n  region = \"r\",\n  environment = {\n    additionalUserLabels = { [\"9x\"] = \"y\" },\n  },\n"
                "  start = \"A\",\n  steps = { A = {} },\n}\n",
                "w.lua:5: environment.additionalUserLabels: label key '9x' is invalid: 1-63 characters, starting with "
                "a lowercase letter, only lowercase letters, digits, '_' and '-'");
}

static void test_bad_step_env_labels(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ", environment = { additionalUserLabels = { owner = \"Bob\" } } },\n" TAIL,
                "w.lua:6: environment.additionalUserLabels: label 'owner' has invalid value 'Bob': at most 63 "
                "lowercase letters, digits, '_' and '-'");
}

/* Issue 9, task 3: gs://b/x.json validated and Dataflow refused it at launch ("b" cannot be a bucket). Every
 * gs:// path that validation can see (templates, environments, static parameters) follows Cloud Storage's
 * bucket-name rules, reported at the field's line. */
static void test_bad_bucket_names(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\", template = \"gs://b/x.json\" },\n" TAIL,
                "w.lua:6: step 'A': template 'gs://b/x.json': bucket name 'b' is shorter than 3 characters");
    expect_diag(HEAD "    A = { job_name = \"a\",\n      classic_template = \"gs://My-Bucket/t\",\n"
                "      environment = { tempLocation = \"gs://bucket/tmp\" } },\n" TAIL,
                "w.lua:7: step 'A': template 'gs://My-Bucket/t': bucket name 'My-Bucket' may only contain lowercase "
                "letters, digits, '-', '_' and '.'");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ",\n      environment = { stagingLocation = \"gs://-bucket/s\" } },\n" TAIL,
                "w.lua:7: step 'A': environment.stagingLocation 'gs://-bucket/s': bucket name '-bucket' must start and "
                "end with a letter or digit");
    expect_diag(HEAD "    A = { job_name = \"a\", " TPL ",\n      parameters = { input = \"gs://192.168.0.1/in\" } },\n" TAIL,
                "w.lua:7: step 'A': parameters.input 'gs://192.168.0.1/in': bucket name '192.168.0.1' must not be an IP "
                "address");
    expect_diag("return {\n  name = \"w\",\n  region = \"europe-west4\",\n  environment = {\n"
                "    tempLocation = \"gs://google-data/tmp\",\n  },\n  start = \"A\",\n  steps = {\n"
                "    A = { job_name = \"a\", " TPL " },\n" TAIL,
                "w.lua:5: environment.tempLocation 'gs://google-data/tmp': bucket name 'google-data' must not start with "
                "'goog'");
    expect_diag(HEAD "    A = { job_name = \"a\", template = \"gs://my-google-bucket/t\" },\n" TAIL,
                "w.lua:6: step 'A': template 'gs://my-google-bucket/t': bucket name 'my-google-bucket' must not contain "
                "'google' (or a close misspelling such as 'g00gle')");
    char long_name[300], src[1024];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    snprintf(src, sizeof src, HEAD "    A = { job_name = \"a\", template = \"gs://%s/t\" },\n" TAIL, long_name);
    char want[1200];
    snprintf(want, sizeof want, "w.lua:6: step 'A': template 'gs://%s/t': bucket name '%s' is longer than 63 characters "
             "(222 with dots)", long_name, long_name);
    expect_diag(src, want);
    /* with dots: each part up to 63, 222 in all */
    snprintf(src, sizeof src, HEAD "    A = { job_name = \"a\", template = \"gs://x.%s/t\" },\n" TAIL, long_name);
    snprintf(want, sizeof want, "w.lua:6: step 'A': template 'gs://x.%s/t': bucket name 'x.%s' has a dot-separated part "
             "that is empty or longer than 63 characters", long_name, long_name);
    expect_diag(src, want);
    expect_diag(HEAD "    A = { job_name = \"a\", template = \"gs://a..b/t\" },\n" TAIL,
                "w.lua:6: step 'A': template 'gs://a..b/t': bucket name 'a..b' has a dot-separated part that is empty or "
                "longer than 63 characters");
    /* the rules' edges that are valid */
    const char *good[] = {"abc", "a_b-c.d", "1.2.3", "1.2.3.4.5", "my.bucket.example.com", "g-o-o-g", NULL};
    for (const char **g = good; *g; g++) assert_null(gn_bucket_name_problem(*g, strlen(*g)));
    memset(long_name, 'a', 63);
    long_name[63] = '\0';
    snprintf(src, sizeof src, "%s.%s.%s.a", long_name, long_name, long_name); /* 63 * 3 + 2 + 2 = 193 */
    assert_null(gn_bucket_name_problem(src, strlen(src)));
    assert_non_null(gn_bucket_name_problem("", 0));
    char err[200];
    assert_int_equal(gn_gcs_path_check("not a gs path", err, sizeof err), 0);
    assert_int_equal(gn_gcs_path_check("gs://", err, sizeof err), -1);
    assert_str_eq(err, "bucket name '' is shorter than 3 characters");
}

/* A classic launch without environment.tempLocation is refused by Dataflow. Offline only the static environment is
 * known (the workflow's merged with the step's), so a step without a function and without one is refused; a step
 * with a function may return it (test_build_errors checks that at build time). */
static void test_bad_classic_without_temp_location(void **s)
{
    (void)s;
    expect_diag(HEAD "    A = { job_name = \"a\",\n      classic_template = \"gs://bucket/c\" },\n" TAIL,
                "w.lua:7: step 'A': a classic template needs environment.tempLocation (in the workflow's or the step's "
                "environment, or returned by a parameter function)");
    /* a null in the step's environment removes the workflow's */
    expect_diag("return {\n  name = \"w\",\n  region = \"europe-west4\",\n  environment = { tempLocation = "
                "\"gs://bucket/tmp\" },\n  start = \"A\",\n  steps = {\n    A = { job_name = \"a\", classic_template = "
                "\"gs://bucket/c\", environment = { tempLocation = cjson.null } },\n" TAIL,
                "w.lua:7: step 'A': a classic template needs environment.tempLocation (in the workflow's or the step's "
                "environment, or returned by a parameter function)");
    /* the workflow's, the step's, or a function: each is enough */
    wf_free(load_ok("return {\n  name = \"w\",\n  region = \"europe-west4\",\n  environment = { tempLocation = "
                    "\"gs://bucket/tmp\" },\n  start = \"A\",\n  steps = {\n    A = { job_name = \"a\", "
                    "classic_template = \"gs://bucket/c\" },\n" TAIL));
    wf_free(load_ok(HEAD "    A = { job_name = \"a\", classic_template = \"gs://bucket/c\", environment = { tempLocation = "
                    "\"gs://bucket/tmp\" } },\n" TAIL));
    wf_free(load_ok(HEAD "    A = { job_name = \"a\", classic_template = \"gs://bucket/c\", [\"function\"] = function(ctx) "
                    "return { environment = { tempLocation = \"gs://bucket/tmp\" } } end },\n" TAIL));
}

/* Regression: labels were checked per set (workflow labels, environment labels, each <= 64) but not as the
 * union a job carries with sluice-workflow/-run/-step, so a workflow with 62 labels validated and then every
 * launch failed with "65 labels: Dataflow allows at most 64". */
static void test_bad_label_union_too_many(void **s)
{
    (void)s;
    char labels[2048] = "";
    for (int i = 0; i < 60; i++) {
        char kv[32];
        snprintf(kv, sizeof kv, "l%d = \"v\", ", i);
        strcat(labels, kv);
    }
    char src[4096];
    /* 60 workflow labels + 1 environment label + 3 = 64: fine; one more on the step makes 65 */
    snprintf(src, sizeof src,
             "return {\n  name = \"w\",\n  region = \"r\",\n  start = \"A\",\n  steps = {\n"
             "    A = { job_name = \"a\", " TPL ", next = \"B\" },\n"
             "    B = { job_name = \"b\", " TPL ", environment = { additionalUserLabels = { extra = \"x\" } } },\n"
             "  },\n  labels = { %s},\n  environment = { additionalUserLabels = { team = \"t\" } },\n}\n", labels);
    expect_diag(src, "w.lua:7: step 'B': its jobs would carry 65 labels with Sluice's own three: Dataflow allows at most 64");
    /* the same keys in several sets count once */
    char *dup = strstr(src, "extra");
    memcpy(dup, "l0   ", 5);
    wf_free(load_ok(src));
}

static void test_bad_same_label_value(void **s)
{
    (void)s;
    expect_diag(HEAD "    Load = { job_name = \"a\", " TPL ", next = \"load\" },\n    load = { job_name = \"b\", " TPL " },\n"
                     "    A = { next = \"Load\" },\n" TAIL,
                "w.lua:7: steps 'Load' and 'load' have the same label value 'load'");
}

static void test_bad_syntax_error(void **s)
{
    (void)s;
    expect_diag("return {\n  name = \"w\",\n  steps = { A = { } \n  start = \"A\",\n}\n",
                "w.lua:4: '}' expected (to close '{' at line 3) near 'start'");
}

static void test_bad_runtime_error(void **s)
{
    (void)s;
    wf_diags d = {0};
    const char *src = "local t = nil\nlocal x = 1\nreturn { name = t.name }\n";
    wf_workflow *wf = wf_load_source("w.lua", src, strlen(src), &lim, &d);
    assert_null(wf);
    assert_int_equal(d.n, 1);
    const char *want = "w.lua:3: attempt to index a nil value (local 't')";
    if (strncmp(d.items[0], want, strlen(want)) != 0) fprintf(stderr, "got:  %s\nwant prefix: %s\n", d.items[0], want);
    assert_int_equal(strncmp(d.items[0], want, strlen(want)), 0);
    assert_int_equal(d.items[0][strlen(want)], '\n'); /* then the traceback */
    wf_diags_free(&d);
    /* an endless loop while loading hits the instruction budget */
    const char *loop = "local n = 0\nwhile true do n = n + 1 end\n";
    wf = wf_load_source("w.lua", loop, strlen(loop), &lim, &d);
    assert_null(wf);
    assert_int_equal(d.n, 1);
    const char *want2 = "w.lua: timeout: script budget exceeded: more than 2000000 instructions\n";
    if (strncmp(d.items[0], want2, strlen(want2)) != 0) fprintf(stderr, "got:  %s\nwant prefix: %s\n", d.items[0], want2);
    assert_int_equal(strncmp(d.items[0], want2, strlen(want2)), 0);
    wf_diags_free(&d);
}

/* Loads `src` as w.lua and expects exactly the diagnostics `want` (NULL-terminated), in order. */
static void expect_diags(const char *src, const char *const *want)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source("w.lua", src, strlen(src), &lim, &d);
    size_t n = 0;
    while (want[n]) n++;
    int same = d.n == n;
    for (size_t i = 0; same && i < n; i++) same = strcmp(d.items[i], want[i]) == 0;
    if (wf != NULL || !same) {
        fprintf(stderr, "source:\n%s\nwant (%zu):\n", src, n);
        for (size_t i = 0; i < n; i++) fprintf(stderr, "  %s\n", want[i]);
        fprintf(stderr, "got (%zu, wf %s):\n", d.n, wf ? "loaded" : "NULL");
        for (size_t i = 0; i < d.n; i++) fprintf(stderr, "  %s\n", d.items[i]);
    }
    wf_free(wf);
    wf_diags_free(&d);
    assert_null(wf);
    assert_true(same);
}

/* Regression (issue 8 item 12): in a file with ten other errors, validate did not report a missing next nor a
 * missing on_failure target (the graph checks ran only when everything before them had passed), and steps
 * declared on one line got no line at all. tests/data/validate/twelve.lua has twelve distinct problems: all
 * twelve are reported, each at its line, sorted by line. */
static void test_bad_twelve_at_once(void **s)
{
    (void)s;
    char *path = tu_src_path("tests/data/validate/twelve.lua");
    static const char *const want[] = {
        "9: labels: label key 'Team' is invalid: 1-63 characters, starting with a lowercase letter, only lowercase "
        "letters, digits, '_' and '-'",
        "16: step 'Ingest': next step 'Missing' does not exist",
        "18: step 'Ingest': retry.attempts must be between 1 and 100",
        "24: step 'Clean': on_failure step 'Nowhere' does not exist",
        "25: step 'Clean': timeout must be a duration (3600, \"90m\", \"2h\")",
        "30: cycle: step 'Report' leads back to 'Clean' (a run launches each step once)",
        "31: step 'Report': unknown field 'tempalte'",
        "32: step 'Report': on_cancel must be \"cancel\" or \"drain\"",
        "34: step 'Notify' has 'timeout' but no template: a launch step needs template or classic_template",
        "35: step 'Orphan' is unreachable from start step 'Ingest'",
        "35: step 'Pick': next is a function, so list the steps it may return in 'choices'",
        "35: steps 'Clean' and 'Orphan' share job_name 'clean' (finished jobs could not be told apart)",
    };
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(path, &lim, &d);
    assert_null(wf);
    if (d.n != 12)
        for (size_t i = 0; i < d.n; i++) fprintf(stderr, "  %s\n", d.items[i]);
    assert_int_equal(d.n, 12);
    for (size_t i = 0; i < 12; i++) {
        char line[512];
        snprintf(line, sizeof line, "%s:%s", path, want[i]);
        assert_str_eq(d.items[i], line);
    }
    wf_diags_free(&d);
    free(path);
}

/* Without a start (or with an unknown one) every other rule still runs: only reachability needs the start. */
static void test_bad_no_start_still_checks_graph(void **s)
{
    (void)s;
    expect_diags("return {\n  name = \"w\",\n  region = \"r\",\n  steps = {\n"
                 "    A = { job_name = \"a\", " TPL ", next = \"Z\" },\n"
                 "    B = { job_name = \"b\", " TPL ", on_failure = \"Y\", next = \"C\" },\n"
                 "    C = { job_name = \"c\", " TPL ", next = \"B\" },\n" TAIL,
                 (const char *const[]){"w.lua:4: the workflow needs 'start', the name of its first step",
                                       "w.lua:5: step 'A': next step 'Z' does not exist",
                                       "w.lua:6: step 'B': on_failure step 'Y' does not exist",
                                       "w.lua:7: cycle: step 'C' leads back to 'B' (a run launches each step once)",
                                       NULL});
    expect_diags("return {\n  name = \"w\",\n  region = \"r\",\n  start = \"Nope\",\n  steps = {\n"
                 "    A = { job_name = \"a\", " TPL ", next = \"Z\", timeout = \"soon\" },\n" TAIL,
                 (const char *const[]){"w.lua:4: start step 'Nope' does not exist",
                                       "w.lua:6: step 'A': next step 'Z' does not exist",
                                       "w.lua:6: step 'A': timeout must be a duration (3600, \"90m\", \"2h\")", NULL});
}

/* Where problems are placed: fields on one line, fields on their own lines, keys inside strings and comments
 * (never matched), a step named like a field, and declarations the scan cannot see (the fallbacks). */
static void test_problem_lines(void **s)
{
    (void)s;
    /* the whole workflow on one line: every problem gets line 1 */
    expect_diags("return { name = \"w\", region = \"r\", start = \"A\", steps = { A = { job_name = \"a\", " TPL
                 ", next = \"Z\" }, B = { job_name = \"b\", " TPL ", retry = 0 } } }\n",
                 (const char *const[]){"w.lua:1: step 'A': next step 'Z' does not exist",
                                       "w.lua:1: step 'B' is unreachable from start step 'A'",
                                       "w.lua:1: step 'B': retry.attempts must be between 1 and 100", NULL});
    /* a step called "next", mentioned in a comment and a string before it is declared; a missing name is placed at
     * the workflow's declaration (line 3) */
    expect_diags("-- next = { job_name = 1 }\nlocal note = \"next = {\"\ndag = {\n  region = \"r\",\n  start = \"S\",\n"
                 "  steps = {\n    S = { next = \"next\",\n      description = note },\n"
                 "    next = { job_name = 7, " TPL " },\n  },\n}\n",
                 (const char *const[]){"w.lua:3: the workflow needs a name",
                                       "w.lua:9: step 'next': field 'job_name' must be a string, not a number",
                                       "w.lua:9: step 'next': job_name is required", NULL});
    /* steps built by code: a step without a constructor of its own is placed at `steps`; one declared in a table
     * apart from the workflow's is found there */
    expect_diags("local steps = {\n  A = { job_name = \"a\", " TPL ", next = \"B\" },\n}\n"
                 "steps.B = { job_name = \"b\", " TPL ", nxt = 1 }\n"
                 "return {\n  name = \"w\", region = \"r\", start = \"A\",\n  steps = steps,\n}\n",
                 (const char *const[]){"w.lua:7: step 'B': unknown field 'nxt'", NULL});
    expect_diags("local steps = {\n  A = { job_name = \"a\", " TPL ", nxt = \"B\" },\n}\n"
                 "return {\n  name = \"w\", region = \"r\", start = \"A\",\n  steps = steps,\n}\n",
                 (const char *const[]){"w.lua:2: step 'A': unknown field 'nxt'", NULL});
    /* a field on its own line inside a multi-line step, and inside a nested table */
    expect_diags(HEAD "    A = {\n      job_name = \"a\",\n      " TPL ",\n      retry = {\n        attempts = 2,\n"
                 "        delay = 5,\n      },\n      environment = { additionalUserLabels = {\n        Owner = \"x\" } },\n"
                 "    },\n" TAIL,
                 (const char *const[]){"w.lua:11: step 'A': unknown retry field 'delay'",
                                       "w.lua:13: environment.additionalUserLabels: label key 'Owner' is invalid: 1-63 "
                                       "characters, starting with a lowercase letter, only lowercase letters, digits, "
                                       "'_' and '-'",
                                       NULL});
}

static const char *const SET_A = "return { name = \"one\", region = \"r\", start = \"A\",\n"
                                 "  steps = {\n    A = { job_name = \"shared-job\", " TPL " },\n  },\n}\n";
static const char *const SET_B = "return { name = \"two\", region = \"r\", start = \"S\",\n"
                                 "  steps = {\n    S = { next = \"X\" },\n    X = { job_name = \"shared-job\", " TPL " },\n  },\n}\n";

static void test_bad_set_collisions(void **s)
{
    (void)s;
    wf_diags d = {0};
    wf_workflow *a = wf_load_source("a.lua", SET_A, strlen(SET_A), &lim, &d);
    wf_workflow *b = wf_load_source("b.lua", SET_B, strlen(SET_B), &lim, &d);
    wf_workflow *c = wf_load_source("c.lua", SET_A, strlen(SET_A), &lim, &d);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    wf_workflow *set[] = {a, b};
    assert_int_equal(wf_validate_set(set, 2, &d), 1);
    assert_str_eq(d.items[0], "b.lua:4: job_name 'shared-job' of step 'X' is also used by step 'A' of one (a.lua:3): "
                              "finished jobs could not be mapped to one workflow");
    wf_diags_free(&d);
    wf_workflow *set2[] = {a, c};
    assert_int_equal(wf_validate_set(set2, 2, &d), 2);
    assert_str_eq(d.items[0], "c.lua: workflow name 'one' is also used by a.lua");
    wf_diags_free(&d);
    wf_free(a);
    wf_free(b);
    wf_free(c);
}

/* ---- naming and labels ---- */

static wf_step named_step(const char *job) { return (wf_step){.name = "S", .job_name = (char *)job}; }

static void test_launch_name_roundtrip(void **s)
{
    (void)s;
    wf_step st = named_step("my-job-1");
    char buf[WF_JOB_NAME_MAX + 1], run[40];
    int attempt = 0;
    assert_int_equal(wf_launch_name(&st, "r7f3k2", 3, buf, sizeof buf), 0);
    assert_str_eq(buf, "my-job-1--r7f3k2-3");
    assert_int_equal(wf_parse_launch_name(buf, run, sizeof run, &attempt), 0);
    assert_str_eq(run, "r7f3k2");
    assert_int_equal(attempt, 3);
    /* invalid run ids: uppercase, '_' make an invalid Dataflow name */
    assert_int_equal(wf_launch_name(&st, "R7", 1, buf, sizeof buf), -1);
    assert_int_equal(wf_launch_name(&st, "r_7", 1, buf, sizeof buf), -1);
    /* too small a buffer */
    assert_int_equal(wf_launch_name(&st, "r7", 1, buf, 8), -1);
    /* the length limit: 1024 total */
    char longname[1020];
    memset(longname, 'a', 1017);
    longname[1017] = '\0';
    st.job_name = longname;
    assert_int_equal(wf_launch_name(&st, "r7", 1, buf, sizeof buf), 0); /* 1017 + 2 + 2 + 2 = 1023 */
    assert_int_equal(wf_launch_name(&st, "r77", 1, buf, sizeof buf), 0); /* 1024 */
    assert_int_equal(wf_launch_name(&st, "r777", 1, buf, sizeof buf), -1); /* 1025 */
    /* parse: not of the shape */
    assert_int_equal(wf_parse_launch_name("my-job-1", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1--1607050850", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1--r7-0", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1--R7-1", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1--r7-x", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1---1", run, sizeof run, &attempt), -1);
    assert_int_equal(wf_parse_launch_name("my-job-1--abcdef-1", run, 4, &attempt), -1);
}

/* Regression: wf_launch_name accepted run ids outside [a-z0-9]+ and attempts < 1, producing names that
 * wf_parse_launch_name cannot read back: run "r-7" gave "a--r-7-1", an empty run "a---1", attempt 0 "a--r7-0". */
static void test_launch_name_rejects_unparseable(void **s)
{
    (void)s;
    wf_step st = named_step("a");
    char buf[64];
    assert_int_equal(wf_launch_name(&st, "r-7", 1, buf, sizeof buf), -1);
    assert_int_equal(wf_launch_name(&st, "", 1, buf, sizeof buf), -1);
    assert_int_equal(wf_launch_name(&st, "r7", 0, buf, sizeof buf), -1);
    assert_int_equal(wf_launch_name(&st, "r7", -2, buf, sizeof buf), -1);
    assert_int_equal(wf_launch_name(&st, "r7", 1000000, buf, sizeof buf), 0);
    assert_str_eq(buf, "a--r7-1000000");
    assert_int_equal(wf_launch_name(&st, "r7", 1000001, buf, sizeof buf), -1);
}

static void test_job_name_valid(void **s)
{
    (void)s;
    assert_true(gn_job_name_valid("a"));
    assert_true(gn_job_name_valid("my-job-1"));
    assert_true(gn_job_name_valid("a1-b2"));
    assert_false(gn_job_name_valid(""));
    assert_false(gn_job_name_valid("1a"));
    assert_false(gn_job_name_valid("-a"));
    assert_false(gn_job_name_valid("a-"));
    assert_false(gn_job_name_valid("A"));
    assert_false(gn_job_name_valid("a_b"));
    assert_false(gn_job_name_valid("a.b"));
    assert_false(gn_job_name_valid("caf\xc3\xa9"));
    char n[1026];
    memset(n, 'a', 1025);
    n[1024] = '\0';
    assert_true(gn_job_name_valid(n));
    n[1024] = 'a';
    n[1025] = '\0';
    assert_false(gn_job_name_valid(n));
}

static void test_label_rules(void **s)
{
    (void)s;
    char v[66];
    memset(v, 'a', 65);
    v[63] = '\0';
    assert_true(gn_label_key_valid(v));
    assert_true(gn_label_value_valid(v));
    v[63] = 'a';
    v[64] = '\0';
    assert_false(gn_label_key_valid(v));
    assert_false(gn_label_value_valid(v));
    assert_true(gn_label_value_valid(""));
    assert_false(gn_label_key_valid(""));
    assert_false(gn_label_key_valid("Team"));
    assert_false(gn_label_value_valid("Data"));
    assert_false(gn_label_key_valid("_x"));
    assert_true(gn_label_key_valid("x_-9"));
    assert_true(gn_label_value_valid("9-_x"));
    assert_false(gn_label_value_valid("a b"));
    char err[256];
    json_t *l = json_object();
    for (int i = 0; i < 64; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(l, k, json_string(""));
    }
    assert_int_equal(gn_labels_check(l, err, sizeof err), 0);
    json_object_set_new(l, "k64", json_string("x"));
    assert_int_equal(gn_labels_check(l, err, sizeof err), -1);
    assert_str_eq(err, "65 labels: Dataflow allows at most 64");
    json_decref(l);
    json_t *notobj = json_string("x");
    assert_int_equal(gn_labels_check(notobj, err, sizeof err), -1);
    assert_str_eq(err, "labels must be a table of strings");
    json_decref(notobj);
}

static const char *const EXAMPLE_LIKE =
    "function hook(ctx) return { seen = ctx.run.id } end\n"
    "function params(ctx) return { n = 4, ratio = 0.5, flag = true, off = false, dropped = cjson.null, name = ctx.job_name } end\n"
    "return {\n  name = \"ex\",\n  project = \"p\",\n  region = \"europe-west4\",\n  start = \"Start\",\n"
    "  environment = { tempLocation = \"gs://bucket/tmp\", maxWorkers = 10, additionalUserLabels = { team = \"env\", owner = \"env\" } },\n"
    "  labels = { team = \"wf\", cost = \"wf\", [\"sluice-run\"] = \"spoof\" },\n"
    "  steps = {\n"
    "    Start = { job_name = \"start\", [\"function\"] = \"hook\", next = \"Step1\" },\n"
    "    Step1 = { job_name = \"my-job-1\", template = \"gs://bucket/spec.json\", [\"function\"] = \"params\",\n"
    "              parameters = { fixed = \"f\", n = 3, dropped = \"d\" }, next = \"Classic\" },\n"
    "    Classic = { job_name = \"classic\", classic_template = \"gs://bucket/classic\",\n"
    "                [\"function\"] = function(ctx) return { parameters = { q = ctx.run.id }, environment = { machineType = \"n2\", additionalUserLabels = { owner = \"fn\" } } } end,\n"
    "                next = \"Choose\" },\n"
    "    Choose = { next = function(ctx) return ctx.run.params.pick end, choices = { \"X\", \"Y\" } },\n"
    "    X = { job_name = \"x\", template = \"gs://bucket/x.json\", environment = { additionalUserLabels = { owner = \"step\" } } },\n"
    "    Y = { job_name = \"y\", template = \"gs://bucket/y.json\", parameters = { nested = { a = 1 } } },\n"
    "  },\n}\n";

static void test_step_for_job_and_state(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(EXAMPLE_LIKE);
    assert_str_eq(wf_step_for_job(wf, "my-job-1")->name, "Step1");
    assert_str_eq(wf_step_for_job(wf, "my-job-1--r7-1")->name, "Step1");
    assert_str_eq(wf_step_for_job(wf, "my-job-1--1607050850")->name, "Step1");
    assert_null(wf_step_for_job(wf, "my-job"));
    assert_null(wf_step_for_job(wf, "my-job-12"));
    assert_null(wf_step_for_job(wf, "start")); /* hooks launch no job */
    assert_int_equal(wf_step_index(wf, "Classic"), 1);
    assert_int_equal(wf_step_index(wf, "nope"), -1);
    const wf_step *st = wf_step_for_job(wf, "x");
    assert_true(wf_step_success(st, "done"));
    assert_false(wf_step_success(st, "FAILED"));
    wf_free(wf);
}

static void test_retry_delay(void **s)
{
    (void)s;
    wf_step st = {.retry_attempts = 10, .retry_backoff = 60, .retry_max_backoff = 300};
    assert_true(wf_retry_delay(&st, 2) == 60.0);
    assert_true(wf_retry_delay(&st, 3) == 120.0);
    assert_true(wf_retry_delay(&st, 4) == 240.0);
    assert_true(wf_retry_delay(&st, 5) == 300.0);
    assert_true(wf_retry_delay(&st, 9) == 300.0);
    wf_workflow *wf = load_ok(HEAD "    A = { job_name = \"a\", " TPL ", retry = { attempts = 3, backoff = \"1m\", max_backoff = \"90s\" } },\n" TAIL);
    const wf_step *a = &wf->steps[0];
    assert_int_equal(a->retry_attempts, 3);
    assert_true(wf_retry_delay(a, 2) == 60.0);
    assert_true(wf_retry_delay(a, 3) == 90.0);
    wf_free(wf);
    wf = load_ok(HEAD "    A = { job_name = \"a\", " TPL ", retry = 2, timeout = \"2h\", success = { \"done\", \"DRAINED\" }, on_cancel = \"drain\" },\n" TAIL);
    a = &wf->steps[0];
    assert_int_equal(a->retry_attempts, 2);
    assert_true(wf_retry_delay(a, 2) == 30.0); /* default backoff */
    assert_true(a->timeout == 7200.0);
    assert_int_equal(a->n_success, 2);
    assert_str_eq(a->success[1], "JOB_STATE_DRAINED");
    assert_int_equal(a->stop_mode, WF_STOP_DRAIN);
    wf_free(wf);
}

/* ---- launch building ---- */

static int build(wf_workflow *wf, const char *step, json_t *params, launch_req **l, char **err)
{
    const wf_step *st = &wf->steps[wf_step_index(wf, step)];
    json_t *ctx = ctx_of(wf, st, "r7", params, 1714564800000, 1);
    assert_non_null(ctx);
    int rc = wf_build_launch(wf, st, ctx, "r7", "default-proj", l, err);
    json_decref(ctx);
    return rc;
}

static void test_build_flex(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(EXAMPLE_LIKE);
    launch_req *l = NULL;
    char *err = NULL;
    assert_int_equal(build(wf, "Step1", NULL, &l, &err), 0);
    json_t *j = launch_to_json(l);
    assert_json_eq(j, "{\"kind\":\"flex\",\"template\":\"gs://bucket/spec.json\","
                      "\"project\":\"p\",\"region\":\"europe-west4\",\"jobName\":\"my-job-1--r7-1\","
                      "\"parameters\":{\"fixed\":\"f\",\"n\":\"4\",\"ratio\":\"0.5\",\"flag\":\"true\",\"off\":\"false\",\"name\":\"my-job-1--r7-1\"},"
                      "\"environment\":{\"tempLocation\":\"gs://bucket/tmp\",\"maxWorkers\":10,\"additionalUserLabels\":{"
                      "\"team\":\"env\",\"owner\":\"env\",\"cost\":\"wf\",\"sluice-workflow\":\"ex\",\"sluice-run\":\"r7\","
                      "\"sluice-step\":\"step1\"}}}");
    /* round trip through JSON */
    launch_req *back = launch_from_json(j);
    assert_non_null(back);
    json_t *j2 = launch_to_json(back);
    assert_true(json_equal(j, j2));
    json_decref(j2);
    launch_free(back);
    json_decref(j);
    launch_free(l);
    wf_free(wf);
}

static void test_build_classic_full_form(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(EXAMPLE_LIKE);
    launch_req *l = NULL;
    char *err = NULL;
    assert_int_equal(build(wf, "Classic", NULL, &l, &err), 0);
    json_t *j = launch_to_json(l);
    assert_json_eq(j, "{\"kind\":\"classic\",\"template\":\"gs://bucket/classic\","
                      "\"project\":\"p\",\"region\":\"europe-west4\",\"jobName\":\"classic--r7-1\","
                      "\"parameters\":{\"q\":\"r7\"},"
                      "\"environment\":{\"tempLocation\":\"gs://bucket/tmp\",\"maxWorkers\":10,\"machineType\":\"n2\","
                      "\"additionalUserLabels\":{\"team\":\"env\",\"owner\":\"fn\",\"cost\":\"wf\",\"sluice-workflow\":\"ex\","
                      "\"sluice-run\":\"r7\",\"sluice-step\":\"classic\"}}}");
    json_decref(j);
    launch_free(l);
    /* step labels override the workflow's environment labels */
    assert_int_equal(build(wf, "X", NULL, &l, &err), 0);
    assert_json_eq(json_object_get(l->environment, "additionalUserLabels"),
                   "{\"team\":\"env\",\"owner\":\"step\",\"cost\":\"wf\",\"sluice-workflow\":\"ex\",\"sluice-run\":\"r7\",\"sluice-step\":\"x\"}");
    launch_free(l);
    /* a table parameter is an error */
    assert_int_equal(build(wf, "Y", NULL, &l, &err), -4);
    assert_null(l);
    assert_str_eq(err, "step 'Y': parameter 'nested' must be a string, number or boolean");
    free(err);
    wf_free(wf);
}

static void test_build_errors(void **s)
{
    (void)s;
    launch_req *l = NULL;
    char *err = NULL;
    /* classic without tempLocation: validation lets a step with a function through (it may return one), so the
     * merged result is checked before anything is sent */
    wf_workflow *wf = load_ok(HEAD "    A = { job_name = \"a\", classic_template = \"gs://bucket/c\", "
                              "[\"function\"] = function(ctx) return { input = \"x\" } end },\n" TAIL);
    assert_int_equal(build(wf, "A", NULL, &l, &err), -4);
    assert_str_eq(err, "step 'A': classic templates need environment.tempLocation");
    free(err);
    /* no project anywhere: the default is used; a hook cannot be launched */
    wf_free(wf);
    wf = load_ok(HEAD "    A = { job_name = \"a\", " TPL ", next = \"H\" },\n    H = {},\n" TAIL);
    assert_int_equal(build(wf, "A", NULL, &l, &err), 0);
    assert_str_eq(l->project, "default-proj");
    launch_free(l);
    const wf_step *h = &wf->steps[wf_step_index(wf, "H")];
    json_t *ctx = ctx_of(wf, h, "r7", NULL, 0, 1);
    assert_int_equal(wf_build_launch(wf, h, ctx, "r7", NULL, &l, &err), -4);
    assert_str_eq(err, "step 'H' has no template to launch");
    free(err);
    json_decref(ctx);
    /* no project at all: the message names every way to set one */
    const wf_step *a = &wf->steps[wf_step_index(wf, "A")];
    ctx = ctx_of(wf, a, "r7", NULL, 0, 1);
    assert_int_equal(wf_build_launch(wf, a, ctx, "r7", NULL, &l, &err), -4);
    assert_str_eq(err, "step 'A': no project: set project on the step or the workflow, pass --project, set "
                       "SLUICE_PROJECT, or use credentials that name one (a service-account key's project_id, "
                       "gcloud's quota_project_id, the metadata server)");
    free(err);
    json_decref(ctx);
    wf_free(wf);
    /* function errors, timeouts, memory, bad results */
    static const struct {
        const char *body;
        int rc;
        const char *want; /* prefix */
    } cases[] = {
        {"error('boom')", -1, "w.lua:2: boom"},
        {"while true do end", -2, ""},
        {"local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 1000) .. i end", -3, ""},
        {"return 'x'", -4, "step 'A': function f returned a string; it must return a table of parameters"},
        {"return { p = { 1 } }", -4, "step 'A': parameter 'p' must be a string, number or boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char src[1024];
        snprintf(src, sizeof src, "function f(ctx)\n%s\nend\n" HEAD "    A = { job_name = \"a\", " TPL ", [\"function\"] = \"f\" },\n" TAIL,
                 cases[i].body);
        wf = load_ok(src);
        int rc = build(wf, "A", NULL, &l, &err);
        if (rc != cases[i].rc || err == NULL || strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fprintf(stderr, "case %zu: rc %d (want %d) err %s\nwant prefix: %s\n", i, rc, cases[i].rc, err ? err : "(null)", cases[i].want);
        assert_int_equal(rc, cases[i].rc);
        assert_null(l);
        assert_non_null(err);
        assert_true(err[0] != '\0');
        assert_int_equal(strncmp(err, cases[i].want, strlen(cases[i].want)), 0);
        free(err);
        wf_free(wf);
    }
}

/* ---- successors, hooks, context ---- */

static void succ(wf_workflow *wf, const char *step, json_t *params, int want_rc, const char *want)
{
    const wf_step *st = &wf->steps[wf_step_index(wf, step)];
    json_t *ctx = ctx_of(wf, st, "r7", params, 0, 1);
    json_t *names = NULL;
    char *err = NULL;
    int rc = wf_successors(wf, st, ctx, &names, &err);
    if (rc != want_rc) fprintf(stderr, "rc %d want %d err %s\n", rc, want_rc, err ? err : "");
    assert_int_equal(rc, want_rc);
    if (rc == 0) {
        assert_json_eq(names, want);
        json_decref(names);
    } else {
        assert_null(names);
        assert_str_eq(err, want);
    }
    free(err);
    json_decref(ctx);
}

static void test_successors(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(EXAMPLE_LIKE);
    succ(wf, "Start", NULL, 0, "[\"Step1\"]");
    succ(wf, "X", NULL, 0, "[]");
    json_t *p = json_pack("{s:s}", "pick", "Y");
    succ(wf, "Choose", p, 0, "[\"Y\"]");
    json_decref(p);
    succ(wf, "Choose", NULL, 0, "[]"); /* nil: the branch ends */
    p = json_pack("{s:s}", "pick", "Step1");
    succ(wf, "Choose", p, -4, "step 'Choose': next() returned 'Step1', which is not one of its choices");
    json_decref(p);
    wf_free(wf);
    wf = load_ok(HEAD "    A = { next = function(ctx) return ctx.run.params.r end, choices = { \"B\", \"C\" } },\n"
                 "    B = {},\n    C = {},\n" TAIL);
    p = json_pack("{s:[s,s]}", "r", "B", "C");
    succ(wf, "A", p, 0, "[\"B\",\"C\"]");
    json_decref(p);
    p = json_pack("{s:i}", "r", 5);
    succ(wf, "A", p, -4, "step 'A': next() returned a number; it must return a step name, a list of them, or nil");
    json_decref(p);
    p = json_pack("{s:[i]}", "r", 5);
    succ(wf, "A", p, -4, "step 'A': next() returned a number, which is not one of its choices");
    json_decref(p);
    wf_free(wf);
}

/* Regression, issue 8 item 7: a budget kill inside string.find abandons the workflow's VM; the next call builds it
 * again from the script, as on first use. */
static void test_vm_rebuilt_after_budget_kill(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(HEAD "    A = { next = function(ctx) local r = ctx.run.params.r\n"
                              "      if r == 'bomb' then return ('a'):rep(3000):find('.-.-.-.-.-x') end return r end,\n"
                              "      choices = { \"B\", \"C\" } },\n    B = {},\n    C = {},\n" TAIL);
    const wf_step *st = &wf->steps[wf_step_index(wf, "A")];
    json_t *p = json_pack("{s:s}", "r", "bomb");
    json_t *ctx = ctx_of(wf, st, "r7", p, 0, 1);
    json_t *names = NULL;
    char *err = NULL;
    int rc = wf_successors(wf, st, ctx, &names, &err);
    if (rc != -2) fprintf(stderr, "rc %d err %s\n", rc, err ? err : "");
    assert_int_equal(rc, -2);
    json_decref(names);
    if (strstr(err, "the VM was reset after a budget kill") == NULL) fprintf(stderr, "got: %s\n", err);
    assert_non_null(strstr(err, "the VM was reset after a budget kill"));
    free(err);
    json_decref(ctx);
    json_decref(p);
    p = json_pack("{s:s}", "r", "C");
    succ(wf, "A", p, 0, "[\"C\"]");
    json_decref(p);
    wf_free(wf);
}

static void test_run_hook_and_context(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(EXAMPLE_LIKE);
    const wf_step *h = &wf->steps[wf_step_index(wf, "Start")];
    json_t *ctx = ctx_of(wf, h, "r7", NULL, 1714564800000, 1);
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(wf_run_hook(wf, h, ctx, &out, &err), 0);
    assert_json_eq(out, "{\"seen\":\"r7\"}");
    json_decref(out);
    json_decref(ctx);
    const wf_step *c = &wf->steps[wf_step_index(wf, "Choose")];
    ctx = ctx_of(wf, c, "r7", NULL, 0, 1);
    assert_int_equal(wf_run_hook(wf, c, ctx, &out, &err), 0); /* no function: null */
    assert_true(json_is_null(out));
    json_decref(out);
    json_decref(ctx);

    const wf_step *st = &wf->steps[wf_step_index(wf, "Step1")];
    json_t *params = json_pack("{s:s}", "date", "2024-05-01");
    json_t *hook_out = json_pack("{s:s}", "seen", "r7");
    wf_ctx_step done[] = {{.name = "Start", .state = WF_CTX_SUCCEEDED, .attempt = 1, .output = hook_out}};
    wf_ctx_run run = {.id = "r7", .params = params, .started_ms = 1714564800000};
    ctx = wf_step_context(wf, st, &run, 2, done, 1);
    char want[2048];
    /* a hook predecessor has no job: ctx.jobs is empty and ctx.job absent */
    snprintf(want, sizeof want,
             "{\"run\":{\"id\":\"r7\",\"workflow\":\"ex\",\"version\":\"%s\",\"params\":{\"date\":\"2024-05-01\"},"
             "\"started_at\":1714564800,\"started\":\"2024-05-01T12:00:00.000Z\"},"
             "\"step\":{\"name\":\"Step1\",\"job_name\":\"my-job-1\",\"template\":\"gs://bucket/spec.json\",\"attempt\":2},"
             "\"job_name\":\"my-job-1--r7-2\",\"template_location\":\"gs://bucket/spec.json\",\"project\":\"p\","
             "\"region\":\"europe-west4\",\"jobs\":[],"
             "\"results\":{\"Start\":{\"state\":\"succeeded\",\"attempt\":1,\"output\":{\"seen\":\"r7\"}}}}",
             wf->version);
    assert_json_eq(ctx, want);
    assert_int_equal(strlen(wf->version), 64);
    json_decref(ctx);
    /* a hook: job_name, template_location and job are absent (nil in Lua), not JSON nulls (cjson.null) */
    ctx = ctx_of(wf, c, "r7", NULL, 0, 1);
    assert_null(json_object_get(ctx, "job_name"));
    assert_null(json_object_get(ctx, "template_location"));
    assert_null(json_object_get(ctx, "job"));
    assert_null(json_object_get(json_object_get(ctx, "step"), "template"));
    json_decref(ctx);
    /* a run id that makes an invalid job name */
    assert_null(ctx_of(wf, st, "BAD", NULL, 0, 1));
    json_decref(params);
    json_decref(hook_out);
    wf_free(wf);
}

/* No JSON null anywhere in v (a null becomes cjson.null, a userdata, in Lua: `ctx.job and ctx.job.state` raises). */
static int has_null(json_t *v)
{
    const char *k;
    size_t i;
    json_t *x;
    if (json_is_null(v)) return 1;
    if (json_is_object(v))
        json_object_foreach(v, k, x) if (has_null(x)) return 1;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (has_null(x)) return 1;
    return 0;
}

/* Regression (issue 17, findings 13 and 14): ctx.job was a JSON null (cjson.null in Lua) when no predecessor had a
 * job, and a table of nulls after a refused launch; plan, preflight and the engine built ctx.results each in their
 * own shape. One function (wf_step_context) builds it now: results carry the step state, attempt, job_id,
 * job_name, job_state, output and error; ctx.jobs only jobs that exist; nothing absent is a null. */
static void test_step_context_shape(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(HEAD "    A = { job_name = \"a\", " TPL ", next = \"B\", on_failure = \"F\" },\n"
                              "    B = { job_name = \"b\", " TPL " },\n"
                              "    F = { [\"function\"] = function(ctx) return { job = type(ctx.job),\n"
                              "          state = ctx.job and ctx.job.state or \"none\", id = type(ctx.results.A.job_id) } end },\n" TAIL);
    const wf_step *b = &wf->steps[wf_step_index(wf, "B")], *f = &wf->steps[wf_step_index(wf, "F")];
    json_t *labels = json_pack("{s:s}", "team", "x");
    wf_ctx_run run = {.id = "r1", .started_ms = 0, .default_project = "dp"};
    /* A succeeded: B's ctx.job is A's job, with every field */
    wf_ctx_step ok[] = {{.name = "A", .state = WF_CTX_SUCCEEDED, .attempt = 2, .job_id = "2024-01-01_1",
                         .job_name = "a--r1-2", .job_state = "JOB_STATE_DONE", .labels = labels}};
    json_t *ctx = wf_step_context(wf, b, &run, 1, ok, 1);
    assert_json_eq(json_object_get(ctx, "job"), "{\"id\":\"2024-01-01_1\",\"name\":\"a--r1-2\",\"state\":"
                                                "\"JOB_STATE_DONE\",\"step\":\"A\",\"labels\":{\"team\":\"x\"}}");
    assert_json_eq(json_object_get(ctx, "results"), "{\"A\":{\"state\":\"succeeded\",\"attempt\":2,\"job_id\":"
                                                    "\"2024-01-01_1\",\"job_name\":\"a--r1-2\",\"job_state\":\"JOB_STATE_DONE\"}}");
    assert_false(has_null(ctx));
    json_decref(ctx);
    /* A succeeded: F (its on_failure) was not reached by it, so F has no job */
    ctx = wf_step_context(wf, f, &run, 1, ok, 1);
    assert_null(json_object_get(ctx, "job"));
    json_decref(ctx);
    /* A's launch was refused (a job name, no job): F's ctx.job is absent, ctx.jobs empty, no nulls anywhere */
    wf_ctx_step refused[] = {{.name = "A", .state = WF_CTX_FAILED, .attempt = 1, .job_name = "a--r1-1",
                              .error = "Invalid template parameters"}};
    ctx = wf_step_context(wf, f, &run, 1, refused, 1);
    assert_null(json_object_get(ctx, "job"));
    assert_json_eq(json_object_get(ctx, "jobs"), "[]");
    assert_json_eq(json_object_get(ctx, "results"), "{\"A\":{\"state\":\"failed\",\"attempt\":1,\"job_name\":"
                                                    "\"a--r1-1\",\"error\":\"Invalid template parameters\"}}");
    assert_str_eq(json_string_value(json_object_get(ctx, "project")), "dp"); /* the default project, hooks too */
    assert_false(has_null(ctx));
    /* in Lua: the usual guard works, absent values are nil */
    json_t *out = NULL;
    char *err = NULL;
    assert_int_equal(wf_run_hook(wf, f, ctx, &out, &err), 0);
    assert_json_eq(out, "{\"job\":\"nil\",\"state\":\"none\",\"id\":\"nil\"}");
    json_decref(out);
    json_decref(ctx);
    /* A failed with a job: F's ctx.job is that job */
    wf_ctx_step failed[] = {{.name = "A", .state = WF_CTX_FAILED, .attempt = 1, .job_id = "j9", .job_name = "a--r1-1",
                             .job_state = "JOB_STATE_FAILED", .error = "job a--r1-1 ended JOB_STATE_FAILED"}};
    ctx = wf_step_context(wf, f, &run, 1, failed, 1);
    assert_str_eq(json_string_value(json_object_get(json_object_get(ctx, "job"), "state")), "JOB_STATE_FAILED");
    json_decref(ctx);
    json_decref(labels);
    wf_free(wf);
}

/* Plan and preflight imagine the run up to a step: what leads there succeeded with placeholder job ids, a step
 * whose on_failure it is failed; the step itself is not in it. */
static void test_imagined_run(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(HEAD "    A = { job_name = \"a\", " TPL ", next = { \"B\", \"C\" } },\n"
                              "    B = { job_name = \"b\", " TPL ", next = \"J\", on_failure = \"F\" },\n"
                              "    C = { job_name = \"c\", " TPL ", next = \"J\" },\n"
                              "    J = { job_name = \"j\", " TPL " },\n    F = { job_name = \"f\", " TPL " },\n" TAIL);
    wf_ctx_steps l = {0};
    wf_ctx_imagine_reaching(wf, &wf->steps[wf_step_index(wf, "J")], "r1", "preflight", &l);
    assert_int_equal(l.n, 3);
    const wf_ctx_step *b = wf_ctx_steps_get(&l, "B");
    assert_non_null(b);
    assert_int_equal(b->state, WF_CTX_SUCCEEDED);
    assert_str_eq(b->job_id, "preflight-job-id-of-b");
    assert_str_eq(b->job_name, "b--r1-1");
    assert_str_eq(b->job_state, "JOB_STATE_DONE");
    assert_null(wf_ctx_steps_get(&l, "J"));
    wf_ctx_steps_free(&l);
    wf_ctx_imagine_reaching(wf, &wf->steps[wf_step_index(wf, "F")], "r1", "plan", &l);
    assert_int_equal(l.n, 2); /* A succeeded, B failed into F */
    b = wf_ctx_steps_get(&l, "B");
    assert_int_equal(b->state, WF_CTX_FAILED);
    assert_str_eq(b->job_id, "plan-job-id-of-b");
    assert_str_eq(b->job_state, "JOB_STATE_FAILED");
    json_t *ctx = wf_step_context(wf, &wf->steps[wf_step_index(wf, "F")], &(wf_ctx_run){.id = "r1"}, 1, l.items, l.n);
    assert_str_eq(json_string_value(json_object_get(json_object_get(ctx, "job"), "id")), "plan-job-id-of-b");
    assert_false(has_null(ctx));
    json_decref(ctx);
    wf_ctx_steps_free(&l);
    wf_free(wf);
}

static const char *const SMALL =
    "return {\n  name = \"g\",\n  region = \"r\",\n  start = \"S\",\n  steps = {\n"
    "    S = { next = { \"A\", \"B\" } },\n"
    "    A = { job_name = \"a\", " TPL ", next = \"J\", on_failure = \"F\" },\n"
    "    B = { job_name = \"b\", " TPL ", next = \"J\" },\n"
    "    J = { job_name = \"j\", " TPL ", next = function() return nil end, choices = { \"E\" } },\n"
    "    F = {},\n    E = {},\n  },\n}\n";

static void test_graphs(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok(SMALL);
    char *m = wf_graph_mermaid(wf);
    assert_str_eq(m, "flowchart TD\n"
                     "  s_a[\"A<br/>a\"]\n"
                     "  s_b[\"B<br/>b\"]\n"
                     "  s_e([\"E\"])\n"
                     "  s_f([\"F\"])\n"
                     "  s_j[\"J<br/>j (join)\"]\n"
                     "  s_s([\"S\"])\n"
                     "  s_a --> s_j\n"
                     "  s_a -->|on failure| s_f\n"
                     "  s_b --> s_j\n"
                     "  s_j -.->|choice| s_e\n"
                     "  s_s --> s_a\n"
                     "  s_s --> s_b\n");
    free(m);
    char *d = wf_graph_dot(wf);
    assert_str_eq(d, "digraph \"g\" {\n  rankdir=TB;\n  node [fontname=\"Helvetica\"];\n"
                     "  \"A\" [label=\"A\\na\", shape=box];\n"
                     "  \"B\" [label=\"B\\nb\", shape=box];\n"
                     "  \"E\" [label=\"E\\nhook\", shape=ellipse];\n"
                     "  \"F\" [label=\"F\\nhook\", shape=ellipse];\n"
                     "  \"J\" [label=\"J\\nj (join)\", shape=box];\n"
                     "  \"S\" [label=\"S\\nhook\", shape=ellipse];\n"
                     "  \"A\" -> \"J\";\n"
                     "  \"A\" -> \"F\" [color=red, label=\"on failure\"];\n"
                     "  \"B\" -> \"J\";\n"
                     "  \"J\" -> \"E\" [style=dashed, label=\"choice\"];\n"
                     "  \"S\" -> \"A\";\n"
                     "  \"S\" -> \"B\";\n"
                     "}\n");
    free(d);
    wf_free(wf);
}

/* Regression: step names went into the graphs unescaped, so a step called `say "hi"` produced invalid DOT
 * ("say "hi"") and a broken Mermaid label. */
static void test_graph_escapes_step_names(void **s)
{
    (void)s;
    wf_workflow *wf = load_ok("return {\n  name = \"w\",\n  region = \"r\",\n  start = 'say \"hi\" <now>',\n  steps = {\n"
                              "    ['say \"hi\" <now>'] = { next = \"B\\\\C\" },\n    [\"B\\\\C\"] = {},\n  },\n}\n");
    char *d = wf_graph_dot(wf);
    assert_non_null(strstr(d, "  \"say \\\"hi\\\" <now>\" [label=\"say \\\"hi\\\" <now>\\nhook\", shape=ellipse];\n"));
    assert_non_null(strstr(d, "  \"say \\\"hi\\\" <now>\" -> \"B\\\\C\";\n"));
    char *m = wf_graph_mermaid(wf);
    if (strstr(m, "([\"say #quot;hi#quot; #lt;now#gt;\"])") == NULL) fprintf(stderr, "%s", m);
    assert_non_null(strstr(m, "([\"say #quot;hi#quot; #lt;now#gt;\"])"));
    free(d);
    free(m);
    wf_free(wf);
}

static void test_shipped_workflows_load(void **s)
{
    (void)s;
    const char *files[] = {"workflows/example.lua", "workflows/fanout.lua"};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", getenv("SLUICE_SRC") ? getenv("SLUICE_SRC") : ".", files[i]);
        wf_diags d = {0};
        wf_workflow *wf = wf_load_file(path, &lim, &d);
        for (size_t k = 0; k < d.n; k++) fprintf(stderr, "%s\n", d.items[k]);
        assert_non_null(wf);
        assert_int_equal(d.n, 0);
        wf_free(wf);
        wf_diags_free(&d);
    }
}

/* Workflows validated in one shared scratch VM see none of each other's globals, and each gets its own VM,
 * created only when one of its functions first runs. */
static void test_scratch_vm_isolation_and_lazy_vm(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/a.lua", dir);
    snprintf(b, sizeof b, "%s/b.lua", dir);
    assert_int_equal(tu_write_file(a, "function shared_fn() return { p = 'from-a' } end\n"
                                      "dag = { name = 'a', region = 'r', project = 'p', start = 'S', steps = {\n"
                                      "  S = { job_name = 'ja', template = 'gs://bucket/t', ['function'] = 'shared_fn' } } }\n"), 0);
    assert_int_equal(tu_write_file(b, "dag = { name = 'b', region = 'r', project = 'p', start = 'S', steps = {\n"
                                      "  S = { job_name = 'jb', template = 'gs://bucket/t', ['function'] = 'shared_fn' } } }\n"), 0);
    lh_vm *scratch = lh_new(NULL, NULL);
    wf_diags d = {0};
    wf_workflow *wa = wf_load_file_in(a, scratch, NULL, &d);
    assert_non_null(wa);
    assert_null(wa->vm);
    wf_workflow *wb = wf_load_file_in(b, scratch, NULL, &d);
    assert_null(wb); /* shared_fn belongs to a.lua's environment only */
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(d.items[0], "function 'shared_fn' is not defined in the script"));
    lh_free(scratch); /* a's own VM does not depend on the scratch one */
    json_t *ctx = ctx_of(wa, &wa->steps[0], "r1", NULL, 0, 1);
    launch_req *l = NULL;
    char *err = NULL;
    assert_int_equal(wf_build_launch(wa, &wa->steps[0], ctx, "r1", NULL, &l, &err), 0);
    assert_non_null(wa->vm);
    assert_string_equal(json_string_value(json_object_get(l->parameters, "p")), "from-a");
    launch_free(l);
    json_decref(ctx);
    wf_free(wa);
    wf_diags_free(&d);
    tu_rmtree(dir);
    free(dir);
}

static void test_bad_params(void **s)
{
    (void)s;
    const char *pre = "return {\n  name = \"w\",\n  start = \"A\",\n  params = {\n";
    const char *post = "  },\n  steps = { A = { job_name = \"a\" } },\n}\n";
    char src[512];
    snprintf(src, sizeof src, "%s    date = { required = true, default = \"x\" },\n%s", pre, post);
    expect_diag(src, "w.lua:5: param 'date' is required and has a default: choose one");
    snprintf(src, sizeof src, "%s    date = { requird = true },\n%s", pre, post);
    expect_diag(src, "w.lua:5: param 'date': unknown field 'requird' (required, default, description)");
    snprintf(src, sizeof src, "%s    date = \"yes\",\n%s", pre, post);
    expect_diag(src, "w.lua:5: param 'date' must be a table {required, default, description}, not a string");
    snprintf(src, sizeof src, "%s    date = { default = {} },\n%s", pre, post);
    expect_diag(src, "w.lua:5: param 'date': default must be a string, number or boolean, not a table");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_scratch_vm_isolation_and_lazy_vm),
        cmocka_unit_test(test_bad_unknown_step_field),
        cmocka_unit_test(test_bad_unknown_workflow_field),
        cmocka_unit_test(test_bad_missing_name),
        cmocka_unit_test(test_bad_invalid_name),
        cmocka_unit_test(test_bad_missing_start),
        cmocka_unit_test(test_bad_unknown_start),
        cmocka_unit_test(test_bad_empty_steps),
        cmocka_unit_test(test_bad_step_not_table),
        cmocka_unit_test(test_bad_job_name_missing),
        cmocka_unit_test(test_bad_job_name_rule),
        cmocka_unit_test(test_bad_job_name_double_dash),
        cmocka_unit_test(test_bad_job_name_too_long),
        cmocka_unit_test(test_bad_job_name_duplicate),
        cmocka_unit_test(test_bad_template_not_gs),
        cmocka_unit_test(test_bad_both_templates),
        cmocka_unit_test(test_bad_launch_fields_on_hook),
        cmocka_unit_test(test_bad_function_not_defined),
        cmocka_unit_test(test_bad_function_wrong_type),
        cmocka_unit_test(test_bad_next_unknown),
        cmocka_unit_test(test_bad_on_failure_unknown),
        cmocka_unit_test(test_bad_next_fn_without_choices),
        cmocka_unit_test(test_bad_choices_without_fn),
        cmocka_unit_test(test_bad_repeated_successor),
        cmocka_unit_test(test_failed_choice_leaves_no_names),
        cmocka_unit_test(test_bad_unreachable),
        cmocka_unit_test(test_bad_cycle),
        cmocka_unit_test(test_bad_cycle_via_on_failure),
        cmocka_unit_test(test_bad_retry),
        cmocka_unit_test(test_bad_retry_attempts_overflow),
        cmocka_unit_test(test_bad_timeout),
        cmocka_unit_test(test_bad_success_state),
        cmocka_unit_test(test_bad_on_cancel),
        cmocka_unit_test(test_bad_missing_region),
        cmocka_unit_test(test_bad_workflow_labels),
        cmocka_unit_test(test_bad_step_env_labels),
        cmocka_unit_test(test_bad_bucket_names),
        cmocka_unit_test(test_bad_classic_without_temp_location),
        cmocka_unit_test(test_bad_label_union_too_many),
        cmocka_unit_test(test_bad_same_label_value),
        cmocka_unit_test(test_bad_syntax_error),
        cmocka_unit_test(test_bad_runtime_error),
        cmocka_unit_test(test_bad_set_collisions),
        cmocka_unit_test(test_bad_twelve_at_once),
        cmocka_unit_test(test_bad_no_start_still_checks_graph),
        cmocka_unit_test(test_problem_lines),
        cmocka_unit_test(test_launch_name_roundtrip),
        cmocka_unit_test(test_launch_name_rejects_unparseable),
        cmocka_unit_test(test_job_name_valid),
        cmocka_unit_test(test_label_rules),
        cmocka_unit_test(test_step_for_job_and_state),
        cmocka_unit_test(test_retry_delay),
        cmocka_unit_test(test_build_flex),
        cmocka_unit_test(test_build_classic_full_form),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_successors),
        cmocka_unit_test(test_vm_rebuilt_after_budget_kill),
        cmocka_unit_test(test_run_hook_and_context),
        cmocka_unit_test(test_step_context_shape),
        cmocka_unit_test(test_imagined_run),
        cmocka_unit_test(test_graphs),
        cmocka_unit_test(test_graph_escapes_step_names),
        cmocka_unit_test(test_shipped_workflows_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
