/* test_emulator_identity: drives a real `sluice emulator` process over HTTP (libcurl) to check
 * (1) the OAuth jwt-bearer grant against assertions signed with jwt.h: a valid one is accepted and its token
 *     opens the Dataflow API; wrong aud/iss/kid/key, expired, too long-lived, future iat, missing scope,
 *     alg none, HS256 keyed with the public key and a tampered payload are all refused;
 * (2) event delivery to an in-process libmicrohttpd receiver: Eventarc CloudEvents for every state change,
 *     Pub/Sub wrapped pushes of the job-message LogEntries, OIDC tokens that verify against the emulator's
 *     JWKS, retry of a nacked push with the same messageId, seeded duplicates and seeded reordering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jwt.h"
#include "testutil.h"

static char *g_dir;
static pid_t g_pid;
static char g_base[128];
static jwt_key *g_sa_key;
static char *g_client_email, *g_token_uri, *g_kid;

/* ---------- HTTP client ---------- */

struct buf {
    char *data;
    size_t len;
};

static size_t buf_write(char *p, size_t s, size_t n, void *u)
{
    struct buf *b = u;
    char *nd = realloc(b->data, b->len + s * n + 1);
    if (nd == NULL) return 0;
    memcpy(nd + b->len, p, s * n);
    b->data = nd;
    b->len += s * n;
    b->data[b->len] = '\0';
    return s * n;
}

/* Returns the HTTP status; *out (may be NULL) receives the parsed JSON body or NULL; caller decrefs. */
static long http(const char *method, const char *path, const char *body, const char *header, json_t **out)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", g_base, path);
    CURL *c = curl_easy_init();
    struct buf b = {0};
    struct curl_slist *hl = NULL;
    long status = 0;
    if (header) hl = curl_slist_append(hl, header);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (out) *out = b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return status;
}

/* ---------- emulator process ---------- */

static int ready_exists(void *arg)
{
    size_t n = 0;
    char *text = tu_read_file(arg, &n);
    int ok = text != NULL && n > 0 && text[n - 1] == '\n';
    free(text);
    return ok;
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_dir = tu_tempdir();
    char ready[512], creds[512], out[512], sa_path[600];
    snprintf(ready, sizeof ready, "%s/ready", g_dir);
    snprintf(creds, sizeof creds, "%s/creds", g_dir);
    snprintf(out, sizeof out, "%s/emulator.log", g_dir);
    const char *bin = getenv("SLUICE_BIN");
    if (bin == NULL) return -1;
    g_pid = fork();
    if (g_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive a crashed test */
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, "sluice", "emulator", "--port", "0", "--ready-file", ready, "--write-credentials", creds,
              "--project", "my-project", "--seed", "7", (char *)NULL);
        _exit(127);
    }
    if (!tu_poll(ready_exists, ready, 20000)) return -1;
    char *url = tu_read_file(ready, NULL);
    url[strcspn(url, "\n")] = '\0';
    snprintf(g_base, sizeof g_base, "%s", url);
    free(url);
    snprintf(sa_path, sizeof sa_path, "%s/service-account.json", creds);
    json_t *sa = json_load_file(sa_path, 0, NULL);
    if (sa == NULL) return -1;
    g_sa_key = jwt_key_from_pem(json_string_value(json_object_get(sa, "private_key")));
    g_client_email = strdup(json_string_value(json_object_get(sa, "client_email")));
    g_token_uri = strdup(json_string_value(json_object_get(sa, "token_uri")));
    g_kid = strdup(json_string_value(json_object_get(sa, "private_key_id")));
    json_decref(sa);
    return g_sa_key ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int status = -1;
    if (g_pid > 0) {
        kill(g_pid, SIGTERM);
        waitpid(g_pid, &status, 0);
    }
    jwt_key_free(g_sa_key);
    free(g_client_email);
    free(g_token_uri);
    free(g_kid);
    tu_rmtree(g_dir);
    free(g_dir);
    curl_global_cleanup();
    /* A clean SIGTERM shutdown exits 0. */
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---------- (1) the jwt-bearer grant ---------- */

/* POSTs the assertion; returns the status and *err (static or NULL) = the OAuth "error" member. */
static long grant(const char *assertion, json_t **out)
{
    char *body = NULL;
    if (asprintf(&body, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s",
                 assertion) < 0)
        return -1;
    long st = http("POST", "/token", body, "Content-Type: application/x-www-form-urlencoded", out);
    free(body);
    return st;
}

static json_t *good_claims(void)
{
    json_int_t now = (json_int_t)time(NULL);
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", g_client_email, "scope",
                     "https://www.googleapis.com/auth/cloud-platform", "aud", g_token_uri, "iat", now, "exp", now + 3600);
}

static char *sign(const jwt_key *key, const char *kid, json_t *claims)
{
    json_t *hdr = json_pack("{s:s}", "kid", kid);
    char *tok = jwt_sign_rs256(key, hdr, claims);
    json_decref(hdr);
    return tok;
}

static void test_valid_assertion(void **state)
{
    (void)state;
    json_t *claims = good_claims();
    char *tok = sign(g_sa_key, g_kid, claims);
    json_t *resp = NULL;
    assert_int_equal(grant(tok, &resp), 200);
    const char *access = json_string_value(json_object_get(resp, "access_token"));
    assert_non_null(access);
    assert_string_equal(json_string_value(json_object_get(resp, "token_type")), "Bearer");
    assert_true(json_integer_value(json_object_get(resp, "expires_in")) > 0);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", access);
    assert_int_equal(http("GET", "/v1b3/projects/my-project/locations/europe-west4/jobs", NULL, hdr, NULL), 200);
    assert_int_equal(http("GET", "/v1b3/projects/my-project/locations/europe-west4/jobs", NULL, NULL, NULL), 401);
    json_decref(resp);
    free(tok);
    json_decref(claims);
}

static void expect_refused(const char *assertion, const char *error)
{
    json_t *resp = NULL;
    assert_int_equal(grant(assertion, &resp), 400);
    assert_non_null(resp);
    assert_string_equal(json_string_value(json_object_get(resp, "error")), error);
    assert_non_null(json_string_value(json_object_get(resp, "error_description")));
    json_decref(resp);
}

/* Signs good claims with one member replaced (or removed when value is NULL). */
static void refuse_with(const char *key, json_t *value, const char *error)
{
    json_t *claims = good_claims();
    if (value) json_object_set_new(claims, key, value);
    else json_object_del(claims, key);
    char *tok = sign(g_sa_key, g_kid, claims);
    expect_refused(tok, error);
    free(tok);
    json_decref(claims);
}

static void test_refused_assertions(void **state)
{
    (void)state;
    json_int_t now = (json_int_t)time(NULL);
    refuse_with("aud", json_string("https://oauth2.googleapis.com/token"), "invalid_grant");
    refuse_with("iss", json_string("someone@else.iam.gserviceaccount.com"), "invalid_grant");
    refuse_with("exp", json_integer(now - 10), "invalid_grant");              /* expired */
    refuse_with("exp", json_integer(now + 7200), "invalid_grant");            /* longer than an hour */
    refuse_with("iat", json_integer(now + 600), "invalid_grant");             /* issued in the future */
    refuse_with("exp", json_string("soon"), "invalid_grant");                 /* not a number */
    refuse_with("scope", NULL, "invalid_scope");
    refuse_with("scope", json_string(""), "invalid_scope");

    /* A key the emulator never registered, and the right key with the wrong kid. */
    jwt_key *other = jwt_key_generate(2048);
    json_t *claims = good_claims();
    char *tok = sign(other, g_kid, claims);
    expect_refused(tok, "invalid_grant");
    free(tok);
    tok = sign(g_sa_key, "0000", claims);
    expect_refused(tok, "invalid_grant");
    free(tok);

    /* Tampered payload: a valid signature over other claims. */
    tok = sign(g_sa_key, g_kid, claims);
    json_t *evil = good_claims();
    json_object_set_new(evil, "scope", json_string("https://www.googleapis.com/auth/everything"));
    char *evil_text = json_dumps(evil, JSON_COMPACT);
    char *evil64 = jwt_b64url_encode((unsigned char *)evil_text, strlen(evil_text));
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char *forged = NULL;
    assert_true(asprintf(&forged, "%.*s.%s%s", (int)(d1 - tok), tok, evil64, d2) > 0);
    expect_refused(forged, "invalid_grant");
    free(forged);

    /* alg none, and HS256 keyed with the public key (key confusion). */
    const char *hnone = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char *h64 = jwt_b64url_encode((const unsigned char *)hnone, strlen(hnone));
    char *good_text = json_dumps(claims, JSON_COMPACT);
    char *c64 = jwt_b64url_encode((unsigned char *)good_text, strlen(good_text));
    assert_true(asprintf(&forged, "%s.%s.", h64, c64) > 0);
    expect_refused(forged, "invalid_grant");
    free(forged);
    free(h64);
    const char *hhs = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    h64 = jwt_b64url_encode((const unsigned char *)hhs, strlen(hhs));
    char *input = NULL;
    assert_true(asprintf(&input, "%s.%s", h64, c64) > 0);
    char *pem_pub = NULL;
    json_t *jwk = jwt_key_public_jwk(g_sa_key, NULL);
    pem_pub = json_dumps(jwk, JSON_COMPACT);
    unsigned char mac[64];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), pem_pub, (int)strlen(pem_pub), (unsigned char *)input, strlen(input), mac, &maclen);
    char *mac64 = jwt_b64url_encode(mac, maclen);
    assert_true(asprintf(&forged, "%s.%s", input, mac64) > 0);
    expect_refused(forged, "invalid_grant");

    free(forged);
    free(mac64);
    free(pem_pub);
    json_decref(jwk);
    free(input);
    free(h64);
    free(c64);
    free(good_text);
    free(evil64);
    free(evil_text);
    json_decref(evil);
    free(tok);
    json_decref(claims);
    jwt_key_free(other);

    /* Nothing above produced a grant. */
    json_t *stats = NULL;
    assert_int_equal(http("GET", "/emulator/stats", NULL, NULL, &stats), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(stats, "token_grants"), "jwt_bearer")), 1);
    json_decref(stats);
}

/* ---------- (2) event delivery to an in-process receiver ---------- */

static pthread_mutex_t rx_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *rx_log; /* array of {path, headers{lowercase}, body} */
static int rx_fail_first_push = 1;

struct rx_req {
    char *body;
    size_t len;
};

static enum MHD_Result rx_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    char lower[128];
    snprintf(lower, sizeof lower, "%s", key);
    for (char *p = lower; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    json_object_set_new(cls, lower, json_string(value ? value : ""));
    return MHD_YES;
}

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **con_cls)
{
    (void)cls;
    (void)method;
    (void)version;
    struct rx_req *r = *con_cls;
    if (r == NULL) {
        *con_cls = calloc(1, sizeof(struct rx_req));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*size) {
        r->body = realloc(r->body, r->len + *size + 1);
        memcpy(r->body + r->len, data, *size);
        r->len += *size;
        r->body[r->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    json_t *headers = json_object();
    MHD_get_connection_values(conn, MHD_HEADER_KIND, rx_header, headers);
    unsigned status = 204;
    pthread_mutex_lock(&rx_lock);
    if (strcmp(url, "/push") == 0 && rx_fail_first_push) {
        rx_fail_first_push = 0;
        status = 500; /* a nack: Pub/Sub redelivers */
    }
    json_array_append_new(rx_log, json_pack("{s:s, s:o, s:s, s:i}", "path", url, "headers", headers, "body",
                                            r->body ? r->body : "", "status", (int)status));
    pthread_mutex_unlock(&rx_lock);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void rx_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    struct rx_req *r = *con_cls;
    if (r) free(r->body);
    free(r);
    *con_cls = NULL;
}

struct rx_want {
    const char *path;
    size_t n;
};

static int rx_count_ge(void *arg)
{
    const struct rx_want *w = arg;
    size_t n = 0, i;
    json_t *e;
    pthread_mutex_lock(&rx_lock);
    json_array_foreach(rx_log, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "path")), w->path) == 0) n++;
    }
    pthread_mutex_unlock(&rx_lock);
    return n >= w->n;
}

/* Verifies a delivery's OIDC token with the JWKS key and checks the push token claims. */
static void check_oidc(json_t *headers, jwt_key *jwks_key, const char *kid, const char *aud)
{
    const char *auth = json_string_value(json_object_get(headers, "authorization"));
    assert_non_null(auth);
    assert_int_equal(strncmp(auth, "Bearer ", 7), 0);
    const char *err = NULL;
    assert_int_equal(jwt_verify_rs256(auth + 7, jwks_key, &err), 0);
    json_t *h = NULL, *c = NULL;
    assert_int_equal(jwt_decode(auth + 7, &h, &c, &err), 0);
    assert_string_equal(json_string_value(json_object_get(h, "kid")), kid);
    assert_string_equal(json_string_value(json_object_get(c, "iss")), "https://accounts.google.com");
    assert_string_equal(json_string_value(json_object_get(c, "aud")), aud);
    assert_string_equal(json_string_value(json_object_get(c, "email")), "pubsub-push@emulator.iam.gserviceaccount.com");
    assert_true(json_is_true(json_object_get(c, "email_verified")));
    json_int_t iat = json_integer_value(json_object_get(c, "iat"));
    assert_true(llabs((long long)(iat - (json_int_t)time(NULL))) < 60);
    assert_int_equal(json_integer_value(json_object_get(c, "exp")), iat + 3600);
    json_decref(h);
    json_decref(c);
}

static int push_delivered_4(void *arg)
{
    (void)arg;
    json_t *stats = NULL;
    http("GET", "/emulator/stats", NULL, NULL, &stats);
    json_t *pd = json_object_get(json_object_get(stats, "deliveries"), "push");
    int ok = json_integer_value(json_object_get(pd, "delivered")) == 4; /* 4 messages; one needed 2 attempts */
    json_decref(stats);
    return ok;
}

static const char *hdr(json_t *e, const char *name)
{
    return json_string_value(json_object_get(json_object_get(e, "headers"), name));
}

static void test_event_delivery(void **state)
{
    (void)state;
    rx_log = json_array();
    struct MHD_Daemon *rx = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, rx_handler, NULL,
                                             MHD_OPTION_NOTIFY_COMPLETED, rx_done, NULL, MHD_OPTION_END);
    assert_non_null(rx);
    unsigned port = MHD_get_daemon_info(rx, MHD_DAEMON_INFO_BIND_PORT)->port;
    char push_url[128], ea_url[128], cfg[1024];
    snprintf(push_url, sizeof push_url, "http://127.0.0.1:%u/push", port);
    snprintf(ea_url, sizeof ea_url, "http://127.0.0.1:%u/eventarc", port);
    snprintf(cfg, sizeof cfg,
             "{\"auth\":false,\"events\":{\"push_url\":\"%s\",\"eventarc_url\":\"%s\",\"backoff_ms\":50},"
             "\"jobs\":[{\"match\":\"ok-*\",\"pending_ms\":20,\"running_ms\":50},"
             "{\"match\":\"bad-*\",\"pending_ms\":20,\"running_ms\":50,\"outcome\":\"JOB_STATE_FAILED\"}]}",
             push_url, ea_url);
    assert_int_equal(http("POST", "/emulator/config", cfg, NULL, NULL), 200);

    json_t *jwks = NULL;
    assert_int_equal(http("GET", "/oauth2/v3/certs", NULL, NULL, &jwks), 200);
    json_t *jwk = json_array_get(json_object_get(jwks, "keys"), 0);
    jwt_key *jwks_key = jwt_key_from_jwk(jwk);
    assert_non_null(jwks_key);
    const char *kid = json_string_value(json_object_get(jwk, "kid"));

    const char *launch_ok = "{\"launchParameter\":{\"jobName\":\"ok-job-1\",\"containerSpecGcsPath\":\"gs://b/s\","
                            "\"environment\":{\"additionalUserLabels\":{\"sluice-run\":\"r1\"}}}}";
    const char *launch_bad = "{\"launchParameter\":{\"jobName\":\"bad-job-1\",\"containerSpecGcsPath\":\"gs://b/s\"}}";
    json_t *r1 = NULL, *r2 = NULL;
    assert_int_equal(http("POST", "/v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch", launch_ok,
                          NULL, &r1), 200);
    assert_int_equal(http("POST", "/v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch", launch_bad,
                          NULL, &r2), 200);
    const char *ok_id = json_string_value(json_object_get(json_object_get(r1, "job"), "id"));
    const char *bad_id = json_string_value(json_object_get(json_object_get(r2, "job"), "id"));

    /* 3 state changes per job; 2 log lines per job plus one redelivery of the nacked first push. */
    struct rx_want want_ea = {"/eventarc", 6}, want_push = {"/push", 5};
    assert_true(tu_poll(rx_count_ge, &want_ea, 15000));
    assert_true(tu_poll(rx_count_ge, &want_push, 15000));

    pthread_mutex_lock(&rx_lock);
    size_t i;
    json_t *e;
    char states_ok[3][40] = {{0}}, states_bad[3][40] = {{0}}; /* copies: the bodies are freed per loop */
    int n_ok = 0, n_bad = 0;
    json_t *push_texts = json_object(), *msg_ids = json_object();
    json_array_foreach(rx_log, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        check_oidc(json_object_get(e, "headers"), jwks_key, kid, strcmp(path, "/push") == 0 ? push_url : ea_url);
        json_t *body = json_loads(json_string_value(json_object_get(e, "body")), 0, NULL);
        assert_non_null(body);
        if (strcmp(path, "/eventarc") == 0) {
            assert_string_equal(hdr(e, "ce-type"), "google.cloud.dataflow.job.v1beta3.statusChanged");
            assert_string_equal(hdr(e, "ce-specversion"), "1.0");
            assert_string_equal(hdr(e, "ce-source"), "//dataflow.googleapis.com/projects/my-project/locations/europe-west4");
            assert_non_null(hdr(e, "ce-id"));
            assert_non_null(hdr(e, "ce-time"));
            assert_string_equal(hdr(e, "ce-project"), "123456789012");
            assert_string_equal(json_string_value(json_object_get(body, "@type")),
                                "type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData");
            json_t *job = json_object_get(body, "payload");
            const char *id = json_string_value(json_object_get(job, "id"));
            const char *st = json_string_value(json_object_get(job, "currentState"));
            char subj[128];
            snprintf(subj, sizeof subj, "jobs/%s", json_string_value(json_object_get(job, "name")));
            assert_string_equal(hdr(e, "ce-subject"), subj);
            if (strcmp(id, ok_id) == 0) {
                assert_true(n_ok < 3);
                snprintf(states_ok[n_ok++], sizeof states_ok[0], "%s", st);
                assert_string_equal(json_string_value(json_object_get(json_object_get(job, "labels"), "sluice-run")), "r1");
            } else {
                assert_string_equal(id, bad_id);
                assert_true(n_bad < 3);
                snprintf(states_bad[n_bad++], sizeof states_bad[0], "%s", st);
            }
        } else {
            json_t *msg = json_object_get(body, "message");
            const char *mid = json_string_value(json_object_get(msg, "messageId"));
            assert_non_null(mid);
            assert_string_equal(mid, json_string_value(json_object_get(msg, "message_id")));
            assert_string_equal(json_string_value(json_object_get(msg, "publishTime")),
                                json_string_value(json_object_get(msg, "publish_time")));
            assert_non_null(json_string_value(json_object_get(body, "subscription")));
            const char *data = json_string_value(json_object_get(msg, "data"));
            size_t n = 0;
            unsigned char *raw = jwt_b64_decode(data, strlen(data), &n);
            assert_non_null(raw);
            json_t *entry = json_loadb((char *)raw, n, 0, NULL);
            free(raw);
            assert_non_null(entry);
            json_t *res = json_object_get(entry, "resource");
            assert_string_equal(json_string_value(json_object_get(res, "type")), "dataflow_step");
            const char *jid = json_string_value(json_object_get(json_object_get(res, "labels"), "job_id"));
            assert_string_equal(json_string_value(json_object_get(json_object_get(entry, "labels"), "dataflow.googleapis.com/job_id")), jid);
            assert_string_equal(json_string_value(json_object_get(entry, "logName")),
                                "projects/my-project/logs/dataflow.googleapis.com%2Fjob-message");
            assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "attributes"), "logging.googleapis.com/timestamp")),
                                json_string_value(json_object_get(entry, "timestamp")));
            char key[256];
            snprintf(key, sizeof key, "%s|%.25s", jid, json_string_value(json_object_get(entry, "textPayload")));
            json_object_set_new(push_texts, key, json_true());
            json_t *seen = json_object_get(msg_ids, mid);
            json_object_set_new(msg_ids, mid, json_integer(seen ? json_integer_value(seen) + 1 : 1));
            json_decref(entry);
        }
        json_decref(body);
    }
    pthread_mutex_unlock(&rx_lock);

    assert_int_equal(n_ok, 3);
    assert_int_equal(n_bad, 3);
    assert_string_equal(states_ok[0], "JOB_STATE_PENDING");
    assert_string_equal(states_ok[1], "JOB_STATE_RUNNING");
    assert_string_equal(states_ok[2], "JOB_STATE_DONE");
    assert_string_equal(states_bad[2], "JOB_STATE_FAILED");
    char key[256];
    snprintf(key, sizeof key, "%s|Executing success step s0", ok_id);
    assert_non_null(json_object_get(push_texts, key));
    snprintf(key, sizeof key, "%s|Worker pool stopped.", ok_id);
    assert_non_null(json_object_get(push_texts, key));
    snprintf(key, sizeof key, "%s|Workflow failed. Causes: ", bad_id);
    assert_non_null(json_object_get(push_texts, key));
    snprintf(key, sizeof key, "%s|Worker pool stopped.", bad_id);
    assert_non_null(json_object_get(push_texts, key));
    /* The nacked message came again with the same messageId. */
    int redelivered = 0;
    const char *k;
    json_t *v;
    json_object_foreach(msg_ids, k, v)
    {
        if (json_integer_value(v) == 2) redelivered++;
    }
    assert_int_equal(redelivered, 1);

    /* The emulator counts a delivery after the receiver answered: poll. */
    assert_true(tu_poll(push_delivered_4, NULL, 5000));
    json_t *stats = NULL;
    assert_int_equal(http("GET", "/emulator/stats", NULL, NULL, &stats), 200);
    json_t *pd = json_object_get(json_object_get(stats, "deliveries"), "push");
    assert_int_equal(json_integer_value(json_object_get(pd, "failed_attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(pd, "delivered")), 4);

    /* Seeded duplicates: every event arrives twice with the same ce-id. */
    assert_int_equal(http("POST", "/emulator/config",
                          "{\"events\":{\"push_url\":null,\"duplicate_rate\":1},"
                          "\"jobs\":[{\"match\":\"dup-*\",\"pending_ms\":10,\"running_ms\":10}]}",
                          NULL, NULL),
                     200);
    pthread_mutex_lock(&rx_lock);
    json_array_clear(rx_log);
    pthread_mutex_unlock(&rx_lock);
    assert_int_equal(http("POST", "/v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch",
                          "{\"launchParameter\":{\"jobName\":\"dup-1\",\"containerSpecGcsPath\":\"gs://b/s\"}}", NULL,
                          NULL),
                     200);
    struct rx_want want_dup = {"/eventarc", 6};
    assert_true(tu_poll(rx_count_ge, &want_dup, 15000));
    pthread_mutex_lock(&rx_lock);
    json_t *ce_ids = json_object();
    json_array_foreach(rx_log, i, e)
    {
        const char *id = hdr(e, "ce-id");
        json_t *seen = json_object_get(ce_ids, id);
        json_object_set_new(ce_ids, id, json_integer(seen ? json_integer_value(seen) + 1 : 1));
    }
    pthread_mutex_unlock(&rx_lock);
    assert_int_equal(json_object_size(ce_ids), 3);
    json_object_foreach(ce_ids, k, v) assert_int_equal(json_integer_value(v), 2);

    /* Seeded reordering: with this seed the PENDING event is held back and arrives after a later one. */
    const char *seed = getenv("EMU_REORDER_SEED");
    char rcfg[512];
    snprintf(rcfg, sizeof rcfg,
             "{\"seed\":%s,\"events\":{\"duplicate_rate\":0,\"reorder_rate\":0.5,\"reorder_ms\":600},"
             "\"jobs\":[{\"match\":\"ro-*\",\"pending_ms\":30,\"running_ms\":30}]}",
             seed ? seed : "3");
    assert_int_equal(http("POST", "/emulator/config", rcfg, NULL, NULL), 200);
    pthread_mutex_lock(&rx_lock);
    json_array_clear(rx_log);
    pthread_mutex_unlock(&rx_lock);
    assert_int_equal(http("POST", "/v1b3/projects/my-project/locations/europe-west4/flexTemplates:launch",
                          "{\"launchParameter\":{\"jobName\":\"ro-1\",\"containerSpecGcsPath\":\"gs://b/s\"}}",
                          NULL, NULL),
                     200);
    struct rx_want want_ro = {"/eventarc", 3};
    assert_true(tu_poll(rx_count_ge, &want_ro, 15000));
    char order[128] = "";
    pthread_mutex_lock(&rx_lock);
    json_array_foreach(rx_log, i, e)
    {
        json_t *body = json_loads(json_string_value(json_object_get(e, "body")), 0, NULL);
        const char *st = json_string_value(json_object_get(json_object_get(body, "payload"), "currentState"));
        size_t len = strlen(order);
        snprintf(order + len, sizeof order - len, "%s%s", len ? "," : "", st + strlen("JOB_STATE_"));
        json_decref(body);
    }
    pthread_mutex_unlock(&rx_lock);
    printf("arrival order: %s\n", order);
    assert_string_not_equal(order, "PENDING,RUNNING,DONE");

    json_decref(ce_ids);
    json_decref(stats);
    json_decref(push_texts);
    json_decref(msg_ids);
    json_decref(r1);
    json_decref(r2);
    json_decref(jwks);
    jwt_key_free(jwks_key);
    MHD_stop_daemon(rx);
    json_decref(rx_log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_assertion),
        cmocka_unit_test(test_refused_assertions),
        cmocka_unit_test(test_event_delivery),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
