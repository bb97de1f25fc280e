/* counting_api: a jobs_api that wraps another and counts every Dataflow call for /metrics — by method,
 * outcome and HTTP code, its latency, and launches by workflow and step (looked up in the current workflow
 * set) — so the engine keeps only totals and never knows about metrics.
 * Uses: jobs_api, wfset, metrics, util. Must not: change, retry or reorder calls. */
#ifndef SLUICE_COUNTING_API_H
#define SLUICE_COUNTING_API_H
#include "jobs_api.h"
#include "wfset.h"

/* Wraps `inner` (takes ownership; freed with the wrapper, also on failure). `wfs` (borrowed, may be NULL) names
 * the workflow and step of each launch. Returns NULL when out of memory. */
jobs_api *counting_api_new(jobs_api *inner, wfset_box *wfs);

#endif
