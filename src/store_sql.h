/* store_sql: one SQL statement on the handle's own connection, for the store's feature files (store_sched.c ...):
 * SQLite's and PostgreSQL's text side by side (?N and $N for the same parameters), run inside whatever
 * transaction the caller has open, the rows returned as text. store_outbox.c keeps a private copy of the same.
 * Uses: store_backend.h (the native connections, store_fail), SQLite, libpq. Must not: be used outside the store. */
#ifndef SLUICE_STORE_SQL_H
#define SLUICE_STORE_SQL_H
#include <stddef.h>
#include <stdint.h>

#include "store_backend.h"

/* A statement parameter: text (NULL = SQL NULL) or an integer. */
typedef struct {
    const char *t;
    int64_t i;
    int is_int;
} sql_param;

#define SQL_T(x) ((sql_param){.t = (x)})
#define SQL_I(x) ((sql_param){.i = (x), .is_int = 1})
#define SQL_MAXP 8

/* A result: rows x cols cells of malloc'd text (NULL for SQL NULL). */
typedef struct {
    char **cells;
    size_t rows, cols;
    int64_t changes;
} sql_result;

void sql_result_free(sql_result *r);
/* The cell's text (NULL for SQL NULL), borrowed until sql_result_free. */
const char *sql_cell(const sql_result *r, size_t row, size_t col);
/* The cell as an integer (0 for NULL). */
int64_t sql_int(const sql_result *r, size_t row, size_t col);
/* Runs SQLite's `sq` or PostgreSQL's `pq` with `np` (<= SQL_MAXP) parameters; *out (always initialised; free it
 * with sql_result_free) gets the rows and the number of rows changed. Returns a store_rc with *err on failure
 * (busy, constraint -> STORE_INVALID, I/O). */
int store_sql_exec(store *s, const char *sq, const char *pq, const sql_param *p, int np, sql_result *out,
                   const char *what, char **err);

#endif
