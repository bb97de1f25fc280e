/* serve_cmd: the `sluice serve` command line — its usage, its flags and environment checked into serve_opts (a
 * typo is an error, not a silent default), then one server instance opened, run until a signal, and closed.
 * Uses: server, config, pubsub_pull (subscription names), wf_notify (sink checks), mem. Must not: build or wire
 * the server's parts (server does). */
#include "serve_cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mem.h"
#include "pubsub_pull.h"
#include "result.h"
#include "server.h"
#include "wf_notify.h"

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
            if (o->n_emails == SERVE_MAX_LIST) goto bad;
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
            if (o->n_api_emails == SERVE_MAX_LIST) goto bad;
            o->api_emails[o->n_api_emails++] = optarg;
            break;
        case O_ISS:
            if (o->n_issuers == SERVE_MAX_LIST) goto bad;
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
            if (o->n_subs == SERVE_MAX_LIST || !pubsub_pull_valid_name(optarg)) goto bad;
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
            if (o->n_subs == SERVE_MAX_LIST || !pubsub_pull_valid_name(t)) {
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

int server_main(int argc, char **argv)
{
    serve_opts o = {0};
    int pr = parse_args(argc, argv, &o);
    int rc = pr > 0 ? EXIT_OK : EXIT_USAGE;
    if (pr == 0) {
        serve_instance *si = NULL;
        char *err = NULL;
        rc = EXIT_RUNTIME;
        if (serve_open(&o, &si, &err) == 0) {
            serve_run(si);
            serve_close(si, o.grace_ms);
            rc = EXIT_OK;
        } else if (err != NULL) {
            fprintf(stderr, "sluice serve: %s\n", err);
        }
        free(err);
    }
    free(o.subs_env);
    return rc;
}
