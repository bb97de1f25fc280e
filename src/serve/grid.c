/* grid: the runs x steps grid of a workflow (grid.h): one page of runs by workflow (the runs_workflow index), then
 * each run's steps (by run id), so its cost grows with the page, not with the workflow's history.
 * Uses: store, util (times), jansson. Must not: write to the store. */
#include "grid.h"

#include <string.h>

#include "util.h"

static json_t *grid_time(int64_t ms)
{
    if (ms == 0) return json_null();
    char buf[40];
    return json_string(util_rfc3339(ms, buf, sizeof buf));
}

/* Adds `name` to the row list unless it is there already. */
static void add_row(json_t *rows, json_t *seen, const char *name)
{
    if (json_object_get(seen, name) != NULL) return;
    json_object_set_new(seen, name, json_true());
    json_array_append_new(rows, json_string(name));
}

static json_t *grid_cell(const store_step *st)
{
    int64_t dur = st->started_at && st->finished_at && st->finished_at > st->started_at ? st->finished_at - st->started_at : 0;
    json_t *c = json_pack("{s:s,s:i,s:o,s:o,s:I}", "state", store_step_state_name(st->state), "attempts", st->attempt,
                          "started_at", grid_time(st->started_at), "finished_at", grid_time(st->finished_at),
                          "duration_ms", (json_int_t)dur);
    if (c != NULL && st->state == STORE_STEP_FAILED && st->error != NULL)
        json_object_set_new(c, "error", json_string(st->error));
    return c;
}

json_t *grid_view(store *s, const char *workflow, const json_t *order, int limit, const char *cursor, int *rc,
                  char **err)
{
    store_run_filter f = {.state = STORE_RUN_ANY, .workflow = workflow, .limit = limit, .cursor = cursor};
    store_run_list l = {0};
    *rc = store_run_list_page(s, &f, &l, err);
    if (*rc != STORE_OK) return NULL;
    json_t *rows = json_array(), *seen = json_object(), *runs = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(order, i, v) if (json_is_string(v)) add_row(rows, seen, json_string_value(v));
    for (i = 0; i < l.count; i++) {
        const store_run *run = &l.items[i];
        store_step_list steps = {0};
        json_t *cells = json_object();
        int failed = 0;
        if (store_step_list_run(s, run->id, &steps, NULL) == STORE_OK)
            for (size_t k = 0; k < steps.count; k++) {
                add_row(rows, seen, steps.items[k].name);
                json_object_set_new(cells, steps.items[k].name, grid_cell(&steps.items[k]));
                failed |= steps.items[k].state == STORE_STEP_FAILED;
            }
        store_step_list_free(&steps);
        int64_t end = run->finished_at ? run->finished_at : run->updated_at;
        json_t *rj = json_pack("{s:s,s:s,s:o,s:o,s:I,s:o}", "id", run->id, "state", store_run_state_name(run->state),
                               "created_at", grid_time(run->created_at), "finished_at", grid_time(run->finished_at),
                               "duration_ms", (json_int_t)(end > run->created_at ? end - run->created_at : 0), "cells",
                               cells);
        if (rj != NULL && failed && run->state == STORE_RUN_SUCCEEDED) json_object_set_new(rj, "recovered", json_true());
        json_array_append_new(runs, rj);
    }
    json_decref(seen);
    json_t *out = json_pack("{s:s,s:o,s:o,s:s?}", "workflow", workflow, "steps", rows, "runs", runs, "next_cursor",
                            l.next_cursor);
    store_run_list_free(&l);
    return out;
}
