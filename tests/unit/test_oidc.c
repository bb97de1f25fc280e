/* test_oidc: the token verifier with an injected clock and a JWKS file: valid tokens pass and are cached, a
 * cached token stops passing once it expires, an unknown kid refetches the keys at most once per interval
 * (key rotation works, a flood of bogus kids does not hammer the JWKS endpoint), and the refusal classes.
 * Against a local key endpoint that can stop answering: one fetch at a time, expired keys served meanwhile,
 * failed fetches backed off (issue 17 finding 9). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#include "jwt.h"
#include "oidc.h"
#include "testutil.h"

static int64_t fake_now = 1800000000;
static int64_t clock_fn(void) { return fake_now; }

static char *dir, jwks_path[600];
static jwt_key *k1, *k2;

static void write_jwks(int with_k2)
{
    json_t *keys = json_array();
    json_array_append_new(keys, jwt_key_public_jwk(k1, "k1"));
    if (with_k2) json_array_append_new(keys, jwt_key_public_jwk(k2, "k2"));
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *t = json_dumps(doc, 0);
    tu_write_file(jwks_path, t);
    free(t);
    json_decref(doc);
}

static char *bearer(jwt_key *key, const char *kid, int64_t iat, int64_t exp, const char *email)
{
    json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "iss", "https://accounts.google.com", "aud", "aud-1",
                               "email", email, "email_verified", 1, "iat", (json_int_t)iat, "exp", (json_int_t)exp);
    json_t *h = json_pack("{s:s}", "kid", kid);
    char *tok = jwt_sign_rs256(key, h, claims);
    char *out = NULL;
    if (asprintf(&out, "Bearer %s", tok) < 0) out = NULL;
    free(tok);
    json_decref(h);
    json_decref(claims);
    return out;
}

static oidc *make(void)
{
    static const char *const emails[] = {"ok@x.iam.gserviceaccount.com", NULL};
    oidc_options o = {.jwks_file = jwks_path, .audience = "aud-1", .emails = emails, .clock_s = clock_fn};
    const char *err = NULL;
    oidc *v = oidc_new(&o, &err);
    assert_non_null(v);
    return v;
}

static void test_cached_token_expires(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char *b = bearer(k1, "k1", fake_now, fake_now + 600, "ok@x.iam.gserviceaccount.com");
    char email[128], why[128];
    assert_int_equal(oidc_verify(v, b, email, sizeof email, why, sizeof why), OIDC_OK);
    assert_string_equal(email, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_OK); /* from the cache */
    fake_now += 600 + 61;                                                   /* past exp + skew */
    assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_string_equal(why, "token expired");
    free(b);
    oidc_free(v);
}

static void test_unknown_kid_refetch_is_rate_limited(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char why[128];
    char *b1 = bearer(k1, "k1", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, b1, NULL, 0, why, sizeof why), OIDC_OK);
    write_jwks(1); /* Google rotates in a new key */
    char *b2 = bearer(k2, "k2", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    /* just fetched: an unknown kid does not refetch yet */
    assert_int_equal(oidc_verify(v, b2, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_string_equal(why, "unknown key id");
    fake_now += 31;
    assert_int_equal(oidc_verify(v, b2, NULL, 0, why, sizeof why), OIDC_OK);
    int64_t ok = 0, failed = 0;
    oidc_fetch_counts(v, &ok, &failed);
    assert_int_equal(ok, 2);
    /* a burst of bogus kids costs at most one fetch per interval */
    char *bogus = bearer(k2, "k-bogus", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    for (int i = 0; i < 50; i++) assert_int_equal(oidc_verify(v, bogus, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    oidc_fetch_counts(v, &ok, &failed);
    assert_int_equal(ok, 2);
    free(b1);
    free(b2);
    free(bogus);
    oidc_free(v);
}

static void test_refusal_classes(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    char why[128];
    char *wrong_email = bearer(k1, "k1", fake_now, fake_now + 3600, "other@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, wrong_email, NULL, 0, why, sizeof why), OIDC_FORBIDDEN);
    char *future = bearer(k1, "k1", fake_now + 3600, fake_now + 7200, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, future, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    char *skewed = bearer(k1, "k1", fake_now + 30, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, skewed, NULL, 0, why, sizeof why), OIDC_OK); /* within 60 s skew */
    assert_int_equal(oidc_verify(v, NULL, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    assert_int_equal(oidc_verify(v, "Bearer", NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
    free(wrong_email);
    free(future);
    free(skewed);
    oidc_free(v);
    /* no keys at all: 503-class, a retry may help */
    oidc_options o = {.jwks_file = "/nonexistent/jwks.json", .audience = "aud-1", .clock_s = clock_fn};
    const char *err = NULL;
    oidc *none = oidc_new(&o, &err);
    char *b = bearer(k1, "k1", fake_now, fake_now + 3600, "ok@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(none, b, NULL, 0, why, sizeof why), OIDC_UNAVAILABLE);
    free(b);
    oidc_free(none);
    /* an audience is mandatory */
    oidc_options bad = {.jwks_file = jwks_path};
    assert_null(oidc_new(&bad, &err));
}

/* Regression (found by fuzz/fuzz_jwt.c): a time claim given as a real beyond int64_t ("exp": 1.55e41) was cast
 * to int64_t, which is undefined behaviour (UBSan aborts; x86 yields INT64_MIN, so such a token was refused as
 * "expired" only by accident). exp, iat and nbf outside int64_t are now invalid claims; ordinary large values
 * still pass. */
static void test_time_claims_out_of_range(void **state)
{
    (void)state;
    write_jwks(0);
    oidc *v = make();
    static const struct {
        const char *claim;
        double value;
        const char *why;
    } cases[] = {
        {"exp", 1.55e41, "missing or invalid exp"},
        {"exp", -1e300, "missing or invalid exp"},
        {"exp", 9.3e18, "missing or invalid exp"},
        {"iat", 1e300, "token issued in the future"},
        {"nbf", -1e41, "token not yet valid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I}", "iss", "https://accounts.google.com", "aud", "aud-1",
                                   "email", "ok@x.iam.gserviceaccount.com", "email_verified", 1, "iat",
                                   (json_int_t)fake_now, "exp", (json_int_t)(fake_now + 600));
        json_object_set_new(claims, cases[i].claim, json_real(cases[i].value));
        json_t *h = json_pack("{s:s}", "kid", "k1");
        char *tok = jwt_sign_rs256(k1, h, claims), *b = NULL;
        assert_non_null(tok);
        assert_true(asprintf(&b, "Bearer %s", tok) > 0);
        char why[128] = "";
        assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_UNAUTHENTICATED);
        if (strcmp(why, cases[i].why) != 0) fprintf(stderr, "%s = %g: got '%s'\n", cases[i].claim, cases[i].value, why);
        assert_string_equal(why, cases[i].why);
        free(b);
        free(tok);
        json_decref(h);
        json_decref(claims);
    }
    char *far = bearer(k1, "k1", fake_now, 4102444800, "ok@x.iam.gserviceaccount.com"); /* exp in 2100 */
    assert_int_equal(oidc_verify(v, far, NULL, 0, NULL, 0), OIDC_OK);
    free(far);
    oidc_free(v);
}


/* ---- a key endpoint that serves the JWKS, or accepts and never answers ---- */

typedef struct {
    int lfd, port;
    atomic_int answer; /* 1: serve `jwks`; 0: accept, read nothing, answer nothing */
    atomic_int accepted, hung, stop;
    int hung_fds[256];
    char *jwks;
    pthread_t th;
} key_server;

static void *key_server_main(void *arg)
{
    key_server *ks = arg;
    while (!atomic_load(&ks->stop)) {
        struct pollfd p = {.fd = ks->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0) continue;
        int fd = accept(ks->lfd, NULL, NULL);
        if (fd < 0) continue;
        atomic_fetch_add(&ks->accepted, 1);
        if (!atomic_load(&ks->answer)) {
            int n = atomic_load(&ks->hung);
            if (n < 256) ks->hung_fds[n] = fd;
            else close(fd);
            atomic_store(&ks->hung, n + 1);
            continue;
        }
        char req[4096];
        size_t got = 0;
        while (got < sizeof req - 1) {
            ssize_t r = recv(fd, req + got, sizeof req - 1 - got, 0);
            if (r <= 0) break;
            got += (size_t)r;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n")) break;
        }
        char head[256];
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: public, max-age=600\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                          strlen(ks->jwks));
        if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) < 0 || send(fd, ks->jwks, strlen(ks->jwks), MSG_NOSIGNAL) < 0)
            fprintf(stderr, "key server: send failed\n");
        close(fd);
    }
    return NULL;
}

static void key_server_start(key_server *ks, int answer)
{
    memset(ks, 0, sizeof *ks);
    atomic_store(&ks->answer, answer);
    json_t *doc = json_pack("{s:[o]}", "keys", jwt_key_public_jwk(k1, "k1"));
    ks->jwks = json_dumps(doc, 0);
    json_decref(doc);
    ks->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(ks->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(ks->lfd, 64), 0);
    socklen_t sl = sizeof sa;
    getsockname(ks->lfd, (struct sockaddr *)&sa, &sl);
    ks->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&ks->th, NULL, key_server_main, ks), 0);
}

static void key_server_stop(key_server *ks)
{
    atomic_store(&ks->stop, 1);
    pthread_join(ks->th, NULL);
    int n = atomic_load(&ks->hung);
    for (int i = 0; i < n && i < 256; i++) close(ks->hung_fds[i]);
    close(ks->lfd);
    free(ks->jwks);
}

/* Time bounds scale with SLUICE_TEST_TIMEOUT_MULTIPLIER (a loaded machine). */
static int scaled_ms(int ms)
{
    const char *m = getenv("SLUICE_TEST_TIMEOUT_MULTIPLIER");
    int k = m ? atoi(m) : 1;
    return ms * (k > 0 ? k : 1);
}

typedef struct {
    oidc *v;
    char *bearer;
    oidc_status st;
    int64_t ms;
} verify_job;

static void *verify_main(void *arg)
{
    verify_job *j = arg;
    int64_t t0 = util_mono_ms();
    char why[128];
    j->st = oidc_verify(j->v, j->bearer, NULL, 0, why, sizeof why);
    j->ms = util_mono_ms() - t0;
    return NULL;
}

static int hung_once(void *arg) { return atomic_load(&((key_server *)arg)->hung) >= 1; }

/* Regression, issue 17 finding 9: when the cached keys had expired and the key endpoint hung, every token check
 * did its own 5 s fetch, one after another (12 parallel pushes answered after 5, 10, ... 38 s). Now the checks
 * use the expired keys at once while one refresh runs, and that refresh is the only fetch. */
static void test_expired_keys_hanging_endpoint_single_flight(void **state)
{
    (void)state;
    key_server srv;
    key_server_start(&srv, 1);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/oauth2/v3/certs", srv.port);
    /* a fetch timeout far above the bound below: a check that waited for a fetch cannot pass */
    oidc_options o = {.jwks_url = url, .audience = "aud-1", .clock_s = clock_fn, .fetch_timeout_ms = scaled_ms(20000)};
    const char *err = NULL;
    oidc *v = oidc_new(&o, &err);
    assert_non_null(v);
    assert_int_equal(oidc_prefetch(v), 0);
    assert_int_equal(atomic_load(&srv.accepted), 1);
    atomic_store(&srv.answer, 0); /* from now on the endpoint hangs */
    fake_now += 601;              /* past max-age=600: the keys expired */
    enum { N = 12 };
    verify_job jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        char email[64];
        snprintf(email, sizeof email, "pusher-%d@x.iam.gserviceaccount.com", i); /* 12 tokens: no cache hits */
        jobs[i] = (verify_job){.v = v, .bearer = bearer(k1, "k1", fake_now, fake_now + 3600, email)};
        assert_int_equal(pthread_create(&th[i], NULL, verify_main, &jobs[i]), 0);
    }
    int64_t worst = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].st, OIDC_OK);
        if (jobs[i].ms > worst) worst = jobs[i].ms;
        free(jobs[i].bearer);
    }
    fprintf(stderr, "slowest of %d checks: %lld ms\n", N, (long long)worst);
    assert_true(worst < scaled_ms(1000));
    /* exactly one refresh reached the endpoint (poll: it starts on its own thread), and it is still in flight */
    assert_true(tu_poll(hung_once, &srv, scaled_ms(5000)));
    char *again = bearer(k1, "k1", fake_now, fake_now + 3600, "late@x.iam.gserviceaccount.com");
    assert_int_equal(oidc_verify(v, again, NULL, 0, NULL, 0), OIDC_OK);
    free(again);
    assert_int_equal(atomic_load(&srv.hung), 1);
    assert_int_equal(atomic_load(&srv.accepted), 2);
    assert_int_equal(oidc_fetch_attempts(v), 2);
    int64_t t0 = util_mono_ms();
    oidc_free(v); /* aborts the hung fetch instead of waiting out its timeout */
    assert_true(util_mono_ms() - t0 < scaled_ms(5000));
    key_server_stop(&srv);
}

typedef struct {
    oidc *v;
    int64_t want;
} failed_arg;

static int failed_reaches(void *arg)
{
    failed_arg *a = arg;
    int64_t ok = 0, failed = 0;
    oidc_fetch_counts(a->v, &ok, &failed);
    return failed >= a->want;
}

/* Issue 17 finding 9, second half: a failed fetch is backed off (1, 2, 4 s, capped) before any check starts the
 * next, and checks without keys do not wait for a fetch of their own; they share the one in flight. */
static void test_failed_fetch_backs_off(void **state)
{
    (void)state;
    key_server srv;
    key_server_start(&srv, 0); /* never answers */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/oauth2/v3/certs", srv.port);
    oidc_options o = {.jwks_url = url, .audience = "aud-1", .clock_s = clock_fn, .fetch_timeout_ms = 200,
                      .backoff_max_s = 4};
    const char *err = NULL;
    oidc *v = oidc_new(&o, &err);
    assert_non_null(v);
    char *b = bearer(k1, "k1", fake_now, fake_now + 36000, "ok@x.iam.gserviceaccount.com");
    char why[128];
    /* each step: the clock advance, then whether a new fetch may start */
    static const struct {
        int advance;
        int fetches;
    } steps[] = {{0, 1}, {0, 1}, {1, 2}, {1, 2}, {1, 3}, {3, 3}, {1, 4}, {3, 4}, {1, 5}, {4, 6}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        fake_now += steps[i].advance;
        assert_int_equal(oidc_verify(v, b, NULL, 0, why, sizeof why), OIDC_UNAVAILABLE);
        if (oidc_fetch_attempts(v) != steps[i].fetches)
            fprintf(stderr, "step %zu: %lld fetches, want %d\n", i, (long long)oidc_fetch_attempts(v), steps[i].fetches);
        assert_int_equal(oidc_fetch_attempts(v), steps[i].fetches);
        failed_arg fa = {v, steps[i].fetches};
        assert_true(tu_poll(failed_reaches, &fa, scaled_ms(5000))); /* that fetch ended (timed out) */
    }
    /* parallel checks without keys share one fetch */
    fake_now += 4;
    enum { N = 8 };
    verify_job jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (verify_job){.v = v, .bearer = b};
        assert_int_equal(pthread_create(&th[i], NULL, verify_main, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].st, OIDC_UNAVAILABLE);
        assert_true(jobs[i].ms < scaled_ms(2500)); /* at most one wait for the shared fetch */
    }
    assert_int_equal(oidc_fetch_attempts(v), 7);
    free(b);
    oidc_free(v);
    assert_int_equal(atomic_load(&srv.hung), 7);
    key_server_stop(&srv);
}

int main(void)
{
    dir = tu_tempdir();
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
    k1 = jwt_key_generate(2048);
    k2 = jwt_key_generate(2048);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_token_expires),
        cmocka_unit_test(test_unknown_kid_refetch_is_rate_limited),
        cmocka_unit_test(test_refusal_classes),
        cmocka_unit_test(test_time_claims_out_of_range),
        cmocka_unit_test(test_expired_keys_hanging_endpoint_single_flight),
        cmocka_unit_test(test_failed_fetch_backs_off),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    jwt_key_free(k1);
    jwt_key_free(k2);
    tu_rmtree(dir);
    free(dir);
    return rc;
}
