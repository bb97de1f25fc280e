/* test_store_migrate: `sluice store migrate`: a SQLite store with runs in every state, steps in every state
 * with every column set, and inbox events unprocessed, processed and pruned, copied into PostgreSQL (the
 * harness's server): every table equal row for row, ids and dedupe keys kept, a non-empty target refused
 * without --force, and the command's output and exit codes (0/1/2) through the real binary. */
#include "store_fixture.h"
#include "store_migrate.h"
#include "testproc.h"

/* Every column of every row of `table` in `order`, NULL as \N, one line per row: from SQLite. */
static char *dump_sqlite(const char *path, const char *table, const char *cols, const char *order)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *sql = NULL, *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    assert_true(asprintf(&sql, "SELECT %s FROM %s ORDER BY %s", cols, table, order) > 0);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);
            fprintf(m, "%s%s", i ? "|" : "", v ? v : "\\N");
        }
        fputc('\n', m);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    fclose(m);
    free(sql);
    return out;
}

/* The same from PostgreSQL. */
static char *dump_pg(const char *conninfo, const char *table, const char *cols, const char *order)
{
    char *sql = NULL, *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    assert_true(asprintf(&sql, "SELECT %s FROM %s ORDER BY %s", cols, table, order) > 0);
    PGconn *c = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    for (int r = 0; r < PQntuples(res); r++) {
        for (int i = 0; i < PQnfields(res); i++)
            fprintf(m, "%s%s", i ? "|" : "", PQgetisnull(res, r, i) ? "\\N" : PQgetvalue(res, r, i));
        fputc('\n', m);
    }
    PQclear(res);
    PQfinish(c);
    fclose(m);
    free(sql);
    return out;
}

static const char *const tables[][3] = {
    {"scripts", "hash, workflow, source, created_at", "hash"},
    {"runs", "id, workflow, script_hash, params, state, origin, request_key, error, created_at, updated_at, finished_at",
     "id"},
    {"steps",
     "id, run_id, name, state, attempt, job_name, job_id, project, region, request, job_state, result, error,"
     " started_at, finished_at, next_check_at, deadline_at, updated_at, check_failures, hint_at",
     "id"},
    {"inbox", "id, message_id, source, job_id, job_name, state, payload, received_at, processed_at", "id"},
};

static void assert_same_rows(const char *path, const char *conninfo, size_t min_rows)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        char *a = dump_sqlite(path, tables[t][0], tables[t][1], tables[t][2]);
        char *b = dump_pg(conninfo, tables[t][0], tables[t][1], tables[t][2]);
        size_t lines = 0;
        for (const char *p = a; *p; p++) lines += *p == '\n';
        if (strcmp(a, b) != 0) fail_msg("table %s differs:\n--- sqlite\n%s--- postgres\n%s", tables[t][0], a, b);
        if (lines < min_rows) fail_msg("table %s: only %zu rows", tables[t][0], lines);
        free(a);
        free(b);
    }
}

/* A source store holding every kind of row, with awkward text (tabs, newlines, backslashes, quotes, UTF-8). */
static void fill_source(fixture *f, store *s)
{
    OK(store_script_put(s, HASH_A, "etl", "-- tab\there\nstep('a') -- back\\slash 'q' \"dq\" ünï", &g_err));
    f->now += 10;
    OK(store_script_put(s, HASH_B, "other", "return {}", &g_err));
    for (int st = 0; st < STORE_RUN_STATE_COUNT; st++) {
        char id[32], key[32];
        snprintf(id, sizeof id, "run-%s", store_run_state_name((store_run_state)st));
        snprintf(key, sizeof key, "key-%d", st);
        store_run r = {.id = id, .workflow = st % 2 ? "etl" : "other", .script_hash = st % 2 ? HASH_A : HASH_B,
                       .params_json = "{\"day\":\"2026-11-27\",\"s\":\"a\\tb\\\\c\"}", .state = (store_run_state)st,
                       .origin = st == 0 ? NULL : "api", .request_key = st % 3 ? key : NULL,
                       .error = st == STORE_RUN_FAILED ? "step b failed:\nline 2" : NULL,
                       .created_at = 1000 + st, .updated_at = 2000 + st,
                       .finished_at = store_run_state_terminal((store_run_state)st) ? 3000 + st : 0};
        OK(store_run_create(s, &r, &g_err));
    }
    /* Steps in every state, in the running run, every column set where the state allows. */
    for (int st = 0; st < STORE_STEP_STATE_COUNT; st++) {
        char name[32], jn[48], jid[48];
        snprintf(name, sizeof name, "s-%s", store_step_state_name((store_step_state)st));
        snprintf(jn, sizeof jn, "job-%d", st);
        snprintf(jid, sizeof jid, "2026-11-27_%02d", st);
        int has_job = st >= STORE_STEP_LAUNCHING && st != STORE_STEP_SKIPPED;
        store_step p = {.run_id = "run-running", .name = name, .state = (store_step_state)st, .attempt = 1 + st % 3,
                        .job_name = has_job ? jn : NULL, .job_id = st >= STORE_STEP_RUNNING && has_job ? jid : NULL,
                        .project = "proj", .region = "europe-west1",
                        .request_json = has_job ? "{\"launchParameter\":{\"jobName\":\"x\",\"p\":\"\\n\"}}" : NULL,
                        .job_state = has_job ? "JOB_STATE_RUNNING" : NULL,
                        .result_json = st == STORE_STEP_SUCCEEDED ? "{\"rows\":12}" : NULL,
                        .error = st == STORE_STEP_FAILED ? "worker\tcrashed" : NULL,
                        .started_at = has_job ? 5000 + st : 0,
                        .finished_at = store_step_state_terminal((store_step_state)st) ? 6000 + st : 0,
                        .next_check_at = 7000 + st, .deadline_at = st % 2 ? 9000 + st : 0, .updated_at = 8000 + st};
        OK(store_step_insert(s, &p, &g_err));
    }
    OK(store_step_set_check(s, "run-running", "s-running", 1 + STORE_STEP_RUNNING % 3, 7100, 3, NULL, &g_err));
    OK(store_step_set_hint(s, "run-running", "s-running", 1 + STORE_STEP_RUNNING % 3, 7050, 7060, &g_err));
    make_step(s, "run-pending", "first");
    /* Events: unprocessed, processed, and processed then pruned (the highest id, so the id high-water mark is
     * above every row left). */
    int64_t ids[5];
    char *states[] = {"JOB_STATE_RUNNING", "JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                            "JOB_STATE_DRAINED"};
    for (int i = 0; i < 5; i++) {
        char mid[32], job[32];
        snprintf(mid, sizeof mid, "m-%d", i);
        snprintf(job, sizeof job, "2026-11-27_%02d", i % 2);
        store_event ev = {.message_id = i == 2 ? NULL : mid, .source = (store_event_source)(i % STORE_SRC_COUNT),
                          .job_id = job, .job_name = "jn", .state = states[i],
                          .payload_json = i == 3 ? NULL : "{\"a\":\"x\\ty\"}", .received_at = 100 + i};
        OK(store_inbox_put(s, &ev, &ids[i], &g_err));
    }
    OK(store_inbox_mark_processed(s, ids[1], 500, &g_err));
    OK(store_inbox_mark_processed(s, ids[4], 400, &g_err));
    int64_t deleted = 0;
    OK(store_inbox_prune(s, 450, &deleted, &g_err));
    assert_int_equal(deleted, 1);
}

static void test_migrate_row_for_row(void **state)
{
    fixture *f = *state;
    store_close(f->s); /* the target: f->url, empty */
    f->s = NULL;
    char *src_path = NULL;
    assert_true(asprintf(&src_path, "%s/src.db", f->dir) > 0);
    store_options o = {.clock_ms = fake_clock, .clock_arg = f};
    store *src = NULL;
    OK(store_open(src_path, &o, &src, &g_err));
    fill_source(f, src);
    store_close(src);

    store_migrate_counts c;
    OK(store_migrate_copy(src_path, f->url, 0, &c, &g_err));
    assert_int_equal(c.scripts, 2);
    assert_int_equal(c.runs, STORE_RUN_STATE_COUNT);
    assert_int_equal(c.steps, STORE_STEP_STATE_COUNT + 1);
    assert_int_equal(c.events, 4);
    assert_int_equal(c.events_unprocessed, 3);
    for (int s = 0; s < STORE_RUN_STATE_COUNT; s++) assert_int_equal(c.runs_by_state[s], 1);
    assert_same_rows(src_path, f->url, 2);

    /* A second copy finds the target full: refused, and the target untouched; --force replaces it. */
    EXPECT(STORE_EXISTS, store_migrate_copy(src_path, f->url, 0, &c, &g_err));
    assert_non_null(strstr(g_err, "not empty (2 scripts, 6 runs, 4 events)"));
    OK(store_migrate_copy(src_path, f->url, 1, &c, &g_err));
    assert_same_rows(src_path, f->url, 2);
    EXPECT(STORE_INVALID, store_migrate_copy(f->url, f->url, 0, &c, &g_err));
    EXPECT(STORE_INVALID, store_migrate_copy(src_path, src_path, 0, &c, &g_err));
    EXPECT(STORE_INVALID, store_migrate_copy("/nonexistent/x.db", f->url, 0, &c, &g_err));

    /* The copy is a working store: the API reads what the source held, the dedupe keys still dedupe, new ids
     * come after every id the source handed out (the pruned event's included). */
    f->s = open_store(f, 0);
    store_run r;
    OK(store_run_get_by_request_key(f->s, "key-1", &r, &g_err));
    assert_string_equal(r.id, "run-running");
    assert_string_equal(r.params_json, "{\"day\":\"2026-11-27\",\"s\":\"a\\tb\\\\c\"}");
    store_run_free(&r);
    store_step_list due;
    OK(store_step_due(f->s, INT64_MAX, 100, &due, &g_err));
    assert_int_equal(due.count, 5); /* pending x2, launching, running, cancelling */
    assert_string_equal(due.items[0].name, "first");
    store_step_list_free(&due);
    int64_t id = 0;
    store_event again = {.message_id = "m-1", .source = STORE_SRC_PUSH};
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &again, &id, &g_err)); /* processed, kept: still a duplicate */
    store_event by_identity = {.source = STORE_SRC_POLL, .job_id = "2026-11-27_00", .state = "JOB_STATE_FAILED"};
    EXPECT(STORE_DUPLICATE, store_inbox_put(f->s, &by_identity, &id, &g_err));
    store_event pruned = {.message_id = "m-4", .source = STORE_SRC_PUSH};
    OK(store_inbox_put(f->s, &pruned, &id, &g_err));
    assert_true(id > 5); /* the source handed out 1..5; ids go on past them (a duplicate may use one up) */
    store_step extra = {.run_id = "run-pending", .name = "second"};
    OK(store_step_insert(f->s, &extra, &g_err));
    store_step_list l;
    OK(store_step_list_run(f->s, "run-pending", &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[1].name, "second");
    store_step_list_free(&l);
    free(src_path);
}

/* Runs `sluice store migrate ...`; returns its exit status, with stdout and stderr. */
static int run_cli(char *const argv[], char **out, char **errs)
{
    free(*out);
    free(*errs);
    *out = *errs = NULL;
    return tu_run(argv, out, errs);
}

static void test_migrate_cli(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    const char *bin = getenv("SLUICE_BIN");
    assert_non_null(bin);
    char *src_path = NULL, *out = NULL, *errs = NULL;
    assert_true(asprintf(&src_path, "%s/src.db", f->dir) > 0);
    store *src = NULL;
    OK(store_open(src_path, NULL, &src, &g_err));
    fill_source(f, src);
    store_close(src);

    char *usage[] = {(char *)bin, "store", "migrate", "--from", src_path, NULL};
    assert_int_equal(run_cli(usage, &out, &errs), 2);
    assert_non_null(strstr(errs, "--to URL are required"));
    char *missing[] = {(char *)bin, "store", "migrate", "--from", "/nonexistent/x.db", "--to", f->url, NULL};
    assert_int_equal(run_cli(missing, &out, &errs), 2);
    assert_non_null(strstr(errs, "not an existing SQLite store file"));
    char *ok[] = {(char *)bin, "store", "migrate", "--from", src_path, "--to", f->url, NULL};
    int st = run_cli(ok, &out, &errs);
    if (st != 0) fail_msg("exit %d: %s", st, errs);
    assert_string_equal(out, "copied 2 scripts, 6 runs, 10 steps, 4 inbox events (3 unprocessed)\n"
                             "runs: pending 1 running 1 succeeded 1 failed 1 cancelling 1 cancelled 1\n");
    assert_int_equal(run_cli(ok, &out, &errs), 1);
    assert_non_null(strstr(errs, "the target is not empty"));
    char *force[] = {(char *)bin, "store", "migrate", "--from", src_path, "--to", f->url, "--force", NULL};
    assert_int_equal(run_cli(force, &out, &errs), 0);
    assert_same_rows(src_path, f->url, 2);
    char *down[] = {(char *)bin, "store", "migrate", "--from", src_path, "--to", "postgresql:///x?host=/nonexistent-dir",
                    NULL};
    assert_int_equal(run_cli(down, &out, &errs), 1);
    assert_non_null(strstr(errs, "/nonexistent-dir/.s.PGSQL.5432"));
    free(out);
    free(errs);
    free(src_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        PG_TEST(test_migrate_row_for_row),
        PG_TEST(test_migrate_cli),
    };
    return STORE_RUN_TESTS(tests);
}
