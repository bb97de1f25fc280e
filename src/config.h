/* config: the settings shared by the commands that talk to Dataflow (run, serve): where state lives, which
 * Dataflow endpoint and credentials to use, polling. Defaults come from the environment (SLUICE_*), flags win.
 * Uses: libc. Must not: open anything; it only gathers and checks values. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H
#include <stdint.h>

#include "store.h"

enum { CONFIG_SYNC_DEFAULT = 0, CONFIG_SYNC_FULL, CONFIG_SYNC_NORMAL };

typedef struct {
    const char *store;        /* SLUICE_STORE, default "sluice.db" */
    const char *dataflow_url; /* SLUICE_DATAFLOW_URL, default Google's */
    const char *credentials;  /* a credentials file; default ADC (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata) */
    const char *token;        /* SLUICE_TOKEN: a static bearer token */
    int no_auth;              /* send no credentials (the emulator with auth off) */
    const char *project;      /* SLUICE_PROJECT: for workflows that name none */
    int64_t poll_ms;          /* SLUICE_POLL_INTERVAL: between checks of a running job (default 15 s) */
    int64_t lag_window_ms;    /* SLUICE_LAG_WINDOW: how long a job that should be ending (an end event, a stop) is
                               * checked on the short schedule before the poll interval applies (default 2 min) */
    int sync;                 /* SLUICE_SYNC: CONFIG_SYNC_DEFAULT, _FULL (sync every commit) or _NORMAL (sync none
                               * but launch intents) */
} sluice_config;

/* The durability of the engine's store handle: NORMAL unless SLUICE_SYNC=full. The engine syncs the log itself
 * before any launch leaves (store_flush), so only checks and bookkeeping can be lost to a power cut. */
store_sync config_engine_sync(const sluice_config *c);
/* The durability of commits that acknowledge something to a caller (an event's 2xx): FULL unless
 * SLUICE_SYNC=normal, so an acknowledged event survives power loss. */
store_sync config_ack_sync(const sluice_config *c);

/* Fills defaults from the environment. */
void config_init(sluice_config *c);
/* Parses a duration ("500ms", "15s", "2m", or plain seconds) into milliseconds; -1 if invalid. */
int64_t config_parse_ms(const char *text);

#endif
