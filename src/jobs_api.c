/* jobs_api: the engine's view of Dataflow, and its implementation over the dataflow client.
 * Uses: dataflow, http_client, gauth, workflow (wf_launch), jansson, log.
 * Must not: decide anything about runs or steps. */
#include "jobs_api.h"

#include <stdlib.h>
#include <string.h>

void ja_result_clear(ja_result *r)
{
    free(r->message);
    json_decref(r->job);
    memset(r, 0, sizeof *r);
}
