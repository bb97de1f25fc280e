/* views: the JSON shapes of runs and steps that the API, the engine loop's answers and `sluice status --store`
 * show (documented in docs/api.md), and helpers that answer a request with JSON.
 * Uses: store, http_server, util, jansson. Must not: decide anything; it only presents stored rows. */
#ifndef SLUICE_VIEWS_H
#define SLUICE_VIEWS_H
#include <jansson.h>

#include "http_server.h"
#include "store.h"

/* Run: {id, workflow, version, state, params, origin, request_key, error, created_at, updated_at, finished_at}. */
json_t *view_run(const store_run *run);
json_t *view_step(const store_step *st);
/* {run..., steps: [...], recovered?: [{step, error}]} read with `s`; NULL when it cannot be read (*rc says why:
 * STORE_NOTFOUND or another store_rc). New reference. */
json_t *view_run_detail(store *s, const char *id, int *rc);

/* Answer now (hs_respond) or a deferred request (hs_complete) with j (borrowed) as compact JSON. */
void view_respond(hs_request *r, int status, json_t *j);
void view_complete(hs_request *r, int status, json_t *j);
void view_complete_error(hs_request *r, int status, const char *msg);

#endif
