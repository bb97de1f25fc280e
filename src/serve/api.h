/* api: the HTTP routes of `sluice serve` — the run API (start, list, get, cancel, redrive), workflows and their
 * reload, /v1/reconcile, health, readiness and /metrics — and the router that also sends event deliveries to
 * ingress. Handlers validate input and answer 4xx themselves; whatever changes runs is queued for the engine loop.
 * Uses: http_server, serve_auth, ingress, engine_loop, reload, store_pool, wfset, views, metrics, lua_host.
 * Must not: call the engine (the engine loop does), or write to the store. */
#ifndef SLUICE_API_H
#define SLUICE_API_H
#include "engine_loop.h"
#include "http_server.h"
#include "ingress.h"
#include "lua_host.h"
#include "oidc.h"
#include "reload.h"
#include "serve_auth.h"
#include "store_pool.h"
#include "wfset.h"

typedef struct {
    store_pool *reads;      /* the HTTP threads' store handles */
    wfset_box *workflows;
    const serve_auth *auth;
    engine_loop *loop;
    ingress *ingress;
    reloader *reloader;     /* may be NULL: POST /v1/workflows:reload answers 503 */
    oidc *oidc;             /* for its fetch counters (may be NULL) */
} api_ctx;

/* The hs_handler: `ud` is an api_ctx (borrowed for the server's life). */
void api_route(hs_request *r, void *ud);
/* The hs_options.on_complete hook: request counts and latency by route. */
void api_on_complete(hs_request *r, int64_t latency_us, void *ud);
/* Declares every metric `sluice serve` exports (call once before serving). */
void api_declare_metrics(void);
/* The lh_observer of every workflow VM the server creates (server.c puts it in the lh_limits it hands to the
 * initial load, the reloader and the engine): each call into workflow Lua (parameter, hook and choice functions,
 * loading) by outcome, in sluice_lua_call_seconds. `ud` is unused. Thread-safe. */
void api_observe_lua(void *ud, lh_status st, double seconds);

#endif
