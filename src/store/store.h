/* store: the durable state of Sluice (scripts, runs, steps, the event inbox) behind a backend-neutral API.
 * Uses: a backend chosen by store_open (store_sqlite*.c, store_postgres*.c or store_firestore*.c), jansson to validate
 * JSON text.
 * Must not: know about Lua, HTTP or Dataflow beyond the names and strings it is handed to keep.
 *
 * Threading: a handle is used by one thread at a time. Several handles (threads or processes) may open the
 * same store; writers serialise on the backend's lock and wait up to the busy timeout.
 *
 * Errors: every function returns STORE_OK (0) or a negative store_rc. Whenever the return is negative and
 * `err` is non-NULL, *err receives a malloc'd message that the caller frees; on STORE_OK *err is untouched.
 *
 * Memory: structs filled by a getter own every string they point to; release them with the matching
 * *_free function (which also zeroes the struct). A failed getter leaves its struct or list zeroed, so
 * freeing it is optional and harmless. Structs passed IN are borrowed for the call only.
 * Times are unix milliseconds; 0 means "not set" (stored as NULL). */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

typedef enum {
    STORE_OK = 0,
    STORE_NOTFOUND = -1,  /* no such row */
    STORE_EXISTS = -2,    /* a row with this key (id, request_key, job_name...) already exists */
    STORE_DUPLICATE = -3, /* store_inbox_put: the event was seen before (not an error for the caller) */
    STORE_CONFLICT = -4,  /* compare-and-set failed: the row is not in the expected state/attempt */
    STORE_INVALID = -5,   /* bad argument: NULL where required, unknown state, JSON that does not parse */
    STORE_BUSY = -6,      /* the store stayed locked by another handle longer than the busy timeout */
    STORE_IO = -7,        /* the backend failed (disk full, I/O error, SQL error, misuse) */
    STORE_CORRUPT = -8,   /* the file is not a store, is damaged, or holds values this binary cannot read */
    STORE_SCHEMA = -9,    /* the schema is newer than this binary, or a migration failed */
    STORE_NOMEM = -10,
} store_rc;

/* Static name of a store_rc ("ok", "not found", ...). */
const char *store_strerror(int rc);

typedef enum {
    STORE_SYNC_FULL = 0, /* default: a commit is on disk when it returns, even across power loss */
    STORE_SYNC_NORMAL,   /* survives a process crash; the last commits may be lost on power loss */
} store_sync;

typedef struct {
    store_sync synchronous;
    int busy_timeout_ms;       /* how long a writer waits for another handle's lock; 0 = default 5000 */
    int schema_version;        /* migrate only up to this version; 0 = latest (tests and staged rollouts) */
    int64_t (*clock_ms)(void *arg); /* time source for updated_at etc.; NULL = CLOCK_REALTIME */
    void *clock_arg;
    int pooled; /* PostgreSQL behind a transaction-pooling proxy (PgBouncer's pool_mode = transaction): keep no
                 * session state: unnamed statements instead of prepared ones, settings with SET LOCAL in each
                 * transaction (statements outside one wait for locks as the server's default says) */
    /* SQLite: commits on this handle never checkpoint the write-ahead log (SQLite's auto-checkpoint runs in the
     * committing connection, after the commit but before it returns, so a commit that crosses the threshold pays
     * for copying the log into the database and syncing it). Some other handle must then call store_checkpoint
     * (serve runs a checkpointer thread, checkpointer.h). Ignored by PostgreSQL. */
    int manual_checkpoint;
    /* SQLite: > 0: a handle that finds the write lock taken tries again every this many microseconds (until
     * busy_timeout_ms) instead of with SQLite's back-off, whose sleeps grow 1, 2, 5, 10 ... 100 ms, so a wait for
     * a lock released after 8.1 ms lasted 18 ms. For the handle that acknowledges events. Ignored by PostgreSQL. */
    int busy_poll_us;
    /* Reading commands (`sluice status --store`): open only a store that exists. A missing SQLite file, an empty
     * one, or a PostgreSQL database without a sluice schema is STORE_NOTFOUND, and nothing is created. */
    int must_exist;
} store_options;

/* Opens (creating if absent, unless opts->must_exist) the store named by `url`. Which backend, by this rule:
 *   - "postgres://..." or "postgresql://..." (a libpq URL), or libpq "keyword=value ..." text whose first
 *     word before '=' is a libpq keyword ("host=/cloudsql/P:R:I dbname=sluice", "service=sluice"): PostgreSQL,
 *     through libpq as is, so the PG* environment variables, ~/.pg_service.conf and ~/.pgpass apply;
 *   - "firestore://PROJECT[/DATABASE]" (database "(default)" when absent): Firestore in Native mode over its REST
 *     API, with Application Default Credentials (scope datastore); $FIRESTORE_EMULATOR_HOST (host:port) means
 *     Google's emulator: plain HTTP, no credentials (store_firestore.c);
 *   - "sqlite:PATH" or any other text: the SQLite file PATH (so a file literally named "host=x" is
 *     "./host=x" or "sqlite:host=x"); any other "scheme://" is STORE_INVALID.
 * A new SQLite file (and its -wal and -shm files, which SQLite creates with the database's permissions) is
 * readable by its owner only (0600, less what the umask removes).
 * Applies pending schema migrations, each in its own transaction (PostgreSQL: under an advisory lock).
 * `opts` may be NULL (defaults). On success *out is a handle the caller releases with store_close. Fails with
 * STORE_SCHEMA when the store's schema is newer than this binary, STORE_CORRUPT when it is not a store,
 * STORE_IO when the file or the server cannot be reached (the message is SQLite's or libpq's).
 * PostgreSQL: busy_timeout_ms is the session's lock_timeout (a write waits that long for a row another
 * handle holds, then STORE_BUSY), and every commit is durable whatever `synchronous` says. */
int store_open(const char *url, const store_options *opts, store **out, char **err);
void store_close(store *s);
/* `url` as it may be shown to people (logs, error messages): a PostgreSQL URL or conninfo with its password and
 * other secret parameters (libpq's: password, sslpassword) replaced by "***"; anything else as given. New
 * string, caller frees. Errors from store_open and store_listen are already
 * free of these secrets (libpq's messages can echo parts of the connection string; they are masked too). */
char *store_url_redacted(const char *url);
/* Firestore documents this handle read, wrote and deleted since it was opened (what Firestore bills; a query that
 * finds nothing counts one read). STORE_INVALID on another backend. Any pointer may be NULL. */
int store_firestore_counts(store *s, int64_t *reads, int64_t *writes, int64_t *deletes);
/* "sqlite", "postgres" or "firestore" (static). */
const char *store_backend_name(const store *s);
/* The schema version of the open store (after migrations); the newest this binary knows is below. */
int store_schema_version(store *s);
int store_schema_latest(void);
/* The settings the backend really runs with, as a JSON object (for health checks and tests), e.g.
 * {"backend":"sqlite","schema_version":3,"journal_mode":"wal","synchronous":"full","foreign_keys":true,
 *  "busy_timeout_ms":5000}, or {"backend":"postgres","schema_version":5,"synchronous_commit":"on",
 *  "busy_timeout_ms":5000,"isolation":"read committed","database":"sluice","schema":"public",
 *  "server_version":"15.20"}. *json is malloc'd; caller frees. */
int store_describe(store *s, char **json, char **err);

/* Explicit transactions group several calls atomically (the SQLite backend uses BEGIN IMMEDIATE, so the
 * write lock is taken at begin and later calls cannot fail with BUSY; PostgreSQL's BEGIN locks nothing,
 * rows are locked as they are written, so a write inside may wait up to busy_timeout_ms and fail with BUSY,
 * and the transaction stays usable). Calls made outside a transaction are atomic on their own. Nesting is
 * STORE_INVALID. A failed commit rolls back. */
int store_begin(store *s, char **err);
int store_commit(store *s, char **err);
int store_rollback(store *s, char **err);
int store_in_transaction(store *s);
/* Makes every transaction committed so far durable across power loss, now (one sync of the log). A no-op
 * with STORE_SYNC_FULL, where each commit already is, and with PostgreSQL, where every commit is. This lets a caller run with STORE_SYNC_NORMAL and pay
 * for a sync only where durability matters: the engine calls it before sending a launch whose intent the
 * last commit recorded. In WAL mode the durable state is always a prefix of the commit order, so this also
 * covers every earlier NORMAL commit. */
int store_flush(store *s, char **err);

typedef enum {
    STORE_CHECKPOINT_PASSIVE = 0, /* copy what no reader still needs; never waits for or blocks anyone */
    STORE_CHECKPOINT_RESTART,     /* copy everything, waiting (busy timeout) for the writer and the readers, so
                                   * the next commit starts the log from its beginning; blocks writers meanwhile */
} store_checkpoint_mode;

typedef struct {
    int64_t log_frames;        /* pages in the write-ahead log after the checkpoint */
    int64_t checkpointed;      /* of those, pages already in the database file */
} store_checkpoint_result;

/* Checkpoints the SQLite write-ahead log from this handle (which must not be in a transaction); `out` may be
 * NULL. STORE_BUSY when a RESTART could not get the locks within the busy timeout (a PASSIVE one that could
 * not copy everything is STORE_OK with checkpointed < log_frames). PostgreSQL: nothing to do, STORE_OK, zeros. */
int store_checkpoint(store *s, store_checkpoint_mode mode, store_checkpoint_result *out, char **err);

/* ---- scripts: workflow source by content hash ---- */
typedef struct {
    char *hash; /* sha256 hex, 64 lowercase hex digits, computed by the caller */
    char *workflow;
    char *source;
    int64_t created_at;
} store_script;

/* Idempotent: putting the same hash and source again is STORE_OK. The same hash with a different
 * source is STORE_CONFLICT (the caller's hash is wrong). */
int store_script_put(store *s, const char *hash, const char *workflow, const char *source, char **err);
int store_script_get(store *s, const char *hash, store_script *out, char **err);
void store_script_free(store_script *sc);

/* ---- runs ---- */
typedef enum {
    STORE_RUN_PENDING = 0,
    STORE_RUN_RUNNING,
    STORE_RUN_SUCCEEDED,
    STORE_RUN_FAILED,
    STORE_RUN_CANCELLING,
    STORE_RUN_CANCELLED,
    STORE_RUN_STATE_COUNT
} store_run_state;
#define STORE_RUN_ANY (-1) /* "any state" in filters and compare-and-set */

typedef struct {
    char *id;
    char *workflow;
    char *script_hash; /* the workflow version; must name a stored script */
    char *params_json; /* a JSON object */
    store_run_state state;
    char *origin;      /* trigger: "api", "schedule", "cli", ... (may be NULL) */
    char *request_key; /* idempotency key of the start request, unique when set (may be NULL) */
    char *error;       /* may be NULL */
    int64_t created_at, updated_at, finished_at;
} store_run;

typedef struct {
    store_run *items;
    size_t count;
    char *next_cursor; /* pass to the next store_run_list; NULL when there is no further page */
} store_run_list;

typedef struct {
    int state;            /* a store_run_state or STORE_RUN_ANY */
    const char *workflow; /* NULL = any */
    int limit;            /* 1..1000; 0 = 100 */
    const char *cursor;   /* NULL = from the newest */
} store_run_filter;

const char *store_run_state_name(store_run_state st);
int store_run_state_parse(const char *name, store_run_state *out);
int store_run_state_terminal(store_run_state st);

/* Inserts `run` (borrowed). created_at/updated_at 0 = now. STORE_EXISTS when the id or the request_key is
 * taken: look the earlier run up with store_run_get_by_request_key. STORE_INVALID when params_json is not
 * an object or the script is not stored. */
int store_run_create(store *s, const store_run *run, char **err);
int store_run_get(store *s, const char *id, store_run *out, char **err);
int store_run_get_by_request_key(store *s, const char *request_key, store_run *out, char **err);
/* Newest first (created_at, then id, descending). Free `out` with store_run_list_free. */
int store_run_list_page(store *s, const store_run_filter *f, store_run_list *out, char **err);
/* Compare-and-set: moves the run from `expected` (or STORE_RUN_ANY) to `next`, sets updated_at, sets
 * finished_at when `next` is terminal, and sets error (NULL keeps it). STORE_NOTFOUND or STORE_CONFLICT. */
int store_run_set_state(store *s, const char *id, int expected, store_run_state next, const char *error,
                        char **err);
/* A redrive: from `expected` (a terminal state) back to running, clearing error and finished_at; script_hash and
 * params_json (each NULL to keep) move the run to another version or change its params. STORE_CONFLICT when
 * the run is not in `expected` (or does not exist); STORE_INVALID for params that are not an object. */
int store_run_redrive(store *s, const char *id, store_run_state expected, const char *script_hash,
                      const char *params_json, char **err);
/* ---- several engines on one store ----
 * Every process on a shared store (the PostgreSQL backend) runs an engine. They split the work row by row: a
 * transaction's store_step_due and store_inbox_fetch lock the rows they return and skip rows another transaction
 * holds; a step handed to an API call is leased by moving its next_check_at past the call's expected answer; and
 * whatever changes several steps of a run (finishing a step and starting what follows, a join, a cancel) first
 * locks the run (store_run_lock). Duties that must run once (retention) go to the holder of a lease.
 * 1 when several processes may run engines on this store (PostgreSQL, Firestore), 0 when one process owns it (SQLite).
 * Firestore cannot lock rows: its transactions see every due row and the second of two conflicting commits fails with
 * STORE_BUSY, applying nothing (store_firestore.c). */
int store_shared(store *s);
/* Inside a transaction: locks the run until the transaction ends, so no other engine changes its steps
 * meanwhile (two replicas finishing a join's two predecessors at once would each miss the other's). wait = 0:
 * *got = 0 at once when another transaction holds the lock; wait = 1: waits for it, up to busy_timeout_ms, then
 * STORE_BUSY. SQLite: the transaction's write lock already excludes every other writer, so *got = 1.
 * STORE_NOTFOUND when there is no such run, STORE_INVALID outside a transaction. */
int store_run_lock(store *s, const char *run_id, int wait, int *got, char **err);

/* A named lease for a singleton duty: at most one holder at a time, for ttl_ms at most, without a session lock
 * (it works through connection poolers). Acquire takes the lease when it is free or expired, renews it when
 * `holder` has it, and else reports who does. Time is the store's (PostgreSQL: the server's clock, so replicas'
 * clocks need not agree; SQLite: store_options.clock_ms). `term` counts holders: it grows by one each time the
 * lease changes hands, so work stamped with a term can be told apart from a successor's. A holder must treat the
 * lease as lost ttl_ms after it *sent* the acquire that granted it, whatever the store says later. */
typedef struct {
    int held;              /* 1: `holder` holds it now */
    int64_t term;          /* the current holder's term (0: never held) */
    char *holder;          /* the current holder (NULL when nobody ever held it); malloc'd */
    int64_t expires_in_ms; /* how long the current holding lasts from now (<= 0: expired) */
} store_lease;
int store_lease_acquire(store *s, const char *name, const char *holder, int64_t ttl_ms, store_lease *out,
                        char **err);
/* Gives the lease up at once (a clean shutdown), if `holder` has it; STORE_OK either way. */
int store_lease_release(store *s, const char *name, const char *holder, char **err);
void store_lease_free(store_lease *l);
/* Inbox notifications, so an engine learns at once of events another process recorded (another replica's
 * ingress on a shared PostgreSQL store). store_listen opens a connection of its own that listens; it returns NULL
 * for a store without notifications (SQLite: one process writes and runs the engine) or on failure (*err set).
 * store_listen_wait waits up to timeout_ms: 1 when events were recorded meanwhile, 0 on time-out, -1 when the
 * connection broke (open a new listener; meanwhile poll). */
typedef struct store_listener store_listener;
store_listener *store_listen(const char *url, char **err);
int store_listen_wait(store_listener *l, int timeout_ms);
void store_listen_free(store_listener *l);

/* Retention: deletes at most `limit` (1..10000) finished runs (succeeded, failed, cancelled) with finished_at <
 * before, with their steps; *deleted (may be NULL) = how many. Call again until fewer than `limit` go. */
int store_run_prune(store *s, int64_t before, int limit, int64_t *deleted, char **err);
/* counts[st] = number of runs in state st. */
int store_run_count_by_state(store *s, int64_t counts[STORE_RUN_STATE_COUNT], char **err);
void store_run_free(store_run *r);
void store_run_list_free(store_run_list *l);

/* The runs page of the web UI: store_run_list_page's filter and paging (the same order and cursors) plus two
 * conditions, both optional. A backend must keep them fast with 100,000 runs: an index of failed steps by run
 * (SQLite: steps_failed, partial) and the job-name index. */
typedef struct {
    store_run_filter base; /* state, workflow, limit, cursor as for store_run_list_page */
    int failed_step;       /* 1: only runs with at least one step in state failed (a recovered run has one) */
    /* NULL or "": any run. Else runs whose id starts with it, or that have a step whose job_name starts with it
     * or whose job_id equals it. Matching is exact-case (ids and job names are lowercase). */
    const char *search;
} store_run_query;
/* Newest first, like store_run_list_page (which it equals when failed_step is 0 and search empty). Free `out`
 * with store_run_list_free. STORE_INVALID for a bad cursor or limit, or a backend without it. */
int store_run_find_page(store *s, const store_run_query *q, store_run_list *out, char **err);

/* ---- steps: one row per run x step name ---- */
typedef enum {
    STORE_STEP_PENDING = 0,
    STORE_STEP_WAITING,
    STORE_STEP_LAUNCHING, /* the launch intent is recorded; the request may or may not have been sent */
    STORE_STEP_RUNNING,   /* the job id is known */
    STORE_STEP_SUCCEEDED,
    STORE_STEP_FAILED,
    STORE_STEP_CANCELLING,
    STORE_STEP_CANCELLED,
    STORE_STEP_SKIPPED,
    STORE_STEP_STATE_COUNT
} store_step_state;
#define STORE_STEP_ANY (-1)
#define STORE_ATTEMPT_ANY (-1)

typedef struct {
    char *run_id;
    char *name;
    store_step_state state;
    int attempt; /* starts at 1 */
    char *job_name, *job_id, *project, *region; /* NULL until known */
    char *request_json; /* the launch intent: the full request, recorded before it is sent */
    char *job_state;    /* last Dataflow state seen, e.g. "JOB_STATE_RUNNING" */
    char *result_json;  /* any JSON value */
    char *error;
    int64_t started_at, finished_at, next_check_at, deadline_at, updated_at;
    int check_failures;
    int64_t hint_at; /* when the engine first had reason to expect the job's end (0 = no such reason) */
    char *failure_cause; /* a failed job's cause from Dataflow's job messages (NULL: none fetched) */
    int64_t running_at;  /* when a job state JOB_STATE_RUNNING was first recorded for this attempt (set_job,
                          * set_check); 0 if never: the job was not seen running (it may still have run) */
} store_step;

typedef struct {
    store_step *items;
    size_t count;
} store_step_list;

/* What store_step_record_intent writes. All strings borrowed. */
typedef struct {
    int attempt;              /* the attempt being launched (>= 1) */
    const char *job_name;     /* unique across the store */
    const char *project, *region;
    const char *request_json; /* a JSON object */
    int64_t next_check_at;    /* when the reconciler should first look (0 = now) */
    int64_t deadline_at;      /* step timeout (0 = none) */
} store_intent;

const char *store_step_state_name(store_step_state st);
int store_step_state_parse(const char *name, store_step_state *out);
int store_step_state_terminal(store_step_state st);

/* Inserts a step from `st` (borrowed; run_id and name required, attempt 0 = 1). STORE_EXISTS when the
 * run already has a step of that name or job_name is taken; STORE_INVALID when the run does not exist. */
int store_step_insert(store *s, const store_step *st, char **err);
int store_step_get(store *s, const char *run_id, const char *name, store_step *out, char **err);
/* All steps of a run in insertion order. */
int store_step_list_run(store *s, const char *run_id, store_step_list *out, char **err);
int store_step_find_by_job_name(store *s, const char *job_name, store_step *out, char **err);
int store_step_find_by_job_id(store *s, const char *job_id, store_step *out, char **err);

/* The launch intent, atomically: if the step is in `expected_state` (or STORE_STEP_ANY) with
 * `expected_attempt` (or STORE_ATTEMPT_ANY), sets state launching, attempt, job_name, project, region,
 * request, started_at = now, next_check_at, deadline_at, and clears job_id, job_state, result, error,
 * finished_at and check_failures. STORE_CONFLICT when the step moved, STORE_EXISTS when job_name is
 * taken, STORE_NOTFOUND when there is no such step. */
int store_step_record_intent(store *s, const char *run_id, const char *name, int expected_state,
                             int expected_attempt, const store_intent *in, char **err);
/* The launch answered: from launching with `attempt`, sets job_id, job_state (NULL keeps it), state
 * running and next_check_at. A step cancelled while launching stays cancelling but learns its job id.
 * Only once: STORE_CONFLICT otherwise, STORE_EXISTS when another step holds the job id. */
int store_step_set_job(store *s, const char *run_id, const char *name, int attempt, const char *job_id,
                       const char *job_state, int64_t next_check_at, char **err);
/* Compare-and-set to any state (pending, waiting, skipped, cancelling...) without touching other fields,
 * except finished_at when `next` is terminal. */
int store_step_set_state(store *s, const char *run_id, const char *name, int expected_state,
                         int expected_attempt, store_step_state next, char **err);
/* Terminal transition: from a non-terminal state with `attempt` (or STORE_ATTEMPT_ANY) to `final`
 * (succeeded, failed, cancelled or skipped), with job_state, result_json and error (each may be NULL to
 * keep). A second finish is STORE_CONFLICT, so a duplicate event cannot finish a step twice. */
int store_step_finish(store *s, const char *run_id, const char *name, int attempt, store_step_state final,
                      const char *job_state, const char *result_json, const char *error, char **err);
/* After a reconciler check: sets next_check_at, check_failures, and job_state (NULL keeps it), if the
 * step is still at `attempt` (STORE_CONFLICT otherwise). */
int store_step_set_check(store *s, const char *run_id, const char *name, int attempt, int64_t next_check_at,
                         int check_failures, const char *job_state, char **err);
/* A launching step's claim, handed on: if the step is launching (or cancelling) at `attempt` with no job id and its
 * next_check_at is still `claimed` (the value this engine wrote when it claimed the step: nobody took the step
 * over or brought its check forward since), sets next_check_at and check_failures. STORE_CONFLICT otherwise.
 * What a launch is decided on: an engine whose claim passed on must not send one. */
int store_step_reclaim(store *s, const char *run_id, const char *name, int attempt, int64_t claimed,
                       int64_t next_check_at, int check_failures, char **err);
/* Steps that are due: pending (to start), launching, running or cancelling (to check) with
 * next_check_at <= now, earliest first, at most `limit` (1..10000). Cost is proportional to the rows returned
 * (a partial index holds only these steps). Inside a transaction on a shared store the rows returned stay locked
 * until it ends and rows locked by other transactions are skipped (FOR UPDATE SKIP LOCKED). */
int store_step_due(store *s, int64_t now, int limit, store_step_list *out, char **err);
/* A reason to expect the in-flight step's end soon (an end event, a stop request): sets hint_at unless an
 * earlier hint is kept, and brings next_check_at forward to at most `next_check_at`. Only for a launching,
 * running or cancelling step at `attempt` (STORE_CONFLICT otherwise). A new attempt clears the hint. */
int store_step_set_hint(store *s, const char *run_id, const char *name, int attempt, int64_t hint_at,
                        int64_t next_check_at, char **err);
/* Records a failed attempt's cause (Dataflow's job messages), if the step is still at `attempt`; a new launch
 * intent clears it. STORE_CONFLICT when the step moved on, STORE_NOTFOUND when there is no such step. */
int store_step_set_cause(store *s, const char *run_id, const char *name, int attempt, const char *cause,
                         char **err);
/* A step in flight (launching, running or cancelling at `attempt`): sets its `error` to `note` (NULL clears it),
 * why the last Dataflow call about it failed while it is retried ("retrying: connection refused (3 failed)").
 * So for a step in flight, `error` is such a note (the engine clears it when a call succeeds); for a finished
 * step, why it failed. STORE_CONFLICT when the step moved on or has finished. */
int store_step_set_note(store *s, const char *run_id, const char *name, int attempt, const char *note, char **err);
/* The earliest next_check_at of any step the engine must act on (pending or in flight), or INT64_MAX when
 * there is none: how long an idle engine may sleep. */
int store_step_next_due(store *s, int64_t *at, char **err);
void store_step_free(store_step *st);
void store_step_list_free(store_step_list *l);

/* ---- attempts: one row per (run, step, attempt) (store_attempts.c) ----
 * The history of a step's launches: a step row holds only its current attempt, so every change of that attempt is
 * copied into its own row, in the same transaction as the step change (store.c does so after each step write;
 * one is opened when the caller has none). Read back by run. A row of a finished attempt is never changed again
 * except by the writes below that name it. A backend without it keeps no attempts (the list is empty). */
typedef struct {
    char *run_id, *step;
    int attempt;
    char *job_name, *job_id, *project, *region; /* NULL until known */
    char *request_json;    /* the launch request recorded with the intent */
    store_step_state state; /* launching, running, cancelling while current; then succeeded, failed, cancelled or
                             * skipped (an attempt that was retried is failed) */
    char *job_state;       /* the last Dataflow state seen for its job */
    char *error;           /* why it failed (NULL: it did not, or no reason is known) */
    char *failure_cause;   /* Dataflow's cause for a failed job */
    int64_t launched_at;   /* the launch intent */
    int64_t running_at;    /* when its job was first known running (any source: an event, a check, the job's own
                            * times); 0 = never seen running */
    int64_t ended_at;      /* 0 while current */
    int64_t updated_at;
} store_attempt;

typedef struct {
    store_attempt *items;
    size_t count;
} store_attempt_list;

/* Copies the step's current attempt (its job, states, times, error, cause) into that attempt's row, creating it;
 * nothing when the step has no launched attempt. A step back to pending or waiting (a retry waiting out its
 * backoff, a redrive) ends its attempt: failed, unless it had ended otherwise. STORE_NOTFOUND: no such step. */
int store_attempt_capture(store *s, const char *run_id, const char *step, char **err);
/* Records the first time the attempt's job was known running (kept if already set; `at` 0 = now). STORE_NOTFOUND
 * when the attempt has no row. */
int store_attempt_set_running(store *s, const char *run_id, const char *step, int attempt, int64_t at, char **err);
/* An attempt that ended without the step ending (a retry follows): sets its state (terminal) and error (NULL keeps
 * it), and ended_at = now unless it is set already. STORE_NOTFOUND when the attempt has no row. */
int store_attempt_end(store *s, const char *run_id, const char *step, int attempt, store_step_state state,
                      const char *error, char **err);
/* Records a failed attempt's cause on its row (store_step_set_cause does, also once the step has moved on).
 * STORE_NOTFOUND when the attempt has no row. */
int store_attempt_set_cause(store *s, const char *run_id, const char *step, int attempt, const char *cause,
                            char **err);
int store_attempt_get(store *s, const char *run_id, const char *step, int attempt, store_attempt *out, char **err);
/* Every attempt of a run, by step then attempt. */
int store_attempt_list_run(store *s, const char *run_id, store_attempt_list *out, char **err);
void store_attempt_free(store_attempt *a);
void store_attempt_list_free(store_attempt_list *l);

/* ---- event inbox with dedupe ---- */
typedef enum { STORE_SRC_PUSH = 0, STORE_SRC_EVENTARC, STORE_SRC_POLL, STORE_SRC_COUNT } store_event_source;

typedef struct {
    int64_t id;         /* assigned by store_inbox_put, increasing in arrival order */
    char *message_id;   /* Pub/Sub messageId or CloudEvents "source id" (may be NULL) */
    store_event_source source;
    char *job_id;       /* with state, the identity key (may be NULL: then only message_id dedupes) */
    char *job_name;
    char *state;        /* the Dataflow job state the event reports */
    char *payload_json; /* any JSON value (may be NULL) */
    int64_t received_at, processed_at;
} store_event;

typedef struct {
    store_event *items;
    size_t count;
} store_event_list;

const char *store_event_source_name(store_event_source src);

/* Records `ev` (borrowed; received_at 0 = now) durably. Returns STORE_OK when it is new, with *id the
 * new event's id, or STORE_DUPLICATE when its message id OR its (job_id, state) was seen before, with
 * *id the earlier event's id. Both keys of a new event are kept until store_inbox_prune removes it.
 * `id` may be NULL. */
int store_inbox_put(store *s, const store_event *ev, int64_t *id, char **err);
/* Unprocessed events, oldest first, at most `limit` (1..10000). Inside a transaction on a shared store, locked
 * and skipped like store_step_due's rows, so two engines do not consume one event. */
int store_inbox_fetch(store *s, int limit, store_event_list *out, char **err);
/* Sets processed_at (0 = now). STORE_NOTFOUND if no such event; marking twice is STORE_OK. */
int store_inbox_mark_processed(store *s, int64_t id, int64_t processed_at, char **err);
/* Deletes processed events with processed_at < before; *deleted (may be NULL) = how many. Their dedupe
 * keys go with them, so the dedupe window is the retention. */
int store_inbox_prune(store *s, int64_t before, int64_t *deleted, char **err);
void store_event_free(store_event *ev);
void store_event_list_free(store_event_list *l);

/* ---- run notifications: the outbox (store_outbox.c) ----
 * One row per event and sink: a run transition's CloudEvent (its id stable for every delivery attempt) and where it
 * goes ("webhook:https://..." or "pubsub:projects/P/topics/T"). Written by the engine inside the transaction that
 * makes the transition, so an event exists exactly when its transition committed; delivered at least once by
 * whoever claims it (several processes may: a claim is a lease, like a step's). */
typedef enum { STORE_NOTE_PENDING = 0, STORE_NOTE_DELIVERED, STORE_NOTE_GIVEN_UP, STORE_NOTE_STATE_COUNT } store_note_state;

typedef struct {
    char *id;         /* the CloudEvent id */
    char *sink;
    char *run_id;
    char *type;       /* the transition: "failed", "deadline_missed", ... */
    char *event_json; /* the CloudEvent (a JSON object) */
    store_note_state state;
    int attempts;     /* claims so far (each claim is one delivery attempt) */
    char *last_error; /* the last failed attempt's reason (may be NULL) */
    int64_t created_at, next_attempt_at, updated_at, delivered_at;
} store_note;

typedef struct {
    store_note *items;
    size_t count;
} store_note_list;

const char *store_note_state_name(store_note_state st);
/* Inserts `n` (borrowed: id, sink, run_id, type, event_json required; created_at/next_attempt_at 0 = now) as
 * pending. STORE_DUPLICATE when (id, sink) is there already (not an error: the same event written twice). */
int store_outbox_put(store *s, const store_note *n, char **err);
/* How many distinct events of `type` the run has had: the next event's sequence number is this + 1. */
int store_outbox_count(store *s, const char *run_id, const char *type, int64_t *count, char **err);
/* Claims due rows: pending with next_attempt_at <= now, earliest first, at most `limit` (1..1000). Each claimed
 * row gets attempts + 1 and next_attempt_at = now + lease_ms (so nobody else takes it meanwhile); `out` holds them
 * as claimed. Safe with several processes on a shared store (FOR UPDATE SKIP LOCKED). */
int store_outbox_claim(store *s, int64_t now, int64_t lease_ms, int limit, store_note_list *out, char **err);
/* A claimed attempt's result: if the row is still pending at `attempts` (nobody claimed it again since), moves it
 * to `next` (pending again with next_attempt_at, delivered, or given_up) and records `error` (NULL clears it).
 * STORE_CONFLICT when the row moved on, STORE_NOTFOUND when there is none. */
int store_outbox_finish(store *s, const char *id, const char *sink, int attempts, store_note_state next,
                        int64_t next_attempt_at, const char *error, char **err);
/* Replaces the event of a row no attempt has claimed yet (pending, attempts 0) and sets its next_attempt_at: what
 * the event says can still change before anyone saw it (a failed job's cause, learnt just after the transition).
 * STORE_CONFLICT when the row was claimed or settled, STORE_NOTFOUND when there is none. */
int store_outbox_amend(store *s, const char *id, const char *sink, const char *event_json, int64_t next_attempt_at,
                       char **err);
/* Every row of a run, oldest first. */
int store_outbox_list_run(store *s, const char *run_id, store_note_list *out, char **err);
/* The earliest next_attempt_at of a pending row, or INT64_MAX. */
int store_outbox_next_due(store *s, int64_t *at, char **err);
void store_note_free(store_note *n);
void store_note_list_free(store_note_list *l);

/* ---- deadlines (store_outbox.c) ----
 * A soft deadline of a run (scope "") or of a step (scope = the step's name): armed with a due time, then
 * settled once: "missed" (it passed with the run or step still going; the caller writes the event in the same
 * transaction) or "met". */
typedef struct {
    char *run_id;
    char *scope;
    int64_t due_at;
} store_deadline;

typedef struct {
    store_deadline *items;
    size_t count;
} store_deadline_list;

/* Arms the deadline, or re-arms one that is armed or met with the new due time; one already missed stays missed
 * (a deadline is missed once). */
int store_deadline_arm(store *s, const char *run_id, const char *scope, int64_t due_at, char **err);
/* Armed deadlines with due_at <= now, earliest first, at most `limit` (1..1000); locked and skipped like
 * store_step_due's rows inside a transaction on a shared store. */
int store_deadline_due(store *s, int64_t now, int limit, store_deadline_list *out, char **err);
/* From armed to missed (missed = 1) or met (0). STORE_CONFLICT when it is not armed. */
int store_deadline_settle(store *s, const char *run_id, const char *scope, int missed, char **err);
/* The earliest due_at of an armed deadline, or INT64_MAX. */
int store_deadline_next_due(store *s, int64_t *at, char **err);
void store_deadline_list_free(store_deadline_list *l);

/* ---- capacity: job pools and steps waiting for them (store_sched.c) ----
 * A pool is a project and region with at most N Dataflow jobs at once (serve --max-active-jobs); a step holds a slot
 * while launching, running or cancelling. A step that may not launch now (the pool is full, or Dataflow refused the
 * launch for quota) goes back to pending with a wait row, and the end of a job wakes the oldest waiters. */
/* Inside a transaction: takes the pool's lock until the transaction ends (PostgreSQL: a row of job_pools; SQLite's
 * write lock already is one), then counts the steps holding its slots into *active. STORE_INVALID outside one. */
int store_pool_active(store *s, const char *project, const char *region, int64_t *active, char **err);
/* The step waits for capacity in project/region: if it is in from_state at `attempt` (pending: its pool is full;
 * launching with no job id: a launch refused for quota created nothing), it becomes pending with next_check_at (its
 * fallback time) and error = note; a launching step forgets its intent, so the same attempt (the same job name) is
 * launched again. The wait is recorded with the time of the step's first wait. STORE_CONFLICT when the step moved.
 * A wake (store_pool_wake) moves only a step still parked as this left it, never one an engine claimed since. */
int store_step_wait_capacity(store *s, const char *run_id, const char *name, int from_state, int attempt,
                             const char *project, const char *region, int64_t next_check_at, const char *note,
                             char **err);
/* When the step first waited (*since; 0 when it does not wait). */
int store_step_wait_since(store *s, const char *run_id, const char *name, int64_t *since, char **err);
/* A slot of project/region freed: up to `n` waiting pending steps, oldest wait first, become due now (their
 * next_check_at is their first wait's time). *woken (may be NULL) = how many. */
int store_pool_wake(store *s, const char *project, const char *region, int n, int *woken, char **err);
/* The step's wait is over (its launch was answered): forgets it. STORE_OK whether or not it waited. */
int store_step_wait_clear(store *s, const char *run_id, const char *name, char **err);
/* A workflow's max_active_runs: inside a transaction, takes the workflow's lock until it ends (as
 * store_pool_active), then counts its runs that hold a slot (running, cancelling) into *active. Runs beyond the
 * limit are created pending (queued) and started in order of creation. */
int store_run_slots(store *s, const char *workflow, int64_t *active, char **err);
/* The ids of the workflow's pending (queued) runs, oldest first, at most `limit` (1..10000): *ids is a malloc'd
 * array of *n malloc'd strings (caller frees each and the array). */
int store_run_queued(store *s, const char *workflow, int limit, char ***ids, size_t *n, char **err);
/* A run's logical time and data interval (unix ms), written once with the run (a scheduled run or a backfill's);
 * a second put keeps the first. get: STORE_NOTFOUND (without a message) for a run that has none. */
int store_run_times_put(store *s, const char *run_id, int64_t logical, int64_t start, int64_t end, char **err);
int store_run_times_get(store *s, const char *run_id, int64_t *logical, int64_t *start, int64_t *end, char **err);
/* A schedule's progress: the schedule times of `workflow` up to *mark (unix ms) are handled. The first call for a
 * workflow records `seen` (schedules start from when they are first seen); every call moves the mark to at least
 * `handled` (0: leaves it) and returns it. */
int store_schedule_mark(store *s, const char *workflow, int64_t seen, int64_t handled, int64_t *mark, char **err);
/* The workflow's runs that are running or cancelling (*active) and pending, queued (*queued). */
int store_run_count_active(store *s, const char *workflow, int64_t *active, int64_t *queued, char **err);
/* Backfills (backfill.c): one JSON document per backfill id, with its state ("running", "done", "cancelled").
 * put inserts or replaces; get: *state and *doc malloc'd (caller frees), STORE_NOTFOUND when none; list: the ids,
 * newest first (only_running: those still starting runs), as store_run_queued's. */
int store_backfill_put(store *s, const char *id, const char *workflow, const char *state, const char *doc, char **err);
int store_backfill_get(store *s, const char *id, char **state, char **doc, char **err);
int store_backfill_list(store *s, int only_running, int limit, char ***ids, size_t *n, char **err);
/* counts[st] = the workflow's runs in state st that `origin` started. */
int store_run_count_origin(store *s, const char *workflow, const char *origin, int64_t counts[STORE_RUN_STATE_COUNT],
                           char **err);

#endif
