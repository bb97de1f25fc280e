/* wfset: the workflows named on a command line, loaded together: files, or every *.lua directly inside a
 * directory (sorted), with the rules across workflows (wf_validate_set) checked. Shared by validate, sink-filter
 * and anything else that takes PATH... the way validate does.
 * Uses: workflow. Must not: print anything (problems go to the caller's wf_diags). */
#ifndef SLUICE_WFSET_H
#define SLUICE_WFSET_H
#include <stddef.h>

#include "workflow.h"

typedef struct {
    char **files;       /* every file found, in order */
    size_t n_files;
    wf_workflow **wfs;  /* the ones that loaded and validated on their own */
    size_t n;
} wf_set;

/* Loads paths[0..n_paths) into *set (caller frees with wf_set_free, whatever happened). Every problem, including
 * a path that cannot be read, an empty directory and the cross-workflow rules, is appended to d. */
void wf_set_load(wf_set *set, char *const *paths, size_t n_paths, wf_diags *d);
void wf_set_free(wf_set *set);

#endif
