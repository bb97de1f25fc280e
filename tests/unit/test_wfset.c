/* wfset: the job-name look-ups of a loaded set (wfset_step_for_job, wfset_job_known) on sets with and without
 * retired job names, and on a set without workflows; the /v1/workflows document, rendered on first use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wfset.h"

static const char ALPHA[] =
    "return {\n  name = \"alpha\", project = \"p\", region = \"europe-west1\", start = \"A\",\n"
    "  steps = { A = { job_name = \"alpha-a\", template = \"gs://bkt/a.json\" } },\n}\n";
static const char BETA[] =
    "return {\n  name = \"beta\", project = \"p\", region = \"europe-west1\", start = \"B\",\n"
    "  steps = { B = { job_name = \"beta-b\", template = \"gs://bkt/b.json\" } },\n}\n";

static wfset *load(const char *dir, const wfset *previous)
{
    const char *paths[] = {dir};
    wfset_options o = {.paths = paths, .n_paths = 1, .threads = 1, .previous = previous};
    wfset *s = wfset_load(&o);
    assert_non_null(s);
    return s;
}

/* Regression (found by bench/soak.sh with the ASan + UBSan build: `sluice serve` aborted on the first event
 * about a foreign job): a set loaded at start has no retired job names and no array for them (NULL), and
 * wfset_job_known passed that NULL to bsearch, which glibc declares nonnull — undefined behaviour, fatal under
 * UBSan. The same held for a set without workflows in wfset_step_for_job. Under `make asan` this test aborted. */
static void test_lookups_without_retired_or_jobs(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char path[512];
    snprintf(path, sizeof path, "%s/alpha.lua", dir);
    assert_int_equal(tu_write_file(path, ALPHA), 0);
    wfset *s = load(dir, NULL);
    assert_int_equal(wfset_count(s), 1);
    assert_int_equal(wfset_job_known(s, "someone-else--1"), 0);
    assert_int_equal(wfset_job_known(s, "alpha-a--r1-1"), 1);
    const wf_workflow *wf = NULL;
    assert_non_null(wfset_step_for_job(s, "alpha-a--r1-1", &wf));
    assert_string_equal(wf->name, "alpha");

    /* a reload that drops alpha for beta: alpha's jobs stay known as retired, foreign ones do not */
    assert_int_equal(remove(path), 0);
    snprintf(path, sizeof path, "%s/beta.lua", dir);
    assert_int_equal(tu_write_file(path, BETA), 0);
    wfset *s2 = load(dir, s);
    assert_int_equal(wfset_job_known(s2, "alpha-a--r1-1"), 1);
    assert_null(wfset_step_for_job(s2, "alpha-a--r1-1", NULL));
    assert_int_equal(wfset_job_known(s2, "beta-b--r2-1"), 1);
    assert_int_equal(wfset_job_known(s2, "someone-else--1"), 0);

    /* a set without any workflow (the directory emptied) */
    assert_int_equal(remove(path), 0);
    wfset *empty = load(dir, NULL);
    assert_int_equal(wfset_count(empty), 0);
    assert_null(wfset_step_for_job(empty, "beta-b--r2-1", NULL));
    assert_int_equal(wfset_job_known(empty, "beta-b--r2-1"), 0);

    wfset_unref(empty);
    wfset_unref(s2);
    wfset_unref(s);
    tu_rmtree(dir);
    free(dir);
}

static void *render(void *arg) { return (void *)wfset_json(arg); }

/* The document is rendered on its first request, not at load (start-up need not wait for it; this test does not
 * see when), and once: four threads asking at the same moment and a later caller all get the same text, not
 * copies of it. */
static void test_json_rendered_once_on_first_use(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char path[512];
    snprintf(path, sizeof path, "%s/alpha.lua", dir);
    assert_int_equal(tu_write_file(path, ALPHA), 0);
    snprintf(path, sizeof path, "%s/beta.lua", dir);
    assert_int_equal(tu_write_file(path, BETA), 0);
    wfset *s = load(dir, NULL);
    pthread_t th[4];
    void *got[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, render, s), 0);
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(th[i], &got[i]), 0);
    const char *text = wfset_json(s);
    assert_non_null(text);
    for (int i = 0; i < 4; i++) assert_ptr_equal(got[i], text);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    json_t *list = json_object_get(doc, "workflows");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "name")), "alpha");
    assert_int_equal(json_array_size(json_object_get(doc, "errors")), 0);
    json_decref(doc);
    wfset_unref(s);
    tu_rmtree(dir);
    free(dir);
}

/* Regression, issue 17 finding 3: globals leaked between workflow files loaded in one VM (the loader validates a
 * directory's files in one scratch VM). A script that ran `_G = nil` then found the host's globals table under
 * `_G` (its environment fell through to them) and overwrote `sluice`, `tostring` and `string` there for every file
 * loaded after it: one file made another's job launch in us-central1. Each file now has its own environment. */
static const char TAMPER[] =
    "_G = nil\n"
    "local host = _G\n"
    "if host ~= nil then\n"
    "  host.sluice = { merge = function() return { region = 'us-central1' } end }\n"
    "  host.tostring = function() return 'us-central1' end\n"
    "  host.string = { format = function() return 'us-central1' end }\n"
    "end\n"
    "return { name = 'alpha', project = 'p', region = 'europe-west1', start = 'A',\n"
    "  steps = { A = { job_name = 'alpha-a', template = 'gs://bkt/a.json' } } }\n";
static const char VICTIM[] =
    "local base = sluice.merge({ region = 'europe-west1' }, {})\n"
    "return { name = 'beta', project = 'p', region = string.format('%s', tostring(base.region)), start = 'B',\n"
    "  steps = { B = { job_name = 'beta-b', template = 'gs://bkt/b.json' } } }\n";

static void test_files_do_not_share_globals(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    char path[512];
    snprintf(path, sizeof path, "%s/a_tamper.lua", dir);
    assert_int_equal(tu_write_file(path, TAMPER), 0);
    snprintf(path, sizeof path, "%s/b_victim.lua", dir);
    assert_int_equal(tu_write_file(path, VICTIM), 0);
    wfset *s = load(dir, NULL); /* one thread: both files in one scratch VM, the tamperer first */
    assert_int_equal(wfset_count(s), 2);
    const wf_workflow *beta = wfset_find(s, "beta");
    assert_non_null(beta);
    assert_string_equal(beta->region, "europe-west1");
    wfset_unref(s);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups_without_retired_or_jobs),
        cmocka_unit_test(test_json_rendered_once_on_first_use),
        cmocka_unit_test(test_files_do_not_share_globals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
