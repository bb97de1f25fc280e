/* cron: cron expressions and their times in a time zone, pure: parsing, and the next schedule time after an
 * instant. Five fields (minute hour day-of-month month day-of-week) or six with seconds first; `*`, lists, ranges,
 * steps (`1-5/2`, or a star then `/15`), month and weekday names (JAN, MON), 7 as Sunday, and @yearly
 * @monthly @weekly @daily @midnight @hourly. Day of month and day of week: when both are restricted a day matching either counts (Vixie
 * cron).
 * Time zones, as cron users expect across daylight-saving changes (documented in docs/workflows.md):
 *   - a wall-clock time that does not exist that day (spring forward: 02:30 in Amsterdam on the last Sunday of
 *     March) runs at the first valid instant after it (03:00 CEST, the moment of the change), once;
 *   - a wall-clock time that happens twice (fall back: 02:30 on the last Sunday of October) runs once, at the
 *     first (02:30 CEST).
 * Uses: tz (offsets). Must not: read clocks, files or the environment. */
#ifndef SLUICE_CRON_H
#define SLUICE_CRON_H
#include <stddef.h>
#include <stdint.h>

#include "tz.h"

typedef struct {
    uint64_t sec, min; /* bit i: second / minute i */
    uint32_t hour;     /* bit i: hour i */
    uint32_t dom;      /* bit i: day i (1..31) */
    uint16_t mon;      /* bit i: month i (1..12) */
    uint8_t dow;       /* bit i: weekday i (0 = Sunday) */
    int dom_star, dow_star; /* the field was `*` (or `?`) */
} cron_expr;

/* Parses `text`. Returns 0, or -1 with a message in why (cap bytes). */
int cron_parse(const char *text, cron_expr *out, char *why, size_t cap);
/* The first schedule time strictly after `after` (unix seconds) in zone `z` (NULL: UTC), as unix seconds; -1 when
 * none comes within 8 years (30 February). */
int64_t cron_next(const cron_expr *c, const tz_zone *z, int64_t after);
/* The last schedule time at or before `at` (unix seconds), or -1 when none within 8 years back. */
int64_t cron_prev(const cron_expr *c, const tz_zone *z, int64_t at);

#endif
