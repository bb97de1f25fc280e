/* launch: launch requests as plain data, and their stored form (the launch intent).
 * Uses: jansson.
 * Must not: build REST requests (dataflow does) or decide anything about runs. */
#include "launch.h"
#include "mem.h"

#include <stdlib.h>
#include <string.h>


const char *launch_kind_name(launch_kind k)
{
    return k == LAUNCH_FLEX ? "flex" : k == LAUNCH_CLASSIC ? "classic" : NULL;
}

launch_req *launch_new(launch_kind kind, const char *template, const char *job_name, const char *project,
                       const char *region, json_t *parameters, json_t *environment)
{
    if (launch_kind_name(kind) == NULL || template == NULL || job_name == NULL || project == NULL || region == NULL ||
        (parameters != NULL && !json_is_object(parameters)) || (environment != NULL && !json_is_object(environment)))
        return NULL;
    launch_req *l = xcalloc(1, sizeof *l);
    l->kind = kind;
    l->template = xstrdup(template);
    l->job_name = xstrdup(job_name);
    l->project = xstrdup(project);
    l->region = xstrdup(region);
    l->parameters = parameters ? json_incref(parameters) : json_object();
    l->environment = environment ? json_incref(environment) : json_object();
    return l;
}

void launch_free(launch_req *l)
{
    if (l == NULL) return;
    free(l->template);
    free(l->job_name);
    free(l->project);
    free(l->region);
    free(l->workflow);
    free(l->step);
    json_decref(l->parameters);
    json_decref(l->environment);
    free(l);
}

void launch_set_labels(launch_req *l, const char *workflow, const char *step)
{
    free(l->workflow);
    free(l->step);
    l->workflow = xstrdup(workflow);
    l->step = xstrdup(step);
}

json_t *launch_to_json(const launch_req *l)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:O,s:O}", "kind", launch_kind_name(l->kind), "template", l->template,
                     "jobName", l->job_name, "project", l->project, "region", l->region, "parameters", l->parameters,
                     "environment", l->environment);
}

launch_req *launch_from_json(json_t *j)
{
    const char *kind = json_string_value(json_object_get(j, "kind"));
    if (kind == NULL) return NULL;
    launch_kind k = strcmp(kind, "flex") == 0 ? LAUNCH_FLEX : strcmp(kind, "classic") == 0 ? LAUNCH_CLASSIC : 0;
    return launch_new(k, json_string_value(json_object_get(j, "template")),
                      json_string_value(json_object_get(j, "jobName")), json_string_value(json_object_get(j, "project")),
                      json_string_value(json_object_get(j, "region")), json_object_get(j, "parameters"),
                      json_object_get(j, "environment"));
}
