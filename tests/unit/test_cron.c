/* test_cron: cron parsing and schedule times (cron.h) with the system's tzdata (tz.h), DST rules included: a time
 * that does not exist (spring forward) runs at the first valid instant after it, once; a time that happens twice
 * (fall back) runs once, at the first. Also the TZif footer rule for years past the file's transitions, and a
 * southern-hemisphere zone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"
#include "tz.h"

/* "YYYY-MM-DDTHH:MM:SSZ" -> unix seconds */
static int64_t at(const char *s)
{
    struct tm tm = {0};
    assert_non_null(strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm));
    return (int64_t)timegm(&tm);
}

static const char *fmt(int64_t t)
{
    static char buf[4][32];
    static int k;
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    char *b = buf[k++ % 4];
    strftime(b, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

static cron_expr parse(const char *text)
{
    cron_expr c;
    char why[200];
    if (cron_parse(text, &c, why, sizeof why) != 0) fail_msg("%s: %s", text, why);
    return c;
}

static tz_zone *zone(const char *name)
{
    char *err = NULL;
    tz_zone *z = tz_load(name, &err);
    if (z == NULL) fail_msg("%s", err);
    return z;
}

static void test_parse_errors(void **state)
{
    (void)state;
    cron_expr c;
    char why[200];
    const char *bad[] = {"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                         "a * * * *", "1-x * * * *", "5-1 * * * *", "*/0 * * * *", "* * * * * * *", "@often", NULL};
    for (int i = 0; bad[i]; i++) {
        if (cron_parse(bad[i], &c, why, sizeof why) == 0) fail_msg("'%s' parsed", bad[i]);
        assert_non_null(strstr(why, "cron expression"));
    }
    assert_int_equal(cron_parse("0 3 * * MON-FRI", &c, why, sizeof why), 0);
    assert_int_equal(c.dow, 0x3e);
    assert_int_equal(cron_parse("*/15 * * JAN,jul 7", &c, why, sizeof why), 0);
    assert_int_equal(c.dow, 1);
    assert_int_equal(c.mon, (1u << 1) | (1u << 7));
}

static void test_utc_basics(void **state)
{
    (void)state;
    cron_expr c = parse("0 3 * * *");
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-07T02:59:59Z"))), "2026-12-07T03:00:00Z");
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-07T03:00:00Z"))), "2026-12-08T03:00:00Z");
    assert_string_equal(fmt(cron_prev(&c, NULL, at("2026-12-07T03:00:00Z"))), "2026-12-07T03:00:00Z");
    assert_string_equal(fmt(cron_prev(&c, NULL, at("2026-12-07T02:59:59Z"))), "2026-12-06T03:00:00Z");
    c = parse("@hourly");
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-31T23:10:00Z"))), "2027-01-01T00:00:00Z");
    c = parse("*/20 * * * * *"); /* six fields: seconds */
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-07T10:00:41Z"))), "2026-12-07T10:01:00Z");
    c = parse("0 0 29 2 *"); /* leap days only */
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-03-01T00:00:00Z"))), "2028-02-29T00:00:00Z");
    c = parse("0 0 30 2 *");
    assert_int_equal(cron_next(&c, NULL, at("2026-03-01T00:00:00Z")), -1);
    /* day of month OR day of week when both are restricted (Vixie cron): the 1st and every Monday */
    c = parse("0 0 1 * MON");
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-01T00:00:00Z"))), "2026-12-07T00:00:00Z");
    assert_string_equal(fmt(cron_next(&c, NULL, at("2026-12-28T00:00:00Z"))), "2027-01-01T00:00:00Z");
}

static void test_zone_offsets(void **state)
{
    (void)state;
    tz_zone *z = zone("Europe/Amsterdam");
    assert_int_equal(tz_offset(z, at("2026-01-15T12:00:00Z")), 3600);
    assert_int_equal(tz_offset(z, at("2026-07-15T12:00:00Z")), 7200);
    /* the change itself: 2026-03-29 01:00 UTC and 2026-10-25 01:00 UTC */
    assert_int_equal(tz_offset(z, at("2026-03-29T00:59:59Z")), 3600);
    assert_int_equal(tz_offset(z, at("2026-03-29T01:00:00Z")), 7200);
    assert_int_equal(tz_offset(z, at("2026-10-25T00:59:59Z")), 7200);
    assert_int_equal(tz_offset(z, at("2026-10-25T01:00:00Z")), 3600);
    /* far beyond the file's transitions: the footer rule (CET-1CEST,M3.5.0,M10.5.0/3) */
    assert_int_equal(tz_offset(z, at("2090-07-01T00:00:00Z")), 7200);
    assert_int_equal(tz_offset(z, at("2090-12-01T00:00:00Z")), 3600);
    assert_int_equal(tz_offset(z, at("2090-03-26T00:59:59Z")), 3600); /* last Sunday of March 2090 is the 26th */
    assert_int_equal(tz_offset(z, at("2090-03-26T01:00:00Z")), 7200);
    tz_free(z);
    z = zone("Australia/Sydney"); /* southern: DST over the new year */
    assert_int_equal(tz_offset(z, at("2026-01-15T00:00:00Z")), 11 * 3600);
    assert_int_equal(tz_offset(z, at("2026-07-15T00:00:00Z")), 10 * 3600);
    assert_int_equal(tz_offset(z, at("2090-01-15T00:00:00Z")), 11 * 3600);
    assert_int_equal(tz_offset(z, at("2090-07-15T00:00:00Z")), 10 * 3600);
    tz_free(z);
    char *err = NULL;
    assert_null(tz_load("../../etc/passwd", &err));
    assert_non_null(strstr(err, "not a zone name"));
    free(err);
    err = NULL;
    assert_null(tz_load("Mars/Olympus_Mons", &err));
    assert_non_null(strstr(err, "unknown zone"));
    free(err);
    z = zone("UTC");
    assert_int_equal(tz_offset(z, at("2026-07-15T00:00:00Z")), 0);
    tz_free(z);
}

static void test_daily_in_zone(void **state)
{
    (void)state;
    tz_zone *z = zone("Europe/Amsterdam");
    cron_expr c = parse("0 3 * * *");
    assert_string_equal(fmt(cron_next(&c, z, at("2026-12-06T12:00:00Z"))), "2026-12-07T02:00:00Z"); /* 03:00 CET */
    assert_string_equal(fmt(cron_next(&c, z, at("2026-07-06T12:00:00Z"))), "2026-07-07T01:00:00Z"); /* 03:00 CEST */
    tz_free(z);
}

static void test_spring_forward(void **state)
{
    (void)state;
    tz_zone *z = zone("Europe/Amsterdam");
    /* 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC. 02:30 does not exist: it runs at 03:00 CEST. */
    cron_expr c = parse("30 2 * * *");
    assert_string_equal(fmt(cron_next(&c, z, at("2026-03-28T12:00:00Z"))), "2026-03-29T01:00:00Z");
    assert_string_equal(fmt(cron_next(&c, z, at("2026-03-29T01:00:00Z"))), "2026-03-30T00:30:00Z");
    /* every 15 minutes: 02:00..02:45 fold onto 03:00, which runs once */
    c = parse("*/15 * * * *");
    int64_t t = at("2026-03-29T00:40:00Z"); /* 01:40 CET */
    const char *want[] = {"2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"};
    for (int i = 0; i < 3; i++) {
        t = cron_next(&c, z, t);
        assert_string_equal(fmt(t), want[i]);
    }
    tz_free(z);
}

static void test_fall_back(void **state)
{
    (void)state;
    tz_zone *z = zone("Europe/Amsterdam");
    /* 2026-10-25: 03:00 CEST goes back to 02:00 CET at 01:00 UTC; 02:30 happens twice: it runs once, at the first
     * (00:30 UTC), never at the second (01:30 UTC). */
    cron_expr c = parse("30 2 * * *");
    int64_t t = cron_next(&c, z, at("2026-10-24T12:00:00Z"));
    assert_string_equal(fmt(t), "2026-10-25T00:30:00Z");
    assert_string_equal(fmt(cron_next(&c, z, t)), "2026-10-26T01:30:00Z");
    assert_string_equal(fmt(cron_next(&c, z, at("2026-10-25T01:10:00Z"))), "2026-10-26T01:30:00Z");
    /* hourly: 02:00 runs once (the first), 03:00 CET follows an hour after the repeated hour ends */
    c = parse("0 * * * *");
    t = at("2026-10-24T23:30:00Z");
    const char *want[] = {"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"};
    for (int i = 0; i < 3; i++) {
        t = cron_next(&c, z, t);
        assert_string_equal(fmt(t), want[i]);
    }
    tz_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),   cmocka_unit_test(test_utc_basics),  cmocka_unit_test(test_zone_offsets),
        cmocka_unit_test(test_daily_in_zone), cmocka_unit_test(test_spring_forward), cmocka_unit_test(test_fall_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
