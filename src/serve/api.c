/* api: routes, handlers and health of `sluice serve`; event deliveries are handed to ingress.
 * Uses: http_server, serve_auth, ingress, engine_loop, reload, store_pool, wfset, views, metrics.
 * Must not: call the engine, or write to the store. */
#include "api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backfill.h"
#include "grid.h"
#include "lua_host.h"
#include "metrics.h"
#include "reply.h"
#include "schedule.h"
#include "ui.h"
#include "views.h"

static int parse_body_object(hs_request *r, json_t **out)
{
    if (!serve_content_type_is(r, "application/json")) {
        hs_respond_error(r, 415, "content type must be application/json");
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb(hs_body(r), hs_body_len(r), JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        char msg[300];
        snprintf(msg, sizeof msg, "body must be a JSON object: %s", j ? "not an object" : je.text);
        json_decref(j);
        hs_respond_error(r, 400, msg);
        return -1;
    }
    *out = j;
    return 0;
}

/* 0 when every key of `body` is in `allowed`; else answers 400 naming the first other one. */
static int only_fields(hs_request *r, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++) ok = strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char msg[200];
            snprintf(msg, sizeof msg, "unknown field '%.100s'", key);
            hs_respond_error(r, 400, msg);
            return -1;
        }
    }
    return 0;
}

static void api_start_run(const api_ctx *a, hs_request *r)
{
    json_t *body = NULL;
    if (parse_body_object(r, &body) != 0) return;
    if (only_fields(r, body, (const char *const[]){"workflow", "params", "request_key", NULL}) != 0) {
        json_decref(body);
        return;
    }
    json_t *wf = json_object_get(body, "workflow"), *params = json_object_get(body, "params"),
           *rk = json_object_get(body, "request_key");
    const char *msg = NULL;
    if (!json_is_string(wf) || json_string_length(wf) == 0)
        msg = "workflow must be a non-empty string";
    else if (params != NULL && !json_is_object(params) && !json_is_null(params))
        msg = "params must be an object";
    else if (rk != NULL && !json_is_null(rk) &&
             (!json_is_string(rk) || json_string_length(rk) == 0 || json_string_length(rk) > 200))
        msg = "request_key must be a string of 1..200 characters";
    if (msg) {
        hs_respond_error(r, 400, msg);
        json_decref(body);
        return;
    }
    wfset *set = wfset_box_get(a->workflows);
    int known = wfset_find(set, json_string_value(wf)) != NULL;
    wfset_unref(set);
    if (!known) {
        char m[200];
        snprintf(m, sizeof m, "no workflow named '%.100s'", json_string_value(wf));
        hs_respond_error(r, 404, m);
        json_decref(body);
        return;
    }
    engine_loop_start_run(a->loop, r, json_string_value(wf), json_is_object(params) ? params : NULL,
                          json_is_string(rk) ? json_string_value(rk) : NULL);
    json_decref(body);
}

static int valid_run_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9'))) return 0;
    return 1;
}

static store *reads_or_503(const api_ctx *a, hs_request *r)
{
    store *s = store_pool_get(a->reads);
    if (s == NULL) hs_respond_error(r, 503, "store unavailable");
    return s;
}

static void api_list_runs(const api_ctx *a, hs_request *r)
{
    store *s = reads_or_503(a, r);
    if (s == NULL) return;
    store_run_query q = {.base = {.state = STORE_RUN_ANY}};
    store_run_filter f = {.state = STORE_RUN_ANY};
    const char *state = hs_query(r, "state"), *wf = hs_query(r, "workflow"), *limit = hs_query(r, "limit"),
               *cursor = hs_query(r, "cursor"), *failed = hs_query(r, "failed_step"), *search = hs_query(r, "q");
    if (failed && *failed) q.failed_step = strcmp(failed, "true") == 0 || strcmp(failed, "1") == 0;
    /* recovered=true: succeeded runs with a failed step (on_failure handled it) */
    const char *recovered = hs_query(r, "recovered");
    int want_recovered = recovered && (strcmp(recovered, "true") == 0 || strcmp(recovered, "1") == 0);
    if (want_recovered) q.failed_step = 1;
    if (search && *search) q.search = search;
    if (state && *state) {
        store_run_state st;
        if (store_run_state_parse(state, &st) != STORE_OK) {
            hs_respond_error(r, 400, "unknown state");
            return;
        }
        f.state = (int)st;
    }
    if (want_recovered) {
        if (f.state != STORE_RUN_ANY && f.state != STORE_RUN_SUCCEEDED) {
            hs_respond_error(r, 400, "recovered runs are succeeded runs");
            return;
        }
        f.state = STORE_RUN_SUCCEEDED;
    }
    if (wf && *wf) f.workflow = wf;
    if (limit && *limit) {
        char *end;
        long l = strtol(limit, &end, 10);
        if (*end || l < 1 || l > 1000) {
            hs_respond_error(r, 400, "limit must be 1..1000");
            return;
        }
        f.limit = (int)l;
    }
    if (cursor && *cursor) f.cursor = cursor;
    q.base = f;
    store_run_list l = {0};
    char *err = NULL;
    int rc = store_run_find_page(s, &q, &l, &err);
    if (rc != STORE_OK) {
        hs_respond_error(r, rc == STORE_INVALID ? 400 : 503, err ? err : "store error");
        free(err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < l.count; i++) json_array_append_new(arr, view_run_summary(s, &l.items[i]));
    json_t *out = json_pack("{s:o,s:s?}", "runs", arr, "next_cursor", l.next_cursor);
    reply_json(r, 200, out);
    json_decref(out);
    store_run_list_free(&l);
}

static void api_get_run(const api_ctx *a, hs_request *r, const char *id)
{
    store *s = reads_or_503(a, r);
    if (s == NULL) return;
    int rc;
    json_t *j = view_run_detail(s, id, &rc);
    if (j == NULL) {
        hs_respond_error(r, rc == STORE_NOTFOUND ? 404 : 503, rc == STORE_NOTFOUND ? "no such run" : "store error");
        return;
    }
    json_t *out = json_pack("{s:o}", "run", j);
    reply_json(r, 200, out);
    json_decref(out);
}

/* 0 when the run exists; else answers 404 or 503. */
static int run_exists(const api_ctx *a, hs_request *r, const char *id)
{
    store *s = reads_or_503(a, r);
    if (s == NULL) return -1;
    store_run run = {0};
    int rc = store_run_get(s, id, &run, NULL);
    store_run_free(&run);
    if (rc == STORE_OK) return 0;
    hs_respond_error(r, rc == STORE_NOTFOUND ? 404 : 503, rc == STORE_NOTFOUND ? "no such run" : "store error");
    return -1;
}

static void api_redrive(const api_ctx *a, hs_request *r, const char *id)
{
    json_t *body = NULL;
    if (hs_body_len(r) == 0) {
        body = json_object();
    } else if (parse_body_object(r, &body) != 0) {
        return;
    }
    json_t *params = json_object_get(body, "params"), *latest = json_object_get(body, "latest");
    if (only_fields(r, body, (const char *const[]){"params", "latest", NULL}) != 0) {
        json_decref(body);
        return;
    }
    if ((params && !json_is_object(params)) || (latest && !json_is_boolean(latest))) {
        hs_respond_error(r, 400, "params must be an object and latest a boolean");
        json_decref(body);
        return;
    }
    if (run_exists(a, r, id) == 0) engine_loop_redrive(a->loop, r, id, params, json_is_true(latest));
    json_decref(body);
}

static void api_reconcile(const api_ctx *a, hs_request *r)
{
    const char *b = hs_query(r, "budget_ms");
    long budget = b ? strtol(b, NULL, 10) : 5000;
    if (budget < 1 || budget > 600000) {
        hs_respond_error(r, 400, "budget_ms must be 1..600000");
        return;
    }
    engine_loop_reconcile(a->loop, r, (int)budget);
}

/* {"workflows": [...current set...], "errors": [...the latest load's problems...], "reload": outcome} */
static void api_workflows(const api_ctx *a, hs_request *r)
{
    wfset *set = wfset_box_get(a->workflows);
    json_t *doc = json_loads(wfset_json(set), 0, NULL);
    wfset_unref(set);
    if (doc == NULL) doc = json_object();
    if (a->reloader) {
        char outcome[16];
        json_object_set_new(doc, "errors", reloader_errors(a->reloader, outcome, sizeof outcome));
        json_object_set_new(doc, "reload", json_string(outcome));
    }
    reply_json(r, 200, doc);
    json_decref(doc);
}

/* GET /v1/workflows/{name}: {"workflow": {... as listed, with its graph, params and source}} */
static void api_workflow(const api_ctx *a, hs_request *r, const char *name)
{
    wfset *set = wfset_box_get(a->workflows);
    const wf_workflow *wf = wfset_find(set, name);
    json_t *j = wf ? wfset_workflow_json(wf, 1) : NULL;
    wfset_unref(set);
    if (j == NULL) {
        hs_respond_error(r, 404, "no such workflow");
        return;
    }
    json_t *out = json_pack("{s:o}", "workflow", j);
    reply_json(r, 200, out);
    json_decref(out);
}

/* GET /v1/workflows/{name}/grid?limit=&cursor=: the runs x steps grid (grid.c), rows in the workflow's step order. */
static void api_grid(const api_ctx *a, hs_request *r, const char *name)
{
    const char *limit = hs_query(r, "limit"), *cursor = hs_query(r, "cursor");
    long n = 25;
    if (limit && *limit) {
        char *end;
        n = strtol(limit, &end, 10);
        if (*end || n < 1 || n > 100) {
            hs_respond_error(r, 400, "limit must be 1..100");
            return;
        }
    }
    store *s = reads_or_503(a, r);
    if (s == NULL) return;
    wfset *set = wfset_box_get(a->workflows);
    const wf_workflow *wf = wfset_find(set, name);
    json_t *desc = wf ? wfset_workflow_json(wf, 0) : NULL;
    wfset_unref(set);
    /* rows in the order the graph reaches the steps from the start (breadth first), then any others */
    json_t *order = json_array(), *seen = json_object(), *st;
    json_t *edges = json_object_get(json_object_get(desc, "graph"), "edges");
    const char *start = json_string_value(json_object_get(desc, "start"));
    if (start != NULL) {
        json_array_append_new(order, json_string(start));
        json_object_set_new(seen, start, json_true());
    }
    size_t i, k;
    for (i = 0; i < json_array_size(order); i++) {
        const char *from = json_string_value(json_array_get(order, i));
        json_array_foreach(edges, k, st) {
            const char *to = json_string_value(json_object_get(st, "to"));
            const char *f = json_string_value(json_object_get(st, "from"));
            if (to == NULL || f == NULL || strcmp(f, from) != 0 || json_object_get(seen, to) != NULL) continue;
            json_object_set_new(seen, to, json_true());
            json_array_append_new(order, json_string(to));
        }
    }
    json_array_foreach(json_object_get(desc, "steps"), i, st) json_array_append(order, json_object_get(st, "name"));
    json_decref(seen);
    json_decref(desc);
    int rc;
    char *err = NULL;
    json_t *out = grid_view(s, name, order, (int)n, cursor && *cursor ? cursor : NULL, &rc, &err);
    json_decref(order);
    if (out == NULL) {
        hs_respond_error(r, rc == STORE_INVALID ? 400 : 503, err ? err : "store error");
        free(err);
        return;
    }
    reply_json(r, 200, out);
    json_decref(out);
}

static void handle_readyz(const api_ctx *a, hs_request *r)
{
    store *s = store_pool_get(a->reads);
    int store_ok = s != NULL;
    char wedged[256] = "";
    int engine_ok = engine_loop_alive(a->loop) && !engine_loop_wedged(a->loop, wedged, sizeof wedged);
    int writer_ok = ingress_alive(a->ingress);
    int ok = store_ok && engine_ok && writer_ok;
    wfset *set = wfset_box_get(a->workflows);
    json_t *errors = a->reloader ? reloader_errors(a->reloader, NULL, 0) : json_incref(wfset_errors(set));
    /* A workflow file with errors is reported, not fatal: the others keep serving. */
    json_t *out = json_pack("{s:b,s:b,s:b,s:s,s:b,s:i,s:o}", "ready", ok, "store", store_ok, "engine", engine_ok,
                            "engine_role", engine_loop_leader(a->loop) ? "leader" : "follower", "writer", writer_ok,
                            "workflows", (int)wfset_count(set), "workflow_errors", errors);
    if (wedged[0] != '\0') json_object_set_new(out, "engine_problem", json_string(wedged));
    wfset_unref(set);
    reply_json(r, ok ? 200 : 503, out);
    json_decref(out);
}

static void handle_metrics(const api_ctx *a, hs_request *r)
{
    store *s = store_pool_get(a->reads);
    int64_t counts[STORE_RUN_STATE_COUNT] = {0};
    if (s && store_run_count_by_state(s, counts, NULL) == STORE_OK)
        for (int i = 0; i < STORE_RUN_STATE_COUNT; i++) {
            char labels[64];
            snprintf(labels, sizeof labels, "state=\"%s\"", store_run_state_name((store_run_state)i));
            metrics_set("sluice_runs", labels, (double)counts[i]);
        }
    metrics_set("sluice_http_inflight_requests", "", (double)hs_inflight(hs_request_server(r)));
    if (a->oidc) {
        int64_t ok, failed;
        oidc_fetch_counts(a->oidc, &ok, &failed);
        metrics_set("sluice_jwks_fetches_total", "outcome=\"ok\"", (double)ok);
        metrics_set("sluice_jwks_fetches_total", "outcome=\"failed\"", (double)failed);
    }
    size_t len = 0;
    char *text = metrics_render(&len);
    hs_respond(r, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
}

/* The route a path belongs to, for metrics labels (bounded cardinality). */
static const char *route_of(const char *path)
{
    if (strcmp(path, "/v1/events/pubsub") == 0) return "events_pubsub";
    if (strcmp(path, "/v1/events/eventarc") == 0 || strcmp(path, "/") == 0) return "events_eventarc";
    if (strcmp(path, "/v1/runs") == 0) return "runs";
    if (strncmp(path, "/v1/runs/", 9) == 0)
        return strstr(path, ":cancel") ? "run_cancel" : strstr(path, ":redrive") ? "run_redrive" : "run";
    if (strcmp(path, "/v1/workflows") == 0) return "workflows";
    if (strcmp(path, "/v1/workflows:reload") == 0) return "workflows_reload";
    if (strncmp(path, "/v1/workflows/", 14) == 0) return strstr(path, "/grid") ? "workflow_grid" : "workflow";
    if (strncmp(path, "/ui", 3) == 0) return "ui";
    if (strcmp(path, "/v1/reconcile") == 0) return "reconcile";
    if (strcmp(path, "/v1/schedules:tick") == 0) return "schedules_tick";
    if (strncmp(path, "/v1/backfills", 13) == 0) return "backfills";
    if (strcmp(path, "/healthz") == 0) return "healthz";
    if (strcmp(path, "/readyz") == 0) return "readyz";
    if (strcmp(path, "/metrics") == 0) return "metrics";
    return "other";
}

void api_on_complete(hs_request *r, int64_t latency_us, void *ud)
{
    (void)ud;
    const char *route = route_of(hs_path(r));
    const char *m = hs_method(r);
    static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", NULL};
    const char *method = "other";
    for (int i = 0; known[i]; i++)
        if (strcmp(m, known[i]) == 0) method = known[i];
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",code=\"%d\"", route, method, hs_status(r));
    metrics_add("sluice_http_requests_total", labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    metrics_observe("sluice_http_request_duration_seconds", labels, (double)latency_us / 1e6);
}

/* 1 when the method is `want` (or one of two); else answers 405 with Allow and returns 0. */
static int method_is(hs_request *r, const char *want, const char *or_want)
{
    const char *m = hs_method(r);
    if (strcmp(m, want) == 0 || (or_want && strcmp(m, or_want) == 0)) return 1;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Allow: %s%s%s", want, or_want ? ", " : "", or_want ? or_want : "");
    const char *body = "{\"error\":{\"code\":405,\"message\":\"method not allowed\"}}";
    hs_respond(r, 405, NULL, body, strlen(body), hdr);
    return 0;
}

/* Whether `host` (n bytes, from an Origin) names the same host and port as `want` (a Host header), the port
 * being the scheme's default when absent on either side. */
static int host_matches(const char *host, size_t n, const char *want, int https)
{
    size_t w = strcspn(want, ", \t"); /* X-Forwarded-Host may list several: the first is the client's */
    if (w == n && strncasecmp(host, want, n) == 0) return 1;
    const char *port = https ? ":443" : ":80";
    size_t pl = strlen(port);
    if (w == n + pl && strncasecmp(host, want, n) == 0 && strncmp(want + n, port, pl) == 0) return 1;
    if (n == w + pl && strncasecmp(host, want, w) == 0 && strncmp(host + w, port, pl) == 0) return 1;
    return 0;
}

/* 1 when a browser says the request comes from another site: Sec-Fetch-Site other than same-origin or none
 * (typed by the user), or an Origin whose host is not this request's Host (or X-Forwarded-Host, behind a proxy
 * that rewrites Host). Clients that are not browsers send neither header. */
static int cross_site(hs_request *r)
{
    const char *site = hs_header(r, "Sec-Fetch-Site");
    if (site && strcasecmp(site, "same-origin") != 0 && strcasecmp(site, "none") != 0) return 1;
    const char *origin = hs_header(r, "Origin");
    if (origin == NULL) return 0;
    const char *sep = strstr(origin, "://");
    if (sep == NULL) return 1; /* "null": a sandboxed or file page */
    int https = (size_t)(sep - origin) == 5 && strncasecmp(origin, "https", 5) == 0;
    const char *host = sep + 3;
    size_t n = strcspn(host, "/");
    const char *h = hs_header(r, "Host"), *fh = hs_header(r, "X-Forwarded-Host");
    return !((h && host_matches(host, n, h, https)) || (fh && host_matches(host, n, fh, https)));
}

/* The gate of every API route that changes something (POST on /v1/ except ingress): authorized; with
 * --ui-trust-header (a proxy that signs browsers in, often by cookie, which a browser sends along with a request
 * that another site makes it send) not sent by a browser from another site (403); and declared JSON (415), with
 * a body or without, since HTML forms and simple cross-site requests can only send form, multipart or text
 * content types. Returns 1 to go on; otherwise the request has been answered. */
static int change_allowed(const api_ctx *a, hs_request *r)
{
    if (!serve_authorize(a->auth, r, 1, NULL)) return 0;
    if (a->auth->trust_header && cross_site(r)) {
        hs_respond_error(r, 403, "cross-site request refused (Origin / Sec-Fetch-Site)");
        return 0;
    }
    if (!serve_content_type_is(r, "application/json")) {
        hs_respond_error(r, 415, "content type must be application/json (also without a body)");
        return 0;
    }
    return 1;
}

/* /v1/runs/{id}[:cancel|:redrive] */
static void route_run(const api_ctx *a, hs_request *r, const char *rest)
{
    char id[80];
    const char *colon = strchr(rest, ':');
    size_t n = colon ? (size_t)(colon - rest) : strlen(rest);
    if (n >= sizeof id) {
        hs_respond_error(r, 404, "no such run");
        return;
    }
    memcpy(id, rest, n);
    id[n] = '\0';
    int cancel = colon && strcmp(colon, ":cancel") == 0, redrive = colon && strcmp(colon, ":redrive") == 0;
    if (colon && !cancel && !redrive) {
        hs_respond_error(r, 404, "unknown path");
        return;
    }
    if (!method_is(r, colon ? "POST" : "GET", NULL)) return;
    if (!(colon ? change_allowed(a, r) : serve_authorize(a->auth, r, 1, NULL))) return;
    if (!valid_run_id(id)) {
        hs_respond_error(r, 404, "no such run");
        return;
    }
    if (cancel) {
        if (run_exists(a, r, id) == 0) engine_loop_cancel(a->loop, r, id);
    } else if (redrive) {
        api_redrive(a, r, id);
    } else {
        api_get_run(a, r, id);
    }
}

void api_route(hs_request *r, void *ud)
{
    const api_ctx *a = ud;
    const char *p = hs_path(r);
    int post = strcmp(hs_method(r), "POST") == 0;
    if (strcmp(p, "/v1/events/pubsub") == 0) {
        if (method_is(r, "POST", NULL)) ingress_handle(a->ingress, r, "pubsub");
    } else if (strcmp(p, "/v1/events/eventarc") == 0 || (strcmp(p, "/") == 0 && post)) {
        if (method_is(r, "POST", NULL)) ingress_handle(a->ingress, r, "eventarc");
    } else if (strcmp(p, "/healthz") == 0) {
        if (method_is(r, "GET", NULL)) hs_respond(r, 200, NULL, "{\"ok\":true}", strlen("{\"ok\":true}"), NULL);
    } else if (strcmp(p, "/readyz") == 0) {
        if (method_is(r, "GET", NULL)) handle_readyz(a, r);
    } else if (strcmp(p, "/metrics") == 0) {
        if (method_is(r, "GET", NULL)) handle_metrics(a, r);
    } else if (strcmp(p, "/v1/workflows") == 0) {
        if (method_is(r, "GET", NULL) && serve_authorize(a->auth, r, 1, NULL)) api_workflows(a, r);
    } else if (strcmp(p, "/v1/workflows:reload") == 0) {
        if (!method_is(r, "POST", NULL) || !change_allowed(a, r)) return;
        if (a->reloader)
            reloader_request(a->reloader, r);
        else
            hs_respond_error(r, 503, "reloading is not available");
    } else if (strcmp(p, "/v1/runs") == 0) {
        if (!method_is(r, "GET", "POST") || !(post ? change_allowed(a, r) : serve_authorize(a->auth, r, 1, NULL)))
            return;
        if (post)
            api_start_run(a, r);
        else
            api_list_runs(a, r);
    } else if (strcmp(p, "/v1/reconcile") == 0) {
        if (method_is(r, "POST", NULL) && change_allowed(a, r)) api_reconcile(a, r);
    } else if (strcmp(p, "/v1/schedules:tick") == 0) {
        if (method_is(r, "POST", NULL) && change_allowed(a, r)) schedule_api_tick(a->loop, r);
    } else if (strncmp(p, "/v1/backfills", 13) == 0 && (p[13] == '\0' || p[13] == '/')) {
        if (method_is(r, "GET", "POST") && (post ? change_allowed(a, r) : serve_authorize(a->auth, r, 1, NULL)))
            backfill_api(a->loop, r, p + 13);
    } else if (strncmp(p, "/v1/runs/", 9) == 0) {
        route_run(a, r, p + 9);
    } else if (strncmp(p, "/v1/workflows/", 14) == 0 && strlen(p) > 19 && strcmp(p + strlen(p) - 5, "/grid") == 0) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(p) - 19), p + 14);
        if (method_is(r, "GET", NULL) && serve_authorize(a->auth, r, 1, NULL)) api_grid(a, r, name);
    } else if (strncmp(p, "/v1/workflows/", 14) == 0) {
        if (method_is(r, "GET", NULL) && serve_authorize(a->auth, r, 1, NULL)) api_workflow(a, r, p + 14);
    } else if (ui_owns(p) && !post) {
        ui_route(r); /* the web UI's static files: no data, no auth (its API calls are authorized as any) */
    } else {
        hs_respond_error(r, 404, "unknown path");
    }
}

void api_observe_lua(void *ud, lh_status st, double seconds)
{
    (void)ud;
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"",
             st == LH_OK ? "ok" : st == LH_ERROR ? "error" : st == LH_TIMEOUT ? "timeout" : "nomem");
    metrics_observe("sluice_lua_call_seconds", labels, seconds);
}

void api_declare_metrics(void)
{
    metrics_declare("sluice_lua_call_seconds", METRIC_HISTOGRAM,
                    "Calls into workflow Lua (parameter, hook and choice functions; script loading) by outcome.");
    metrics_declare("sluice_events_total", METRIC_COUNTER,
                    "Event deliveries by source (pubsub, eventarc, pull) and outcome (recorded, duplicate, "
                    "invalid_job_name, foreign, nonterminal, irrelevant, malformed, unauthenticated, forbidden, "
                    "auth_unavailable, store_error).");
    metrics_declare("sluice_http_requests_total", METRIC_COUNTER, "HTTP requests by route, method and status code.");
    metrics_declare("sluice_http_request_duration_seconds", METRIC_HISTOGRAM, "HTTP request latency by route.");
    metrics_declare("sluice_http_inflight_requests", METRIC_GAUGE, "HTTP requests being served.");
    metrics_declare("sluice_inbox_commit_seconds", METRIC_HISTOGRAM, "Time of one group commit of ingress events.");
    metrics_declare("sluice_inbox_batches_total", METRIC_COUNTER, "Group commits of ingress events.");
    metrics_declare("sluice_inbox_queue_wait_seconds", METRIC_HISTOGRAM,
                    "Time the oldest event of a group commit waited for it (the writer busy with the previous one, "
                    "or not scheduled).");
    metrics_declare("sluice_inbox_lock_wait_seconds", METRIC_HISTOGRAM,
                    "Time a group commit waited for the store's write lock (held by the engine's tick).");
    metrics_declare("sluice_inbox_commit_only_seconds", METRIC_HISTOGRAM,
                    "Time of the COMMIT of a group commit (the fsync; checkpoints run on their own thread).");
    metrics_declare("sluice_store_checkpoint_seconds", METRIC_HISTOGRAM,
                    "Checkpoints of the SQLite write-ahead log by the checkpointer thread, by mode (passive and restart: the checkpointer's; writer: the ingress writer's between batches).");
    metrics_declare("sluice_store_wal_frames", METRIC_GAUGE,
                    "Pages in the SQLite write-ahead log after the last checkpoint.");
    metrics_declare("sluice_runs", METRIC_GAUGE, "Runs in the store by state.");
    metrics_declare("sluice_runs_pruned_total", METRIC_COUNTER, "Finished runs deleted by retention (--retain).");
    metrics_declare("sluice_runs_started_total", METRIC_COUNTER, "Runs started through the API by workflow.");
    metrics_declare("sluice_runs_adopted_total", METRIC_COUNTER,
                    "Runs started from a finished job Sluice did not launch (--adopt-foreign), by workflow.");
    metrics_declare("sluice_workflow_reloads_total", METRIC_COUNTER,
                    "Reloads of the workflows directory by outcome (ok, errors: installed with files that kept "
                    "their previous version or failed, invalid: not installed, unchanged).");
    metrics_declare("sluice_engine_launches_sent_total", METRIC_COUNTER, "Launch requests sent to Dataflow.");
    metrics_declare("sluice_engine_leader", METRIC_GAUGE,
                    "1 while this process holds the store's leader lease (retention runs there; every replica runs the engine).");
    metrics_declare("sluice_engine_runs_finished_total", METRIC_COUNTER,
                    "Runs this engine finished, by state; recovered=\"true\": succeeded after on_failure handled a "
                    "step's failure.");
    metrics_declare("sluice_engine_launches_ok_total", METRIC_COUNTER, "Launches that produced or adopted a job.");
    metrics_declare("sluice_engine_launches_adopted_total", METRIC_COUNTER, "Launch intents resolved by name.");
    metrics_declare("sluice_engine_checks_total", METRIC_COUNTER, "jobs.get and look-ups sent.");
    metrics_declare("sluice_engine_events_consumed_total", METRIC_COUNTER, "Inbox events consumed by the engine.");
    metrics_declare("sluice_engine_steps_total", METRIC_COUNTER, "Finished steps by outcome.");
    metrics_declare("sluice_engine_commit_failures_total", METRIC_COUNTER, "Engine ticks rolled back.");
    metrics_declare("sluice_engine_fenced_total", METRIC_COUNTER,
                    "Launches not sent because their claim ran out first (the process was paused or starved).");
    metrics_declare("sluice_engine_notifications_total", METRIC_COUNTER,
                    "Store notifications (PostgreSQL NOTIFY) that woke this engine: work recorded by any replica.");
    metrics_declare("sluice_engine_claims_lost_total", METRIC_COUNTER,
                    "Answers that would have launched, applied after the step's claim passed to another replica "
                    "(nothing was sent).");
    metrics_declare("sluice_engine_run_busy_total", METRIC_COUNTER,
                    "Answers and starts put off to the next tick because another replica's engine held the run.");
    metrics_declare("sluice_engine_pool_waits_total", METRIC_COUNTER,
                    "Launches held back because their job pool (serve --max-active-jobs) was full.");
    metrics_declare("sluice_engine_quota_refusals_total", METRIC_COUNTER,
                    "Launches Dataflow refused for quota (the steps waited and went again).");
    metrics_declare("sluice_engine_pool_wakes_total", METRIC_COUNTER,
                    "Steps waiting for a job pool or for quota that a job's end made due at once.");
    metrics_declare("sluice_jwks_fetches_total", METRIC_COUNTER, "JWKS fetches by outcome.");
    metrics_declare("sluice_launches_total", METRIC_COUNTER, "Dataflow launches by workflow, step and outcome.");
    metrics_declare("sluice_dataflow_calls_total", METRIC_COUNTER,
                    "Dataflow calls by method (launch, get, find, cancel, drain), outcome and HTTP code.");
    metrics_declare("sluice_dataflow_call_seconds", METRIC_HISTOGRAM, "Dataflow call latency by method.");
}
