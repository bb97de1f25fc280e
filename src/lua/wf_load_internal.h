/* wf_load_internal: what the loader's two files share: wf_load.c (a script's declaration read into the model) and
 * wf_check.c (the rules over the loaded steps and the graph): the loader's state for one file, reporting a problem
 * with its file:line, and the checks wf_load.c calls. Private to them: nothing else includes it.
 * Uses: workflow (the model), wf_source (where fields are declared), jansson. */
#ifndef SLUICE_WF_LOAD_INTERNAL_H
#define SLUICE_WF_LOAD_INTERNAL_H
#include <jansson.h>

#include "wf_source.h"
#include "workflow.h"

/* One file being loaded: the model it fills, where its problems go (and how many), the VM that runs the script
 * for validation, and the scan of its source that places problems on lines. */
typedef struct {
    wf_workflow *wf;
    wf_diags *diags;
    int errors;
    lh_vm *vm; /* where the script runs for validation */
    src_index src;
} loader;

/* wf_load.c: a problem of the file at `line` ("path:line: message"; 0: "path: message"), counted as an error. */
void wfl_problem(loader *ld, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A path of field names from a table, for the line lookups: PATH("retry", "on"). */
#define PATH(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The line of a workflow field, else the declaration's; of a field of step s, else the step's. */
int wfl_line(const loader *ld, const char *const *path);
int wfl_step_line(const loader *ld, const wf_step *s, const char *const *path);

/* wf_check.c: the gs:// strings of a table of environment fields or parameters (of step s; the workflow's when s is
 * NULL), and a table of labels (`where` names it in the problem). */
void wfl_check_gs_paths(loader *ld, const wf_step *s, json_t *table, const char *field);
void wfl_check_labels(loader *ld, int line, json_t *labels, const char *where);
/* After every step is loaded: each step against the workflow and the steps before it; then the graph (start_known:
 * the start step exists, so reachability is checked too). wfl_check_graph also fills the steps' preds. */
void wfl_check_steps(loader *ld);
void wfl_check_graph(loader *ld, int start_known);

#endif
