/* store_backend: the contract between the store front end (store.c) and a backend (store_sqlite*.c,
 * store_postgres*.c, store_firestore*.c).
 * Uses: store.h. Must not: be included by anything outside the store modules.
 * The front end validates arguments (non-NULL ids, state ranges, JSON text) before dispatching, so a
 * backend may rely on them; a backend maps its own failures to store_rc with a message. */
#ifndef SLUICE_STORE_BACKEND_H
#define SLUICE_STORE_BACKEND_H
#include <stdarg.h>

#include "store.h"

/* Which unique column store_step_find looks a step up by. */
typedef enum { STORE_KEY_JOB_NAME = 0, STORE_KEY_JOB_ID } store_step_key;

struct store_ops {
    const char *name;
    int shared; /* several processes may run engines on one store (store_shared) */
    void (*close)(store *s);
    int (*schema_version)(store *s);
    int (*describe)(store *s, char **json, char **err);
    int (*begin)(store *s, char **err);
    int (*commit)(store *s, char **err);
    int (*rollback)(store *s, char **err);
    int (*in_transaction)(store *s);
    int (*sync)(store *s, char **err);
    int (*checkpoint)(store *s, store_checkpoint_mode mode, store_checkpoint_result *out, char **err);

    int (*script_put)(store *s, const char *hash, const char *workflow, const char *source, char **err);
    int (*script_get)(store *s, const char *hash, store_script *out, char **err);

    int (*run_create)(store *s, const store_run *run, char **err);
    int (*run_get)(store *s, const char *id, int by_request_key, store_run *out, char **err);
    int (*run_list_page)(store *s, const store_run_filter *f, store_run_list *out, char **err);
    int (*run_set_state)(store *s, const char *id, int expected, store_run_state next, const char *error,
                         char **err);
    int (*run_count_by_state)(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err);

    int (*step_insert)(store *s, const store_step *st, char **err);
    int (*step_get)(store *s, const char *run_id, const char *name, store_step *out, char **err);
    int (*step_list_run)(store *s, const char *run_id, store_step_list *out, char **err);
    int (*step_find)(store *s, store_step_key key, const char *value, store_step *out, char **err);
    int (*step_record_intent)(store *s, const char *run_id, const char *name, int expected_state,
                              int expected_attempt, const store_intent *in, char **err);
    int (*step_set_job)(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                        const char *job_state, int64_t next_check_at, char **err);
    int (*step_set_state)(store *s, const char *run_id, const char *name, int expected_state,
                          int expected_attempt, store_step_state next, char **err);
    int (*step_finish)(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                       const char *job_state, const char *result_json, const char *error, char **err);
    int (*step_set_check)(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                          int check_failures, const char *job_state, char **err);
    int (*step_reclaim)(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                        int64_t next_check_at, int check_failures, char **err);
    int (*step_due)(store *s, int64_t now, int limit, store_step_list *out, char **err);
    int (*run_lock)(store *s, const char *run_id, int wait, int *got, char **err);
    int (*lease_acquire)(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                         char **err);
    int (*lease_release)(store *s, const char *name, const char *holder, char **err);
    int (*run_prune)(store *s, int64_t before, int limit, int64_t *deleted, char **err);
    int (*run_redrive)(store *s, const char *id, store_run_state expected, const char *script_hash,
                       const char *params_json, char **err);
    int (*step_set_hint)(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                         int64_t next_check_at, char **err);
    int (*step_next_due)(store *s, int64_t *at, char **err);
    /* The web UI's (store.h); may be NULL in a backend that lacks them (store.c then answers STORE_INVALID). */
    int (*run_find_page)(store *s, const store_run_query *q, store_run_list *out, char **err);
    int (*step_set_cause)(store *s, const char *run_id, const char *name, int attempt, const char *cause, char **err);
    int (*step_set_note)(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err);

    int (*inbox_put)(store *s, const store_event *ev, int64_t *id, char **err);
    int (*inbox_fetch)(store *s, int limit, store_event_list *out, char **err);
    int (*inbox_mark_processed)(store *s, int64_t id, int64_t processed_at, char **err);
    int (*inbox_prune)(store *s, int64_t before, int64_t *deleted, char **err);
};

/* Every backend handle starts with this. */
struct store {
    const struct store_ops *ops;
    store_options opts; /* defaults filled in by store_open */
};

/* Backend constructors. `opts` is complete (defaults applied). */
int store_sqlite_open(const char *path, const store_options *opts, store **out, char **err);
/* `conninfo` is a postgres:// or postgresql:// URL or libpq "keyword=value" text, passed to libpq as is. */
int store_postgres_open(const char *conninfo, const store_options *opts, store **out, char **err);
/* `url` is "firestore://PROJECT[/DATABASE]" (store_firestore.c). */
int store_firestore_open(const char *url, const store_options *opts, store **out, char **err);
int store_firestore_is_url(const char *url);
/* 1 when store_open must hand `url` to the PostgreSQL backend (the rule is in store.h). */
int store_postgres_is_conninfo(const char *url);
store_listener *store_postgres_listen(const char *conninfo, char **err);
/* Masks in *msg (reallocated; may be NULL) every secret of `conninfo` (store_redact.c), and the quoted pieces
 * of it that libpq echoes when it cannot parse the string. */
void store_pg_scrub(const char *conninfo, char **msg);

/* The backend's own connection, for the store modules that copy rows in bulk (store_migrate.c): a sqlite3 *
 * or a PGconn *, borrowed while the handle is open; NULL when the handle is of the other backend. */
void *store_sqlite_native(store *s);
void *store_postgres_native(store *s);
/* A statement of a store module's own SQL (store_sql.c) on a SQLite handle (store_sqlite_native is non-NULL), as a
 * sqlite3_stmt *: prepared on first use and kept until the handle closes (*kept = 1: reset it and clear its
 * bindings after use, never finalize it), or, past the handle's limit of kept texts, a fresh one (*kept = 0: the
 * caller finalizes it). Returns SQLite's code; *out is NULL unless SQLITE_OK. `sql` must be a string constant. */
int store_sqlite_prepare(store *s, const char *sql, void **out, int *kept);
/* The handle itself when it is a Firestore one, else NULL (store_outbox.c dispatches on it). */
void *store_firestore_native(store *s);

/* 1 when the backend keeps step attempts (store_attempts.c): store.c then copies each step write's attempt. */
int store_attempts_kept(store *s);

/* Helpers shared by the store modules. */
int64_t store_now(store *s);
/* Sets *err (if err != NULL) to a formatted, malloc'd message and returns rc. */
int store_fail(char **err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* store_inbox_put's answer for an event seen before as `first`: *id (may be NULL) = first, and STORE_DUPLICATE with
 * a message naming the event. The same words on every backend. */
int store_inbox_duplicate(const store_event *ev, int64_t first, int64_t *id, char **err);
/* Run listings' cursor "created_at:id" (NULL: from the newest, *c_time = INT64_MAX and *c_id = ""). */
int store_run_cursor(const char *cursor, int64_t *c_time, const char **c_id, char **err);
/* A page read with limit + 1 rows: drops the extra row and sets next_cursor from the last one kept; always STORE_OK. */
int store_run_page_trim(store_run_list *out, int limit, char **err);
/* strdup that accepts NULL (NULL for NULL), as xstrdup does. */
char *store_strdup(const char *src);

#endif
