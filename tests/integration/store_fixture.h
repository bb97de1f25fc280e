/* store_fixture: shared by the test_store*.c files: one contract suite, three backends. Each test function is
 * registered three times (STORE_TEST): on a SQLite file in a temp dir, on PostgreSQL (a fresh schema on the
 * server pg_harness.h starts once per executable, in store_group_setup) and on Firestore (a project of its own on
 * the emulator fs_harness.h starts once per executable, at its first Firestore test; without gcloud those tests
 * skip, and fail under CI=true). A fake clock, EXPECT/OK macros that
 * print the store's message on failure, and raw connections to look under the API (raw_sql for SQLite files,
 * raw_query for either backend). A PostgreSQL test whose server cannot start FAILS with the reason; only
 * $SLUICE_TEST_BACKEND=sqlite|postgres (explicit) runs one backend alone.
 * Header-only (static inline) because every tests/integration/test_*.c is its own executable. */
#ifndef SLUICE_STORE_FIXTURE_H
#define SLUICE_STORE_FIXTURE_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs_harness.h"
#include "pg_harness.h"
#include "store.h"
#include "testutil.h"

#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static char *g_err __attribute__((unused)); /* the last call's message; EXPECT frees it before each call */

static inline void expect_rc(int want, int got, const char *call, int line)
{
    if (want != got)
        fail_msg("line %d: %s returned %d (%s), expected %d (%s); message: %s", line, call, got, store_strerror(got),
                 want, store_strerror(want), g_err ? g_err : "(none)");
    if (got != STORE_OK && g_err == NULL) fail_msg("line %d: %s failed without a message", line, call);
}
#define EXPECT(want, call) expect_rc((want), (free(g_err), g_err = NULL, (call)), #call, __LINE__)
#define OK(call) EXPECT(STORE_OK, call)

typedef enum { BK_SQLITE = 0, BK_PG, BK_FS } backend_kind;
static const backend_kind fixture_backends[3] __attribute__((unused)) = {BK_SQLITE, BK_PG, BK_FS};

typedef struct {
    backend_kind bk;
    void (*fn)(void **state); /* Firestore cases: the test, run by fs_case_run unless `skip` */
    int skip;                 /* no emulator here (and not under CI): the test is reported skipped */
    char *dir;  /* a temp dir for the test's files (both backends) */
    char *path; /* SQLite: the store file; PostgreSQL: NULL */
    char *url;  /* what store_open gets: the path, or a conninfo naming the test's own schema */
    store *s;
    int64_t now;
} fixture;

/* The server of this executable's PostgreSQL tests: started once by store_group_setup. */
static pg_harness g_pg __attribute__((unused));
static int g_pg_state __attribute__((unused)); /* 0 not tried, 1 running, -1 failed (g_pg.err says why) */

/* The emulator of this executable's Firestore tests: started once by store_group_setup. */
static fs_harness g_fs __attribute__((unused));
static int g_fs_state __attribute__((unused)); /* 0 not tried, 1 running, -1 failed (g_fs.err says why) */

static inline int is_pg(const fixture *f) { return f->bk == BK_PG; }
static inline int is_fs(const fixture *f) { return f->bk == BK_FS; }

/* Registers `fn` once per backend: "fn/sqlite", "fn/postgres" and "fn/firestore". */
#define STORE_TEST(fn)                                                                                       \
    {#fn "/sqlite", fn, setup, teardown, (void *)&fixture_backends[BK_SQLITE]},                              \
    {#fn "/postgres", fn, setup, teardown, (void *)&fixture_backends[BK_PG]},                                \
    FS_TEST(fn)
/* The SQL backends only: the test looks under the API with SQL. */
#define SQL_TEST(fn)                                                                                         \
    {#fn "/sqlite", fn, setup, teardown, (void *)&fixture_backends[BK_SQLITE]},                              \
    {#fn "/postgres", fn, setup, teardown, (void *)&fixture_backends[BK_PG]}
/* A Firestore case: the test behind fs_case_run, so that without an emulator it is reported skipped (cmocka counts a
 * skip() in a setup function as a setup failure). The initial state starts with the backend, like the others. */
typedef struct {
    backend_kind bk;
    void (*fn)(void **state);
} fixture_case;
#define FS_TEST(fn) {#fn "/firestore", fs_case_run, setup, teardown, (void *)&(fixture_case){BK_FS, fn}}
#define SQLITE_TEST(fn) {#fn "/sqlite", fn, setup, teardown, (void *)&fixture_backends[BK_SQLITE]}
#define PG_TEST(fn) {#fn "/postgres", fn, setup, teardown, (void *)&fixture_backends[BK_PG]}

/* Starts the PostgreSQL server unless $SLUICE_TEST_BACKEND=sqlite; a failure is kept for each PostgreSQL test
 * to report. Applies $SLUICE_TEST_BACKEND as a cmocka filter. */
static inline int store_group_setup(void **state)
{
    (void)state;
    const char *only = getenv("SLUICE_TEST_BACKEND");
    if (only == NULL || strcmp(only, "postgres") == 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        g_pg_state = pg_harness_start(&g_pg) == 0 ? 1 : -1;
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (g_pg_state == 1)
            print_message("PostgreSQL test server up in %lld ms (%s)\n",
                          (long long)((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000), g_pg.dir);
        else
            print_error("cannot start the PostgreSQL test server: %s\n", g_pg.err);
    }
    return 0;
}

static inline int store_group_teardown(void **state)
{
    (void)state;
    if (g_pg_state == 1) pg_harness_stop(&g_pg);
    g_pg_state = 0;
    if (g_fs_state == 1) fs_harness_stop(&g_fs);
    g_fs_state = 0;
    return 0;
}

/* Runs `tests` with the group setup; $SLUICE_TEST_BACKEND=sqlite|postgres|firestore selects one backend's part. */
#define STORE_RUN_TESTS(tests)                                                                               \
    (getenv("SLUICE_TEST_BACKEND") ? cmocka_set_test_filter(strcmp(getenv("SLUICE_TEST_BACKEND"), "postgres") == 0 \
                                                                ? "*/postgres"                                \
                                                            : strcmp(getenv("SLUICE_TEST_BACKEND"), "firestore") == 0 \
                                                                ? "*/firestore" : "*/sqlite")                 \
                                   : (void)0,                                                                \
     cmocka_run_group_tests(tests, store_group_setup, store_group_teardown))

static inline int64_t fake_clock(void *arg) { return ((fixture *)arg)->now; }

static inline store *open_store(fixture *f, int schema_version)
{
    store_options o = {.synchronous = STORE_SYNC_FULL, .busy_timeout_ms = 5000, .schema_version = schema_version,
                       .clock_ms = fake_clock, .clock_arg = f};
    store *s = NULL;
    OK(store_open(f->url, &o, &s, &g_err));
    assert_non_null(s);
    return s;
}

/* A fresh, empty store location for this test: a new file name in f->dir, or a new schema. Caller frees. */
static inline char *fixture_new_url(fixture *f, const char *name)
{
    char *u = NULL;
    if (is_pg(f)) return pg_harness_new_schema(&g_pg);
    if (is_fs(f)) return fs_harness_new_url(&g_fs);
    if (asprintf(&u, "%s/%s", f->dir, name) < 0) return NULL;
    return u;
}

/* Opens the fixture's location without a store: the PostgreSQL half needs its server. */
static inline int setup_bare(void **state)
{
    const backend_kind *bk = *state;
    fixture *f = calloc(1, sizeof *f);
    f->bk = bk ? *bk : BK_SQLITE;
    if (f->bk == BK_FS) f->fn = ((const fixture_case *)bk)->fn;
    f->dir = tu_tempdir();
    assert_non_null(f->dir);
    f->now = 1700000000000;
    *state = f;
    if (is_pg(f)) {
        if (g_pg_state != 1) {
            print_error("FAIL: the PostgreSQL test server is not running: %s\n",
                        g_pg_state == 0 ? "store_group_setup did not start it" : g_pg.err);
            return -1;
        }
        f->url = pg_harness_new_schema(&g_pg);
        if (f->url == NULL) return -1;
    } else if (is_fs(f)) {
        if (g_fs_state == 0) { /* started by the executable's first Firestore test, so others never pay for it */
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            g_fs_state = fs_harness_start(&g_fs) == 0 ? 1 : -1;
            clock_gettime(CLOCK_MONOTONIC, &b);
            if (g_fs_state == 1)
                print_message("Firestore emulator up in %lld ms (port %d)\n",
                              (long long)((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000), g_fs.port);
        }
        if (g_fs_state != 1) {
            if (fs_harness_must_run()) {
                print_error("FAIL: the Firestore emulator is not running: %s\n", g_fs.err);
                return -1;
            }
            print_message("SKIP: no Firestore emulator (%s)\n", g_fs.err);
            f->skip = 1;
            return 0;
        }
        f->url = fs_harness_new_url(&g_fs);
    } else {
        assert_true(asprintf(&f->path, "%s/sluice.db", f->dir) > 0);
        f->url = strdup(f->path);
    }
    return 0;
}

static inline int setup(void **state)
{
    int rc = setup_bare(state);
    if (rc != 0) return rc;
    fixture *f = *state;
    if (f->skip) return 0;
    f->s = open_store(f, 0);
    return 0;
}

/* Runs a Firestore case's test, or reports it skipped when there is no emulator. */
static inline void fs_case_run(void **state)
{
    fixture *f = *state;
    if (f->skip) skip();
    f->fn(state);
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    if (f == NULL || f == (void *)&fixture_backends[0] || f == (void *)&fixture_backends[1] ||
        f == (void *)&fixture_backends[2])
        return 0;
    store_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->path);
    free(f->url);
    free(f);
    free(g_err);
    g_err = NULL;
    return 0;
}

/* Runs one SQL statement on a separate raw connection; returns the first column of the first row as a
 * malloc'd string (or NULL). Used to look under the API and to damage files on purpose. */
static inline char *raw_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *res = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) goto done;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    const char *tail = sql;
    while (tail && *tail) {
        if (sqlite3_prepare_v2(db, tail, -1, &st, &tail) != SQLITE_OK) {
            res = strdup(sqlite3_errmsg(db));
            goto done;
        }
        if (st == NULL) break;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if (res == NULL && sqlite3_column_text(st, 0)) res = strdup((const char *)sqlite3_column_text(st, 0));
        if (rc != SQLITE_DONE && res == NULL) res = strdup(sqlite3_errmsg(db));
        sqlite3_finalize(st);
        st = NULL;
    }
done:
    sqlite3_close(db);
    return res;
}

static inline void assert_raw(const char *path, const char *sql, const char *want)
{
    char *got = raw_sql(path, sql);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* raw_sql for either backend: the first column of the first row (or the error message) of `sql` run on a
 * separate connection to the fixture's store. Caller frees. */
static inline char *raw_query(const fixture *f, const char *sql)
{
    if (is_fs(f)) skip(); /* no SQL under the Firestore API */
    return is_pg(f) ? pg_harness_query(f->url, sql) : raw_sql(f->path, sql);
}

/* raw_query on another store location of the fixture's backend (a path or a conninfo). */
static inline char *raw_query_at(const fixture *f, const char *url, const char *sql)
{
    if (is_fs(f)) skip();
    return is_pg(f) ? pg_harness_query(url, sql) : raw_sql(url, sql);
}

/* The SQL that reads the schema version under the API. */
static inline const char *version_sql(const fixture *f)
{
    return is_pg(f) ? "SELECT version FROM sluice_schema" : "PRAGMA user_version";
}

/* Closes the fixture's store and moves it to a fresh, empty location (an empty dir; a new schema). */
static inline void fixture_fresh(fixture *f)
{
    store_close(f->s);
    f->s = NULL;
    free(f->url);
    if (is_pg(f)) {
        f->url = pg_harness_new_schema(&g_pg);
    } else if (is_fs(f)) {
        f->url = fs_harness_new_url(&g_fs);
    } else {
        tu_rmtree(f->dir);
        assert_int_equal(mkdir(f->dir, 0700), 0);
        f->url = strdup(f->path);
    }
    assert_non_null(f->url);
}

static inline void assert_query(const fixture *f, const char *sql, const char *want)
{
    char *got = raw_query(f, sql);
    if (got == NULL || strcmp(got, want) != 0) fail_msg("%s: got '%s', want '%s'", sql, got ? got : "(null)", want);
    free(got);
}

static inline void put_script(store *s, const char *hash) { OK(store_script_put(s, hash, "wf", "return {}", &g_err)); }

static inline void make_run(store *s, const char *id, const char *workflow, const char *request_key)
{
    store_run r = {.id = (char *)id, .workflow = (char *)workflow, .script_hash = HASH_A,
                   .params_json = "{\"n\":1}", .state = STORE_RUN_PENDING, .origin = "api",
                   .request_key = (char *)request_key};
    OK(store_run_create(s, &r, &g_err));
}

static inline void make_step(store *s, const char *run_id, const char *name)
{
    store_step st = {.run_id = (char *)run_id, .name = (char *)name, .state = STORE_STEP_PENDING};
    OK(store_step_insert(s, &st, &g_err));
}

#endif
