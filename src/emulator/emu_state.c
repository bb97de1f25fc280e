/* emu_state: owns the one emulator instance (emu_g) and what every part of the emulator reads from it: the API's
 * method names, the clock, the seeded dice, the stats counters, and setup and teardown of the instance.
 * Uses: emu.h, OpenSSL RAND (ids and tokens), emu_jobs/emu_events (to clear them). Must not: answer HTTP or
 * start threads; the files that own a concern change its part of emu_g, this one only creates and frees it. */
#include "emu.h"
#include "mem.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The single process-wide emulator instance: see the comment on struct emu in emu.h. */
struct emu emu_g;

/* Where message ids start after a start or reset, so they look like Pub/Sub's. */
#define EMU_FIRST_MESSAGE_ID 2070443601311540ULL

const char *const emu_method_names[M_COUNT] = {
    "flexTemplates.launch", "templates.launch", "jobs.get", "jobs.list", "jobs.update", "jobs.messages", "token", "metadata",
    "jwks", "emulator", "unrouted"};

int64_t emu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void emu_strftime_utc(int64_t ms, const char *fmt, char *buf, size_t cap)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    strftime(buf, cap, fmt, &tm);
}

void emu_fmt_time(int64_t ms, int frac, char *buf, size_t cap)
{
    char base[32];
    emu_strftime_utc(ms, "%Y-%m-%dT%H:%M:%S", base, sizeof base);
    int milli = (int)(ms % 1000), n;
    /* The return values are read so that GCC does not flag the (impossible) truncation. */
    if (frac == 0) n = snprintf(buf, cap, "%sZ", base);
    else if (frac == 3) n = snprintf(buf, cap, "%s.%03dZ", base, milli);
    else if (frac == 6) n = snprintf(buf, cap, "%s.%03d000Z", base, milli);
    else n = snprintf(buf, cap, "%s.%03d000000Z", base, milli);
    (void)n;
}

/* splitmix64: small, seedable, and good enough for fault dice. */
uint64_t emu_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double emu_rng_unit(uint64_t *s) { return (double)(emu_rng_next(s) >> 11) / 9007199254740992.0; }

void emu_random_hex(char *out, size_t nhex)
{
    unsigned char raw[64];
    size_t nb = (nhex + 1) / 2;
    if (nb > sizeof raw) nb = sizeof raw;
    if (RAND_bytes(raw, (int)nb) != 1) memset(raw, 0x5a, nb);
    for (size_t i = 0; i < nhex && i / 2 < nb; i++) out[i] = "0123456789abcdef"[(raw[i / 2] >> ((i % 2) ? 0 : 4)) & 15];
    out[nhex] = '\0';
}

int emu_write_atomic(const char *path, const char *text, mode_t mode)
{
    size_t n = strlen(path) + 16;
    char *tmp = xmalloc(n);
    int rc = -1;
    FILE *f = NULL;
    snprintf(tmp, n, "%s.tmp%d", path, (int)getpid());
    f = fopen(tmp, "w");
    if (f == NULL) goto out;
    chmod(tmp, mode);
    if (fputs(text, f) < 0) goto out;
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) goto out;
    rc = 0;
out:
    if (f != NULL) fclose(f);
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

struct timespec emu_abstime(int64_t ms)
{
    return (struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
}

void emu_rng_reseed(uint64_t seed)
{
    emu_g.seed = seed;
    for (int i = 0; i < STREAM_COUNT; i++) {
        uint64_t s = seed ^ (0xa0761d6478bd642fULL * (uint64_t)(i + 1));
        emu_g.rng[i] = emu_rng_next(&s);
    }
}

/* Counts one event in emu_g.stats[group][key][sub] (sub may be NULL for a flat counter). Lock held. */
void emu_stat_add(const char *group, const char *key, const char *sub, int n)
{
    json_t *g = json_object_get(emu_g.stats, group);
    if (g == NULL) json_object_set_new(emu_g.stats, group, g = json_object());
    json_t *target = g;
    const char *leaf = key;
    if (sub != NULL) {
        target = json_object_get(g, key);
        if (target == NULL) json_object_set_new(g, key, target = json_object());
        leaf = sub;
    }
    json_t *v = json_object_get(target, leaf);
    json_object_set_new(target, leaf, json_integer((v ? json_integer_value(v) : 0) + n));
}

void emu_stats_reset(void)
{
    json_decref(emu_g.stats);
    emu_g.stats = json_pack("{s:{}, s:{}, s:{}, s:{}, s:{}}", "launches_by_name", "jobs_created_by_name", "requests",
                        "token_grants", "deliveries");
    emu_g.active_max = emu_g.active_now;
}

void emu_state_init(uint64_t seed)
{
    memset(&emu_g, 0, sizeof emu_g);
    pthread_mutex_init(&emu_g.lock, NULL);
    pthread_mutex_init(&emu_g.qlock, NULL);
    pthread_cond_init(&emu_g.timer_cond, NULL);
    pthread_cond_init(&emu_g.qcond, NULL);
    emu_g.launches = json_array();
    emu_g.by_id = json_object();
    emu_g.by_name = json_object();
    emu_stats_reset();
    emu_g.message_id = EMU_FIRST_MESSAGE_ID;
    emu_rng_reseed(seed);
}

void emu_clear_runtime(void)
{
    emu_jobs_clear();
    emu_g.active_now = 0;
    json_array_clear(emu_g.launches);
    emu_stats_reset();
    emu_events_clear();
    emu_g.message_id = EMU_FIRST_MESSAGE_ID;
    emu_rng_reseed(emu_g.seed);
}

void emu_state_free(void)
{
    if (emu_g.launches != NULL) {
        emu_clear_runtime();
        json_decref(emu_g.launches);
        json_decref(emu_g.by_id);
        json_decref(emu_g.by_name);
        free(emu_g.heap);
        json_decref(emu_g.stats);
        json_decref(emu_g.cfg_doc);
        emu_cfg_clear(&emu_g.cfg);
        emu_identity_free();
        pthread_mutex_destroy(&emu_g.lock);
        pthread_mutex_destroy(&emu_g.qlock);
        pthread_cond_destroy(&emu_g.timer_cond);
        pthread_cond_destroy(&emu_g.qcond);
    }
    json_decref(emu_g.start_cfg);
    emu_g.start_cfg = NULL;
}
