/* checkpointer: the SQLite write-ahead log's checkpoints, on their own thread and handle (see checkpointer.h).
 * Uses: store, metrics, log, util. Must not: write rows or touch another thread's handle. */
#include "checkpointer.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "util.h"

struct checkpointer {
    checkpointer_policy p;
    store *s;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int stop;
    atomic_int writer_wanted; /* set by the thread, cleared by the writer's turn */
};

checkpointer_policy checkpointer_policy_defaults(const checkpointer_policy *p)
{
    checkpointer_policy d = {0};
    if (p != NULL) d = *p;
    if (d.interval_ms <= 0) d.interval_ms = 100;
    if (d.writer_frames <= 0) d.writer_frames = 4096;
    if (d.restart_frames <= 0) d.restart_frames = 65536;
    if (d.restart_frames < d.writer_frames) d.restart_frames = d.writer_frames;
    return d;
}

checkpoint_next checkpointer_decide(const checkpointer_policy *p, const store_checkpoint_result *r)
{
    checkpointer_policy d = checkpointer_policy_defaults(p);
    if (r->log_frames >= d.restart_frames) return CHECKPOINT_NEXT_RESTART;
    if (r->log_frames >= d.writer_frames) return CHECKPOINT_NEXT_WRITER;
    return CHECKPOINT_NEXT_WAIT;
}

/* One checkpoint on `s`, observed under `who` ("passive", "restart" or "writer"). Returns the store_rc. */
static int run_one(store *s, store_checkpoint_mode mode, const char *who, store_checkpoint_result *r)
{
    char *err = NULL;
    int64_t t0 = util_mono_us();
    int rc = store_checkpoint(s, mode, r, &err);
    char which[32];
    snprintf(which, sizeof which, "mode=\"%s\"", who);
    metrics_observe("sluice_store_checkpoint_seconds", which, (double)(util_mono_us() - t0) / 1e6);
    if (rc == STORE_OK) {
        metrics_set("sluice_store_wal_frames", "", (double)r->log_frames);
    } else if (rc != STORE_BUSY) { /* BUSY: a RESTART that did not get the locks in time; the next one will */
        log_warn("serve: checkpoint of the write-ahead log failed: %s", err ? err : store_strerror(rc));
    }
    free(err);
    return rc;
}

int checkpointer_writer_turn(checkpointer *c, store *writer)
{
    if (c == NULL || !atomic_load_explicit(&c->writer_wanted, memory_order_relaxed)) return 0;
    atomic_store(&c->writer_wanted, 0);
    store_checkpoint_result r;
    run_one(writer, STORE_CHECKPOINT_PASSIVE, "writer", &r);
    return 1;
}

static void *checkpointer_main(void *arg)
{
    checkpointer *c = arg;
    util_thread_name("checkpointer");
    pthread_mutex_lock(&c->mu);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)(c->p.interval_ms % 1000) * 1000000L;
        until.tv_sec += c->p.interval_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &until) != ETIMEDOUT) {
        }
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        store_checkpoint_result r;
        if (run_one(c->s, STORE_CHECKPOINT_PASSIVE, "passive", &r) == STORE_OK && !stop) {
            checkpoint_next next = checkpointer_decide(&c->p, &r);
            if (next == CHECKPOINT_NEXT_RESTART) run_one(c->s, STORE_CHECKPOINT_RESTART, "restart", &r);
            atomic_store(&c->writer_wanted, next == CHECKPOINT_NEXT_WRITER);
        }
        pthread_mutex_lock(&c->mu);
        if (stop) break;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

checkpointer *checkpointer_start(const char *url, const store_options *opts, const checkpointer_policy *p,
                                 char **err)
{
    checkpointer *c = xcalloc(1, sizeof *c);
    c->p = checkpointer_policy_defaults(p);
    store_options o = {0};
    if (opts != NULL) o = *opts;
    o.manual_checkpoint = 1;
    /* A RESTART waits this long at most for the writer and the readers; BUSY then just means "next time". */
    if (o.busy_timeout_ms <= 0 || o.busy_timeout_ms > 200) o.busy_timeout_ms = 200;
    if (store_open(url, &o, &c->s, err) != STORE_OK) {
        free(c);
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0) {
        if (err) *err = xstrdup("cannot start the checkpointer thread");
        store_close(c->s);
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return NULL;
    }
    return c;
}

void checkpointer_stop(checkpointer *c)
{
    if (c == NULL) return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    store_close(c->s);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
