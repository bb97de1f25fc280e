/* backfill_cli: the `sluice backfill` client command (backfill_cli.h).
 * Uses: http_client, jansson. Must not: touch a store. */
#include "backfill_cli.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "mem.h"
#include "result.h"

int backfill_cli_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},  {"to", required_argument, NULL, 'T'},
        {"dry-run", no_argument, NULL, 'd'},     {"max-active", required_argument, NULL, 'm'},
        {"rerun", required_argument, NULL, 'r'}, {"param", required_argument, NULL, 'p'},
        {"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0}};
    const char *server = getenv("SLUICE_SERVER"), *token = getenv("SLUICE_OPERATOR_TOKEN");
    const char *from = NULL, *to = NULL, *rerun = NULL;
    long max_active = 0;
    int dry = 0, json_out = 0, c, rc = EXIT_USAGE;
    json_t *params = json_object(), *out = NULL;
    char *body = NULL;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'f': from = optarg; break;
        case 'T': to = optarg; break;
        case 'd': dry = 1; break;
        case 'j': json_out = 1; break;
        case 's': server = optarg; break;
        case 't': token = optarg; break;
        case 'r': rerun = optarg; break;
        case 'm':
            max_active = strtol(optarg, &end, 10);
            if (*end != '\0') goto bad;
            if (max_active < 1 || max_active > 100000) goto bad;
            break;
        case 'p': {
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || eq == optarg) goto bad;
            char *k = xstrndup(optarg, (size_t)(eq - optarg));
            json_object_set_new(params, k, json_string(eq + 1));
            free(k);
            break;
        }
        case 'h':
            fputs(BACKFILL_USAGE, stdout);
            rc = EXIT_OK;
            goto out;
        default: goto bad;
        }
    }
    if (optind != argc - 1 || from == NULL || to == NULL) {
        fprintf(stderr, "sluice backfill: give one workflow, --from and --to (see 'sluice backfill --help')\n");
        goto out;
    }
    if (server == NULL || *server == '\0') {
        fprintf(stderr, "sluice backfill: give --server URL or set SLUICE_SERVER (see 'sluice backfill --help')\n");
        goto out;
    }
    json_t *req = json_pack("{s:s,s:s,s:s,s:b}", "workflow", argv[optind], "from", from, "to", to, "dry_run", dry);
    if (rerun) json_object_set_new(req, "rerun", json_string(rerun));
    if (max_active > 0) json_object_set_new(req, "max_active", json_integer(max_active));
    if (json_object_size(params) > 0) json_object_set(req, "params", params);
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char url[2048], auth[1200];
    size_t sl = strlen(server);
    while (sl > 0 && server[sl - 1] == '/') sl--;
    snprintf(url, sizeof url, "%.*s/v1/backfills", (int)sl, server);
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers[1] = auth;
    }
    hc_client *hc = hc_new(NULL);
    hc_req hr = {.method = "POST", .url = url, .headers = headers, .body = body, .body_len = strlen(body),
                 .timeout_ms = 120000};
    hc_resp *resp = NULL;
    const char *err = NULL;
    rc = EXIT_RUNTIME;
    if (hc == NULL || hc_perform_sync(hc, &hr, &resp, &err) != 0) {
        fprintf(stderr, "sluice backfill: %s\n", err ? err : "request failed");
    } else if (resp->error != HC_OK) {
        fprintf(stderr, "sluice backfill: %s: %s\n", url, resp->error_text);
    } else {
        json_error_t je;
        out = json_loadb(resp->body, resp->body_len, 0, &je);
        const char *msg = json_string_value(json_object_get(json_object_get(out, "error"), "message"));
        if (resp->status != 200 && resp->status != 201) {
            fprintf(stderr, "sluice backfill: server answered %ld%s%s\n", resp->status, msg ? ": " : "", msg ? msg : "");
        } else if (json_out) {
            char *t = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
            puts(t ? t : "{}");
            free(t);
            rc = EXIT_OK;
        } else if (dry) {
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(out, "would_start"), i, v) printf("%s\n", json_string_value(v));
            json_array_foreach(json_object_get(out, "would_rerun"), i, v)
                printf("rerun %s run %s (%s)\n", json_string_value(json_object_get(v, "logical_time")),
                       json_string_value(json_object_get(v, "run")), json_string_value(json_object_get(v, "state")));
            rc = EXIT_OK;
        } else {
            json_t *b = json_object_get(out, "backfill");
            printf("backfill %s: %lld of %lld times started, %lld had a run, %lld rerun (%s)\n",
                   json_string_value(json_object_get(b, "id")), (long long)json_integer_value(json_object_get(b, "started")),
                   (long long)json_integer_value(json_object_get(b, "total")),
                   (long long)json_integer_value(json_object_get(b, "existing")),
                   (long long)json_integer_value(json_object_get(b, "rerun")), json_string_value(json_object_get(b, "state")));
            rc = EXIT_OK;
        }
    }
    hc_resp_free(resp);
    hc_free(hc);
    goto out;
bad:
    fprintf(stderr, "sluice backfill: invalid option (see 'sluice backfill --help')\n");
out:
    free(body);
    json_decref(params);
    json_decref(out);
    return rc;
}
