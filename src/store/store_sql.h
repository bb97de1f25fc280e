/* store_sql: one parameterised statement on a store handle's own connection, SQLite or PostgreSQL, for the store
 * modules that keep their SQL beside their logic (store_attempts.c) rather than in a backend's statement table.
 * Uses: store_backend.h (the native connection, store_fail), SQLite, libpq.
 * Must not: be included outside the store modules, or keep state between calls. */
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
#define SQL_MAXP 20

/* A result: rows x cols cells of malloc'd text (NULL for SQL NULL); changes = rows the statement changed. */
typedef struct {
    char **cells;
    size_t rows, cols;
    int64_t changes;
} sql_result;

/* Runs SQLite's `sq` or PostgreSQL's `pq` (the same parameters, ?N and $N; at most SQL_MAXP) on the handle's
 * connection, so it joins the transaction the caller has open. *out is filled (free it with sql_result_free, also
 * after a failure). STORE_INVALID for a constraint violation or a backend without SQL; STORE_BUSY, STORE_IO,
 * STORE_NOMEM as the backend says; `what` prefixes the message. */
int sql_exec(store *s, const char *sq, const char *pq, const sql_param *p, int np, sql_result *out, const char *what,
             char **err);
void sql_result_free(sql_result *r);
/* Borrowed cell text (NULL for SQL NULL), the cell as an integer (0 for NULL), and the cell taken over (the caller
 * frees it; the result keeps NULL). */
const char *sql_cell(const sql_result *r, size_t row, size_t col);
int64_t sql_int(const sql_result *r, size_t row, size_t col);
char *sql_take(sql_result *r, size_t row, size_t col);

#endif
