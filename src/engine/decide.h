/* decide: the rules for what happens when a step of a run ends — its successors, a retry, its on_failure
 * step, or the run's failure — and for when a join may start. Pure functions over the workflow model and the
 * step's outcome, called by the engine and by `sluice plan`, so the tool that predicts the engine cannot
 * disagree with it. Nothing else encodes these rules.
 * Uses: workflow (the model only). Must not: touch the store, call Lua, do I/O, or read the clock. */
#ifndef SLUICE_DECIDE_H
#define SLUICE_DECIDE_H

#include "workflow.h"

/* How a step's attempt ended. The names are those of retry.on in docs/workflows.md. */
typedef enum {
    DEC_SUCCEEDED = 0,                /* the job ended in one of the step's success states (a hook: it ran) */
    DEC_JOB_FAILED = WF_FAIL_JOB,     /* the job ended in another terminal state */
    DEC_TIMED_OUT = WF_FAIL_TIMEOUT,  /* the step's timeout fired, whatever state the stopped job ended in */
    DEC_REJECTED = WF_FAIL_REJECTED,  /* Dataflow refused the launch with an answer no re-send changes (4xx) */
    DEC_ERROR = WF_FAIL_ERROR,        /* the step's own function failed or its request could not be built */
} dec_outcome;

typedef enum {
    DEC_NEXT = 0,   /* start the successors: static `next`, or the choice function's answer */
    DEC_RETRY,      /* launch attempt next_attempt after retry_delay_s */
    DEC_ON_FAILURE, /* start the step `target` */
    DEC_FAIL_RUN,   /* the run fails; stop_others: cancel or drain its other in-flight jobs */
    DEC_RECORD,     /* the run is not running any more: record the end, start nothing */
} dec_action;

typedef struct {
    dec_action action;
    int next_attempt;     /* DEC_RETRY */
    double retry_delay_s; /* DEC_RETRY */
    const char *target;   /* DEC_ON_FAILURE: borrowed from the workflow */
    int stop_others;      /* DEC_FAIL_RUN */
    const char *handler;  /* DEC_FAIL_RUN: the workflow's failure_handler, to start once the run's other jobs are
                           * stopped (stop_others) or at once (they are left); NULL when none (or `step` is it) */
} dec_result;

/* The outcome of a job that reached `job_state` (JOB_STATE_*). timed_out: the engine stopped it because the
 * step's timeout fired. */
dec_outcome dec_classify(const wf_step *step, const char *job_state, int timed_out);

/* What follows outcome `o` of attempt `attempt` of `step`. launched: the attempt recorded a launch (it has a
 * job name), so a retry is a new attempt with a new name; a step that never launched is not retried.
 * run_running: the run is still running (a cancelled or failed run starts nothing new). */
dec_result dec_step(const wf_workflow *wf, const wf_step *step, dec_outcome o, int attempt, int launched,
                    int run_running);

/* What a step of a run is, for the join rule. */
typedef enum {
    DEC_ST_ABSENT = 0, /* not reached (no row) */
    DEC_ST_ACTIVE,     /* pending, launching, running or cancelling */
    DEC_ST_WAITING,    /* a join waiting for its predecessors */
    DEC_ST_SUCCEEDED,
    DEC_ST_ENDED,      /* failed, cancelled or skipped */
} dec_step_state;

typedef enum { DEC_JOIN_WAIT = 0, DEC_JOIN_READY, DEC_JOIN_BLOCKED } dec_join;

/* A waiting join (`join`, with more than one predecessor) is ready when every predecessor succeeded or can no
 * longer be reached from an active step; blocked when one ended without success (*blocker names it).
 * states[i] is the state of wf->steps[i]. */
dec_join dec_join_check(const wf_workflow *wf, const wf_step *join, const dec_step_state *states,
                        const char **blocker);

/* "succeeded", or the failure class's retry.on name. */
const char *dec_outcome_name(dec_outcome o);

#endif
