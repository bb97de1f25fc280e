/* gauth: Application Default Credentials, a single-flight token cache and the three token grants.
 * Uses: http_client, retry, jwt, jansson, log. Must not: log or return in an error message any token, refresh
 * token, client secret or key; never block (everything runs on the caller's hc loop). */
#include "gauth.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwt.h"
#include "log.h"
#include "mem.h"
#include "util.h"

#define GA_DEFAULT_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GA_GOOGLE_TOKEN_URL "https://oauth2.googleapis.com/token"
#define GA_METADATA_HOST "metadata.google.internal"

/* A caller waiting for the in-flight fetch. Owned by the ga_auth until its callback has run. */
typedef struct ga_waiter {
    int64_t id;
    ga_token_cb cb;
    void *ud;
    struct ga_waiter *next;
} ga_waiter;

struct ga_auth {
    ga_kind kind;
    hc_client *hc; /* borrowed */
    char *project_id;
    char *scope;
    /* service account */
    jwt_key *key;
    char *client_email, *key_id;
    /* authorized_user */
    char *client_id, *client_secret, *refresh_token;
    char *token_url; /* SA: the key's token_uri; AU: the refresh endpoint */
    /* metadata */
    char *metadata_base; /* http://host[:port] */
    /* cache: times on the hc clock */
    char *token;
    int64_t fresh_until, usable_until;
    int64_t margin_ms;
    /* the single in-flight fetch */
    int fetching;
    int64_t fetch_req, fetch_timer;
    retry_state rs;
    retry_policy policy;
    ga_waiter *waiters, **waiters_tail;
    int64_t next_waiter;
    int fetches;
    int64_t (*wall_clock)(void *);
    void *wall_clock_ud;
};

const char *ga_kind_name(ga_kind k)
{
    switch (k) {
    case GA_NONE: return "none";
    case GA_STATIC: return "static";
    case GA_SERVICE_ACCOUNT: return "service_account";
    case GA_AUTHORIZED_USER: return "authorized_user";
    case GA_METADATA: return "metadata";
    }
    return "?";
}

static int64_t default_wall(void *ud)
{
    (void)ud;
    return (int64_t)time(NULL);
}



static ga_auth *ga_alloc(ga_kind kind, hc_client *hc, const ga_options *o)
{
    ga_auth *ga = xcalloc(1, sizeof *ga);
    ga->kind = kind;
    ga->hc = hc;
    ga->waiters_tail = &ga->waiters;
    ga->next_waiter = 1;
    ga->scope = xstrdup(o && o->scope ? o->scope : GA_DEFAULT_SCOPE);
    ga->margin_ms = o && o->refresh_margin_ms > 0 ? o->refresh_margin_ms : 300000;
    if (o && o->policy) {
        ga->policy = *o->policy;
    } else {
        retry_policy p = {.initial_ms = 200, .multiplier = 2.0, .cap_ms = 5000, .max_attempts = 5, .deadline_ms = 30000};
        ga->policy = p;
    }
    ga->wall_clock = o && o->wall_clock ? o->wall_clock : default_wall;
    ga->wall_clock_ud = o ? o->wall_clock_ud : NULL;
    if (o && o->project_id) ga->project_id = xstrdup(o->project_id);
    return ga;
}

static void waiters_fail_all(ga_auth *ga, const char *err);

void ga_free(ga_auth *ga)
{
    if (ga == NULL) return;
    if (ga->fetch_req > 0) hc_cancel(ga->hc, ga->fetch_req);
    if (ga->fetch_timer > 0) hc_timer_cancel(ga->hc, ga->fetch_timer);
    waiters_fail_all(ga, "cancelled");
    jwt_key_free(ga->key);
    free(ga->project_id);
    free(ga->scope);
    free(ga->client_email);
    free(ga->key_id);
    free(ga->client_id);
    if (ga->client_secret) explicit_bzero(ga->client_secret, strlen(ga->client_secret));
    free(ga->client_secret);
    if (ga->refresh_token) explicit_bzero(ga->refresh_token, strlen(ga->refresh_token));
    free(ga->refresh_token);
    free(ga->token_url);
    free(ga->metadata_base);
    if (ga->token) explicit_bzero(ga->token, strlen(ga->token));
    free(ga->token);
    free(ga);
}

ga_kind ga_get_kind(const ga_auth *ga) { return ga->kind; }
const char *ga_project_id(const ga_auth *ga) { return ga->project_id; }
int ga_fetch_count(const ga_auth *ga) { return ga->fetches; }

ga_auth *ga_new_static(const char *token, const char *project_id)
{
    ga_options o = {.project_id = project_id};
    ga_auth *ga = ga_alloc(GA_STATIC, NULL, &o);
    if (ga == NULL) return NULL;
    ga->token = xstrdup(token ? token : "");
    return ga;
}

ga_auth *ga_new_none(const char *project_id)
{
    ga_options o = {.project_id = project_id};
    return ga_alloc(GA_NONE, NULL, &o);
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v) : NULL;
}

static char *metadata_base(const ga_options *o)
{
    const char *host = o && o->metadata_host ? o->metadata_host : getenv("GCE_METADATA_HOST");
    if (host == NULL || host[0] == '\0') host = GA_METADATA_HOST;
    if (strncmp(host, "http://", 7) == 0 || strncmp(host, "https://", 8) == 0) return xstrdup(host);
    return util_printf("http://%s", host);
}

/* Builds a ga_auth from a parsed credentials file. Returns NULL with *err (caller frees). */
static ga_auth *from_json(hc_client *hc, json_t *j, const char *path, const ga_options *o, char **err)
{
    const char *type = jstr(j, "type");
    ga_auth *ga = NULL;
    if (type && strcmp(type, "service_account") == 0) {
        const char *email = jstr(j, "client_email"), *pem = jstr(j, "private_key");
        const char *kid = jstr(j, "private_key_id"), *uri = jstr(j, "token_uri");
        if (!email || !pem || !kid) {
            *err = util_printf("%s: service_account key needs client_email, private_key and private_key_id", path);
            return NULL;
        }
        jwt_key *key = jwt_key_from_pem(pem);
        if (key == NULL) {
            *err = util_printf("%s: private_key is not a usable RSA key", path);
            return NULL;
        }
        ga = ga_alloc(GA_SERVICE_ACCOUNT, hc, o);
        if (ga == NULL) {
            jwt_key_free(key);
            return NULL;
        }
        ga->key = key;
        ga->client_email = xstrdup(email);
        ga->key_id = xstrdup(kid);
        ga->token_url = xstrdup(uri ? uri : GA_GOOGLE_TOKEN_URL);
        if (ga->project_id == NULL) ga->project_id = xstrdup(jstr(j, "project_id"));
    } else if (type && strcmp(type, "authorized_user") == 0) {
        const char *id = jstr(j, "client_id"), *secret = jstr(j, "client_secret"), *rt = jstr(j, "refresh_token");
        if (!id || !secret || !rt) {
            *err = util_printf("%s: authorized_user file needs client_id, client_secret and refresh_token", path);
            return NULL;
        }
        ga = ga_alloc(GA_AUTHORIZED_USER, hc, o);
        if (ga == NULL) return NULL;
        ga->client_id = xstrdup(id);
        ga->client_secret = xstrdup(secret);
        ga->refresh_token = xstrdup(rt);
        const char *uri = o && o->token_url ? o->token_url : jstr(j, "token_uri");
        ga->token_url = xstrdup(uri ? uri : GA_GOOGLE_TOKEN_URL);
        if (ga->project_id == NULL) ga->project_id = xstrdup(jstr(j, "quota_project_id"));
    } else {
        *err = util_printf("%s: unsupported credentials type \"%s\"", path, type ? type : "(none)");
        return NULL;
    }
    return ga;
}

ga_auth *ga_new_from_file(hc_client *hc, const char *path, const ga_options *o, char **err)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (j == NULL) {
        /* je.text may quote the file's content (a key); report the position only. */
        *err = util_printf("%s: cannot read credentials (line %d)", path, je.line);
        return NULL;
    }
    ga_auth *ga = from_json(hc, j, path, o, err);
    json_decref(j);
    return ga;
}

ga_auth *ga_new_metadata(hc_client *hc, const ga_options *o, char **err)
{
    (void)err;
    ga_auth *ga = ga_alloc(GA_METADATA, hc, o);
    ga->metadata_base = metadata_base(o);
    return ga;
}

ga_auth *ga_new_adc(hc_client *hc, const ga_options *o, char **err)
{
    *err = NULL;
    const char *path = o && o->credentials_file ? o->credentials_file : getenv("GOOGLE_APPLICATION_CREDENTIALS");
    if (path && path[0]) return ga_new_from_file(hc, path, o, err);
    char *gpath = NULL;
    const char *dir = o && o->gcloud_config_dir ? o->gcloud_config_dir : getenv("CLOUDSDK_CONFIG");
    if (dir && dir[0]) gpath = util_printf("%s/application_default_credentials.json", dir);
    else if (getenv("HOME")) gpath = util_printf("%s/.config/gcloud/application_default_credentials.json", getenv("HOME"));
    if (gpath) {
        FILE *f = fopen(gpath, "r");
        if (f) {
            fclose(f);
            ga_auth *ga = ga_new_from_file(hc, gpath, o, err);
            free(gpath);
            return ga;
        }
        free(gpath);
    }
    if (o && o->no_metadata) {
        *err = xstrdup("no credentials: GOOGLE_APPLICATION_CREDENTIALS is unset, no gcloud ADC file, metadata disabled");
        return NULL;
    }
    return ga_new_metadata(hc, o, err);
}

/* --- waiters --- */

static void waiters_finish(ga_auth *ga, int rc, const char *token, const char *err)
{
    /* Detach first: a callback may call ga_token again and start the next fetch. */
    ga_waiter *w = ga->waiters;
    ga->waiters = NULL;
    ga->waiters_tail = &ga->waiters;
    while (w) {
        ga_waiter *next = w->next;
        w->cb(w->ud, rc, token, err);
        free(w);
        w = next;
    }
}

static void waiters_fail_all(ga_auth *ga, const char *err) { waiters_finish(ga, -1, NULL, err); }

int ga_cancel(ga_auth *ga, int64_t id)
{
    for (ga_waiter **pp = &ga->waiters; *pp; pp = &(*pp)->next) {
        ga_waiter *w = *pp;
        if (w->id != id) continue;
        *pp = w->next;
        if (ga->waiters_tail == &w->next) ga->waiters_tail = pp;
        free(w);
        return 0;
    }
    return -1;
}

/* --- the grants --- */

/* The body of a token request; caller frees (and wipes: it carries a credential). NULL on failure. */
static char *grant_body(ga_auth *ga)
{
    char *body = NULL;
    if (ga->kind == GA_SERVICE_ACCOUNT) {
        int64_t now = ga->wall_clock(ga->wall_clock_ud);
        json_t *hdr = json_pack("{s:s}", "kid", ga->key_id);
        json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", ga->client_email, "scope", ga->scope, "aud",
                                   ga->token_url, "iat", (json_int_t)now, "exp", (json_int_t)(now + 3600));
        char *jwt = hdr && claims ? jwt_sign_rs256(ga->key, hdr, claims) : NULL;
        json_decref(hdr);
        json_decref(claims);
        if (jwt == NULL) return NULL;
        body = util_printf("grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
        free(jwt);
    } else if (ga->kind == GA_AUTHORIZED_USER) {
        char *id = hc_escape(ga->client_id), *sec = hc_escape(ga->client_secret), *rt = hc_escape(ga->refresh_token);
        if (id && sec && rt)
            body = util_printf("grant_type=refresh_token&client_id=%s&client_secret=%s&refresh_token=%s", id, sec, rt);
        if (sec) explicit_bzero(sec, strlen(sec));
        if (rt) explicit_bzero(rt, strlen(rt));
        free(id);
        free(sec);
        free(rt);
    }
    return body;
}

static void fetch_start(ga_auth *ga);

static void fetch_retry_timer(hc_client *hc, void *ud)
{
    (void)hc;
    ga_auth *ga = ud;
    ga->fetch_timer = 0;
    fetch_start(ga);
}

/* Parses {"access_token","expires_in"(number or numeric string)}. Returns 0 or -1 with *why (static). */
static int parse_token(const char *body, size_t len, char **token, int64_t *expires_in, const char **why)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    int rc = -1;
    *why = "token response is not JSON";
    if (!json_is_object(j)) goto out;
    const char *t = jstr(j, "access_token");
    json_t *e = json_object_get(j, "expires_in");
    *why = "token response has no access_token";
    if (t == NULL) goto out;
    *why = "token response has no usable expires_in";
    if (json_is_integer(e)) *expires_in = json_integer_value(e);
    else if (json_is_real(e)) *expires_in = (int64_t)json_real_value(e);
    else if (json_is_string(e)) {
        char *end = NULL;
        long long v = strtoll(json_string_value(e), &end, 10);
        if (end == json_string_value(e) || *end != '\0') goto out;
        *expires_in = v;
    } else goto out;
    if (*expires_in <= 0) goto out;
    *token = xstrdup(t);
    rc = *token ? 0 : -1;
out:
    json_decref(j);
    return rc;
}

/* The endpoint's error in words: HTTP status plus OAuth "error"/"error_description" when present. */
static char *endpoint_error(const hc_resp *r)
{
    if (r->error != HC_OK) return util_printf("token endpoint unreachable: %s", hc_error_name(r->error));
    json_t *j = json_loadb(r->body, r->body_len, 0, NULL);
    const char *e = jstr(j, "error"), *d = jstr(j, "error_description");
    if (e == NULL && json_is_object(json_object_get(j, "error"))) {
        e = jstr(json_object_get(j, "error"), "status");
        d = jstr(json_object_get(j, "error"), "message");
    }
    char *s = util_printf("token endpoint answered HTTP %ld%s%s%s%s", r->status, e ? ": " : "", e ? e : "",
                        d ? ": " : "", d ? d : "");
    json_decref(j);
    return s;
}

static void fetch_done(hc_client *hc, const hc_resp *r, void *ud)
{
    ga_auth *ga = ud;
    ga->fetch_req = 0;
    char *tok = NULL, *msg = NULL;
    int64_t expires_in = 0;
    const char *why = NULL;
    if (r->error == HC_OK && r->status == 200 && parse_token(r->body, r->body_len, &tok, &expires_in, &why) == 0) {
        int64_t now = hc_now_ms(hc), life = expires_in * 1000;
        int64_t margin = ga->margin_ms < life / 2 ? ga->margin_ms : life / 2;
        int64_t hard = life / 10 < 10000 ? life / 10 : 10000;
        if (ga->token) explicit_bzero(ga->token, strlen(ga->token));
        free(ga->token);
        ga->token = tok;
        ga->fresh_until = now + life - margin;
        ga->usable_until = now + life - hard;
        ga->fetching = 0;
        log_debug("gauth: %s token obtained, expires in %lld s", ga_kind_name(ga->kind), (long long)expires_in);
        /* A waiter may invalidate the cached token (a 401): hand every waiter the same private copy. */
        char *copy = xstrdup(tok);
        waiters_finish(ga, 0, copy, NULL);
        explicit_bzero(copy, strlen(copy));
        free(copy);
        return;
    }
    retry_transport t = retry_transport_of(r->error);
    msg = (r->error == HC_OK && r->status == 200) ? xstrdup(why) : endpoint_error(r);
    int64_t delay = 0;
    if (retry_classify(1, t, r->status, NULL) == RETRY_AGAIN && retry_next(&ga->rs, hc_now_ms(hc), -1, &delay)) {
        log_warn("gauth: %s token fetch failed (%s); retrying in %lld ms", ga_kind_name(ga->kind), msg ? msg : "?",
                 (long long)delay);
        free(msg);
        ga->fetch_timer = hc_timer_add(hc, delay, fetch_retry_timer, ga);
        return;
    }
    ga->fetching = 0;
    log_warn("gauth: %s token fetch failed: %s", ga_kind_name(ga->kind), msg ? msg : "?");
    waiters_fail_all(ga, msg ? msg : "token fetch failed");
    free(msg);
}

static void fetch_start(ga_auth *ga)
{
    ga->fetches++;
    const char *err = NULL;
    char *body = NULL, *url = NULL;
    hc_req rq = {0};
    if (ga->kind == GA_METADATA) {
        static const char *const md_headers[] = {"Metadata-Flavor: Google", NULL};
        url = util_printf("%s/computeMetadata/v1/instance/service-accounts/default/token", ga->metadata_base);
        rq.method = "GET";
        rq.headers = md_headers;
    } else {
        static const char *const form_headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                                   "Accept: application/json", NULL};
        body = grant_body(ga);
        url = xstrdup(ga->token_url);
        rq.method = "POST";
        rq.headers = form_headers;
        rq.body = body;
        rq.body_len = body ? strlen(body) : 0;
        if (body == NULL) err = "cannot build the token request (signing failed)";
    }
    rq.url = url;
    if (err == NULL && url == NULL) err = "out of memory";
    if (err == NULL) ga->fetch_req = hc_request(ga->hc, &rq, fetch_done, ga, &err);
    if (body) explicit_bzero(body, strlen(body));
    free(body);
    free(url);
    if (err) {
        ga->fetching = 0;
        waiters_fail_all(ga, err);
    }
}

static void fetch_begin(ga_auth *ga)
{
    if (ga->fetching) return;
    ga->fetching = 1;
    retry_begin(&ga->rs, &ga->policy, hc_now_ms(ga->hc), NULL, NULL);
    fetch_start(ga);
}

int64_t ga_token(ga_auth *ga, ga_token_cb cb, void *ud)
{
    if (ga->kind == GA_NONE) {
        cb(ud, 0, NULL, NULL);
        return 0;
    }
    if (ga->kind == GA_STATIC) {
        cb(ud, 0, ga->token, NULL);
        return 0;
    }
    int64_t now = hc_now_ms(ga->hc);
    if (ga->token && now < ga->fresh_until) {
        cb(ud, 0, ga->token, NULL);
        return 0;
    }
    if (ga->token && now < ga->usable_until) {
        fetch_begin(ga); /* refresh in the background; this caller need not wait */
        cb(ud, 0, ga->token, NULL);
        return 0;
    }
    ga_waiter *w = xcalloc(1, sizeof *w);
    w->id = ga->next_waiter++;
    w->cb = cb;
    w->ud = ud;
    *ga->waiters_tail = w;
    ga->waiters_tail = &w->next;
    int64_t id = w->id;
    fetch_begin(ga); /* may fail synchronously and complete (and free) the waiter */
    return id;
}

int ga_invalidate(ga_auth *ga, const char *token)
{
    if (ga->kind == GA_NONE || ga->kind == GA_STATIC) return 0;
    if (ga->token && token && strcmp(ga->token, token) == 0) {
        explicit_bzero(ga->token, strlen(ga->token));
        free(ga->token);
        ga->token = NULL;
        ga->fresh_until = ga->usable_until = 0;
    }
    return 1;
}

/* --- project id from the metadata server --- */

typedef struct project_fetch {
    ga_auth *ga;
    ga_project_cb cb;
    void *ud;
} project_fetch;

static void project_done(hc_client *hc, const hc_resp *r, void *ud)
{
    (void)hc;
    project_fetch *pf = ud;
    if (r->error == HC_OK && r->status == 200 && r->body_len > 0 && r->body_len < 128) {
        free(pf->ga->project_id);
        pf->ga->project_id = xstrndup(r->body, r->body_len);
        pf->cb(pf->ud, 0, pf->ga->project_id, NULL);
    } else {
        char *e = r->error == HC_OK ? util_printf("metadata server answered HTTP %ld for project-id", r->status)
                                    : util_printf("metadata server unreachable: %s", hc_error_name(r->error));
        pf->cb(pf->ud, -1, NULL, e ? e : "metadata project-id failed");
        free(e);
    }
    free(pf);
}

void ga_project_id_fetch(ga_auth *ga, ga_project_cb cb, void *ud)
{
    if (ga->project_id || ga->kind != GA_METADATA) {
        cb(ud, ga->project_id ? 0 : -1, ga->project_id, ga->project_id ? NULL : "project id unknown");
        return;
    }
    static const char *const md_headers[] = {"Metadata-Flavor: Google", NULL};
    char *url = util_printf("%s/computeMetadata/v1/project/project-id", ga->metadata_base);
    project_fetch *pf = xcalloc(1, sizeof *pf);
    const char *err = NULL;
    pf->ga = ga;
    pf->cb = cb;
    pf->ud = ud;
    hc_req rq = {.method = "GET", .url = url, .headers = md_headers};
    if (hc_request(ga->hc, &rq, project_done, pf, &err) > 0) {
        free(url);
        return;
    }
    free(url);
    free(pf);
    cb(ud, -1, NULL, err ? err : "cannot start the request");
}
