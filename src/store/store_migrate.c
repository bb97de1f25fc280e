/* store_migrate: `sluice store migrate --from FILE.db --to postgres://...`: a SQLite store copied row for row
 * into a PostgreSQL one. Uses: the store API to open (and migrate) both ends, their native handles
 * (store_backend.h) to read SQLite in one snapshot and write PostgreSQL with COPY in one transaction.
 * Must not: write to the source, or be reached from the engine or the server. */
#include "store_migrate.h"

#include <getopt.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dbuf.h"
#include "mem.h"
#include "store_backend.h"
#include "util.h"

/* The tables in foreign-key order, with the columns copied (all of them) and the source order. Ids of steps
 * and events are copied as they are: step ids give a run's step order, event ids are what callers saw. */
static const struct {
    const char *table, *cols, *order;
} mg_tables[] = {
    {"scripts", "hash, workflow, source, created_at", "hash"},
    {"runs", "id, workflow, script_hash, params, state, origin, request_key, error, created_at, updated_at, finished_at",
     "created_at, id"},
    {"steps",
     "id, run_id, name, state, attempt, job_name, job_id, project, region, request, job_state, result, error,"
     " started_at, finished_at, next_check_at, deadline_at, updated_at, check_failures, hint_at",
     "id"},
    {"inbox", "id, message_id, source, job_id, job_name, state, payload, received_at, processed_at", "id"},
    {"outbox", "id, sink, run_id, type, event, state, attempts, last_error, created_at, next_attempt_at, updated_at,"
     " delivered_at", "created_at, id, sink"},
    {"deadlines", "run_id, scope, due_at, state", "run_id, scope"},
    {"attempts", "run_id, step, attempt, job_name, job_id, project, region, request, state, job_state, error,"
     " failure_cause, launched_at, running_at, ended_at, updated_at", "run_id, step, attempt"},
    {"step_waits", "run_id, name, project, region, since, parked_at", "run_id, name"},
    {"run_times", "run_id, logical_time, interval_start, interval_end", "run_id"},
    {"schedule_marks", "workflow, handled_to", "workflow"},
    {"backfills", "id, workflow, state, doc, created_at, updated_at", "created_at, id"},
};
#define MG_NTABLES (sizeof mg_tables / sizeof mg_tables[0])

/* One COPY text-format field: backslash, tab, newline and carriage return escaped; NULL is \N. */
static int mg_field(dbuf *b, const char *v)
{
    if (v == NULL) return dbuf_add(b, "\\N", 2);
    for (const char *p = v; *p; p++) {
        int rc;
        switch (*p) {
        case '\\': rc = dbuf_add(b, "\\\\", 2); break;
        case '\t': rc = dbuf_add(b, "\\t", 2); break;
        case '\n': rc = dbuf_add(b, "\\n", 2); break;
        case '\r': rc = dbuf_add(b, "\\r", 2); break;
        default: rc = dbuf_add(b, p, 1); break;
        }
        if (rc != 0) return -1;
    }
    return 0;
}

static int mg_pgfail(PGconn *pc, PGresult *res, char **err, const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (m == NULL || *m == '\0') m = PQerrorMessage(pc);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", m);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n') msg[--n] = '\0';
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int rc = state && strcmp(state, "55P03") == 0 ? STORE_BUSY : STORE_IO;
    return store_fail(err, rc, "%s: %s", what, msg);
}

/* Runs SQL on the target that must succeed; returns the first value of the first row as an integer in *out
 * (may be NULL). */
static int mg_pg(PGconn *pc, const char *sql, int64_t *out, const char *what, char **err)
{
    PGresult *res = PQexec(pc, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) rc = mg_pgfail(pc, res, err, what);
    else if (out != NULL) *out = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return rc;
}

/* Copies table `t` from the SQLite snapshot to the target with one COPY; *rows = rows copied. Counts the
 * unprocessed events and the runs by state on the way. */
static int mg_copy_table(sqlite3 *db, PGconn *pc, size_t t, int64_t *rows, store_migrate_counts *c, char **err)
{
    char *sel = NULL, *copy = NULL;
    sqlite3_stmt *st = NULL;
    dbuf b = {0};
    int rc = STORE_OK;
    *rows = 0;
    sel = util_printf("SELECT %s FROM %s ORDER BY %s", mg_tables[t].cols, mg_tables[t].table, mg_tables[t].order);
    copy = util_printf("COPY %s(%s) FROM STDIN", mg_tables[t].table, mg_tables[t].cols);
    if (sqlite3_prepare_v2(db, sel, -1, &st, NULL) != SQLITE_OK) {
        rc = store_fail(err, STORE_IO, "migrate: reading %s: %s", mg_tables[t].table, sqlite3_errmsg(db));
        goto done;
    }
    PGresult *res = PQexec(pc, copy);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        rc = mg_pgfail(pc, res, err, "migrate: COPY");
        PQclear(res);
        goto done;
    }
    PQclear(res);
    int ncol = sqlite3_column_count(st), step;
    const char *read_err = NULL;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        b.len = 0;
        for (int i = 0; i < ncol; i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);
            if ((i > 0 && dbuf_add(&b, "\t", 1) != 0) || mg_field(&b, v) != 0) read_err = "out of memory";
        }
        if (read_err == NULL && dbuf_add(&b, "\n", 1) != 0) read_err = "out of memory";
        if (read_err != NULL) break;
        if (PQputCopyData(pc, b.data, (int)b.len) != 1) {
            read_err = PQerrorMessage(pc);
            break;
        }
        (*rows)++;
        if (strcmp(mg_tables[t].table, "inbox") == 0 && sqlite3_column_type(st, 8) == SQLITE_NULL)
            c->events_unprocessed++;
        if (strcmp(mg_tables[t].table, "runs") == 0) {
            store_run_state rs;
            if (store_run_state_parse((const char *)sqlite3_column_text(st, 4), &rs) == STORE_OK) c->runs_by_state[rs]++;
        }
    }
    if (read_err == NULL && step != SQLITE_DONE) read_err = sqlite3_errmsg(db);
    /* Ending the COPY with an error message aborts it (and with it the transaction). */
    if (PQputCopyEnd(pc, read_err) != 1) read_err = read_err ? read_err : PQerrorMessage(pc);
    int64_t copied = -1;
    while ((res = PQgetResult(pc)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            if (rc == STORE_OK) rc = mg_pgfail(pc, res, err, read_err ? "migrate: reading the source" : "migrate: COPY");
        } else {
            copied = strtoll(PQcmdTuples(res), NULL, 10);
        }
        PQclear(res);
    }
    if (rc == STORE_OK && read_err != NULL)
        rc = store_fail(err, STORE_IO, "migrate: copying %s: %s", mg_tables[t].table, read_err);
    if (rc == STORE_OK && copied != *rows)
        rc = store_fail(err, STORE_IO, "migrate: %s: read %lld rows, the target took %lld", mg_tables[t].table,
                        (long long)*rows, (long long)copied);
done:
    sqlite3_finalize(st);
    dbuf_free(&b);
    free(sel);
    free(copy);
    return rc;
}

/* Moves the target's identity sequences past every id the source ever handed out (SQLite's AUTOINCREMENT
 * high-water mark for events, so an id of a pruned event is never reused either). */
static int mg_sequences(sqlite3 *db, PGconn *pc, char **err)
{
    static const char *const src_sql[] = {
        "SELECT coalesce(max(id), 0) FROM steps",
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'inbox'), 0),"
        " coalesce((SELECT max(id) FROM inbox), 0))",
    };
    static const char *const tables[] = {"steps", "inbox"};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        int64_t high = 0;
        if (sqlite3_prepare_v2(db, src_sql[i], -1, &st, NULL) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
            int rc = store_fail(err, STORE_IO, "migrate: reading %s ids: %s", tables[i], sqlite3_errmsg(db));
            sqlite3_finalize(st);
            return rc;
        }
        high = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT setval(pg_get_serial_sequence('%s', 'id'), %lld, %s)", tables[i],
                 (long long)(high > 0 ? high : 1), high > 0 ? "true" : "false");
        int rc = mg_pg(pc, sql, NULL, "migrate: id sequence", err);
        if (rc != STORE_OK) return rc;
    }
    return STORE_OK;
}

int store_migrate_copy(const char *from, const char *to, int force, store_migrate_counts *counts, char **err)
{
    store_migrate_counts c = {0};
    store *src = NULL, *dst = NULL;
    sqlite3 *db = NULL;
    int rc = STORE_OK, src_tx = 0;
    if (counts != NULL) *counts = c;
    if (from == NULL || to == NULL) return store_fail(err, STORE_INVALID, "migrate: --from and --to are required");
    const char *path = from;
    if (strncmp(path, "sqlite:", 7) == 0) path += strncmp(path + 7, "//", 2) == 0 ? 9 : 7;
    struct stat sb;
    if (store_postgres_is_conninfo(from) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        char *shown = store_url_redacted(from); /* --from may be a PostgreSQL URL with a password */
        rc = store_fail(err, STORE_INVALID, "migrate: --from '%s' is not an existing SQLite store file", shown);
        free(shown);
        return rc;
    }
    if (!store_postgres_is_conninfo(to))
        return store_fail(err, STORE_INVALID, "migrate: --to must be a PostgreSQL URL or conninfo (postgres://...)");
    store_options o = {.busy_timeout_ms = 10000};
    rc = store_open(from, &o, &src, err);
    if (rc != STORE_OK) goto done;
    rc = store_open(to, &o, &dst, err);
    if (rc != STORE_OK) goto done;
    db = store_sqlite_native(src);
    PGconn *pc = store_postgres_native(dst);
    if (db == NULL || pc == NULL) {
        rc = store_fail(err, STORE_INVALID, "migrate: --from must be SQLite and --to PostgreSQL");
        goto done;
    }
    /* One read transaction: every table comes from the same snapshot of the source. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        rc = store_fail(err, STORE_IO, "migrate: source: %s", sqlite3_errmsg(db));
        goto done;
    }
    src_tx = 1;
    rc = store_begin(dst, err);
    if (rc != STORE_OK) goto done;
    /* No other writer may add rows while the copy runs (readers may go on). */
    rc = mg_pg(pc, "LOCK TABLE scripts, runs, steps, inbox, outbox, deadlines, attempts, step_waits, run_times,"
               " schedule_marks, backfills IN EXCLUSIVE MODE", NULL,
               "migrate: locking the target (is an engine using it?)", err);
    if (rc != STORE_OK) goto done;
    int64_t n_scripts = 0, n_runs = 0, n_events = 0;
    if ((rc = mg_pg(pc, "SELECT count(*) FROM scripts", &n_scripts, "migrate", err)) != STORE_OK ||
        (rc = mg_pg(pc, "SELECT count(*) FROM runs", &n_runs, "migrate", err)) != STORE_OK ||
        (rc = mg_pg(pc, "SELECT count(*) FROM inbox", &n_events, "migrate", err)) != STORE_OK)
        goto done;
    if (n_scripts + n_runs + n_events > 0) {
        if (!force) {
            rc = store_fail(err, STORE_EXISTS,
                            "migrate: the target is not empty (%lld scripts, %lld runs, %lld events); --force"
                            " replaces its content", (long long)n_scripts, (long long)n_runs, (long long)n_events);
            goto done;
        }
        rc = mg_pg(pc, "TRUNCATE backfills, schedule_marks, run_times, step_waits, attempts, deadlines, outbox, inbox,"
                       " steps, runs, scripts", NULL, "migrate: emptying the target", err);
        if (rc != STORE_OK) goto done;
    }
    int64_t notes = 0, deadlines = 0, attempts = 0, waits = 0, times = 0, marks = 0, backfills = 0;
    int64_t *rows[MG_NTABLES] = {&c.scripts, &c.runs, &c.steps, &c.events, &notes, &deadlines, &attempts, &waits, &times,
                                 &marks, &backfills};
    for (size_t t = 0; t < MG_NTABLES && rc == STORE_OK; t++) rc = mg_copy_table(db, pc, t, rows[t], &c, err);
    if (rc == STORE_OK) rc = mg_sequences(db, pc, err);
    if (rc != STORE_OK) goto done;
    rc = store_commit(dst, err);
    if (rc == STORE_OK && counts != NULL) *counts = c;
done:
    if (dst != NULL && store_in_transaction(dst)) store_rollback(dst, NULL);
    if (src_tx) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store_close(dst);
    store_close(src);
    return rc;
}

static int mg_main(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {"from", required_argument, NULL, 'f'},
                                         {"to", required_argument, NULL, 't'}, {"force", no_argument, NULL, 'F'},
                                         {0, 0, 0, 0}};
    const char *from = NULL, *to = NULL;
    int force = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(STORE_CLI_USAGE, stdout); return 0;
        case 'f': from = optarg; break;
        case 't': to = optarg; break;
        case 'F': force = 1; break;
        default: fputs(STORE_CLI_USAGE, stderr); return 2;
        }
    }
    if (optind < argc || from == NULL || to == NULL) {
        fprintf(stderr, "sluice store migrate: --from FILE and --to URL are required\n%s", STORE_CLI_USAGE);
        return 2;
    }
    store_migrate_counts c;
    char *err = NULL;
    int rc = store_migrate_copy(from, to, force, &c, &err);
    if (rc != STORE_OK) {
        fprintf(stderr, "sluice store migrate: %s\n", err ? err : store_strerror(rc));
        free(err);
        return rc == STORE_INVALID ? 2 : 1;
    }
    printf("copied %lld scripts, %lld runs, %lld steps, %lld inbox events (%lld unprocessed)\nruns:", (long long)c.scripts,
           (long long)c.runs, (long long)c.steps, (long long)c.events, (long long)c.events_unprocessed);
    for (int s = 0; s < STORE_RUN_STATE_COUNT; s++)
        printf(" %s %lld", store_run_state_name((store_run_state)s), (long long)c.runs_by_state[s]);
    printf("\n");
    return 0;
}

int store_cli_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "migrate") == 0) return mg_main(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(STORE_CLI_USAGE, stdout);
        return 0;
    }
    fprintf(stderr, "sluice store: %s%s\n%s", argc >= 2 ? "unknown subcommand " : "a subcommand is required",
            argc >= 2 ? argv[1] : "", STORE_CLI_USAGE);
    return 2;
}
