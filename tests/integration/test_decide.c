/* decide: the pure rules (retry classes, on_failure, run failure, joins), and the agreement test: for every
 * launch step of the shipped workflows and the test corpus, and every way its attempt can end (DONE, FAILED,
 * CANCELLED, a timeout, a rejected launch), `sluice plan` (the real binary) and the engine (the scripted fake API
 * over a real store) take the same decision: the same successors, the same retry with the same delay, the same
 * on_failure step, or the run's failure. Regression: cli.c once re-implemented the engine's rules and could
 * disagree with it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decide.h"
#include "engine.h"
#include "fake_dataflow.h"
#include "testproc.h"
#include "testutil.h"

/* ---- the pure rules ---- */

static wf_workflow *load(const char *src)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_source("d.lua", src, strlen(src), NULL, &d);
    for (size_t i = 0; i < d.n; i++) fprintf(stderr, "%s\n", d.items[i]);
    wf_diags_free(&d);
    assert_non_null(wf);
    return wf;
}

static void test_rules(void **state)
{
    (void)state;
    wf_workflow *wf = load("return { name = 'r', project = 'p', region = 'r', start = 'A', on_run_failure = 'cancel',\n"
                           "  steps = {\n"
                           "  A = { job_name = 'a', template = 'gs://bucket/a', retry = {attempts = 3, backoff = 10}, next = 'B',\n"
                           "        on_failure = 'F' },\n"
                           "  B = { job_name = 'b', template = 'gs://bucket/b', retry = {attempts = 2, on = {'rejected'}} },\n"
                           "  F = { job_name = 'f', template = 'gs://bucket/f' } } }");
    const wf_step *a = &wf->steps[wf_step_index(wf, "A")], *b = &wf->steps[wf_step_index(wf, "B")];
    dec_result r = dec_step(wf, a, DEC_SUCCEEDED, 1, 1, 1);
    assert_int_equal(r.action, DEC_NEXT);
    r = dec_step(wf, a, DEC_JOB_FAILED, 1, 1, 1);
    assert_int_equal(r.action, DEC_RETRY);
    assert_int_equal(r.next_attempt, 2);
    assert_true(r.retry_delay_s == 10.0);
    r = dec_step(wf, a, DEC_TIMED_OUT, 2, 1, 1);
    assert_int_equal(r.action, DEC_RETRY);
    assert_true(r.retry_delay_s == 20.0);
    r = dec_step(wf, a, DEC_JOB_FAILED, 3, 1, 1); /* attempts used up */
    assert_int_equal(r.action, DEC_ON_FAILURE);
    assert_string_equal(r.target, "F");
    r = dec_step(wf, a, DEC_REJECTED, 1, 1, 1); /* not in the default retry.on */
    assert_int_equal(r.action, DEC_ON_FAILURE);
    r = dec_step(wf, a, DEC_JOB_FAILED, 1, 0, 1); /* never launched: no retry */
    assert_int_equal(r.action, DEC_ON_FAILURE);
    r = dec_step(wf, b, DEC_REJECTED, 1, 1, 1);
    assert_int_equal(r.action, DEC_RETRY);
    r = dec_step(wf, b, DEC_JOB_FAILED, 1, 1, 1); /* retry.on names only rejected */
    assert_int_equal(r.action, DEC_FAIL_RUN);
    assert_int_equal(r.stop_others, 1);
    r = dec_step(wf, a, DEC_JOB_FAILED, 1, 1, 0); /* the run stopped meanwhile */
    assert_int_equal(r.action, DEC_RECORD);
    assert_int_equal(dec_classify(a, "JOB_STATE_DONE", 0), DEC_SUCCEEDED);
    assert_int_equal(dec_classify(a, "JOB_STATE_DONE", 1), DEC_TIMED_OUT); /* a timeout is a failure */
    assert_int_equal(dec_classify(a, "JOB_STATE_CANCELLED", 0), DEC_JOB_FAILED);
    assert_string_equal(dec_outcome_name(DEC_REJECTED), "rejected");
    wf_free(wf);
}

static void test_join_rule(void **state)
{
    (void)state;
    wf_workflow *wf = load("return { name = 'j', project = 'p', region = 'r', start = 'S', steps = {\n"
                           "  S = { job_name = 's', template = 'gs://bucket/s', next = {'A', 'B'} },\n"
                           "  A = { job_name = 'a', template = 'gs://bucket/a', next = 'J' },\n"
                           "  B = { job_name = 'b', template = 'gs://bucket/b', next = 'J' },\n"
                           "  J = { job_name = 'j', template = 'gs://bucket/j' } } }");
    int s = wf_step_index(wf, "S"), a = wf_step_index(wf, "A"), b = wf_step_index(wf, "B"), j = wf_step_index(wf, "J");
    const wf_step *join = &wf->steps[j];
    dec_step_state st[4] = {0};
    const char *blocker = NULL;
    st[s] = DEC_ST_SUCCEEDED;
    st[a] = DEC_ST_SUCCEEDED;
    st[b] = DEC_ST_ACTIVE;
    st[j] = DEC_ST_WAITING;
    assert_int_equal(dec_join_check(wf, join, st, &blocker), DEC_JOIN_WAIT);
    st[b] = DEC_ST_SUCCEEDED;
    assert_int_equal(dec_join_check(wf, join, st, &blocker), DEC_JOIN_READY);
    st[b] = DEC_ST_ENDED;
    assert_int_equal(dec_join_check(wf, join, st, &blocker), DEC_JOIN_BLOCKED);
    assert_string_equal(blocker, "B");
    st[b] = DEC_ST_ABSENT; /* B never reached and nothing active can reach it: no reason to wait */
    assert_int_equal(dec_join_check(wf, join, st, &blocker), DEC_JOIN_READY);
    st[s] = DEC_ST_ACTIVE; /* ...but while S runs, B may still come */
    assert_int_equal(dec_join_check(wf, join, st, &blocker), DEC_JOIN_WAIT);
    wf_free(wf);
}

/* ---- the agreement test ---- */

static int64_t g_now = 1800000000000;
static int64_t clock_fn(void *ud)
{
    (void)ud;
    return g_now;
}

typedef enum { OUT_DONE, OUT_FAILED, OUT_CANCELLED, OUT_TIMEOUT, OUT_REJECTED, OUT_COUNT } out_case;
static const char *const out_names[OUT_COUNT] = {"DONE", "FAILED", "CANCELLED", "timeout", "rejected"};

/* What happened, as one comparable line: "<outcome> <sorted steps started>" plus the retry's delay. */
typedef struct {
    char text[600];
} verdict;

static void add_name(char **names, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(names[i], name) == 0) return;
    names[(*n)++] = strdup(name);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void make_verdict(verdict *v, const char *outcome, char **names, size_t n, double delay)
{
    qsort(names, n, sizeof *names, cmp_str);
    int off = snprintf(v->text, sizeof v->text, "%s", outcome);
    if (delay > 0) off += snprintf(v->text + off, sizeof v->text - (size_t)off, " in %.0fs", delay);
    for (size_t i = 0; i < n; i++) {
        off += snprintf(v->text + off, sizeof v->text - (size_t)off, " %s", names[i]);
        free(names[i]);
    }
}

/* `sluice plan` for the step's first attempt ending as `oc`. */
static void plan_verdict(const char *file, const wf_step *s, out_case oc, verdict *v)
{
    char name[WF_JOB_NAME_MAX + 1];
    assert_int_equal(wf_launch_name(s, "r1", 1, name, sizeof name), 0);
    const char *bin = getenv("SLUICE_BIN");
    assert_non_null(bin);
    char *argv[12] = {(char *)bin, "plan", (char *)file, "--after", name, "--run", "r1", "--state",
                      oc <= OUT_CANCELLED ? (char *)out_names[oc] : "CANCELLED", NULL};
    if (oc >= OUT_TIMEOUT) {
        argv[9] = "--outcome";
        argv[10] = (char *)out_names[oc];
        argv[11] = NULL;
    }
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err);
    if (rc != 0) fprintf(stderr, "plan: %s\n", err);
    assert_int_equal(rc, 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    const char *outcome = json_string_value(json_object_get(j, "outcome"));
    char *names[64];
    size_t n = 0;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "actions"), i, a) {
        const char *act = json_string_value(json_object_get(a, "action"));
        const char *st = json_string_value(json_object_get(a, "step"));
        if (st && act && (strcmp(act, "launch") == 0 || strcmp(act, "hook") == 0) && n < 64) add_name(names, &n, st);
    }
    json_t *delay = json_object_get(j, "retry_in_seconds");
    make_verdict(v, outcome, names, n, delay ? json_number_value(delay) : 0);
    json_decref(j);
    free(out);
    free(err);
}

/* The engine, with the run seeded at step `s`: the seeded job ends as `oc` (or its launch is refused). */
static void engine_verdict(const char *file, const wf_step *s_model, out_case oc, const char *dir, int seq,
                           verdict *v)
{
    char db[512];
    snprintf(db, sizeof db, "%s/agree-%d.db", dir, seq);
    store_options so = {.synchronous = STORE_SYNC_NORMAL, .clock_ms = clock_fn};
    store *st = NULL;
    assert_int_equal(store_open(db, &so, &st, NULL), STORE_OK);
    /* Launches are refused (the rejected case) or create jobs that stay running: the decision under test is the
     * first one. */
    fake_dataflow api;
    fd_init(&api);
    api.now = &g_now;
    api.ids_are_names = 1;
    api.launch_state = "JOB_STATE_RUNNING";
    api.stay_prefix = "";
    if (oc == OUT_REJECTED) api.reject_prefix = "";
    engine_options eo = {.st = st, .api = &api.base, .now_ms = clock_fn, .rec = rec_policy_default()};
    engine *e = engine_new(&eo, NULL);
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(file, NULL, &d);
    wf_diags_free(&d);
    assert_non_null(wf);
    const char *wf_name = wf->name, *version = wf->version;
    assert_int_equal(store_script_put(st, version, wf_name, wf->source, NULL), STORE_OK);
    store_run run = {.id = "r1", .workflow = (char *)wf_name, .script_hash = (char *)version, .params_json = "{}",
                     .state = STORE_RUN_RUNNING, .origin = "test", .created_at = g_now};
    assert_int_equal(store_run_create(st, &run, NULL), STORE_OK);
    char name[WF_JOB_NAME_MAX + 1];
    wf_launch_name(s_model, "r1", 1, name, sizeof name);
    /* The step as the engine leaves it after its first launch: running with a job, or pending (rejected case:
     * the launch happens in the engine). */
    store_step seeded = {.run_id = "r1", .name = s_model->name, .attempt = 1, .state = STORE_STEP_RUNNING,
                         .job_name = name, .job_id = "seeded", .project = "p", .region = "r", .started_at = g_now,
                         .deadline_at = oc == OUT_TIMEOUT ? g_now - 1 : 0};
    if (oc == OUT_REJECTED) seeded = (store_step){.run_id = "r1", .name = s_model->name, .attempt = 1,
                                                  .state = STORE_STEP_PENDING};
    else /* the seeded job has ended as `oc` says (a timeout: cancelled) */
        fd_add_job(&api, "seeded", name, oc == OUT_DONE     ? "JOB_STATE_DONE"
                                         : oc == OUT_FAILED ? "JOB_STATE_FAILED"
                                                            : "JOB_STATE_CANCELLED");
    assert_int_equal(store_step_insert(st, &seeded, NULL), STORE_OK);
    assert_int_equal(engine_add_workflow(e, wf, NULL), 0);
    /* 3 s of fake time, enough for a stopped job to be seen ended and short of every retry's backoff */
    for (int i = 0; i < 30; i++) {
        engine_tick(e, 0);
        g_now += 100;
    }
    store_run r = {0};
    assert_int_equal(store_run_get(st, "r1", &r, NULL), STORE_OK);
    store_step_list steps = {0};
    assert_int_equal(store_step_list_run(st, "r1", &steps, NULL), STORE_OK);
    const char *outcome = NULL;
    double delay = 0;
    char *names[64];
    size_t n = 0;
    const store_step *me = NULL;
    for (size_t i = 0; i < steps.count; i++)
        if (strcmp(steps.items[i].name, s_model->name) == 0) me = &steps.items[i];
    assert_non_null(me);
    int on_failure = 0;
    for (size_t i = 0; i < steps.count; i++) {
        const store_step *x = &steps.items[i];
        if (x == me) continue;
        add_name(names, &n, x->name);
        if (s_model->on_failure && strcmp(x->name, s_model->on_failure) == 0) on_failure = 1;
    }
    if (me->state == STORE_STEP_PENDING && me->next_check_at > me->updated_at) {
        outcome = "retry";
        delay = (double)(me->next_check_at - me->updated_at) / 1000.0;
        add_name(names, &n, me->name); /* plan lists the step's next attempt */
    } else if (me->state == STORE_STEP_SUCCEEDED) {
        outcome = "success";
    } else if (me->state == STORE_STEP_FAILED && on_failure) {
        outcome = "on_failure";
    } else if (me->state == STORE_STEP_FAILED && r.state == STORE_RUN_FAILED) {
        outcome = "run-fails";
    } else {
        outcome = store_step_state_name(me->state);
    }
    make_verdict(v, outcome, names, n, delay);
    store_step_list_free(&steps);
    store_run_free(&r);
    engine_free(e);
    fd_fini(&api);
    store_close(st);
}

static void agree_on_file(const char *file, const char *dir, int *seq, int *checked)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(file, NULL, &d);
    wf_diags_free(&d);
    assert_non_null(wf);
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        if (s->kind == WF_STEP_HOOK) continue;
        for (int oc = 0; oc < OUT_COUNT; oc++) {
            if (oc == OUT_TIMEOUT && s->timeout <= 0) continue; /* a step without a timeout cannot time out */
            verdict pv, ev;
            plan_verdict(file, s, (out_case)oc, &pv);
            engine_verdict(file, s, (out_case)oc, dir, (*seq)++, &ev);
            if (strcmp(pv.text, ev.text) != 0)
                fprintf(stderr, "%s step %s, %s: plan says '%s', the engine did '%s'\n", file, s->name, out_names[oc],
                        pv.text, ev.text);
            assert_string_equal(pv.text, ev.text);
            (*checked)++;
        }
    }
    wf_free(wf);
}

static void test_plan_and_engine_agree(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    int seq = 0, checked = 0;
    const char *dirs[] = {"workflows", "tests/data/engine"};
    for (size_t k = 0; k < 2; k++) {
        char *path = tu_src_path(dirs[k]);
        DIR *dh = opendir(path);
        assert_non_null(dh);
        struct dirent *de;
        while ((de = readdir(dh)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len < 5 || strcmp(de->d_name + len - 4, ".lua") != 0) continue;
            char file[1024];
            snprintf(file, sizeof file, "%s/%s", path, de->d_name);
            agree_on_file(file, dir, &seq, &checked);
        }
        closedir(dh);
        free(path);
    }
    fprintf(stderr, "plan and engine agree on %d step outcomes\n", checked);
    assert_true(checked >= 40);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_join_rule),
        cmocka_unit_test(test_plan_and_engine_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
