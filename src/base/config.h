/* config: the settings shared by the commands that talk to Dataflow (run, serve): where state lives, which
 * Dataflow endpoint and credentials to use, polling, and the one rule for which project a launch goes to.
 * Defaults come from the environment (SLUICE_*), flags win.
 * Uses: libc, log. Must not: open anything; it only gathers and checks values. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H
#include <stdint.h>

enum { CONFIG_SYNC_DEFAULT = 0, CONFIG_SYNC_FULL, CONFIG_SYNC_NORMAL };

typedef struct {
    const char *store;        /* SLUICE_STORE, default "sluice.db" */
    const char *dataflow_url; /* SLUICE_DATAFLOW_URL, default Google's */
    const char *credentials;  /* a credentials file; default ADC (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata) */
    const char *token;        /* SLUICE_TOKEN: a static bearer token */
    int no_auth;              /* send no credentials (the emulator with auth off) */
    const char *project;      /* --project: for workflows that name none (NULL: not given) */
    const char *project_env;  /* $SLUICE_PROJECT: the same, below --project */
    int64_t poll_ms;          /* SLUICE_POLL_INTERVAL: between checks of a running job (default 15 s) */
    int64_t lag_window_ms;    /* SLUICE_LAG_WINDOW: how long a job that should be ending (an end event, a stop) is
                               * checked on the short schedule before the poll interval applies (default 2 min) */
    int sync;                 /* SLUICE_SYNC: CONFIG_SYNC_DEFAULT, _FULL (sync every commit) or _NORMAL (sync none
                               * but launch intents) */
} sluice_config;

/* 1 when the engine's store handle syncs every commit (store.h STORE_SYNC_FULL): only with SLUICE_SYNC=full, else
 * NORMAL. The engine syncs the log itself before any launch leaves (store_flush), so only checks and bookkeeping
 * can be lost to a power cut. */
int config_engine_sync_full(const sluice_config *c);
/* 1 when commits that acknowledge something to a caller (an event's 2xx) sync (FULL): unless SLUICE_SYNC=normal,
 * so an acknowledged event survives power loss. */
int config_ack_sync_full(const sluice_config *c);

/* Where a launch's project comes from, in precedence order (docs/workflows.md, "Which project"). */
typedef enum {
    CONFIG_PROJECT_NONE = 0,
    CONFIG_PROJECT_STEP,        /* the step's `project` */
    CONFIG_PROJECT_WORKFLOW,    /* the workflow's `project` */
    CONFIG_PROJECT_FLAG,        /* --project */
    CONFIG_PROJECT_ENV,         /* $SLUICE_PROJECT */
    CONFIG_PROJECT_CREDENTIALS, /* the credentials: key file project_id, gcloud ADC quota_project_id, metadata */
} config_project_source;

typedef struct {
    const char *step, *workflow, *flag, *env, *credentials; /* each NULL or "" when not set */
} config_projects;

/* How long start-up waits for the metadata server's project id before going on without it. */
#define CONFIG_PROJECT_LOOKUP_MS 5000

/* The project a launch goes to: the first of step, workflow, flag, env and credentials that is set (non-empty),
 * and which one it was into *source (may be NULL). NULL and CONFIG_PROJECT_NONE when none is. Borrowed from p.
 * This is the only place that orders them: start-up calls it without step and workflow for the default that
 * the engine is given, and wf_build_launch applies the step's and the workflow's over that default in the
 * same order. */
const char *config_project(const config_projects *p, config_project_source *source);
const char *config_project_source_name(config_project_source s);
/* The default project of `sluice run` and `sluice serve` (for workflows and steps that name none): --project,
 * $SLUICE_PROJECT, then `credentials_project` (NULL if the credentials name none; `credentials_from` says which
 * credentials, for the log). Logs the winner, or a warning naming every way to set one. Borrowed. */
const char *config_default_project(const sluice_config *c, const char *credentials_project, const char *credentials_from);

/* Fills defaults from the environment. */
void config_init(sluice_config *c);
/* Parses a duration ("500ms", "15s", "2m", "4h", "30d", or plain seconds) into milliseconds; -1 if invalid. */
int64_t config_parse_ms(const char *text);

#endif
