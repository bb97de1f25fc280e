/* client: `sluice start|status|cancel|redrive` over the server's HTTP API; `status --store FILE` reads a local
 * store instead (no server needed), shown the same way.
 * Uses: http_client (hc_perform_sync), store and views (read only, for --store), jansson. Must not: write to the
 * store or run the engine.
 * The server URL comes from --server or $SLUICE_SERVER; the bearer token from --token or $SLUICE_OPERATOR_TOKEN. */
#include "client.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "mem.h"
#include "result.h"
#include "store.h"
#include "views.h"

typedef struct {
    const char *server, *token, *store;
    json_t *params;
    const char *request_key;
    int json_out, latest;
} client_opts;

/* What a command takes besides --server, --token and --json. */
enum { CL_PARAMS = 1, CL_KEY = 2, CL_LATEST = 4, CL_STORE = 8 };

/* Parses the common options; returns the index of the first positional argument, -1 (usage), or -2 (--help
 * printed `usage`). */
static int parse(const char *cmd, const char *usage, int argc, char **argv, client_opts *o, int takes)
{
    static const struct option opts[] = {{"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, 't'},
                                         {"param", required_argument, NULL, 'p'}, {"request-key", required_argument, NULL, 'k'},
                                         {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
                                         {"latest", no_argument, NULL, 'l'},       {"store", required_argument, NULL, 'S'},
                                         {0, 0, 0, 0}};
    o->server = getenv("SLUICE_SERVER");
    o->token = getenv("SLUICE_OPERATOR_TOKEN");
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': o->server = optarg; break;
        case 't': o->token = optarg; break;
        case 'j': o->json_out = 1; break;
        case 'k':
            if (!(takes & CL_KEY)) goto bad;
            o->request_key = optarg;
            break;
        case 'l':
            if (!(takes & CL_LATEST)) goto bad;
            o->latest = 1;
            break;
        case 'S':
            if (!(takes & CL_STORE)) goto bad;
            o->store = optarg;
            break;
        case 'p': {
            const char *eq = strchr(optarg, '=');
            if (!(takes & CL_PARAMS) || eq == NULL || eq == optarg) goto bad;
            char *k = xstrndup(optarg, (size_t)(eq - optarg));
            json_object_set_new(o->params, k, json_string(eq + 1));
            free(k);
            break;
        }
        case 'h':
            fputs(usage, stdout);
            return -2;
        default: goto bad;
        }
    }
    if (o->store == NULL && (o->server == NULL || o->server[0] == '\0')) {
        fprintf(stderr, "sluice %s: give --server URL or set SLUICE_SERVER (see 'sluice %s --help')\n", cmd, cmd);
        return -1;
    }
    return optind;
bad:
    fprintf(stderr, "sluice %s: invalid option (see 'sluice %s --help')\n", cmd, cmd);
    return -1;
}

/* Performs one call; returns the HTTP status (0 on transport failure, message printed) and *body (caller
 * decrefs; NULL if not JSON). */
static long call(const client_opts *o, const char *method, const char *path, const char *body, json_t **out)
{
    *out = NULL;
    hc_client *hc = hc_new(NULL);
    if (hc == NULL) return 0;
    char url[2048], auth[1200];
    const char *server = o->server;
    size_t sl = strlen(server);
    while (sl > 0 && server[sl - 1] == '/') sl--;
    snprintf(url, sizeof url, "%.*s%s", (int)sl, server, path);
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    if (o->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->token);
        headers[1] = auth;
    }
    hc_req req = {.method = method, .url = url, .headers = headers, .body = body, .body_len = body ? strlen(body) : 0,
                  .timeout_ms = 30000};
    hc_resp *resp = NULL;
    const char *err = NULL;
    long status = 0;
    if (hc_perform_sync(hc, &req, &resp, &err) != 0) {
        fprintf(stderr, "sluice: %s\n", err ? err : "request failed");
    } else if (resp->error != HC_OK) {
        fprintf(stderr, "sluice: %s: %s\n", url, resp->error_text);
    } else {
        status = resp->status;
        json_error_t je;
        *out = json_loadb(resp->body, resp->body_len, 0, &je);
        if (*out == NULL) fprintf(stderr, "sluice: %s answered %ld with a body that is not JSON\n", url, status);
    }
    hc_resp_free(resp);
    hc_free(hc);
    return status;
}

static int report_error(long status, json_t *body)
{
    const char *msg = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    if (status != 0) fprintf(stderr, "sluice: server answered %ld%s%s\n", status, msg ? ": " : "", msg ? msg : "");
    return EXIT_RUNTIME;
}

static void print_run(json_t *run, int json_out)
{
    if (json_out) {
        char *t = json_dumps(run, JSON_INDENT(2) | JSON_SORT_KEYS);
        puts(t);
        free(t);
        return;
    }
    printf("run %s  workflow %s  %s%s%s\n", json_string_value(json_object_get(run, "id")),
           json_string_value(json_object_get(run, "workflow")), json_string_value(json_object_get(run, "state")),
           json_is_string(json_object_get(run, "error")) ? ": " : "",
           json_is_string(json_object_get(run, "error")) ? json_string_value(json_object_get(run, "error")) : "");
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(run, "steps"), i, st)
    {
        const char *job = json_string_value(json_object_get(st, "job_id"));
        printf("  %-20s %-11s %-3lld %s\n", json_string_value(json_object_get(st, "name")),
               json_string_value(json_object_get(st, "state")), (long long)json_integer_value(json_object_get(st, "attempt")),
               job ? job : "-");
        /* Why the step failed (its parameter violations included), then the failed job's cause in Dataflow's
         * words (its job messages). */
        const char *error = json_string_value(json_object_get(st, "error"));
        const char *state = json_string_value(json_object_get(st, "state"));
        store_step_state ss;
        int finished = state && store_step_state_parse(state, &ss) == STORE_OK && store_step_state_terminal(ss);
        /* A step in flight has a note instead: why the Dataflow call about it keeps failing ("retrying: ..."). */
        if (error) printf("  %-20s %s%s\n", "", finished ? "error: " : "", error);
        const char *cause = json_string_value(json_object_get(st, "failure_cause"));
        if (cause) printf("  %-20s cause: %s\n", "", cause);
    }
    json_array_foreach(json_object_get(run, "recovered"), i, st)
    {
        printf("  recovered: step %s failed: %s\n", json_string_value(json_object_get(st, "step")),
               json_string_value(json_object_get(st, "error")) ? json_string_value(json_object_get(st, "error")) : "?");
    }
}

/* POSTs `req` (stolen) to `path`; on ok1/ok2 prints the answer's run (JSON, or `fmt` with its id). Returns the
 * exit status. */
static int post_run(const client_opts *o, const char *path, json_t *req, long ok1, long ok2, const char *fmt)
{
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *body = NULL;
    long status = call(o, "POST", path, text, &body);
    free(text);
    int rc = EXIT_OK;
    if (status == ok1 || status == ok2) {
        json_t *run = json_object_get(body, "run");
        if (o->json_out)
            print_run(run, 1);
        else
            printf(fmt, json_string_value(json_object_get(run, "id")));
    } else {
        rc = report_error(status, body);
    }
    json_decref(body);
    return rc;
}

int client_start_main(int argc, char **argv)
{
    client_opts o = {.params = json_object()};
    int first = parse("start", CLIENT_START_USAGE, argc, argv, &o, CL_PARAMS | CL_KEY), rc = EXIT_USAGE;
    if (first == -2) rc = EXIT_OK;
    if (first < 0) goto out;
    if (first != argc - 1) {
        fprintf(stderr, "sluice start: give exactly one workflow name\n");
        goto out;
    }
    rc = post_run(&o, "/v1/runs",
                  json_pack("{s:s,s:O,s:s?}", "workflow", argv[first], "params", o.params, "request_key",
                            o.request_key),
                  201, 200, "%s\n");
out:
    json_decref(o.params);
    return rc;
}

static void print_list_row(json_t *run)
{
    printf("%-16s %-24s %-10s %s\n", json_string_value(json_object_get(run, "id")),
           json_string_value(json_object_get(run, "workflow")), json_string_value(json_object_get(run, "state")),
           json_string_value(json_object_get(run, "created_at")));
}

/* `sluice status --store FILE [RUN]`: the same views, read from a local store (no server needed). */
static int status_from_store(const client_opts *o, const char *run_id)
{
    store *st = NULL;
    char *err = NULL;
    store_options so = {.must_exist = 1}; /* reading: a mistyped --store must not leave a new empty store */
    int orc = store_open(o->store, &so, &st, &err);
    if (orc != STORE_OK) {
        char *shown = store_url_redacted(o->store); /* no PostgreSQL password in the message */
        fprintf(stderr, "sluice status: cannot open the store %s: %s%s\n", shown, err ? err : "?",
                orc == STORE_NOTFOUND ? " (status reads a store that sluice run or serve made; it creates none)" : "");
        free(shown);
        free(err);
        return EXIT_RUNTIME;
    }
    int rc = EXIT_OK;
    if (run_id) {
        int src;
        json_t *run = view_run_detail(st, run_id, &src);
        if (run == NULL) {
            fprintf(stderr, "sluice status: %s: %s\n", run_id, src == STORE_NOTFOUND ? "no such run" : store_strerror(src));
            rc = EXIT_RUNTIME;
        } else {
            print_run(run, o->json_out);
        }
        json_decref(run);
    } else {
        store_run_filter f = {.state = STORE_RUN_ANY, .limit = 20};
        store_run_list l = {0};
        if (store_run_list_page(st, &f, &l, &err) != STORE_OK) {
            fprintf(stderr, "sluice status: %s\n", err ? err : "cannot list runs");
            rc = EXIT_RUNTIME;
        }
        json_t *arr = json_array();
        for (size_t i = 0; i < l.count; i++) json_array_append_new(arr, view_run(&l.items[i]));
        if (o->json_out) {
            print_run(arr, 1);
        } else {
            size_t i;
            json_t *run;
            json_array_foreach(arr, i, run) print_list_row(run);
        }
        json_decref(arr);
        store_run_list_free(&l);
    }
    free(err);
    store_close(st);
    return rc;
}

int client_redrive_main(int argc, char **argv)
{
    client_opts o = {.params = json_object()};
    int first = parse("redrive", CLIENT_REDRIVE_USAGE, argc, argv, &o, CL_PARAMS | CL_LATEST), rc = EXIT_USAGE;
    if (first == -2) rc = EXIT_OK;
    if (first < 0) goto out;
    if (first != argc - 1) {
        fprintf(stderr, "sluice redrive: give exactly one run id\n");
        goto out;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%.100s:redrive", argv[first]);
    rc = post_run(&o, path, json_pack("{s:O,s:b}", "params", o.params, "latest", o.latest), 202, 202,
                  "run %s is running again\n");
out:
    json_decref(o.params);
    return rc;
}

int client_status_main(int argc, char **argv)
{
    client_opts o = {0};
    int first = parse("status", CLIENT_STATUS_USAGE, argc, argv, &o, CL_STORE);
    if (first < 0) return first == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - first > 1) {
        fprintf(stderr, "sluice status: give at most one run id\n");
        return EXIT_USAGE;
    }
    if (o.store) return status_from_store(&o, first < argc ? argv[first] : NULL);
    char path[256];
    if (first < argc)
        snprintf(path, sizeof path, "/v1/runs/%.100s", argv[first]);
    else
        snprintf(path, sizeof path, "/v1/runs?limit=20");
    json_t *body = NULL;
    long status = call(&o, "GET", path, NULL, &body);
    int rc = EXIT_OK;
    if (status != 200) {
        rc = report_error(status, body);
    } else if (first < argc) {
        print_run(json_object_get(body, "run"), o.json_out);
    } else if (o.json_out) {
        print_run(json_object_get(body, "runs"), 1);
    } else {
        size_t i;
        json_t *run;
        json_array_foreach(json_object_get(body, "runs"), i, run) print_list_row(run);
    }
    json_decref(body);
    return rc;
}

int client_cancel_main(int argc, char **argv)
{
    client_opts o = {0};
    int first = parse("cancel", CLIENT_CANCEL_USAGE, argc, argv, &o, 0);
    if (first < 0) return first == -2 ? EXIT_OK : EXIT_USAGE;
    if (first != argc - 1) {
        fprintf(stderr, "sluice cancel: give exactly one run id\n");
        return EXIT_USAGE;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/runs/%.100s:cancel", argv[first]);
    json_t *body = NULL;
    long status = call(&o, "POST", path, "{}", &body);
    int rc = EXIT_OK;
    if (status == 200 || status == 202) {
        json_t *run = json_object_get(body, "run");
        if (o.json_out)
            print_run(run, 1);
        else
            printf("run %s %s\n", json_string_value(json_object_get(run, "id")),
                   json_is_true(json_object_get(body, "already_finished")) ? "had already finished" : "is being cancelled");
    } else {
        rc = report_error(status, body);
    }
    json_decref(body);
    return rc;
}
