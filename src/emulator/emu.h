/* emu (private): what the files of src/emulator/ share: the types, the one process-wide emulator instance
 * (emu_g) and each file's entry points. Nothing outside src/emulator/ includes it; the public face is emulator.h.
 * Uses: libmicrohttpd, jansson, pthreads, jwt (key type). Must not: be included by engine, server or any other
 * part of sluice; the emulator is a separate process that only speaks HTTP. */
#ifndef SLUICE_EMU_H
#define SLUICE_EMU_H

#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "dbuf.h"
#include "job_state.h"
#include "jwt.h"

/* ---- Names the API uses (emu_state.c) ---- */

/* Job states: job_state.h (js_name, js_parse, js_terminal). */

/* The API methods that faults, stats and the PRNG streams are keyed by. */
enum emu_method {
    M_FLEX_LAUNCH = 0, M_TEMPLATE_LAUNCH, M_JOBS_GET, M_JOBS_LIST, M_JOBS_UPDATE, M_JOBS_MESSAGES, M_TOKEN, M_METADATA, M_JWKS,
    M_EMULATOR, M_UNROUTED, M_COUNT
};
extern const char *const emu_method_names[M_COUNT];
#define M_DATAFLOW_LAST M_JOBS_MESSAGES
/* One seeded stream per method, one for job ids and one for the event dice, so that changing one rate does
 * not shift the draws of the others. */
enum { STREAM_IDS = M_COUNT, STREAM_EVENTS, STREAM_COUNT };

/* ---- Configuration (emu_config.c) ---- */

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
    /* quota (emu_quota.c): at most this many active jobs per project (0: no limit); a launch beyond it is refused
     * with quota_error's shape: 429 (RESOURCE_EXHAUSTED), 403 (QUOTA_FOR_INSTANCES) or 400 (jobs-per-project) */
    int max_active_jobs, quota_error;
};

/* ---- Jobs, tokens, deliveries, requests ---- */

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

/* One entry of the min-heap of automatic transitions (emu_jobs.c). */
struct emu_timer {
    int64_t due;
    struct emu_job *job;
};

struct emu_token {
    char *token;
    int64_t expires_ms;
};

struct emu_delivery {
    struct emu_delivery *next;
    int kind; /* 0 push, 1 eventarc */
    char *url, *body, *audience, *email;
    char *headers[12];
    int nheaders;
    int attempt, max_attempts, backoff_ms, timeout_ms;
    unsigned spread; /* url may list several endpoints (space-separated): attempt k goes to (spread + k) % n */
    int64_t due_ms;
};

/* A decided answer (emu_http.c builds and queues it). */
struct emu_resp {
    int status;   /* 0 = not decided */
    int drop;     /* close the connection without an answer */
    char *body;   /* owned */
    const char *ctype;
    char *hname[4], *hval[4]; /* extra headers; owned */
    int nh;
};

/* Per-connection state: allocated on MHD's first call, freed only in the completion callback. */
struct emu_req {
    struct MHD_Connection *conn;
    int started;
    dbuf body; /* capped at the configured max_body_bytes */
    int too_large;
    int ready; /* the answer in `resp` is decided; queue it on the next call */
    int parked; /* counted in emu_g.suspended until the handler runs again or the connection ends */
    int in_delayed;
    int64_t due_ms;
    struct emu_req *next_delayed;
    struct emu_resp resp;
};

/* One routed API call, as the handlers see it (built by emu_dispatch.c, lives for one dispatch). */
struct emu_call {
    struct emu_req *q;
    struct MHD_Connection *conn;
    const char *http_method;
    int m;
    char project[256], region[128], jobid[256];
    json_t *entry;      /* the launch record being filled (borrowed from emu_g.launches), or NULL */
    int created;        /* a launch created a job */
    char outcome[48];
};

#define EMU_QUEUE_MAX 10000 /* deliveries waiting; beyond this new ones are dropped and counted */

/* ---- The emulator instance ----
 * One `sluice emulator` process runs exactly one emulator, and its state is reached from MHD callbacks and
 * two threads of our own (timer, delivery) that take no user argument worth threading through every
 * handler; so it is one process-wide struct, defined in emu_state.c and reached only through this header.
 * Locking: `lock` guards everything except the delivery queue, which `qlock` guards. */
struct emu {
    pthread_mutex_t lock;
    json_t *cfg_doc;      /* merged config document; owned */
    json_t *start_cfg;    /* the configuration at start, restored by /emulator/reset; owned */
    struct emu_cfg cfg;
    uint64_t seed;
    uint64_t rng[STREAM_COUNT];
    struct emu_job *jobs; /* newest first */
    /* Indexes, so a request costs the same with 10 jobs or 10,000 (benchmarks keep that many in flight):
     * job id -> job and "project/region/name" -> newest job of that name (jansson objects are hash maps;
     * values hold the pointer as an integer), and a min-heap of automatic transitions by due time. */
    json_t *by_id, *by_name;
    struct emu_timer *heap;
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
    unsigned spread;       /* round robin over the endpoints of a push_url that lists several */
    int qstopping;
    struct MHD_Daemon *daemon;
    /* jobs not in a terminal state now, and the most there were at once since the stats were reset (emu_quota.c) */
    int active_now, active_max;
};
extern struct emu emu_g;

/* ---- emu_state.c: the instance, clock, seeded dice, stats ---- */

int64_t emu_now_ms(void);
/* The absolute CLOCK_REALTIME time pthread_cond_timedwait wants for a millisecond time. */
struct timespec emu_abstime(int64_t ms);
/* strftime of a millisecond time in UTC. */
void emu_strftime_utc(int64_t ms, const char *fmt, char *buf, size_t cap);
/* RFC 3339 UTC with `frac` fractional digits (0, 3, 6 or 9) derived from a millisecond time. */
void emu_fmt_time(int64_t ms, int frac, char *buf, size_t cap);
uint64_t emu_rng_next(uint64_t *s);
double emu_rng_unit(uint64_t *s);
void emu_rng_reseed(uint64_t seed);
void emu_random_hex(char *out, size_t nhex); /* out holds nhex + 1 */
/* Writes `text` to `path` atomically (temporary file + rename). Returns 0 or -1. */
int emu_write_atomic(const char *path, const char *text, mode_t mode);
void emu_stat_add(const char *group, const char *key, const char *sub, int n);
void emu_stats_reset(void);
/* Sets up the locks and empty collections, seeded with `seed`. */
void emu_state_init(uint64_t seed);
/* Drops every job, launch record, stat and queued delivery and reseeds; lock held. */
void emu_clear_runtime(void);
/* Frees everything emu_state_init and later calls allocated; no thread of ours may run any more. */
void emu_state_free(void);

/* ---- emu_config.c ---- */

/* The start document: defaults <- file (config_path, may be NULL) <- flags (borrowed). Returns a new
 * reference, or NULL after printing why to stderr. */
json_t *emu_cfg_load(const char *config_path, json_t *flags);
/* Replaces the configuration by `doc` (stolen) if it parses; lock held. Returns 0 or -1 with err. */
int emu_apply_config(json_t *doc, char *err, size_t ecap);
void emu_cfg_clear(struct emu_cfg *c);

/* ---- emu_jobs.c: store and lifecycle (lock held for all) ---- */

/* Creates a job. labels: borrowed. Returns the job (owned by emu_g.jobs) or NULL on OOM. */
struct emu_job *emu_job_create(const char *project, const char *region, const char *name,
                               const char *template_path, json_t *labels, int streaming_param);
struct emu_job *emu_job_find_any(const char *id);
struct emu_job *emu_job_find(const char *project, const char *region, const char *id);
struct emu_job *emu_job_active_named(const char *project, const char *region, const char *name);
/* The Job resource as the API shows it; returns a new reference. */
json_t *emu_job_json(const struct emu_job *j, int launch_shape, int with_labels, int stale);
void emu_job_set_state(struct emu_job *j, int st, int64_t at_ms);
void emu_timer_push(struct emu_job *j);
void emu_jobs_advance(int64_t now);
int64_t emu_jobs_next_deadline(void); /* 0 when none is due */
void emu_jobs_clear(void);

/* ---- emu_events.c: Pub/Sub push and Eventarc delivery ---- */

void emu_on_state_change(const struct emu_job *j); /* lock held */
void *emu_delivery_thread(void *arg);
void emu_delivery_stop(pthread_t tid);
void emu_events_clear(void);
json_t *emu_events_queue_stats(void); /* {"length", "dropped_full"}; new reference */

/* ---- emu_identity.c: tokens, OAuth token endpoint, metadata server, JWKS, credential files ---- */

int emu_identity_init(void); /* keys and client ids; 0 or -1 */
void emu_identity_set_base(const char *host, unsigned port);
void emu_identity_free(void);
int emu_token_valid(const char *tok);
void emu_tokens_revoke(void);
char *emu_oidc_token(const char *aud, const char *email, int64_t now_s); /* caller frees */
void emu_token(struct emu_call *cx);
void emu_metadata(struct emu_call *cx, const char *what);
void emu_jwks(struct emu_call *cx);
json_t *emu_sa_json(void);
json_t *emu_au_json(void);
int emu_write_credentials(const char *dir);

/* ---- emu_http.c: answers, delayed answers, the MHD server ---- */

void emu_resp_header(struct emu_resp *r, const char *name, const char *value);
void emu_resp_json(struct emu_resp *r, int status, json_t *v);
void emu_resp_text(struct emu_resp *r, int status, const char *ctype, const char *text);
void emu_resp_gerror(struct emu_resp *r, int code, const char *status, int with_errors, int prefixed,
                     json_t *details, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
void emu_resp_oauth_error(struct emu_resp *r, int code, const char *error, const char *desc);
void emu_bad_request(struct emu_resp *r, const char *msg);
const char *emu_query(struct emu_call *cx, const char *key);
json_t *emu_body_json(struct emu_call *cx);
void *emu_timer_thread(void *arg);
void emu_timer_stop(pthread_t tid);
int emu_http_start(const struct sockaddr_in *addr, unsigned threads); /* 0 or -1 */
unsigned emu_http_port(void);
void emu_http_stop(void);

/* ---- emu_dispatch.c ---- */

int64_t emu_dispatch(struct emu_req *q, const char *url, const char *method);
/* Names how the call ended, for the launch log (`outcome`). */
void emu_call_outcome(struct emu_call *cx, const char *outcome);

/* ---- emu_dataflow.c ---- */

void emu_launch(struct emu_call *cx, int flex);
void emu_jobs_get(struct emu_call *cx);
void emu_jobs_list(struct emu_call *cx);
void emu_jobs_update(struct emu_call *cx);
void emu_invalid_params(struct emu_resp *r, json_t *violations);
void emu_not_found(struct emu_resp *r, const char *id);

/* ---- emu_messages.c ---- */

void emu_jobs_messages(struct emu_call *cx);

/* ---- emu_inspect.c ---- */

void emu_control(struct emu_call *cx, const char *path);

/* ---- emu_quota.c: the concurrent-jobs quota and the active-jobs stat (lock held for all) ---- */

/* A launch into cx->project beyond quota.max_active_jobs: answers the quota error and returns 1; else 0. */
int emu_quota_refuse(struct emu_call *cx);
/* A job changed from state `from` to `to` (from = -1: it was just created): keeps the active count. */
void emu_quota_track(int from, int to);
/* {"now", "max", "limit"}; new reference. */
json_t *emu_quota_stats(void);

/* ---- emu_flags.c ---- */

struct emu_opts {
    const char *host, *config_path, *ready_file, *creds_dir;
    long port, threads, seed;
    json_t *flags; /* config keys set by flags; owned */
    struct sockaddr_in addr;
};
enum { EMU_FLAGS_OK = 0, EMU_FLAGS_HELP = 1, EMU_FLAGS_BAD = -1 };
int emu_flags_parse(int argc, char **argv, struct emu_opts *o);

#endif
