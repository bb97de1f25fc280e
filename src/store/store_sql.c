/* store_sql: one parameterised statement on the handle's own SQLite or PostgreSQL connection (store_sql.h).
 * Uses: store_backend.h, SQLite, libpq.
 * Must not: know any table; keep state between calls (the SQLite handle keeps its statements prepared). */
#include "store_sql.h"
#include "mem.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sql_result_free(sql_result *r)
{
    if (r == NULL) return;
    for (size_t i = 0; i < r->rows * r->cols; i++) free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

const char *sql_cell(const sql_result *r, size_t row, size_t col) { return r->cells[row * r->cols + col]; }

int64_t sql_int(const sql_result *r, size_t row, size_t col)
{
    const char *c = sql_cell(r, row, col);
    return c ? strtoll(c, NULL, 10) : 0;
}

char *sql_take(sql_result *r, size_t row, size_t col)
{
    char **c = &r->cells[row * r->cols + col];
    char *v = *c;
    *c = NULL;
    return v;
}

static void push_row(sql_result *r, size_t cols)
{
    char **n = xrealloc(r->cells, (r->rows + 1) * cols * sizeof *n);
    r->cells = n;
    r->cols = cols;
    memset(r->cells + r->rows * cols, 0, cols * sizeof *n);
    r->rows++;
}

static int run_sqlite(store *s, sqlite3 *db, const char *sql, const sql_param *p, int np, sql_result *out,
                      const char *what, char **err)
{
    sqlite3_stmt *st = NULL;
    void *prepared = NULL;
    int rc = STORE_OK, src, kept = 0;
    /* prepared once per handle: parsing the text on every call was most of a launch's SQLite time */
    if ((src = store_sqlite_prepare(s, sql, &prepared, &kept)) != SQLITE_OK) goto fail;
    st = prepared;
    for (int i = 0; i < np; i++) {
        if (p[i].is_int) src = sqlite3_bind_int64(st, i + 1, p[i].i);
        else if (p[i].t == NULL) src = sqlite3_bind_null(st, i + 1);
        else src = sqlite3_bind_text(st, i + 1, p[i].t, -1, SQLITE_STATIC);
        if (src != SQLITE_OK) goto fail;
    }
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        size_t cols = (size_t)sqlite3_column_count(st);
        push_row(out, cols);
        for (size_t c = 0; c < cols; c++)
            out->cells[(out->rows - 1) * cols + c] = xstrdup((const char *)sqlite3_column_text(st, (int)c));
    }
    if (src != SQLITE_DONE) goto fail;
    out->changes = sqlite3_changes(db);
    goto done;
fail:
    src = sqlite3_errcode(db) & 0xff;
    rc = store_fail(err,
                    src == SQLITE_BUSY || src == SQLITE_LOCKED ? STORE_BUSY
                    : src == SQLITE_CONSTRAINT                  ? STORE_INVALID
                    : src == SQLITE_NOMEM                       ? STORE_NOMEM
                                                                : STORE_IO,
                    "%s: %s", what, sqlite3_errmsg(db));
done:
    if (kept) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
    return rc;
}

static int run_pg(PGconn *c, const char *sql, const sql_param *p, int np, sql_result *out, const char *what,
                  char **err)
{
    char nums[SQL_MAXP][24];
    const char *vals[SQL_MAXP];
    for (int i = 0; i < np; i++) {
        if (p[i].is_int) {
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)p[i].i);
            vals[i] = nums[i];
        } else {
            vals[i] = p[i].t;
        }
    }
    PGresult *res = PQexecParams(c, sql, np, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        int code = state == NULL                                                          ? STORE_IO
                   : strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 ||
                           strcmp(state, "40P01") == 0 || strcmp(state, "57014") == 0     ? STORE_BUSY
                   : strncmp(state, "23", 2) == 0                                         ? STORE_INVALID
                                                                                          : STORE_IO;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(c));
        size_t n = strlen(msg);
        while (n > 0 && msg[n - 1] == '\n') msg[--n] = '\0';
        rc = store_fail(err, code, "%s: %s (SQLSTATE %s)", what, msg, state ? state : "none");
    } else {
        size_t cols = (size_t)PQnfields(res);
        for (int r = 0; r < PQntuples(res); r++) {
            push_row(out, cols);
            for (size_t k = 0; k < cols; k++)
                if (!PQgetisnull(res, r, (int)k)) out->cells[(out->rows - 1) * cols + k] = xstrdup(PQgetvalue(res, r, (int)k));
        }
        const char *t = PQcmdTuples(res);
        out->changes = t && *t ? strtoll(t, NULL, 10) : 0;
    }
    PQclear(res);
    return rc;
}

int sql_exec(store *s, const char *sq, const char *pq, const sql_param *p, int np, sql_result *out, const char *what,
             char **err)
{
    memset(out, 0, sizeof *out);
    if (np > SQL_MAXP) return store_fail(err, STORE_INVALID, "%s: too many parameters", what);
    void *db = store_sqlite_native(s);
    if (db != NULL) return run_sqlite(s, db, sq, p, np, out, what, err);
    void *pc = store_postgres_native(s);
    if (pc != NULL) return run_pg(pc, pq, p, np, out, what, err);
    return store_fail(err, STORE_INVALID, "%s: this store backend has no SQL connection", what);
}
