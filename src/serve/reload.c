/* reload: the workflows directory watched, reloaded as a set, swapped in atomically when valid.
 * Uses: wfset, engine_loop, http_server, metrics, log, inotify, pthreads. Must not: touch the engine directly. */
#include "reload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "util.h"

typedef struct req {
    struct req *next;
    hs_request *r;
} req;

struct reloader {
    reloader_options o;
    char *dir;
    lh_limits limits;
    int has_limits;
    int ifd;     /* inotify, or -1 */
    int wake[2]; /* a pipe: triggers and stop wake the thread's poll */
    pthread_t thread;
    pthread_mutex_t mu;
    int pending; /* a trigger since the last reload */
    int stop;
    req *reqs;
    json_t *errors; /* the latest load's problems */
    char outcome[16];
};

static void poke(reloader *rl)
{
    char c = 1;
    ssize_t w = write(rl->wake[1], &c, 1);
    (void)w; /* a full pipe already holds a wake-up */
}

void reloader_trigger(reloader *rl)
{
    pthread_mutex_lock(&rl->mu);
    rl->pending = 1;
    pthread_mutex_unlock(&rl->mu);
    poke(rl);
}

void reloader_request(reloader *rl, hs_request *r)
{
    req *q = xcalloc(1, sizeof *q);
    q->r = r;
    hs_defer(r);
    pthread_mutex_lock(&rl->mu);
    q->next = rl->reqs;
    rl->reqs = q;
    rl->pending = 1;
    pthread_mutex_unlock(&rl->mu);
    poke(rl);
}

json_t *reloader_errors(reloader *rl, char *outcome, size_t cap)
{
    pthread_mutex_lock(&rl->mu);
    json_t *e = json_deep_copy(rl->errors);
    if (outcome) snprintf(outcome, cap, "%s", rl->outcome);
    pthread_mutex_unlock(&rl->mu);
    return e;
}

/* Whether two sets have the same workflows at the same versions. */
static int same_versions(const wfset *a, const wfset *b)
{
    if (wfset_count(a) != wfset_count(b)) return 0;
    for (size_t i = 0; i < wfset_count(a); i++) {
        const wf_workflow *x = wfset_at(a, i), *y = wfset_find(b, x->name);
        if (y == NULL || strcmp(x->version, y->version) != 0) return 0;
    }
    return 1;
}

static void count(const char *outcome)
{
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_add("sluice_workflow_reloads_total", labels, 1);
}

/* Loads the directory again; installs the set when it is valid and differs. Returns the outcome. */
static const char *reload_now(reloader *rl)
{
    wfset *cur = wfset_box_get(rl->o.box);
    const char *paths[] = {rl->dir};
    wfset_options wo = {.paths = paths, .n_paths = 1, .limits = rl->has_limits ? &rl->limits : NULL,
                        .previous = cur};
    wfset *next = wfset_load(&wo);
    const char *outcome;
    json_t *errors = next ? json_incref(wfset_errors(next)) : json_array();
    if (next == NULL || !wfset_valid(next)) {
        outcome = "invalid";
        log_error("serve: workflows in %s not reloaded: the set is invalid; the previous one stays", rl->dir);
        wfset_unref(next);
    } else if (same_versions(cur, next) && json_array_size(errors) == 0) {
        outcome = "unchanged";
        wfset_unref(next);
    } else {
        outcome = json_array_size(errors) > 0 ? "errors" : "ok";
        /* The engine first (its command queue runs before any later start), then the readers. */
        engine_loop_install(rl->o.loop, next);
        wfset_box_put(rl->o.box, next);
        log_info("serve: workflows reloaded: %zu workflow(s)%s", wfset_count(next),
                 json_array_size(errors) ? ", with errors (see /v1/workflows)" : "");
    }
    size_t i;
    json_t *f;
    json_array_foreach(errors, i, f) {
        size_t k;
        json_t *m;
        json_array_foreach(json_object_get(f, "errors"), k, m) log_error("serve: reload: %s", json_string_value(m));
    }
    pthread_mutex_lock(&rl->mu);
    json_decref(rl->errors);
    rl->errors = errors;
    snprintf(rl->outcome, sizeof rl->outcome, "%s", outcome);
    pthread_mutex_unlock(&rl->mu);
    count(outcome);
    wfset_unref(cur);
    return outcome;
}

static void answer_requests(reloader *rl, req *q, const char *outcome)
{
    while (q) {
        req *n = q->next;
        wfset *cur = wfset_box_get(rl->o.box);
        json_t *errors = reloader_errors(rl, NULL, 0);
        json_t *out = json_pack("{s:s,s:i,s:o}", "outcome", outcome, "workflows", (int)wfset_count(cur), "errors", errors);
        char *text = json_dumps(out, JSON_COMPACT);
        hs_complete(q->r, 200, NULL, text ? text : "{}", text ? strlen(text) : 2);
        free(text);
        json_decref(out);
        wfset_unref(cur);
        free(q);
        q = n;
    }
}

static int drain_fd(int fd)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int any = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        any = 1;
    }
    return any;
}

static void *reload_main(void *arg)
{
    reloader *rl = arg;
    int64_t quiet_until = 0; /* a change was seen: reload once the directory is quiet until then */
    int debounce = rl->o.debounce_ms > 0 ? rl->o.debounce_ms : 200;
    for (;;) {
        struct pollfd fds[2] = {{.fd = rl->wake[0], .events = POLLIN}, {.fd = rl->ifd, .events = POLLIN}};
        int timeout = -1;
        if (quiet_until) {
            int64_t left = quiet_until - util_mono_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        poll(fds, rl->ifd >= 0 ? 2 : 1, timeout);
        if (fds[0].revents & POLLIN) drain_fd(rl->wake[0]);
        if (rl->ifd >= 0 && (fds[1].revents & POLLIN) && drain_fd(rl->ifd)) quiet_until = util_mono_ms() + debounce;
        pthread_mutex_lock(&rl->mu);
        int stop = rl->stop, pending = rl->pending;
        req *q = rl->reqs;
        if (pending) {
            rl->pending = 0;
            rl->reqs = NULL;
        }
        pthread_mutex_unlock(&rl->mu);
        if (stop) {
            answer_requests(rl, q, "stopping");
            break;
        }
        int due = quiet_until && util_mono_ms() >= quiet_until;
        if (pending || due) {
            quiet_until = 0;
            answer_requests(rl, q, reload_now(rl));
        }
    }
    return NULL;
}

reloader *reloader_new(const reloader_options *o, const wfset *initial)
{
    reloader *rl = xcalloc(1, sizeof *rl);
    rl->o = *o;
    rl->dir = xstrdup(o->dir);
    if (o->limits) {
        rl->limits = *o->limits;
        rl->has_limits = 1;
    }
    rl->errors = json_incref(wfset_errors(initial));
    snprintf(rl->outcome, sizeof rl->outcome, "initial");
    pthread_mutex_init(&rl->mu, NULL);
    rl->ifd = -1;
    if (pipe2(rl->wake, O_NONBLOCK | O_CLOEXEC) != 0) goto fail;
    if (o->watch) {
        rl->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        /* Everything that can change what the directory holds, including a swapped ..data symlink. */
        uint32_t mask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_MODIFY;
        if (rl->ifd < 0 || inotify_add_watch(rl->ifd, rl->dir, mask) < 0) {
            log_warn("serve: cannot watch %s (%s): reload with SIGHUP or POST /v1/workflows:reload", rl->dir,
                     strerror(errno));
            if (rl->ifd >= 0) close(rl->ifd);
            rl->ifd = -1;
        }
    }
    if (pthread_create(&rl->thread, NULL, reload_main, rl) != 0) goto fail;
    return rl;
fail:
    if (rl->ifd >= 0) close(rl->ifd);
    json_decref(rl->errors);
    free(rl->dir);
    free(rl);
    return NULL;
}

void reloader_free(reloader *rl)
{
    if (rl == NULL) return;
    pthread_mutex_lock(&rl->mu);
    rl->stop = 1;
    pthread_mutex_unlock(&rl->mu);
    poke(rl);
    pthread_join(rl->thread, NULL);
    if (rl->ifd >= 0) close(rl->ifd);
    close(rl->wake[0]);
    close(rl->wake[1]);
    json_decref(rl->errors);
    pthread_mutex_destroy(&rl->mu);
    free(rl->dir);
    free(rl);
}
