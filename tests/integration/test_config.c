/* config: the project precedence (issue 8 item 10: a workflow naming no project got it from --project or
 * SLUICE_PROJECT only; the credentials were never consulted) and the credentials' project as the Dataflow
 * jobs_api reads it: a key file's project_id, an authorized_user file's quota_project_id, the metadata server's
 * project/project-id (against the emulator), nothing for a static token, and a bounded wait when the metadata
 * server does not answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "emu_harness.h"
#include "jobs_api.h"
#include "log.h"
#include "testutil.h"
#include "util.h"

static emu_proc emu;

static int setup(void **state)
{
    (void)state;
    log_set_level(LOG_NONE);
    static const char *const extra[] = {"--project", "emu-key-project", NULL};
    return emu_start(&emu, extra);
}

static int teardown(void **state)
{
    (void)state;
    emu_stop(&emu);
    return 0;
}

/* config_project over every source: each one wins over all below it, and "" counts as unset. */
static void test_precedence(void **s)
{
    (void)s;
    config_project_source from;
    config_projects all = {"step-p", "wf-p", "flag-p", "env-p", "cred-p"};
    static const char *const want[] = {"step-p", "wf-p", "flag-p", "env-p", "cred-p"};
    static const config_project_source want_from[] = {CONFIG_PROJECT_STEP, CONFIG_PROJECT_WORKFLOW, CONFIG_PROJECT_FLAG,
                                                      CONFIG_PROJECT_ENV, CONFIG_PROJECT_CREDENTIALS};
    const char **field[] = {&all.step, &all.workflow, &all.flag, &all.env, &all.credentials};
    for (int i = 0; i < 5; i++) {
        assert_string_equal(config_project(&all, &from), want[i]);
        assert_int_equal(from, want_from[i]);
        *field[i] = i % 2 ? NULL : ""; /* unset it, both ways, and the next one wins */
    }
    assert_null(config_project(&all, &from));
    assert_int_equal(from, CONFIG_PROJECT_NONE);
    assert_null(config_project(&(config_projects){0}, NULL));
    /* a lower source alone, and a higher one skipping the middle */
    assert_string_equal(config_project(&(config_projects){.credentials = "c"}, &from), "c");
    assert_int_equal(from, CONFIG_PROJECT_CREDENTIALS);
    assert_string_equal(config_project(&(config_projects){.workflow = "w", .credentials = "c"}, &from), "w");
    assert_int_equal(from, CONFIG_PROJECT_WORKFLOW);
    assert_string_equal(config_project_source_name(CONFIG_PROJECT_ENV), "SLUICE_PROJECT");
    assert_string_equal(config_project_source_name(CONFIG_PROJECT_FLAG), "--project");
}

/* SLUICE_PROJECT lands below --project; GOOGLE_CLOUD_PROJECT is not a source (docs/workflows.md). */
static void test_config_default_project(void **s)
{
    (void)s;
    setenv("SLUICE_PROJECT", "env-p", 1);
    setenv("GOOGLE_CLOUD_PROJECT", "gcp-env-p", 1);
    sluice_config c;
    config_init(&c);
    assert_null(c.project);
    assert_string_equal(c.project_env, "env-p");
    assert_string_equal(config_default_project(&c, "cred-p", "key"), "env-p");
    c.project = "flag-p";
    assert_string_equal(config_default_project(&c, "cred-p", "key"), "flag-p");
    unsetenv("SLUICE_PROJECT");
    config_init(&c);
    assert_string_equal(config_default_project(&c, "cred-p", "key"), "cred-p");
    assert_null(config_default_project(&c, NULL, NULL));
    unsetenv("GOOGLE_CLOUD_PROJECT");
}

static jobs_api *api_for(const jobs_api_df_options *o)
{
    char *err = NULL;
    jobs_api *api = jobs_api_df_new(o, &err);
    if (api == NULL) fprintf(stderr, "jobs_api_df_new: %s\n", err ? err : "?");
    free(err);
    assert_non_null(api);
    return api;
}

/* A key file names its project_id; an authorized_user file its quota_project_id (or nothing); a static token
 * nothing. None of them needs the network. */
static void test_credentials_files(void **s)
{
    (void)s;
    const char *from = NULL;
    jobs_api *api = api_for(&(jobs_api_df_options){.base_url = emu.base, .credentials = emu.sa_path});
    assert_string_equal(jobs_api_df_credentials_project(api, 1000, &from), "emu-key-project");
    assert_string_equal(from, "the service-account key's project_id");
    api->ops->free(api);

    api = api_for(&(jobs_api_df_options){.base_url = emu.base, .credentials = emu.au_path});
    assert_null(jobs_api_df_credentials_project(api, 1000, &from)); /* the emulator's file has no quota project */
    api->ops->free(api);
    char *text = tu_read_file(emu.au_path, NULL);
    json_t *au = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(au, "quota_project_id", json_string("quota-p"));
    char path[800];
    snprintf(path, sizeof path, "%s/au-quota.json", emu.dir);
    assert_int_equal(json_dump_file(au, path, 0), 0);
    json_decref(au);
    api = api_for(&(jobs_api_df_options){.base_url = emu.base, .credentials = path});
    assert_string_equal(jobs_api_df_credentials_project(api, 1000, &from), "quota-p");
    assert_string_equal(from, "the gcloud credentials' quota_project_id");
    api->ops->free(api);

    api = api_for(&(jobs_api_df_options){.base_url = emu.base, .static_token = "t"});
    assert_null(jobs_api_df_credentials_project(api, 1000, NULL));
    api->ops->free(api);
}

/* ADC with no key file and no gcloud file is the metadata server: its project/project-id is fetched once. A
 * metadata server that never answers costs the timeout, not more. */
static void test_credentials_metadata(void **s)
{
    (void)s;
    char *home = tu_tempdir();
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    setenv("CLOUDSDK_CONFIG", home, 1);
    setenv("GCE_METADATA_HOST", emu.base + strlen("http://"), 1);
    const char *from = NULL;
    jobs_api *api = api_for(&(jobs_api_df_options){.base_url = emu.base});
    assert_string_equal(jobs_api_df_credentials_project(api, 5000, &from), "emu-key-project");
    assert_string_equal(from, "the metadata server's project/project-id");
    api->ops->free(api);

    /* a metadata server that hangs: the emulator delays every metadata answer by 3 s */
    assert_int_equal(emu_config(&emu, "{\"faults\":{\"metadata\":{\"latency_ms\":3000}}}"), 0);
    api = api_for(&(jobs_api_df_options){.base_url = emu.base});
    int64_t t0 = util_mono_ms();
    assert_null(jobs_api_df_credentials_project(api, 300, NULL));
    int64_t took = util_mono_ms() - t0;
    assert_true(took >= 290 && took < 2000);
    api->ops->free(api); /* frees the abandoned wait through its callback */
    assert_int_equal(emu_reset(&emu), 0);
    unsetenv("CLOUDSDK_CONFIG");
    unsetenv("GCE_METADATA_HOST");
    tu_rmtree(home);
    free(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_config_default_project),
        cmocka_unit_test(test_credentials_files),
        cmocka_unit_test(test_credentials_metadata),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
