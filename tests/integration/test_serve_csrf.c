/* test_serve_csrf: cross-site requests against `sluice serve --ui-trust-header`, the real binary on 127.0.0.1.
 * Pins issue 17, finding 6: behind a proxy that signs browsers in by cookie (and sets the trusted header), an
 * HTML form on another origin posting text/plain cancelled a run: the POST routes took any content type and
 * checked neither Origin nor Sec-Fetch-Site. Now every state-changing API route takes application/json only
 * (415, with or without a body), and with the trust header a browser's cross-site request is refused (403);
 * the CLI's and the UI's own requests, and ingress content types, still work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "serve_harness.h"

#define USER "X-Test-Proxy-User: alice@example.com"
#define JSON "Content-Type: application/json"

static serve_proc S;
static char run_id[64];
static char host_hdr[160], same_origin[160];

static long post(const char *path, const char *const *headers, const char *body)
{
    return sh_send(S.base, "POST", path, headers, body, body ? strlen(body) : 0, 0);
}

/* Starts a run (its launches fail: Dataflow is unreachable, so it stays cancellable) and keeps its id. */
static void start_run(void)
{
    CURL *c = curl_easy_init();
    char url[256], *buf = NULL;
    size_t len = 0;
    snprintf(url, sizeof url, "%s/v1/runs", S.base);
    FILE *f = open_memstream(&buf, &len);
    struct curl_slist *hl = curl_slist_append(NULL, "Authorization: Bearer optok");
    hl = curl_slist_append(hl, JSON);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"workflow\":\"example\"}");
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    fclose(f);
    json_t *j = json_loads(buf, 0, NULL);
    const char *id = json_string_value(json_object_get(json_object_get(j, "run"), "id"));
    if (status != 201 || id == NULL) fprintf(stderr, "start: %ld %s\n", status, buf);
    assert_int_equal(status, 201);
    snprintf(run_id, sizeof run_id, "%s", id);
    json_decref(j);
    free(buf);
}

static void test_cross_site_refused(void **state)
{
    (void)state;
    char cancel[128];
    snprintf(cancel, sizeof cancel, "/v1/runs/%s:cancel", run_id);
    struct {
        const char *name;
        const char *h[5];
        const char *body;
        long want;
    } cases[] = {
        /* the report: a form on another origin, text/plain, the browser's cookie signs it in at the proxy */
        {"form from another origin", {USER, "Content-Type: text/plain", "Origin: https://evil.example", NULL}, "x=1", 403},
        {"form, Sec-Fetch-Site cross-site", {USER, "Content-Type: text/plain", "Sec-Fetch-Site: cross-site", NULL}, "x", 403},
        {"JSON from another origin", {USER, JSON, "Origin: https://evil.example", NULL}, "{}", 403},
        {"JSON, Sec-Fetch-Site cross-site", {USER, JSON, "Sec-Fetch-Site: cross-site", NULL}, "{}", 403},
        {"JSON, Sec-Fetch-Site same-site", {USER, JSON, "Sec-Fetch-Site: same-site", NULL}, "{}", 403},
        {"Origin null (sandboxed page)", {USER, JSON, "Origin: null", NULL}, "{}", 403},
        {"Origin on another port", {USER, JSON, "Origin: http://127.0.0.1:1", NULL}, "{}", 403},
        {"same origin but text/plain", {USER, "Content-Type: text/plain", same_origin, NULL}, "{}", 415},
        {"same origin, form type", {USER, "Content-Type: application/x-www-form-urlencoded", same_origin, NULL}, "a=b", 415},
        {"same origin, no body, no type", {USER, same_origin, NULL}, NULL, 415},
        {"CLI-like, no type", {"Authorization: Bearer optok", NULL}, NULL, 415},
        {"multipart", {USER, "Content-Type: multipart/form-data; boundary=x", NULL}, "--x--", 415},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        long got = post(cancel, cases[i].h, cases[i].body);
        if (got != cases[i].want) {
            fprintf(stderr, "'%s': got %ld, want %ld\n", cases[i].name, got, cases[i].want);
            failures++;
        }
    }
    /* the other state-changing routes take the same gate */
    const char *evil[] = {USER, "Content-Type: text/plain", "Origin: https://evil.example", NULL};
    const char *plain[] = {"Authorization: Bearer optok", "Content-Type: text/plain", NULL};
    char redrive[128];
    snprintf(redrive, sizeof redrive, "/v1/runs/%s:redrive", run_id);
    const char *paths[] = {"/v1/runs", redrive, "/v1/workflows:reload", "/v1/reconcile?budget_ms=10"};
    for (size_t i = 0; i < 4; i++) {
        long a = post(paths[i], evil, "{}"), b = post(paths[i], plain, "{}");
        if (a != 403 || b != 415) {
            fprintf(stderr, "%s: cross-site %ld (want 403), text/plain %ld (want 415)\n", paths[i], a, b);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
    /* nothing was cancelled */
    const char *op[] = {"Authorization: Bearer optok", NULL};
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", run_id);
    assert_int_equal(sh_send(S.base, "GET", path, op, NULL, 0, 0), 200);
}

static void test_own_requests_pass(void **state)
{
    (void)state;
    /* reads are not gated; the UI's own POST (same origin, JSON) and the CLI's (no Origin, JSON) go through */
    const char *ui_get[] = {USER, "Sec-Fetch-Site: same-origin", same_origin, NULL};
    assert_int_equal(sh_send(S.base, "GET", "/v1/runs", ui_get, NULL, 0, 0), 200);
    const char *cli[] = {"Authorization: Bearer optok", JSON, NULL};
    assert_int_equal(post("/v1/reconcile?budget_ms=10", cli, NULL), 200);
    const char *proxied[] = {USER, JSON, "Origin: https://sluice.example.com", "Host: backend.internal:8080",
                             "X-Forwarded-Host: sluice.example.com", NULL};
    assert_int_equal(post("/v1/workflows:reload", proxied, NULL), 200);
    const char *ui[] = {USER, JSON, "Sec-Fetch-Site: same-origin", same_origin, NULL};
    char cancel[128];
    snprintf(cancel, sizeof cancel, "/v1/runs/%s:cancel", run_id);
    long got = post(cancel, ui, "{}");
    assert_true(got == 202 || got == 200);
}

/* Ingress keeps its content types (Pub/Sub push sends application/json; Eventarc binary mode its data's type,
 * text/plain or none): a delivery naming a job that is not Sluice's is acknowledged 200, whatever the Origin. */
static void test_ingress_unchanged(void **state)
{
    (void)state;
    char *t = sh_token(S.key, "k1", NULL);
    char *a = sh_auth(t);
    char *body = sh_push_body("m-csrf-1", "someone-elses-job", "2026-11-27_00_00_00-7");
    const char *types[] = {JSON, "Content-Type: text/plain", "Content-Type:" /* none: curl drops the header */};
    for (int i = 0; i < 3; i++) {
        const char *hl[] = {a, types[i], "Origin: https://elsewhere.example", "Sec-Fetch-Site: cross-site", NULL};
        assert_int_equal(sh_send(S.base, "POST", "/v1/events/pubsub", hl, body, strlen(body), 0), 200);
    }
    free(body);
    free(a);
    free(t);
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *extra[] = {"--ui-trust-header", "X-Test-Proxy-User", NULL};
    if (sh_start(&S, extra) != 0) return -1;
    const char *hostport = strstr(S.base, "://") + 3;
    snprintf(host_hdr, sizeof host_hdr, "Host: %s", hostport);
    snprintf(same_origin, sizeof same_origin, "Origin: %s", S.base);
    start_run();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = sh_stop(&S);
    sh_free(&S);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_site_refused),
        cmocka_unit_test(test_own_requests_pass),
        cmocka_unit_test(test_ingress_unchanged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
