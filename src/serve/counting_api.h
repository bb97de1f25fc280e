/* counting_api: a jobs_api that wraps another and counts every Dataflow call for /metrics — by method,
 * outcome and HTTP code, its latency, and launches by workflow and step (the labels the engine put on the
 * launch request, launch_req.workflow and .step; "unknown" when it put none) — so the engine keeps only totals
 * and never knows about metrics.
 * Uses: jobs_api, launch, metrics, util. Must not: change, retry or reorder calls; look anything up (a label is
 * what the request carries, not what the current workflow set says about its job name). */
#ifndef SLUICE_COUNTING_API_H
#define SLUICE_COUNTING_API_H
#include "jobs_api.h"

/* Wraps `inner` (takes ownership; freed with the wrapper). */
jobs_api *counting_api_new(jobs_api *inner);

#endif
