/* test_launch: launch requests as plain data (launch.c) and the one place that renders them into Dataflow's
 * request (df_launch_render) or reads a rendered one back (df_launch_parse): the stored form round-trips, intents
 * recorded in the old shape (the REST request itself, before issue 9) are read back to the same data, and the
 * rendering of that data is byte for byte the request the old shape recorded, so the wire did not change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataflow.h"
#include "jobs_api.h"
#include "launch.h"

/* Intents as Sluice 0.1.0 recorded them (wf_launch_to_json): the REST request plus where it goes. */
#define OLD_FLEX                                                                                                   \
    "{\"method\":\"POST\",\"path\":\"/v1b3/projects/p/locations/europe-west4/flexTemplates:launch\","             \
    "\"project\":\"p\",\"region\":\"europe-west4\",\"jobName\":\"my-job-1--r7-1\",\"body\":{\"launchParameter\":{" \
    "\"jobName\":\"my-job-1--r7-1\",\"containerSpecGcsPath\":\"gs://bucket/spec.json\","                            \
    "\"parameters\":{\"fixed\":\"f\",\"n\":\"4\"},"                                                                 \
    "\"environment\":{\"tempLocation\":\"gs://bucket/tmp\",\"maxWorkers\":10,\"additionalUserLabels\":{"           \
    "\"team\":\"env\",\"sluice-workflow\":\"ex\",\"sluice-run\":\"r7\",\"sluice-step\":\"step1\"}}}}}"
#define OLD_CLASSIC                                                                                                \
    "{\"method\":\"POST\",\"path\":\"/v1b3/projects/p/locations/europe-west4/templates:launch\","                 \
    "\"query\":{\"gcsPath\":\"gs://bucket/classic\",\"validateOnly\":\"false\"},"                                    \
    "\"project\":\"p\",\"region\":\"europe-west4\",\"jobName\":\"classic--r7-1\",\"body\":{"                        \
    "\"jobName\":\"classic--r7-1\",\"parameters\":{\"q\":\"r7\"},"                                                  \
    "\"environment\":{\"tempLocation\":\"gs://bucket/tmp\",\"additionalUserLabels\":{\"sluice-run\":\"r7\"}}}}"

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (j == NULL) fprintf(stderr, "bad JSON: %s\n", je.text);
    assert_non_null(j);
    return j;
}

static void assert_json_eq(json_t *got, json_t *want)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY), *w = json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
    }
    assert_true(json_equal(got, want));
}

/* The old intent without its project, region and jobName: exactly the request it stood for. */
static json_t *request_of(json_t *old)
{
    json_t *r = json_deep_copy(old);
    json_object_del(r, "project");
    json_object_del(r, "region");
    json_object_del(r, "jobName");
    return r;
}

static void check_old_shape(const char *text, launch_kind kind, const char *template, const char *job_name)
{
    json_t *old = parse(text);
    assert_null(launch_from_json(old)); /* launch itself knows no REST shape */
    launch_req *l = ja_launch_from_record(old);
    assert_non_null(l);
    assert_int_equal(l->kind, kind);
    assert_string_equal(l->template, template);
    assert_string_equal(l->job_name, job_name);
    assert_string_equal(l->project, "p");
    assert_string_equal(l->region, "europe-west4");
    /* rendered again, the data is the request the old intent recorded */
    json_t *rendered = df_launch_render(l, 0), *want = request_of(old);
    assert_json_eq(rendered, want);
    /* and it is stored in the new form from now on, which reads back to the same data */
    json_t *stored = launch_to_json(l);
    assert_string_equal(json_string_value(json_object_get(stored, "kind")), launch_kind_name(kind));
    assert_null(json_object_get(stored, "path"));
    launch_req *back = launch_from_json(stored);
    assert_non_null(back);
    json_t *again = launch_to_json(back);
    assert_json_eq(again, stored);
    json_decref(again);
    launch_free(back);
    json_decref(stored);
    json_decref(rendered);
    json_decref(want);
    launch_free(l);
    json_decref(old);
}

static void test_reads_old_flex_intent(void **s)
{
    (void)s;
    check_old_shape(OLD_FLEX, LAUNCH_FLEX, "gs://bucket/spec.json", "my-job-1--r7-1");
}

static void test_reads_old_classic_intent(void **s)
{
    (void)s;
    check_old_shape(OLD_CLASSIC, LAUNCH_CLASSIC, "gs://bucket/classic", "classic--r7-1");
}

static void test_stored_form(void **s)
{
    (void)s;
    json_t *params = parse("{\"input\":\"gs://bucket/in\"}"), *env = parse("{\"tempLocation\":\"gs://bucket/tmp\"}");
    launch_req *l = launch_new(LAUNCH_CLASSIC, "gs://bucket/t", "a--r1-1", "p", "r", params, env);
    json_decref(params);
    json_decref(env);
    json_t *j = launch_to_json(l), *want = parse("{\"kind\":\"classic\",\"template\":\"gs://bucket/t\",\"jobName\":"
                                                  "\"a--r1-1\",\"project\":\"p\",\"region\":\"r\",\"parameters\":"
                                                  "{\"input\":\"gs://bucket/in\"},\"environment\":{\"tempLocation\":"
                                                  "\"gs://bucket/tmp\"}}");
    assert_json_eq(j, want);
    json_decref(j);
    json_decref(want);
    launch_free(l);
    /* parameters and environment default to empty objects; required fields and a known kind are required */
    l = launch_new(LAUNCH_FLEX, "gs://bucket/t", "a", "p", "r", NULL, NULL);
    assert_int_equal(json_object_size(l->parameters), 0);
    assert_true(json_is_object(l->environment));
    launch_free(l);
    assert_null(launch_new(LAUNCH_FLEX, NULL, "a", "p", "r", NULL, NULL));
    assert_null(launch_new((launch_kind)7, "gs://bucket/t", "a", "p", "r", NULL, NULL));
    const char *bad[] = {"{}", "[]", "{\"kind\":\"batch\",\"template\":\"t\",\"jobName\":\"a\",\"project\":\"p\",\"region\":\"r\"}",
                         "{\"kind\":\"flex\",\"jobName\":\"a\",\"project\":\"p\",\"region\":\"r\"}",
                         "{\"method\":\"POST\",\"path\":\"/x\",\"body\":{\"jobName\":\"a\"}}", NULL};
    for (const char **b = bad; *b; b++) {
        json_t *x = parse(*b);
        assert_null(launch_from_json(x));
        assert_null(ja_launch_from_record(x));
        json_decref(x);
    }
}

static void test_render_validate_only(void **s)
{
    (void)s;
    launch_req *f = launch_new(LAUNCH_FLEX, "gs://bucket/t.json", "a--r1-1", "my project", "r", NULL, NULL);
    json_t *r = df_launch_render(f, DF_VALIDATE_ONLY);
    json_t *want = parse("{\"method\":\"POST\",\"path\":\"/v1b3/projects/my%20project/locations/r/flexTemplates:launch\","
                         "\"body\":{\"launchParameter\":{\"jobName\":\"a--r1-1\",\"containerSpecGcsPath\":"
                         "\"gs://bucket/t.json\",\"parameters\":{},\"environment\":{}},\"validateOnly\":true}}");
    assert_json_eq(r, want);
    json_decref(r);
    json_decref(want);
    launch_free(f);
    launch_req *c = launch_new(LAUNCH_CLASSIC, "gs://bucket/t", "a--r1-1", "p", "r", NULL, NULL);
    r = df_launch_render(c, DF_VALIDATE_ONLY);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "query"), "validateOnly")), "true");
    json_decref(r);
    launch_free(c);
    assert_null(df_launch_render(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_old_flex_intent),
        cmocka_unit_test(test_reads_old_classic_intent),
        cmocka_unit_test(test_stored_form),
        cmocka_unit_test(test_render_validate_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
