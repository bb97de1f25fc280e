/* config: shared settings from the environment, overridden by flags.
 * Uses: libc. Must not: open anything. */
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
    const char *sync = getenv("SLUICE_SYNC");
    c->sync_normal = !(sync != NULL && strcasecmp(sync, "full") == 0);
}
