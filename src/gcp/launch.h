/* launch: a launch request as plain data — what the workflow model decided to launch (which template, under
 * which name, where, with which parameters and environment), with no REST paths or bodies. workflow builds it,
 * the engine records it as the launch intent (launch_to_json) and re-sends from it, jobs_api carries it, and
 * dataflow alone turns it into Dataflow's request (df_launch, df_launch_render).
 * Uses: jansson. Must not: know Dataflow's wire format (intents recorded in the old REST shape are read by
 * ja_launch_from_record, which hands them to dataflow's parser). */
#ifndef SLUICE_LAUNCH_H
#define SLUICE_LAUNCH_H
#include <jansson.h>

typedef enum { LAUNCH_FLEX = 1, LAUNCH_CLASSIC } launch_kind;

typedef struct launch_req {
    launch_kind kind;
    char *template;      /* flex: the template spec file (gs://...); classic: the template's gs:// location */
    char *job_name;      /* the full launch name "<job_name>--<run id>-<attempt>" */
    char *project, *region;
    json_t *parameters;  /* object of strings (the template's parameters) */
    json_t *environment; /* object: RuntimeEnvironment (classic) / FlexTemplateRuntimeEnvironment (flex) fields as
                          * the workflow gave them, labels in additionalUserLabels */
    int64_t budget_ms;   /* not part of the request: when > 0, how long the call may take from when it is handed to
                          * the API (re-sends and waits included); after that nothing of it may still be on its way
                          * to Dataflow and the outcome is reported unknown */
    char *workflow, *step; /* not part of the request: metric labels only (counting_api's sluice_launches_total),
                            * the run's workflow and the step that launches, as the engine knew them when it built
                            * the request (launch_set_labels). Never sent to Dataflow nor recorded (launch_to_json);
                            * NULL: unknown (launch_new, launch_from_json leave them so) */
} launch_req;

/* "flex" / "classic"; NULL for another value. */
const char *launch_kind_name(launch_kind k);

/* A new request; strings are copied and JSON values referenced (parameters and environment may be NULL: empty
 * objects). NULL when the kind is unknown, a required string is missing, or parameters or environment is not an
 * object. Caller frees with launch_free. */
launch_req *launch_new(launch_kind kind, const char *template, const char *job_name, const char *project,
                       const char *region, json_t *parameters, json_t *environment);
void launch_free(launch_req *l);
/* Sets the metric labels (copies; either may be NULL: unknown), replacing any set before. */
void launch_set_labels(launch_req *l, const char *workflow, const char *step);

/* The stored form of a launch intent (new reference): {kind, template, jobName, project, region, parameters,
 * environment}. */
json_t *launch_to_json(const launch_req *l);
/* Reads the stored form back; NULL when `j` is not one. Caller frees. */
launch_req *launch_from_json(json_t *j);

#endif
