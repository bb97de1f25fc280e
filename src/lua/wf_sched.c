/* wf_sched: the scheduling fields of a workflow declaration (wf_sched.h).
 * Uses: cron, tz, config. Must not: read clocks. */
#include "wf_sched.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "mem.h"

static const char *const overlap_names[] = {"skip", "buffer_one", "allow", "cancel_other"};

const char *wf_overlap_name(wf_overlap o) { return (unsigned)o < 4 ? overlap_names[o] : "?"; }

void wf_sched_clear(wf_schedule *s)
{
    free(s->cron);
    free(s->timezone);
    tz_free(s->zone);
    memset(s, 0, sizeof *s);
}

static int bad(const char **field, const char *name, char *why, size_t cap, const char *msg)
{
    *field = name;
    snprintf(why, cap, "%s", msg);
    return -1;
}

int wf_sched_load(json_t *decl, int *max_active_runs, wf_schedule *out, const char **field, char *why, size_t cap)
{
    memset(out, 0, sizeof *out);
    *max_active_runs = 0;
    json_t *m = json_object_get(decl, "max_active_runs");
    if (m != NULL) {
        double v = json_is_number(m) ? json_number_value(m) : -1;
        if (v < 1 || v > 100000 || floor(v) != v)
            return bad(field, "max_active_runs", why, cap, "max_active_runs must be a whole number from 1 to 100000");
        *max_active_runs = (int)v;
    }
    json_t *s = json_object_get(decl, "schedule");
    if (s == NULL) return 0;
    const char *cron = NULL, *zone = NULL, *overlap = NULL;
    json_t *catchup = NULL;
    if (json_is_string(s)) {
        cron = json_string_value(s);
    } else if (json_is_object(s)) {
        const char *k;
        json_t *v;
        json_object_foreach(s, k, v) {
            if (strcmp(k, "cron") != 0 && strcmp(k, "timezone") != 0 && strcmp(k, "catchup") != 0 &&
                strcmp(k, "overlap") != 0) {
                snprintf(why, cap, "schedule: unknown field '%.60s' (cron, timezone, catchup, overlap)", k);
                *field = "schedule";
                return -1;
            }
        }
        cron = json_string_value(json_object_get(s, "cron"));
        zone = json_string_value(json_object_get(s, "timezone"));
        overlap = json_string_value(json_object_get(s, "overlap"));
        catchup = json_object_get(s, "catchup");
        if ((json_object_get(s, "timezone") && !zone) || (json_object_get(s, "overlap") && !overlap))
            return bad(field, "schedule", why, cap, "schedule: timezone and overlap must be strings");
    } else {
        return bad(field, "schedule", why, cap,
                   "schedule must be a cron string or a table {cron = \"0 3 * * *\", timezone = ..., catchup = ..., "
                   "overlap = ...}");
    }
    if (cron == NULL) return bad(field, "schedule", why, cap, "schedule: cron is required (\"0 3 * * *\")");
    char msg[300];
    if (cron_parse(cron, &out->expr, msg, sizeof msg) != 0) return bad(field, "schedule", why, cap, msg);
    char *err = NULL;
    if ((out->zone = tz_load(zone, &err)) == NULL) {
        snprintf(why, cap, "schedule: %s", err ? err : "bad time zone");
        free(err);
        *field = "schedule";
        return -1;
    }
    out->catchup_ms = WF_CATCHUP_DEFAULT_MS;
    if (catchup != NULL) {
        int64_t ms = json_is_string(catchup) ? config_parse_ms(json_string_value(catchup))
                     : json_is_number(catchup) && json_number_value(catchup) >= 0
                         ? (int64_t)(json_number_value(catchup) * 1000.0)
                         : -1;
        if (ms < 0) {
            wf_sched_clear(out);
            return bad(field, "schedule", why, cap, "schedule: catchup must be a duration (\"3d\", \"6h\", 0)");
        }
        out->catchup_ms = ms;
    }
    out->overlap = WF_OVERLAP_SKIP;
    if (overlap != NULL) {
        int found = 0;
        for (int i = 0; i < 4 && !found; i++)
            if (strcmp(overlap, overlap_names[i]) == 0) {
                out->overlap = (wf_overlap)i;
                found = 1;
            }
        if (!found) {
            wf_sched_clear(out);
            return bad(field, "schedule", why, cap, "schedule: overlap must be skip, buffer_one, allow or cancel_other");
        }
    }
    out->cron = xstrdup(cron);
    out->timezone = xstrdup(tz_name(out->zone));
    return 0;
}
