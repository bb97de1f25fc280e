/* cli: the sluice commands: argument parsing, output, exit codes (0 ok, 1 runtime error, 2 usage/invalid).
 * Uses: every subsystem through its public header. Must not: be called by any other subsystem; it holds no
 * logic that a server request would also need (that lives in the subsystems). */
#include "cli.h"

#include "decide.h"
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backfill_cli.h"
#include "client.h"
#include "config.h"
#include "dataflow.h"
#include "decide.h"
#include "emulator.h"
#include "engine.h"
#include "engine_loop.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "mem.h"
#include "notify.h"
#include "plan.h"
#include "preflight.h"
#include "result.h"
#include "serve_cmd.h"
#include "sink_filter.h"
#include "store_migrate.h"
#include "util.h"
#include "wf_graph.h"
#include "wfset.h"
#include "workflow.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *usage;
} cli_command;

static const cli_command *find_command(const char *name);

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "sluice %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see 'sluice %s --help')\n", cmd);
    return EXIT_USAGE;
}

static int print_help(const char *cmd)
{
    const cli_command *c = find_command(cmd);
    fputs(c->usage, stdout);
    return EXIT_OK;
}

/* "k=v" into params (borrowed). Returns 0 or -1. */
static int add_param(json_t *params, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv) return -1;
    char *k = xstrndup(kv, (size_t)(eq - kv));
    json_object_set_new(params, k, json_string(eq + 1));
    free(k);
    return 0;
}

static void print_diags(wf_diags *d)
{
    for (size_t i = 0; i < d->n; i++) fprintf(stderr, "%s\n", d->items[i]);
}

/* ---- validate ---- */

static int cmd_validate(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {"quiet", no_argument, NULL, 'q'}, {0, 0, 0, 0}};
    int quiet = 0, c;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        if (c == 'h') return print_help("validate");
        if (c == 'q')
            quiet = 1;
        else
            return usage_error("validate", "unknown option %s", argv[optind - 1]);
    }
    if (optind >= argc) return usage_error("validate", "%s", "give at least one file or directory");
    wf_diags d = {0};
    wf_set set;
    wf_set_load(&set, argv + optind, (size_t)(argc - optind), &d);
    if (!quiet)
        for (size_t i = 0; i < set.n; i++)
            printf("ok %s: workflow '%s', %zu steps\n", set.wfs[i]->path, set.wfs[i]->name, set.wfs[i]->n_steps);
    print_diags(&d);
    int rc = d.n > 0 ? EXIT_USAGE : EXIT_OK;
    if (d.n > 0)
        fprintf(stderr, "%zu problem%s in %zu file%s\n", d.n, d.n == 1 ? "" : "s", set.n_files, set.n_files == 1 ? "" : "s");
    wf_set_free(&set);
    wf_diags_free(&d);
    return rc;
}

/* ---- graph ---- */

static wf_workflow *load_one(const char *cmd, const char *path)
{
    wf_diags d = {0};
    wf_workflow *wf = wf_load_file(path, NULL, &d);
    print_diags(&d);
    if (wf == NULL) fprintf(stderr, "sluice %s: %s is not a valid workflow\n", cmd, path);
    wf_diags_free(&d);
    return wf;
}

static int cmd_graph(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {"format", required_argument, NULL, 'f'}, {0, 0, 0, 0}};
    const char *format = "mermaid";
    int c;
    while ((c = getopt_long(argc, argv, "hf:", opts, NULL)) != -1) {
        if (c == 'h') return print_help("graph");
        if (c == 'f')
            format = optarg;
        else
            return usage_error("graph", "unknown option %s", argv[optind - 1]);
    }
    if (optind != argc - 1) return usage_error("graph", "%s", "give exactly one workflow file");
    if (strcmp(format, "mermaid") != 0 && strcmp(format, "dot") != 0)
        return usage_error("graph", "--format must be mermaid or dot, not '%s'", format);
    wf_workflow *wf = load_one("graph", argv[optind]);
    if (wf == NULL) return EXIT_USAGE;
    char *g = strcmp(format, "dot") == 0 ? wf_graph_dot(wf) : wf_graph_mermaid(wf);
    fputs(g, stdout);
    free(g);
    wf_free(wf);
    return EXIT_OK;
}

/* ---- run ---- */

static volatile sig_atomic_t stop_requested;
static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* The unfinished run of this workflow started from the CLI with these params, to resume after a kill. */
static int find_resumable(store *st, const char *workflow, const char *params_text, char *run_id, size_t len)
{
    int found = 0;
    const int states[] = {STORE_RUN_RUNNING, STORE_RUN_CANCELLING};
    for (size_t k = 0; k < 2 && !found; k++) {
        store_run_filter f = {.state = states[k], .workflow = workflow, .limit = 1000};
        store_run_list l = {0};
        if (store_run_list_page(st, &f, &l, NULL) != STORE_OK) continue;
        for (size_t i = 0; i < l.count && !found; i++) {
            store_run *r = &l.items[i];
            if (r->origin && strcmp(r->origin, "cli") == 0 && r->params_json && strcmp(r->params_json, params_text) == 0) {
                snprintf(run_id, len, "%s", r->id);
                found = 1;
            }
        }
        store_run_list_free(&l);
    }
    return found;
}

static const char *short_state(store_step_state s) { return store_step_state_name(s); }

/* Prints the run's steps: a redrawn table on a terminal, one line per change otherwise. */
typedef struct {
    int tty;
    int drawn_lines;
    char **last;   /* "step state job" per step, to print changes only */
    size_t n_last;
    int64_t started;
} progress;

static void progress_show(progress *p, store *st, const char *run_id, int final)
{
    store_step_list l = {0};
    store_run r = {0};
    if (store_step_list_run(st, run_id, &l, NULL) != STORE_OK || store_run_get(st, run_id, &r, NULL) != STORE_OK) {
        store_step_list_free(&l);
        return;
    }
    int64_t now = util_now_ms();
    if (p->tty) {
        for (int i = 0; i < p->drawn_lines; i++) fputs("\033[1A\033[2K", stdout);
        printf("run %s  workflow %s  %s  %.1fs\n", r.id, r.workflow, store_run_state_name(r.state),
               (double)(now - p->started) / 1000.0);
        for (size_t i = 0; i < l.count; i++) {
            store_step *s = &l.items[i];
            int64_t end = s->finished_at ? s->finished_at : now;
            printf("  %-20s %-11s %-3d %-40s %6.1fs", s->name, short_state(s->state), s->attempt,
                   s->job_name ? s->job_name : "-", s->started_at ? (double)(end - s->started_at) / 1000.0 : 0.0);
            /* in flight, `error` is why the Dataflow call keeps failing (store_step_set_note) */
            if (s->error && !store_step_state_terminal(s->state)) printf("  %.100s", s->error);
            putchar('\n');
        }
        p->drawn_lines = (int)l.count + 1;
        fflush(stdout);
    } else {
        for (size_t i = 0; i < l.count; i++) {
            store_step *s = &l.items[i];
            char line[512];
            int note = s->error && !store_step_state_terminal(s->state); /* why its Dataflow call keeps failing */
            snprintf(line, sizeof line, "%s %s attempt %d %s%s%s%s%.300s", s->name, short_state(s->state), s->attempt,
                     s->job_name ? s->job_name : "", s->job_id ? " " : "", s->job_id ? s->job_id : "",
                     note ? " " : "", note ? s->error : "");
            size_t j;
            for (j = 0; j < p->n_last; j++)
                if (strncmp(p->last[j], s->name, strlen(s->name)) == 0 && p->last[j][strlen(s->name)] == ' ') break;
            if (j < p->n_last && strcmp(p->last[j], line) == 0) continue;
            if (j == p->n_last) {
                p->last = xrealloc(p->last, (p->n_last + 1) * sizeof *p->last);
                p->last[p->n_last++] = NULL;
            }
            free(p->last[j]);
            p->last[j] = xstrdup(line);
            printf("%7.1fs step %s\n", (double)(now - p->started) / 1000.0, line);
        }
        fflush(stdout);
    }
    if (final) {
        printf("run %s %s%s%s\n", r.id, store_run_state_name(r.state), r.error ? ": " : "", r.error ? r.error : "");
        for (size_t i = 0; i < l.count; i++) {
            if (l.items[i].error) printf("  step %s: %s\n", l.items[i].name, l.items[i].error);
            if (l.items[i].failure_cause) printf("  step %s: cause: %s\n", l.items[i].name, l.items[i].failure_cause);
        }
    }
    store_run_free(&r);
    store_step_list_free(&l);
}

/* The run's events (and any others due in this store) go out before `sluice run` exits, for a bounded time
 * ($SLUICE_NOTIFY_SECRET signs webhooks); what is still undelivered then stays in the store's outbox for the next
 * `sluice run` or `sluice serve` on it. */
static void deliver_notifications(const sluice_config *cfg)
{
    notify_options no = {.store_url = cfg->store, .secret = getenv("SLUICE_NOTIFY_SECRET"),
                         .credentials = cfg->credentials, .static_token = cfg->token, .timeout_ms = 10000};
    notify_options_from_env(&no);
    char *err = NULL;
    notifier *n = notify_new(&no, &err);
    if (n == NULL) {
        fprintf(stderr, "sluice run: notifications: %s\n", err ? err : "?");
        free(err);
        return;
    }
    int64_t until = util_now_ms() + 15000;
    for (;;) {
        notify_pass(n, 10000);
        int64_t due = notify_next_due(n);
        if (stop_requested || due < 0 || due == INT64_MAX || due > until) break;
        int64_t wait = due - util_now_ms();
        if (wait > 0) {
            struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    notify_free(n);
}

/* The run is over, but calls it started may still be out: a failed job's cause (its job messages, asked for
 * when it failed), stops of its other jobs. Ticks until the engine has none outstanding, so what they answer is
 * recorded as `sluice serve` records it (failure_cause), for at most 10 s or until a signal. */
static void settle_answers(engine_loop *loop)
{
    int64_t until = util_now_ms() + 10000;
    while (!stop_requested && util_now_ms() < until && engine_loop_step(loop, 200) > 0) {}
}

static int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},          {"param", required_argument, NULL, 'p'},
        {"store", required_argument, NULL, 's'},   {"dataflow-url", required_argument, NULL, 'u'},
        {"credentials", required_argument, NULL, 'c'}, {"token", required_argument, NULL, 't'},
        {"no-auth", no_argument, NULL, 'n'},       {"project", required_argument, NULL, 'P'},
        {"poll-interval", required_argument, NULL, 'i'}, {"quiet", no_argument, NULL, 'q'},
        {"lag-window", required_argument, NULL, 'L'},
        {0, 0, 0, 0}};
    sluice_config cfg;
    config_init(&cfg);
    json_t *params = json_object();
    int c, quiet = 0, rc = EXIT_USAGE;
    while ((c = getopt_long(argc, argv, "hp:s:u:c:t:nP:i:qL:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': json_decref(params); return print_help("run");
        case 'p':
            if (add_param(params, optarg) != 0) {
                json_decref(params);
                return usage_error("run", "--param takes k=v, not '%s'", optarg);
            }
            break;
        case 's': cfg.store = optarg; break;
        case 'u': cfg.dataflow_url = optarg; break;
        case 'c': cfg.credentials = optarg; break;
        case 't': cfg.token = optarg; break;
        case 'n': cfg.no_auth = 1; break;
        case 'P': cfg.project = optarg; break;
        case 'q': quiet = 1; break;
        case 'i':
            if ((cfg.poll_ms = config_parse_ms(optarg)) <= 0) {
                json_decref(params);
                return usage_error("run", "--poll-interval takes a duration (5s, 500ms), not '%s'", optarg);
            }
            break;
        case 'L':
            if ((cfg.lag_window_ms = config_parse_ms(optarg)) <= 0) {
                json_decref(params);
                return usage_error("run", "--lag-window takes a duration (2m, 30s), not '%s'", optarg);
            }
            break;
        default: json_decref(params); return usage_error("run", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        json_decref(params);
        return usage_error("run", "%s", "give exactly one workflow file");
    }
    wf_workflow *wf = load_one("run", argv[optind]);
    store *st = NULL;
    jobs_api *api = NULL;
    engine *e = NULL;
    engine_loop *loop = NULL;
    progress p = {0};
    char *err = NULL;
    if (wf == NULL) goto done;
    rc = EXIT_RUNTIME;
    store_options so = {.synchronous = config_engine_sync_full(&cfg) ? STORE_SYNC_FULL : STORE_SYNC_NORMAL};
    if (store_open(cfg.store, &so, &st, &err) != STORE_OK) {
        char *shown = store_url_redacted(cfg.store); /* no PostgreSQL password in the message */
        fprintf(stderr, "sluice run: cannot open the store %s: %s\n", shown, err ? err : "?");
        free(shown);
        goto done;
    }
    jobs_api_df_options ao = {.base_url = cfg.dataflow_url, .credentials = cfg.credentials, .static_token = cfg.token,
                              .no_auth = cfg.no_auth};
    if ((api = jobs_api_df_new(&ao, &err)) == NULL) {
        fprintf(stderr, "sluice run: credentials: %s\n", err ? err : "?");
        goto done;
    }
    /* The default project, resolved once before the engine starts (the metadata server is asked only when nothing
     * else names one). */
    engine_options eo = {.st = st, .api = api,
                         .default_project = jobs_api_df_default_project(api, &cfg, !wf_names_every_project(wf))};
    eo.rec = rec_policy_default();
    eo.rec.poll_ms = cfg.poll_ms;
    eo.rec.lag_window_ms = cfg.lag_window_ms;
    if (eo.rec.lease_ms < cfg.poll_ms * 2) eo.rec.lease_ms = cfg.poll_ms * 2;
    if ((e = engine_new(&eo, &err)) == NULL) goto done;
    const char *wf_name = wf->name;
    char *name_copy = xstrdup(wf_name);
    if (engine_add_workflow(e, wf, &err) != 0) {
        wf = NULL;
        fprintf(stderr, "sluice run: %s\n", err ? err : "cannot register the workflow");
        free(name_copy);
        goto done;
    }
    wf = NULL; /* owned by the engine */
    char *ptext = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
    char run_id[32];
    if (find_resumable(st, name_copy, ptext, run_id, sizeof run_id)) {
        fprintf(stderr, "sluice run: resuming run %s of %s\n", run_id, name_copy);
    } else if (engine_start_run(e, name_copy, params, NULL, "cli", run_id, sizeof run_id, &err) < 0) {
        fprintf(stderr, "sluice run: %s\n", err ? err : "cannot start the run");
        free(ptext);
        free(name_copy);
        goto done;
    }
    free(ptext);
    free(name_copy);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    p = (progress){.tty = isatty(STDOUT_FILENO) && !quiet, .started = util_now_ms()};
    engine_loop_options lo = {.eng = e, .st = st};
    loop = engine_loop_new(&lo);
    int64_t last_show = 0;
    store_run r = {0};
    for (;;) {
        /* The engine sleeps until its next due check (or an answer); a terminal is redrawn a few times a
         * second, and a signal cuts any wait short. Waiting costs no CPU. */
        engine_loop_step(loop, p.tty ? 250 : 1000);
        if (store_run_get(st, run_id, &r, NULL) != STORE_OK) break;
        /* A failed run whose workflow cancels its other jobs is over once they are stopped. */
        /* ... and once its failure handler has run (engine_run_over) */
        int finished = engine_run_over(e, run_id) == 1;
        rc = r.state == STORE_RUN_SUCCEEDED ? EXIT_OK : EXIT_RUNTIME;
        store_run_free(&r);
        int64_t now = util_now_ms();
        if (!quiet && (finished || now - last_show >= 200)) {
            progress_show(&p, st, run_id, 0);
            last_show = now;
        }
        if (finished) {
            settle_answers(loop);
            break;
        }
        if (stop_requested) {
            /* A clean stop, not a failure: every launch sent is recorded, and the same command resumes. */
            fprintf(stderr, "sluice run: interrupted; run %s goes on in Dataflow. Run the same command again to resume.\n",
                    run_id);
            rc = EXIT_OK;
            goto done;
        }
    }
    progress_show(&p, st, run_id, 1);
    deliver_notifications(&cfg);
done:
    for (size_t i = 0; i < p.n_last; i++) free(p.last[i]);
    free(p.last);
    free(err);
    wf_free(wf);
    engine_loop_free(loop);
    engine_free(e);
    if (api) api->ops->free(api);
    store_close(st);
    json_decref(params);
    return rc;
}

/* ---- dispatch ---- */

static int cmd_version(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) return print_help("version");
    printf("sluice %s\n", SLUICE_VERSION);
    return EXIT_OK;
}

static const cli_command commands[] = {
    {"validate", cmd_validate, "check workflow files",
     "usage: sluice validate [--quiet] PATH...\n"
     "Loads every workflow file (a directory means its *.lua files) and prints every problem with file:line.\n"
     "Also checks that no job name is claimed by two workflows.\n"
     "Exit status: 0 all valid, 2 problems found.\n"},
    {"plan", plan_main, "show what happens after a job finishes", PLAN_USAGE},
    {"run", cmd_run, "run a workflow to completion in the foreground",
     "usage: sluice run FILE [--param k=v]... [options]\n"
     "Runs one workflow to completion against Dataflow (or the emulator), showing live progress. Re-running the\n"
     "same command after a kill resumes the same run (state lives in the store). Exit 0 when the run succeeds\n"
     "or when SIGINT/SIGTERM stops the command (the run goes on; the same command resumes it), 1 when the run\n"
     "fails, 2 for an invalid workflow or usage.\n"
     "  --param k=v            a run parameter (repeatable)\n"
     "  --store PATH           the state file (default $SLUICE_STORE or ./sluice.db)\n"
     "  --dataflow-url URL     Dataflow endpoint (default $SLUICE_DATAFLOW_URL or https://dataflow.googleapis.com)\n"
     "  --credentials FILE     service-account or authorized_user file (default: Application Default Credentials)\n"
     "  --token TOKEN          a static bearer token (default $SLUICE_TOKEN)\n"
     "  --no-auth              send no credentials (the emulator with auth off)\n"
     "  --project P            project for workflows that name none (default $SLUICE_PROJECT, else the\n"
     "                         credentials' project: key file, gcloud quota project, metadata server)\n"
     "  --poll-interval D      between checks of a running job (default 15s, $SLUICE_POLL_INTERVAL)\n"
     "  --lag-window D         how long a job that should be ending is re-checked on the short schedule\n"
     "                         (default 2m, $SLUICE_LAG_WINDOW)\n"
     "  --quiet                no progress, only the final summary\n"},
    {"preflight", preflight_main, "check every launch request with Dataflow (validateOnly)", PREFLIGHT_USAGE},
    {"sink-filter", sink_filter_main, "print the log sink filter for the workflows' jobs", SINK_FILTER_USAGE},
    {"graph", cmd_graph, "draw a workflow",
     "usage: sluice graph FILE [--format mermaid|dot]\n"
     "Prints the workflow's DAG: steps, fan-out, joins, choices (dashed) and on_failure edges.\n"},
    {"emulator", emu_main, "run the local Dataflow + Google identity emulator",
     "usage: sluice emulator [options]   (sluice emulator --help lists them; see docs/emulator.md)\n"},
    {"serve", server_main, "serve push/Eventarc events and the HTTP API; run the engine",
     "usage: sluice serve --workflows DIR [options]   (sluice serve --help lists them; see docs/api.md)\n"},
    {"start", client_start_main, "start a run on a server", CLIENT_START_USAGE},
    {"status", client_status_main, "show a run (or the latest runs) on a server", CLIENT_STATUS_USAGE},
    {"cancel", client_cancel_main, "cancel a run on a server", CLIENT_CANCEL_USAGE},
    {"redrive", client_redrive_main, "re-run a failed or cancelled run from where it failed", CLIENT_REDRIVE_USAGE},
    {"backfill", backfill_cli_main, "start a workflow's runs for past schedule times on a server", BACKFILL_USAGE},
    {"store", store_cli_main, "store maintenance: migrate a SQLite store to PostgreSQL", STORE_CLI_USAGE},
    {"health", health_main, "probe a running serve's /readyz (exit 0 when ready)", HEALTH_USAGE},
    {"version", cmd_version, "print the version", "usage: sluice version\n"},
    {NULL, NULL, NULL, NULL}};

static const cli_command *find_command(const char *name)
{
    for (const cli_command *c = commands; c->name; c++)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}

static void top_usage(FILE *f)
{
    fprintf(f, "usage: sluice COMMAND [ARGS]   (sluice COMMAND --help for details)\n\ncommands:\n");
    for (const cli_command *c = commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->summary);
}

int cli_main(int argc, char **argv)
{
    if (argc < 2) {
        top_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0) return cmd_version(0, NULL);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        if (argc >= 3 && find_command(argv[2])) return print_help(argv[2]);
        top_usage(stdout);
        return EXIT_OK;
    }
    const cli_command *c = find_command(argv[1]);
    if (c == NULL) {
        fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
        top_usage(stderr);
        return EXIT_USAGE;
    }
    optind = 1;
    return c->fn(argc - 1, argv + 1);
}
