/* server: one `sluice serve` instance — the long-running orchestrator. Pub/Sub push and Eventarc ingress
 * (OIDC-authenticated, durably recorded in the store inbox with group commit before the 2xx), the HTTP API over runs
 * and workflows, health and Prometheus metrics, and the engine in one dedicated thread. serve_open builds and wires
 * the parts, serve_run waits for signals, serve_close takes them down in order; `sluice serve` (serve_cmd) and the
 * tests that serve in their own process (integration.test_serve_api) run the same three.
 * Uses: http_server, oidc, metrics, events, store, engine, workflow, jobs_api, config, log, util.
 * Must not: call the engine from an HTTP thread (requests reach it through a command queue), parse event bodies
 * itself (events does), or read the command line (serve_cmd does). See docs/api.md. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jobs_api.h"
#include "wfset.h"

#define SERVE_MAX_LIST 16 /* entries of each list option at most */

/* What an instance is made of: `sluice serve`'s flags and environment (serve_cmd.c; its usage text says what each
 * means). cfg as config_init leaves it, then changed; any other field zero means the part's own default or "off".
 * Strings are borrowed until serve_close; each list holds its count's entries (serve_open copies the struct and
 * ends its lists with NULL). */
typedef struct {
    sluice_config cfg;
    const char *listen, *workflows_dir, *audience, *jwks_url, *jwks_file, *operator_token, *ready_file, *trust_header;
    const char *issuers[SERVE_MAX_LIST + 1], *emails[SERVE_MAX_LIST + 1], *api_emails[SERVE_MAX_LIST + 1];
    size_t n_issuers, n_emails, n_api_emails;
    int port, no_auth, dataflow_no_auth, tick_ms, grace_ms, process_ms, adopt_foreign, no_watch;
    int64_t retain_ms, lease_ms; /* lease_ms 0: the engine's default */
    int64_t prune_every_ms;      /* how often retention looks (0: engine_loop's default); tests shorten it */
    int store_poll_only;
    int writer_normal; /* --writer-priority normal */
    int max_active_jobs; /* --max-active-jobs: the job pool per project and region (0: none) */
    int schedule_tick_ms; /* --schedule-tick: how often this process ticks the workflows' schedules (0: never) */
    unsigned threads, max_conns, max_conns_ip, idle_timeout_s, read_timeout_s;
    size_t max_body;
    /* Pub/Sub pull (pubsub_pull): --subscription (repeatable, else $SLUICE_SUBSCRIPTIONS, comma-separated) */
    const char *subs[SERVE_MAX_LIST + 1];
    size_t n_subs;
    char *subs_env; /* the copy of $SLUICE_SUBSCRIPTIONS that subs point into (owned by serve_cmd) */
    const char *pubsub_url;
    long pull_max_messages;
    long pull_max_bytes;
    /* run notifications (notify.h): --notify-webhook, --notify-topic, --notify-secret, --notify-on (else $SLUICE_NOTIFY_*) */
    const char *notify_webhook, *notify_topic, *notify_secret, *notify_on;
    /* NULL: the Dataflow client made from cfg. Else this one (a test's fake) instead: serve_open takes it over (it
     * is freed by serve_close, or by serve_open when that fails) and asks it for no default project. */
    jobs_api *api;
} serve_opts;

typedef struct serve_instance serve_instance;

/* Builds every part and starts it, up to and including the HTTP server listening: blocks SIGTERM, SIGINT and
 * SIGHUP in the calling thread first (before any thread starts, so only serve_run's sigwait takes them) and ignores
 * SIGPIPE; declares the metrics; loads the workflows; opens the store handles; starts the engine loop, the
 * notifier, the ingress writer, Pub/Sub pull (with subscriptions), the reloader and the HTTP server; then prints
 * {"listening":URL} on stdout and writes the URL to o->ready_file (when set). Returns 0 and *out, or -1 with
 * everything taken down again and *err (may be NULL; caller frees; may be left NULL) saying why. */
int serve_open(const serve_opts *o, serve_instance **out, char **err);
/* Waits for signals in the calling thread (the one that called serve_open): SIGHUP reloads the workflows, SIGTERM
 * or SIGINT returns. */
void serve_run(serve_instance *si);
/* Stops and frees (NULL: nothing): the engine loop drains, Pub/Sub pull stops, the HTTP server stops accepting
 * and waits up to grace_ms for requests in flight, then every part is freed in order and the metrics reset. */
void serve_close(serve_instance *si, int grace_ms);

/* Where a client on this machine reaches the server ("http://127.0.0.1:PORT" unless --listen names an address). */
const char *serve_url(const serve_instance *si);
/* The current workflow set's box (borrowed; wfset_box_get for the set). */
wfset_box *serve_workflows(serve_instance *si);

#endif
