/* lua_host: the one gateway into Lua. Owns each workflow's VM, its sandbox, its CPU and memory budgets,
 * and the conversion of plain data (jansson values) in and out of Lua.
 * Uses: Lua 5.4, lua-cjson, jansson, the embedded prelude, lua_budget (the rest of the gateway). Must not: know
 * what a workflow or a run is; no file but lua_host.c and lua_budget.c includes lua.h. Nothing crosses the
 * gateway but plain data and function references.
 *
 * A VM is single-threaded: callers serialise access to one VM (the engine owns one VM per workflow
 * version). Different VMs may be used from different threads at once. */
#ifndef SLUICE_LUA_HOST_H
#define SLUICE_LUA_HOST_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lh_vm lh_vm;
typedef struct lh_watch lh_watch;

/* Every outcome of a call into Lua maps to exactly one of these (result.h's rule 1: 0 or negative). */
typedef enum {
    LH_OK = 0,
    LH_ERROR = -1,   /* a Lua error: message with file:line and traceback */
    LH_TIMEOUT = -2, /* the instruction or time budget ran out (pcall inside the script cannot stop this) */
    LH_NOMEM = -3,   /* the memory cap was reached */
} lh_status;

/* An observer of every trip through the gateway into one VM (metrics): its outcome and wall time, loading
 * included. Called on the calling thread after the call, with the lh_limits' observe_ud; it must be cheap and,
 * when VMs that name it run on several threads, thread-safe. */
typedef void (*lh_observer)(void *ud, lh_status status, double seconds);

typedef struct {
    size_t mem_limit;      /* bytes the VM may hold in all; 0 = default 64 MiB */
    uint64_t instr_limit;  /* VM instructions per call; 0 = default 50 million */
    double time_limit;     /* wall-clock seconds per call; 0 = default 2 s */
    lh_watch *watch;       /* calls of the VM are registered here while in progress (borrowed; NULL: none) */
    lh_observer observe;   /* told of each call of the VM once it is over (NULL: none) */
    void *observe_ud;      /* passed to it (borrowed: must outlive the VM) */
} lh_limits;

const char *lh_status_name(lh_status status);

/* Creates a sandboxed VM (allow-listed libraries, frozen library tables, text-only load, cjson).
 * Returns NULL on failure with *err set (caller frees). */
lh_vm *lh_new(const lh_limits *limits, char **err);
void lh_free(lh_vm *vm);

/* Runs a script's text (never bytecode) under the budget, in a fresh environment of its own (which becomes the
 * VM's current one: lh_ref_global sees it). Nothing one script does to its environment or to the libraries is
 * visible to another script loaded in the same VM.
 * `chunkname` appears in messages as "chunkname:line:". The declaration is the chunk's return value if
 * it returns a table, else the global named `global_name` (may be NULL). It is converted to plain data in
 * *decl (caller decrefs): tables become objects or arrays, and every function value becomes
 * {"$fn": <ref>, "$line": <line defined>} with a reference usable by lh_call.
 * On failure *err is set (caller frees) and *decl is NULL. */
lh_status lh_load(lh_vm *vm, const char *chunkname, const char *src, size_t len, const char *global_name,
                  json_t **decl, char **err);
/* lh_load without the full garbage collection that follows it, for a VM that only validates and is freed soon
 * (or loads the next script): in a scratch VM that collection would traverse every script loaded so far. */
lh_status lh_load_uncollected(lh_vm *vm, const char *chunkname, const char *src, size_t len, const char *global_name,
                              json_t **decl, char **err);

/* Looks a global function of the workflow environment up by name. Returns its reference (> 0), or 0
 * when there is no function of that name. *line receives the line it was defined on (may be NULL). */
int lh_ref_global(lh_vm *vm, const char *name, int *line);

/* Calls the function `ref` with one argument (converted from `arg`, borrowed; NULL passes nothing) under
 * the budget. The first return value is converted into *result (caller decrefs; nil becomes json null).
 * On failure *result is NULL and *err holds "file:line: message" plus a traceback (caller frees). */
lh_status lh_call(lh_vm *vm, int ref, json_t *arg, json_t **result, char **err);

/* A watch over the calls in progress of every VM whose lh_limits name it: a watchdog on another thread (/readyz)
 * sees a call that has outlived its time budget, which the budget is meant to make impossible (every library
 * function is bounded or interruptible). The watch must outlive those VMs. */
lh_watch *lh_watch_new(void);
void lh_watch_free(lh_watch *w);
/* 1 when a call in progress has run longer than its time budget plus `margin` seconds, with the longest one
 * described in why ("a Lua call in FILE has run for 5.1 s, past its 2 s budget"); else 0. Thread-safe. */
int lh_watch_overdue(lh_watch *w, double margin, char *why, size_t cap);

/* Bytes the VM holds now (block headers included). */
size_t lh_mem_used(const lh_vm *vm);

/* 1 when a budget kill had to abandon the VM in the middle of a C function (lh_call or lh_load returned
 * LH_TIMEOUT with "the VM was reset after a budget kill"): its memory is already freed, and from now on lh_load
 * and lh_call answer LH_ERROR with that message and lh_ref_global 0. The owner frees it and creates a new VM
 * (reloading the script), as for a first use. */
int lh_vm_dead(const lh_vm *vm);

#endif
