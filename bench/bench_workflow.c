/* bench_workflow: how long loading + validating 100 realistic workflow files takes, and what one call of a
 * parameter function costs (wf_build_launch on a typical step, and a raw lh_call).
 * Targets: <= 50 ms for 100 files, <= 20 us per call. Run from the build directory of a Release or
 * RelWithDebInfo build: ./build/bench_workflow [repeats] [calls]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua_host.h"
#include "wf_context.h"
#include "workflow.h"

#define N_FILES 100

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A realistic workflow: a start hook, ingest with a parameter function, a fan-out to three clean steps
 * (one with retry), a classic join with the full-form function, a choice between two reports, a failure
 * notifier and an end hook: 10 steps, 5 functions. `i` makes every name distinct. */
static void write_workflow(const char *dir, int i)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/wf%03d.lua", dir, i);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    static const char *const tmpl =
            "-- generated workflow @\n"
            "local function common(p, ctx)\n"
            "  p.run_date = sluice.date('%Y-%m-@', ctx.run.started_at)\n"
            "  p.setup_file = '/dataflow/template/setup.py'\n"
            "  return p\n"
            "end\n"
            "function ingest_params(ctx)\n"
            "  return common({ input = 'gs://bucket-@/landing/' .. (ctx.run.params.date or 'today') .. '/*',\n"
            "                  output = 'gs://bucket-@/staged/' .. ctx.run.id, shards = 16 }, ctx)\n"
            "end\n"
            "return {\n"
            "  name = 'pipeline-@',\n"
            "  project = 'my-project',\n"
            "  region = 'europe-west4',\n"
            "  environment = { tempLocation = 'gs://bucket-@/tmp', maxWorkers = 20, additionalUserLabels = { team = 'data' } },\n"
            "  labels = { cost_center = 'analytics', pipeline = 'p@' },\n"
            "  start = 'Start',\n"
            "  steps = {\n"
            "    Start = { job_name = 'p@-start', next = 'Ingest' },\n"
            "    Ingest = { job_name = 'p@-ingest', template = 'gs://bucket-@/templates/ingest.json',\n"
            "               [\"function\"] = 'ingest_params', timeout = '2h', next = { 'CleanA', 'CleanB', 'CleanC' } },\n"
            "    CleanA = { job_name = 'p@-clean-a', template = 'gs://bucket-@/templates/clean.json',\n"
            "               parameters = { table = 'orders' }, retry = { attempts = 3, backoff = '1m' }, next = 'Join' },\n"
            "    CleanB = { job_name = 'p@-clean-b', template = 'gs://bucket-@/templates/clean.json',\n"
            "               parameters = { table = 'customers' }, retry = 2, next = 'Join' },\n"
            "    CleanC = { job_name = 'p@-clean-c', template = 'gs://bucket-@/templates/clean.json',\n"
            "               parameters = { table = 'items' }, next = 'Join' },\n"
            "    Join = { job_name = 'p@-join', classic_template = 'gs://bucket-@/templates/join',\n"
            "      [\"function\"] = function(ctx)\n"
            "        return { parameters = { a = ctx.results.CleanA and ctx.results.CleanA.job_name or '' },\n"
            "                 environment = { machineType = 'n2-standard-4' } }\n"
            "      end,\n"
            "      next = function(ctx) if ctx.run.params.full == 'true' then return 'Full' end return 'Quick' end,\n"
            "      choices = { 'Full', 'Quick' } },\n"
            "    Full = { job_name = 'p@-report-full', template = 'gs://bucket-@/templates/report.json',\n"
            "             parameters = { mode = 'full' }, on_failure = 'Notify', next = 'End' },\n"
            "    Quick = { job_name = 'p@-report-quick', template = 'gs://bucket-@/templates/report.json',\n"
            "              parameters = { mode = 'quick' }, on_failure = 'Notify', next = 'End' },\n"
            "    Notify = { job_name = 'p@-notify', template = 'gs://bucket-@/templates/notify.json',\n"
            "      [\"function\"] = function(ctx) return { message = 'failed: ' .. (ctx.job and ctx.job.name or '?') } end },\n"
            "    End = { job_name = 'p@-end', [\"function\"] = function(ctx) return { done = ctx.run.id } end },\n"
            "  },\n"
            "}\n";
    /* every '@' becomes the file number */
    for (const char *p = tmpl; *p; p++) {
        if (*p == '@')
            fprintf(f, "%d", i);
        else
            fputc(*p, f);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 20;
    int calls = argc > 2 ? atoi(argv[2]) : 20000;
    if (repeats < 1 || calls < 1) {
        fprintf(stderr, "usage: bench_workflow [repeats] [calls]\n");
        return 2;
    }
    char dir[] = "/tmp/sluice-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char paths[N_FILES][4096];
    for (int i = 0; i < N_FILES; i++) {
        write_workflow(dir, i);
        snprintf(paths[i], sizeof paths[i], "%s/wf%03d.lua", dir, i);
    }

    /* 1. load + validate all files, then the cross-file check */
    double *load_ms = calloc((size_t)repeats, sizeof *load_ms);
    wf_workflow *wfs[N_FILES];
    for (int r = 0; r < repeats; r++) {
        wf_diags d = {0};
        double t0 = now_us();
        for (int i = 0; i < N_FILES; i++) wfs[i] = wf_load_file(paths[i], NULL, &d);
        int nbad = wf_validate_set(wfs, N_FILES, &d);
        load_ms[r] = (now_us() - t0) / 1000.0;
        if (d.n > 0 || nbad > 0) {
            for (size_t k = 0; k < d.n && k < 5; k++) fprintf(stderr, "%s\n", d.items[k]);
            return 1;
        }
        wf_diags_free(&d);
        if (r < repeats - 1)
            for (int i = 0; i < N_FILES; i++) wf_free(wfs[i]);
    }
    double load_min = load_ms[0];
    for (int r = 1; r < repeats; r++)
        if (load_ms[r] < load_min) load_min = load_ms[r];
    double load_med = median(load_ms, (size_t)repeats);

    /* 2. one parameter-function call: wf_build_launch on Ingest (function + merge + labels), and raw lh_call */
    wf_workflow *wf = wfs[0];
    const wf_step *st = &wf->steps[wf_step_index(wf, "Ingest")];
    json_t *params = json_pack("{s:s}", "date", "2024-05-01");
    json_t *ctx = wf_step_context(wf, st, &(wf_ctx_run){.id = "r7f3k2", .params = params, .started_ms = 1714564800000}, 1,
                                  NULL, 0);
    double *t_build = calloc((size_t)calls, sizeof *t_build), *t_raw = calloc((size_t)calls, sizeof *t_raw);
    for (int c = 0; c < calls; c++) {
        launch_req *l = NULL;
        char *err = NULL;
        double t0 = now_us();
        int rc = wf_build_launch(wf, st, ctx, "r7f3k2", NULL, &l, &err);
        t_build[c] = now_us() - t0;
        if (rc != 0) {
            fprintf(stderr, "wf_build_launch: %s\n", err);
            return 1;
        }
        launch_free(l);
    }
    for (int c = 0; c < calls; c++) {
        json_t *out = NULL;
        char *err = NULL;
        double t0 = now_us();
        lh_status s = lh_call(wf_vm(wf, NULL), st->fn_ref, ctx, &out, &err);
        t_raw[c] = now_us() - t0;
        if (s != LH_OK) {
            fprintf(stderr, "lh_call: %s\n", err);
            return 1;
        }
        json_decref(out);
    }
    double build_med = median(t_build, (size_t)calls), raw_med = median(t_raw, (size_t)calls);

    printf("load+validate %d files (%zu steps each): median %.2f ms, min %.2f ms over %d repeats (target <= 50 ms)\n",
           N_FILES, wf->n_steps, load_med, load_min, repeats);
    printf("wf_build_launch (Ingest, function + merge): median %.2f us, p90 %.2f us over %d calls (target <= 20 us)\n",
           build_med, t_build[(size_t)calls * 9 / 10], calls);
    printf("lh_call (raw parameter function):          median %.2f us, p90 %.2f us over %d calls (target <= 20 us)\n",
           raw_med, t_raw[(size_t)calls * 9 / 10], calls);

    json_decref(ctx);
    json_decref(params);
    free(t_build);
    free(t_raw);
    free(load_ms);
    for (int i = 0; i < N_FILES; i++) {
        wf_free(wfs[i]);
        unlink(paths[i]);
    }
    rmdir(dir);
    return load_med <= 50.0 && build_med <= 20.0 && raw_med <= 20.0 ? 0 : 3;
}
