/* http_client: one libcurl multi handle + a timer heap, driven by hc_run() from the caller's loop.
 * Uses: libcurl, log. Must not: know about Google, JSON, retry policy or credentials; never log headers or
 * bodies (bearer tokens travel in them). */
#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dbuf.h"
#include "log.h"
#include "mem.h"

#define HC_POOL_MAX 1024

/* One transfer. Owned by the client from hc_request until its callback has returned (or hc_cancel). */
typedef struct hc_xfer {
    hc_client *hc;
    int64_t id;
    CURL *easy;
    struct curl_slist *hdrs;
    char *method, *url, *body_in;
    dbuf body; /* the response body, capped at the client's max_body */
    int too_large;
    int finished;  /* removed from the multi, callback pending */
    int cancelled; /* hc_cancel'd while its callback was pending */
    CURLcode result;
    char *content_type, *retry_after;
    hc_done_cb done;
    void *ud;
    int64_t start_ms;
    char errbuf[CURL_ERROR_SIZE];
    struct hc_xfer *prev, *next;
} hc_xfer;

typedef struct hc_timer {
    int64_t id, due;
    uint64_t seq;
    hc_timer_cb cb;
    void *ud;
} hc_timer;

typedef struct hc_watch {
    int64_t id;
    int fd;
    short events;
    hc_fd_cb cb;
    void *ud;
} hc_watch;

struct hc_client {
    CURLM *multi;
    hc_options opt;
    char *user_agent;
    CURL **pool; /* reset easy handles ready for reuse */
    size_t npool;
    hc_xfer *xfers; /* in flight (doubly linked) */
    int nactive;
    hc_timer **heap; /* min-heap on (due, seq) */
    size_t ntimers, captimers;
    int64_t next_id;
    uint64_t seq;
    int running;
    hc_watch *watches;
    size_t nwatches, capwatches;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static int64_t default_clock(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hc_now_ms(const hc_client *hc) { return hc->opt.clock(hc->opt.clock_ud); }
int hc_active(const hc_client *hc) { return hc->nactive; }
int hc_timers_pending(const hc_client *hc) { return (int)hc->ntimers; }

const char *hc_error_name(hc_error e)
{
    switch (e) {
    case HC_OK: return "ok";
    case HC_ERR_CONNECT: return "connect failed";
    case HC_ERR_TIMEOUT: return "timeout";
    case HC_ERR_RESET: return "connection reset";
    case HC_ERR_TOO_LARGE: return "response too large";
    case HC_ERR_CANCELLED: return "cancelled";
    case HC_ERR_OTHER: break;
    }
    return "transport error";
}

char *hc_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0); /* NULL only when out of memory */
    if (e == NULL) mem_out_of_memory(strlen(s) * 3 + 1);
    char *copy = xstrdup(e);
    explicit_bzero(e, strlen(e)); /* a form body may carry a secret: libcurl's copy is wiped before it is freed */
    curl_free(e);
    return copy;
}

hc_client *hc_new(const hc_options *opts)
{
    pthread_once(&curl_once, curl_init_once);
    hc_client *hc = xcalloc(1, sizeof *hc);
    if (opts) hc->opt = *opts;
    if (hc->opt.connect_timeout_ms <= 0) hc->opt.connect_timeout_ms = 10000;
    if (hc->opt.total_timeout_ms <= 0) hc->opt.total_timeout_ms = 60000;
    if (hc->opt.max_body == 0) hc->opt.max_body = 8u << 20;
    if (hc->opt.max_conns_per_host <= 0) hc->opt.max_conns_per_host = 256;
    if (hc->opt.clock == NULL) hc->opt.clock = default_clock;
    hc->user_agent = xstrdup(hc->opt.user_agent ? hc->opt.user_agent : "sluice/" SLUICE_VERSION);
    hc->opt.user_agent = NULL; /* the caller's string is not kept */
    hc->multi = curl_multi_init();
    hc->pool = xcalloc(HC_POOL_MAX, sizeof *hc->pool);
    hc->next_id = 1;
    if (hc->multi == NULL) {
        hc_free(hc);
        return NULL;
    }
    /* HTTP/1.1 without pipelining: one request per connection at a time, connections kept alive and reused.
     * Transfers beyond the per-host limit queue inside libcurl instead of failing. */
    curl_multi_setopt(hc->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    curl_multi_setopt(hc->multi, CURLMOPT_MAX_HOST_CONNECTIONS, hc->opt.max_conns_per_host);
    curl_multi_setopt(hc->multi, CURLMOPT_MAXCONNECTS, hc->opt.max_conns_per_host);
    return hc;
}

static void xfer_release(hc_client *hc, hc_xfer *x)
{
    if (x->easy) {
        if (hc->npool < HC_POOL_MAX) {
            curl_easy_reset(x->easy);
            hc->pool[hc->npool++] = x->easy;
        } else {
            curl_easy_cleanup(x->easy);
        }
    }
    curl_slist_free_all(x->hdrs);
    free(x->method);
    free(x->url);
    free(x->body_in);
    dbuf_free(&x->body);
    free(x->content_type);
    free(x->retry_after);
    free(x);
}

static void list_unlink(hc_client *hc, hc_xfer *x)
{
    if (x->prev) x->prev->next = x->next;
    else hc->xfers = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
    hc->nactive--;
}

void hc_free(hc_client *hc)
{
    if (hc == NULL) return;
    hc->running = 1; /* callbacks below must not re-enter hc_run */
    while (hc->xfers) {
        hc_xfer *x = hc->xfers;
        if (!x->finished) curl_multi_remove_handle(hc->multi, x->easy);
        list_unlink(hc, x);
        if (!x->cancelled && x->done) {
            hc_resp r = {.error = HC_ERR_CANCELLED, .error_text = "cancelled", .body = ""};
            x->done(hc, &r, x->ud);
        }
        xfer_release(hc, x);
    }
    for (size_t i = 0; i < hc->ntimers; i++) free(hc->heap[i]);
    free(hc->heap);
    free(hc->watches);
    for (size_t i = 0; i < hc->npool; i++) curl_easy_cleanup(hc->pool[i]);
    free(hc->pool);
    if (hc->multi) curl_multi_cleanup(hc->multi);
    free(hc->user_agent);
    free(hc);
}

/* --- curl callbacks: only copy bytes, never call user code --- */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    hc_xfer *x = ud;
    size_t add = size * n;
    if (dbuf_add(&x->body, data, add) != 0) {
        x->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return add;
}

static char *header_value(const char *line, size_t len, const char *name)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
    return xstrndup(v, (size_t)(end - v));
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    hc_xfer *x = ud;
    size_t len = size * n;
    char *v;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response head (after 100-continue or a redirect): forget the previous one's headers. */
        free(x->content_type);
        free(x->retry_after);
        x->content_type = x->retry_after = NULL;
    } else if ((v = header_value(data, len, "Content-Type")) != NULL) {
        free(x->content_type);
        x->content_type = v;
    } else if ((v = header_value(data, len, "Retry-After")) != NULL) {
        free(x->retry_after);
        x->retry_after = v;
    }
    return len;
}

int64_t hc_request(hc_client *hc, const hc_req *req, hc_done_cb done, void *ud, const char **err)
{
    const char *e = NULL;
    hc_xfer *x = NULL;
    if (req == NULL || req->url == NULL || req->method == NULL) {
        e = "request needs a method and a url";
        goto fail;
    }
    x = xcalloc(1, sizeof *x);
    x->hc = hc;
    x->done = done;
    x->ud = ud;
    dbuf_init(&x->body, hc->opt.max_body);
    x->method = xstrdup(req->method);
    x->url = xstrdup(req->url);
    x->easy = hc->npool ? hc->pool[--hc->npool] : curl_easy_init();
    if (x->easy == NULL) {
        e = "cannot create a curl handle";
        goto fail;
    }
    if (req->body && req->body_len) {
        x->body_in = xmalloc(req->body_len);
        memcpy(x->body_in, req->body, req->body_len);
    }
    for (const char *const *h = req->headers; h && *h; h++) {
        struct curl_slist *nl = curl_slist_append(x->hdrs, *h);
        if (nl == NULL) mem_out_of_memory(0);
        x->hdrs = nl;
    }
    /* No "Expect: 100-continue" round trip for larger bodies. */
    struct curl_slist *nl = curl_slist_append(x->hdrs, "Expect:");
    if (nl == NULL) mem_out_of_memory(0);
    x->hdrs = nl;

    CURL *c = x->easy;
    curl_easy_setopt(c, CURLOPT_URL, x->url);
    curl_easy_setopt(c, CURLOPT_PRIVATE, x);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, hc->user_agent);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, hc->opt.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : hc->opt.total_timeout_ms);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)hc->opt.max_body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
    if (req->fresh_connection) curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    if (strcmp(x->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(x->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        /* POST semantics carry the body; CUSTOMREQUEST renames the verb (PUT, PATCH, DELETE). */
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(x->body_in ? req->body_len : 0));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->body_in ? x->body_in : "");
        if (strcmp(x->method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->method);
    }
    x->start_ms = hc_now_ms(hc);
    if (curl_multi_add_handle(hc->multi, c) != CURLM_OK) {
        e = "curl_multi_add_handle failed";
        goto fail;
    }
    x->id = hc->next_id++;
    x->next = hc->xfers;
    if (hc->xfers) hc->xfers->prev = x;
    hc->xfers = x;
    hc->nactive++;
    return x->id;

fail:
    if (err) *err = e;
    if (x) xfer_release(hc, x);
    return -1;
}

int hc_cancel(hc_client *hc, int64_t id)
{
    for (hc_xfer *x = hc->xfers; x; x = x->next) {
        if (x->id != id) continue;
        if (x->cancelled) return -1;
        if (x->finished) {
            /* Its callback is about to run from the current delivery batch: mark it, the batch frees it. */
            x->cancelled = 1;
            return 0;
        }
        curl_multi_remove_handle(hc->multi, x->easy);
        list_unlink(hc, x);
        xfer_release(hc, x);
        return 0;
    }
    return -1;
}

/* Maps a finished transfer's curl code to an error class. A timeout is "connect failed" only when not one byte
 * of the request went out (CURLINFO_REQUEST_SIZE == 0): only then is re-sending a launch known to be safe. */
static hc_error classify(hc_xfer *x)
{
    if (x->too_large || x->result == CURLE_FILESIZE_EXCEEDED) return HC_ERR_TOO_LARGE;
    long sent = 0;
    switch (x->result) {
    case CURLE_OK: return HC_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return HC_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &sent);
        return sent == 0 ? HC_ERR_CONNECT : HC_ERR_TIMEOUT;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return HC_ERR_RESET;
    default:
        return HC_ERR_OTHER;
    }
}

static void deliver(hc_client *hc, hc_xfer *x)
{
    hc_resp r = {0};
    r.error = classify(x);
    r.error_text = r.error == HC_OK ? "" : (x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
    if (r.error == HC_ERR_TOO_LARGE) r.error_text = "response body exceeds the size limit";
    if (r.error == HC_OK) curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
    r.body = (r.error == HC_OK && x->body.data) ? x->body.data : "";
    r.body_len = r.error == HC_OK ? x->body.len : 0;
    r.content_type = x->content_type;
    r.retry_after = x->retry_after;
    r.elapsed_ms = hc_now_ms(hc) - x->start_ms;
    if (x->done) x->done(hc, &r, x->ud);
}

/* Collects every finished transfer first, then runs callbacks: a callback may queue or cancel transfers
 * without disturbing curl's message queue. */
static int drain_done(hc_client *hc)
{
    hc_xfer *batch[64];
    int total = 0;
    for (;;) {
        int n = 0, left = 0;
        CURLMsg *m;
        while (n < 64 && (m = curl_multi_info_read(hc->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            hc_xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            x->result = m->data.result;
            x->finished = 1;
            curl_multi_remove_handle(hc->multi, x->easy);
            batch[n++] = x;
        }
        if (n == 0) break;
        for (int i = 0; i < n; i++) {
            hc_xfer *x = batch[i];
            if (!x->cancelled) deliver(hc, x);
            list_unlink(hc, x);
            xfer_release(hc, x);
        }
        total += n;
    }
    return total;
}

/* --- timers --- */

static int timer_less(const hc_timer *a, const hc_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_up(hc_client *hc, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!timer_less(hc->heap[i], hc->heap[p])) break;
        hc_timer *t = hc->heap[i];
        hc->heap[i] = hc->heap[p];
        hc->heap[p] = t;
        i = p;
    }
}

static void heap_down(hc_client *hc, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < hc->ntimers && timer_less(hc->heap[l], hc->heap[m])) m = l;
        if (r < hc->ntimers && timer_less(hc->heap[r], hc->heap[m])) m = r;
        if (m == i) break;
        hc_timer *t = hc->heap[i];
        hc->heap[i] = hc->heap[m];
        hc->heap[m] = t;
        i = m;
    }
}

static hc_timer *heap_remove(hc_client *hc, size_t i)
{
    hc_timer *t = hc->heap[i];
    hc->heap[i] = hc->heap[--hc->ntimers];
    if (i < hc->ntimers) {
        heap_down(hc, i);
        heap_up(hc, i);
    }
    return t;
}

int64_t hc_timer_add(hc_client *hc, int64_t delay_ms, hc_timer_cb cb, void *ud)
{
    if (hc->ntimers == hc->captimers) {
        size_t cap = hc->captimers ? hc->captimers * 2 : 64;
        hc_timer **nh = xrealloc(hc->heap, cap * sizeof *nh);
        hc->heap = nh;
        hc->captimers = cap;
    }
    hc_timer *t = xmalloc(sizeof *t);
    t->id = hc->next_id++;
    t->due = hc_now_ms(hc) + (delay_ms > 0 ? delay_ms : 0);
    t->seq = hc->seq++;
    t->cb = cb;
    t->ud = ud;
    hc->heap[hc->ntimers++] = t;
    heap_up(hc, hc->ntimers - 1);
    return t->id;
}

int hc_timer_cancel(hc_client *hc, int64_t id)
{
    for (size_t i = 0; i < hc->ntimers; i++) {
        if (hc->heap[i]->id == id) {
            free(heap_remove(hc, i));
            return 0;
        }
    }
    return -1;
}

/* Runs timers that are due now and were armed before this call: a callback that re-arms with delay 0 runs
 * on the next hc_run, so the loop cannot spin here. */
static int fire_timers(hc_client *hc)
{
    int64_t now = hc_now_ms(hc);
    uint64_t limit = hc->seq;
    int n = 0;
    while (hc->ntimers && hc->heap[0]->due <= now && hc->heap[0]->seq < limit) {
        hc_timer *t = heap_remove(hc, 0);
        t->cb(hc, t->ud);
        free(t);
        n++;
    }
    return n;
}

int64_t hc_fd_watch(hc_client *hc, int fd, short events, hc_fd_cb cb, void *ud)
{
    if (fd < 0 || cb == NULL) return -1;
    if (hc->nwatches == hc->capwatches) {
        size_t cap = hc->capwatches ? hc->capwatches * 2 : 8;
        hc_watch *nw = xrealloc(hc->watches, cap * sizeof *nw);
        hc->watches = nw;
        hc->capwatches = cap;
    }
    hc_watch *w = &hc->watches[hc->nwatches++];
    w->id = hc->next_id++;
    w->fd = fd;
    w->events = events;
    w->cb = cb;
    w->ud = ud;
    return w->id;
}

int hc_fd_unwatch(hc_client *hc, int64_t id)
{
    for (size_t i = 0; i < hc->nwatches; i++) {
        if (hc->watches[i].id != id) continue;
        memmove(&hc->watches[i], &hc->watches[i + 1], (hc->nwatches - i - 1) * sizeof *hc->watches);
        hc->nwatches--;
        return 0;
    }
    return -1;
}

void hc_wakeup(hc_client *hc) { curl_multi_wakeup(hc->multi); }

/* Runs the callbacks of watched fds that poll reported ready. Works on a snapshot: a callback may (un)watch. */
static void fire_watches(hc_client *hc, struct curl_waitfd *fds, const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i].revents == 0) continue;
        for (size_t k = 0; k < hc->nwatches; k++) {
            if (hc->watches[k].id != ids[i]) continue;
            hc_watch w = hc->watches[k];
            w.cb(hc, w.fd, fds[i].revents, w.ud);
            break;
        }
    }
}

int hc_run(hc_client *hc, int max_wait_ms)
{
    if (hc->running) return -1;
    hc->running = 1;
    int still = 0;
    int did = fire_timers(hc);
    curl_multi_perform(hc->multi, &still);
    did += drain_done(hc);
    /* Poll even when work was done (with no wait) so watched fds are never starved by busy transfers. */
    if (max_wait_ms > 0 || hc->nwatches > 0) {
        long wait = did ? 0 : max_wait_ms;
        if (hc->nactive == 0 && hc->ntimers == 0 && hc->nwatches == 0) wait = 0;
        if (hc->ntimers) {
            int64_t d = hc->heap[0]->due - hc_now_ms(hc);
            if (d < wait) wait = d < 0 ? 0 : (long)d;
        }
        size_t n = hc->nwatches;
        struct curl_waitfd fds[n ? n : 1];
        int64_t ids[n ? n : 1];
        for (size_t i = 0; i < n; i++) {
            fds[i].fd = hc->watches[i].fd;
            fds[i].events = hc->watches[i].events;
            fds[i].revents = 0;
            ids[i] = hc->watches[i].id;
        }
        if (wait > 0 || n > 0) curl_multi_poll(hc->multi, n ? fds : NULL, (unsigned)n, (int)wait, NULL);
        fire_watches(hc, fds, ids, n);
        curl_multi_perform(hc->multi, &still);
        drain_done(hc);
        fire_timers(hc);
    }
    hc->running = 0;
    return hc->nactive + (int)hc->ntimers;
}

/* --- owned responses and the blocking call --- */

hc_resp *hc_resp_dup(const hc_resp *r)
{
    hc_resp *d = xcalloc(1, sizeof *d);
    *d = *r;
    char *body = xmalloc(r->body_len + 1);
    d->error_text = xstrdup(r->error_text ? r->error_text : "");
    d->content_type = r->content_type ? xstrdup(r->content_type) : NULL;
    d->retry_after = r->retry_after ? xstrdup(r->retry_after) : NULL;
    if (r->body_len) memcpy(body, r->body, r->body_len);
    body[r->body_len] = '\0';
    d->body = body;
    return d;
}

void hc_resp_free(hc_resp *r)
{
    if (r == NULL) return;
    free((char *)r->body);
    free((char *)r->error_text);
    free((char *)r->content_type);
    free((char *)r->retry_after);
    free(r);
}

struct sync_state {
    int done;
    hc_resp *resp;
};

static void sync_done(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    struct sync_state *s = ud;
    s->resp = hc_resp_dup(r);
    s->done = 1;
}

int hc_perform_sync(hc_client *hc, const hc_req *req, hc_resp **out, const char **err)
{
    struct sync_state s = {0};
    *out = NULL;
    if (hc->running) {
        if (err) *err = "hc_perform_sync called from a callback";
        return -1;
    }
    if (hc_request(hc, req, sync_done, &s, err) < 0) return -1;
    while (!s.done) hc_run(hc, 100);
    *out = s.resp;
    return 0;
}
