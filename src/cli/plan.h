/* plan: `sluice plan FILE (--after JOB_NAME | --event FILE)`: what the engine does once that job has finished —
 * the next steps and their exact launch requests, a retry, the on_failure step, or the run's failure — with the
 * engine's rules (decide) and the engine's context (wf_context) over a run imagined up to that job.
 * Uses: workflow, wf_context, decide, events, dataflow (request rendering), config, util.
 * Must not: send anything anywhere, read credentials or touch the store. */
#ifndef SLUICE_PLAN_H
#define SLUICE_PLAN_H

#define PLAN_USAGE                                                                                                \
    "usage: sluice plan FILE (--after JOB_NAME | --event FILE) [options]\n"                                     \
    "Shows which step(s) come next after a finished job and the exact Dataflow launch request(s), or what\n"    \
    "happens on failure. Nothing is sent anywhere; parameter and hook functions do run, with the context a run\n" \
    "gives them: the steps before the job succeeded, jobs that were not given carry placeholder ids such as\n"   \
    "'plan-job-id-of-ingest'.\n"                                                                               \
    "  --after JOB_NAME   the finished job's name (e.g. my-job-1--r7f3k2-1)\n"                                   \
    "  --event FILE       take the finished job from a Pub/Sub push body, a LogEntry, a CloudEvent\n"            \
    "                     (JSON or an HTTP request dump) or a Dataflow Job JSON\n"                              \
    "  --state STATE      its state (DONE, FAILED, JOB_STATE_CANCELLED, ...); default: the event's, else DONE\n" \
    "  --outcome CLASS    the attempt failed otherwise: timeout (the step's timeout fired), rejected (the\n"      \
    "                     launch was refused with a 4xx) or error (its function failed)\n"                      \
    "  --param k=v        a run parameter (repeatable)\n"                                                       \
    "  --run ID           the run id used in generated job names (default: from the job name, else 'plan')\n"    \
    "  --time RFC3339     the run's start time seen by functions (default: now)\n"                               \
    "  --project P        project for steps whose workflow names none (default $SLUICE_PROJECT; plan\n"          \
    "                     reads no credentials)\n"                                                              \
    "  --json             print JSON (the default when the output is not a terminal): the exact requests\n"      \
    "Exit status: 0 planned, 1 a workflow function failed, 2 invalid workflow, usage, or a job that belongs to\n" \
    "no step of the workflow.\n"

int plan_main(int argc, char **argv);

#endif
