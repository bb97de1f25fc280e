/* test_store_shared: the part of the store contract several engines on one store rely on (store.h, "several
 * engines on one store"), on both backends: leases (take, renew, refuse, expire, hand on with a new term,
 * release), run locks (held within a transaction; on PostgreSQL another transaction skips or waits for them),
 * and due steps / inbox events locked and skipped between two transactions of two handles. */
#include "store_fixture.h"
#include "util.h"

static void test_lease(void **state)
{
    fixture *f = *state;
    store_lease a = {0}, b = {0};
    OK(store_lease_acquire(f->s, "leader", "a", 10000, &a, &g_err));
    assert_true(a.held);
    assert_int_equal(a.term, 1);
    assert_string_equal(a.holder, "a");
    assert_true(a.expires_in_ms > 9000 && a.expires_in_ms <= 10000);
    store_lease_free(&a);

    /* another holder is refused while it lasts, and told who has it */
    store *s2 = open_store(f, 0);
    OK(store_lease_acquire(s2, "leader", "b", 10000, &b, &g_err));
    assert_false(b.held);
    assert_string_equal(b.holder, "a");
    assert_int_equal(b.term, 1);
    assert_true(b.expires_in_ms > 0);
    store_lease_free(&b);

    /* the holder renews: the same term */
    OK(store_lease_acquire(f->s, "leader", "a", 10000, &a, &g_err));
    assert_true(a.held);
    assert_int_equal(a.term, 1);
    store_lease_free(&a);

    /* a lease that ran out goes to the next one who asks, with a new term; the old holder is then refused */
    if (is_pg(f)) {
        OK(store_lease_acquire(f->s, "short", "a", 1, &a, &g_err)); /* the server's clock: 1 ms */
        store_lease_free(&a);
        usleep(20000);
        OK(store_lease_acquire(s2, "short", "b", 10000, &b, &g_err));
    } else {
        OK(store_lease_acquire(f->s, "short", "a", 1000, &a, &g_err));
        store_lease_free(&a);
        f->now += 1000;
        OK(store_lease_acquire(s2, "short", "b", 10000, &b, &g_err));
    }
    assert_true(b.held);
    assert_int_equal(b.term, 2);
    store_lease_free(&b);
    OK(store_lease_acquire(f->s, "short", "a", 10000, &a, &g_err));
    assert_false(a.held);
    assert_string_equal(a.holder, "b");
    store_lease_free(&a);

    /* release hands it on at once; releasing what one does not hold changes nothing */
    OK(store_lease_release(f->s, "leader", "b", &g_err));
    OK(store_lease_acquire(s2, "leader", "b", 10000, &b, &g_err));
    assert_false(b.held);
    store_lease_free(&b);
    OK(store_lease_release(f->s, "leader", "a", &g_err));
    OK(store_lease_acquire(s2, "leader", "b", 10000, &b, &g_err));
    assert_true(b.held);
    assert_int_equal(b.term, 2);
    store_lease_free(&b);

    EXPECT(STORE_INVALID, store_lease_acquire(f->s, "leader", "a", 0, &a, &g_err));
    EXPECT(STORE_INVALID, store_lease_acquire(f->s, "", "a", 10, &a, &g_err));
    store_close(s2);
}

static void test_run_lock(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    int got = 7;
    EXPECT(STORE_INVALID, store_run_lock(f->s, "run-1", 0, &got, &g_err)); /* outside a transaction */
    OK(store_begin(f->s, &g_err));
    OK(store_run_lock(f->s, "run-1", 0, &got, &g_err));
    assert_int_equal(got, 1);
    OK(store_run_lock(f->s, "run-1", 1, &got, &g_err)); /* again, in the same transaction */
    assert_int_equal(got, 1);
    EXPECT(STORE_NOTFOUND, store_run_lock(f->s, "nope", 0, &got, &g_err));
    assert_int_equal(got, 0);
    /* Firestore is shared too: replicas' transactions that lock one run conflict, and one of them waits (the
     * emulator's and Standard edition's pessimistic locks) or fails its commit with STORE_BUSY (optimistic). */
    assert_int_equal(store_shared(f->s), is_pg(f) || is_fs(f));
    if (is_pg(f)) {
        /* another handle's transaction skips the locked run, or waits for it up to its busy timeout */
        store_options o = {.busy_timeout_ms = 200, .clock_ms = fake_clock, .clock_arg = f};
        store *s2 = NULL;
        OK(store_open(f->url, &o, &s2, &g_err));
        OK(store_begin(s2, &g_err));
        OK(store_run_lock(s2, "run-1", 0, &got, &g_err));
        assert_int_equal(got, 0);
        int64_t t0 = util_mono_ms();
        EXPECT(STORE_BUSY, store_run_lock(s2, "run-1", 1, &got, &g_err));
        assert_true(util_mono_ms() - t0 >= 150);
        assert_true(store_in_transaction(s2)); /* a lock that timed out leaves the transaction usable */
        OK(store_step_insert(s2, &(store_step){.run_id = "run-1", .name = "other"}, &g_err));
        OK(store_commit(f->s, &g_err));
        OK(store_run_lock(s2, "run-1", 0, &got, &g_err));
        assert_int_equal(got, 1);
        OK(store_commit(s2, &g_err));
        store_close(s2);
    } else {
        OK(store_commit(f->s, &g_err));
    }
}

/* Firestore cannot skip rows another transaction holds: two engines' transactions see the same due steps and
 * unprocessed events, and their claims meet at commit. The second commit fails with STORE_BUSY and applies nothing,
 * so a step is claimed (and launched) by one engine only and an event consumed once. */
static void test_due_claims_conflict(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    make_step(f->s, "run-1", "s0");
    make_step(f->s, "run-1", "s1");
    int64_t ev_id = 0;
    OK(store_inbox_put(f->s, &(store_event){.message_id = "m0", .source = STORE_SRC_PUSH}, &ev_id, &g_err));
    store *s2 = open_store(f, 0);
    store_step_list a = {0}, b = {0};
    store_event_list ea = {0}, eb = {0};
    OK(store_begin(f->s, &g_err));
    OK(store_begin(s2, &g_err));
    OK(store_step_due(f->s, f->now, 10, &a, &g_err));
    OK(store_step_due(s2, f->now, 10, &b, &g_err));
    assert_int_equal(a.count, 2);
    assert_int_equal(b.count, 2); /* the same two: nothing is skipped */
    OK(store_inbox_fetch(f->s, 10, &ea, &g_err));
    OK(store_inbox_fetch(s2, 10, &eb, &g_err));
    assert_int_equal(ea.count, 1);
    assert_int_equal(eb.count, 1);
    for (size_t i = 0; i < a.count; i++) {
        OK(store_step_set_check(f->s, "run-1", a.items[i].name, 1, f->now + 1000, 0, NULL, &g_err));
        OK(store_step_set_check(s2, "run-1", b.items[i].name, 1, f->now + 2000, 0, NULL, &g_err));
    }
    OK(store_inbox_mark_processed(f->s, ev_id, 0, &g_err));
    OK(store_inbox_mark_processed(s2, ev_id, 0, &g_err));
    OK(store_commit(f->s, &g_err));
    EXPECT(STORE_BUSY, store_commit(s2, &g_err));
    assert_false(store_in_transaction(s2));
    store_step st;
    OK(store_step_get(s2, "run-1", "s0", &st, &g_err));
    assert_int_equal(st.next_check_at, f->now + 1000); /* the first claim, untouched by the second */
    store_step_free(&st);
    store_event_list_free(&eb);
    OK(store_inbox_fetch(s2, 10, &eb, &g_err));
    assert_int_equal(eb.count, 0);
    store_step_list_free(&a);
    store_step_list_free(&b);
    store_event_list_free(&ea);
    store_event_list_free(&eb);
    store_close(s2);
}

/* Two engines' transactions never take the same due step or inbox event (PostgreSQL; SQLite has one writer). */
static void test_due_and_inbox_skip_locked(void **state)
{
    fixture *f = *state;
    put_script(f->s, HASH_A);
    make_run(f->s, "run-1", "etl", NULL);
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "s%d", i);
        make_step(f->s, "run-1", name);
        char mid[8];
        snprintf(mid, sizeof mid, "m%d", i);
        OK(store_inbox_put(f->s, &(store_event){.message_id = mid, .source = STORE_SRC_PUSH}, NULL, &g_err));
    }
    store *s2 = open_store(f, 0);
    store_step_list a = {0}, b = {0}, b2 = {0};
    store_event_list ea = {0}, eb = {0};
    OK(store_begin(f->s, &g_err));
    OK(store_step_due(f->s, f->now, 2, &a, &g_err));
    OK(store_inbox_fetch(f->s, 3, &ea, &g_err));
    assert_int_equal(a.count, 2);
    assert_int_equal(ea.count, 3);
    if (is_pg(f)) {
        OK(store_begin(s2, &g_err));
        OK(store_step_due(s2, f->now, 10, &b, &g_err));
        OK(store_inbox_fetch(s2, 10, &eb, &g_err));
        assert_int_equal(b.count, 2); /* the other two */
        for (size_t i = 0; i < b.count; i++)
            for (size_t j = 0; j < a.count; j++) assert_string_not_equal(b.items[i].name, a.items[j].name);
        assert_int_equal(eb.count, 1);
        assert_int_equal(eb.items[0].id, ea.items[2].id + 1);
        OK(store_commit(s2, &g_err));
        /* outside a transaction nothing is locked: everything due is seen, f->s's locks notwithstanding */
        OK(store_step_due(s2, f->now, 10, &b2, &g_err));
        assert_int_equal(b2.count, 4);
        store_step_list_free(&b2);
        store_step_list_free(&b);
        store_event_list_free(&eb);
    }
    OK(store_commit(f->s, &g_err));
    /* and after the commit, from either handle */
    OK(store_step_due(s2, f->now, 10, &b, &g_err));
    assert_int_equal(b.count, 4);
    store_step_list_free(&a);
    store_step_list_free(&b);
    store_event_list_free(&ea);
    store_close(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_TEST(test_lease),
        STORE_TEST(test_run_lock),
        STORE_TEST(test_due_and_inbox_skip_locked),
        FS_TEST(test_due_claims_conflict),
    };
    return STORE_RUN_TESTS(tests);
}
