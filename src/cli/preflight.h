/* preflight: `sluice preflight FILE`: every launch step's request, built as a run would build it (the run's
 * params from --param, every predecessor assumed to have succeeded, with placeholder job ids), sent to Dataflow
 * with validateOnly, so a refused template, a missing required parameter or a bad environment shows before a run
 * does. Nothing is created.
 * Uses: workflow (model, requests), wf_context (the context), jobs_api (jobs_api_df_validate), config, log.
 * Must not: launch anything or touch the store. */
#ifndef SLUICE_PREFLIGHT_H
#define SLUICE_PREFLIGHT_H

#define PREFLIGHT_USAGE                                                                                             \
    "usage: sluice preflight FILE [--param k=v]... [options]\n"                                                 \
    "Builds every launch step's request (its function runs with the run's --param values, run id 'preflight',\n"  \
    "every predecessor assumed succeeded with a placeholder job id such as 'preflight-job-id-of-ingest') and\n"    \
    "asks Dataflow to validate it (validateOnly: nothing is created).\n"                                         \
    "Prints per step 'ok', or Dataflow's refusal with one line per parameter violation.\n"                        \
    "  --param k=v            a run parameter (repeatable)\n"                                                    \
    "  --project P            project for workflows that name none (default $SLUICE_PROJECT, else the\n"        \
    "                         credentials' project)\n"                                                          \
    "  --dataflow-url URL     Dataflow endpoint (default $SLUICE_DATAFLOW_URL or https://dataflow.googleapis.com)\n" \
    "  --credentials FILE     service-account or authorized_user file (default: Application Default Credentials)\n" \
    "  --token TOKEN          a static bearer token (default $SLUICE_TOKEN)\n"                                   \
    "  --no-auth              send no credentials (the emulator with auth off)\n"                               \
    "Exit status: 0 every request is valid, 1 some were refused or could not be built or sent, 2 usage or an\n"   \
    "invalid workflow.\n"

int preflight_main(int argc, char **argv);

#endif
