/* store_fixture: shared by the test_store*.c files: a store on a temp file with a fake clock, EXPECT/OK
 * macros that print the store's message on failure, and a raw SQLite connection to look under the API.
 * Header-only (static inline) because every tests/unit/test_*.c is its own executable. */
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

typedef struct {
    char *dir;
    char *path;
    store *s;
    int64_t now;
} fixture;

static inline int64_t fake_clock(void *arg) { return ((fixture *)arg)->now; }

static inline store *open_store(fixture *f, int schema_version)
{
    store_options o = {.synchronous = STORE_SYNC_FULL, .busy_timeout_ms = 5000, .schema_version = schema_version,
                       .clock_ms = fake_clock, .clock_arg = f};
    store *s = NULL;
    OK(store_open(f->path, &o, &s, &g_err));
    assert_non_null(s);
    return s;
}

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir();
    assert_non_null(f->dir);
    assert_true(asprintf(&f->path, "%s/sluice.db", f->dir) > 0);
    f->now = 1700000000000;
    f->s = open_store(f, 0);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    tu_rmtree(f->dir);
    free(f->dir);
    free(f->path);
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
