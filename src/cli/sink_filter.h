/* sink_filter: `sluice sink-filter PATH...`: the Cloud Logging filter for a log sink that carries only the
 * end-of-job entries ("Worker pool stopped.") of the jobs of the given workflows, by job-name prefix
 * (docs/api.md's log sink → Pub/Sub → push deployment).
 * Uses: wfset, workflow. Must not: talk to anything; it only prints. */
#ifndef SLUICE_SINK_FILTER_H
#define SLUICE_SINK_FILTER_H
#include <stddef.h>

#include "workflow.h"

#define SINK_FILTER_USAGE                                                                                           \
    "usage: sluice sink-filter [--format text|terraform] PATH...\n"                                             \
    "Prints the Cloud Logging filter that matches only the end-of-job entries (\"Worker pool stopped.\") of the\n" \
    "jobs that the workflows in PATH (files, or directories of *.lua) launch: one job_name clause per launch\n"   \
    "step, \"<job_name>--\", sorted. Use it as gcloud logging sinks create --log-filter='...'.\n"                 \
    "  --format text       the filter on one line (default)\n"                                                    \
    "  --format terraform  the line sink_filter = \"...\" (HCL, quotes escaped) for terraform.tfvars: the\n"     \
    "                      variable of deploy/terraform's cloud-run and vm roots\n"                               \
    "Exit status: 0 printed, 2 usage or invalid workflows (every problem is listed, as validate does).\n"

/* The filter for the launch steps of wfs[0..n) (new string, caller frees); NULL when they have none. */
char *sink_filter_text(wf_workflow *const *wfs, size_t n);
int sink_filter_main(int argc, char **argv);

#endif
