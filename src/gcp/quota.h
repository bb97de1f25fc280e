/* quota: tells a launch refused for quota (Dataflow's concurrent-job, CPU and IP quotas, API rate limits) from
 * any other refusal, so the engine can put the step back to wait for capacity instead of failing it.
 * Uses: libc only. Must not: do I/O or keep state; it only reads the answer's fields it is handed. */
#ifndef SLUICE_QUOTA_H
#define SLUICE_QUOTA_H

/* 1 when a failed launch's answer says "not now, for quota" (nothing was created and the same request may
 * succeed later), else 0. By the status fields first: HTTP 429, or google.rpc status RESOURCE_EXHAUSTED, or a
 * reason naming a quota (rateLimitExceeded, quotaExceeded, QUOTA_FOR_INSTANCES, ZONE_RESOURCE_POOL_EXHAUSTED);
 * then, only for a 400 or 403 whose fields say nothing, by the text as a last resort ("quota error",
 * "insufficient quota", "Quota exceeded", "QUOTA_FOR_INSTANCES", "ZONE_RESOURCE_POOL_EXHAUSTED"). Each argument
 * may be NULL (0 for the status). */
int quota_refused(long http_status, const char *google_status, const char *reason, const char *message);

#endif
