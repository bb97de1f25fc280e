/* emulator: owns `sluice emulator`: HTTP server, emulated Dataflow jobs, lag, faults, identity endpoints, events.
 * Uses: libmicrohttpd (suspend/resume for delayed answers), jansson, jwt, libcurl (event delivery), log.
 * Must not: touch engine, store, workflow or Lua code; it is a separate process that only speaks HTTP. */
#include "emulator.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jwt.h"
#include "log.h"

/* ====================================================================================================
 * Constants and small helpers
 * ==================================================================================================== */

enum emu_state {
    ST_UNKNOWN = 0, ST_STOPPED, ST_RUNNING, ST_DONE, ST_FAILED, ST_CANCELLED, ST_UPDATED, ST_DRAINING,
    ST_DRAINED, ST_PENDING, ST_CANCELLING, ST_QUEUED, ST_RESOURCE_CLEANING_UP, ST_COUNT
};
static const char *const emu_state_names[ST_COUNT] = {
    "JOB_STATE_UNKNOWN",  "JOB_STATE_STOPPED", "JOB_STATE_RUNNING",    "JOB_STATE_DONE",
    "JOB_STATE_FAILED",   "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED",  "JOB_STATE_DRAINING",
    "JOB_STATE_DRAINED",  "JOB_STATE_PENDING", "JOB_STATE_CANCELLING", "JOB_STATE_QUEUED",
    "JOB_STATE_RESOURCE_CLEANING_UP"};

static int emu_state_from_name(const char *s)
{
    for (int i = 0; s != NULL && i < ST_COUNT; i++)
        if (strcmp(s, emu_state_names[i]) == 0) return i;
    return -1;
}

static int emu_state_terminal(int st)
{
    return st == ST_DONE || st == ST_FAILED || st == ST_CANCELLED || st == ST_UPDATED || st == ST_DRAINED;
}

/* The API methods that faults, stats and the PRNG streams are keyed by. */
enum emu_method {
    M_FLEX_LAUNCH = 0, M_TEMPLATE_LAUNCH, M_JOBS_GET, M_JOBS_LIST, M_JOBS_UPDATE, M_TOKEN, M_METADATA, M_JWKS,
    M_EMULATOR, M_UNROUTED, M_COUNT
};
static const char *const emu_method_names[M_COUNT] = {
    "flexTemplates.launch", "templates.launch", "jobs.get", "jobs.list", "jobs.update", "token", "metadata",
    "jwks", "emulator", "unrouted"};
#define M_DATAFLOW_LAST M_JOBS_UPDATE
enum { STREAM_IDS = M_COUNT, STREAM_EVENTS, STREAM_COUNT };

static int64_t emu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 3339 UTC with `frac` fractional digits (3, 6 or 9) derived from a millisecond time. */
static void emu_fmt_time(int64_t ms, int frac, char *buf, size_t cap)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    int milli = (int)(ms % 1000), n;
    /* The return values are read so that GCC does not flag the (impossible) truncation. */
    if (frac == 0) n = snprintf(buf, cap, "%sZ", base);
    else if (frac == 3) n = snprintf(buf, cap, "%s.%03dZ", base, milli);
    else if (frac == 6) n = snprintf(buf, cap, "%s.%03d000Z", base, milli);
    else n = snprintf(buf, cap, "%s.%03d000000Z", base, milli);
    (void)n;
}

/* splitmix64: small, seedable, and good enough for fault dice. */
static uint64_t emu_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double emu_rng_unit(uint64_t *s) { return (double)(emu_rng_next(s) >> 11) / 9007199254740992.0; }

static void emu_random_hex(char *out, size_t nhex)
{
    unsigned char raw[64];
    size_t nb = (nhex + 1) / 2;
    if (nb > sizeof raw) nb = sizeof raw;
    if (RAND_bytes(raw, (int)nb) != 1) memset(raw, 0x5a, nb);
    for (size_t i = 0; i < nhex && i / 2 < nb; i++) out[i] = "0123456789abcdef"[(raw[i / 2] >> ((i % 2) ? 0 : 4)) & 15];
    out[nhex] = '\0';
}

/* Writes `text` to `path` atomically (temporary file + rename). Returns 0 or -1. */
static int emu_write_atomic(const char *path, const char *text, mode_t mode)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    int rc = -1;
    FILE *f = NULL;
    if (tmp == NULL) return -1;
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

/* ====================================================================================================
 * Configuration: a merged JSON document (defaults <- file <- flags <- POST /emulator/config) parsed into
 * a struct that request handling reads under the state lock.
 * ==================================================================================================== */

struct emu_fault {
    double rate_429, rate_500, rate_503, drop_rate, slow_rate, launched_400_rate, launched_timeout_rate;
    int latency_ms, slow_ms, retry_delay_s, launched_timeout_ms, launched_timeout_drop;
};

struct emu_rule {
    char *match; /* glob on the job name; NULL for the defaults */
    int queued_ms, pending_ms, running_ms, cancel_ms, drain_ms, outcome, streaming;
    char *failure_cause;
};

struct emu_cfg {
    char *project_id, *project_number;
    int auth, token_lifetime_s, max_body_bytes, jwks_max_age_s, list_page_size, list_max_page_size;
    struct emu_rule defaults;
    struct emu_rule *rules;
    size_t nrules;
    int lag_window_ms, lag_stale;
    json_t *templates_missing;  /* array of globs; owned */
    json_t *templates_required; /* object glob -> [names]; owned */
    struct emu_fault faults[M_COUNT];
    char *push_url, *eventarc_url, *subscription, *audience, *push_email;
    double dup_rate, reorder_rate;
    int reorder_ms, max_attempts, backoff_ms, delivery_timeout_ms;
};

static const char *emu_default_config =
    "{\"project_id\":\"emulator-project\",\"project_number\":\"123456789012\",\"auth\":true,"
    "\"token_lifetime_s\":3600,\"max_body_bytes\":1048576,\"jwks_max_age_s\":21600,\"list_page_size\":25,"
    "\"list_max_page_size\":1000,"
    "\"job_defaults\":{\"queued_ms\":0,\"pending_ms\":100,\"running_ms\":500,\"outcome\":\"JOB_STATE_DONE\","
    "\"streaming\":false,\"cancel_ms\":100,\"drain_ms\":200,"
    "\"failure_cause\":\"S05:Read+Transform failed., The job failed because a work item has failed 4 times.\"},"
    "\"jobs\":[],\"lag\":{\"window_ms\":0,\"mode\":\"not_found\"},"
    "\"templates\":{\"missing\":[],\"required_parameters\":{}},"
    "\"faults\":{\"default\":{}},"
    "\"events\":{\"push_url\":null,\"eventarc_url\":null,\"subscription\":null,\"audience\":null,"
    "\"email\":\"pubsub-push@emulator.iam.gserviceaccount.com\",\"duplicate_rate\":0,\"reorder_rate\":0,"
    "\"reorder_ms\":300,\"max_attempts\":5,\"backoff_ms\":100,\"timeout_ms\":5000}}";

static void emu_cfg_clear(struct emu_cfg *c)
{
    free(c->project_id);
    free(c->project_number);
    free(c->defaults.failure_cause);
    for (size_t i = 0; i < c->nrules; i++) {
        free(c->rules[i].match);
        free(c->rules[i].failure_cause);
    }
    free(c->rules);
    json_decref(c->templates_missing);
    json_decref(c->templates_required);
    free(c->push_url);
    free(c->eventarc_url);
    free(c->subscription);
    free(c->audience);
    free(c->push_email);
    memset(c, 0, sizeof *c);
}

/* Typed getters: each leaves *out unchanged when the key is absent or null, and sets *err (a static
 * string) and returns -1 when the value has the wrong type. */
static int cfg_int(json_t *o, const char *k, int *out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2e9) {
        snprintf(err, ecap, "config key %s must be a non-negative number", k);
        return -1;
    }
    *out = (int)json_number_value(v);
    return 0;
}

static int cfg_rate(json_t *o, const char *k, double *out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
        snprintf(err, ecap, "config key %s must be a number in [0,1]", k);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int cfg_bool(json_t *o, const char *k, int *out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, ecap, "config key %s must be a boolean", k);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* Replaces *out (owned) with a copy of the string; null clears it. */
static int cfg_str(json_t *o, const char *k, char **out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) return 0;
    if (json_is_null(v)) {
        free(*out);
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v)) {
        snprintf(err, ecap, "config key %s must be a string", k);
        return -1;
    }
    char *s = strdup(json_string_value(v));
    if (s == NULL) return -1;
    free(*out);
    *out = s;
    return 0;
}

static int cfg_rule(json_t *o, struct emu_rule *r, char *err, size_t ecap)
{
    char *outcome = NULL;
    if (!json_is_object(o)) {
        snprintf(err, ecap, "job rules must be objects");
        return -1;
    }
    if (cfg_int(o, "queued_ms", &r->queued_ms, err, ecap) || cfg_int(o, "pending_ms", &r->pending_ms, err, ecap) ||
        cfg_int(o, "running_ms", &r->running_ms, err, ecap) || cfg_int(o, "cancel_ms", &r->cancel_ms, err, ecap) ||
        cfg_int(o, "drain_ms", &r->drain_ms, err, ecap) || cfg_bool(o, "streaming", &r->streaming, err, ecap) ||
        cfg_str(o, "failure_cause", &r->failure_cause, err, ecap) || cfg_str(o, "outcome", &outcome, err, ecap))
        return -1;
    if (outcome != NULL) {
        int st = emu_state_from_name(outcome);
        free(outcome);
        if (st != ST_DONE && st != ST_FAILED && st != ST_CANCELLED) {
            snprintf(err, ecap, "outcome must be JOB_STATE_DONE, JOB_STATE_FAILED or JOB_STATE_CANCELLED");
            return -1;
        }
        r->outcome = st;
    }
    return 0;
}

static int cfg_fault(json_t *o, struct emu_fault *f, char *err, size_t ecap)
{
    if (o == NULL) return 0;
    if (!json_is_object(o)) {
        snprintf(err, ecap, "fault specs must be objects");
        return -1;
    }
    if (cfg_rate(o, "rate_429", &f->rate_429, err, ecap) || cfg_rate(o, "rate_500", &f->rate_500, err, ecap) ||
        cfg_rate(o, "rate_503", &f->rate_503, err, ecap) || cfg_rate(o, "drop_rate", &f->drop_rate, err, ecap) ||
        cfg_rate(o, "slow_rate", &f->slow_rate, err, ecap) ||
        cfg_rate(o, "launched_400_rate", &f->launched_400_rate, err, ecap) ||
        cfg_rate(o, "launched_timeout_rate", &f->launched_timeout_rate, err, ecap) ||
        cfg_int(o, "latency_ms", &f->latency_ms, err, ecap) || cfg_int(o, "slow_ms", &f->slow_ms, err, ecap) ||
        cfg_int(o, "retry_delay_s", &f->retry_delay_s, err, ecap) ||
        cfg_int(o, "launched_timeout_ms", &f->launched_timeout_ms, err, ecap) ||
        cfg_bool(o, "launched_timeout_drop", &f->launched_timeout_drop, err, ecap))
        return -1;
    if (f->rate_429 + f->rate_500 + f->rate_503 + f->drop_rate > 1.0) {
        snprintf(err, ecap, "rate_429 + rate_500 + rate_503 + drop_rate must not exceed 1");
        return -1;
    }
    return 0;
}

/* Parses the merged document into *out (zeroed by the caller). Returns 0, or -1 with err filled; on failure
 * *out may be partly filled and must be cleared with emu_cfg_clear. */
static int emu_cfg_parse(json_t *root, struct emu_cfg *c, char *err, size_t ecap)
{
    json_t *o;
    if (!json_is_object(root)) {
        snprintf(err, ecap, "config must be a JSON object");
        return -1;
    }
    if (cfg_str(root, "project_id", &c->project_id, err, ecap) ||
        cfg_str(root, "project_number", &c->project_number, err, ecap) ||
        cfg_bool(root, "auth", &c->auth, err, ecap) ||
        cfg_int(root, "token_lifetime_s", &c->token_lifetime_s, err, ecap) ||
        cfg_int(root, "max_body_bytes", &c->max_body_bytes, err, ecap) ||
        cfg_int(root, "jwks_max_age_s", &c->jwks_max_age_s, err, ecap) ||
        cfg_int(root, "list_page_size", &c->list_page_size, err, ecap) ||
        cfg_int(root, "list_max_page_size", &c->list_max_page_size, err, ecap))
        return -1;
    if (c->project_id == NULL || c->project_number == NULL) {
        snprintf(err, ecap, "project_id and project_number are required");
        return -1;
    }
    if (c->list_page_size < 1) c->list_page_size = 1;
    if (c->list_max_page_size < c->list_page_size) c->list_max_page_size = c->list_page_size;
    c->defaults.outcome = ST_DONE;
    if (cfg_rule(json_object_get(root, "job_defaults"), &c->defaults, err, ecap)) return -1;
    o = json_object_get(root, "jobs");
    if (o != NULL && !json_is_array(o)) {
        snprintf(err, ecap, "jobs must be an array of rules");
        return -1;
    }
    c->nrules = json_array_size(o);
    c->rules = calloc(c->nrules ? c->nrules : 1, sizeof *c->rules);
    if (c->rules == NULL) return -1;
    for (size_t i = 0; i < c->nrules; i++) {
        json_t *r = json_array_get(o, i);
        struct emu_rule *rule = &c->rules[i];
        *rule = c->defaults;
        rule->match = NULL;
        rule->failure_cause = c->defaults.failure_cause ? strdup(c->defaults.failure_cause) : NULL;
        if (cfg_rule(r, rule, err, ecap) || cfg_str(r, "match", &rule->match, err, ecap)) return -1;
        if (rule->match == NULL) {
            snprintf(err, ecap, "each job rule needs a \"match\" glob");
            return -1;
        }
    }
    o = json_object_get(root, "lag");
    char *mode = NULL;
    if (o != NULL && (cfg_int(o, "window_ms", &c->lag_window_ms, err, ecap) || cfg_str(o, "mode", &mode, err, ecap)))
        return -1;
    if (mode != NULL && strcmp(mode, "not_found") != 0 && strcmp(mode, "stale") != 0) {
        free(mode);
        snprintf(err, ecap, "lag.mode must be \"not_found\" or \"stale\"");
        return -1;
    }
    c->lag_stale = mode != NULL && strcmp(mode, "stale") == 0;
    free(mode);
    o = json_object_get(root, "templates");
    json_t *miss = json_object_get(o, "missing"), *req = json_object_get(o, "required_parameters");
    if ((miss != NULL && !json_is_array(miss)) || (req != NULL && !json_is_object(req))) {
        snprintf(err, ecap, "templates.missing must be an array and templates.required_parameters an object");
        return -1;
    }
    c->templates_missing = miss ? json_incref(miss) : json_array();
    c->templates_required = req ? json_incref(req) : json_object();
    o = json_object_get(root, "faults");
    if (o != NULL && !json_is_object(o)) {
        snprintf(err, ecap, "faults must be an object");
        return -1;
    }
    struct emu_fault def = {.retry_delay_s = 2, .launched_timeout_ms = 65000, .launched_timeout_drop = 1};
    if (cfg_fault(json_object_get(o, "default"), &def, err, ecap)) return -1;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        int known = strcmp(key, "default") == 0;
        for (int m = 0; m < M_COUNT && !known; m++) known = strcmp(key, emu_method_names[m]) == 0;
        if (!known) {
            snprintf(err, ecap, "unknown fault method %s", key);
            return -1;
        }
    }
    for (int m = 0; m < M_COUNT; m++) {
        /* The default spec applies to the Dataflow methods; the others only fail when named. */
        struct emu_fault base = {.retry_delay_s = 2, .launched_timeout_ms = 65000, .launched_timeout_drop = 1};
        c->faults[m] = m <= M_DATAFLOW_LAST ? def : base;
        if (cfg_fault(json_object_get(o, emu_method_names[m]), &c->faults[m], err, ecap)) return -1;
    }
    o = json_object_get(root, "events");
    if (o != NULL) {
        if (cfg_str(o, "push_url", &c->push_url, err, ecap) || cfg_str(o, "eventarc_url", &c->eventarc_url, err, ecap) ||
            cfg_str(o, "subscription", &c->subscription, err, ecap) || cfg_str(o, "audience", &c->audience, err, ecap) ||
            cfg_str(o, "email", &c->push_email, err, ecap) || cfg_rate(o, "duplicate_rate", &c->dup_rate, err, ecap) ||
            cfg_rate(o, "reorder_rate", &c->reorder_rate, err, ecap) ||
            cfg_int(o, "reorder_ms", &c->reorder_ms, err, ecap) ||
            cfg_int(o, "max_attempts", &c->max_attempts, err, ecap) ||
            cfg_int(o, "backoff_ms", &c->backoff_ms, err, ecap) ||
            cfg_int(o, "timeout_ms", &c->delivery_timeout_ms, err, ecap))
            return -1;
    }
    if (c->push_email == NULL) c->push_email = strdup("pubsub-push@emulator.iam.gserviceaccount.com");
    if (c->max_attempts < 1) c->max_attempts = 1;
    return 0;
}

/* ====================================================================================================
 * State
 * ==================================================================================================== */

struct emu_job {
    struct emu_job *next;
    uint64_t seq;
    char id[64];
    char *project, *region, *name, *template_path;
    json_t *labels; /* object; owned */
    int streaming;
    int state, prev_state, requested_state;
    int64_t create_ms, state_ms, prev_state_ms;
    int64_t next_ms; /* when the next automatic transition is due; 0 = none */
    struct emu_rule rule; /* copied timings (match/failure_cause pointers not owned: see failure_cause) */
    char *failure_cause;
};

struct emu_token {
    char *token;
    int64_t expires_ms;
};

struct emu_req; /* per-request state, below */

struct emu_delivery {
    struct emu_delivery *next;
    int kind; /* 0 push, 1 eventarc */
    char *url, *body, *audience, *email;
    char *headers[12];
    int nheaders;
    int attempt, max_attempts, backoff_ms, timeout_ms;
    int64_t due_ms;
};

static struct emu {
    pthread_mutex_t lock; /* guards everything below except the delivery queue */
    json_t *cfg_doc;      /* merged config document; owned */
    struct emu_cfg cfg;
    uint64_t seed;
    uint64_t rng[STREAM_COUNT];
    struct emu_job *jobs; /* newest first */
    /* Indexes, so a request costs the same with 10 jobs or 10,000 (benchmarks keep that many in flight):
     * job id -> job and "project/region/name" -> newest job of that name (jansson objects are hash maps;
     * values hold the pointer as an integer), and a min-heap of automatic transitions by due time. */
    json_t *by_id, *by_name;
    struct emu_timer { int64_t due; struct emu_job *job; } *heap;
    size_t heap_n, heap_cap;
    uint64_t job_seq;
    json_t *launches; /* array */
    json_t *stats;    /* object */
    struct emu_token *tokens;
    size_t ntokens, cap_tokens;
    uint64_t message_id;
    /* delayed answers, sorted by due time; connections stay suspended until then */
    struct emu_req *delayed;
    int suspended; /* connections currently suspended (delayed or not yet re-entered) */
    pthread_cond_t timer_cond;
    int stopping;   /* shutting down: delayed answers go out at once */
    int timer_exit; /* the timer thread ends (after the daemon stopped) */
    /* identity */
    jwt_key *sa_key, *oidc_key;
    char sa_kid[48], oidc_kid[48], client_email[160], client_id[32];
    char au_client_id[96], au_client_secret[48], au_refresh_token[64];
    char base_url[96], token_uri[128];
    /* delivery queue */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct emu_delivery *queue;
    size_t qlen, qdropped; /* bounded: see EMU_QUEUE_MAX */
    int qstopping;
    struct MHD_Daemon *daemon;
} E;

static void emu_rng_reseed(uint64_t seed)
{
    E.seed = seed;
    for (int i = 0; i < STREAM_COUNT; i++) {
        uint64_t s = seed ^ (0xa0761d6478bd642fULL * (uint64_t)(i + 1));
        E.rng[i] = emu_rng_next(&s);
    }
}

/* Counts one event in E.stats[group][key][sub] (sub may be NULL for a flat counter). Lock held. */
static void emu_stat_add(const char *group, const char *key, const char *sub, int n)
{
    json_t *g = json_object_get(E.stats, group);
    if (g == NULL) json_object_set_new(E.stats, group, g = json_object());
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

static void emu_stats_reset(void)
{
    json_decref(E.stats);
    E.stats = json_pack("{s:{}, s:{}, s:{}, s:{}, s:{}}", "launches_by_name", "jobs_created_by_name", "requests",
                        "token_grants", "deliveries");
}

static void emu_job_free(struct emu_job *j)
{
    if (j == NULL) return;
    free(j->project);
    free(j->region);
    free(j->name);
    free(j->template_path);
    free(j->failure_cause);
    json_decref(j->labels);
    free(j);
}

/* The Job resource as the API shows it. launch_shape: the launch response (no currentState, epoch
 * currentStateTime, no labels). with_labels: JOB_VIEW_DESCRIPTION/ALL. stale: show the previous state.
 * Returns a new reference. */
static json_t *emu_job_json(const struct emu_job *j, int launch_shape, int with_labels, int stale)
{
    char ct[64], st[64];
    emu_fmt_time(j->create_ms, launch_shape ? 6 : 3, ct, sizeof ct);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "id", j->id, "projectId", j->project, "name", j->name, "type",
                          j->streaming ? "JOB_TYPE_STREAMING" : "JOB_TYPE_BATCH");
    if (launch_shape) {
        json_object_set_new(o, "currentStateTime", json_string("1970-01-01T00:00:00Z"));
    } else {
        int state = stale ? j->prev_state : j->state;
        emu_fmt_time(stale ? j->prev_state_ms : j->state_ms, 3, st, sizeof st);
        json_object_set_new(o, "currentState", json_string(emu_state_names[state]));
        json_object_set_new(o, "currentStateTime", json_string(st));
        if (j->requested_state != ST_UNKNOWN && !stale)
            json_object_set_new(o, "requestedState", json_string(emu_state_names[j->requested_state]));
    }
    json_object_set_new(o, "createTime", json_string(ct));
    json_object_set_new(o, "location", json_string(j->region));
    json_object_set_new(o, "startTime", json_string(ct));
    if (with_labels && json_object_size(j->labels) > 0) json_object_set(o, "labels", j->labels);
    return o;
}

/* ====================================================================================================
 * Event delivery (Pub/Sub push of LogEntries and Eventarc CloudEvents), from one thread with libcurl.
 * ==================================================================================================== */

static void emu_delivery_free(struct emu_delivery *d)
{
    if (d == NULL) return;
    free(d->url);
    free(d->body);
    free(d->audience);
    free(d->email);
    for (int i = 0; i < d->nheaders; i++) free(d->headers[i]);
    free(d);
}

#define EMU_QUEUE_MAX 10000 /* deliveries waiting; beyond this new ones are dropped and counted */

/* Inserts by due time (stable: equal times keep arrival order). Takes ownership of d (freed when the
 * queue is full). */
static void emu_queue_insert(struct emu_delivery *d)
{
    pthread_mutex_lock(&E.qlock);
    if (E.qlen >= EMU_QUEUE_MAX) {
        E.qdropped++;
        pthread_mutex_unlock(&E.qlock);
        emu_delivery_free(d);
        return;
    }
    E.qlen++;
    struct emu_delivery **pp = &E.queue;
    while (*pp != NULL && (*pp)->due_ms <= d->due_ms) pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    pthread_cond_signal(&E.qcond);
    pthread_mutex_unlock(&E.qlock);
}

static struct emu_delivery *emu_delivery_copy(const struct emu_delivery *s)
{
    struct emu_delivery *d = calloc(1, sizeof *d);
    if (d == NULL) return NULL;
    *d = *s;
    d->next = NULL;
    d->url = strdup(s->url);
    d->body = strdup(s->body);
    d->audience = strdup(s->audience);
    d->email = strdup(s->email);
    for (int i = 0; i < s->nheaders; i++) d->headers[i] = strdup(s->headers[i]);
    return d;
}

static void emu_delivery_header(struct emu_delivery *d, const char *name, const char *value)
{
    if (d->nheaders >= (int)(sizeof d->headers / sizeof d->headers[0])) return;
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (h == NULL) return;
    snprintf(h, n, "%s: %s", name, value);
    d->headers[d->nheaders++] = h;
}

/* Queues one delivery built from `body` (stolen), applying the seeded duplicate and reorder dice.
 * Lock (E.lock) held. */
static void emu_deliver(int kind, const char *url, char *body, struct emu_delivery *proto)
{
    const struct emu_cfg *c = &E.cfg;
    const char *kname = kind ? "eventarc" : "push";
    struct emu_delivery *d = proto;
    d->kind = kind;
    d->url = strdup(url);
    d->body = body;
    d->audience = strdup(c->audience ? c->audience : url);
    d->email = strdup(c->push_email ? c->push_email : "pubsub-push@emulator.iam.gserviceaccount.com");
    d->max_attempts = c->max_attempts;
    d->backoff_ms = c->backoff_ms;
    d->timeout_ms = c->delivery_timeout_ms ? c->delivery_timeout_ms : 5000;
    d->due_ms = emu_now_ms();
    if (d->url == NULL || d->body == NULL || d->audience == NULL || d->email == NULL) {
        emu_delivery_free(d);
        return;
    }
    double r_dup = emu_rng_unit(&E.rng[STREAM_EVENTS]);
    double r_reorder = emu_rng_unit(&E.rng[STREAM_EVENTS]);
    if (r_reorder < c->reorder_rate) {
        d->due_ms += c->reorder_ms;
        emu_stat_add("deliveries", kname, "reordered", 1);
    }
    emu_stat_add("deliveries", kname, "queued", 1);
    if (r_dup < c->dup_rate) {
        struct emu_delivery *dup = emu_delivery_copy(d);
        if (dup != NULL) {
            dup->due_ms += 5;
            emu_stat_add("deliveries", kname, "duplicates", 1);
            emu_queue_insert(dup);
        }
    }
    emu_queue_insert(d);
}

static char *emu_b64_json(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    if (text == NULL) return NULL;
    char *out = jwt_b64_encode((const unsigned char *)text, strlen(text));
    free(text);
    return out;
}

/* One Pub/Sub wrapped push carrying a dataflow_step job-message LogEntry. Lock held. */
static void emu_push_log(const struct emu_job *j, const char *text, const char *severity, int64_t at_ms)
{
    const struct emu_cfg *c = &E.cfg;
    char ts[64], rts[64], pub[64], insert[16], msgid[32], sub[256];
    emu_fmt_time(at_ms, 9, ts, sizeof ts);
    emu_fmt_time(at_ms + 723, 9, rts, sizeof rts);
    emu_fmt_time(emu_now_ms(), 3, pub, sizeof pub);
    for (int i = 0; i < 8; i++) insert[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[emu_rng_next(&E.rng[STREAM_EVENTS]) % 36];
    insert[8] = '\0';
    snprintf(msgid, sizeof msgid, "%" PRIu64, E.message_id++);
    if (c->subscription != NULL) snprintf(sub, sizeof sub, "%s", c->subscription);
    else snprintf(sub, sizeof sub, "projects/%s/subscriptions/sluice-emulator-push", c->project_id);
    char logname[256];
    snprintf(logname, sizeof logname, "projects/%s/logs/dataflow.googleapis.com%%2Fjob-message", j->project);
    json_t *entry = json_pack(
        "{s:s, s:s, s:{s:s, s:{s:s, s:s, s:s, s:s, s:s}}, s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:s}", "textPayload", text,
        "insertId", insert, "resource", "type", "dataflow_step", "labels", "job_id", j->id, "step_id", "", "job_name",
        j->name, "project_id", c->project_number, "region", j->region, "timestamp", ts, "severity", severity,
        "labels", "dataflow.googleapis.com/job_id", j->id, "dataflow.googleapis.com/region", j->region,
        "dataflow.googleapis.com/job_name", j->name, "logName", logname, "receiveTimestamp", rts);
    char *data = emu_b64_json(entry);
    json_decref(entry);
    if (data == NULL) return;
    json_t *push = json_pack("{s:{s:{s:s}, s:s, s:s, s:s, s:s, s:s}, s:s}", "message", "attributes",
                             "logging.googleapis.com/timestamp", ts, "data", data, "messageId", msgid, "message_id",
                             msgid, "publishTime", pub, "publish_time", pub, "subscription", sub);
    free(data);
    char *body = json_dumps(push, JSON_COMPACT);
    json_decref(push);
    struct emu_delivery *d = calloc(1, sizeof *d);
    if (body == NULL || d == NULL) {
        free(body);
        free(d);
        return;
    }
    emu_delivery_header(d, "Content-Type", "application/json");
    emu_delivery_header(d, "User-Agent", "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)");
    emu_deliver(0, c->push_url, body, d);
}

/* Called (lock held) whenever a job's state changes: queues the Eventarc event and, for terminal states,
 * the Pub/Sub pushes of the job-message log lines. */
static void emu_on_state_change(const struct emu_job *j)
{
    const struct emu_cfg *c = &E.cfg;
    if (c->eventarc_url != NULL) {
        json_t *ev = json_pack("{s:s, s:o}", "@type", "type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData",
                               "payload", emu_job_json(j, 0, 1, 0));
        char *body = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        struct emu_delivery *d = calloc(1, sizeof *d);
        if (body != NULL && d != NULL) {
            char id[40], src[256], subj[1100], tm[64];
            emu_random_hex(id, 32);
            snprintf(src, sizeof src, "//dataflow.googleapis.com/projects/%s/locations/%s", j->project, j->region);
            snprintf(subj, sizeof subj, "jobs/%s", j->name);
            emu_fmt_time(j->state_ms, 3, tm, sizeof tm);
            emu_delivery_header(d, "Content-Type", "application/json; charset=utf-8");
            emu_delivery_header(d, "ce-id", id);
            emu_delivery_header(d, "ce-source", src);
            emu_delivery_header(d, "ce-specversion", "1.0");
            emu_delivery_header(d, "ce-type", "google.cloud.dataflow.job.v1beta3.statusChanged");
            emu_delivery_header(d, "ce-subject", subj);
            emu_delivery_header(d, "ce-time", tm);
            emu_delivery_header(d, "ce-dataschema", "https://googleapis.github.io/google-cloudevents/proto/google/events/cloud/dataflow/v1beta3/data.proto#JobEventData");
            emu_delivery_header(d, "ce-project", c->project_number);
            emu_delivery_header(d, "ce-location", j->region);
            emu_delivery_header(d, "ce-job", j->name);
            emu_deliver(1, c->eventarc_url, body, d);
        } else {
            free(body);
            free(d);
        }
    }
    if (c->push_url != NULL && emu_state_terminal(j->state)) {
        /* Texts for cancel and drain are unknown; the emulator only logs the worker pool stop for them. */
        if (j->state == ST_DONE) {
            emu_push_log(j, "Executing success step s01", "INFO", j->state_ms - 2);
        } else if (j->state == ST_FAILED) {
            char text[1200];
            snprintf(text, sizeof text, "Workflow failed. Causes: %s", j->failure_cause ? j->failure_cause : "unknown");
            emu_push_log(j, text, "ERROR", j->state_ms - 2);
        }
        emu_push_log(j, "Worker pool stopped.", "INFO", j->state_ms - 1);
    }
}

/* Signs the OIDC token a push or event carries (Google's push token shape); caller frees. */
static char *emu_oidc_token(const char *aud, const char *email, int64_t now_s)
{
    json_t *hdr = json_pack("{s:s}", "kid", E.oidc_kid);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:s}", "aud", aud, "azp", "113774264463038321964",
                               "email", email, "sub", "113774264463038321964", "email_verified", 1, "exp",
                               (json_int_t)(now_s + 3600), "iat", (json_int_t)now_s, "iss", "https://accounts.google.com");
    char *tok = jwt_sign_rs256(E.oidc_key, hdr, claims);
    json_decref(hdr);
    json_decref(claims);
    return tok;
}

static size_t emu_curl_discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

/* Sends one delivery; returns the HTTP status (0 on a transport error). */
static long emu_send(CURL *curl, struct emu_delivery *d)
{
    struct curl_slist *hl = NULL;
    long status = 0;
    for (int i = 0; i < d->nheaders; i++) hl = curl_slist_append(hl, d->headers[i]);
    char *tok = emu_oidc_token(d->audience, d->email, emu_now_ms() / 1000);
    if (tok != NULL) {
        size_t n = strlen(tok) + 32;
        char *auth = malloc(n);
        if (auth != NULL) {
            snprintf(auth, n, "Authorization: Bearer %s", tok);
            hl = curl_slist_append(hl, auth);
            free(auth);
        }
        free(tok);
    }
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, d->url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, emu_curl_discard);
    if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    return status;
}

static void *emu_delivery_thread(void *arg)
{
    (void)arg;
    CURL *curl = curl_easy_init();
    pthread_mutex_lock(&E.qlock);
    while (!E.qstopping) {
        int64_t now = emu_now_ms();
        struct emu_delivery *d = E.queue;
        if (d == NULL || d->due_ms > now) {
            if (d == NULL) {
                pthread_cond_wait(&E.qcond, &E.qlock);
            } else {
                struct timespec ts = {.tv_sec = d->due_ms / 1000, .tv_nsec = (d->due_ms % 1000) * 1000000};
                pthread_cond_timedwait(&E.qcond, &E.qlock, &ts);
            }
            continue;
        }
        E.queue = d->next;
        E.qlen--;
        pthread_mutex_unlock(&E.qlock);
        long status = curl ? emu_send(curl, d) : 0;
        /* Pub/Sub's ack codes; anything else is a nack and is retried with exponential backoff. */
        int ok = status == 102 || status == 200 || status == 201 || status == 202 || status == 204;
        const char *kname = d->kind ? "eventarc" : "push";
        d->attempt++;
        pthread_mutex_lock(&E.lock);
        emu_stat_add("deliveries", kname, ok ? "delivered" : "failed_attempts", 1);
        if (!ok && d->attempt >= d->max_attempts) emu_stat_add("deliveries", kname, "given_up", 1);
        pthread_mutex_unlock(&E.lock);
        if (!ok && d->attempt < d->max_attempts) {
            int shift = d->attempt - 1 > 16 ? 16 : d->attempt - 1;
            d->due_ms = emu_now_ms() + (int64_t)d->backoff_ms * (1 << shift);
            emu_queue_insert(d);
        } else {
            emu_delivery_free(d);
        }
        pthread_mutex_lock(&E.qlock);
    }
    pthread_mutex_unlock(&E.qlock);
    curl_easy_cleanup(curl);
    return NULL;
}

/* ====================================================================================================
 * Job lifecycle
 * ==================================================================================================== */

static void emu_job_set_state(struct emu_job *j, int st, int64_t at_ms)
{
    j->prev_state = j->state;
    j->prev_state_ms = j->state_ms;
    j->state = st;
    j->state_ms = at_ms;
    emu_on_state_change(j);
}

static void emu_heap_swap(size_t a, size_t b)
{
    struct emu_timer t = E.heap[a];
    E.heap[a] = E.heap[b];
    E.heap[b] = t;
}

/* Schedules j's next automatic transition (j->next_ms); lock held. A later change of next_ms leaves the old
 * entry behind: entries whose due no longer matches the job's are skipped when they surface. */
static void emu_timer_push(struct emu_job *j)
{
    if (j->next_ms == 0) return;
    if (E.heap_n == E.heap_cap) {
        size_t cap = E.heap_cap ? E.heap_cap * 2 : 256;
        struct emu_timer *h = realloc(E.heap, cap * sizeof *h);
        if (h == NULL) return;
        E.heap = h;
        E.heap_cap = cap;
    }
    size_t i = E.heap_n++;
    E.heap[i] = (struct emu_timer){j->next_ms, j};
    while (i > 0 && E.heap[(i - 1) / 2].due > E.heap[i].due) {
        emu_heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void emu_timer_pop(void)
{
    E.heap[0] = E.heap[--E.heap_n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < E.heap_n && E.heap[l].due < E.heap[m].due) m = l;
        if (r < E.heap_n && E.heap[r].due < E.heap[m].due) m = r;
        if (m == i) break;
        emu_heap_swap(i, m);
        i = m;
    }
}

/* Drops stale entries from the top; returns the earliest live one or NULL. */
static struct emu_timer *emu_timer_top(void)
{
    while (E.heap_n > 0) {
        struct emu_timer *t = &E.heap[0];
        if (t->job->next_ms == t->due && !emu_state_terminal(t->job->state)) return t;
        emu_timer_pop();
    }
    return NULL;
}

/* Applies every automatic transition that is due by `now`, in time order per job; a zero duration makes
 * the next transition due at once, so several can happen in one call. Lock held. Cost: the transitions due. */
static void emu_jobs_advance(int64_t now)
{
    struct emu_timer *t;
    while ((t = emu_timer_top()) != NULL && t->due <= now) {
        struct emu_job *j = t->job;
        emu_timer_pop();
        while (j->next_ms != 0 && j->next_ms <= now && !emu_state_terminal(j->state)) {
            int64_t at = j->next_ms;
            j->next_ms = 0;
            switch (j->state) {
            case ST_QUEUED:
                emu_job_set_state(j, ST_PENDING, at);
                j->next_ms = at + j->rule.pending_ms;
                break;
            case ST_PENDING:
                emu_job_set_state(j, ST_RUNNING, at);
                if (!j->streaming) j->next_ms = at + j->rule.running_ms;
                break;
            case ST_RUNNING: emu_job_set_state(j, j->rule.outcome, at); break;
            case ST_CANCELLING: emu_job_set_state(j, ST_CANCELLED, at); break;
            case ST_DRAINING: emu_job_set_state(j, ST_DRAINED, at); break;
            default: break;
            }
        }
        emu_timer_push(j);
    }
}

static int64_t emu_jobs_next_deadline(void)
{
    struct emu_timer *t = emu_timer_top();
    return t ? t->due : 0;
}

static char *emu_name_key(const char *project, const char *region, const char *name)
{
    char *k = NULL;
    if (asprintf(&k, "%s/%s/%s", project, region, name) < 0) return NULL;
    return k;
}

static struct emu_job *emu_index_get(json_t *index, const char *key)
{
    json_t *v = key ? json_object_get(index, key) : NULL;
    return v ? (struct emu_job *)(intptr_t)json_integer_value(v) : NULL;
}

static void emu_index_put(json_t *index, const char *key, struct emu_job *j)
{
    if (key) json_object_set_new(index, key, json_integer((json_int_t)(intptr_t)j));
}

static const struct emu_rule *emu_rule_for(const char *name)
{
    for (size_t i = 0; i < E.cfg.nrules; i++)
        if (fnmatch(E.cfg.rules[i].match, name, 0) == 0) return &E.cfg.rules[i];
    return &E.cfg.defaults;
}

static struct emu_job *emu_job_find_any(const char *id) { return emu_index_get(E.by_id, id); }

static struct emu_job *emu_job_find(const char *project, const char *region, const char *id)
{
    struct emu_job *j = emu_job_find_any(id);
    return j && strcmp(j->project, project) == 0 && strcmp(j->region, region) == 0 ? j : NULL;
}

/* Only the newest job of a name can be active: a launch is refused while an older one is. */
static struct emu_job *emu_job_active_named(const char *project, const char *region, const char *name)
{
    char *k = emu_name_key(project, region, name);
    struct emu_job *j = emu_index_get(E.by_name, k);
    free(k);
    return j && !emu_state_terminal(j->state) ? j : NULL;
}

/* Creates a job (lock held). labels: borrowed. Returns the job (owned by E.jobs) or NULL on OOM. */
static struct emu_job *emu_job_create(const char *project, const char *region, const char *name,
                                      const char *template_path, json_t *labels, int streaming_param)
{
    struct emu_job *j = calloc(1, sizeof *j);
    if (j == NULL) return NULL;
    const struct emu_rule *r = emu_rule_for(name);
    int64_t now = emu_now_ms();
    j->project = strdup(project);
    j->region = strdup(region);
    j->name = strdup(name);
    j->template_path = strdup(template_path ? template_path : "");
    j->failure_cause = r->failure_cause ? strdup(r->failure_cause) : NULL;
    j->labels = labels ? json_deep_copy(labels) : json_object();
    if (!j->project || !j->region || !j->name || !j->template_path || !j->labels) {
        emu_job_free(j);
        return NULL;
    }
    j->rule = *r;
    j->rule.match = NULL;
    j->rule.failure_cause = NULL;
    j->streaming = r->streaming || streaming_param;
    j->create_ms = now;
    j->seq = ++E.job_seq;
    /* The real format: YYYY-MM-DD_HH_MM_SS-<digits>. */
    for (;;) {
        time_t sec = (time_t)(now / 1000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        char base[32];
        strftime(base, sizeof base, "%Y-%m-%d_%H_%M_%S", &tm);
        uint64_t digits = emu_rng_next(&E.rng[STREAM_IDS]) % 9000000000000000000ULL + 1000000000000000000ULL;
        snprintf(j->id, sizeof j->id, "%s-%" PRIu64, base, digits);
        if (emu_job_find_any(j->id) == NULL) break;
    }
    j->state = j->prev_state = r->queued_ms > 0 ? ST_QUEUED : ST_PENDING;
    j->state_ms = j->prev_state_ms = now;
    j->next_ms = now + (r->queued_ms > 0 ? r->queued_ms : r->pending_ms);
    j->next = E.jobs;
    E.jobs = j;
    emu_index_put(E.by_id, j->id, j);
    char *nk = emu_name_key(project, region, name);
    emu_index_put(E.by_name, nk, j);
    free(nk);
    emu_timer_push(j);
    emu_stat_add("jobs_created_by_name", name, NULL, 1);
    emu_on_state_change(j);
    pthread_cond_signal(&E.timer_cond);
    return j;
}

/* ====================================================================================================
 * Tokens
 * ==================================================================================================== */

/* Issues a new access token (lock held); returns it (borrowed until revoked) or NULL. */
static const char *emu_token_issue(const char *grant)
{
    int64_t now = emu_now_ms();
    size_t w = 0;
    for (size_t i = 0; i < E.ntokens; i++) {
        if (E.tokens[i].expires_ms > now) E.tokens[w++] = E.tokens[i];
        else free(E.tokens[i].token);
    }
    E.ntokens = w;
    if (E.ntokens == E.cap_tokens) {
        size_t cap = E.cap_tokens ? E.cap_tokens * 2 : 16;
        struct emu_token *nt = realloc(E.tokens, cap * sizeof *nt);
        if (nt == NULL) return NULL;
        E.tokens = nt;
        E.cap_tokens = cap;
    }
    char hex[41], *tok = malloc(64);
    if (tok == NULL) return NULL;
    emu_random_hex(hex, 40);
    snprintf(tok, 64, "ya29.emu.%s", hex);
    E.tokens[E.ntokens].token = tok;
    E.tokens[E.ntokens].expires_ms = now + (int64_t)E.cfg.token_lifetime_s * 1000;
    E.ntokens++;
    emu_stat_add("token_grants", grant, NULL, 1);
    return tok;
}

static int emu_token_valid(const char *tok)
{
    int64_t now = emu_now_ms();
    for (size_t i = 0; i < E.ntokens; i++)
        if (strcmp(E.tokens[i].token, tok) == 0) return E.tokens[i].expires_ms > now;
    return 0;
}

static void emu_tokens_revoke(void)
{
    for (size_t i = 0; i < E.ntokens; i++) free(E.tokens[i].token);
    E.ntokens = 0;
}

/* ====================================================================================================
 * HTTP plumbing: per-request state, responses, delayed answers
 * ==================================================================================================== */

struct emu_resp {
    int status;   /* 0 = not decided */
    int drop;     /* close the connection without an answer */
    char *body;   /* owned */
    const char *ctype;
    char *hname[4], *hval[4]; /* extra headers; owned */
    int nh;
};

struct emu_req {
    struct MHD_Connection *conn;
    int started;
    char *body;
    size_t len, cap;
    int too_large;
    int ready; /* the answer in `resp` is decided; queue it on the next call */
    int parked; /* counted in E.suspended until the handler runs again or the connection ends */
    int in_delayed;
    int64_t due_ms;
    struct emu_req *next_delayed;
    struct emu_resp resp;
};

static void emu_resp_clear(struct emu_resp *r)
{
    free(r->body);
    for (int i = 0; i < r->nh; i++) {
        free(r->hname[i]);
        free(r->hval[i]);
    }
    memset(r, 0, sizeof *r);
}

static void emu_resp_header(struct emu_resp *r, const char *name, const char *value)
{
    if (r->nh >= 4) return;
    r->hname[r->nh] = strdup(name);
    r->hval[r->nh] = strdup(value);
    r->nh++;
}

/* Sets a JSON answer; `v` is stolen. */
static void emu_resp_json(struct emu_resp *r, int status, json_t *v)
{
    free(r->body);
    r->body = v ? json_dumps(v, JSON_INDENT(2)) : NULL;
    json_decref(v);
    if (r->body == NULL) r->body = strdup("{}");
    r->status = status;
    r->ctype = "application/json; charset=UTF-8";
}

static void emu_resp_text(struct emu_resp *r, int status, const char *ctype, const char *text)
{
    free(r->body);
    r->body = strdup(text);
    r->status = status;
    r->ctype = ctype;
}

static const char *emu_reason_for(int code)
{
    switch (code) {
    case 400: return "badRequest";
    case 401: return "authError";
    case 403: return "forbidden";
    case 409: return "alreadyExists";
    case 413: return "badRequest";
    case 405: return "badRequest";
    case 500: return "backendError";
    case 503: return "backendError";
    default: return NULL;
    }
}

/* Google's error body. with_errors: add the legacy errors[] array (domain/reason/message). details: stolen,
 * may be NULL. Messages get the "(hex): " prefix Dataflow puts on its own errors when `prefixed`. */
static void emu_resp_gerror(struct emu_resp *r, int code, const char *status, int with_errors, int prefixed,
                            json_t *details, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void emu_resp_gerror(struct emu_resp *r, int code, const char *status, int with_errors, int prefixed,
                            json_t *details, const char *fmt, ...)
{
    char msg[2048], full[2100], hex[17];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (prefixed) {
        emu_random_hex(hex, 16);
        snprintf(full, sizeof full, "(%s): %s", hex, msg);
    } else {
        snprintf(full, sizeof full, "%s", msg);
    }
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", full);
    const char *reason = emu_reason_for(code);
    if (with_errors && reason != NULL)
        json_object_set_new(err, "errors", json_pack("[{s:s, s:s, s:s}]", "domain", "global", "reason", reason,
                                                     "message", full));
    json_object_set_new(err, "status", json_string(status));
    if (details != NULL) json_object_set_new(err, "details", details);
    emu_resp_json(r, code, json_pack("{s:o}", "error", err));
}

static void emu_resp_oauth_error(struct emu_resp *r, int code, const char *error, const char *desc)
{
    emu_resp_json(r, code, json_pack("{s:s, s:s}", "error", error, "error_description", desc));
}

/* Queues the decided answer. Returns MHD_NO for a drop (MHD then closes the connection). */
static enum MHD_Result emu_queue(struct emu_req *q)
{
    struct emu_resp *r = &q->resp;
    if (r->drop) return MHD_NO;
    const char *body = r->body ? r->body : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) return MHD_NO;
    if (r->ctype) MHD_add_response_header(resp, "Content-Type", r->ctype);
    for (int i = 0; i < r->nh; i++)
        if (r->hname[i] && r->hval[i]) MHD_add_response_header(resp, r->hname[i], r->hval[i]);
    enum MHD_Result ret = MHD_queue_response(q->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Parks the decided answer for `delay_ms`: suspends the connection (called from the handler, without
 * E.lock) and only then makes it visible to the timer thread, so a resume can never precede the suspend. */
static void emu_delay(struct emu_req *q, int64_t delay_ms)
{
    q->ready = 1;
    MHD_suspend_connection(q->conn);
    pthread_mutex_lock(&E.lock);
    E.suspended++;
    q->parked = 1;
    q->due_ms = emu_now_ms() + delay_ms;
    if (E.stopping) q->due_ms = 0; /* the timer is draining: answer at once */
    struct emu_req **pp = &E.delayed;
    while (*pp != NULL && (*pp)->due_ms <= q->due_ms) pp = &(*pp)->next_delayed;
    q->next_delayed = *pp;
    *pp = q;
    q->in_delayed = 1;
    pthread_cond_signal(&E.timer_cond);
    pthread_mutex_unlock(&E.lock);
}

static void *emu_timer_thread(void *arg)
{
    (void)arg;
    struct MHD_Connection *due[256];
    pthread_mutex_lock(&E.lock);
    for (;;) {
        int64_t now = emu_now_ms();
        emu_jobs_advance(now);
        int n = 0;
        while (E.delayed != NULL && (E.delayed->due_ms <= now || E.stopping) && n < 256) {
            struct emu_req *q = E.delayed;
            E.delayed = q->next_delayed;
            q->in_delayed = 0;
            due[n++] = q->conn;
        }
        if (n > 0) {
            /* Resume outside our lock: MHD takes its own locks and the handler then takes ours. */
            pthread_mutex_unlock(&E.lock);
            for (int i = 0; i < n; i++) MHD_resume_connection(due[i]);
            pthread_mutex_lock(&E.lock);
            continue;
        }
        if (E.timer_exit) break;
        int64_t next = emu_jobs_next_deadline();
        if (E.delayed != NULL && (next == 0 || E.delayed->due_ms < next)) next = E.delayed->due_ms;
        if (next == 0 || next > now + 1000) next = now + 1000;
        struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000};
        pthread_cond_timedwait(&E.timer_cond, &E.lock, &ts);
    }
    pthread_mutex_unlock(&E.lock);
    return NULL;
}

/* ====================================================================================================
 * Request validation (what the real API refuses)
 * ==================================================================================================== */

struct emu_call {
    struct emu_req *q;
    struct MHD_Connection *conn;
    const char *http_method;
    int m;
    char project[256], region[128], jobid[256];
    json_t *entry;      /* the launch record being filled (borrowed from E.launches), or NULL */
    int created;        /* a launch created a job */
    char outcome[48];
};

static const char *emu_query(struct emu_call *cx, const char *key)
{
    return MHD_lookup_connection_value(cx->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* [a-z]([-a-z0-9]{0,1022}[a-z0-9])? */
static int emu_job_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len < 1 || len > 1024 || !(n[0] >= 'a' && n[0] <= 'z')) return 0;
    for (size_t i = 1; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '-')) return 0;
    return n[len - 1] != '-';
}

static int emu_label_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-')) return 0;
    return 1;
}

/* Label rules: at most 64; keys 1-63 chars starting with a lowercase letter; values 0-63; only
 * [a-z0-9_-]. Returns 0, or -1 with msg filled. */
static int emu_labels_ok(json_t *labels, char *msg, size_t cap)
{
    if (labels == NULL) return 0;
    if (!json_is_object(labels)) {
        snprintf(msg, cap, "additionalUserLabels must be a map of strings");
        return -1;
    }
    if (json_object_size(labels) > 64) {
        snprintf(msg, cap, "Too many labels: %zu (at most 64 are allowed).", json_object_size(labels));
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        size_t kl = strlen(k);
        if (kl < 1 || kl > 63 || !(k[0] >= 'a' && k[0] <= 'z') || !emu_label_chars_ok(k)) {
            snprintf(msg, cap, "Invalid label key '%.100s': keys must be 1-63 characters, start with a lowercase "
                               "letter and contain only lowercase letters, digits, underscores and dashes.", k);
            return -1;
        }
        if (!json_is_string(v)) {
            snprintf(msg, cap, "Invalid value at 'additional_user_labels[%.100s]' (TYPE_STRING)", k);
            return -1;
        }
        const char *s = json_string_value(v);
        if (strlen(s) > 63 || !emu_label_chars_ok(s)) {
            snprintf(msg, cap, "Invalid label value '%.100s' for key '%.100s': values must be at most 63 characters "
                               "and contain only lowercase letters, digits, underscores and dashes.", s, k);
            return -1;
        }
    }
    return 0;
}

/* Proto-style strictness: an unknown field is a 400. Returns the first unknown key or NULL. */
static const char *emu_unknown_field(json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(allowed[i], k) == 0;
        if (!ok) return k;
    }
    return NULL;
}

static const char *const emu_env_fields[] = {
    "numWorkers", "maxWorkers", "zone", "serviceAccountEmail", "tempLocation", "bypassTempDirValidation",
    "machineType", "additionalExperiments", "network", "subnetwork", "additionalUserLabels", "kmsKeyName",
    "ipConfiguration", "workerRegion", "workerZone", "enableStreamingEngine", "flexrsGoal", "stagingLocation",
    "sdkContainerImage", "diskSizeGb", "autoscalingAlgorithm", "dumpHeapOnOom", "saveHeapDumpsToGcsPath",
    "launcherMachineType", "enableLauncherVmSerialPortLogging", "streamingMode", "additionalPipelineOptions",
    NULL};

static void emu_bad_request(struct emu_resp *r, const char *msg)
{
    emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0,
                    json_pack("[{s:s, s:[{s:s}]}]", "@type", "type.googleapis.com/google.rpc.BadRequest",
                              "fieldViolations", "description", msg),
                    "%s", msg);
}

/* Parses the request body as a JSON object (empty = {}). On failure answers 400 and returns NULL.
 * Caller decrefs. */
static json_t *emu_body_json(struct emu_call *cx)
{
    struct emu_req *q = cx->q;
    if (q->len == 0) return json_object();
    json_error_t je;
    json_t *v = json_loadb(q->body, q->len, 0, &je);
    if (v == NULL || !json_is_object(v)) {
        char msg[512];
        snprintf(msg, sizeof msg, "Invalid JSON payload received. %s.\n%.40s\n^",
                 v == NULL ? "Unexpected token" : "Expected an object", q->body);
        json_decref(v);
        emu_bad_request(&q->resp, msg);
        return NULL;
    }
    return v;
}

/* Checks a map<string,string> field; returns 0 or -1 with msg. */
static int emu_string_map_ok(json_t *m, const char *field, char *msg, size_t cap)
{
    if (m == NULL || json_is_null(m)) return 0;
    if (!json_is_object(m)) {
        snprintf(msg, cap, "Invalid JSON payload received. Expected an object for '%s'.", field);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v)) {
            snprintf(msg, cap, "Invalid value at '%s[%.100s]' (TYPE_STRING)", field, k);
            return -1;
        }
    }
    return 0;
}

static int emu_glob_listed(json_t *globs, const char *path)
{
    size_t i;
    json_t *g;
    json_array_foreach(globs, i, g)
    {
        if (json_is_string(g) && fnmatch(json_string_value(g), path, 0) == 0) return 1;
    }
    return 0;
}

/* The InvalidTemplateParameters 400 for the given violations (stolen array of {parameter, description}). */
static void emu_invalid_params(struct emu_resp *r, json_t *violations)
{
    char msg[1024] = "Invalid template parameters: ";
    size_t i;
    json_t *v;
    json_array_foreach(violations, i, v)
    {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, "%s%s: %s", i ? "; " : "",
                 json_string_value(json_object_get(v, "parameter")),
                 json_string_value(json_object_get(v, "description")));
    }
    emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 0, 0,
                    json_pack("[{s:s, s:o}]", "@type", "type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters",
                              "parameterViolations", violations),
                    "%s", msg);
}

/* Both launch methods. Lock held. */
static void emu_launch(struct emu_call *cx, int flex)
{
    static const char *const top_flex[] = {"launchParameter", "validateOnly", NULL};
    static const char *const lp_fields[] = {"jobName", "parameters", "launchOptions", "containerSpec",
                                            "containerSpecGcsPath", "environment", "update",
                                            "transformNameMappings", NULL};
    static const char *const classic_fields[] = {"jobName", "parameters", "environment", "update",
                                                 "transformNameMapping", NULL};
    struct emu_resp *r = &cx->q->resp;
    char msg[1024];
    json_t *body = emu_body_json(cx);
    json_t *lp, *env, *params, *labels;
    const char *name, *path, *unknown;
    int validate_only = 0;
    snprintf(cx->outcome, sizeof cx->outcome, "rejected");
    if (body == NULL) goto out;
    if (flex) {
        if ((unknown = emu_unknown_field(body, top_flex)) != NULL) {
            snprintf(msg, sizeof msg, "Invalid JSON payload received. Unknown name \"%.100s\": Cannot find field.", unknown);
            emu_bad_request(r, msg);
            goto out;
        }
        lp = json_object_get(body, "launchParameter");
        json_t *vo = json_object_get(body, "validateOnly");
        if (vo != NULL && !json_is_boolean(vo)) {
            emu_bad_request(r, "Invalid value at 'validate_only' (TYPE_BOOL)");
            goto out;
        }
        validate_only = json_is_true(vo);
        if (!json_is_object(lp)) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL, "launchParameter is required.");
            goto out;
        }
        if ((unknown = emu_unknown_field(lp, lp_fields)) != NULL) {
            snprintf(msg, sizeof msg,
                     "Invalid JSON payload received. Unknown name \"%.100s\" at 'launch_parameter': Cannot find field.",
                     unknown);
            emu_bad_request(r, msg);
            goto out;
        }
    } else {
        lp = body;
        if ((unknown = emu_unknown_field(body, classic_fields)) != NULL) {
            snprintf(msg, sizeof msg, "Invalid JSON payload received. Unknown name \"%.100s\": Cannot find field.", unknown);
            emu_bad_request(r, msg);
            goto out;
        }
        const char *vo = emu_query(cx, "validateOnly");
        validate_only = vo != NULL && strcmp(vo, "true") == 0;
    }
    env = json_object_get(lp, "environment");
    if (env != NULL && !json_is_object(env)) {
        emu_bad_request(r, "Invalid JSON payload received. Expected an object for 'environment'.");
        goto out;
    }
    if (env != NULL && (unknown = emu_unknown_field(env, emu_env_fields)) != NULL) {
        snprintf(msg, sizeof msg,
                 "Invalid JSON payload received. Unknown name \"%.100s\" at '%senvironment': Cannot find field.",
                 unknown, flex ? "launch_parameter." : "");
        emu_bad_request(r, msg);
        goto out;
    }
    params = json_object_get(lp, "parameters");
    labels = json_object_get(env, "additionalUserLabels");
    if (emu_string_map_ok(params, "parameters", msg, sizeof msg) != 0) {
        emu_bad_request(r, msg);
        goto out;
    }
    json_t *jn = json_object_get(lp, "jobName");
    if (jn != NULL && !json_is_string(jn)) {
        emu_bad_request(r, "Invalid value at 'job_name' (TYPE_STRING)");
        goto out;
    }
    name = json_string_value(jn);
    if (name == NULL || *name == '\0') {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "The workflow could not be created. Causes: A job name is required (jobName).");
        goto out;
    }
    if (!emu_job_name_ok(name)) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "The workflow could not be created. Causes: Invalid job name (%.200s). The job name must "
                        "consist of only the characters [-a-z0-9], starting with a letter and ending with a letter "
                        "or number.", name);
        goto out;
    }
    if (flex) {
        json_t *p = json_object_get(lp, "containerSpecGcsPath");
        if (p != NULL && !json_is_string(p)) {
            emu_bad_request(r, "Invalid value at 'launch_parameter.container_spec_gcs_path' (TYPE_STRING)");
            goto out;
        }
        path = json_string_value(p);
        if (path == NULL && json_is_object(json_object_get(lp, "containerSpec"))) path = "inline-container-spec";
        if (path == NULL) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL,
                            "Either containerSpecGcsPath or containerSpec must be specified.");
            goto out;
        }
    } else {
        path = emu_query(cx, "gcsPath");
        if (path == NULL || *path == '\0') {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL, "gcsPath is required for templates.launch.");
            goto out;
        }
        const char *tl = json_string_value(json_object_get(env, "tempLocation"));
        if (tl == NULL || strncmp(tl, "gs://", 5) != 0) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                            "The workflow could not be created. Causes: environment.tempLocation is required and "
                            "must be a gs:// path.");
            goto out;
        }
    }
    if (strcmp(path, "inline-container-spec") != 0 && strncmp(path, "gs://", 5) != 0) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL,
                        "Invalid template file path %.300s: it must be a Cloud Storage path (gs://bucket/object).", path);
        goto out;
    }
    if (emu_labels_ok(labels, msg, sizeof msg) != 0) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL, "The workflow could not be created. Causes: %s", msg);
        goto out;
    }
    if (emu_glob_listed(E.cfg.templates_missing, path)) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "Unable to open template file: %.300s. Please check that the template file exists and that "
                        "the caller has permission to read it.", path);
        goto out;
    }
    {
        /* Required parameters of this template path (first matching glob). */
        const char *glob;
        json_t *names;
        json_t *violations = json_array();
        json_object_foreach(E.cfg.templates_required, glob, names)
        {
            if (fnmatch(glob, path, 0) != 0) continue;
            size_t i;
            json_t *pn;
            json_array_foreach(names, i, pn)
            {
                const char *n = json_string_value(pn);
                if (n != NULL && json_object_get(params, n) == NULL)
                    json_array_append_new(violations, json_pack("{s:s, s:s}", "parameter", n, "description",
                                                                "Required parameter is missing."));
            }
            break;
        }
        if (json_array_size(violations) > 0) {
            emu_invalid_params(r, violations);
            goto out;
        }
        json_decref(violations);
    }
    if (emu_job_active_named(cx->project, cx->region, name) != NULL) {
        emu_resp_gerror(r, 409, "ALREADY_EXISTS", 1, 1, NULL,
                        "There is already an active job named %s. If you want to  submit a second job, try again by "
                        "setting a different name.", name);
        goto out;
    }
    if (validate_only) {
        snprintf(cx->outcome, sizeof cx->outcome, "validated");
        emu_resp_json(r, 200, json_object());
        goto out;
    }
    const char *sp = json_string_value(json_object_get(params, "streaming"));
    struct emu_job *j = emu_job_create(cx->project, cx->region, name, path, labels, sp && strcmp(sp, "true") == 0);
    if (j == NULL) {
        emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
        goto out;
    }
    cx->created = 1;
    snprintf(cx->outcome, sizeof cx->outcome, "created");
    if (cx->entry) json_object_set_new(cx->entry, "job_id", json_string(j->id));
    emu_resp_json(r, 200, json_pack("{s:o}", "job", emu_job_json(j, 1, 0, 0)));
out:
    json_decref(body);
}

static int emu_view_labels(struct emu_call *cx, int *bad)
{
    const char *v = emu_query(cx, "view");
    *bad = 0;
    if (v == NULL || strcmp(v, "JOB_VIEW_SUMMARY") == 0 || strcmp(v, "JOB_VIEW_UNKNOWN") == 0) return 0;
    if (strcmp(v, "JOB_VIEW_DESCRIPTION") == 0 || strcmp(v, "JOB_VIEW_ALL") == 0) return 1;
    *bad = 1;
    return 0;
}

static void emu_not_found(struct emu_resp *r, const char *id)
{
    emu_resp_gerror(r, 404, "NOT_FOUND", 0, 1, NULL,
                    "Information about job %.200s could not be found in our system. Please double check that the API "
                    "being used is projects.locations.jobs.get (https://cloud.google.com/dataflow/docs/reference/rest/"
                    "v1b3/projects.locations.jobs/get). If the API being used is projects.locations.jobs.get, please "
                    "double check the id is correct. If it is please contact customer support.", id);
}

static void emu_jobs_get(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    int bad;
    int labels = emu_view_labels(cx, &bad);
    if (bad) {
        emu_bad_request(r, "Invalid value for view: must be one of JOB_VIEW_SUMMARY, JOB_VIEW_ALL, JOB_VIEW_DESCRIPTION.");
        return;
    }
    struct emu_job *j = emu_job_find(cx->project, cx->region, cx->jobid);
    if (j == NULL) {
        emu_not_found(r, cx->jobid);
        return;
    }
    /* Eventual consistency right after completion: 404 or the previous state, for a window. */
    int lagging = emu_state_terminal(j->state) && E.cfg.lag_window_ms > 0 &&
                  emu_now_ms() < j->state_ms + E.cfg.lag_window_ms;
    if (lagging && !E.cfg.lag_stale) {
        emu_not_found(r, cx->jobid);
        return;
    }
    emu_resp_json(r, 200, emu_job_json(j, 0, labels, lagging));
}

static void emu_jobs_list(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    int bad;
    int labels = emu_view_labels(cx, &bad);
    const char *filter = emu_query(cx, "filter"), *name = emu_query(cx, "name");
    const char *ps = emu_query(cx, "pageSize"), *pt = emu_query(cx, "pageToken");
    int want = 0; /* 0 all, 1 active, 2 terminated */
    if (bad) {
        emu_bad_request(r, "Invalid value for view: must be one of JOB_VIEW_SUMMARY, JOB_VIEW_ALL, JOB_VIEW_DESCRIPTION.");
        return;
    }
    if (filter == NULL || strcmp(filter, "ALL") == 0 || strcmp(filter, "UNKNOWN") == 0) want = 0;
    else if (strcmp(filter, "ACTIVE") == 0) want = 1;
    else if (strcmp(filter, "TERMINATED") == 0) want = 2;
    else {
        emu_bad_request(r, "Invalid value for filter: must be one of UNKNOWN, ALL, TERMINATED, ACTIVE.");
        return;
    }
    long size = E.cfg.list_page_size;
    if (ps != NULL && *ps != '\0') {
        char *end;
        size = strtol(ps, &end, 10);
        if (*end != '\0' || size < 0) {
            emu_bad_request(r, "Invalid value for pageSize.");
            return;
        }
        if (size == 0) size = E.cfg.list_page_size;
        if (size > E.cfg.list_max_page_size) size = E.cfg.list_max_page_size;
    }
    long offset = 0;
    if (pt != NULL && *pt != '\0') {
        size_t n = 0;
        unsigned char *raw = jwt_b64url_decode(pt, strlen(pt), &n);
        char *end = NULL;
        if (raw != NULL && strncmp((char *)raw, "emu-page:", 9) == 0) offset = strtol((char *)raw + 9, &end, 10);
        int ok = raw != NULL && end != NULL && *end == '\0' && offset > 0;
        free(raw);
        if (!ok) {
            emu_bad_request(r, "Invalid page token.");
            return;
        }
    }
    json_t *arr = json_array();
    long idx = 0;
    int more = 0;
    for (struct emu_job *j = E.jobs; j != NULL; j = j->next) {
        if (strcmp(j->project, cx->project) != 0 || strcmp(j->region, cx->region) != 0) continue;
        if (name != NULL && *name != '\0' && strcmp(name, j->name) != 0) continue;
        int term = emu_state_terminal(j->state);
        if ((want == 1 && term) || (want == 2 && !term)) continue;
        if (idx++ < offset) continue;
        if ((long)json_array_size(arr) == size) {
            more = 1;
            break;
        }
        json_array_append_new(arr, emu_job_json(j, 0, labels, 0));
    }
    json_t *out = json_object();
    if (json_array_size(arr) > 0) json_object_set(out, "jobs", arr);
    if (more) {
        char tok[64];
        snprintf(tok, sizeof tok, "emu-page:%ld", offset + size);
        char *t = jwt_b64url_encode((unsigned char *)tok, strlen(tok));
        json_object_set_new(out, "nextPageToken", json_string(t ? t : ""));
        free(t);
    }
    json_decref(arr);
    emu_resp_json(r, 200, out);
}

static void emu_jobs_update(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    json_t *body = emu_body_json(cx);
    if (body == NULL) return;
    struct emu_job *j = emu_job_find(cx->project, cx->region, cx->jobid);
    json_t *rs = json_object_get(body, "requestedState");
    int want = json_is_string(rs) ? emu_state_from_name(json_string_value(rs)) : -1;
    if (j == NULL) {
        emu_not_found(r, cx->jobid);
    } else if (rs == NULL) {
        emu_bad_request(r, "The request must set requestedState (JOB_STATE_CANCELLED or JOB_STATE_DRAINED).");
    } else if (want < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid value at 'job.requested_state' (type.googleapis.com/google.dataflow.v1b3.JobState), \"%.80s\"",
                 json_is_string(rs) ? json_string_value(rs) : "?");
        emu_bad_request(r, msg);
    } else if (want != ST_CANCELLED && want != ST_DRAINED) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "Workflow modification failed. Causes: Requested state %s is not supported.",
                        emu_state_names[want]);
    } else if (emu_state_terminal(j->state)) {
        emu_resp_gerror(r, 400, "FAILED_PRECONDITION", 1, 1, NULL,
                        "Workflow modification failed. Causes: Cannot perform operation '%s' on Job: %s. Job has "
                        "terminated in state %s: Job has terminated and cannot be modified.",
                        want == ST_CANCELLED ? "cancel" : "drain", j->id, emu_state_names[j->state]);
    } else if (want == ST_DRAINED && !j->streaming) {
        emu_resp_gerror(r, 400, "FAILED_PRECONDITION", 1, 1, NULL,
                        "Workflow modification failed. Causes: Cannot drain job %s: only streaming jobs can be drained.",
                        j->id);
    } else {
        int64_t now = emu_now_ms();
        if (want == ST_CANCELLED && j->state != ST_CANCELLING) {
            j->requested_state = ST_CANCELLED;
            emu_job_set_state(j, ST_CANCELLING, now);
            j->next_ms = now + j->rule.cancel_ms;
        } else if (want == ST_DRAINED && j->state != ST_DRAINING && j->state != ST_CANCELLING) {
            j->requested_state = ST_DRAINED;
            emu_job_set_state(j, ST_DRAINING, now);
            j->next_ms = now + j->rule.drain_ms;
        }
        emu_timer_push(j);
        if (j->next_ms == now) emu_jobs_advance(now);
        pthread_cond_signal(&E.timer_cond);
        emu_resp_json(r, 200, emu_job_json(j, 0, 1, 0));
    }
    json_decref(body);
}

/* ====================================================================================================
 * Identity: OAuth token endpoint, metadata server, JWKS
 * ==================================================================================================== */

static int emu_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The decoded value of `key` in an application/x-www-form-urlencoded body, or NULL. Caller frees. */
static char *emu_form_get(const char *body, size_t len, const char *key)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&') end++;
        if (end - i > klen && strncmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t vs = i + klen + 1;
            char *out = malloc(end - vs + 1);
            if (out == NULL) return NULL;
            size_t o = 0;
            for (size_t k = vs; k < end; k++) {
                if (body[k] == '+') out[o++] = ' ';
                else if (body[k] == '%' && k + 2 < end && emu_hexval(body[k + 1]) >= 0 && emu_hexval(body[k + 2]) >= 0) {
                    out[o++] = (char)(emu_hexval(body[k + 1]) * 16 + emu_hexval(body[k + 2]));
                    k += 2;
                } else out[o++] = body[k];
            }
            out[o] = '\0';
            return out;
        }
        i = end + 1;
    }
    return NULL;
}

static void emu_token_response(struct emu_resp *r, const char *grant, int with_scope)
{
    const char *tok = emu_token_issue(grant);
    if (tok == NULL) {
        emu_resp_oauth_error(r, 500, "internal_failure", "Out of memory.");
        return;
    }
    json_t *o = json_pack("{s:s, s:i}", "access_token", tok, "expires_in", E.cfg.token_lifetime_s);
    if (with_scope) json_object_set_new(o, "scope", json_string("https://www.googleapis.com/auth/cloud-platform"));
    json_object_set_new(o, "token_type", json_string("Bearer"));
    emu_resp_json(r, 200, o);
}

/* POST /token: jwt-bearer (service account assertion, fully verified) and refresh_token grants. */
static void emu_token(struct emu_call *cx)
{
    static const char *const bad_time = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                        "reasonable timeframe. Check your iat and exp values in the JWT claim.";
    struct emu_req *q = cx->q;
    struct emu_resp *r = &q->resp;
    char *grant = emu_form_get(q->body ? q->body : "", q->len, "grant_type");
    char *assertion = NULL, *cid = NULL, *csecret = NULL, *rtok = NULL;
    json_t *hdr = NULL, *claims = NULL;
    const char *err = NULL;
    if (grant == NULL) {
        emu_resp_oauth_error(r, 400, "invalid_request", "Missing required parameter: grant_type");
    } else if (strcmp(grant, "urn:ietf:params:oauth:grant-type:jwt-bearer") == 0) {
        assertion = emu_form_get(q->body, q->len, "assertion");
        if (assertion == NULL) {
            emu_resp_oauth_error(r, 400, "invalid_request", "Missing required parameter: assertion");
            goto out;
        }
        if (jwt_decode(assertion, &hdr, &claims, &err) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid JWT: malformed token.");
            goto out;
        }
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        const char *kid = json_string_value(json_object_get(hdr, "kid"));
        if (iss == NULL || strcmp(iss, E.client_email) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid grant: account not found");
            goto out;
        }
        if ((kid != NULL && strcmp(kid, E.sa_kid) != 0) || jwt_verify_rs256(assertion, E.sa_key, &err) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Invalid JWT Signature.");
            goto out;
        }
        const char *aud = json_string_value(json_object_get(claims, "aud"));
        if (aud == NULL || strcmp(aud, E.token_uri) != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "Invalid JWT: Failed audience check. The right audience is %s", E.token_uri);
            emu_resp_oauth_error(r, 400, "invalid_grant", msg);
            goto out;
        }
        json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
        int64_t now = emu_now_ms() / 1000;
        if (!json_is_integer(iat) || !json_is_integer(exp) || json_integer_value(exp) <= now ||
            json_integer_value(exp) > json_integer_value(iat) + 3600 || json_integer_value(iat) > now + 60) {
            emu_resp_oauth_error(r, 400, "invalid_grant", bad_time);
            goto out;
        }
        const char *scope = json_string_value(json_object_get(claims, "scope"));
        if (scope == NULL || *scope == '\0') {
            emu_resp_oauth_error(r, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
            goto out;
        }
        emu_token_response(r, "jwt_bearer", 0);
    } else if (strcmp(grant, "refresh_token") == 0) {
        cid = emu_form_get(q->body, q->len, "client_id");
        csecret = emu_form_get(q->body, q->len, "client_secret");
        rtok = emu_form_get(q->body, q->len, "refresh_token");
        if (cid == NULL || csecret == NULL || strcmp(cid, E.au_client_id) != 0 ||
            strcmp(csecret, E.au_client_secret) != 0) {
            emu_resp_oauth_error(r, 401, "invalid_client", "The OAuth client was not found.");
        } else if (rtok == NULL || strcmp(rtok, E.au_refresh_token) != 0) {
            emu_resp_oauth_error(r, 400, "invalid_grant", "Token has been expired or revoked.");
        } else {
            emu_token_response(r, "refresh_token", 1);
        }
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "Invalid grant_type: %.100s", grant);
        emu_resp_oauth_error(r, 400, "unsupported_grant_type", msg);
    }
out:
    json_decref(hdr);
    json_decref(claims);
    free(grant);
    free(assertion);
    free(cid);
    free(csecret);
    free(rtok);
}

/* GET /computeMetadata/v1/...: `what` is the path below v1/. */
static void emu_metadata(struct emu_call *cx, const char *what)
{
    struct emu_resp *r = &cx->q->resp;
    const char *flavor = MHD_lookup_connection_value(cx->conn, MHD_HEADER_KIND, "Metadata-Flavor");
    if (flavor == NULL || strcmp(flavor, "Google") != 0) {
        emu_resp_text(r, 403, "text/html; charset=UTF-8",
                      "Your client does not have permission to get URL from this server. Missing Metadata-Flavor:Google header.\n");
    } else if (strcmp(what, "instance/service-accounts/default/token") == 0) {
        emu_token_response(r, "metadata", 0);
    } else if (strcmp(what, "instance/service-accounts/default/email") == 0) {
        emu_resp_text(r, 200, "application/text", E.client_email);
    } else if (strcmp(what, "instance/service-accounts/default/identity") == 0) {
        const char *aud = emu_query(cx, "audience");
        if (aud == NULL || *aud == '\0') {
            emu_resp_text(r, 400, "text/plain", "non-empty audience parameter required\n");
        } else {
            char *tok = emu_oidc_token(aud, E.client_email, emu_now_ms() / 1000);
            emu_resp_text(r, tok ? 200 : 500, "text/html; charset=utf-8", tok ? tok : "");
            free(tok);
        }
    } else if (strcmp(what, "project/project-id") == 0) {
        emu_resp_text(r, 200, "application/text", E.cfg.project_id);
    } else if (strcmp(what, "project/numeric-project-id") == 0) {
        emu_resp_text(r, 200, "application/text", E.cfg.project_number);
    } else {
        emu_resp_text(r, 404, "text/html; charset=UTF-8", "Not Found\n");
    }
    emu_resp_header(r, "Metadata-Flavor", "Google");
}

static void emu_jwks(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    json_t *jwk = jwt_key_public_jwk(E.oidc_key, E.oidc_kid);
    emu_resp_json(r, 200, json_pack("{s:[o]}", "keys", jwk ? jwk : json_object()));
    char cc[96];
    snprintf(cc, sizeof cc, "public, max-age=%d, must-revalidate, no-transform", E.cfg.jwks_max_age_s);
    emu_resp_header(r, "Cache-Control", cc);
}

/* The credential files a test points ADC at. Returns new references. */
static json_t *emu_sa_json(void)
{
    char *pem = jwt_key_private_pem(E.sa_key);
    char cert[300];
    snprintf(cert, sizeof cert, "%s/robot/v1/metadata/x509/%s", E.base_url, E.client_email);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id",
                          E.cfg.project_id, "private_key_id", E.sa_kid, "private_key", pem ? pem : "", "client_email",
                          E.client_email, "client_id", E.client_id, "auth_uri", "https://accounts.google.com/o/oauth2/auth",
                          "token_uri", E.token_uri, "auth_provider_x509_cert_url", "https://www.googleapis.com/oauth2/v1/certs",
                          "client_x509_cert_url", cert);
    free(pem);
    return o;
}

static json_t *emu_au_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "authorized_user", "client_id", E.au_client_id,
                     "client_secret", E.au_client_secret, "refresh_token", E.au_refresh_token, "token_uri", E.token_uri);
}

/* ====================================================================================================
 * Emulator control endpoints (/emulator/...): no auth, no faults.
 * ==================================================================================================== */

/* Frees every job, launch record, stat and queued delivery; lock held. */
static void emu_clear_runtime(void)
{
    json_object_clear(E.by_id);
    json_object_clear(E.by_name);
    E.heap_n = 0;
    while (E.jobs != NULL) {
        struct emu_job *j = E.jobs;
        E.jobs = j->next;
        emu_job_free(j);
    }
    json_array_clear(E.launches);
    emu_stats_reset();
    pthread_mutex_lock(&E.qlock);
    while (E.queue != NULL) {
        struct emu_delivery *d = E.queue;
        E.queue = d->next;
        emu_delivery_free(d);
    }
    E.qlen = 0;
    E.qdropped = 0;
    pthread_mutex_unlock(&E.qlock);
    E.message_id = 2070443601311540ULL;
    emu_rng_reseed(E.seed);
}

static json_t *E_start_cfg; /* the configuration at start, restored by /emulator/reset */

/* Replaces the configuration by `doc` (stolen) if it parses; lock held. Returns 0 or -1 with err. */
static int emu_apply_config(json_t *doc, char *err, size_t ecap)
{
    struct emu_cfg nc;
    memset(&nc, 0, sizeof nc);
    if (emu_cfg_parse(doc, &nc, err, ecap) != 0) {
        emu_cfg_clear(&nc);
        json_decref(doc);
        return -1;
    }
    emu_cfg_clear(&E.cfg);
    E.cfg = nc;
    json_decref(E.cfg_doc);
    E.cfg_doc = doc;
    pthread_cond_signal(&E.timer_cond);
    return 0;
}

static void emu_control(struct emu_call *cx, const char *path)
{
    struct emu_resp *r = &cx->q->resp;
    int get = strcmp(cx->http_method, "GET") == 0, post = strcmp(cx->http_method, "POST") == 0;
    char err[256];
    if (strcmp(path, "healthz") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "launches") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:O}", "launches", E.launches));
    } else if (strcmp(path, "stats") == 0 && get) {
        json_t *st = json_deep_copy(E.stats);
        pthread_mutex_lock(&E.qlock);
        json_object_set_new(st, "delivery_queue", json_pack("{s:I, s:I}", "length", (json_int_t)E.qlen,
                                                            "dropped_full", (json_int_t)E.qdropped));
        pthread_mutex_unlock(&E.qlock);
        emu_resp_json(r, 200, st);
    } else if (strcmp(path, "jobs") == 0 && get) {
        json_t *arr = json_array();
        for (struct emu_job *j = E.jobs; j != NULL; j = j->next) {
            json_t *o = emu_job_json(j, 0, 1, 0);
            json_object_set_new(o, "templatePath", json_string(j->template_path));
            json_array_append_new(arr, o);
        }
        emu_resp_json(r, 200, json_pack("{s:o}", "jobs", arr));
    } else if (strcmp(path, "reset") == 0 && post) {
        emu_clear_runtime();
        emu_apply_config(json_deep_copy(E_start_cfg), err, sizeof err);
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "revoke-tokens") == 0 && post) {
        emu_tokens_revoke();
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "credentials") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:o, s:o}", "service_account", emu_sa_json(), "authorized_user", emu_au_json()));
    } else if (strcmp(path, "config") == 0 && get) {
        emu_resp_json(r, 200, json_deep_copy(E.cfg_doc));
    } else if (strcmp(path, "config") == 0 && post) {
        json_t *body = emu_body_json(cx);
        if (body == NULL) return;
        json_t *seed = json_object_get(body, "seed");
        if (seed != NULL && !json_is_integer(seed)) {
            json_decref(body);
            emu_bad_request(r, "seed must be an integer");
            return;
        }
        uint64_t seed_val = seed ? (uint64_t)json_integer_value(seed) : 0;
        int reseed = seed != NULL;
        json_object_del(body, "seed");
        json_t *merged = json_deep_copy(E.cfg_doc);
        json_object_update_recursive(merged, body);
        json_decref(body);
        if (emu_apply_config(merged, err, sizeof err) != 0) {
            emu_bad_request(r, err);
            return;
        }
        if (reseed) emu_rng_reseed(seed_val);
        emu_resp_json(r, 200, json_deep_copy(E.cfg_doc));
    } else if (strncmp(path, "jobs/", 5) == 0 && post) {
        const char *id = path + 5;
        const char *colon = strrchr(id, ':');
        if (colon == NULL || strcmp(colon, ":finish") != 0) {
            emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "Unknown emulator endpoint.");
            return;
        }
        char jid[256];
        snprintf(jid, sizeof jid, "%.*s", (int)(colon - id), id);
        json_t *body = emu_body_json(cx);
        if (body == NULL) return;
        struct emu_job *j = emu_job_find_any(jid);
        const char *sn = json_string_value(json_object_get(body, "state"));
        int st = sn ? emu_state_from_name(sn) : ST_DONE;
        const char *cause = json_string_value(json_object_get(body, "failure_cause"));
        if (j == NULL) {
            emu_not_found(r, jid);
        } else if (st < 0) {
            emu_bad_request(r, "state must be a JOB_STATE_* name");
        } else {
            if (cause != NULL) {
                free(j->failure_cause);
                j->failure_cause = strdup(cause);
            }
            j->next_ms = 0;
            if (st == ST_CANCELLED || st == ST_CANCELLING) j->requested_state = ST_CANCELLED;
            emu_job_set_state(j, st, emu_now_ms());
            emu_resp_json(r, 200, emu_job_json(j, 0, 1, 0));
        }
        json_decref(body);
    } else {
        emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "Unknown emulator endpoint or method: %s /emulator/%.200s",
                        cx->http_method, path);
    }
}

/* ====================================================================================================
 * Dispatch
 * ==================================================================================================== */

static enum MHD_Result emu_collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    json_object_set_new((json_t *)cls, key, value ? json_string(value) : json_null());
    return MHD_YES;
}

/* Splits /v1b3/projects/{p}/locations/{r}/<rest> into cx; returns the method or M_UNROUTED, and sets
 * *allowed to the methods the path supports (for 405). */
static int emu_route_dataflow(struct emu_call *cx, const char *url, const char **allowed)
{
    const char *p = url + strlen("/v1b3/projects/");
    const char *slash = strchr(p, '/');
    *allowed = NULL;
    if (slash == NULL || slash == p || (size_t)(slash - p) >= sizeof cx->project) return M_UNROUTED;
    snprintf(cx->project, sizeof cx->project, "%.*s", (int)(slash - p), p);
    if (strncmp(slash, "/locations/", 11) != 0) return M_UNROUTED;
    const char *r = slash + 11;
    slash = strchr(r, '/');
    if (slash == NULL || slash == r || (size_t)(slash - r) >= sizeof cx->region) return M_UNROUTED;
    snprintf(cx->region, sizeof cx->region, "%.*s", (int)(slash - r), r);
    const char *rest = slash + 1;
    const char *m = cx->http_method;
    if (strcmp(rest, "flexTemplates:launch") == 0) {
        *allowed = "POST";
        return strcmp(m, "POST") == 0 ? M_FLEX_LAUNCH : M_UNROUTED;
    }
    if (strcmp(rest, "templates:launch") == 0) {
        *allowed = "POST";
        return strcmp(m, "POST") == 0 ? M_TEMPLATE_LAUNCH : M_UNROUTED;
    }
    if (strcmp(rest, "jobs") == 0) {
        *allowed = "GET";
        return strcmp(m, "GET") == 0 ? M_JOBS_LIST : M_UNROUTED;
    }
    if (strncmp(rest, "jobs/", 5) == 0 && rest[5] != '\0' && strchr(rest + 5, '/') == NULL &&
        strlen(rest + 5) < sizeof cx->jobid) {
        snprintf(cx->jobid, sizeof cx->jobid, "%s", rest + 5);
        *allowed = "GET, PUT";
        if (strcmp(m, "GET") == 0) return M_JOBS_GET;
        if (strcmp(m, "PUT") == 0) return M_JOBS_UPDATE;
    }
    return M_UNROUTED;
}

static int emu_authorized(struct emu_call *cx)
{
    const char *h = MHD_lookup_connection_value(cx->conn, MHD_HEADER_KIND, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    return emu_token_valid(h + 7);
}

/* Decides the answer for a complete request (lock held). Returns the delay in ms before answering. */
static int64_t emu_dispatch(struct emu_req *q, const char *url, const char *method)
{
    struct emu_call cx;
    memset(&cx, 0, sizeof cx);
    cx.q = q;
    cx.conn = q->conn;
    cx.http_method = method;
    cx.m = M_UNROUTED;
    struct emu_resp *r = &q->resp;
    const char *allowed = NULL;
    const char *meta = "/computeMetadata/v1/";

    if (strncmp(url, "/emulator/", 10) == 0) {
        if (q->too_large) emu_resp_gerror(r, 413, "INVALID_ARGUMENT", 1, 0, NULL, "Request payload too large.");
        else emu_control(&cx, url + 10);
        return 0;
    }
    if (strncmp(url, "/v1b3/projects/", 15) == 0) {
        cx.m = emu_route_dataflow(&cx, url, &allowed);
    } else if (strcmp(url, "/token") == 0) {
        allowed = "POST";
        if (strcmp(method, "POST") == 0) cx.m = M_TOKEN;
    } else if (strncmp(url, meta, strlen(meta)) == 0) {
        allowed = "GET";
        if (strcmp(method, "GET") == 0) cx.m = M_METADATA;
    } else if (strcmp(url, "/oauth2/v3/certs") == 0) {
        allowed = "GET";
        if (strcmp(method, "GET") == 0) cx.m = M_JWKS;
    }

    int64_t delay = 0;
    if (cx.m == M_UNROUTED) {
        if (allowed != NULL) {
            emu_resp_gerror(r, 405, "INVALID_ARGUMENT", 1, 0, NULL, "Method %s is not allowed for %.200s.", method, url);
            emu_resp_header(r, "Allow", allowed);
        } else {
            emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "The requested URL %.300s was not found on this server.", url);
        }
    } else {
        emu_jobs_advance(emu_now_ms());
        const struct emu_fault *f = &E.cfg.faults[cx.m];
        /* Always three draws per request so the sequence replays whatever the rates are. */
        double r_fault = emu_rng_unit(&E.rng[cx.m]);
        double r_slow = emu_rng_unit(&E.rng[cx.m]);
        double r_trap = emu_rng_unit(&E.rng[cx.m]);
        delay = f->latency_ms + (r_slow < f->slow_rate ? f->slow_ms : 0);
        int launch = cx.m == M_FLEX_LAUNCH || cx.m == M_TEMPLATE_LAUNCH;
        if (launch) {
            char tm[64];
            emu_fmt_time(emu_now_ms(), 3, tm, sizeof tm);
            json_t *query = json_object();
            MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, emu_collect_arg, query);
            json_t *parsed = q->len ? json_loadb(q->body, q->len, 0, NULL) : json_object();
            json_t *body = parsed ? parsed : json_stringn(q->body ? q->body : "", q->len);
            if (body == NULL) body = json_string("<not UTF-8>");
            cx.entry = json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:o}", "seq", (json_int_t)json_array_size(E.launches) + 1,
                                 "time", tm, "method", emu_method_names[cx.m], "project", cx.project, "location",
                                 cx.region, "query", query, "body", body);
            json_array_append_new(E.launches, cx.entry);
            const char *jn = NULL;
            json_t *lp = cx.m == M_FLEX_LAUNCH ? json_object_get(parsed, "launchParameter") : parsed;
            jn = json_string_value(json_object_get(lp, "jobName"));
            emu_stat_add("launches_by_name", jn ? jn : "(none)", NULL, 1);
        }
        if (q->too_large) {
            emu_resp_gerror(r, 413, "INVALID_ARGUMENT", 1, 0, NULL,
                            "Request payload size exceeds the limit: %d bytes.", E.cfg.max_body_bytes);
            snprintf(cx.outcome, sizeof cx.outcome, "rejected");
        } else if (cx.m <= M_DATAFLOW_LAST && E.cfg.auth && !emu_authorized(&cx)) {
            emu_resp_gerror(r, 401, "UNAUTHENTICATED", 1, 0, NULL,
                            "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                            "cookie or other valid authentication credential. See "
                            "https://developers.google.com/identity/sign-in/web/devconsole-project.");
            emu_resp_header(r, "WWW-Authenticate", "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"");
            snprintf(cx.outcome, sizeof cx.outcome, "unauthenticated");
        } else if (r_fault < f->rate_429) {
            char delay_s[32];
            snprintf(delay_s, sizeof delay_s, "%ds", f->retry_delay_s);
            emu_resp_gerror(r, 429, "RESOURCE_EXHAUSTED", 0, 0,
                            json_pack("[{s:s, s:s}]", "@type", "type.googleapis.com/google.rpc.RetryInfo", "retryDelay", delay_s),
                            "Quota exceeded for quota metric 'Job management requests' and limit 'Job management "
                            "requests per minute per user'.");
            snprintf(cx.outcome, sizeof cx.outcome, "fault_429");
        } else if (r_fault < f->rate_429 + f->rate_500) {
            emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
            snprintf(cx.outcome, sizeof cx.outcome, "fault_500");
        } else if (r_fault < f->rate_429 + f->rate_500 + f->rate_503) {
            emu_resp_gerror(r, 503, "UNAVAILABLE", 1, 0, NULL, "The service is currently unavailable.");
            snprintf(cx.outcome, sizeof cx.outcome, "fault_503");
        } else if (r_fault < f->rate_429 + f->rate_500 + f->rate_503 + f->drop_rate) {
            r->drop = 1;
            snprintf(cx.outcome, sizeof cx.outcome, "dropped");
        } else {
            switch (cx.m) {
            case M_FLEX_LAUNCH: emu_launch(&cx, 1); break;
            case M_TEMPLATE_LAUNCH: emu_launch(&cx, 0); break;
            case M_JOBS_GET: emu_jobs_get(&cx); break;
            case M_JOBS_LIST: emu_jobs_list(&cx); break;
            case M_JOBS_UPDATE: emu_jobs_update(&cx); break;
            case M_TOKEN: emu_token(&cx); break;
            case M_METADATA: emu_metadata(&cx, url + strlen(meta)); break;
            case M_JWKS: emu_jwks(&cx); break;
            default: break;
            }
            if (launch && cx.created) {
                if (r_trap < f->launched_400_rate) {
                    /* The job exists, yet the caller is told its parameters were invalid. */
                    emu_invalid_params(r, json_pack("[{s:s, s:s}]", "parameter", "input", "description",
                                                    "Required parameter is missing."));
                    snprintf(cx.outcome, sizeof cx.outcome, "created_answered_400");
                } else if (r_trap < f->launched_400_rate + f->launched_timeout_rate) {
                    delay += f->launched_timeout_ms;
                    if (f->launched_timeout_drop) r->drop = 1;
                    snprintf(cx.outcome, sizeof cx.outcome, "created_timeout");
                }
            }
        }
        char code[16];
        if (r->drop) snprintf(code, sizeof code, "dropped");
        else snprintf(code, sizeof code, "%d", r->status);
        emu_stat_add("requests", emu_method_names[cx.m], code, 1);
        if (cx.entry != NULL) {
            json_object_set_new(cx.entry, "status", r->drop ? json_null() : json_integer(r->status));
            json_object_set_new(cx.entry, "outcome", json_string(cx.outcome[0] ? cx.outcome : "rejected"));
        }
    }
    if (r->status == 0 && !r->drop) emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
    return delay;
}

static enum MHD_Result emu_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    (void)cls;
    (void)version;
    struct emu_req *q = *con_cls;
    if (q == NULL) {
        /* First call: headers only. The state is freed in emu_completed. */
        q = calloc(1, sizeof *q);
        if (q == NULL) return MHD_NO;
        q->conn = conn;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        pthread_mutex_lock(&E.lock);
        size_t limit = (size_t)E.cfg.max_body_bytes;
        pthread_mutex_unlock(&E.lock);
        if (q->too_large || q->len + n > limit) {
            q->too_large = 1;
            return MHD_YES; /* keep reading, discard */
        }
        if (q->len + n + 1 > q->cap) {
            size_t cap = q->cap ? q->cap : 1024;
            while (cap < q->len + n + 1) cap *= 2;
            char *nb = realloc(q->body, cap);
            if (nb == NULL) return MHD_NO;
            q->body = nb;
            q->cap = cap;
        }
        memcpy(q->body + q->len, upload_data, n);
        q->len += n;
        q->body[q->len] = '\0';
        return MHD_YES;
    }
    if (q->ready) {
        /* Resumed after a delay. */
        pthread_mutex_lock(&E.lock);
        if (q->parked) E.suspended--;
        q->parked = 0;
        pthread_mutex_unlock(&E.lock);
        return emu_queue(q);
    }
    pthread_mutex_lock(&E.lock);
    int64_t delay = emu_dispatch(q, url, method);
    pthread_mutex_unlock(&E.lock);
    if (delay > 0) {
        emu_delay(q, delay);
        return MHD_YES;
    }
    return emu_queue(q);
}

static void emu_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct emu_req *q = *con_cls;
    if (q == NULL) return;
    /* A suspended connection never completes before it is resumed (the shutdown drains them first), so q
     * is no longer in E.delayed here. If the client went away while parked, MHD may end the request without
     * calling the handler again: settle the count here. E.lock is safe to take: no code holding it calls
     * into MHD. */
    if (q->parked) {
        pthread_mutex_lock(&E.lock);
        if (q->parked) E.suspended--;
        q->parked = 0;
        pthread_mutex_unlock(&E.lock);
    }
    emu_resp_clear(&q->resp);
    free(q->body);
    free(q);
    *con_cls = NULL;
}

/* ====================================================================================================
 * Entry point
 * ==================================================================================================== */

static void emu_usage(FILE *f)
{
    fprintf(f,
            "usage: sluice emulator [--host 127.0.0.1] [--port N] [--config FILE.json] [--seed N]\n"
            "                       [--ready-file PATH] [--write-credentials DIR] [--threads N]\n"
            "                       [--project ID] [--project-number N] [--no-auth] [--token-lifetime S]\n"
            "                       [--latency-ms N] [--pending-ms N] [--running-ms N] [--lag-ms N]\n"
            "                       [--lag-mode not_found|stale] [--push-url URL] [--eventarc-url URL]\n"
            "                       [--max-body-bytes N]\n"
            "See docs/emulator.md.\n");
}

/* Sets flags[k1][k2] (k2 may be NULL) to v (stolen). */
static void emu_flag_set(json_t *flags, const char *k1, const char *k2, json_t *v)
{
    if (k2 == NULL) {
        json_object_set_new(flags, k1, v);
        return;
    }
    json_t *o = json_object_get(flags, k1);
    if (o == NULL) json_object_set_new(flags, k1, o = json_object());
    json_object_set_new(o, k2, v);
}

static int emu_parse_int(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < 0) return -1;
    *out = v;
    return 0;
}

static int emu_write_credentials(const char *dir)
{
    char path[4096];
    int rc = -1;
    json_t *sa = emu_sa_json(), *au = emu_au_json();
    char *sa_text = json_dumps(sa, JSON_INDENT(2)), *au_text = json_dumps(au, JSON_INDENT(2));
    mkdir(dir, 0700);
    if (sa_text == NULL || au_text == NULL) goto out;
    snprintf(path, sizeof path, "%s/service-account.json", dir);
    if (emu_write_atomic(path, sa_text, 0600) != 0) goto out;
    snprintf(path, sizeof path, "%s/authorized_user.json", dir);
    if (emu_write_atomic(path, au_text, 0600) != 0) goto out;
    rc = 0;
out:
    json_decref(sa);
    json_decref(au);
    free(sa_text);
    free(au_text);
    return rc;
}

int emu_main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *config_path = NULL, *ready_file = NULL, *creds_dir = NULL;
    long port = 0, threads = 2, seed = 1;
    int exit_code = 2, started_timer = 0, started_delivery = 0;
    json_t *flags = json_object(), *doc = NULL;
    pthread_t timer_tid, delivery_tid;
    struct sockaddr_in sa;
    char err[512];
    json_error_t je;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int takes = 1;
#define NEED_INT()                                                                                                     \
    do {                                                                                                               \
        if (v == NULL || emu_parse_int(v, &n) != 0) {                                                                  \
            fprintf(stderr, "sluice emulator: %s needs a non-negative integer\n", a);                                  \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)
#define NEED_STR()                                                                                                     \
    do {                                                                                                               \
        if (v == NULL) {                                                                                               \
            fprintf(stderr, "sluice emulator: %s needs a value\n", a);                                                 \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            emu_usage(stdout);
            exit_code = 0;
            goto done;
        } else if (strcmp(a, "--no-auth") == 0) {
            emu_flag_set(flags, "auth", NULL, json_false());
            takes = 0;
        } else if (strcmp(a, "--host") == 0) {
            NEED_STR();
            host = v;
        } else if (strcmp(a, "--port") == 0) {
            NEED_INT();
            port = n;
        } else if (strcmp(a, "--threads") == 0) {
            NEED_INT();
            threads = n < 1 ? 1 : n > 16 ? 16 : n;
        } else if (strcmp(a, "--seed") == 0) {
            NEED_INT();
            seed = n;
        } else if (strcmp(a, "--config") == 0) {
            NEED_STR();
            config_path = v;
        } else if (strcmp(a, "--ready-file") == 0) {
            NEED_STR();
            ready_file = v;
        } else if (strcmp(a, "--write-credentials") == 0) {
            NEED_STR();
            creds_dir = v;
        } else if (strcmp(a, "--project") == 0) {
            NEED_STR();
            emu_flag_set(flags, "project_id", NULL, json_string(v));
        } else if (strcmp(a, "--project-number") == 0) {
            NEED_STR();
            emu_flag_set(flags, "project_number", NULL, json_string(v));
        } else if (strcmp(a, "--token-lifetime") == 0) {
            NEED_INT();
            emu_flag_set(flags, "token_lifetime_s", NULL, json_integer(n));
        } else if (strcmp(a, "--max-body-bytes") == 0) {
            NEED_INT();
            emu_flag_set(flags, "max_body_bytes", NULL, json_integer(n));
        } else if (strcmp(a, "--latency-ms") == 0) {
            NEED_INT();
            json_t *fd = json_object_get(flags, "faults");
            if (fd == NULL) json_object_set_new(flags, "faults", fd = json_object());
            emu_flag_set(fd, "default", "latency_ms", json_integer(n));
        } else if (strcmp(a, "--pending-ms") == 0) {
            NEED_INT();
            emu_flag_set(flags, "job_defaults", "pending_ms", json_integer(n));
        } else if (strcmp(a, "--running-ms") == 0) {
            NEED_INT();
            emu_flag_set(flags, "job_defaults", "running_ms", json_integer(n));
        } else if (strcmp(a, "--lag-ms") == 0) {
            NEED_INT();
            emu_flag_set(flags, "lag", "window_ms", json_integer(n));
        } else if (strcmp(a, "--lag-mode") == 0) {
            NEED_STR();
            emu_flag_set(flags, "lag", "mode", json_string(v));
        } else if (strcmp(a, "--push-url") == 0) {
            NEED_STR();
            emu_flag_set(flags, "events", "push_url", json_string(v));
        } else if (strcmp(a, "--eventarc-url") == 0) {
            NEED_STR();
            emu_flag_set(flags, "events", "eventarc_url", json_string(v));
        } else {
            fprintf(stderr, "sluice emulator: unknown argument %s\n", a);
            emu_usage(stderr);
            goto done;
        }
#undef NEED_INT
#undef NEED_STR
        i += takes;
    }

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "sluice emulator: bad --host/--port (IPv4 address and port expected)\n");
        goto done;
    }

    /* Configuration: defaults <- file <- flags. */
    doc = json_loads(emu_default_config, 0, &je);
    if (doc == NULL) goto done;
    if (config_path != NULL) {
        json_t *file = json_load_file(config_path, 0, &je);
        if (file == NULL || !json_is_object(file)) {
            fprintf(stderr, "sluice emulator: cannot read config %s: %s (line %d)\n", config_path,
                    file ? "not an object" : je.text, je.line);
            json_decref(file);
            goto done;
        }
        json_object_update_recursive(doc, file);
        json_decref(file);
    }
    json_object_update_recursive(doc, flags);

    memset(&E, 0, sizeof E);
    pthread_mutex_init(&E.lock, NULL);
    pthread_mutex_init(&E.qlock, NULL);
    pthread_cond_init(&E.timer_cond, NULL);
    pthread_cond_init(&E.qcond, NULL);
    E.launches = json_array();
    E.by_id = json_object();
    E.by_name = json_object();
    emu_stats_reset();
    E.message_id = 2070443601311540ULL;
    emu_rng_reseed((uint64_t)seed);
    E_start_cfg = json_deep_copy(doc);
    if (emu_apply_config(doc, err, sizeof err) != 0) {
        doc = NULL;
        fprintf(stderr, "sluice emulator: bad config: %s\n", err);
        goto done;
    }
    doc = NULL;

    /* Identity material: a service-account key the token endpoint trusts and the OIDC signing key. */
    E.sa_key = jwt_key_generate(2048);
    E.oidc_key = jwt_key_generate(2048);
    if (E.sa_key == NULL || E.oidc_key == NULL) {
        fprintf(stderr, "sluice emulator: cannot generate keys\n");
        goto done;
    }
    emu_random_hex(E.sa_kid, 40);
    emu_random_hex(E.oidc_kid, 40);
    snprintf(E.client_email, sizeof E.client_email, "sluice-emulator@%s.iam.gserviceaccount.com", E.cfg.project_id);
    {
        char hex[41];
        emu_random_hex(hex, 20);
        int n = snprintf(E.client_id, sizeof E.client_id, "10%.20s", hex);
        (void)n;
        for (char *c = E.client_id; *c; c++)
            if (*c >= 'a') *c = (char)('0' + (*c - 'a'));
        emu_random_hex(hex, 24);
        snprintf(E.au_client_id, sizeof E.au_client_id, "%s.apps.googleusercontent.com", hex);
        emu_random_hex(hex, 32);
        snprintf(E.au_client_secret, sizeof E.au_client_secret, "emu-%s", hex);
        emu_random_hex(hex, 32);
        snprintf(E.au_refresh_token, sizeof E.au_refresh_token, "1//emu-%s", hex);
    }

    /* Signals are taken synchronously by the main thread; every thread started below inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);

    if (pthread_create(&timer_tid, NULL, emu_timer_thread, NULL) != 0) goto done;
    started_timer = 1;
    if (pthread_create(&delivery_tid, NULL, emu_delivery_thread, NULL) != 0) goto done;
    started_delivery = 1;

    E.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                    MHD_USE_ERROR_LOG,
                                0, NULL, NULL, emu_handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads, MHD_OPTION_NOTIFY_COMPLETED,
                                emu_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)2000,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120, MHD_OPTION_END);
    if (E.daemon == NULL) {
        fprintf(stderr, "sluice emulator: cannot listen on %s:%ld\n", host, port);
        goto done;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(E.daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = info ? info->port : (unsigned)port;
    pthread_mutex_lock(&E.lock);
    snprintf(E.base_url, sizeof E.base_url, "http://%s:%u", host, bound);
    snprintf(E.token_uri, sizeof E.token_uri, "%s/token", E.base_url);
    pthread_mutex_unlock(&E.lock);

    if (creds_dir != NULL && emu_write_credentials(creds_dir) != 0) {
        fprintf(stderr, "sluice emulator: cannot write credentials to %s\n", creds_dir);
        goto done;
    }
    printf("{\"listening\":\"%s\"}\n", E.base_url);
    fflush(stdout);
    if (ready_file != NULL) {
        char line[128];
        snprintf(line, sizeof line, "%s\n", E.base_url);
        if (emu_write_atomic(ready_file, line, 0644) != 0) {
            fprintf(stderr, "sluice emulator: cannot write %s\n", ready_file);
            goto done;
        }
    }
    log_info("emulator listening on %s (seed %ld)", E.base_url, seed);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("emulator stopping on signal %d", sig);
    exit_code = 0;

done:
    if (E.daemon != NULL) {
        /* Answer every parked request before stopping the daemon: MHD must not be stopped with suspended
         * connections. */
        pthread_mutex_lock(&E.lock);
        E.stopping = 1;
        pthread_cond_signal(&E.timer_cond);
        pthread_mutex_unlock(&E.lock);
        for (int i = 0; i < 300; i++) {
            pthread_mutex_lock(&E.lock);
            int left = E.suspended;
            pthread_mutex_unlock(&E.lock);
            if (left == 0) break;
            usleep(10000);
        }
        MHD_stop_daemon(E.daemon);
        E.daemon = NULL;
    }
    if (started_timer) {
        pthread_mutex_lock(&E.lock);
        E.stopping = 1;
        E.timer_exit = 1;
        pthread_cond_signal(&E.timer_cond);
        pthread_mutex_unlock(&E.lock);
        pthread_join(timer_tid, NULL);
    }
    if (started_delivery) {
        pthread_mutex_lock(&E.qlock);
        E.qstopping = 1;
        pthread_cond_signal(&E.qcond);
        pthread_mutex_unlock(&E.qlock);
        pthread_join(delivery_tid, NULL);
    }
    if (E.launches != NULL) {
        emu_clear_runtime();
        emu_tokens_revoke();
        free(E.tokens);
        json_decref(E.launches);
        json_decref(E.by_id);
        json_decref(E.by_name);
        free(E.heap);
        json_decref(E.stats);
        json_decref(E.cfg_doc);
        emu_cfg_clear(&E.cfg);
        jwt_key_free(E.sa_key);
        jwt_key_free(E.oidc_key);
        pthread_mutex_destroy(&E.lock);
        pthread_mutex_destroy(&E.qlock);
        pthread_cond_destroy(&E.timer_cond);
        pthread_cond_destroy(&E.qcond);
        curl_global_cleanup();
    }
    json_decref(E_start_cfg);
    E_start_cfg = NULL;
    json_decref(doc);
    json_decref(flags);
    return exit_code;
}
