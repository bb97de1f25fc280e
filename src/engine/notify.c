/* notify: delivery of the outbox's run events to webhooks and Pub/Sub topics (notify.h).
 * Uses: store, http_client, gauth, pubsub (endpoint rule), retry (jitter), OpenSSL, metrics, log, jansson.
 * Must not: write events, or touch runs and steps. */
#include "notify.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gauth.h"
#include "http_client.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "pubsub.h"
#include "retry.h"
#include "run_events.h"
#include "util.h"

struct notifier {
    notify_options o;
    char *secret, *pubsub_base;
    store *st;
    hc_client *hc;
    ga_auth *ga; /* created on the first Pub/Sub delivery */
    int no_auth;
    char *credentials, *static_token;
    pthread_mutex_t mu; /* one pass at a time (the thread's, a reconcile request's) */
    pthread_t thread;
    int started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    int wake, stop;
};

/* ---- pure parts ---- */

char *notify_signature(const char *secret, const char *body, size_t len, char *out, size_t cap)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    if (cap < 72 || HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, len, mac, &mlen) == NULL) {
        if (cap > 0) out[0] = '\0';
        return out;
    }
    memcpy(out, "sha256=", 7);
    for (unsigned i = 0; i < mlen; i++) snprintf(out + 7 + 2 * i, 3, "%02x", mac[i]);
    return out;
}

char *notify_pubsub_body(const char *event_json)
{
    json_t *ce = json_loads(event_json, 0, NULL);
    if (!json_is_object(ce)) {
        json_decref(ce);
        return NULL;
    }
    size_t len = strlen(event_json);
    char *b64 = xmalloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)event_json, (int)len);
    json_t *attrs = json_object();
    static const char *const keys[] = {"id", "type", "source", "subject", "time", "specversion", "datacontenttype"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = json_string_value(json_object_get(ce, keys[i]));
        char k[40];
        snprintf(k, sizeof k, "ce-%s", keys[i]);
        if (v != NULL) json_object_set_new(attrs, k, json_string(v));
    }
    const char *subject = json_string_value(json_object_get(ce, "subject"));
    json_t *msg = json_pack("{s:s,s:o}", "data", b64, "attributes", attrs);
    if (subject != NULL) json_object_set_new(msg, "orderingKey", json_string(subject));
    json_t *body = json_pack("{s:[o]}", "messages", msg);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_decref(ce);
    free(b64);
    return text;
}

void notify_options_from_env(notify_options *o)
{
    const char *v = getenv("SLUICE_TEST_NOTIFY_BACKOFF");
    long long a, b, c;
    if (v != NULL && sscanf(v, "%lld,%lld,%lld", &a, &b, &c) == 3 && a > 0 && b >= a && c > 0) {
        o->backoff_initial_ms = a;
        o->backoff_cap_ms = b;
        o->give_up_ms = c;
    }
}

void notify_declare_metrics(void)
{
    metrics_declare("sluice_notify_delivered_total", METRIC_COUNTER, "Run events delivered, by sink kind.");
    metrics_declare("sluice_notify_retried_total", METRIC_COUNTER,
                    "Run event deliveries that failed and will be tried again, by sink kind.");
    metrics_declare("sluice_notify_given_up_total", METRIC_COUNTER,
                    "Run events given up on (still undelivered when they were too old), by sink kind.");
}

/* ---- setup ---- */

notifier *notify_new(const notify_options *o, char **err)
{
    notifier *n = xcalloc(1, sizeof *n);
    n->o = *o;
    if (n->o.backoff_initial_ms <= 0) n->o.backoff_initial_ms = 5000;
    if (n->o.backoff_cap_ms <= 0) n->o.backoff_cap_ms = 15 * 60 * 1000;
    if (n->o.give_up_ms <= 0) n->o.give_up_ms = 24LL * 3600 * 1000;
    if (n->o.lease_ms <= 0) n->o.lease_ms = 60000;
    if (n->o.timeout_ms <= 0) n->o.timeout_ms = 20000;
    n->secret = o->secret && *o->secret ? xstrdup(o->secret) : NULL;
    n->credentials = o->credentials ? xstrdup(o->credentials) : NULL;
    n->static_token = o->static_token ? xstrdup(o->static_token) : NULL;
    n->pubsub_base = pubsub_pull_endpoint(o->pubsub_url, getenv("PUBSUB_EMULATOR_HOST"), &n->no_auth);
    if (o->no_auth) n->no_auth = 1;
    n->o.secret = n->o.pubsub_url = n->o.credentials = n->o.static_token = n->o.store_url = NULL;
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->wmu, NULL);
    pthread_cond_init(&n->wcv, NULL);
    hc_options ho = {.total_timeout_ms = n->o.timeout_ms};
    store_options so = {.busy_timeout_ms = 10000};
    if ((n->hc = hc_new(&ho)) == NULL || store_open(o->store_url, &so, &n->st, err) != STORE_OK) {
        notify_free(n);
        return NULL;
    }
    return n;
}

void notify_free(notifier *n)
{
    if (n == NULL) return;
    if (n->started) {
        pthread_mutex_lock(&n->wmu);
        n->stop = 1;
        pthread_cond_signal(&n->wcv);
        pthread_mutex_unlock(&n->wmu);
        pthread_join(n->thread, NULL);
    }
    ga_free(n->ga);
    hc_free(n->hc);
    store_close(n->st);
    if (n->secret) explicit_bzero(n->secret, strlen(n->secret));
    free(n->secret);
    free(n->pubsub_base);
    free(n->credentials);
    if (n->static_token) explicit_bzero(n->static_token, strlen(n->static_token));
    free(n->static_token);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->wmu);
    pthread_cond_destroy(&n->wcv);
    free(n);
}

/* ---- one delivery ---- */

typedef struct {
    notifier *n;
    store_note *note;
    const char *kind; /* "webhook" or "pubsub" */
    char *url, *body;
    int done;
    long status;
    char why[300];
} delivery;

static void on_http(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    delivery *d = ud;
    d->done = 1;
    d->status = r->error == HC_OK ? r->status : 0;
    if (r->error != HC_OK)
        snprintf(d->why, sizeof d->why, "%s: %s", hc_error_name(r->error), r->error_text ? r->error_text : "");
    else if (r->status < 200 || r->status > 299)
        snprintf(d->why, sizeof d->why, "HTTP %ld: %.200s", r->status, r->body ? r->body : "");
}

static void send_now(delivery *d, const char *auth)
{
    const char *headers[6];
    int k = 0;
    char sig[80], hsig[120], hid[300];
    if (strcmp(d->kind, "webhook") == 0) {
        headers[k++] = "Content-Type: application/cloudevents+json; charset=utf-8";
        if (d->n->secret != NULL) {
            snprintf(hsig, sizeof hsig, "X-Sluice-Signature: %s",
                     notify_signature(d->n->secret, d->body, strlen(d->body), sig, sizeof sig));
            headers[k++] = hsig;
        }
        snprintf(hid, sizeof hid, "X-Sluice-Event-Id: %s", d->note->id);
        headers[k++] = hid;
    } else {
        headers[k++] = "Content-Type: application/json";
        if (auth) headers[k++] = auth;
    }
    headers[k] = NULL;
    hc_req rq = {.method = "POST", .url = d->url, .headers = headers, .body = d->body, .body_len = strlen(d->body),
                 .timeout_ms = d->n->o.timeout_ms};
    const char *e = NULL;
    if (hc_request(d->n->hc, &rq, on_http, d, &e) < 0) {
        d->done = 1;
        snprintf(d->why, sizeof d->why, "cannot send: %s", e ? e : "?");
    }
}

typedef struct {
    int done, rc;
    char *token;
    char err[200];
} token_wait;

static void on_token(void *ud, int rc, const char *token, const char *err)
{
    token_wait *t = ud;
    t->done = 1;
    t->rc = rc;
    t->token = token ? xstrdup(token) : NULL;
    if (rc < 0) snprintf(t->err, sizeof t->err, "%s", err ? err : "no access token");
}

/* An access token for Pub/Sub (NULL without auth). Returns 0, or -1 with why. */
static int pubsub_token(notifier *n, char **token, char *why, size_t cap)
{
    *token = NULL;
    if (n->ga == NULL) {
        char *gerr = NULL;
        ga_options go = {.scope = PUBSUB_SCOPE};
        if (n->no_auth) n->ga = ga_new_none(NULL);
        else if (n->static_token) n->ga = ga_new_static(n->static_token, NULL);
        else if (n->credentials) n->ga = ga_new_from_file(n->hc, n->credentials, &go, &gerr);
        else n->ga = ga_new_adc(n->hc, &go, &gerr);
        if (n->ga == NULL) {
            snprintf(why, cap, "Pub/Sub credentials: %s", gerr ? gerr : "?");
            free(gerr);
            return -1;
        }
    }
    token_wait t = {0};
    ga_token(n->ga, on_token, &t);
    int64_t until = util_mono_ms() + n->o.timeout_ms;
    while (!t.done && util_mono_ms() < until) hc_run(n->hc, 100);
    if (!t.done || t.rc < 0) {
        snprintf(why, cap, "Pub/Sub access token: %s", t.done ? t.err : "timed out");
        free(t.token);
        return -1;
    }
    *token = t.token;
    return 0;
}

static int64_t backoff(const notifier *n, int attempts)
{
    int64_t ceil = n->o.backoff_initial_ms;
    for (int i = 1; i < attempts && ceil < n->o.backoff_cap_ms; i++) ceil *= 2;
    if (ceil > n->o.backoff_cap_ms) ceil = n->o.backoff_cap_ms;
    /* half fixed, half jitter: replicas retrying one receiver spread out, and no retry comes at once */
    return ceil / 2 + (int64_t)(retry_rng_default(NULL) * (double)(ceil / 2));
}

static void record(notifier *n, delivery *d)
{
    store_note *nt = d->note;
    int64_t now = util_now_ms();
    char labels[64];
    snprintf(labels, sizeof labels, "sink=\"%s\"", d->kind);
    int ok = d->done && d->why[0] == '\0' && d->status >= 200 && d->status <= 299;
    if (!d->done && d->why[0] == '\0') snprintf(d->why, sizeof d->why, "no answer in time");
    store_note_state next = ok ? STORE_NOTE_DELIVERED : STORE_NOTE_PENDING;
    int64_t at = 0;
    if (!ok) {
        at = now + backoff(n, nt->attempts);
        if (at - nt->created_at > n->o.give_up_ms) next = STORE_NOTE_GIVEN_UP;
    }
    char *err = NULL;
    int rc = store_outbox_finish(n->st, nt->id, nt->sink, nt->attempts, next, at, ok ? NULL : d->why, &err);
    if (rc != STORE_OK) {
        log_warn("notify: event %s to %s: cannot record the outcome (%s); it will be delivered again", nt->id,
                 d->kind, err ? err : "?");
        free(err);
        return;
    }
    if (ok) {
        metrics_add("sluice_notify_delivered_total", labels, 1);
        log_info("notify: event %s delivered to %s (attempt %d)", nt->id, d->kind, nt->attempts);
    } else if (next == STORE_NOTE_GIVEN_UP) {
        metrics_add("sluice_notify_given_up_total", labels, 1);
        log_error("notify: gave up on event %s to %s after %d attempts: %s", nt->id, d->kind, nt->attempts, d->why);
    } else {
        metrics_add("sluice_notify_retried_total", labels, 1);
        log_warn("notify: event %s to %s failed (attempt %d: %s); again in %lld ms", nt->id, d->kind, nt->attempts,
                 d->why, (long long)(at - now));
    }
}

/* Claims up to 50 due events and delivers them concurrently. Returns how many it handled, or -1. */
static int pass_once(notifier *n, int64_t until_mono)
{
    store_note_list l = {0};
    char *err = NULL;
    if (store_outbox_claim(n->st, util_now_ms(), n->o.lease_ms, 50, &l, &err) != STORE_OK) {
        log_error("notify: cannot claim events: %s", err ? err : "?");
        free(err);
        return -1;
    }
    if (l.count == 0) {
        store_note_list_free(&l); /* an empty claim still allocated its list */
        return 0;
    }
    delivery *ds = xcalloc(l.count, sizeof *ds);
    char *token = NULL, auth_why[300] = "";
    int token_tried = 0;
    char *auth = NULL;
    for (size_t i = 0; ds != NULL && i < l.count; i++) {
        delivery *d = &ds[i];
        d->n = n;
        d->note = &l.items[i];
        const char *sink = d->note->sink;
        if (strncmp(sink, REV_SINK_WEBHOOK, strlen(REV_SINK_WEBHOOK)) == 0) {
            d->kind = "webhook";
            d->url = xstrdup(sink + strlen(REV_SINK_WEBHOOK));
            d->body = xstrdup(d->note->event_json);
        } else if (strncmp(sink, REV_SINK_PUBSUB, strlen(REV_SINK_PUBSUB)) == 0) {
            d->kind = "pubsub";
            d->url = util_printf("%s/v1/%s:publish", n->pubsub_base, sink + strlen(REV_SINK_PUBSUB));
            d->body = notify_pubsub_body(d->note->event_json);
            if (!token_tried) {
                token_tried = 1;
                if (pubsub_token(n, &token, auth_why, sizeof auth_why) == 0 && token != NULL)
                    auth = util_printf("Authorization: Bearer %s", token);
            }
            if (auth_why[0]) {
                d->done = 1;
                snprintf(d->why, sizeof d->why, "%s", auth_why);
                continue;
            }
        } else {
            d->kind = "unknown";
            d->done = 1;
            snprintf(d->why, sizeof d->why, "unknown sink '%.100s'", sink);
            continue;
        }
        if (d->body == NULL) {
            d->done = 1;
            snprintf(d->why, sizeof d->why, "the event has no body to send");
            continue;
        }
        send_now(d, auth);
    }
    /* every delivery answers within its timeout (the lease is longer) */
    int64_t hard = util_mono_ms() + n->o.timeout_ms + 1000;
    (void)until_mono;
    for (;;) {
        int pending = 0;
        for (size_t i = 0; ds != NULL && i < l.count; i++) pending += !ds[i].done;
        if (pending == 0 || util_mono_ms() > hard) break;
        hc_run(n->hc, 100);
    }
    for (size_t i = 0; ds != NULL && i < l.count; i++) {
        record(n, &ds[i]);
        free(ds[i].url);
        free(ds[i].body);
    }
    /* a transfer still queued after its hard limit is dropped with the pass */
    if (hc_active(n->hc) > 0) {
        ga_free(n->ga);
        n->ga = NULL;
        hc_free(n->hc);
        hc_options ho = {.total_timeout_ms = n->o.timeout_ms};
        n->hc = hc_new(&ho);
    }
    if (auth) explicit_bzero(auth, strlen(auth));
    free(auth);
    if (token) explicit_bzero(token, strlen(token));
    free(token);
    free(ds);
    int count = (int)l.count;
    store_note_list_free(&l);
    return count;
}

int notify_pass(notifier *n, int budget_ms)
{
    int64_t until = util_mono_ms() + budget_ms;
    int total = 0;
    pthread_mutex_lock(&n->mu);
    do {
        int k = pass_once(n, until);
        if (k < 0) {
            total = total ? total : -1;
            break;
        }
        total += k;
        if (k < 50) break; /* nothing more is due now */
    } while (util_mono_ms() < until);
    pthread_mutex_unlock(&n->mu);
    return total;
}

int64_t notify_next_due(notifier *n)
{
    int64_t at = INT64_MAX;
    pthread_mutex_lock(&n->mu);
    int rc = store_outbox_next_due(n->st, &at, NULL);
    pthread_mutex_unlock(&n->mu);
    return rc == STORE_OK ? at : -1;
}

/* ---- the thread ---- */

void notify_wake(notifier *n)
{
    pthread_mutex_lock(&n->wmu);
    n->wake = 1;
    pthread_cond_signal(&n->wcv);
    pthread_mutex_unlock(&n->wmu);
}

static void *notify_main(void *arg)
{
    notifier *n = arg;
    util_thread_name("sluice-notify");
    for (;;) {
        notify_pass(n, 30000);
        int64_t due = notify_next_due(n), now = util_now_ms();
        /* events written by the engine (this process's or another's) are found within a second */
        int64_t wait = due < 0 ? 1000 : due - now;
        if (wait > 1000) wait = 1000;
        if (wait < 10) wait = 10;
        pthread_mutex_lock(&n->wmu);
        if (!n->wake && !n->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&n->wcv, &n->wmu, &ts);
        }
        int stop = n->stop;
        n->wake = 0;
        pthread_mutex_unlock(&n->wmu);
        if (stop) break;
    }
    return NULL;
}

int notify_start(notifier *n)
{
    if (n->started) return 0;
    if (pthread_create(&n->thread, NULL, notify_main, n) != 0) return -1;
    n->started = 1;
    return 0;
}
