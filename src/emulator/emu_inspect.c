/* emu_inspect: owns the emulator's own endpoints under /emulator/: health, the launch log, stats, all jobs, the
 * configuration (read and merge), reset, token revocation, forcing a job's state, and the credential documents.
 * Uses: emu.h, emu_config, emu_jobs, emu_events (queue stats), emu_identity. Must not: apply auth or faults;
 * these endpoints are for tests and are answered at once, with emu_g.lock held. */
#include "emu.h"
#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void emu_control(struct emu_call *cx, const char *path)
{
    struct emu_resp *r = &cx->q->resp;
    int get = strcmp(cx->http_method, "GET") == 0, post = strcmp(cx->http_method, "POST") == 0;
    char err[256];
    if (strcmp(path, "healthz") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "launches") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:O}", "launches", emu_g.launches));
    } else if (strcmp(path, "stats") == 0 && get) {
        json_t *st = json_deep_copy(emu_g.stats);
        json_object_set_new(st, "delivery_queue", emu_events_queue_stats());
        json_object_set_new(st, "active_jobs", emu_quota_stats());
        emu_resp_json(r, 200, st);
    } else if (strcmp(path, "jobs") == 0 && get) {
        json_t *arr = json_array();
        for (struct emu_job *j = emu_g.jobs; j != NULL; j = j->next) {
            json_t *o = emu_job_json(j, 0, 1, 0);
            json_object_set_new(o, "templatePath", json_string(j->template_path));
            json_array_append_new(arr, o);
        }
        emu_resp_json(r, 200, json_pack("{s:o}", "jobs", arr));
    } else if (strcmp(path, "reset") == 0 && post) {
        emu_clear_runtime();
        emu_apply_config(json_deep_copy(emu_g.start_cfg), err, sizeof err);
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "revoke-tokens") == 0 && post) {
        emu_tokens_revoke();
        emu_resp_json(r, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "credentials") == 0 && get) {
        emu_resp_json(r, 200, json_pack("{s:o, s:o}", "service_account", emu_sa_json(), "authorized_user", emu_au_json()));
    } else if (strcmp(path, "config") == 0 && get) {
        emu_resp_json(r, 200, json_deep_copy(emu_g.cfg_doc));
    } else if (strcmp(path, "config") == 0 && post) {
        json_t *body = emu_body_json(cx);
        if (body == NULL) return;
        json_t *seed = json_object_get(body, "seed");
        if (seed != NULL && !json_is_integer(seed)) {
            json_decref(body);
            emu_bad_request(r, "seed must be an integer");
            return;
        }
        uint64_t seed_val = seed ? (uint64_t)json_integer_value(seed) : 0;
        int reseed = seed != NULL;
        json_object_del(body, "seed");
        json_t *merged = json_deep_copy(emu_g.cfg_doc);
        json_object_update_recursive(merged, body);
        json_decref(body);
        if (emu_apply_config(merged, err, sizeof err) != 0) {
            emu_bad_request(r, err);
            return;
        }
        if (reseed) emu_rng_reseed(seed_val);
        emu_resp_json(r, 200, json_deep_copy(emu_g.cfg_doc));
    } else if (strncmp(path, "jobs/", 5) == 0 && post) {
        const char *id = path + 5;
        const char *colon = strrchr(id, ':');
        if (colon == NULL || strcmp(colon, ":finish") != 0) {
            emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "Unknown emulator endpoint.");
            return;
        }
        char jid[256];
        snprintf(jid, sizeof jid, "%.*s", (int)(colon - id), id);
        json_t *body = emu_body_json(cx);
        if (body == NULL) return;
        struct emu_job *j = emu_job_find_any(jid);
        const char *sn = json_string_value(json_object_get(body, "state"));
        int st = sn ? js_parse(sn) : JS_DONE;
        const char *cause = json_string_value(json_object_get(body, "failure_cause"));
        if (j == NULL) {
            emu_not_found(r, jid);
        } else if (st < 0) {
            emu_bad_request(r, "state must be a JOB_STATE_* name");
        } else {
            if (cause != NULL) {
                free(j->failure_cause);
                j->failure_cause = xstrdup(cause);
            }
            j->next_ms = 0;
            if (st == JS_CANCELLED || st == JS_CANCELLING) j->requested_state = JS_CANCELLED;
            emu_job_set_state(j, st, emu_now_ms());
            emu_resp_json(r, 200, emu_job_json(j, 0, 1, 0));
        }
        json_decref(body);
    } else {
        emu_resp_gerror(r, 404, "NOT_FOUND", 0, 0, NULL, "Unknown emulator endpoint or method: %s /emulator/%.200s",
                        cx->http_method, path);
    }
}
