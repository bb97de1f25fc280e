/* pubsub_pull: pull, hand to ingress, acknowledge after the commit; leases, flow control, backoff, shutdown.
 * Uses: pubsub (names, endpoint, message shape), http_client, gauth, retry, ingress, metrics, log, jansson.
 * Must not: decode events, touch the store, or block ingress's writer thread (its answers only queue here and wake
 * this thread's loop).
 *
 * One thread owns everything here but `pp_box`: the loop pulls each subscription (one pull in flight per
 * subscription, long-polled by the server), submits each message to ingress and keeps it in `held` until ingress
 * answers. Answers arrive on the writer thread (or at once, for a message that changes nothing): they are queued
 * in the box under its mutex and the loop is woken (hc_wakeup). The loop then batches acknowledgements and
 * modifyAckDeadline calls per subscription. A message stays the loop's until its answer is drained; when the
 * loop ends first, the box is closed and each answer still to come frees its own message. */
#include "pubsub_pull.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gauth.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "retry.h"
#include "util.h"

#define PP_IDS_PER_CALL 1000      /* ack ids in one :acknowledge / :modifyAckDeadline (Google allows more) */
#define PP_PULL_TIMEOUT_MS 100000 /* a pull is held by the server up to about 90 s when nothing comes */
#define PP_CALL_TIMEOUT_MS 30000
#define PP_LONG_POLL_MS 1000      /* an empty answer that took this long was a long poll: pull again at once */
#define PP_POISON_S 60            /* a message that can never be recorded comes back after this long */
#define PP_SEEN 4096              /* message ids remembered to count redeliveries */
#define PP_MAX_HEADERS 64

typedef struct pp_box pp_box;
typedef struct pp_sub pp_sub;

/* One pulled message from its pull answer until its answer from ingress is drained. */
typedef struct pp_msg {
    struct pp_msg *next, *prev; /* in p->held (the loop's) */
    struct pp_msg *done_next;   /* in box->done (under box->mu) */
    pp_box *box;
    pp_sub *sub;
    char *ack_id;
    size_t bytes;
    int64_t received_ms, extend_at_ms;
    ingress_outcome outcome; /* set by the answer (under box->mu) */
    const char *outcome_name;
} pp_msg;

/* What the writer thread and the loop share. */
struct pp_box {
    pthread_mutex_t mu;
    pp_msg *done, *done_tail;
    int closed; /* the loop ended: answers free their messages */
    int refs;   /* the loop's + one per message submitted and not yet answered */
    hc_client *hc;
};

typedef struct {
    char **ids;
    size_t n, cap;
} pp_ids;

typedef enum { PC_PULL, PC_ACK, PC_MODACK } pc_kind;

typedef struct pp_call {
    struct pp_call *next, *prev; /* in p->calls */
    pubsub_pull *p;
    pp_sub *sub;
    pc_kind kind;
    char *url, *body;
    size_t n_ids;
    int deadline_s; /* PC_MODACK */
    int asked;      /* PC_PULL: maxMessages */
    long timeout_ms;
    retry_state rs;
    int64_t hc_id, timer_id, ga_waiter;
    int auth_retried;
    char *token;
} pp_call;

struct pp_sub {
    char *name, *labels;
    char *url_pull, *url_ack, *url_modack;
    pp_call *pull; /* in flight, or NULL */
    int64_t next_pull_ms, idle_ms;
    int failures;
    pp_ids acks, nacks, poison, extend;
};

struct pubsub_pull {
    pubsub_pull_options o;
    ingress *ing;
    hc_client *hc;
    ga_auth *ga;
    pp_sub *subs;
    size_t n_subs;
    pp_box *box;
    pp_msg *held; /* submitted, answer not drained */
    size_t n_held, held_bytes;
    int requested; /* maxMessages of the pulls in flight */
    pp_call *calls;
    retry_policy policy, pull_policy;
    uint64_t seen[PP_SEEN];
    size_t seen_next;
    int fault_nack;
    int fault_hold;
    pthread_t thread;
    int started, joined;
    atomic_int stop;
    atomic_int grace_ms;
    int stopping;
    int64_t next_lease_ms;
};

/* ---------- small helpers ---------- */

static void ids_push(pp_ids *l, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **ids = xrealloc(l->ids, cap * sizeof *ids);
        l->ids = ids;
        l->cap = cap;
    }
    char *d = xstrdup(id);
    if (d != NULL) l->ids[l->n++] = d;
}

static void ids_clear(pp_ids *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->ids[i]);
    free(l->ids);
    memset(l, 0, sizeof *l);
}

static void count(const char *family, const pp_sub *s, const char *reason, double v)
{
    char labels[600];
    if (reason != NULL)
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", s->labels, reason);
    else
        snprintf(labels, sizeof labels, "%s", s->labels);
    metrics_add(family, labels, v);
}

static void box_unref(pp_box *b)
{
    pthread_mutex_lock(&b->mu);
    int last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (!last) return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static void msg_free(pp_msg *m)
{
    if (m == NULL) return;
    free(m->ack_id);
    free(m);
}

/* 1 if this message id was pulled before by this process (a redelivery when Pub/Sub sends no deliveryAttempt). */
static int seen_before(pubsub_pull *p, const pp_sub *s, const char *message_id)
{
    if (message_id == NULL) return 0;
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = s->name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    for (const char *c = message_id; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    if (h == 0) h = 1;
    for (size_t i = 0; i < PP_SEEN; i++)
        if (p->seen[i] == h) return 1;
    p->seen[p->seen_next] = h;
    p->seen_next = (p->seen_next + 1) % PP_SEEN;
    return 0;
}

/* ---------- calls: token, send, retry ---------- */

static void call_dispatch(pp_call *c, const hc_resp *resp);
static void call_send(pp_call *c);

static pp_call *call_new(pubsub_pull *p, pp_sub *s, pc_kind kind, const char *url, char *body, long timeout_ms)
{
    if (body == NULL) return NULL;
    pp_call *c = xcalloc(1, sizeof *c);
    c->url = xstrdup(url);
    c->p = p;
    c->sub = s;
    c->kind = kind;
    c->body = body;
    c->timeout_ms = timeout_ms;
    retry_begin(&c->rs, &p->policy, hc_now_ms(p->hc), NULL, NULL);
    c->next = p->calls;
    if (p->calls) p->calls->prev = c;
    p->calls = c;
    return c;
}

/* Cancels whatever the call waits for and frees it. */
static void call_free(pp_call *c)
{
    pubsub_pull *p = c->p;
    if (c->hc_id > 0) hc_cancel(p->hc, c->hc_id);
    if (c->timer_id > 0) hc_timer_cancel(p->hc, c->timer_id);
    if (c->ga_waiter > 0) ga_cancel(p->ga, c->ga_waiter);
    if (c->prev)
        c->prev->next = c->next;
    else
        p->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->kind == PC_PULL && c->sub->pull == c) {
        c->sub->pull = NULL;
        p->requested -= c->asked;
    }
    if (c->token) explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    free(c->url);
    free(c->body);
    free(c);
}

static void call_on_http(hc_client *hc, const hc_resp *resp, void *ud)
{
    (void)hc;
    pp_call *c = ud;
    c->hc_id = 0;
    if (resp->error == HC_OK && resp->status == 401 && !c->auth_retried && ga_invalidate(c->p->ga, c->token)) {
        c->auth_retried = 1; /* the token expired early or was revoked: one fresh one */
        call_send(c);
        return;
    }
    call_dispatch(c, resp);
}

static void call_on_token(void *ud, int rc, const char *token, const char *err)
{
    pp_call *c = ud;
    pubsub_pull *p = c->p;
    c->ga_waiter = 0;
    if (rc < 0) {
        hc_resp fake = {.error = HC_ERR_CONNECT, .error_text = err ? err : "no access token"};
        log_warn("pubsub: cannot get an access token: %s", err ? err : "?");
        call_dispatch(c, &fake);
        return;
    }
    if (c->token) explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    c->token = token ? xstrdup(token) : NULL;
    char *auth = token ? util_printf("Authorization: Bearer %s", token) : NULL;
    const char *headers[4];
    int n = 0;
    if (auth) headers[n++] = auth;
    headers[n++] = "Content-Type: application/json";
    headers[n++] = "Accept: application/json";
    headers[n] = NULL;
    hc_req rq = {.method = "POST", .url = c->url, .headers = headers, .body = c->body, .body_len = strlen(c->body),
                 .timeout_ms = c->timeout_ms};
    const char *e = NULL;
    int64_t id = hc_request(p->hc, &rq, call_on_http, c, &e);
    if (auth) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    if (id < 0) {
        hc_resp fake = {.error = HC_ERR_OTHER, .error_text = e ? e : "cannot queue the request"};
        call_dispatch(c, &fake);
        return;
    }
    c->hc_id = id;
}

/* Gets a token and sends; the call may be finished (and freed) before this returns. */
static void call_send(pp_call *c)
{
    int64_t w = ga_token(c->p->ga, call_on_token, c);
    if (w > 0) c->ga_waiter = w;
}

static void call_resend(hc_client *hc, void *ud)
{
    (void)hc;
    pp_call *c = ud;
    c->timer_id = 0;
    call_send(c);
}

/* The server's retry hint, or -1. */
static int64_t server_delay(const hc_resp *resp)
{
    int64_t d;
    if (resp->retry_after && retry_parse_retry_after(resp->retry_after, util_now_ms(), &d) == 0) return d;
    return -1;
}

static const char *describe(const hc_resp *resp, char *buf, size_t cap)
{
    if (resp->error != HC_OK)
        snprintf(buf, cap, "%s: %s", hc_error_name(resp->error), resp->error_text ? resp->error_text : "");
    else
        snprintf(buf, cap, "HTTP %ld: %.200s", resp->status, resp->body ? resp->body : "");
    return buf;
}

/* ---------- acknowledging ---------- */

static void send_ids(pubsub_pull *p, pp_sub *s, pp_ids *l, pc_kind kind, int deadline_s)
{
    size_t at = 0;
    while (at < l->n) {
        size_t n = l->n - at < PP_IDS_PER_CALL ? l->n - at : PP_IDS_PER_CALL;
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_string(l->ids[at + i]));
        json_t *req = kind == PC_ACK ? json_pack("{s:o}", "ackIds", arr)
                                     : json_pack("{s:o,s:i}", "ackIds", arr, "ackDeadlineSeconds", deadline_s);
        char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        pp_call *c = call_new(p, s, kind, kind == PC_ACK ? s->url_ack : s->url_modack, body, PP_CALL_TIMEOUT_MS);
        if (c != NULL) {
            c->n_ids = n;
            c->deadline_s = deadline_s;
            call_send(c);
        }
        at += n;
    }
    ids_clear(l);
}

static void flush(pubsub_pull *p)
{
    for (size_t i = 0; i < p->n_subs; i++) {
        pp_sub *s = &p->subs[i];
        if (s->acks.n) send_ids(p, s, &s->acks, PC_ACK, 0);
        if (s->nacks.n) send_ids(p, s, &s->nacks, PC_MODACK, 0);
        if (s->poison.n) send_ids(p, s, &s->poison, PC_MODACK, PP_POISON_S);
        if (s->extend.n) send_ids(p, s, &s->extend, PC_MODACK, p->o.ack_extension_s);
    }
}

static void ack_done(pp_call *c, const hc_resp *resp)
{
    pubsub_pull *p = c->p;
    if (resp->error == HC_OK && resp->status >= 200 && resp->status < 300) {
        if (c->kind == PC_ACK) count("sluice_pubsub_acked_total", c->sub, NULL, (double)c->n_ids);
        call_free(c);
        return;
    }
    int64_t delay;
    if (retry_classify(1, retry_transport_of(resp->error), resp->status, NULL) == RETRY_AGAIN && !p->stopping &&
        retry_next(&c->rs, hc_now_ms(p->hc), server_delay(resp), &delay)) {
        c->timer_id = hc_timer_add(p->hc, delay, call_resend, c);
        return;
    }
    char why[300];
    log_warn("pubsub: %s of %zu message(s) on %s failed (%s): Pub/Sub redelivers them when their deadline passes",
             c->kind == PC_ACK ? "acknowledging" : "modifyAckDeadline", c->n_ids, c->sub->name,
             describe(resp, why, sizeof why));
    call_free(c);
}

/* ---------- answers from ingress ---------- */

/* On the writer thread, or on the loop's inside ingress_submit. */
static void on_ingress_done(void *ud, ingress_outcome outcome, const char *outcome_name)
{
    pp_msg *m = ud;
    pp_box *b = m->box;
    pthread_mutex_lock(&b->mu);
    if (b->closed) {
        pthread_mutex_unlock(&b->mu);
        msg_free(m); /* the loop is gone; Pub/Sub redelivers it if it was not acknowledged */
    } else {
        m->outcome = outcome;
        m->outcome_name = outcome_name;
        m->done_next = NULL;
        if (b->done_tail)
            b->done_tail->done_next = m;
        else
            b->done = m;
        b->done_tail = m;
        hc_wakeup(b->hc);
        pthread_mutex_unlock(&b->mu);
    }
    box_unref(b);
}

static void held_remove(pubsub_pull *p, pp_msg *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        p->held = m->next;
    if (m->next) m->next->prev = m->prev;
    p->n_held--;
    p->held_bytes -= m->bytes;
}

/* Turns the answers that came in into acks and nacks. */
static void drain(pubsub_pull *p)
{
    pthread_mutex_lock(&p->box->mu);
    pp_msg *m = p->box->done;
    p->box->done = p->box->done_tail = NULL;
    pthread_mutex_unlock(&p->box->mu);
    int64_t now = hc_now_ms(p->hc);
    while (m) {
        pp_msg *next = m->done_next;
        pp_sub *s = m->sub;
        held_remove(p, m);
        switch (m->outcome) {
        case INGRESS_RECORDED:
        case INGRESS_IGNORED:
            ids_push(&s->acks, m->ack_id);
            metrics_observe("sluice_pubsub_ack_latency_seconds", "", (double)(now - m->received_ms) / 1000.0);
            s->failures = 0;
            break;
        case INGRESS_FAILED:
            /* Not recorded: redeliver now, and pull this subscription more slowly while the store fails. */
            ids_push(&s->nacks, m->ack_id);
            count("sluice_pubsub_nacked_total", s, "store_error", 1);
            s->failures++;
            s->next_pull_ms = now + retry_backoff_ms(&p->pull_policy, s->failures, NULL, NULL);
            break;
        case INGRESS_MALFORMED:
            ids_push(&s->poison, m->ack_id);
            count("sluice_pubsub_nacked_total", s, "malformed", 1);
            log_warn("pubsub: a message on %s can never be recorded (%s); it is not acknowledged (a dead-letter "
                     "policy on the subscription ends its redeliveries)", s->name, m->outcome_name);
            break;
        }
        msg_free(m);
        m = next;
    }
    metrics_set("sluice_pubsub_held_messages", "", (double)p->n_held);
}

/* ---------- pulling ---------- */

static void take_message(pubsub_pull *p, pp_sub *s, json_t *rm)
{
    const char *ack_id = json_string_value(json_object_get(rm, "ackId"));
    if (ack_id == NULL) return; /* nothing can be done with it; it comes back */
    json_t *msg = json_object_get(rm, "message");
    const char *mid = json_string_value(json_object_get(msg, "messageId"));
    if (mid == NULL) mid = json_string_value(json_object_get(msg, "message_id"));
    json_t *da = json_object_get(rm, "deliveryAttempt");
    count("sluice_pubsub_pulled_total", s, NULL, 1);
    int again = seen_before(p, s, mid);
    if (again || (json_is_integer(da) && json_integer_value(da) > 1))
        count("sluice_pubsub_redelivered_total", s, NULL, 1);
    if (p->stopping) {
        ids_push(&s->nacks, ack_id);
        count("sluice_pubsub_nacked_total", s, "shutdown", 1);
        return;
    }
    if (p->fault_nack > 0) {
        p->fault_nack--;
        log_warn("pubsub: fault injection: message %s on %s nacked as if it could not be recorded", mid ? mid : "?",
                 s->name);
        ids_push(&s->nacks, ack_id);
        count("sluice_pubsub_nacked_total", s, "fault", 1);
        return;
    }
    if (p->fault_hold > 0) {
        p->fault_hold--;
        log_warn("pubsub: fault injection: message %s on %s held unanswered (redelivered after its ack deadline)",
                 mid ? mid : "?", s->name);
        return;
    }
    char *body = NULL, why[200];
    size_t len = 0, nh = 0;
    ev_header hdrs[PP_MAX_HEADERS];
    if (pubsub_pull_to_event(rm, s->name, &body, &len, hdrs, PP_MAX_HEADERS, &nh, why, sizeof why) != 0) {
        metrics_add("sluice_events_total", "source=\"pull\",outcome=\"malformed\"", 1);
        ids_push(&s->poison, ack_id);
        count("sluice_pubsub_nacked_total", s, "malformed", 1);
        log_warn("pubsub: message %s on %s: %s", mid ? mid : "?", s->name, why);
        return;
    }
    pp_msg *m = xcalloc(1, sizeof *m);
    m->ack_id = xstrdup(ack_id);
    m->box = p->box;
    m->sub = s;
    json_t *data = json_object_get(msg, "data");
    m->bytes = json_is_string(data) ? json_string_length(data) : 0;
    m->received_ms = hc_now_ms(p->hc);
    m->extend_at_ms = m->received_ms + p->o.extend_after_ms;
    m->next = p->held;
    if (p->held) p->held->prev = m;
    p->held = m;
    p->n_held++;
    p->held_bytes += m->bytes;
    pthread_mutex_lock(&p->box->mu);
    p->box->refs++;
    pthread_mutex_unlock(&p->box->mu);
    /* headers point into rm, which lives until this returns; ingress copies what it keeps */
    ingress_submit(p->ing, hdrs, nh, body, len, "pull", on_ingress_done, m);
    free(body);
}

static void pull_done(pp_call *c, const hc_resp *resp)
{
    pubsub_pull *p = c->p;
    pp_sub *s = c->sub;
    int64_t now = hc_now_ms(p->hc);
    int64_t took = resp->elapsed_ms;
    json_t *j = NULL;
    if (resp->error == HC_OK && resp->status == 200) j = json_loadb(resp->body, resp->body_len, 0, NULL);
    call_free(c); /* clears s->pull */
    if (j == NULL) {
        if (resp->error == HC_ERR_TIMEOUT && resp->status == 0) { /* a long poll that outlived our timeout */
            s->next_pull_ms = now;
            return;
        }
        char why[300];
        s->failures++;
        int64_t delay = retry_backoff_ms(&p->pull_policy, s->failures, NULL, NULL);
        int64_t hint = server_delay(resp);
        if (hint > delay) delay = hint;
        if (s->failures <= 3 || delay >= p->pull_policy.cap_ms / 2)
            log_warn("pubsub: pulling %s failed (%s); again in %lld ms", s->name, describe(resp, why, sizeof why),
                     (long long)delay);
        count("sluice_pubsub_pull_errors_total", s, NULL, 1);
        s->next_pull_ms = now + delay;
        return;
    }
    json_t *rms = json_object_get(j, "receivedMessages");
    size_t n = json_array_size(rms);
    if (n == 0) {
        /* Empty: the server either held the pull (a long poll: pull again now) or answered at once (back off,
         * so an idle subscriber costs next to nothing). */
        if (took >= PP_LONG_POLL_MS) {
            s->idle_ms = 0;
        } else {
            s->idle_ms = s->idle_ms ? s->idle_ms * 2 : 50;
            if (s->idle_ms > p->o.idle_max_ms) s->idle_ms = p->o.idle_max_ms;
        }
        s->next_pull_ms = now + s->idle_ms;
    } else {
        s->idle_ms = 0;
        if (s->next_pull_ms < now) s->next_pull_ms = now;
        for (size_t i = 0; i < n; i++) take_message(p, s, json_array_get(rms, i));
    }
    json_decref(j);
    metrics_set("sluice_pubsub_held_messages", "", (double)p->n_held);
}

static void call_dispatch(pp_call *c, const hc_resp *resp)
{
    if (c->kind == PC_PULL)
        pull_done(c, resp);
    else
        ack_done(c, resp);
}

/* Starts the pulls that are due and that flow control allows. */
static void pull_due(pubsub_pull *p, int64_t now)
{
    for (size_t i = 0; i < p->n_subs; i++) {
        pp_sub *s = &p->subs[i];
        if (s->pull != NULL || now < s->next_pull_ms) continue;
        int room = p->o.max_messages - (int)p->n_held - p->requested;
        if (room <= 0 || p->held_bytes >= p->o.max_bytes) return;
        int want = room < p->o.batch ? room : p->o.batch;
        char *body = util_printf("{\"maxMessages\":%d}", want);
        pp_call *c = call_new(p, s, PC_PULL, s->url_pull, body, PP_PULL_TIMEOUT_MS);
        if (c == NULL) {
            s->next_pull_ms = now + 1000;
            continue;
        }
        c->asked = want;
        s->pull = c;
        p->requested += want;
        call_send(c);
    }
}

/* Extends the ack deadline of the messages held long (ingress slow, the store busy). */
static void extend_leases(pubsub_pull *p, int64_t now)
{
    if (now < p->next_lease_ms) return;
    p->next_lease_ms = now + 500;
    int64_t again = (int64_t)p->o.ack_extension_s * 1000 / 2;
    for (pp_msg *m = p->held; m; m = m->next) {
        if (now < m->extend_at_ms) continue;
        ids_push(&m->sub->extend, m->ack_id);
        m->extend_at_ms = now + again;
        count("sluice_pubsub_lease_extensions_total", m->sub, NULL, 1);
    }
}

/* How long the loop may sleep. */
static int wait_ms(pubsub_pull *p, int64_t now)
{
    int64_t next = now + 1000;
    if (!p->stopping)
        for (size_t i = 0; i < p->n_subs; i++)
            if (p->subs[i].pull == NULL && p->subs[i].next_pull_ms < next) next = p->subs[i].next_pull_ms;
    if (p->held != NULL && p->next_lease_ms < next) next = p->next_lease_ms;
    return next <= now ? 0 : (int)(next - now);
}

static void *pull_main(void *arg)
{
    pubsub_pull *p = arg;
    util_thread_name("pubsub-pull");
    int64_t soft_end = 0, hard_end = 0;
    for (;;) {
        int64_t now = hc_now_ms(p->hc);
        if (!p->stopping && atomic_load(&p->stop)) {
            p->stopping = 1;
            for (size_t i = 0; i < p->n_subs; i++)
                if (p->subs[i].pull) call_free(p->subs[i].pull); /* what the server gave it comes back */
            soft_end = now + atomic_load(&p->grace_ms);
            log_info("pubsub: stopping: no more pulls; %zu message(s) held", p->n_held);
        }
        drain(p);
        if (!p->stopping) pull_due(p, now);
        extend_leases(p, now);
        if (p->stopping && soft_end > 0 && now >= soft_end && hard_end == 0) {
            /* Ingress did not answer them in time: let Pub/Sub redeliver them now. */
            for (pp_msg *m = p->held; m; m = m->next) {
                ids_push(&m->sub->nacks, m->ack_id);
                count("sluice_pubsub_nacked_total", m->sub, "shutdown", 1);
            }
            hard_end = now + 2000;
        }
        flush(p);
        if (p->stopping && ((p->held == NULL && p->calls == NULL) || (hard_end > 0 && now >= hard_end))) break;
        if (p->stopping && p->held == NULL && hard_end == 0) hard_end = now + 2000; /* the last acks' time */
        hc_run(p->hc, wait_ms(p, now));
    }
    /* Close the box: answers still to come free their own messages. */
    pthread_mutex_lock(&p->box->mu);
    p->box->closed = 1;
    pp_msg *done = p->box->done;
    p->box->done = p->box->done_tail = NULL;
    pthread_mutex_unlock(&p->box->mu);
    while (done) {
        pp_msg *next = done->done_next;
        msg_free(done);
        done = next;
    }
    p->held = NULL; /* each one's answer frees it */
    p->n_held = 0;
    while (p->calls) call_free(p->calls);
    log_info("pubsub: stopped");
    return NULL;
}

/* ---------- life cycle ---------- */

static void declare_metrics(void)
{
    metrics_declare("sluice_pubsub_pulled_total", METRIC_COUNTER, "Messages pulled, by subscription.");
    metrics_declare("sluice_pubsub_acked_total", METRIC_COUNTER,
                    "Messages acknowledged (recorded, or changing nothing), by subscription.");
    metrics_declare("sluice_pubsub_nacked_total", METRIC_COUNTER,
                    "Messages not acknowledged, by subscription and reason (store_error and shutdown: redelivered "
                    "now; malformed: after 60 s; fault: tests).");
    metrics_declare("sluice_pubsub_redelivered_total", METRIC_COUNTER,
                    "Messages pulled again (deliveryAttempt above 1, or an id this process pulled before).");
    metrics_declare("sluice_pubsub_ack_latency_seconds", METRIC_HISTOGRAM,
                    "From a pull's answer to the acknowledgement of a message (its group commit included).");
    metrics_declare("sluice_pubsub_held_messages", METRIC_GAUGE, "Messages pulled and not yet acknowledged or nacked.");
    metrics_declare("sluice_pubsub_pull_errors_total", METRIC_COUNTER, "Failed pulls, by subscription.");
    metrics_declare("sluice_pubsub_lease_extensions_total", METRIC_COUNTER,
                    "Ack deadline extensions of messages held long, by subscription.");
}

pubsub_pull *pubsub_pull_new(const pubsub_pull_options *o, char **err)
{
    if (o->n_subscriptions == 0 || o->ing == NULL) {
        if (err) *err = xstrdup("no subscription");
        return NULL;
    }
    for (size_t i = 0; i < o->n_subscriptions; i++)
        if (!pubsub_pull_valid_name(o->subscriptions[i])) {
            if (err) *err = util_printf("'%s' is not a subscription name (projects/P/subscriptions/S)", o->subscriptions[i]);
            return NULL;
        }
    pubsub_pull *p = xcalloc(1, sizeof *p);
    p->o = *o;
    p->o.subscriptions = NULL;
    p->o.base_url = NULL;
    p->o.static_token = p->o.credentials = NULL;
    if (p->o.max_messages <= 0) p->o.max_messages = 1000;
    if (p->o.max_bytes == 0) p->o.max_bytes = 64u << 20;
    if (p->o.batch <= 0) p->o.batch = 500;
    if (p->o.batch > p->o.max_messages) p->o.batch = p->o.max_messages;
    if (p->o.idle_max_ms <= 0) p->o.idle_max_ms = 2000;
    if (p->o.extend_after_ms <= 0) p->o.extend_after_ms = 5000;
    if (p->o.ack_extension_s <= 0) p->o.ack_extension_s = 30;
    if (p->o.ack_extension_s > 600) p->o.ack_extension_s = 600;
    p->fault_nack = o->fault_nack;
    p->fault_hold = o->fault_hold;
    p->ing = o->ing;
    p->policy = retry_policy_default();
    p->pull_policy = (retry_policy){.initial_ms = 1000, .multiplier = 2, .cap_ms = 60000};
    hc_options ho = {.total_timeout_ms = PP_PULL_TIMEOUT_MS, .max_body = p->o.max_bytes + (8u << 20)};
    if ((p->hc = hc_new(&ho)) == NULL) {
        if (err) *err = xstrdup("Pub/Sub: cannot create the HTTP client");
        pubsub_pull_free(p);
        return NULL;
    }
    char *base = o->base_url ? xstrdup(o->base_url) : xstrdup(PUBSUB_DEFAULT_URL);
    ga_options go = {.scope = PUBSUB_SCOPE};
    char *gerr = NULL;
    if (o->no_auth)
        p->ga = ga_new_none(NULL);
    else if (o->static_token)
        p->ga = ga_new_static(o->static_token, NULL);
    else if (o->credentials)
        p->ga = ga_new_from_file(p->hc, o->credentials, &go, &gerr);
    else
        p->ga = ga_new_adc(p->hc, &go, &gerr);
    if (p->ga == NULL) {
        if (err) *err = util_printf("Pub/Sub credentials: %s", gerr ? gerr : "?");
        free(gerr);
        free(base);
        pubsub_pull_free(p);
        return NULL;
    }
    p->subs = xcalloc(o->n_subscriptions, sizeof *p->subs);
    p->n_subs = o->n_subscriptions;
    for (size_t i = 0; i < p->n_subs; i++) {
        pp_sub *s = &p->subs[i];
        const char *n = o->subscriptions[i];
        s->name = xstrdup(n);
        s->labels = util_printf("subscription=\"%s\"", n);
        s->url_pull = util_printf("%s/v1/%s:pull", base, n);
        s->url_ack = util_printf("%s/v1/%s:acknowledge", base, n);
        s->url_modack = util_printf("%s/v1/%s:modifyAckDeadline", base, n);
    }
    free(base);
    p->box = xcalloc(1, sizeof *p->box);
    pthread_mutex_init(&p->box->mu, NULL);
    p->box->refs = 1;
    p->box->hc = p->hc;
    declare_metrics();
    return p;
}

int pubsub_pull_start(pubsub_pull *p)
{
    for (size_t i = 0; i < p->n_subs; i++) log_info("pubsub: pulling %s", p->subs[i].name);
    if (pthread_create(&p->thread, NULL, pull_main, p) != 0) return -1;
    p->started = 1;
    return 0;
}

void pubsub_pull_stop(pubsub_pull *p, int grace_ms)
{
    if (p == NULL || !p->started || p->joined) return;
    atomic_store(&p->grace_ms, grace_ms < 0 ? 0 : grace_ms);
    atomic_store(&p->stop, 1);
    hc_wakeup(p->hc);
    pthread_join(p->thread, NULL);
    p->joined = 1;
}

void pubsub_pull_free(pubsub_pull *p)
{
    if (p == NULL) return;
    pubsub_pull_stop(p, 0);
    while (p->calls) call_free(p->calls); /* none unless the thread never ran */
    ga_free(p->ga);
    if (p->box) {
        pthread_mutex_lock(&p->box->mu);
        p->box->closed = 1;
        p->box->hc = NULL;
        pthread_mutex_unlock(&p->box->mu);
        box_unref(p->box);
    }
    hc_free(p->hc);
    for (size_t i = 0; i < p->n_subs; i++) {
        pp_sub *s = &p->subs[i];
        free(s->name);
        free(s->labels);
        free(s->url_pull);
        free(s->url_ack);
        free(s->url_modack);
        ids_clear(&s->acks);
        ids_clear(&s->nacks);
        ids_clear(&s->poison);
        ids_clear(&s->extend);
    }
    free(p->subs);
    free(p);
}
