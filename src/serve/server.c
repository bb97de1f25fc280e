/* server: `sluice serve`: options, start-up and shutdown. It builds the parts and wires them together:
 * the workflow set (wfset, reloaded by reload), the store handles, the Dataflow client (counted by
 * counting_api), the engine and its loop thread (engine_loop), event ingress with its group-commit writer
 * (ingress), the API router (api) on the HTTP server (http_server), and OIDC (oidc, serve_auth).
 * Uses: all of those, config, metrics, log. Must not: handle requests or drive the engine itself.
 *
 * Threads: MHD workers run api_route (reads through the store pool; changes go to the engine loop as commands);
 * the ingress writer records events; the engine loop's thread owns the engine, its store handle and the Dataflow
 * client; the reloader's thread loads changed workflows; this thread waits for signals (SIGTERM/SIGINT stop,
 * SIGHUP reloads). Shutdown: stop accepting and finish requests in flight (hs_shutdown), then stop the reloader,
 * the writer (after it answered what it holds) and the engine loop, then free. */
#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "checkpointer.h"
#include "config.h"
#include "counting_api.h"
#include "engine.h"
#include "engine_loop.h"
#include "http_server.h"
#include "ingress.h"
#include "jobs_api.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "notify.h"
#include "oidc.h"
#include "pubsub_pull.h"
#include "reload.h"
#include "serve_auth.h"
#include "store_pool.h"
#include "schedule.h"
#include "wf_notify.h"
#include "wfset.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
#define MAX_LIST_OPT 16

typedef struct {
    sluice_config cfg;
    const char *listen, *workflows_dir, *audience, *jwks_url, *jwks_file, *operator_token, *ready_file, *trust_header;
    const char *issuers[MAX_LIST_OPT + 1], *emails[MAX_LIST_OPT + 1], *api_emails[MAX_LIST_OPT + 1];
    size_t n_issuers, n_emails, n_api_emails;
    int port, no_auth, dataflow_no_auth, tick_ms, grace_ms, process_ms, adopt_foreign, no_watch;
    int64_t retain_ms, lease_ms;
    int store_poll_only;
    int writer_normal; /* --writer-priority normal */
    int max_active_jobs; /* --max-active-jobs: the job pool per project and region (0: none) */
    int schedule_tick_ms; /* --schedule-tick: how often this process ticks the workflows' schedules (0: never) */
    unsigned threads, max_conns, max_conns_ip, idle_timeout_s, read_timeout_s;
    size_t max_body;
    /* Pub/Sub pull (pubsub_pull): --subscription (repeatable, else $SLUICE_SUBSCRIPTIONS, comma-separated) */
    const char *subs[MAX_LIST_OPT + 1];
    size_t n_subs;
    char *subs_env; /* the copy of $SLUICE_SUBSCRIPTIONS that subs point into (owned) */
    const char *pubsub_url;
    long pull_max_messages;
    long pull_max_bytes;
    /* run notifications (notify.h): --notify-webhook, --notify-topic, --notify-secret, --notify-on (else $SLUICE_NOTIFY_*) */
    const char *notify_webhook, *notify_topic, *notify_secret, *notify_on;
} serve_opts;

static const char USAGE[] =
    "usage: sluice serve --workflows DIR [options]\n"
    "Serves Pub/Sub push and Eventarc deliveries, the HTTP API (docs/api.md), /healthz, /readyz and /metrics,\n"
    "and runs the engine. SIGTERM/SIGINT: stop accepting, finish requests in flight, stop cleanly.\n"
    "  --workflows DIR        load every *.lua in DIR (files with errors are reported, not fatal); changes are\n"
    "                         reloaded (inotify, SIGHUP, POST /v1/workflows:reload): see docs/api.md\n"
    "  --no-watch             do not watch DIR (SIGHUP and POST /v1/workflows:reload still reload)\n"
    "  --retain D             delete finished runs older than D in the background (default 30d; 0: keep all)\n"
    "  --store-poll-only      a PostgreSQL store through a transaction pooler (PgBouncer, pool_mode =\n"
    "                         transaction): no LISTEN (the engine finds new work at its next tick) and no\n"
    "                         session state (unnamed statements, settings per transaction)\n"
    "  --lease D              replicas on a shared store: how long a step handed to an API call stays this\n"
    "                         process's before another may take it over, and the leader lease's time\n"
    "                         (default 60s, $SLUICE_LEASE; at least twice the poll interval for steps)\n"
    "  --port N               listen port (default $PORT, else 8080; 0 = ephemeral)\n"
    "  --listen ADDR          IPv4 address to bind (default 0.0.0.0)\n"
    "  --ready-file PATH      write the base URL there once listening (tests)\n"
    "  --audience A           the OIDC audience every token must carry (required unless --no-auth)\n"
    "  --allow-email E        accepted token identity on ingress (repeatable; default: any verified email)\n"
    "  --api-allow-email E    accepted token identity on the API (repeatable; default: those of --allow-email)\n"
    "  --issuer I             accepted token issuer (repeatable; default Google's two spellings)\n"
    "  --jwks-url URL         signing keys (default https://www.googleapis.com/oauth2/v3/certs)\n"
    "  --jwks-file PATH       signing keys from a file instead\n"
    "  --operator-token T     a static bearer token accepted on the API (default $SLUICE_OPERATOR_TOKEN; an\n"
    "                         empty one is refused)\n"
    "  --no-auth              accept every request unauthenticated (logged; development only)\n"
    "  --ui-trust-header NAME requests carrying this header (set by an identity-aware proxy that strips it from\n"
    "                         clients) are allowed on the API: see docs/ui.md for the risk\n"
    "  --threads N            HTTP worker threads (default 4)\n"
    "  --writer-priority P    realtime (default): the thread that records events and answers them runs in the\n"
    "                         real-time class (SCHED_RR 1) when the process may (CAP_SYS_NICE), so other work\n"
    "                         on the machine cannot delay every answer; normal: never\n"
    "  --max-connections N    open connections at most (default 4096)\n";
/* The rest of the usage (C11 only promises string literals of 4095 characters). */
static const char USAGE_MORE[] =
    "  --max-connections-per-ip N\n"
    "                         open connections from one client address at most (default: half of\n"
    "                         --max-connections); more are closed at once\n"
    "  --max-body BYTES       larger bodies get 413 (default 1048576)\n"
    "  --idle-timeout S       close connections idle this long (default 30)\n"
    "  --read-timeout S       close a connection whose request (head and body) has not fully arrived S seconds\n"
    "                         after its first line did (or, before that line is in, after the connection was\n"
    "                         accepted or answered its previous request), however slowly it trickles in\n"
    "                         (default 30)\n"
    "  --tick D               engine wake-up when idle (default 250ms)\n"
    "  --grace D              how long shutdown waits for requests in flight (default 8s)\n"
    "  --process-in-request D after recording an event, hold the answer until the engine has acted on it\n"
    "                         (or D passed): for Cloud Run with CPU only during requests (default 0: off)\n"
    "  --store PATH, --dataflow-url URL, --credentials FILE, --token T, --project P, --poll-interval D,\n"
    "  --lag-window D\n"
    "                         as for 'sluice run'\n"
    "  --dataflow-no-auth     send no credentials to Dataflow (the emulator with auth off)\n"
    "  --max-active-jobs N    at most N Dataflow jobs at once per project and region, across every replica on\n"
    "                         the store; further launches wait (oldest first) and go when a job ends\n"
    "                         (default 0: no limit; launches Dataflow refuses for quota wait either way)\n"
    "  --schedule-tick D      how often this process starts the runs of workflow schedules that are due\n"
    "                         (default 1s; 0: never, POST /v1/schedules:tick only)\n"
    "  --adopt-foreign        a finished job of a workflow's first launch step that Sluice did not launch\n"
    "                         starts a run from that step (as the original Cloud Function did)\n";
/* Pub/Sub pull (a second string: one literal may hold 4095 characters) */
static const char USAGE_PULL[] =
    "  --subscription S       also pull events from the Pub/Sub subscription S (projects/P/subscriptions/NAME;\n"
    "                         repeatable; default $SLUICE_SUBSCRIPTIONS, comma-separated): no inbound endpoint\n"
    "                         needed. $PUBSUB_EMULATOR_HOST (host:port) means Google's emulator: plain HTTP, no\n"
    "                         credentials\n"
    "  --pubsub-url URL       the Pub/Sub API (default https://pubsub.googleapis.com)\n"
    "  --pull-max-messages N  pulled messages not yet acknowledged at most (default 1000)\n"
    "  --pull-max-bytes BYTES their data at most (default 67108864)\n"
    "  --notify-webhook URL   post run events (CloudEvents) to URL, https:// (http:// only to a loopback address)\n"
    "                         (default $SLUICE_NOTIFY_WEBHOOK)\n"
    "  --notify-topic T       publish run events to the Pub/Sub topic projects/P/topics/T ($SLUICE_NOTIFY_TOPIC)\n"
    "  --notify-secret S      the webhooks' HMAC-SHA256 key (X-Sluice-Signature) ($SLUICE_NOTIFY_SECRET)\n"
    "  --notify-on LIST       which run events the server's sinks get (default failed,cancelled,deadline_missed;\n"
    "                         $SLUICE_NOTIFY_ON)\n";

/* Fault injection for the replica tests (SLUICE_FAULT_PAUSE_BEFORE_LAUNCH=N): the process stops itself (SIGSTOP)
 * just before its N-th launch request leaves, between the intent's commit and the send, where a paused replica
 * is most dangerous; the test continues it later (SIGCONT). */
static void fault_pause(void *ud, const char *job_name)
{
    int *left = ud;
    if (*left <= 0 || --*left > 0) return;
    log_warn("serve: fault injection: stopping before the launch of %s", job_name);
    raise(SIGSTOP);
    log_warn("serve: fault injection: continued");
}

/* A whole decimal number (nothing after it): 0 and *v, or -1. `--port 80x` and `--threads four` are errors, not
 * 80 and 0. */
static int parse_long(const char *text, long *v)
{
    char *end = NULL;
    errno = 0;
    *v = strtol(text, &end, 10);
    return end == text || *end != '\0' || errno != 0 ? -1 : 0;
}

static int parse_args(int argc, char **argv, serve_opts *o)
{
    enum {
        O_WORKFLOWS = 256, O_PORT, O_LISTEN, O_READY, O_AUD, O_EMAIL, O_ISS, O_JWKS_URL, O_JWKS_FILE, O_OPTOKEN,
        O_NOAUTH, O_THREADS, O_MAXCONN, O_MAXBODY, O_IDLE, O_TICK, O_GRACE, O_STORE, O_DFURL, O_CREDS, O_TOKEN,
        O_PROJECT, O_POLL, O_DFNOAUTH, O_PROCESS, O_ADOPT, O_HELP, O_LAG, O_NOWATCH, O_RETAIN, O_POLLONLY, O_TRUSTHDR, O_APIEMAIL, O_LEASE, O_WRITERPRIO,
        O_SUB, O_PSURL, O_PULLMAX, O_PULLBYTES, O_MAXCONNIP, O_READTIMEOUT,
        O_NWEBHOOK, O_NTOPIC, O_NSECRET, O_NON, O_MAXJOBS, O_SCHEDTICK
    };
    static const struct option opts[] = {
        {"workflows", required_argument, NULL, O_WORKFLOWS}, {"port", required_argument, NULL, O_PORT},
        {"listen", required_argument, NULL, O_LISTEN},       {"ready-file", required_argument, NULL, O_READY},
        {"audience", required_argument, NULL, O_AUD},        {"allow-email", required_argument, NULL, O_EMAIL},
        {"issuer", required_argument, NULL, O_ISS},          {"jwks-url", required_argument, NULL, O_JWKS_URL},
        {"jwks-file", required_argument, NULL, O_JWKS_FILE}, {"operator-token", required_argument, NULL, O_OPTOKEN},
        {"no-auth", no_argument, NULL, O_NOAUTH},            {"threads", required_argument, NULL, O_THREADS},
        {"max-connections", required_argument, NULL, O_MAXCONN}, {"max-body", required_argument, NULL, O_MAXBODY},
        {"idle-timeout", required_argument, NULL, O_IDLE},   {"tick", required_argument, NULL, O_TICK},
        {"grace", required_argument, NULL, O_GRACE},         {"store", required_argument, NULL, O_STORE},
        {"dataflow-url", required_argument, NULL, O_DFURL},  {"credentials", required_argument, NULL, O_CREDS},
        {"token", required_argument, NULL, O_TOKEN},         {"project", required_argument, NULL, O_PROJECT},
        {"poll-interval", required_argument, NULL, O_POLL},  {"dataflow-no-auth", no_argument, NULL, O_DFNOAUTH},
        {"process-in-request", required_argument, NULL, O_PROCESS}, {"adopt-foreign", no_argument, NULL, O_ADOPT},
        {"lag-window", required_argument, NULL, O_LAG},      {"no-watch", no_argument, NULL, O_NOWATCH},
        {"retain", required_argument, NULL, O_RETAIN},       {"store-poll-only", no_argument, NULL, O_POLLONLY},
        {"ui-trust-header", required_argument, NULL, O_TRUSTHDR}, {"api-allow-email", required_argument, NULL, O_APIEMAIL},
        {"lease", required_argument, NULL, O_LEASE},         {"writer-priority", required_argument, NULL, O_WRITERPRIO},
        {"subscription", required_argument, NULL, O_SUB},    {"pubsub-url", required_argument, NULL, O_PSURL},
        {"pull-max-messages", required_argument, NULL, O_PULLMAX},
        {"pull-max-bytes", required_argument, NULL, O_PULLBYTES},
        {"max-connections-per-ip", required_argument, NULL, O_MAXCONNIP},
        {"read-timeout", required_argument, NULL, O_READTIMEOUT},
        {"notify-webhook", required_argument, NULL, O_NWEBHOOK}, {"notify-topic", required_argument, NULL, O_NTOPIC},
        {"notify-secret", required_argument, NULL, O_NSECRET}, {"notify-on", required_argument, NULL, O_NON},
        {"max-active-jobs", required_argument, NULL, O_MAXJOBS},
        {"schedule-tick", required_argument, NULL, O_SCHEDTICK},
        {"help", no_argument, NULL, O_HELP},                 {0, 0, 0, 0}};
    config_init(&o->cfg);
    /* The environment's values are checked as strictly as the flags': a typo is an error, not a silent default. */
    const char *lenv = getenv("SLUICE_LEASE");
    int64_t lease_env = lenv ? config_parse_ms(lenv) : 60000;
    if (lease_env < 1000) {
        fprintf(stderr, "sluice serve: invalid value '%s' for $SLUICE_LEASE (a duration of 1s or more)\n", lenv);
        return -1;
    }
    o->lease_ms = lease_env;
    const char *penv = getenv("PORT");
    long pv = 8080;
    if (penv != NULL && (parse_long(penv, &pv) != 0 || pv < 0 || pv > 65535)) {
        fprintf(stderr, "sluice serve: invalid value '%s' for $PORT (0..65535)\n", penv);
        return -1;
    }
    o->port = (int)pv;
    o->operator_token = getenv("SLUICE_OPERATOR_TOKEN");
    o->tick_ms = 250;
    o->retain_ms = 30LL * 24 * 3600 * 1000;
    o->grace_ms = 8000;
    o->schedule_tick_ms = 1000;
    int c;
    long v;
    int64_t ms;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_WORKFLOWS: o->workflows_dir = optarg; break;
        case O_PORT:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 0 || v > 65535) goto bad;
            o->port = (int)v;
            break;
        case O_LISTEN: o->listen = optarg; break;
        case O_READY: o->ready_file = optarg; break;
        case O_AUD: o->audience = optarg; break;
        case O_EMAIL:
            if (o->n_emails == MAX_LIST_OPT) goto bad;
            o->emails[o->n_emails++] = optarg;
            break;
        case O_WRITERPRIO:
            if (strcmp(optarg, "realtime") == 0)
                o->writer_normal = 0;
            else if (strcmp(optarg, "normal") == 0)
                o->writer_normal = 1;
            else
                goto bad;
            break;
        case O_APIEMAIL:
            if (o->n_api_emails == MAX_LIST_OPT) goto bad;
            o->api_emails[o->n_api_emails++] = optarg;
            break;
        case O_ISS:
            if (o->n_issuers == MAX_LIST_OPT) goto bad;
            o->issuers[o->n_issuers++] = optarg;
            break;
        case O_JWKS_URL: o->jwks_url = optarg; break;
        case O_JWKS_FILE: o->jwks_file = optarg; break;
        case O_OPTOKEN: o->operator_token = optarg; break;
        case O_NOAUTH: o->no_auth = 1; break;
        case O_TRUSTHDR: o->trust_header = optarg; break;
        case O_THREADS:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 256) goto bad;
            o->threads = (unsigned)v;
            break;
        case O_MAXCONN:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 100000) goto bad;
            o->max_conns = (unsigned)v;
            break;
        case O_MAXCONNIP:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 100000) goto bad;
            o->max_conns_ip = (unsigned)v;
            break;
        case O_READTIMEOUT:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 3600) goto bad;
            o->read_timeout_s = (unsigned)v;
            break;
        case O_MAXBODY:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1024 || v > 64L * 1024 * 1024) goto bad;
            o->max_body = (size_t)v;
            break;
        case O_IDLE:
            if (parse_long(optarg, &v) != 0) goto bad;
            if (v < 1 || v > 3600) goto bad;
            o->idle_timeout_s = (unsigned)v;
            break;
        case O_TICK:
            if ((ms = config_parse_ms(optarg)) < 1 || ms > 3600000) goto bad;
            o->tick_ms = (int)ms;
            break;
        case O_GRACE:
            if ((ms = config_parse_ms(optarg)) < 0 || ms > 3600000) goto bad;
            o->grace_ms = (int)ms;
            break;
        case O_STORE: o->cfg.store = optarg; break;
        case O_DFURL: o->cfg.dataflow_url = optarg; break;
        case O_CREDS: o->cfg.credentials = optarg; break;
        case O_TOKEN: o->cfg.token = optarg; break;
        case O_PROJECT: o->cfg.project = optarg; break;
        case O_POLL:
            if ((o->cfg.poll_ms = config_parse_ms(optarg)) <= 0) goto bad;
            break;
        case O_LAG:
            if ((o->cfg.lag_window_ms = config_parse_ms(optarg)) <= 0) goto bad;
            break;
        case O_DFNOAUTH: o->dataflow_no_auth = 1; break;
        case O_ADOPT: o->adopt_foreign = 1; break;
        case O_NOWATCH: o->no_watch = 1; break;
        case O_POLLONLY: o->store_poll_only = 1; break;
        case O_LEASE:
            if ((o->lease_ms = config_parse_ms(optarg)) < 1000) goto bad;
            break;
        case O_RETAIN:
            /* 0 (in any unit) keeps every run */
            if (config_parse_ms(optarg) == 0)
                o->retain_ms = 0;
            else if ((o->retain_ms = config_parse_ms(optarg)) <= 0)
                goto bad;
            break;
        case O_PROCESS:
            if ((ms = config_parse_ms(optarg)) < 0 || ms > 600000) goto bad;
            o->process_ms = (int)ms;
            break;
        case O_SUB:
            if (o->n_subs == MAX_LIST_OPT || !pubsub_pull_valid_name(optarg)) goto bad;
            o->subs[o->n_subs++] = optarg;
            break;
        case O_PSURL: o->pubsub_url = optarg; break;
        case O_NWEBHOOK: o->notify_webhook = optarg; break;
        case O_NTOPIC: o->notify_topic = optarg; break;
        case O_NSECRET: o->notify_secret = optarg; break;
        case O_NON: o->notify_on = optarg; break;
        case O_PULLMAX:
            if (parse_long(optarg, &v) != 0 || v < 1 || v > 100000) goto bad;
            o->pull_max_messages = v;
            break;
        case O_PULLBYTES:
            if (parse_long(optarg, &v) != 0 || v < 65536 || v > 1024L * 1024 * 1024) goto bad;
            o->pull_max_bytes = v;
            break;
        case O_SCHEDTICK:
            /* 0 (in any unit): no own tick; POST /v1/schedules:tick only */
            if ((ms = config_parse_ms(optarg)) < 0 || ms > 3600000) goto bad;
            o->schedule_tick_ms = (int)ms;
            break;
        case O_MAXJOBS:
            if (parse_long(optarg, &v) != 0 || v < 0 || v > 100000) goto bad;
            o->max_active_jobs = (int)v;
            break;
        case O_HELP:
            fputs(USAGE, stdout);
            fputs(USAGE_MORE, stdout);
            fputs(USAGE_PULL, stdout);
            return 1;
        default: fprintf(stderr, "(see 'sluice serve --help')\n"); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluice serve: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->n_subs == 0 && getenv("SLUICE_SUBSCRIPTIONS") && (o->subs_env = xstrdup(getenv("SLUICE_SUBSCRIPTIONS")))) {
        char *save = NULL;
        for (char *t = strtok_r(o->subs_env, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (o->n_subs == MAX_LIST_OPT || !pubsub_pull_valid_name(t)) {
                fprintf(stderr, "sluice serve: invalid subscription '%s' in SLUICE_SUBSCRIPTIONS\n", t);
                return -1;
            }
            o->subs[o->n_subs++] = t;
        }
    }
    if (o->notify_webhook == NULL) o->notify_webhook = getenv("SLUICE_NOTIFY_WEBHOOK");
    if (o->notify_topic == NULL) o->notify_topic = getenv("SLUICE_NOTIFY_TOPIC");
    if (o->notify_secret == NULL) o->notify_secret = getenv("SLUICE_NOTIFY_SECRET");
    if (o->notify_on == NULL) o->notify_on = getenv("SLUICE_NOTIFY_ON");
    const char *why = NULL;
    if (o->notify_webhook && *o->notify_webhook && (why = wf_webhook_url_problem(o->notify_webhook)) != NULL) {
        fprintf(stderr, "sluice serve: --notify-webhook '%s' %s\n", o->notify_webhook, why);
        return -1;
    }
    if (o->notify_topic && *o->notify_topic && (why = wf_topic_problem(o->notify_topic)) != NULL) {
        fprintf(stderr, "sluice serve: --notify-topic '%s' %s\n", o->notify_topic, why);
        return -1;
    }
    if (o->notify_on && *o->notify_on && wf_run_event_mask(o->notify_on) <= 0) {
        fprintf(stderr, "sluice serve: --notify-on '%s': a comma-separated list of started, succeeded, failed, "
                        "cancelled, recovered, deadline_missed\n", o->notify_on);
        return -1;
    }
    if (o->workflows_dir == NULL) {
        fprintf(stderr, "sluice serve: --workflows DIR is required\n");
        return -1;
    }
    if (!o->no_auth && o->audience == NULL) {
        fprintf(stderr, "sluice serve: --audience is required (or --no-auth for development)\n");
        return -1;
    }
    if (o->operator_token != NULL && o->operator_token[0] == '\0') {
        /* refused rather than taken as "no token": an empty secret is a mistake to report, not a setting */
        fprintf(stderr, "sluice serve: the operator token is empty (--operator-token or $SLUICE_OPERATOR_TOKEN): "
                        "give a secret, or leave both unset for no operator token\n");
        return -1;
    }
    return 0;
bad:
    /* By value, not by index: the table's order need not follow the enum's. */
    for (const struct option *op = opts; op->name; op++)
        if (op->val == c) fprintf(stderr, "sluice serve: invalid value '%s' for --%s\n", optarg ? optarg : "", op->name);
    return -1;
}

static int write_ready_file(const char *path, const char *url)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return -1;
    fprintf(f, "%s\n", url);
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

/* Loading the workflows is the bulk of start-up (a Lua VM per file): it runs on its own thread while the store
 * and the Dataflow client open. */
typedef struct {
    const char *dir;
    const lh_limits *limits;
    wfset *set;
} initial_load;

static void *load_main(void *arg)
{
    initial_load *il = arg;
    const char *paths[] = {il->dir};
    wfset_options wo = {.paths = paths, .n_paths = 1, .limits = il->limits};
    il->set = wfset_load(&wo);
    return NULL;
}

int server_main(int argc, char **argv)
{
    int fault_pause_at = 0; /* SLUICE_FAULT_PAUSE_BEFORE_LAUNCH */
    serve_opts o = {0};
    int pr = parse_args(argc, argv, &o);
    if (pr != 0) return pr > 0 ? EXIT_OK : EXIT_USAGE;
    int rc = EXIT_RUNTIME;
    char *err = NULL;
    api_declare_metrics();
    metrics_declare("sluice_store_ops_total", METRIC_COUNTER,
                    "Firestore documents this process read, wrote and deleted (op: read, write, delete), what Firestore "
                    "bills; absent on the other stores");
    /* Signals are taken by sigwait in this thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    store *estore = NULL, *wstore = NULL;
    checkpointer *ckpt = NULL;
    store_pool *reads = NULL;
    jobs_api *api = NULL;
    engine *eng = NULL;
    engine_loop *loop = NULL;
    notifier *notifier_ = NULL;
    ingress *ing = NULL;
    reloader *rl = NULL;
    oidc *od = NULL;
    serve_refusals *refusals = NULL;
    hs_server *http = NULL;
    pubsub_pull *puller = NULL;
    wfset_box *box = wfset_box_new(NULL);
    /* Every workflow VM (loading, reloading, the engine's) gets these limits: it registers its calls in progress
     * with one watch, which /readyz consults (engine_loop_wedged), and reports each call to sluice_lua_call_seconds
     * (api_observe_lua). Default budgets otherwise. */
    lh_watch *lua_watch = lh_watch_new();
    lh_limits lua_limits = {.watch = lua_watch, .observe = api_observe_lua};
    initial_load il = {.dir = o.workflows_dir, .limits = &lua_limits};
    pthread_t loader;
    int loading = pthread_create(&loader, NULL, load_main, &il) == 0;
    if (!loading) load_main(&il);

    /* The engine's handle syncs only launch intents; the writer's acknowledges events, so it syncs every commit. */
    /* --store-poll-only: a transaction pooler may sit between, so no handle keeps session state. Neither handle
     * checkpoints the SQLite log as it commits: the checkpointer thread does (checkpointer.h). The writer polls a
     * held write lock every 100 us rather than with SQLite's 1-100 ms back-off. */
    store_options eso = {.synchronous = config_engine_sync_full(&o.cfg) ? STORE_SYNC_FULL : STORE_SYNC_NORMAL,
                         .manual_checkpoint = 1, .pooled = o.store_poll_only},
                  wso = {.synchronous = config_ack_sync_full(&o.cfg) ? STORE_SYNC_FULL : STORE_SYNC_NORMAL,
                         .manual_checkpoint = 1, .busy_poll_us = 100, .pooled = o.store_poll_only};
    if (store_open(o.cfg.store, &eso, &estore, &err) != STORE_OK ||
        store_open(o.cfg.store, &wso, &wstore, &err) != STORE_OK) {
        char *shown = store_url_redacted(o.cfg.store); /* no PostgreSQL password in the message */
        fprintf(stderr, "sluice serve: cannot open the store %s: %s\n", shown ? shown : "?", err ? err : "?");
        free(shown);
        goto done;
    }
    if (strcmp(store_backend_name(wstore), "sqlite") == 0 &&
        (ckpt = checkpointer_start(o.cfg.store, &wso, NULL, &err)) == NULL) {
        fprintf(stderr, "sluice serve: cannot start the checkpointer on %s: %s\n", o.cfg.store, err ? err : "?");
        goto done;
    }
    reads = store_pool_new(o.cfg.store, &wso);
    jobs_api_df_options ao = {.base_url = o.cfg.dataflow_url, .credentials = o.cfg.credentials,
                              .static_token = o.cfg.token, .no_auth = o.dataflow_no_auth};
    if ((api = jobs_api_df_new(&ao, &err)) == NULL) {
        fprintf(stderr, "sluice serve: Dataflow credentials: %s\n", err ? err : "?");
        goto done;
    }
    /* The default project, resolved once before the engine starts; workflows may be added by a reload, so the
     * credentials are asked whenever neither --project nor SLUICE_PROJECT names one. */
    const char *default_project = jobs_api_df_default_project(api, &o.cfg, 1);
    if ((api = counting_api_new(api)) == NULL) goto done;
    engine_options eo = {.st = estore, .api = api, .default_project = default_project,
                         .max_active_jobs = o.max_active_jobs, .lua = lua_limits};
    eo.notify.webhook = o.notify_webhook && *o.notify_webhook ? o.notify_webhook : NULL;
    eo.notify.topic = o.notify_topic && *o.notify_topic ? o.notify_topic : NULL;
    eo.notify.on = o.notify_on && *o.notify_on ? (unsigned)wf_run_event_mask(o.notify_on) : 0;
    eo.rec = rec_policy_default();
    eo.rec.poll_ms = o.cfg.poll_ms;
    eo.rec.lag_window_ms = o.cfg.lag_window_ms;
    eo.rec.lease_ms = o.lease_ms;
    if (eo.rec.lease_ms < o.cfg.poll_ms * 2) eo.rec.lease_ms = o.cfg.poll_ms * 2;
    const char *fault = getenv("SLUICE_FAULT_PAUSE_BEFORE_LAUNCH");
    if (fault != NULL && (fault_pause_at = atoi(fault)) > 0) {
        log_warn("serve: SLUICE_FAULT_PAUSE_BEFORE_LAUNCH=%d: this process stops itself before that launch "
                 "(fault injection for tests)", fault_pause_at);
        eo.before_launch = fault_pause;
        eo.before_launch_ud = &fault_pause_at;
    }
    if ((eng = engine_new(&eo, &err)) == NULL) {
        fprintf(stderr, "sluice serve: %s\n", err ? err : "cannot start the engine");
        goto done;
    }
    if (loading) pthread_join(loader, NULL);
    loading = 0;
    if (il.set == NULL) goto done;
    {
        size_t n = wfset_count(il.set);
        wf_workflow **wfs = xcalloc(n + 1, sizeof *wfs);
        for (size_t i = 0; i < n; i++) wfs[i] = wfset_at(il.set, i);
        engine_set_workflows(eng, wfs, n); /* the loop's thread does not run yet */
        free(wfs);
    }
    wfset_box_put(box, wfset_ref(il.set));
    /* Loading left parse garbage in the heap; hand those pages back so an idle server stays small. */
    malloc_trim(0);
    if (json_array_size(wfset_errors(il.set)) > 0)
        log_warn("serve: %zu workflow file(s) have errors; see /v1/workflows", json_array_size(wfset_errors(il.set)));
    if (o.no_auth) {
        log_warn("serve: --no-auth: every request is accepted without authentication");
    } else {
        o.issuers[o.n_issuers] = NULL;
        o.emails[o.n_emails] = NULL;
        o.api_emails[o.n_api_emails] = NULL;
        /* With an API allow-list, oidc accepts any verified identity and serve_auth applies both lists. */
        oidc_options oo = {.jwks_url = o.jwks_url, .jwks_file = o.jwks_file, .audience = o.audience,
                           .issuers = o.n_issuers ? o.issuers : NULL,
                           .emails = o.n_emails && !o.n_api_emails ? o.emails : NULL};
        const char *oe = NULL;
        if ((od = oidc_new(&oo, &oe)) == NULL) {
            fprintf(stderr, "sluice serve: %s\n", oe);
            goto done;
        }
        if (o.n_emails == 0) log_warn("serve: no --allow-email: any Google-verified identity with the audience is accepted");
        if (o.n_api_emails == 0) log_warn("serve: no --api-allow-email: the identities accepted on ingress may also use the API");
    }
    if (o.trust_header)
        log_warn("serve: --ui-trust-header %s: any request carrying that header is allowed on the API; only safe "
                 "behind a proxy that sets it and strips it from clients", o.trust_header);
    refusals = serve_refusals_new(60000); /* one WARNING line per route and reason per minute */
    serve_auth auth = {.no_auth = o.no_auth, .operator_token = o.operator_token, .oidc = od,
                       .trust_header = o.trust_header, .emails = o.n_api_emails && o.n_emails ? o.emails : NULL,
                       .api_emails = o.n_api_emails ? o.api_emails : NULL, .refusals = refusals};
    /* Run notifications: delivered by a thread of their own, and in POST /v1/reconcile (scaled to zero). */
    notify_options no = {.store_url = o.cfg.store, .secret = o.notify_secret, .pubsub_url = o.pubsub_url,
                         .credentials = o.cfg.credentials, .static_token = o.cfg.token};
    notify_options_from_env(&no);
    notify_declare_metrics();
    /* $SLUICE_TEST_NOTIFY_NO_THREAD=1 (tests only) leaves the thread unstarted, as a container scaled to zero starves
     * it: then only POST /v1/reconcile delivers. */
    const char *no_thread = getenv("SLUICE_TEST_NOTIFY_NO_THREAD");
    if ((notifier_ = notify_new(&no, &err)) == NULL ||
        (!(no_thread && strcmp(no_thread, "1") == 0) && notify_start(notifier_) != 0)) {
        fprintf(stderr, "sluice serve: notifications: %s\n", err ? err : "cannot start");
        goto done;
    }
    if (o.notify_secret == NULL || *o.notify_secret == '\0')
        log_info("serve: no --notify-secret: webhooks get run events unsigned (no X-Sluice-Signature)");
    engine_loop_options lo = {.eng = eng, .st = estore, .tick_ms = o.tick_ms, .publish_metrics = 1, .notify = notifier_,
                              .retain_ms = o.retain_ms, .listen_url = o.store_poll_only ? NULL : o.cfg.store,
                              .lease_ms = o.lease_ms, .lua_watch = lua_watch, .hold_ms = o.process_ms,
                              .every = o.schedule_tick_ms > 0 ? schedule_every : NULL, .every_ms = o.schedule_tick_ms};
    if ((loop = engine_loop_new(&lo)) == NULL || engine_loop_start(loop) != 0) goto done;
    ingress_options io = {.writer = wstore, .ckpt = ckpt, .reads = reads, .workflows = box, .auth = &auth, .loop = loop,
                          .adopt_foreign = o.adopt_foreign, .process_ms = o.process_ms,
                          .writer_realtime = !o.writer_normal};
    if ((ing = ingress_new(&io)) == NULL || ingress_start(ing) != 0) goto done;
    if (o.n_subs > 0) {
        int ps_no_auth = 0;
        char *ps_url = pubsub_pull_endpoint(o.pubsub_url, getenv("PUBSUB_EMULATOR_HOST"), &ps_no_auth);
        if (ps_no_auth) log_info("serve: PUBSUB_EMULATOR_HOST: Pub/Sub at %s without credentials", ps_url);
        const char *fault_nack = getenv("SLUICE_FAULT_NACK_PULLED"), *fault_hold = getenv("SLUICE_FAULT_HOLD_PULLED");
        pubsub_pull_options po = {.ing = ing, .subscriptions = o.subs, .n_subscriptions = o.n_subs,
                                  .base_url = ps_url, .no_auth = ps_no_auth, .static_token = o.cfg.token,
                                  .credentials = o.cfg.credentials, .max_messages = (int)o.pull_max_messages,
                                  .max_bytes = (size_t)o.pull_max_bytes,
                                  .fault_nack = fault_nack ? atoi(fault_nack) : 0,
                                  .fault_hold = fault_hold ? atoi(fault_hold) : 0};
        char *pe = NULL;
        puller = pubsub_pull_new(&po, &pe);
        free(ps_url);
        if (puller == NULL) {
            fprintf(stderr, "sluice serve: %s\n", pe ? pe : "cannot start Pub/Sub pull");
            free(pe);
            goto done;
        }
        if (pubsub_pull_start(puller) != 0) goto done;
    }
    reloader_options ro = {.dir = o.workflows_dir, .box = box, .loop = loop, .watch = !o.no_watch,
                           .limits = &lua_limits};
    if ((rl = reloader_new(&ro, il.set)) == NULL) goto done;
    api_ctx ctx = {.reads = reads, .workflows = box, .auth = &auth, .loop = loop, .ingress = ing, .reloader = rl,
                   .oidc = od};
    hs_options ho = {.listen = o.listen, .port = o.port, .threads = o.threads, .max_connections = o.max_conns,
                     .max_connections_per_ip = o.max_conns_ip, .idle_timeout_s = o.idle_timeout_s,
                     .read_timeout_s = o.read_timeout_s, .max_body = o.max_body, .handler = api_route, .ud = &ctx,
                     .on_complete = api_on_complete};
    const char *he = NULL;
    if ((http = hs_start(&ho, &he)) == NULL) {
        fprintf(stderr, "sluice serve: %s\n", he);
        goto done;
    }
    /* url: where a client on this machine reaches the server (stdout, --ready-file); the log names the address
     * actually bound, which is every interface unless --listen says otherwise. */
    char url[128];
    const char *bound = o.listen ? o.listen : "0.0.0.0";
    snprintf(url, sizeof url, "http://%s:%d", strcmp(bound, "0.0.0.0") == 0 ? "127.0.0.1" : bound, hs_port(http));
    printf("{\"listening\":\"%s\"}\n", url);
    fflush(stdout);
    if (o.ready_file && write_ready_file(o.ready_file, url) != 0)
        log_warn("serve: cannot write %s: %s", o.ready_file, strerror(errno));
    log_info("serve: listening on %s:%d%s with %zu workflow(s)", bound, hs_port(http),
             strcmp(bound, "0.0.0.0") == 0 ? " (every interface)" : "", wfset_count(il.set));
    if (od) oidc_prefetch(od);

    for (;;) {
        int sig = 0;
        sigwait(&sigs, &sig);
        if (sig == SIGHUP) {
            log_info("serve: SIGHUP: reloading %s", o.workflows_dir);
            reloader_trigger(rl);
            continue;
        }
        log_info("serve: signal %d: draining", sig);
        break;
    }
    engine_loop_drain(loop);
    pubsub_pull_stop(puller, o.grace_ms); /* no more pulls; what ingress recorded is acknowledged, the rest nacked */
    hs_shutdown(http, o.grace_ms);
    rc = EXIT_OK;
done:
    if (loading) pthread_join(loader, NULL);
    if (loop) engine_loop_drain(loop);
    if (http && rc != EXIT_OK) hs_shutdown(http, 0);
    reloader_free(rl);
    pubsub_pull_free(puller); /* before ingress: its answers go to the puller */
    ingress_free(ing);    /* answers what it holds (held answers go to the loop, which is still running) */
    engine_loop_free(loop);
    notify_free(notifier_); /* after the loop: a reconcile request may be delivering */
    hs_free(http);
    free(err);
    engine_free(eng);
    if (api) api->ops->free(api); /* calls still outstanding are answered to their (orphaned) callers */
    store_pool_free(reads);
    wfset_unref(il.set);
    wfset_box_free(box);
    oidc_free(od);
    serve_refusals_free(refusals);
    checkpointer_stop(ckpt); /* after the writers stopped; the last handle to close checkpoints what is left */
    store_close(estore);
    store_close(wstore);
    metrics_reset();
    lh_watch_free(lua_watch); /* after every workflow VM is gone */
    free(o.subs_env);
    if (rc == EXIT_OK) log_info("serve: stopped");
    return rc;
}
