/* test_http_client: the curl-multi client against an in-test libmicrohttpd server: methods and bodies, 250
 * concurrent slow requests in one loop, timeouts, connection refused, dropped and truncated replies, the body
 * cap (chunked and with Content-Length), Retry-After capture, cancel, callbacks that queue more work, the
 * blocking call, and timers on an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <unistd.h>

#include "http_client.h"
#include "mhd_stub.h"

static stub_server *srv;

static int setup(void **state)
{
    (void)state;
    srv = stub_start();
    return srv ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    stub_stop(srv);
    return 0;
}

typedef struct got {
    int calls;
    hc_resp *resp;
} got;

static void on_done(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    got *g = ud;
    g->calls++;
    hc_resp_free(g->resp);
    g->resp = hc_resp_dup(r);
}

static void run_until(hc_client *hc, got *g, int n)
{
    for (int i = 0; i < 3000 && g->calls < n; i++) hc_run(hc, 10);
}

static char *url(const char *path)
{
    char *u = NULL;
    assert_true(asprintf(&u, "%s%s", srv->base, path) > 0);
    return u;
}

static void test_methods_and_bodies(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    char *u = url("/echo");
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    const char *methods[] = {"GET", "POST", "PUT", "DELETE"};
    for (int i = 0; i < 4; i++) {
        got g = {0};
        hc_req rq = {.method = methods[i], .url = u, .headers = hdrs, .body = i ? "{\"a\":1}" : NULL,
                     .body_len = i ? 7 : 0};
        assert_true(hc_request(hc, &rq, on_done, &g, NULL) > 0);
        run_until(hc, &g, 1);
        assert_int_equal(g.calls, 1);
        assert_int_equal(g.resp->error, HC_OK);
        assert_int_equal(g.resp->status, 200);
        char want[64];
        snprintf(want, sizeof want, "%s %s", methods[i], i ? "{\"a\":1}" : "");
        assert_string_equal(g.resp->body, want);
        assert_string_equal(g.resp->content_type, "application/json");
        hc_resp_free(g.resp);
    }
    free(u);
    hc_free(hc);
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void count_done(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    int *n = ud;
    if (r->error == HC_OK && r->status == 200) (*n)++;
    else (*n) += 100000;
}

static void test_many_concurrent(void **state)
{
    (void)state;
    hc_options o = {.max_conns_per_host = 300};
    hc_client *hc = hc_new(&o);
    pthread_mutex_lock(&srv->mu);
    srv->max_inflight = 0;
    pthread_mutex_unlock(&srv->mu);
    char *u = url("/delay?ms=300");
    int ok = 0, n = 250;
    int64_t t0 = now_ms();
    hc_req rq = {.method = "GET", .url = u};
    for (int i = 0; i < n; i++) assert_true(hc_request(hc, &rq, count_done, &ok, NULL) > 0);
    assert_int_equal(hc_active(hc), n);
    while (hc_run(hc, 50) > 0 && now_ms() - t0 < 20000) {
    }
    int64_t took = now_ms() - t0;
    assert_int_equal(ok, n);
    /* Serialized this would take 75 s; concurrently it is a few hundred ms plus connection setup. */
    assert_true(took < 5000);
    pthread_mutex_lock(&srv->mu);
    int peak = srv->max_inflight;
    pthread_mutex_unlock(&srv->mu);
    print_message("250 requests of 300 ms in %lld ms, server saw %d at once\n", (long long)took, peak);
    assert_true(peak >= 200);
    free(u);
    hc_free(hc);
}

static void test_timeout(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    char *u = url("/delay?ms=1500");
    got g = {0};
    hc_req rq = {.method = "GET", .url = u, .timeout_ms = 200};
    int64_t t0 = now_ms();
    hc_request(hc, &rq, on_done, &g, NULL);
    run_until(hc, &g, 1);
    assert_int_equal(g.resp->error, HC_ERR_TIMEOUT); /* the request was sent: outcome unknown */
    assert_int_equal(g.resp->status, 0);
    assert_true(now_ms() - t0 < 1200);
    hc_resp_free(g.resp);
    free(u);
    hc_free(hc);
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* Bind an ephemeral port and close it again: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
    hc_client *hc = hc_new(NULL);
    got g = {0};
    hc_req rq = {.method = "POST", .url = u, .body = "{}", .body_len = 2};
    hc_request(hc, &rq, on_done, &g, NULL);
    run_until(hc, &g, 1);
    assert_int_equal(g.resp->error, HC_ERR_CONNECT);
    assert_true(strlen(g.resp->error_text) > 0);
    hc_resp_free(g.resp);
    hc_free(hc);
}

static void expect_error(hc_client *hc, const char *path, hc_error want)
{
    char *u = url(path);
    got g = {0};
    hc_req rq = {.method = "GET", .url = u};
    hc_request(hc, &rq, on_done, &g, NULL);
    run_until(hc, &g, 1);
    assert_int_equal(g.calls, 1);
    if (g.resp->error != want) print_message("%s: got %s (%s)\n", path, hc_error_name(g.resp->error), g.resp->error_text);
    assert_int_equal(g.resp->error, want);
    hc_resp_free(g.resp);
    free(u);
}

static void test_dropped_and_truncated(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    expect_error(hc, "/drop", HC_ERR_RESET);
    expect_error(hc, "/truncated", HC_ERR_RESET);
    expect_error(hc, "/echo", HC_OK); /* the client is still usable */
    hc_free(hc);
}

static void test_body_cap(void **state)
{
    (void)state;
    hc_options o = {.max_body = 10000};
    hc_client *hc = hc_new(&o);
    expect_error(hc, "/huge?n=50000", HC_ERR_TOO_LARGE);      /* chunked: stopped while reading */
    expect_error(hc, "/huge?n=50000&cl=1", HC_ERR_TOO_LARGE); /* Content-Length: refused up front */
    expect_error(hc, "/huge?n=200000000", HC_ERR_TOO_LARGE);  /* 200 MB never gets buffered */
    expect_error(hc, "/huge?n=10000", HC_OK);                 /* exactly at the cap is fine */
    hc_free(hc);
}

static void test_retry_after_header(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    char *u = url("/status?code=503&retry_after=7");
    got g = {0};
    hc_req rq = {.method = "GET", .url = u};
    hc_request(hc, &rq, on_done, &g, NULL);
    run_until(hc, &g, 1);
    assert_int_equal(g.resp->error, HC_OK);
    assert_int_equal(g.resp->status, 503);
    assert_non_null(g.resp->retry_after);
    assert_string_equal(g.resp->retry_after, "7");
    hc_resp_free(g.resp);
    free(u);
    hc_free(hc);
}

static void never(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    (void)r;
    (*(int *)ud)++;
}

static void test_cancel(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    char *u = url("/delay?ms=300");
    int called = 0;
    hc_req rq = {.method = "GET", .url = u};
    int64_t id = hc_request(hc, &rq, never, &called, NULL);
    hc_run(hc, 20);
    assert_int_equal(hc_cancel(hc, id), 0);
    assert_int_equal(hc_cancel(hc, id), -1);
    assert_int_equal(hc_active(hc), 0);
    for (int i = 0; i < 50; i++) hc_run(hc, 10);
    assert_int_equal(called, 0);
    /* hc_free completes what is still in flight with HC_ERR_CANCELLED. */
    got g = {0};
    hc_request(hc, &rq, on_done, &g, NULL);
    hc_free(hc);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.resp->error, HC_ERR_CANCELLED);
    hc_resp_free(g.resp);
    free(u);
}

typedef struct chain {
    int left, done;
    char *u;
} chain;

static void chain_next(hc_client *hc, const hc_resp *r, void *ud)
{
    chain *c = ud;
    assert_int_equal(r->status, 200);
    c->done++;
    if (--c->left > 0) {
        hc_req rq = {.method = "GET", .url = c->u};
        assert_true(hc_request(hc, &rq, chain_next, c, NULL) > 0);
        assert_int_equal(hc_run(hc, 0), -1); /* re-entrant hc_run is refused */
    }
}

static void test_callback_queues_more(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    chain c = {.left = 5, .u = url("/echo")};
    hc_req rq = {.method = "GET", .url = c.u};
    hc_request(hc, &rq, chain_next, &c, NULL);
    while (hc_run(hc, 50) > 0) {
    }
    assert_int_equal(c.done, 5);
    free(c.u);
    hc_free(hc);
}

static void test_sync(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    char *u = url("/echo");
    hc_req rq = {.method = "PUT", .url = u, .body = "x", .body_len = 1};
    hc_resp *r = NULL;
    const char *err = NULL;
    assert_int_equal(hc_perform_sync(hc, &rq, &r, &err), 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "PUT x");
    hc_resp_free(r);
    hc_req bad = {.method = "GET", .url = NULL};
    assert_int_equal(hc_perform_sync(hc, &bad, &r, &err), -1);
    assert_non_null(err);
    free(u);
    hc_free(hc);
}

/* --- timers on an injected clock --- */

static int64_t fake_now;
static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

typedef struct tlog {
    int order[8];
    int n;
    int64_t rearm_id;
} tlog;
static tlog tl;

static void tick(hc_client *hc, void *ud)
{
    (void)hc;
    tl.order[tl.n++] = (int)(intptr_t)ud;
}

static void rearm(hc_client *hc, void *ud)
{
    tl.order[tl.n++] = (int)(intptr_t)ud;
    tl.rearm_id = hc_timer_add(hc, 0, rearm, ud);
}

static void test_timers(void **state)
{
    (void)state;
    fake_now = 1000;
    memset(&tl, 0, sizeof tl);
    hc_options o = {.clock = fake_clock};
    hc_client *hc = hc_new(&o);
    hc_timer_add(hc, 30, tick, (void *)3);
    hc_timer_add(hc, 10, tick, (void *)1);
    int64_t two = hc_timer_add(hc, 20, tick, (void *)2);
    hc_timer_add(hc, 20, tick, (void *)4); /* same due time: runs in arming order */
    hc_timer_add(hc, 20, tick, (void *)5);
    assert_int_equal(hc_timers_pending(hc), 5);
    assert_int_equal(hc_run(hc, 0), 5);
    assert_int_equal(tl.n, 0);
    fake_now = 1010;
    hc_run(hc, 0);
    assert_int_equal(tl.n, 1);
    assert_int_equal(tl.order[0], 1);
    assert_int_equal(hc_timer_cancel(hc, two), 0);
    assert_int_equal(hc_timer_cancel(hc, two), -1);
    fake_now = 1100;
    assert_int_equal(hc_run(hc, 0), 0);
    assert_int_equal(tl.n, 4);
    assert_int_equal(tl.order[1], 4);
    assert_int_equal(tl.order[2], 5);
    assert_int_equal(tl.order[3], 3);
    /* A callback re-arming with delay 0 runs once per hc_run, never in a loop. */
    hc_timer_add(hc, 0, rearm, (void *)9);
    hc_run(hc, 0);
    assert_int_equal(tl.n, 5);
    hc_run(hc, 0);
    assert_int_equal(tl.n, 6);
    assert_int_equal(hc_timer_cancel(hc, tl.rearm_id), 0);
    assert_int_equal(hc_run(hc, 0), 0);
    hc_free(hc);
}

/* A real-clock timer wakes hc_run from its wait on time. */
static void test_timer_wakes_wait(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    memset(&tl, 0, sizeof tl);
    int64_t t0 = now_ms();
    hc_timer_add(hc, 80, tick, (void *)1);
    while (hc_run(hc, 1000) > 0) {
    }
    int64_t took = now_ms() - t0;
    assert_int_equal(tl.n, 1);
    assert_true(took >= 75 && took < 500);
    hc_free(hc);
}

/* --- other fds on the loop, and cross-thread wakeups --- */

typedef struct piper {
    int fds[2];
    hc_client *hc;
    int got;
    char buf[16];
} piper;

static void *write_later(void *arg)
{
    piper *p = arg;
    stub_sleep_ms(80);
    if (write(p->fds[1], "ping", 4) != 4) return NULL;
    return NULL;
}

static void on_readable(hc_client *hc, int fd, short revents, void *ud)
{
    (void)hc;
    piper *p = ud;
    assert_true(revents & POLLIN);
    ssize_t n = read(fd, p->buf, sizeof p->buf - 1);
    if (n > 0) p->buf[n] = '\0';
    p->got++;
}

static void test_fd_watch(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    piper p = {.hc = hc};
    assert_int_equal(pipe(p.fds), 0);
    int64_t w = hc_fd_watch(hc, p.fds[0], POLLIN, on_readable, &p);
    assert_true(w > 0);
    pthread_t t;
    pthread_create(&t, NULL, write_later, &p);
    int64_t t0 = now_ms();
    while (!p.got && now_ms() - t0 < 3000) hc_run(hc, 1000);
    pthread_join(t, NULL);
    assert_int_equal(p.got, 1);
    assert_string_equal(p.buf, "ping");
    assert_true(now_ms() - t0 < 1000);
    /* Busy transfers do not starve a watched fd. */
    char *u = url("/echo");
    int ok = 0;
    hc_req rq = {.method = "GET", .url = u};
    for (int i = 0; i < 50; i++) hc_request(hc, &rq, count_done, &ok, NULL);
    assert_int_equal(write(p.fds[1], "x", 1), 1);
    while (p.got < 2 && hc_run(hc, 100) > 0) {
    }
    assert_int_equal(p.got, 2);
    while (hc_run(hc, 50) > 0) {
    }
    assert_int_equal(ok, 50);
    assert_int_equal(hc_fd_unwatch(hc, w), 0);
    assert_int_equal(hc_fd_unwatch(hc, w), -1);
    free(u);
    close(p.fds[0]);
    close(p.fds[1]);
    hc_free(hc);
}

static void *wake_later(void *arg)
{
    stub_sleep_ms(80);
    hc_wakeup(arg);
    return NULL;
}

static void test_wakeup(void **state)
{
    (void)state;
    hc_client *hc = hc_new(NULL);
    memset(&tl, 0, sizeof tl);
    hc_timer_add(hc, 5000, tick, (void *)1);
    pthread_t t;
    pthread_create(&t, NULL, wake_later, hc);
    int64_t t0 = now_ms();
    hc_run(hc, 5000);
    int64_t took = now_ms() - t0;
    pthread_join(t, NULL);
    assert_true(took < 2000);
    assert_int_equal(tl.n, 0);
    hc_free(hc);
}

/* hc_escape: RFC 3986's unreserved characters stay, every other byte (UTF-8 included) is %XX in upper case. */
static void test_escape(void **state)
{
    (void)state;
    char *e = hc_escape("AZaz09-._~");
    assert_string_equal(e, "AZaz09-._~");
    free(e);
    e = hc_escape("a b/c?d=e&f+g%h\xc3\xa9:@!*'()");
    assert_string_equal(e, "a%20b%2Fc%3Fd%3De%26f%2Bg%25h%C3%A9%3A%40%21%2A%27%28%29");
    free(e);
    e = hc_escape("");
    assert_string_equal(e, "");
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods_and_bodies), cmocka_unit_test(test_many_concurrent),
        cmocka_unit_test(test_timeout), cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_dropped_and_truncated), cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_retry_after_header), cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_callback_queues_more), cmocka_unit_test(test_sync),
        cmocka_unit_test(test_timers), cmocka_unit_test(test_timer_wakes_wait),
        cmocka_unit_test(test_fd_watch), cmocka_unit_test(test_wakeup), cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
