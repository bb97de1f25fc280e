/* store (front end): argument checks, JSON validation, state names, frees, and dispatch to a backend.
 * Uses: store_backend.h, jansson. Must not: talk to a database directly; that is the backend's job. */
#include "store.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem.h"
#include "store_backend.h"
#include "util.h"

static const char *const run_state_names[STORE_RUN_STATE_COUNT] = {
    "pending", "running", "succeeded", "failed", "cancelling", "cancelled"};
static const char *const step_state_names[STORE_STEP_STATE_COUNT] = {
    "pending", "waiting", "launching", "running", "succeeded", "failed", "cancelling", "cancelled", "skipped"};
static const char *const source_names[STORE_SRC_COUNT] = {"push", "eventarc", "poll"};

const char *store_strerror(int rc)
{
    switch (rc) {
    case STORE_OK: return "ok";
    case STORE_NOTFOUND: return "not found";
    case STORE_EXISTS: return "already exists";
    case STORE_DUPLICATE: return "duplicate";
    case STORE_CONFLICT: return "conflict";
    case STORE_INVALID: return "invalid argument";
    case STORE_BUSY: return "busy";
    case STORE_IO: return "I/O or backend error";
    case STORE_CORRUPT: return "corrupt";
    case STORE_SCHEMA: return "schema mismatch";
    case STORE_NOMEM: return "out of memory";
    default: return "unknown error";
    }
}

int store_fail(char **err, int rc, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        *err = util_vprintf(fmt, ap);
        va_end(ap);
    }
    return rc;
}

char *store_strdup(const char *src) { return src ? xstrdup(src) : NULL; }

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t store_now(store *s)
{
    if (s != NULL && s->opts.clock_ms != NULL) return s->opts.clock_ms(s->opts.clock_arg);
    return realtime_ms();
}

const char *store_run_state_name(store_run_state st)
{
    return (unsigned)st < STORE_RUN_STATE_COUNT ? run_state_names[st] : NULL;
}

const char *store_step_state_name(store_step_state st)
{
    return (unsigned)st < STORE_STEP_STATE_COUNT ? step_state_names[st] : NULL;
}

const char *store_event_source_name(store_event_source src)
{
    return (unsigned)src < STORE_SRC_COUNT ? source_names[src] : NULL;
}

static int parse_name(const char *const *names, int n, const char *name)
{
    for (int i = 0; name != NULL && i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int store_run_state_parse(const char *name, store_run_state *out)
{
    int i = parse_name(run_state_names, STORE_RUN_STATE_COUNT, name);
    if (i < 0) return STORE_INVALID;
    *out = (store_run_state)i;
    return STORE_OK;
}

int store_step_state_parse(const char *name, store_step_state *out)
{
    int i = parse_name(step_state_names, STORE_STEP_STATE_COUNT, name);
    if (i < 0) return STORE_INVALID;
    *out = (store_step_state)i;
    return STORE_OK;
}

int store_run_state_terminal(store_run_state st)
{
    return st == STORE_RUN_SUCCEEDED || st == STORE_RUN_FAILED || st == STORE_RUN_CANCELLED;
}

int store_step_state_terminal(store_step_state st)
{
    return st == STORE_STEP_SUCCEEDED || st == STORE_STEP_FAILED || st == STORE_STEP_CANCELLED ||
           st == STORE_STEP_SKIPPED;
}

/* ---- validation ---- */

/* STORE_OK when `text` is NULL (if allowed) or JSON; with `want_object`, it must be an object. */
static int check_json(const char *what, const char *text, int allow_null, int want_object, char **err)
{
    if (text == NULL)
        return allow_null ? STORE_OK : store_fail(err, STORE_INVALID, "%s: JSON text required", what);
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (v == NULL) return store_fail(err, STORE_INVALID, "%s: invalid JSON: %s at line %d", what, je.text, je.line);
    int ok = !want_object || json_is_object(v);
    json_decref(v);
    return ok ? STORE_OK : store_fail(err, STORE_INVALID, "%s: must be a JSON object", what);
}

static int check_str(const char *what, const char *v, char **err)
{
    if (v == NULL || v[0] == '\0') return store_fail(err, STORE_INVALID, "%s is required", what);
    return STORE_OK;
}

static int check_handle(store *s, char **err)
{
    return s == NULL ? store_fail(err, STORE_INVALID, "store handle is NULL") : STORE_OK;
}

#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        int try_rc_ = (expr);                                                                                \
        if (try_rc_ != STORE_OK) return try_rc_;                                                             \
    } while (0)

/* ---- open/close/transactions ---- */

int store_open(const char *url, const store_options *opts, store **out, char **err)
{
    if (out == NULL) return store_fail(err, STORE_INVALID, "store_open: out is NULL");
    *out = NULL;
    TRY(check_str("store url", url, err));
    store_options o = {0};
    if (opts != NULL) o = *opts;
    if (o.synchronous != STORE_SYNC_FULL && o.synchronous != STORE_SYNC_NORMAL)
        return store_fail(err, STORE_INVALID, "store_open: unknown synchronous mode %d", (int)o.synchronous);
    if (o.busy_timeout_ms <= 0) o.busy_timeout_ms = 5000;
    if (o.schema_version < 0 || o.schema_version > store_schema_latest())
        return store_fail(err, STORE_INVALID, "store_open: schema_version %d out of range 0..%d", o.schema_version,
                          store_schema_latest());
    if (store_postgres_is_conninfo(url)) return store_postgres_open(url, &o, out, err);
    if (store_firestore_is_url(url)) return store_firestore_open(url, &o, out, err);
    const char *path = url;
    if (strncmp(url, "sqlite:", 7) == 0) {
        path = url + 7;
        if (strncmp(path, "//", 2) == 0) path += 2; /* sqlite:///abs/path */
    } else if (strstr(url, "://") != NULL) {
        char *shown = store_url_redacted(url);
        int rc = store_fail(err, STORE_INVALID, "store_open: unsupported store url scheme in '%s'", shown);
        free(shown);
        return rc;
    }
    TRY(check_str("store path", path, err));
    return store_sqlite_open(path, &o, out, err);
}

void store_close(store *s)
{
    if (s != NULL) s->ops->close(s);
}

const char *store_backend_name(const store *s) { return s ? s->ops->name : ""; }

int store_schema_version(store *s) { return s ? s->ops->schema_version(s) : 0; }

int store_describe(store *s, char **json, char **err)
{
    TRY(check_handle(s, err));
    if (json == NULL) return store_fail(err, STORE_INVALID, "json is NULL");
    *json = NULL;
    return s->ops->describe(s, json, err);
}

int store_inbox_duplicate(const store_event *ev, int64_t first, int64_t *id, char **err)
{
    if (id != NULL) *id = first;
    return store_fail(err, STORE_DUPLICATE, "duplicate event (message id '%s', job '%s' state '%s'): first seen as %lld",
                      ev->message_id ? ev->message_id : "", ev->job_id ? ev->job_id : "", ev->state ? ev->state : "",
                      (long long)first);
}

int store_begin(store *s, char **err)
{
    TRY(check_handle(s, err));
    return s->ops->begin(s, err);
}

int store_commit(store *s, char **err)
{
    TRY(check_handle(s, err));
    return s->ops->commit(s, err);
}

int store_flush(store *s, char **err)
{
    TRY(check_handle(s, err));
    if (s->ops->in_transaction(s)) return store_fail(err, STORE_INVALID, "store_flush: a transaction is open");
    return s->ops->sync(s, err);
}

int store_checkpoint(store *s, store_checkpoint_mode mode, store_checkpoint_result *out, char **err)
{
    TRY(check_handle(s, err));
    store_checkpoint_result scratch;
    if (out == NULL) out = &scratch;
    *out = (store_checkpoint_result){0};
    if (mode != STORE_CHECKPOINT_PASSIVE && mode != STORE_CHECKPOINT_RESTART)
        return store_fail(err, STORE_INVALID, "store_checkpoint: unknown mode %d", (int)mode);
    if (s->ops->in_transaction(s)) return store_fail(err, STORE_INVALID, "store_checkpoint: a transaction is open");
    return s->ops->checkpoint(s, mode, out, err);
}

int store_rollback(store *s, char **err)
{
    TRY(check_handle(s, err));
    return s->ops->rollback(s, err);
}

int store_in_transaction(store *s) { return s ? s->ops->in_transaction(s) : 0; }

/* ---- scripts ---- */

static int check_hash(const char *hash, char **err)
{
    size_t n = hash ? strlen(hash) : 0;
    int ok = n == 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (hash[i] >= '0' && hash[i] <= '9') || (hash[i] >= 'a' && hash[i] <= 'f');
    return ok ? STORE_OK
              : store_fail(err, STORE_INVALID, "script hash must be 64 lowercase hex digits (sha256), got '%s'",
                           hash ? hash : "(null)");
}

int store_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err)
{
    TRY(check_handle(s, err));
    TRY(check_hash(hash, err));
    TRY(check_str("workflow", workflow, err));
    if (source == NULL) return store_fail(err, STORE_INVALID, "script source is NULL");
    return s->ops->script_put(s, hash, workflow, source, err);
}

int store_script_get(store *s, const char *hash, store_script *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("script hash", hash, err));
    return s->ops->script_get(s, hash, out, err);
}

void store_script_free(store_script *sc)
{
    if (sc == NULL) return;
    free(sc->hash);
    free(sc->workflow);
    free(sc->source);
    memset(sc, 0, sizeof *sc);
}

/* ---- runs ---- */

int store_run_create(store *s, const store_run *run, char **err)
{
    TRY(check_handle(s, err));
    if (run == NULL) return store_fail(err, STORE_INVALID, "run is NULL");
    TRY(check_str("run id", run->id, err));
    TRY(check_str("run workflow", run->workflow, err));
    TRY(check_hash(run->script_hash, err));
    if ((unsigned)run->state >= STORE_RUN_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "run state %d out of range", (int)run->state);
    if (run->request_key != NULL && run->request_key[0] == '\0')
        return store_fail(err, STORE_INVALID, "request_key must be NULL or non-empty");
    TRY(check_json("run params", run->params_json ? run->params_json : "{}", 0, 1, err));
    return s->ops->run_create(s, run, err);
}

int store_run_get(store *s, const char *id, store_run *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("run id", id, err));
    return s->ops->run_get(s, id, 0, out, err);
}

int store_run_get_by_request_key(store *s, const char *request_key, store_run *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("request_key", request_key, err));
    return s->ops->run_get(s, request_key, 1, out, err);
}

int store_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    store_run_filter flt = {.state = STORE_RUN_ANY};
    if (f != NULL) flt = *f;
    if (flt.state != STORE_RUN_ANY && (unsigned)flt.state >= STORE_RUN_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "run state filter %d out of range", flt.state);
    if (flt.limit == 0) flt.limit = 100;
    if (flt.limit < 1 || flt.limit > 1000)
        return store_fail(err, STORE_INVALID, "limit %d out of range 1..1000", flt.limit);
    int rc = s->ops->run_list_page(s, &flt, out, err);
    if (rc != STORE_OK) store_run_list_free(out); /* a failed call returns nothing to free */
    return rc;
}

int store_run_find_page(store *s, const store_run_query *q, store_run_list *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL || q == NULL) return store_fail(err, STORE_INVALID, "query or out is NULL");
    memset(out, 0, sizeof *out);
    int plain = !q->failed_step && (q->search == NULL || q->search[0] == '\0');
    if (plain || s->ops->run_find_page == NULL) {
        if (!plain) return store_fail(err, STORE_INVALID, "this store cannot filter runs by steps");
        return store_run_list_page(s, &q->base, out, err);
    }
    store_run_query qq = *q;
    if (qq.base.state != STORE_RUN_ANY && (unsigned)qq.base.state >= STORE_RUN_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "run state filter %d out of range", qq.base.state);
    if (qq.base.limit == 0) qq.base.limit = 100;
    if (qq.base.limit < 1 || qq.base.limit > 1000)
        return store_fail(err, STORE_INVALID, "limit %d out of range 1..1000", qq.base.limit);
    if (qq.search && qq.search[0] == '\0') qq.search = NULL;
    int rc = s->ops->run_find_page(s, &qq, out, err);
    if (rc != STORE_OK) store_run_list_free(out);
    return rc;
}

int store_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                        char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("run id", id, err));
    if (expected != STORE_RUN_ANY && (unsigned)expected >= STORE_RUN_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "expected run state %d out of range", expected);
    if ((unsigned)next >= STORE_RUN_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "run state %d out of range", (int)next);
    return s->ops->run_set_state(s, id, expected, next, error, err);
}

store_listener *store_listen(const char *url, char **err)
{
    if (url == NULL || !store_postgres_is_conninfo(url)) return NULL;
    return store_postgres_listen(url, err);
}

int store_shared(store *s) { return s != NULL && s->ops->shared; }

int store_run_lock(store *s, const char *run_id, int wait, int *got, char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("run id", run_id, err));
    if (got == NULL) return store_fail(err, STORE_INVALID, "got is NULL");
    *got = 0;
    if (!s->ops->in_transaction(s)) return store_fail(err, STORE_INVALID, "run_lock: no transaction is open");
    return s->ops->run_lock(s, run_id, wait, got, err);
}

int store_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                        char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("lease name", name, err));
    TRY(check_str("lease holder", holder, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    if (ttl_ms < 1) return store_fail(err, STORE_INVALID, "lease ttl %lld ms must be positive", (long long)ttl_ms);
    return s->ops->lease_acquire(s, name, holder, ttl_ms, out, err);
}

int store_lease_release(store *s, const char *name, const char *holder, char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("lease name", name, err));
    TRY(check_str("lease holder", holder, err));
    return s->ops->lease_release(s, name, holder, err);
}

void store_lease_free(store_lease *l)
{
    if (l == NULL) return;
    free(l->holder);
    l->holder = NULL;
}

int store_run_cursor(const char *cursor, int64_t *c_time, const char **c_id, char **err)
{
    *c_time = INT64_MAX;
    *c_id = "";
    if (cursor == NULL) return STORE_OK;
    char *end = NULL;
    long long t = strtoll(cursor, &end, 10);
    if (end == cursor || *end != ':') return store_fail(err, STORE_INVALID, "bad run cursor '%s'", cursor);
    *c_time = t;
    *c_id = end + 1;
    return STORE_OK;
}

int store_run_page_trim(store_run_list *out, int limit, char **err)
{
    if (out->count <= (size_t)limit) return STORE_OK;
    store_run_free(&out->items[out->count - 1]);
    out->count--;
    const store_run *last = &out->items[out->count - 1];
    (void)err;
    out->next_cursor = util_printf("%lld:%s", (long long)last->created_at, last->id);
    return STORE_OK;
}

int store_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err)
{
    TRY(check_handle(s, err));
    if (limit < 1 || limit > 10000) return store_fail(err, STORE_INVALID, "limit %d out of range 1..10000", limit);
    if (deleted) *deleted = 0;
    return s->ops->run_prune(s, before, limit, deleted, err);
}

int store_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                      const char *params_json, char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("run id", id, err));
    if (!store_run_state_terminal(expected))
        return store_fail(err, STORE_INVALID, "redrive: '%s' is not a terminal state", store_run_state_name(expected));
    if (params_json) TRY(check_json("run params", params_json, 0, 1, err));
    return s->ops->run_redrive(s, id, expected, script_hash, params_json, err);
}

int store_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err)
{
    TRY(check_handle(s, err));
    if (counts == NULL) return store_fail(err, STORE_INVALID, "counts is NULL");
    for (int i = 0; i < STORE_RUN_STATE_COUNT; i++) counts[i] = 0;
    return s->ops->run_count_by_state(s, counts, err);
}

void store_run_free(store_run *r)
{
    if (r == NULL) return;
    free(r->id);
    free(r->workflow);
    free(r->script_hash);
    free(r->params_json);
    free(r->origin);
    free(r->request_key);
    free(r->error);
    memset(r, 0, sizeof *r);
}

void store_run_list_free(store_run_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) store_run_free(&l->items[i]);
    free(l->items);
    free(l->next_cursor);
    memset(l, 0, sizeof *l);
}

/* ---- steps ---- */

static int check_step_state(int st, int allow_any, char **err)
{
    if (allow_any && st == STORE_STEP_ANY) return STORE_OK;
    if ((unsigned)st >= STORE_STEP_STATE_COUNT)
        return store_fail(err, STORE_INVALID, "step state %d out of range", st);
    return STORE_OK;
}

static int check_attempt(int attempt, int allow_any, char **err)
{
    if ((allow_any && attempt == STORE_ATTEMPT_ANY) || attempt >= 1) return STORE_OK;
    return store_fail(err, STORE_INVALID, "attempt %d must be >= 1", attempt);
}

static int check_step_key(store *s, const char *run_id, const char *name, char **err)
{
    TRY(check_handle(s, err));
    TRY(check_str("run id", run_id, err));
    TRY(check_str("step name", name, err));
    return STORE_OK;
}

int store_step_insert(store *s, const store_step *st, char **err)
{
    TRY(check_handle(s, err));
    if (st == NULL) return store_fail(err, STORE_INVALID, "step is NULL");
    TRY(check_step_key(s, st->run_id, st->name, err));
    TRY(check_step_state((int)st->state, 0, err));
    if (st->attempt != 0) TRY(check_attempt(st->attempt, 0, err));
    TRY(check_json("step request", st->request_json, 1, 1, err));
    TRY(check_json("step result", st->result_json, 1, 0, err));
    return s->ops->step_insert(s, st, err);
}

int store_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err)
{
    if (out != NULL) memset(out, 0, sizeof *out);
    TRY(check_step_key(s, run_id, name, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    return s->ops->step_get(s, run_id, name, out, err);
}

int store_step_list_run(store *s, const char *run_id, store_step_list *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("run id", run_id, err));
    int rc = s->ops->step_list_run(s, run_id, out, err);
    if (rc != STORE_OK) store_step_list_free(out);
    return rc;
}

int store_step_find_by_job_name(store *s, const char *job_name, store_step *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("job name", job_name, err));
    return s->ops->step_find(s, STORE_KEY_JOB_NAME, job_name, out, err);
}

int store_step_find_by_job_id(store *s, const char *job_id, store_step *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    TRY(check_str("job id", job_id, err));
    return s->ops->step_find(s, STORE_KEY_JOB_ID, job_id, out, err);
}

/* A step write is followed by the copy of its attempt (store_attempts.c) in the same transaction: the caller's, or
 * one opened here for the two (attempt_open, then attempt_copy with the write's result). */
static int attempt_open(store *s, int *own, char **err)
{
    *own = store_attempts_kept(s) && !s->ops->in_transaction(s);
    return *own ? s->ops->begin(s, err) : STORE_OK;
}

static int attempt_copy(store *s, int own, int rc, const char *run_id, const char *name, char **err)
{
    if (rc == STORE_OK && store_attempts_kept(s)) rc = store_attempt_capture(s, run_id, name, err);
    if (own) {
        if (rc == STORE_OK) rc = s->ops->commit(s, err);
        else s->ops->rollback(s, NULL);
    }
    return rc;
}

/* Firestore's transactions are optimistic: a pair's own transaction whose commit lost a race (STORE_BUSY, nothing
 * written) runs again from its reads, as the step write alone would in its unit. 1: run the pair again. */
static int attempt_rerun(store *s, int own, int rc, int *tries, char **err)
{
    if (!own || rc != STORE_BUSY || store_firestore_native(s) == NULL || ++*tries > 20) return 0;
    if (err != NULL) {
        free(*err);
        *err = NULL;
    }
    struct timespec ts = {0, (long)(*tries < 10 ? *tries : 10) * 5000000L};
    nanosleep(&ts, NULL);
    return 1;
}

/* Runs `call` (a step write) and the copy of its attempt in one transaction, and returns their result. */
#define WITH_ATTEMPT(s, run_id, name, err, call)                                  \
    do {                                                                         \
        int own_, rc_, tries_ = 0;                                               \
        do {                                                                     \
            TRY(attempt_open((s), &own_, (err)));                                \
            rc_ = attempt_copy((s), own_, (call), (run_id), (name), (err));      \
        } while (attempt_rerun((s), own_, rc_, &tries_, (err)));                 \
        return rc_;                                                              \
    } while (0)

int store_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                             int expected_attempt, const store_intent *in, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_step_state(expected_state, 1, err));
    TRY(check_attempt(expected_attempt, 1, err));
    if (in == NULL) return store_fail(err, STORE_INVALID, "intent is NULL");
    TRY(check_attempt(in->attempt, 0, err));
    TRY(check_str("job name", in->job_name, err));
    TRY(check_json("launch request", in->request_json, 0, 1, err));
    WITH_ATTEMPT(s, run_id, name, err,
                 s->ops->step_record_intent(s, run_id, name, expected_state, expected_attempt, in, err));
}

int store_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                       const char *job_state, int64_t next_check_at, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 0, err));
    TRY(check_str("job id", job_id, err));
    WITH_ATTEMPT(s, run_id, name, err,
                 s->ops->step_set_job(s, run_id, name, attempt, job_id, job_state, next_check_at, err));
}

int store_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                         int expected_attempt, store_step_state next, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_step_state(expected_state, 1, err));
    TRY(check_attempt(expected_attempt, 1, err));
    TRY(check_step_state((int)next, 0, err));
    WITH_ATTEMPT(s, run_id, name, err,
                 s->ops->step_set_state(s, run_id, name, expected_state, expected_attempt, next, err));
}

int store_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                      const char *job_state, const char *result_json, const char *error, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    TRY(check_step_state((int)final, 0, err));
    if (!store_step_state_terminal(final))
        return store_fail(err, STORE_INVALID, "step_finish: '%s' is not a terminal state",
                          store_step_state_name(final));
    TRY(check_json("step result", result_json, 1, 0, err));
    WITH_ATTEMPT(s, run_id, name, err,
                 s->ops->step_finish(s, run_id, name, attempt, final, job_state, result_json, error, err));
}

int store_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                         int check_failures, const char *job_state, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    if (check_failures < 0) return store_fail(err, STORE_INVALID, "check_failures must be >= 0");
    /* Only a job state is worth copying to the attempt (the schedule is the step's own business). */
    if (job_state == NULL)
        return s->ops->step_set_check(s, run_id, name, attempt, next_check_at, check_failures, job_state, err);
    WITH_ATTEMPT(s, run_id, name, err,
                 s->ops->step_set_check(s, run_id, name, attempt, next_check_at, check_failures, job_state, err));
}

int store_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                       int64_t next_check_at, int check_failures, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    if (check_failures < 0) return store_fail(err, STORE_INVALID, "check_failures must be >= 0");
    return s->ops->step_reclaim(s, run_id, name, attempt, claimed, next_check_at, check_failures, err);
}

int store_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > 10000) return store_fail(err, STORE_INVALID, "limit %d out of range 1..10000", limit);
    int rc = s->ops->step_due(s, now, limit, out, err);
    if (rc != STORE_OK) store_step_list_free(out);
    return rc;
}

int store_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                        int64_t next_check_at, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    if (hint_at <= 0) return store_fail(err, STORE_INVALID, "hint_at must be a time");
    return s->ops->step_set_hint(s, run_id, name, attempt, hint_at, next_check_at, err);
}

int store_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                         char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    if (s->ops->step_set_cause == NULL) return store_fail(err, STORE_INVALID, "this store cannot keep failure causes");
    int own;
    TRY(attempt_open(s, &own, err));
    int rc = s->ops->step_set_cause(s, run_id, name, attempt, cause, err);
    if (rc == STORE_CONFLICT) {
        /* The step moved on (a retry): the cause still belongs to that attempt's row. The step's answer stays
         * STORE_CONFLICT; a failure to keep it on the attempt is that answer instead. */
        int arc = store_attempt_set_cause(s, run_id, name, attempt, cause, NULL);
        if (own) {
            if (arc == STORE_OK) s->ops->commit(s, NULL);
            else s->ops->rollback(s, NULL);
        }
        return rc;
    }
    return attempt_copy(s, own, rc, run_id, name, err);
}

int store_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err)
{
    TRY(check_step_key(s, run_id, name, err));
    TRY(check_attempt(attempt, 1, err));
    if (s->ops->step_set_note == NULL) return store_fail(err, STORE_INVALID, "this store cannot keep step notes");
    return s->ops->step_set_note(s, run_id, name, attempt, note, err);
}

int store_step_next_due(store *s, int64_t *at, char **err)
{
    TRY(check_handle(s, err));
    if (at == NULL) return store_fail(err, STORE_INVALID, "at is NULL");
    return s->ops->step_next_due(s, at, err);
}

void store_step_free(store_step *st)
{
    if (st == NULL) return;
    free(st->run_id);
    free(st->name);
    free(st->job_name);
    free(st->job_id);
    free(st->project);
    free(st->region);
    free(st->request_json);
    free(st->job_state);
    free(st->result_json);
    free(st->error);
    free(st->failure_cause);
    memset(st, 0, sizeof *st);
}

void store_step_list_free(store_step_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) store_step_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* ---- inbox ---- */

int store_inbox_put(store *s, const store_event *ev, int64_t *id, char **err)
{
    TRY(check_handle(s, err));
    if (id != NULL) *id = 0;
    if (ev == NULL) return store_fail(err, STORE_INVALID, "event is NULL");
    if ((unsigned)ev->source >= STORE_SRC_COUNT)
        return store_fail(err, STORE_INVALID, "event source %d out of range", (int)ev->source);
    if (ev->message_id != NULL && ev->message_id[0] == '\0')
        return store_fail(err, STORE_INVALID, "message_id must be NULL or non-empty");
    if (ev->message_id == NULL && (ev->job_id == NULL || ev->state == NULL))
        return store_fail(err, STORE_INVALID, "an event needs a message_id or both job_id and state to dedupe");
    TRY(check_json("event payload", ev->payload_json, 1, 0, err));
    return s->ops->inbox_put(s, ev, id, err);
}

int store_inbox_fetch(store *s, int limit, store_event_list *out, char **err)
{
    TRY(check_handle(s, err));
    if (out == NULL) return store_fail(err, STORE_INVALID, "out is NULL");
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > 10000) return store_fail(err, STORE_INVALID, "limit %d out of range 1..10000", limit);
    int rc = s->ops->inbox_fetch(s, limit, out, err);
    if (rc != STORE_OK) store_event_list_free(out);
    return rc;
}

int store_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err)
{
    TRY(check_handle(s, err));
    return s->ops->inbox_mark_processed(s, id, processed_at ? processed_at : store_now(s), err);
}

int store_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err)
{
    TRY(check_handle(s, err));
    if (deleted != NULL) *deleted = 0;
    return s->ops->inbox_prune(s, before, deleted, err);
}

void store_event_free(store_event *ev)
{
    if (ev == NULL) return;
    free(ev->message_id);
    free(ev->job_id);
    free(ev->job_name);
    free(ev->state);
    free(ev->payload_json);
    memset(ev, 0, sizeof *ev);
}

void store_event_list_free(store_event_list *l)
{
    if (l == NULL) return;
    for (size_t i = 0; i < l->count; i++) store_event_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}
