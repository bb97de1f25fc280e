/* test_store_outbox: the store's notification outbox and deadlines (store_outbox.c), on SQLite and on PostgreSQL
 * (store_fixture.h): an event written inside the transition's transaction exists exactly when it commits, the same
 * (id, sink) twice is a duplicate, claims are leases (a claimed row is nobody else's until its lease runs out, two
 * handles never claim one row at once), a result applies only to the claim it answers, per-run listing, and
 * deadlines armed, found due, settled once (a missed one stays missed when armed again). */
#include "store_fixture.h"

static store_note note(const char *id, const char *sink, const char *run)
{
    return (store_note){.id = (char *)id, .sink = (char *)sink, .run_id = (char *)run, .type = "failed",
                        .event_json = "{\"specversion\":\"1.0\"}"};
}

static void test_outbox_put_in_transition(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    /* rolled back with its transition: no event */
    OK(store_begin(f->s, &g_err));
    OK(store_run_set_state(f->s, "r1", STORE_RUN_PENDING, STORE_RUN_FAILED, "boom", &g_err));
    store_note n = note("r1.failed.1", "webhook:https://h/x", "r1");
    OK(store_outbox_put(f->s, &n, &g_err));
    OK(store_rollback(f->s, &g_err));
    store_note_list l;
    OK(store_outbox_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 0);
    store_note_list_free(&l);
    /* committed with it: one pending row per sink */
    OK(store_begin(f->s, &g_err));
    OK(store_run_set_state(f->s, "r1", STORE_RUN_PENDING, STORE_RUN_FAILED, "boom", &g_err));
    OK(store_outbox_put(f->s, &n, &g_err));
    store_note n2 = note("r1.failed.1", "pubsub:projects/p/topics/t", "r1");
    OK(store_outbox_put(f->s, &n2, &g_err));
    EXPECT(STORE_DUPLICATE, store_outbox_put(f->s, &n, &g_err));
    OK(store_commit(f->s, &g_err));
    OK(store_outbox_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_int_equal(l.items[0].state, STORE_NOTE_PENDING);
    assert_int_equal(l.items[0].attempts, 0);
    assert_string_equal(l.items[0].event_json, "{\"specversion\":\"1.0\"}");
    assert_int_equal(l.items[0].created_at, f->now);
    store_note_list_free(&l);
    int64_t c = 0;
    OK(store_outbox_count(f->s, "r1", "failed", &c, &g_err));
    assert_int_equal(c, 1);
    OK(store_outbox_count(f->s, "r1", "started", &c, &g_err));
    assert_int_equal(c, 0);
    /* bad input loses nothing */
    store_note bad = note("x", "s", "r1");
    bad.event_json = "[1";
    EXPECT(STORE_INVALID, store_outbox_put(f->s, &bad, &g_err));
    bad = note("x", "s", "no-such-run");
    EXPECT(STORE_INVALID, store_outbox_put(f->s, &bad, &g_err));
}

static void test_outbox_claim_lease_and_finish(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    store_note n = note("e1", "webhook:a", "r1");
    OK(store_outbox_put(f->s, &n, &g_err));
    n = note("e2", "webhook:a", "r1");
    n.next_attempt_at = f->now + 5000;
    OK(store_outbox_put(f->s, &n, &g_err));
    int64_t due = 0;
    OK(store_outbox_next_due(f->s, &due, &g_err));
    assert_int_equal(due, f->now);

    store_note_list l;
    OK(store_outbox_claim(f->s, f->now, 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].id, "e1");
    assert_int_equal(l.items[0].attempts, 1);
    store_note_list_free(&l);
    /* leased: a second claimer (another handle) gets nothing until the lease runs out */
    char *url = NULL;
    assert_true(asprintf(&url, "%s", f->url) > 0);
    store *s2 = NULL;
    OK(store_open(url, NULL, &s2, &g_err));
    OK(store_outbox_claim(s2, f->now + 999, 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 0);
    store_note_list_free(&l);
    /* the lease passed: the row is claimed again (attempt 2); the first claim's answer no longer applies */
    OK(store_outbox_claim(s2, f->now + 1000, 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_int_equal(l.items[0].attempts, 2);
    store_note_list_free(&l);
    EXPECT(STORE_CONFLICT, store_outbox_finish(f->s, "e1", "webhook:a", 1, STORE_NOTE_DELIVERED, 0, NULL, &g_err));
    OK(store_outbox_finish(s2, "e1", "webhook:a", 2, STORE_NOTE_PENDING, f->now + 4000, "HTTP 503", &g_err));
    EXPECT(STORE_NOTFOUND, store_outbox_finish(s2, "nope", "webhook:a", 2, STORE_NOTE_DELIVERED, 0, NULL, &g_err));
    OK(store_outbox_next_due(f->s, &due, &g_err));
    assert_int_equal(due, f->now + 4000);
    /* both due later: one claim takes both, earliest first */
    OK(store_outbox_claim(f->s, f->now + 6000, 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].id, "e1");
    assert_int_equal(l.items[0].attempts, 3);
    assert_string_equal(l.items[0].last_error, "HTTP 503");
    OK(store_outbox_finish(f->s, "e1", "webhook:a", 3, STORE_NOTE_DELIVERED, 0, NULL, &g_err));
    OK(store_outbox_finish(f->s, "e2", "webhook:a", 1, STORE_NOTE_GIVEN_UP, 0, "gone", &g_err));
    store_note_list_free(&l);
    OK(store_outbox_list_run(f->s, "r1", &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_int_equal(l.items[0].state, STORE_NOTE_DELIVERED);
    assert_null(l.items[0].last_error);
    assert_true(l.items[0].delivered_at > 0);
    assert_int_equal(l.items[1].state, STORE_NOTE_GIVEN_UP);
    assert_string_equal(l.items[1].last_error, "gone");
    store_note_list_free(&l);
    OK(store_outbox_next_due(f->s, &due, &g_err));
    assert_true(due == INT64_MAX);
    assert_string_equal(store_note_state_name(STORE_NOTE_GIVEN_UP), "given_up");
    store_close(s2);
    free(url);
}

typedef struct {
    const char *url;
    int64_t now;
    int claimed;
} claimer;

static void *claim_thread(void *arg)
{
    claimer *c = arg;
    store *s = NULL;
    if (store_open(c->url, NULL, &s, NULL) != STORE_OK) return NULL;
    for (int i = 0; i < 50; i++) {
        store_note_list l = {0};
        if (store_outbox_claim(s, c->now, 60000, 3, &l, NULL) == STORE_OK) c->claimed += (int)l.count;
        store_note_list_free(&l);
    }
    store_close(s);
    return NULL;
}

/* Two handles claiming at once never both get a row (each row is claimed exactly once within its lease). */
static void test_outbox_concurrent_claims(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    char id[16];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "e%d", i);
        store_note n = note(id, "webhook:a", "r1");
        OK(store_outbox_put(f->s, &n, &g_err));
    }
    claimer a = {f->url, f->now, 0}, b = {f->url, f->now, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, claim_thread, &a);
    pthread_create(&tb, NULL, claim_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.claimed + b.claimed, 60);
    store_note_list l;
    OK(store_outbox_list_run(f->s, "r1", &l, &g_err));
    for (size_t i = 0; i < l.count; i++) assert_int_equal(l.items[i].attempts, 1);
    store_note_list_free(&l);
}

static void test_deadlines(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "r1", "wf", NULL);
    OK(store_deadline_arm(f->s, "r1", "", f->now + 100, &g_err));
    OK(store_deadline_arm(f->s, "r1", "Load", f->now + 50, &g_err));
    int64_t at = 0;
    OK(store_deadline_next_due(f->s, &at, &g_err));
    assert_int_equal(at, f->now + 50);
    store_deadline_list l;
    OK(store_deadline_due(f->s, f->now + 60, 10, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].scope, "Load");
    store_deadline_list_free(&l);
    OK(store_begin(f->s, &g_err));
    OK(store_deadline_due(f->s, f->now + 100, 10, &l, &g_err));
    assert_int_equal(l.count, 2);
    assert_string_equal(l.items[0].scope, "Load");
    assert_string_equal(l.items[1].scope, "");
    store_deadline_list_free(&l);
    OK(store_deadline_settle(f->s, "r1", "Load", 1, &g_err));
    OK(store_deadline_settle(f->s, "r1", "", 0, &g_err));
    OK(store_commit(f->s, &g_err));
    EXPECT(STORE_CONFLICT, store_deadline_settle(f->s, "r1", "Load", 1, &g_err));
    OK(store_deadline_next_due(f->s, &at, &g_err));
    assert_true(at == INT64_MAX);
    /* a met deadline can be armed again (a redrive); a missed one stays missed */
    OK(store_deadline_arm(f->s, "r1", "", f->now + 500, &g_err));
    OK(store_deadline_arm(f->s, "r1", "Load", f->now + 500, &g_err));
    OK(store_deadline_due(f->s, f->now + 1000, 10, &l, &g_err));
    assert_int_equal(l.count, 1);
    assert_string_equal(l.items[0].scope, "");
    store_deadline_list_free(&l);
    EXPECT(STORE_INVALID, store_deadline_arm(f->s, "no-such-run", "", 1, &g_err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_outbox_put_in_transition),
        STORE_TEST(test_outbox_claim_lease_and_finish),
        STORE_TEST(test_outbox_concurrent_claims),
        STORE_TEST(test_deadlines),
    };
    return STORE_RUN_TESTS(tests);
}
