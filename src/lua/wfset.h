/* wfset: a set of workflows loaded together — listing a directory's *.lua files, loading them (in parallel),
 * validating the set (workflow names and job names unique across it) — and every lookup the rest of the program
 * makes: by workflow name, by a job's name (its part before "--"), the first launch step after the hooks, the
 * description served at /v1/workflows. A set is immutable once built and shared by reference count, so a
 * reload replaces one set with another atomically (wfset_box): readers see the old set or the new, never a mix.
 * Uses: workflow, wf_graph (the description's graph), lua_host (scratch VMs), util, jansson, pthreads. Must not:
 * touch the store, the engine or HTTP. */
#ifndef SLUICE_WFSET_H
#define SLUICE_WFSET_H
#include <jansson.h>
#include <stddef.h>

#include "workflow.h"

typedef struct wfset wfset;

/* The workflows named on a command line (validate, sink-filter): loaded one by one, every problem in order in
 * one list. */
typedef struct {
    char **files;      /* every file found, in order */
    size_t n_files;
    wf_workflow **wfs; /* the ones that loaded and validated on their own */
    size_t n;
} wf_set;

/* Loads paths[0..n_paths) into *set (caller frees with wf_set_free, whatever happened). Every problem, including
 * a path that cannot be read, an empty directory and the cross-workflow rules, is appended to d. */
void wf_set_load(wf_set *set, char *const *paths, size_t n_paths, wf_diags *d);
void wf_set_free(wf_set *set);

/* Appends PATH (a file), or every *.lua file directly inside PATH (a directory, sorted), to *files (caller
 * frees each and the array). Names starting with '.' are skipped: editors' swap and lock files (.x.lua.swp,
 * .#x.lua) and Kubernetes' ..data entries; backups (x.lua~, x.lua.bak) do not end in .lua. Problems (a missing
 * path, a directory without workflow files) go to diags. Returns 0, or -1 when PATH cannot be read. */
int wfset_list(const char *path, char ***files, size_t *n, wf_diags *diags);

typedef struct {
    const char *const *paths; /* files or directories */
    size_t n_paths;
    const lh_limits *limits;  /* budgets of the workflows' VMs (NULL: defaults) */
    int threads;              /* parser threads; 0: up to 4 by CPU count when there are 8 files or more */
    /* A reload: a file that no longer loads keeps the version it had in `previous` (its errors are still
     * reported); job names of workflows that left the set stay known as retired (their runs finish). */
    const wfset *previous;
} wfset_options;

/* Loads and validates. Always returns a set: problems are kept with it
 * (wfset_errors). On a first load a workflow whose name an earlier file defines is left out, and job names
 * claimed twice are reported; on a reload (`previous` given) either makes the set invalid (wfset_valid is 0)
 * and the caller keeps the previous set. Caller releases with wfset_unref. */
wfset *wfset_load(const wfset_options *o);

wfset *wfset_ref(wfset *s);
void wfset_unref(wfset *s);

/* 1 when the set may replace its predecessor (no collisions across files). */
int wfset_valid(const wfset *s);
size_t wfset_count(const wfset *s);
/* The i-th workflow (sorted by file), borrowed for the set's life. */
wf_workflow *wfset_at(const wfset *s, size_t i);
/* By workflow name; NULL if none. Borrowed. */
wf_workflow *wfset_find(const wfset *s, const char *name);
/* The launch step whose job_name is the part of `job_name` before "--", and its workflow (*wf, may be NULL).
 * NULL if no workflow of the set has it. Borrowed. */
const wf_step *wfset_step_for_job(const wfset *s, const char *job_name, const wf_workflow **wf);
/* Whether a job belongs to the set, or to a workflow that left it in an earlier reload (its runs in flight
 * still get their events). */
int wfset_job_known(const wfset *s, const char *job_name);
/* The first launch step of a workflow: its start step, or the first launch step reached from it through
 * hooks with a single static next. NULL if there is none. */
const wf_step *wfset_first_launch_step(const wf_workflow *wf);
/* [{file, errors: ["file:line: message", ...]}] for the files with problems, and set-level problems under the
 * directory. Borrowed. */
json_t *wfset_errors(const wfset *s);
/* The /v1/workflows document: {"workflows": [wfset_workflow_json without source], "errors": [...]}, compact
 * JSON, rendered on the first call (any thread) and kept. Borrowed until the set's last unref. */
const char *wfset_json(const wfset *s);

/* One workflow as /v1/workflows describes it: {name, file, version, start, steps: [{name, kind, job_name}],
 * declares_params, params: [{name, required, default?, description?}], graph (wf_graph_json)}, plus its source text
 * when with_source (GET /v1/workflows/{name}). New reference. */
json_t *wfset_workflow_json(const wf_workflow *wf, int with_source);

/* A slot holding the current set, shared between threads. */
typedef struct wfset_box wfset_box;
wfset_box *wfset_box_new(wfset *initial); /* takes the reference */
void wfset_box_free(wfset_box *b);
/* The current set, with a reference the caller releases (wfset_unref). */
wfset *wfset_box_get(wfset_box *b);
/* Makes `next` current (takes its reference) and releases the previous one. */
void wfset_box_put(wfset_box *b, wfset *next);

#endif
