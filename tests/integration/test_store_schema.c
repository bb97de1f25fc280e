/* test_store_schema: migrations from an older schema, refusal of a newer one (every backend), and stores that
 * are not a store (garbage, a foreign SQLite file or PostgreSQL schema, damaged pages, bad values): errors,
 * never crashes. */
#include "store_fixture.h"

/* ---- schema ---- */

static void test_migration_from_v1(void **state)
{
    fixture *f = *state;
    fixture_fresh(f);
    /* A store written by a binary that knew only schema 1 (no inbox, no check_failures). */
    f->s = open_store(f, 1);
    assert_int_equal(store_schema_version(f->s), 1);
    put_script(f->s, HASH_A);
    make_run(f->s, "old-run", "etl", "old-key");
    make_step(f->s, "old-run", "a");
    store_close(f->s);
    assert_query(f, version_sql(f), "1");
    assert_query(f, is_pg(f) ? "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'inbox'"
                             : "SELECT count(*) FROM sqlite_schema WHERE name = 'inbox'",
                 "0");

    f->s = open_store(f, 0);
    assert_int_equal(store_schema_version(f->s), store_schema_latest());
    assert_query(f, version_sql(f), "10");
    /* schema 10: schedules, backfills, capacity (store_sched.c) */
    assert_query(f, is_pg(f) ? "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename IN "
                               "('step_waits','job_pools','run_times','schedule_marks','backfills')"
                             : "SELECT count(*) FROM sqlite_schema WHERE name IN "
                               "('step_waits','job_pools','run_times','schedule_marks','backfills')",
                 "5");
    /* schema 9: the attempts of steps */
    assert_query(f, is_pg(f) ? "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'attempts'"
                             : "SELECT count(*) FROM sqlite_schema WHERE name = 'attempts'",
                 "1");
    /* schema 8: the notification outbox and the deadlines */
    assert_query(f, is_pg(f) ? "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename IN "
                               "('outbox', 'deadlines')"
                             : "SELECT count(*) FROM sqlite_schema WHERE name IN ('outbox', 'deadlines')",
                 "2");
    store_step st;
    OK(store_step_get(f->s, "old-run", "a", &st, &g_err));
    assert_int_equal(st.check_failures, 0);
    store_step_free(&st);
    OK(store_step_set_check(f->s, "old-run", "a", 1, 10, 4, NULL, &g_err));
    OK(store_step_get(f->s, "old-run", "a", &st, &g_err));
    assert_int_equal(st.check_failures, 4);
    assert_int_equal(st.hint_at, 0); /* schema 5: a migrated step has no hint */
    store_step_free(&st);
    store_run r;
    OK(store_run_get_by_request_key(f->s, "old-key", &r, &g_err));
    assert_string_equal(r.id, "old-run");
    store_run_free(&r);
    store_event ev = {.message_id = "m", .source = STORE_SRC_PUSH};
    OK(store_inbox_put(f->s, &ev, NULL, &g_err));
    /* Opening an up-to-date store again changes nothing. */
    store *s2 = open_store(f, 0);
    assert_int_equal(store_schema_version(s2), store_schema_latest());
    store_close(s2);
}

static void test_refuses_newer_schema(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    store_close(f->s);
    f->s = NULL;
    free(raw_query(f, is_pg(f) ? "UPDATE sluice_schema SET version = 99" : "PRAGMA user_version = 99"));
    store *s = NULL;
    EXPECT(STORE_SCHEMA, store_open(f->url, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "schema version 99, newer than this binary supports (10)"));
    /* The store is left alone. */
    assert_query(f, version_sql(f), "99");
    assert_query(f, "SELECT count(*) FROM scripts", "1");
}

static void test_corrupt_and_foreign_files(void **state)
{
    fixture *f = *state;
    char *p = NULL;
    store *s = NULL;

    /* Garbage bytes. */
    assert_true(asprintf(&p, "%s/garbage.db", f->dir) > 0);
    char junk[16384];
    for (size_t i = 0; i < sizeof junk - 1; i++) junk[i] = (char)('A' + (i * 7919) % 26);
    junk[sizeof junk - 1] = '\0';
    assert_int_equal(tu_write_file(p, junk), 0);
    EXPECT(STORE_CORRUPT, store_open(p, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "garbage.db"));
    free(p);

    /* A real SQLite file of someone else's. */
    assert_true(asprintf(&p, "%s/foreign.db", f->dir) > 0);
    free(raw_sql(p, "CREATE TABLE t(x)"));
    EXPECT(STORE_CORRUPT, store_open(p, NULL, &s, &g_err));
    assert_non_null(strstr(g_err, "not a sluice store"));
    free(p);

    /* An empty file is a new, empty store. */
    assert_true(asprintf(&p, "%s/empty.db", f->dir) > 0);
    assert_int_equal(tu_write_file(p, ""), 0);
    OK(store_open(p, NULL, &s, &g_err));
    store_close(s);
    free(p);

    /* Bad values written behind the store's back surface as STORE_CORRUPT, not a crash. */
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    free(raw_sql(f->path, "PRAGMA ignore_check_constraints = ON; UPDATE runs SET state = 'bogus'"));
    store_run r;
    EXPECT(STORE_CORRUPT, store_run_get(f->s, "run-1", &r, &g_err));
    assert_non_null(strstr(g_err, "bogus"));
    assert_null(r.id);
    int64_t counts[STORE_RUN_STATE_COUNT];
    EXPECT(STORE_CORRUPT, store_run_count_by_state(f->s, counts, &g_err));
    store_run_list l;
    EXPECT(STORE_CORRUPT, store_run_list_page(f->s, NULL, &l, &g_err));
    store_run_list_free(&l);

    /* A store whose pages were overwritten: every call fails cleanly. */
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%03d", i);
        make_run(f->s, id, "etl", NULL);
    }
    store_close(f->s);
    f->s = NULL;
    free(raw_sql(f->path, "PRAGMA wal_checkpoint(TRUNCATE)"));
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, 4096 * 3, 4096), 4096 * 3); /* pages 2-4: schema and tables */
    close(fd);
    int rc = store_open(f->path, NULL, &s, &g_err);
    if (rc == STORE_OK) {
        int64_t c[STORE_RUN_STATE_COUNT];
        EXPECT(STORE_CORRUPT, store_run_count_by_state(s, c, &g_err));
        store_close(s);
    } else {
        assert_int_equal(rc, STORE_CORRUPT);
        assert_non_null(g_err);
    }
}


/* A migration that fails leaves the file at the version before it: each runs in one transaction. */
static void test_failed_migration_rolls_back(void **state)
{
    fixture *f = *state;
    fixture_fresh(f);
    f->s = open_store(f, 1);
    put_script(f->s, HASH_A);
    store_close(f->s);
    f->s = NULL;
    /* Something in the way of migration 2 (which creates the inbox). */
    free(raw_query(f, "CREATE TABLE inbox(x INTEGER)"));
    store *s = NULL;
    EXPECT(STORE_SCHEMA, store_open(f->url, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "migration to schema version 2"));
    assert_non_null(strstr(g_err, "already exists"));
    assert_query(f, version_sql(f), "1");
    if (is_pg(f)) {
        assert_query(f, "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
                        " AND table_name = 'inbox'", "1"); /* still the old one */
        assert_query(f, "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
                        " AND indexname = 'inbox_identity'", "0");
    } else {
        assert_query(f, "SELECT count(*) FROM pragma_table_info('inbox')", "1"); /* still the old one */
        assert_query(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'inbox_identity'", "0");
    }
    /* Out of the way: the migration completes. */
    free(raw_query(f, "DROP TABLE inbox"));
    f->s = open_store(f, 0);
    assert_int_equal(store_schema_version(f->s), store_schema_latest());
    store_script sc;
    OK(store_script_get(f->s, HASH_A, &sc, &g_err));
    store_script_free(&sc);
}

/* PostgreSQL: a schema holding someone else's tables is refused, not migrated; values written behind the
 * store's back surface as STORE_CORRUPT. */
static void test_foreign_schema_and_bad_values_pg(void **state)
{
    fixture *f = *state;
    char *other = pg_harness_new_schema(&g_pg);
    assert_non_null(other);
    free(pg_harness_query(other, "CREATE TABLE runs(x INTEGER)"));
    store *s = NULL;
    EXPECT(STORE_CORRUPT, store_open(other, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "not a sluice store"));
    /* Left alone: no version table was created. */
    char *n = pg_harness_query(other, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()");
    assert_string_equal(n, "1");
    free(n);
    free(other);

    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    free(raw_query(f, "ALTER TABLE runs DROP CONSTRAINT runs_state_check; UPDATE runs SET state = 'bogus'"));
    store_run r;
    EXPECT(STORE_CORRUPT, store_run_get(f->s, "run-1", &r, &g_err));
    assert_non_null(strstr(g_err, "bogus"));
    assert_null(r.id);
    int64_t counts[STORE_RUN_STATE_COUNT];
    EXPECT(STORE_CORRUPT, store_run_count_by_state(f->s, counts, &g_err));
    store_run_list l;
    EXPECT(STORE_CORRUPT, store_run_list_page(f->s, NULL, &l, &g_err));
    store_run_list_free(&l);
    /* A constraint still in place maps to STORE_INVALID with the server's message. */
    EXPECT(STORE_INVALID, store_step_insert(f->s, &(store_step){.run_id = "nope", .name = "a"}, &g_err));
    /* The server going away mid-session is STORE_IO with libpq's message, not a crash. */
    free(raw_query(f, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice'"));
    EXPECT(STORE_IO, store_script_get(f->s, HASH_A, &(store_script){0}, &g_err));
    assert_non_null(strstr(g_err, "terminat"));
}

/* Firestore: the schema version is the document meta/schema; a store whose version is newer than this binary's is
 * refused (STORE_SCHEMA), as on the SQL backends. */
static void test_fs_refuses_newer_schema(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_schema_version(f->s), store_schema_latest());
    assert_int_equal(fs_harness_put_doc(&g_fs, f->url, "meta/schema", "{\"version\":{\"integerValue\":\"99\"}}"), 0);
    store *s = NULL;
    EXPECT(STORE_SCHEMA, store_open(f->url, NULL, &s, &g_err));
    assert_null(s);
    assert_non_null(strstr(g_err, "99"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SQL_TEST(test_migration_from_v1),
        SQL_TEST(test_refuses_newer_schema),
        SQL_TEST(test_failed_migration_rolls_back),
        FS_TEST(test_fs_refuses_newer_schema),
        SQLITE_TEST(test_corrupt_and_foreign_files),
        PG_TEST(test_foreign_schema_and_bad_values_pg),
    };
    return STORE_RUN_TESTS(tests);
}
