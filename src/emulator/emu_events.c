/* emu_events: owns event delivery: the Eventarc CloudEvent and the Pub/Sub pushes of job-message LogEntries that
 * a job's state change produces, the bounded queue with the seeded duplicate and reorder dice, and the one thread
 * that sends them with libcurl, retrying with backoff. Uses: emu.h, libcurl, jwt (base64), emu_identity (the
 * OIDC token each delivery carries). Must not: hold emu_g.lock while sending; it takes it only to count. */
#include "emu.h"
#include "mem.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void emu_delivery_free(struct emu_delivery *d)
{
    if (d == NULL) return;
    free(d->url);
    free(d->body);
    free(d->audience);
    free(d->email);
    for (int i = 0; i < d->nheaders; i++) free(d->headers[i]);
    free(d);
}


/* Inserts by due time (stable: equal times keep arrival order). Takes ownership of d (freed when the
 * queue is full). */
static void emu_queue_insert(struct emu_delivery *d)
{
    pthread_mutex_lock(&emu_g.qlock);
    if (emu_g.qlen >= EMU_QUEUE_MAX) {
        emu_g.qdropped++;
        pthread_mutex_unlock(&emu_g.qlock);
        emu_delivery_free(d);
        return;
    }
    emu_g.qlen++;
    struct emu_delivery **pp = &emu_g.queue;
    while (*pp != NULL && (*pp)->due_ms <= d->due_ms) pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    pthread_cond_signal(&emu_g.qcond);
    pthread_mutex_unlock(&emu_g.qlock);
}

static struct emu_delivery *emu_delivery_copy(const struct emu_delivery *s)
{
    struct emu_delivery *d = xcalloc(1, sizeof *d);
    *d = *s;
    d->next = NULL;
    d->url = xstrdup(s->url);
    d->body = xstrdup(s->body);
    d->audience = xstrdup(s->audience);
    d->email = xstrdup(s->email);
    for (int i = 0; i < s->nheaders; i++) d->headers[i] = xstrdup(s->headers[i]);
    return d;
}

static void emu_delivery_header(struct emu_delivery *d, const char *name, const char *value)
{
    if (d->nheaders >= (int)(sizeof d->headers / sizeof d->headers[0])) return;
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = xmalloc(n);
    snprintf(h, n, "%s: %s", name, value);
    d->headers[d->nheaders++] = h;
}

/* A new delivery whose body is `doc` (stolen) serialized, for emu_deliver; NULL when doc is NULL (it could not be
 * built). */
static struct emu_delivery *emu_delivery_new(json_t *doc)
{
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (body == NULL) return NULL;
    struct emu_delivery *d = xcalloc(1, sizeof *d);
    d->body = body;
    return d;
}

/* Fills in and queues `d` (from emu_delivery_new, headers set; stolen), applying the seeded duplicate and
 * reorder dice. Lock (emu_g.lock) held. */
static void emu_deliver(int kind, const char *url, struct emu_delivery *d)
{
    const struct emu_cfg *c = &emu_g.cfg;
    const char *kname = kind ? "eventarc" : "push";
    d->kind = kind;
    d->url = xstrdup(url);
    d->audience = xstrdup(c->audience ? c->audience : url);
    d->email = xstrdup(c->push_email ? c->push_email : "pubsub-push@emulator.iam.gserviceaccount.com");
    d->max_attempts = c->max_attempts;
    d->backoff_ms = c->backoff_ms;
    d->timeout_ms = c->delivery_timeout_ms ? c->delivery_timeout_ms : 5000;
    d->due_ms = emu_now_ms();
    d->spread = emu_g.spread++;
    if (d->url == NULL || d->body == NULL || d->audience == NULL || d->email == NULL) {
        emu_delivery_free(d);
        return;
    }
    double r_dup = emu_rng_unit(&emu_g.rng[STREAM_EVENTS]);
    double r_reorder = emu_rng_unit(&emu_g.rng[STREAM_EVENTS]);
    if (r_reorder < c->reorder_rate) {
        d->due_ms += c->reorder_ms;
        emu_stat_add("deliveries", kname, "reordered", 1);
    }
    emu_stat_add("deliveries", kname, "queued", 1);
    if (r_dup < c->dup_rate) {
        struct emu_delivery *dup = emu_delivery_copy(d);
        if (dup != NULL) {
            dup->due_ms += 5;
            emu_stat_add("deliveries", kname, "duplicates", 1);
            emu_queue_insert(dup);
        }
    }
    emu_queue_insert(d);
}

static char *emu_b64_json(json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT);
    if (text == NULL) return NULL;
    char *out = jwt_b64_encode((const unsigned char *)text, strlen(text));
    free(text);
    return out;
}

/* One Pub/Sub wrapped push carrying a dataflow_step job-message LogEntry. Lock held. */
static void emu_push_log(const struct emu_job *j, const char *text, const char *severity, int64_t at_ms)
{
    const struct emu_cfg *c = &emu_g.cfg;
    char ts[64], rts[64], pub[64], insert[16], msgid[32], sub[256];
    emu_fmt_time(at_ms, 9, ts, sizeof ts);
    emu_fmt_time(at_ms + 723, 9, rts, sizeof rts);
    emu_fmt_time(emu_now_ms(), 3, pub, sizeof pub);
    for (int i = 0; i < 8; i++) insert[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[emu_rng_next(&emu_g.rng[STREAM_EVENTS]) % 36];
    insert[8] = '\0';
    snprintf(msgid, sizeof msgid, "%" PRIu64, emu_g.message_id++);
    if (c->subscription != NULL) snprintf(sub, sizeof sub, "%s", c->subscription);
    else snprintf(sub, sizeof sub, "projects/%s/subscriptions/sluice-emulator-push", c->project_id);
    char logname[256];
    snprintf(logname, sizeof logname, "projects/%s/logs/dataflow.googleapis.com%%2Fjob-message", j->project);
    json_t *entry = json_pack(
        "{s:s, s:s, s:{s:s, s:{s:s, s:s, s:s, s:s, s:s}}, s:s, s:s, s:{s:s, s:s, s:s}, s:s, s:s}", "textPayload", text,
        "insertId", insert, "resource", "type", "dataflow_step", "labels", "job_id", j->id, "step_id", "", "job_name",
        j->name, "project_id", c->project_number, "region", j->region, "timestamp", ts, "severity", severity,
        "labels", "dataflow.googleapis.com/job_id", j->id, "dataflow.googleapis.com/region", j->region,
        "dataflow.googleapis.com/job_name", j->name, "logName", logname, "receiveTimestamp", rts);
    char *data = emu_b64_json(entry);
    json_decref(entry);
    if (data == NULL) return;
    json_t *push = json_pack("{s:{s:{s:s}, s:s, s:s, s:s, s:s, s:s}, s:s}", "message", "attributes",
                             "logging.googleapis.com/timestamp", ts, "data", data, "messageId", msgid, "message_id",
                             msgid, "publishTime", pub, "publish_time", pub, "subscription", sub);
    free(data);
    struct emu_delivery *d = emu_delivery_new(push);
    if (d == NULL) return;
    emu_delivery_header(d, "Content-Type", "application/json");
    emu_delivery_header(d, "User-Agent", "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)");
    emu_deliver(0, c->push_url, d);
}

/* One Eventarc CloudEvent (binary content mode) carrying the job as JobEventData. Lock held. */
static void emu_eventarc_event(const struct emu_job *j)
{
    const struct emu_cfg *c = &emu_g.cfg;
    json_t *ev = json_pack("{s:s, s:o}", "@type", "type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData",
                           "payload", emu_job_json(j, 0, 1, 0));
    struct emu_delivery *d = emu_delivery_new(ev);
    if (d == NULL) return;
    char id[40], src[256], subj[1100], tm[64];
    emu_random_hex(id, 32);
    snprintf(src, sizeof src, "//dataflow.googleapis.com/projects/%s/locations/%s", j->project, j->region);
    snprintf(subj, sizeof subj, "jobs/%s", j->name);
    emu_fmt_time(j->state_ms, 3, tm, sizeof tm);
    emu_delivery_header(d, "Content-Type", "application/json; charset=utf-8");
    emu_delivery_header(d, "ce-id", id);
    emu_delivery_header(d, "ce-source", src);
    emu_delivery_header(d, "ce-specversion", "1.0");
    emu_delivery_header(d, "ce-type", "google.cloud.dataflow.job.v1beta3.statusChanged");
    emu_delivery_header(d, "ce-subject", subj);
    emu_delivery_header(d, "ce-time", tm);
    emu_delivery_header(d, "ce-dataschema", "https://googleapis.github.io/google-cloudevents/proto/google/events/cloud/dataflow/v1beta3/data.proto#JobEventData");
    emu_delivery_header(d, "ce-project", c->project_number);
    emu_delivery_header(d, "ce-location", j->region);
    emu_delivery_header(d, "ce-job", j->name);
    emu_deliver(1, c->eventarc_url, d);
}

/* Called (lock held) whenever a job's state changes: queues the Eventarc event and, for terminal states,
 * the Pub/Sub pushes of the job-message log lines. */
void emu_on_state_change(const struct emu_job *j)
{
    const struct emu_cfg *c = &emu_g.cfg;
    if (c->eventarc_url != NULL) emu_eventarc_event(j);
    if (c->push_url != NULL && js_terminal(j->state)) {
        /* Texts for cancel and drain are unknown; the emulator only logs the worker pool stop for them. */
        if (j->state == JS_DONE) {
            emu_push_log(j, "Executing success step s01", "INFO", j->state_ms - 2);
        } else if (j->state == JS_FAILED) {
            char text[1200];
            snprintf(text, sizeof text, "Workflow failed. Causes: %s", j->failure_cause ? j->failure_cause : "unknown");
            emu_push_log(j, text, "ERROR", j->state_ms - 2);
        }
        emu_push_log(j, "Worker pool stopped.", "INFO", j->state_ms - 1);
    }
}

static size_t emu_curl_discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

/* The endpoint of this attempt: a URL that lists several (space-separated, like the instances behind one push
 * endpoint) spreads deliveries round robin, and a retry goes to the next one. Into buf; "" when too long. */
static const char *emu_attempt_url(const struct emu_delivery *d, char *buf, size_t cap)
{
    size_t n = 0;
    for (const char *p = d->url; *p; p++)
        if (*p != ' ' && (p == d->url || p[-1] == ' ')) n++;
    if (n <= 1) return d->url;
    size_t want = (d->spread + (unsigned)d->attempt) % n, i = 0;
    for (const char *p = d->url; *p; p++) {
        if (*p == ' ' || (p != d->url && p[-1] != ' ')) continue;
        if (i++ != want) continue;
        size_t len = strcspn(p, " ");
        if (len >= cap) break;
        memcpy(buf, p, len);
        buf[len] = '\0';
        return buf;
    }
    return "";
}

/* Sends one delivery; returns the HTTP status (0 on a transport error). */
static long emu_send(CURL *curl, struct emu_delivery *d)
{
    char url[512];
    struct curl_slist *hl = NULL;
    long status = 0;
    for (int i = 0; i < d->nheaders; i++) hl = curl_slist_append(hl, d->headers[i]);
    char *tok = emu_oidc_token(d->audience, d->email, emu_now_ms() / 1000);
    if (tok != NULL) {
        size_t n = strlen(tok) + 32;
        char *auth = xmalloc(n);
        if (auth != NULL) {
            snprintf(auth, n, "Authorization: Bearer %s", tok);
            hl = curl_slist_append(hl, auth);
            free(auth);
        }
        free(tok);
    }
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, emu_attempt_url(d, url, sizeof url));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(d->body));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, emu_curl_discard);
    if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    return status;
}

void *emu_delivery_thread(void *arg)
{
    (void)arg;
    CURL *curl = curl_easy_init();
    pthread_mutex_lock(&emu_g.qlock);
    while (!emu_g.qstopping) {
        int64_t now = emu_now_ms();
        struct emu_delivery *d = emu_g.queue;
        if (d == NULL || d->due_ms > now) {
            if (d == NULL) {
                pthread_cond_wait(&emu_g.qcond, &emu_g.qlock);
            } else {
                struct timespec ts = emu_abstime(d->due_ms);
                pthread_cond_timedwait(&emu_g.qcond, &emu_g.qlock, &ts);
            }
            continue;
        }
        emu_g.queue = d->next;
        emu_g.qlen--;
        pthread_mutex_unlock(&emu_g.qlock);
        long status = curl ? emu_send(curl, d) : 0;
        /* Pub/Sub's ack codes; anything else is a nack and is retried with exponential backoff. */
        int ok = status == 102 || status == 200 || status == 201 || status == 202 || status == 204;
        const char *kname = d->kind ? "eventarc" : "push";
        d->attempt++;
        pthread_mutex_lock(&emu_g.lock);
        emu_stat_add("deliveries", kname, ok ? "delivered" : "failed_attempts", 1);
        if (!ok && d->attempt >= d->max_attempts) emu_stat_add("deliveries", kname, "given_up", 1);
        pthread_mutex_unlock(&emu_g.lock);
        if (!ok && d->attempt < d->max_attempts) {
            int shift = d->attempt - 1 > 16 ? 16 : d->attempt - 1;
            d->due_ms = emu_now_ms() + (int64_t)d->backoff_ms * (1 << shift);
            emu_queue_insert(d);
        } else {
            emu_delivery_free(d);
        }
        pthread_mutex_lock(&emu_g.qlock);
    }
    pthread_mutex_unlock(&emu_g.qlock);
    curl_easy_cleanup(curl);
    return NULL;
}

/* Asks the delivery thread to end and waits for it; queued deliveries are not sent. */
void emu_delivery_stop(pthread_t tid)
{
    pthread_mutex_lock(&emu_g.qlock);
    emu_g.qstopping = 1;
    pthread_cond_signal(&emu_g.qcond);
    pthread_mutex_unlock(&emu_g.qlock);
    pthread_join(tid, NULL);
}

/* Drops every queued delivery and the drop count. */
void emu_events_clear(void)
{
    pthread_mutex_lock(&emu_g.qlock);
    while (emu_g.queue != NULL) {
        struct emu_delivery *d = emu_g.queue;
        emu_g.queue = d->next;
        emu_delivery_free(d);
    }
    emu_g.qlen = 0;
    emu_g.qdropped = 0;
    pthread_mutex_unlock(&emu_g.qlock);
}

json_t *emu_events_queue_stats(void)
{
    pthread_mutex_lock(&emu_g.qlock);
    json_t *o = json_pack("{s:I, s:I}", "length", (json_int_t)emu_g.qlen, "dropped_full", (json_int_t)emu_g.qdropped);
    pthread_mutex_unlock(&emu_g.qlock);
    return o;
}
