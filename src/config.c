/* config: shared settings from the environment, overridden by flags.
 * Uses: libc, store (types). Must not: open anything. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int64_t config_parse_ms(const char *text)
{
    if (text == NULL || *text == '\0') return -1;
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || v < 0 || !isfinite(v)) return -1;
    double mult = 1000;
    if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (*end != '\0' && strcmp(end, "s") != 0)
        return -1;
    return (int64_t)(v * mult);
}

void config_init(sluice_config *c)
{
    memset(c, 0, sizeof *c);
    c->store = getenv("SLUICE_STORE") ? getenv("SLUICE_STORE") : "sluice.db";
    c->dataflow_url = getenv("SLUICE_DATAFLOW_URL");
    c->credentials = getenv("SLUICE_CREDENTIALS");
    c->token = getenv("SLUICE_TOKEN");
    c->project = getenv("SLUICE_PROJECT");
    int64_t poll = config_parse_ms(getenv("SLUICE_POLL_INTERVAL"));
    c->poll_ms = poll > 0 ? poll : 15000;
    int64_t lag = config_parse_ms(getenv("SLUICE_LAG_WINDOW"));
    c->lag_window_ms = lag > 0 ? lag : 120000;
    const char *sync = getenv("SLUICE_SYNC");
    c->sync = sync == NULL                      ? CONFIG_SYNC_DEFAULT
              : strcasecmp(sync, "full") == 0   ? CONFIG_SYNC_FULL
              : strcasecmp(sync, "normal") == 0 ? CONFIG_SYNC_NORMAL
                                                : CONFIG_SYNC_DEFAULT;
}

store_sync config_engine_sync(const sluice_config *c)
{
    return c->sync == CONFIG_SYNC_FULL ? STORE_SYNC_FULL : STORE_SYNC_NORMAL;
}

store_sync config_ack_sync(const sluice_config *c)
{
    return c->sync == CONFIG_SYNC_NORMAL ? STORE_SYNC_NORMAL : STORE_SYNC_FULL;
}
