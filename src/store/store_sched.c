/* store_sched: capacity in the store (store.h, "capacity"): the job pools (a lock row per project and region that
 * replicas take to admit launches one at a time, and the count of the steps holding a pool's slots) and the steps
 * waiting for capacity (a pool's, or Dataflow's quota), woken oldest first when a slot frees.
 * Uses: store_sql.h (one statement per call, both backends, inside the caller's transaction); a Firestore handle
 * goes to store_firestore_sched.c after the argument checks.
 * Must not: decide who waits or for how long (the engine does, engine_pool.c), or keep state between calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "store_firestore_attempts.h"
#include "store_sql.h"

int store_pool_active(store *s, const char *project, const char *region, int64_t *active, char **err)
{
    if (active != NULL) *active = 0;
    if (s == NULL || project == NULL || region == NULL || active == NULL)
        return store_fail(err, STORE_INVALID, "pool_active: project and region are required");
    if (!store_in_transaction(s)) return store_fail(err, STORE_INVALID, "pool_active: outside a transaction");
    if (store_firestore_native(s)) return fs_pool_active(s, project, region, active, err);
    char key[600];
    snprintf(key, sizeof key, "%s/%s", project, region);
    sql_param k[] = {SQL_T(key)};
    sql_result r;
    /* SQLite's transaction holds the write lock already; PostgreSQL's takes the pool's row until it ends, so two
     * replicas cannot both count n - 1 and both launch. */
    int rc = sql_exec(s, "SELECT 1", "INSERT INTO job_pools(pool) VALUES ($1) ON CONFLICT (pool) DO UPDATE SET pool = EXCLUDED.pool",
                            k, store_postgres_native(s) ? 1 : 0, &r, "pool_active", err);
    sql_result_free(&r);
    if (rc != STORE_OK) return rc;
    sql_param p[] = {SQL_T(project), SQL_T(region)};
    rc = sql_exec(s,
                        "SELECT count(*) FROM steps WHERE project = ?1 AND region = ?2"
                        " AND state IN ('launching','running','cancelling')",
                        "SELECT count(*) FROM steps WHERE project = $1 AND region = $2"
                        " AND state IN ('launching','running','cancelling')",
                        p, 2, &r, "pool_active", err);
    if (rc == STORE_OK && r.rows == 1) *active = sql_int(&r, 0, 0);
    sql_result_free(&r);
    return rc;
}

int store_step_wait_capacity(store *s, const char *run_id, const char *name, int from_state, int attempt,
                             const char *project, const char *region, int64_t next_check_at, const char *note,
                             char **err)
{
    if (from_state != STORE_STEP_PENDING && from_state != STORE_STEP_LAUNCHING)
        return store_fail(err, STORE_INVALID, "step_wait_capacity: a step waits from pending or launching only");
    if (s == NULL || run_id == NULL || name == NULL || project == NULL || region == NULL)
        return store_fail(err, STORE_INVALID, "step_wait_capacity: run_id, name, project and region are required");
    if (store_firestore_native(s))
        return fs_step_wait_capacity(s, run_id, name, from_state, attempt, project, region, next_check_at, note, err);
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(run_id), SQL_T(name), SQL_I(attempt), SQL_I(next_check_at), SQL_T(note), SQL_I(now),
                     SQL_T(project), SQL_T(region), SQL_T(store_step_state_name((store_step_state)from_state))};
    sql_result r;
    /* A launching step without a job forgets its intent, so the same attempt (the same job name) goes again; a
     * pending one keeps its last attempt's job name, from which the next attempt is numbered. */
    int rc = sql_exec(s,
                            "UPDATE steps SET job_name = CASE WHEN state = 'launching' THEN NULL ELSE job_name END,"
                            " request = CASE WHEN state = 'launching' THEN NULL ELSE request END,"
                            " started_at = CASE WHEN state = 'launching' THEN NULL ELSE started_at END,"
                            " deadline_at = CASE WHEN state = 'launching' THEN NULL ELSE deadline_at END,"
                            " state = 'pending', next_check_at = ?4, error = ?5, updated_at = ?6, check_failures = 0,"
                            " project = ?7, region = ?8"
                            " WHERE run_id = ?1 AND name = ?2 AND attempt = ?3"
                            " AND state = ?9 AND (state = 'pending' OR job_id IS NULL)",
                            "UPDATE steps SET job_name = CASE WHEN state = 'launching' THEN NULL ELSE job_name END,"
                            " request = CASE WHEN state = 'launching' THEN NULL ELSE request END,"
                            " started_at = CASE WHEN state = 'launching' THEN NULL ELSE started_at END,"
                            " deadline_at = CASE WHEN state = 'launching' THEN NULL ELSE deadline_at END,"
                            " state = 'pending', next_check_at = $4, error = $5, updated_at = $6, check_failures = 0,"
                            " project = $7, region = $8"
                            " WHERE run_id = $1 AND name = $2 AND attempt = $3::int"
                            " AND state = $9 AND (state = 'pending' OR job_id IS NULL)",
                            p, 9, &r, "step_wait_capacity", err);
    int64_t changed = r.changes;
    sql_result_free(&r);
    if (rc != STORE_OK) return rc;
    if (changed == 0) return store_fail(err, STORE_CONFLICT, "step_wait_capacity: step %s of run %s moved", name, run_id);
    /* The first wait's time stays: it orders the waiters of a pool. parked_at is the step's next_check_at as parked
     * here: a wake moves only a step that still has it (one an engine claimed since is that engine's). */
    sql_param w[] = {SQL_T(run_id), SQL_T(name), SQL_T(project), SQL_T(region), SQL_I(now), SQL_I(next_check_at)};
    rc = sql_exec(s,
                        "INSERT INTO step_waits(run_id, name, project, region, since, parked_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(run_id, name) DO UPDATE"
                        " SET project = excluded.project, region = excluded.region, parked_at = excluded.parked_at",
                        "INSERT INTO step_waits(run_id, name, project, region, since, parked_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT(run_id, name) DO UPDATE"
                        " SET project = EXCLUDED.project, region = EXCLUDED.region, parked_at = EXCLUDED.parked_at",
                        w, 6, &r, "step_wait_capacity", err);
    sql_result_free(&r);
    return rc;
}

int store_step_wait_since(store *s, const char *run_id, const char *name, int64_t *since, char **err)
{
    if (since != NULL) *since = 0;
    if (s == NULL || run_id == NULL || name == NULL || since == NULL)
        return store_fail(err, STORE_INVALID, "step_wait_since: run_id and name are required");
    if (store_firestore_native(s)) return fs_step_wait_since(s, run_id, name, since, err);
    sql_param p[] = {SQL_T(run_id), SQL_T(name)};
    sql_result r;
    int rc = sql_exec(s, "SELECT since FROM step_waits WHERE run_id = ?1 AND name = ?2",
                            "SELECT since FROM step_waits WHERE run_id = $1 AND name = $2", p, 2, &r,
                            "step_wait_since", err);
    if (rc == STORE_OK && r.rows == 1) *since = sql_int(&r, 0, 0);
    sql_result_free(&r);
    return rc;
}

int store_pool_wake(store *s, const char *project, const char *region, int n, int *woken, char **err)
{
    if (woken != NULL) *woken = 0;
    if (s == NULL || project == NULL || region == NULL || n < 1)
        return store_fail(err, STORE_INVALID, "pool_wake: project, region and n >= 1 are required");
    if (store_firestore_native(s)) return fs_pool_wake(s, project, region, n, woken, err);
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(project), SQL_T(region), SQL_I(n), SQL_I(now)};
    sql_result r;
    /* Due at their first wait's time: the oldest waiter is taken first (store_step_due goes by next_check_at). */
    int rc = sql_exec(
        s,
        "UPDATE steps SET next_check_at = (SELECT w.since FROM step_waits w WHERE w.run_id = steps.run_id"
        " AND w.name = steps.name) WHERE (run_id, name) IN (SELECT w.run_id, w.name FROM step_waits w"
        " JOIN steps t ON t.run_id = w.run_id AND t.name = w.name WHERE w.project = ?1 AND w.region = ?2"
        " AND t.state = 'pending' AND t.next_check_at = w.parked_at AND t.next_check_at > ?4 ORDER BY w.since LIMIT ?3)",
        "UPDATE steps s SET next_check_at = d.since FROM (SELECT t.id, w.since FROM step_waits w"
        " JOIN steps t ON t.run_id = w.run_id AND t.name = w.name WHERE w.project = $1 AND w.region = $2"
        " AND t.state = 'pending' AND t.next_check_at = w.parked_at AND t.next_check_at > $4 ORDER BY w.since LIMIT $3"
        " FOR UPDATE OF t SKIP LOCKED) d"
        " WHERE s.id = d.id",
        p, 4, &r, "pool_wake", err);
    if (rc == STORE_OK && woken != NULL) *woken = (int)r.changes;
    sql_result_free(&r);
    return rc;
}

int store_step_wait_clear(store *s, const char *run_id, const char *name, char **err)
{
    if (s == NULL || run_id == NULL || name == NULL)
        return store_fail(err, STORE_INVALID, "step_wait_clear: run_id and name are required");
    if (store_firestore_native(s)) return fs_step_wait_clear(s, run_id, name, err);
    sql_param p[] = {SQL_T(run_id), SQL_T(name)};
    sql_result r;
    int rc = sql_exec(s, "DELETE FROM step_waits WHERE run_id = ?1 AND name = ?2",
                            "DELETE FROM step_waits WHERE run_id = $1 AND name = $2", p, 2, &r, "step_wait_clear", err);
    sql_result_free(&r);
    return rc;
}

/* ---- runs waiting for their workflow's max_active_runs ---- */

int store_run_slots(store *s, const char *workflow, int64_t *active, char **err)
{
    if (active != NULL) *active = 0;
    if (s == NULL || workflow == NULL || active == NULL)
        return store_fail(err, STORE_INVALID, "run_slots: workflow is required");
    if (!store_in_transaction(s)) return store_fail(err, STORE_INVALID, "run_slots: outside a transaction");
    if (store_firestore_native(s)) return fs_run_slots(s, workflow, active, err);
    char key[600];
    snprintf(key, sizeof key, "runs:%s", workflow);
    sql_param k[] = {SQL_T(key)};
    sql_result r;
    int rc = sql_exec(s, "SELECT 1", "INSERT INTO job_pools(pool) VALUES ($1) ON CONFLICT (pool) DO UPDATE SET pool = EXCLUDED.pool",
                            k, store_postgres_native(s) ? 1 : 0, &r, "run_slots", err);
    sql_result_free(&r);
    if (rc != STORE_OK) return rc;
    sql_param p[] = {SQL_T(workflow)};
    rc = sql_exec(s, "SELECT count(*) FROM runs WHERE workflow = ?1 AND state IN ('running','cancelling')",
                        "SELECT count(*) FROM runs WHERE workflow = $1 AND state IN ('running','cancelling')", p, 1, &r,
                        "run_slots", err);
    if (rc == STORE_OK && r.rows == 1) *active = sql_int(&r, 0, 0);
    sql_result_free(&r);
    return rc;
}

int store_run_queued(store *s, const char *workflow, int limit, char ***ids, size_t *n, char **err)
{
    if (ids != NULL) *ids = NULL;
    if (n != NULL) *n = 0;
    if (s == NULL || workflow == NULL || ids == NULL || n == NULL || limit < 1 || limit > 10000)
        return store_fail(err, STORE_INVALID, "run_queued: workflow and a limit 1..10000 are required");
    if (store_firestore_native(s)) return fs_run_queued(s, workflow, limit, ids, n, err);
    sql_param p[] = {SQL_T(workflow), SQL_I(limit)};
    sql_result r;
    int rc = sql_exec(s, "SELECT id FROM runs WHERE workflow = ?1 AND state = 'pending' ORDER BY created_at, id LIMIT ?2",
                            "SELECT id FROM runs WHERE workflow = $1 AND state = 'pending' ORDER BY created_at, id LIMIT $2",
                            p, 2, &r, "run_queued", err);
    if (rc == STORE_OK && r.rows > 0) {
        *ids = xcalloc(r.rows, sizeof **ids);
        for (size_t i = 0; i < r.rows; i++) {
            (*ids)[i] = r.cells[i * r.cols];
            r.cells[i * r.cols] = NULL;
        }
        *n = r.rows;
    }
    sql_result_free(&r);
    return rc;
}

/* ---- logical times of runs, and the schedules' progress ---- */

int store_run_times_put(store *s, const char *run_id, int64_t logical, int64_t start, int64_t end, char **err)
{
    if (s == NULL || run_id == NULL) return store_fail(err, STORE_INVALID, "run_times_put: run_id is required");
    if (store_firestore_native(s)) return fs_run_times_put(s, run_id, logical, start, end, err);
    sql_param p[] = {SQL_T(run_id), SQL_I(logical), SQL_I(start), SQL_I(end)};
    sql_result r;
    int rc = sql_exec(s,
                            "INSERT INTO run_times(run_id, logical_time, interval_start, interval_end)"
                            " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(run_id) DO NOTHING",
                            "INSERT INTO run_times(run_id, logical_time, interval_start, interval_end)"
                            " VALUES ($1, $2, $3, $4) ON CONFLICT(run_id) DO NOTHING",
                            p, 4, &r, "run_times_put", err);
    sql_result_free(&r);
    return rc;
}

int store_run_times_get(store *s, const char *run_id, int64_t *logical, int64_t *start, int64_t *end, char **err)
{
    *logical = *start = *end = 0;
    if (s == NULL || run_id == NULL) return store_fail(err, STORE_INVALID, "run_times_get: run_id is required");
    if (store_firestore_native(s)) return fs_run_times_get(s, run_id, logical, start, end, err);
    sql_param p[] = {SQL_T(run_id)};
    sql_result r;
    int rc = sql_exec(s, "SELECT logical_time, interval_start, interval_end FROM run_times WHERE run_id = ?1",
                            "SELECT logical_time, interval_start, interval_end FROM run_times WHERE run_id = $1", p, 1,
                            &r, "run_times_get", err);
    if (rc == STORE_OK && r.rows == 0) rc = STORE_NOTFOUND; /* no message: most runs have no logical time */
    if (rc == STORE_OK) {
        *logical = sql_int(&r, 0, 0);
        *start = sql_int(&r, 0, 1);
        *end = sql_int(&r, 0, 2);
    }
    sql_result_free(&r);
    return rc;
}

int store_schedule_mark(store *s, const char *workflow, int64_t seen, int64_t handled, int64_t *mark, char **err)
{
    if (mark != NULL) *mark = 0;
    if (s == NULL || workflow == NULL || mark == NULL)
        return store_fail(err, STORE_INVALID, "schedule_mark: workflow is required");
    if (store_firestore_native(s)) return fs_schedule_mark(s, workflow, seen, handled, mark, err);
    sql_param p[] = {SQL_T(workflow), SQL_I(seen), SQL_I(handled)};
    sql_result r;
    /* The first sight records `seen`; later calls only move the mark forward (replicas may race: the larger wins). */
    int rc = sql_exec(s,
                            "INSERT INTO schedule_marks(workflow, handled_to) VALUES (?1, ?2) ON CONFLICT(workflow)"
                            " DO UPDATE SET handled_to = max(handled_to, ?3) RETURNING handled_to",
                            "INSERT INTO schedule_marks(workflow, handled_to) VALUES ($1, $2) ON CONFLICT(workflow)"
                            " DO UPDATE SET handled_to = greatest(schedule_marks.handled_to, $3) RETURNING handled_to",
                            p, 3, &r, "schedule_mark", err);
    if (rc == STORE_OK && r.rows == 1) *mark = sql_int(&r, 0, 0);
    sql_result_free(&r);
    return rc;
}

int store_run_count_active(store *s, const char *workflow, int64_t *active, int64_t *queued, char **err)
{
    *active = *queued = 0;
    if (s == NULL || workflow == NULL) return store_fail(err, STORE_INVALID, "run_count_active: workflow is required");
    if (store_firestore_native(s)) return fs_run_count_active(s, workflow, active, queued, err);
    sql_param p[] = {SQL_T(workflow)};
    sql_result r;
    int rc = sql_exec(s,
                            "SELECT count(*) FILTER (WHERE state IN ('running','cancelling')),"
                            " count(*) FILTER (WHERE state = 'pending') FROM runs WHERE workflow = ?1"
                            " AND state IN ('pending','running','cancelling')",
                            "SELECT count(*) FILTER (WHERE state IN ('running','cancelling')),"
                            " count(*) FILTER (WHERE state = 'pending') FROM runs WHERE workflow = $1"
                            " AND state IN ('pending','running','cancelling')",
                            p, 1, &r, "run_count_active", err);
    if (rc == STORE_OK && r.rows == 1) {
        *active = sql_int(&r, 0, 0);
        *queued = sql_int(&r, 0, 1);
    }
    sql_result_free(&r);
    return rc;
}

/* ---- backfills: one document per backfill, keyed by its id ---- */

int store_backfill_put(store *s, const char *id, const char *workflow, const char *state, const char *doc, char **err)
{
    if (s == NULL || id == NULL || workflow == NULL || state == NULL || doc == NULL)
        return store_fail(err, STORE_INVALID, "backfill_put: id, workflow, state and doc are required");
    if (store_firestore_native(s)) return fs_backfill_put(s, id, workflow, state, doc, err);
    int64_t now = store_now(s);
    sql_param p[] = {SQL_T(id), SQL_T(workflow), SQL_T(state), SQL_T(doc), SQL_I(now)};
    sql_result r;
    int rc = sql_exec(s,
                            "INSERT INTO backfills(id, workflow, state, doc, created_at, updated_at)"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(id) DO UPDATE SET state = excluded.state,"
                            " doc = excluded.doc, updated_at = excluded.updated_at",
                            "INSERT INTO backfills(id, workflow, state, doc, created_at, updated_at)"
                            " VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT(id) DO UPDATE SET state = EXCLUDED.state,"
                            " doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at",
                            p, 5, &r, "backfill_put", err);
    sql_result_free(&r);
    return rc;
}

int store_backfill_get(store *s, const char *id, char **state, char **doc, char **err)
{
    *state = *doc = NULL;
    if (s == NULL || id == NULL) return store_fail(err, STORE_INVALID, "backfill_get: id is required");
    if (store_firestore_native(s)) return fs_backfill_get(s, id, state, doc, err);
    sql_param p[] = {SQL_T(id)};
    sql_result r;
    int rc = sql_exec(s, "SELECT state, doc FROM backfills WHERE id = ?1",
                            "SELECT state, doc FROM backfills WHERE id = $1", p, 1, &r, "backfill_get", err);
    if (rc == STORE_OK && r.rows == 0) rc = store_fail(err, STORE_NOTFOUND, "backfill_get: no backfill %s", id);
    if (rc == STORE_OK) {
        *state = r.cells[0];
        *doc = r.cells[1];
        r.cells[0] = r.cells[1] = NULL;
    }
    sql_result_free(&r);
    return rc;
}

int store_backfill_list(store *s, int only_running, int limit, char ***ids, size_t *n, char **err)
{
    *ids = NULL;
    *n = 0;
    if (s == NULL || limit < 1 || limit > 1000) return store_fail(err, STORE_INVALID, "backfill_list: limit 1..1000");
    if (store_firestore_native(s)) return fs_backfill_list(s, only_running, limit, ids, n, err);
    sql_param p[] = {SQL_I(only_running), SQL_I(limit)};
    sql_result r;
    int rc = sql_exec(s,
                            "SELECT id FROM backfills WHERE (?1 = 0 OR state = 'running') ORDER BY created_at DESC, id"
                            " LIMIT ?2",
                            "SELECT id FROM backfills WHERE ($1 = 0 OR state = 'running') ORDER BY created_at DESC, id"
                            " LIMIT $2",
                            p, 2, &r, "backfill_list", err);
    if (rc == STORE_OK && r.rows > 0 && (*ids = xcalloc(r.rows, sizeof **ids)) != NULL) {
        for (size_t i = 0; i < r.rows; i++) {
            (*ids)[i] = r.cells[i * r.cols];
            r.cells[i * r.cols] = NULL;
        }
        *n = r.rows;
    }
    sql_result_free(&r);
    return rc;
}

int store_run_count_origin(store *s, const char *workflow, const char *origin, int64_t counts[STORE_RUN_STATE_COUNT],
                           char **err)
{
    memset(counts, 0, sizeof(int64_t) * STORE_RUN_STATE_COUNT);
    if (s == NULL || workflow == NULL || origin == NULL)
        return store_fail(err, STORE_INVALID, "run_count_origin: workflow and origin are required");
    if (store_firestore_native(s)) return fs_run_count_origin(s, workflow, origin, counts, err);
    sql_param p[] = {SQL_T(workflow), SQL_T(origin)};
    sql_result r;
    int rc = sql_exec(s, "SELECT state, count(*) FROM runs WHERE workflow = ?1 AND origin = ?2 GROUP BY state",
                            "SELECT state, count(*) FROM runs WHERE workflow = $1 AND origin = $2 GROUP BY state", p, 2,
                            &r, "run_count_origin", err);
    for (size_t i = 0; rc == STORE_OK && i < r.rows; i++) {
        store_run_state st;
        if (store_run_state_parse(sql_cell(&r, i, 0), &st) == STORE_OK) counts[st] = sql_int(&r, i, 1);
    }
    sql_result_free(&r);
    return rc;
}
