/* config: shared settings from the environment, overridden by flags; the precedence of project sources.
 * Uses: libc, store (types), log. Must not: open anything. */
#include "config.h"

#include "log.h"

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
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
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
    c->project_env = getenv("SLUICE_PROJECT");
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

const char *config_project(const config_projects *p, config_project_source *source)
{
    const struct {
        const char *value;
        config_project_source from;
    } order[] = {{p->step, CONFIG_PROJECT_STEP},
                 {p->workflow, CONFIG_PROJECT_WORKFLOW},
                 {p->flag, CONFIG_PROJECT_FLAG},
                 {p->env, CONFIG_PROJECT_ENV},
                 {p->credentials, CONFIG_PROJECT_CREDENTIALS}};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (order[i].value != NULL && order[i].value[0] != '\0') {
            if (source) *source = order[i].from;
            return order[i].value;
        }
    if (source) *source = CONFIG_PROJECT_NONE;
    return NULL;
}

const char *config_project_source_name(config_project_source s)
{
    switch (s) {
    case CONFIG_PROJECT_STEP: return "the step";
    case CONFIG_PROJECT_WORKFLOW: return "the workflow";
    case CONFIG_PROJECT_FLAG: return "--project";
    case CONFIG_PROJECT_ENV: return "SLUICE_PROJECT";
    case CONFIG_PROJECT_CREDENTIALS: return "the credentials";
    default: return "nowhere";
    }
}

const char *config_default_project(const sluice_config *c, const char *credentials_project, const char *credentials_from)
{
    config_project_source from;
    const char *p = config_project(&(config_projects){.flag = c->project, .env = c->project_env,
                                                      .credentials = credentials_project},
                                   &from);
    if (p == NULL)
        log_warn("no default project: launch steps of workflows that name none will fail (set project in the "
                 "workflow, pass --project, set SLUICE_PROJECT, or use credentials that name one)");
    else if (from == CONFIG_PROJECT_CREDENTIALS)
        log_info("default project %s from the credentials (%s)", p, credentials_from ? credentials_from : "?");
    else
        log_info("default project %s from %s", p, config_project_source_name(from));
    return p;
}

int config_engine_sync_full(const sluice_config *c)
{
    return c->sync == CONFIG_SYNC_FULL;
}

int config_ack_sync_full(const sluice_config *c)
{
    return c->sync != CONFIG_SYNC_NORMAL;
}
