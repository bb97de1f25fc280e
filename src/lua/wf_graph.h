/* wf_graph: a workflow's steps and edges drawn — Mermaid and DOT text for `sluice graph`, and the same graph as
 * data for the web UI (docs/ui.md). One walk over the edges serves all three, so they cannot disagree.
 * Uses: workflow (the model), jansson. Must not: call Lua, validate (the model is already valid), or do I/O. */
#ifndef SLUICE_WF_GRAPH_H
#define SLUICE_WF_GRAPH_H
#include <jansson.h>

#include "workflow.h"

/* Graph rendering for `sluice graph`. Caller frees. */
char *wf_graph_mermaid(const wf_workflow *wf);
char *wf_graph_dot(const wf_workflow *wf);
/* The same graph as data, for the web UI: {nodes: [{id, kind (hook|flex|classic), job_name?, start, join, choice,
 * on_failure?}], edges: [{from, to, kind (next|choice|on_failure)}]} (choice edges are the declared choices).
 * New reference. */
json_t *wf_graph_json(const wf_workflow *wf);

#endif
