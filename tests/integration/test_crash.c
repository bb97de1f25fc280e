/* Crash test: 100 runs of the shipped workflows are driven by an engine process that is killed with SIGKILL at
 * random moments several times and restarted on the same store, against the emulator process. At the end every
 * run has succeeded and the emulator saw exactly one launch request and one job per step: no duplicate, no loss.
 * The kill points are seeded (SLUICE_CRASH_SEED) so a failure can be replayed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "emu_harness.h"
#include "engine.h"
#include "log.h"
#include "util.h"

#define N_RUNS 100
#define N_KILLS 8

/* The engine process: (re)creates the N_RUNS runs idempotently, then ticks until all of them are finished. */
static int worker(const char *db, const char *base, const char *sa)
{
    log_set_level(LOG_ERROR);
    store *st = NULL;
    store_options so = {.synchronous = STORE_SYNC_FULL};
    if (store_open(db, &so, &st, NULL) != STORE_OK) return 10;
    jobs_api_df_options ao = {.base_url = base, .credentials = sa};
    jobs_api *api = jobs_api_df_new(&ao, NULL);
    if (api == NULL) return 11;
    engine_options eo = {.st = st, .api = api, .rec = rec_policy_default()};
    eo.rec.poll_ms = 100;
    eo.rec.lease_ms = 1500;
    engine *e = engine_new(&eo, NULL);
    const char *files[] = {"workflows/example.lua", "workflows/fanout.lua"};
    for (int i = 0; i < 2; i++) {
        char *path = tu_src_path(files[i]);
        wf_diags d = {0};
        wf_workflow *wf = wf_load_file(path, NULL, &d);
        free(path);
        wf_diags_free(&d);
        if (wf == NULL || engine_add_workflow(e, wf, NULL) != 0) return 12;
    }
    for (int i = 0; i < N_RUNS; i++) {
        char key[32], id[32];
        snprintf(key, sizeof key, "crash-%d", i);
        json_t *params = json_pack("{s:i}", "i", i);
        int rc = engine_start_run(e, i % 2 ? "daily" : "example", params, key, "test", id, sizeof id, NULL);
        json_decref(params);
        if (rc < 0) return 13; /* 1: a restarted worker finds the run its key started */
    }
    for (;;) {
        engine_tick(e, 20);
        int64_t counts[STORE_RUN_STATE_COUNT] = {0};
        if (store_run_count_by_state(st, counts, NULL) != STORE_OK) continue;
        if (counts[STORE_RUN_SUCCEEDED] + counts[STORE_RUN_FAILED] + counts[STORE_RUN_CANCELLED] == N_RUNS) break;
    }
    engine_free(e);
    api->ops->free(api);
    store_close(st);
    return 0;
}

static pid_t spawn_worker(const char *db, const char *base, const char *sa)
{
    pid_t pid = fork();
    if (pid == 0) _exit(worker(db, base, sa));
    return pid;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_kill_and_restart(void **state)
{
    (void)state;
    emu_proc emu;
    /* Jobs long enough that the workload outlives the kills (a run of `daily` takes 5 jobs in sequence). */
    const char *args[] = {"--pending-ms", "100", "--running-ms", "400", NULL};
    assert_int_equal(emu_start(&emu, args), 0);
    char *dir = tu_tempdir();
    char db[600];
    snprintf(db, sizeof db, "%s/crash.db", dir);
    unsigned seed = getenv("SLUICE_CRASH_SEED") ? (unsigned)atoi(getenv("SLUICE_CRASH_SEED")) : (unsigned)time(NULL);
    fprintf(stderr, "crash seed %u (replay with SLUICE_CRASH_SEED=%u)\n", seed, seed);
    srand(seed);
    int kills = 0;
    for (int k = 0; k < N_KILLS; k++) {
        pid_t pid = spawn_worker(db, emu.base, emu.sa_path);
        sleep_ms(50 + rand() % 400);
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) break; /* finished before this kill */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        kills++;
    }
    pid_t pid = spawn_worker(db, emu.base, emu.sa_path);
    int status = 0;
    /* bounded: the final worker must finish within 120 s */
    for (int i = 0; i < 1200 && waitpid(pid, &status, WNOHANG) == 0; i++) sleep_ms(100);
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("the final worker did not finish in 120 s");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "final worker: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    fprintf(stderr, "killed the engine %d times\n", kills);
    assert_true(kills >= 3);

    /* every run succeeded */
    store *st = NULL;
    assert_int_equal(store_open(db, NULL, &st, NULL), STORE_OK);
    int64_t counts[STORE_RUN_STATE_COUNT] = {0};
    assert_int_equal(store_run_count_by_state(st, counts, NULL), STORE_OK);
    assert_int_equal(counts[STORE_RUN_SUCCEEDED], N_RUNS);
    store_close(st);

    /* exactly one launch request and one job per step: 50 x 3 (example) + 50 x 5 (daily, quick path) */
    json_t *stats = emu_call(&emu, "GET", "/emulator/stats", NULL);
    assert_non_null(stats);
    json_t *created = json_object_get(stats, "jobs_created_by_name");
    json_t *launches = json_object_get(stats, "launches_by_name");
    assert_int_equal(json_object_size(created), 50 * 3 + 50 * 5);
    assert_int_equal(json_object_size(launches), 50 * 3 + 50 * 5);
    const char *name;
    json_t *v;
    int dup = 0;
    json_object_foreach(created, name, v) if (json_integer_value(v) != 1) {
        fprintf(stderr, "job %s created %lld times\n", name, (long long)json_integer_value(v));
        dup++;
    }
    json_object_foreach(launches, name, v) if (json_integer_value(v) != 1) {
        fprintf(stderr, "job %s launched %lld times\n", name, (long long)json_integer_value(v));
        dup++;
    }
    assert_int_equal(dup, 0);
    json_decref(stats);
    emu_stop(&emu);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    /* Debugging aid: SLUICE_CRASH_WORKER="DB BASE_URL SA_FILE" runs one engine process in the foreground. */
    const char *w = getenv("SLUICE_CRASH_WORKER");
    if (w != NULL) {
        char db[512], base[256], sa[512];
        if (sscanf(w, "%511s %255s %511s", db, base, sa) == 3) return worker(db, base, sa);
        return 2;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill_and_restart)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
