/* tz: TZif reading and UTC offsets (tz.h).
 * Uses: libc. Must not: call tzset/localtime or read TZ; keep global state. */
#include "tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "util.h"

typedef struct {
    int month, week, wday; /* Mm.w.d */
    int32_t secs;          /* local time of day of the change (may be negative or > 24 h) */
} tz_rule_date;

struct tz_zone {
    char *name;
    int64_t *trans; /* transition instants, ascending */
    uint8_t *idx;   /* the type in force from each transition */
    size_t n;
    int32_t *offs;  /* the offsets of the types */
    size_t ntypes;
    int32_t first_off; /* before the first transition */
    /* footer rule */
    int has_rule, rule_dst;
    int32_t std_off, dst_off;
    tz_rule_date start, end;
};

static int64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return (int64_t)v;
}

static int32_t be32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
}

static int fail(char **err, const char *name, const char *why)
{
    if (err) *err = util_printf("time zone %s: %s", name ? name : "?", why);
    return -1;
}

/* POSIX TZ parsing: names (<...> or letters), offsets [+-]hh[:mm[:ss]] (east negative), rules Mm.w.d[/time]. */
static const char *skip_name(const char *p)
{
    if (*p == '<') {
        while (*p && *p != '>') p++;
        return *p ? p + 1 : NULL;
    }
    const char *s = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) p++;
    return p - s >= 3 ? p : NULL;
}

static const char *parse_hms(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (*p < '0' || *p > '9') return NULL;
    int32_t h = 0, m = 0, s = 0;
    while (*p >= '0' && *p <= '9') h = h * 10 + (*p++ - '0');
    if (*p == ':') {
        p++;
        while (*p >= '0' && *p <= '9') m = m * 10 + (*p++ - '0');
        if (*p == ':') {
            p++;
            while (*p >= '0' && *p <= '9') s = s * 10 + (*p++ - '0');
        }
    }
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *parse_rule_date(const char *p, tz_rule_date *d)
{
    if (*p != 'M') return NULL; /* Jn and n: no zone of tzdata uses them */
    p++;
    char *end;
    d->month = (int)strtol(p, &end, 10);
    if (*end != '.') return NULL;
    d->week = (int)strtol(end + 1, &end, 10);
    if (*end != '.') return NULL;
    d->wday = (int)strtol(end + 1, &end, 10);
    p = end;
    d->secs = 7200;
    if (*p == '/' && (p = parse_hms(p + 1, &d->secs)) == NULL) return NULL;
    if (d->month < 1 || d->month > 12 || d->week < 1 || d->week > 5 || d->wday < 0 || d->wday > 6) return NULL;
    return p;
}

static void parse_footer(tz_zone *z, const char *f)
{
    const char *p = skip_name(f);
    int32_t off;
    if (p == NULL || (p = parse_hms(p, &off)) == NULL) return;
    z->std_off = -off;
    z->has_rule = 1;
    if (*p == '\0') return; /* fixed offset */
    if ((p = skip_name(p)) == NULL) goto bad;
    z->dst_off = z->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if ((p = parse_hms(p, &off)) == NULL) goto bad;
        z->dst_off = -off;
    }
    if (*p != ',' || (p = parse_rule_date(p + 1, &z->start)) == NULL || *p != ',' ||
        (p = parse_rule_date(p + 1, &z->end)) == NULL)
        goto bad;
    z->rule_dst = 1;
    return;
bad:
    z->has_rule = 0; /* an unreadable rule: the last transition's offset stays */
}

tz_zone *tz_parse(const char *name, const unsigned char *d, size_t len, char **err)
{
    if (len < 44 || memcmp(d, "TZif", 4) != 0) return fail(err, name, "not a TZif file"), NULL;
    int ver = d[4];
    size_t pos = 0;
    int32_t isutc = be32(d + 20), isstd = be32(d + 24), leap = be32(d + 28), timecnt = be32(d + 32),
            typecnt = be32(d + 36), charcnt = be32(d + 40);
    int tsize = 4;
    if (ver >= '2') { /* skip the 32-bit block: the 64-bit one follows */
        pos = 44 + (size_t)timecnt * 5 + (size_t)typecnt * 6 + (size_t)charcnt + (size_t)leap * 8 + (size_t)isstd +
              (size_t)isutc;
        if (pos + 44 > len || memcmp(d + pos, "TZif", 4) != 0) return fail(err, name, "truncated TZif file"), NULL;
        isutc = be32(d + pos + 20), isstd = be32(d + pos + 24), leap = be32(d + pos + 28);
        timecnt = be32(d + pos + 32), typecnt = be32(d + pos + 36), charcnt = be32(d + pos + 40);
        tsize = 8;
    }
    if (timecnt < 0 || typecnt < 1 || typecnt > 256 || charcnt < 0 || leap < 0 || isstd < 0 || isutc < 0)
        return fail(err, name, "bad TZif header"), NULL;
    const unsigned char *p = d + pos + 44;
    size_t need = (size_t)timecnt * (size_t)(tsize + 1) + (size_t)typecnt * 6 + (size_t)charcnt +
                  (size_t)leap * (size_t)(tsize + 4) + (size_t)isstd + (size_t)isutc;
    if ((size_t)(p - d) + need > len) return fail(err, name, "truncated TZif file"), NULL;
    tz_zone *z = xcalloc(1, sizeof *z);
    z->name = xstrdup(name ? name : "UTC");
    z->n = (size_t)timecnt;
    z->ntypes = (size_t)typecnt;
    z->trans = xcalloc(z->n + 1, sizeof *z->trans);
    z->idx = xcalloc(z->n + 1, 1);
    z->offs = xcalloc(z->ntypes, sizeof *z->offs);
    for (size_t i = 0; i < z->n; i++) z->trans[i] = tsize == 8 ? be64(p + i * 8) : be32(p + i * 4);
    p += z->n * (size_t)tsize;
    for (size_t i = 0; i < z->n; i++) z->idx[i] = p[i] < typecnt ? p[i] : 0;
    p += z->n;
    for (size_t i = 0; i < z->ntypes; i++) z->offs[i] = be32(p + i * 6);
    z->first_off = z->offs[0];
    p += z->ntypes * 6 + (size_t)charcnt + (size_t)leap * (size_t)(tsize + 4) + (size_t)isstd + (size_t)isutc;
    if (ver >= '2' && (size_t)(p - d) < len && *p == '\n') {
        const char *f = (const char *)p + 1;
        const char *nl = memchr(f, '\n', len - (size_t)(p + 1 - d));
        if (nl != NULL && nl > f) {
            char foot[128];
            snprintf(foot, sizeof foot, "%.*s", (int)(nl - f), f);
            parse_footer(z, foot);
        }
    }
    return z;
}

tz_zone *tz_load(const char *name, char **err)
{
    if (name == NULL || *name == '\0' || strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
        tz_zone *z = xcalloc(1, sizeof *z);
        z->name = xstrdup("UTC");
        z->has_rule = 1;
        return z;
    }
    if (name[0] == '/' || strstr(name, "..") != NULL || strlen(name) > 200) {
        fail(err, name, "not a zone name (like Europe/Amsterdam)");
        return NULL;
    }
    for (const char *c = name; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("/_+-", *c))) {
            fail(err, name, "not a zone name (like Europe/Amsterdam)");
            return NULL;
        }
    const char *dir = getenv("SLUICE_ZONEINFO");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail(err, name, "unknown zone (not in the system's tzdata)");
        return NULL;
    }
    unsigned char buf[65536];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return tz_parse(name, buf, len, err);
}

void tz_free(tz_zone *z)
{
    if (z == NULL) return;
    free(z->name);
    free(z->trans);
    free(z->idx);
    free(z->offs);
    free(z);
}

const char *tz_name(const tz_zone *z) { return z->name; }

/* Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int64_t year_of(int64_t t)
{
    int64_t z = (t >= 0 ? t : t - 86399) / 86400 + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    return yoe + era * 400 + (m <= 2);
}

/* The UTC instant of a rule date in year y, given the offset in force before it. */
static int64_t rule_instant(const tz_rule_date *r, int64_t y, int32_t off_before)
{
    int64_t first = days_from_civil(y, r->month, 1);
    int wd_first = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
    int64_t day = first + (r->wday - wd_first + 7) % 7 + (int64_t)(r->week - 1) * 7;
    int mdays = r->month == 12 ? 31 : (int)(days_from_civil(y, r->month + 1, 1) - first);
    while (day >= first + mdays) day -= 7; /* week 5: the last such day */
    return day * 86400 + r->secs - off_before;
}

int32_t tz_offset(const tz_zone *z, int64_t t)
{
    if (z->n > 0 && t < z->trans[0]) return z->first_off;
    if (z->n > 0 && (t < z->trans[z->n - 1] || !z->has_rule)) {
        size_t lo = 0, hi = z->n; /* the last transition <= t */
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (z->trans[mid] <= t) lo = mid;
            else hi = mid;
        }
        return z->offs[z->idx[lo]];
    }
    if (!z->has_rule) return z->ntypes ? z->offs[0] : 0;
    if (!z->rule_dst) return z->std_off;
    int64_t y = year_of(t + z->std_off);
    int64_t s = rule_instant(&z->start, y, z->std_off), e = rule_instant(&z->end, y, z->dst_off);
    int dst = s < e ? (t >= s && t < e) : !(t >= e && t < s); /* southern zones: DST spans the new year */
    return dst ? z->dst_off : z->std_off;
}
