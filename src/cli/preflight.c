/* preflight: validateOnly launches of every launch step of one workflow.
 * Uses: workflow, wf_context (the context, the imagined run), jobs_api, config, util. Must not: create jobs or
 * touch the store. */
#include "preflight.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jobs_api.h"
#include "mem.h"
#include "result.h"
#include "util.h"
#include "wf_context.h"
#include "workflow.h"

#define PREFLIGHT_RUN "preflight"

/* One launch step's check: its outcome once Dataflow answered (or its build error). */
typedef struct {
    const wf_step *step;
    char *job_name;
    int done;
    char *build_error; /* the request could not be built: nothing was sent */
    ja_result r;
} check;

static void on_answer(void *ud, const ja_result *r)
{
    check *c = ud;
    c->done = 1;
    c->r = (ja_result){.outcome = r->outcome, .http_status = r->http_status,
                       .message = r->message ? xstrdup(r->message) : NULL,
                       .violations = r->violations ? json_incref(r->violations) : NULL};
}

/* The context `step` receives in a run imagined up to it (wf_ctx_imagine_reaching): the steps it can be reached
 * from succeeded (their jobs carry placeholder ids such as "preflight-job-id-of-ingest"), a step whose on_failure
 * it is failed. Built by the engine's own function (wf_step_context), so a function sees the shape it gets at run
 * time. NULL when the launch name cannot be formed. */
static json_t *sample_context(const wf_workflow *wf, const wf_step *step, json_t *params, int64_t now,
                              const char *project)
{
    wf_ctx_steps done = {0};
    wf_ctx_imagine_reaching(wf, step, PREFLIGHT_RUN, PREFLIGHT_RUN, &done);
    wf_ctx_run run = {.id = PREFLIGHT_RUN, .params = params, .started_ms = now, .default_project = project};
    json_t *ctx = wf_step_context(wf, step, &run, 1, done.items, done.n);
    wf_ctx_steps_free(&done);
    return ctx;
}

static void print_check(const check *c)
{
    const char *name = c->step->name;
    if (c->build_error != NULL) {
        printf("error %s: %s\n", name, c->build_error);
    } else if (c->r.outcome == JA_OK) {
        printf("ok %s: %s (%s)\n", name, c->job_name, c->step->template);
    } else if (c->r.outcome == JA_REJECTED && json_array_size(c->r.violations) > 0) {
        printf("refused %s (HTTP %ld): %zu parameter violation%s\n", name, c->r.http_status,
               json_array_size(c->r.violations), json_array_size(c->r.violations) == 1 ? "" : "s");
        size_t i;
        json_t *v;
        json_array_foreach(c->r.violations, i, v)
            printf("  %s: %s\n", json_string_value(json_object_get(v, "parameter")),
                   json_string_value(json_object_get(v, "description")));
    } else if (c->r.outcome == JA_REJECTED) {
        printf("refused %s (HTTP %ld): %s\n", name, c->r.http_status, c->r.message ? c->r.message : "");
    } else {
        printf("failed %s: Dataflow could not be asked: %s\n", name, c->r.message ? c->r.message : "no answer");
    }
}

int preflight_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},         {"param", required_argument, NULL, 'p'},
        {"project", required_argument, NULL, 'P'}, {"dataflow-url", required_argument, NULL, 'u'},
        {"credentials", required_argument, NULL, 'c'}, {"token", required_argument, NULL, 't'},
        {"no-auth", no_argument, NULL, 'n'},      {0, 0, 0, 0}};
    sluice_config cfg;
    config_init(&cfg);
    json_t *params = json_object();
    const char *usage = NULL, *arg = "";
    int c, rc = EXIT_USAGE;
    while (usage == NULL && (c = getopt_long(argc, argv, "hp:P:u:c:t:n", opts, NULL)) != -1) {
        const char *eq = c == 'p' ? strchr(optarg, '=') : NULL;
        switch (c) {
        case 'h': fputs(PREFLIGHT_USAGE, stdout); json_decref(params); return EXIT_OK;
        case 'p':
            if (eq == NULL || eq == optarg) {
                usage = "--param takes k=v, not '%s'";
                arg = optarg;
            } else {
                char *k = xstrndup(optarg, (size_t)(eq - optarg));
                json_object_set_new(params, k, json_string(eq + 1));
                free(k);
            }
            break;
        case 'P': cfg.project = optarg; break;
        case 'u': cfg.dataflow_url = optarg; break;
        case 'c': cfg.credentials = optarg; break;
        case 't': cfg.token = optarg; break;
        case 'n': cfg.no_auth = 1; break;
        default: usage = "unknown option %s"; arg = argv[optind - 1]; break;
        }
    }
    if (usage == NULL && optind != argc - 1) usage = "give exactly one workflow file%s";
    if (usage != NULL) {
        fputs("sluice preflight: ", stderr);
        fprintf(stderr, usage, arg);
        fputs("\n(see 'sluice preflight --help')\n", stderr);
        json_decref(params);
        return EXIT_USAGE;
    }
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(argv[optind], NULL, &d);
    for (size_t i = 0; i < d.n; i++) fprintf(stderr, "%s\n", d.items[i]);
    wf_diags_free(&d);
    jobs_api *api = NULL;
    check *checks = wf ? xcalloc(wf->n_steps + 1, sizeof *checks) : NULL;
    size_t n = 0, ok = 0;
    char *err = NULL;
    if (wf == NULL) {
        fprintf(stderr, "sluice preflight: %s is not a valid workflow\n", argv[optind]);
        goto done;
    }
    rc = EXIT_RUNTIME;
    jobs_api_df_options ao = {.base_url = cfg.dataflow_url, .credentials = cfg.credentials, .static_token = cfg.token,
                              .no_auth = cfg.no_auth};
    if ((api = jobs_api_df_new(&ao, &err)) == NULL) {
        fprintf(stderr, "sluice preflight: credentials: %s\n", err ? err : "?");
        goto done;
    }
    /* the default project as `sluice run` resolves it, when some step needs one */
    const char *project = wf_names_every_project(wf) ? NULL : jobs_api_df_default_project(api, &cfg, 1);
    int64_t now = util_now_ms();
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *s = &wf->steps[i];
        if (s->kind == WF_STEP_HOOK) continue;
        check *k = &checks[n++];
        k->step = s;
        json_t *ctx = sample_context(wf, s, params, now, project);
        launch_req *l = NULL;
        if (ctx == NULL) {
            k->build_error = xstrdup("the launch name cannot be formed");
        } else if (wf_build_launch(wf, s, ctx, PREFLIGHT_RUN, project, &l, &k->build_error) != 0) {
            if (k->build_error == NULL) k->build_error = xstrdup("the request could not be built");
        } else {
            k->job_name = xstrdup(l->job_name);
            if (jobs_api_df_validate(api, l, on_answer, k) != 0) k->build_error = xstrdup("the request could not be queued");
        }
        launch_free(l);
        json_decref(ctx);
    }
    while (api->ops->poll(api, 200) > 0) {}
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        print_check(&checks[i]);
        ok += checks[i].build_error == NULL && checks[i].r.outcome == JA_OK;
        refused += checks[i].build_error == NULL && checks[i].r.outcome == JA_REJECTED;
    }
    printf("%zu launch step%s: %zu valid, %zu refused, %zu not checked\n", n, n == 1 ? "" : "s", ok, refused,
           n - ok - refused);
    rc = ok == n ? EXIT_OK : EXIT_RUNTIME;
done:
    for (size_t i = 0; i < n; i++) {
        free(checks[i].job_name);
        free(checks[i].build_error);
        ja_result_clear(&checks[i].r);
    }
    free(checks);
    if (api) api->ops->free(api);
    wf_free(wf);
    free(err);
    json_decref(params);
    return rc;
}
