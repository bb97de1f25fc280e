/* serve_harness: starts `$SLUICE_BIN serve` as a real process on 127.0.0.1 (ephemeral port, ready file, its own
 * temp dir and store) with OIDC keys from a JWKS file this harness writes, builds tokens (valid and broken) with
 * jwt.h, builds push bodies, and sends raw HTTP requests with libcurl. Header-only.
 * Uses: testutil, jwt, libcurl, jansson. */
#ifndef SLUICE_SERVE_HARNESS_H
#define SLUICE_SERVE_HARNESS_H
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jwt.h"
#include "testutil.h"

#define SH_AUD "sluice-test-audience"
#define SH_EMAIL "pusher@test.iam.gserviceaccount.com"

typedef struct {
    pid_t pid;
    char *dir;
    char base[128];
    char store[700];
    jwt_key *key;   /* the key the server trusts (kid "k1") */
    jwt_key *other; /* a key it does not know */
} serve_proc;

static inline int sh_ready(void *arg)
{
    serve_proc *s = arg;
    char path[800];
    snprintf(path, sizeof path, "%s/ready", s->dir);
    char *t = tu_read_file(path, NULL);
    if (t == NULL) return 0;
    char *nl = strchr(t, '\n');
    if (nl) *nl = '\0';
    snprintf(s->base, sizeof s->base, "%s", t);
    free(t);
    return s->base[0] != '\0';
}

/* Starts the server with extra arguments (NULL-terminated, may be NULL). Returns 0 or -1. */
static inline int sh_start(serve_proc *s, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    s->dir = tu_tempdir();
    s->key = jwt_key_generate(2048);
    s->other = jwt_key_generate(2048);
    json_t *jwk = jwt_key_public_jwk(s->key, "k1");
    json_t *doc = json_pack("{s:[o]}", "keys", jwk);
    char *text = json_dumps(doc, 0);
    char jwks[800], ready[800], log[800];
    snprintf(jwks, sizeof jwks, "%s/jwks.json", s->dir);
    snprintf(ready, sizeof ready, "%s/ready", s->dir);
    snprintf(log, sizeof log, "%s/serve.log", s->dir);
    snprintf(s->store, sizeof s->store, "%s/s.db", s->dir);
    tu_write_file(jwks, text);
    free(text);
    json_decref(doc);
    char *wf = tu_src_path("workflows");
    const char *bin = getenv("SLUICE_BIN");
    const char *argv[64] = {bin, "serve", "--listen", "127.0.0.1", "--port", "0", "--ready-file", ready,
                            "--workflows", wf, "--store", s->store, "--jwks-file", jwks, "--audience", SH_AUD,
                            "--allow-email", SH_EMAIL, "--dataflow-url", "http://127.0.0.1:9", "--dataflow-no-auth",
                            "--poll-interval", "10m", "--operator-token", "optok"};
    int n = 0;
    while (argv[n]) n++;
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        if (freopen("/dev/null", "w", stdout) == NULL) _exit(127);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    free(wf);
    return tu_poll(sh_ready, s, 10000) ? 0 : -1;
}

/* SIGTERM and wait; returns the exit status (or -1). */
static inline int sh_stop(serve_proc *s)
{
    int status = 0, rc = -1;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        if (waitpid(s->pid, &status, 0) == s->pid && WIFEXITED(status)) rc = WEXITSTATUS(status);
        s->pid = 0;
    }
    return rc;
}

static inline void sh_free(serve_proc *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    if (getenv("SH_KEEP") == NULL) tu_rmtree(s->dir);
    free(s->dir);
    jwt_key_free(s->key);
    jwt_key_free(s->other);
}

/* A token signed by `key` with header kid; claims are the valid defaults with `override` merged in (borrowed;
 * a JSON null removes a claim). Caller frees. */
static inline char *sh_token(jwt_key *key, const char *kid, json_t *override)
{
    time_t now = time(NULL);
    json_t *claims = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:s}", "iss", "https://accounts.google.com", "aud", SH_AUD,
                               "email", SH_EMAIL, "email_verified", 1, "iat", (json_int_t)now, "exp",
                               (json_int_t)now + 3600, "sub", "1234");
    const char *k;
    json_t *v;
    if (override) json_object_foreach(override, k, v)
        {
            if (json_is_null(v))
                json_object_del(claims, k);
            else
                json_object_set(claims, k, v);
        }
    json_t *header = json_pack("{s:s}", "kid", kid);
    char *t = jwt_sign_rs256(key, header, claims);
    json_decref(header);
    json_decref(claims);
    return t;
}

/* "Authorization: Bearer <t>" (caller frees). */
static inline char *sh_auth(const char *token)
{
    char *h = NULL;
    if (asprintf(&h, "Authorization: Bearer %s", token) < 0) return NULL;
    return h;
}

/* A wrapped push body of a "Worker pool stopped." LogEntry for job_name/job_id, message id mid. Caller frees. */
static inline char *sh_push_body(const char *mid, const char *job_name, const char *job_id)
{
    json_t *le = json_pack("{s:s,s:{s:s,s:{s:s,s:s,s:s,s:s,s:s}},s:s,s:s,s:s}", "textPayload", "Worker pool stopped.",
                           "resource", "type", "dataflow_step", "labels", "job_id", job_id, "step_id", "", "job_name",
                           job_name, "project_id", "123", "region", "europe-west4", "timestamp",
                           "2026-11-27T03:08:00.912Z", "severity", "INFO", "logName",
                           "projects/p/logs/dataflow.googleapis.com%2Fjob-message");
    char *lt = json_dumps(le, JSON_COMPACT);
    char *data = jwt_b64_encode((const unsigned char *)lt, strlen(lt));
    json_t *body = json_pack("{s:{s:s,s:s,s:s,s:{s:s}},s:s}", "message", "data", data, "messageId", mid, "publishTime",
                             "2026-11-27T03:08:01.402Z", "attributes", "logging.googleapis.com/timestamp",
                             "2026-11-27T03:08:00.912Z", "subscription", "projects/p/subscriptions/s");
    char *out = json_dumps(body, JSON_COMPACT);
    json_decref(le);
    json_decref(body);
    free(lt);
    free(data);
    return out;
}

static inline size_t sh_sink(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* Sends a request; headers is NULL-terminated (may be NULL). Returns the HTTP status, or 0 on transport error.
 * chunked = 1 sends the body with chunked transfer encoding. */
static inline long sh_send(const char *base, const char *method, const char *path, const char *const *headers,
                    const char *body, size_t len, int chunked)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++) hl = curl_slist_append(hl, headers[i]);
    if (chunked) hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    /* A body past serve's 1 MiB default is offered with Expect: 100-continue, as curl itself does for such bodies: serve
     * refuses it by its Content-Length (413) before any of it is sent. Streamed regardless, the body races serve's
     * close of a connection it will not read, and a reset can discard the 413 before the client reads it. */
    hl = curl_slist_append(hl, !chunked && len > (1u << 20) ? "Expect: 100-continue" : "Expect:");
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sh_sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    long status = 0;
    /* an answer read before a send error counts: the server may answer and close before the body is all sent */
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return status;
}

#endif
