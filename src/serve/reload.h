/* reload: hot reload of the workflows directory for `sluice serve`. A change (inotify: writes, renames, deletes,
 * Kubernetes' `..data` symlink swap), SIGHUP or POST /v1/workflows:reload loads the whole directory again in
 * fresh VMs, validated as a set; only a valid set replaces the current one, atomically (the engine first, then
 * the readers). A file that no longer loads keeps its previous version; its error (file:line) is logged,
 * listed and counted (sluice_workflow_reloads_total{outcome}). Bursts of changes are debounced.
 * Uses: wfset, engine_loop, http_server (deferred answers), metrics, log, inotify, pthreads.
 * Must not: touch the engine directly (installs go through the engine loop). */
#ifndef SLUICE_RELOAD_H
#define SLUICE_RELOAD_H
#include <jansson.h>

#include "engine_loop.h"
#include "http_server.h"
#include "wfset.h"

typedef struct reloader reloader;

typedef struct {
    const char *dir;         /* the workflows directory (copied) */
    wfset_box *box;          /* the current set (borrowed) */
    engine_loop *loop;       /* installs reach the engine through it (borrowed) */
    const lh_limits *limits; /* VM budgets of loaded workflows (copied; NULL: defaults) */
    int watch;               /* 1: watch the directory with inotify */
    int debounce_ms;         /* quiet time after the last change before reloading; 0: 200 */
} reloader_options;

/* Starts the reloader's thread (and the watch). `initial` is the set loaded at start-up (borrowed: its errors
 * are the first status). Returns NULL when the thread cannot start. */
reloader *reloader_new(const reloader_options *o, const wfset *initial);
void reloader_free(reloader *rl);
/* Reload soon (SIGHUP). */
void reloader_trigger(reloader *rl);
/* Reload now and answer `r` (deferred here) with {"outcome", "workflows", "errors"}. */
void reloader_request(reloader *rl, hs_request *r);
/* The latest load's problems: [{file, errors}] (new reference), and its outcome ("initial", "ok", "errors",
 * "invalid", "unchanged") into buf. */
json_t *reloader_errors(reloader *rl, char *outcome, size_t cap);

#endif
