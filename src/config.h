/* config: the settings shared by the commands that talk to Dataflow (run, serve): where state lives, which
 * Dataflow endpoint and credentials to use, polling. Defaults come from the environment (SLUICE_*), flags win.
 * Uses: libc. Must not: open anything; it only gathers and checks values. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H
#include <stdint.h>

typedef struct {
    const char *store;        /* SLUICE_STORE, default "sluice.db" */
    const char *dataflow_url; /* SLUICE_DATAFLOW_URL, default Google's */
    const char *credentials;  /* a credentials file; default ADC (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata) */
    const char *token;        /* SLUICE_TOKEN: a static bearer token */
    int no_auth;              /* send no credentials (the emulator with auth off) */
    const char *project;      /* SLUICE_PROJECT: for workflows that name none */
    int64_t poll_ms;          /* SLUICE_POLL_INTERVAL: between checks of a running job (default 15 s) */
    int sync_normal;          /* default 1: commits survive a crash, and launch intents are synced before a launch
                               * is sent (store_flush); SLUICE_SYNC=full syncs every commit */
} sluice_config;

/* Fills defaults from the environment. */
void config_init(sluice_config *c);
/* Parses a duration ("500ms", "15s", "2m", or plain seconds) into milliseconds; -1 if invalid. */
int64_t config_parse_ms(const char *text);

#endif
