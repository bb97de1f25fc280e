/* fuzz_workflow: the workflow loader. The input is a Lua source through wf_load_source under tight budgets
 * (8 MiB, 2 million instructions, 0.5 s per call: a script that loops or allocates without end is stopped
 * quickly, as lua_host promises), i.e. the sandboxed load, the declaration's conversion to plain data and the
 * model's validation. A workflow that loads is then used as `sluice plan` and the engine use it: validated as a
 * set, rendered as graphs, and every step's function called once with the context of a run (launch requests
 * built and rendered, hooks run, choices asked). */
#include "dataflow.h"
#include "fuzz.h"
#include "launch.h"
#include "wf_context.h"
#include "wf_graph.h"
#include "workflow.h"

static void call_steps(const wf_workflow *wf)
{
    json_t *params = json_pack("{s:s}", "date", "2024-05-01");
    wf_ctx_steps done = {0};
    wf_ctx_run run = {.id = "fuzz1", .params = params, .started_ms = 1607050850000LL};
    for (size_t i = 0; i < wf->n_steps; i++) {
        const wf_step *st = &wf->steps[i];
        json_t *ctx = wf_step_context(wf, st, &run, 1, done.items, done.n);
        if (ctx == NULL) continue;
        char *err = NULL;
        json_t *out = NULL;
        if (st->kind == WF_STEP_HOOK) {
            if (wf_run_hook(wf, st, ctx, &out, &err) == 0) json_decref(out);
        } else {
            launch_req *l = NULL;
            if (wf_build_launch(wf, st, ctx, "fuzz1", "fuzz-project", &l, &err) == 0) {
                json_decref(df_launch_render(l, 0));
                launch_free(l);
            }
        }
        free(err);
        err = NULL;
        json_t *names = NULL;
        if (wf_successors(wf, st, ctx, &names, &err) == 0) json_decref(names);
        free(err);
        wf_ctx_imagine_succeeded(st, "fuzz1", "fuzz", &done);
        json_decref(ctx);
    }
    wf_ctx_steps_free(&done);
    json_decref(params);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) return 0;
    lh_limits limits = {.mem_limit = 8u << 20, .instr_limit = 2000000, .time_limit = 0.5};
    wf_diags diags = {0};
    wf_workflow *wf = wf_load_source("fuzz.lua", (const char *)data, size, &limits, &diags);
    if (wf != NULL) {
        wf_workflow *set[1] = {wf};
        (void)wf_validate_set(set, 1, &diags);
        (void)wf_names_every_project(wf);
        free(wf_graph_mermaid(wf));
        free(wf_graph_dot(wf));
        call_steps(wf);
        wf_free(wf);
    }
    wf_diags_free(&diags);
    return 0;
}
