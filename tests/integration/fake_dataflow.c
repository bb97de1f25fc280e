/* fake_dataflow: the scripted fake Dataflow of the tests (fake_dataflow.h says what it promises). */
#include "fake_dataflow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_state.h"
#include "mem.h"
#include "util.h"

struct fd_call {
    ja_cb cb;
    void *ud;
    ja_result r;
    struct fd_call *next;
};

static int64_t now_ms(const fake_dataflow *f) { return f->now ? *f->now : util_now_ms(); }

int fd_starts(const char *s, const char *prefix) { return prefix && strncmp(s, prefix, strlen(prefix)) == 0; }

static void set_state(fd_job *j, const char *state) { snprintf(j->state, sizeof j->state, "%s", state); }

static json_t *job_json(const fd_job *j)
{
    char start[40];
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", j->id, "name", j->name, "currentState", j->state, "projectId",
                     j->project, "location", j->region, "startTime", util_rfc3339(j->created_at, start, sizeof start));
}

static fd_call *new_call(ja_cb cb, void *ud, ja_outcome o, json_t *job, const char *msg)
{
    fd_call *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    c->r.outcome = o;
    c->r.job = job;
    c->r.message = xstrdup(msg);
    c->r.http_status = o == JA_REJECTED ? 400 : o == JA_OK ? 200 : 0;
    return c;
}

static void append(fd_call **head, fd_call **tail, fd_call *c)
{
    if (*tail) (*tail)->next = c;
    else *head = c;
    *tail = c;
}

/* Queues an answer for the next poll (f->mu held). */
static void enqueue(fake_dataflow *f, ja_cb cb, void *ud, ja_outcome o, json_t *job, const char *msg)
{
    append(&f->queue, &f->tail, new_call(cb, ud, o, job, msg));
}

fd_job *fd_by_name(fake_dataflow *f, const char *name)
{
    for (int i = f->n_jobs - 1; i >= 0; i--)
        if (strcmp(f->jobs[i].name, name) == 0) return &f->jobs[i];
    return NULL;
}

fd_job *fd_by_id(fake_dataflow *f, const char *id)
{
    for (int i = 0; i < f->n_jobs; i++)
        if (strcmp(f->jobs[i].id, id) == 0) return &f->jobs[i];
    return NULL;
}

static fd_job *new_job(fake_dataflow *f, const char *id, const char *name, const char *state, const char *project,
                       const char *region)
{
    if (f->n_jobs >= FD_MAX_JOBS) {
        fprintf(stderr, "fake_dataflow: more than %d jobs\n", FD_MAX_JOBS);
        abort();
    }
    fd_job *j = &f->jobs[f->n_jobs];
    memset(j, 0, sizeof *j);
    if (id) snprintf(j->id, sizeof j->id, "%s", id);
    else snprintf(j->id, sizeof j->id, "2024-01-01_00_00_00-%d", f->n_jobs + 1);
    snprintf(j->name, sizeof j->name, "%s", name);
    set_state(j, state);
    snprintf(j->project, sizeof j->project, "%s", project);
    snprintf(j->region, sizeof j->region, "%s", region);
    j->created_at = now_ms(f);
    f->n_jobs++;
    return j;
}

fd_job *fd_add_job(fake_dataflow *f, const char *id, const char *name, const char *state)
{
    pthread_mutex_lock(&f->mu);
    fd_job *j = new_job(f, id, name, state, "p", "r");
    pthread_mutex_unlock(&f->mu);
    return j;
}

static fd_job *create_job(fake_dataflow *f, const launch_req *req)
{
    return new_job(f, f->ids_are_names ? req->job_name : NULL, req->job_name,
                   f->launch_state ? f->launch_state : "JOB_STATE_PENDING", req->project, req->region);
}

static int f_launch(jobs_api *api, const launch_req *req, ja_cb cb, void *ud)
{
    fake_dataflow *f = (fake_dataflow *)api;
    pthread_mutex_lock(&f->mu);
    f->launches++;
    json_decref(f->last_launch);
    f->last_launch = launch_to_json(req);
    snprintf(f->last_labels, sizeof f->last_labels, "%s/%s", req->workflow ? req->workflow : "-",
             req->step ? req->step : "-");
    fd_job *existing = fd_by_name(f, req->job_name);
    if (fd_starts(req->job_name, f->reject_prefix)) {
        enqueue(f, cb, ud, JA_REJECTED, NULL, "Invalid template parameters: input: Required parameter is missing.");
    } else if (existing != NULL && strcmp(existing->state, "JOB_STATE_RUNNING") == 0) { /* 409: adopt */
        enqueue(f, cb, ud, JA_OK, job_json(existing), NULL);
    } else if (f->hang_launches) { /* not answered before free: the process "dies" first */
        if (f->hang_creates) create_job(f, req);
        fd_call *c = new_call(cb, ud, JA_UNKNOWN, NULL, NULL);
        c->next = f->hung;
        f->hung = c;
    } else {
        fd_job *j = create_job(f, req);
        if (f->unknown_next) {
            f->unknown_next = 0;
            enqueue(f, cb, ud, JA_UNKNOWN, NULL, "timeout");
        } else {
            enqueue(f, cb, ud, JA_OK, job_json(j), NULL);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* What jobs.get sees of `j` now: the script's course of a job (fake_dataflow.h). */
static void advance(fake_dataflow *f, fd_job *j)
{
    int64_t now = now_ms(f);
    int winding = strcmp(j->state, "JOB_STATE_CANCELLING") == 0 || strcmp(j->state, "JOB_STATE_DRAINING") == 0;
    if (winding && now < j->stopped_at + f->wind_ms) {
        /* still winding down */
    } else if (fd_starts(j->name, f->timed_prefix) && !winding) {
        int64_t end = j->created_at + f->run_ms;
        set_state(j, now < end + f->stale_ms ? "JOB_STATE_RUNNING" : "JOB_STATE_DONE");
    } else if (strcmp(j->state, "JOB_STATE_PENDING") == 0 || strcmp(j->state, "JOB_STATE_RUNNING") == 0) {
        int stays = fd_starts(j->name, f->stay_prefix) || fd_starts(j->name, f->stay_prefix2);
        if (stays || j->gets <= f->gets_until_done) {
            set_state(j, "JOB_STATE_RUNNING");
        } else if (fd_starts(j->name, f->fail_prefix) && (f->fail_times < 0 || f->failed_so_far < f->fail_times)) {
            f->failed_so_far++;
            set_state(j, "JOB_STATE_FAILED");
        } else {
            set_state(j, "JOB_STATE_DONE");
        }
    } else if (strcmp(j->state, "JOB_STATE_CANCELLING") == 0) {
        set_state(j, "JOB_STATE_CANCELLED");
    } else if (strcmp(j->state, "JOB_STATE_DRAINING") == 0) {
        set_state(j, "JOB_STATE_DRAINED");
    }
}

static int f_get(jobs_api *api, const char *project, const char *region, const char *job_id, ja_cb cb, void *ud)
{
    (void)project;
    (void)region;
    fake_dataflow *f = (fake_dataflow *)api;
    pthread_mutex_lock(&f->mu);
    f->gets++;
    fd_job *j = fd_by_id(f, job_id);
    if (j == NULL) {
        enqueue(f, cb, ud, JA_NOT_FOUND, NULL, "not found");
    } else {
        j->gets++;
        advance(f, j);
        enqueue(f, cb, ud, JA_OK, job_json(j), NULL);
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static int f_find(jobs_api *api, const char *project, const char *region, const char *name, ja_cb cb, void *ud)
{
    (void)project;
    (void)region;
    fake_dataflow *f = (fake_dataflow *)api;
    pthread_mutex_lock(&f->mu);
    f->finds++;
    fd_job *j = fd_by_name(f, name);
    fd_call *c = new_call(cb, ud, j ? JA_OK : JA_NOT_FOUND, j ? job_json(j) : NULL, NULL);
    if (f->hold_finds) append(&f->held, &f->held_tail, c);
    else append(&f->queue, &f->tail, c);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void release_held(fake_dataflow *f)
{
    if (f->held == NULL) return;
    if (f->tail) f->tail->next = f->held;
    else f->queue = f->held;
    f->tail = f->held_tail;
    f->held = f->held_tail = NULL;
}

void fd_release_finds(fake_dataflow *f)
{
    pthread_mutex_lock(&f->mu);
    release_held(f);
    pthread_mutex_unlock(&f->mu);
}

static int f_stop(jobs_api *api, const char *project, const char *region, const char *job_id, int drain, ja_cb cb,
                  void *ud)
{
    (void)project;
    (void)region;
    fake_dataflow *f = (fake_dataflow *)api;
    pthread_mutex_lock(&f->mu);
    f->stops++;
    f->drains += drain;
    fd_job *j = fd_by_id(f, job_id);
    if (drain && f->batch_only) {
        enqueue(f, cb, ud, JA_REJECTED, NULL, "Cannot drain job: only streaming jobs can be drained.");
    } else {
        if (j && !js_name_terminal(j->state) && j->stopped_at == 0) {
            if (f->stop_ends_at_once) set_state(j, drain ? "JOB_STATE_DRAINED" : "JOB_STATE_CANCELLED");
            else set_state(j, drain ? "JOB_STATE_DRAINING" : "JOB_STATE_CANCELLING");
            j->stopped_at = now_ms(f);
        }
        enqueue(f, cb, ud, j ? JA_OK : JA_NOT_FOUND, j ? job_json(j) : NULL, NULL);
    }
    pthread_mutex_unlock(&f->mu);
    return 0;
}

/* Runs the queued answers' callbacks, unlocked (a callback may call in again). */
static int f_poll(jobs_api *api, int max_wait_ms)
{
    (void)max_wait_ms;
    fake_dataflow *f = (fake_dataflow *)api;
    pthread_mutex_lock(&f->mu);
    fd_call *c = f->queue;
    f->queue = f->tail = NULL;
    pthread_mutex_unlock(&f->mu);
    while (c) {
        fd_call *n = c->next;
        c->cb(c->ud, &c->r);
        ja_result_clear(&c->r);
        free(c);
        c = n;
    }
    return 0;
}

/* The jobs_api contract: calls still outstanding are answered by free (held finds as asked, hanging launches
 * JA_UNKNOWN). The fake stays usable. */
static void f_free(jobs_api *api)
{
    fake_dataflow *f = (fake_dataflow *)api;
    fd_release_finds(f);
    f_poll(api, 0);
    for (;;) {
        pthread_mutex_lock(&f->mu);
        fd_call *c = f->hung;
        if (c) f->hung = c->next;
        pthread_mutex_unlock(&f->mu);
        if (c == NULL) break;
        c->cb(c->ud, &c->r);
        ja_result_clear(&c->r);
        free(c);
    }
}

static const jobs_api_ops fake_ops = {f_launch, f_get, f_find, f_stop, f_poll, f_free, NULL};

void fd_init(fake_dataflow *f)
{
    memset(f, 0, sizeof *f);
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->mu, NULL);
    f->fail_times = -1;
}

void fd_fini(fake_dataflow *f)
{
    f_free(&f->base);
    json_decref(f->last_launch);
    f->last_launch = NULL;
    pthread_mutex_destroy(&f->mu);
}

int fd_pending(fake_dataflow *f)
{
    pthread_mutex_lock(&f->mu);
    int n = 0;
    for (fd_call *c = f->queue; c; c = c->next) n++;
    pthread_mutex_unlock(&f->mu);
    return n;
}

void *fd_hung_ud(fake_dataflow *f)
{
    pthread_mutex_lock(&f->mu);
    void *ud = f->hung ? f->hung->ud : NULL;
    pthread_mutex_unlock(&f->mu);
    return ud;
}

void fd_answer_hung(fake_dataflow *f, ja_outcome outcome, const char *message)
{
    pthread_mutex_lock(&f->mu);
    fd_call *c = f->hung;
    if (c) f->hung = c->next;
    pthread_mutex_unlock(&f->mu);
    if (c == NULL) return;
    ja_result r = {.outcome = outcome, .message = (char *)message};
    c->cb(c->ud, &r);
    ja_result_clear(&c->r);
    free(c);
}
