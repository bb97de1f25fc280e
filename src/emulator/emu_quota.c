/* emu_quota: owns the emulated concurrent-jobs quota (quota.max_active_jobs per project: a launch beyond it is
 * refused with one of Dataflow's quota errors, as configured) and the count of active jobs with its high-water mark,
 * shown in /emulator/stats as active_jobs, so tests can check from Dataflow's side that a limit held.
 * Uses: emu.h (jobs, config, answers). Must not: change any job; emu_g.lock is held by every caller. */
#include "emu.h"

#include <string.h>

int emu_quota_refuse(struct emu_call *cx)
{
    int limit = emu_g.cfg.max_active_jobs;
    if (limit <= 0) return 0;
    int active = 0;
    for (struct emu_job *j = emu_g.jobs; j != NULL; j = j->next)
        if (!js_terminal(j->state) && strcmp(j->project, cx->project) == 0) active++;
    if (active < limit) return 0;
    struct emu_resp *r = &cx->q->resp;
    emu_call_outcome(cx, "quota");
    switch (emu_g.cfg.quota_error) {
    case 403:
        emu_resp_gerror(r, 403, "PERMISSION_DENIED", 0, 0, NULL,
                        "Exceeded limit 'QUOTA_FOR_INSTANCES' on resource '%s'. Limit: %d.0", cx->project, limit);
        break;
    case 400:
        emu_resp_gerror(r, 400, "FAILED_PRECONDITION", 0, 1, NULL,
                        "Dataflow quota error for jobs-per-project quota. Project %s is running %d out of %d jobs. "
                        "Please wait for a workflow to finish", cx->project, active, limit);
        break;
    default:
        emu_resp_gerror(r, 429, "RESOURCE_EXHAUSTED", 0, 0, NULL,
                        "Dataflow quota error for jobs-per-project quota. Project %s is running %d out of %d jobs. "
                        "Please wait for a workflow to finish", cx->project, active, limit);
        break;
    }
    return 1;
}

void emu_quota_track(int from, int to)
{
    int was = from >= 0 && !js_terminal(from), is = !js_terminal(to);
    if (was == is) return;
    emu_g.active_now += is ? 1 : -1;
    if (emu_g.active_now < 0) emu_g.active_now = 0;
    if (emu_g.active_now > emu_g.active_max) emu_g.active_max = emu_g.active_now;
}

json_t *emu_quota_stats(void)
{
    return json_pack("{s:i, s:i, s:i}", "now", emu_g.active_now, "max", emu_g.active_max, "limit",
                     emu_g.cfg.max_active_jobs);
}
