/* emu_config: owns the emulator's configuration: the built-in defaults, the merge defaults <- file <- flags <-
 * POST /emulator/config, and parsing the merged JSON into the struct emu_cfg that request handling reads.
 * Uses: emu.h, jansson. Must not: act on the configuration (start timers, queue events); it only swaps emu_g.cfg
 * under the lock and wakes the timer thread so new timings take effect. */
#include "emu.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *emu_default_config =
    "{\"project_id\":\"emulator-project\",\"project_number\":\"123456789012\",\"auth\":true,"
    "\"token_lifetime_s\":3600,\"max_body_bytes\":1048576,\"jwks_max_age_s\":21600,\"list_page_size\":25,"
    "\"list_max_page_size\":1000,"
    "\"job_defaults\":{\"queued_ms\":0,\"pending_ms\":100,\"running_ms\":500,\"outcome\":\"JOB_STATE_DONE\","
    "\"streaming\":false,\"cancel_ms\":100,\"drain_ms\":200,"
    "\"failure_cause\":\"S05:Read+Transform failed., The job failed because a work item has failed 4 times.\"},"
    "\"jobs\":[],\"lag\":{\"window_ms\":0,\"mode\":\"not_found\"},"
    "\"templates\":{\"missing\":[],\"required_parameters\":{}},"
    "\"faults\":{\"default\":{}},"
    "\"events\":{\"push_url\":null,\"eventarc_url\":null,\"subscription\":null,\"audience\":null,"
    "\"email\":\"pubsub-push@emulator.iam.gserviceaccount.com\",\"duplicate_rate\":0,\"reorder_rate\":0,"
    "\"reorder_ms\":300,\"max_attempts\":5,\"backoff_ms\":100,\"timeout_ms\":5000}}";


void emu_cfg_clear(struct emu_cfg *c)
{
    free(c->project_id);
    free(c->project_number);
    free(c->defaults.failure_cause);
    for (size_t i = 0; i < c->nrules; i++) {
        free(c->rules[i].match);
        free(c->rules[i].failure_cause);
    }
    free(c->rules);
    json_decref(c->templates_missing);
    json_decref(c->templates_required);
    free(c->push_url);
    free(c->eventarc_url);
    free(c->subscription);
    free(c->audience);
    free(c->push_email);
    memset(c, 0, sizeof *c);
}

/* Typed getters: each leaves *out unchanged when the key is absent or null, and sets *err (a static
 * string) and returns -1 when the value has the wrong type. */
/* A number in [0, max] under key k: 0 when set, 1 when absent or null, -1 (err says it must be `what`)
 * otherwise. */
static int emu_cfg_number(json_t *o, const char *k, double max, const char *what, double *out, char *err,
                          size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) return 1;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > max) {
        snprintf(err, ecap, "config key %s must be %s", k, what);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int emu_cfg_int(json_t *o, const char *k, int *out, char *err, size_t ecap)
{
    double d = 0;
    int rc = emu_cfg_number(o, k, 2e9, "a non-negative number", &d, err, ecap);
    if (rc == 0) *out = (int)d;
    return rc < 0 ? -1 : 0;
}

static int emu_cfg_rate(json_t *o, const char *k, double *out, char *err, size_t ecap)
{
    int rc = emu_cfg_number(o, k, 1, "a number in [0,1]", out, err, ecap);
    return rc < 0 ? -1 : 0;
}

static int emu_cfg_bool(json_t *o, const char *k, int *out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, ecap, "config key %s must be a boolean", k);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* Replaces *out (owned) with a copy of the string; null clears it. */
static int emu_cfg_str(json_t *o, const char *k, char **out, char *err, size_t ecap)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) return 0;
    if (json_is_null(v)) {
        free(*out);
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v)) {
        snprintf(err, ecap, "config key %s must be a string", k);
        return -1;
    }
    char *s = xstrdup(json_string_value(v));
    if (s == NULL) return -1;
    free(*out);
    *out = s;
    return 0;
}

static int emu_cfg_rule(json_t *o, struct emu_rule *r, char *err, size_t ecap)
{
    char *outcome = NULL;
    if (!json_is_object(o)) {
        snprintf(err, ecap, "job rules must be objects");
        return -1;
    }
    if (emu_cfg_int(o, "queued_ms", &r->queued_ms, err, ecap) || emu_cfg_int(o, "pending_ms", &r->pending_ms, err, ecap) ||
        emu_cfg_int(o, "running_ms", &r->running_ms, err, ecap) || emu_cfg_int(o, "cancel_ms", &r->cancel_ms, err, ecap) ||
        emu_cfg_int(o, "drain_ms", &r->drain_ms, err, ecap) || emu_cfg_bool(o, "streaming", &r->streaming, err, ecap) ||
        emu_cfg_str(o, "failure_cause", &r->failure_cause, err, ecap) || emu_cfg_str(o, "outcome", &outcome, err, ecap))
        return -1;
    if (outcome != NULL) {
        int st = js_parse(outcome);
        free(outcome);
        if (st != JS_DONE && st != JS_FAILED && st != JS_CANCELLED) {
            snprintf(err, ecap, "outcome must be JOB_STATE_DONE, JOB_STATE_FAILED or JOB_STATE_CANCELLED");
            return -1;
        }
        r->outcome = st;
    }
    return 0;
}

static int emu_cfg_fault(json_t *o, struct emu_fault *f, char *err, size_t ecap)
{
    if (o == NULL) return 0;
    if (!json_is_object(o)) {
        snprintf(err, ecap, "fault specs must be objects");
        return -1;
    }
    if (emu_cfg_rate(o, "rate_429", &f->rate_429, err, ecap) || emu_cfg_rate(o, "rate_500", &f->rate_500, err, ecap) ||
        emu_cfg_rate(o, "rate_503", &f->rate_503, err, ecap) || emu_cfg_rate(o, "drop_rate", &f->drop_rate, err, ecap) ||
        emu_cfg_rate(o, "slow_rate", &f->slow_rate, err, ecap) ||
        emu_cfg_rate(o, "launched_400_rate", &f->launched_400_rate, err, ecap) ||
        emu_cfg_rate(o, "launched_timeout_rate", &f->launched_timeout_rate, err, ecap) ||
        emu_cfg_int(o, "latency_ms", &f->latency_ms, err, ecap) || emu_cfg_int(o, "slow_ms", &f->slow_ms, err, ecap) ||
        emu_cfg_int(o, "retry_delay_s", &f->retry_delay_s, err, ecap) ||
        emu_cfg_int(o, "launched_timeout_ms", &f->launched_timeout_ms, err, ecap) ||
        emu_cfg_bool(o, "launched_timeout_drop", &f->launched_timeout_drop, err, ecap))
        return -1;
    if (f->rate_429 + f->rate_500 + f->rate_503 + f->drop_rate > 1.0) {
        snprintf(err, ecap, "rate_429 + rate_500 + rate_503 + drop_rate must not exceed 1");
        return -1;
    }
    return 0;
}

/* What a method's fault spec starts from before "default" and its own entry are applied. */
static const struct emu_fault emu_fault_base = {.retry_delay_s = 2, .launched_timeout_ms = 65000,
                                                .launched_timeout_drop = 1};

/* Parses the merged document into *out (zeroed by the caller). Returns 0, or -1 with err filled; on failure
 * *out may be partly filled and must be cleared with emu_cfg_clear. */
static int emu_cfg_parse(json_t *root, struct emu_cfg *c, char *err, size_t ecap)
{
    json_t *o;
    if (!json_is_object(root)) {
        snprintf(err, ecap, "config must be a JSON object");
        return -1;
    }
    if (emu_cfg_str(root, "project_id", &c->project_id, err, ecap) ||
        emu_cfg_str(root, "project_number", &c->project_number, err, ecap) ||
        emu_cfg_bool(root, "auth", &c->auth, err, ecap) ||
        emu_cfg_int(root, "token_lifetime_s", &c->token_lifetime_s, err, ecap) ||
        emu_cfg_int(root, "max_body_bytes", &c->max_body_bytes, err, ecap) ||
        emu_cfg_int(root, "jwks_max_age_s", &c->jwks_max_age_s, err, ecap) ||
        emu_cfg_int(root, "list_page_size", &c->list_page_size, err, ecap) ||
        emu_cfg_int(root, "list_max_page_size", &c->list_max_page_size, err, ecap))
        return -1;
    o = json_object_get(root, "quota");
    if (o != NULL && (emu_cfg_int(o, "max_active_jobs", &c->max_active_jobs, err, ecap) ||
                      emu_cfg_int(o, "error", &c->quota_error, err, ecap)))
        return -1;
    if (c->quota_error == 0) c->quota_error = 429;
    if (c->quota_error != 429 && c->quota_error != 403 && c->quota_error != 400) {
        snprintf(err, ecap, "quota.error must be 429, 403 or 400");
        return -1;
    }
    if (c->project_id == NULL || c->project_number == NULL) {
        snprintf(err, ecap, "project_id and project_number are required");
        return -1;
    }
    if (c->list_page_size < 1) c->list_page_size = 1;
    if (c->list_max_page_size < c->list_page_size) c->list_max_page_size = c->list_page_size;
    c->defaults.outcome = JS_DONE;
    if (emu_cfg_rule(json_object_get(root, "job_defaults"), &c->defaults, err, ecap)) return -1;
    o = json_object_get(root, "jobs");
    if (o != NULL && !json_is_array(o)) {
        snprintf(err, ecap, "jobs must be an array of rules");
        return -1;
    }
    c->nrules = json_array_size(o);
    c->rules = xcalloc(c->nrules ? c->nrules : 1, sizeof *c->rules);
    for (size_t i = 0; i < c->nrules; i++) {
        json_t *r = json_array_get(o, i);
        struct emu_rule *rule = &c->rules[i];
        *rule = c->defaults;
        rule->match = NULL;
        rule->failure_cause = c->defaults.failure_cause ? xstrdup(c->defaults.failure_cause) : NULL;
        if (emu_cfg_rule(r, rule, err, ecap) || emu_cfg_str(r, "match", &rule->match, err, ecap)) return -1;
        if (rule->match == NULL) {
            snprintf(err, ecap, "each job rule needs a \"match\" glob");
            return -1;
        }
    }
    o = json_object_get(root, "lag");
    char *mode = NULL;
    if (o != NULL && (emu_cfg_int(o, "window_ms", &c->lag_window_ms, err, ecap) || emu_cfg_str(o, "mode", &mode, err, ecap)))
        return -1;
    if (mode != NULL && strcmp(mode, "not_found") != 0 && strcmp(mode, "stale") != 0) {
        free(mode);
        snprintf(err, ecap, "lag.mode must be \"not_found\" or \"stale\"");
        return -1;
    }
    c->lag_stale = mode != NULL && strcmp(mode, "stale") == 0;
    free(mode);
    o = json_object_get(root, "templates");
    json_t *miss = json_object_get(o, "missing"), *req = json_object_get(o, "required_parameters");
    if ((miss != NULL && !json_is_array(miss)) || (req != NULL && !json_is_object(req))) {
        snprintf(err, ecap, "templates.missing must be an array and templates.required_parameters an object");
        return -1;
    }
    c->templates_missing = miss ? json_incref(miss) : json_array();
    c->templates_required = req ? json_incref(req) : json_object();
    o = json_object_get(root, "faults");
    if (o != NULL && !json_is_object(o)) {
        snprintf(err, ecap, "faults must be an object");
        return -1;
    }
    struct emu_fault def = emu_fault_base;
    if (emu_cfg_fault(json_object_get(o, "default"), &def, err, ecap)) return -1;
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        int known = strcmp(key, "default") == 0;
        for (int m = 0; m < M_COUNT && !known; m++) known = strcmp(key, emu_method_names[m]) == 0;
        if (!known) {
            snprintf(err, ecap, "unknown fault method %s", key);
            return -1;
        }
    }
    for (int m = 0; m < M_COUNT; m++) {
        /* The default spec applies to the Dataflow methods; the others only fail when named. */
        c->faults[m] = m <= M_DATAFLOW_LAST ? def : emu_fault_base;
        if (emu_cfg_fault(json_object_get(o, emu_method_names[m]), &c->faults[m], err, ecap)) return -1;
    }
    o = json_object_get(root, "events");
    if (o != NULL) {
        if (emu_cfg_str(o, "push_url", &c->push_url, err, ecap) || emu_cfg_str(o, "eventarc_url", &c->eventarc_url, err, ecap) ||
            emu_cfg_str(o, "subscription", &c->subscription, err, ecap) || emu_cfg_str(o, "audience", &c->audience, err, ecap) ||
            emu_cfg_str(o, "email", &c->push_email, err, ecap) || emu_cfg_rate(o, "duplicate_rate", &c->dup_rate, err, ecap) ||
            emu_cfg_rate(o, "reorder_rate", &c->reorder_rate, err, ecap) ||
            emu_cfg_int(o, "reorder_ms", &c->reorder_ms, err, ecap) ||
            emu_cfg_int(o, "max_attempts", &c->max_attempts, err, ecap) ||
            emu_cfg_int(o, "backoff_ms", &c->backoff_ms, err, ecap) ||
            emu_cfg_int(o, "timeout_ms", &c->delivery_timeout_ms, err, ecap))
            return -1;
    }
    if (c->push_email == NULL) c->push_email = xstrdup("pubsub-push@emulator.iam.gserviceaccount.com");
    if (c->max_attempts < 1) c->max_attempts = 1;
    return 0;
}

/* Replaces the configuration by `doc` (stolen) if it parses; lock held. Returns 0 or -1 with err. */
int emu_apply_config(json_t *doc, char *err, size_t ecap)
{
    struct emu_cfg nc;
    memset(&nc, 0, sizeof nc);
    if (emu_cfg_parse(doc, &nc, err, ecap) != 0) {
        emu_cfg_clear(&nc);
        json_decref(doc);
        return -1;
    }
    emu_cfg_clear(&emu_g.cfg);
    emu_g.cfg = nc;
    json_decref(emu_g.cfg_doc);
    emu_g.cfg_doc = doc;
    pthread_cond_signal(&emu_g.timer_cond);
    return 0;
}

json_t *emu_cfg_load(const char *config_path, json_t *flags)
{
    json_error_t je;
    json_t *doc = json_loads(emu_default_config, 0, &je);
    if (doc == NULL) return NULL;
    if (config_path != NULL) {
        json_t *file = json_load_file(config_path, 0, &je);
        if (file == NULL || !json_is_object(file)) {
            fprintf(stderr, "sluice emulator: cannot read config %s: %s (line %d)\n", config_path,
                    file ? "not an object" : je.text, je.line);
            json_decref(file);
            json_decref(doc);
            return NULL;
        }
        json_object_update_recursive(doc, file);
        json_decref(file);
    }
    json_object_update_recursive(doc, flags);
    return doc;
}
