/* grid: the runs x steps grid of a workflow (GET /v1/workflows/{name}/grid, the UI's workflow page): its last runs,
 * newest first, each with one cell per step (state, attempts, times), paged like the runs list.
 * Uses: store (runs by workflow, each run's steps), jansson. Must not: decide anything; it only presents rows. */
#ifndef SLUICE_GRID_H
#define SLUICE_GRID_H
#include <jansson.h>

#include "store.h"

/* {workflow, steps: [names, rows in order], runs: [{id, state, created_at, finished_at, duration_ms, recovered?,
 *  cells: {step: {state, attempts, started_at, finished_at, duration_ms, error?}}}], next_cursor}.
 * `order` (borrowed; may be NULL): step names to list first (the workflow's own order); names met only in runs
 * follow in the order they are met. `limit` 1..100, `cursor` as the runs list's (NULL: from the newest).
 * NULL on failure: *rc is the store_rc (STORE_INVALID for a bad cursor) and *err (if err) a malloc'd message. */
json_t *grid_view(store *s, const char *workflow, const json_t *order, int limit, const char *cursor, int *rc,
                  char **err);

#endif
