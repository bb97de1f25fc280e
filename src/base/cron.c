/* cron: parsing and next/previous schedule times (cron.h).
 * Uses: tz. Must not: read clocks, files or the environment. */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const mon_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                        "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const dow_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static int parse_num(const char **p, int lo, int hi, const char *const *names, int name_base, int *out)
{
    const char *s = *p;
    if (names != NULL && isalpha((unsigned char)*s)) {
        for (int i = 0; i <= hi - name_base; i++)
            if (names[i] && strncasecmp(s, names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
                *out = i + name_base;
                *p = s + 3;
                return 0;
            }
        return -1;
    }
    if (!isdigit((unsigned char)*s)) return -1;
    long v = 0;
    while (isdigit((unsigned char)*s) && v < 1000) v = v * 10 + (*s++ - '0');
    if (v < lo || v > hi) return -1;
    *out = (int)v;
    *p = s;
    return 0;
}

/* One field into bits; `star` set when it is `*` or `?`. */
static int parse_field(const char *f, int lo, int hi, const char *const *names, int name_base, uint64_t *bits, int *star)
{
    *bits = 0;
    if (star) *star = 0;
    if ((strcmp(f, "*") == 0 || strcmp(f, "?") == 0) && star) *star = 1;
    const char *p = f;
    for (;;) {
        int a, b, step = 1;
        if (*p == '*' || *p == '?') {
            a = lo;
            b = hi;
            p++;
        } else {
            if (parse_num(&p, lo, hi, names, name_base, &a) != 0) return -1;
            b = a;
            if (*p == '-') {
                p++;
                if (parse_num(&p, lo, hi, names, name_base, &b) != 0 || b < a) return -1;
            }
        }
        if (*p == '/') {
            p++;
            if (parse_num(&p, 1, hi > 0 ? hi : 1, NULL, 0, &step) != 0) return -1;
            if (b == a && f[0] != '*') b = hi; /* "5/15": from 5 to the end */
        }
        for (int i = a; i <= b; i += step) *bits |= 1ULL << i;
        if (*p == ',') {
            p++;
            continue;
        }
        return *p == '\0' ? 0 : -1;
    }
}

int cron_parse(const char *text, cron_expr *out, char *why, size_t cap)
{
    memset(out, 0, sizeof *out);
    static const struct {
        const char *macro, *expr;
    } macros[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
                  {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
                  {"@hourly", "0 * * * *"}};
    if (text == NULL) {
        snprintf(why, cap, "cron expression is missing");
        return -1;
    }
    for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
        if (strcmp(text, macros[i].macro) == 0) text = macros[i].expr;
    char buf[256], *fields[7];
    int n = 0;
    if (strlen(text) >= sizeof buf) {
        snprintf(why, cap, "cron expression is too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t && n < 7; t = strtok_r(NULL, " \t", &save)) fields[n++] = t;
    if (n != 5 && n != 6) {
        snprintf(why, cap, "cron expression '%.100s' must have 5 fields (minute hour day month weekday) or 6 (seconds first)",
                 text);
        return -1;
    }
    int k = 0;
    uint64_t b;
    static const char *const what[] = {"second", "minute", "hour", "day of month", "month", "day of week"};
    if (n == 6) {
        if (parse_field(fields[k++], 0, 59, NULL, 0, &out->sec, NULL) != 0) goto bad;
    } else {
        out->sec = 1; /* second 0 */
    }
    if (parse_field(fields[k++], 0, 59, NULL, 0, &out->min, NULL) != 0) goto bad;
    if (parse_field(fields[k++], 0, 23, NULL, 0, &b, NULL) != 0) goto bad;
    out->hour = (uint32_t)b;
    if (parse_field(fields[k++], 1, 31, NULL, 0, &b, &out->dom_star) != 0) goto bad;
    out->dom = (uint32_t)b;
    if (parse_field(fields[k++], 1, 12, mon_names, 1, &b, NULL) != 0) goto bad;
    out->mon = (uint16_t)b;
    if (parse_field(fields[k++], 0, 7, dow_names, 0, &b, &out->dow_star) != 0) goto bad;
    if (b & (1u << 7)) b |= 1; /* 7 is Sunday too */
    out->dow = (uint8_t)(b & 0x7f);
    return 0;
bad:
    snprintf(why, cap, "cron expression '%.100s': bad %s field '%.40s'", text, what[(n == 6 ? 0 : 1) + k - 1],
             fields[k - 1]);
    return -1;
}

/* ---- civil time (proleptic Gregorian; H. Hinnant's algorithms) ---- */

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static int day_matches(const cron_expr *c, int64_t day)
{
    int64_t y;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    if (!(c->mon & (1u << m))) return 0;
    int wd = (int)(((day % 7) + 7 + 4) % 7);
    int dom_ok = (c->dom >> d) & 1, dow_ok = (c->dow >> wd) & 1;
    if (c->dom_star || c->dow_star) return dom_ok && dow_ok; /* `*` matches every day, so this is the other one */
    return dom_ok || dow_ok;
}

static int32_t off_at(const tz_zone *z, int64_t t) { return z ? tz_offset(z, t) : 0; }

/* The instant a wall-clock time `w` (local seconds since the epoch, as if UTC) stands for: the first if it happens
 * twice, the moment of the change if it does not exist (the first valid instant after it). */
static int64_t instant_of(const tz_zone *z, int64_t w)
{
    if (z == NULL) return w;
    int32_t a = off_at(z, w - 50400), b = off_at(z, w + 50400);
    int64_t best = INT64_MAX;
    int32_t cand[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        int64_t u = w - cand[i];
        if (off_at(z, u) == cand[i] && u < best) best = u;
    }
    if (best != INT64_MAX) {
        /* an offset in force only within the 14 h around (two changes close together) */
        int32_t mid = off_at(z, w - a);
        if (mid != a && mid != b && off_at(z, w - mid) == mid && w - mid < best) best = w - mid;
        return best;
    }
    /* A gap: the first instant whose wall clock is past w. */
    int64_t lo = w - (a > b ? a : b), hi = w - (a < b ? a : b);
    if (lo > hi) {
        int64_t t = lo;
        lo = hi;
        hi = t;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (mid + off_at(z, mid) > w) hi = mid;
        else lo = mid;
    }
    return hi;
}

#define SEARCH_DAYS (8 * 366)

int64_t cron_next(const cron_expr *c, const tz_zone *z, int64_t after)
{
    int64_t w0 = after + off_at(z, after);
    int64_t day0 = floor_div(w0, 86400) - 1;
    for (int64_t day = day0; day < day0 + SEARCH_DAYS; day++) {
        if (!day_matches(c, day)) continue;
        for (int h = 0; h < 24; h++) {
            if (!((c->hour >> h) & 1)) continue;
            for (int m = 0; m < 60; m++) {
                if (!((c->min >> m) & 1)) continue;
                for (int s = 0; s < 60; s++) {
                    if (!((c->sec >> s) & 1)) continue;
                    int64_t w = day * 86400 + h * 3600 + m * 60 + s;
                    int64_t u = instant_of(z, w);
                    if (u > after) return u;
                }
            }
        }
    }
    return -1;
}

int64_t cron_prev(const cron_expr *c, const tz_zone *z, int64_t at)
{
    int64_t w0 = at + off_at(z, at);
    int64_t day0 = floor_div(w0, 86400) + 1;
    for (int64_t day = day0; day > day0 - SEARCH_DAYS; day--) {
        if (!day_matches(c, day)) continue;
        for (int h = 23; h >= 0; h--) {
            if (!((c->hour >> h) & 1)) continue;
            for (int m = 59; m >= 0; m--) {
                if (!((c->min >> m) & 1)) continue;
                for (int s = 59; s >= 0; s--) {
                    if (!((c->sec >> s) & 1)) continue;
                    int64_t u = instant_of(z, day * 86400 + h * 3600 + m * 60 + s);
                    if (u <= at) {
                        /* the first instant of a time that a gap folds onto another: only once */
                        return u;
                    }
                }
            }
        }
    }
    return -1;
}
