/* emu_dataflow: owns the emulated Dataflow REST methods (flexTemplates.launch, templates.launch, jobs.get,
 * jobs.list, jobs.update) and the request validation the real API applies before them: proto-style unknown
 * fields, job names, labels, template paths and parameters, answered with the real messages and error shapes.
 * Uses: emu.h, emu_jobs (the store), emu_http (answers). Must not: apply faults or auth (emu_dispatch does
 * before calling in); every handler runs with emu_g.lock held. */
#include "emu.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [a-z]([-a-z0-9]{0,1022}[a-z0-9])? */
static int emu_job_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len < 1 || len > 1024 || !(n[0] >= 'a' && n[0] <= 'z')) return 0;
    for (size_t i = 1; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '-')) return 0;
    return n[len - 1] != '-';
}

static int emu_label_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-')) return 0;
    return 1;
}

/* Label rules: at most 64; keys 1-63 chars starting with a lowercase letter; values 0-63; only
 * [a-z0-9_-]. Returns 0, or -1 with msg filled. */
static int emu_labels_ok(json_t *labels, char *msg, size_t cap)
{
    if (labels == NULL) return 0;
    if (!json_is_object(labels)) {
        snprintf(msg, cap, "additionalUserLabels must be a map of strings");
        return -1;
    }
    if (json_object_size(labels) > 64) {
        snprintf(msg, cap, "Too many labels: %zu (at most 64 are allowed).", json_object_size(labels));
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v)
    {
        size_t kl = strlen(k);
        if (kl < 1 || kl > 63 || !(k[0] >= 'a' && k[0] <= 'z') || !emu_label_chars_ok(k)) {
            snprintf(msg, cap, "Invalid label key '%.100s': keys must be 1-63 characters, start with a lowercase "
                               "letter and contain only lowercase letters, digits, underscores and dashes.", k);
            return -1;
        }
        if (!json_is_string(v)) {
            snprintf(msg, cap, "Invalid value at 'additional_user_labels[%.100s]' (TYPE_STRING)", k);
            return -1;
        }
        const char *s = json_string_value(v);
        if (strlen(s) > 63 || !emu_label_chars_ok(s)) {
            snprintf(msg, cap, "Invalid label value '%.100s' for key '%.100s': values must be at most 63 characters "
                               "and contain only lowercase letters, digits, underscores and dashes.", s, k);
            return -1;
        }
    }
    return 0;
}

/* Proto-style strictness: an unknown field is a 400. Returns the first unknown key or NULL. */
static const char *emu_unknown_field(json_t *obj, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(allowed[i], k) == 0;
        if (!ok) return k;
    }
    return NULL;
}

static const char *const emu_env_fields[] = {
    "numWorkers", "maxWorkers", "zone", "serviceAccountEmail", "tempLocation", "bypassTempDirValidation",
    "machineType", "additionalExperiments", "network", "subnetwork", "additionalUserLabels", "kmsKeyName",
    "ipConfiguration", "workerRegion", "workerZone", "enableStreamingEngine", "flexrsGoal", "stagingLocation",
    "sdkContainerImage", "diskSizeGb", "autoscalingAlgorithm", "dumpHeapOnOom", "saveHeapDumpsToGcsPath",
    "launcherMachineType", "enableLauncherVmSerialPortLogging", "streamingMode", "additionalPipelineOptions",
    NULL};

/* Checks a map<string,string> field; returns 0 or -1 with msg. */
static int emu_string_map_ok(json_t *m, const char *field, char *msg, size_t cap)
{
    if (m == NULL || json_is_null(m)) return 0;
    if (!json_is_object(m)) {
        snprintf(msg, cap, "Invalid JSON payload received. Expected an object for '%s'.", field);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v)) {
            snprintf(msg, cap, "Invalid value at '%s[%.100s]' (TYPE_STRING)", field, k);
            return -1;
        }
    }
    return 0;
}

static int emu_glob_listed(json_t *globs, const char *path)
{
    size_t i;
    json_t *g;
    json_array_foreach(globs, i, g)
    {
        if (json_is_string(g) && fnmatch(json_string_value(g), path, 0) == 0) return 1;
    }
    return 0;
}

/* The InvalidTemplateParameters 400 for the given violations (stolen array of {parameter, description}). */
void emu_invalid_params(struct emu_resp *r, json_t *violations)
{
    char msg[1024] = "Invalid template parameters: ";
    size_t i;
    json_t *v;
    json_array_foreach(violations, i, v)
    {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, "%s%s: %s", i ? "; " : "",
                 json_string_value(json_object_get(v, "parameter")),
                 json_string_value(json_object_get(v, "description")));
    }
    emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 0, 0,
                    json_pack("[{s:s, s:o}]", "@type", "type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters",
                              "parameterViolations", violations),
                    "%s", msg);
}

/* Both launch methods. Lock held. */
void emu_launch(struct emu_call *cx, int flex)
{
    static const char *const top_flex[] = {"launchParameter", "validateOnly", NULL};
    static const char *const lp_fields[] = {"jobName", "parameters", "launchOptions", "containerSpec",
                                            "containerSpecGcsPath", "environment", "update",
                                            "transformNameMappings", NULL};
    static const char *const classic_fields[] = {"jobName", "parameters", "environment", "update",
                                                 "transformNameMapping", NULL};
    struct emu_resp *r = &cx->q->resp;
    char msg[1024];
    json_t *body = emu_body_json(cx);
    json_t *lp, *env, *params, *labels;
    const char *name, *path, *unknown;
    int validate_only = 0;
    emu_call_outcome(cx, "rejected");
    if (body == NULL) goto out;
    if ((unknown = emu_unknown_field(body, flex ? top_flex : classic_fields)) != NULL) {
        snprintf(msg, sizeof msg, "Invalid JSON payload received. Unknown name \"%.100s\": Cannot find field.", unknown);
        emu_bad_request(r, msg);
        goto out;
    }
    if (flex) {
        lp = json_object_get(body, "launchParameter");
        json_t *vo = json_object_get(body, "validateOnly");
        if (vo != NULL && !json_is_boolean(vo)) {
            emu_bad_request(r, "Invalid value at 'validate_only' (TYPE_BOOL)");
            goto out;
        }
        validate_only = json_is_true(vo);
        if (!json_is_object(lp)) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL, "launchParameter is required.");
            goto out;
        }
        if ((unknown = emu_unknown_field(lp, lp_fields)) != NULL) {
            snprintf(msg, sizeof msg,
                     "Invalid JSON payload received. Unknown name \"%.100s\" at 'launch_parameter': Cannot find field.",
                     unknown);
            emu_bad_request(r, msg);
            goto out;
        }
    } else {
        lp = body;
        const char *vo = emu_query(cx, "validateOnly");
        validate_only = vo != NULL && strcmp(vo, "true") == 0;
    }
    env = json_object_get(lp, "environment");
    if (env != NULL && !json_is_object(env)) {
        emu_bad_request(r, "Invalid JSON payload received. Expected an object for 'environment'.");
        goto out;
    }
    if (env != NULL && (unknown = emu_unknown_field(env, emu_env_fields)) != NULL) {
        snprintf(msg, sizeof msg,
                 "Invalid JSON payload received. Unknown name \"%.100s\" at '%senvironment': Cannot find field.",
                 unknown, flex ? "launch_parameter." : "");
        emu_bad_request(r, msg);
        goto out;
    }
    params = json_object_get(lp, "parameters");
    labels = json_object_get(env, "additionalUserLabels");
    if (emu_string_map_ok(params, "parameters", msg, sizeof msg) != 0) {
        emu_bad_request(r, msg);
        goto out;
    }
    json_t *jn = json_object_get(lp, "jobName");
    if (jn != NULL && !json_is_string(jn)) {
        emu_bad_request(r, "Invalid value at 'job_name' (TYPE_STRING)");
        goto out;
    }
    name = json_string_value(jn);
    if (name == NULL || *name == '\0') {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "The workflow could not be created. Causes: A job name is required (jobName).");
        goto out;
    }
    if (!emu_job_name_ok(name)) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "The workflow could not be created. Causes: Invalid job name (%.200s). The job name must "
                        "consist of only the characters [-a-z0-9], starting with a letter and ending with a letter "
                        "or number.", name);
        goto out;
    }
    if (flex) {
        json_t *p = json_object_get(lp, "containerSpecGcsPath");
        if (p != NULL && !json_is_string(p)) {
            emu_bad_request(r, "Invalid value at 'launch_parameter.container_spec_gcs_path' (TYPE_STRING)");
            goto out;
        }
        path = json_string_value(p);
        if (path == NULL && json_is_object(json_object_get(lp, "containerSpec"))) path = "inline-container-spec";
        if (path == NULL) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL,
                            "Either containerSpecGcsPath or containerSpec must be specified.");
            goto out;
        }
    } else {
        path = emu_query(cx, "gcsPath");
        if (path == NULL || *path == '\0') {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL, "gcsPath is required for templates.launch.");
            goto out;
        }
        const char *tl = json_string_value(json_object_get(env, "tempLocation"));
        if (tl == NULL || strncmp(tl, "gs://", 5) != 0) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                            "The workflow could not be created. Causes: environment.tempLocation is required and "
                            "must be a gs:// path.");
            goto out;
        }
    }
    if (strcmp(path, "inline-container-spec") != 0 && strncmp(path, "gs://", 5) != 0) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL,
                        "Invalid template file path %.300s: it must be a Cloud Storage path (gs://bucket/object).", path);
        goto out;
    }
    if (emu_labels_ok(labels, msg, sizeof msg) != 0) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL, "The workflow could not be created. Causes: %s", msg);
        goto out;
    }
    if (emu_glob_listed(emu_g.cfg.templates_missing, path)) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "Unable to open template file: %.300s. Please check that the template file exists and that "
                        "the caller has permission to read it.", path);
        goto out;
    }
    {
        /* Required parameters of this template path (first matching glob). */
        const char *glob;
        json_t *names;
        json_t *violations = json_array();
        json_object_foreach(emu_g.cfg.templates_required, glob, names)
        {
            if (fnmatch(glob, path, 0) != 0) continue;
            size_t i;
            json_t *pn;
            json_array_foreach(names, i, pn)
            {
                const char *n = json_string_value(pn);
                if (n != NULL && json_object_get(params, n) == NULL)
                    json_array_append_new(violations, json_pack("{s:s, s:s}", "parameter", n, "description",
                                                                "Required parameter is missing."));
            }
            break;
        }
        if (json_array_size(violations) > 0) {
            emu_invalid_params(r, violations);
            goto out;
        }
        json_decref(violations);
    }
    if (emu_job_active_named(cx->project, cx->region, name) != NULL) {
        emu_resp_gerror(r, 409, "ALREADY_EXISTS", 1, 1, NULL,
                        "There is already an active job named %s. If you want to  submit a second job, try again by "
                        "setting a different name.", name);
        goto out;
    }
    if (validate_only) {
        emu_call_outcome(cx, "validated");
        emu_resp_json(r, 200, json_object());
        goto out;
    }
    if (emu_quota_refuse(cx)) goto out;
    const char *sp = json_string_value(json_object_get(params, "streaming"));
    struct emu_job *j = emu_job_create(cx->project, cx->region, name, path, labels, sp && strcmp(sp, "true") == 0);
    if (j == NULL) {
        emu_resp_gerror(r, 500, "INTERNAL", 1, 0, NULL, "Internal error encountered.");
        goto out;
    }
    cx->created = 1;
    emu_call_outcome(cx, "created");
    if (cx->entry) json_object_set_new(cx->entry, "job_id", json_string(j->id));
    emu_resp_json(r, 200, json_pack("{s:o}", "job", emu_job_json(j, 1, 0, 0)));
out:
    json_decref(body);
}

/* Whether the `view` query parameter shows labels: 1 or 0, or -1 after answering 400 for an unknown view. */
static int emu_view_labels(struct emu_call *cx)
{
    const char *v = emu_query(cx, "view");
    if (v == NULL || strcmp(v, "JOB_VIEW_SUMMARY") == 0 || strcmp(v, "JOB_VIEW_UNKNOWN") == 0) return 0;
    if (strcmp(v, "JOB_VIEW_DESCRIPTION") == 0 || strcmp(v, "JOB_VIEW_ALL") == 0) return 1;
    emu_bad_request(&cx->q->resp,
                    "Invalid value for view: must be one of JOB_VIEW_SUMMARY, JOB_VIEW_ALL, JOB_VIEW_DESCRIPTION.");
    return -1;
}

void emu_not_found(struct emu_resp *r, const char *id)
{
    emu_resp_gerror(r, 404, "NOT_FOUND", 0, 1, NULL,
                    "Information about job %.200s could not be found in our system. Please double check that the API "
                    "being used is projects.locations.jobs.get (https://cloud.google.com/dataflow/docs/reference/rest/"
                    "v1b3/projects.locations.jobs/get). If the API being used is projects.locations.jobs.get, please "
                    "double check the id is correct. If it is please contact customer support.", id);
}

void emu_jobs_get(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    int labels = emu_view_labels(cx);
    if (labels < 0) return;
    struct emu_job *j = emu_job_find(cx->project, cx->region, cx->jobid);
    if (j == NULL) {
        emu_not_found(r, cx->jobid);
        return;
    }
    /* Eventual consistency right after completion: 404 or the previous state, for a window. */
    int lagging = js_terminal(j->state) && emu_g.cfg.lag_window_ms > 0 &&
                  emu_now_ms() < j->state_ms + emu_g.cfg.lag_window_ms;
    if (lagging && !emu_g.cfg.lag_stale) {
        emu_not_found(r, cx->jobid);
        return;
    }
    emu_resp_json(r, 200, emu_job_json(j, 0, labels, lagging));
}

void emu_jobs_list(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    int labels = emu_view_labels(cx);
    const char *filter = emu_query(cx, "filter"), *name = emu_query(cx, "name");
    const char *ps = emu_query(cx, "pageSize"), *pt = emu_query(cx, "pageToken");
    int want = 0; /* 0 all, 1 active, 2 terminated */
    if (labels < 0) return;
    if (filter == NULL || strcmp(filter, "ALL") == 0 || strcmp(filter, "UNKNOWN") == 0) want = 0;
    else if (strcmp(filter, "ACTIVE") == 0) want = 1;
    else if (strcmp(filter, "TERMINATED") == 0) want = 2;
    else {
        emu_bad_request(r, "Invalid value for filter: must be one of UNKNOWN, ALL, TERMINATED, ACTIVE.");
        return;
    }
    long size = emu_g.cfg.list_page_size;
    if (ps != NULL && *ps != '\0') {
        char *end;
        size = strtol(ps, &end, 10);
        if (*end != '\0' || size < 0) {
            emu_bad_request(r, "Invalid value for pageSize.");
            return;
        }
        if (size == 0) size = emu_g.cfg.list_page_size;
        if (size > emu_g.cfg.list_max_page_size) size = emu_g.cfg.list_max_page_size;
    }
    long offset = 0;
    if (pt != NULL && *pt != '\0') {
        size_t n = 0;
        unsigned char *raw = jwt_b64url_decode(pt, strlen(pt), &n);
        char *end = NULL;
        if (raw != NULL && strncmp((char *)raw, "emu-page:", 9) == 0) offset = strtol((char *)raw + 9, &end, 10);
        int ok = raw != NULL && end != NULL && *end == '\0' && offset > 0;
        free(raw);
        if (!ok) {
            emu_bad_request(r, "Invalid page token.");
            return;
        }
    }
    json_t *arr = json_array();
    long idx = 0;
    int more = 0;
    for (struct emu_job *j = emu_g.jobs; j != NULL; j = j->next) {
        if (strcmp(j->project, cx->project) != 0 || strcmp(j->region, cx->region) != 0) continue;
        if (name != NULL && *name != '\0' && strcmp(name, j->name) != 0) continue;
        int term = js_terminal(j->state);
        if ((want == 1 && term) || (want == 2 && !term)) continue;
        if (idx++ < offset) continue;
        if ((long)json_array_size(arr) == size) {
            more = 1;
            break;
        }
        json_array_append_new(arr, emu_job_json(j, 0, labels, 0));
    }
    json_t *out = json_object();
    if (json_array_size(arr) > 0) json_object_set(out, "jobs", arr);
    if (more) {
        char tok[64];
        snprintf(tok, sizeof tok, "emu-page:%ld", offset + size);
        char *t = jwt_b64url_encode((unsigned char *)tok, strlen(tok));
        json_object_set_new(out, "nextPageToken", json_string(t ? t : ""));
        free(t);
    }
    json_decref(arr);
    emu_resp_json(r, 200, out);
}

void emu_jobs_update(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    json_t *body = emu_body_json(cx);
    if (body == NULL) return;
    struct emu_job *j = emu_job_find(cx->project, cx->region, cx->jobid);
    json_t *rs = json_object_get(body, "requestedState");
    int want = json_is_string(rs) ? js_parse(json_string_value(rs)) : -1;
    if (j == NULL) {
        emu_not_found(r, cx->jobid);
    } else if (rs == NULL) {
        emu_bad_request(r, "The request must set requestedState (JOB_STATE_CANCELLED or JOB_STATE_DRAINED).");
    } else if (want < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "Invalid value at 'job.requested_state' (type.googleapis.com/google.dataflow.v1b3.JobState), \"%.80s\"",
                 json_is_string(rs) ? json_string_value(rs) : "?");
        emu_bad_request(r, msg);
    } else if (want != JS_CANCELLED && want != JS_DRAINED) {
        emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 1, NULL,
                        "Workflow modification failed. Causes: Requested state %s is not supported.",
                        js_name(want));
    } else if (js_terminal(j->state)) {
        emu_resp_gerror(r, 400, "FAILED_PRECONDITION", 1, 1, NULL,
                        "Workflow modification failed. Causes: Cannot perform operation '%s' on Job: %s. Job has "
                        "terminated in state %s: Job has terminated and cannot be modified.",
                        want == JS_CANCELLED ? "cancel" : "drain", j->id, js_name(j->state));
    } else if (want == JS_DRAINED && !j->streaming) {
        emu_resp_gerror(r, 400, "FAILED_PRECONDITION", 1, 1, NULL,
                        "Workflow modification failed. Causes: Cannot drain job %s: only streaming jobs can be drained.",
                        j->id);
    } else {
        int64_t now = emu_now_ms();
        if (want == JS_CANCELLED && j->state != JS_CANCELLING) {
            j->requested_state = JS_CANCELLED;
            emu_job_set_state(j, JS_CANCELLING, now);
            j->next_ms = now + j->rule.cancel_ms;
        } else if (want == JS_DRAINED && j->state != JS_DRAINING && j->state != JS_CANCELLING) {
            j->requested_state = JS_DRAINED;
            emu_job_set_state(j, JS_DRAINING, now);
            j->next_ms = now + j->rule.drain_ms;
        }
        emu_timer_push(j);
        if (j->next_ms == now) emu_jobs_advance(now);
        pthread_cond_signal(&emu_g.timer_cond);
        emu_resp_json(r, 200, emu_job_json(j, 0, 1, 0));
    }
    json_decref(body);
}
