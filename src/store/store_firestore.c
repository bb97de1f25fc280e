/* store_firestore: the Firestore (Native mode) backend's handle: opening "firestore://PROJECT[/DATABASE]", the REST
 * calls (batchGet, runQuery, runAggregationQuery, beginTransaction, commit, rollback) with credentials and retries,
 * units of work (reads recorded, writes buffered, one atomic commit with preconditions), explicit transactions,
 * the schema document, describe and the document counters.
 * Uses: http_client (its own client, driven synchronously), gauth (scope datastore; none for the emulator),
 * retry, util (the emulator rule), metrics (sluice_store_ops_total, when the process declared it), jansson. Must not: know the engine's documents (store_firestore_ops.c and
 * store_firestore_steps.c lay those out), or hold a transaction open across store calls except between
 * store_begin and store_commit/store_rollback. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gauth.h"
#include "http_client.h"
#include "mem.h"
#include "metrics.h"
#include "retry.h"
#include "store_firestore.h"
#include "util.h"

#define FS_DEFAULT_URL "https://firestore.googleapis.com"
#define FS_SCOPE "https://www.googleapis.com/auth/datastore"
#define FS_URL_PREFIX "firestore://"

struct fs_store {
    store base; /* first: an fs_store * is a store * */
    hc_client *hc;
    ga_auth *ga;
    int no_auth;       /* the emulator: "Authorization: Bearer owner", no credentials */
    char *api;         /* "https://firestore.googleapis.com/v1/projects/P/databases/D/documents" */
    char *root;        /* "projects/P/databases/D/documents": the prefix of every document name */
    char *project, *database, *endpoint;
    int txn;           /* an explicit transaction is open (store_begin) */
    json_t *reads;     /* the unit's reads: name -> updateTime (string) or null (absent) */
    json_t *cache;     /* the unit's documents read by name: name -> plain document (a second read is free) */
    json_t *writes;    /* the unit's buffered writes: name -> {"coll", "id", "doc" (absent: delete), "pre"} */
    json_t *conds;     /* writes made only if the commit writes a matching document (fs_put_with) */
    int in_unit;       /* between fs_unit_begin and fs_unit_end: reads may be answered from the unit's cache */
    int rerun;         /* fs_unit_end asked for a rerun: the next fs_unit_begin continues the same unit */
    int64_t unit_start;
    int unit_tries;
    int version;
    int64_t n_reads, n_writes, n_deletes;
};

static void fs_reset(fs_store *f)
{
    json_object_clear(f->reads);
    json_object_clear(f->writes);
    json_object_clear(f->cache);
    json_array_clear(f->conds);
}

int64_t fs_now(fs_store *f) { return store_now(&f->base); }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fs_pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- HTTP ---- */

typedef struct {
    int done, rc;
    char *token;
    char *err;
} fs_tok;

static void on_token(void *ud, int rc, const char *token, const char *err)
{
    fs_tok *t = ud;
    t->done = 1;
    t->rc = rc;
    t->token = token ? xstrdup(token) : NULL;
    t->err = err ? xstrdup(err) : NULL;
}

/* The Authorization header line (caller frees), or NULL with *err. */
static char *fs_auth_header(fs_store *f, char **err)
{
    if (f->no_auth) return xstrdup("Authorization: Bearer owner");
    fs_tok t = {0};
    ga_token(f->ga, on_token, &t);
    while (!t.done) hc_run(f->hc, 100);
    char *h = NULL;
    if (t.rc == 0 && t.token) h = util_printf("Authorization: Bearer %s", t.token);
    else store_fail(err, STORE_IO, "firestore: no access token: %s", t.err ? t.err : "?");
    free(t.token);
    free(t.err);
    return h;
}

/* A failed answer's google.rpc status ("ABORTED", ...) and message, borrowed from `ans`. */
static const char *g_status(json_t *ans, const char **msg)
{
    json_t *e = json_object_get(json_is_array(ans) ? json_array_get(ans, 0) : ans, "error");
    if (msg) *msg = json_string_value(json_object_get(e, "message"));
    return json_string_value(json_object_get(e, "status"));
}

/* POSTs `body` (stolen) to api + `verb` (":commit", ...). STORE_OK with *ans (new reference), or: FS_RERUN when a
 * commit's precondition failed or a transaction was aborted (contention), STORE_NOTFOUND for an unknown database,
 * else STORE_IO/STORE_BUSY with a message. Idempotent calls (every one but commit) are retried on transient
 * failures with the retry policy. */
static int fs_post(fs_store *f, const char *verb, json_t *body, json_t **ans, char **err)
{
    *ans = NULL;
    int idempotent = strcmp(verb, ":commit") != 0;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) return store_fail(err, STORE_INVALID, "firestore: the request body cannot be serialized");
    char *url = util_printf("%s%s", f->api, verb);
    retry_policy pol = {.initial_ms = 100, .multiplier = 2, .cap_ms = 2000, .max_attempts = 8,
                        .deadline_ms = f->base.opts.busy_timeout_ms > 10000 ? f->base.opts.busy_timeout_ms : 10000};
    retry_state rs;
    retry_begin(&rs, &pol, mono_ms(), NULL, NULL);
    int rc = STORE_IO;
    for (;;) {
        char *auth = fs_auth_header(f, err);
        if (auth == NULL) {
            rc = STORE_IO;
            break;
        }
        const char *hdrs[] = {"Content-Type: application/json", auth, NULL};
        hc_req req = {.method = "POST", .url = url, .headers = hdrs, .body = text, .body_len = strlen(text),
                      .fresh_connection = !idempotent};
        hc_resp *r = NULL;
        const char *herr = NULL;
        if (hc_perform_sync(f->hc, &req, &r, &herr) != 0) {
            free(auth);
            rc = store_fail(err, STORE_IO, "firestore %s: %s", verb, herr ? herr : "request failed");
            break;
        }
        json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
        const char *msg = NULL, *gs = g_status(j, &msg);
        retry_transport tr = retry_transport_of(r->error);
        long status = r->status;
        if (r->error == HC_OK && status / 100 == 2 && j != NULL) {
            *ans = j;
            rc = STORE_OK;
        } else if (status == 409 && gs && strcmp(gs, "ABORTED") == 0 && !idempotent) {
            rc = FS_RERUN; /* contention: the caller decides */
        } else if (!idempotent && (status == 409 || status == 400 || status == 404) && gs &&
                   (strcmp(gs, "ALREADY_EXISTS") == 0 || strcmp(gs, "FAILED_PRECONDITION") == 0 ||
                    strcmp(gs, "NOT_FOUND") == 0)) {
            rc = FS_RERUN;
        } else {
            retry_class rcl = retry_classify(idempotent, tr, status, gs);
            int64_t delay = 0;
            if (rcl == RETRY_AGAIN && retry_next(&rs, mono_ms(), -1, &delay)) {
                json_decref(j);
                hc_resp_free(r);
                free(auth);
                fs_pause_ms((int)delay);
                continue;
            }
            if (r->error != HC_OK)
                rc = store_fail(err, STORE_IO, "firestore %s: %s (%s)", verb, hc_error_name(r->error), r->error_text);
            else
                rc = store_fail(err, status == 409 || status == 429 ? STORE_BUSY : STORE_IO, "firestore %s: HTTP %ld %s: %s",
                                verb, status, gs ? gs : "", msg ? msg : "");
        }
        if (rc != STORE_OK) json_decref(j);
        hc_resp_free(r);
        free(auth);
        break;
    }
    free(text);
    free(url);
    return rc;
}

/* Adds to the handle's counters and to the process's sluice_store_ops_total (refused unless serve declared it). */
static void fs_tally(fs_store *f, int64_t reads, int64_t writes, int64_t deletes)
{
    f->n_reads += reads;
    f->n_writes += writes;
    f->n_deletes += deletes;
    if (reads) metrics_add("sluice_store_ops_total", "op=\"read\"", (double)reads);
    if (writes) metrics_add("sluice_store_ops_total", "op=\"write\"", (double)writes);
    if (deletes) metrics_add("sluice_store_ops_total", "op=\"delete\"", (double)deletes);
}

/* ---- units of work ---- */

void fs_unit_begin(fs_store *f)
{
    if (!f->rerun) {
        f->unit_start = mono_ms();
        f->unit_tries = 0;
    }
    f->rerun = 0;
    f->in_unit = 1;
    if (!f->txn) fs_reset(f);
}

static char *doc_name(fs_store *f, const char *coll, const char *id) { return util_printf("%s/%s/%s", f->root, coll, id); }

static void buffer_write(fs_store *f, const char *coll, const char *id, json_t *doc, int create);

static int fields_match(const json_t *doc, const json_t *when)
{
    const char *k;
    json_t *v;
    if (doc == NULL) return 0;
    json_object_foreach((json_t *)when, k, v) if (!json_equal(json_object_get(doc, k), v)) return 0;
    return 1;
}

/* 1 when the buffer writes a document of coll whose fields include every field of `when` and did not as read. */
static int writes_match(fs_store *f, const char *coll, const json_t *when)
{
    const char *name;
    json_t *w;
    json_object_foreach(f->writes, name, w) {
        if (strcmp(json_string_value(json_object_get(w, "coll")), coll) != 0) continue;
        if (fields_match(json_object_get(w, "doc"), when) && !fields_match(json_object_get(f->cache, name), when))
            return 1;
    }
    return 0;
}

/* Buffers the conditional writes whose condition the buffer meets (before the commit). */
static void apply_conds(fs_store *f)
{
    size_t i;
    json_t *c;
    json_t *due = json_array();
    json_array_foreach(f->conds, i, c) if (writes_match(f, json_string_value(json_object_get(c, "when_coll")),
                                                        json_object_get(c, "when"))) json_array_append(due, c);
    json_array_foreach(due, i, c)
        buffer_write(f, json_string_value(json_object_get(c, "coll")), json_string_value(json_object_get(c, "id")),
                     json_deep_copy(json_object_get(c, "doc")), 0);
    json_decref(due);
    json_array_clear(f->conds);
}

/* Commits the buffered writes (inside the explicit transaction when one is open). */
static int fs_commit_writes(fs_store *f, char **err)
{
    apply_conds(f);
    json_t *writes = json_array();
    const char *name;
    json_t *w;
    int64_t nw = 0, nd = 0;
    json_object_foreach(f->writes, name, w) {
        json_t *doc = json_object_get(w, "doc"), *pre = json_object_get(w, "pre");
        json_t *op = doc ? json_pack("{s:{s:s,s:o}}", "update", "name", name, "fields", fs_fields_encode(doc))
                         : json_pack("{s:s}", "delete", name);
        if (pre && !json_is_null(pre)) json_object_set(op, "currentDocument", pre);
        json_array_append_new(writes, op);
        if (doc) nw++;
        else nd++;
    }
    if (json_array_size(writes) == 0) {
        json_decref(writes);
        return STORE_OK;
    }
    json_t *body = json_pack("{s:o}", "writes", writes);
    json_t *ans = NULL;
    int rc = fs_post(f, ":commit", body, &ans, err);
    json_decref(ans);
    if (rc == STORE_OK) fs_tally(f, 0, nw, nd);
    return rc;
}

int fs_unit_end(fs_store *f, int rc, char **err)
{
    f->in_unit = 0;
    if (f->txn) return rc; /* the explicit transaction commits at store_commit */
    if (rc == STORE_OK) rc = fs_commit_writes(f, err);
    fs_reset(f);
    if (rc != FS_RERUN) return rc;
    f->unit_tries++;
    if (mono_ms() - f->unit_start > f->base.opts.busy_timeout_ms)
        return store_fail(err, STORE_BUSY, "firestore: gave up after %d tries: other writers kept changing the same "
                          "documents for %d ms", f->unit_tries, f->base.opts.busy_timeout_ms);
    f->rerun = 1;
    fs_pause_ms(f->unit_tries < 3 ? 0 : (int)(retry_rng_default(NULL) * 20 * (f->unit_tries < 10 ? f->unit_tries : 10)));
    return FS_RERUN;
}

static json_t *doc_from(fs_store *f, json_t *d, const char *name)
{
    json_t *doc = fs_fields_decode(json_object_get(d, "fields"));
    const char *slash = strrchr(name, '/');
    json_object_set_new(doc, "_id", json_string(slash ? slash + 1 : name));
    json_t *ut = json_object_get(d, "updateTime");
    json_object_set(f->reads, name, ut ? ut : json_null());
    return doc;
}

int fs_get(fs_store *f, const char *coll, const char *id, json_t **doc, char **err)
{
    *doc = NULL;
    char *name = doc_name(f, coll, id);
    json_t *w = json_object_get(f->writes, name);
    if (w != NULL) {
        json_t *d = json_object_get(w, "doc");
        free(name);
        if (d == NULL) return STORE_NOTFOUND;
        *doc = json_deep_copy(d);
        json_object_set_new(*doc, "_id", json_string(id));
        return STORE_OK;
    }
    /* Outside a unit and a transaction every read goes to the server: nothing resets the cache there. */
    if (!f->in_unit && !f->txn) fs_reset(f);
    json_t *cached = json_object_get(f->cache, name);
    if (cached != NULL) {
        free(name);
        *doc = json_deep_copy(cached);
        return STORE_OK;
    }
    if (json_object_get(f->reads, name) != NULL && json_is_null(json_object_get(f->reads, name))) {
        free(name);
        return STORE_NOTFOUND; /* read as absent in this unit already */
    }
    json_t *body = json_pack("{s:[s]}", "documents", name);
    json_t *ans = NULL;
    int rc = fs_post(f, ":batchGet", body, &ans, err);
    if (rc == FS_RERUN) rc = store_fail(err, STORE_BUSY, "firestore: the transaction was aborted (contention)");
    if (rc == STORE_OK) {
        fs_tally(f, 1, 0, 0);
        json_t *el = json_array_get(ans, 0), *found = json_object_get(el, "found");
        if (found != NULL) {
            *doc = doc_from(f, found, name);
            json_object_set_new(f->cache, name, json_deep_copy(*doc));
        } else {
            json_object_set_new(f->reads, name, json_null());
            rc = STORE_NOTFOUND;
        }
    }
    json_decref(ans);
    free(name);
    return rc;
}

static void buffer_write(fs_store *f, const char *coll, const char *id, json_t *doc, int create)
{
    char *name = doc_name(f, coll, id);
    if (name == NULL) {
        json_decref(doc);
        return;
    }
    json_t *old = json_object_get(f->writes, name), *pre = NULL;
    if (old != NULL) pre = json_incref(json_object_get(old, "pre"));
    else if (create) pre = json_pack("{s:b}", "exists", 0);
    else {
        json_t *r = json_object_get(f->reads, name);
        if (json_is_string(r)) pre = json_pack("{s:O}", "updateTime", r);
        else if (r != NULL) pre = json_pack("{s:b}", "exists", 0);
    }
    json_t *w = json_pack("{s:s,s:s}", "coll", coll, "id", id);
    if (doc) {
        json_object_del(doc, "_id");
        json_object_set_new(w, "doc", doc);
    }
    json_object_set_new(w, "pre", pre ? pre : json_null());
    json_object_set_new(f->writes, name, w);
    free(name);
}

void fs_put(fs_store *f, const char *coll, const char *id, json_t *doc) { buffer_write(f, coll, id, doc, 0); }
void fs_create(fs_store *f, const char *coll, const char *id, json_t *doc) { buffer_write(f, coll, id, doc, 1); }
void fs_delete(fs_store *f, const char *coll, const char *id) { buffer_write(f, coll, id, NULL, 0); }

void fs_put_with(fs_store *f, const char *coll, const char *id, json_t *doc, const char *when_coll, json_t *when)
{
    json_object_del(doc, "_id");
    json_array_append_new(f->conds, json_pack("{s:s,s:s,s:o,s:s,s:o}", "coll", coll, "id", id, "doc", doc,
                                              "when_coll", when_coll, "when", when));
}

static json_t *order_by(const char *field, int desc)
{
    return json_pack("{s:{s:s},s:s}", "field", "fieldPath", field, "direction", desc ? "DESCENDING" : "ASCENDING");
}

static json_t *make_query(const char *coll, json_t *where)
{
    json_t *q = json_pack("{s:[{s:s}]}", "from", "collectionId", coll);
    if (where) json_object_set_new(q, "where", where);
    return q;
}

int fs_query(fs_store *f, const char *coll, json_t *where, const char *order_field, int desc, const char *order2,
             int limit, json_t *after, json_t **docs, char **err)
{
    *docs = NULL;
    if (!f->in_unit && !f->txn) fs_reset(f);
    json_t *q = make_query(coll, where);
    if (order_field) {
        json_t *ob = json_array();
        json_array_append_new(ob, order_by(order_field, desc));
        if (order2) json_array_append_new(ob, order_by(order2, desc));
        json_object_set_new(q, "orderBy", ob);
    }
    if (limit > 0) json_object_set_new(q, "limit", json_integer(limit));
    if (after) {
        json_t *vals = json_array(), *v;
        size_t i;
        json_array_foreach(after, i, v) json_array_append_new(vals, fs_value(v));
        json_object_set_new(q, "startAt", json_pack("{s:o,s:b}", "values", vals, "before", 0));
        json_decref(after);
    }
    json_t *body = json_pack("{s:o}", "structuredQuery", q);
    json_t *ans = NULL;
    int rc = fs_post(f, ":runQuery", body, &ans, err);
    if (rc == FS_RERUN) rc = store_fail(err, STORE_BUSY, "firestore: the transaction was aborted (contention)");
    if (rc != STORE_OK) return rc;
    json_t *out = json_array(), *el;
    size_t i, n = 0;
    json_array_foreach(ans, i, el) {
        json_t *d = json_object_get(el, "document");
        const char *name = json_string_value(json_object_get(d, "name"));
        if (d == NULL || name == NULL) continue;
        n++;
        json_t *doc = doc_from(f, d, name), *w = json_object_get(f->writes, name);
        if (w != NULL) {
            json_decref(doc);
            json_t *bd = json_object_get(w, "doc");
            if (bd == NULL) continue;
            doc = json_deep_copy(bd);
            json_object_set(doc, "_id", json_object_get(w, "id"));
        }
        json_array_append_new(out, doc);
    }
    fs_tally(f, n ? (int64_t)n : 1, 0, 0); /* a query that finds nothing still costs one read */
    json_decref(ans);
    /* The unit's own new documents of this collection, which the server cannot know yet. */
    const char *name;
    json_t *w;
    json_object_foreach(f->writes, name, w) {
        json_t *bd = json_object_get(w, "doc");
        if (bd == NULL || strcmp(json_string_value(json_object_get(w, "coll")), coll) != 0) continue;
        const char *id = json_string_value(json_object_get(w, "id"));
        int seen = 0;
        json_array_foreach(out, i, el) seen |= strcmp(fs_str(el, "_id"), id) == 0;
        if (seen) continue;
        json_t *doc = json_deep_copy(bd);
        json_object_set_new(doc, "_id", json_string(id));
        json_array_append_new(out, doc);
    }
    *docs = out;
    return STORE_OK;
}

int fs_count(fs_store *f, const char *coll, json_t *where, int64_t *count, char **err)
{
    *count = 0;
    json_t *body = json_pack("{s:{s:o,s:[{s:s,s:{}}]}}", "structuredAggregationQuery", "structuredQuery",
                             make_query(coll, where), "aggregations", "alias", "n", "count");
    json_t *ans = NULL;
    int rc = fs_post(f, ":runAggregationQuery", body, &ans, err);
    if (rc == FS_RERUN) rc = store_fail(err, STORE_BUSY, "firestore: the transaction was aborted (contention)");
    if (rc != STORE_OK) return rc;
    json_t *n = json_object_get(json_object_get(json_object_get(json_object_get(json_array_get(ans, 0), "result"),
                                                                "aggregateFields"), "n"), "integerValue");
    *count = json_is_string(n) ? strtoll(json_string_value(n), NULL, 10) : json_integer_value(n);
    /* Billed as one read per batch of up to 1,000 index entries counted. */
    fs_tally(f, 1 + *count / 1000, 0, 0);
    json_decref(ans);
    return STORE_OK;
}

/* ---- transactions ---- */

/* An explicit transaction is client-side: its reads are ordinary strongly consistent reads, its writes wait in the
 * buffer, and store_commit sends them in one atomic commit whose preconditions hold only if nothing the transaction
 * read and then wrote has changed since (optimistic concurrency). No Firestore transaction is opened, so no lock is
 * ever held on the server: an engine killed mid-transaction leaves nothing behind that stalls the others (the
 * emulator keeps a dead transaction's locks, and answers every other writer "Transaction lock timeout"). Whatever
 * changes several steps of a run writes the run document too (store_run_lock), so two such transactions conflict. */
static int fs_begin(store *s, char **err)
{
    fs_store *f = FS(s);
    if (f->txn) return store_fail(err, STORE_INVALID, "store_begin: a transaction is already open");
    fs_reset(f);
    f->txn = 1;
    return STORE_OK;
}

static int fs_rollback(store *s, char **err)
{
    (void)err;
    fs_store *f = FS(s);
    f->txn = 0; /* nothing open: a no-op, as on the other backends */
    fs_reset(f);
    return STORE_OK;
}

static int fs_commit(store *s, char **err)
{
    fs_store *f = FS(s);
    if (!f->txn) return store_fail(err, STORE_INVALID, "store_commit: no transaction is open");
    f->txn = 0;
    int rc = fs_commit_writes(f, err);
    fs_reset(f);
    if (rc == FS_RERUN)
        rc = store_fail(err, STORE_BUSY, "firestore: the transaction lost a race with another writer; nothing was "
                        "committed");
    return rc;
}

static int fs_in_transaction(store *s) { return FS(s)->txn; }
static int fs_sync(store *s, char **err) { (void)s, (void)err; return STORE_OK; }
static int fs_checkpoint(store *s, store_checkpoint_mode mode, store_checkpoint_result *out, char **err)
{
    (void)s, (void)mode, (void)out, (void)err;
    return STORE_OK;
}

/* ---- open, describe, close ---- */

static int fs_schema_version(store *s) { return FS(s)->version; }

static int fs_describe(store *s, char **json, char **err)
{
    fs_store *f = FS(s);
    json_t *o = json_pack("{s:s,s:i,s:s,s:s,s:s,s:b,s:i,s:I,s:I,s:I}", "backend", "firestore", "schema_version",
                          f->version, "project", f->project, "database", f->database, "endpoint", f->endpoint,
                          "emulator", f->no_auth, "busy_timeout_ms", f->base.opts.busy_timeout_ms, "reads",
                          (json_int_t)f->n_reads, "writes", (json_int_t)f->n_writes, "deletes",
                          (json_int_t)f->n_deletes);
    *json = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *json ? STORE_OK : store_fail(err, STORE_NOMEM, "describe: out of memory");
}

static void fs_close(store *s)
{
    fs_store *f = FS(s);
    if (f == NULL) return;
    ga_free(f->ga);
    hc_free(f->hc);
    json_decref(f->reads);
    json_decref(f->writes);
    json_decref(f->conds);
    json_decref(f->cache);
    free(f->api);
    free(f->root);
    free(f->project);
    free(f->database);
    free(f->endpoint);
    free(f);
}

int store_firestore_is_url(const char *url) { return url != NULL && strncmp(url, FS_URL_PREFIX, strlen(FS_URL_PREFIX)) == 0; }

void *store_firestore_native(store *s) { return s != NULL && strcmp(s->ops->name, "firestore") == 0 ? s : NULL; }

int store_firestore_counts(store *s, int64_t *reads, int64_t *writes, int64_t *deletes)
{
    if (store_firestore_native(s) == NULL) return STORE_INVALID;
    fs_store *f = FS(s);
    if (reads) *reads = f->n_reads;
    if (writes) *writes = f->n_writes;
    if (deletes) *deletes = f->n_deletes;
    return STORE_OK;
}

static int valid_part(const char *p, size_t n)
{
    if (n == 0 || n > 100) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:.()", p[i])) return 0;
    return 1;
}

/* Reads (or, on a new database, writes) the schema document meta/schema. */
static int fs_schema(fs_store *f, char **err)
{
    json_t *doc = NULL;
    int rc;
    FS_UNIT(f, rc, err, {
        json_decref(doc);
        doc = NULL;
        rc = fs_get(f, "meta", "schema", &doc, err);
        if (rc == STORE_NOTFOUND && f->base.opts.must_exist) {
            rc = store_fail(err, STORE_NOTFOUND, "no Sluice store in Firestore database %s of project %s",
                            f->database, f->project);
        } else if (rc == STORE_NOTFOUND) {
            rc = STORE_OK;
            fs_create(f, "meta", "schema", json_pack("{s:i,s:I}", "version", store_schema_latest(), "created_at",
                                                     (json_int_t)fs_now(f)));
        }
    });
    if (rc == STORE_OK) {
        f->version = doc ? (int)fs_int(doc, "version") : store_schema_latest();
        if (f->version > store_schema_latest())
            rc = store_fail(err, STORE_SCHEMA, "the Firestore store has schema version %d; this binary knows up to %d",
                            f->version, store_schema_latest());
        else if (f->version < 1)
            rc = store_fail(err, STORE_CORRUPT, "meta/schema of the Firestore store holds no version");
    }
    json_decref(doc);
    return rc;
}

int store_firestore_open(const char *url, const store_options *opts, store **out, char **err)
{
    static struct store_ops ops;
    if (ops.name == NULL) {
        ops = (struct store_ops){.name = "firestore", .shared = 1, .close = fs_close,
                                 .schema_version = fs_schema_version, .describe = fs_describe, .begin = fs_begin,
                                 .commit = fs_commit, .rollback = fs_rollback, .in_transaction = fs_in_transaction,
                                 .sync = fs_sync, .checkpoint = fs_checkpoint};
        fs_ops_fill(&ops);
        fs_steps_fill(&ops);
    }
    const char *p = url + strlen(FS_URL_PREFIX), *slash = strchr(p, '/');
    size_t plen = slash ? (size_t)(slash - p) : strlen(p);
    const char *db = slash ? slash + 1 : "(default)";
    if (!valid_part(p, plen) || !valid_part(db, strlen(db)))
        return store_fail(err, STORE_INVALID, "store_open: '%s' is not firestore://PROJECT[/DATABASE]", url);
    fs_store *f = xcalloc(1, sizeof *f);
    f->base.ops = &ops;
    f->base.opts = *opts;
    f->project = xstrndup(p, plen);
    f->database = xstrdup(db);
    f->reads = json_object();
    f->writes = json_object();
    f->cache = json_object();
    f->conds = json_array();
    f->endpoint = util_api_endpoint(getenv("SLUICE_FIRESTORE_URL"), FS_DEFAULT_URL, getenv("FIRESTORE_EMULATOR_HOST"),
                                    &f->no_auth);
    f->root = util_printf("projects/%s/databases/%s/documents", f->project, f->database);
    f->api = util_printf("%s/v1/%s", f->endpoint, f->root);
    hc_options ho = {.total_timeout_ms = 30000};
    f->hc = hc_new(&ho);
    int rc = STORE_OK;
    if (f->hc == NULL) {
        rc = store_fail(err, STORE_IO, "store_open: cannot create the HTTP client");
        goto fail;
    }
    if (!f->no_auth) {
        ga_options go = {.scope = FS_SCOPE};
        char *gerr = NULL;
        f->ga = ga_new_adc(f->hc, &go, &gerr);
        if (f->ga == NULL) {
            rc = store_fail(err, STORE_IO, "firestore credentials: %s", gerr ? gerr : "?");
            free(gerr);
            goto fail;
        }
    }
    if ((rc = fs_schema(f, err)) != STORE_OK) goto fail;
    *out = &f->base;
    return STORE_OK;
fail:
    fs_close(&f->base);
    return rc;
}
