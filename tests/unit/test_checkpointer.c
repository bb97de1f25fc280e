/* test_checkpointer: the SQLite write-ahead log is checkpointed off the committing path (issue 13: a group
 * commit that crossed SQLite's auto-checkpoint threshold copied the log into the database and synced it before
 * its events were answered, the slowest pushes of the benchmark). A manual_checkpoint handle never checkpoints
 * as it commits; the checkpointer thread does, passive; a log that grows anyway is handed to the writer's turn
 * between batches (and, longer still, to a RESTART); the writer's turn resets it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "checkpointer.h"
#include "metrics.h"
#include "store.h"
#include "testutil.h"

static void test_decide(void **state)
{
    (void)state;
    checkpointer_policy d = checkpointer_policy_defaults(NULL);
    assert_int_equal(d.interval_ms, 100);
    assert_int_equal(d.writer_frames, 4096);
    assert_int_equal(d.restart_frames, 65536);
    store_checkpoint_result r = {.log_frames = 0};
    assert_int_equal(checkpointer_decide(NULL, &r), CHECKPOINT_NEXT_WAIT);
    r.log_frames = 4095, r.checkpointed = 4095;
    assert_int_equal(checkpointer_decide(NULL, &r), CHECKPOINT_NEXT_WAIT);
    r.log_frames = 4096, r.checkpointed = 4000;
    assert_int_equal(checkpointer_decide(NULL, &r), CHECKPOINT_NEXT_WRITER);
    r.log_frames = 65536;
    assert_int_equal(checkpointer_decide(NULL, &r), CHECKPOINT_NEXT_RESTART);
    checkpointer_policy p = {.writer_frames = 100, .restart_frames = 50}; /* restart below writer: raised to it */
    d = checkpointer_policy_defaults(&p);
    assert_int_equal(d.restart_frames, 100);
    r.log_frames = 75, r.checkpointed = 0; /* past the configured 50, below the raised 100 */
    assert_int_equal(checkpointer_decide(&p, &r), CHECKPOINT_NEXT_WAIT);
    r.log_frames = 100;
    assert_int_equal(checkpointer_decide(&p, &r), CHECKPOINT_NEXT_RESTART);
}

/* Commits `n` transactions of `per` events each, with unique ids from *seq. */
static void put_events(store *s, int n, int per, int *seq)
{
    char *err = NULL;
    for (int i = 0; i < n; i++) {
        assert_int_equal(store_begin(s, &err), STORE_OK);
        for (int j = 0; j < per; j++) {
            char mid[32], payload[600];
            snprintf(mid, sizeof mid, "m-%d", (*seq)++);
            memset(payload, 'x', sizeof payload);
            snprintf(payload, sizeof payload, "{\"pad\":\"%0500d\"}", *seq);
            store_event ev = {.message_id = mid, .source = STORE_SRC_PUSH, .job_id = mid,
                              .state = "JOB_STATE_DONE", .payload_json = payload};
            assert_int_equal(store_inbox_put(s, &ev, NULL, &err), STORE_OK);
        }
        assert_int_equal(store_commit(s, &err), STORE_OK);
    }
    free(err);
}

static void test_manual_handle_does_not_checkpoint(void **state)
{
    (void)state;
    char *dir = tu_tempdir(), path[512];
    snprintf(path, sizeof path, "%s/s.db", dir);
    char *err = NULL;
    store *s = NULL, *c = NULL;
    store_options o = {.manual_checkpoint = 1};
    assert_int_equal(store_open(path, &o, &s, &err), STORE_OK);
    assert_int_equal(store_open(path, &o, &c, &err), STORE_OK);
    int seq = 0;
    put_events(s, 400, 10, &seq); /* well over SQLite's default threshold of 1000 pages */
    store_checkpoint_result r;
    assert_int_equal(store_checkpoint(c, STORE_CHECKPOINT_PASSIVE, &r, &err), STORE_OK);
    assert_true(r.log_frames > 1000);
    assert_int_equal(r.checkpointed, r.log_frames); /* no reader: the passive one copied everything */
    /* The next commit starts the log from its beginning. */
    put_events(s, 1, 1, &seq);
    assert_int_equal(store_checkpoint(c, STORE_CHECKPOINT_PASSIVE, &r, &err), STORE_OK);
    assert_true(r.log_frames < 50);
    /* In a transaction: refused. */
    assert_int_equal(store_begin(c, &err), STORE_OK);
    free(err), err = NULL;
    assert_int_equal(store_checkpoint(c, STORE_CHECKPOINT_PASSIVE, &r, &err), STORE_INVALID);
    assert_int_equal(store_rollback(c, NULL), STORE_OK);
    /* An ordinary handle keeps SQLite's auto-checkpoint: its log never grows far past 1000 pages. */
    store *a = NULL;
    store_options plain = {0};
    assert_int_equal(store_open(path, &plain, &a, &err), STORE_OK);
    put_events(a, 400, 10, &seq);
    assert_int_equal(store_checkpoint(c, STORE_CHECKPOINT_PASSIVE, &r, &err), STORE_OK);
    assert_true(r.log_frames < 1100);
    store_close(a);
    store_close(c);
    store_close(s);
    free(err);
    tu_rmtree(dir);
    free(dir);
}

static int wal_frames_at_most(const char *path, int64_t frames)
{
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    if (stat(wal, &st) != 0) return 1;
    return st.st_size <= 32 + frames * (24 + 4096);
}

/* A writer that commits without pause, as the ingress writer under load: the checkpointer thread alone cannot
 * reset the log; the writer's turns between batches do, and keep the log file bounded. */
static void test_writer_turn_bounds_the_log(void **state)
{
    (void)state;
    char *dir = tu_tempdir(), path[512];
    snprintf(path, sizeof path, "%s/s.db", dir);
    char *err = NULL;
    store *w = NULL;
    store_options o = {.manual_checkpoint = 1};
    assert_int_equal(store_open(path, &o, &w, &err), STORE_OK);
    checkpointer_policy p = {.interval_ms = 5, .writer_frames = 200, .restart_frames = 100000};
    checkpointer *c = checkpointer_start(path, &o, &p, &err);
    assert_non_null(c);
    int seq = 0, turns = 0;
    int64_t deadline = (int64_t)time(NULL) + 20;
    for (int i = 0; i < 3000 && (turns < 3 || i < 1500) && (int64_t)time(NULL) < deadline; i++) {
        put_events(w, 1, 5, &seq);
        turns += checkpointer_writer_turn(c, w);
    }
    assert_true(turns >= 1);
    /* Bounded by the policy, not by the number of commits (some 3000 pages per 500 of them here). */
    assert_true(wal_frames_at_most(path, 4 * 200 + 2000));
    assert_int_equal(checkpointer_writer_turn(NULL, w), 0);
    checkpointer_stop(c);
    checkpointer_stop(NULL);
    store_close(w);
    free(err);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    metrics_declare("sluice_store_checkpoint_seconds", METRIC_HISTOGRAM, "test");
    metrics_declare("sluice_store_wal_frames", METRIC_GAUGE, "test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_manual_handle_does_not_checkpoint),
        cmocka_unit_test(test_writer_turn_bounds_the_log),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    metrics_reset();
    return rc;
}
