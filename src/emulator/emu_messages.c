/* emu_messages: owns the emulated jobs.messages.list: the job messages a job has produced so far, derived from
 * its state history (start, workers, and for a failed job the "Workflow failed. Causes: ..." error carrying its
 * failure_cause), filtered by minimumImportance as the real API does.
 * Uses: emu.h, emu_jobs (the store), emu_http (answers). Must not: change jobs; runs with emu_g.lock held. */
#include "emu.h"

#include <stdio.h>
#include <string.h>

static const char *const emu_importance[] = {"JOB_MESSAGE_DEBUG", "JOB_MESSAGE_DETAILED", "JOB_MESSAGE_BASIC",
                                             "JOB_MESSAGE_WARNING", "JOB_MESSAGE_ERROR"};

static int emu_importance_rank(const char *name)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(name, emu_importance[i]) == 0) return i;
    return -1;
}

static void emu_msg_add(json_t *arr, int min, const struct emu_job *j, int n, int64_t at, int rank, const char *text)
{
    if (rank < min) return;
    char id[96], tm[40];
    snprintf(id, sizeof id, "%lld-%d", (long long)j->seq, n);
    emu_fmt_time(at, 3, tm, sizeof tm);
    json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s}", "id", id, "time", tm, "messageText", text,
                                         "messageImportance", emu_importance[rank]));
}

void emu_jobs_messages(struct emu_call *cx)
{
    struct emu_resp *r = &cx->q->resp;
    const char *mi = emu_query(cx, "minimumImportance");
    int min = 0;
    if (mi != NULL && strcmp(mi, "JOB_MESSAGE_IMPORTANCE_UNKNOWN") != 0) {
        min = emu_importance_rank(mi);
        if (min < 0) {
            emu_resp_gerror(r, 400, "INVALID_ARGUMENT", 1, 0, NULL,
                            "Invalid value at 'minimum_importance' (type.googleapis.com/google.dataflow.v1beta3."
                            "JobMessageImportance), \"%.100s\"", mi);
            return;
        }
    }
    struct emu_job *j = emu_job_find(cx->project, cx->region, cx->jobid);
    if (j == NULL) {
        emu_not_found(r, cx->jobid);
        return;
    }
    json_t *arr = json_array();
    char text[1200];
    snprintf(text, sizeof text, "Autoscaling is enabled for job %s.", j->id);
    emu_msg_add(arr, min, j, 1, j->create_ms, 1, text);
    int ran = j->state == JS_RUNNING || j->state == JS_DONE || j->state == JS_FAILED || j->state == JS_CANCELLING ||
              j->state == JS_CANCELLED || j->state == JS_DRAINING || j->state == JS_DRAINED;
    if (ran) {
        snprintf(text, sizeof text, "Starting 1 workers in %s.", j->region);
        emu_msg_add(arr, min, j, 2, j->create_ms, 2, text);
    }
    if (j->state == JS_FAILED) {
        snprintf(text, sizeof text, "Workflow failed. Causes: %s", j->failure_cause ? j->failure_cause : "unknown");
        emu_msg_add(arr, min, j, 3, j->state_ms, 4, text);
    }
    if (js_terminal(j->state)) emu_msg_add(arr, min, j, 4, j->state_ms, 2, "Worker pool stopped.");
    emu_resp_json(r, 200, json_pack("{s:o}", "jobMessages", arr));
}
